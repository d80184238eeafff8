package tokenserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

var httpClient = &http.Client{Timeout: 15 * time.Second}

func getJSON(t *testing.T, target string, into any) int {
	t.Helper()
	resp, err := httpClient.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return resp.StatusCode
}

// postForm posts a form with optional basic auth and returns status and JSON body.
func postForm(t *testing.T, endpoint string, form url.Values, user, pass string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("POST %s: %d, body not JSON: %s", endpoint, resp.StatusCode, body)
		}
	}
	return resp.StatusCode, out
}

func introspect(t *testing.T, in *instance, token, id, secret string) map[string]any {
	t.Helper()
	code, body := postForm(t, in.URL+"/oauth2/introspect", url.Values{"token": {token}}, id, secret)
	if code != http.StatusOK {
		t.Fatalf("introspect: %d %v", code, body)
	}
	return body
}

func TestDiscoveryAndJWKS(t *testing.T) {
	in := start(t, setup{})
	var disc map[string]any
	if code := getJSON(t, in.URL+"/.well-known/openid-configuration", &disc); code != 200 {
		t.Fatalf("discovery: %d", code)
	}
	for k, want := range map[string]string{
		"issuer": in.URL, "token_endpoint": in.URL + "/oauth2/token", "jwks_uri": in.URL + "/.well-known/jwks.json",
		"introspection_endpoint": in.URL + "/oauth2/introspect", "revocation_endpoint": in.URL + "/oauth2/revoke",
	} {
		if disc[k] != want {
			t.Errorf("discovery %s = %v, want %s", k, disc[k], want)
		}
	}
	if disc["authorization_response_iss_parameter_supported"] != true {
		t.Error("discovery does not say authorization responses carry iss (RFC 9207)")
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	getJSON(t, in.URL+"/.well-known/jwks.json", &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0]["alg"] != "ES256" || jwks.Keys[0]["kid"] == "" || jwks.Keys[0]["d"] != nil {
		t.Errorf("JWKS = %v; want one public ES256 key with a kid", jwks.Keys)
	}
}

// golang.org/x/oauth2 gets a token with client_credentials; introspection (RFC 7662)
// reports it active with its scopes; revocation (RFC 7009) makes it inactive.
func TestClientCredentialsIntrospectRevoke(t *testing.T) {
	for _, format := range []string{oauth.FormatOpaque, oauth.FormatJWT} {
		t.Run(format, func(t *testing.T) {
			in := start(t, setup{format: format})
			secret := confidentialClient(t, in, "grafana")
			cc := clientcredentials.Config{ClientID: "grafana", ClientSecret: secret, TokenURL: in.URL + "/oauth2/token",
				Scopes: []string{"zones.read"}, AuthStyle: oauth2.AuthStyleInHeader}
			tok, err := cc.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken == "" || tok.Expiry.Before(time.Now().Add(50*time.Minute)) {
				t.Fatalf("token = %+v; want one valid for an hour", tok)
			}
			if format == oauth.FormatJWT {
				parts := strings.Split(tok.AccessToken, ".")
				if len(parts) != 3 {
					t.Fatalf("JWT access token has %d parts", len(parts))
				}
				header, _ := base64.RawURLEncoding.DecodeString(parts[0])
				if !strings.Contains(string(header), `"typ":"at+jwt"`) || !strings.Contains(string(header), `"alg":"ES256"`) {
					t.Errorf("JWT header = %s; want typ at+jwt (RFC 9068), alg ES256", header)
				}
			}
			got := introspect(t, in, tok.AccessToken, "grafana", secret)
			if got["active"] != true || got["client_id"] != "grafana" || got["scope"] != "zones.read" || got["sub"] != "grafana" {
				t.Errorf("introspection = %v; want active, client grafana, scope zones.read", got)
			}
			if code, body := postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {tok.AccessToken}}, "grafana", secret); code != 200 {
				t.Fatalf("revoke: %d %v", code, body)
			}
			if got := introspect(t, in, tok.AccessToken, "grafana", secret); got["active"] != false {
				t.Errorf("introspection after revocation = %v; want inactive", got)
			}
			// A scope the client may not use is refused.
			cc.Scopes = []string{"admin"}
			if _, err := cc.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_scope") {
				t.Errorf("token with a scope the client lacks: %v; want invalid_scope", err)
			}
		})
	}
}

func TestAdminAPI(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	c := &adminapi.Client{ID: "argo", Secret: "argo-secret-0123456789abcdefghijklmnop", OwnerNamespace: "gitops",
		ClientMetadata: adminapi.ClientMetadata{Name: "Argo CD", GrantTypes: []string{"client_credentials"},
			Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "client_secret_post"}}
	first, err := in.Admin.PutClient(ctx, c)
	if err != nil || !first.Changed {
		t.Fatalf("first PUT = %+v, %v; want changed", first, err)
	}
	again, err := in.Admin.PutClient(ctx, c)
	if err != nil || again.Changed || !again.UpdatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("same PUT again = %+v, %v; want unchanged", again, err)
	}
	got, err := in.Admin.GetClient(ctx, "argo")
	if err != nil || got.Name != "Argo CD" || got.OwnerNamespace != "gitops" || got.Secret != "" {
		t.Errorf("GET = %+v, %v; want the client without its secret", got, err)
	}
	if _, err := in.Admin.GetClient(ctx, "nobody"); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("GET unknown: %v, want ErrNotFound", err)
	}

	bad := *c
	bad.Secret = "short"
	_, err = in.Admin.PutClient(ctx, &bad)
	var apiErr *adminapi.Error
	if !errors.As(err, &apiErr) || apiErr.Field != "secret" || !strings.Contains(apiErr.Message, "at least 32") {
		t.Errorf("PUT with a short secret: %v; want an error naming field secret", err)
	}
	bad = *c
	bad.GrantTypes = []string{"password"}
	if _, err = in.Admin.PutClient(ctx, &bad); !errors.As(err, &apiErr) || apiErr.Field != "grantTypes" {
		t.Errorf("PUT with grant type password: %v; want an error naming grantTypes", err)
	}
	bad = *c
	bad.TokenLifespans = map[string]string{"accessToken": "forever"}
	if _, err = in.Admin.PutClient(ctx, &bad); !errors.As(err, &apiErr) || apiErr.Field != "tokenLifespans.accessToken" {
		t.Errorf("PUT with lifespan forever: %v; want an error naming tokenLifespans.accessToken", err)
	}
	// Bounded: every token is a row of the shared database until it expires.
	bad.TokenLifespans = map[string]string{"accessToken": "24h", "refreshToken": "2000000h"}
	if _, err = in.Admin.PutClient(ctx, &bad); !errors.As(err, &apiErr) || apiErr.Field != "tokenLifespans.refreshToken" ||
		!strings.Contains(apiErr.Message, "at most 8760h") {
		t.Errorf("PUT with a refresh token lifespan of centuries: %v; want an error naming tokenLifespans.refreshToken and its bound", err)
	}
	bad = *c
	bad.TokenEndpointAuthMethod, bad.Secret = "private_key_jwt", ""
	bad.JWKS = json.RawMessage(`{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
		"x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
		"d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]}`)
	if _, err = in.Admin.PutClient(ctx, &bad); !errors.As(err, &apiErr) || apiErr.Field != "jwks.keys[0]" {
		t.Errorf("PUT with a private key in jwks: %v; want an error naming jwks.keys[0]", err)
	}
	// Another namespace cannot take the client over nor delete it: 409 naming the owner.
	takeover := *c
	takeover.OwnerNamespace, takeover.Secret = "tenant-x", "attacker-secret-0123456789abcdefghijkl"
	if _, err = in.Admin.PutClient(ctx, &takeover); !errors.Is(err, adminapi.ErrConflict) || !errors.As(err, &apiErr) ||
		apiErr.Field != "ownerNamespace" || !strings.Contains(apiErr.Message, `"gitops"`) {
		t.Errorf("PUT with another owner: %v; want 409 naming ownerNamespace and the owner gitops", err)
	}
	if err := in.Admin.DeleteClient(ctx, "argo", "tenant-x"); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("DELETE ?owner=tenant-x: %v; want 409", err)
	}
	if got, err := in.Admin.GetClient(ctx, "argo"); err != nil || got.OwnerNamespace != "gitops" {
		t.Errorf("after refused takeover and delete: %+v, %v; want argo of gitops", got, err)
	}
	// Grant writes with ?owner= touch only that owner's client.
	grant := &adminapi.Grant{ClientID: "argo", Subject: "alice", Scopes: []string{"zones.read"}}
	if _, err := in.Admin.PutOwnedGrant(ctx, grant, "tenant-x"); !errors.Is(err, adminapi.ErrConflict) ||
		!errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, `"gitops"`) {
		t.Errorf("PUT grant ?owner=tenant-x: %v; want 409 naming the owner gitops", err)
	}
	if gs, err := in.Admin.ListGrants(ctx, "argo", "alice"); err != nil || len(gs) != 0 {
		t.Errorf("grants after a refused PUT: %+v, %v; want none", gs, err)
	}
	if _, err := in.Admin.PutOwnedGrant(ctx, grant, "gitops"); err != nil {
		t.Errorf("PUT grant ?owner=gitops: %v", err)
	}
	if err := in.Admin.DeleteOwnedGrant(ctx, "argo", "alice", "tenant-x"); !errors.Is(err, adminapi.ErrConflict) {
		t.Errorf("DELETE grant ?owner=tenant-x: %v; want 409", err)
	}
	if err := in.Admin.DeleteOwnedGrant(ctx, "argo", "alice", "gitops"); err != nil {
		t.Errorf("DELETE grant ?owner=gitops: %v", err)
	}
	if _, err := in.Admin.ListGrantsFrom(ctx, "bogus"); !errors.As(err, &apiErr) || apiErr.Field != "source" {
		t.Errorf("GET /admin/grants?source=bogus: %v; want 422 naming source", err)
	}
	if _, err := in.Admin.ListGrantsFrom(ctx, adminapi.SourceBrowser); err != nil {
		t.Errorf("GET /admin/grants?source=browser: %v", err)
	}
	unauth := &adminapi.HTTPClient{BaseURL: in.AdminURL, Token: "wrong"}
	if _, err := unauth.ListClients(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("admin call with a wrong token: %v; want 401", err)
	}

	// client_secret_post works, then deleting the client revokes its tokens.
	code, tok := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {"argo"}, "client_secret": {c.Secret}}, "", "")
	if code != 200 {
		t.Fatalf("client_secret_post token: %d %v", code, tok)
	}
	other := confidentialClient(t, in, "checker")
	if err := in.Admin.DeleteClient(ctx, "argo", "gitops"); err != nil {
		t.Fatal(err)
	}
	if got := introspect(t, in, tok["access_token"].(string), "checker", other); got["active"] != false {
		t.Errorf("token of a deleted client: %v; want inactive", got)
	}
	if err := in.Admin.DeleteClient(ctx, "argo", ""); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("second DELETE: %v; want ErrNotFound", err)
	}
}

// A long poll on the event log returns as soon as a revocation commits (LISTEN/NOTIFY),
// not when its wait ends.
func TestEventsLongPoll(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	confidentialClient(t, in, "grafana")
	first, err := in.Admin.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		evs     *adminapi.Events
		err     error
		elapsed time.Duration
	}
	got := make(chan result, 1)
	begin := time.Now()
	go func() {
		evs, err := in.Admin.Events(ctx, first.Next, 20*time.Second)
		got <- result{evs, err, time.Since(begin)}
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := in.Admin.PutGrant(ctx, &adminapi.Grant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"}}); err != nil {
		t.Fatal(err)
	}
	if err := in.Admin.DeleteGrant(ctx, "grafana", "alice"); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.evs.Events) == 0 || r.evs.Events[0].Kind != "consent_given" || r.elapsed > 5*time.Second {
		t.Errorf("long poll = %+v after %s; want consent_given promptly", r.evs, r.elapsed)
	}
	rest, err := in.Admin.Events(ctx, r.evs.Next, 0)
	if err != nil {
		t.Fatal(err)
	}
	all := append(r.evs.Events, rest.Events...)
	if all[len(all)-1].Kind != "grant_revoked" || all[len(all)-1].Subject != "alice" {
		t.Errorf("events = %+v; want grant_revoked for alice last", all)
	}
}

// Malformed and hostile requests get RFC 6749 errors, never a 500.
func TestBadRequests(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	tokenURL := in.URL + "/oauth2/token"
	tests := map[string]struct {
		form       url.Values
		user, pass string
		wantCode   int
		wantError  string
	}{
		"no grant type":  {url.Values{}, "grafana", secret, 400, "invalid_request"},
		"unknown grant":  {url.Values{"grant_type": {"password"}, "username": {"a"}, "password": {"b"}}, "grafana", secret, 400, "unsupported_grant_type"},
		"wrong secret":   {url.Values{"grant_type": {"client_credentials"}}, "grafana", "wrong", 401, "invalid_client"},
		"unknown client": {url.Values{"grant_type": {"client_credentials"}}, "nobody", "x", 401, "invalid_client"},
		// fosite calls missing credentials a malformed request rather than a failed
		// authentication; either is an RFC 6749 section 5.2 answer.
		"no client":        {url.Values{"grant_type": {"client_credentials"}}, "", "", 400, "invalid_request"},
		"bogus code":       {url.Values{"grant_type": {"authorization_code"}, "code": {"abc.def"}, "redirect_uri": {"http://127.0.0.1:5555/callback"}}, "grafana", secret, 400, "invalid_grant"},
		"bogus refresh":    {url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope.nope"}}, "grafana", secret, 400, "invalid_grant"},
		"oversized body":   {url.Values{"grant_type": {"client_credentials"}, "pad": {strings.Repeat("x", 70<<10)}}, "grafana", secret, 413, "invalid_request"},
		"scope with quote": {url.Values{"grant_type": {"client_credentials"}, "scope": {`"zones`}}, "grafana", secret, 400, "invalid_scope"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			code, body := postForm(t, tokenURL, tt.form, tt.user, tt.pass)
			if code != tt.wantCode || body["error"] != tt.wantError {
				t.Errorf("got %d %v; want %d %s", code, body, tt.wantCode, tt.wantError)
			}
		})
	}
	if code, body := postForm(t, in.URL+"/oauth2/introspect", url.Values{"token": {"x"}}, "", ""); code != 401 {
		t.Errorf("unauthenticated introspection: %d %v; want 401", code, body)
	}
	resp, err := httpClient.Get(in.URL + "/userinfo")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("userinfo without a token: %d %q; want 401 invalid_token", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// With the database gone the server answers 503 quickly, issues nothing, reports not
// ready, and serves again by itself once the database is back.
func TestDatabaseOutage(t *testing.T) {
	proxy, dsn := newDBProxy(t, pg.NewMigratedDatabase(t))
	in := start(t, setup{dsn: dsn})
	secret := confidentialClient(t, in, "grafana")
	form := url.Values{"grant_type": {"client_credentials"}}
	if code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret); code != 200 {
		t.Fatalf("before the outage: %d %v", code, body)
	}
	proxy.Down()
	begin := time.Now()
	code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
	if code != 503 || body["error"] != "temporarily_unavailable" || body["access_token"] != nil {
		t.Errorf("during the outage: %d %v; want 503 temporarily_unavailable and no token", code, body)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("the 503 took %s", took)
	}
	resp, err := httpClient.Get(in.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("readyz during the outage: %d, want 503", resp.StatusCode)
	}
	proxy.Up()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 {
		t.Errorf("after the database came back: %d %v", code, body)
	}
}

func TestMetrics(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	_, tok := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, "grafana", secret)
	postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, "grafana", "wrong")
	postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {tok["access_token"].(string)}}, "grafana", secret)
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		`kubeoauth_tokens_issued_total{grant_type="client_credentials"} 1`,
		`kubeoauth_http_requests_total{code="200",handler="token"} 1`,
		`kubeoauth_http_requests_total{code="401",handler="token"} 1`,
		`kubeoauth_http_request_duration_seconds_bucket{handler="token"`,
		`kubeoauth_refresh_grace_uses_total 0`,
		`kubeoauth_revocations_total{kind="token"} 1`,
		// The token's write went through the group commit.
		`kubeoauth_group_commit_batches_total{outcome="committed"} `,
		`kubeoauth_group_commit_batches_total{outcome="lock_timeout"} 0`,
		`kubeoauth_group_commit_batch_size_count `,
		`kubeoauth_group_commit_queue_wait_seconds_bucket{le=`,
		`kubeoauth_group_commit_retried_requests_total 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), `kubeoauth_group_commit_batches_total{outcome="committed"} 0`) {
		t.Error("no batch of token writes counted as committed, although a token was issued")
	}
	if strings.Contains(string(body), secret) {
		t.Error("/metrics contains a client secret")
	}
}

// A scraper sets namespace, pod, job, instance and (the Prometheus Operator, for a
// port) endpoint on every series it takes; a metric label of the same name is
// renamed exported_<name> and the chart's alerts on it match nothing. Revocations
// through the admin API count apart from client registration, for the alert on
// failing revocations.
func TestMetricLabelsSurviveScrapers(t *testing.T) {
	in := start(t, setup{})
	ctx := context.Background()
	secret := confidentialClient(t, in, "grafana")
	_, tok := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, "grafana", secret)
	postForm(t, in.URL+"/oauth2/introspect", url.Values{"token": {tok["access_token"].(string)}}, "grafana", secret)
	postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {tok["access_token"].(string)}}, "grafana", secret)
	if _, err := in.Admin.ListGrants(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	if err := in.Admin.DeleteClient(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	handlers := map[string]bool{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "namespace", "pod", "container", "service", "endpoint", "job", "instance":
					t.Errorf("%s has the label %q, which scrapers set themselves", name, l.GetName())
				case "handler":
					handlers[l.GetValue()] = true
				}
			}
		}
	}
	for _, h := range []string{"token", "introspect", "revoke", "admin_grants", "admin_client_revoke"} {
		if !handlers[h] {
			t.Errorf("no series with handler=%q; have %v", h, handlers)
		}
	}
}

// Replicas cache clients; a change made through one replica reaches the others at
// once (NOTIFY), not after the cache's lifetime.
func TestClientChangesReachOtherReplicas(t *testing.T) {
	ctx := context.Background()
	dsn, keys := pg.NewMigratedDatabase(t), secrets(t)
	a := start(t, setup{dsn: dsn, keyDir: keys})
	b := start(t, setup{dsn: dsn, keyDir: keys})
	old := confidentialClient(t, a, "grafana")
	form := url.Values{"grant_type": {"client_credentials"}}
	if code, body := postForm(t, b.URL+"/oauth2/token", form, "grafana", old); code != 200 {
		t.Fatalf("token on replica b: %d %v", code, body)
	}
	// Rotate the secret through a, without overlap.
	c, err := a.Admin.GetClient(ctx, "grafana")
	if err != nil {
		t.Fatal(err)
	}
	c.Secret = "the-new-secret-0123456789abcdefghijklmnop"
	if _, err := a.Admin.PutClient(ctx, &c.Client); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b refuses the old secret and takes the new one", func() bool {
		oldCode, _ := postForm(t, b.URL+"/oauth2/token", form, "grafana", old)
		newCode, _ := postForm(t, b.URL+"/oauth2/token", form, "grafana", c.Secret)
		return oldCode == 401 && newCode == 200
	})
	if err := a.Admin.DeleteClient(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b refuses the deleted client", func() bool {
		code, _ := postForm(t, b.URL+"/oauth2/token", form, "grafana", c.Secret)
		return code == 401
	})
}

// eventually polls cond for up to two seconds: much less than the client cache's
// ten-second lifetime, so only the notification can make it pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 2s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Replicas cache access tokens they have looked up. However a token ends on one
// replica — RFC 7009 revocation, its grant revoked, its client deleted, its refresh
// token rotated — the other replica reports it inactive at once, not after the
// cache's lifetime.
func TestTokenEndsReachOtherReplicas(t *testing.T) {
	ctx := context.Background()
	dsn, keys := pg.NewMigratedDatabase(t), secrets(t)
	a := start(t, setup{dsn: dsn, keyDir: keys, grace: time.Minute})
	b := start(t, setup{dsn: dsn, keyDir: keys, grace: time.Minute})
	secret := confidentialClient(t, a, "grafana")
	checker := confidentialClient(t, a, "checker")
	activeOnB := func(token string) bool {
		return introspect(t, b, token, "checker", checker)["active"] == true
	}
	ends := map[string]func(tok *oauth2.Token){
		"RFC 7009 revocation": func(tok *oauth2.Token) {
			if code, body := postForm(t, a.URL+"/oauth2/revoke", url.Values{"token": {tok.AccessToken}}, "grafana", secret); code != 200 {
				t.Fatalf("revoke: %d %v", code, body)
			}
		},
		"refresh rotation": func(tok *oauth2.Token) {
			if code, body := refresh(t, a, secret, tok.RefreshToken); code != 200 {
				t.Fatalf("refresh: %d %v", code, body)
			}
		},
		"grant revoked": func(*oauth2.Token) {
			if err := a.Admin.DeleteGrant(ctx, "grafana", "alice"); err != nil {
				t.Fatal(err)
			}
		},
		"grant expired": func(*oauth2.Token) {
			past := time.Now().Add(-time.Second)
			if _, err := a.Admin.PutGrant(ctx, &adminapi.Grant{ClientID: "grafana", Subject: "alice",
				Scopes: []string{"openid", "offline_access"}, ExpiresAt: &past}); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, name := range []string{"RFC 7009 revocation", "refresh rotation", "grant revoked", "grant expired"} {
		t.Run(name, func(t *testing.T) {
			_ = a.Admin.DeleteGrant(ctx, "grafana", "alice") // so that the consent page shows again
			tok := codeFlowToken(t, a, secret)
			if !activeOnB(tok.AccessToken) {
				t.Fatal("a fresh token is not active on replica b")
			}
			ends[name](tok)
			eventually(t, "replica b reports the token inactive", func() bool { return !activeOnB(tok.AccessToken) })
		})
	}
	t.Run("client deleted", func(t *testing.T) {
		cc := clientcredentials.Config{ClientID: "grafana", ClientSecret: secret, TokenURL: a.URL + "/oauth2/token"}
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !activeOnB(tok.AccessToken) {
			t.Fatal("a fresh token is not active on replica b")
		}
		if err := a.Admin.DeleteClient(ctx, "grafana", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, "replica b reports the deleted client's token inactive", func() bool { return !activeOnB(tok.AccessToken) })
	})
}
