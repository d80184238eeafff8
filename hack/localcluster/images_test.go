package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/localcluster/node"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// The image map resolves exact references, so every reference this repository
// runs on the local cluster must be in it: the chart's default manager image (its
// appVersion), kustomize's, the bundled database's default, and the images the
// demo, the samples and the end-to-end tests name. A release that bumps a version
// fails here instead of leaving `make demo` in ImagePullBackOff.
func TestImageMapHasEveryImageThisRepositoryRuns(t *testing.T) {
	root := filepath.Join("..", "..")
	// The end-to-end tests load their own images (test builds, relying parties) with
	// `localcluster load` from test/e2e/testdata; every other image must be in the
	// node's own map.
	loaded, err := filepath.Glob(filepath.Join(root, "test", "e2e", "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := node.LoadImageFiles(append([]string{"images.yaml"}, loaded...)...)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string

	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	var values struct {
		Image struct{ Repository, Tag string } `json:"image"`
	}
	readYAML(t, filepath.Join(root, "charts", "kubeoauth", "Chart.yaml"), &chart)
	readYAML(t, filepath.Join(root, "charts", "kubeoauth", "values.yaml"), &values)
	tag := values.Image.Tag
	if tag == "" {
		tag = chart.AppVersion
	}
	refs = append(refs, values.Image.Repository+":"+tag)

	var kustomization struct {
		Images []struct{ NewName, NewTag string } `json:"images"`
	}
	readYAML(t, filepath.Join(root, "config", "manager", "kustomization.yaml"), &kustomization)
	for _, img := range kustomization.Images {
		refs = append(refs, img.NewName+":"+img.NewTag)
	}

	db := resources.DatabaseStatefulSet(&oauthv1alpha1.TokenServer{Spec: oauthv1alpha1.TokenServerSpec{
		Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{}}}})
	for _, c := range db.Spec.Template.Spec.Containers {
		refs = append(refs, c.Image)
	}

	// Manifests and Go sources that name images: `image: X` and `Image: "X"`.
	named := regexp.MustCompile(`(?m)(?:^\s*image:\s*|Image:\s*")([a-z0-9][^"\s]*)`)
	sources := []string{filepath.Join(root, "hack", "demo", "steps.go")}
	for _, glob := range []string{"config/samples/*.yaml", "test/e2e/*.go"} {
		more, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, more...)
	}
	for _, f := range sources {
		data, err := os.ReadFile(f) // #nosec G304 -- files of this repository
		if err != nil {
			t.Fatal(err)
		}
		for _, match := range named.FindAllStringSubmatch(string(data), -1) {
			refs = append(refs, match[1])
		}
	}
	if len(refs) < 5 {
		t.Fatalf("found only %q: the test no longer finds the repository's images", refs)
	}
	slices.Sort(refs)
	for _, ref := range slices.Compact(refs) {
		if _, err := m.Lookup(ref); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path) // #nosec G304 -- files of this repository
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
