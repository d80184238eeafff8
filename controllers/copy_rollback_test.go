package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// TestCopyRollbackNotAbandonedDuringCutback: a rollback after the cutover waits on
// its cut back Job, which hangs. After progressDeadline the operator reports the
// rollback stuck, naming the Job; a person following "A rollback that cannot
// finish" annotates promote to keep the new version. While the cut back Job may
// pass its point of no return the rollback is not abandoned: abandoned, blue would
// be scaled to zero while the Job moves the database to it.
func TestCopyRollbackNotAbandonedDuringCutback(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "rvcutback", nil)
	ns := ts.Namespace
	id, cutback := rollBackAfterCutover(t, ts, k, step)
	// The cut back Job is never released: it runs. The deadline passes.
	step(11 * time.Minute)
	poke(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, upgrade.ReasonRollbackStuck)
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionDegraded); c == nil || !strings.Contains(c.Message, cutback) {
		t.Errorf("Degraded says %+v; want it to name the cut back Job %s", c, cutback)
	}
	update(t, ts, func() {
		delete(ts.Annotations, oauthv1alpha1.AnnotationRollback)
		metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationPromote, id)
	})
	time.Sleep(3 * time.Second)
	u := fresh(t, ts)
	t.Logf("after the promote annotation: phase %s, jobs %v", u.Phase, jobNames(t, ns))
	if u.Phase == oauthv1alpha1.UpgradeScalingDown && slices.Contains(jobNames(t, ns), cutback) {
		// The cut back now succeeds: nothing reads it any more.
		k.release("cutback", jobOutcome{message: `{"fenceHoldSeconds":0.31,"replayed":4,"resumed":false}`})
		step(31 * time.Second)
		poke(t, ts)
		time.Sleep(3 * time.Second)
		_, blue, _ := statefulSet(t, ns, "auth-blue")
		t.Errorf("abandoned while the cut back Job %s ran; it then succeeded (green forwards to blue), and blue is at %d replicas, phase %s",
			cutback, blue, fresh(t, ts).Phase)
	}
}

// TestCopyCutoverJobDeletedIsMadeAgain: the cutover Job hangs (it may be past its
// marker: blue's database cut over, writes held); the image set back is ignored
// while it runs, so a person deletes the Job. An absent cutover Job is not "no
// cutover ever ran": the operator makes it again and waits for its end. Only once
// that attempt's lease ran out (nothing moved) does the rollback proceed.
func TestCopyCutoverJobDeletedIsMadeAgain(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "rvcutdel", nil)
	ns := ts.Namespace
	id := toReplaying(t, ts, k)
	caughtUp(t, ts, k)
	cutover := upgrade.JobName("auth", id, upgrade.JobCutover)
	eventually(t, 20*time.Second, "the cutover Job", func() bool { return slices.Contains(jobNames(t, ns), cutover) },
		func() string { return fmt.Sprintf("Jobs %v", jobNames(t, ns)) })
	setImage(t, ts, imageV1)
	time.Sleep(2 * time.Second)
	if u := fresh(t, ts); u.Phase != oauthv1alpha1.UpgradeCuttingOver {
		t.Fatalf("phase %s while the cutover Job runs", u.Phase)
	}
	var job batchv1.Job
	get(t, ns, cutover, &job)
	first := job.UID
	if err := k8s.Delete(context.Background(), &job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the cutover Job made again", func() bool {
		var again batchv1.Job
		return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: cutover}, &again) == nil && again.UID != first
	}, func() string { return fmt.Sprintf("Jobs %v", jobNames(t, ns)) })
	if u := fresh(t, ts); u.Phase != oauthv1alpha1.UpgradeCuttingOver {
		t.Fatalf("phase %s after the cutover Job was deleted; want CuttingOver until its attempt ends", u.Phase)
	}
	// The new attempt finds the lease run out: nothing moved, so the rollback the
	// image asked for proceeds.
	k.release("cutover", jobOutcome{failed: true, exit: upgrade.CutoverLeaseExpiredExitCode, message: "the fence's lease ran out"})
	waitRolledBack(t, ts)
	if u := fresh(t, ts); u.Copy.CutoverAt != nil {
		t.Errorf("rolled back with cutoverAt %v", u.Copy.CutoverAt)
	}
}

// TestCopyRollbackDuringCopyWaitsForTheCopyPod: a rollback while the copy runs
// deletes the copy Job; its pod terminates on its own time (a real one may be
// retrying its capture install, or creating the copy's database). The cleanup,
// which removes the capture and drops the copy, waits until that pod is gone:
// run earlier, the pod could put the capture back after it.
func TestCopyRollbackDuringCopyWaitsForTheCopyPod(t *testing.T) {
	ctx := context.Background()
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "rbcopypod", nil)
	ns := ts.Namespace
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planCopy})
	waitPhase(t, ts, oauthv1alpha1.UpgradeCopying)
	id := ts.Status.Upgrade.ID
	var job batchv1.Job
	get(t, ns, upgrade.JobName("auth", id, upgrade.JobCopy), &job)
	// The Job's running pod, as the Job controller made it; a finalizer stands for
	// the time it takes to stop.
	pod := jobPod(&job)
	pod.Finalizers = []string{"kubeoauth.test/stopping"}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releasePod(pod) })
	update(t, ts, func() { metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationRollback, id) })
	waitRolledBack(t, ts)
	cleanup := upgrade.JobName("auth", id, upgrade.JobCleanup)
	eventually(t, 20*time.Second, "the copy Job gone, its pod terminating", func() bool {
		var p corev1.Pod
		return !slices.Contains(jobNames(t, ns), job.Name) &&
			k8s.Get(ctx, client.ObjectKeyFromObject(pod), &p) == nil && p.DeletionTimestamp != nil
	}, func() string { return fmt.Sprintf("Jobs %v", jobNames(t, ns)) })
	poke(t, ts)
	time.Sleep(3 * time.Second)
	if slices.Contains(jobNames(t, ns), cleanup) {
		t.Fatalf("the cleanup Job %s was made while the copy Job's pod was still terminating", cleanup)
	}
	releasePod(pod)
	waitCleanupJob(t, ts, id, "auth-db", "kubeoauth_"+id)
}

// releasePod lets a pod held by the test's finalizer go.
func releasePod(pod *corev1.Pod) {
	var p corev1.Pod
	if k8s.Get(context.Background(), client.ObjectKeyFromObject(pod), &p) != nil {
		return
	}
	p.Finalizers = nil
	_ = k8s.Update(context.Background(), &p)
}
