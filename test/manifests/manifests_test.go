package manifests

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// config/default renders, holds what `make deploy` promises, and a real API server
// accepts every object of it (server-side apply, as `make deploy` does).
func TestDefaultDeploysOnARealAPIServer(t *testing.T) {
	objs := render(t, filepath.Join(testenv.RepoRoot(), "config", "default"))

	want := map[string]bool{
		"Namespace/kubeoauth-system":                               false,
		"Deployment/kubeoauth-manager":                             false,
		"ServiceAccount/kubeoauth-manager":                         false,
		"ClusterRole/kubeoauth-manager-role":                       false,
		"ClusterRoleBinding/kubeoauth-manager-rolebinding":         false,
		"Role/kubeoauth-leader-election-role":                      false,
		"RoleBinding/kubeoauth-leader-election-rolebinding":        false,
		"CustomResourceDefinition/tokenservers.oauth.kubeoauth.io": false,
		"MutatingAdmissionPolicy/kubeoauth-finalizer":              false,
		"MutatingAdmissionPolicyBinding/kubeoauth-finalizer":       false,
	}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetName()
		if _, ok := want[key]; ok {
			want[key] = true
		}
		if o.GetKind() == "Deployment" {
			img, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			if got := img[0].(map[string]any)["image"]; got != "ghcr.io/kubeoauth/manager:dev" {
				t.Errorf("manager image = %v, want ghcr.io/kubeoauth/manager:dev", got)
			}
			if o.GetNamespace() != "kubeoauth-system" {
				t.Errorf("Deployment namespace = %q, want kubeoauth-system", o.GetNamespace())
			}
		}
	}
	for key, found := range want {
		if !found {
			t.Errorf("config/default lacks %s", key)
		}
	}

	c := applyAll(t, objs, "make-deploy") // the Namespace comes first: kustomize orders by kind
	checkFinalizerPolicy(t, c, objs, "default")
}

// applyAll applies objs, in order, to a fresh real API server (envtest, with the CRDs
// of config/crd/bases installed) as fieldOwner, reports each one it refuses, waits
// until the RBAC authorizer answers from the roles among them, and returns an admin
// client of that server.
func applyAll(t *testing.T, objs []*unstructured.Unstructured, fieldOwner string) client.Client {
	t.Helper()
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
	for _, o := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o),
			client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			t.Errorf("applying %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, o := range objs {
		if o.GroupVersionKind().Group == rbacv1.GroupName {
			waitForRBAC(t, c)
			break
		}
	}
	return c
}

// waitForRBAC returns once the API server's RBAC authorizer answers from every Role,
// ClusterRole and binding applied so far. The authorizer reads them from informers, so
// a SubjectAccessReview sent right after the apply may be answered without them (a
// test saw "may not list" for a ClusterRoleBinding applied a moment before). It grants
// a user of its own one thing through a ClusterRole and its binding and another
// through a Role and its binding, all applied after everything else: each informer
// delivers its kind in the order written, so once both are allowed every earlier
// object is in.
func waitForRBAC(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	const user, ns = "rbac-sentinel", "default"
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	rule := func(name string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{name}}}
	}
	for _, o := range []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "rbac-sentinel-cluster"}, Rules: rule("rbac-sentinel-cluster")},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "rbac-sentinel-cluster"}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "rbac-sentinel-cluster"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "rbac-sentinel-ns", Namespace: ns}, Rules: rule("rbac-sentinel-ns")},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "rbac-sentinel-ns", Namespace: ns}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "rbac-sentinel-ns"}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating the RBAC sentinel %T: %v", o, err)
		}
	}
	for _, name := range []string{"rbac-sentinel-cluster", "rbac-sentinel-ns"} {
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Namespace: ns, Name: name}}}
			if err := c.Create(ctx, review); err != nil {
				return false, err
			}
			return review.Status.Allowed, nil
		}); err != nil {
			t.Fatalf("the RBAC authorizer did not see %s within 30 s: %v", name, err)
		}
	}
}

func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := make([]*unstructured.Unstructured, 0, len(resMap.Resources()))
	for _, r := range resMap.Resources() {
		// Through JSON: kyaml's maps hold Go ints, which unstructured helpers refuse.
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}
