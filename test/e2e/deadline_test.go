//go:build e2e

package e2e

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// testQuotaRefusesPods: a namespace's ResourceQuota refuses the token server's pods.
// The real StatefulSet controller records FailedCreate, and the TokenServer, past its
// spec.progressDeadline, reads Stalled=True ProgressDeadlineExceeded quoting the
// quota's refusal (kstatus: Failed), where it used to read Reconciling for good. Once
// the quota is raised, the quota and StatefulSet controllers let the pod come and the
// TokenServer reads Ready, with no Stalled left, without anyone touching it.
func testQuotaRefusesPods(t *testing.T) {
	ctx := t.Context()
	const ns = "quota"
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "http://127.0.0.1:4499", Image: imageV1, Replicas: ptr.To[int32](1),
			Database:         &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("1Gi")}},
			ProgressDeadline: "20s"}}
	smallPods(ts)
	// The server's pod asks for more CPU than the quota has; the database's and the
	// migrations Job's fit.
	ts.Spec.Pod.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("100m")
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "compute"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("50m")}}}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
		quota, ts,
	} {
		if err := suite.c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// Its pods are not needed by the scenarios after this one.
	t.Cleanup(func() { _, _ = kubectl(t.Context(), "-n", ns, "delete", "tokenserver", "auth", "--wait=false") })
	condition := func(typ, reason, says string) func() error { return tokenServerCondition(ctx, ts, typ, reason, says) }
	kstatus := func(want status.Status) {
		t.Helper()
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(oauthv1alpha1.GroupVersion.WithKind("TokenServer"))
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(ts), u); err != nil {
			t.Fatal(err)
		}
		if res, err := status.Compute(u); err != nil || res.Status != want {
			t.Errorf("kstatus: %+v, %v; want %s", res, err, want)
		}
	}

	eventually(t, 4*time.Minute, "Stalled with the quota's refusal", condition(oauthv1alpha1.ConditionStalled, "ProgressDeadlineExceeded",
		`StatefulSet auth-blue cannot create its pods: Create Pod auth-blue-0 in StatefulSet auth-blue failed error: pods "auth-blue-0" is forbidden: exceeded quota: compute`))
	t.Logf("Stalled: %s", meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled).Message)
	kstatus(status.FailedStatus)

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(quota), quota); err != nil {
			return err
		}
		quota.Spec.Hard[corev1.ResourceRequestsCPU] = resource.MustParse("1")
		return suite.c.Update(ctx, quota)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "Ready once the quota is raised", condition(oauthv1alpha1.ConditionReady, "Available", ""))
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled); c != nil {
		t.Errorf("Stalled %+v once Ready", c)
	}
	kstatus(status.CurrentStatus)
}
