package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// The PrometheusRule (off by default) holds the alerts the on-call engineer needs, each
// reading metrics the code exports (a renamed metric would silence an alert), the
// operator's from its own metrics Service; the PodMonitor selects the token server
// pods the operator creates, in the watched namespaces.
func TestChartAlertsReadExportedMetrics(t *testing.T) {
	if find(template(t), "PrometheusRule", "kubeoauth") != nil {
		t.Error("a PrometheusRule by default: it needs the Prometheus Operator's CRDs")
	}
	objs := template(t, "prometheusRule.enabled=true", "serviceMonitor.enabled=true", "watchNamespaces={apps,platform}",
		"prometheusRule.tokenErrorRatio=0.02")
	rule := find(objs, "PrometheusRule", "kubeoauth")
	if rule == nil {
		t.Fatal("prometheusRule.enabled=true renders no PrometheusRule")
	}
	exported := exportedMetrics(t)
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	alerts := map[string]string{}
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			r := r.(map[string]any)
			alerts[r["alert"].(string)] = r["expr"].(string)
		}
	}
	for _, name := range []string{"KubeoauthTokenErrorRate", "KubeoauthTokenLatencyHigh", "KubeoauthRevocationsFailing",
		"KubeoauthUpgradeRolledBack", "KubeoauthUpgradeStuck", "KubeoauthTokenServerStalled", "KubeoauthOperatorReconcileErrors"} {
		expr, ok := alerts[name]
		if !ok {
			t.Errorf("no alert %s", name)
			continue
		}
		for _, m := range regexp.MustCompile(`kubeoauth_[a-z_0-9]+`).FindAllString(expr, -1) {
			if !exported[strings.TrimSuffix(m, "_bucket")] {
				t.Errorf("alert %s reads %s, which no code exports", name, m)
			}
		}
	}
	// The token server's label is "handler": the Prometheus Operator sets
	// endpoint=<port> on every target, so endpoint="token" would match nothing.
	for name, expr := range alerts {
		if strings.Contains(expr, "endpoint=") || strings.Contains(expr, "job)") {
			t.Errorf("alert %s selects or groups by a label the scraper sets: %s", name, expr)
		}
	}
	for _, name := range []string{"KubeoauthTokenErrorRate", "KubeoauthTokenLatencyHigh", "KubeoauthRevocationsFailing"} {
		if !strings.Contains(alerts[name], "app_kubernetes_io_instance") {
			t.Errorf("alert %s cannot name the TokenServer: %s", name, alerts[name])
		}
	}
	if !strings.Contains(alerts["KubeoauthRevocationsFailing"], `handler=~"revoke|account_revoke|admin_grant_revoke|admin_client_revoke"`) {
		t.Errorf("the revocations alert does not read exactly the revoking handlers: %s", alerts["KubeoauthRevocationsFailing"])
	}
	if !strings.Contains(alerts["KubeoauthTokenErrorRate"], "> 0.02") {
		t.Errorf("prometheusRule.tokenErrorRatio not in the alert: %s", alerts["KubeoauthTokenErrorRate"])
	}
	if !strings.Contains(alerts["KubeoauthOperatorReconcileErrors"], `job="kubeoauth-metrics"`) || find(objs, "Service", "kubeoauth-metrics") == nil {
		t.Errorf("the reconcile-errors alert does not read the operator's metrics Service: %s", alerts["KubeoauthOperatorReconcileErrors"])
	}
	for _, reason := range []string{oauthv1alpha1.ReasonUpgradeRolledBack, oauthv1alpha1.ReasonUpgradeWaitingForWindow} {
		if !strings.Contains(alerts["KubeoauthUpgradeRolledBack"]+alerts["KubeoauthUpgradeStuck"], reason) {
			t.Errorf("the upgrade alerts do not name the reason %s", reason)
		}
	}

	// Phases that wait by design are no stuck upgrade: the rollback window lasts
	// rollbackWindow (1h by default, the alert's own default), a pause waits for a
	// person (review 16, finding 3).
	excluded := regexp.MustCompile(`reason!~"([^"]*)"`).FindStringSubmatch(alerts["KubeoauthUpgradeStuck"])
	for _, p := range []oauthv1alpha1.UpgradePhase{oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradePaused} {
		if excluded == nil || !slices.Contains(strings.Split(excluded[1], "|"), oauthv1alpha1.ProgressingReason(p)) {
			t.Errorf("KubeoauthUpgradeStuck fires on %s: %s", oauthv1alpha1.ProgressingReason(p), alerts["KubeoauthUpgradeStuck"])
		}
	}

	pm := find(objs, "PodMonitor", "kubeoauth-tokenservers")
	if pm == nil {
		t.Fatal("no PodMonitor for the token servers")
	}
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	server := resources.ServerSelector(&oauthv1alpha1.TokenServer{}, "blue")
	if sel[resources.LabelComponent] != server[resources.LabelComponent] || sel[resources.LabelName] != "kubeoauth" {
		t.Errorf("PodMonitor selects %v; the token server pods carry %v and %s=kubeoauth", sel, server, resources.LabelName)
	}
	if targetLabels, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "podTargetLabels"); !slices.Contains(targetLabels, resources.LabelInstance) {
		t.Errorf("PodMonitor podTargetLabels %v: the alerts group by the TokenServer (%s)", targetLabels, resources.LabelInstance)
	}
	names, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames")
	if strings.Join(names, ",") != "apps,platform" {
		t.Errorf("PodMonitor namespaces %v, want the watched apps,platform", names)
	}
}

// exportedMetrics lists the metric names the token server and the operator define.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range []string{"internal/tokenserver/metrics.go", "cmd/manager/conditions.go", "controllers/fairqueue.go"} {
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), f)) // #nosec G304 -- the repository's files
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(kubeoauth_[a-z_0-9]+)"`).FindAllStringSubmatch(string(data), -1) {
			names[m[1]] = true
		}
	}
	return names
}

// The Grafana dashboard (off by default) is valid JSON in a ConfigMap the sidecar
// finds, and every panel queries metrics the code exports.
func TestChartDashboardReadsExportedMetrics(t *testing.T) {
	if find(template(t), "ConfigMap", "kubeoauth-dashboard") != nil {
		t.Error("a dashboard ConfigMap by default")
	}
	cm := find(template(t, "grafanaDashboard.enabled=true", "grafanaDashboard.namespace=monitoring"), "ConfigMap", "kubeoauth-dashboard")
	if cm == nil {
		t.Fatal("grafanaDashboard.enabled=true renders no ConfigMap kubeoauth-dashboard")
	}
	if cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap in %q with labels %v, want monitoring and grafana_dashboard=1", cm.GetNamespace(), cm.GetLabels())
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "kubeoauth.json")
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	exported := exportedMetrics(t)
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, target := range p.Targets {
			if strings.Contains(target.Expr, "endpoint=") {
				t.Errorf("panel %q selects endpoint=, a label the Prometheus Operator sets on every target: %s", p.Title, target.Expr)
			}
			for _, m := range regexp.MustCompile(`kubeoauth_[a-z_0-9]+`).FindAllString(target.Expr, -1) {
				m = strings.TrimSuffix(m, "_bucket")
				queried[m] = true
				if !exported[m] {
					t.Errorf("panel %q reads %s, which no code exports", p.Title, m)
				}
			}
		}
	}
	for _, m := range []string{"kubeoauth_tokens_issued_total", "kubeoauth_http_request_duration_seconds", "kubeoauth_tokenserver_condition"} {
		if !queried[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}
