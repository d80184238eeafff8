package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
	mgr, reader := startSecretManager(t, cfg)

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

// The reader's copies are bounded by what exists: a tenant naming in turn, in
// spec.secret.name, Secrets it deletes after each pass (up to the API's 1 MiB each)
// made the operator keep every one of them until it ran out of memory, for every
// tenant. A Secret too large to be credentials is read at each pass, not kept, and
// the copies of Secrets that are gone are dropped once the reader's copies double.
func TestSecretReaderKeepsNoSecretThatIsGoneNorLarge(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(controllers.SetMinPruneAt(4))
	ns := namespace(t, "secret-memo", nil)
	mgr, reader := startSecretManager(t, mgrConfig)
	read := func(name string, data map[string][]byte) types.NamespacedName {
		t.Helper()
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
		if err := k8s.Create(ctx, sec); err != nil {
			t.Fatal(err)
		}
		key := types.NamespacedName{Namespace: ns, Name: name}
		var got corev1.Secret
		eventually(t, 10*time.Second, "the reader reads "+name, func() bool {
			return reader.Get(ctx, key, &got) == nil
		}, nil)
		if len(got.Data) != len(data) {
			t.Fatalf("read %s with %d keys, want %d", name, len(got.Data), len(data))
		}
		return key
	}

	big := read("big", map[string][]byte{"client_secret": bytes.Repeat([]byte("x"), 300<<10)})
	if controllers.RemembersSecret(reader, big) {
		t.Error("the reader keeps a copy of a 300 KiB Secret")
	}
	gone := read("gone", map[string][]byte{"client_secret": []byte("s3cret-0123456789abcdefghijklmnop")})
	if !controllers.RemembersSecret(reader, gone) {
		t.Fatal("the reader keeps no copy of a small Secret: the test no longer shows what it should")
	}
	if err := k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the manager's watch sees the Secret deleted", func() bool {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		return apierrors.IsNotFound(mgr.GetCache().Get(ctx, gone, &m))
	}, nil)
	for i := range 8 {
		read(fmt.Sprintf("next-%d", i), map[string][]byte{"client_secret": []byte("s3cret-0123456789abcdefghijklmnop")})
	}
	if controllers.RemembersSecret(reader, gone) {
		t.Error("the reader still keeps a copy of a Secret deleted eight reads ago")
	}

	// Nor does the metadata cache keep annotations, which anyone may set on the
	// Secrets and ConfigMaps of a watched namespace, 256 KiB each, data or not, nor
	// labels other than the operator's, which have no limit of their own.
	filler := map[string]string{}
	for i := range 2000 {
		filler[fmt.Sprintf("filler-%d", i)] = strings.Repeat("x", 63)
	}
	noted := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "noted",
		Labels:      withLabel(filler, controllers.LabelManagedBy, controllers.ManagedBy),
		Annotations: map[string]string{"filler": strings.Repeat("x", 200<<10)}}}
	if err := k8s.Create(ctx, noted); err != nil {
		t.Fatal(err)
	}
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	eventually(t, 10*time.Second, "the manager's watch has the ConfigMap", func() bool {
		return mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(noted), &m) == nil
	}, nil)
	if len(m.Annotations) != 0 || len(m.Labels) != 1 || m.Labels[controllers.LabelManagedBy] != controllers.ManagedBy {
		t.Errorf("the metadata cache keeps the ConfigMap's %d annotations and %d labels; want none but the operator's label",
			len(m.Annotations), len(m.Labels))
	}

	// A pod that carries the operator's label enters its cache whoever made it:
	// of it the cache keeps what the operator reads, not the tenant's padding.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lookalike",
		Labels:      withLabel(filler, controllers.LabelManagedBy, controllers.ManagedBy),
		Annotations: map[string]string{"filler": strings.Repeat("x", 200<<10)}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/app:1",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090}},
			Env:   []corev1.EnvVar{{Name: "FILLER", Value: strings.Repeat("x", 500<<10)}}}}}}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	var cached corev1.Pod
	eventually(t, 10*time.Second, "the manager's watch has the pod", func() bool {
		return mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(pod), &cached) == nil
	}, nil)
	c := cached.Spec.Containers
	if len(cached.Annotations) != 0 || len(cached.Labels) != 1 || len(c) != 1 || len(c[0].Env) != 0 {
		t.Errorf("the cache keeps the pod's %d annotations, %d labels and %d containers' environment; want none but the operator's label",
			len(cached.Annotations), len(cached.Labels), len(c))
	}
	if len(c) == 1 && (c[0].Image != "example.com/app:1" || len(c[0].Ports) != 1 || c[0].Ports[0].ContainerPort != 9090) {
		t.Errorf("the cached pod's container: %+v; want its image and ports, which the operator reads", c[0])
	}

	// Nor of a Job with the label, whose pod template may be as large: the operator
	// reads its status, name and owner only.
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lookalike",
		Labels: map[string]string{controllers.LabelManagedBy: controllers.ManagedBy}},
		Spec: batchv1.JobSpec{Suspend: new(true), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "example.com/app:1",
				Env: []corev1.EnvVar{{Name: "FILLER", Value: strings.Repeat("x", 500<<10)}}}}}}}}
	if err := k8s.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	var cachedJob batchv1.Job
	eventually(t, 10*time.Second, "the manager's watch has the Job", func() bool {
		return mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(job), &cachedJob) == nil
	}, nil)
	if len(cachedJob.Spec.Template.Spec.Containers) != 0 {
		t.Errorf("the cache keeps the Job's pod template (%d containers)", len(cachedJob.Spec.Template.Spec.Containers))
	}
}

// withLabel is l with k=v added, in a copy.
func withLabel(l map[string]string, k, v string) map[string]string {
	out := maps.Clone(l)
	out[k] = v
	return out
}

// startSecretManager runs a manager on cfg with the operator's cache and client
// settings, until the test ends, and returns it with its SecretReader.
func startSecretManager(t *testing.T, cfg *rest.Config) (ctrl.Manager, *controllers.SecretReader) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: mgrScheme, HealthProbeBindAddress: "0",
		Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(nil), Client: controllers.ClientOptions()})
	if err != nil {
		t.Fatal(err)
	}
	reader := controllers.SecretReaderFor(mgr)
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return mgr, reader
}
