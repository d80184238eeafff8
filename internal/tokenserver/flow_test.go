package tokenserver_test

import (
	"context"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// browser is a cookie-keeping HTTP client that walks the login and consent pages the
// way a person's browser submits them (the headless-Chromium test drives the real
// pages; this one is for the many protocol cases).
type browser struct {
	t  *testing.T
	hc *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, hc: &http.Client{Jar: jar, Timeout: 15 * time.Second,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirectURI) {
				return http.ErrUseLastResponse // the app's callback: stop here
			}
			return nil
		}}}
}

// reply is a response already read and closed.
type reply struct {
	StatusCode int
	header     http.Header
}

// Location is the redirect target, if any.
func (r reply) Location() (*url.URL, error) { return url.Parse(r.header.Get("Location")) }

func (b *browser) do(req *http.Request) (reply, string) {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header}, string(body)
}

func (b *browser) get(u string) (reply, string) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) (reply, string) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// formFields returns the hidden fields of the first form in page.
func formFields(page string) url.Values {
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		v.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	return v
}

// authorize walks from the authorization URL to the app's callback and returns the
// callback's query. decision is approve or deny; "" expects no consent page.
func (b *browser) authorize(in *instance, authURL, decision string) url.Values {
	b.t.Helper()
	resp, page, consent := b.walk(in, authURL, decision)
	if consent && decision == "" {
		b.t.Fatalf("a consent page was shown where none was expected")
	} else if !consent && decision != "" {
		b.t.Fatalf("no consent page; got %d: %.400s", resp.StatusCode, page)
	}
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI) {
		b.t.Fatalf("want a redirect to the app, got %d %v: %.400s", resp.StatusCode, loc, page)
	}
	return loc.Query()
}

// walk follows authURL as alice: it signs her in and decides on the consent page
// (consent: one was shown; decision "" leaves it there), and returns the last answer.
func (b *browser) walk(in *instance, authURL, decision string) (resp reply, page string, consent bool) {
	b.t.Helper()
	resp, page = b.get(authURL)
	if strings.Contains(page, `action="/login"`) {
		f := formFields(page)
		f.Set("username", "alice")
		f.Set("password", alicePassword)
		resp, page = b.post(in.URL+"/login", f)
	}
	if consent = strings.Contains(page, `id="approve"`); consent && decision != "" {
		f := formFields(page)
		f.Set("decision", decision)
		resp, page = b.post(in.URL+"/oauth2/auth", f)
	}
	return resp, page, consent
}

func oauthConfig(in *instance, secret string, scopes ...string) *oauth2.Config {
	return &oauth2.Config{ClientID: "grafana", ClientSecret: secret, RedirectURL: redirectURI, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth", TokenURL: in.URL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader}}
}

// The whole authorization-code flow with PKCE: golang.org/x/oauth2 on the client side,
// github.com/coreos/go-oidc verifying the ID token through discovery and JWKS.
func TestAuthorizationCodeFlow(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "zones.read", "offline_access")
	verifier := oauth2.GenerateVerifier()
	b := newBrowser(t)

	// First time: login, consent page, approve.
	resp, page := b.get(cfg.AuthCodeURL("state-0000001", oauth2.S256ChallengeOption(verifier), oidc.Nonce("nonce-00000001")))
	if resp.StatusCode != 200 || !strings.Contains(page, "Sign in") {
		t.Fatalf("authorization URL: %d %.300s", resp.StatusCode, page)
	}
	cb := b.authorize(in, cfg.AuthCodeURL("state-0000001", oauth2.S256ChallengeOption(verifier), oidc.Nonce("nonce-00000001")), "approve")
	if cb.Get("state") != "state-0000001" || cb.Get("code") == "" {
		t.Fatalf("callback = %v; want a code and state-1", cb)
	}
	tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Error("no refresh token despite offline_access")
	}
	provider, err := oidc.NewProvider(ctx, in.URL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "grafana"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejected the ID token: %v", err)
	}
	if idt.Subject != "alice" || idt.Nonce != "nonce-00000001" {
		t.Errorf("ID token subject %q nonce %q; want alice, nonce-1", idt.Subject, idt.Nonce)
	}
	ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil || ui.Subject != "alice" {
		t.Errorf("userinfo = %+v, %v; want alice", ui, err)
	}

	// The code works once; a second use fails.
	if _, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier)); err == nil {
		t.Error("an authorization code was accepted twice")
	}
	// The consent was remembered: the next authorization skips the page.
	v2 := oauth2.GenerateVerifier()
	cb = b.authorize(in, cfg.AuthCodeURL("state-0000002", oauth2.S256ChallengeOption(v2)), "")
	if cb.Get("code") == "" {
		t.Fatalf("second authorization: %v", cb)
	}
	grants, err := in.Admin.ListGrants(ctx, "grafana", "alice")
	if err != nil || len(grants) != 1 || grants[0].Source != "browser" {
		t.Errorf("grants = %+v, %v; want alice's browser consent", grants, err)
	}
	// A wrong PKCE verifier is refused.
	if _, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
		t.Error("a code was exchanged with the wrong PKCE verifier")
	}
}

func TestConsentDeniedAndRedirectMismatch(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid")
	b := newBrowser(t)
	cb := b.authorize(in, cfg.AuthCodeURL("state-xyz-123", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "deny")
	if cb.Get("error") != "access_denied" || cb.Get("state") != "state-xyz-123" || cb.Get("code") != "" {
		t.Errorf("denied: callback = %v; want error=access_denied", cb)
	}
	// A redirect URI that is not registered exactly is never redirected to.
	evil := *cfg
	evil.RedirectURL = redirectURI + "/../evil"
	resp, _ := b.get(evil.AuthCodeURL("state-xyz-123"))
	if loc, _ := resp.Location(); strings.Contains(loc.String(), "evil") {
		t.Errorf("redirected to an unregistered URI: %v", loc)
	}
	if resp.StatusCode < 400 {
		t.Errorf("unregistered redirect URI: status %d, want an error", resp.StatusCode)
	}
}

// refreshForm refreshes with a raw POST, as a client that retries would.
func refresh(t *testing.T, in *instance, secret, rt string) (int, map[string]any) {
	t.Helper()
	return postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "grafana", secret)
}

func codeFlowToken(t *testing.T, in *instance, secret string) *oauth2.Token {
	t.Helper()
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	v := oauth2.GenerateVerifier()
	cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-xyz-123", oauth2.S256ChallengeOption(v)), "approve")
	tok, err := cfg.Exchange(context.Background(), cb.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Rotation: each refresh returns a new refresh token; the used one still works during
// the grace period (same chain); reused after it, the whole chain is revoked.
func TestRefreshRotationGraceAndReuse(t *testing.T) {
	in := start(t, setup{grace: 3 * time.Second})
	secret := confidentialClient(t, in, "grafana")
	tok := codeFlowToken(t, in, secret)

	code, r1 := refresh(t, in, secret, tok.RefreshToken)
	if code != 200 || r1["refresh_token"] == tok.RefreshToken {
		t.Fatalf("first refresh: %d %v; want a new refresh token", code, r1)
	}
	// Within the grace period, the old refresh token works again (a client that lost
	// the response retries). After the one-second coalescing window, this is a new
	// rotation in the same chain, not a replay of the first answer.
	time.Sleep(1100 * time.Millisecond)
	code, r2 := refresh(t, in, secret, tok.RefreshToken)
	if r2["access_token"] == r1["access_token"] {
		t.Error("the grace-period refresh replayed the first answer instead of rotating")
	}
	if code != 200 {
		t.Fatalf("grace-period reuse: %d %v; want 200", code, r2)
	}
	if got := introspect(t, in, r2["access_token"].(string), "grafana", secret); got["active"] != true {
		t.Errorf("token from a grace-period refresh is inactive: %v", got)
	}
	time.Sleep(2 * time.Second) // 3.1 s after the rotation: past the grace period
	code, r3 := refresh(t, in, secret, tok.RefreshToken)
	if code != 400 || r3["error"] != "invalid_grant" {
		t.Errorf("reuse after the grace period: %d %v; want invalid_grant", code, r3)
	}
	// ...and everything in the chain is gone.
	for _, at := range []any{r1["access_token"], r2["access_token"]} {
		if got := introspect(t, in, at.(string), "grafana", secret); got["active"] != false {
			t.Errorf("access token of a revoked chain still active: %v", got)
		}
	}
	if code, _ := refresh(t, in, secret, r1["refresh_token"].(string)); code == 200 {
		t.Error("a refresh token of a revoked chain still works")
	}
	resp, _ := httpClient.Get(in.MetricsURL + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{"kubeoauth_refresh_grace_uses_total 1", "kubeoauth_refresh_chain_revocations_total 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Many concurrent refreshes with one token, with no grace period: coalescing gives
// every caller the same valid answer, and nothing is revoked.
func TestConcurrentRefreshesCoalesce(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	tok := codeFlowToken(t, in, secret)
	const n = 32
	results := make([]map[string]any, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-startGate
			codes[i], results[i] = refresh(t, in, secret, tok.RefreshToken)
		})
	}
	close(startGate)
	wg.Wait()
	for i := range n {
		if codes[i] != 200 {
			t.Fatalf("caller %d: %d %v", i, codes[i], results[i])
		}
		if got := introspect(t, in, results[i]["access_token"].(string), "grafana", secret); got["active"] != true {
			t.Errorf("caller %d got an inactive access token", i)
		}
	}
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if m := regexp.MustCompile(`kubeoauth_refresh_coalesced_total (\d+)`).FindStringSubmatch(string(body)); m == nil || m[1] == "0" {
		t.Errorf("no refresh was coalesced among %d identical concurrent ones: %v", n, m)
	}
}

// Two replicas on one database: concurrent refreshes of one token spread over both
// all succeed within the grace period, and their tokens work on either replica.
func TestTwoReplicasShareRefreshes(t *testing.T) {
	dsn, keys := pg.NewMigratedDatabase(t), secrets(t)
	a := start(t, setup{dsn: dsn, keyDir: keys, grace: 30 * time.Second})
	b := start(t, setup{dsn: dsn, keyDir: keys, grace: 30 * time.Second})
	secret := confidentialClient(t, a, "grafana")
	tok := codeFlowToken(t, a, secret)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i := range 16 {
		wg.Go(func() {
			in, other := a, b
			if i%2 == 1 {
				in, other = b, a
			}
			code, body := refresh(t, in, secret, tok.RefreshToken)
			if code != 200 {
				mu.Lock()
				failures = append(failures, errors.New(body["error"].(string)).Error())
				mu.Unlock()
				return
			}
			if got := introspect(t, other, body["access_token"].(string), "grafana", secret); got["active"] != true {
				mu.Lock()
				failures = append(failures, "token not active on the other replica")
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of 16 refreshes across two replicas failed: %v", len(failures), failures)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// golang.org/x/oauth2's TokenSource refreshes an expired token by itself; and nothing
// secret (client secret, password, tokens, codes) reaches the logs on the way.
func TestOAuth2TokenSourceRefreshesAndLogsStayClean(t *testing.T) {
	ctx := context.Background()
	logs := &syncBuffer{}
	in := start(t, setup{logTo: logs})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "offline_access")
	v := oauth2.GenerateVerifier()
	b := newBrowser(t)
	// A failed sign-in first, so that the log has something to say about it.
	_, page := b.get(cfg.AuthCodeURL("state-logs-00001", oauth2.S256ChallengeOption(v)))
	f := formFields(page)
	f.Set("username", "alice")
	f.Set("password", "wrong-password-123")
	if resp, _ := b.post(in.URL+"/login", f); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", resp.StatusCode)
	}
	cb := b.authorize(in, cfg.AuthCodeURL("state-logs-00001", oauth2.S256ChallengeOption(v)), "approve")
	tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	expired := *tok
	expired.Expiry = time.Now().Add(-time.Minute)
	fresh, err := cfg.TokenSource(ctx, &expired).Token()
	if err != nil {
		t.Fatalf("TokenSource refresh: %v", err)
	}
	if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == tok.RefreshToken {
		t.Error("TokenSource returned the old tokens instead of refreshed ones")
	}
	if !strings.Contains(logs.String(), "failed sign-in") {
		t.Fatalf("the logs lack the failed sign-in; are they captured?\n%s", logs.String())
	}
	for name, s := range map[string]string{"client secret": secret, "password": "wrong-password-123",
		"access token": tok.AccessToken, "refresh token": tok.RefreshToken, "code": cb.Get("code"),
		"new access token": fresh.AccessToken, "admin token": adminToken} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the logs contain the %s", name)
		}
	}
}
