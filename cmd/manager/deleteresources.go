package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// deleteResources is `manager delete-resources`, the chart's pre-delete hook when
// crds.keep is false: that uninstall deletes the CRDs after the operator, and the
// OAuthClients and ConsentGrants they take with them keep their finalizers, which
// only the operator releases, so they and their CRDs would stay Terminating and
// nothing would be revoked. Run while the operator still runs, it deletes the grants
// and clients (the operator revokes what they granted) and waits until they are
// gone, then the TokenServers. With --delete-crds it then deletes the three CRDs,
// which carry helm.sh/resource-policy: keep so that no helm upgrade deletes them.
func deleteResources(ctx context.Context, args []string, getConfig func() (*rest.Config, error), out io.Writer) error {
	fs := flag.NewFlagSet("delete-resources", flag.ContinueOnError)
	namespaces := fs.String("namespaces", "",
		"Comma-separated namespaces (the operator's --watch-namespaces); empty: every namespace.")
	timeout := fs.Duration("timeout", 5*time.Minute, "How long to wait for each kind to be gone.")
	deleteCRDs := fs.Bool("delete-crds", false,
		"Then delete the three CRDs; refused, before anything is deleted, while resources exist outside --namespaces.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := getConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(oauthv1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	nss := []string{""}
	if *namespaces != "" {
		nss = strings.Split(*namespaces, ",")
	}
	kinds := []client.ObjectList{&oauthv1alpha1.ConsentGrantList{}, &oauthv1alpha1.OAuthClientList{},
		&oauthv1alpha1.TokenServerList{}}
	if *deleteCRDs && *namespaces != "" {
		// Another release's (one watching other namespaces): deleting the CRDs would
		// delete them, without their finalizers run by an operator that watches them.
		if others, err := outside(ctx, c, kinds, nss); err != nil {
			return err
		} else if len(others) > 0 {
			return fmt.Errorf("not deleting the CRDs, nor anything else: these resources are outside --namespaces=%s "+
				"(another release's?) and deleting the CRDs would delete them too: %s; delete them first, or keep the CRDs "+
				"(helm upgrade --reuse-values --set crds.keep=true, then helm uninstall)", *namespaces, strings.Join(others, ", "))
		}
	}
	// Grants and clients first: their finalizers revoke through the TokenServer,
	// which must still be there.
	for _, step := range [][]client.ObjectList{kinds[:2], kinds[2:]} {
		if err := deleteAndWait(ctx, c, step, nss, *timeout, out); err != nil {
			return err
		}
	}
	if *deleteCRDs {
		return deleteCRDsAndWait(ctx, c, *timeout, out)
	}
	return nil
}

// crdNames are the operator's CRDs, as the chart's hook RBAC names them.
var crdNames = []string{"oauthclients.oauth.kubeoauth.io", "consentgrants.oauth.kubeoauth.io", "tokenservers.oauth.kubeoauth.io"}

// outside names the resources of the kinds in namespaces other than nss.
func outside(ctx context.Context, c client.Client, kinds []client.ObjectList, nss []string) ([]string, error) {
	var names []string
	for _, list := range kinds {
		if err := c.List(ctx, list); err != nil {
			if apierrors.IsNotFound(err) {
				continue // no such CRD
			}
			return nil, err
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			if o := item.(client.Object); !slices.Contains(nss, o.GetNamespace()) {
				names = append(names, fmt.Sprintf("%s %s/%s", kindOf(list), o.GetNamespace(), o.GetName()))
			}
		}
	}
	return names, nil
}

// deleteCRDsAndWait deletes the three CRDs and waits until the API server has
// removed them, so that a release installed right after finds none terminating.
func deleteCRDsAndWait(ctx context.Context, c client.Client, timeout time.Duration, out io.Writer) error {
	crd := func(name string) *unstructured.Unstructured {
		o := &unstructured.Unstructured{}
		o.SetAPIVersion("apiextensions.k8s.io/v1")
		o.SetKind("CustomResourceDefinition")
		o.SetName(name)
		return o
	}
	for _, name := range crdNames {
		if err := c.Delete(ctx, crd(name)); client.IgnoreNotFound(err) != nil {
			return err
		}
		_, _ = fmt.Fprintf(out, "deleted CustomResourceDefinition %s\n", name)
	}
	var left []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		left = nil
		for _, name := range crdNames {
			o := crd(name)
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); client.IgnoreNotFound(err) != nil {
				return false, err
			} else if err == nil {
				left = append(left, name)
			}
		}
		return len(left) == 0, nil
	})
	if err != nil && len(left) > 0 {
		return fmt.Errorf("CRDs still there after %s (kubectl describe crd shows why): %s", timeout, strings.Join(left, ", "))
	}
	return err
}

func kindOf(list client.ObjectList) string {
	kind := strings.TrimSuffix(fmt.Sprintf("%T", list), "List")
	return kind[strings.LastIndex(kind, ".")+1:]
}

// deleteAndWait deletes every object of the lists' kinds in the namespaces and
// polls until none is left, naming those that stay when the time is up.
func deleteAndWait(ctx context.Context, c client.Client, lists []client.ObjectList, nss []string, timeout time.Duration,
	out io.Writer) error {
	left := func(deleteThem bool) ([]string, error) {
		var names []string
		for _, list := range lists {
			for _, ns := range nss {
				if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
					return nil, err
				}
				items, err := meta.ExtractList(list)
				if err != nil {
					return nil, err
				}
				for _, item := range items {
					o := item.(client.Object)
					kind := kindOf(list)
					names = append(names, fmt.Sprintf("%s %s/%s", kind, o.GetNamespace(), o.GetName()))
					if deleteThem && o.GetDeletionTimestamp() == nil {
						if err := c.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
							return nil, err
						}
						_, _ = fmt.Fprintf(out, "deleted %s %s/%s\n", kind, o.GetNamespace(), o.GetName())
					}
				}
			}
		}
		return names, nil
	}
	if _, err := left(true); err != nil {
		return err
	}
	var names []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		names, err = left(false)
		if apierrors.IsNotFound(err) {
			return true, nil // the CRD is gone already
		}
		return err == nil && len(names) == 0, err
	})
	if err != nil && len(names) > 0 {
		return fmt.Errorf("still there after %s (is the operator running? kubectl describe shows why): %s",
			timeout, strings.Join(names, ", "))
	}
	return err
}
