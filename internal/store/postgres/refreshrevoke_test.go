package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/store/storetest"
)

// newChain stores a token pair of authorization requestID: at-<n>, rt-<n>.
func newChain(t *testing.T, s *postgres.Store, clock *storetest.Clock, requestID, at, rt string) {
	t.Helper()
	ctx := context.Background()
	req := tokenRequest(t, s, requestID, clock.Now())
	if err := s.CreateAccessTokenSession(ctx, at, req); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, rt, at, req); err != nil {
		t.Fatal(err)
	}
}

// A refresh whose refresh token is revoked after fosite read it (the revocation
// endpoint, reuse detection, a narrowed grant) fails and stores nothing, whether its
// writes go through the group commit (fosite's transaction) or straight in a
// transaction; refreshes of other chains in the same batches are unaffected, and a
// grace-period reuse of a rotated token still rotates.
func TestRefreshOfRevokedChainFails(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dsn := pg.NewMigratedDatabase(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now, RefreshGracePeriod: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	const chains = 8
	const revoked = 5
	for i := range chains {
		newChain(t, s, clock, fmt.Sprintf("chain-%d", i), fmt.Sprintf("at-%d", i), fmt.Sprintf("rt-%d", i))
	}
	// fosite's HandleTokenEndpointRequest reads the refresh token: active.
	if _, err := s.GetRefreshTokenSession(ctx, fmt.Sprintf("rt-%d", revoked), &storetest.Session{}); err != nil {
		t.Fatal(err)
	}
	// Then the chain is revoked, as RFC 7009 revocation does.
	if err := s.RevokeRefreshToken(ctx, fmt.Sprintf("chain-%d", revoked)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, fmt.Sprintf("chain-%d", revoked)); err != nil {
		t.Fatal(err)
	}

	// All refreshes at once, held at COMMIT so that they gather into batches.
	gate := newCommitGate(t, dsn)
	errs := make([]error, chains)
	var wg sync.WaitGroup
	for i := range chains {
		req := tokenRequest(t, s, fmt.Sprintf("chain-%d", i), clock.Now())
		wg.Go(func() {
			errs[i] = refreshInTx(ctx, s, fmt.Sprintf("rt-%d", i), fmt.Sprintf("at2-%d", i), fmt.Sprintf("rt2-%d", i), req)
		})
	}
	gate.waitForCommits(t, 1)
	gate.open(t)
	wg.Wait()
	for i := range chains {
		_, atErr := s.GetAccessTokenSession(ctx, fmt.Sprintf("at2-%d", i), &storetest.Session{})
		_, rtErr := s.GetRefreshTokenSession(ctx, fmt.Sprintf("rt2-%d", i), &storetest.Session{})
		if i == revoked {
			if !errors.Is(errs[i], fosite.ErrNotFound) {
				t.Errorf("refresh of the revoked chain: %v; want it to fail with ErrNotFound (invalid_grant)", errs[i])
			}
			if atErr == nil || rtErr == nil {
				t.Errorf("the revoked chain has a new pair: access %v, refresh %v", atErr, rtErr)
			}
			if n := gate.committed(t, []string{fmt.Sprintf("at2-%d", i), fmt.Sprintf("rt2-%d", i)}); n != 0 {
				t.Errorf("%d rows of the failed refresh are stored", n)
			}
			continue
		}
		if errs[i] != nil || atErr != nil || rtErr != nil {
			t.Errorf("refresh %d of a live chain: %v; new pair: %v, %v", i, errs[i], atErr, rtErr)
		}
	}

	// A grace-period reuse of a rotated (not revoked) token still rotates.
	req := tokenRequest(t, s, "chain-0", clock.Now())
	if err := refreshInTx(ctx, s, "rt-0", "at3-0", "rt3-0", req); err != nil {
		t.Errorf("grace-period reuse: %v", err)
	}
	// Outside fosite's transaction (RotateRefreshToken in one of its own), too.
	if err := s.RotateRefreshToken(ctx, "chain-0", "rt-0"); err != nil {
		t.Errorf("grace-period rotation in a transaction: %v", err)
	}
	if err := s.RotateRefreshToken(ctx, fmt.Sprintf("chain-%d", revoked), fmt.Sprintf("rt-%d", revoked)); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("rotation of a revoked refresh token in a transaction: %v; want ErrNotFound", err)
	}
}

// A revocation that starts while a refresh's rotation is written but not committed
// waits for it and then also revokes the pair that rotation committed: the chain is
// gone, not just the token the revocation's snapshot saw.
func TestRevocationDuringRotationRevokesNewPair(t *testing.T) {
	ctx := context.Background()
	s, clock, dsn := clientStore(t)
	newChain(t, s, clock, "chain", "at-0", "rt-0")
	gate := newCommitGate(t, dsn)
	refreshed := make(chan error, 1)
	req := tokenRequest(t, s, "chain", clock.Now())
	go func() { refreshed <- refreshInTx(ctx, s, "rt-0", "at-1", "rt-1", req) }()
	gate.waitForCommits(t, 1) // rotated and inserted; its COMMIT waits
	// Revocation as fosite's revocation endpoint and reuse detection do it: the
	// refresh tokens, then the access tokens, in one transaction.
	revoked := make(chan error, 1)
	go func() {
		tx, err := s.BeginTX(ctx)
		if err == nil {
			err = s.RevokeRefreshToken(tx, "chain")
		}
		if err == nil {
			err = s.RevokeAccessToken(tx, "chain")
		}
		if err != nil {
			_ = s.Rollback(tx)
			revoked <- err
			return
		}
		revoked <- s.Commit(tx)
	}()
	gate.waitForRowLock(t, "the revocation")
	gate.open(t)
	if err := <-refreshed; err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if err := <-revoked; err != nil {
		t.Fatalf("revocation: %v", err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt-1", &storetest.Session{}); err == nil {
		t.Error("the chain was revoked after its refresh, yet the refresh's new refresh token is valid")
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-1", &storetest.Session{}); err == nil {
		t.Error("the chain was revoked after its refresh, yet the refresh's new access token is valid")
	}
	if n := gate.committed(t, []string{"at-1", "rt-1", "rt-0"}); n != 0 {
		t.Errorf("%d rows of the revoked chain remain", n)
	}
}

// The same for a grant narrowed while a refresh under it is being committed: the
// refresh's new pair, which carries the scopes the grant no longer holds, goes too.
func TestGrantNarrowingDuringRotationRevokesNewPair(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dsn := pg.NewMigratedDatabase(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := client("secret")
	c.Scopes = []string{"openid", "profile"}
	if _, err := s.PutClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	g, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice",
		Scopes: []string{"openid", "profile"}, Source: store.SourceDeclared})
	if err != nil {
		t.Fatal(err)
	}
	req := func() *fosite.Request {
		r := tokenRequest(t, s, "chain", clock.Now())
		r.Session.(*storetest.Session).GrantID = g.ID
		r.Session.(*storetest.Session).Subject = "alice"
		r.GrantedScope = fosite.Arguments{"openid", "profile"}
		return r
	}
	if err := s.CreateAccessTokenSession(ctx, "at-0", req()); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, "rt-0", "at-0", req()); err != nil {
		t.Fatal(err)
	}
	gate := newCommitGate(t, dsn)
	refreshed := make(chan error, 1)
	r1 := req()
	go func() { refreshed <- refreshInTx(ctx, s, "rt-0", "at-1", "rt-1", r1) }()
	gate.waitForCommits(t, 1)
	narrowed := make(chan error, 1)
	go func() {
		_, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice",
			Scopes: []string{"openid"}, Source: store.SourceDeclared})
		narrowed <- err
	}()
	gate.waitForRowLock(t, "the narrowing")
	gate.open(t)
	if err := <-refreshed; err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if err := <-narrowed; err != nil {
		t.Fatalf("narrowing: %v", err)
	}
	if n := gate.committed(t, []string{"at-1", "rt-1"}); n != 0 {
		t.Errorf("%d tokens with a scope the grant no longer holds remain", n)
	}
}

// waitForRowLock returns once a transaction waits on another's row lock (who: what
// the test expects to wait, for the failure message).
func (g *commitGate) waitForRowLock(t *testing.T, who string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := g.db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted`).
			Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not wait on the rotated row", who)
		}
	}
}
