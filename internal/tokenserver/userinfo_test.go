package tokenserver_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// /userinfo answers only tokens granted openid (OIDC Core 5.3): a client_credentials
// or JWT bearer token without it names no signed-in user, and an app signing people
// in through /userinfo must not take its subject for one (403 insufficient_scope,
// RFC 6750 section 3.1).
func TestUserinfoNeedsOpenID(t *testing.T) {
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	ci := newAssertionKey(t, "ci-1")
	deploySecret := putJWTBearerClient(t, in, "deploy", []string{"zones.read"}, []adminapi.TrustedJWTIssuer{{
		Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"alice"}, Scopes: []string{"zones.read"}}}, nil)
	tokens := map[string]struct {
		form       url.Values
		id, secret string
	}{
		"client_credentials": {url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}}, "grafana", secret},
		"jwt-bearer": {url.Values{"grant_type": {jwtBearerGrant}, "scope": {"zones.read"},
			"assertion": {ci.sign(t, claimsFor(in, "https://ci.example.com", "alice"))}}, "deploy", deploySecret},
	}
	for name, tc := range tokens {
		t.Run(name, func(t *testing.T) {
			code, body := postForm(t, in.URL+"/oauth2/token", tc.form, tc.id, tc.secret)
			if code != http.StatusOK {
				t.Fatalf("token: %d %v", code, body)
			}
			req, _ := http.NewRequest(http.MethodGet, in.URL+"/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) ||
				strings.Contains(string(b), "alice") {
				t.Errorf("userinfo: %d %q %s; want 403 insufficient_scope and no claims", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
			}
		})
	}
}
