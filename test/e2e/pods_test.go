//go:build e2e

package e2e

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// smallPods sizes a scenario's TokenServer for the local node, as a team sizes one
// for a small cluster: the node offers the machine's CPUs (two here) to the
// scheduler, as a kubelet does, and the scenarios keep several TokenServers at once
// (blue, green, PostgreSQL, the Jobs, a namespace still being deleted), which the
// default requests (docs/pod-settings.md) would not fit: their pods would wait
// Pending, as on a real two-core node.
func smallPods(ts *oauthv1alpha1.TokenServer) {
	small := func() *corev1.ResourceRequirements {
		return &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}
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
