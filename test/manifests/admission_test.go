package manifests

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// finalizer is the operator's (controllers.Finalizer), which the policy adds.
const finalizer = "oauth.kubeoauth.io/finalizer"

// checkFinalizerPolicy: objs (applied to c's API server) hold one
// MutatingAdmissionPolicy and a binding of it, and with them a new OAuthClient in
// namespace ns carries the operator's finalizer as the API server answers its create.
func checkFinalizerPolicy(t *testing.T, c client.Client, objs []*unstructured.Unstructured, ns string) {
	t.Helper()
	var policy, binding *unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "MutatingAdmissionPolicy":
			policy = o
		case "MutatingAdmissionPolicyBinding":
			binding = o
		}
	}
	if policy == nil || binding == nil {
		t.Fatalf("no finalizer policy and binding (policy %v, binding %v)", policy != nil, binding != nil)
	}
	if name, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); name != policy.GetName() {
		t.Errorf("the binding names policy %q, the policy is %q", name, policy.GetName())
	}
	// The API server loads policies from its informer: poll a dry-run create.
	deadline := time.Now().Add(20 * time.Second)
	for {
		oc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": oauthv1alpha1.GroupVersion.String(), "kind": "OAuthClient",
			"metadata": map[string]any{"namespace": ns, "name": "probe"},
			"spec": map[string]any{"serverRef": map[string]any{"name": "auth"}, "clientName": "Probe",
				"grantTypes": []any{"client_credentials"}}}}
		err := c.Create(context.Background(), oc, client.DryRunAll)
		if err == nil && slices.Contains(oc.GetFinalizers(), finalizer) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new OAuthClient in %s: finalizers %v (%v), want %s from the policy", ns, oc.GetFinalizers(), err, finalizer)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The chart's finalizer policy is config/admission's, bound where the operator
// watches, and works on a real API server; it can be turned off, and is left out
// where admissionregistration.k8s.io/v1 MutatingAdmissionPolicy is not served
// (before Kubernetes 1.36).
func TestChartFinalizerPolicy(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "admission", "finalizer_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var shipped admissionregistrationv1.MutatingAdmissionPolicy
	if err := yaml.UnmarshalStrict(data, &shipped); err != nil {
		t.Fatal(err)
	}
	objs := template(t)
	var policy admissionregistrationv1.MutatingAdmissionPolicy
	toTyped(t, find(objs, "MutatingAdmissionPolicy", "kubeoauth-finalizer"), &policy)
	if !reflect.DeepEqual(policy.Spec, shipped.Spec) {
		t.Errorf("the chart's policy differs from config/admission (run make manifests):\n%+v\n%+v", policy.Spec, shipped.Spec)
	}
	var binding admissionregistrationv1.MutatingAdmissionPolicyBinding
	toTyped(t, find(objs, "MutatingAdmissionPolicyBinding", "kubeoauth-finalizer"), &binding)
	if binding.Spec.PolicyName != "kubeoauth-finalizer" || binding.Spec.MatchResources != nil {
		t.Errorf("binding spec %+v, want the policy in every namespace", binding.Spec)
	}

	toTyped(t, find(template(t, "watchNamespaces={apps,platform}"), "MutatingAdmissionPolicyBinding", "kubeoauth-finalizer"), &binding)
	want := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"apps", "platform"}}}}
	if binding.Spec.MatchResources == nil || !reflect.DeepEqual(binding.Spec.MatchResources.NamespaceSelector, want) {
		t.Errorf("with watchNamespaces: binding %+v, want namespaceSelector %+v", binding.Spec, want)
	}

	for args, want := range map[string]bool{
		"--set finalizerPolicy.enabled=false": false,
		"--kube-version 1.35.0":               false,
		// A cluster that serves the API, whatever its version says (envtest's own
		// build reports no valid semver).
		"--kube-version 1.35.0 --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy": true,
	} {
		out := helm(t, append([]string{"template", "kubeoauth", chartDir(), "--namespace", "kubeoauth-system"}, strings.Fields(args)...)...)
		if got := strings.Contains(out, "kind: MutatingAdmissionPolicy\n"); got != want {
			t.Errorf("helm template %s renders the policy: %v, want %v", args, got, want)
		}
	}
}
