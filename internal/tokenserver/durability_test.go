package tokenserver_test

import (
	"context"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// A token the server answered with survives a crash of PostgreSQL and of the server:
// on PostgreSQL's durable settings, PostgreSQL is stopped the hard way right after the
// last answer (immediate shutdown: no checkpoint, what was not in the WAL is gone),
// started again, and a new server process — no cache of the old one — still knows
// the client_credentials token, the refresh token and the access token a rotation
// returned. Group commit answers only once the COMMIT returned; an answer before it
// (or synchronous_commit=off, which acknowledges before the WAL is written) loses the
// last tokens here.
func TestTokensSurviveAPostgreSQLCrash(t *testing.T) {
	durable, err := testpg.StartWith(testpg.Options{Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := durable.Stop(); err != nil {
			t.Error(err)
		}
	})
	s := setup{dsn: durable.NewMigratedDatabase(t), keyDir: secrets(t)}
	in := start(t, s)
	secret := confidentialClient(t, in, "grafana")
	cc := clientcredentials.Config{ClientID: "grafana", ClientSecret: secret, TokenURL: in.URL + "/oauth2/token",
		Scopes: []string{"zones.read"}, AuthStyle: oauth2.AuthStyleInHeader}
	issued, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	chain := codeFlowToken(t, in, secret)
	code, rotated := refresh(t, in, secret, chain.RefreshToken)
	if code != 200 {
		t.Fatalf("refresh: %d %v", code, rotated)
	}

	in.Stop(t)
	if err := durable.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := durable.Restart(); err != nil {
		t.Fatal(err)
	}
	in = start(t, s)

	for name, token := range map[string]string{"client_credentials": issued.AccessToken,
		"rotated access": rotated["access_token"].(string)} {
		if got := introspect(t, in, token, "grafana", secret); got["active"] != true {
			t.Errorf("%s token after the crash: %v; want active", name, got)
		}
	}
	if got := introspect(t, in, chain.AccessToken, "grafana", secret); got["active"] != false {
		t.Errorf("the access token the rotation revoked is back after the crash: %v", got)
	}
	if code, body := refresh(t, in, secret, rotated["refresh_token"].(string)); code != 200 {
		t.Errorf("refresh with the rotated refresh token after the crash: %d %v; want 200", code, body)
	}
}
