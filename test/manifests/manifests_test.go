package manifests

import (
	"context"
	"path/filepath"
	"testing"

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

// applyAll applies objs, in order, to a real API server (envtest, with the CRDs of
// config/crd/bases installed) as fieldOwner, and reports each one it refuses.
// applyAll applies objs to a fresh API server and returns an admin client of it.
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
	return c
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
