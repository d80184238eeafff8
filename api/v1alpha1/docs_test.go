package v1alpha1_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/pages"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// yamlObjects is every whole object (with apiVersion and kind) in the ```yaml blocks
// of a Markdown file, by the line its block starts on; fragments of a spec
// are not objects and are left out.
func yamlObjects(t *testing.T, file string) map[int][]*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(file) // #nosec G304 -- the repository's docs
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	objects := map[int][]*unstructured.Unstructured{}
	block := make([]string, 0, 32)
	start := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		l := sc.Text()
		switch {
		case start == 0 && strings.TrimSpace(l) == "```yaml":
			start, block = line, block[:0]
		case start != 0 && strings.TrimSpace(l) == "```":
			for _, doc := range strings.Split(strings.Join(block, "\n"), "\n---") {
				u := &unstructured.Unstructured{}
				if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
					t.Errorf("%s:%d: not YAML: %v", file, start, err)
					continue
				}
				if u.GetAPIVersion() != "" && u.GetKind() != "" {
					objects[start] = append(objects[start], u)
				}
			}
			start = 0
		case start != 0:
			block = append(block, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return objects
}

// Every object in the docs a newcomer copies is accepted by a real API server as it
// stands (server-side apply, which also refuses unknown fields, as a dry run): a
// TokenServer missing a required field, or a misspelled one, fails here. Objects of
// kinds the API server does not serve (a kube-apiserver configuration file) are
// left out; kubeoauth's own never are.
func TestDocsObjectsApply(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	integrations, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "docs", "integrations", "*.md"))
	if err != nil || len(integrations) == 0 {
		t.Fatalf("no docs/integrations/*.md: %v", err)
	}
	files = append(files, integrations...)
	ctx := context.Background()
	ours := 0
	for _, file := range files {
		rel, _ := filepath.Rel(testenv.RepoRoot(), file)
		for line, objs := range yamlObjects(t, file) {
			for _, u := range objs {
				gvk := u.GroupVersionKind()
				_, err := k8s.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
				if meta.IsNoMatchError(err) && gvk.Group != "oauth.kubeoauth.io" {
					t.Logf("%s:%d: %s is not served by an API server: left out", rel, line, gvk)
					continue
				}
				if gvk.Group == "oauth.kubeoauth.io" {
					ours++
				}
				checkTemplates(t, rel, line, u)
				if ns := u.GetNamespace(); ns != "" {
					ensureNamespace(t, ns)
				}
				err = k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("docs-test"),
					client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Errorf("%s:%d: the API server refuses %s %s: %v", rel, line, u.GetKind(), u.GetName(), err)
				}
			}
		}
	}
	t.Logf("%d kubeoauth objects applied", ours)
	if ours == 0 {
		t.Error("no kubeoauth object found in the docs: is the ```yaml extraction broken?")
	}
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	switch {
	case err == nil:
		t.Cleanup(func() { _ = k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}) })
	case !apierrors.IsAlreadyExists(err):
		t.Fatal(err)
	}
}

// checkTemplates checks a ConfigMap of page templates in the docs as the operator
// would: an example that the operator refuses is no example.
func checkTemplates(t *testing.T, rel string, line int, u *unstructured.Unstructured) {
	t.Helper()
	if u.GetKind() != "ConfigMap" {
		return
	}
	data, _, _ := unstructured.NestedStringMap(u.Object, "data")
	for k := range data {
		if !strings.HasSuffix(k, ".html") {
			return
		}
	}
	if _, err := pages.Parse(data); err != nil {
		t.Errorf("%s:%d: the operator refuses the templates of ConfigMap %s: %v", rel, line, u.GetName(), err)
	}
}
