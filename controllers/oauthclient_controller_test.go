package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// newClient is a client_credentials OAuthClient of the TokenServer "auth" in serverNS.
func newClient(ns, name, serverNS string, mutate func(*oauthv1alpha1.OAuthClient)) *oauthv1alpha1.OAuthClient {
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: serverNS},
			ClientName: "Client " + name, GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"},
			Scopes: []oauthv1alpha1.Scope{"zones.read"}}}
	if mutate != nil {
		mutate(oc)
	}
	return oc
}

// token uses the credentials Secret the way an app does.
func token(t *testing.T, ns, secretName string) (string, error) {
	t.Helper()
	var sec corev1.Secret
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: secretName}, &sec); err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: string(sec.Data["client_id"]), ClientSecret: string(sec.Data["client_secret"]),
		TokenURL: string(sec.Data["token_url"])}
	tok, err := cc.Token(context.Background())
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

func active(t *testing.T, tok string) bool {
	t.Helper()
	// Introspect as a client of our own.
	ctx := context.Background()
	_, err := admin.PutClient(ctx, &adminapi.Client{ID: "introspector", Secret: "introspector-secret-0123456789abcdef",
		ClientMetadata: adminapi.ClientMetadata{Name: "Introspector", GrantTypes: []string{"client_credentials"},
			TokenEndpointAuthMethod: "client_secret_basic"}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/oauth2/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("introspector", "introspector-secret-0123456789abcdef")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Active bool `json:"active"`
	}
	if err := jsonDecode(resp, &body); err != nil {
		t.Fatal(err)
	}
	return body.Active
}

// An OAuthClient becomes a working client: Ready, credentials in a Secret that work
// against the token server, every change pushed, and deletion revoking its tokens.
func TestOAuthClientLifecycle(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	oc := newClient(ns, "grafana", "", nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonSynced)
	if oc.Status.ClientID == "" || oc.Status.SecretName != "grafana-oauth" || oc.Status.ObservedGeneration != oc.Generation {
		t.Errorf("status = %+v", oc.Status)
	}
	tok, err := token(t, ns, "grafana-oauth")
	if err != nil {
		t.Fatalf("the generated credentials do not work: %v", err)
	}
	got, err := admin.GetClient(ctx, oc.Status.ClientID)
	if err != nil || got.OwnerNamespace != ns || got.Name != "Client grafana" {
		t.Errorf("on the token server: %+v, %v", got, err)
	}

	// A change is pushed.
	oc.Spec.Scopes = append(oc.Spec.Scopes, "zones.write")
	if err := k8s.Update(ctx, oc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new scope reaches the token server", func() bool {
		got, err := admin.GetClient(ctx, oc.Status.ClientID)
		return err == nil && len(got.Scopes) == 2
	}, nil)

	// Delete: the client leaves the token server and its tokens die before the
	// resource goes.
	if err := k8s.Delete(ctx, oc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the OAuthClient is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(oc), &oauthv1alpha1.OAuthClient{}))
	}, nil)
	if _, err := admin.GetClient(ctx, oc.Status.ClientID); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("client still on the token server after delete: %v", err)
	}
	if active(t, tok) {
		t.Error("a token of the deleted client is still active")
	}
}

// A client from a namespace the TokenServer does not admit is refused and nothing is
// pushed; skipConsent counts only in first-party namespaces.
func TestNamespacePolicies(t *testing.T) {
	ctx := context.Background()
	platform := namespace(t, "platform", nil)
	externalServer(t, platform, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.ClientNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"oauth.kubeoauth.io/clients": "allowed"}}}
		ts.Spec.FirstPartyNamespaces = &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
			MatchLabels: map[string]string{"oauth.kubeoauth.io/first-party": "true"}}}
	})
	rogueNS := namespace(t, "rogue", nil)
	appsNS := namespace(t, "apps", map[string]string{"oauth.kubeoauth.io/clients": "allowed"})

	rogue := newClient(rogueNS, "phish", platform, nil)
	if err := k8s.Create(ctx, rogue); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, rogue, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonNamespaceNotAllowed)
	if _, err := admin.GetClient(ctx, clientspec.ClientID(rogue)); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("a refused client reached the token server: %v", err)
	}
	if rogue.Status.ClientID != "" {
		t.Errorf("a refused client got a client ID: %q", rogue.Status.ClientID)
	}

	app := newClient(appsNS, "wiki", platform, func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.SkipConsent = true })
	if err := k8s.Create(ctx, app); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, app, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	waitCondition(t, app, controllers.ConditionSkipConsent, metav1.ConditionFalse, controllers.ReasonNotFirstParty)
	got, err := admin.GetClient(ctx, app.Status.ClientID)
	if err != nil || got.SkipConsent || got.OwnerNamespace != appsNS {
		t.Errorf("on the token server: %+v, %v; want skipConsent dropped, owner apps-poli", got, err)
	}
}

// With secret.create false the operator waits for the user's Secret, invents nothing,
// and re-syncs when the Secret appears or changes.
func TestUserSecret(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	no := false
	oc := newClient(ns, "vault", "", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.Secret = oauthv1alpha1.ClientSecret{Name: "vault-creds", Create: &no}
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonSecretNotFound)
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "vault-creds"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the operator invented the user's Secret: %v", err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vault-creds"},
		StringData: map[string]string{"client_secret": "from-external-secrets-0123456789abcdef"}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	check := func(secret string) bool {
		cc := clientcredentials.Config{ClientID: oc.Status.ClientID, ClientSecret: secret, TokenURL: issuer + "/oauth2/token"}
		_, err := cc.Token(ctx)
		return err == nil
	}
	if !check("from-external-secrets-0123456789abcdef") {
		t.Fatal("the user's secret does not work")
	}
	// The user rotates the Secret: the token server follows.
	sec.StringData = map[string]string{"client_secret": "rotated-by-the-user-0123456789abcdef"}
	if err := k8s.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rotated secret works and the old one does not", func() bool {
		return check("rotated-by-the-user-0123456789abcdef") && !check("from-external-secrets-0123456789abcdef")
	}, nil)
}

// GitOps: delete everything and re-apply it: the same client IDs, working
// credentials; and an unchanged client's resync writes nothing, while drift in the
// token server is repaired.
func TestGitOpsRoundTripDriftAndQuietResync(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	apply := func() *oauthv1alpha1.OAuthClient {
		oc := newClient(ns, "argo", "", nil)
		if err := k8s.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
		return oc
	}
	first := apply()
	id := first.Status.ClientID

	// Quiet resync: several resync periods pass without a write.
	var sec corev1.Secret
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "argo-oauth"}, &sec); err != nil {
		t.Fatal(err)
	}
	onServer, _ := admin.GetClient(ctx, id)
	time.Sleep(4 * resyncEvery)
	var again oauthv1alpha1.OAuthClient
	var secAgain corev1.Secret
	_ = k8s.Get(ctx, client.ObjectKeyFromObject(first), &again)
	_ = k8s.Get(ctx, client.ObjectKeyFromObject(&sec), &secAgain)
	if again.ResourceVersion != first.ResourceVersion || secAgain.ResourceVersion != sec.ResourceVersion {
		t.Errorf("resync of an unchanged client wrote to the API server (OAuthClient %s→%s, Secret %s→%s)",
			first.ResourceVersion, again.ResourceVersion, sec.ResourceVersion, secAgain.ResourceVersion)
	}
	if now, _ := admin.GetClient(ctx, id); !now.UpdatedAt.Equal(onServer.UpdatedAt) {
		t.Errorf("resync changed the client on the token server (updated %v→%v)", onServer.UpdatedAt, now.UpdatedAt)
	}

	// The first registration is told by Ready alone: no event (each is a write to the
	// API server, and thousands of clients are applied at once).
	if seen := clientEvents(t, ns, "argo"); len(seen) > 0 {
		t.Errorf("events on a client that registered and went Ready: %q", seen)
	}

	// Drift: someone deletes the client in the token server; the next resync restores
	// it and says so.
	if err := admin.DeleteClient(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the deleted client is restored", func() bool {
		_, err := admin.GetClient(ctx, id)
		return err == nil
	}, nil)
	eventually(t, 10*time.Second, "a Normal Synced event for the repaired drift", func() bool {
		return slices.Contains(clientEvents(t, ns, "argo"), "Normal Synced")
	}, func() string { return fmt.Sprintf("events: %q", clientEvents(t, ns, "argo")) })
	if _, err := token(t, ns, "argo-oauth"); err != nil {
		t.Errorf("credentials after drift repair: %v", err)
	}

	// Round trip: delete, re-apply, same ID, working credentials.
	if err := k8s.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "deleted", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(first), &oauthv1alpha1.OAuthClient{}))
	}, nil)
	second := apply()
	if second.Status.ClientID != id {
		t.Errorf("client ID after re-apply = %s, want %s", second.Status.ClientID, id)
	}
	if _, err := token(t, ns, "argo-oauth"); err != nil {
		t.Errorf("credentials after re-apply: %v", err)
	}
}

// Secret rotation: a new secret on schedule, the previous one still accepted during
// the overlap, then refused. The operator's clock is moved by hand: no real timer.
func TestSecretRotation(t *testing.T) {
	ctx := context.Background()
	advance := advanceOperatorClock(t)
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	oc := newClient(ns, "rotor", "", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.Secret.Rotation = &oauthv1alpha1.SecretRotation{Every: "10m", Overlap: "5m"}
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	secretNow := func() (string, string) {
		var sec corev1.Secret
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rotor-oauth"}, &sec); err != nil {
			t.Fatal(err)
		}
		return string(sec.Data["client_secret"]), string(sec.Data["previous_client_secret"])
	}
	works := func(secret string) bool {
		cc := clientcredentials.Config{ClientID: oc.Status.ClientID, ClientSecret: secret, TokenURL: issuer + "/oauth2/token"}
		_, err := cc.Token(ctx)
		return err == nil
	}
	first, _ := secretNow()
	if !works(first) {
		t.Fatal("the first secret does not work")
	}

	// The exact moments (a second early, overdue, overlap ends) are
	// clientspec.PlanRotation's table test; this is the operator acting on them.
	advance(10 * time.Minute)
	rotationTime := operatorClock.Now().UTC().Truncate(time.Second).Format(time.RFC3339)
	poke(t, oc)
	var second string
	eventually(t, 10*time.Second, "the secret rotates", func() bool {
		var prev string
		second, prev = secretNow()
		return second != first && prev == first
	}, func() string {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc)
		var sec corev1.Secret
		_ = k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rotor-oauth"}, &sec)
		return fmt.Sprintf("status %+v\nfirst %s\nsecret %s prev %s ann %v created %v rv %s", oc.Status, first,
			sec.Data["client_secret"], sec.Data["previous_client_secret"], sec.Annotations, sec.CreationTimestamp, sec.ResourceVersion)
	})
	eventually(t, 5*time.Second, "the new secret works", func() bool { return works(second) }, nil)
	if !works(first) {
		t.Error("the previous secret stopped working before the overlap ended")
	}
	var sec corev1.Secret
	get(t, ns, "rotor-oauth", &sec)
	if got := sec.Annotations[clientspec.AnnotationRotatedAt]; got != rotationTime {
		t.Errorf("Secret says rotated at %s, want the operator's clock's %s", got, rotationTime)
	}

	// The overlap ends: the previous secret is dropped from the Secret and refused.
	advance(5*time.Minute + time.Second)
	poke(t, oc)
	eventually(t, 10*time.Second, "the previous secret is refused after the overlap", func() bool {
		_, prev := secretNow()
		return !works(first) && prev == ""
	}, nil)
	if !works(second) {
		t.Error("the current secret stopped working")
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(oc), oc); err != nil || oc.Status.SecretRotatedAt == nil {
		t.Errorf("status.secretRotatedAt = %v (%v)", oc.Status.SecretRotatedAt, err)
	}
}

// putBlocker is the token server's admin API behind a reverse proxy that can refuse
// client PUTs (503) while everything else, health included, goes through: a token
// server that fails the write a rotation needs while the TokenServer stays Ready.
type putBlocker struct {
	mu      sync.Mutex
	blocked bool
	refused []adminapi.Client // the bodies of the PUTs it refused
}

func (b *putBlocker) block(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blocked = on
}

// refusedOtherThan says whether it refused a PUT of a secret other than secret.
func (b *putBlocker) refusedOtherThan(secret string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.refused {
		if c.Secret != secret {
			return true
		}
	}
	return false
}

func newPutBlocker(t *testing.T) (*putBlocker, string) {
	target, err := url.Parse(admin.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	b := &putBlocker{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		blocked := b.blocked
		b.mu.Unlock()
		if blocked && r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/admin/clients/") {
			var c adminapi.Client
			_ = json.NewDecoder(r.Body).Decode(&c)
			b.mu.Lock()
			b.refused = append(b.refused, c)
			b.mu.Unlock()
			http.Error(w, `{"error": "database unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return b, srv.URL
}

// A rotation that falls while the token server cannot take the new secret leaves the
// Secret as it is: apps never hold a secret the server does not know. When the server
// is back, the rotation happens, with the old secret still accepted for the overlap.
func TestSecretRotationDuringServerOutage(t *testing.T) {
	ctx := context.Background()
	advance := advanceOperatorClock(t)
	blocker, adminURL := newPutBlocker(t)
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, func(ts *oauthv1alpha1.TokenServer) { ts.Spec.External.AdminURL = adminURL })
	oc := newClient(ns, "rotor", "", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.Secret.Rotation = &oauthv1alpha1.SecretRotation{Every: "10m", Overlap: "5m"}
	})
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	inSecret := func() string {
		var sec corev1.Secret
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rotor-oauth"}, &sec); err != nil {
			t.Fatal(err)
		}
		return string(sec.Data["client_secret"])
	}
	works := func(secret string) bool {
		cc := clientcredentials.Config{ClientID: oc.Status.ClientID, ClientSecret: secret, TokenURL: issuer + "/oauth2/token"}
		_, err := cc.Token(ctx)
		return err == nil
	}
	blocker.block(true)
	// A rotation falls due while the server refuses: the refused PUT carries a new
	// secret, and the Secret must still hold the one the server knows.
	advance(10 * time.Minute)
	poke(t, oc)
	var current string
	eventually(t, 10*time.Second, "a rotation refused by the token server", func() bool {
		current = inSecret()
		return blocker.refusedOtherThan(current)
	}, func() string { return "the Secret holds every secret the server was refused: it was written first" })
	if !works(current) {
		t.Fatal("after a refused rotation the Secret holds a secret the token server does not accept")
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionFalse, controllers.ReasonSyncFailed)
	if inSecret() != current || !works(current) {
		t.Fatal("the Secret changed while the token server refused the new secret")
	}

	blocker.block(false)
	poke(t, oc)
	eventually(t, 10*time.Second, "the rotation goes through once the server is back", func() bool {
		return inSecret() != current
	}, nil)
	if next := inSecret(); !works(next) {
		t.Error("the secret rotated in after the outage does not work")
	}
}

// clientEvents lists the "type reason" of the events regarding ns/name, as `kubectl
// events --for` shows them.
func clientEvents(t *testing.T, ns, name string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Type+" "+e.Reason)
		}
	}
	return out
}
