package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/oauth2"
)

// The platform namespace admits only pods of the "restricted" Pod Security
// Standard: the bundled token server, migrations and database all are.
const namespaces = `apiVersion: v1
kind: Namespace
metadata:
  name: platform
  labels: {pod-security.kubernetes.io/enforce: restricted}
---
# The app teams' namespace: it may register clients on the platform's token server,
# and its clients are first-party (declared ConsentGrants are honoured).
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels: {oauth.kubeoauth.io/clients: allowed, oauth.kubeoauth.io/first-party: "true"}
`

//nolint:gosec // G101: a manifest, no credentials
const tokenServer = `apiVersion: oauth.kubeoauth.io/v1alpha1
kind: TokenServer
metadata: {name: auth, namespace: platform}
spec:
  issuer: %s
  image: ghcr.io/kubeoauth/tokenserver:v0.1.0
  replicas: 2
  database: {managed: {storageSize: 1Gi}}
  login: {usersSecretRef: {name: auth-users}}
  clientNamespaces: {selector: {matchLabels: {oauth.kubeoauth.io/clients: allowed}}}
  firstPartyNamespaces: {selector: {matchLabels: {oauth.kubeoauth.io/first-party: "true"}}}
  scopeDescriptions:
  - {name: openid, description: Sign you in with your account}
  - {name: profile, description: See your name}
  - {name: reports.read, description: Read the reports}
`

const clients = `apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: reports, namespace: apps}
spec:
  serverRef: {name: auth, namespace: platform}
  clientName: Nightly reports
  owner: {team: data, contact: data@example.com}
  grantTypes: [client_credentials]
  scopes: [reports.read]
---
apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: webapp, namespace: apps}
spec:
  serverRef: {name: auth, namespace: platform}
  clientName: Team wiki
  owner: {team: docs, contact: docs@example.com}
  grantTypes: [authorization_code, refresh_token]
  redirectURIs: [http://127.0.0.1:8765/callback]
  scopes: [openid, profile]
---
# Alice pre-approves the wiki: she is not asked on a consent page. Deleting this
# resource revokes the consent and every token issued under it.
apiVersion: oauth.kubeoauth.io/v1alpha1
kind: ConsentGrant
metadata: {name: webapp-alice, namespace: apps}
spec:
  clientRef: {name: webapp}
  subject: alice
  scopes: [openid, profile]
`

//nolint:gosec // G101: a manifest; the hash is filled in at run time
const usersSecret = `apiVersion: v1
kind: Secret
metadata: {name: auth-users, namespace: platform}
data: {users: %s}
`

const redirectURI = "http://127.0.0.1:8765/callback"

// show prints a command as a user would type it and runs it, its output shown.
func (d *demo) show(ctx context.Context, bin string, args ...string) error {
	say(d.out, "$ %s %s\n", filepath.Base(bin), strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, args...) // #nosec G204 -- the demo's own commands
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.Dir = d.repo
	return cmd.Run()
}

func (d *demo) kube(ctx context.Context, args ...string) error {
	return d.show(ctx, d.kubectl, args...)
}

// output runs a command without showing it and returns its standard output.
func (d *demo) output(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...) // #nosec G204 -- the demo's own commands
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// apply shows the manifest and applies it with kubectl.
func (d *demo) apply(ctx context.Context, manifest string) error {
	path := filepath.Join(d.work, "manifest.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		return err
	}
	say(d.out, "%s", indent(manifest))
	return d.applyFile(ctx, path)
}

func (d *demo) applyFile(ctx context.Context, path string) error {
	say(d.out, "$ kubectl apply --server-side -f -\n")
	out, err := d.output(ctx, d.kubectl, "apply", "--server-side", "--force-conflicts", "-f", path)
	say(d.out, "%s", out)
	return err
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func (d *demo) secretValue(ctx context.Context, secret, key string) (string, error) {
	args := []string{"-n", appsNS, "get", "secret", secret, "-o", "jsonpath={.data." + key + "}"}
	say(d.out, "$ kubectl %s | base64 -d\n", strings.Join(args, " "))
	out, err := d.output(ctx, d.kubectl, args...)
	if err != nil {
		return "", err
	}
	v, err := decodeBase64(out)
	if err == nil {
		shown := v
		if key == "client_secret" {
			shown = v[:6] + "…"
		}
		say(d.out, "%s\n", shown)
	}
	return v, err
}

// curl shows and runs curl, printing its output.
func (d *demo) curl(ctx context.Context, args ...string) error {
	out, err := d.curlOut(ctx, args...)
	say(d.out, "%s\n", out)
	return err
}

func (d *demo) curlOut(ctx context.Context, args ...string) (string, error) {
	shown := make([]string, 0, len(args))
	prev := ""
	for _, a := range args {
		switch {
		case prev == "-u":
			id, _, _ := strings.Cut(a, ":")
			shown = append(shown, id+":$CLIENT_SECRET")
		case strings.HasPrefix(a, "token="):
			shown = append(shown, "token=$TOKEN")
		default:
			shown = append(shown, a)
		}
		prev = a
	}
	say(d.out, "$ curl -s %s\n", strings.Join(shown, " "))
	return d.output(ctx, "curl", append([]string{"-sS", "--fail-with-body", "--max-time", "10"}, args...)...)
}

// curlJSON runs curl and returns one string field of its JSON answer.
func (d *demo) curlJSON(ctx context.Context, field string, args ...string) (string, error) {
	out, err := d.curlOut(ctx, args...)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return "", fmt.Errorf("not JSON: %s", out)
	}
	v, _ := m[field].(string)
	if v == "" {
		return "", fmt.Errorf("no %s in %s", field, out)
	}
	say(d.out, "%s\n", abbreviate(out, v))
	return v, nil
}

// abbreviate shortens a token in printed output.
func abbreviate(out, tok string) string {
	if len(tok) > 16 {
		return strings.ReplaceAll(strings.TrimSpace(out), tok, tok[:12]+"…")
	}
	return strings.TrimSpace(out)
}

func (d *demo) introspect(ctx context.Context, id, secret, tok string) (string, error) {
	out, err := d.curlOut(ctx, "-u", id+":"+secret, "-d", "token="+tok, d.issuer+"/oauth2/introspect")
	say(d.out, "%s\n", strings.TrimSpace(out))
	return out, err
}

// signIn does what alice's browser does: open the authorization URL, sign in on the
// login page, follow the redirect to the app, whose code the app exchanges (with
// golang.org/x/oauth2 and PKCE). The ConsentGrant means no consent page appears.
func (d *demo) signIn(ctx context.Context) error {
	id, err := d.secretValue(ctx, "webapp-oauth", "client_id")
	if err != nil {
		return err
	}
	secret, err := d.secretValue(ctx, "webapp-oauth", "client_secret")
	if err != nil {
		return err
	}
	cfg := &oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: redirectURI, Scopes: []string{"openid", "profile"},
		Endpoint: oauth2.Endpoint{AuthURL: d.issuer + "/oauth2/auth", TokenURL: d.issuer + "/oauth2/token"}}
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("demo-state-0001", oauth2.S256ChallengeOption(verifier))
	say(d.out, "browser: GET %s\n", authURL)
	code, err := d.browserSignIn(authURL)
	if err != nil {
		return err
	}
	say(d.out, "browser: signed in as alice, redirected to %s?code=…\n", redirectURI)
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return fmt.Errorf("exchanging the code: %w", err)
	}
	say(d.out, "app: exchanged the code for an access token %s… (and an ID token)\n", tok.AccessToken[:12])
	d.webapp = [3]string{id, secret, tok.AccessToken}
	active, err := d.introspect(ctx, id, secret, tok.AccessToken)
	if err != nil {
		return err
	}
	if !strings.Contains(active, `"active":true`) {
		return errors.New("alice's token is not active: " + active)
	}
	return nil
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

func (d *demo) browserSignIn(authURL string) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirectURI) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := c.Get(authURL) // #nosec G107 -- the demo's own token server
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	page := readAll(resp)
	if !strings.Contains(page, `action="/login"`) {
		return "", fmt.Errorf("no login page: %d %.300s", resp.StatusCode, page)
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	form.Set("username", "alice")
	form.Set("password", d.alicePassword)
	resp, err = c.PostForm(d.issuer+"/login", form)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	page = readAll(resp)
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI) {
		return "", fmt.Errorf("want a redirect to the app, got %d: %.300s", resp.StatusCode, page)
	}
	return loc.Query().Get("code"), nil
}

func readAll(resp *http.Response) string {
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}

func (d *demo) revoke(ctx context.Context) error {
	if err := d.kube(ctx, "-n", appsNS, "delete", "consentgrant", "webapp-alice"); err != nil {
		return err
	}
	out, err := d.introspect(ctx, d.webapp[0], d.webapp[1], d.webapp[2])
	if err != nil {
		return err
	}
	if !strings.Contains(out, `"active":false`) {
		return errors.New("the token is still active after the ConsentGrant was deleted: " + out)
	}
	say(d.out, "the token is revoked: the finalizer revoked the grant and its tokens before the delete completed\n")
	return nil
}
