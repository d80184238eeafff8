package tokenserver_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// The listener starts while its database connection cannot be made (the pool's can:
// a partition, or a listener DSN through a proxy that is down). It must neither give
// up nor hang past shutdown, and until it listens the replica must not answer from
// its caches: a change made then is announced to nobody. The store's clock stands
// still, so the cache's lifetime cannot stand in for the listener.
func TestListenerStartsOnUnreachableDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	proxy, proxied := newDBProxy(t, dsn)
	proxy.Down()
	frozen := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	open := func(listenDSN string) *postgres.Store {
		s, err := postgres.Open(ctx, dsn, postgres.Options{Now: func() time.Time { return frozen }, ListenDSN: listenDSN})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	replica, other := open(proxied), open("")

	// Shutdown while the database is unreachable: Listen returns.
	stopped, stop := context.WithCancel(ctx)
	returned := make(chan error, 1)
	go func() { returned <- replica.Follow(stopped, tokenserver.NewBroadcaster().Notify) }()
	stop()
	select {
	case err := <-returned:
		if err != nil {
			t.Errorf("Listen: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return within 10s of its context ending while the database was unreachable")
	}

	events := tokenserver.NewBroadcaster()
	listenCtx, stopListening := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- replica.Follow(listenCtx, events.Notify) }()
	t.Cleanup(func() {
		stopListening()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})

	c := &store.Client{ID: "grafana", SecretHash: []byte("old"), ClientSpec: store.ClientSpec{Name: "Grafana",
		GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic"}}
	if _, err := other.PutClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.GetClientByID(ctx, "grafana"); err != nil { // not cached: it does not listen yet
		t.Fatal(err)
	}
	c.SecretHash = []byte("new")
	if _, err := other.PutClient(ctx, c); err != nil { // announced to no one
		t.Fatal(err)
	}
	// A replica that cannot hear the others reads every client from the database.
	if got, _ := replica.GetClientByID(ctx, "grafana"); !bytes.Equal(got.SecretHash, []byte("new")) {
		t.Fatalf("a replica that does not listen yet serves secret %q; want the new one, from the database", got.SecretHash)
	}

	woken := events.Wait()
	proxy.Up()
	select {
	case <-woken:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not start listening within 30s of the database becoming reachable")
	}
	if got, err := replica.GetClientByID(ctx, "grafana"); err != nil || !bytes.Equal(got.SecretHash, []byte("new")) {
		t.Errorf("once listening, the replica serves secret %q (%v) from its cache; want the new one", got.SecretHash, err)
	}
	// And it follows notifications from then on.
	woken = events.Wait()
	if _, err := other.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceDeclared}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(30 * time.Second):
		t.Fatal("no event notification reached the listener")
	}
}
