package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
// gone, then the TokenServers.
func deleteResources(ctx context.Context, args []string, getConfig func() (*rest.Config, error), out io.Writer) error {
	fs := flag.NewFlagSet("delete-resources", flag.ContinueOnError)
	namespaces := fs.String("namespaces", "",
		"Comma-separated namespaces (the operator's --watch-namespaces); empty: every namespace.")
	timeout := fs.Duration("timeout", 5*time.Minute, "How long to wait for each kind to be gone.")
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
	// Grants and clients first: their finalizers revoke through the TokenServer,
	// which must still be there.
	for _, step := range [][]client.ObjectList{
		{&oauthv1alpha1.ConsentGrantList{}, &oauthv1alpha1.OAuthClientList{}},
		{&oauthv1alpha1.TokenServerList{}},
	} {
		if err := deleteAndWait(ctx, c, step, nss, *timeout, out); err != nil {
			return err
		}
	}
	return nil
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
					kind := strings.TrimSuffix(fmt.Sprintf("%T", list), "List")
					kind = kind[strings.LastIndex(kind, ".")+1:]
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
