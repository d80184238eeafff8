package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// With --metrics-secure, /metrics answers over HTTPS only to a bearer token the API
// server authenticates whose user may GET /metrics: no token is 401 (a
// malformed one 500), a service account without that permission 403, one bound to it reads the metrics.
func TestManagerMetricsNeedAnAuthorizedToken(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	token := func(name string) string {
		t.Helper()
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		if err := c.Create(ctx, sa); err != nil {
			t.Fatal(err)
		}
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}}
		if err := c.SubResource("token").Create(ctx, sa, req); err != nil {
			t.Fatal(err)
		}
		return req.Status.Token
	}
	scraper, stranger := token("prometheus"), token("stranger")
	reader := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "default"}}}
	for _, o := range []client.Object{reader, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	metrics := freeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--health-probe-bind-address", "0", "--metrics-bind-address", metrics, "--metrics-secure"},
			func() (*rest.Config, error) { return env.Config, nil })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The certificate is self-signed: a scraper skips its verification (or is given
	// one with --metrics-cert-dir); what matters here is who gets an answer.
	httpc := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // #nosec G402 -- see above
	get := func(bearer string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metrics+"/metrics", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// Poll until the server is up (it answers with any status).
	deadline := time.Now().Add(30 * time.Second)
	for code, _ := get(""); code == 0; code, _ = get("") {
		select {
		case err := <-done:
			t.Fatalf("manager exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the metrics server never answered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d %.200s, want 401", code, body)
	}
	// controller-runtime's filter answers 500 when the TokenReview carries an error, as
	// it does for a token that is no JWT: refused all the same.
	if code, body := get("not-a-token"); code != http.StatusUnauthorized && code != http.StatusInternalServerError {
		t.Errorf("with a bad token: %d %.200s, want 401 or 500", code, body)
	}
	if code, body := get(stranger); code != http.StatusForbidden {
		t.Errorf("a service account without GET /metrics: %d %.200s, want 403", code, body)
	}
	if code, body := get(scraper); code != http.StatusOK || !strings.Contains(body, "rest_client_requests_total") {
		t.Errorf("the metrics reader: %d %.200s, want 200 and the metrics", code, body)
	}
	plain, err := httpc.Get("http://" + metrics + "/metrics")
	if err == nil {
		_ = plain.Body.Close()
		if plain.StatusCode == http.StatusOK {
			t.Error("/metrics answers over plain HTTP")
		}
	}
}
