package main

import (
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/testing/boundary"
)

// The operator makes and checks signing keys but never serves OAuth nor opens the
// token server's database: linking fosite or the store would grow its image and its
// attack surface for nothing.
func TestOperatorLinksNoTokenServer(t *testing.T) {
	boundary.Forbid(t, true,
		"github.com/ory/fosite",
		"github.com/lib/pq",
		"github.com/kubeoauth/kubeoauth/internal/oauth",
		"github.com/kubeoauth/kubeoauth/internal/store",
		"github.com/kubeoauth/kubeoauth/internal/tokenserver",
	)
}
