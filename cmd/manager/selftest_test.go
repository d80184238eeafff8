package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
