package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// Each test starts its own manager in this one process.
func init() { controllerConfig.SkipNameValidation = ptr.To(true) }

// The manager starts against a real API server, serves its probes and metrics, and
// stops cleanly when its context ends (what SIGTERM does).
func TestManagerServesProbesAndStops(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	probe, metrics := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--health-probe-bind-address", probe, "--metrics-bind-address", metrics,
			"--watch-namespaces", "platform, observability"},
			func() (*rest.Config, error) { return env.Config, nil })
	}()

	for _, path := range []string{probe + "/healthz", probe + "/readyz"} {
		if body := waitFor(t, done, "http://"+path); !strings.Contains(body, "ok") {
			t.Errorf("GET %s = %q, want ok", path, body)
		}
	}
	if body := waitFor(t, done, "http://"+metrics+"/metrics"); !strings.Contains(body, "rest_client_requests_total") {
		t.Errorf("/metrics lacks controller-runtime's client metrics:\n%.500s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager returned %v after its context ended", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop within 30s of its context ending")
	}
}

// `make run` runs the manager against a kubeconfig: it reconciles there. Here the
// kubeconfig comes from --kubeconfig, and the default loader would fail.
func TestManagerRunsAgainstAKubeconfig(t *testing.T) {
	env, path := apiServerWithKubeconfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", path, "--health-probe-bind-address", "0", "--metrics-bind-address", "0"},
			func() (*rest.Config, error) { return nil, errors.New("the default loader must not be used") })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("manager: %v", err)
		}
	})

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctxb := context.Background()
	if err := c.Create(ctxb, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "platform"}}); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "https://auth.example.com", External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: "https://127.0.0.1:1", TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "missing"}}}}
	if err := c.Create(ctxb, ts); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("manager exited: %v", err)
		default:
		}
		if err := c.Get(ctxb, client.ObjectKeyFromObject(ts), ts); err != nil {
			t.Fatal(err)
		}
		if ready := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady); ready != nil {
			if ready.Status != metav1.ConditionFalse || !strings.Contains(ready.Message, "missing") {
				t.Errorf("Ready = %+v, want False naming the missing admin token Secret", ready)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the manager never reconciled the TokenServer")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBadFlagIsRefused(t *testing.T) {
	err := run(context.Background(), []string{"--kube-api-qps", "fast"}, nil)
	if err == nil || !strings.Contains(err.Error(), "kube-api-qps") {
		t.Fatalf("run with --kube-api-qps=fast: err = %v, want one naming the flag", err)
	}
}

func TestNamespaces(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
	}{
		"empty watches all": {in: "", want: nil},
		"one":               {in: "platform", want: []string{"platform"}},
		"spaces and blanks": {in: " a, ,b ,", want: []string{"a", "b"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := namespaces(tt.in)
			if len(got) != len(tt.want) || (tt.want == nil) != (got == nil) {
				t.Fatalf("namespaces(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for _, ns := range tt.want {
				if _, ok := got[ns]; !ok {
					t.Errorf("namespaces(%q) lacks %q: %v", tt.in, ns, got)
				}
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// waitFor polls url until it answers 200 and returns the body; it fails the test if the
// manager exits first.
func waitFor(t *testing.T, done <-chan error, url string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("manager exited early: %v", err)
		default:
		}
		resp, err := http.Get(url) //nolint:gosec // a URL built by the test
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(body)
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s never answered 200; last: %s", url, last)
	return ""
}

// A manager that stops (its pod deleted) hands its leader lease over: the Lease no
// longer names a holder, so the next pod leads at once instead of after the lease
// expires, which would hold an upgrade in progress that long.
func TestManagerReleasesItsLeaseOnStop(t *testing.T) {
	env, path := apiServerWithKubeconfig(t)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-system"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", path, "--health-probe-bind-address", "0", "--metrics-bind-address", "0",
			"--leader-elect", "--leader-election-namespace", "kubeoauth-system"}, nil)
	}()
	key := client.ObjectKey{Namespace: "kubeoauth-system", Name: "manager.kubeoauth.io"}
	var lease coordinationv1.Lease
	deadline := time.Now().Add(30 * time.Second)
	for c.Get(t.Context(), key, &lease) != nil || ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
		if time.Now().After(deadline) {
			t.Fatal("the manager never took the lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("manager: %v", err)
	}
	if err := c.Get(t.Context(), key, &lease); err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "" {
		t.Errorf("after the manager stopped, the lease is still held by %q", h)
	}
}

// apiServerWithKubeconfig starts a kube-apiserver for the test and writes a
// kubeconfig for it, as `make run` is given one.
func apiServerWithKubeconfig(t *testing.T) (*testenv.Env, string) {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	return env, path
}
