package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Review 18, finding 6: the stale CRDs issue 16 starts from ("helm upgrade leaves
// CRDs stale") pass `helm test`. With crds.enabled=false (CRDs applied by hand or by
// a GitOps tool) or a CRD some other tool reverted, the operator runs against a CRD
// older than itself: the API server prunes the fields it does not know, from specs
// and from the status the operator writes. self-test checks only that the three CRDs
// are Established. It must fail, naming the CRD, when a CRD lacks what this
// operator's version of it has.
func TestSelfTestRefusesStaleCRDs(t *testing.T) {
	env, _ := apiServerWithKubeconfig(t)
	c, err := client.New(env.Config, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-system"}}); err != nil {
		t.Fatal(err)
	}
	// An operator of this release leads: its Lease is held and fresh.
	now := metav1.NewMicroTime(time.Now())
	if err := c.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kubeoauth-system", Name: leaderElectionID},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("kubeoauth-manager-5d8f7c9b4-x2x7q_3f0c"), RenewTime: &now,
			AcquireTime: &now, LeaseDurationSeconds: ptr.To[int32](15)}}); err != nil {
		t.Fatal(err)
	}

	// The OAuthClient CRD as an older version had it: without spec.tosURI.
	o := &unstructured.Unstructured{}
	o.SetAPIVersion("apiextensions.k8s.io/v1")
	o.SetKind("CustomResourceDefinition")
	if err := c.Get(ctx, client.ObjectKey{Name: "oauthclients.oauth.kubeoauth.io"}, o); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
	for _, v := range versions {
		unstructured.RemoveNestedField(v.(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", "tosURI")
	}
	if err := unstructured.SetNestedSlice(o.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, o); err != nil {
		t.Fatal(err)
	}

	cfg := func() (*rest.Config, error) { return env.Config, nil }
	var out bytes.Buffer
	err = selfTest(ctx, []string{"--namespace", "kubeoauth-system", "--holder-prefix", "kubeoauth-manager-"}, cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "oauthclients.oauth.kubeoauth.io") {
		t.Errorf("self-test with an OAuthClient CRD older than the operator (no spec.tosURI): %v, want a failure naming it\n%s",
			err, out.String())
	}
}
