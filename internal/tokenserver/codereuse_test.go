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

	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	hold, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hold.Rollback() }()
	if _, err := hold.ExecContext(ctx, `SELECT 1 FROM tokens WHERE kind = 'authorize_code' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	toks := make([]*oauth2.Token, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { toks[i], errs[i] = cfg.Exchange(ctx, cb.Get("code")) })
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			_ = hold.Rollback()
			wg.Wait()
			t.Fatalf("%d exchanges wait at the code's row, want 2 (errors %v)", waiting, errs)
		}
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
