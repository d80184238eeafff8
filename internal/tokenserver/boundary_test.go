package tokenserver_test

import (
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/testing/boundary"
)

// The HTTP server reaches PostgreSQL only through the store: LISTEN/NOTIFY, its
// channels and lib/pq stay behind internal/store/postgres.
func TestServerImportsNoDatabaseDriver(t *testing.T) {
	boundary.Forbid(t, false, "github.com/lib/pq")
}
