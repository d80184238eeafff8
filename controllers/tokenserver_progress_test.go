package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
)

// TestTokenServerProgressDeadline: a bundled TokenServer whose pods a ResourceQuota
// refuses reads Reconciling (kstatus InProgress, Argo CD Progressing) up to
// spec.progressDeadline, then Stalled=True ProgressDeadlineExceeded with the API
// server's refusal in its message (kstatus Failed, Argo CD Degraded) and a Warning
// event, where before it read Reconciling forever. The count lives in status: an
// operator started after the deadline has passed stalls at its first pass. Once the
// quota is raised the pods come and it reads Ready, with no Stalled left. Then a
// scale-up whose new pod cannot be scheduled stalls with the scheduler's message,
// Ready all along since two pods serve, until the pod is placed.
//
// The quota and its admission are the real kube-apiserver's. envtest runs no
// StatefulSet controller and no quota controller, so the fake kubelet creates the
// pods as the former would and, when the API server refuses one, records the
// FailedCreate event the former records; the test writes the quota's status.hard,
// which admission reads, as the latter would (make test-e2e runs the real ones).
func TestTokenServerProgressDeadline(t *testing.T) {
	ctx := context.Background()
	step := advanceOperatorClock(t)
	health := argoHealthScripts(t)
	ns := namespace(t, "deadline", nil)
	ts, quota, k := refusedServer(t, ns)
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")
	waiting := ts.Status.Waiting
	if waiting == nil || waiting.Reason != controllers.ReasonRollingOut || waiting.Generation != ts.Generation {
		t.Fatalf("status.waiting %+v, want the rollout's, of generation %d", waiting, ts.Generation)
	}

	// Nothing reconciles while the operator is away; the one that comes back finds
	// the deadline passed.
	restartOperator(t, func() { step(10*time.Minute + time.Second) })
	waitCondition(t, ts, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonProgressDeadlineExceeded)
	stalled := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled)
	t.Logf("Stalled: %s", stalled.Message)
	for _, want := range []string{"no progress for 10m0s (spec.progressDeadline)", "StatefulSet auth-blue cannot create its pods",
		`pods "auth-blue-0" is forbidden: exceeded quota: compute, requested: requests.cpu=2`} {
		if !strings.Contains(stalled.Message, want) {
			t.Errorf("Stalled says %q, want it to say %q", stalled.Message, want)
		}
	}
	if r := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse ||
		r.Reason != controllers.ReasonProgressDeadlineExceeded {
		t.Errorf("Ready %+v, want False, %s", r, controllers.ReasonProgressDeadlineExceeded)
	}
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReconciling); c != nil {
		t.Errorf("Reconciling %+v beside Stalled", c)
	}
	if ts.Status.Waiting == nil || !ts.Status.Waiting.Since.Equal(&waiting.Since) {
		t.Errorf("status.waiting %+v, want it still counting from %s", ts.Status.Waiting, waiting.Since)
	}
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")
	if note := waitWarning(t, ns, ts.Name, controllers.ReasonProgressDeadlineExceeded); !strings.Contains(note, "exceeded quota: compute") {
		t.Errorf("the Warning event says %q, want the quota's refusal", note)
	}

	setQuota(t, quota, "10")
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAvailable)
	checkRecovered(t, health, ts)

	// A scale-up whose new pod no node fits: past the deadline the rollout is
	// Stalled, with the scheduler's words, while the two pods of before serve: Ready
	// stays, as a Deployment stays Available, so that the server's OAuthClients
	// keep working.
	k.schedule("auth-blue-2", "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: "+
		"3 No preemption victims found for incoming pod.")
	update(t, ts, func() { ts.Spec.Replicas = ptr.To[int32](3) })
	waitCondition(t, ts, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonRollingOut)
	var pending corev1.Pod
	get(t, ns, "auth-blue-2", &pending)
	step(10*time.Minute + time.Second)
	poke(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionStalled, metav1.ConditionTrue, controllers.ReasonProgressDeadlineExceeded)
	waitReason := "pod auth-blue-2 cannot be scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
	eventually(t, 20*time.Second, "Stalled saying "+waitReason, func() bool {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
		stalled = meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled)
		return stalled != nil && strings.Contains(stalled.Message, waitReason)
	}, func() string { return fmt.Sprintf("Stalled %+v", stalled) })
	// The quota's refusal of before, overcome, is not the cause any more: its event
	// names a pod that exists.
	if strings.Contains(stalled.Message, "quota") {
		t.Errorf("Stalled says %q, still quoting the quota", stalled.Message)
	}
	if r := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v while two pods serve, want True", r)
	}
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")

	k.schedule("auth-blue-2", "") // a node was added
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAvailable)
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled); c != nil {
		t.Errorf("Stalled %+v once every pod is ready", c)
	}
	checkGitOps(t, health, ts, status.CurrentStatus, "Healthy")
}

// refusedServer is a bundled server in ns whose pods a ResourceQuota ("compute",
// one CPU) refuses, reading Reconciling: each token server pod asks for two CPUs;
// the Jobs' pods fit.
func refusedServer(t *testing.T, ns string) (*oauthv1alpha1.TokenServer, *corev1.ResourceQuota, *fakeKubelet) {
	t.Helper()
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "compute"}}
	if err := k8s.Create(context.Background(), quota); err != nil {
		t.Fatal(err)
	}
	setQuota(t, quota, "1")
	ts, k := bundledServer(t, ns, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Pod = &oauthv1alpha1.PodSettings{Resources: &oauthv1alpha1.ResourceRequirements{
			Requests: oauthv1alpha1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}
	})
	waitCondition(t, ts, oauthv1alpha1.ConditionReconciling, metav1.ConditionTrue, controllers.ReasonRollingOut)
	// The wait for pods starts with the first pass that counts them: one that found
	// the new StatefulSet not yet in the operator's cache also reads RollingOut, and a
	// test that moved the clock before the count began would wait a deadline more.
	eventually(t, 10*time.Second, "the wait for the pods counted in status.waiting", func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return false
		}
		return ts.Status.Waiting != nil && ts.Status.Waiting.Reason == controllers.ReasonRollingOut
	}, func() string { return fmt.Sprintf("status.waiting %+v", ts.Status.Waiting) })
	return ts, quota, k
}

// setQuota sets the quota's requests.cpu, in its spec and, as the quota controller
// would, in the status.hard admission reads.
func setQuota(t *testing.T, q *corev1.ResourceQuota, cpu string) {
	t.Helper()
	hard := corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse(cpu)}
	for _, write := range []func() error{
		func() error { q.Spec.Hard = hard; return k8s.Update(context.Background(), q) },
		func() error {
			q.Status.Hard = hard
			if q.Status.Used == nil {
				q.Status.Used = corev1.ResourceList{corev1.ResourceRequestsCPU: resource.MustParse("0")}
			}
			return k8s.Status().Update(context.Background(), q)
		},
	} {
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(q), q); err != nil {
				return err
			}
			return write()
		}); err != nil {
			t.Fatal(err)
		}
	}
}
