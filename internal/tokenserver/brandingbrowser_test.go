package tokenserver_test

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

// In a real browser, the logo shows under the pages' Content-Security-Policy, and an
// https image of any other origin, even one a template adds, is not even fetched;
// the logo's own origin is.
func TestLogoRendersUnderTheCSP(t *testing.T) {
	// Another https origin, counting the connections made to it. Its certificate is
	// not one the browser trusts: a connection shows the browser was allowed to try.
	var connections atomic.Int64
	elsewhere := httptest.NewUnstartedServer(http.NotFoundHandler())
	elsewhere.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			connections.Add(1)
		}
	}
	// Its handshakes fail by design: no log of them.
	elsewhere.Config.ErrorLog = log.New(io.Discard, "", 0)
	elsewhere.StartTLS()
	t.Cleanup(elsewhere.Close)
	bctx := headless.Chromium(t)

	// A 16x8 SVG, inline; a template that adds an image of the other origin.
	logo := "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSIxNiIgaGVpZ2h0PSI4Ii8+"
	dir := writeTemplates(t, map[string]string{"error.html": `{{template "top" .}}<p id="error">{{.Error}}</p>` +
		`<img id="foreign" src="` + elsewhere.URL + `/pixel.svg" alt="">{{template "bottom" .}}`})
	in := start(t, setup{displayName: "Example Corp", logoURL: logo, templatesDir: dir})
	var width, foreignWidth int
	var alt string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/oauth2/auth?client_id=nobody&response_type=code"),
		chromedp.WaitVisible("#error", chromedp.ByID),
		chromedp.Poll(`document.getElementById("brand-logo").complete && document.getElementById("foreign").complete`, nil),
		chromedp.Evaluate(`document.getElementById("brand-logo").naturalWidth`, &width),
		chromedp.Evaluate(`document.getElementById("foreign").naturalWidth`, &foreignWidth),
		chromedp.AttributeValue("#brand-logo", "alt", &alt, nil, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if width != 16 || alt != "Example Corp logo" {
		t.Errorf("the logo: %d pixels wide (want 16), alt %q", width, alt)
	}
	if foreignWidth != 0 || connections.Load() != 0 {
		t.Errorf("the browser connected %d times to an image origin that is not the logo's", connections.Load())
	}

	// The same origin as the logo: the browser may fetch it.
	in = start(t, setup{logoURL: elsewhere.URL + "/logo.svg"})
	if err := chromedp.Run(bctx,
		chromedp.Navigate(in.URL+"/login"),
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.Poll(`document.getElementById("brand-logo").complete`, nil),
	); err != nil {
		t.Fatal(err)
	}
	if connections.Load() == 0 {
		t.Error("the browser did not fetch the logo from its own origin")
	}
}
