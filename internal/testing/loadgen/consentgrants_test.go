package loadgen_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/testing/loadgen"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// The grant cycles as the upgrade tests run them: ConsentGrants through a real
// kube-apiserver, put on and revoked from a real token server by the operator's
// controllers, with every client an OAuthClient whose credentials come from its
// Secret. Deleting a ConsentGrant must revoke its tokens: all zeros.
func TestConsentGrantCyclesThroughTheOperator(t *testing.T) {
	ctx := t.Context()
	kube := operator(t)
	s := serve(t)

	ns := "platform"
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"first-party": "true"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
			StringData: map[string]string{"token": env.AdminToken}},
		&oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
			Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(s.URL),
				FirstPartyNamespaces: &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{
					MatchLabels: map[string]string{"first-party": "true"}}},
				External: &oauthv1alpha1.ExternalTokenServer{AdminURL: s.Admin.BaseURL, Insecure: true,
					TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}},
	} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	redirect := "http://127.0.0.1:9/callback"
	oauthClient := func(name string, grants []oauthv1alpha1.GrantType, scopes []oauthv1alpha1.Scope, skip bool) loadgen.Client {
		oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: name,
				GrantTypes: grants, Scopes: scopes, SkipConsent: skip}}
		if grants[0] == "authorization_code" {
			oc.Spec.RedirectURIs = []oauthv1alpha1.URL{oauthv1alpha1.URL(redirect)}
		}
		if err := kube.Create(ctx, oc); err != nil {
			t.Fatal(err)
		}
		waitFor(t, kube, oc, func() bool {
			c := findCondition(oc.Status.Conditions, oauthv1alpha1.ConditionReady)
			return c != nil && c.Status == metav1.ConditionTrue && oc.Status.SecretName != ""
		})
		var sec corev1.Secret
		if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: oc.Status.SecretName}, &sec); err != nil {
			t.Fatal(err)
		}
		scope := ""
		for i, sc := range scopes {
			if i > 0 {
				scope += " "
			}
			scope += string(sc)
		}
		return loadgen.Client{ID: string(sec.Data["client_id"]), Secret: string(sec.Data["client_secret"]), Scope: scope, RedirectURI: redirect}
	}
	code := []oauthv1alpha1.GrantType{"authorization_code", "refresh_token"}
	user := []oauthv1alpha1.Scope{"openid", "offline_access"}
	cfg := loadgen.Config{
		URLs:          []string{s.URL},
		Machine:       oauthClient("machine", []oauthv1alpha1.GrantType{"client_credentials"}, []oauthv1alpha1.Scope{"zones.read"}, false),
		ChainClient:   oauthClient("web", code, user, true),
		ChainUsers:    []loadgen.User{{Name: "alice", Password: users["alice"]}},
		Chains:        2,
		Grants:        loadgen.ConsentGrants{Client: kube, Namespace: ns, OAuthClient: "partner"},
		GrantClient:   oauthClient("partner", code, user, false),
		GrantUsers:    []loadgen.User{{Name: "bob", Password: users["bob"]}, {Name: "carol", Password: users["carol"]}},
		GrantInterval: 200 * time.Millisecond,
		// The grant cycles are the point; the rest is background.
		Rate:               40,
		RefreshGracePeriod: grace,
	}
	g, err := loadgen.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	waitCount(t, g, 4, func(r loadgen.Request) bool { return r.Kind == loadgen.GrantDelete && r.Err == "" })
	g.Stop()
	rep, err := g.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("grant cycles through the operator failed the ledger: %v", f)
	}
	if rep.GrantsDeleted < 4 || rep.Kinds[loadgen.CheckUserinfo] == nil {
		t.Errorf("%d grants deleted, userinfo checks %+v", rep.GrantsDeleted, rep.Kinds[loadgen.CheckUserinfo])
	}
}

// operator starts a kube-apiserver with the CRDs and the operator's controllers,
// and returns a client of it.
func operator(t *testing.T) client.Client {
	t.Helper()
	kenv, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kenv.Stop() })
	ctrl.SetLogger(zap.New(zap.WriteTo(t.Output())))
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(kenv.Config, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0", Cache: controllers.CacheOptions(nil), Client: controllers.ClientOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, controllers.Options{ClientResync: time.Minute, ServerHealthInterval: time.Second,
		MirrorPoll: time.Second, ExternalAdminAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	kube, err := client.New(kenv.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

func waitFor(t *testing.T, kube client.Client, obj client.Object, ok func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err
		}
		return ok(), nil
	})
	if err != nil {
		t.Fatalf("%s %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
	}
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}
