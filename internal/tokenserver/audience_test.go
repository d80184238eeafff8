package tokenserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// An access token's audience may not be the client ID of another namespace's
// OAuthClient: that ID is the audience of the ID tokens that app is given, and an app
// signing people in with them (the kube-apiserver, anything built on go-oidc) does not
// check a JWT access token's at+jwt type, so a tenant's token for audience
// "kubernetes", issued for a user who consented to the tenant's app, would pass there
// as that user's ID token. Refused when the client is registered (naming the field)
// and, for an audience whose client came later, at the authorization and token
// endpoints; an audience of the tenant's own namespace, or a URL, stays allowed.
func TestAudienceMayNotNameAnotherNamespacesClient(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{format: "jwt"})
	put := func(id, owner string, audience ...string) error {
		_, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: id, Secret: "secret-" + id + "-0123456789abcdefghijklmnop",
			OwnerNamespace: owner, ClientMetadata: adminapi.ClientMetadata{Name: id,
				GrantTypes: []string{"client_credentials", "authorization_code", "refresh_token"}, RedirectURIs: []string{redirectURI},
				Scopes: []string{"openid", "zones.read"}, Audience: audience, TokenEndpointAuthMethod: "client_secret_basic"}})
		return err
	}
	token := func(id, audience string) (int, map[string]any) {
		t.Helper()
		return postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"},
			"audience": {audience}}, id, "secret-"+id+"-0123456789abcdefghijklmnop")
	}
	if err := put("kubernetes", "kubeoauth-system"); err != nil {
		t.Fatal(err)
	}
	err := put("tenant-app", "team-a", "https://zones.example.com", "kubernetes")
	if err == nil || !strings.Contains(err.Error(), "audience[1]") || !strings.Contains(err.Error(), "another namespace") {
		t.Errorf("registering an audience that is another namespace's client: %v; want audience[1] refused", err)
	}

	// The audience first, its client after: the token and authorization endpoints refuse it.
	if err := put("tenant-app", "team-a", "https://zones.example.com", "cluster-b", "team-a-api"); err != nil {
		t.Fatal(err)
	}
	if err := put("cluster-b", "kubeoauth-system"); err != nil {
		t.Fatal(err)
	}
	if err := put("team-a-api", "team-a"); err != nil {
		t.Fatal(err)
	}
	if code, body := token("tenant-app", "cluster-b"); code != http.StatusBadRequest || body["error"] != "invalid_request" ||
		!strings.Contains(body["error_description"].(string), "another namespace") {
		t.Errorf("a token for another namespace's client: %d %v; want 400 invalid_request saying why", code, body)
	}
	for _, aud := range []string{"https://zones.example.com", "team-a-api"} {
		code, body := token("tenant-app", aud)
		if code != http.StatusOK || body["access_token"] == nil {
			t.Fatalf("a token for %s: %d %v; want one", aud, code, body)
		}
		// RFC 9068: the JWT access token names its client, which a resource server
		// checks against the clients it trusts.
		parts := strings.Split(body["access_token"].(string), ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		if err := json.Unmarshal(payload, &claims); err != nil || claims["client_id"] != "tenant-app" {
			t.Errorf("the JWT access token's claims %s (%v); want client_id tenant-app", payload, err)
		}
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"response_type": {"code"}, "client_id": {"tenant-app"}, "redirect_uri": {redirectURI}, "scope": {"openid"},
		"state": {"state-0123456789"}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
		"code_challenge_method": {"S256"}, "audience": {"cluster-b"}}
	resp, err := noFollow.Get(in.URL + "/oauth2/auth?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if got := loc.Query().Get("error"); got != "invalid_request" || !strings.HasPrefix(loc.String(), redirectURI) {
		t.Errorf("an authorization request for another namespace's client as audience: %d to %s; want the app told invalid_request before any sign-in",
			resp.StatusCode, loc)
	}
}
