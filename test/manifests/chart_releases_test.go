package manifests

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// Review 18, finding 1: a release installed with crds.keep=false that later hands
// its CRDs over to someone else (crds.enabled=false, "if you apply config/crd/bases
// yourself") must not lose them: Helm deletes what a release no longer renders
// unless it carries helm.sh/resource-policy: keep, and deleting a CRD deletes every
// OAuthClient, ConsentGrant and TokenServer in the cluster, with no pre-delete hook
// (that runs on uninstall only). Refusing the upgrade, naming crds.keep, would do as
// well as keeping them; deleting them does not.
func TestChartTurningCRDsOffKeepsThem(t *testing.T) {
	kubeconfig, c := chartAPIServer(t)
	ctx := context.Background()

	// No finalizer policy: with it the OAuthClient would hold the operator's
	// finalizer, which no operator removes here.
	helmOn(t, kubeconfig, "install", "kubeoauth", chartDir(), "--namespace", "kubeoauth-system", "--create-namespace",
		"--take-ownership", "--set", "crds.keep=false", "--set", "finalizerPolicy.enabled=false")
	ns := namespaceObject("observability")
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	sample := readObject(t, filepath.Join(testenv.RepoRoot(), "config", "samples", "oauth_v1alpha1_oauthclient.yaml"))
	if err := c.Create(ctx, sample); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(helmBin(t), "upgrade", "kubeoauth", chartDir(), "--namespace", "kubeoauth-system", // #nosec G204 -- the pinned helm
		"--reuse-values", "--set", "crds.enabled=false", "--kubeconfig", kubeconfig)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, upgradeErr := cmd.CombinedOutput()
	t.Logf("helm upgrade --set crds.enabled=false: %v\n%s", upgradeErr, out)

	// Helm has sent its deletes when it returns: a CRD it deleted is gone or
	// terminating now.
	for _, name := range crdNames {
		got := crd(name)
		switch err := c.Get(ctx, client.ObjectKeyFromObject(got), got); {
		case apierrors.IsNotFound(err):
			t.Errorf("helm upgrade --set crds.enabled=false deleted CRD %s, and every resource of its kind", name)
		case err != nil:
			t.Fatal(err)
		case got.GetDeletionTimestamp() != nil:
			t.Errorf("helm upgrade --set crds.enabled=false is deleting CRD %s, and every resource of its kind", name)
		}
	}
	got := sample.DeepCopy()
	if err := c.Get(ctx, client.ObjectKeyFromObject(sample), got); err != nil {
		t.Errorf("the OAuthClient %s/%s: %v", sample.GetNamespace(), sample.GetName(), err)
	} else if got.GetDeletionTimestamp() != nil {
		t.Errorf("the OAuthClient %s/%s is being deleted with its CRD", sample.GetNamespace(), sample.GetName())
	}
}

// Review 18, finding 2: docs/operator.md (the --leader-election-id row) and
// TestChartReleasesLeadApart promise two releases in one namespace, each with its
// watchNamespaces. With the chart's defaults the second `helm install` fails: both
// releases render the three cluster-scoped CRDs, which belong to the first. Neither
// values.yaml nor the docs say that a second release needs crds.enabled=false. The
// second release must install as documented, or fail with a message that says what
// to set.
func TestChartSecondReleaseInstalls(t *testing.T) {
	kubeconfig, c := chartAPIServer(t)
	for _, name := range []string{"apps", "platform"} {
		ns := namespaceObject(name)
		if err := c.Create(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
	helmOn(t, kubeconfig, "install", "team-a", chartDir(), "--namespace", "kubeoauth-system", "--create-namespace",
		"--take-ownership", "--set", "watchNamespaces={apps}")

	cmd := exec.Command(helmBin(t), "install", "team-b", chartDir(), "--namespace", "kubeoauth-system", // #nosec G204 -- the pinned helm
		"--set", "watchNamespaces={platform}", "--kubeconfig", kubeconfig)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "crds.enabled") {
		t.Errorf("a second release in the namespace, with its own watchNamespaces, as docs/operator.md describes: %v, "+
			"and the error does not say to set crds.enabled=false:\n%s", err, out)
	}
}

// Review 18, finding 3: podDisruptionBudget.maxUnavailable 0 (or "0%") passes the
// schema and, with replicas > 1, renders a PodDisruptionBudget that allows no
// eviction at all: every `kubectl drain` of a node running an operator pod waits
// forever, the failure values.yaml says the chart avoids for one replica.
func TestChartRefusesDrainBlockingPDB(t *testing.T) {
	// --set makes 0 a number, --set-string keeps "0%" a string: the schema's two forms.
	for _, set := range [][]string{{"--set", "podDisruptionBudget.maxUnavailable=0"},
		{"--set-string", "podDisruptionBudget.maxUnavailable=0%"}} {
		args := append([]string{"template", "kubeoauth", chartDir(), "--set", "replicas=2"}, set...)
		out, err := exec.Command(helmBin(t), args...).CombinedOutput() // #nosec G204 -- the pinned helm
		if err == nil || !strings.Contains(string(out), "maxUnavailable") {
			t.Errorf("replicas=2, %s: %v, want a schema error naming maxUnavailable "+
				"(a PodDisruptionBudget that allows no eviction blocks every drain)", set[1], err)
		}
	}
}

// Review 18, finding 4: the Grafana dashboard's operator panels select the operator's
// metrics by job=~".*kubeoauth.*-metrics", a hidden variable. The job is the metrics
// Service's name, <fullname>-metrics: with fullnameOverride (a documented value) the
// panels "Operator reconciles by result" and "Operator reconcile errors and queue
// depth" match no series and stay empty, while the chart's own alert reads the right
// job.
func TestChartDashboardFindsTheOperatorWithFullnameOverride(t *testing.T) {
	objs := template(t, "fullnameOverride=auth", "grafanaDashboard.enabled=true", "serviceMonitor.enabled=true")
	cm := find(objs, "ConfigMap", "auth-dashboard")
	svc := find(objs, "Service", "auth-metrics")
	if cm == nil || svc == nil {
		t.Fatal("no ConfigMap auth-dashboard or Service auth-metrics")
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "kubeoauth.json")
	var dash struct {
		Templating struct {
			List []struct {
				Name    string `json:"name"`
				Current struct {
					Value string `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatal(err)
	}
	for _, v := range dash.Templating.List {
		if v.Name != "operator" {
			continue
		}
		// Prometheus anchors =~ at both ends.
		if re := regexp.MustCompile("^(?:" + v.Current.Value + ")$"); !re.MatchString(svc.GetName()) {
			t.Errorf("the dashboard's $operator is %q, which does not match the job %q the ServiceMonitor scrapes "+
				"the operator as: the operator panels are empty", v.Current.Value, svc.GetName())
		}
		return
	}
	t.Fatal("the dashboard has no $operator variable")
}

// Review 18, finding 5: a person disconnecting an app on the connected-apps page
// (POST /account/revoke, which revokes the grant and every token issued under it) is
// a revocation like /oauth2/revoke, but its failures (a 5xx from the database) do not
// fire KubeoauthRevocationsFailing: the route is instrumented as "account", the
// handler of the page view GET /account too, which the alert does not read (and
// could not without firing on a failing page view).
func TestChartRevocationAlertCoversTheAccountPage(t *testing.T) {
	routes := regexp.MustCompile(`HandleFunc\("(GET|POST) ([^"]+)", m\.instrument\("([a-z_]+)"`).
		FindAllStringSubmatch(readRepo(t, "internal/tokenserver/server.go"), -1)
	handlerOf := map[string]string{}
	for _, r := range routes {
		handlerOf[r[1]+" "+r[2]] = r[3]
	}
	revoke, page := handlerOf["POST /account/revoke"], handlerOf["GET /account"]
	if revoke == "" || page == "" {
		t.Fatalf("no instrumented POST /account/revoke or GET /account in internal/tokenserver/server.go: %v", handlerOf)
	}

	rule := find(template(t, "prometheusRule.enabled=true", "serviceMonitor.enabled=true"), "PrometheusRule", "kubeoauth")
	if rule == nil {
		t.Fatal("no PrometheusRule")
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	var expr string
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			if r := r.(map[string]any); r["alert"] == "KubeoauthRevocationsFailing" {
				expr, _ = r["expr"].(string)
			}
		}
	}
	parsed, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("KubeoauthRevocationsFailing: %v", err)
	}
	fires := func(handler string) bool {
		series := map[string]string{"__name__": "kubeoauth_http_requests_total", "handler": handler, "code": "503"}
		hit := false
		parser.Inspect(parsed, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && matchesAll(vs.LabelMatchers, series) {
				hit = true
			}
			return nil
		})
		return hit
	}
	if !fires(revoke) {
		t.Errorf("POST /account/revoke answering 503 (handler %q) does not fire KubeoauthRevocationsFailing: %s", revoke, expr)
	}
	if revoke == page {
		t.Errorf("POST /account/revoke and the page GET /account share the handler label %q: no alert can tell a failed "+
			"disconnection from a failed page view", revoke)
	}
}
