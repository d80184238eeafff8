package postgres_test

import (
	"context"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

var pg *testpg.Server

func TestMain(m *testing.M) { testpg.Main(m, &pg) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, cfg storetest.Config) oauth.Storage {
		s, err := postgres.Open(context.Background(), pg.NewMigratedDatabase(t), postgres.Options{
			RefreshGracePeriod: cfg.RefreshGracePeriod, Now: cfg.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
