package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// helmBin is the pinned helm that `make test` passes in (make helm builds it).
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KUBEOAUTH_HELM")
	if bin == "" {
		t.Fatal("KUBEOAUTH_HELM is not set: run the tests with `make test`, which builds the pinned helm, " +
			"or set it to a helm binary")
	}
	return bin
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...) // #nosec G204 -- the pinned helm, with the test's arguments
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), stderr.String())
	}
	return out.String()
}

func chartDir() string { return filepath.Join(testenv.RepoRoot(), "charts", "kubeoauth") }

// template renders the chart as `helm install` would, with --set values.
func template(t *testing.T, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	return templateRelease(t, "kubeoauth", sets...)
}

func templateRelease(t *testing.T, release string, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	args := make([]string, 0, 6+2*len(sets))
	args = append(args, "template", release, chartDir(), "--namespace", "kubeoauth-system", "--include-crds")
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(helm(t, args...)), 4096)
	var out []*unstructured.Unstructured
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, &u)
		}
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func TestChartLints(t *testing.T) {
	helm(t, "lint", "--strict", chartDir())
	helm(t, "lint", "--strict", chartDir(), "--set", "serviceMonitor.enabled=true", "--set", "watchNamespaces={apps,platform}",
		"--set", "prometheusRule.enabled=true", "--set", "replicas=2", "--set", "metrics.secure=false")
}

// The chart installs what `make deploy` does, with the same permissions, and values
// change what they say.
func TestChartRendersWhatValuesSay(t *testing.T) {
	objs := template(t)
	for _, want := range []string{"CustomResourceDefinition/oauthclients.oauth.kubeoauth.io", "Deployment/kubeoauth-manager",
		"ServiceAccount/kubeoauth-manager", "ClusterRole/kubeoauth-manager", "ClusterRoleBinding/kubeoauth-manager",
		"Role/kubeoauth-leader-election", "RoleBinding/kubeoauth-leader-election", "Service/kubeoauth-metrics"} {
		kind, name, _ := strings.Cut(want, "/")
		if find(objs, kind, name) == nil {
			t.Errorf("the chart lacks %s", want)
		}
	}
	if find(objs, "ServiceMonitor", "kubeoauth") != nil {
		t.Error("a ServiceMonitor by default: it needs the Prometheus Operator's CRDs")
	}

	// Its ClusterRole is the one generated from the RBAC markers.
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &generated); err != nil {
		t.Fatal(err)
	}
	var chartRole rbacv1.ClusterRole
	toTyped(t, find(objs, "ClusterRole", "kubeoauth-manager"), &chartRole)
	if !reflect.DeepEqual(chartRole.Rules, generated.Rules) {
		t.Errorf("the chart's ClusterRole differs from config/rbac/role.yaml:\n%v\n%v", chartRole.Rules, generated.Rules)
	}

	objs = template(t, "image.tag=v9.9.9", "watchNamespaces={apps,platform}", "logLevel=debug", "serviceMonitor.enabled=true",
		"goMemLimit=200MiB", "replicas=2")
	var dep struct {
		Spec struct {
			Replicas int32 `json:"replicas"`
			Template struct {
				metav1.ObjectMeta `json:"metadata"`
				Spec              corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	toTyped(t, find(objs, "Deployment", "kubeoauth-manager"), &dep)
	c := dep.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if c.Image != "ghcr.io/kubeoauth/manager:v9.9.9" || dep.Spec.Replicas != 2 ||
		!strings.Contains(args, "--watch-namespaces=apps,platform") || !strings.Contains(args, "--zap-log-level=debug") ||
		!strings.Contains(args, "--leader-election-namespace=kubeoauth-system") {
		t.Errorf("Deployment: image %s, %d replicas, args %s", c.Image, dep.Spec.Replicas, args)
	}
	if len(c.Env) != 2 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" ||
		c.Env[1].Name != "GOMEMLIMIT" || c.Env[1].Value != "200MiB" {
		t.Errorf("env %v, want POD_NAMESPACE from the pod and GOMEMLIMIT=200MiB", c.Env)
	}
	// The operator's pods carry the labels its NetworkPolicies admit.
	podLabels := dep.Spec.Template.Labels
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--operator-pod-labels="); ok {
			for _, kv := range strings.Split(v, ",") {
				k, val, _ := strings.Cut(kv, "=")
				if podLabels[k] != val {
					t.Errorf("--operator-pod-labels has %s=%s, the pods %v", k, val, podLabels)
				}
			}
		}
	}
	if !strings.Contains(args, "--operator-pod-labels=") {
		t.Errorf("no --operator-pod-labels in %s", args)
	}
	if find(objs, "ServiceMonitor", "kubeoauth") == nil {
		t.Error("serviceMonitor.enabled=true renders no ServiceMonitor")
	}
}

// Every object the chart renders by default is accepted by a real API server (the
// ServiceMonitor, off by default, needs the Prometheus Operator's CRD).
func TestChartInstallsOnARealAPIServer(t *testing.T) {
	ns := namespaceObject("kubeoauth-system")
	objs := []*unstructured.Unstructured{ns}
	for _, o := range template(t) {
		// testenv installed the CRDs from config/crd/bases, which templates/crds copies.
		if o.GetKind() != "CustomResourceDefinition" {
			objs = append(objs, o)
		}
	}
	checkFinalizerPolicy(t, applyAll(t, objs, "helm"), objs, "default")
}

// The CRDs are templates (so that helm upgrade updates them), left out with
// crds.enabled=false, and always marked keep, with crds.keep=false too: Helm would
// otherwise delete them on an upgrade to crds.enabled=false, and every resource with
// them (TestChartTurningCRDsOffKeepsThem); with crds.keep=false the pre-delete hook
// deletes them (TestChartPreDeleteHookWithoutKeep).
func TestChartCRDSwitches(t *testing.T) {
	for _, tc := range []struct {
		sets       []string
		crds, keep bool
	}{
		{nil, true, true},
		{[]string{"crds.keep=false"}, true, true},
		{[]string{"crds.enabled=false"}, false, false},
	} {
		objs := template(t, tc.sets...)
		for _, name := range crdNames {
			o := find(objs, "CustomResourceDefinition", name)
			if (o != nil) != tc.crds {
				t.Errorf("with %v, CRD %s rendered: %v", tc.sets, name, o != nil)
				continue
			}
			if o != nil && (o.GetAnnotations()["helm.sh/resource-policy"] == "keep") != tc.keep {
				t.Errorf("with %v, CRD %s has annotations %v", tc.sets, name, o.GetAnnotations())
			}
		}
	}
}

func toTyped(t *testing.T, u *unstructured.Unstructured, out any) {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	data, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
}

// TestChartWatchNamespacesGrantsNamespacedRoles: with watchNamespaces the operator's
// ServiceAccount may read Secrets (and do the rest of its work) in those namespaces
// only, as a real API server's authorizer answers; without, everywhere.
func TestChartWatchNamespacesGrantsNamespacedRoles(t *testing.T) {
	objs := template(t, "watchNamespaces={apps,platform}")
	var objects []*unstructured.Unstructured
	for _, name := range []string{"kubeoauth-system", "apps", "platform", "elsewhere"} {
		ns := namespaceObject(name)
		objects = append(objects, ns)
	}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			objects = append(objects, o)
		}
	}
	c := applyAll(t, objects, "helm")
	sa := "system:serviceaccount:kubeoauth-system:kubeoauth-manager"
	can := func(ns, verb, resource string) bool {
		group, resource, ok := strings.Cut(resource, "/")
		if !ok {
			group, resource = "", group
		}
		t.Helper()
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:kubeoauth-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource}}}
		if err := c.Create(context.Background(), review); err != nil {
			t.Fatal(err)
		}
		return review.Status.Allowed
	}
	for _, ns := range []string{"apps", "platform"} {
		for _, verb := range []string{"get", "list", "watch", "create"} {
			if !can(ns, verb, "secrets") {
				t.Errorf("the operator cannot %s Secrets in watched namespace %s", verb, ns)
			}
		}
		if !can(ns, "create", "networking.k8s.io/networkpolicies") {
			t.Errorf("the operator cannot create NetworkPolicies in %s", ns)
		}
	}
	for _, verb := range []string{"get", "list", "watch"} {
		if can("elsewhere", verb, "secrets") || can("", verb, "secrets") {
			t.Errorf("the operator may %s Secrets outside its watched namespaces", verb)
		}
	}
	if !can("", "list", "namespaces") {
		t.Error("the operator cannot list Namespaces, which namespace policies need")
	}
	if find(objs, "Role", "kubeoauth-manager") == nil {
		t.Error("no Role kubeoauth-manager rendered")
	}
}

// A misspelt or invalid value fails `helm install` (values.schema.json) with a message
// naming it, instead of being ignored; the values.yaml defaults and every documented
// key pass.
func TestChartRefusesUnknownValues(t *testing.T) {
	for set, want := range map[string]string{
		"replica=2":                     "'replica' not allowed",
		"image.tg=v1":                   "'tg' not allowed",
		"crds.kep=false":                "'kep' not allowed",
		"serviceAccount.annotaions.a=b": "'annotaions' not allowed",
		"metrics.service.enable=false":  "'enable' not allowed",
		"serviceMonitor.interva=10s":    "'interva' not allowed",
		"resources.limit.memory=1Gi":    "'limit' not allowed",
		"logLevel=verbose":              "/logLevel",
		"image.pullPolicy=Sometimes":    "/image/pullPolicy",
		"clientResync=10 minutes":       "/clientResync",
		"replicas=-1":                   "/replicas",
		"metrics.service.port=70000":    "/metrics/service/port",
		// The operator would exit on these at start, after an install without --wait
		// had reported success.
		"externalAdminAllow={10.20.0.0/166}": "/externalAdminAllow/0",
		"externalAdminAllow={300.1.1.1}":     "/externalAdminAllow/0",
		"watchNamespaces={Apps}":             "/watchNamespaces/0",
		"hooks.podLabel.a=b":                 "'podLabel' not allowed",
	} {
		cmd := exec.Command(helmBin(t), "template", "kubeoauth", chartDir(), "--set", set) // #nosec G204 -- the pinned helm
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("helm template --set %s: %v, want a schema error with %q:\n%s", set, err, want, out)
		}
	}
	template(t, "image.pullPolicy=Always", "clientResync=1h30m", "goMemLimit=off", "kubeAPIQPS=50.5",
		"imagePullSecrets[0].name=regcred", "nodeSelector.zone=a", "tolerations[0].operator=Exists",
		"affinity.nodeAffinity.x=y", "resources.requests.cpu=1", "serviceAccount.annotations.a=b",
		"externalAdminAllow={10.0.0.0/8,192.168.1.5,fd00::/8,::1}", "watchNamespaces={apps,team-b}")
	// --set makes a numeric tag a number and the flag table lets logLevel be one.
	dep := find(template(t, "image.tag=20241201", "logLevel=2"), "Deployment", "kubeoauth-manager")
	c, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if image := c[0].(map[string]any)["image"]; image != "ghcr.io/kubeoauth/manager:20241201" {
		t.Errorf("image.tag=20241201 renders image %v", image)
	}
	if args := fmt.Sprint(c[0].(map[string]any)["args"]); !strings.Contains(args, "--zap-log-level=2") {
		t.Errorf("logLevel=2 renders args %s", args)
	}
}

// Two releases in one namespace (each with its watchNamespaces) lead through Leases
// of their own, and each one's helm test checks its own; the release named kubeoauth
// keeps the Lease 0.1.0 used, so an upgrade never has two leaders.
func TestChartReleasesLeadApart(t *testing.T) {
	lease := func(release string) (arg string, testArgs []any) {
		objs := templateRelease(t, release)
		fullname := release + "-kubeoauth"
		if release == "kubeoauth" {
			fullname = release
		}
		dep := find(objs, "Deployment", fullname+"-manager")
		if dep == nil {
			t.Fatalf("release %s: no manager Deployment", release)
		}
		c, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
		for _, a := range c[0].(map[string]any)["args"].([]any) {
			if v, ok := strings.CutPrefix(a.(string), "--leader-election-id="); ok {
				arg = v
			}
		}
		for _, o := range objs {
			if o.GetKind() == "Pod" {
				cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "containers")
				testArgs = cs[0].(map[string]any)["args"].([]any)
			}
		}
		return arg, testArgs
	}
	if id, _ := lease("kubeoauth"); id != "manager.kubeoauth.io" {
		t.Errorf("the release kubeoauth leads through %q, want manager.kubeoauth.io as 0.1.0 did", id)
	}
	a, testA := lease("team-a")
	b, _ := lease("team-b")
	if a == b || a == "" {
		t.Errorf("releases team-a and team-b lead through Leases %q and %q", a, b)
	}
	if got := fmt.Sprint(testA); !strings.Contains(got, "--lease="+a) || !strings.Contains(got, "--holder-prefix=team-a-kubeoauth-manager-") {
		t.Errorf("team-a's helm test args %s: want its Lease %s and its pods' prefix", got, a)
	}
}

// With crds.keep=false (and only then) a pre-delete hook deletes the watched
// namespaces' resources while the operator still runs, so the uninstall does not hang
// on their finalizers, then the CRDs; its ServiceAccount may list and delete the three
// kinds, and get and delete the three CRDs, only.
func TestChartPreDeleteHookWithoutKeep(t *testing.T) {
	for _, sets := range [][]string{nil, {"crds.enabled=false", "crds.keep=false"}} {
		if job := find(template(t, sets...), "Job", "kubeoauth-delete-resources"); job != nil {
			t.Errorf("--set %v renders the pre-delete hook", sets)
		}
	}
	objs := template(t, "crds.keep=false", "watchNamespaces={apps,platform}")
	job := find(objs, "Job", "kubeoauth-delete-resources")
	if job == nil {
		t.Fatal("crds.keep=false renders no pre-delete Job")
	}
	if job.GetAnnotations()["helm.sh/hook"] != "pre-delete" {
		t.Errorf("Job annotations %v, want a pre-delete hook", job.GetAnnotations())
	}
	cs, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
	if args := fmt.Sprint(cs[0].(map[string]any)["args"]); !strings.Contains(args, "delete-resources") ||
		!strings.Contains(args, "--namespaces=apps,platform") || !strings.Contains(args, "--delete-crds") {
		t.Errorf("hook args %s, want delete-resources in the watched namespaces, then of the CRDs", args)
	}
	role := find(objs, "ClusterRole", "kubeoauth-delete-resources")
	if role == nil {
		t.Fatal("no ClusterRole for the hook")
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	want := []any{
		map[string]any{"apiGroups": []any{"oauth.kubeoauth.io"}, "resources": []any{"oauthclients", "consentgrants", "tokenservers"},
			"verbs": []any{"list", "delete"}},
		map[string]any{"apiGroups": []any{"apiextensions.k8s.io"}, "resources": []any{"customresourcedefinitions"},
			"resourceNames": []any{crdNames[0], crdNames[1], crdNames[2]}, "verbs": []any{"get", "delete"}},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("hook rules %v, want list and delete of the three kinds, get and delete of their CRDs, only", rules)
	}
}

// Helm allows release names of 53 characters; every object the chart renders for
// one still has a name the API server accepts (a Service's is a DNS label of at most
// 63, "<fullname>-metrics").
func TestChartLongReleaseName(t *testing.T) {
	release := "platform-identity-operator-production-europe-west1-a"
	for _, o := range templateRelease(t, release, "serviceMonitor.enabled=true", "prometheusRule.enabled=true",
		"grafanaDashboard.enabled=true", "replicas=2") {
		name := o.GetName()
		errs := validation.IsDNS1123Subdomain(name)
		if o.GetKind() == "Service" {
			errs = validation.IsDNS1035Label(name)
		}
		if len(errs) > 0 {
			t.Errorf("%s %s: %v", o.GetKind(), name, errs)
		}
	}
	// The pre-delete Job's name goes into its pod's job-name label: at most 63, with
	// the longest fullname (55).
	objs := template(t, "fullnameOverride="+strings.Repeat("identity-platform-", 3)+"x", "crds.keep=false")
	for _, o := range objs {
		if o.GetKind() == "Job" {
			if errs := validation.IsValidLabelValue(o.GetName()); len(errs) > 0 {
				t.Errorf("Job %s cannot be its pod's job-name label: %v", o.GetName(), errs)
			}
		}
	}
}

// The hook pods (helm test, the pre-delete Job) take hooks.podLabels and
// hooks.podAnnotations, so that a namespace's sidecar injection can be turned off
// for pods that must finish; the operator's pods do not.
func TestChartHookPodsLabelsAndAnnotations(t *testing.T) {
	objs := template(t, "crds.keep=false", "hooks.podAnnotations.linkerd\\.io/inject=disabled", "hooks.podLabels.team=identity")
	metas := map[string]map[string]any{}
	for _, o := range objs {
		switch o.GetKind() {
		case "Pod":
			metas["test pod"], _, _ = unstructured.NestedMap(o.Object, "metadata")
		case "Job":
			metas["pre-delete Job's pod"], _, _ = unstructured.NestedMap(o.Object, "spec", "template", "metadata")
		case "Deployment":
			a, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "annotations")
			l, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
			if a["linkerd.io/inject"] != "" || l["team"] != "" {
				t.Errorf("the operator's pods took the hooks' labels %v or annotations %v", l, a)
			}
		}
	}
	if len(metas) != 2 {
		t.Fatalf("rendered hook pods %v; want the test pod and the pre-delete Job", slices.Collect(maps.Keys(metas)))
	}
	for what, m := range metas {
		a, _ := m["annotations"].(map[string]any)
		l, _ := m["labels"].(map[string]any)
		if a["linkerd.io/inject"] != "disabled" || l["team"] != "identity" {
			t.Errorf("%s: labels %v, annotations %v; want hooks.podLabels' and hooks.podAnnotations'", what, l, a)
		}
	}
}

// With replicas > 1 the operator's pods spread across nodes and a drain may evict one
// at a time; with one, no PodDisruptionBudget blocks a drain. fullnameOverride names
// every object, extraArgs and extraEnv reach the container, and a real API server
// accepts all of it.
func TestChartReplicasNamesArgsAndEnv(t *testing.T) {
	one := template(t)
	if o := find(one, "PodDisruptionBudget", "kubeoauth-manager"); o != nil {
		t.Error("a PodDisruptionBudget with one replica: it would block every node drain")
	}
	var dep struct {
		Spec struct {
			Template struct {
				metav1.ObjectMeta `json:"metadata"`
				Spec              corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	toTyped(t, find(one, "Deployment", "kubeoauth-manager"), &dep)
	if c := dep.Spec.Template.Spec.TopologySpreadConstraints; len(c) != 0 {
		t.Errorf("topology spread with one replica: %v", c)
	}

	objs := template(t, "replicas=3", "fullnameOverride=auth", "extraArgs={--zap-devel,--client-resync=1h}",
		"extraEnv[0].name=HTTPS_PROXY", "extraEnv[0].value=http://proxy:3128")
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" && !strings.HasPrefix(o.GetName(), "auth-") {
			t.Errorf("%s/%s is not named after fullnameOverride auth", o.GetKind(), o.GetName())
		}
	}
	toTyped(t, find(objs, "Deployment", "auth-manager"), &dep)
	pods := dep.Spec.Template.Labels
	spread := dep.Spec.Template.Spec.TopologySpreadConstraints
	if len(spread) != 1 || spread[0].TopologyKey != "kubernetes.io/hostname" || spread[0].WhenUnsatisfiable != corev1.ScheduleAnyway ||
		!selects(spread[0].LabelSelector.MatchLabels, pods) {
		t.Errorf("topology spread %v, want across nodes, preferred, over the pods %v", spread, pods)
	}
	var pdb struct {
		Spec struct {
			MaxUnavailable int `json:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		} `json:"spec"`
	}
	toTyped(t, find(objs, "PodDisruptionBudget", "auth-manager"), &pdb)
	if pdb.Spec.MaxUnavailable != 1 || !selects(pdb.Spec.Selector.MatchLabels, pods) {
		t.Errorf("PodDisruptionBudget %+v, want maxUnavailable 1 over the pods %v", pdb.Spec, pods)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if n := len(c.Args); n < 2 || c.Args[n-2] != "--zap-devel" || c.Args[n-1] != "--client-resync=1h" {
		t.Errorf("args %v, want extraArgs last (a repeated flag takes the last value)", c.Args)
	}
	if e := c.Env[len(c.Env)-1]; e.Name != "HTTPS_PROXY" || e.Value != "http://proxy:3128" {
		t.Errorf("env %v, want extraEnv's HTTPS_PROXY", c.Env)
	}
	if find(objs, "ClusterRoleBinding", "auth-manager") == nil || find(objs, "ServiceAccount", "auth-manager") == nil {
		t.Error("no ServiceAccount or ClusterRoleBinding auth-manager")
	}

	ns := namespaceObject("kubeoauth-system")
	apply := []*unstructured.Unstructured{ns}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			apply = append(apply, o)
		}
	}
	applyAll(t, apply, "helm")
}

// selects says whether a selector's labels all hold on a pod's.
func selects(selector, pod map[string]string) bool {
	for k, v := range selector {
		if pod[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// By default the operator serves /metrics with authentication and authorization
// (--metrics-secure on 8443, behind the metrics Service), may make the TokenReviews and
// SubjectAccessReviews that needs, as a real API server's authorizer answers, and a
// scraper bound to <fullname>-metrics-reader may read /metrics; metrics.secure=false
// is plain HTTP on 8080 without those roles.
func TestChartMetricsNeedAuthorization(t *testing.T) {
	objs := template(t, "serviceMonitor.enabled=true")
	var dep struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	toTyped(t, find(objs, "Deployment", "kubeoauth-manager"), &dep)
	c := dep.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--metrics-secure") || !strings.Contains(args, "--metrics-bind-address=:8443") ||
		c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("args %s, ports %v: want --metrics-secure on :8443, the port named metrics", args, c.Ports)
	}
	sm := find(objs, "ServiceMonitor", "kubeoauth")
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	// The ServiceMonitor scrapes as the chart's own ServiceAccount, through the
	// long-lived token the Prometheus Operator reads from its Secret, and keeps the
	// operator's namespace label on kubeoauth_tokenserver_condition (honorLabels).
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor endpoints %v, want one", eps)
	}
	ep := eps[0].(map[string]any)
	secretName, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
	if ep["scheme"] != "https" || ep["honorLabels"] != true || secretName != "kubeoauth-metrics-scraper" {
		t.Errorf("ServiceMonitor endpoint %v, want https, honorLabels and the scraper's token Secret", ep)
	}
	tokenSecret := find(objs, "Secret", secretName)
	if tokenSecret == nil || tokenSecret.Object["type"] != string(corev1.SecretTypeServiceAccountToken) ||
		tokenSecret.GetAnnotations()[corev1.ServiceAccountNameKey] != "kubeoauth-metrics-scraper" {
		t.Errorf("no service-account-token Secret %s for the scraper: %v", secretName, tokenSecret)
	}

	ns := namespaceObject("kubeoauth-system")
	apply := []*unstructured.Unstructured{ns}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "ServiceMonitor" && o.GetKind() != "PodMonitor" {
			apply = append(apply, o)
		}
	}
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": "prometheus-kubeoauth-metrics"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeoauth-metrics-reader"},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}},
	}}
	cl := applyAll(t, append(apply, binding), "helm")
	allowed := func(sa string, attrs authorizationv1.SubjectAccessReviewSpec) bool {
		t.Helper()
		attrs.User = "system:serviceaccount:" + sa
		attrs.Groups = []string{"system:serviceaccounts", "system:authenticated"}
		review := &authorizationv1.SubjectAccessReview{Spec: attrs}
		if err := cl.Create(context.Background(), review); err != nil {
			t.Fatal(err)
		}
		return review.Status.Allowed
	}
	operator := "kubeoauth-system:kubeoauth-manager"
	for _, r := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"},
		{Verb: "create", Group: "authorization.k8s.io", Resource: "subjectaccessreviews"},
	} {
		if !allowed(operator, authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: &r}) {
			t.Errorf("the operator may not %s %s: it cannot check a scraper", r.Verb, r.Resource)
		}
	}
	metrics := authorizationv1.SubjectAccessReviewSpec{NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}}
	if !allowed("monitoring:prometheus", metrics) {
		t.Error("a scraper bound to kubeoauth-metrics-reader may not GET /metrics")
	}
	if !allowed("kubeoauth-system:kubeoauth-metrics-scraper", metrics) {
		t.Error("the ServiceMonitor's own scraper may not GET /metrics")
	}
	if allowed("monitoring:stranger", metrics) {
		t.Error("any service account may GET /metrics")
	}

	// helm test's pod runs `manager self-test` as its own ServiceAccount, which may
	// read the three CRDs and the operator's Lease, and nothing else.
	pod := find(objs, "Pod", "kubeoauth-test")
	if pod == nil || pod.GetAnnotations()["helm.sh/hook"] != "test" {
		t.Fatal("no helm test Pod kubeoauth-test")
	}
	var testPod corev1.Pod
	toTyped(t, pod, &testPod)
	if args := testPod.Spec.Containers[0].Args; len(args) < 2 || args[0] != "self-test" || args[1] != "--namespace=kubeoauth-system" {
		t.Errorf("helm test pod args %v, want self-test --namespace=kubeoauth-system", args)
	}
	if selects(map[string]string{"app.kubernetes.io/name": "kubeoauth", "app.kubernetes.io/instance": "kubeoauth",
		"app.kubernetes.io/component": "manager"}, testPod.Labels) {
		t.Error("the helm test pod carries the operator's selector labels: its ReplicaSet would adopt it")
	}
	tester := "kubeoauth-system:kubeoauth-test"
	for _, r := range []authorizationv1.ResourceAttributes{
		{Verb: "get", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "tokenservers.oauth.kubeoauth.io"},
		{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kubeoauth-system", Name: "manager.kubeoauth.io"},
	} {
		if !allowed(tester, authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: &r}) {
			t.Errorf("helm test may not %s %s %s", r.Verb, r.Resource, r.Name)
		}
	}
	if allowed(tester, authorizationv1.SubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
		Verb: "get", Resource: "secrets", Namespace: "kubeoauth-system"}}) {
		t.Error("helm test may read Secrets")
	}

	objs = template(t, "metrics.secure=false")
	toTyped(t, find(objs, "Deployment", "kubeoauth-manager"), &dep)
	c = dep.Spec.Template.Spec.Containers[0]
	if args := strings.Join(c.Args, " "); strings.Contains(args, "--metrics-secure") || !strings.Contains(args, "--metrics-bind-address=:8080") ||
		find(objs, "ClusterRole", "kubeoauth-metrics-auth") != nil {
		t.Errorf("metrics.secure=false: args %s, want plain :8080 and no metrics-auth role", args)
	}
	// The metrics Service says which: 8443 for HTTPS, 8080 for plain HTTP, or the
	// port asked for.
	for set, want := range map[string]int64{"metrics.secure=true": 8443, "metrics.secure=false": 8080,
		"metrics.service.port=9100": 9100} {
		ports, _, _ := unstructured.NestedSlice(find(template(t, set), "Service", "kubeoauth-metrics").Object, "spec", "ports")
		if len(ports) != 1 || fmt.Sprint(ports[0].(map[string]any)["port"]) != fmt.Sprint(want) {
			t.Errorf("%s: metrics Service ports %v, want %d", set, ports, want)
		}
	}
}
