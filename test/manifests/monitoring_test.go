package manifests

import (
	"os"
	"path/filepath"
	"regexp"
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

	pm := find(objs, "PodMonitor", "kubeoauth-tokenservers")
	if pm == nil {
		t.Fatal("no PodMonitor for the token servers")
	}
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	server := resources.ServerSelector(&oauthv1alpha1.TokenServer{}, "blue")
	if sel[resources.LabelComponent] != server[resources.LabelComponent] || sel[resources.LabelName] != "kubeoauth" {
		t.Errorf("PodMonitor selects %v; the token server pods carry %v and %s=kubeoauth", sel, server, resources.LabelName)
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
	for _, f := range []string{"internal/tokenserver/metrics.go", "cmd/manager/conditions.go"} {
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
