package tokenserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

const jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// assertionKey is an issuer's signing key and its public JWKS.
type assertionKey struct {
	priv *ecdsa.PrivateKey
	kid  string
}

func newAssertionKey(t *testing.T, kid string) assertionKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return assertionKey{priv, kid}
}

func (k assertionKey) jwks(t *testing.T) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign makes an RFC 7523 assertion with claims c, signed with go-jose.
func (k assertionKey) sign(t *testing.T, c jwt.Claims) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(sig).Claims(c).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// claimsFor are valid claims for the token endpoint of in: issuer, subject, a fresh
// jti, five minutes of life.
func claimsFor(in *instance, issuer, subject string) jwt.Claims {
	now := time.Now()
	return jwt.Claims{Issuer: issuer, Subject: subject, Audience: jwt.Audience{in.URL + "/oauth2/token"},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), ID: newJTI()}
}

func newJTI() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// The JWT bearer grant with fosite's handler over the client's trust: a CI system's
// signed assertion becomes an access token for the asserted subject, with the scopes
// the trust gives; a replay, another issuer, a subject not listed, an expired
// assertion, a key not the issuer's, a scope outside the trust and a client without
// the grant are refused.
func TestJWTBearerGrant(t *testing.T) {
	ctx := context.Background()
	dsn, keyDir := pg.NewMigratedDatabase(t), secrets(t)
	in := start(t, setup{dsn: dsn, keyDir: keyDir})
	ci := newAssertionKey(t, "ci-1")
	trust, _ := json.Marshal(adminapi.JWTBearer{TrustedIssuers: []adminapi.TrustedJWTIssuer{{
		Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"deployer"}, Scopes: []string{"zones.read"}}}})
	secret := "secret-deploy-0123456789abcdefghijklmnop"
	for _, id := range []string{"deploy", "legacy", "legacy-public"} {
		if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: id, Secret: secret, OwnerNamespace: "platform",
			ClientMetadata: adminapi.ClientMetadata{Name: "Deployments", GrantTypes: []string{jwtBearerGrant}, SkipConsent: true,
				Scopes: []string{"zones.read", "zones.write"}, TokenEndpointAuthMethod: "client_secret_basic", JWTBearer: trust}}); err != nil {
			t.Fatal(err)
		}
	}
	otherSecret := confidentialClient(t, in, "grafana")

	exchange := func(id, secret, assertion, scope string) (int, map[string]any) {
		t.Helper()
		return postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion},
			"scope": {scope}}, id, secret)
	}
	good := ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer"))
	code, body := exchange("deploy", secret, good, "zones.read")
	if code != http.StatusOK || body["access_token"] == nil || body["scope"] != "zones.read" || body["refresh_token"] != nil {
		t.Fatalf("exchange = %d %v; want an access token for zones.read and no refresh token", code, body)
	}
	ti := introspect(t, in, body["access_token"].(string), "deploy", secret)
	if ti["active"] != true || ti["sub"] != "deployer" || ti["client_id"] != "deploy" {
		t.Errorf("introspection = %v; want an active token for deployer, client deploy", ti)
	}

	expired := claimsFor(in, "https://ci.example.com", "deployer")
	expired.IssuedAt, expired.Expiry = jwt.NewNumericDate(time.Now().Add(-10*time.Minute)), jwt.NewNumericDate(time.Now().Add(-time.Minute))
	// Issued ten years ahead, for an hour: else good for ten years.
	future := claimsFor(in, "https://ci.example.com", "deployer")
	future.IssuedAt = jwt.NewNumericDate(time.Now().Add(10 * 365 * 24 * time.Hour))
	future.Expiry = jwt.NewNumericDate(future.IssuedAt.Time().Add(time.Hour))
	tooLong := claimsFor(in, "https://ci.example.com", "deployer")
	tooLong.Expiry = jwt.NewNumericDate(time.Now().Add(25 * time.Hour))
	cases := map[string]struct {
		id, secret, assertion, scope, want string
	}{
		"replayed":             {"deploy", secret, good, "zones.read", "invalid_grant"},
		"another issuer":       {"deploy", secret, ci.sign(t, claimsFor(in, "https://evil.example.com", "deployer")), "", "invalid_grant"},
		"a subject not listed": {"deploy", secret, ci.sign(t, claimsFor(in, "https://ci.example.com", "admin")), "", "invalid_grant"},
		"expired":              {"deploy", secret, ci.sign(t, expired), "", "invalid_grant"},
		"issued in the future": {"deploy", secret, ci.sign(t, future), "", "invalid_grant"},
		"valid over 24 hours":  {"deploy", secret, ci.sign(t, tooLong), "", "invalid_grant"},
		"signed with another key": {"deploy", secret,
			newAssertionKey(t, "ci-1").sign(t, claimsFor(in, "https://ci.example.com", "deployer")), "", "invalid_grant"},
		"a scope the trust does not give": {"deploy", secret,
			ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer")), "zones.write", "invalid_scope"},
		"a client without the grant": {"grafana", otherSecret,
			ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer")), "", "unauthorized_client"},
		"a wrong client secret": {"deploy", "wrong-secret-0123456789abcdefghijklmnop",
			ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer")), "", "invalid_client"},
	}
	t.Run("one assertion sent several times at once", func(t *testing.T) {
		assertion := ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer"))
		const n = 6
		codes := make(chan int, n)
		start := make(chan struct{})
		for range n {
			go func() {
				<-start
				code, body := exchange("deploy", secret, assertion, "zones.read")
				if code != http.StatusOK && body["error"] != "invalid_grant" {
					t.Errorf("a racing replay: %d %v; want invalid_grant", code, body)
				}
				codes <- code
			}()
		}
		close(start)
		ok := 0
		for range n {
			if <-codes == http.StatusOK {
				ok++
			}
		}
		if ok != 1 {
			t.Errorf("%d of %d racing uses of one assertion got a token; want exactly 1", ok, n)
		}
	})
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, body := exchange(tc.id, tc.secret, tc.assertion, tc.scope)
			if code < 400 || code >= 500 || body["error"] != tc.want || body["access_token"] != nil {
				t.Errorf("%d %v; want %s", code, body, tc.want)
			}
		})
	}
	t.Run("an issuer's clock a little ahead", func(t *testing.T) {
		ahead := claimsFor(in, "https://ci.example.com", "deployer")
		ahead.IssuedAt = jwt.NewNumericDate(time.Now().Add(20 * time.Second))
		if code, body := exchange("deploy", secret, ci.sign(t, ahead), ""); code != http.StatusOK {
			t.Errorf("exchange = %d %v; want a token (clock skew)", code, body)
		}
	})
	t.Run("a client that no longer skips consent", func(t *testing.T) {
		// A row the admin API would refuse now: registered before the first-party
		// rule, or left behind by its namespace losing the first-party label. A
		// replica with a cold client cache reads it as stored.
		db := openPool(t, dsn)
		if _, err := db.ExecContext(ctx, `UPDATE clients SET spec = spec - 'skipConsent' WHERE id = 'legacy'`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE clients SET spec = jsonb_set(spec, '{tokenEndpointAuthMethod}', '"none"'),
			secret_hash = NULL WHERE id = 'legacy-public'`); err != nil {
			t.Fatal(err)
		}
		replica := start(t, setup{dsn: dsn, keyDir: keyDir})
		code, body := postForm(t, replica.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant},
			"assertion": {ci.sign(t, claimsFor(replica, "https://ci.example.com", "deployer"))}}, "legacy", secret)
		if code != http.StatusBadRequest || body["error"] != "unauthorized_client" {
			t.Errorf("exchange by a client without skipConsent = %d %v; want 400 unauthorized_client", code, body)
		}
		// A public client names itself: the assertion would be its only credential.
		code, body = postForm(t, replica.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "client_id": {"legacy-public"},
			"assertion": {ci.sign(t, claimsFor(replica, "https://ci.example.com", "deployer"))}}, "", "")
		if code != http.StatusBadRequest || body["error"] != "unauthorized_client" {
			t.Errorf("exchange by a public client = %d %v; want 400 unauthorized_client", code, body)
		}
	})
}

// The admin API refuses what the OAuthClient's CEL refuses, naming the same field.
func TestAdminValidatesGrants(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{})
	ci := newAssertionKey(t, "ci-1")
	doc := func(ti adminapi.TrustedJWTIssuer) json.RawMessage {
		b, _ := json.Marshal(adminapi.JWTBearer{TrustedIssuers: []adminapi.TrustedJWTIssuer{ti}})
		return b
	}
	anyCI := doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci", JWKS: ci.jwks(t), AllowAnySubject: true})
	cases := map[string]struct {
		grants []string
		trust  json.RawMessage
		field  string
		edit   func(*adminapi.Client)
	}{
		"jwt-bearer without skipConsent": {[]string{jwtBearerGrant}, anyCI, "skipConsent",
			func(c *adminapi.Client) { c.SkipConsent = false }},
		"jwt-bearer for a public client": {[]string{jwtBearerGrant}, anyCI, "tokenEndpointAuthMethod",
			func(c *adminapi.Client) { c.TokenEndpointAuthMethod, c.Secret = "none", "" }},
		"refresh_token with client_credentials only": {[]string{"client_credentials", "refresh_token"}, nil, "grantTypes", nil},
		"jwt-bearer without trust":                   {[]string{jwtBearerGrant}, nil, "jwtBearer", nil},
		"trust without jwt-bearer":                   {[]string{"client_credentials"}, anyCI, "jwtBearer", nil},
		"no keys": {[]string{jwtBearerGrant},
			doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci", AllowAnySubject: true}), "jwtBearer.trustedIssuers[0].jwks", nil},
		"no subject rule": {[]string{jwtBearerGrant},
			doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci", JWKS: ci.jwks(t)}), "jwtBearer.trustedIssuers[0].subjects", nil},
		"a scope the client lacks": {[]string{jwtBearerGrant}, doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci", JWKS: ci.jwks(t),
			AllowAnySubject: true, Scopes: []string{"zones.write"}}), "jwtBearer.trustedIssuers[0].scopes[0]", nil},
		"keys over plain http": {[]string{jwtBearerGrant}, doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci",
			JWKSURI: "http://ci.example.com/keys", AllowAnySubject: true}), "jwtBearer.trustedIssuers[0].jwksURI", nil},
		"keys at a URL with a fragment": {[]string{jwtBearerGrant}, doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci",
			JWKSURI: "https://ci.example.com/keys#x", AllowAnySubject: true}), "jwtBearer.trustedIssuers[0].jwksURI", nil},
		"a subject listed twice": {[]string{jwtBearerGrant}, doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci",
			JWKS: ci.jwks(t), Subjects: []string{"deployer", "deployer"}}), "jwtBearer.trustedIssuers[0].subjects[1]", nil},
		"a subject too long": {[]string{jwtBearerGrant}, doc(adminapi.TrustedJWTIssuer{Issuer: "https://ci",
			JWKS: ci.jwks(t), Subjects: []string{strings.Repeat("s", 256)}}), "jwtBearer.trustedIssuers[0].subjects[0]", nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := &adminapi.Client{ID: "c", Secret: "secret-c-0123456789abcdefghijklmnopqrs",
				OwnerNamespace: "platform", ClientMetadata: adminapi.ClientMetadata{Name: "C", GrantTypes: tc.grants,
					Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "client_secret_basic", JWTBearer: tc.trust, SkipConsent: true}}
			if tc.edit != nil {
				tc.edit(c)
			}
			_, err := in.Admin.PutClient(ctx, c)
			var ae *adminapi.Error
			if !errors.As(err, &ae) || ae.Field != tc.field {
				t.Errorf("PutClient: %v; want an error on %s", err, tc.field)
			}
		})
	}
	// Keys over http from the loopback host are fine, as for the CRD.
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "c", Secret: "secret-c-0123456789abcdefghijklmnopqrs",
		OwnerNamespace: "platform", ClientMetadata: adminapi.ClientMetadata{Name: "C", GrantTypes: []string{jwtBearerGrant},
			TokenEndpointAuthMethod: "client_secret_basic", SkipConsent: true, JWTBearer: doc(adminapi.TrustedJWTIssuer{
				Issuer: "https://ci", JWKSURI: "http://127.0.0.1:8080/keys", AllowAnySubject: true})}}); err != nil {
		t.Errorf("keys from the loopback host over http: %v", err)
	}
	// A public device client without redirect URIs is fine.
	if _, err := in.Admin.PutClient(ctx, &adminapi.Client{ID: "tv", OwnerNamespace: "media", ClientMetadata: adminapi.ClientMetadata{
		Name: "TV", GrantTypes: []string{deviceGrant, "refresh_token"}, TokenEndpointAuthMethod: "none"}}); err != nil {
		t.Errorf("a public device client: %v", err)
	}
}

// putJWTBearerClient registers a first-party client id with the JWT bearer grant,
// trusting trusted, and returns its secret.
func putJWTBearerClient(t *testing.T, in *instance, id string, scopes []string, trusted []adminapi.TrustedJWTIssuer,
	edit func(*adminapi.Client)) string {
	t.Helper()
	trust, _ := json.Marshal(adminapi.JWTBearer{TrustedIssuers: trusted})
	secret := "secret-" + id + "-0123456789abcdefghijklmnopqrstuvwxyz"
	c := &adminapi.Client{ID: id, Secret: secret, OwnerNamespace: "platform", ClientMetadata: adminapi.ClientMetadata{
		Name: id, GrantTypes: []string{jwtBearerGrant}, SkipConsent: true, Scopes: scopes,
		TokenEndpointAuthMethod: "client_secret_basic", JWTBearer: trust}}
	if edit != nil {
		edit(c)
	}
	if _, err := in.Admin.PutClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return secret
}

// jwtPayload is the claims of a JWT, unverified: what a resource server reads.
func jwtPayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// The assertion's aud names this server and whatever else its issuer put there; the
// token's audience is only what the client asked for within its spec.audience, so
// an assertion for "kubernetes" does not become a JWT access token a kube-apiserver
// trusting this issuer would accept.
func TestJWTBearerTokenAudience(t *testing.T) {
	in := start(t, setup{format: oauth.FormatJWT})
	ci := newAssertionKey(t, "ci-1")
	secret := putJWTBearerClient(t, in, "deploy", []string{"zones.read"}, []adminapi.TrustedJWTIssuer{{
		Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"deployer"}, Scopes: []string{"zones.read"}}},
		func(c *adminapi.Client) { c.Audience = []string{"https://zones.example.com"} })
	assertion := func() string {
		c := claimsFor(in, "https://ci.example.com", "deployer")
		c.Audience = jwt.Audience{in.URL + "/oauth2/token", "kubernetes", "https://grafana.example.com"}
		return ci.sign(t, c)
	}
	for name, tc := range map[string]struct {
		audience []string
		want     []any
	}{
		"none asked":            {nil, nil},
		"the client's audience": {[]string{"https://zones.example.com"}, []any{"https://zones.example.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion()},
				"audience": tc.audience}, "deploy", secret)
			if code != http.StatusOK {
				t.Fatalf("exchange = %d %v", code, body)
			}
			at := body["access_token"].(string)
			got, _ := jwtPayload(t, at)["aud"].([]any)
			if !slices.Equal(got, tc.want) {
				t.Errorf("JWT access token aud = %v; want %v", got, tc.want)
			}
			ti := introspect(t, in, at, "deploy", secret)
			if got, _ := ti["aud"].([]any); !slices.Equal(got, tc.want) {
				t.Errorf("introspected aud = %v; want %v", ti["aud"], tc.want)
			}
		})
	}
	t.Run("an audience the client may not have", func(t *testing.T) {
		code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion()},
			"audience": {"kubernetes"}}, "deploy", secret)
		if code != http.StatusBadRequest || body["access_token"] != nil {
			t.Errorf("exchange = %d %v; want 400 and no token", code, body)
		}
	})
}

// The scopes are those the trust lists (and the client still has), matched exactly:
// a trust with openid does not give profile, email or groups, which the server
// otherwise adds for any client with openid.
func TestJWTBearerScopes(t *testing.T) {
	in := start(t, setup{})
	ci := newAssertionKey(t, "ci-1")
	secret := putJWTBearerClient(t, in, "deploy", []string{"openid", "profile", "zones.read", "zones.write"},
		[]adminapi.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"deployer"},
			Scopes: []string{"openid", "zones.read"}}}, nil)
	for scope, want := range map[string]string{
		"openid zones.read": "", "openid profile": "invalid_scope", "openid email": "invalid_scope",
		"openid groups": "invalid_scope", "zones.write": "invalid_scope",
	} {
		t.Run(scope, func(t *testing.T) {
			code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant},
				"assertion": {ci.sign(t, claimsFor(in, "https://ci.example.com", "deployer"))}, "scope": {scope}}, "deploy", secret)
			switch {
			case want == "" && (code != http.StatusOK || body["scope"] != scope):
				t.Errorf("exchange = %d %v; want a token for %q", code, body, scope)
			case want != "" && (code != http.StatusBadRequest || body["error"] != want):
				t.Errorf("exchange = %d %v; want 400 %s", code, body, want)
			}
		})
	}
}

// A jti is unique per issuer only, and CI systems use predictable ones: one client's
// use of jti run-42 does not spend another client's assertion with that jti, nor one
// from another issuer; the same assertion twice is still a replay.
func TestJWTBearerJTIPerClientAndIssuer(t *testing.T) {
	in := start(t, setup{})
	ci, other := newAssertionKey(t, "ci-1"), newAssertionKey(t, "other-1")
	trust := []adminapi.TrustedJWTIssuer{
		{Issuer: "https://ci.example.com", JWKS: ci.jwks(t), Subjects: []string{"deployer"}},
		{Issuer: "https://other.example.com", JWKS: other.jwks(t), Subjects: []string{"deployer"}},
	}
	secretA := putJWTBearerClient(t, in, "tenant-a", nil, trust, nil)
	secretB := putJWTBearerClient(t, in, "platform-deploy", nil, trust, nil)
	with := func(k assertionKey, issuer string) string {
		c := claimsFor(in, issuer, "deployer")
		c.ID = "run-42"
		return k.sign(t, c)
	}
	for _, step := range []struct {
		what, client, secret, assertion string
		want                            int
	}{
		{"client A, issuer ci", "tenant-a", secretA, with(ci, "https://ci.example.com"), http.StatusOK},
		{"client B, issuer ci, the same jti", "platform-deploy", secretB, with(ci, "https://ci.example.com"), http.StatusOK},
		{"client B, another issuer, the same jti", "platform-deploy", secretB, with(other, "https://other.example.com"), http.StatusOK},
		{"client B, issuer ci again: a replay", "platform-deploy", secretB, with(ci, "https://ci.example.com"), http.StatusBadRequest},
	} {
		code, body := postForm(t, in.URL+"/oauth2/token", url.Values{"grant_type": {jwtBearerGrant}, "assertion": {step.assertion}},
			step.client, step.secret)
		if code != step.want {
			t.Errorf("%s: %d %v; want %d", step.what, code, body, step.want)
		}
	}
}
