package tokenserver_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
)

const postLogoutURI = "http://127.0.0.1:5555/signed-out"

// logoutClient registers grafana with a post-logout redirect URI.
func logoutClient(t *testing.T, in *instance) string {
	t.Helper()
	secret := "secret-grafana-0123456789abcdefghijklmnop"
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{
		ID: "grafana", Secret: secret, OwnerNamespace: "observability", ClientMetadata: adminapi.ClientMetadata{
			Name: "Grafana", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURI},
			PostLogoutRedirectURIs: []string{postLogoutURI}, Scopes: []string{"openid"},
			TokenEndpointAuthMethod: "client_secret_basic",
		}})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// signInToApp walks b through the code flow (approving consent when asked) and
// returns the verified ID token and its raw form, as an app holds them.
func signInToApp(t *testing.T, in *instance, b *browser, cfg *oauth2.Config, opts ...oauth2.AuthCodeOption) (*oidc.IDToken, string) {
	t.Helper()
	ctx := context.Background()
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-signin-0001", append(opts, oauth2.S256ChallengeOption(verifier))...)
	decision := "approve"
	if gs, _ := in.Admin.ListGrants(ctx, cfg.ClientID, "alice"); len(gs) > 0 {
		decision = ""
	}
	cb := b.authorize(in, authURL, decision)
	tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return verifyIDToken(t, in, tok)
}

func verifyIDToken(t *testing.T, in *instance, tok *oauth2.Token) (*oidc.IDToken, string) {
	t.Helper()
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, in.URL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "grafana"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejected the ID token: %v", err)
	}
	return idt, raw
}

// signJWT signs claims with key, as a forger (or another server) would.
func signJWT(t *testing.T, key *signingkey.Key, claims josejwt.Claims) string {
	t.Helper()
	return signTyped(t, key, claims, "JWT")
}

func signTyped(t *testing.T, key *signingkey.Key, claims josejwt.Claims, typ jose.ContentType) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key.Private},
		(&jose.SignerOptions{}).WithHeader("kid", key.ID).WithType(typ))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := josejwt.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func endSessionURL(in *instance, params url.Values) string {
	return in.URL + "/oauth2/logout?" + params.Encode()
}

// OpenID Connect RP-Initiated Logout: discovery names the endpoint; an app that
// sends the user there with the ID token it holds and a registered address gets the
// user back there with its state, and the sign-in session is over for every copy of
// the cookie.
func TestRPInitiatedLogoutEndsTheSession(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := logoutClient(t, in)
	cfg := oauthConfig(in, secret, "openid")
	provider, err := oidc.NewProvider(ctx, in.URL)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil || meta.EndSession != in.URL+"/oauth2/logout" {
		t.Fatalf("discovery end_session_endpoint = %q, %v; want %s/oauth2/logout", meta.EndSession, err, in.URL)
	}

	user := newBrowser(t)
	_, hint := signInToApp(t, in, user, cfg)
	copied := user.copyOf(in)

	resp, page := user.noRedirects().get(endSessionURL(in, url.Values{"id_token_hint": {hint},
		"post_logout_redirect_uri": {postLogoutURI}, "state": {"bye-state-0001"}}))
	loc, _ := resp.Location()
	if resp.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), postLogoutURI) ||
		loc.Query().Get("state") != "bye-state-0001" {
		t.Fatalf("end session: %d %v %.300s; want 303 to %s with the state", resp.StatusCode, loc, page, postLogoutURI)
	}
	if got := copied.signedInAs(in); got != "" {
		t.Errorf("a copy of the cookie taken before the logout still shows %q", got)
	}
	if got := user.signedInAs(in); got != "" {
		t.Errorf("after the logout /account still shows %q", got)
	}
	// The app's next authorization must sign the user in again.
	_, page = copied.get(cfg.AuthCodeURL("state-after-00001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.Contains(page, `action="/login"`) {
		t.Errorf("authorization after logout with a copied cookie: %.300s; want the login page", page)
	}
}

// What an end-session request must not do: send the user to an address the client
// did not register, or act on an ID token this server did not sign (another key,
// another issuer) or on an access token; an expired ID token of ours is still a good
// hint.
func TestRPInitiatedLogoutRefusals(t *testing.T) {
	in := start(t, setup{})
	secret := logoutClient(t, in)
	cfg := oauthConfig(in, secret, "openid")
	user := newBrowser(t)
	_, hint := signInToApp(t, in, user, cfg)

	refused := func(name string, params url.Values, want string) {
		t.Helper()
		resp, page := user.noRedirects().get(endSessionURL(in, params))
		if resp.StatusCode != http.StatusBadRequest || resp.header.Get("Location") != "" || !strings.Contains(page, want) {
			t.Errorf("%s: %d %q %.300s; want 400 saying %q", name, resp.StatusCode, resp.header.Get("Location"), page, want)
		}
		if got := user.signedInAs(in); got != "alice" {
			t.Fatalf("%s ended the session (%q)", name, got)
		}
	}
	refused("an unregistered post_logout_redirect_uri", url.Values{"id_token_hint": {hint},
		"post_logout_redirect_uri": {"https://evil.example.com/"}, "state": {"s"}}, "has not registered")
	refused("a redirect with a client_id only", url.Values{"client_id": {"grafana"},
		"post_logout_redirect_uri": {"https://evil.example.com/"}}, "has not registered")

	now := time.Now()
	claims := josejwt.Claims{Issuer: in.URL, Subject: "alice", Audience: josejwt.Audience{"grafana"},
		IssuedAt: josejwt.NewNumericDate(now), Expiry: josejwt.NewNumericDate(now.Add(time.Hour))}
	forger, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	forgerKey, err := signingkey.Parse(forger)
	if err != nil {
		t.Fatal(err)
	}
	refused("a hint signed by another key", url.Values{"id_token_hint": {signJWT(t, forgerKey, claims)},
		"post_logout_redirect_uri": {postLogoutURI}}, "did not issue")

	other := start(t, setup{})
	logoutClient(t, other)
	_, otherHint := signInToApp(t, other, newBrowser(t), oauthConfig(other, "secret-grafana-0123456789abcdefghijklmnop", "openid"))
	refused("an ID token of another issuer", url.Values{"id_token_hint": {otherHint},
		"post_logout_redirect_uri": {postLogoutURI}}, "did not issue")

	ours, err := signingkey.Load(filepath.Join(filepath.Dir(in.Users), "key.pem"), "")
	if err != nil {
		t.Fatal(err)
	}
	wrongIssuer := claims
	wrongIssuer.Issuer = "https://another.example.com"
	refused("our key but another issuer", url.Values{"id_token_hint": {signJWT(t, ours.Current, wrongIssuer)}}, "did not issue")
	refused("a JWT access token of ours", url.Values{"id_token_hint": {signTyped(t, ours.Current, claims, "at+jwt")}},
		"did not issue")
	refused("a hint for another client than client_id", url.Values{"id_token_hint": {hint}, "client_id": {"someone-else"}},
		"was not issued to")

	expired := claims
	expired.IssuedAt, expired.Expiry = josejwt.NewNumericDate(now.Add(-3*time.Hour)), josejwt.NewNumericDate(now.Add(-2*time.Hour))
	resp, page := user.noRedirects().get(endSessionURL(in, url.Values{"id_token_hint": {signJWT(t, ours.Current, expired)},
		"post_logout_redirect_uri": {postLogoutURI}}))
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), postLogoutURI) {
		t.Fatalf("an expired hint of ours: %d %v %.300s; want the redirect", resp.StatusCode, loc, page)
	}
	if got := user.signedInAs(in); got != "" {
		t.Errorf("an expired hint of ours left the session (%q)", got)
	}
}

// Without a hint (a link anyone can make, an image on another site) the user is
// asked, and only the confirmation form, with the session's CSRF token, signs out.
func TestRPInitiatedLogoutWithoutHintAsks(t *testing.T) {
	in := start(t, setup{})
	logoutClient(t, in)
	user := newBrowser(t)
	user.signIn(in, "alice", alicePassword)

	resp, page := user.noRedirects().get(endSessionURL(in, url.Values{"client_id": {"grafana"},
		"post_logout_redirect_uri": {postLogoutURI}, "state": {"bye-state-0002"}}))
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="confirm-sign-out"`) || !strings.Contains(page, "Grafana") {
		t.Fatalf("a bare end-session GET: %d %.400s; want the confirmation page naming the app", resp.StatusCode, page)
	}
	if got := user.signedInAs(in); got != "alice" {
		t.Fatalf("a bare GET signed the user out (%q)", got)
	}
	f := formFields(page)
	forged := url.Values{}
	for k, v := range f {
		forged[k] = v
	}
	forged.Set("csrf", "not-the-token")
	forged.Set("decision", "sign_out")
	if resp, _ := user.noRedirects().post(in.URL+"/oauth2/logout/confirm", forged); resp.StatusCode != http.StatusForbidden {
		t.Errorf("confirmation with a wrong CSRF token: %d; want 403", resp.StatusCode)
	}
	if got := user.signedInAs(in); got != "alice" {
		t.Fatalf("a forged confirmation signed the user out (%q)", got)
	}
	stay := url.Values{}
	for k, v := range f {
		stay[k] = v
	}
	stay.Set("decision", "stay")
	if resp, _ := user.noRedirects().post(in.URL+"/oauth2/logout/confirm", stay); resp.StatusCode != http.StatusSeeOther ||
		user.signedInAs(in) != "alice" {
		t.Fatalf("staying signed in: %d, signed in as %q", resp.StatusCode, user.signedInAs(in))
	}
	f.Set("decision", "sign_out")
	resp, _ = user.noRedirects().post(in.URL+"/oauth2/logout/confirm", f)
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), postLogoutURI) ||
		loc.Query().Get("state") != "bye-state-0002" {
		t.Fatalf("confirmed sign-out: %d %v; want 303 to %s with the state", resp.StatusCode, loc, postLogoutURI)
	}
	if got := user.signedInAs(in); got != "" {
		t.Errorf("after the confirmed sign-out /account shows %q", got)
	}
	// Without a redirect URI the end is a page that says so.
	user.signIn(in, "alice", alicePassword)
	_, page = user.get(endSessionURL(in, nil))
	f = formFields(page)
	f.Set("decision", "sign_out")
	if resp, page := user.post(in.URL+"/oauth2/logout/confirm", f); resp.StatusCode != http.StatusOK ||
		!strings.Contains(page, "You are signed out.") {
		t.Errorf("sign-out without a redirect URI: %d %.300s; want the signed-out page", resp.StatusCode, page)
	}
}

// The admin API refuses a post-logout redirect URI that is not an absolute URL
// without a fragment, naming the field.
func TestAdminRefusesBadPostLogoutRedirectURI(t *testing.T) {
	in := start(t, setup{})
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "grafana", OwnerNamespace: "observability",
		Secret: "secret-grafana-0123456789abcdefghijklmnop",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", GrantTypes: []string{"authorization_code"},
			RedirectURIs: []string{redirectURI}, PostLogoutRedirectURIs: []string{postLogoutURI, "/relative#x"},
			Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic"}})
	var ae *adminapi.Error
	if !errors.As(err, &ae) || ae.Field != "postLogoutRedirectURIs[1]" {
		t.Fatalf("PutClient with a relative post-logout URI: %v; want an error on postLogoutRedirectURIs[1]", err)
	}
}

// During a key rotation an ID token signed with the previous key is still a good
// hint: apps hold ID tokens issued before the rotation.
func TestRPInitiatedLogoutAcceptsThePreviousKey(t *testing.T) {
	previous, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	previousFile := filepath.Join(t.TempDir(), "previous.pem")
	if err := os.WriteFile(previousFile, previous, 0o600); err != nil {
		t.Fatal(err)
	}
	previousKey, err := signingkey.Parse(previous)
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, setup{previousKey: previousFile})
	logoutClient(t, in)
	user := newBrowser(t)
	user.signIn(in, "alice", alicePassword)
	now := time.Now()
	hint := signJWT(t, previousKey, josejwt.Claims{Issuer: in.URL, Subject: "alice", Audience: josejwt.Audience{"grafana"},
		IssuedAt: josejwt.NewNumericDate(now.Add(-time.Hour)), Expiry: josejwt.NewNumericDate(now.Add(-50 * time.Minute))})
	resp, page := user.noRedirects().get(endSessionURL(in, url.Values{"id_token_hint": {hint},
		"post_logout_redirect_uri": {postLogoutURI}}))
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), postLogoutURI) {
		t.Fatalf("a hint signed with the previous key: %d %v %.300s; want the redirect", resp.StatusCode, loc, page)
	}
	if got := user.signedInAs(in); got != "" {
		t.Errorf("after the logout /account still shows %q", got)
	}
}
