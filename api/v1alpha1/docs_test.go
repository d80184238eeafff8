package v1alpha1_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

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
