package tokenserver_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Two exchanges of one authorization code that race: both read the code as unused
// (fosite reads it before its transaction), and only the store's invalidation decides.
// RFC 6749 section 4.1.2: one gets tokens, the other invalid_grant, and the tokens the
// code issued are revoked. A test transaction holds the code's row so that both
// exchanges are past their read and wait at the invalidation when it lets go.
// PKCE is left out: fosite's PKCE check deletes its record before the exchange and
// would fail the second exchange earlier, or not, depending on timing.
func TestConcurrentCodeExchangesOneWinsAndIsRevoked(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn, optionalPKCE: true})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-race-0001"), "approve")
	if cb.Get("code") == "" {
		t.Fatalf("callback = %v; want a code", cb)
	}

	db, hold := holdCodes(t, dsn)
	defer func() { _ = hold.Rollback() }()

	var wg sync.WaitGroup
	toks := make([]*oauth2.Token, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { toks[i], errs[i] = cfg.Exchange(ctx, cb.Get("code")) })
	}
	if waiting, ok := waitForLockWaits(t, db, 2); !ok {
		_ = hold.Rollback()
		wg.Wait()
		t.Fatalf("%d exchanges wait at the code's row, want 2 (errors %v)", waiting, errs)
	}
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	won := -1
	for i, err := range errs {
		if err == nil {
			if won >= 0 {
				t.Fatalf("both exchanges of one code got tokens")
			}
			won = i
			continue
		}
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Errorf("the losing exchange: %v; want invalid_grant", err)
		}
	}
	if won < 0 {
		t.Fatalf("no exchange got tokens: %v", errs)
	}
	// The winner's tokens were issued from a code used twice: revoked.
	if got := introspect(t, in, toks[won].AccessToken, "grafana", secret); got["active"] != false {
		t.Errorf("the access token of a code used twice is active: %v", got)
	}
	if toks[won].RefreshToken == "" {
		t.Fatal("no refresh token despite offline_access")
	}
	if code, body := refresh(t, in, secret, toks[won].RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("refresh with the refresh token of a code used twice: %d %v; want invalid_grant", code, body)
	}
}

// A refresh whose chain is revoked while its rotation waits to be written (here: a
// test transaction holds the refresh token's row, as a revocation in progress does,
// and deletes the chain's refresh tokens) gets invalid_grant, and no new pair is
// stored for the revoked chain.
func TestRefreshOfChainRevokedMeanwhileFails(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn, grace: time.Minute})
	secret := confidentialClient(t, in, "grafana")
	tok := codeFlowToken(t, in, secret)

	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var requestID string
	if err := db.QueryRowContext(ctx, `SELECT request_id FROM tokens WHERE kind = 'refresh_token'`).Scan(&requestID); err != nil {
		t.Fatal(err)
	}
	revocation, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = revocation.Rollback() }()
	if _, err := revocation.ExecContext(ctx, `SELECT 1 FROM tokens WHERE kind = 'refresh_token' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		body map[string]any
	}
	refreshed := make(chan answer, 1)
	go func() {
		code, body := refresh(t, in, secret, tok.RefreshToken)
		refreshed <- answer{code, body}
	}()
	if _, ok := waitForLockWaits(t, db, 1); !ok {
		_ = revocation.Rollback()
		t.Fatalf("the refresh's rotation does not wait on the refresh token's row (%v)", <-refreshed)
	}
	if _, err := revocation.ExecContext(ctx, `DELETE FROM tokens WHERE request_id = $1`, requestID); err != nil {
		t.Fatal(err)
	}
	if err := revocation.Commit(); err != nil {
		t.Fatal(err)
	}
	got := <-refreshed
	if got.code != 400 || got.body["error"] != "invalid_grant" {
		t.Errorf("refresh of a chain revoked meanwhile: %d %v; want invalid_grant", got.code, got.body)
	}
	var left int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE request_id = $1`, requestID).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d tokens of the revoked chain are stored", left)
	}
}

// The same race with PKCE, in the order where fosite's PKCE check fails the second
// exchange early: the first exchange has taken the code's PKCE record and waits to
// invalidate the code when the second arrives. The second still answers invalid_grant
// and the first's tokens are revoked.
func TestConcurrentCodeExchangesWithPKCEAreRevoked(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	verifier := oauth2.GenerateVerifier()
	cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-race-0002", oauth2.S256ChallengeOption(verifier)), "approve")
	if cb.Get("code") == "" {
		t.Fatalf("callback = %v; want a code", cb)
	}
	db, hold := holdCodes(t, dsn)
	defer func() { _ = hold.Rollback() }()
	toks := make([]*oauth2.Token, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	waitFor := func(n int) {
		t.Helper()
		if waiting, ok := waitForLockWaits(t, db, n); !ok {
			_ = hold.Rollback()
			wg.Wait()
			t.Fatalf("%d exchanges wait at the code's row, want %d (errors %v)", waiting, n, errs)
		}
	}
	for i := range 2 {
		wg.Go(func() { toks[i], errs[i] = cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier)) })
		waitFor(i + 1)
	}
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var re *oauth2.RetrieveError
	if !errors.As(errs[1], &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("the second exchange: %v; want invalid_grant", errs[1])
	}
	if errs[0] != nil {
		// The first waits at the row first, so it invalidates first.
		t.Fatalf("the first exchange: %v", errs[0])
	}
	if got := introspect(t, in, toks[0].AccessToken, "grafana", secret); got["active"] != false {
		t.Errorf("the access token of a code used twice is active: %v", got)
	}
	if code, body := refresh(t, in, secret, toks[0].RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("refresh with the refresh token of a code used twice: %d %v; want invalid_grant", code, body)
	}
}

// holdCodes begins a transaction that locks every authorization code's row, so that
// exchanges of a code wait on it together until the caller rolls it back; db is the
// test's own connection pool to the database.
func holdCodes(t *testing.T, dsn string) (db *sql.DB, hold *sql.Tx) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	hold, err = db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.ExecContext(context.Background(), `SELECT 1 FROM tokens WHERE kind = 'authorize_code' FOR UPDATE`); err != nil {
		_ = hold.Rollback()
		t.Fatal(err)
	}
	return db, hold
}

// waitForLockWaits polls, for up to 20 s, until n sessions of db's database wait on a
// lock (a row a test transaction holds); it returns the last count and whether it
// reached n. The caller, which holds the lock, cleans up and fails when it did not.
func waitForLockWaits(t *testing.T, db *sql.DB, n int) (int, bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == n {
			return waiting, true
		}
		if time.Now().After(deadline) {
			return waiting, false
		}
	}
}
