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
