package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
)

// `manager delete-resources` (the chart's pre-delete hook with crds.keep=false)
// deletes the watched namespaces' grants, clients and TokenServers while the
// operator runs, so their finalizers are released and the CRDs can go; it leaves
// other namespaces alone, and names what a finalizer still holds when time is up.
func TestDeleteResourcesBeforeTheCRDs(t *testing.T) {
	env, path := apiServerWithKubeconfig(t)
	c, err := client.New(env.Config, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{"kubeoauth-system", "team-a", "other"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--kubeconfig", path, "--health-probe-bind-address", "0", "--metrics-bind-address", "0",
			"--watch-namespaces", "team-a"}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "https://auth.example.com", External: &oauthv1alpha1.ExternalTokenServer{
			AdminURL: "https://127.0.0.1:1", TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "missing"}}}}
	app := func(ns string) *oauthv1alpha1.OAuthClient {
		return &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
			Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: "team-a"},
				ClientName: "App", GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"}}}
	}
	grant := &oauthv1alpha1.ConsentGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "alice"},
		Spec: oauthv1alpha1.ConsentGrantSpec{ClientRef: oauthv1alpha1.LocalObjectReference{Name: "app"}, Subject: "alice",
			Scopes: []oauthv1alpha1.Scope{"openid"}}}
	watched, elsewhere := app("team-a"), app("other")
	for _, o := range []client.Object{ts, watched, elsewhere, grant} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The operator holds the watched client and grant with its finalizer, as it does
	// every one it reconciles.
	deadline := time.Now().Add(30 * time.Second)
	for _, o := range []client.Object{watched, grant} {
		for !slices.Contains(o.GetFinalizers(), controllers.Finalizer) {
			if time.Now().After(deadline) {
				t.Fatalf("the operator never added its finalizer to %T %s", o, o.GetName())
			}
			time.Sleep(100 * time.Millisecond)
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
				t.Fatal(err)
			}
		}
	}

	cfg := func() (*rest.Config, error) { return env.Config, nil }
	var out bytes.Buffer
	// The CRDs too (crds.keep=false), but an OAuthClient outside the watched
	// namespaces, another release's, would go with them: refused before anything
	// is deleted, naming it.
	err = deleteResources(ctx, []string{"--namespaces", "team-a", "--timeout", "30s", "--delete-crds"}, cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "OAuthClient other/app") {
		t.Errorf("delete-resources --delete-crds with an OAuthClient outside --namespaces: %v, want a refusal naming it", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(watched), watched); err != nil || watched.GetDeletionTimestamp() != nil {
		t.Errorf("the refused delete-resources --delete-crds deleted %s/%s (%v)", watched.Namespace, watched.Name, err)
	}
	if err := deleteResources(ctx, []string{"--namespaces", "team-a", "--timeout", "30s"}, cfg, &out); err != nil {
		t.Fatalf("delete-resources: %v\n%s", err, out.String())
	}
	for _, o := range []client.Object{ts, watched, grant} {
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s/%s after delete-resources: %v, want gone", o, o.GetNamespace(), o.GetName(), err)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(elsewhere), elsewhere); err != nil || elsewhere.GetDeletionTimestamp() != nil {
		t.Errorf("the OAuthClient outside the watched namespaces: %v, deleting %v; want it left alone", err, elsewhere.GetDeletionTimestamp())
	}

	// A finalizer no one releases: the hook fails, naming the object, instead of
	// the uninstall hanging on Terminating CRDs.
	held := app("team-a")
	held.Name, held.Finalizers = "held", []string{"example.com/hold"}
	if err := c.Create(ctx, held); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(held), held); err == nil {
			held.Finalizers = nil
			_ = c.Update(context.Background(), held)
		}
	})
	err = deleteResources(ctx, []string{"--namespaces", "team-a", "--timeout", "2s"}, cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "OAuthClient team-a/held") {
		t.Errorf("delete-resources with a finalizer held: %v, want an error naming OAuthClient team-a/held", err)
	}

	// Once nothing else is left (the held one released, the other namespace's
	// deleted), --delete-crds deletes the CRDs after the resources and waits until
	// they are gone: they carry helm.sh/resource-policy: keep, so Helm does not.
	if err := c.Get(ctx, client.ObjectKeyFromObject(held), held); err != nil {
		t.Fatal(err)
	}
	held.Finalizers = nil
	if err := c.Update(ctx, held); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := deleteResources(ctx, []string{"--namespaces", "team-a", "--timeout", "30s", "--delete-crds"}, cfg, &out); err != nil {
		t.Fatalf("delete-resources --delete-crds: %v\n%s", err, out.String())
	}
	for _, name := range crdNames {
		crd := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1",
			Kind: "CustomResourceDefinition"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd), crd); !apierrors.IsNotFound(err) {
			t.Errorf("CRD %s after delete-resources --delete-crds: %v, want gone", name, err)
		}
	}
}
