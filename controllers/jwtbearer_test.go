package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/go-jose/go-jose/v3/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

const grantJWTBearer = oauthv1alpha1.GrantJWTBearer

// ciTrust is a CI's signing key and what makes an OAuthClient first-party with it:
// skipConsent, and spec.jwtBearer trusting the key for subject deployer.
func ciTrust(t *testing.T) (*ecdsa.PrivateKey, func(*oauthv1alpha1.OAuthClient)) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(jose.JSONWebKey{Key: &priv.PublicKey, KeyID: "ci-1", Algorithm: "ES256", Use: "sig"})
	var key oauthv1alpha1.JSONWebKey
	if err := json.Unmarshal(raw, &key); err != nil {
		t.Fatal(err)
	}
	return priv, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.SkipConsent = true
		oc.Spec.JWTBearer = &oauthv1alpha1.JWTBearer{TrustedIssuers: []oauthv1alpha1.TrustedJWTIssuer{{
			Issuer: "https://ci.example.com", JWKS: &oauthv1alpha1.JSONWebKeySet{Keys: []oauthv1alpha1.JSONWebKey{key}},
			Subjects: []string{"deployer"}, Scopes: []oauthv1alpha1.Scope{"zones.read"}}}}
	}
}

// The JWT bearer grant follows first-party status: while the namespace is labelled
// first-party, a CI assertion is exchanged for a token; once the label is gone, the
// token server no longer has the grant for the client (unauthorized_client), and a
// client with no other grant is deleted from it.
func TestJWTBearerNeedsFirstParty(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-ci", firstPartyLabels)
	priv, trust := ciTrust(t)
	both := newClient(ns, "deploy", platform, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{"client_credentials", grantJWTBearer}
		trust(oc)
	})
	only := newClient(ns, "ci-only", platform, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{grantJWTBearer}
		trust(oc)
	})
	for _, oc := range []*oauthv1alpha1.OAuthClient{both, only} {
		if err := k8s.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	}
	onlyID := only.Status.ClientID

	exchange := func() (int, map[string]any) {
		t.Helper()
		var sec corev1.Secret
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "deploy-oauth"}, &sec); err != nil {
			t.Fatal(err)
		}
		tokenURL := string(sec.Data["token_url"])
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "ci-1"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		assertion, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: "https://ci.example.com", Subject: "deployer",
			Audience: jwt.Audience{tokenURL}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
			ID: rand.Text()}).CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(url.Values{"grant_type": {string(grantJWTBearer)},
			"assertion": {assertion}, "scope": {"zones.read"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(string(sec.Data["client_id"])), url.QueryEscape(string(sec.Data["client_secret"])))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, body := exchange(); code != http.StatusOK || body["access_token"] == nil {
		t.Fatalf("exchange in a first-party namespace = %d %v; want a token", code, body)
	}

	setLabels(t, ns, admittedLabels)
	waitCondition(t, both, controllers.ConditionSkipConsent, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	var code int
	var body map[string]any
	eventually(t, 10*time.Second, "the token endpoint refuses the grant once the namespace is not first-party", func() bool {
		code, body = exchange()
		return code != http.StatusOK
	}, nil)
	if code != http.StatusBadRequest || body["error"] != "unauthorized_client" {
		t.Errorf("exchange outside a first-party namespace = %d %v; want 400 unauthorized_client", code, body)
	}
	if got, err := admin.GetClient(ctx, both.Status.ClientID); err != nil || slices.Contains(got.GrantTypes, string(grantJWTBearer)) ||
		len(got.JWTBearer) > 0 || !slices.Contains(got.GrantTypes, "client_credentials") {
		t.Errorf("client on the token server: %+v, %v; want client_credentials without jwt-bearer or its trust", got, err)
	}
	if _, err := token(t, ns, "deploy-oauth"); err != nil {
		t.Errorf("the client's other grant: %v", err)
	}

	waitCondition(t, only, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	waitWarning(t, ns, "ci-only", controllers.ReasonDeregistered)
	if _, err := admin.GetClient(ctx, onlyID); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("a client with jwt-bearer alone is still on the token server outside a first-party namespace: %v", err)
	}
}

// A namespace that loses first-party status cannot keep its client's first-party
// rights by breaking the client so that it is never put again without them: here
// the tenant deletes the Secret it provides (spec.secret.create false), which stops
// every push. The client is deleted from the token server instead, and comes back
// without skipConsent and jwt-bearer once the Secret is back.
func TestLostFirstPartyStatusIsNotKeptByBreakingTheClient(t *testing.T) {
	ctx := context.Background()
	platform := tenancyServer(t)
	ns := namespace(t, "tenant-keep", firstPartyLabels)
	_, trust := ciTrust(t)
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "own-creds"},
		Data: map[string][]byte{"client_secret": []byte(strings.Repeat("s", 40))}}
	if err := k8s.Create(ctx, creds); err != nil {
		t.Fatal(err)
	}
	oc := newClient(ns, "deploy", platform, func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{"client_credentials", grantJWTBearer}
		oc.Spec.Secret = oauthv1alpha1.ClientSecret{Name: "own-creds", Create: new(false)}
		trust(oc)
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	id := oc.Status.ClientID
	if got, err := admin.GetClient(ctx, id); err != nil || !got.SkipConsent || !slices.Contains(got.GrantTypes, string(grantJWTBearer)) {
		t.Fatalf("the first-party client on the token server: %+v, %v; want skipConsent and jwt-bearer", got, err)
	}

	if err := k8s.Delete(ctx, creds); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonSecretNotFound)
	setLabels(t, ns, admittedLabels)
	eventually(t, 20*time.Second, "the client that kept first-party rights is gone from the token server", func() bool {
		_, err := admin.GetClient(ctx, id)
		return errors.Is(err, adminapi.ErrNotFound)
	}, func() string {
		got, err := admin.GetClient(ctx, id)
		return fmt.Sprintf("client %s: %+v, %v", id, got, err)
	})
	if note := waitWarning(t, ns, "deploy", controllers.ReasonDeregistered); !strings.Contains(note, "first-party") {
		t.Errorf("the Deregistered event says %q; want it to say the client kept first-party rights", note)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonSecretNotFound)

	creds = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "own-creds"},
		Data: map[string][]byte{"client_secret": []byte(strings.Repeat("s", 40))}}
	if err := k8s.Create(ctx, creds); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	got, err := admin.GetClient(ctx, oc.Status.ClientID)
	if err != nil || got.SkipConsent || slices.Contains(got.GrantTypes, string(grantJWTBearer)) || !slices.Contains(got.GrantTypes, "client_credentials") {
		t.Errorf("the client registered again: %+v, %v; want client_credentials alone, without skipConsent", got, err)
	}
}
