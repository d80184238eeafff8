package tokenserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// A first-party client's approvals are not the user's consent: when a PUT turns
// skipConsent off (as the operator does when the namespace loses first-party status),
// every user who signed in meanwhile is asked again, and the tokens issued without a
// consent page stop working. A consent the user then gives survives skipConsent
// going on and off again.
func TestFirstPartyApprovalEndsWithSkipConsent(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := "secret-grafana-0123456789abcdefghijklmnop"
	client := &adminapi.Client{ID: "grafana", Secret: secret, OwnerNamespace: "observability", ClientMetadata: adminapi.ClientMetadata{
		Name:                    "Grafana",
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		RedirectURIs:            []string{redirectURI},
		Scopes:                  []string{"openid", "offline_access", "zones.read"},
		TokenEndpointAuthMethod: "client_secret_basic",
		SkipConsent:             true,
	}}
	put := func(skip bool) {
		t.Helper()
		client.SkipConsent = skip
		if _, err := in.Admin.PutClient(ctx, client); err != nil {
			t.Fatal(err)
		}
	}
	put(true)
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	b := newBrowser(t)
	token := func(decision string) *oauth2.Token {
		t.Helper()
		v := oauth2.GenerateVerifier()
		cb := b.authorize(in, cfg.AuthCodeURL("state-firstparty", oauth2.S256ChallengeOption(v)), decision)
		tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	source := func() string {
		t.Helper()
		grants, err := in.Admin.ListGrants(ctx, "grafana", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(grants) == 0 {
			return ""
		}
		return grants[0].Source
	}

	early := token("") // first-party: no consent page
	if got := source(); got != adminapi.SourceFirstParty {
		t.Fatalf("the approval without a consent page is stored as %q; want %q", got, adminapi.SourceFirstParty)
	}

	put(false)
	if got := introspect(t, in, early.AccessToken, "grafana", secret); got["active"] != false {
		t.Errorf("a token issued without consent, after skipConsent went off: %v; want inactive", got)
	}
	if code, body := refresh(t, in, secret, early.RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("refreshing it: %d %v; want invalid_grant", code, body)
	}
	if got := source(); got != "" {
		t.Errorf("after skipConsent went off a grant of source %q stands; want none", got)
	}
	events, err := in.Admin.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked := false
	for _, ev := range events.Events {
		revoked = revoked || ev.Kind == adminapi.EventGrantRevoked && ev.ClientID == "grafana" && ev.Subject == "alice"
	}
	if !revoked {
		t.Errorf("no %s event for alice's first-party approval in %+v", adminapi.EventGrantRevoked, events.Events)
	}

	consented := token("approve") // asked again (authorize fails without a consent page)
	if got := source(); got != adminapi.SourceBrowser {
		t.Errorf("the consent alice gave is stored as %q; want %q", got, adminapi.SourceBrowser)
	}
	put(true)
	put(false)
	if got := introspect(t, in, consented.AccessToken, "grafana", secret); got["active"] != true {
		t.Errorf("a token under alice's own consent after skipConsent went on and off: %v; want active", got)
	}
	token("") // and her consent still spares her the page
}

// A first-party approval is honoured only while the client skips consent, even where
// it still stands (a row written before this version knew better, or a change made
// behind the server's back): the user gets the consent page, not a code.
func TestFirstPartyApprovalIsNotConsent(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn})
	secret := "secret-grafana-0123456789abcdefghijklmnop"
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "grafana", Secret: secret, OwnerNamespace: "observability",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", GrantTypes: []string{"authorization_code"},
			RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic",
			SkipConsent: true}}); err != nil {
		t.Fatal(err)
	}
	cfg := oauthConfig(in, secret, "openid")
	b := newBrowser(t)
	b.authorize(in, cfg.AuthCodeURL("state-firstparty", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "")
	// skipConsent off without the server's revocation; the NOTIFY drops its cached copy.
	db, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, `UPDATE clients SET spec = spec - 'skipConsent' WHERE id = 'grafana'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `SELECT pg_notify($1, 'grafana')`, postgres.ClientsChannel); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := in.Admin.GetClient(ctx, "grafana")
		if err != nil {
			t.Fatal(err)
		}
		if !c.SkipConsent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server still has skipConsent 5s after the change")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, page := b.get(cfg.AuthCodeURL("state-firstparty", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.Contains(page, `id="approve"`) {
		t.Errorf("a standing first-party approval of a client without skipConsent: no consent page: %.300s", page)
	}
}
