package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// An OAuthClient with the JWT bearer grant and an issuer it trusts becomes a client
// that exchanges that issuer's assertions with its generated credentials, and a
// resync of it changes nothing on the token server.
func TestJWTBearerClient(t *testing.T) {
	ctx := context.Background()
	// The grant is for first-party clients: the server's own namespace, made first-party.
	ns := namespace(t, "ci", map[string]string{"first-party": "true"})
	externalServer(t, ns, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.FirstPartyNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"first-party": "true"}}}
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	coord := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	pub, _ := key.PublicKey.ECDH()
	raw := pub.Bytes() // 0x04 || X || Y
	oc := newClient(ns, "deployer", "", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes, oc.Spec.SkipConsent = []oauthv1alpha1.GrantType{oauthv1alpha1.GrantJWTBearer}, true
		oc.Spec.JWTBearer = &oauthv1alpha1.JWTBearer{TrustedIssuers: []oauthv1alpha1.TrustedJWTIssuer{{
			Issuer: "https://ci.example.com", Subjects: []string{"deployer"}, Scopes: []oauthv1alpha1.Scope{"zones.read"},
			JWKS: &oauthv1alpha1.JSONWebKeySet{Keys: []oauthv1alpha1.JSONWebKey{{Kty: "EC", Crv: "P-256", Kid: "ci-1",
				X: coord(raw[1:33]), Y: coord(raw[33:])}}}}}}
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")

	var sec corev1.Secret
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "deployer-oauth"}, &sec); err != nil {
		t.Fatal(err)
	}
	tokenURL := string(sec.Data["token_url"])
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "ci-1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: "https://ci.example.com", Subject: "deployer",
		Audience: jwt.Audience{tokenURL}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
		ID: "jti-" + coord(raw[1:17])}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}, "scope": {"zones.read"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(string(sec.Data["client_id"])), url.QueryEscape(string(sec.Data["client_secret"])))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusOK || body["access_token"] == nil || body["scope"] != "zones.read" {
		t.Fatalf("exchange with the OAuthClient's credentials: %d %v; want an access token for zones.read", resp.StatusCode, body)
	}

	// Quiet resync: the trust document as the operator sends it again is no change.
	var got oauthv1alpha1.OAuthClient
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "deployer"}, &got); err != nil {
		t.Fatal(err)
	}
	before, err := admin.GetClient(ctx, got.Status.ClientID)
	if err != nil || len(before.JWTBearer) == 0 {
		t.Fatalf("registered client = %+v, %v; want its jwtBearer", before, err)
	}
	time.Sleep(3 * resyncEvery)
	if after, _ := admin.GetClient(ctx, got.Status.ClientID); !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("resync changed the client on the token server (updated %v→%v)", before.UpdatedAt, after.UpdatedAt)
	}
}
