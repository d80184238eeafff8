package tokenserver_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// pushed is the PAR endpoint's answer (RFC 9126 section 2.2).
type pushed struct {
	RequestURI string `json:"request_uri"`
	ExpiresIn  int    `json:"expires_in"`
	Error      string `json:"error"`
}

// push POSTs an authorization request to /oauth2/par as client id with secret, or
// with no credential when secret is empty (a public client), and returns the status
// and answer; golang.org/x/oauth2 has no PAR.
func push(t *testing.T, in *instance, id, secret string, form url.Values) (int, pushed) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/par", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(id, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var p pushed
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("PAR answer %d is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, p
}

func parForm(state, verifier string) url.Values {
	return url.Values{"response_type": {"code"}, "client_id": {"grafana"}, "redirect_uri": {redirectURI},
		"scope": {"openid zones.read"}, "state": {state}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)},
		"code_challenge_method": {"S256"}}
}

func parURL(in *instance, clientID, requestURI string) string {
	return in.URL + "/oauth2/auth?" + url.Values{"client_id": {clientID}, "request_uri": {requestURI}}.Encode()
}

// refused checks that an authorization URL yields no code: an error page, or an error
// sent back to the app.
func refused(t *testing.T, b *browser, u, why string) {
	t.Helper()
	resp, page := b.get(u)
	if loc, err := resp.Location(); err == nil && loc.Query().Get("code") != "" {
		t.Errorf("%s: got a code: %v", why, loc)
	} else if resp.StatusCode != http.StatusBadRequest && (err != nil || loc.Query().Get("error") == "") {
		t.Errorf("%s: got %d %v: %.300s; want a refusal", why, resp.StatusCode, loc, page)
	}
}

// With PAR required: a confidential client pushes its request, the user signs in and
// consents through the request_uri alone (the pushed parameters never reach the
// browser), golang.org/x/oauth2 exchanges the code; a plain authorization request,
// a request_uri used twice or by another client, and a push without PKCE or with a
// wrong secret are refused; discovery says so.
func TestPushedAuthorizationRequests(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{requirePAR: true})
	secret := confidentialClient(t, in, "grafana")
	otherSecret := confidentialClient(t, in, "other")
	cfg := oauthConfig(in, secret, "openid", "zones.read")
	verifier := oauth2.GenerateVerifier()

	status, p := push(t, in, "grafana", secret, parForm("state-par-0001", verifier))
	if status != http.StatusCreated || !strings.HasPrefix(p.RequestURI, "urn:ietf:params:oauth:request_uri:") || p.ExpiresIn <= 0 {
		t.Fatalf("PAR = %d %+v; want 201 with a request_uri and expires_in", status, p)
	}
	b := newBrowser(t)
	resp, page := b.get(parURL(in, "grafana", p.RequestURI))
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `action="/login"`) {
		t.Fatalf("pushed authorization: %d %.300s; want the sign-in page", resp.StatusCode, page)
	}
	if strings.Contains(page, "code_challenge") || strings.Contains(page, "state-par-0001") || strings.Contains(page, p.RequestURI) {
		t.Errorf("the sign-in page carries the pushed parameters or the client's request_uri: %.600s", page)
	}
	refused(t, b, parURL(in, "grafana", p.RequestURI), "a request_uri the sign-in page had used")

	// Again, the whole way through on one request_uri.
	_, p = push(t, in, "grafana", secret, parForm("state-par-0002", verifier))
	cb := newBrowser(t).authorize(in, parURL(in, "grafana", p.RequestURI), "approve")
	if cb.Get("state") != "state-par-0002" || cb.Get("code") == "" {
		t.Fatalf("callback = %v; want a code and the pushed state", cb)
	}
	tok, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil || tok.Extra("id_token") == nil {
		t.Fatalf("exchange = %v, %v; want tokens with an ID token", tok, err)
	}

	refused(t, newBrowser(t), parURL(in, "grafana", p.RequestURI), "the same request_uri a second time")
	_, p = push(t, in, "grafana", secret, parForm("state-par-0003", verifier))
	refused(t, newBrowser(t), parURL(in, "other", p.RequestURI), "grafana's request_uri sent as client other")

	resp, page = newBrowser(t).get(cfg.AuthCodeURL("state-plain-01", oauth2.S256ChallengeOption(verifier)))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "Pushed Authorization Requests are enforced") {
		t.Errorf("plain authorization request with PAR required: %d %.400s; want 400 saying PAR is required", resp.StatusCode, page)
	}

	noPKCE := parForm("state-par-0004", verifier)
	noPKCE.Del("code_challenge")
	noPKCE.Del("code_challenge_method")
	if status, p := push(t, in, "grafana", secret, noPKCE); status != http.StatusBadRequest || p.Error != "invalid_request" {
		t.Errorf("push without PKCE = %d %+v; want 400 invalid_request", status, p)
	}
	if status, p := push(t, in, "grafana", otherSecret, parForm("state-par-0005", verifier)); status != http.StatusUnauthorized || p.Error != "invalid_client" {
		t.Errorf("push with another client's secret = %d %+v; want 401 invalid_client", status, p)
	}

	var disc map[string]any
	r, err := http.Get(in.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Body.Close() }()
	if err := json.NewDecoder(r.Body).Decode(&disc); err != nil {
		t.Fatal(err)
	}
	listed, _ := disc["token_endpoint_auth_signing_alg_values_supported"].([]any)
	algs := make([]string, 0, len(listed))
	for _, a := range listed {
		algs = append(algs, a.(string))
	}
	if disc["pushed_authorization_request_endpoint"] != in.URL+"/oauth2/par" || disc["require_pushed_authorization_requests"] != true ||
		!slices.Contains(algs, "RS256") || !slices.Contains(algs, "ES256") || slices.Contains(algs, "HS256") {
		t.Errorf("discovery = %v; want the PAR endpoint, PAR required, and the private_key_jwt algorithms", disc)
	}
}

// A request_uri past its expires_in is refused, and without the switch a plain
// authorization request still works.
func TestPushedAuthorizationRequestExpires(t *testing.T) {
	in := start(t, setup{parLifespan: time.Second})
	secret := confidentialClient(t, in, "grafana")
	verifier := oauth2.GenerateVerifier()
	status, p := push(t, in, "grafana", secret, parForm("state-par-0006", verifier))
	if status != http.StatusCreated || p.ExpiresIn != 1 {
		t.Fatalf("PAR = %d %+v; want 201 expiring in 1s", status, p)
	}
	deadline := time.Now().Add(time.Duration(p.ExpiresIn) * time.Second)
	time.Sleep(time.Until(deadline) + 10*time.Millisecond) // the request's lifetime, not synchronization
	refused(t, newBrowser(t), parURL(in, "grafana", p.RequestURI), "an expired request_uri")

	cfg := oauthConfig(in, secret, "openid")
	cb := newBrowser(t).authorize(in, cfg.AuthCodeURL("state-plain-02", oauth2.S256ChallengeOption(verifier)), "approve")
	if cb.Get("code") == "" {
		t.Errorf("plain authorization without the switch: %v; want a code", cb)
	}
}

// A public client pushes with its client_id alone, and its pushed request runs
// through sign-in and consent to a code x/oauth2 exchanges with the PKCE verifier.
func TestPushedAuthorizationRequestPublicClient(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{requirePAR: true})
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "cli", OwnerNamespace: "tools", ClientMetadata: adminapi.ClientMetadata{
		Name: "CLI", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"},
		TokenEndpointAuthMethod: "none"}}); err != nil {
		t.Fatal(err)
	}
	v := oauth2.GenerateVerifier()
	form := parForm("state-par-pub1", v)
	form.Set("client_id", "cli")
	form.Set("scope", "openid")
	status, p := push(t, in, "cli", "", form)
	if status != http.StatusCreated || p.RequestURI == "" {
		t.Fatalf("public client PAR = %d %+v; want 201 with a request_uri", status, p)
	}
	cb := newBrowser(t).authorize(in, parURL(in, "cli", p.RequestURI), "approve")
	cfg := &oauth2.Config{ClientID: "cli", RedirectURL: redirectURI, Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: in.URL + "/oauth2/auth", TokenURL: in.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	if _, err := cfg.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(v)); err != nil {
		t.Errorf("public client's pushed request: exchange: %v (callback %v)", err, cb)
	}
}

// A pushed request with prompt=login: the signed-in user is asked to sign in again,
// once, and the pushed request then goes on to the app (the page's return address
// carries the pushed request by its own request_uri and the sign-in marker; without
// the marker the sign-in page came back again and again). A pushed max_age is the
// request's own too.
func TestPushedAuthorizationRequestWithPromptLogin(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "zones.read")
	verifier := oauth2.GenerateVerifier()
	b := newBrowser(t)
	_, p := push(t, in, "grafana", secret, parForm("state-parlogin-01", verifier))
	if cb := b.authorize(in, parURL(in, "grafana", p.RequestURI), "approve"); cb.Get("code") == "" {
		t.Fatalf("the first pushed request: %v", cb)
	}
	form := parForm("state-parlogin-02", verifier)
	form.Set("prompt", "login")
	_, p = push(t, in, "grafana", secret, form)
	resp, page := b.get(parURL(in, "grafana", p.RequestURI))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("a pushed prompt=login with a session: %d %.300s; want the sign-in page", resp.StatusCode, page)
	}
	f := formFields(page)
	f.Set("username", "alice")
	f.Set("password", alicePassword)
	resp, page = b.post(in.URL+"/login", f)
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI) || loc.Query().Get("code") == "" ||
		loc.Query().Get("state") != "state-parlogin-02" {
		t.Fatalf("after signing in again: %d %v: %.300s; want the app's redirect with a code and the pushed state", resp.StatusCode, loc, page)
	}
	if _, err := cfg.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Errorf("exchange: %v", err)
	}
	// A pushed max_age counts as the request's own: a sign-in older than it asks again.
	time.Sleep(1100 * time.Millisecond) // the sign-in above grows older than max_age=1
	form = parForm("state-parlogin-03", verifier)
	form.Set("max_age", "1")
	_, p = push(t, in, "grafana", secret, form)
	if _, page := b.get(parURL(in, "grafana", p.RequestURI)); !strings.Contains(page, `action="/login"`) {
		t.Errorf("a pushed max_age=1 two seconds after signing in: %.300s; want the sign-in page", page)
	}
}

// The parameters of a pushed request are the pushed ones: a nonce or acr_values
// added to the link beside the request_uri (by whatever handles it on the way: the
// browser, an extension, a proxy) does not reach the ID token. fosite laid the
// pushed parameters over the link's, but kept those the client had not pushed.
func TestPushedAuthorizationIgnoresParametersBesideTheRequestURI(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	verifier := oauth2.GenerateVerifier()
	_, p := push(t, in, "grafana", secret, parForm("state-par-beside-1", verifier))
	u := parURL(in, "grafana", p.RequestURI) + "&" + url.Values{"nonce": {"injected-nonce-0123456"}, "acr_values": {"injected"}}.Encode()
	cb := newBrowser(t).authorize(in, u, "approve")
	if cb.Get("code") == "" {
		t.Fatalf("callback = %v; want a code", cb)
	}
	tok, err := oauthConfig(in, secret, "openid", "zones.read").Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token %q", idToken)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["nonce"] != nil || claims["acr"] != nil {
		t.Errorf("the ID token carries nonce %v and acr %v; want neither: the client pushed none, they were added beside the request_uri",
			claims["nonce"], claims["acr"])
	}
}

// OpenID Connect request objects are refused, by value and by reference, and at
// the pushed authorization request endpoint: fosite took an unsigned one ("alg":
// "none") from any client with keys, its claims laid over parameters already
// checked (a state, a NUL the input checks had refused). Discovery says so too.
func TestRequestObjectsAreRefused(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "signer", OwnerNamespace: "team-a",
		ClientMetadata: adminapi.ClientMetadata{Name: "Signer", GrantTypes: []string{"authorization_code"},
			RedirectURIs: []string{redirectURI}, Scopes: []string{"openid", "zones.read"},
			TokenEndpointAuthMethod: "private_key_jwt", JWKS: jwks}}); err != nil {
		t.Fatal(err)
	}
	unsigned := func(claims map[string]any) string {
		head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		body, _ := json.Marshal(claims)
		return head + "." + base64.RawURLEncoding.EncodeToString(body) + "."
	}
	verifier := oauth2.GenerateVerifier()
	base := url.Values{"response_type": {"code"}, "client_id": {"signer"}, "redirect_uri": {redirectURI},
		"scope": {"openid zones.read"}, "state": {"state-request-object-1"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	withParam := func(k, v string) string {
		q := url.Values{}
		for key, vals := range base {
			q[key] = vals
		}
		q.Set(k, v)
		return in.URL + "/oauth2/auth?" + q.Encode()
	}
	b := newBrowser(t)
	for _, c := range []struct{ name, url, want string }{
		{"an unsigned request object", withParam("request", unsigned(map[string]any{"state": "state-from-the-jwt-xyz"})), "does not take request objects"},
		{"a request object with a NUL", withParam("request", unsigned(map[string]any{"login_hint": "a\x00b"})), "does not take request objects"},
		{"a request_uri not pushed here", withParam("request_uri", "https://evil.example/ Your account is locked"), "The only request_uri"},
	} {
		resp, page := b.get(c.url)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, c.want) {
			t.Errorf("%s: %d %.300s; want 400 saying %q", c.name, resp.StatusCode, page, c.want)
		}
		if strings.Contains(page, "Your account is locked") {
			t.Errorf("%s: the page repeats the request's text: %.300s", c.name, page)
		}
	}

	form := parForm("state-request-object-2", verifier)
	form.Set("request", unsigned(map[string]any{"state": "state-from-the-jwt-xyz"}))
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/par", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "request_not_supported") {
		t.Errorf("a pushed request object: %d %s; want 400 request_not_supported", resp.StatusCode, body)
	}

	var disco map[string]any
	if code := getJSON(t, in.URL+"/.well-known/openid-configuration", &disco); code != http.StatusOK {
		t.Fatalf("discovery: %d", code)
	}
	if disco["request_parameter_supported"] != false || disco["request_uri_parameter_supported"] != false {
		t.Errorf("discovery: request_parameter_supported %v, request_uri_parameter_supported %v; want false and false",
			disco["request_parameter_supported"], disco["request_uri_parameter_supported"])
	}
}
