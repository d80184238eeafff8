package controllers_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// The JSON lines the real commands print (COPY14.md).
const (
	planCopy    = `{"mode":"Copy","schemaFrom":5,"schemaTo":7,"reason":"0007 splits clients.redirect_uris (breaking)"}`
	copyDone    = `{"rowsCopied":4242,"schemaFrom":5,"schemaTo":7,"snapshot":"1200:1200:","seconds":3.1}`
	cutoverDone = `{"fenceHoldSeconds":0.84,"replayed":17,"resumed":false}`
)

// dsnSecretOf is the Secret the "db" volume of a color's StatefulSet mounts.
func dsnSecretOf(t *testing.T, ns, name string) string {
	t.Helper()
	var sts appsv1.StatefulSet
	get(t, ns, name, &sts)
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == "db" {
			return v.Secret.SecretName
		}
	}
	return ""
}

// replays are the names of ns's replay Deployments and their --direction.
func replays(t *testing.T, ns string) map[string]string {
	t.Helper()
	var list appsv1.DeploymentList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range list.Items {
		args := d.Spec.Template.Spec.Containers[0].Args
		if i := slices.Index(args, "--direction"); i >= 0 {
			out[d.Name] = args[i+1]
		}
	}
	return out
}

func waitReplays(t *testing.T, ns string, want map[string]string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("replay Deployments %v", want), func() bool {
		got := replays(t, ns)
		return len(got) == len(want) && fmt.Sprint(got) == fmt.Sprint(want)
	}, func() string { return fmt.Sprintf("replays %v", replays(t, ns)) })
}

func waitServing(t *testing.T, ts *oauthv1alpha1.TokenServer, pods ...string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("serving %v", pods), func() bool {
		return slices.Equal(servingPods(t, ts.Namespace), pods)
	}, func() string { return fmt.Sprintf("serving %v", servingPods(t, ts.Namespace)) })
}

func fresh(t *testing.T, ts *oauthv1alpha1.TokenServer) *oauthv1alpha1.UpgradeStatus {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	return ts.Status.Upgrade
}

// toReplaying runs a Copy upgrade to v2 up to Replaying, the replay behind (5000
// changes): green ready on the copy, blue serving. It returns the upgrade's id.
func toReplaying(t *testing.T, ts *oauthv1alpha1.TokenServer, k *fakeKubelet) string {
	t.Helper()
	k.replayPending.Store(5000)
	k.replayLagMs.Store(40_000)
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planCopy})
	k.release("copy", jobOutcome{message: copyDone})
	waitPhase(t, ts, oauthv1alpha1.UpgradeReplaying)
	return ts.Status.Upgrade.ID
}

// caughtUp lets the replay catch up and has the operator read it.
func caughtUp(t *testing.T, ts *oauthv1alpha1.TokenServer, k *fakeKubelet) {
	t.Helper()
	k.replayPending.Store(3)
	k.replayLagMs.Store(200)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeCuttingOver)
}

// waitCleanupJob waits for the ended upgrade's cleanup Job and checks what it
// runs: `db cleanup` on the Secret dsn (mounted as the db volume) with the new
// image (the old may predate db cleanup), the bundled copy dropped when drop
// names it.
func waitCleanupJob(t *testing.T, ts *oauthv1alpha1.TokenServer, id, dsn, drop string) string {
	const image = imageV2
	t.Helper()
	name := upgrade.JobName("auth", id, upgrade.JobCleanup)
	eventually(t, 20*time.Second, "the cleanup Job", func() bool { return slices.Contains(jobNames(t, ts.Namespace), name) },
		func() string { return fmt.Sprintf("Jobs %v, upgrade %+v", jobNames(t, ts.Namespace), fresh(t, ts)) })
	var job batchv1.Job
	get(t, ts.Namespace, name, &job)
	c := job.Spec.Template.Spec.Containers[0]
	args := []string{"db", "cleanup", "--dsn-file", "/etc/kubeoauth/db/dsn", "--lock-timeout", "2s"}
	if drop != "" {
		args = append(args, "--drop-database", drop)
	}
	if c.Image != image || !slices.Equal(c.Args, args) {
		t.Errorf("cleanup Job runs %s %v, want %s %v", c.Image, c.Args, image, args)
	}
	vols := job.Spec.Template.Spec.Volumes
	if len(vols) != 1 || vols[0].Secret == nil || vols[0].Secret.SecretName != dsn {
		t.Errorf("cleanup Job mounts %+v, want only %s", vols, dsn)
	}
	return name
}

// waitCleanup waits for status.upgrade.copy.cleanup to start with state.
func waitCleanup(t *testing.T, ts *oauthv1alpha1.TokenServer, state string) {
	t.Helper()
	eventually(t, 20*time.Second, "copy.cleanup "+state, func() bool {
		u := fresh(t, ts)
		return u.Copy != nil && strings.HasPrefix(u.Copy.Cleanup, state)
	}, func() string { return fmt.Sprintf("upgrade %+v, copy %+v", ts.Status.Upgrade, ts.Status.Upgrade.Copy) })
}

// TestCopyUpgrade drives a Copy upgrade through every phase, as the fake kubelet
// (Jobs ending with the termination messages the real commands print) and the fake
// clock let it, and checks at each one what a user sees: status.upgrade and its
// copy figures, status.database, the conditions, which pods serve, which database
// each color mounts, and the replay Deployments.
func TestCopyUpgrade(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copy", nil)
	ns := ts.Namespace
	k.replayPending.Store(5000)
	k.replayLagMs.Store(40_000)
	setImage(t, ts, imageV2)

	// Planning, then Copying: the copy's DSN Secret, derived from the bundled one, and
	// the copy Job; blue untouched, no green yet.
	waitPhase(t, ts, oauthv1alpha1.UpgradePlanning)
	id := ts.Status.Upgrade.ID
	k.release("plan", jobOutcome{message: planCopy})
	waitPhase(t, ts, oauthv1alpha1.UpgradeCopying)
	c := ts.Status.Upgrade.Copy
	copySecret := "auth-" + id + "-db"
	if c == nil || c.Database.SecretName != copySecret || c.Database.Key != "dsn" || c.Source != nil {
		t.Fatalf("status.upgrade.copy %+v", c)
	}
	var bundled, target corev1.Secret
	get(t, ns, "auth-db", &bundled)
	get(t, ns, copySecret, &target)
	b, _ := url.Parse(string(bundled.Data["dsn"]))
	tg, err := url.Parse(string(target.Data["dsn"]))
	if err != nil || tg.Host != b.Host || tg.User.String() != b.User.String() || tg.Path != "/kubeoauth_"+id {
		t.Errorf("the copy's DSN %q, the bundled one %q: want the same server and role, database kubeoauth_%s", target.Data["dsn"], bundled.Data["dsn"], id)
	}
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobCopy)); !slices.Equal(args, []string{"db", "copy",
		"--source-dsn-file", "/etc/kubeoauth/source/dsn", "--target-dsn-file", "/etc/kubeoauth/target/dsn", "--upgrade-id", id,
		"--forward-to", "http://auth-blue." + ns + ".svc:4444", "--create-database", "--termination-log", "/dev/termination-log"}) {
		t.Errorf("copy Job runs %v", args)
	}
	if _, _, ok := statefulSet(t, ns, "auth-green"); ok {
		t.Error("green exists before the copy")
	}
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")

	// Deploying, then Replaying: green at full size on the copy, blue on its own
	// database, the forward replay running; no verification Job.
	k.release("copy", jobOutcome{message: copyDone})
	waitPhase(t, ts, oauthv1alpha1.UpgradeReplaying)
	if ts.Status.Upgrade.Copy.RowsCopied != 4242 {
		t.Errorf("rowsCopied %d", ts.Status.Upgrade.Copy.RowsCopied)
	}
	if img, n, _ := statefulSet(t, ns, "auth-green"); img != imageV2 || n != 2 {
		t.Errorf("green runs %s x%d", img, n)
	}
	if g, bl := dsnSecretOf(t, ns, "auth-green"), dsnSecretOf(t, ns, "auth-blue"); g != copySecret || bl != "auth-db" {
		t.Errorf("green mounts %s, blue %s: want the copy and the bundled database", g, bl)
	}
	waitReplays(t, ns, map[string]string{"auth-" + id + "-replay": "forward"})
	eventually(t, 20*time.Second, "the replay's figures in status", func() bool {
		u := fresh(t, ts)
		return u.Copy.ReplayPending == 5000 && u.Copy.ReplayLagSeconds == "40.0"
	}, func() string { return fmt.Sprintf("copy %+v", ts.Status.Upgrade.Copy) })
	waitServing(t, ts, "auth-blue-0", "auth-blue-1")
	if slices.Contains(jobNames(t, ns), upgrade.JobName("auth", id, upgrade.JobVerify)) {
		t.Error("a verification Job ran in Copy mode")
	}

	// CuttingOver once the replay caught up. The first attempt's lease runs out
	// (exit 4): a second Job, -cutover-1; blue serves meanwhile.
	caughtUp(t, ts, k)
	if args := jobArgs(t, ns, upgrade.JobName("auth", id, upgrade.JobCutover)); !slices.Equal(args, []string{"db", "cutover",
		"--from-dsn-file", "/etc/kubeoauth/source/dsn", "--to-dsn-file", "/etc/kubeoauth/target/dsn", "--upgrade-id", id,
		"--direction", "forward", "--forward-to", "http://auth-green." + ns + ".svc:4444", "--lease", "5s",
		"--termination-log", "/dev/termination-log"}) {
		t.Errorf("cutover Job runs %v", args)
	}
	k.release("cutover", jobOutcome{failed: true, exit: upgrade.CutoverLeaseExpiredExitCode, message: "the fence's lease ran out"})
	eventually(t, 20*time.Second, "the cutover tried again", func() bool {
		return slices.Contains(jobNames(t, ns), upgrade.JobName("auth", id, upgrade.JobCutover+"-1"))
	}, func() string { return fmt.Sprintf("Jobs %v, upgrade %+v", jobNames(t, ns), fresh(t, ts)) })
	if u := fresh(t, ts); u.Phase != oauthv1alpha1.UpgradeCuttingOver || u.Copy.CutoverRetries != 1 {
		t.Errorf("after a lease that ran out: %+v", u)
	}
	waitServing(t, ts, "auth-blue-0", "auth-blue-1")

	// The cutover: the database is the copy, all of green serves, blue none; the
	// backward replay replaces the forward one.
	k.release("cutover-1", jobOutcome{message: cutoverDone})
	waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
	c = ts.Status.Upgrade.Copy
	if db := ts.Status.Database; db == nil || db.SecretName != copySecret || c.FenceHoldSeconds != "0.84" || c.CutoverAt == nil ||
		ts.Status.ActiveColor != "green" || ts.Status.Upgrade.Progress != "2/2" {
		t.Errorf("after the cutover: status.database %+v, copy %+v, activeColor %s", db, c, ts.Status.ActiveColor)
	}
	waitServing(t, ts, "auth-green-0", "auth-green-1")
	waitReplays(t, ns, map[string]string{"auth-" + id + "-replay-back": "backward"})
	if bl := dsnSecretOf(t, ns, "auth-blue"); bl != "auth-db" {
		t.Errorf("blue mounts %s after the cutover: it forwards, on its own database", bl)
	}

	// RollbackWindow, then Completed with no contract Job: the copy was migrated fully.
	step(31 * time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeRollbackWindow)
	if _, n, _ := statefulSet(t, ns, "auth-blue"); n != 0 {
		t.Errorf("blue at %d replicas in the rollback window", n)
	}
	step(time.Hour + time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeCompleted)
	waitReplays(t, ns, map[string]string{})
	if slices.Contains(jobNames(t, ns), upgrade.JobName("auth", id, upgrade.JobContract)) {
		t.Error("a contract Job ran after a Copy upgrade")
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionFalse, "UpgradeCompleted")
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, "UpgradeCompleted")
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	if ts.Status.CurrentImage != imageV2 || ts.Status.Database == nil || ts.Status.Database.SecretName != copySecret {
		t.Errorf("after the upgrade: %+v", ts.Status)
	}
	if g := dsnSecretOf(t, ns, "auth-green"); g != copySecret {
		t.Errorf("green mounts %s after the upgrade", g)
	}

	// The cleanup, once the backward replay's pod is gone: on the copy that serves,
	// with the new image, dropping nothing (the old database is kept). It fails:
	// recorded, and the upgrade stays Completed, not Degraded.
	cleanup := waitCleanupJob(t, ts, id, copySecret, "")
	waitCleanup(t, ts, upgrade.CleanupRunning)
	k.release("cleanup", jobOutcome{failed: true, message: "lock timeout on tokens"})
	waitCleanup(t, ts, upgrade.CleanupFailedPrefix)
	if c := ts.Status.Upgrade.Copy.Cleanup; !strings.Contains(c, "lock timeout on tokens") {
		t.Errorf("copy.cleanup %q does not say why", c)
	}
	if ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradeCompleted {
		t.Errorf("a failed cleanup moved the upgrade to %s", ts.Status.Upgrade.Phase)
	}
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, "UpgradeCompleted")
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	// Deleting the failed Job runs it again.
	k.release("cleanup", jobOutcome{})
	var failed batchv1.Job
	get(t, ns, cleanup, &failed)
	if err := k8s.Delete(context.Background(), &failed, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cleanup + "-x"}}); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	waitCleanup(t, ts, upgrade.CleanupDone)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionFalse, "UpgradeCompleted")

	// The next upgrade plans against the database that serves: the copy.
	// Not waitPhase(Planning): the plan Job ends at once here, and a busy machine's
	// poll can miss a phase that short; the plan Job of the upgrade to v3 stays.
	setImage(t, ts, "kubeoauth/tokenserver:v3")
	var plan batchv1.Job
	eventually(t, 20*time.Second, "the plan Job of the upgrade to v3", func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil ||
			ts.Status.Upgrade == nil || ts.Status.Upgrade.ToImage != "kubeoauth/tokenserver:v3" {
			return false
		}
		return k8s.Get(context.Background(), types.NamespacedName{Namespace: ns,
			Name: upgrade.JobName("auth", ts.Status.Upgrade.ID, upgrade.JobPlan)}, &plan) == nil
	}, func() string { return fmt.Sprintf("upgrade %+v", ts.Status.Upgrade) })
	if v := plan.Spec.Template.Spec.Volumes[0].Secret; v.SecretName != copySecret {
		t.Errorf("the next upgrade's plan mounts %s, want the copy %s", v.SecretName, copySecret)
	}
}

// TestCopyExternalWithoutTarget: a Copy upgrade of an external database without
// spec.upgrade.copy.targetSecretRef is refused before anything is created; once the
// target is named, the upgrade copies into it.
func TestCopyExternalWithoutTarget(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copyext", func(ts *oauthv1alpha1.TokenServer) {
		if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ts.Namespace, Name: "pg"},
			StringData: map[string]string{"dsn": "postgres://app:pw@pg.example:5432/app?sslmode=require"}}); err != nil {
			t.Fatal(err)
		}
		ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{SecretRef: oauthv1alpha1.SecretKeyReference{Name: "pg"}}}
		ts.Spec.Upgrade.DataMode = "Copy"
	})
	ns := ts.Namespace
	jobs := jobNames(t, ns)
	setImage(t, ts, imageV2)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRefused)
	u := ts.Status.Upgrade
	if u.Phase != oauthv1alpha1.UpgradeRefused || u.Reason != upgrade.ReasonCopyTargetMissing ||
		!strings.Contains(u.Message, "spec.upgrade.copy.targetSecretRef") || ts.Status.FailedImage != imageV2 {
		t.Errorf("upgrade %+v", u)
	}
	if got := jobNames(t, ns); !slices.Equal(got, jobs) {
		t.Errorf("Jobs %v, before the upgrade %v: a refused upgrade created one", got, jobs)
	}
	if _, _, ok := statefulSet(t, ns, "auth-green"); ok {
		t.Error("green was made for a refused upgrade")
	}
	if len(replays(t, ns)) != 0 {
		t.Error("a replay was made for a refused upgrade")
	}
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")

	// With the target named, spec.upgrade changed: tried again, and copied into the
	// user's database, which the copy does not create; no Secret of the operator's.
	refused := u.ID
	update(t, ts, func() {
		ts.Spec.Upgrade.Copy.TargetSecretRef = &oauthv1alpha1.SecretKeyReference{Name: "pg-v2", Key: "uri"}
	})
	waitPhase(t, ts, oauthv1alpha1.UpgradePlanning)
	id := ts.Status.Upgrade.ID
	if id == refused {
		t.Fatalf("the refused upgrade %s resumed", id)
	}
	k.release("plan", jobOutcome{message: planCopy})
	waitPhase(t, ts, oauthv1alpha1.UpgradeCopying)
	if c := ts.Status.Upgrade.Copy; c.Database != (oauthv1alpha1.DatabaseRef{SecretName: "pg-v2", Key: "uri"}) {
		t.Errorf("status.upgrade.copy.database %+v", c.Database)
	}
	var job batchv1.Job
	get(t, ns, upgrade.JobName("auth", id, upgrade.JobCopy), &job)
	if args := job.Spec.Template.Spec.Containers[0].Args; slices.Contains(args, "--create-database") {
		t.Errorf("the copy of an external database runs %v", args)
	}
	mounts := map[string]string{}
	for _, v := range job.Spec.Template.Spec.Volumes {
		mounts[v.Name] = v.Secret.SecretName + "/" + v.Secret.Items[0].Key
	}
	if mounts["source"] != "pg/dsn" || mounts["target"] != "pg-v2/uri" {
		t.Errorf("the copy Job mounts %v", mounts)
	}
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "auth-" + id + "-db"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a copy Secret was made for an external database (%v)", err)
	}
}

// TestCopyRollbackBeforeCutover: a rollback asked while the replay catches up takes
// green and the replay away; blue never stopped serving on its own database; the
// cleanup Job then runs on blue's database and drops the bundled copy.
func TestCopyRollbackBeforeCutover(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copyrb", nil)
	ns := ts.Namespace
	id := toReplaying(t, ts, k)
	waitReplays(t, ns, map[string]string{"auth-" + id + "-replay": "forward"})
	update(t, ts, func() { metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationRollback, id) })
	waitRolledBack(t, ts)
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	waitReplays(t, ns, map[string]string{})
	greenAtZero(t, ts, "after a rollback before the cutover")
	waitServing(t, ts, "auth-blue-0", "auth-blue-1")
	if ts.Status.Database != nil || ts.Status.ActiveColor != "blue" || ts.Status.FailedImage != imageV2 {
		t.Errorf("after the rollback: %+v", ts.Status)
	}
	if dsnSecretOf(t, ns, "auth-blue") != "auth-db" {
		t.Error("blue left its database")
	}
	// The cleanup: on blue's database, with the new image (the old may predate db cleanup), the bundled copy
	// dropped; the rollback's record stays as it was.
	waitCleanupJob(t, ts, id, "auth-db", "kubeoauth_"+id)
	k.release("cleanup", jobOutcome{})
	waitCleanup(t, ts, upgrade.CleanupDone)
	if ts.Status.Upgrade.Phase != oauthv1alpha1.UpgradeRolledBack || ts.Status.Upgrade.Reason != upgrade.ReasonRollbackAsked {
		t.Errorf("after the cleanup: %+v", ts.Status.Upgrade)
	}
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
}

// rollBackAfterCutover takes a Copy upgrade of ts through its cutover into the
// rollback window, asks for a rollback and waits for the cut back Job, which it
// returns with the upgrade's id.
func rollBackAfterCutover(t *testing.T, ts *oauthv1alpha1.TokenServer, k *fakeKubelet, step func(time.Duration)) (id, cutback string) {
	t.Helper()
	id = toReplaying(t, ts, k)
	caughtUp(t, ts, k)
	k.release("cutover", jobOutcome{message: cutoverDone})
	waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
	step(31 * time.Second)
	poke(t, ts)
	waitPhase(t, ts, oauthv1alpha1.UpgradeRollbackWindow)
	update(t, ts, func() { metav1.SetMetaDataAnnotation(&ts.ObjectMeta, oauthv1alpha1.AnnotationRollback, id) })
	waitPhase(t, ts, oauthv1alpha1.UpgradeRollingBack)
	cutback = upgrade.JobName("auth", id, upgrade.JobCutback)
	ns := ts.Namespace
	eventually(t, 20*time.Second, "blue back at full size, the cut back Job", func() bool {
		return slices.Contains(jobNames(t, ns), cutback)
	}, func() string { return fmt.Sprintf("Jobs %v, upgrade %+v", jobNames(t, ns), fresh(t, ts)) })
	return id, cutback
}

// TestCopyRollbackAfterCutover: a rollback asked in the rollback window brings blue
// back at full size on its own database while green serves, then cuts the database
// back (the cut back Job, forwarding to blue), moves the label back and takes
// green away; status.database is unset again.
func TestCopyRollbackAfterCutover(t *testing.T) {
	step := advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copyback", nil)
	ns := ts.Namespace
	id, cutback := rollBackAfterCutover(t, ts, k, step)
	if img, n, _ := statefulSet(t, ns, "auth-blue"); img != imageV1 || n != 2 || dsnSecretOf(t, ns, "auth-blue") != "auth-db" {
		t.Errorf("blue %s x%d on %s", img, n, dsnSecretOf(t, ns, "auth-blue"))
	}
	if args := jobArgs(t, ns, cutback); !slices.Equal(args, []string{"db", "cutover",
		"--from-dsn-file", "/etc/kubeoauth/source/dsn", "--to-dsn-file", "/etc/kubeoauth/target/dsn", "--upgrade-id", id,
		"--direction", "backward", "--forward-to", "http://auth-blue." + ns + ".svc:4444", "--lease", "5s",
		"--termination-log", "/dev/termination-log"}) {
		t.Errorf("cut back Job runs %v", args)
	}
	// Until the cut back, green serves on the copy and the backward replay runs.
	waitServing(t, ts, "auth-green-0", "auth-green-1")
	waitReplays(t, ns, map[string]string{"auth-" + id + "-replay-back": "backward"})
	if db := fresh(t, ts); ts.Status.Database == nil || db.Copy.CutBack {
		t.Errorf("before the cut back: status.database %+v, copy %+v", ts.Status.Database, db.Copy)
	}

	k.release("cutback", jobOutcome{message: `{"fenceHoldSeconds":0.31,"replayed":4,"resumed":false}`})
	waitRolledBack(t, ts)
	waitServing(t, ts, "auth-blue-0", "auth-blue-1")
	waitReplays(t, ns, map[string]string{})
	greenAtZero(t, ts, "after the cut back")
	// The phase is written first (the intent), the rest of the pass's status after it.
	eventually(t, 20*time.Second, "currentImage back to v1", func() bool {
		_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts)
		return ts.Status.CurrentImage == imageV1
	}, func() string { return fmt.Sprintf("status %+v", ts.Status) })
	u := fresh(t, ts)
	if ts.Status.Database != nil || !u.Copy.CutBack || u.Copy.FenceHoldSeconds != "0.31" || ts.Status.ActiveColor != "blue" ||
		ts.Status.CurrentImage != imageV1 || ts.Status.FailedImage != imageV2 {
		t.Errorf("after the rollback: %+v, copy %+v", ts.Status, u.Copy)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)

	// The cleanup: on blue's own database (never the copy), with the old image that
	// serves, the bundled copy dropped. A failure leaves the rollback as it was.
	waitCleanupJob(t, ts, id, "auth-db", "kubeoauth_"+id)
	k.release("cleanup", jobOutcome{failed: true, message: "could not drop"})
	waitCleanup(t, ts, upgrade.CleanupFailedPrefix)
	if u := ts.Status.Upgrade; u.Phase != oauthv1alpha1.UpgradeRolledBack || !u.Copy.CutBack {
		t.Errorf("after a failed cleanup: %+v", u)
	}
	condIs(t, ts, oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue, oauthv1alpha1.ReasonUpgradeRolledBack)
	condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
}

// TestCopyOperatorRestart: the operator stops while the copy Job runs, and again
// while the cutover Job runs, and each Job ends meanwhile; the new operator reads
// the intent from status and the Jobs by their names (their termination messages
// included), and carries on without running any Job again.
func TestCopyOperatorRestart(t *testing.T) {
	advanceOperatorClock(t)
	ts, k := upgradeServer(t, "copyrestart", nil)
	ns := ts.Namespace
	jobDone := func(name string) func() bool {
		return func() bool {
			var j batchv1.Job
			get(t, ns, name, &j)
			return len(j.Status.Conditions) > 0
		}
	}
	k.replayPending.Store(5000)
	setImage(t, ts, imageV2)
	k.release("plan", jobOutcome{message: planCopy})
	waitPhase(t, ts, oauthv1alpha1.UpgradeCopying)
	id := ts.Status.Upgrade.ID
	jobs := jobNames(t, ns)
	restartOperator(t, func() {
		k.release("copy", jobOutcome{message: copyDone})
		eventually(t, 20*time.Second, "the copy Job done", jobDone(upgrade.JobName("auth", id, upgrade.JobCopy)), nil)
	})
	waitPhase(t, ts, oauthv1alpha1.UpgradeReplaying)
	if ts.Status.Upgrade.ID != id || ts.Status.Upgrade.Copy.RowsCopied != 4242 {
		t.Errorf("after the restart during the copy: %+v", ts.Status.Upgrade)
	}
	if got := jobNames(t, ns); !slices.Equal(got, jobs) {
		t.Errorf("Jobs after the restart %v, before %v: a Job ran again", got, jobs)
	}

	caughtUp(t, ts, k)
	jobs = jobNames(t, ns)
	restartOperator(t, func() {
		k.release("cutover", jobOutcome{message: cutoverDone})
		eventually(t, 20*time.Second, "the cutover Job done", jobDone(upgrade.JobName("auth", id, upgrade.JobCutover)), nil)
	})
	waitPhase(t, ts, oauthv1alpha1.UpgradeScalingDown)
	waitServing(t, ts, "auth-green-0", "auth-green-1")
	if ts.Status.Upgrade.ID != id || ts.Status.Database == nil || ts.Status.Database.SecretName != "auth-"+id+"-db" {
		t.Errorf("after the restart during the cutover: %+v", ts.Status)
	}
	if got := jobNames(t, ns); !slices.Equal(got, jobs) {
		t.Errorf("Jobs after the restart %v, before %v: a Job ran again", got, jobs)
	}
	waitReplays(t, ns, map[string]string{"auth-" + id + "-replay-back": "backward"})
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "auth-" + id + "-replay"}, &appsv1.Deployment{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the forward replay outlived the cutover (%v)", err)
	}
}
