package upgrade

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

var (
	bundledDB = v1.DatabaseRef{SecretName: "auth-db", Key: "dsn"}
	copyDB    = v1.DatabaseRef{SecretName: "auth-" + id + "-db", Key: "dsn"}
)

const (
	copyDone    = `{"rowsCopied":1234,"schemaFrom":5,"schemaTo":6,"snapshot":"900:900:","seconds":2.5}`
	cutoverDone = `{"fenceHoldSeconds":0.84,"replayed":12,"resumed":false}`
)

// atCopy is the world just as phase p of a Copy upgrade began at t0: blue imgA on
// the bundled database, green imgB on the copy; after CuttingOver, the cutover done.
//
//nolint:unparam // as at: the size stays explicit in the table
func atCopy(p v1.UpgradePhase, n int32) Observed {
	o := settled(n, imgB)
	o.Spec.Database = bundledDB
	u := &v1.UpgradeStatus{ID: id, Phase: p, PhaseSince: stamp(t0), FromImage: imgA, ToImage: imgB,
		FromColor: "blue", ToColor: "green", Steps: n, Progress: "0/3", StartedAt: stamp(t0.Add(-time.Hour))}
	o.Status.Upgrade = u
	if p == v1.UpgradePlanning {
		return o
	}
	o.Plan = &PlanResult{Mode: ModeCopy, SchemaFrom: 5, SchemaTo: 6, Reason: "breaking: 0006 splits clients.redirect_uris"}
	u.Plan = &v1.UpgradePlan{Mode: ModeCopy, SchemaFrom: 5, SchemaTo: 6, Reason: o.Plan.Reason}
	u.Copy = &v1.UpgradeCopyStatus{Database: copyDB}
	o.Jobs[JobPlan] = Job{State: JobSucceeded}
	if p == v1.UpgradeCopying {
		return o
	}
	o.Jobs[JobCopy] = Job{State: JobSucceeded, Output: copyDone}
	u.Copy.RowsCopied = 1234
	o.StatefulSets[Green] = StatefulSet{Image: imgB, Replicas: n}
	ready := p != v1.UpgradeDeploying
	cut := p == v1.UpgradeScalingDown || p == v1.UpgradeRollbackWindow
	o.Pods = append(pods(Blue, imgA, int(n), true, func(int) bool { return !cut }), pods(Green, imgB, int(n), ready, func(int) bool { return cut })...)
	o.Endpoints = map[Color]int32{Blue: n, Green: 0}
	if !cut {
		o.Replay = &ReplayFigures{Pending: 3, Lag: 200 * time.Millisecond}
		return o
	}
	o.Jobs[JobCutover] = Job{State: JobSucceeded, Output: cutoverDone}
	u.Copy.CutoverAt, u.Copy.FenceHoldSeconds = stamp(t0), "0.84"
	u.Step, u.Progress = n, "3/3"
	o.Status.ActiveColor, o.Status.Database = Green, &copyDB
	o.Endpoints = map[Color]int32{Blue: 0, Green: n}
	if p == v1.UpgradeRollbackWindow {
		o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 0}
		o.Pods = pods(Green, imgB, int(n), true, all)
	}
	return o
}

func external(target bool) func(*Observed) {
	return func(o *Observed) {
		o.Spec.External, o.Spec.Database = true, v1.DatabaseRef{SecretName: "pg", Key: "dsn"}
		if target {
			o.Spec.Upgrade.Copy.TargetSecretRef = &v1.SecretKeyReference{Name: "pg-v2"}
		}
	}
}

func failedWith(k JobKind, exit int32) func(*Observed) {
	return func(o *Observed) { o.Jobs[k] = Job{State: JobFailed, ExitCode: exit, Message: "BackoffLimitExceeded"} }
}

// rollingBackAfterCutover: the rollback annotation in the rollback window brought
// blue back (ready when blueReady); green still serves on the copy.
func rollingBackAfterCutover(blueReady bool) Observed {
	return with(atCopy(v1.UpgradeRollbackWindow, 3), func(o *Observed) {
		u := o.Status.Upgrade
		u.Phase, u.Reason, u.RollbackReason = v1.UpgradeRollingBack, ReasonRollbackAsked, "asked"
		o.Status.FailedImage = imgB
		o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 3}
		o.Pods = append(pods(Blue, imgA, 3, blueReady, none), pods(Green, imgB, 3, true, all)...)
	})
}

// copyTransitions covers the Copy path, phase by phase.
func copyTransitions() map[string]transition {
	planned := func(mode string) func(*Observed) {
		return func(o *Observed) {
			o.Jobs[JobPlan] = Job{State: JobSucceeded}
			o.Plan = &PlanResult{Mode: mode, SchemaFrom: 5, SchemaTo: 6, Reason: "the plan"}
		}
	}
	dataMode := func(m string) func(*Observed) { return func(o *Observed) { o.Spec.Upgrade.DataMode = m } }
	replay := func(pending int64, lag time.Duration) func(*Observed) {
		return func(o *Observed) { o.Replay = &ReplayFigures{Pending: pending, Lag: lag} }
	}
	pause := func(o *Observed) { o.Spec.Upgrade.PauseBeforePromotion = true }
	retried := func(o *Observed) { o.Status.Upgrade.Copy.CutoverRetries = maxCutoverRetries }
	cutoverFailed := func(o *Observed) { o.Status.Upgrade.Reason = v1.ReasonCutoverFailed }
	copying := want{phase: v1.UpgradeCopying, jobs: []JobKind{JobCopy}, active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 3}}}
	refusedTarget := want{phase: v1.UpgradeRefused, active: Blue, failed: imgB, reason: ReasonCopyTargetMissing, degraded: v1.ReasonUpgradeRefused}
	both := []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 3}}
	greenOn := []LabelIntent{on(green0), on(green1), on(green2)}
	return map[string]transition{
		// Planning.
		"copy planning: dataMode Copy, external database without a target: refused before the plan runs": {
			with(atCopy(v1.UpgradePlanning, 3), dataMode(ModeCopy), external(false)), t0, refusedTarget},
		"copy planning: Auto, the plan needs a copy of an external database without a target: refused": {
			with(atCopy(v1.UpgradePlanning, 3), planned(ModeCopy), external(false)), t0, refusedTarget},
		"copy planning: Auto, the plan needs a copy: copying": {with(atCopy(v1.UpgradePlanning, 3), planned(ModeCopy)), t0, copying},
		"copy planning: dataMode Copy, a plan that could share: copying anyway": {
			with(atCopy(v1.UpgradePlanning, 3), planned(ModeShared), dataMode(ModeCopy)), t0, copying},
		"copy planning: external database with a target: copying": {
			with(atCopy(v1.UpgradePlanning, 3), planned(ModeCopy), external(true)), t0, copying},

		// Copying.
		"copying: the copy runs": {with(atCopy(v1.UpgradeCopying, 3), job(JobCopy, JobRunning)), t0,
			want{phase: v1.UpgradeCopying, active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 3}}}},
		"copying: copy Job missing after a restart: created again": {atCopy(v1.UpgradeCopying, 3), t0, copying},
		"copying: copied: green on the copy, the replay": {with(atCopy(v1.UpgradeCopying, 3), func(o *Observed) {
			o.Jobs[JobCopy] = Job{State: JobSucceeded, Output: copyDone}
		}), t0, want{phase: v1.UpgradeDeploying, active: Blue, sts: both, replay: Forward}},
		"copying: the copy failed: rolled back, blue never stopped; the cleanup Job": {with(atCopy(v1.UpgradeCopying, 3), job(JobCopy, JobFailed)), t0,
			want{phase: v1.UpgradeRolledBack, active: Blue, failed: imgB, reason: ReasonCopyFailed, degraded: v1.ReasonUpgradeRolledBack,
				jobs: []JobKind{JobCleanup}}},
		"copying: rollback annotation, the copy Job still runs: rolled back; no cleanup until it is gone": {
			with(atCopy(v1.UpgradeCopying, 3), job(JobCopy, JobRunning), annotate(v1.AnnotationRollback, id)), t0,
			want{phase: v1.UpgradeRolledBack, active: Blue, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack}},

		// Deploying and Replaying.
		"deploying on the copy: green not ready: waits": {atCopy(v1.UpgradeDeploying, 3), t0,
			want{phase: v1.UpgradeDeploying, active: Blue, sts: both, replay: Forward}},
		"deploying on the copy: green ready: replaying, no verification Job": {with(atCopy(v1.UpgradeDeploying, 3), greenReady(3), replay(5000, time.Minute)), t0,
			want{phase: v1.UpgradeReplaying, active: Blue, sts: both, replay: Forward}},
		"replaying: the replay is behind: waits": {with(atCopy(v1.UpgradeReplaying, 3), replay(5000, 30*time.Second)), t0,
			want{phase: v1.UpgradeReplaying, active: Blue, replay: Forward}},
		"replaying: the replay's lag is too long: waits": {with(atCopy(v1.UpgradeReplaying, 3), replay(2, 6*time.Second)), t0,
			want{phase: v1.UpgradeReplaying, active: Blue, replay: Forward}},
		"replaying: the replay's metrics cannot be read: waits": {with(atCopy(v1.UpgradeReplaying, 3), func(o *Observed) { o.Replay = nil }), t0,
			want{phase: v1.UpgradeReplaying, active: Blue, replay: Forward}},
		"replaying: caught up: cutting over": {atCopy(v1.UpgradeReplaying, 3), t0,
			want{phase: v1.UpgradeCuttingOver, jobs: []JobKind{JobCutover}, active: Blue, sts: both, replay: Forward}},
		"replaying: caught up, paused": {with(atCopy(v1.UpgradeReplaying, 3), pause), t0,
			want{phase: v1.UpgradePaused, active: Blue, replay: Forward}},
		"paused on the copy: promoted: cutting over": {with(atCopy(v1.UpgradePaused, 3), pause, annotate(v1.AnnotationPromote, id)), t0,
			want{phase: v1.UpgradeCuttingOver, jobs: []JobKind{JobCutover}, active: Blue, replay: Forward}},
		"replaying: past the deadline: rolling back": {atCopy(v1.UpgradeReplaying, 3), t0.Add(3 * time.Minute),
			want{phase: v1.UpgradeRollingBack, active: Blue, failed: imgB, reason: ReasonDeadline, degraded: v1.ReasonUpgradeRolledBack,
				sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},

		// CuttingOver.
		"cutting over: the Job runs; a rollback asked meanwhile waits for it": {
			with(atCopy(v1.UpgradeCuttingOver, 3), job(JobCutover, JobRunning), annotate(v1.AnnotationRollback, id)), t0,
			want{phase: v1.UpgradeCuttingOver, active: Blue, replay: Forward}},
		"cutting over: done: all traffic to green at once, the database is the copy": {
			with(atCopy(v1.UpgradeCuttingOver, 3), func(o *Observed) { o.Jobs[JobCutover] = Job{State: JobSucceeded, Output: cutoverDone} }), t0,
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, labels: greenOn, replay: Backward, database: copyDB.SecretName, sts: both}},
		"cutting over: the lease ran out: tried again under a new name": {
			with(atCopy(v1.UpgradeCuttingOver, 3), failedWith(JobCutover, CutoverLeaseExpiredExitCode)), t0,
			want{phase: v1.UpgradeCuttingOver, jobs: []JobKind{JobCutover}, active: Blue, replay: Forward}},
		"cutting over: the lease ran out again and again: rolled back": {
			with(atCopy(v1.UpgradeCuttingOver, 3), retried, failedWith(JobCutover, CutoverLeaseExpiredExitCode)), t0,
			want{phase: v1.UpgradeRollingBack, active: Blue, failed: imgB, reason: ReasonCutoverExpired, degraded: v1.ReasonUpgradeRolledBack}},
		"cutting over: the lease ran out, a rollback asked: rolling back": {
			with(atCopy(v1.UpgradeCuttingOver, 3), failedWith(JobCutover, CutoverLeaseExpiredExitCode), annotate(v1.AnnotationRollback, id)), t0,
			want{phase: v1.UpgradeRollingBack, active: Blue, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack}},
		"cutting over: failed otherwise, retries spent: waits for a person, Degraded": {
			with(atCopy(v1.UpgradeCuttingOver, 3), retried, failedWith(JobCutover, 1), annotate(v1.AnnotationRollback, id)), t0,
			want{phase: v1.UpgradeCuttingOver, active: Blue, reason: v1.ReasonCutoverFailed, degraded: v1.ReasonCutoverFailed, replay: Forward}},
		"cutting over: a person deleted the failed Job, its rerun runs: no longer waits for a person": {
			with(atCopy(v1.UpgradeCuttingOver, 3), retried, cutoverFailed, job(JobCutover, JobRunning)), t0,
			want{phase: v1.UpgradeCuttingOver, active: Blue, replay: Forward}},
		"cutting over: the rerun failed too: waits for a person again": {
			with(atCopy(v1.UpgradeCuttingOver, 3), retried, failedWith(JobCutover, 1)), t0,
			want{phase: v1.UpgradeCuttingOver, active: Blue, reason: v1.ReasonCutoverFailed, degraded: v1.ReasonCutoverFailed, replay: Forward}},

		// After the cutover.
		"scaling down after the cutover: blue to zero after the delay, the backward replay runs": {
			with(atCopy(v1.UpgradeScalingDown, 3)), t0.Add(10 * time.Second),
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, replay: Backward, database: copyDB.SecretName,
				sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"rollback window on the copy: ended: completed, no contract Job; the cleanup waits for the replay's pod": {
			with(atCopy(v1.UpgradeRollbackWindow, 3), func(o *Observed) { o.ReplayPods = 1 }), t0.Add(time.Minute),
			want{phase: v1.UpgradeCompleted, step: 3, active: Green, database: copyDB.SecretName}},
		"rollback window on the copy: ended, no replay pod left: completed, the cleanup Job": {
			atCopy(v1.UpgradeRollbackWindow, 3), t0.Add(time.Minute),
			want{phase: v1.UpgradeCompleted, step: 3, active: Green, database: copyDB.SecretName, jobs: []JobKind{JobCleanup}}},
		"rollback window on the copy: rollback asked: blue back at full size, green keeps serving": {
			with(atCopy(v1.UpgradeRollbackWindow, 3), annotate(v1.AnnotationRollback, id)), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				replay: Backward, database: copyDB.SecretName, sts: both}},
		"rolling back after the cutover: blue not ready yet: no cut back": {rollingBackAfterCutover(false), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				replay: Backward, database: copyDB.SecretName, sts: both}},
		"rolling back after the cutover: blue ready: the cut back Job": {rollingBackAfterCutover(true), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				jobs: []JobKind{JobCutback}, replay: Backward, database: copyDB.SecretName, sts: both}},
		"rolling back after the cutover: the cut back's lease ran out: tried again": {
			with(rollingBackAfterCutover(true), failedWith(JobCutback, CutoverLeaseExpiredExitCode)), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				jobs: []JobKind{JobCutback}, replay: Backward, database: copyDB.SecretName}},
		"rolling back after the cutover: cut back: the database and the label back to blue": {
			with(rollingBackAfterCutover(true), func(o *Observed) { o.Jobs[JobCutback] = Job{State: JobSucceeded, Output: cutoverDone} }), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				labels: []LabelIntent{on(blue0), on(blue1), on(blue2)}, sts: both}},
		// The cut back's Job failed every time; a person deleted it and its rerun
		// succeeded before a pass saw it run: no longer waiting for a person.
		"rolling back after the cutover: a rerun of the failed cut back succeeded: CutoverFailed cleared": {
			with(rollingBackAfterCutover(true), cutoverFailed, func(o *Observed) { o.Jobs[JobCutback] = Job{State: JobSucceeded, Output: cutoverDone} }), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonCutBack, degraded: v1.ReasonUpgradeRolledBack,
				labels: []LabelIntent{on(blue0), on(blue1), on(blue2)}, sts: both}},
		"rolling back after the cutover: a rerun of the failed cut back runs: CutoverFailed cleared": {
			with(rollingBackAfterCutover(true), retried, cutoverFailed, job(JobCutback, JobRunning)), t0,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, degraded: v1.ReasonUpgradeRolledBack,
				replay: Backward, database: copyDB.SecretName}},
	}
}

func allTransitions() map[string]transition {
	out := transitions()
	maps.Copy(out, copyTransitions())
	return out
}

// Each color mounts its own database during a Copy upgrade, and the bundled copy's
// Secret is asked for while the copy runs.
func TestCopyDatabases(t *testing.T) {
	d := Next(with(atCopy(v1.UpgradePlanning, 3), func(o *Observed) {
		o.Jobs[JobPlan] = Job{State: JobSucceeded}
		o.Plan = &PlanResult{Mode: ModeCopy}
	}), t0)
	if d.TargetSecret != copyDB.SecretName || d.Databases[Blue] != bundledDB || d.Databases[Green] != copyDB {
		t.Errorf("copying: target Secret %q, databases %v", d.TargetSecret, d.Databases)
	}
	if c := d.Status.Upgrade.Copy; c == nil || c.Database != copyDB || c.Source != nil {
		t.Errorf("status.upgrade.copy %+v", c)
	}
	d = Next(with(atCopy(v1.UpgradePlanning, 3), external(true), func(o *Observed) {
		o.Jobs[JobPlan] = Job{State: JobSucceeded}
		o.Plan = &PlanResult{Mode: ModeCopy}
	}), t0)
	if d.TargetSecret != "" || d.Status.Upgrade.Copy.Database != (v1.DatabaseRef{SecretName: "pg-v2", Key: "dsn"}) {
		t.Errorf("external: target Secret %q, copy %+v", d.TargetSecret, d.Status.Upgrade.Copy)
	}
	// After the cutover status.database is the copy, yet blue, back for a rollback,
	// mounts its own.
	d = Next(rollingBackAfterCutover(false), t0)
	if d.Databases[Blue] != bundledDB || d.Databases[Green] != copyDB {
		t.Errorf("rolling back: databases %v", d.Databases)
	}
	// The copy's figures reach status.
	d = Next(with(atCopy(v1.UpgradeReplaying, 3), func(o *Observed) { o.Replay = &ReplayFigures{Pending: 420, Lag: 1500 * time.Millisecond} }), t0)
	if c := d.Status.Upgrade.Copy; c.ReplayPending != 420 || c.ReplayLagSeconds != "1.5" || c.RowsCopied != 1234 {
		t.Errorf("status.upgrade.copy %+v", c)
	}
	// After the cutover, the backward replay's figures take their place; falling
	// behind is warned of once.
	behind := func(lag time.Duration) func(*Observed) {
		return func(o *Observed) { o.Replay = &ReplayFigures{Pending: 77, Lag: lag} }
	}
	warned := func(d Decision) int {
		n := 0
		for _, e := range d.Events {
			if e.Reason == ReasonBackwardReplayBehind && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "auth-"+id+"-replay-back") {
				n++
			}
		}
		return n
	}
	for _, p := range []v1.UpgradePhase{v1.UpgradeScalingDown, v1.UpgradeRollbackWindow} {
		d = Next(with(atCopy(p, 3), behind(2*time.Second)), t0)
		if c := d.Status.Upgrade.Copy; c.ReplayPending != 77 || c.ReplayLagSeconds != "2.0" || warned(d) != 0 {
			t.Errorf("%s, the backward replay current: copy %+v, events %v", p, c, d.Events)
		}
		d = Next(with(atCopy(p, 3), behind(10*time.Minute)), t0)
		if c := d.Status.Upgrade.Copy; c.ReplayLagSeconds != "600.0" || warned(d) != 1 {
			t.Errorf("%s, the backward replay 10 minutes behind: copy %+v, events %v; want one BackwardReplayBehind", p, c, d.Events)
		}
		again := with(atCopy(p, 3), behind(11*time.Minute))
		again.Status.Upgrade.Copy.ReplayLagSeconds = "600.0"
		if d = Next(again, t0); warned(d) != 0 {
			t.Errorf("%s, still behind: warned again: %v", p, d.Events)
		}
	}
	d = Next(with(atCopy(v1.UpgradeCuttingOver, 3), func(o *Observed) { o.Jobs[JobCutover] = Job{State: JobSucceeded, Output: cutoverDone} }), t0)
	if c := d.Status.Upgrade.Copy; c.FenceHoldSeconds != "0.84" || c.CutoverAt == nil {
		t.Errorf("after the cutover: status.upgrade.copy %+v", c)
	}
	// A cut back puts status.database back to what it was (the spec's: unset).
	d = Next(with(rollingBackAfterCutover(true), func(o *Observed) { o.Jobs[JobCutback] = Job{State: JobSucceeded, Output: cutoverDone} }), t0)
	if d.Status.Database != nil || !d.Status.Upgrade.Copy.CutBack {
		t.Errorf("cut back: status.database %+v, copy %+v", d.Status.Database, d.Status.Upgrade.Copy)
	}
	if !slices.ContainsFunc(d.Events, func(e Event) bool { return e.Reason == ReasonCutBack }) {
		t.Errorf("no CutBack event: %v", d.Events)
	}
}
