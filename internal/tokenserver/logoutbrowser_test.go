package tokenserver_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

// RP-initiated logout in a real browser: a page on another site (localhost; the
// server is on 127.0.0.1) that sends the
// signed-in user to the end-session endpoint, by an image and by a posted form,
// signs no one out: the post ends on the confirmation page. Confirming there signs
// out and lands on the app's registered address with its state.
func TestLogoutConfirmationInHeadlessChromium(t *testing.T) {
	in := start(t, setup{})
	rp := newApp(t)
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "grafana",
		Secret: "grafana-secret-0123456789abcdefghijklmnopq", OwnerNamespace: "observability",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", GrantTypes: []string{"authorization_code"},
			RedirectURIs: []string{rp.URL + "/callback"}, PostLogoutRedirectURIs: []string{rp.URL + "/signed-out"},
			Scopes: []string{"openid"}, TokenEndpointAuthMethod: "client_secret_basic"},
	}); err != nil {
		t.Fatal(err)
	}
	endSession := in.URL + "/oauth2/logout"
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/img" {
			_, _ = w.Write([]byte(`<!doctype html><title>Cats</title><img src="` + endSession + `"><p id="loaded">cats</p>`))
			return
		}
		_, _ = w.Write([]byte(`<!doctype html><title>Free prizes</title>
<form id="f" method="post" action="` + endSession + `">
<input type="hidden" name="client_id" value="grafana">
<input type="hidden" name="post_logout_redirect_uri" value="` + rp.URL + `/signed-out">
<input type="hidden" name="state" value="state-bye-00001"></form>
<script>document.getElementById("f").submit();</script>`))
	}))
	t.Cleanup(evil.Close)
	// Another site, not only another origin: the SameSite=Lax session cookie does
	// not come with a post from it.
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)

	bctx := headless.Chromium(t)
	var subject, question string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/login"),
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.SetValue("#username", "alice", chromedp.ByID),
		chromedp.SetValue("#password", alicePassword, chromedp.ByID),
		chromedp.Click("#sign-in", chromedp.ByID),
		chromedp.WaitVisible("#subject", chromedp.ByID),
		chromedp.Navigate(evilURL+"/img"),
		chromedp.WaitVisible("#loaded", chromedp.ByID),
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#subject", chromedp.ByID), // still signed in
		chromedp.Navigate(evilURL),
		chromedp.WaitVisible("#confirm-sign-out", chromedp.ByID),
		chromedp.Text("#confirm-question", &question, chromedp.ByID),
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#subject", chromedp.ByID), // still signed in
		chromedp.Text("#subject", &subject, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if subject != "alice" || !strings.Contains(question, "Grafana asks to sign you out") {
		t.Fatalf("after the other site's requests: signed in as %q, confirmation said %q", subject, question)
	}
	if err := chromedp.Run(bctx,
		chromedp.Navigate(evilURL),
		chromedp.WaitVisible("#confirm-sign-out", chromedp.ByID),
		chromedp.Click("#confirm-sign-out", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID), // the app's page
		chromedp.Navigate(in.URL+"/account"),
		chromedp.WaitVisible("#username", chromedp.ByID), // sent to sign in
	); err != nil {
		t.Fatalf("confirming the sign-out: %v", err)
	}
	if rp.got("state") != "state-bye-00001" {
		t.Errorf("the app got state %q after the sign-out; want state-bye-00001", rp.got("state"))
	}
}
