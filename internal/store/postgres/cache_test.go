package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
)

// replicas opens n stores on one database, as n token-server replicas, on clock.
func replicas(t *testing.T, n int, clock *storetest.Clock) []*postgres.Store {
	t.Helper()
	dsn := pg.NewMigratedDatabase(t)
	out := make([]*postgres.Store, 0, n)
	for range n {
		s, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	return out
}

func client(secret string) *store.Client {
	return &store.Client{ID: "grafana", SecretHash: []byte(secret), OwnerNamespace: "observability",
		ClientSpec: store.ClientSpec{Name: "Grafana", GrantTypes: []string{"client_credentials"},
			Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic"}}
}

// pausedRead runs read in the background and returns once it has read from the
// database and is about to fill the cache; calling the returned function lets the
// fill go on and waits for read to return.
func pausedRead(t *testing.T, setHook func(func(string)), read func()) (resume func()) {
	t.Helper()
	var once sync.Once
	readDone, release, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	setHook(func(string) {
		once.Do(func() {
			close(readDone)
			<-release
		})
	})
	go func() { defer close(finished); read() }()
	<-readDone
	return func() {
		close(release)
		<-finished
		setHook(nil)
	}
}

// A reader that read a client before a change committed must not put its old copy in
// the cache after the change was announced: the replica would then accept the old
// secret for a whole cache lifetime (the cause of TestClientChangesReachOtherReplicas
// failing under load). The clock stands still, so only the fix can make the new
// secret appear.
func TestStaleClientReadIsNotCached(t *testing.T) {
	ctx := context.Background()
	for name, sameReplica := range map[string]bool{"other replica, told by NOTIFY": false, "same replica": true} {
		t.Run(name, func(t *testing.T) {
			rs := replicas(t, 2, storetest.NewClock())
			a, b := rs[0], rs[1]
			if sameReplica {
				b = a
			}
			if _, err := a.PutClient(ctx, client("old-secret")); err != nil {
				t.Fatal(err)
			}
			resume := pausedRead(t, func(f func(string)) { postgres.AfterClientRead(b, f) }, func() {
				if _, err := b.GetClientByID(ctx, "grafana"); err != nil {
					t.Error(err)
				}
			})
			if _, err := a.PutClient(ctx, client("new-secret")); err != nil {
				t.Fatal(err)
			}
			if !sameReplica {
				b.InvalidateClient("grafana") // what b's listener does on the NOTIFY
			}
			resume()
			got, err := b.GetClientByID(ctx, "grafana")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.SecretHash, []byte("new-secret")) {
				t.Errorf("after the change: the replica serves secret %q from its cache, want new-secret", got.SecretHash)
			}
		})
	}
}

// The same for access tokens: a token read before its revocation committed is not
// cached after the revocation was announced.
func TestStaleTokenReadIsNotCached(t *testing.T) {
	ctx := context.Background()
	_, a, b := replicasWithToken(t)
	resume := pausedRead(t, func(f func(string)) { postgres.AfterTokenRead(b, f) }, func() {
		if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); err != nil {
			t.Error(err)
		}
	})
	if err := a.RevokeAccessToken(ctx, "req-1"); err != nil {
		t.Fatal(err)
	}
	b.InvalidateTokens(postgres.Invalidation{RequestID: "req-1"}) // b's listener, on the NOTIFY
	resume()
	if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a revoked access token on the replica that read it just before: err = %v, want ErrNotFound", err)
	}
}

// replicasWithToken starts two replicas on one database, with the client grafana and
// its access token at-1 (request req-1) stored through the first.
func replicasWithToken(t *testing.T) (*storetest.Clock, *postgres.Store, *postgres.Store) {
	t.Helper()
	clock := storetest.NewClock()
	rs := replicas(t, 2, clock)
	a, b := rs[0], rs[1]
	if _, err := a.PutClient(context.Background(), client("secret")); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAccessTokenSession(context.Background(), "at-1", tokenRequest(t, a, "req-1", clock.Now())); err != nil {
		t.Fatal(err)
	}
	return clock, a, b
}

func tokenRequest(t *testing.T, s *postgres.Store, requestID string, now time.Time) *fosite.Request {
	t.Helper()
	c, err := s.GetClient(context.Background(), "grafana")
	if err != nil {
		t.Fatal(err)
	}
	sess := &storetest.Session{}
	sess.SetExpiresAt(fosite.AccessToken, now.Add(time.Hour))
	return &fosite.Request{ID: requestID, RequestedAt: now, Client: c, Session: sess, Form: map[string][]string{}}
}

// The staleness bound when a replica misses the notification of a client's deletion
// (its listener reconnecting): it issues no token for the client at all (the foreign
// key), answers for the client's tokens for at most the token cache's lifetime, and
// knows the client for at most ClientCacheTTL.
func TestDeletedClientStalenessBound(t *testing.T) {
	ctx := context.Background()
	clock, a, b := replicasWithToken(t)
	if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); err != nil {
		t.Fatal(err)
	}
	req := tokenRequest(t, b, "req-2", clock.Now()) // b has the client cached
	if err := a.DeleteClient(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	// No notification reaches b.
	if err := b.CreateAccessTokenSession(ctx, "at-2", req); !errors.Is(err, store.ErrClientGone) {
		t.Errorf("b issues a token for the deleted client it still has cached: err = %v, want ErrClientGone", err)
	}
	clock.Step(postgres.TokenCacheTTL + time.Millisecond)
	if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("b still answers for the deleted client's token after the token cache's lifetime: err = %v", err)
	}
	clock.Step(postgres.DefaultClientCacheTTL - postgres.TokenCacheTTL)
	if _, err := b.GetClientByID(ctx, "grafana"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b still knows the deleted client after ClientCacheTTL: err = %v", err)
	}
}

// A replica that follows the others but cannot listen (its listener not connected
// yet, or reconnecting) does not answer from its caches: a token another replica
// revoked meanwhile is revoked here at once, not after the cache's lifetime. A
// blue-green verification caught a new pod holding a revoked token active while
// its listener was still connecting.
func TestReplicaNotListeningDoesNotCache(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dsn := pg.NewMigratedDatabase(t)
	a, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	b, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now,
		ListenDSN: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Follow(fctx, func() {}) }()
	t.Cleanup(func() { stop(); <-done })

	if _, err := a.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateAccessTokenSession(ctx, "at-1", tokenRequest(t, a, "req-1", clock.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeAccessToken(ctx, "req-1"); err != nil {
		t.Fatal(err)
	}
	// b never heard the NOTIFY.
	if _, err := b.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a revoked token on a replica that cannot listen: err = %v, want ErrNotFound at once", err)
	}
}
