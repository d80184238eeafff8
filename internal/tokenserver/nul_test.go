package tokenserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// A NUL byte in a request parameter the token server keeps (in a jsonb or
// text column) makes PostgreSQL refuse the write (SQLSTATE 22P05 / 22021); the
// request is then answered 500 and logged "internal error". Each endpoint below is
// reachable by any client (the device and PAR endpoints by a public client, with no
// secret at all), so anyone can fill the server's error log and trip its 5xx
// alerts. RFC 6749 section 5.2 / RFC 8628 section 3.2 / RFC 9126 section 2.3 answer
// a malformed request with 400 invalid_request.

// rfc6749Errors are the error codes a token, PAR or device authorization endpoint may
// answer a client's mistake with (RFC 6749 5.2, RFC 8628 3.5, RFC 9126 2.3).
var rfc6749Errors = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "unsupported_response_type", "access_denied"}

// clientMistake checks that a request carrying garbage got a client error naming an
// RFC 6749 error (or was served), never a server error.
func clientMistake(t *testing.T, what string, code int, body map[string]any) {
	t.Helper()
	if code >= 500 {
		t.Errorf("%s: %d %v; want 400 invalid_request (a client's malformed request), not a server error", what, code, body)
		return
	}
	if e, ok := body["error"].(string); ok && !slices.Contains(rfc6749Errors, e) {
		t.Errorf("%s: %d %v; want an RFC 6749 error code", what, code, body)
	}
}

// A public device client (no secret: anyone who knows its ID) posting a parameter
// with a NUL byte to the device authorization endpoint gets 500 server_error: the
// request form goes whole into tokens.form (jsonb), which cannot hold \u0000.
func TestDeviceAuthorizationNULParameter(t *testing.T) {
	in := start(t, setup{})
	deviceClient(t, in, "tv")
	for name, form := range map[string]url.Values{
		"an unknown parameter": {"client_id": {"tv"}, "scope": {"openid"}, "x": {"\x00"}},
		"a repeated scope":     {"client_id": {"tv"}, "scope": {"openid", "\x00"}},
	} {
		code, body := postForm(t, in.URL+"/oauth2/device/auth", form, "", "")
		clientMistake(t, "device authorization with a NUL in "+name, code, body)
	}
}

// A pushed authorization request (RFC 9126) with a NUL byte in any parameter (state,
// nonce, one the server does not know) is answered 500 server_error: the pushed form
// is stored whole in jsonb. A public client needs no secret to push.
func TestPushedAuthorizationNULParameter(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	publicClient(t, in, "cli")
	for name, edit := range map[string]func(url.Values){
		"state":                func(f url.Values) { f.Set("state", "state-01234\x00567") },
		"nonce":                func(f url.Values) { f.Set("nonce", "nonce-01234\x00567") },
		"an unknown parameter": func(f url.Values) { f.Set("x", "\x00") },
	} {
		f := parForm("state-0123456789", oauth2.GenerateVerifier())
		edit(f)
		code, p := push(t, in, "grafana", secret, f)
		clientMistake(t, "grafana pushing a NUL in "+name, code, map[string]any{"error": p.Error})

		f = parForm("state-0123456789", oauth2.GenerateVerifier())
		f.Set("client_id", "cli")
		f.Set("scope", "openid")
		edit(f)
		code, p = push(t, in, "cli", "", f)
		clientMistake(t, "public client cli pushing a NUL in "+name, code, map[string]any{"error": p.Error})
	}
}

// The token endpoint reads the first value of a repeated parameter but keeps every
// value of grant_type, scope and client_id with the token (fosite's Sanitize), so a
// second value with a NUL byte makes the token's insert fail: 500 with the error
// code "error" ("The error is unrecognizable"), which is no RFC 6749 code either.
// RFC 6749 section 3.2: parameters must not be included more than once
// (invalid_request).
func TestTokenRepeatedParameterWithNUL(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	for name, form := range map[string]url.Values{
		"grant_type": {"grant_type": {"client_credentials", "\x00"}},
		"scope":      {"grant_type": {"client_credentials"}, "scope": {"zones.read", "\x00"}},
		"client_id":  {"grant_type": {"client_credentials"}, "client_id": {"grafana", "\x00"}},
	} {
		code, body := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret)
		clientMistake(t, "client_credentials with a second "+name+" holding a NUL", code, body)
	}
}

// An authorization request with a NUL byte in acr_values, max_age or grant_type (all
// kept with the code's OpenID Connect session, in jsonb), from a user signed in who
// consented before, sends the app error=server_error: the code's insert failed. A
// malformed request is invalid_request (RFC 6749 4.1.2.1).
func TestAuthorizeNULParameter(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	cfg := oauthConfig(in, secret, "openid", "zones.read")
	b := newBrowser(t)
	b.authorize(in, cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "approve")
	for _, param := range []string{"acr_values", "max_age", "grant_type"} {
		u, _ := url.Parse(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		q := u.Query()
		q.Set(param, "x\x00")
		u.RawQuery = q.Encode()
		resp, page, _ := b.walk(in, u.String(), "approve")
		if resp.StatusCode >= 500 {
			t.Errorf("%s with a NUL: %d %.200s; want invalid_request", param, resp.StatusCode, page)
			continue
		}
		if loc, err := resp.Location(); err == nil && loc.Query().Get("error") == "server_error" {
			t.Errorf("%s with a NUL: the app got %v; want invalid_request (or a code), not server_error", param, loc)
		}
	}
}

// A JWT bearer assertion (RFC 7523) whose jti holds a NUL byte is answered 500: the
// jti goes into client_assertion_jtis (text). RFC 7523 section 3.1: invalid_grant.
func TestJWTBearerJTIWithNUL(t *testing.T) {
	in := start(t, setup{})
	ci := newAssertionKey(t, "ci-1")
	secret := putJWTBearerClient(t, in, "deploy", []string{"zones.read"}, []adminapi.TrustedJWTIssuer{{
		Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"deployer"}, Scopes: []string{"zones.read"}}}, nil)
	c := claimsFor(in, "https://ci.example.com", "deployer")
	c.ID = "run-42\x00"
	code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "assertion": {ci.sign(t, c)},
		"scope": {"zones.read"}}, "deploy", secret)
	clientMistake(t, "a JWT bearer assertion whose jti holds a NUL", code, body)

	// With allowAnySubject, the subject is the issuer's to choose: one with a NUL
	// byte is refused (invalid_grant), not a 500 when its token is stored.
	anySecret := putJWTBearerClient(t, in, "deploy-any", []string{"zones.read"}, []adminapi.TrustedJWTIssuer{{
		Issuer: "https://ci.example.com", JWKS: ci.jwks(t), AllowAnySubject: true, Scopes: []string{"zones.read"}}}, nil)
	code, body = postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant},
		"assertion": {ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer\x00"))}, "scope": {"zones.read"}}, "deploy-any", anySecret)
	clientMistake(t, "a JWT bearer assertion (allowAnySubject) whose sub holds a NUL", code, body)
}

// Disconnecting an app on the connected-apps page with a client_id PostgreSQL cannot
// hold (a NUL, invalid UTF-8) answers 500 "could not be disconnected right now; try
// again": RevokeGrant is not guarded like the store's other lookups. The 5xx also
// counts as handler account_revoke, which the chart's revocations-failing alert
// reads: a signed-in user can page the operators with one form post.
func TestAccountDisconnectGarbageClientID(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	b := newBrowser(t)
	b.authorize(in, oauthConfig(in, secret, "openid").AuthCodeURL("state-0123456789",
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "approve")
	_, page := b.get(in.URL + "/account")
	f := formFields(page)
	if f.Get("csrf") == "" {
		t.Fatalf("no disconnect form on the account page: %.400s", page)
	}
	for name, id := range map[string]string{"a NUL": "grafana\x00", "invalid UTF-8": "grafana\xff"} {
		f.Set("client_id", id)
		resp, page := b.noRedirects().post(in.URL+"/account/revoke", f)
		if resp.StatusCode >= 500 {
			t.Errorf("disconnecting client_id with %s: %d %.200s; want it answered as an app not connected (303 to /account)",
				name, resp.StatusCode, page)
		}
	}
}

// The admin API answers 500 "internal error" (and logs it at ERROR) for a client
// whose name, team, audience or owner namespace holds a NUL byte, which JSON allows
// and PostgreSQL refuses; the OAuthClient CRD accepts such a clientName, owner.team
// and audience (see api/v1alpha1 review19 test), so the operator meets this 500 on
// every retry. A value the server cannot keep is the caller's mistake: 400 naming
// the field, as the admin API answers other bad fields.
func TestAdminClientWithNUL(t *testing.T) {
	in := start(t, setup{})
	for field, c := range map[string]string{
		"name":           `{"name":"Graf\u0000ana","secret":"0123456789abcdef0123456789abcdef","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
		"ownerTeam":      `{"name":"A","ownerTeam":"t\u0000","secret":"0123456789abcdef0123456789abcdef","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
		"audience[0]":    `{"name":"A","audience":["a\u0000"],"secret":"0123456789abcdef0123456789abcdef","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
		"ownerNamespace": `{"name":"A","ownerNamespace":"ns\u0000","secret":"0123456789abcdef0123456789abcdef","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
		// Kept as raw JSON in a jsonb column, which refuses \u0000 as text does.
		"jwtBearer.trustedIssuers[0].subjects[0]": `{"name":"A","secret":"0123456789abcdef0123456789abcdef","grantTypes":["urn:ietf:params:oauth:grant-type:jwt-bearer"],"tokenEndpointAuthMethod":"client_secret_basic","jwtBearer":{"trustedIssuers":[{"issuer":"https://ci.example.com","jwksURI":"https://ci.example.com/keys","subjects":["deployer\u0000"]}]}}`,
	} {
		req, _ := http.NewRequest(http.MethodPut, in.AdminURL+"/admin/clients/c-"+strings.Map(func(r rune) rune {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				return unicode.ToLower(r)
			}
			return '-'
		}, field),
			bytes.NewReader([]byte(c)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		var e struct{ Error, Field string }
		_ = json.Unmarshal(data, &e)
		if resp.StatusCode != http.StatusBadRequest || e.Field != field {
			t.Errorf("a client whose %s holds a NUL: %d %s; want 400 naming the field", field, resp.StatusCode, data)
		}
	}
	// A ConsentGrant's subject, pushed as the operator pushes it.
	confidentialClient(t, in, "grafana")
	_, err := in.Admin.PutGrant(context.Background(), &adminapi.Grant{ClientID: "grafana", Subject: "alice\x00", Scopes: []string{"openid"}})
	var ae *adminapi.Error
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), ": 400: ") {
		t.Errorf("a grant whose subject holds a NUL: %v; want 400 naming the subject", err)
	}
}

// publicClient registers a public client (no secret) for the code flow with PKCE,
// as a command-line tool or a single-page app is.
func publicClient(t *testing.T, in *instance, id string) {
	t.Helper()
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: id, OwnerNamespace: "tools",
		ClientMetadata: adminapi.ClientMetadata{Name: "CLI", GrantTypes: []string{"authorization_code", "refresh_token"},
			RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"}, TokenEndpointAuthMethod: "none"}}); err != nil {
		t.Fatal(err)
	}
}

// Tokens that PostgreSQL cannot hold as text (invalid UTF-8, a NUL) are answered as
// the invalid tokens they are, never as a server error: RFC 7009 section 2.2 answers
// 200 to the revocation of an invalid token (a 503 would tell the client to retry
// forever), RFC 7662 section 2.2 reports it inactive. At the token endpoint, and in
// any other parameter (a client_id), they make the request malformed: 400
// invalid_request naming the parameter. A public client needs no secret, so anyone
// who knows its ID can send these.
func TestGarbageTokensAreUnknownTokens(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	publicClient(t, in, "cli")
	for name, token := range map[string]string{
		"invalid UTF-8":   "ory_at_x.\xff\xfe",
		"a NUL byte":      "ory_at_x.ab\x00cd",
		"plain garbage":   "not-a-token",
		"unknown, dotted": "ory_at_x.unknownsignature",
	} {
		if code, body := postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {token}}, "grafana", secret); code != http.StatusOK {
			t.Errorf("grafana revoking %s: %d %v; want 200", name, code, body)
		}
		if code, body := postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {token}, "client_id": {"cli"}}, "", ""); code != http.StatusOK {
			t.Errorf("public client cli revoking %s: %d %v; want 200", name, code, body)
		}
		if got := introspect(t, in, token, "grafana", secret); got["active"] != false {
			t.Errorf("introspecting %s: %v; want inactive", name, got)
		}
		if code, body := postForm(t, in.URL+"/userinfo", url.Values{"access_token": {token}}, "", ""); code != http.StatusUnauthorized ||
			body["error"] != "invalid_token" {
			t.Errorf("userinfo with %s: %d %v; want 401 invalid_token (RFC 6750)", name, code, body)
		}
		// At the token endpoint, a code or refresh token that is no text is a
		// malformed request; an unknown one is invalid_grant.
		want := "invalid_grant"
		if !utf8.ValidString(token) || strings.ContainsRune(token, 0) {
			want = "invalid_request"
		}
		code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token},
			"client_id": {"cli"}}, "", "")
		if code != http.StatusBadRequest || body["error"] != want {
			t.Errorf("refreshing with %s: %d %v; want 400 %s", name, code, body, want)
		}
		code, body = postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {token},
			"redirect_uri": {redirectURI}, "client_id": {"cli"}, "code_verifier": {"0123456789012345678901234567890123456789abc"}}, "", "")
		if code != http.StatusBadRequest || body["error"] != want {
			t.Errorf("exchanging %s as a code: %d %v; want 400 %s", name, code, body, want)
		}
	}
	for name, id := range map[string]string{"invalid UTF-8": "cli\xff", "a NUL byte": "cli\x00"} {
		code, body := postForm(t, in.URL+"/oauth2/revoke", url.Values{"token": {"x"}, "client_id": {id}}, "", "")
		if desc, _ := body["error_description"].(string); code != http.StatusBadRequest || body["error"] != "invalid_request" ||
			!strings.Contains(desc, `"client_id"`) {
			t.Errorf("client_id with %s: %d %v; want 400 invalid_request naming client_id", name, code, body)
		}
	}
}

// The same NUL bytes in a multipart/form-data body, which fosite parses too: the
// guard read only what ParseForm had parsed, which leaves a multipart body alone, so
// they reached the database (500, and a token request's failed insert also broke
// its whole batch of other clients' tokens into lone retries). Served as any
// urlencoded body is, without the NUL: a client may post either.
func TestMultipartNULParameter(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	publicClient(t, in, "cli")
	post := func(path string, fields [][2]string, user, pass string) (int, map[string]any) {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for _, f := range fields {
			if err := mw.WriteField(f[0], f[1]); err != nil {
				t.Fatal(err)
			}
		}
		if err := mw.Close(); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, in.URL+path, &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		out := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	cc := [][2]string{{"grant_type", "client_credentials"}, {"scope", "zones.read"}}
	if code, body := post("/oauth2/token", cc, "grafana", secret); code != http.StatusOK || body["access_token"] == nil {
		t.Fatalf("client_credentials as multipart: %d %v; want a token", code, body)
	}
	code, body := post("/oauth2/token", append(cc, [2]string{"scope", "\x00"}), "grafana", secret)
	clientMistake(t, "client_credentials as multipart with a second scope holding a NUL", code, body)
	if code < 400 {
		t.Errorf("client_credentials as multipart with a NUL: %d %v; want 400", code, body)
	}
	f := parForm("state-0123456789", oauth2.GenerateVerifier())
	f.Set("client_id", "cli")
	f.Set("scope", "openid")
	var fields [][2]string
	for k, vs := range f {
		for _, v := range vs {
			fields = append(fields, [2]string{k, v})
		}
	}
	code, body = post("/oauth2/par", append(fields, [2]string{"x", "\x00"}), "", "")
	clientMistake(t, "public client cli pushing as multipart a NUL in an unknown parameter", code, body)
	if code < 400 {
		t.Errorf("a pushed request as multipart with a NUL: %d %v; want 400", code, body)
	}
}
