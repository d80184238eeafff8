package tokenserver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

const basePolicy = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:; frame-ancestors 'none'"

// brandedClient registers a client with a logo, so that the consent page shows two
// images of two origins.
func brandedClient(t *testing.T, in *instance) *oauth2.Config {
	t.Helper()
	secret := "secret-branded-0123456789abcdefghijklmnop"
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "grafana", Secret: secret, OwnerNamespace: "observability",
		ClientMetadata: adminapi.ClientMetadata{Name: "Grafana", LogoURI: "https://grafana.example.net/logo.png",
			GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"},
			TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
		t.Fatal(err)
	}
	return oauthConfig(in, secret, "openid")
}

func writeTemplates(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustContain(t *testing.T, what, page string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(page, p) {
			t.Errorf("%s lacks %q:\n%.1500s", what, p, page)
		}
	}
}

// Every page carries the TokenServer's name (title, header, the logo's alt text)
// and logo, escaped; the Content-Security-Policy lets in the images of that page
// only: the logo's origin and the app's.
func TestPagesCarryTheBrand(t *testing.T) {
	in := start(t, setup{displayName: `Example <Corp> & "Co"`, logoURL: "https://cdn.example.com/brand/logo.svg?v=2"})
	cfg := brandedClient(t, in)
	name := "Example &lt;Corp&gt; &amp; &#34;Co&#34;"
	header := []string{`<img id="brand-logo" src="https://cdn.example.com/brand/logo.svg?v=2" alt="` + name + ` logo">`,
		`<span id="brand-name">` + name + `</span>`}
	b := newBrowser(t)
	authURL := cfg.AuthCodeURL("state-0000001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oidc.Nonce("nonce-00000001"))

	resp, page := b.get(authURL)
	mustContain(t, "the login page", page, append(header, "<title>Sign in · "+name+"</title>", "<h1>Sign in to "+name+"</h1>")...)
	if got := resp.header.Get("Content-Security-Policy"); got != basePolicy+"; img-src https://cdn.example.com" {
		t.Errorf("login page CSP %q", got)
	}
	f := formFields(page)
	f.Set("username", "alice")
	f.Set("password", alicePassword)
	resp, page = b.post(in.URL+"/login", f)
	mustContain(t, "the consent page", page, append(header, "<title>Allow Grafana? · "+name+"</title>",
		`<img src="https://grafana.example.net/logo.png" alt="">`)...)
	if got := resp.header.Get("Content-Security-Policy"); got != basePolicy+"; img-src https://cdn.example.com https://grafana.example.net" {
		t.Errorf("consent page CSP %q", got)
	}
	f = formFields(page)
	f.Set("decision", "approve")
	if resp, _ = b.post(in.URL+"/oauth2/auth", f); resp.StatusCode != 303 {
		t.Fatalf("approve: %d", resp.StatusCode)
	}
	_, page = b.get(in.URL + "/account")
	mustContain(t, "the account page", page, append(header, "<title>Connected apps · "+name+"</title>", "Grafana")...)
	_, page = b.get(in.URL + "/oauth2/auth?client_id=nobody&response_type=code")
	mustContain(t, "the error page", page, header...)
}

// An inline logo is shown as it is (html/template would blank a data: URL it was
// not told is safe), and the policy admits data: images, no origin.
func TestInlineLogo(t *testing.T) {
	logo := "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHdpZHRoPSI0IiBoZWlnaHQ9IjQiLz4="
	in := start(t, setup{logoURL: logo})
	resp, page := newBrowser(t).get(in.URL + "/login")
	// In an attribute, html/template writes + as &#43;, which the browser reads back.
	mustContain(t, "the login page", page, `<img id="brand-logo" src="`+strings.ReplaceAll(logo, "+", "&#43;")+`" alt="Logo">`,
		"<title>Sign in</title>")
	if strings.Contains(page, "brand-name") {
		t.Error("a brand name shown with no display name set")
	}
	if got := resp.header.Get("Content-Security-Policy"); got != basePolicy+"; img-src data:" {
		t.Errorf("CSP %q", got)
	}
}

// A template in the templates directory replaces the built-in page of its file name
// and gets the same data; the others stay built-in.
func TestTemplatesReplacePages(t *testing.T) {
	dir := writeTemplates(t, map[string]string{
		"login.html": `{{template "top" .}}<div id="custom-login" data-title="{{.Title}}" data-brand="{{.Brand.Name}}">
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="return_to" value="{{.ReturnTo}}">
<input name="username"><input type="password" name="password"></form>
{{with .Error}}<p id="custom-error">{{.}}</p>{{end}}</div>{{template "bottom" .}}`,
		"account.html": `<!doctype html><title>{{.Title}}</title><p id="custom-account">{{.Subject}} at {{.Brand.Name}}</p>` +
			`<ul>{{range .Grants}}<li class="grant">{{.ClientName}} ({{.Owner}}): {{range .Scopes}}{{.}} {{end}}</li>{{end}}</ul>`,
	})
	in := start(t, setup{displayName: "Example Corp", templatesDir: dir})
	cfg := brandedClient(t, in)
	b := newBrowser(t)
	_, page := b.get(in.URL + "/login")
	mustContain(t, "the replaced login page", page, `<div id="custom-login" data-title="Sign in" data-brand="Example Corp">`,
		`<span id="brand-name">Example Corp</span>`)
	f := formFields(page)
	if f.Get("csrf") == "" || f.Get("return_to") != "/account" {
		t.Fatalf("the replaced login page's form fields %v", f)
	}
	f.Set("username", "alice")
	f.Set("password", "wrong")
	_, page = b.post(in.URL+"/login", f)
	mustContain(t, "the replaced login page after a wrong password", page, `<p id="custom-error">The username or password is wrong.</p>`)

	// Signing in through the replaced page works; consent is the built-in page.
	q := b.authorize(in, cfg.AuthCodeURL("state-0000001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "approve")
	if q.Get("code") == "" {
		t.Fatalf("callback %v", q)
	}
	_, page = b.get(in.URL + "/account")
	mustContain(t, "the replaced account page", page, `<p id="custom-account">alice at Example Corp</p>`,
		`<li class="grant">Grafana (observability): openid </li>`)
}

// A template that fails on a request its checks did not foresee gives the built-in
// error page, 500, which says nothing of the template.
func TestTemplateFailingOnARequestIsA500(t *testing.T) {
	// Checked with the sample login data (no client, return to /account): fine. From
	// an authorization request it dereferences the nil Client.
	dir := writeTemplates(t, map[string]string{"login.html": `{{if ne .ReturnTo "/account"}}{{.Client.Name}}{{end}}ok`})
	in := start(t, setup{displayName: "Example Corp", templatesDir: dir})
	cfg := brandedClient(t, in)
	resp, page := newBrowser(t).get(cfg.AuthCodeURL("state-0000001", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if resp.StatusCode != 500 {
		t.Fatalf("status %d: %.500s", resp.StatusCode, page)
	}
	mustContain(t, "the error page", page, `<span id="brand-name">Example Corp</span>`, "This page cannot be shown right now.")
	for _, leak := range []string{"Client", "nil pointer", "login.html", "template"} {
		if strings.Contains(page, leak) {
			t.Errorf("the error page tells %q:\n%s", leak, page)
		}
	}
}

// A template that cannot be used fails the start, naming its file: the operator
// checked first, this is the last guard.
func TestBadTemplateFailsTheStart(t *testing.T) {
	tests := map[string]struct {
		files map[string]string
		says  string
	}{
		"a parse error":  {map[string]string{"consent.html": "{{if .Client}}"}, "consent.html: template: consent.html:1: unexpected EOF"},
		"a wrong field":  {map[string]string{"account.html": "{{.Usrname}}"}, "account.html: template: account.html:1:2: executing"},
		"not a template": {map[string]string{"logn.html": "x"}, "logn.html: not a page template"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := writeTemplates(t, tc.files)
			err := tokenserver.Serve(context.Background(), tokenserver.Options{AdminToken: adminToken, TemplatesDir: dir,
				DSN: pg.NewMigratedDatabase(t)})
			if err == nil || !strings.Contains(err.Error(), "templates in "+dir+": "+tc.says) {
				t.Fatalf("Serve: %v; want it to say %q", err, tc.says)
			}
		})
	}
	err := tokenserver.Serve(context.Background(), tokenserver.Options{AdminToken: adminToken, LogoURL: "javascript:alert(1)"})
	if err == nil || !strings.Contains(err.Error(), "logo URL: must be an https URL") {
		t.Fatalf("Serve with a javascript: logo: %v", err)
	}
}
