package postgres_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

var pg *testpg.Server

func TestMain(m *testing.M) {
	var err error
	if pg, err = testpg.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = pg.Stop()
	os.Exit(code)
}

// migrated returns the DSN of a fresh database with every migration applied.
func migrated(t *testing.T) string {
	t.Helper()
	dsn := pg.NewDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := postgres.Migrate(context.Background(), db, postgres.Migrations(), postgres.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, cfg storetest.Config) oauth.Storage {
		s, err := postgres.Open(context.Background(), migrated(t), postgres.Options{
			RefreshGracePeriod: cfg.RefreshGracePeriod, Now: cfg.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
