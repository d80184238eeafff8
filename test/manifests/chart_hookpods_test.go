package manifests

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The hook pods (helm test's, and the crds.keep=false pre-delete Job's) run where the
// operator's pods may: on a cluster whose platform components run only on tainted
// nodes, one without the operator's nodeSelector, tolerations, node affinity,
// priority class and pull secrets stays Pending, and helm test or the uninstall
// fails at Helm's timeout with nothing that names the chart's values.
func TestChartHookPodsScheduleLikeTheOperator(t *testing.T) {
	objs := template(t, "crds.keep=false", "nodeSelector.pool=platform", "tolerations[0].key=platform",
		"tolerations[0].operator=Exists", "priorityClassName=platform-critical", "imagePullSecrets[0].name=regcred",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")
	podSpec := func(kind, name string, path ...string) map[string]any {
		o := find(objs, kind, name)
		if o == nil {
			t.Fatalf("no %s %s", kind, name)
		}
		spec, _, _ := unstructured.NestedMap(o.Object, path...)
		return spec
	}
	operator := podSpec("Deployment", "kubeoauth-manager", "spec", "template", "spec")
	for _, hook := range []struct {
		kind, name string
		spec       map[string]any
	}{
		{"Pod", "kubeoauth-test", podSpec("Pod", "kubeoauth-test", "spec")},
		{"Job", "kubeoauth-delete-resources", podSpec("Job", "kubeoauth-delete-resources", "spec", "template", "spec")},
	} {
		for _, field := range []string{"nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"} {
			if operator[field] == nil {
				t.Fatalf("the operator's pods have no %s", field)
			}
			if !reflect.DeepEqual(hook.spec[field], operator[field]) {
				t.Errorf("%s %s: %s %v, want the operator's %v", hook.kind, hook.name, field, hook.spec[field], operator[field])
			}
		}
	}
}
