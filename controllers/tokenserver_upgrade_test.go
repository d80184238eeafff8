package controllers_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

const (
	imageV1 = "kubeoauth/tokenserver:v1"
	imageV2 = "kubeoauth/tokenserver:v2"
	planOK  = `{"mode":"Shared","schemaFrom":5,"schemaTo":6,"reason":"expand migrations only: 0006 adds a column"}`
)

// upgradeServer creates a bundled TokenServer of two replicas running v1, with the
// fake kubelet playing its pods and Jobs and the suite's token server behind its
// admin Service, and waits until it serves: Ready, blue, both pods labelled.
func upgradeServer(t *testing.T, base string, mutate func(*oauthv1alpha1.TokenServer)) (*oauthv1alpha1.TokenServer, *fakeKubelet) {
	t.Helper()
	ctx := context.Background()
	ns := namespace(t, base, nil)
	ts, k := bundledServer(t, ns, mutate)
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	eventually(t, 20*time.Second, "both blue pods serving, status.currentImage v1", func() bool {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
		return slices.Equal(servingPods(t, ns), []string{"auth-blue-0", "auth-blue-1"}) && ts.Status.CurrentImage == imageV1
	}, func() string { return fmt.Sprintf("serving %v, status %+v", servingPods(t, ns), ts.Status) })
	if ts.Status.ActiveColor != "blue" || ts.Status.Upgrade != nil {
		t.Fatalf("status after the first install: %+v", ts.Status)
	}
	for _, name := range []string{"auth", "auth-admin"} {
		var svc corev1.Service
		get(t, ns, name, &svc)
		if svc.Spec.Selector[oauthv1alpha1.LabelServing] != "true" || svc.Spec.Selector[resources.LabelColor] != "" {
			t.Errorf("Service %s selects %v, want the serving label of any color", name, svc.Spec.Selector)
		}
	}
	return ts, k
}

// bundledServer creates a bundled TokenServer of two replicas running v1 in ns, with
// the fake kubelet playing its pods and Jobs and the suite's token server behind its
// admin Service, and returns without waiting for it.
func bundledServer(t *testing.T, ns string, mutate func(*oauthv1alpha1.TokenServer)) (*oauthv1alpha1.TokenServer, *fakeKubelet) {
	t.Helper()
	ctx := context.Background()
	// The suite's token server answers the admin API with this token.
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-admin"},
		StringData: map[string]string{"token": adminToken}}); err != nil {
		t.Fatal(err)
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: imageV1, Replicas: ptr.To[int32](2),
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{}},
			Upgrade: oauthv1alpha1.UpgradeSettings{Analysis: oauthv1alpha1.UpgradeAnalysis{Interval: "30s",
				MinRequestsPerStep: ptr.To[int32](10)}}}}
	if mutate != nil {
		mutate(ts)
	}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	// Its admin API is the suite's token server: its owner sweep must not outlive the test.
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })
	var tlsSec corev1.Secret
	get(t, ns, "auth-admin-tls", &tlsSec)
	serving, err := tls.X509KeyPair(tlsSec.Data["tls.crt"], tlsSec.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.StartTLS(t, hostIP(t), admin.BaseURL[len("http://"):], serving)
	return ts, startKubelet(t, ns, proxy.Addr)
}

func setImage(t *testing.T, ts *oauthv1alpha1.TokenServer, image string) {
	t.Helper()
	update(t, ts, func() { ts.Spec.Image = image })
}

func update(t *testing.T, ts *oauthv1alpha1.TokenServer, change func()) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return err
		}
		change()
		return k8s.Update(context.Background(), ts)
	}); err != nil {
		t.Fatal(err)
	}
}

// waitPhase waits for status.upgrade.phase and checks Progressing's reason for it.
func waitPhase(t *testing.T, ts *oauthv1alpha1.TokenServer, phase oauthv1alpha1.UpgradePhase) {
	t.Helper()
	eventually(t, 20*time.Second, "upgrade phase "+string(phase), func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return false
		}
		c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionProgressing)
		return ts.Status.Upgrade != nil && ts.Status.Upgrade.Phase == phase && c != nil &&
			c.Reason == oauthv1alpha1.ProgressingReason(phase)
	}, func() string { return fmt.Sprintf("status %+v, upgrade %+v", ts.Status.Conditions, ts.Status.Upgrade) })
}

func statefulSet(t *testing.T, ns, name string) (image string, replicas int32, ok bool) {
	t.Helper()
	var sts appsv1.StatefulSet
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &sts)
	if apierrors.IsNotFound(err) {
		return "", 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return sts.Spec.Template.Spec.Containers[0].Image, *sts.Spec.Replicas, true
}

func jobArgs(t *testing.T, ns, name string) []string {
	t.Helper()
	var job batchv1.Job
	get(t, ns, name, &job)
	return job.Spec.Template.Spec.Containers[0].Args
}

func condIs(t *testing.T, ts *oauthv1alpha1.TokenServer, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(ts.Status.Conditions, typ)
	if c == nil || c.Status != status || c.Reason != reason {
		t.Errorf("condition %s = %+v, want %s %s", typ, c, status, reason)
	}
}

// TestSharedUpgrade drives a Shared upgrade through every phase, as the fake
// kubelet and the fake clock let it, and checks at each one what a user sees:
// status.upgrade, the conditions, status.currentImage, which pods serve, and that
// the old version is never rolled in place.
func TestSharedUpgrade(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "upgrade", nil)
	ns := ts.Namespace
	setImage(t, ts, imageV2)

	// Planning: the plan Job runs v2's `migrate plan`; blue still runs v1, untouched.
	waitPhase(t, ts, oauthv1alpha1.UpgradePlanning)
	u := ts.Status.Upgrade
	if u.FromImage != imageV1 || u.ToImage != imageV2 || u.FromColor != "blue" || u.ToColor != "green" || u.Steps != 2 {
		t.Fatalf("status.upgrade %+v", u)
	}
	id := u.ID
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobPlan)); !slices.Equal(args, []string{"migrate", "plan"}) {
		t.Errorf("plan Job runs %v", args)
	}
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if img, n, _ := statefulSet(t, ns, "auth-blue"); img != imageV1 || n != 2 {
		t.Errorf("blue runs %s x%d during planning: an upgrade must not roll the old version in place", img, n)
	}
	if _, _, ok := statefulSet(t, ns, "auth-green"); ok {
		t.Error("green exists before the plan said Shared")
	}
	if ts.Status.CurrentImage != imageV1 {
		t.Errorf("status.currentImage %s while v1 serves", ts.Status.CurrentImage)
	}

	// Migrating: the plan is in status, the expand Job runs.
	k.release("plan", jobOutcome{message: planOK})
	waitPhase(t, ts, oauthv1alpha1.UpgradeMigrating)
	if p := ts.Status.Upgrade.Plan; p == nil || p.Mode != "Shared" || p.SchemaFrom != 5 || p.SchemaTo != 6 {
		t.Errorf("status.upgrade.plan %+v", p)
	}
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobExpand)); !slices.Equal(args, []string{"migrate", "up", "--expand-only"}) {
		t.Errorf("expand Job runs %v", args)
	}

	// Deploying, then Verifying: green at full size, not serving.
	k.release("expand", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradeVerifying)
	if img, n, _ := statefulSet(t, ns, "auth-green"); img != imageV2 || n != 2 {
		t.Errorf("green runs %s x%d, want v2 x2", img, n)
	}
	if got := servingPods(t, ns); !slices.Equal(got, []string{"auth-blue-0", "auth-blue-1"}) {
		t.Errorf("serving during verification: %v, want blue only", got)
	}
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobVerify)); len(args) == 0 || args[0] != "verify" ||
		!slices.Contains(args, "http://auth-green."+ns+".svc:4444") || !slices.Contains(args, "http://auth-blue."+ns+".svc:4444") {
		t.Errorf("verify Job runs %v", args)
	}

	// Promoting, step 1: green-0 serves beside the blue pods; currentImage stays v1
	// while two images serve.
	k.release("verify", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradePromoting)
	eventually(t, 20*time.Second, "green-0 serving, blue-0 no longer", func() bool {
		return slices.Equal(servingPods(t, ns), []string{"auth-blue-1", "auth-green-0"})
	}, func() string { return fmt.Sprintf("serving %v", servingPods(t, ns)) })
	_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
	if ts.Status.Upgrade.Step != 1 || ts.Status.CurrentImage != imageV1 || ts.Status.ActiveColor != "blue" {
		t.Errorf("at step 1: step %d, currentImage %s, activeColor %s", ts.Status.Upgrade.Step, ts.Status.CurrentImage, ts.Status.ActiveColor)
	}
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")

	// Each step's analysis: an interval later, with enough requests and no errors.
	for want := int32(2); want <= 3; want++ {
		k.requests.Add(25)
		step(31 * time.Second)
		poke(t, ts)
		if want == 2 {
			eventually(t, 20*time.Second, "step 2", func() bool {
				_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
				return ts.Status.Upgrade.Step == 2 && ts.Status.Upgrade.Progress == "1/2"
			}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
		}
	}

	// ScalingDown: all traffic on green, active color green, currentImage observed v2.
	waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
	eventually(t, 20*time.Second, "green serving alone, status.currentImage v2", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return slices.Equal(servingPods(t, ns), []string{"auth-green-0", "auth-green-1"}) && ts.Status.CurrentImage == imageV2
	}, func() string {
		return fmt.Sprintf("serving %v, currentImage %s", servingPods(t, ns), ts.Status.CurrentImage)
	})
	if ts.Status.ActiveColor != "green" || ts.Status.Upgrade.Progress != "2/2" {
		t.Errorf("after promotion: activeColor %s, progress %s", ts.Status.ActiveColor, ts.Status.Upgrade.Progress)
	}
	if _, n, _ := statefulSet(t, ns, "auth-blue"); n != 2 {
		t.Errorf("blue at %d replicas before scaleDownDelay", n)
	}

	// RollbackWindow: after scaleDownDelay, blue at zero but kept; no contract yet.
	step(31 * time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeRollbackWindow)
	if img, n, ok := statefulSet(t, ns, "auth-blue"); !ok || n != 0 || img != imageV1 {
		t.Errorf("blue during the rollback window: %s x%d (exists %v), want v1 x0", img, n, ok)
	}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: upgrade.JobName("auth", id, upgrade.JobContract)},
		&batchv1.Job{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the contract Job exists during the rollback window (%v)", err)
	}

	// Contracting once the window ends, then Completed.
	step(time.Hour + time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeContracting)
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobContract)); !slices.Equal(args, []string{"migrate", "up"}) {
		t.Errorf("contract Job runs %v", args)
	}
	// A failed contract is retried after a backoff, by a Job of a new name; v2
	// serves meanwhile, Degraded says so.
	k.release("contract", jobOutcome{failed: true, message: "canceling statement due to lock timeout"})
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonMigrationFailed)
	if u := ts.Status.Upgrade; u.Phase != oauthv1alpha1.UpgradeContracting || u.NextRetry == nil || !strings.Contains(u.Message, "lock timeout") {
		t.Errorf("after a failed contract: %+v", u)
	}
	step(time.Minute + time.Second)
	poke(t, ts)
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobContract+"-1")); !slices.Equal(args, []string{"migrate", "up"}) {
		t.Errorf("contract retry Job runs %v", args)
	}
	k.release("contract-1", jobOutcome{})
	eventually(t, 20*time.Second, "Completed", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.Upgrade.Phase == oauthv1alpha1.UpgradeCompleted
	}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionFalse, "UpgradeCompleted")
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, "UpgradeCompleted")
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if ts.Status.CurrentImage != imageV2 || ts.Status.ActiveColor != "green" || ts.Status.Upgrade.CompletedAt == nil {
		t.Errorf("after the upgrade: %+v", ts.Status)
	}

	// Its Jobs stay spec.jobs.ttlSecondsAfterFinished (an hour by default) after it
	// completed, then go. The first install's migrations Job is not the upgrade's: it
	// carries its own TTL, for Kubernetes's TTL controller.
	ended := jobNames(t, ns)
	if len(ended) != 6 {
		t.Fatalf("Jobs after the upgrade: %v, want the migrations' and the upgrade's five", ended)
	}
	step(time.Hour - time.Second)
	passOverNewGeneration(t, ts)
	if got := jobNames(t, ns); !slices.Equal(got, ended) {
		t.Errorf("Jobs within an hour of the end: %v, want %v", got, ended)
	}
	step(time.Second)
	poke(t, ts)
	eventually(t, 20*time.Second, "the upgrade's Jobs deleted an hour after it completed", func() bool {
		names := jobNames(t, ns)
		return len(names) == 1 && strings.HasPrefix(names[0], "auth-migrate-")
	}, func() string { return fmt.Sprintf("Jobs %v", jobNames(t, ns)) })
}

// passOverNewGeneration changes a setting outside spec.upgrade and waits for the
// pass over it: what the operator decides at the clock's time is then done.
func passOverNewGeneration(t *testing.T, ts *oauthv1alpha1.TokenServer) {
	t.Helper()
	update(t, ts, func() {
		if ts.Spec.Tokens.AccessTokenLifespan == "30m" {
			ts.Spec.Tokens.AccessTokenLifespan = "31m"
		} else {
			ts.Spec.Tokens.AccessTokenLifespan = "30m"
		}
	})
	eventually(t, 20*time.Second, "a pass over the new generation", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.ObservedGeneration == ts.Generation
	}, nil)
}

// TestFailedVerificationRollsBack: a verification that fails turns the upgrade back
// before any traffic moved: blue serves throughout, Degraded says why, the image is
// recorded as failed and not tried again.
func TestFailedVerificationRollsBack(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "verifyfail", func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Jobs.TTLSecondsAfterFinished = ptr.To[int32](60)
	})
	ns := ts.Namespace
	toVerifying(t, ts, k)
	id := ts.Status.Upgrade.ID
	k.release("verify", jobOutcome{failed: true, message: "a token blue issued is refused by green: 401"})
	waitRolledBack(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if ts.Status.FailedImage != imageV2 || ts.Status.ActiveColor != "blue" || ts.Status.CurrentImage != imageV1 ||
		ts.Status.Upgrade.Reason != upgrade.ReasonVerifyFailed {
		t.Errorf("after the rollback: %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	if msg := ts.Status.Upgrade.RollbackReason; !strings.Contains(msg, "refused by green") {
		t.Errorf("rollbackReason %q does not say what the verification saw", msg)
	}
	if _, n, _ := statefulSet(t, ns, "auth-green"); n != 0 {
		t.Errorf("green at %d replicas after the rollback", n)
	}
	if got := servingPods(t, ns); !slices.Equal(got, []string{"auth-blue-0", "auth-blue-1"}) {
		t.Errorf("serving after the rollback: %v", got)
	}
	// Not retried: a pass over a new generation (a setting outside spec.upgrade
	// changed) starts no new upgrade while spec.image is still v2. Its Jobs stay,
	// the failed verification's logs with them, long after their TTL (60 s here): a
	// person reads them when they come to it.
	jobs := jobNames(t, ns)
	step(2 * time.Hour)
	passOverNewGeneration(t, ts)
	if ts.Status.Upgrade.ID != id || ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradeRolledBack || !slices.Equal(jobNames(t, ns), jobs) {
		t.Errorf("the failed image was tried again, or its Jobs went: %+v, Jobs %v, want %v", ts.Status.Upgrade, jobNames(t, ns), jobs)
	}
	// spec.upgrade changed (the settings may have caused the failure): tried again.
	update(t, ts, func() { ts.Spec.Upgrade.ProgressDeadline = "20m" })
	eventually(t, 20*time.Second, "a new upgrade to v2 after spec.upgrade changed", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.Upgrade.ID != id && ts.Status.Upgrade.ToImage == imageV2
	}, func() string { return fmt.Sprintf("status %+v, upgrade %+v", ts.Status, ts.Status.Upgrade) })
	// The failed upgrade's Jobs go the TTL after the next one started.
	verify := upgrade.JobName("auth", id, upgrade.JobVerify)
	if !slices.Contains(jobNames(t, ns), verify) {
		t.Errorf("the failed verification's Job went when the next upgrade started: %v", jobNames(t, ns))
	}
	step(time.Minute)
	poke(t, ts)
	eventually(t, 20*time.Second, "the failed upgrade's Jobs deleted a minute after the next one started", func() bool {
		for _, name := range jobNames(t, ns) {
			if strings.Contains(name, "-"+id+"-") {
				return false
			}
		}
		return slices.Contains(jobNames(t, ns), upgrade.JobName("auth", ts.Status.Upgrade.ID, upgrade.JobPlan))
	}, func() string { return fmt.Sprintf("Jobs %v", jobNames(t, ns)) })
}

// TestCopyPlanRefused: a plan that needs a copied database, with dataMode Shared,
// ends the upgrade before anything changed.
func TestCopyPlanRefused(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copyplan", func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Upgrade.DataMode = "Shared" })
	ns := ts.Namespace
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: `{"mode":"Copy","schemaFrom":5,"schemaTo":7,"reason":"0007 drops column scope"}`})
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRefused)
	if ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradeRefused || !strings.Contains(ts.Status.Upgrade.Message, "0007 drops column scope") ||
		ts.Status.FailedImage != imageV2 {
		t.Errorf("status %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	if _, _, ok := statefulSet(t, ns, "auth-green"); ok {
		t.Error("green was made for a refused upgrade")
	}
	if img, n, _ := statefulSet(t, ns, "auth-blue"); img != imageV1 || n != 2 {
		t.Errorf("blue runs %s x%d after a refused upgrade", img, n)
	}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: upgrade.JobName("auth", ts.Status.Upgrade.ID, upgrade.JobExpand)},
		&batchv1.Job{}); !apierrors.IsNotFound(err) {
		t.Errorf("an expand Job ran for a refused upgrade (%v)", err)
	}
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
}

// toPromotion runs an upgrade to v2 up to its first promotion step, green-0 serving.
func toPromotion(t *testing.T, ts *oauthv1alpha1.TokenServer, k *fakeKubelet) string {
	t.Helper()
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planOK})
	k.release("expand", jobOutcome{})
	k.release("verify", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradePromoting)
	eventually(t, 20*time.Second, "green-0 serving, blue-0 no longer", func() bool {
		return slices.Equal(servingPods(t, ts.Namespace), []string{"auth-blue-1", "auth-green-0"})
	}, func() string { return fmt.Sprintf("serving %v", servingPods(t, ts.Namespace)) })
	return ts.Status.Upgrade.ID
}

func jobNames(t *testing.T, ns string) []string {
	t.Helper()
	var jobs batchv1.JobList
	if err := k8s.List(context.Background(), &jobs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(jobs.Items))
	for _, j := range jobs.Items {
		names = append(names, j.Name)
	}
	slices.Sort(names)
	return names
}

// TestOperatorRestartMidPromotion: the operator stops in the middle of a promotion
// and a new one starts; it reads the intent from status and the facts from the
// cluster and carries on from the same step, running no Job again.
func TestOperatorRestartMidPromotion(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "restart", nil)
	id := toPromotion(t, ts, k)
	jobs := jobNames(t, ts.Namespace)
	restartOperator(t, func() {
		// While no operator runs, the step's interval passes with enough traffic.
		k.requests.Add(25)
		step(31 * time.Second)
	})
	eventually(t, 20*time.Second, "step 2 after the restart", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.Upgrade.Step == 2
	}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
	k.requests.Add(25)
	step(31 * time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
	if ts.Status.Upgrade.ID != id || ts.Status.ActiveColor != "green" {
		t.Errorf("after the restart: upgrade %+v, activeColor %s", ts.Status.Upgrade, ts.Status.ActiveColor)
	}
	if got := jobNames(t, ts.Namespace); !slices.Equal(got, jobs) {
		t.Errorf("Jobs after the restart %v, before %v: a Job ran again", got, jobs)
	}
}

// TestRollbackAnnotation: the rollback annotation with the upgrade's id turns the
// traffic back to blue in the middle of a promotion; the image is recorded as failed.
func TestRollbackAnnotation(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "rollback", nil)
	id := toPromotion(t, ts, k)
	// An annotation left from another upgrade does nothing.
	// (With a setting changed, so that the pass that read it can be told: a new generation.)
	update(t, ts, func() {
		metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationRollback, "0000000")
		ts.Spec.Upgrade.ScaleDownDelay = "45s"
	})
	eventually(t, 20*time.Second, "a pass over the stale annotation", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.ObservedGeneration == ts.Generation
	}, nil)
	if ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradePromoting {
		t.Fatalf("a rollback annotation of another upgrade moved this one: %+v", ts.Status.Upgrade)
	}
	update(t, ts, func() { metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationRollback, id) })
	waitRolledBack(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	if ts.Status.Upgrade.Reason != upgrade.ReasonRollbackAsked || ts.Status.FailedImage != imageV2 || ts.Status.ActiveColor != "blue" {
		t.Errorf("after the rollback: %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	eventually(t, 20*time.Second, "blue serving alone, currentImage v1", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return slices.Equal(servingPods(t, ts.Namespace), []string{"auth-blue-0", "auth-blue-1"}) && ts.Status.CurrentImage == imageV1
	}, func() string {
		return fmt.Sprintf("serving %v, currentImage %s", servingPods(t, ts.Namespace), ts.Status.CurrentImage)
	})
	greenAtZero(t, ts, "after the rollback")
}

// TestImageSetBack: setting spec.image back mid-upgrade rolls back without
// recording a failure: Degraded stays False and v2 may be tried again later.
func TestImageSetBack(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "setback", nil)
	toVerifying(t, ts, k)
	setImage(t, ts, imageV1)
	waitRolledBack(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionFalse, oauthv1alpha1.ReasonUpgradeRolledBack)
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, oauthv1alpha1.ReasonUpgradeRolledBack)
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if ts.Status.Upgrade.Reason != upgrade.ReasonImageReverted || ts.Status.FailedImage != "" || ts.Status.CurrentImage != imageV1 {
		t.Errorf("after setting the image back: %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	greenAtZero(t, ts, "after the image was set back")
}

// TestKeyRotationWaitsForUpgrade: a signing key that falls due while an upgrade runs
// is rotated only once it ended: a new key would roll both colors' pods mid-upgrade.
func TestKeyRotationWaitsForUpgrade(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "keyhold", nil)
	setImage(t, ts, imageV2)
	waitPhase(t, ts, oauthv1alpha1.UpgradePlanning)
	// The key falls due while both colors run (verification).
	k.release("plan", jobOutcome{message: planOK})
	k.release("expand", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradeVerifying)
	var keys corev1.Secret
	get(t, ts.Namespace, "auth-keys", &keys)
	old := string(keys.Data[resources.KeySigningKey])
	keys.Annotations[resources.AnnotationKeyRotatedAt] = time.Now().Add(-91 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if err := k8s.Update(context.Background(), &keys); err != nil {
		t.Fatal(err)
	}
	poke(t, ts)
	get(t, ts.Namespace, "auth-keys", &keys)
	if string(keys.Data[resources.KeySigningKey]) != old {
		t.Fatal("the signing key was rotated while an upgrade ran")
	}
	// The upgrade ends (the image set back): now it rotates.
	setImage(t, ts, imageV1)
	eventually(t, 20*time.Second, "key rotation after the upgrade", func() bool {
		get(t, ts.Namespace, "auth-keys", &keys)
		return string(keys.Data[resources.KeySigningKey]) != old
	}, nil)
	_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
	if ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradeRolledBack {
		t.Errorf("rotated during phase %s", ts.Status.Upgrade.Phase)
	}
}

// TestCrashingGreenRolledBack: green never becomes ready; once Deploying has made no
// progress for spec.upgrade.progressDeadline, the upgrade rolls back with blue
// serving throughout.
func TestCrashingGreenRolledBack(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "crashing", func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Upgrade.ProgressDeadline = "5m" })
	k.crash(imageV2)
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planOK})
	k.release("expand", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradeDeploying)
	eventually(t, 20*time.Second, "green's two pods, not ready", func() bool {
		var pods corev1.PodList
		_ = k8s.List(context.Background(), &pods, client.InNamespace(ts.Namespace), client.MatchingLabels{resources.LabelColor: "green"})
		return len(pods.Items) == 2
	}, nil)
	step(5*time.Minute + time.Second)
	poke(t, ts)
	waitRolledBack(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if ts.Status.Upgrade.Reason != upgrade.ReasonDeadline || ts.Status.FailedImage != imageV2 || ts.Status.CurrentImage != imageV1 {
		t.Errorf("after the deadline: %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	if got := servingPods(t, ts.Namespace); !slices.Equal(got, []string{"auth-blue-0", "auth-blue-1"}) {
		t.Errorf("serving after the rollback: %v", got)
	}
}

// TestErrorRateRollsBack: green answers too many 5xx; each analysis check fails
// (a Warning event each), and at spec.upgrade.analysis.failureThreshold the upgrade
// rolls back, blue serving again.
func TestErrorRateRollsBack(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "errorrate", func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Upgrade.Analysis.FailureThreshold = 2
		ts.Spec.Upgrade.MaxErrorRate = "5%"
	})
	toPromotion(t, ts, k)
	for check := 1; check <= 2; check++ {
		k.requests.Add(40)
		k.errors5.Add(10) // 25%
		step(31 * time.Second)
		poke(t, ts)
		if check == 1 {
			if note := waitWarning(t, ts.Namespace, "auth", upgrade.ReasonCheckFailed); !strings.Contains(note, "25.00%") {
				t.Errorf("AnalysisCheckFailed says %q, want the error rate", note)
			}
		}
	}
	waitRolledBack(t, ts)
	waitWarning(t, ts.Namespace, "auth", oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeRolledBack))
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	if a := ts.Status.Upgrade.Analysis; ts.Status.Upgrade.Reason != upgrade.ReasonAnalysisFailed || a == nil || a.FailedChecks != 2 ||
		ts.Status.FailedImage != imageV2 {
		t.Errorf("after the analysis failed: %+v, upgrade %+v", ts.Status, ts.Status.Upgrade)
	}
	eventually(t, 20*time.Second, "blue serving alone, currentImage v1", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return slices.Equal(servingPods(t, ts.Namespace), []string{"auth-blue-0", "auth-blue-1"}) && ts.Status.CurrentImage == imageV1
	}, func() string {
		return fmt.Sprintf("serving %v, currentImage %s", servingPods(t, ts.Namespace), ts.Status.CurrentImage)
	})
}

// TestPauseAndPromote: with pauseBeforePromotion, a verified green waits unserved
// until the promote annotation carries the upgrade's id.
func TestPauseAndPromote(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "pause", func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Upgrade.PauseBeforePromotion = true })
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planOK})
	k.release("expand", jobOutcome{})
	k.release("verify", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradePaused)
	id := ts.Status.Upgrade.ID
	if !strings.Contains(ts.Status.Upgrade.Message, oauthv1alpha1.AnnotationPromote+"="+id) {
		t.Errorf("the paused message %q does not say how to promote", ts.Status.Upgrade.Message)
	}
	// A promote annotation of another id, with a setting changed so that the pass
	// that read it can be told (a new generation).
	update(t, ts, func() {
		metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationPromote, "0000000")
		ts.Spec.Upgrade.ScaleDownDelay = "45s"
	})
	eventually(t, 20*time.Second, "a pass over the stale annotation", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.ObservedGeneration == ts.Generation
	}, nil)
	if got := servingPods(t, ts.Namespace); !slices.Equal(got, []string{"auth-blue-0", "auth-blue-1"}) ||
		ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradePaused {
		t.Fatalf("paused upgrade moved on an annotation of another id: phase %s, serving %v", ts.Status.Upgrade.Phase, got)
	}
	update(t, ts, func() { metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationPromote, id) })
	waitPhase(t, ts, oauthv1alpha1.UpgradePromoting)
	eventually(t, 20*time.Second, "green-0 serving", func() bool {
		return slices.Contains(servingPods(t, ts.Namespace), "auth-green-0")
	}, func() string { return fmt.Sprintf("serving %v", servingPods(t, ts.Namespace)) })
}

// TestStatusConflictKeepsReady: a pass whose TokenServer is stale loses the race to
// write the upgrade's intent. It acts on nothing, and reports the server as it is:
// Ready stays True, so the OAuthClients of the server do not flap (review finding 10).
func TestStatusConflictKeepsReady(t *testing.T) {
	ts, _ := upgradeServer(t, "conflict", nil)
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	stale := ts.DeepCopy()
	poke(t, ts)                // someone writes the TokenServer meanwhile
	stale.Spec.Image = imageV2 // and the stale pass wants to start an upgrade
	r := &controllers.TokenServerReconciler{Client: k8s, Recorder: events.NewFakeRecorder(10), Clock: operatorClock}
	ready, next, err := controllers.UpgradeStep(context.Background(), r, stale)
	if err != nil || ready.Status != metav1.ConditionTrue || next <= 0 {
		t.Errorf("after a conflict: Ready %s %s (%s), error %v, next pass in %s; want Ready True, no error, a pass soon",
			ready.Status, ready.Reason, ready.Message, err, next)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	if ts.Status.Upgrade != nil {
		t.Errorf("the stale pass started an upgrade: %+v", ts.Status.Upgrade)
	}
}

// TestLeftoverVerifyClientsSwept: the verification Job registers a temporary client
// and deletes it through green's admin API when it ends; a Job that could not (green
// scaled away by the rollback it caused) leaves it behind. Once no verification can
// use it, the owner sweep deletes it (review finding 13).
func TestLeftoverVerifyClientsSwept(t *testing.T) {
	ts, k := upgradeServer(t, "verifyleft", nil)
	toVerifying(t, ts, k)
	id := adminapi.VerifyClientIDPrefix + strings.ReplaceAll(ts.Namespace, "-", "")
	if _, err := admin.PutClient(context.Background(), &adminapi.Client{ID: id, Secret: "secret-0123456789abcdefghijklmnopqrstuv",
		ClientMetadata: adminapi.ClientMetadata{Name: "verification", GrantTypes: []string{"client_credentials"},
			TokenEndpointAuthMethod: adminapi.AuthClientSecretBasic}}); err != nil {
		t.Fatal(err)
	}
	k.release("verify", jobOutcome{failed: true, message: "green's admin API is gone: the client could not be deleted"})
	eventually(t, 20*time.Second, "the leftover verification client deleted", func() bool {
		_, err := admin.GetClient(context.Background(), id)
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)
}

// TestConfigChangeWaitsForUpgrade: a change of what the pods read at start (here the
// scope descriptions, in the config hash) made while both colors run would roll
// both at once: it waits, and is rolled out once the upgrade ended (review finding 9).
func TestConfigChangeWaitsForUpgrade(t *testing.T) {
	ts, k := upgradeServer(t, "confighold", nil)
	toVerifying(t, ts, k)
	hash := func(name string) string {
		var sts appsv1.StatefulSet
		get(t, ts.Namespace, name, &sts)
		return sts.Spec.Template.Annotations[resources.AnnotationConfig]
	}
	blue, green := hash("auth-blue"), hash("auth-green")
	update(t, ts, func() {
		ts.Spec.ScopeDescriptions = append(ts.Spec.ScopeDescriptions, oauthv1alpha1.ScopeDescription{Name: "reports", Description: "Read reports"})
	})
	eventually(t, 20*time.Second, "a pass over the new generation", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.ObservedGeneration == ts.Generation
	}, nil)
	if b, g := hash("auth-blue"), hash("auth-green"); b != blue || g != green {
		t.Errorf("the config change rolled the pods mid-upgrade: blue %s -> %s, green %s -> %s", blue, b, green, g)
	}
	// The upgrade ends (the image set back): the serving color takes the change.
	setImage(t, ts, imageV1)
	eventually(t, 20*time.Second, "blue rolled with the new config after the upgrade", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.Upgrade.Phase == oauthv1alpha1.UpgradeRolledBack && hash("auth-blue") != blue
	}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
}

// toVerifying starts an upgrade to v2 whose plan says Shared and whose expand
// migrations succeed, and waits until green is verified.
func toVerifying(t *testing.T, ts *oauthv1alpha1.TokenServer, k *fakeKubelet) {
	t.Helper()
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planOK})
	k.release("expand", jobOutcome{})
	waitPhase(t, ts, oauthv1alpha1.UpgradeVerifying)
}

// waitRolledBack waits for status.upgrade.phase RolledBack (the conditions follow in
// the same or the next write: tests wait for them apart).
func waitRolledBack(t *testing.T, ts *oauthv1alpha1.TokenServer) {
	t.Helper()
	eventually(t, 20*time.Second, "RolledBack", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.Upgrade.Phase == oauthv1alpha1.UpgradeRolledBack
	}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
}

// greenAtZero checks that the green StatefulSet has no replicas left.
func greenAtZero(t *testing.T, ts *oauthv1alpha1.TokenServer, when string) {
	t.Helper()
	if _, n, _ := statefulSet(t, ts.Namespace, "auth-green"); n != 0 {
		t.Errorf("green at %d replicas %s", n, when)
	}
}
