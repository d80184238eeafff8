package tokenserver_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Whatever arrives at the token endpoint, the answer is a JSON OAuth response and
// never a 500.
func FuzzTokenEndpoint(f *testing.F) {
	in := start(f, setup{})
	secret := confidentialClient(f, in, "grafana")
	for _, seed := range []string{
		"grant_type=client_credentials",
		"grant_type=client_credentials&scope=zones.read&scope=openid",
		"grant_type=refresh_token&refresh_token=ory_rt_x.y",
		"grant_type=authorization_code&code=a.b&redirect_uri=http://127.0.0.1:5555/callback&code_verifier=x",
		"grant_type=%ZZ&",
		"grant_type=client_credentials&client_id=grafana&client_secret=" + secret,
		"client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=a.b.c&grant_type=client_credentials",
		strings.Repeat("a=b&", 1000),
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	hc := &http.Client{}
	f.Fuzz(func(t *testing.T, body string, auth bool) {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth {
			req.SetBasicAuth("grafana", secret)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%q: %d %s", body, resp.StatusCode, data)
		}
		var out map[string]any
		if err := json.Unmarshal(data, &out); err != nil || (out["error"] == nil && out["access_token"] == nil) {
			t.Fatalf("%q: %d, not an OAuth response: %s", body, resp.StatusCode, data)
		}
	})
}

// Whatever JSON the admin API gets for a client, it answers with a 2xx or a 4xx that
// says what is wrong, never a 500.
func FuzzAdminPutClient(f *testing.F) {
	in := start(f, setup{})
	for _, seed := range []string{
		`{"name":"A","secret":"0123456789abcdef0123456789abcdef","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_basic"}`,
		`{"name":"A","grantTypes":["authorization_code"],"redirectURIs":["https://a.example.com/cb"],"tokenEndpointAuthMethod":"none"}`,
		`{"name":"A","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"private_key_jwt","jwks":{"keys":[{"kty":"EC"}]}}`,
		`{"name":"A","previousSecret":"x","grantTypes":["client_credentials"],"tokenEndpointAuthMethod":"client_secret_post"}`,
		`{"name":"","grantTypes":[]}`, `[]`, `null`, `{"name":"A","tokenLifespans":{"accessToken":"forever"}}`, `{`,
	} {
		f.Add(seed)
	}
	hc := &http.Client{}
	f.Fuzz(func(t *testing.T, body string) {
		req, _ := http.NewRequest(http.MethodPut, in.AdminURL+"/admin/clients/fuzz", bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, data)
		}
		if resp.StatusCode >= 400 && !strings.Contains(string(data), `"error"`) {
			t.Fatalf("%s: %d without an error message: %s", body, resp.StatusCode, data)
		}
	})
}
