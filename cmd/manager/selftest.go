package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeoauth/kubeoauth/internal/crdschema"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

//go:generate go run ../../hack/crd-digests ../../config/crd/bases zz_generated.crddigests.go

// selfTest is `manager self-test`, the chart's `helm test`: what an installed operator
// needs to work, checked from inside the cluster. The three CRDs are served
// (Established) and are the ones this operator was built with (a CRD older than the
// operator, left by crds.enabled=false or reverted by a GitOps tool, makes the API
// server drop the fields it lacks, from specs and from the status the operator
// writes, with no error anywhere), and a replica leads: the leader-election Lease is held and was renewed
// lately, which a crash-looping or never-scheduled operator does not do.
func selfTest(ctx context.Context, args []string, getConfig func() (*rest.Config, error), out io.Writer) error {
	fs := flag.NewFlagSet("self-test", flag.ContinueOnError)
	ns := fs.String("namespace", "", "Namespace of the operator's leader-election Lease.")
	leaseName := fs.String("lease", leaderElectionID, "Name of the operator's leader-election Lease (its --leader-election-id).")
	holderPrefix := fs.String("holder-prefix", "",
		"The leader's pod name starts with this (the Deployment's name and a dash): a Lease held by another "+
			"release's operator, sharing its name, does not pass for this one leading.")
	fresh := fs.Duration("lease-renewed-within", time.Minute, "How recently the Lease must have been renewed.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ns == "" {
		return errors.New("--namespace is required")
	}
	cfg, err := getConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var failed []error
	for _, name := range crdNames {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			failed = append(failed, fmt.Errorf("CRD %s: %w", name, err))
			continue
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		established := false
		for _, cond := range conds {
			if m, ok := cond.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				established = true
			}
		}
		if !established {
			failed = append(failed, fmt.Errorf("CRD %s is not Established", name))
			continue
		}
		if digest, err := crdschema.Digest(crd.Object); err != nil {
			failed = append(failed, fmt.Errorf("CRD %s: %w", name, err))
			continue
		} else if digest != crdSchemaDigests[name] {
			failed = append(failed, fmt.Errorf("CRD %s is not the one this operator (%s) was built with: its schema "+
				"differs, and the API server drops the fields it does not know from specs and from the status the "+
				"operator writes. With the chart's crds.enabled (the default), helm upgrade the release that owns the "+
				"CRDs to this version; with crds.enabled=false, apply this version's config/crd/bases "+
				"(kubectl apply --server-side -f config/crd/bases)", name, version.Version))
			continue
		}
		_, _ = fmt.Fprintf(out, "ok: CRD %s established, this operator's version of it\n", name)
	}
	var lease coordinationv1.Lease
	key := client.ObjectKey{Namespace: *ns, Name: *leaseName}
	switch err := c.Get(ctx, key, &lease); {
	case err != nil:
		failed = append(failed, fmt.Errorf("no operator leads: Lease %s: %w", key, err))
	case lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "":
		failed = append(failed, fmt.Errorf("no operator leads: Lease %s has no holder", key))
	// controller-runtime's holder identity is the leader's hostname (its pod's
	// name), "_", a UUID.
	case !strings.HasPrefix(*lease.Spec.HolderIdentity, *holderPrefix):
		failed = append(failed, fmt.Errorf("the Lease %s is held by %s, not by a pod of this release (%s*): "+
			"another operator uses the same Lease; give each its own --leader-election-id", key, *lease.Spec.HolderIdentity, *holderPrefix))
	case lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > *fresh:
		failed = append(failed, fmt.Errorf("the operator's Lease %s was not renewed within %s: its leader %s is gone or stuck",
			key, *fresh, *lease.Spec.HolderIdentity))
	default:
		_, _ = fmt.Fprintf(out, "ok: %s leads (Lease %s renewed %s ago)\n", *lease.Spec.HolderIdentity, key,
			time.Since(lease.Spec.RenewTime.Time).Round(time.Second))
	}
	return errors.Join(failed...)
}
