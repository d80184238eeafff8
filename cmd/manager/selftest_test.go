package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/crdschema"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// `manager self-test` (the chart's helm test) fails, naming the Lease, while no
// operator leads, and passes once one does; it checks the CRDs are served.
func TestSelfTestNeedsALeadingOperator(t *testing.T) {
	env, path := apiServerWithKubeconfig(t)
	c, err := client.New(env.Config, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-system"}}); err != nil {
		t.Fatal(err)
	}
	cfg := func() (*rest.Config, error) { return env.Config, nil }
	var out bytes.Buffer
	err = selfTest(t.Context(), []string{"--namespace", "kubeoauth-system"}, cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "no operator leads") || !strings.Contains(err.Error(), "manager.kubeoauth.io") {
		t.Errorf("self-test without an operator: %v, want no operator leads naming the Lease", err)
	}
	if !strings.Contains(out.String(), "ok: CRD tokenservers.oauth.kubeoauth.io established") {
		t.Errorf("self-test did not check the CRDs:\n%s", out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--kubeconfig", path, "--health-probe-bind-address", "0", "--metrics-bind-address", "0",
			"--leader-elect", "--leader-election-namespace", "kubeoauth-system"}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out.Reset()
		if err = selfTest(t.Context(), []string{"--namespace", "kubeoauth-system"}, cfg, &out); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("manager exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("self-test with a leading operator: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "leads (Lease kubeoauth-system/manager.kubeoauth.io") {
		t.Errorf("self-test output:\n%s", out.String())
	}
	// A second release's self-test: the Lease of that name is held by this
	// operator, not by a pod of the release under test.
	if err := selfTest(t.Context(), []string{"--namespace", "kubeoauth-system", "--holder-prefix", "team-b-kubeoauth-manager-"},
		cfg, &out); err == nil || !strings.Contains(err.Error(), "not by a pod of this release") {
		t.Errorf("self-test of another release sharing the Lease: %v, want a failure naming the holder", err)
	}
	if err := selfTest(t.Context(), nil, cfg, &out); err == nil || !strings.Contains(err.Error(), "--namespace") {
		t.Errorf("self-test without --namespace: %v", err)
	}
}

// The digests self-test compares served CRDs with are those of config/crd/bases as
// they are now: `make generate` (go generate ./cmd/manager) was run after the last
// change of the API types, so an operator built from this tree does not call its own
// CRDs stale.
func TestCRDSchemaDigestsAreCurrent(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", "*.yaml"))
	if err != nil || len(files) != len(crdNames) {
		t.Fatalf("CRDs in config/crd/bases: %v, %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f) // #nosec G304 -- the repository's CRDs
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		name, _, _ := unstructured.NestedString(crd, "metadata", "name")
		if got, err := crdschema.Digest(crd); err != nil || got != crdSchemaDigests[name] {
			t.Errorf("CRD %s: digest %s (%v), compiled in %q: run make generate", name, got, err, crdSchemaDigests[name])
		}
	}
}
