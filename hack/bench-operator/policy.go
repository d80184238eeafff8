package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// installFinalizerPolicy creates the admission policy objects of config/default, as
// `make deploy` renders them, and waits until the API server applies the policy.
func installFinalizerPolicy(ctx context.Context, c client.Client) error {
	dir := filepath.Join(testenv.RepoRoot(), "config", "default")
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	n := 0
	for _, r := range resMap.Resources() {
		if r.GetGvk().Group != "admissionregistration.k8s.io" {
			continue
		}
		data, err := r.MarshalJSON()
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return err
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no admission policy", dir)
	}
	// The API server loads policies from an informer: a dry-run create shows when.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		probe := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "probe"},
			Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: "Probe",
				GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"}}}
		if err := c.Create(ctx, probe, client.DryRunAll); err == nil && slices.Contains(probe.Finalizers, controllers.Finalizer) {
			fmt.Println("finalizer policy in force (config/admission)")
			return nil
		}
	}
	return fmt.Errorf("the finalizer policy of %s is not in force after 30 s", dir)
}
