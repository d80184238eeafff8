package tokenserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// An identical refresh replayed within the coalescing window after its chain was
// revoked gets invalid_grant, not the remembered 200 with the dead tokens. The window
// is a minute here, so that the replay falls inside it however slow the machine.
func TestRefreshReplayAfterRevocationIsRefused(t *testing.T) {
	in := start(t, setup{coalesce: time.Minute})
	secret := confidentialClient(t, in, "grafana")
	tok := codeFlowToken(t, in, secret)
	code, r1 := refresh(t, in, secret, tok.RefreshToken)
	if code != 200 {
		t.Fatalf("refresh: %d %v", code, r1)
	}
	// Within the window an identical request is a replay of the same answer.
	if code, again := refresh(t, in, secret, tok.RefreshToken); code != 200 || again["access_token"] != r1["access_token"] {
		t.Fatalf("identical refresh within the window: %d %v; want the first answer replayed", code, again)
	}
	if code, body := postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {r1["refresh_token"].(string)},
		"token_type_hint": {"refresh_token"}}, "grafana", secret); code != 200 {
		t.Fatalf("revoke: %d %v", code, body)
	}
	code, replay := refresh(t, in, secret, tok.RefreshToken)
	if code != 400 || replay["error"] != "invalid_grant" || replay["access_token"] != nil {
		t.Errorf("identical refresh after the chain was revoked: %d %v; want 400 invalid_grant and no token", code, replay)
	}
}

// A declared grant with an expiry: golang.org/x/oauth2 gets tokens that end with the
// grant, and a refresh does not extend them. Once the grant's expiry has passed (here:
// the operator puts it with an expiry in the past, as when a ConsentGrant is
// reconciled after its expiresAt) its tokens are refused at once (introspection,
// refresh), it is revoked with the event the operator's mirror follows, and deleting
// it afterwards finds nothing. The janitor's side of expiry, on a settable clock, is
// in the store's conformance suite (GrantExpiry).
func TestGrantExpiryEndsTokens(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	// A grant that ends after the hour an access token lives: the lifespans stand.
	expires := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	grant := &adminapi.Grant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid", "offline_access"}, ExpiresAt: &expires}
	if _, err := in.Admin.PutGrant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	v := oauth2.GenerateVerifier()
	cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-expiry-01", oauth2.S256ChallengeOption(v)), "") // the grant covers it
	tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.Expiry); left > time.Hour+time.Second || left < 50*time.Minute {
		t.Errorf("access token under a grant ending in 2h expires in %s, want the hour of its lifespan", left)
	}
	checkRefreshToken := func(rt string, notAfter time.Time) {
		t.Helper()
		got := introspect(t, in, rt, "grafana", secret)
		if exp := time.Unix(int64(got["exp"].(float64)), 0); got["active"] != true || exp.After(notAfter) {
			t.Errorf("refresh token: %v; want active, exp by %v", got, notAfter)
		}
	}
	checkRefreshToken(tok.RefreshToken, expires)

	// The grant's expiry moves to 10 minutes from now: the refresh gets tokens, ID token
	// included, that end then, and does not extend the chain past it.
	expires = time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	if _, err := in.Admin.PutGrant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	code, r1 := refresh(t, in, secret, tok.RefreshToken)
	if code != 200 {
		t.Fatalf("refresh: %d %v", code, r1)
	}
	if in := r1["expires_in"].(float64); in > time.Until(expires).Seconds()+1 {
		t.Errorf("refreshed access token: expires_in %v, beyond its grant's expiry in %s", in, time.Until(expires))
	}
	if exp := idTokenExpiry(t, r1["id_token"].(string)); exp.After(expires) {
		t.Errorf("refreshed ID token expires %v, after its grant (%v)", exp, expires)
	}
	checkRefreshToken(r1["refresh_token"].(string), expires)
	at := r1["access_token"].(string)
	if got := introspect(t, in, at, "grafana", secret); got["active"] != true {
		t.Fatalf("fresh access token inactive: %v", got)
	}
	last, err := in.Admin.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	// The grant's expiry comes.
	past := time.Now().Add(-time.Second).UTC()
	grant.ExpiresAt = &past
	if _, err := in.Admin.PutGrant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	if got := introspect(t, in, at, "grafana", secret); got["active"] != false {
		t.Errorf("access token after its grant expired: %v; want inactive", got)
	}
	if code, body := refresh(t, in, secret, r1["refresh_token"].(string)); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("refresh after the grant expired: %d %v; want invalid_grant", code, body)
	}
	// It is revoked; the event log says so.
	after := last.Next
	deadline := time.Now().Add(30 * time.Second)
	for revoked := false; !revoked; {
		evs, err := in.Admin.Events(ctx, after, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Events {
			revoked = revoked || e.Kind == adminapi.EventGrantRevoked && e.Subject == "alice" && e.ClientID == "grafana"
		}
		after = evs.Next
		if !revoked && time.Now().After(deadline) {
			t.Fatal("no grant_revoked event for the expired grant")
		}
	}
	if err := in.Admin.DeleteGrant(ctx, "grafana", "alice"); err == nil {
		t.Error("deleting the expired grant after the janitor succeeded; want not found")
	}
}

// Narrowing a declared grant through the admin API revokes the tokens whose scopes
// the new set no longer covers.
func TestGrantNarrowingRevokesWiderTokens(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	grant := &adminapi.Grant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid", "offline_access", "zones.read"}}
	if _, err := in.Admin.PutGrant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	token := func(scopes ...string) *oauth2.Token {
		cfg := oauthConfig(in, secret, scopes...)
		v := oauth2.GenerateVerifier()
		cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-narrow-01", oauth2.S256ChallengeOption(v)), "")
		tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	narrow, wide := token("openid", "offline_access"), token("openid", "offline_access", "zones.read")
	grant.Scopes = []string{"openid", "offline_access"}
	if _, err := in.Admin.PutGrant(ctx, grant); err != nil {
		t.Fatal(err)
	}
	if got := introspect(t, in, wide.AccessToken, "grafana", secret); got["active"] != false {
		t.Errorf("a zones.read token after the grant lost zones.read: %v; want inactive", got)
	}
	if code, body := refresh(t, in, secret, wide.RefreshToken); code != 400 || body["error"] != "invalid_grant" {
		t.Errorf("refreshing a zones.read token after the grant lost zones.read: %d %v; want invalid_grant", code, body)
	}
	if got := introspect(t, in, narrow.AccessToken, "grafana", secret); got["active"] != true {
		t.Errorf("a token the narrowed grant still covers: %v; want active", got)
	}
}

// idTokenExpiry reads exp from an ID token (already verified elsewhere in the suite).
func idTokenExpiry(t *testing.T, raw string) time.Time {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return time.Unix(claims.Exp, 0)
}

// A replica that missed a client's deletion (here: deleted behind its back, with no
// NOTIFY) still has the client cached, but issues it no token: the database refuses a
// token whose client is gone, and the client gets invalid_client, not a token and not
// a 500.
func TestDeletedClientGetsNoTokenFromAStaleReplica(t *testing.T) {
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn})
	secret := confidentialClient(t, in, "grafana")
	form := url.Values{"grant_type": {"client_credentials"}}
	if code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret); code != 200 { // cached now
		t.Fatalf("before: %d %v", code, body)
	}
	db, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(context.Background(), `DELETE FROM clients WHERE id = 'grafana'`); err != nil {
		t.Fatal(err)
	}
	code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
	if code != 401 || body["error"] != "invalid_client" || body["access_token"] != nil {
		t.Errorf("token for a client deleted behind the replica's back: %d %v; want 401 invalid_client", code, body)
	}
}
