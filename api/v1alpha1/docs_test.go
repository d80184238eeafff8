package v1alpha1_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// The OAuthClients in docs/identity.md's grant sections are accepted by the API
// server as written (in this test's namespace): readers copy them.
func TestIdentityDocOAuthClients(t *testing.T) {
	doc, err := os.ReadFile("../../docs/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	found := 0
	for _, b := range blocks {
		if !strings.Contains(b[1], "kind: OAuthClient") || !strings.Contains(b[1], "urn:ietf:params:oauth:grant-type:") {
			continue
		}
		found++
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(b[1]), &obj.Object); err != nil {
			t.Fatalf("example %d is not YAML: %v", found, err)
		}
		obj.SetNamespace(ns)
		if err := k8s.Create(context.Background(), &obj, client.DryRunAll); err != nil {
			t.Errorf("example %s refused: %v", obj.GetName(), err)
		}
	}
	if found != 2 {
		t.Errorf("found %d device or JWT bearer OAuthClient examples; want 2", found)
	}
}

// The kubeoauth objects in the integration pages are accepted by the API server as
// written: a reader can apply them.
func TestIntegrationDocsYAML(t *testing.T) {
	for _, page := range []string{"../../docs/integrations/upstream-oidc.md"} {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, block := range strings.Split(string(data), "```yaml\n")[1:] {
			block, _, _ = strings.Cut(block, "```")
			for _, doc := range strings.Split(block, "\n---\n") {
				var obj unstructured.Unstructured
				if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
					t.Fatalf("%s: %v\n%s", page, err, doc)
				}
				if !strings.HasPrefix(obj.GetAPIVersion(), "oauth.kubeoauth.io/") {
					continue
				}
				obj.SetNamespace(ns)
				if err := k8s.Create(context.Background(), &obj, client.DryRunAll); err != nil {
					t.Errorf("%s: %s %s refused: %v", page, obj.GetKind(), obj.GetName(), err)
				}
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: no kubeoauth object found", page)
		}
	}
}
