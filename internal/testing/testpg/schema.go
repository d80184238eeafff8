package testpg

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// Migrate applies every migration of the token server's schema to the database at dsn,
// as `tokenserver migrate` would; log, when not nil, gets one line per migration.
func Migrate(ctx context.Context, dsn string, log func(format string, args ...any)) error {
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	_, err = postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{Log: log})
	return err
}

// NewMigratedDatabase is NewDatabase with the token server's schema applied: where a
// test of the store or of the token server starts.
func (s *Server) NewMigratedDatabase(t testing.TB) string {
	t.Helper()
	dsn := s.NewDatabase(t)
	if err := Migrate(t.Context(), dsn, nil); err != nil {
		t.Fatalf("migrating the test database: %v", err)
	}
	return dsn
}

// Main is the TestMain of a package whose tests share one server: it starts the
// server into *s, runs the tests, stops the server and exits with the tests' code.
func Main(m *testing.M, s **Server) {
	var err error
	if *s, err = Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := (*s).Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
