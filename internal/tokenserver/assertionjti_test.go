package tokenserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// A private_key_jwt assertion's jti is unique per client (its issuer, RFC 7523
// section 3), not server-wide: one tenant's client that signs its own assertions
// with the jti another tenant's client uses (CI systems number their runs) does not
// lock that client out as a replay, while an assertion replayed by anyone is still
// refused. A jti JSON can carry but the database's text cannot (a NUL byte) is one
// like any other, not a "jti already used".
func TestClientAssertionJTIIsPerClient(t *testing.T) {
	in := start(t, setup{})
	type tenant struct {
		id     string
		signer jose.Signer
	}
	register := func(id, namespace string) tenant {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Admin.PutClient(context.Background(), &adminapi.Client{ID: id, OwnerNamespace: namespace,
			ClientMetadata: adminapi.ClientMetadata{Name: id, GrantTypes: []string{"client_credentials"}, Scopes: []string{"zones.read"},
				TokenEndpointAuthMethod: "private_key_jwt", JWKS: jwks}}); err != nil {
			t.Fatal(err)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		return tenant{id, signer}
	}
	assertionFor := func(c tenant, jti string, lifetime time.Duration) string {
		t.Helper()
		now := time.Now()
		a, err := jwt.Signed(c.signer).Claims(jwt.Claims{Issuer: c.id, Subject: c.id, Audience: jwt.Audience{in.URL + "/oauth2/token"},
			ID: jti, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(lifetime))}).CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	assertion := func(c tenant, jti string) string { return assertionFor(c, jti, 5*time.Minute) }
	token := func(c tenant, a string) (int, string) {
		t.Helper()
		code, e, description := assertClient(t, in, c.id, a)
		return code, e + ": " + description
	}
	attacker, victim := register("ci-bot-a", "team-a"), register("ci-bot-b", "team-b")

	// Its jti is kept until its exp: one good for years would keep a row per request
	// for years. Refused, and nothing kept.
	if code, e := token(attacker, assertionFor(attacker, "for-years", 5*365*24*time.Hour)); code != http.StatusUnauthorized ||
		!strings.HasPrefix(e, "invalid_client") || !strings.Contains(e, "exp") {
		t.Errorf("an assertion good for five years: %d %s; want 401 invalid_client naming its exp", code, e)
	}
	if code, e := token(attacker, assertionFor(attacker, "for-years", 23*time.Hour)); code != http.StatusOK {
		t.Errorf("an assertion good for 23 hours, with the jti of the refused one: %d %s; want 200", code, e)
	}

	for _, jti := range []string{"run-42", "run\x0043"} {
		if code, e := token(attacker, assertion(attacker, jti)); code != http.StatusOK {
			t.Fatalf("%q: the first tenant's own assertion: %d %s; want 200", jti, code, e)
		}
		if code, e := token(victim, assertion(victim, jti)); code != http.StatusOK {
			t.Errorf("%q: the other tenant's assertion with the jti the first spent: %d %s; want 200", jti, code, e)
		}
		// Replays are refused, the other tenant's and the first one's alike.
		replayed := assertion(victim, jti+"-replayed")
		if code, e := token(victim, replayed); code != http.StatusOK {
			t.Fatalf("%q: a fresh assertion: %d %s; want 200", jti, code, e)
		}
		if code, e := token(victim, replayed); code == http.StatusOK || !strings.HasPrefix(e, "jti_known") {
			t.Errorf("%q: the same assertion again: %d %s; want jti_known", jti, code, e)
		}
		if code, e := token(attacker, assertion(attacker, jti)); code == http.StatusOK || !strings.HasPrefix(e, "jti_known") {
			t.Errorf("%q: the first tenant's jti again in a new assertion: %d %s; want jti_known", jti, code, e)
		}
	}
}
