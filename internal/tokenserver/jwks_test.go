package tokenserver_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// TestJWKSURIGuard: a client's jwks_uri is chosen by whoever registers the client.
// One that resolves to an internal address (here loopback, standing for cloud
// metadata or a cluster service) is never fetched, and the client cannot
// authenticate; the same client with the address explicitly allowed works, so the
// assertion itself is good.
func TestJWKSURIGuard(t *testing.T) {
	// RSA: a jwks_uri client's assertions are RS256, the server's default when it
	// holds none of the client's keys.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	}))
	defer jwks.Close()

	token := func(in *instance) (int, string) {
		t.Helper()
		jwksClient(t, in, "signer", "apps", jwks.URL)
		code, e, _ := assertClient(t, in, "signer", rsAssertion(t, in, key, "signer", "k1"))
		return code, e
	}

	refused := start(t, setup{})
	if code, e := token(refused); code != http.StatusUnauthorized || e != "invalid_client" {
		t.Errorf("jwks_uri on loopback: %d %q, want 401 invalid_client", code, e)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server fetched a jwks_uri on loopback %d times", n)
	}

	allowed := start(t, setup{jwksAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if code, e := token(allowed); code != http.StatusOK {
		t.Fatalf("jwks_uri on an allowed address: %d %q, want 200", code, e)
	}
	if hits.Load() == 0 {
		t.Fatal("the allowed jwks_uri was not fetched")
	}
}

// TestUnusableJWKSURIIsTheClientsFault: a private_key_jwt client whose jwks_uri
// answers 404, is down, fails or serves something that is not a key set cannot
// authenticate, and that is the client's failure: 401 invalid_client with a
// description a developer can act on (RFC 6749 section 5.2), logged as the client's
// problem, and never a 5xx, which the upgrade analysis would count against the
// server (a tenant could otherwise fail any upgrade on demand).
func TestUnusableJWKSURIIsTheClientsFault(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	hosts := map[string]string{
		"404": serve(http.NotFound),
		"500": serve(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}),
		"junk": serve(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>not a key set</html>"))
		}),
		"down": down.URL,
	}
	logs := &syncBuffer{}
	in := start(t, setup{jwksAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, logTo: logs})
	for name, uri := range hosts {
		t.Run(name, func(t *testing.T) {
			id := "tenant-" + name
			jwksClient(t, in, id, "team-a", uri)
			code, e, description := assertClient(t, in, id, rsAssertion(t, in, key, id, "k1"))
			if code != http.StatusUnauthorized || e != "invalid_client" {
				t.Errorf("jwks_uri %s: %d %q, want 401 invalid_client", name, code, e)
			}
			if !strings.Contains(description, "jwks_uri") {
				t.Errorf("error_description %q does not say the client's jwks_uri is what failed", description)
			}
			if !strings.Contains(logs.String(), "jwks_uri="+uri) {
				t.Errorf("the server did not log which client's jwks_uri failed:\n%s", logs.String())
			}
		})
	}
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	metrics, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(metrics), `code="5`) {
		t.Errorf("a client's unusable jwks_uri was counted as a server error:\n%s", metrics)
	}
	if strings.Contains(logs.String(), "internal error") {
		t.Errorf("a client's unusable jwks_uri was logged as an internal error:\n%s", logs.String())
	}
}

// assertClient asks for a client_credentials token (scope zones.read) as clientID,
// authenticated by a private_key_jwt assertion, and returns the status and, for a
// refusal, the error and its description.
func assertClient(t *testing.T, in *instance, clientID, assertion string) (code int, e, description string) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}, "client_id": {clientID},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
	resp, err := httpClient.Post(in.URL+"/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error, body.Description
}

// TestJWKSURIFetchesAreBounded: a jwks_uri is fetched for requests anyone can send
// who knows the client's ID, before any signature is checked, and again for each
// assertion whose key ID the cached set lacks. Many such assertions at once make
// a handful of fetches, not one each; and a location that answers without end is
// read no further than a key set could be long.
func TestJWKSURIFetchesAreBounded(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	var hits atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer jwks.Close()
	var failing atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer flaky.Close()
	const endless = 64 << 20
	var written atomic.Int64
	var cut atomic.Bool
	flood := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("k", 32<<10))
		_, _ = w.Write([]byte(`{"keys":[{"kty":"`))
		for written.Load() < endless {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				cut.Store(true)
				return
			}
		}
	}))
	defer flood.Close()

	in := start(t, setup{jwksAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	assertion := func(id, kid string) string { return rsAssertion(t, in, key, id, kid) }
	for id, uri := range map[string]string{"signer": jwks.URL, "flooder": flood.URL, "flaky": flaky.URL} {
		jwksClient(t, in, id, "apps", uri)
	}

	const parallel = 24
	codes := make(chan int, parallel)
	for i := range parallel {
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}, "client_id": {"signer"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {assertion("signer", fmt.Sprintf("unknown-%d", i))}}
		go func() {
			resp, err := httpClient.Post(in.URL+"/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
			if err != nil {
				codes <- 0
				return
			}
			_ = resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range parallel {
		// fosite: 400 invalid_request, the key ID named is not in the set.
		if code := <-codes; code != http.StatusBadRequest && code != http.StatusUnauthorized {
			t.Errorf("an assertion with an unknown key ID: %d, want 400 or 401", code)
		}
	}
	if n := hits.Load(); n > 3 {
		t.Errorf("%d assertions with unknown key IDs made %d fetches of the jwks_uri; want a few at most", parallel, n)
	}
	// The key set itself still works, from the cache.
	if code, e, _ := assertClient(t, in, "signer", assertion("signer", "k1")); code != http.StatusOK {
		t.Errorf("an assertion with the set's key: %d %q, want 200", code, e)
	}

	// While a location fails, anyone's assertion with a made-up key ID forces a
	// fetch that fails: the client's own assertions still work from the cached set.
	if code, e, _ := assertClient(t, in, "flaky", assertion("flaky", "k1")); code != http.StatusOK {
		t.Fatalf("the flaky client's assertion: %d %q, want 200", code, e)
	}
	failing.Store(true)
	if code, _, _ := assertClient(t, in, "flaky", assertion("flaky", "made-up")); code == http.StatusOK {
		t.Error("an assertion with a made-up key ID was taken")
	}
	if code, e, _ := assertClient(t, in, "flaky", assertion("flaky", "k1")); code != http.StatusOK {
		t.Errorf("the client's own assertion after someone forced a fetch that failed: %d %q, want 200 from the cached set", code, e)
	}

	code, e, description := assertClient(t, in, "flooder", assertion("flooder", "k1"))
	if code != http.StatusUnauthorized || e != "invalid_client" || !strings.Contains(description, "jwks_uri") {
		t.Errorf("a jwks_uri that answers without end: %d %q %q, want 401 invalid_client naming the jwks_uri", code, e, description)
	}
	eventually(t, "the endless answer cut off by the server", cut.Load)
	if n := written.Load(); n >= endless {
		t.Errorf("the server read %d bytes of an endless key set", n)
	}
}

// jwksClient registers a private_key_jwt client id of owner whose keys are at uri.
func jwksClient(t *testing.T, in *instance, id, owner, uri string) {
	t.Helper()
	if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: id, OwnerNamespace: owner,
		ClientMetadata: adminapi.ClientMetadata{Name: "Signer " + id, GrantTypes: []string{"client_credentials"},
			Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "private_key_jwt", JWKSURI: uri}}); err != nil {
		t.Fatal(err)
	}
}

// rsAssertion is client id's RS256 client assertion for in's token endpoint,
// signed by key under key ID kid.
func rsAssertion(t *testing.T, in *instance, key *rsa.PrivateKey, id, kid string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{in.URL + "/oauth2/token"},
		ID: rand.Text(), IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return a
}
