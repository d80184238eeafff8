package tokenserver_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

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
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: "cli", OwnerNamespace: "tools",
		ClientMetadata: adminapi.ClientMetadata{Name: "CLI", GrantTypes: []string{"authorization_code", "refresh_token"},
			RedirectURIs: []string{redirectURI}, Scopes: []string{"openid"}, TokenEndpointAuthMethod: "none"}}); err != nil {
		t.Fatal(err)
	}
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
