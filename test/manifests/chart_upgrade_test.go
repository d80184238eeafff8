package manifests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

var crdNames = []string{"oauthclients.oauth.kubeoauth.io", "consentgrants.oauth.kubeoauth.io", "tokenservers.oauth.kubeoauth.io"}

// TestChartUpgradeUpdatesTheCRDs: a release of the chart as 0.1.0 shipped it (the CRDs
// in crds/, which Helm installs once and never upgrades), with an OAuthClient CRD that
// lacks a field, upgraded to this chart on a real API server: the CRD is this one,
// owned by the release, and resources survive. `helm uninstall` then keeps the CRDs
// (crds.keep, the default); with crds.keep=false only its hook deletes them.
func TestChartUpgradeUpdatesTheCRDs(t *testing.T) {
	kubeconfig, c := chartAPIServer(t)
	ctx := context.Background()
	run := func(args ...string) {
		t.Helper()
		helmOn(t, kubeconfig, args...)
	}

	// testenv installed this version's CRDs; put the old chart's in their place, as a
	// cluster that ran 0.1.0 has them (Helm installs crds/ only where they are missing,
	// so the old release leaves these as they are).
	old := oldChart(t)
	for _, name := range crdNames {
		current := crd(name)
		if err := c.Get(ctx, client.ObjectKeyFromObject(current), current); err != nil {
			t.Fatal(err)
		}
		previous := readObject(t, filepath.Join(old, "crds", strings.Split(name, ".")[0]+".yaml"))
		previous.SetResourceVersion(current.GetResourceVersion())
		if err := c.Update(ctx, previous); err != nil {
			t.Fatal(err)
		}
		// Owned by Helm alone, which applied them server-side (Helm 4 installs crds/
		// so), not also by the test that wrote them: a co-owner would make Helm's
		// upgrade conflict, which a cluster that ran 0.1.0 does not see.
		previous = readObject(t, filepath.Join(old, "crds", strings.Split(name, ".")[0]+".yaml"))
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(previous), client.FieldOwner("helm"),
			client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(current), current); err != nil {
			t.Fatal(err)
		}
		var helmOnly []metav1.ManagedFieldsEntry
		for _, m := range current.GetManagedFields() {
			if m.Manager == "helm" {
				helmOnly = append(helmOnly, m)
			}
		}
		current.SetManagedFields(helmOnly)
		if err := c.Update(ctx, current); err != nil {
			t.Fatal(err)
		}
	}

	run("install", "kubeoauth", old, "--namespace", "kubeoauth-system", "--create-namespace")
	if hasTosURI(t, c) {
		t.Fatal("the old chart's OAuthClient CRD has spec.tosURI: the test's old chart is not old")
	}
	ns := namespaceObject("observability")
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	sample := readObject(t, filepath.Join(testenv.RepoRoot(), "config", "samples", "oauth_v1alpha1_oauthclient.yaml"))
	if err := c.Create(ctx, sample); err != nil {
		t.Fatal(err)
	}

	// Releases of 0.1.0 did not own their CRDs; --take-ownership adopts them once.
	run("upgrade", "kubeoauth", chartDir(), "--namespace", "kubeoauth-system", "--take-ownership")
	if !hasTosURI(t, c) {
		t.Error("helm upgrade left the OAuthClient CRD as the old chart installed it (no spec.tosURI)")
	}
	for _, name := range crdNames {
		got := crd(name)
		if err := c.Get(ctx, client.ObjectKeyFromObject(got), got); err != nil {
			t.Fatal(err)
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" || got.GetAnnotations()["meta.helm.sh/release-name"] != "kubeoauth" {
			t.Errorf("CRD %s after the upgrade: annotations %v, want the release's and resource-policy keep", name, got.GetAnnotations())
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(sample), sample.DeepCopy()); err != nil {
		t.Errorf("the OAuthClient did not survive the upgrade: %v", err)
	}

	run("uninstall", "kubeoauth", "--namespace", "kubeoauth-system", "--wait")
	waitCRDs(t, c, true)
	if err := c.Get(ctx, client.ObjectKeyFromObject(sample), sample.DeepCopy()); err != nil {
		t.Errorf("the OAuthClient did not survive helm uninstall with crds.keep: %v", err)
	}

	// The kept CRDs still name the release, so installing it again adopts them.
	// crds.keep=false: the CRDs are deleted by the pre-delete hook Job
	// (delete-resources --delete-crds, TestDeleteResourcesBeforeTheCRDs), which
	// envtest does not run, not by Helm: they still say keep, so that no upgrade
	// (to crds.enabled=false) deletes them. Without the hook they stay.
	run("install", "kubeoauth", chartDir(), "--namespace", "kubeoauth-system", "--set", "crds.keep=false")
	run("uninstall", "kubeoauth", "--namespace", "kubeoauth-system", "--wait", "--no-hooks")
	waitCRDs(t, c, true)
}

// helmOn runs the pinned helm against the API server of kubeconfig.
func helmOn(t *testing.T, kubeconfig string, args ...string) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append(args, "--kubeconfig", kubeconfig)...) // #nosec G204 -- the pinned helm, with the test's arguments
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// oldChart writes the chart as 0.1.0 shipped it: the CRDs in crds/ rather than
// templates, and an OAuthClient CRD from before spec.tosURI.
func oldChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kubeoauth")
	if err := os.CopyFS(dir, os.DirFS(chartDir())); err != nil {
		t.Fatal(err)
	}
	// 0.1.0 had no finalizer admission policy either: with it, the OAuthClient the test
	// creates under the old release would carry the operator's finalizer, which no
	// operator removes here, and the last uninstall's CRD deletion would never end.
	for _, d := range []string{filepath.Join(dir, "templates", "crds"), filepath.Join(dir, "crds"),
		filepath.Join(dir, "templates", "admission.yaml")} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "crds"), 0o750); err != nil {
		t.Fatal(err)
	}
	bases := filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")
	entries, err := os.ReadDir(bases)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		o := readObject(t, filepath.Join(bases, e.Name()))
		if o.GetName() == "oauthclients.oauth.kubeoauth.io" {
			versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
			for _, v := range versions {
				unstructured.RemoveNestedField(v.(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", "tosURI")
			}
			if err := unstructured.SetNestedSlice(o.Object, versions, "spec", "versions"); err != nil {
				t.Fatal(err)
			}
		}
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "crds", strings.Split(o.GetName(), ".")[0]+".yaml"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	chart := filepath.Join(dir, "Chart.yaml")
	data, err := os.ReadFile(chart) // #nosec G304 -- the test's copy
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	meta["version"] = "0.1.0"
	if data, err = yaml.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chart, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path) // #nosec G304 -- the repository's files
	if err != nil {
		t.Fatal(err)
	}
	o := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &o.Object); err != nil {
		t.Fatal(err)
	}
	return o
}

func crd(name string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion("apiextensions.k8s.io/v1")
	o.SetKind("CustomResourceDefinition")
	o.SetName(name)
	return o
}

func hasTosURI(t *testing.T, c client.Client) bool {
	t.Helper()
	o := crd("oauthclients.oauth.kubeoauth.io")
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(o), o); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
	_, found, _ := unstructured.NestedMap(versions[0].(map[string]any),
		"schema", "openAPIV3Schema", "properties", "spec", "properties", "tosURI")
	return found
}

// waitCRDs waits until the three CRDs all exist (present) or are all gone: a CRD's
// deletion finishes after the API server removed its resources.
func waitCRDs(t *testing.T, c client.Client, present bool) {
	t.Helper()
	var state string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			for _, name := range crdNames {
				err := c.Get(ctx, client.ObjectKeyFromObject(crd(name)), crd(name))
				switch {
				case err == nil && !present:
					state = name + " still exists"
					return false, nil
				case apierrors.IsNotFound(err) && present:
					state = name + " is gone"
					return false, nil
				case err != nil && !apierrors.IsNotFound(err):
					return false, err
				}
			}
			return true, nil
		})
	if err != nil {
		t.Fatalf("waiting for the CRDs to be %s: %v (%s)", map[bool]string{true: "present", false: "gone"}[present], err, state)
	}
}

// chartAPIServer starts an API server of its own for a test that installs the chart
// with helm: a kubeconfig for helm and an admin client.
func chartAPIServer(t *testing.T) (kubeconfig string, c client.Client) {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	if c, err = client.New(env.Config, client.Options{}); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, c
}

// namespaceObject is a Namespace named name, to create or apply.
func namespaceObject(name string) *unstructured.Unstructured {
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	return ns
}
