//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/localcluster"
)

// previousChart is the last released chart, kept as it shipped (testdata/README.md).
const previousChart = "test/e2e/testdata/kubeoauth-0.1.0"

// A platform team that installed the previous chart upgrades to this one as
// docs/install.md says: the CRDs come out with the new schema and belong to the
// release, what ran before keeps running (its resources Ready, its tokens active), a
// new client works and `helm test` passes.
//
// It runs after HelmUninstallLeavesOnlyWhatIsDocumented, on a cluster with no release
// and no kubeoauth resource; it leaves its release installed, for the uninstall
// scenarios that follow.
func testChartUpgrade(t *testing.T) {
	ctx := t.Context()
	if out, err := helm(t, "status", "kubeoauth", "-n", "kubeoauth-system"); err == nil {
		t.Fatalf("a kubeoauth release is installed; this scenario runs after HelmUninstallLeavesOnlyWhatIsDocumented:\n%s", out)
	}
	// The uninstall kept the CRDs (crds.keep); a cluster that ran the previous chart
	// has that chart's, which it installed from crds/.
	if _, err := kubectl(ctx, append([]string{"delete", "crd", "--wait"}, crdNames...)...); err != nil {
		t.Fatal(err)
	}
	mustHelm(t, "install", "kubeoauth", previousChart, "-n", "kubeoauth-system", "--wait", "--timeout", "3m")
	if out := mustKubectl(t, "get", "crd", crdNames[2], "-o", "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}"); out != "" {
		t.Fatalf("the previous chart's CRDs belong to release %q: the fixture is not the chart that installed them from crds/", out)
	}

	const ns = "chart-upgrade"
	issuer := forwardService(t, ns, "auth")
	nsSel := metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: imageV1, Replicas: ptr.To[int32](1),
			Database:         &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("1Gi")}},
			ClientNamespaces: &oauthv1alpha1.NamespacePolicy{Selector: nsSel}}}
	smallPods(ts)
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
		ts,
	} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	waitTokenServerReady(t, ts, 4*time.Minute)
	before := machineClient(t, ns, "before")
	tok, err := before.Token(ctx)
	if err != nil {
		t.Fatalf("a token from the previous chart's operator: %v", err)
	}
	if !introspectAt(t, issuer, before, tok.AccessToken) {
		t.Fatal("the token is not active before the upgrade")
	}
	// The field the new CRD adds, on the old one: dropped, with a warning. This is
	// what a stale CRD does to a user's spec, and what the upgrade must end.
	if kept, warned, err := devicePollInterval(t, ns, "7s"); err != nil || kept != "" ||
		!strings.Contains(warned, `unknown field "spec.tokens.devicePollInterval"`) {
		t.Fatalf("spec.tokens.devicePollInterval on the previous chart's CRD: kept %q, said %q (%v); want it dropped as unknown",
			kept, warned, err)
	}

	// The upgrade, as docs/install.md ("Upgrading") says, and its check.
	mustHelm(t, "upgrade", "kubeoauth", "charts/kubeoauth", "-n", "kubeoauth-system", "--take-ownership")
	mustKubectl(t, "-n", "kubeoauth-system", "rollout", "status", "deploy/kubeoauth-manager", "--timeout=2m")
	if out := mustHelm(t, "list", "-n", "kubeoauth-system", "-o", "json"); !strings.Contains(out, `"chart":"kubeoauth-`+chartVersion(t)+`"`) {
		t.Errorf("helm list after the upgrade: %s, want chart kubeoauth-%s", out, chartVersion(t))
	}
	for _, name := range crdNames {
		out := mustKubectl(t, "get", "crd", name, "-o",
			`jsonpath={.metadata.labels.app\.kubernetes\.io/managed-by} {.metadata.annotations.meta\.helm\.sh/release-name} {.metadata.annotations.helm\.sh/resource-policy}`)
		if out != "Helm kubeoauth keep" {
			t.Errorf("CRD %s after the upgrade: managed-by, release, resource-policy %q; want Helm's, the release's and keep", name, out)
		}
	}
	// The new schema: the new field is kept, and validated (CEL names the field).
	if kept, warned, err := devicePollInterval(t, ns, "7s"); err != nil || kept != "7s" || warned != "" {
		t.Errorf("after the upgrade spec.tokens.devicePollInterval 7s reads back as %q, with %q (%v): the CRD is still the old one",
			kept, warned, err)
	}
	if _, refused, err := devicePollInterval(t, ns, "1.5s"); err == nil || !strings.Contains(refused, "spec.tokens.devicePollInterval") {
		t.Errorf("devicePollInterval 1.5s after the upgrade: want a refusal naming spec.tokens.devicePollInterval, got %v: %s", err, refused)
	}

	// What ran before: still Ready under the new operator, its token still active.
	waitTokenServerReady(t, ts, time.Minute)
	waitClientReady(t, ns, "before")
	if !introspectAt(t, issuer, before, tok.AccessToken) {
		t.Error("the token issued before the upgrade is no longer active")
	}
	after := machineClient(t, ns, "after")
	if tok, err := after.Token(ctx); err != nil {
		t.Errorf("a client made after the upgrade: %v", err)
	} else if !introspectAt(t, issuer, after, tok.AccessToken) {
		t.Error("the new client's token is not active")
	}
	// --logs: a failure shows what the self-test found.
	mustHelm(t, "test", "kubeoauth", "-n", "kubeoauth-system", "--logs")
}

var crdNames = []string{"consentgrants.oauth.kubeoauth.io", "oauthclients.oauth.kubeoauth.io", "tokenservers.oauth.kubeoauth.io"}

// devicePollInterval is what the API server makes of the TokenServer with
// spec.tokens.devicePollInterval set to v, without storing it (a server-side dry run
// validates as a write would, and rolls no pod): the value it kept, and what kubectl
// said besides (a warning, a refusal).
func devicePollInterval(t *testing.T, ns, v string) (kept, said string, err error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), suite.kubectl, "-n", ns, "patch", "tokenserver", "auth", "--dry-run=server", // #nosec G204 -- the test's own command
		"--type", "merge", "-p", `{"spec":{"tokens":{"devicePollInterval":"`+v+`"}}}`, "-o", "jsonpath={.spec.tokens.devicePollInterval}")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+localcluster.AdminKubeconfig(suite.dir))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return string(out), strings.TrimSpace(stderr.String()), err
}

func waitTokenServerReady(t *testing.T, ts *oauthv1alpha1.TokenServer, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "TokenServer "+ts.Namespace+"/"+ts.Name+" Ready", func() error {
		if err := suite.c.Get(t.Context(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
			return fmt.Errorf("conditions %+v", ts.Status.Conditions)
		}
		return nil
	})
}

func waitClientReady(t *testing.T, ns, name string) *oauthv1alpha1.OAuthClient {
	t.Helper()
	oc := &oauthv1alpha1.OAuthClient{}
	eventually(t, time.Minute, "OAuthClient "+ns+"/"+name+" Ready", func() error {
		if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, oc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(oc.Status.Conditions, oauthv1alpha1.ConditionReady) || oc.Status.SecretName == "" {
			return fmt.Errorf("conditions %+v", oc.Status.Conditions)
		}
		return nil
	})
	return oc
}

// machineClient creates a client_credentials OAuthClient of the namespace's
// TokenServer auth and returns its credentials, from its Secret, once it is Ready.
func machineClient(t *testing.T, ns, name string) clientcredentials.Config {
	t.Helper()
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: name,
			GrantTypes: []oauthv1alpha1.GrantType{oauthv1alpha1.GrantClientCredentials}}}
	if err := suite.c.Create(t.Context(), oc); err != nil {
		t.Fatal(err)
	}
	oc = waitClientReady(t, ns, name)
	var s corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: oc.Status.SecretName}, &s); err != nil {
		t.Fatal(err)
	}
	return clientcredentials.Config{ClientID: string(s.Data["client_id"]), ClientSecret: string(s.Data["client_secret"]),
		TokenURL: string(s.Data["token_url"])}
}

// introspectAt asks the token server at issuer, as client c, whether tok is active.
func introspectAt(t *testing.T, issuer string, c clientcredentials.Config, tok string) bool {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, issuer+"/oauth2/introspect",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("introspection: %s: %v", resp.Status, err)
	}
	return out.Active
}

// chartVersion is charts/kubeoauth's version.
func chartVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(suite.repo, "charts", "kubeoauth", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("charts/kubeoauth/Chart.yaml has no version")
	return ""
}

// helm runs the pinned helm in the repository, as the docs' commands are typed.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), suite.helm, args...) // #nosec G204 -- the pinned helm, with the test's arguments
	cmd.Dir = suite.repo
	cmd.Env = append(os.Environ(), "KUBECONFIG="+localcluster.AdminKubeconfig(suite.dir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func mustHelm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
