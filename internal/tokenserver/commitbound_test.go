package tokenserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// With a synchronous standby that stalls (here: synchronous_standby_names names one
// that never connects), a code exchange and a revocation of a client that sets no
// timeout fail within the server's commit bound, with a 5xx, instead of waiting
// forever; and neither is answered as done: PostgreSQL reports a COMMIT whose wait was
// cancelled as a success, with the rows on the primary only, which a failover to the
// standby would lose. One server commits locally (synchronous_commit=local, as the
// database's default) and signs the user in; the other, sharing its keys, waits for
// the standby (synchronous_commit=on).
func TestCodeExchangeAndRevocationWithAStalledStandbyFail(t *testing.T) {
	primary := testpg.StalledStandby(t)
	dsn, keys := primary.NewMigratedDatabase(t), secrets(t)
	local := start(t, setup{dsn: dsn, keyDir: keys, optionalPKCE: true})
	stalled := start(t, setup{dsn: dsn + " synchronous_commit=on", keyDir: keys, optionalPKCE: true,
		commitTimeout: 500 * time.Millisecond})
	secret := confidentialClient(t, local, "grafana")

	// Without PKCE, so that the exchange reaches its transaction (fosite deletes the
	// PKCE session before, on its own, which fails alike).
	cb := newBrowser(t).authorize(local, oauthConfig(local, secret, "openid", "offline_access").AuthCodeURL("state-stalled-01"), "approve")
	code := cb.Get("code")
	if code == "" {
		t.Fatalf("callback = %v; want a code", cb)
	}
	var tok *oauth2.Token
	err := within(t, "code exchange", func() (err error) {
		tok, err = oauthConfig(stalled, secret, "openid", "offline_access").Exchange(context.Background(), code)
		return err
	})
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode < 500 {
		t.Errorf("code exchange whose COMMIT was cut short: %v, token %v; want a 5xx and no token", err, tok)
	}
	// The exchange committed on the primary: the code is used. Tried again, it
	// revokes what it issued, as for any code used twice.
	if _, err := oauthConfig(local, secret, "openid", "offline_access").Exchange(context.Background(), code); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("the code again: %v; want invalid_grant", err)
	}

	cc := clientcredentials.Config{ClientID: "grafana", ClientSecret: secret, TokenURL: local.URL + "/oauth2/token",
		AuthStyle: oauth2.AuthStyleInHeader}
	issued, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var status int
	var body map[string]any
	err = within(t, "revocation", func() error {
		req, _ := http.NewRequest(http.MethodPost, stalled.URL+"/oauth2/revoke",
			strings.NewReader(url.Values{"token": {issued.AccessToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("grafana", secret)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		status = resp.StatusCode
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
		t.Errorf("revocation whose COMMIT was cut short: %d %v; want 503 temporarily_unavailable (RFC 7009: the token may still exist, retry)",
			status, body)
	}
}

// within runs call, and fails the test if it is still waiting far past the bound the
// test sets (it would otherwise hang forever).
func within(t *testing.T, name string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer after 30s", name)
		return nil
	}
}
