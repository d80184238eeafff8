package tokenserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/testing/oidcop"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

const (
	upstreamClientID     = "kubeoauth"
	upstreamClientSecret = "upstream-client-secret-0123456789"
	opPassword           = "carol's upstream password"
)

// opUsers are the people of the upstream provider.
var opUsers = []oidcop.User{
	{ID: "u-carol", Username: "carol", Password: opPassword, FirstName: "Carol", LastName: "Danvers",
		Email: "carol@corp.example", EmailVerified: true, Groups: []string{"platform", "oncall"}},
	{ID: "u-dave", Username: "dave", Password: opPassword, FirstName: "Dave", LastName: "Lister",
		Email: "dave@corp.example", Groups: []string{"contractors"}},
	{ID: "u-mallory", Username: "mallory", Password: opPassword, FirstName: "Mallory", LastName: "Mal",
		Email: "mallory@corp.example", EmailVerified: true, Groups: []string{"platform"}},
}

// upstreamOP is the zitadel example provider on a port of its own. Its handler is
// set once the token server's callback URL is known; until then (or after down) it
// answers 503, as a provider behind a load balancer without backends does.
type upstreamOP struct {
	Issuer  string
	handler atomic.Pointer[http.Handler]
}

func startOP(t *testing.T) *upstreamOP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	op := &upstreamOP{Issuer: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := op.handler.Load()
		if h == nil {
			http.Error(w, "no backend", http.StatusServiceUnavailable)
			return
		}
		(*h).ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return op
}

// up serves the provider with one client, kubeoauth, whose redirect URI is in's
// callback.
func (op *upstreamOP) up(in *instance) {
	h := oidcop.New(op.Issuer, opUsers, []oidcop.Client{{ID: upstreamClientID, Secret: upstreamClientSecret,
		RedirectURIs: []string{in.URL + "/login/upstream/callback"}}}, nil)
	op.handler.Store(&h)
}

func (op *upstreamOP) down() { op.handler.Store(nil) }

func upstreamSettings(issuer string, allowed ...string) *tokenserver.UpstreamOIDC {
	// The provider listens on loopback, which the token server reaches only when told.
	return &tokenserver.UpstreamOIDC{Issuer: issuer, ClientID: upstreamClientID, ClientSecret: upstreamClientSecret,
		Scopes: []string{"openid", "profile", "email", "groups"}, DisplayName: "Corp SSO", AllowedGroups: allowed,
		FetchAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

// firstForm is the part of a page up to the end of its first form: the login page
// puts the provider's button first.
func firstForm(page string) string {
	before, _, _ := strings.Cut(page, "</form>")
	return before
}

// upstreamLogin goes from the token server's login page (page) through the
// provider's login as user, and returns what the browser ends on: the consent page
// or the app's callback when all went well.
func (b *browser) upstreamLogin(in *instance, op *upstreamOP, page, user string) (reply, string) {
	b.t.Helper()
	if !strings.Contains(page, `action="/login/upstream"`) || !strings.Contains(page, "Sign in with Corp SSO") {
		b.t.Fatalf("the login page offers no sign-in with Corp SSO: %.600s", page)
	}
	resp, opPage := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	if resp.StatusCode != http.StatusOK || !strings.Contains(opPage, `action="/login/username"`) {
		b.t.Fatalf("want the provider's login page, got %d: %.600s", resp.StatusCode, opPage)
	}
	f := formFields(opPage)
	f.Set("username", user)
	f.Set("password", opPassword)
	return b.post(op.Issuer+"/login/username", f)
}

// consent approves on the consent page and returns the app's callback query.
func (b *browser) consent(in *instance, resp reply, page string) url.Values {
	b.t.Helper()
	if !strings.Contains(page, `id="approve"`) {
		b.t.Fatalf("want the consent page, got %d: %.600s", resp.StatusCode, page)
	}
	f := formFields(page)
	f.Set("decision", "approve")
	resp, page = b.post(in.URL+"/oauth2/auth", f)
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI) {
		b.t.Fatalf("want a redirect to the app, got %d %v: %.400s", resp.StatusCode, loc, page)
	}
	return loc.Query()
}

// A person signs in through the upstream provider (a real one: zitadel's example
// OP) from the login page that also offers the password form; the app gets a code
// and, for the scopes granted, the provider's email, name and groups in the ID
// token (verified by go-oidc), at userinfo and in a refreshed ID token.
func TestUpstreamSignIn(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer, "platform", "admins")})
	op.up(in)
	cfg, verifier := openidOnlyClient(t, in, "wiki", "openid", "offline_access")
	cfg.Scopes = []string{"openid", "offline_access", "profile", "email", "groups"}
	ver := oauth2.GenerateVerifier()

	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-01", oauth2.S256ChallengeOption(ver)))
	if !strings.Contains(page, `action="/login"`) {
		t.Errorf("the login page lost its password form beside the provider: %.600s", page)
	}
	resp, page := b.upstreamLogin(in, op, page, "carol")
	if !strings.Contains(page, "carol") {
		t.Errorf("the consent page does not name carol: %.600s", page)
	}
	cb := b.consent(in, resp, page)
	tok, err := cfg.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	want := userClaims{Subject: carolAt(op.Issuer), PreferredUsername: "carol", Name: ptr("Carol Danvers"),
		Email: ptr("carol@corp.example"), EmailVerified: ptr(true), Groups: []string{"platform", "oncall"}}
	check := func(where string, got userClaims) {
		t.Helper()
		if got.Subject != want.Subject || got.PreferredUsername != want.PreferredUsername || deref(got.Name) != *want.Name ||
			deref(got.Email) != *want.Email || got.EmailVerified == nil || !*got.EmailVerified || !slices.Equal(got.Groups, want.Groups) {
			t.Errorf("%s: %s; want %s", where, show(got), show(want))
		}
	}
	check("ID token", idTokenClaims(t, verifier, tok.Extra("id_token")))
	check("userinfo", userinfoClaims(t, in, tok))
	tok.Expiry = time.Now().Add(-time.Minute) // make the token source refresh
	refreshed, err := cfg.TokenSource(context.Background(), tok).Token()
	if err != nil {
		t.Fatal(err)
	}
	check("refreshed ID token", idTokenClaims(t, verifier, refreshed.Extra("id_token")))

	// Signed in: the next authorization goes straight to the app (consent given).
	ver = oauth2.GenerateVerifier()
	if cb := b.authorize(in, cfg.AuthCodeURL("state-upstream-02", oauth2.S256ChallengeOption(ver)), ""); cb.Get("code") == "" {
		t.Errorf("a second authorization of the signed-in upstream user: %v", cb)
	}
	// The pages name the user by their username, and an app's RP-initiated logout
	// with the upstream user's ID token ends the session.
	if _, page := b.get(in.URL + "/account"); !strings.Contains(page, `id="subject">carol<`) {
		t.Errorf("the connected-apps page does not name carol: %.600s", page)
	}
	if _, page := b.get(in.URL + "/oauth2/logout?client_id=wiki"); !strings.Contains(page, `id="subject">carol<`) {
		t.Errorf("the sign-out question does not name carol: %.600s", page)
	}
	raw, _ := refreshed.Extra("id_token").(string)
	b.get(in.URL + "/oauth2/logout?id_token_hint=" + url.QueryEscape(raw))
	if signedInPage(b, in) {
		t.Error("carol is still signed in after the app's logout with her ID token")
	}
	// The password still works beside the provider.
	other, _ := openidOnlyClient(t, in, "notes", "openid")
	if tok := signIn(t, in, newBrowser(t), other, "approve", "openid", "profile"); tok.AccessToken == "" {
		t.Error("alice could not sign in with her password")
	}
}

// carolAt is the subject here of the provider issuer's u-carol: her sub behind a
// tag of the issuer, as docs/integrations/upstream-oidc.md says.
func carolAt(issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	return "upstream:" + base64.RawURLEncoding.EncodeToString(sum[:])[:12] + ":u-carol"
}

// A sub is unique only at its issuer. When the server is moved to another provider
// (a migration, a test provider), the user there with the same sub is someone else:
// they get their own subject, see the consent page, and nothing of the first user's
// grants or connected apps.
func TestUpstreamSubjectBoundToIssuer(t *testing.T) {
	dsn, keys := pg.NewMigratedDatabase(t), secrets(t)
	opA := startOP(t)
	in := start(t, setup{dsn: dsn, keyDir: keys, upstream: upstreamSettings(opA.Issuer)})
	opA.up(in)
	cfg, verifier := openidOnlyClient(t, in, "wiki", "openid")
	cfg.Scopes = []string{"openid"}
	ver := oauth2.GenerateVerifier()
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-08", oauth2.S256ChallengeOption(ver)))
	resp, page := b.upstreamLogin(in, opA, page, "carol")
	cb := b.consent(in, resp, page)
	tok, err := cfg.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	if got := idTokenClaims(t, verifier, tok.Extra("id_token")).Subject; got != carolAt(opA.Issuer) {
		t.Fatalf("carol at the first provider: sub %q", got)
	}

	// The same database and keys (the server as it is after its provider was
	// changed), another provider whose user has the same sub.
	opB := startOP(t)
	in = start(t, setup{dsn: dsn, keyDir: keys, upstream: upstreamSettings(opB.Issuer)})
	opB.up(in)
	cfg, verifier = openidOnlyClient(t, in, "wiki", "openid")
	cfg.Scopes = []string{"openid"}
	ver = oauth2.GenerateVerifier()
	b = newBrowser(t)
	_, page = b.get(cfg.AuthCodeURL("state-upstream-09", oauth2.S256ChallengeOption(ver)))
	resp, page = b.upstreamLogin(in, opB, page, "carol")
	if !strings.Contains(page, `id="approve"`) {
		t.Fatalf("the other provider's u-carol was not asked for consent (the first carol's grant was inherited): %d %.600s",
			resp.StatusCode, page)
	}
	cb = b.consent(in, resp, page)
	tok, err = cfg.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	if got := idTokenClaims(t, verifier, tok.Extra("id_token")).Subject; got != carolAt(opB.Issuer) {
		t.Errorf("u-carol at the other provider: sub %q, want %q", got, carolAt(opB.Issuer))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

func show(c userClaims) string {
	b, _ := json.Marshal(c)
	return string(b)
}

// Someone the provider signs in who is in none of the allowed groups is refused on a
// clear page and is not signed in; with no users file, the login page has no
// password form at all.
func TestUpstreamUserOutsideAllowedGroups(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer, "platform"), noUsers: true})
	op.up(in)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-03", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if strings.Contains(page, `action="/login"`) {
		t.Errorf("a password form without a users file: %.600s", page)
	}
	resp, page := b.upstreamLogin(in, op, page, "dave")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "as dave, but only members of certain groups may sign in here") {
		t.Fatalf("dave, a contractor: got %d: %.800s", resp.StatusCode, page)
	}
	if resp, _ := b.get(in.URL + "/account"); resp.StatusCode != http.StatusOK || signedInPage(b, in) {
		t.Error("dave is signed in after the refusal")
	}
}

// signedInPage says whether the browser's /account shows a signed-in user.
func signedInPage(b *browser, in *instance) bool {
	_, page := b.get(in.URL + "/account")
	return strings.Contains(page, `id="subject"`)
}

// A provider that is down when the token server starts does not stop it; the login
// page says the provider cannot be reached (502, naming it) and the password form
// keeps working; once the provider is back, signing in with it works without a
// restart.
func TestUpstreamDown(t *testing.T) {
	op := startOP(t) // no backend yet: discovery answers 503
	in := start(t, setup{upstream: upstreamSettings(op.Issuer)})
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	authURL := cfg.AuthCodeURL("state-upstream-04", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	_, page := b.get(authURL)
	resp, page := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "Signing in with Corp SSO is unavailable: "+op.Issuer+
		" cannot be reached right now") || !strings.Contains(page, `action="/login"`) {
		t.Fatalf("provider down: got %d: %.800s", resp.StatusCode, page)
	}
	// The password form on that very page works.
	f := formFields(page[strings.Index(page, `action="/login"`):])
	f.Set("username", "alice")
	f.Set("password", alicePassword)
	if resp, page := b.post(in.URL+"/login", f); !strings.Contains(page, `id="approve"`) {
		t.Fatalf("the password sign-in while the provider is down: %d %.600s", resp.StatusCode, page)
	}

	op.up(in)
	b2 := newBrowser(t)
	_, page = b2.get(authURL)
	if _, page := b2.upstreamLogin(in, op, page, "carol"); !strings.Contains(page, `id="approve"`) {
		t.Fatalf("the provider is back: %.600s", page)
	}
	// Down after discovery: the code exchange fails; a clear page, no crash.
	b3 := newBrowser(t)
	_, page = b3.get(authURL)
	resp, opPage := b3.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the provider's login page: %d", resp.StatusCode)
	}
	// The browser reaches the provider's login page, then the provider goes away before
	// the code is exchanged: stop the browser at the callback and take the provider down.
	cb := b3.stopAt(in.URL + "/login/upstream/callback")
	f = formFields(opPage)
	f.Set("username", "carol")
	f.Set("password", opPassword)
	resp, _ = b3.post(op.Issuer+"/login/username", f)
	callback := b3.follow(resp, op.Issuer, cb)
	op.down()
	resp, page = b3.get(callback)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "Signing in with Corp SSO did not work: the sign-in code could not be exchanged") {
		t.Fatalf("provider down at the exchange: %d %.800s", resp.StatusCode, page)
	}
}

// stopAt makes the browser stop following redirects at URLs starting with prefix
// (besides the app's callback) and returns prefix.
func (b *browser) stopAt(prefix string) string {
	b.hc.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirectURI) || strings.HasPrefix(req.URL.String(), prefix) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return prefix
}

// follow returns where resp redirects to, which must start with prefix.
func (b *browser) follow(resp reply, base, prefix string) string {
	b.t.Helper()
	loc, err := resp.Location()
	if err != nil {
		b.t.Fatal(err)
	}
	u, _ := url.Parse(base)
	abs := u.ResolveReference(loc).String()
	if !strings.HasPrefix(abs, prefix) {
		b.t.Fatalf("want a redirect to %s, got %d to %s", prefix, resp.StatusCode, abs)
	}
	return abs
}

// callbackOf runs a sign-in at the provider as user in b up to the redirect to the
// token server's callback, and returns that callback URL, unvisited.
func (b *browser) callbackOf(in *instance, op *upstreamOP, authURL, user string) string {
	b.t.Helper()
	prefix := b.stopAt(in.URL + "/login/upstream/callback")
	_, page := b.get(authURL)
	_, opPage := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	f := formFields(opPage)
	f.Set("username", user)
	f.Set("password", opPassword)
	resp, _ := b.post(op.Issuer+"/login/username", f)
	// The provider answers with its own callback first, then ours.
	for {
		loc, err := resp.Location()
		if err != nil || loc.String() == "" {
			b.t.Fatalf("the provider did not redirect: %d", resp.StatusCode)
		}
		next := b.follow(resp, op.Issuer, "http")
		if strings.HasPrefix(next, prefix) {
			return next
		}
		resp, _ = b.get(next)
	}
}

// Login CSRF: an attacker who signs in at the provider as themselves and gets the
// victim's browser to open the callback URL (a link, an image) must not sign the
// victim in as the attacker; the state is bound to the browser that started. A
// callback works once, and an altered state is refused.
func TestUpstreamCallbackBoundToBrowser(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer)})
	op.up(in)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	authURL := cfg.AuthCodeURL("state-upstream-05", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))

	attacker := newBrowser(t)
	planted := attacker.callbackOf(in, op, authURL, "mallory")

	victim := newBrowser(t)
	// The victim even has a sign-in of their own under way, on the provider's page.
	_, page := victim.get(authURL)
	if resp, opPage := victim.post(in.URL+"/login/upstream", formFields(firstForm(page))); !strings.Contains(opPage, `action="/login/username"`) {
		t.Fatalf("the victim's own sign-in: %d %.400s", resp.StatusCode, opPage)
	}
	resp, page := victim.get(planted)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "was not started in this browser") {
		t.Fatalf("the attacker's callback in the victim's browser: %d %.600s", resp.StatusCode, page)
	}
	if signedInPage(victim, in) {
		t.Fatal("login CSRF: the victim is signed in as the attacker")
	}

	// In the browser that started it, an altered state is refused, and the flow
	// stays usable: its own callback still works once, then never again.
	u, _ := url.Parse(planted)
	q := u.Query()
	q.Set("state", q.Get("state")+"x")
	u.RawQuery = q.Encode()
	if resp, _ := attacker.get(u.String()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an altered state: %d; want 400", resp.StatusCode)
	}
	if resp, page := attacker.get(planted); !strings.Contains(page, `id="approve"`) {
		t.Fatalf("the callback in its own browser: %d %.400s; want the consent page", resp.StatusCode, page)
	}
	if !signedInPage(attacker, in) {
		t.Fatal("mallory is not signed in after her own callback")
	}
	if resp, page := attacker.get(planted); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "was already used") {
		t.Errorf("the callback replayed: %d %.400s", resp.StatusCode, page)
	}
}

// swapper stands between the token server and the provider and, when set, replaces
// the ID token in the provider's token response: the token-substitution attacks
// nonce and signature checks are for.
type swapper struct {
	mu       sync.Mutex
	replace  string // the ID token to put in the next token response
	lastSeen string // the last ID token the provider issued
}

func (s *swapper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/oauth/token") {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var m map[string]any
	if json.Unmarshal(body, &m) == nil {
		s.mu.Lock()
		s.lastSeen, _ = m["id_token"].(string)
		if s.replace != "" {
			m["id_token"] = s.replace
			body, _ = json.Marshal(m)
		}
		s.mu.Unlock()
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// An ID token the provider issued for another sign-in (another nonce), or one from
// another provider, put into the token response, is refused: nobody is signed in.
func TestUpstreamIDTokenSubstitutionRefused(t *testing.T) {
	op := startOP(t)
	sw := &swapper{}
	settings := upstreamSettings(op.Issuer)
	settings.HTTPClient = &http.Client{Transport: sw}
	in := start(t, setup{upstream: settings})
	op.up(in)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	authURL := cfg.AuthCodeURL("state-upstream-06", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))

	b := newBrowser(t)
	_, page := b.get(authURL)
	if _, page := b.upstreamLogin(in, op, page, "mallory"); !strings.Contains(page, `id="approve"`) {
		t.Fatalf("mallory's own sign-in: %.600s", page)
	}
	sw.mu.Lock()
	sw.replace = sw.lastSeen // valid, signed by the provider, for this client: but another nonce
	sw.mu.Unlock()
	victim := newBrowser(t)
	_, page = victim.get(authURL)
	resp, page := victim.upstreamLogin(in, op, page, "carol")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "its ID token was not issued for this sign-in") {
		t.Fatalf("an ID token of another sign-in: %d %.800s", resp.StatusCode, page)
	}
	if signedInPage(victim, in) {
		t.Fatal("signed in with an ID token of another sign-in")
	}

	// Another provider, same client ID, its own keys and issuer.
	other := startOP(t)
	h := oidcop.New(other.Issuer, opUsers, []oidcop.Client{{ID: upstreamClientID, Secret: upstreamClientSecret,
		RedirectURIs: []string{"http://127.0.0.1:1/cb"}}}, nil)
	other.handler.Store(&h)
	prov, err := oidc.NewProvider(context.Background(), other.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	oc := &oauth2.Config{ClientID: upstreamClientID, ClientSecret: upstreamClientSecret, Endpoint: prov.Endpoint(),
		RedirectURL: "http://127.0.0.1:1/cb", Scopes: []string{"openid"}}
	ob := newBrowser(t)
	ob.stopAt("http://127.0.0.1:1/cb")
	ver := oauth2.GenerateVerifier()
	_, opPage := ob.get(oc.AuthCodeURL("s", oauth2.S256ChallengeOption(ver)))
	f := formFields(opPage)
	f.Set("username", "carol")
	f.Set("password", opPassword)
	resp, _ = ob.post(other.Issuer+"/login/username", f)
	cbURL, _ := url.Parse(ob.follow(resp, other.Issuer, "http://127.0.0.1:1/cb"))
	otok, err := oc.Exchange(context.Background(), cbURL.Query().Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	sw.mu.Lock()
	sw.replace, _ = otok.Extra("id_token").(string)
	sw.mu.Unlock()
	victim = newBrowser(t)
	_, page = victim.get(authURL)
	resp, page = victim.upstreamLogin(in, op, page, "carol")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "its ID token could not be verified") {
		t.Fatalf("an ID token of another provider: %d %.800s", resp.StatusCode, page)
	}
	if signedInPage(victim, in) {
		t.Fatal("signed in with another provider's ID token")
	}
}

// An authorization request too long for the flow's cookie is refused before the
// browser leaves for the provider, with a page that says why, not taken for a
// forged callback on its way back.
func TestUpstreamRequestTooLongForTheCookie(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer)})
	op.up(in)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL(strings.Repeat("s", 3500), oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	resp, page := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "The app&#39;s request is too long to carry through Corp SSO") {
		t.Fatalf("got %d: %.600s", resp.StatusCode, page)
	}
}

// A provider nobody listens for (connection refused) is the same to the people
// signing in: the token server starts, and the page names the provider.
func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	_ = ln.Close()
	in := start(t, setup{upstream: upstreamSettings(issuer), noUsers: true})
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-07", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	resp, page := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, issuer+" cannot be reached right now") {
		t.Fatalf("got %d: %.600s", resp.StatusCode, page)
	}
	if resp, _ := b.get(in.URL + "/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("readyz %d: the provider being away must not take the server out of service", resp.StatusCode)
	}
}

// A provider whose ID token has no sub (a claims mapper that drops it) would make
// all its users one subject; the sign-in is refused on a page that says so.
func TestUpstreamEmptySubRefused(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer), noUsers: true})
	h := oidcop.New(op.Issuer, append(slices.Clone(opUsers), oidcop.User{ID: "", Username: "nobody", Password: opPassword}),
		[]oidcop.Client{{ID: upstreamClientID, Secret: upstreamClientSecret,
			RedirectURIs: []string{in.URL + "/login/upstream/callback"}}}, nil)
	op.handler.Store(&h)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-10", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	resp, page := b.upstreamLogin(in, op, page, "nobody")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(page, "its ID token has no sub") {
		t.Fatalf("an ID token without sub: %d %.800s", resp.StatusCode, page)
	}
	if signedInPage(b, in) {
		t.Fatal("signed in without a sub")
	}
}

// The provider's users share the apps' name space with the users file's: a
// provider user named like a local account is refused on a page that says so
// (kube-apiserver or Grafana keyed on preferred_username would take them for the
// local one). With prefixes, their username and groups cannot be anyone else's,
// and allowedGroups still names the provider's groups.
func TestUpstreamUsernamesAndGroupsKeptApart(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer)})
	op.up(in)
	hash, err := bcrypt.GenerateFromPassword([]byte("local carol's password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeUsers(t, in.Users, "carol:"+string(hash))
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-11", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	resp, page := b.upstreamLogin(in, op, page, "carol")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "carol is the name of a local account here") {
		t.Fatalf("the provider's carol beside a local carol: %d %.800s", resp.StatusCode, page)
	}
	if signedInPage(b, in) {
		t.Fatal("the provider's carol is signed in under the local carol's name")
	}

	settings := upstreamSettings(op.Issuer, "platform")
	settings.UsernamePrefix, settings.GroupsPrefix = "corp:", "corp:"
	in = start(t, setup{upstream: settings})
	op.up(in)
	writeUsers(t, in.Users, "carol:"+string(hash))
	cfg, verifier := openidOnlyClient(t, in, "wiki", "openid", "profile", "groups")
	cfg.Scopes = []string{"openid", "profile", "groups"}
	ver := oauth2.GenerateVerifier()
	b = newBrowser(t)
	_, page = b.get(cfg.AuthCodeURL("state-upstream-12", oauth2.S256ChallengeOption(ver)))
	resp, page = b.upstreamLogin(in, op, page, "carol")
	cb := b.consent(in, resp, page)
	tok, err := cfg.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	got := idTokenClaims(t, verifier, tok.Extra("id_token"))
	if got.PreferredUsername != "corp:carol" || !slices.Equal(got.Groups, []string{"corp:platform", "corp:oncall"}) {
		t.Errorf("with prefixes: %s; want corp:carol in corp:platform and corp:oncall", show(got))
	}
}

// With allowedEmailDomains, only people whose email the provider verified at one of
// the domains get in: at a provider anyone can join (Google), an unverified
// address at corp.example proves nothing.
func TestUpstreamAllowedEmailDomains(t *testing.T) {
	op := startOP(t)
	settings := upstreamSettings(op.Issuer)
	settings.AllowedEmailDomains = []string{"corp.example"}
	in := start(t, setup{upstream: settings, noUsers: true})
	op.up(in)
	cfg, _ := openidOnlyClient(t, in, "wiki", "openid")
	authURL := cfg.AuthCodeURL("state-upstream-13", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	b := newBrowser(t)
	_, page := b.get(authURL)
	if _, page := b.upstreamLogin(in, op, page, "carol"); !strings.Contains(page, `id="approve"`) {
		t.Fatalf("carol, verified at corp.example: %.600s", page)
	}
	b = newBrowser(t)
	_, page = b.get(authURL)
	resp, page := b.upstreamLogin(in, op, page, "dave") // dave@corp.example, not verified
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "only people with an email address at certain domains") {
		t.Fatalf("dave, unverified at corp.example: %d %.800s", resp.StatusCode, page)
	}
	if signedInPage(b, in) {
		t.Fatal("dave is signed in after the refusal")
	}

	settings = upstreamSettings(op.Issuer)
	settings.AllowedEmailDomains = []string{"example"} // a parent domain is another domain
	in = start(t, setup{upstream: settings, noUsers: true})
	op.up(in)
	cfg, _ = openidOnlyClient(t, in, "wiki", "openid")
	b = newBrowser(t)
	_, page = b.get(cfg.AuthCodeURL("state-upstream-14", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if resp, page := b.upstreamLogin(in, op, page, "carol"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("carol@corp.example with allowedEmailDomains [example]: %d %.600s", resp.StatusCode, page)
	}
}

// An app's prompt=login and max_age reach the provider, so that its single sign-on
// cannot stand in for the fresh sign-in the app asked for; the app's ID token
// carries the provider's auth_time, not the moment kubeoauth's session began.
func TestUpstreamPromptLoginAndMaxAgeForwarded(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer), noUsers: true})
	op.up(in)
	cfg, verifier := openidOnlyClient(t, in, "wiki", "openid")
	cfg.Scopes = []string{"openid"}
	b := newBrowser(t)
	_, page := b.get(cfg.AuthCodeURL("state-upstream-15", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	resp, page := b.upstreamLogin(in, op, page, "carol")
	b.consent(in, resp, page)

	// Signed in; the app now asks for a fresh sign-in no older than ten minutes.
	ver := oauth2.GenerateVerifier()
	_, page = b.get(cfg.AuthCodeURL("state-upstream-16", oauth2.S256ChallengeOption(ver),
		oauth2.SetAuthURLParam("prompt", "login"), oauth2.SetAuthURLParam("max_age", "600")))
	started := time.Now().Truncate(time.Second)
	b.stopAt(op.Issuer)
	resp, _ = b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	to, err := url.Parse(b.follow(resp, in.URL, op.Issuer))
	if err != nil {
		t.Fatal(err)
	}
	if q := to.Query(); q.Get("prompt") != "login" || q.Get("max_age") != "600" {
		t.Fatalf("the provider was not asked for a fresh sign-in: %s", to)
	}
	b.stopAt(redirectURI)
	_, opPage := b.get(to.String())
	f := formFields(opPage)
	f.Set("username", "carol")
	f.Set("password", opPassword)
	resp, _ = b.post(op.Issuer+"/login/username", f)
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("want the app's callback with a code, got %d %v", resp.StatusCode, loc)
	}
	tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	idt, err := verifier.Verify(context.Background(), tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AuthTime int64 `json:"auth_time"`
	}
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(c.AuthTime, 0); at.Before(started) || at.After(time.Now()) {
		t.Errorf("auth_time %s, want the fresh sign-in at the provider (after %s)", at, started)
	}
}

// A pushed request's prompt=login and max_age are not in the URL the login page
// returns to; they reach the provider all the same.
func TestUpstreamPushedRequestPromptForwarded(t *testing.T) {
	op := startOP(t)
	in := start(t, setup{upstream: upstreamSettings(op.Issuer), noUsers: true})
	op.up(in)
	secret := confidentialClient(t, in, "grafana")
	form := parForm("state-upstream-17", oauth2.GenerateVerifier())
	form.Set("prompt", "login")
	form.Set("max_age", "600")
	code, p := push(t, in, "grafana", secret, form)
	if code != http.StatusCreated {
		t.Fatalf("push: %d %+v", code, p)
	}
	b := newBrowser(t)
	_, page := b.get(parURL(in, "grafana", p.RequestURI))
	b.stopAt(op.Issuer)
	resp, _ := b.post(in.URL+"/login/upstream", formFields(firstForm(page)))
	to, err := url.Parse(b.follow(resp, in.URL, op.Issuer))
	if err != nil {
		t.Fatal(err)
	}
	if q := to.Query(); q.Get("prompt") != "login" || q.Get("max_age") != "600" {
		t.Fatalf("the provider was not asked for a fresh sign-in: %s", to)
	}
	// The pushed request goes on to the app with the marks the return URL carried.
	b.stopAt(redirectURI)
	_, opPage := b.get(to.String())
	f := formFields(opPage)
	f.Set("username", "carol")
	f.Set("password", opPassword)
	resp, page = b.post(op.Issuer+"/login/username", f)
	if cb := b.consent(in, resp, page); cb.Get("code") == "" || cb.Get("state") != "state-upstream-17" {
		t.Errorf("the pushed request after the upstream sign-in: %v", cb)
	}
}
