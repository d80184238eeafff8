//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// smallPods sizes a scenario's TokenServer for the local node, as a team sizes one
// for a small cluster: the node offers the machine's CPUs (two here) to the
// scheduler, as a kubelet does, and the scenarios keep several TokenServers at once
// (blue, green, PostgreSQL, the Jobs, a namespace still being deleted), which the
// default requests (docs/pod-settings.md) would not fit: their pods would wait
// Pending, as on a real two-core node.
func smallPods(ts *oauthv1alpha1.TokenServer) {
	small := func() *oauthv1alpha1.ResourceRequirements {
		return &oauthv1alpha1.ResourceRequirements{
			Requests: oauthv1alpha1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   oauthv1alpha1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}
	}
	if ts.Spec.Pod == nil {
		ts.Spec.Pod = &oauthv1alpha1.PodSettings{}
	}
	ts.Spec.Pod.Resources = small()
	if db := ts.Spec.Database; db != nil && db.Managed != nil {
		if db.Managed.Pod == nil {
			db.Managed.Pod = &oauthv1alpha1.PodSettings{}
		}
		db.Managed.Pod.Resources = small()
	}
	ts.Spec.Jobs.Resources = small()
}

// tokenServerCondition reads ts afresh and fails unless its condition typ is True
// with reason and a message containing says: for eventually.
func tokenServerCondition(ctx context.Context, ts *oauthv1alpha1.TokenServer, typ, reason, says string) func() error {
	return func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		c := meta.FindStatusCondition(ts.Status.Conditions, typ)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason || !strings.Contains(c.Message, says) {
			return fmt.Errorf("%s is %+v", typ, c)
		}
		return nil
	}
}
