package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// The operator's /metrics carries each TokenServer's conditions as the object has
// them, which the chart's alerts (an upgrade stuck or rolled back, a server stalled)
// read.
func TestManagerExportsTokenServerConditions(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(env.Config, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "platform"}}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "oauth_v1alpha1_tokenserver.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{}
	if err := yaml.Unmarshal(data, ts); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}

	metrics := freeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--health-probe-bind-address", "0", "--metrics-bind-address", metrics},
			func() (*rest.Config, error) { return env.Config, nil })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The operator sets the conditions (here: waiting for the users Secret and the
	// database); poll until a scrape shows those the object has.
	var want []string
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("manager exited early: %v", err)
		default:
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
			t.Fatal(err)
		}
		want = want[:0]
		for _, cond := range ts.Status.Conditions {
			want = append(want, fmt.Sprintf(`kubeoauth_tokenserver_condition{name="auth",namespace="platform",reason=%q,status=%q,type=%q} 1`,
				cond.Reason, cond.Status, cond.Type))
		}
		last = scrape(t, "http://"+metrics+"/metrics")
		if len(want) > 0 && containsAll(last, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics never showed the TokenServer's conditions %v:\n%s", want, grepLines(last, "kubeoauth_tokenserver_condition{"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(last, "kubeoauth_tokenserver_condition{"); n != len(want) {
		t.Errorf("%d condition series, the object has %d conditions:\n%s", n, len(want), grepLines(last, "kubeoauth_tokenserver_condition{"))
	}
	if !strings.Contains(last, "kubeoauth_tokenserver_condition_last_transition_seconds{") {
		t.Error("no kubeoauth_tokenserver_condition_last_transition_seconds")
	}

	// OAuthClients that need a person are counted, by namespace and reason: two
	// in a namespace the TokenServer does not admit.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"one", "two"} {
		if err := c.Create(ctx, &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: name},
			Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Namespace: "platform", Name: "auth"},
				ClientName: "App", GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"}}}); err != nil {
			t.Fatal(err)
		}
	}
	const stalled = `kubeoauth_stalled_resources{kind="OAuthClient",namespace="tenant",reason="NamespaceNotAllowed"} 2`
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if last = scrape(t, "http://"+metrics+"/metrics"); strings.Contains(last, stalled) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics never counted the two stalled OAuthClients (%s):\n%s", stalled, grepLines(last, "kubeoauth_stalled_resources"))
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) //nolint:gosec // a URL built by the test
	if err != nil {
		return err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(oauthv1alpha1.AddToScheme(s))
	return s
}
