package tokenserver_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Introspection answers authenticated clients only (RFC 7662 section 2.1). fosite
// also took any live access token as the caller's credentials, so that anyone
// holding one — a browser app's user, a tenant's client_credentials token — could
// learn of any other token whose it is, for which client and scopes, refresh
// tokens included. And a refresh token, which goes to no resource server, is shown
// active to its own client only.
func TestIntrospectionIsForAuthenticatedClients(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	otherSecret := confidentialClient(t, in, "other")
	tok := codeFlowToken(t, in, secret)

	if ti := introspect(t, in, tok.RefreshToken, "grafana", secret); ti["active"] != true || ti["client_id"] != "grafana" {
		t.Errorf("the client introspecting its own refresh token: %v; want it active", ti)
	}
	if ti := introspect(t, in, tok.RefreshToken, "other", otherSecret); ti["active"] != false || len(ti) != 1 {
		t.Errorf("another client introspecting the refresh token: %v; want only active false", ti)
	}
	// An access token, as a resource server that is a client of its own checks it.
	if ti := introspect(t, in, tok.AccessToken, "other", otherSecret); ti["active"] != true {
		t.Errorf("another client introspecting the access token: %v; want it active", ti)
	}

	_, cc := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}}, "other", otherSecret)
	bearer, _ := cc["access_token"].(string)
	if bearer == "" {
		t.Fatalf("client_credentials: %v", cc)
	}
	for name, req := range map[string]*http.Request{
		"an Authorization: Bearer header": func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/introspect",
				strings.NewReader(url.Values{"token": {tok.RefreshToken}}.Encode()))
			r.Header.Set("Authorization", "Bearer "+bearer)
			return r
		}(),
		"an access_token parameter": func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/introspect",
				strings.NewReader(url.Values{"token": {tok.AccessToken}, "access_token": {bearer}}.Encode()))
			return r
		}(),
	} {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("introspection with a token as the caller's credentials, in %s: %d, want 401", name, resp.StatusCode)
		}
	}
}
