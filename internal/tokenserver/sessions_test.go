package tokenserver_test

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// signIn signs b in as user through the login page and returns to /account.
func (b *browser) signIn(in *instance, user, password string) (reply, string) {
	b.t.Helper()
	_, page := b.get(in.URL + "/login")
	f := formFields(page)
	f.Set("username", user)
	f.Set("password", password)
	return b.post(in.URL+"/login", f)
}

// signedInAs is the subject /account shows, or "" when it sends b to sign in.
func (b *browser) signedInAs(in *instance) string {
	b.t.Helper()
	_, page := b.get(in.URL + "/account")
	_, rest, ok := strings.Cut(page, `<strong id="subject">`)
	if !ok {
		return ""
	}
	subject, _, _ := strings.Cut(rest, "<")
	return subject
}

func bcryptHash(t testing.TB, password string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// A consent form is accepted only with the CSRF token of the session that shows it:
// the old double-submit cookie, planted by a sibling, counts for nothing; a token of
// another session is refused; a cross-origin POST is refused even with a good token.
func TestConsentCSRFIsBoundToTheSession(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid")
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-csrf-00001", oauth2.S256ChallengeOption(verifier))

	victim := newBrowser(t)
	victim.signIn(in, "alice", alicePassword)
	_, consent := victim.get(authURL)
	if !strings.Contains(consent, `id="approve"`) {
		t.Fatalf("no consent page: %.300s", consent)
	}
	good := formFields(consent)
	good.Set("decision", "approve")

	postWith := func(form url.Values, header http.Header, cookie *http.Cookie) (reply, string) {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/auth", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header[k] = v
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		return victim.do(req)
	}
	planted := url.Values{}
	for k, v := range good {
		planted[k] = v
	}
	planted.Set("csrf", "planted-by-a-sibling-0123456789abcdefghij")
	resp, page := postWith(planted, nil, &http.Cookie{Name: "kubeoauth_csrf", Value: "planted-by-a-sibling-0123456789abcdefghij"})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "did not come from this site") {
		t.Errorf("consent with a planted double-submit cookie: %d %.300s; want 403", resp.StatusCode, page)
	}

	other := newBrowser(t)
	_, login := other.get(in.URL + "/login")
	foreign := url.Values{}
	for k, v := range good {
		foreign[k] = v
	}
	foreign.Set("csrf", formFields(login).Get("csrf"))
	if resp, page := postWith(foreign, nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("consent with another session's CSRF token: %d %.300s; want 403", resp.StatusCode, page)
	}

	sibling := http.Header{"Origin": {"http://evil." + strings.TrimPrefix(in.URL, "http://")}, "Sec-Fetch-Site": {"same-site"}}
	if resp, page := postWith(good, sibling, nil); resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "another site") {
		t.Errorf("consent posted from a sibling origin with a good token: %d %.300s; want 403", resp.StatusCode, page)
	}
	if gs, err := in.Admin.ListGrants(context.Background(), "grafana", "alice"); err != nil || len(gs) != 0 {
		t.Fatalf("grants after the refused posts: %v %v; want none", gs, err)
	}

	// The form as the page gave it works, and the response names the issuer (RFC 9207).
	resp, _ = postWith(good, http.Header{"Origin": {in.URL}, "Sec-Fetch-Site": {"same-origin"}}, nil)
	loc, _ := resp.Location()
	if loc.Query().Get("code") == "" || loc.Query().Get("iss") != in.URL {
		t.Fatalf("approved consent: %d %v; want a code and iss=%s", resp.StatusCode, loc, in.URL)
	}
	if _, err := cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Errorf("exchanging the code: %v", err)
	}
}

// Under an https issuer the session cookie is __Host- prefixed (a sibling subdomain
// cannot set it) and Secure; under a plain-http development issuer it cannot be, and
// keeps its plain name.
func TestSessionCookieNames(t *testing.T) {
	for name, tc := range map[string]struct {
		https      bool
		cookie     string
		wantSecure bool
	}{
		"https issuer": {https: true, cookie: "__Host-kubeoauth_session", wantSecure: true},
		"http issuer":  {https: false, cookie: "kubeoauth_session"},
	} {
		t.Run(name, func(t *testing.T) {
			in := start(t, setup{httpsIssuer: tc.https})
			resp, err := httpClient.Get(in.URL + "/login")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			cs := resp.Cookies()
			if len(cs) != 1 || cs[0].Name != tc.cookie || cs[0].Secure != tc.wantSecure || cs[0].Path != "/" ||
				cs[0].Domain != "" || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteLaxMode {
				t.Errorf("cookies set by the login page: %v; want only %s (Secure %v, Path=/, no Domain, HttpOnly, Lax)",
					resp.Header.Values("Set-Cookie"), tc.cookie, tc.wantSecure)
			}
		})
	}
}

// A session ends when its user's password hash changes or the user is removed from
// the users file; others' sessions go on.
func TestSessionEndsWithTheUsersHash(t *testing.T) {
	in := start(t, setup{})
	const bobPassword = "bob's own password, long enough"
	aliceHash := bcryptHash(t, alicePassword, bcrypt.MinCost)
	bobLine := "bob:" + bcryptHash(t, bobPassword, bcrypt.MinCost)
	writeUsers(t, in.Users, "alice:"+aliceHash, bobLine)
	alice, bob := newBrowser(t), newBrowser(t)
	alice.signIn(in, "alice", alicePassword)
	bob.signIn(in, "bob", bobPassword)
	if a, b := alice.signedInAs(in), bob.signedInAs(in); a != "alice" || b != "bob" {
		t.Fatalf("signed in as %q and %q", a, b)
	}

	const newPassword = "a brand new password for alice"
	writeUsers(t, in.Users, "alice:"+bcryptHash(t, newPassword, bcrypt.MinCost), bobLine)
	if got := alice.signedInAs(in); got != "" {
		t.Errorf("after alice's password changed her old session still shows the account of %q", got)
	}
	if got := bob.signedInAs(in); got != "bob" {
		t.Errorf("bob's session ended (%q) when only alice's password changed", got)
	}
	if resp, _ := alice.signIn(in, "alice", alicePassword); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old password after the change: %d, want 401", resp.StatusCode)
	}
	alice.signIn(in, "alice", newPassword)
	if got := alice.signedInAs(in); got != "alice" {
		t.Fatalf("signed in with the new password: %q", got)
	}

	writeUsers(t, in.Users, bobLine)
	if got := alice.signedInAs(in); got != "" {
		t.Errorf("after alice was removed her session still shows the account of %q", got)
	}
}

// Sign-out ends the session; the sign-out form needs the session's CSRF token.
func TestSignOut(t *testing.T) {
	in := start(t, setup{})
	b := newBrowser(t)
	b.signIn(in, "alice", alicePassword)
	_, account := b.get(in.URL + "/account")
	f := formFields(account)
	if resp, _ := b.post(in.URL+"/logout", url.Values{"csrf": {"not-the-token"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	if got := b.signedInAs(in); got != "alice" {
		t.Fatalf("a refused sign-out ended the session (%q)", got)
	}
	nb := *b
	nb.hc = &http.Client{Jar: b.hc.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := nb.post(in.URL+"/logout", url.Values{"csrf": {f.Get("csrf")}})
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || loc.Path != "/login" {
		t.Errorf("sign-out: %d %v; want 303 to /login", resp.StatusCode, loc)
	}
	if got := b.signedInAs(in); got != "" {
		t.Errorf("after sign-out /account still shows %q", got)
	}
}

// noRedirects is b's cookies in a client that stops at the first response, to see
// where a page sends the browser.
func (b *browser) noRedirects() *browser {
	return &browser{t: b.t, hc: &http.Client{Jar: b.hc.Jar, Timeout: b.hc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// copyOf is a new browser holding a copy of b's cookies for in: a stolen cookie, or
// the same session in another tab or device.
func (b *browser) copyOf(in *instance) *browser {
	u, _ := url.Parse(in.URL)
	c := newBrowser(b.t)
	c.hc.Jar.SetCookies(u, b.hc.Jar.Cookies(u))
	return c
}

// Sign-out ends the session on the server: a copy of the cookie taken before is
// refused afterwards — sent to sign in again — by the replica that signed out and by
// another replica on the same database, at once, on the account page and at the
// authorization endpoint.
func TestSignOutEndsCopiesOfTheSessionOnEveryReplica(t *testing.T) {
	dsn, keys := pg.NewMigratedDatabase(t), secrets(t)
	a := start(t, setup{dsn: dsn, keyDir: keys})
	b := start(t, setup{dsn: dsn, keyDir: keys})
	secret := confidentialClient(t, a, "grafana")
	authURL := oauthConfig(a, secret, "openid").AuthCodeURL("state-copied-0001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	onReplica := func(in *instance) string { return strings.Replace(authURL, a.URL, in.URL, 1) }

	user := newBrowser(t)
	user.signIn(a, "alice", alicePassword)
	thief := user.copyOf(a)
	for _, in := range []*instance{a, b} {
		if got := thief.signedInAs(in); got != "alice" {
			t.Fatalf("before sign-out the copied cookie shows %q on %s; want alice", got, in.URL)
		}
		if _, page := thief.get(onReplica(in)); !strings.Contains(page, `id="approve"`) {
			t.Fatalf("before sign-out the copied cookie gets no consent page on %s: %.300s", in.URL, page)
		}
	}

	_, account := user.get(a.URL + "/account")
	if resp, _ := user.noRedirects().post(a.URL+"/logout", formFields(account)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d, want 303", resp.StatusCode)
	}

	for _, in := range []*instance{a, b} {
		resp, _ := thief.noRedirects().get(in.URL + "/account")
		if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || loc.Path != "/login" {
			t.Errorf("the copied cookie after sign-out, /account on %s: %d %v; want 303 to /login", in.URL, resp.StatusCode, loc)
		}
		resp, page := thief.get(onReplica(in))
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, `name="password"`) || strings.Contains(page, `id="approve"`) {
			t.Errorf("the copied cookie after sign-out, authorization on %s: %d %.300s; want the sign-in page", in.URL, resp.StatusCode, page)
		}
		if got := user.signedInAs(in); got != "" {
			t.Errorf("the browser that signed out is still signed in as %q on %s", got, in.URL)
		}
	}

	// Signing in again starts a new session, which the ended one does not touch;
	// signing in over a live session ends that one, so its copies die too.
	user.signIn(b, "alice", alicePassword)
	again := user.copyOf(b)
	user.signIn(b, "alice", alicePassword)
	if got := user.signedInAs(a); got != "alice" {
		t.Errorf("signed in again: %q", got)
	}
	if got := again.signedInAs(a); got != "" {
		t.Errorf("a copy of the session replaced by a new sign-in still shows %q", got)
	}
}

// With the database gone a signed-in page answers 503: the visitor is neither taken
// for signed in nor sent to sign in, and sign-out says it failed rather than
// pretending. Once the database is back the session is there again.
func TestSessionPagesWhileTheDatabaseIsDown(t *testing.T) {
	proxy, dsn := newDBProxy(t, pg.NewMigratedDatabase(t))
	in := start(t, setup{dsn: dsn})
	b := newBrowser(t)
	b.signIn(in, "alice", alicePassword)
	_, account := b.get(in.URL + "/account")
	logout := formFields(account)

	proxy.Down()
	resp, page := b.noRedirects().get(in.URL + "/account")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" || strings.Contains(page, "alice") {
		t.Errorf("/account with the database down: %d Retry-After %q %.300s; want 503 without the account",
			resp.StatusCode, resp.header.Get("Retry-After"), page)
	}
	resp, page = b.noRedirects().post(in.URL+"/logout", logout)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(page, "could not be signed out") {
		t.Errorf("sign-out with the database down: %d %.300s; want 503 saying so", resp.StatusCode, page)
	}

	proxy.Up()
	deadline := time.Now().Add(10 * time.Second)
	got := b.signedInAs(in)
	for got != "alice" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		got = b.signedInAs(in)
	}
	if got != "alice" {
		t.Errorf("after the database came back the session shows %q; want alice", got)
	}
}

// Failed sign-ins are throttled per username and per address, with a message that
// says when to retry; while throttled even the right password is refused.
func TestLoginThrottle(t *testing.T) {
	in := start(t, setup{throttle: tokenserver.LoginThrottle{PerUser: 3, PerIP: 6, Refill: time.Hour}})
	b := newBrowser(t)
	for i := range 3 {
		if resp, _ := b.signIn(in, "alice", "wrong password"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp, page := b.signIn(in, "alice", alicePassword)
	if resp.StatusCode != http.StatusTooManyRequests || resp.header.Get("Retry-After") == "" ||
		!strings.Contains(page, "Too many failed sign-ins. Try again in") {
		t.Errorf("right password after 3 failures: %d Retry-After %q %.400s; want 429 with a message",
			resp.StatusCode, resp.header.Get("Retry-After"), page)
	}
	// The address: three more failures with other names use up its six.
	for _, u := range []string{"bob", "carol", "dave"} {
		if resp, _ := b.signIn(in, u, "guess"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("first failure of %s: %d, want 401", u, resp.StatusCode)
		}
	}
	if resp, _ := b.signIn(in, "erin", "guess"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a new username from an address with 6 failures: %d, want 429", resp.StatusCode)
	}
}

// Guesses sent in parallel cannot all slip through before the first one fails.
func TestLoginThrottleHoldsForParallelGuesses(t *testing.T) {
	in := start(t, setup{throttle: tokenserver.LoginThrottle{PerUser: 3, PerIP: 100, Refill: time.Hour}})
	b := newBrowser(t)
	_, page := b.get(in.URL + "/login")
	f := formFields(page)
	f.Set("username", "alice")
	f.Set("password", "wrong password")
	codes := make(chan int, 20)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			resp, _ := b.post(in.URL+"/login", f)
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusUnauthorized] != 3 || count[http.StatusTooManyRequests] != 17 {
		t.Errorf("20 parallel wrong passwords: %v; want 3 checked (401) and 17 refused (429)", count)
	}
}

// What an attacker sees with the default limits: how many passwords they may try
// for one username before the 429, and how fast.
func TestLoginThrottleDefaults(t *testing.T) {
	in := start(t, setup{})
	b := newBrowser(t)
	began := time.Now()
	tried, first429 := 0, 0
	for i := range 40 {
		resp, _ := b.signIn(in, "alice", "wrong password")
		tried++
		if resp.StatusCode == http.StatusTooManyRequests {
			first429 = i + 1
			break
		}
	}
	t.Logf("default throttle: %d wrong passwords answered 401, the %d. got 429, in %v", first429-1, first429, time.Since(began))
	if first429 != tokenserver.DefaultLoginThrottle.PerUser+1 {
		t.Errorf("the first 429 came at attempt %d of %d; want %d", first429, tried, tokenserver.DefaultLoginThrottle.PerUser+1)
	}
}

// An unknown username takes as long to refuse as a known one with a wrong password:
// the dummy hash has the users file's highest cost, also after the file changes.
func TestLoginTimingUnknownVsKnown(t *testing.T) {
	in := start(t, setup{throttle: tokenserver.LoginThrottle{PerUser: 1000, PerIP: 1000, Refill: time.Second}})
	b := newBrowser(t)
	once := func(user string) time.Duration {
		began := time.Now()
		if resp, _ := b.signIn(in, user, "wrong password"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password for %s: %d", user, resp.StatusCode)
		}
		return time.Since(began)
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	// Interleaved, so that load from elsewhere on the machine falls on both alike.
	measure := func() (known, unknown time.Duration) {
		ks, us := make([]time.Duration, 0, 9), make([]time.Duration, 0, 9)
		for range 9 {
			ks = append(ks, once("alice"))
			us = append(us, once("nosuchuser"))
		}
		return median(ks), median(us)
	}
	for _, cost := range []int{bcrypt.MinCost, bcrypt.DefaultCost} {
		writeUsers(t, in.Users, "alice:"+bcryptHash(t, alicePassword, cost))
		known, unknown := measure()
		t.Logf("bcrypt cost %d: known user %.1f ms, unknown user %.1f ms (median of 9, login page round trip included)",
			cost, float64(known.Microseconds())/1000, float64(unknown.Microseconds())/1000)
		// Generous bounds: the CPU is shared, but a cost apart is a factor of 2 and
		// the old dummy (cost 10 against 4) a factor of 60.
		if unknown > 2*known+5*time.Millisecond || known > 2*unknown+5*time.Millisecond {
			t.Errorf("cost %d: unknown user %v, known user %v; want about equal", cost, unknown, known)
		}
	}
}

// prompt=none without a session returns login_required to the app (with state and
// iss); signed in but without consent, consent_required.
func TestPromptNone(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid")
	authURL := cfg.AuthCodeURL("state-prompt-001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("prompt", "none"))
	b := newBrowser(t)
	resp, page := b.get(authURL)
	loc, _ := resp.Location()
	if !strings.HasPrefix(loc.String(), redirectURI) || loc.Query().Get("error") != "login_required" ||
		loc.Query().Get("state") != "state-prompt-001" || loc.Query().Get("iss") != in.URL {
		t.Errorf("prompt=none without a session: %d %v %.200s; want a redirect with error=login_required, state and iss",
			resp.StatusCode, loc, page)
	}
	b.signIn(in, "alice", alicePassword)
	resp, _ = b.get(authURL)
	if loc, _ := resp.Location(); loc.Query().Get("error") != "consent_required" {
		t.Errorf("prompt=none signed in, no consent: %d %v; want error=consent_required", resp.StatusCode, loc)
	}
}

// An unknown client or an unregistered redirect URI gets an HTML page that says
// so, never JSON and never a redirect.
func TestAuthorizeErrorsAreReadablePages(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	for name, cfg := range map[string]*oauth2.Config{
		"unknown client":           {ClientID: "no-such-app", RedirectURL: redirectURI, Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth"}},
		"unregistered redirect":    {ClientID: "grafana", ClientSecret: secret, RedirectURL: "https://evil.example/cb", Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth"}},
		"redirect with extra path": {ClientID: "grafana", ClientSecret: secret, RedirectURL: redirectURI + "/x", Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth"}},
		// RFC 8252's any-port loopback rule is for native apps (public clients): a
		// confidential client's server has its address, and anyone else on the
		// machine could listen on another port.
		"another loopback port, confidential client": {ClientID: "grafana", ClientSecret: secret,
			RedirectURL: "http://127.0.0.1:6666/callback", Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth"}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, page := newBrowser(t).get(cfg.AuthCodeURL("state-bad-000001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/html") ||
				resp.header.Get("Location") != "" || !strings.Contains(page, "Nothing was sent back to the app") {
				t.Errorf("%d %s Location %q: %.400s; want a 400 HTML page", resp.StatusCode, resp.header.Get("Content-Type"),
					resp.header.Get("Location"), page)
			}
		})
	}
	// A native app (public client) picks its loopback port as it starts.
	publicClient(t, in, "native-app")
	cli := &oauth2.Config{ClientID: "native-app", RedirectURL: "http://127.0.0.1:6666/callback", Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth"}}
	resp, page := newBrowser(t).get(cli.AuthCodeURL("state-native-0001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `name="password"`) {
		t.Errorf("a public client on another loopback port: %d %.300s; want the sign-in page", resp.StatusCode, page)
	}
}

// PKCE is required from confidential clients too, unless the TokenServer opts out
// for legacy apps.
func TestPKCERequiredForEveryClient(t *testing.T) {
	for name, optional := range map[string]bool{"required": false, "opted out": true} {
		t.Run(name, func(t *testing.T) {
			in := start(t, setup{optionalPKCE: optional})
			cfg := oauthConfig(in, confidentialClient(t, in, "grafana"), "openid")
			b := newBrowser(t)
			b.signIn(in, "alice", alicePassword)
			if optional {
				cb := b.authorize(in, cfg.AuthCodeURL("state-nopkce-001"), "approve")
				if _, err := cfg.Exchange(context.Background(), cb.Get("code")); err != nil {
					t.Errorf("confidential client without PKCE, opted out: %v", err)
				}
				return
			}
			resp, _ := b.get(cfg.AuthCodeURL("state-nopkce-001"))
			loc, _ := resp.Location()
			if !strings.HasPrefix(loc.String(), redirectURI) || loc.Query().Get("error") != "invalid_request" ||
				!strings.Contains(loc.Query().Get("error_description"), "PKCE") {
				t.Errorf("confidential client without PKCE: %d %v; want an invalid_request redirect naming PKCE", resp.StatusCode, loc)
			}
		})
	}
}

// Metrics are not on the public listener.
func TestMetricsOffThePublicListener(t *testing.T) {
	in := start(t, setup{})
	for u, want := range map[string]int{in.URL + "/metrics": http.StatusNotFound, in.MetricsURL + "/metrics": http.StatusOK} {
		resp, err := httpClient.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", u, resp.StatusCode, want)
		}
	}
}
