package manifests

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	// The operator's own metrics, registered in controller-runtime's registry as the
	// manager, which imports the package, has them.
	_ "github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"

	// The controllers' metrics (controller_runtime_reconcile_*) are registered when
	// the package that runs controllers is loaded, as in the operator.
	_ "sigs.k8s.io/controller-runtime/pkg/controller"
)

// TestChartAlertRulesAreValidAndReadStoredSeries: the PrometheusRule passes the
// validation Prometheus runs when it loads a rule file (rulefmt, as `promtool check
// rules`: every expr parsed as PromQL, `for`, labels, annotation templates). Every
// series an expression selects is one the token server or the operator registers,
// under the labels Prometheus stores it with after the chart's PodMonitor or
// ServiceMonitor scraped it; every label an expression matches or groups by is one
// of those; every handler it names is one the token server instruments; and
// the upgrade alerts match the condition reasons the operator sets.
func TestChartAlertRulesAreValidAndReadStoredSeries(t *testing.T) {
	objs := template(t, "prometheusRule.enabled=true", "serviceMonitor.enabled=true")
	rule := find(objs, "PrometheusRule", "kubeoauth")
	if rule == nil {
		t.Fatal("prometheusRule.enabled=true renders no PrometheusRule")
	}
	spec, _, _ := unstructured.NestedMap(rule.Object, "spec")
	content, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	promql := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, promql, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("Prometheus refuses the PrometheusRule: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}

	stored := storedSeries(t, objs)
	selectors := map[string][]*parser.VectorSelector{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := promql.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
				continue
			}
			for _, problem := range stored.problems(expr) {
				t.Errorf("alert %s: %s", r.Alert, problem)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && vs.Name == "kubeoauth_tokenserver_condition" {
					selectors[r.Alert] = append(selectors[r.Alert], vs)
				}
				return nil
			})
		}
	}

	// The upgrade alerts, against the conditions the operator writes: Degraded for
	// each failure of an upgrade, Progressing Upgrade<Phase> for each phase.
	fires := func(alert string, series map[string]string) bool {
		for _, vs := range selectors[alert] {
			if matchesAll(vs.LabelMatchers, series) {
				return true
			}
		}
		return false
	}
	condition := func(typ string, status bool, reason string) map[string]string {
		return map[string]string{"__name__": "kubeoauth_tokenserver_condition", "namespace": "platform", "name": "auth",
			"type": typ, "status": map[bool]string{true: "True", false: "False"}[status], "reason": reason}
	}
	for _, reason := range []string{oauthv1alpha1.ReasonUpgradeRolledBack, oauthv1alpha1.ReasonUpgradeRefused,
		oauthv1alpha1.ReasonMigrationFailed, oauthv1alpha1.ReasonCutoverFailed} {
		if !fires("KubeoauthUpgradeRolledBack", condition(oauthv1alpha1.ConditionDegraded, true, reason)) {
			t.Errorf("KubeoauthUpgradeRolledBack does not fire for Degraded %s", reason)
		}
	}
	// Waits by design are not stuck: for the window to open, the rollback window
	// (spec.upgrade.rollbackWindow, which may be longer than upgradeStuckFor: it is
	// one hour by default, as upgradeStuckFor is), and a pause, which a person ends.
	waits := map[string]bool{oauthv1alpha1.ReasonUpgradeWaitingForWindow: true,
		oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeRollbackWindow): true,
		oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradePaused):         true}
	phases := upgradePhases(t, objs)
	for _, p := range phases {
		reason := oauthv1alpha1.ProgressingReason(p)
		running := upgrade.Active(&oauthv1alpha1.TokenServerStatus{Upgrade: &oauthv1alpha1.UpgradeStatus{Phase: p}})
		got := fires("KubeoauthUpgradeStuck", condition(oauthv1alpha1.ConditionProgressing, running, reason))
		if want := running && !waits[reason]; got != want {
			t.Errorf("KubeoauthUpgradeStuck fires for a long Progressing %s: %v, want %v", reason, got, want)
		}
	}
	if fires("KubeoauthUpgradeStuck", condition(oauthv1alpha1.ConditionProgressing, true, oauthv1alpha1.ReasonUpgradeWaitingForWindow)) {
		t.Errorf("KubeoauthUpgradeStuck fires while an upgrade waits for its window")
	}
}

// stored are the series Prometheus stores, by name, with their labels (label →
// ownLabel, anyValue or the one value the target gives), and the token server's
// handler label (its request metrics' own label besides code) with the handlers
// instrumented.
type stored struct {
	series map[string]map[string]string
	// shadowed are, per series, the own labels a target label of the same name
	// replaced: Prometheus keeps them as exported_<name>.
	shadowed       map[string]map[string]bool
	handlerLabel   string
	handlers       map[string]bool
	handlerMetrics []string
}

// The value of a stored label: the metric's own (any value the code gives it), a
// target label whose value varies by target, or else the one value its target gives.
const ownLabel, anyValue = "", "*"

// problems says what is wrong with expr's selectors and groupings against the stored
// series: an unknown metric, a label the series do not have or whose own value a
// target label replaced, a value a target label never has, a handler that is not
// instrumented.
func (st stored) problems(expr parser.Expr) []string {
	var problems []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			have := st.series[n.Name]
			if have == nil {
				problems = append(problems, "reads "+n.Name+", which neither the token server nor the operator exports")
				return nil
			}
			for _, m := range n.LabelMatchers {
				value, ok := have[m.Name]
				switch {
				case m.Name == model.MetricNameLabel:
				case st.shadowed[n.Name][m.Name]:
					problems = append(problems, fmt.Sprintf("matches %s of %s, but its scrape target's %s replaces the metric's "+
						"own (kept as exported_%s): honorLabels", m, n.Name, m.Name, m.Name))
				case value == anyValue:
				case !ok:
					problems = append(problems, "matches label "+m.Name+" of "+n.Name+", which Prometheus stores with "+
						strings.Join(slices.Sorted(maps.Keys(have)), ", "))
				case value != ownLabel && !m.Matches(value):
					problems = append(problems, fmt.Sprintf("matches %s of %s, which Prometheus stores with %s=%q, the label "+
						"its scrape target sets", m, n.Name, m.Name, value))
				case m.Name == st.handlerLabel && slices.Contains(st.handlerMetrics, n.Name):
					for _, v := range strings.Split(m.Value, "|") {
						if !st.handlers[v] {
							problems = append(problems, m.Name+" "+v+" is no handler the token server instruments")
						}
					}
				}
			}
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
				vs, ok := inner.(*parser.VectorSelector)
				if !ok || st.series[vs.Name] == nil {
					return nil
				}
				for _, l := range n.Grouping {
					switch _, ok := st.series[vs.Name][l]; {
					case st.shadowed[vs.Name][l]:
						problems = append(problems, "groups "+vs.Name+" by "+l+", but its scrape target's "+l+
							" replaces the metric's own (kept as exported_"+l+"): honorLabels")
					case !ok:
						problems = append(problems, "groups "+vs.Name+" by "+l+", which it is not stored with")
					}
				}
				return nil
			})
		}
		return nil
	})
	return problems
}

func matchesAll(ms []*labels.Matcher, series map[string]string) bool {
	for _, m := range ms {
		if !m.Matches(series[m.Name]) {
			return false
		}
	}
	return true
}

// storedSeries are the series Prometheus stores: the token server's (scraped by the
// chart's PodMonitor) and the operator's (by its ServiceMonitor), each with the
// target labels the Prometheus Operator adds. A metric's own label of the same name
// as a target label is kept only with honorLabels; otherwise Prometheus keeps the
// target's and renames the metric's exported_<name>.
func storedSeries(t *testing.T, objs []*unstructured.Unstructured) stored {
	t.Helper()
	// The target labels the Prometheus Operator's relabelings set: the endpoint is the
	// port's name; the job is the Service's name for a ServiceMonitor, and
	// <namespace>/<name> of a PodMonitor; podTargetLabels copy pod labels, their
	// names sanitized.
	target := func(kind, name, list string) (set map[string]string, honor bool) {
		o := find(objs, kind, name)
		if o == nil {
			t.Fatalf("no %s %s", kind, name)
		}
		eps, _, _ := unstructured.NestedSlice(o.Object, "spec", list)
		ep := eps[0].(map[string]any)
		honor, _ = ep["honorLabels"].(bool)
		set = map[string]string{"instance": anyValue, "namespace": anyValue, "pod": anyValue, "container": anyValue,
			"endpoint": ep["port"].(string), "job": o.GetNamespace() + "/" + o.GetName()}
		copied, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "podTargetLabels")
		for _, l := range copied {
			set[regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(l, "_")] = anyValue
		}
		if kind == "ServiceMonitor" {
			svc := find(objs, "Service", "kubeoauth-metrics")
			if svc == nil {
				t.Fatal("no metrics Service for the ServiceMonitor")
			}
			set["job"], set["service"] = svc.GetName(), svc.GetName()
		}
		return set, honor
	}
	st := stored{series: map[string]map[string]string{}, shadowed: map[string]map[string]bool{}}
	add := func(name string, own []string, target map[string]string, honor bool, histogram bool) {
		set, shadowed := maps.Clone(target), map[string]bool{}
		for _, l := range own {
			if _, clash := set[l]; clash && !honor {
				shadowed[l] = true
				l = "exported_" + l
			}
			set[l] = ownLabel
		}
		names := []string{name}
		if histogram {
			names = []string{name + "_sum", name + "_count", name + "_bucket"}
		}
		for _, n := range names {
			st.series[n], st.shadowed[n] = maps.Clone(set), shadowed
		}
		if histogram {
			st.series[name+"_bucket"]["le"] = ownLabel
		}
	}

	histograms := histogramsIn(t, "internal/tokenserver/metrics.go")
	pods, honor := target("PodMonitor", "kubeoauth-tokenservers", "podMetricsEndpoints")
	server := describe(t, tokenserver.NewMetrics().Registry)
	for name, own := range server {
		add(name, own, pods, honor, histograms[name])
	}
	operator := describe(t, ctrlmetrics.Registry.(prometheus.Collector))
	maps.Copy(operator, conditionMetrics(t))
	// The operator's histograms are not expanded: no alert reads one (a new alert that
	// does fails here, naming the _bucket series, until this learns their names).
	services, honor := target("ServiceMonitor", "kubeoauth", "endpoints")
	for name, own := range operator {
		add(name, own, services, honor, false)
	}
	if st.series["controller_runtime_reconcile_errors_total"] == nil || server["kubeoauth_http_requests_total"] == nil {
		t.Fatalf("the registries describe no reconcile errors or token server requests: %v", slices.Sorted(maps.Keys(st.series)))
	}
	// The request metrics' label besides code names the handler.
	for _, l := range server["kubeoauth_http_requests_total"] {
		if l != "code" {
			st.handlerLabel = l
		}
	}
	for name, own := range server {
		if slices.Contains(own, st.handlerLabel) {
			st.handlerMetrics = append(st.handlerMetrics, name, name+"_bucket", name+"_sum", name+"_count")
		}
	}
	st.handlers = instrumentedHandlers(t)
	return st
}

// describe lists the metrics a collector registers, with their label names.
func describe(t *testing.T, c prometheus.Collector) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*, constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)
	out := map[string][]string{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("a metric description the test cannot read: %s", d)
		}
		var names []string
		for _, pair := range strings.Split(m[2], ",") {
			if n, _, ok := strings.Cut(pair, "="); ok {
				names = append(names, n)
			}
		}
		for _, n := range strings.Split(m[3], ",") {
			if n != "" {
				names = append(names, strings.TrimSuffix(strings.TrimPrefix(n, "c("), ")"))
			}
		}
		out[m[1]] = names
	}
	return out
}

// histogramsIn are the histograms file registers: their series are <name>_bucket
// (with le), _sum and _count. A description says nothing of its metric's type.
func histogramsIn(t *testing.T, file string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`NewHistogram(?:Vec)?\(prometheus\.HistogramOpts\{\s*Name:\s*"([a-z_0-9]+)"`).
		FindAllStringSubmatch(readRepo(t, file), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatalf("%s registers no histogram: the test no longer reads it right", file)
	}
	return out
}

// conditionMetrics are the operator's own metrics (cmd/manager, a main package the
// test cannot import): their names and labels, from its source.
func conditionMetrics(t *testing.T) map[string][]string {
	t.Helper()
	src := readRepo(t, "cmd/manager/conditions.go")
	// NewDesc(name, help, labels, nil), labels a []string{...} or a variable of one.
	descs := regexp.MustCompile(`prometheus\.NewDesc\("(kubeoauth_[a-z_0-9]+)",\s*"[^"]*",\s*(?:\[\]string\{([^}]*)\}|(\w+))`).FindAllStringSubmatch(src, -1)
	if len(descs) == 0 || len(descs) != strings.Count(src, "prometheus.NewDesc(") {
		t.Fatal("cmd/manager/conditions.go: metrics whose names and labels the test cannot read (it wants NewDesc(name, help, labels, nil))")
	}
	out := map[string][]string{}
	for _, d := range descs {
		list := d[2]
		if d[3] != "" {
			v := regexp.MustCompile(`\b` + d[3] + ` = \[\]string\{([^}]*)\}`).FindStringSubmatch(src)
			if v == nil {
				t.Fatalf("cmd/manager/conditions.go: no []string variable %s, the labels of %s", d[3], d[1])
			}
			list = v[1]
		}
		parts := strings.Split(list, ",")
		own := make([]string, 0, len(parts))
		for _, l := range parts {
			own = append(own, strings.Trim(strings.TrimSpace(l), `"`))
		}
		out[d[1]] = own
	}
	return out
}

// instrumentedHandlers are the handler label values of the token server's request
// metrics: the names its handlers are instrumented with.
func instrumentedHandlers(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "internal", "tokenserver", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f) // #nosec G304 -- the repository's files
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`instrument\("([a-z_]+)"`).FindAllStringSubmatch(string(data), -1) {
			out[m[1]] = true
		}
	}
	if !out["token"] {
		t.Fatalf("no handler instrumented as token among %v: the test no longer reads the code right", out)
	}
	return out
}

// upgradePhases are the phases status.upgrade.phase may hold, from the CRD.
func upgradePhases(t *testing.T, objs []*unstructured.Unstructured) []oauthv1alpha1.UpgradePhase {
	t.Helper()
	crd := find(objs, "CustomResourceDefinition", "tokenservers.oauth.kubeoauth.io")
	if crd == nil {
		t.Fatal("the chart renders no TokenServer CRD")
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	enum, _, _ := unstructured.NestedStringSlice(versions[0].(map[string]any), "schema", "openAPIV3Schema", "properties",
		"status", "properties", "upgrade", "properties", "phase", "enum")
	if len(enum) == 0 {
		t.Fatal("the TokenServer CRD lists no upgrade phases")
	}
	out := make([]oauthv1alpha1.UpgradePhase, 0, len(enum))
	for _, p := range enum {
		out = append(out, oauthv1alpha1.UpgradePhase(p))
	}
	return out
}

func readRepo(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), file)) // #nosec G304 -- the repository's files
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestChartDashboardQueriesAreValidPromQL: every query of the Grafana dashboard, its
// variables set as Grafana sets them by default, parses as PromQL and reads series
// Prometheus stores, as the alerts do.
func TestChartDashboardQueriesAreValidPromQL(t *testing.T) {
	objs := template(t, "grafanaDashboard.enabled=true", "serviceMonitor.enabled=true")
	cm := find(objs, "ConfigMap", "kubeoauth-dashboard")
	if cm == nil {
		t.Fatal("grafanaDashboard.enabled=true renders no ConfigMap kubeoauth-dashboard")
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "kubeoauth.json")
	var dash struct {
		Templating struct {
			List []struct {
				Name     string `json:"name"`
				AllValue string `json:"allValue"`
				Current  struct {
					Value any `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
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
	vars := make([]string, 0, 4*len(dash.Templating.List))
	for _, v := range dash.Templating.List {
		value, _ := v.Current.Value.(string)
		if value == "" {
			value = v.AllValue
		}
		vars = append(vars, "${"+v.Name+"}", value, "$"+v.Name, value)
	}
	substitute := strings.NewReplacer(vars...)
	stored := storedSeries(t, objs)
	promql := parser.NewParser(parser.Options{})
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			expr, err := promql.ParseExpr(substitute.Replace(target.Expr))
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			for _, problem := range stored.problems(expr) {
				t.Errorf("panel %q: %s", p.Title, problem)
			}
		}
	}
}
