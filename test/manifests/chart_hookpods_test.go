package manifests

import (
	"context"
	"reflect"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
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

// With crds.keep=false the pre-delete hook's ServiceAccount may, as a real API
// server's authorizer answers, do what `manager delete-resources --delete-crds` does
// (list the three kinds in every namespace, delete them, then get and delete the
// three CRDs), and nothing else: not delete another CRD, not read a Secret.
func TestChartPreDeleteHookMayDeleteOnlyItsCRDs(t *testing.T) {
	objs := template(t, "crds.keep=false", "watchNamespaces={apps}")
	ns := namespaceObject("kubeoauth-system")
	apply := make([]*unstructured.Unstructured, 0, 4)
	apply = append(apply, ns)
	for _, name := range []struct{ kind, name string }{{"ServiceAccount", "kubeoauth-delete-resources"},
		{"ClusterRole", "kubeoauth-delete-resources"}, {"ClusterRoleBinding", "kubeoauth-delete-resources"}} {
		o := find(objs, name.kind, name.name)
		if o == nil {
			t.Fatalf("no %s %s", name.kind, name.name)
		}
		apply = append(apply, o)
	}
	cl := applyAll(t, apply, "helm")
	allowed := func(r authorizationv1.ResourceAttributes) bool {
		t.Helper()
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:kubeoauth-system:kubeoauth-delete-resources",
			Groups: []string{"system:serviceaccounts", "system:authenticated"}, ResourceAttributes: &r}}
		if err := cl.Create(context.Background(), review); err != nil {
			t.Fatal(err)
		}
		return review.Status.Allowed
	}
	for _, kind := range []string{"oauthclients", "consentgrants", "tokenservers"} {
		for _, r := range []authorizationv1.ResourceAttributes{
			{Verb: "list", Group: "oauth.kubeoauth.io", Resource: kind}, // every namespace: what another release left
			{Verb: "delete", Group: "oauth.kubeoauth.io", Resource: kind, Namespace: "apps", Name: "x"},
		} {
			if !allowed(r) {
				t.Errorf("the hook may not %s %s", r.Verb, kind)
			}
		}
	}
	for _, name := range crdNames {
		for _, verb := range []string{"get", "delete"} {
			if !allowed(authorizationv1.ResourceAttributes{Verb: verb, Group: "apiextensions.k8s.io",
				Resource: "customresourcedefinitions", Name: name}) {
				t.Errorf("the hook may not %s CRD %s", verb, name)
			}
		}
	}
	for _, r := range []authorizationv1.ResourceAttributes{
		{Verb: "delete", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "certificates.cert-manager.io"},
		{Verb: "deletecollection", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
		{Verb: "get", Resource: "secrets", Namespace: "apps", Name: "x"},
	} {
		if allowed(r) {
			t.Errorf("the hook may %s %s %s", r.Verb, r.Resource, r.Name)
		}
	}
}
