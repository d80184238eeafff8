package controllers_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// bindFinalizerPolicy installs the MutatingAdmissionPolicy that `make deploy` and the
// chart ship (config/admission), bound to namespace ns only, as the chart binds it
// to its watchNamespaces (other tests of the suite run without it), and waits until
// the API server applies it.
func bindFinalizerPolicy(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile("../config/admission/finalizer_policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var policy admissionregistrationv1.MutatingAdmissionPolicy
	if err := yaml.UnmarshalStrict(data, &policy); err != nil {
		t.Fatalf("config/admission/finalizer_policy.yaml: %v", err)
	}
	policy.Name = "finalizer-" + ns
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}}}
	for _, o := range []client.Object{&policy, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), o) })
	}
	// The API server loads policies from its informer: a dry-run create shows when.
	eventually(t, 20*time.Second, "the finalizer policy is in force", func() bool {
		probe := newClient(ns, "probe", "", nil)
		err := k8s.Create(ctx, probe, client.DryRunAll)
		return err == nil && slices.Contains(probe.Finalizers, controllers.Finalizer)
	}, nil)
}

// With the shipped admission policy, a new OAuthClient or ConsentGrant carries the
// operator's finalizer as the API server answers its create, so the operator writes
// it only once before Ready, its status; and such an object is finalized as any.
func TestFinalizerPolicyAddsFinalizerAtCreate(t *testing.T) {
	ctx := context.Background()
	ns := firstPartyServer(t, "")
	bindFinalizerPolicy(t, ns)
	wc, err := client.NewWithWatch(mgrConfig, client.Options{Scheme: mgrScheme})
	if err != nil {
		t.Fatal(err)
	}

	oc := newClient(ns, "grafana", "", nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(oc.Finalizers, controllers.Finalizer) {
		t.Fatalf("OAuthClient as created: finalizers %v, want %s from the admission policy", oc.Finalizers, controllers.Finalizer)
	}
	// Every write to the object from its create until Ready changes its status: none
	// is the operator's adding the finalizer.
	w, err := wc.Watch(ctx, &oauthv1alpha1.OAuthClientList{}, client.InNamespace(ns),
		client.MatchingFields{"metadata.name": oc.Name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: oc.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	last, writes := oc.DeepCopy(), 0
	timeout := time.After(20 * time.Second)
	for !meta.IsStatusConditionTrue(last.Status.Conditions, oauthv1alpha1.ConditionReady) {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Modified {
				t.Fatalf("watch: %s %+v", ev.Type, ev.Object)
			}
			got := ev.Object.(*oauthv1alpha1.OAuthClient)
			writes++
			if equality.Semantic.DeepEqual(got.Status, last.Status) {
				t.Errorf("write %d before Ready left the status as it was: finalizers %v, labels %v, annotations %v",
					writes, got.Finalizers, got.Labels, got.Annotations)
			}
			last = got
		case <-timeout:
			t.Fatalf("not Ready within 20s after %d writes: %+v", writes, last.Status)
		}
	}

	cg := grant(ns, oc.Name, "alice", "zones.read")
	if err := k8s.Create(ctx, cg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cg.Finalizers, controllers.Finalizer) {
		t.Errorf("ConsentGrant as created: finalizers %v, want %s", cg.Finalizers, controllers.Finalizer)
	}
	waitCondition(t, cg, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")

	if gs := serverGrants(t, last.Status.ClientID, "alice"); len(gs) != 1 {
		t.Fatalf("grants on the token server: %+v", gs)
	}
	for _, o := range []client.Object{cg, oc} {
		if err := k8s.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "deleted "+o.GetName()+" is gone", func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(o), o))
		}, nil)
		if o == cg {
			if gs := serverGrants(t, last.Status.ClientID, "alice"); len(gs) != 0 {
				t.Errorf("the grant outlived its resource: %+v", gs)
			}
		}
	}
	if _, err := admin.GetClient(ctx, last.Status.ClientID); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("client still on the token server after delete: %v", err)
	}
}

// Without the policy (an older cluster, a namespace outside its binding, objects
// created before it) the operator adds the finalizer itself before it registers
// anything, and a delete still removes the client from the token server.
func TestFinalizerWithoutPolicy(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "platform", nil)
	externalServer(t, ns, nil)
	oc := newClient(ns, "grafana", "", nil)
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	if len(oc.Finalizers) != 0 {
		t.Fatalf("OAuthClient as created: finalizers %v, want none without the policy", oc.Finalizers)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	if !slices.Contains(oc.Finalizers, controllers.Finalizer) {
		t.Fatalf("Ready OAuthClient: finalizers %v, want %s", oc.Finalizers, controllers.Finalizer)
	}
	if err := k8s.Delete(ctx, oc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the OAuthClient is gone", func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(oc), &oauthv1alpha1.OAuthClient{}))
	}, nil)
	if _, err := admin.GetClient(ctx, oc.Status.ClientID); !errors.Is(err, adminapi.ErrNotFound) {
		t.Errorf("client still on the token server after delete: %v", err)
	}
}
