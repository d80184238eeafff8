package tokenserver_test

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// app is the relying party's callback: it shows what it got, as an app would.
type app struct {
	*httptest.Server
	mu    sync.Mutex
	query map[string]string
}

func newApp(t *testing.T) *app {
	a := &app{query: map[string]string{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		for k := range r.URL.Query() {
			a.query[k] = r.URL.Query().Get(k)
		}
		a.mu.Unlock()
		_, _ = w.Write([]byte(`<!doctype html><title>App</title><p id="result">` + r.URL.Query().Get("error") + r.URL.Query().Get("code") + `</p>`))
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *app) got(k string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.query[k]
}

// The pages in a real browser: sign in, read the consent page (saved as
// docs/consent.png when KUBEOAUTH_UPDATE_SCREENSHOTS=1), deny, then approve; exchange
// the code; revoke the app on the connected-apps page and see its token die.
func TestPagesInHeadlessChromium(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	rp := newApp(t)
	secret := "grafana-secret-0123456789abcdefghijklmnopq"
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "grafana", Secret: secret, OwnerNamespace: "observability",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", OwnerTeam: "Observability team", OwnerContact: "obs@example.com",
			GrantTypes: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{rp.URL + "/callback"},
			Scopes: []string{"openid", "zones.read", "offline_access"}, TokenEndpointAuthMethod: "client_secret_basic"},
	}); err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "grafana", ClientSecret: secret, RedirectURL: rp.URL + "/callback",
		Scopes: []string{"openid", "zones.read"}, Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth", TokenURL: in.URL + "/oauth2/token"}}
	bctx := headless.Chromium(t)

	// Sign in, then deny.
	var appName, verified, claimed, scopes, host string
	var shot []byte
	if err := chromedp.Run(bctx,
		chromedp.Navigate(cfg.AuthCodeURL("state-deny-0001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))),
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.SendKeys("#username", "alice", chromedp.ByID),
		chromedp.SendKeys("#password", alicePassword, chromedp.ByID),
		chromedp.Click("#sign-in", chromedp.ByID),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Text("#app-name", &appName, chromedp.ByID),
		chromedp.Text("#verified-owner", &verified, chromedp.ByID),
		chromedp.Text("#claimed-owner", &claimed, chromedp.ByID),
		chromedp.Text("#scopes", &scopes, chromedp.ByID),
		chromedp.Text("#redirect-host", &host, chromedp.ByID),
		chromedp.FullScreenshot(&shot, 100),
		chromedp.Click("#deny", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if appName != "Grafana" || !strings.Contains(verified, "observability") || !strings.Contains(verified, "verified") ||
		!strings.Contains(claimed, "Observability team") || !strings.Contains(claimed, "not verified") ||
		!strings.Contains(scopes, "Read your DNS zones") || host != strings.TrimPrefix(rp.URL, "http://") {
		t.Errorf("consent page: app %q, verified %q, claimed %q, scopes %q, host %q", appName, verified, claimed, scopes, host)
	}
	if rp.got("error") != "access_denied" {
		t.Errorf("after Deny the app got error %q, want access_denied", rp.got("error"))
	}
	saveScreenshot(t, shot)

	// Approve: the app gets a code that golang.org/x/oauth2 exchanges.
	verifier := oauth2.GenerateVerifier()
	if err := chromedp.Run(bctx,
		chromedp.Navigate(cfg.AuthCodeURL("state-approve-01", oauth2.S256ChallengeOption(verifier))),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Click("#approve", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(ctx, rp.got("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the code the browser brought: %v", err)
	}
	resp, err := cfg.Client(ctx, tok).Get(in.URL + "/userinfo")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("userinfo: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	// Connected apps: revoke Grafana; its token dies.
	var listed, after string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#grants", chromedp.ByID),
		chromedp.Text("#grants", &listed, chromedp.ByID),
		chromedp.Click(`button[aria-label="Revoke access of Grafana"]`, chromedp.ByQuery),
		chromedp.WaitVisible("#no-grants", chromedp.ByID),
		chromedp.Text("#no-grants", &after, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(listed, "Grafana") || !strings.Contains(listed, "observability") || !strings.Contains(listed, "zones.read") {
		t.Errorf("connected apps listed %q", listed)
	}
	other := confidentialClient(t, in, "checker")
	if got := introspect(t, in, tok.AccessToken, "checker", other); got["active"] != false {
		t.Errorf("token after revoking the app on the connected-apps page: %v; want inactive", got)
	}
	// The disconnection counts apart from the page view, so that the revocations
	// alert sees it fail.
	if n := metricValue(t, in, `kubeoauth_http_requests_total{code="303",handler="account_revoke"}`); n != 1 {
		t.Errorf("disconnections counted as handler=\"account_revoke\": %v, want 1", n)
	}
}

func saveScreenshot(t *testing.T, png []byte) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("KUBEOAUTH_UPDATE_SCREENSHOTS") == "1" {
		dir = filepath.Join(testenv.RepoRoot(), "docs")
	}
	if err := os.WriteFile(filepath.Join(dir, "consent.png"), png, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Sessions in a real browser: a page on another origin of the same site (another
// port of 127.0.0.1, as a sibling subdomain would be) plants a CSRF cookie and posts
// a consent for the signed-in user, and is refused; Sign out on the connected-apps
// page ends the session, also for a copy of its cookie; a password change ends it too; and after three wrong
// passwords the login page says when to try again.
func TestSessionPagesInHeadlessChromium(t *testing.T) {
	in := start(t, setup{throttle: tokenserver.LoginThrottle{PerUser: 3, PerIP: 20, Refill: time.Hour}})
	rp := newApp(t)
	secret := "grafana-secret-0123456789abcdefghijklmnopq"
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "grafana", Secret: secret, OwnerNamespace: "observability",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", GrantTypes: []string{"authorization_code"},
			RedirectURIs: []string{rp.URL + "/callback"}, Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic"},
	}); err != nil {
		t.Fatal(err)
	}
	const planted = "planted-by-a-sibling-0123456789abcdefghij"
	attack := url.Values{"client_id": {"grafana"}, "redirect_uri": {rp.URL + "/callback"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"state-attack-0001"}, "code_challenge_method": {"S256"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "csrf": {planted}, "decision": {"approve"}}
	var fields strings.Builder
	for k, vs := range attack {
		fields.WriteString(`<input type="hidden" name="` + html.EscapeString(k) + `" value="` + html.EscapeString(vs[0]) + `">`)
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`<!doctype html><title>Free prizes</title>
<script>document.cookie = "kubeoauth_csrf=` + planted + `; path=/oauth2";</script>
<form id="f" method="post" action="` + in.URL + `/oauth2/auth">` + fields.String() + `</form>
<script>document.getElementById("f").submit();</script>`))
	}))
	t.Cleanup(evil.Close)

	bctx := headless.Chromium(t)
	signIn := func(password string) chromedp.Action {
		return chromedp.Tasks{
			chromedp.Navigate(in.URL + "/login"),
			chromedp.WaitVisible("#username", chromedp.ByID),
			chromedp.SetValue("#username", "alice", chromedp.ByID),
			chromedp.SetValue("#password", password, chromedp.ByID),
			chromedp.Click("#sign-in", chromedp.ByID),
		}
	}
	var refused, notice, throttled string
	if err := chromedp.Run(bctx,
		signIn(alicePassword),
		chromedp.WaitVisible("#subject", chromedp.ByID),
		chromedp.Navigate(evil.URL),
		chromedp.WaitVisible("#error", chromedp.ByID),
		chromedp.Text("#error", &refused, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(refused, "sent from another site") || rp.got("code") != "" {
		t.Errorf("consent posted from another origin: page says %q, app got code %q; want it refused", refused, rp.got("code"))
	}
	if gs, err := in.Admin.ListGrants(context.Background(), "grafana", "alice"); err != nil || len(gs) != 0 {
		t.Errorf("grants after the cross-origin post: %v %v; want none", gs, err)
	}

	// The session cookie as Chromium holds it, copied before sign-out as a thief or
	// another device would.
	var cookies []*network.Cookie
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#sign-out", chromedp.ByID),
		chromedp.ActionFunc(func(ctx context.Context) error {
			var err error
			cookies, err = network.GetCookies().WithURLs([]string{in.URL}).Do(ctx)
			return err
		}),
		chromedp.Click("#sign-out", chromedp.ByID),
		chromedp.WaitVisible("#notice", chromedp.ByID),
		chromedp.Text("#notice", &notice, chromedp.ByID),
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#username", chromedp.ByID), // sent to sign in
	); err != nil {
		t.Fatalf("signing out: %v", err)
	}
	if notice != "You are signed out." {
		t.Errorf("after Sign out the page says %q", notice)
	}
	copied := newBrowser(t)
	base, _ := url.Parse(in.URL)
	for _, c := range cookies {
		copied.hc.Jar.SetCookies(base, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: c.Path}})
	}
	if len(cookies) == 0 {
		t.Error("Chromium held no cookie for the token server while signed in")
	} else if resp, _ := copied.noRedirects().get(in.URL + "/account"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the session cookie copied from Chromium before Sign out, used after: %d; want 303 to sign in", resp.StatusCode)
	}

	// A password change (the users Secret updated) ends the session at once.
	const newPassword = "a brand new password for alice"
	if err := chromedp.Run(bctx, signIn(alicePassword), chromedp.WaitVisible("#subject", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	writeUsers(t, in.Users, "alice:"+bcryptHash(t, newPassword, bcrypt.MinCost))
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#username", chromedp.ByID),
	); err != nil {
		t.Fatalf("the account page after the password change: %v", err)
	}

	// Three wrong passwords, then the fourth attempt is told when to retry.
	for range 3 {
		if err := chromedp.Run(bctx, signIn("wrong password"), chromedp.WaitVisible("#error", chromedp.ByID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Run(bctx, signIn(newPassword), chromedp.WaitVisible("#error", chromedp.ByID),
		chromedp.Text("#error", &throttled, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(throttled, "Too many failed sign-ins. Try again in") {
		t.Errorf("the fourth sign-in after three failures says %q", throttled)
	}
}
