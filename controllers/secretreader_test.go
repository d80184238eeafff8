package controllers_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kubeoauth/kubeoauth/controllers"
)

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// An unchanged Secret is read from the API server once: what tells the reconcilers
// that it is unchanged (its resourceVersion) comes from the manager's watch, not from
// a GET on every pass. 10,000 OAuthClients made two such GETs a pass each.
func TestSecretReaderGetsAnUnchangedSecretOnce(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "secret-reader", nil)
	path := "/api/v1/namespaces/" + ns + "/secrets/app"
	var gets atomic.Int64
	cfg := rest.CopyConfig(mgrConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && r.URL.Path == path {
				gets.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: mgrScheme, HealthProbeBindAddress: "0",
		Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(nil), Client: controllers.ClientOptions()})
	if err != nil {
		t.Fatal(err)
	}
	reader := controllers.SecretReaderFor(mgr)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Data: map[string][]byte{"client_secret": []byte("s3cret")}}
	if err := k8s.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: "app"}
	eventually(t, 10*time.Second, "the manager's watch has the Secret", func() bool {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		return mgr.GetCache().Get(ctx, key, &m) == nil && m.ResourceVersion == sec.ResourceVersion
	}, nil)
	for range 3 {
		var got corev1.Secret
		if err := reader.Get(ctx, key, &got); err != nil {
			t.Fatal(err)
		}
		if string(got.Data["client_secret"]) != "s3cret" {
			t.Fatalf("client_secret = %q", got.Data["client_secret"])
		}
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("three reads of an unchanged Secret made %d GETs of it at the API server, want 1", n)
	}
}
