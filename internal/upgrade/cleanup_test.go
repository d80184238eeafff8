package upgrade

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// copyEnded is a Copy upgrade ended in phase (Completed, green on the copy;
// RolledBack, blue on its own database, after the cutover when cutBack), its
// cleanup in state cleanup, the cleanup Job as cleanupJob says.
func copyEnded(phase v1.UpgradePhase, cutBack bool, cleanup string, cleanupJob JobState) Observed {
	o := atCopy(v1.UpgradeRollbackWindow, 3)
	u := o.Status.Upgrade
	u.Phase, u.Copy.Cleanup = phase, cleanup
	o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 0}
	if phase == v1.UpgradeRolledBack {
		u.Reason, u.RollbackReason = ReasonRollbackAsked, "asked"
		o.Status.FailedImage, o.Status.ActiveColor, o.Status.Database = imgB, Blue, nil
		o.StatefulSets = map[Color]StatefulSet{Blue: {Image: imgA, Replicas: 3}, Green: {Image: imgB, Replicas: 0}}
		o.Pods = pods(Blue, imgA, 3, true, all)
		o.Endpoints = map[Color]int32{Blue: 3}
		u.Copy.CutBack = cutBack
		if !cutBack {
			u.Copy.CutoverAt, u.Copy.FenceHoldSeconds = nil, ""
			delete(o.Jobs, JobCutover)
		}
	}
	if cleanupJob != JobAbsent {
		o.Jobs[JobCleanup] = Job{State: cleanupJob}
		if cleanupJob == JobFailed {
			o.Jobs[JobCleanup] = Job{State: JobFailed, ExitCode: 1, Message: "BackoffLimitExceeded: lock timeout on tokens"}
		}
	}
	return o
}

// TestCopyCleanup: once a Copy upgrade ended, one cleanup Job runs `db cleanup`
// with the image that serves, on the database it serves on (and drops the
// bundled copy after a rollback); its outcome is recorded in
// status.upgrade.copy.cleanup and an event, never in the upgrade's phase or
// Degraded; deleting a failed one runs it again; the next upgrade waits for it.
func TestCopyCleanup(t *testing.T) {
	ext := func(o *Observed) {
		o.Spec.External, o.Spec.Database = true, v1.DatabaseRef{SecretName: "pg", Key: "dsn"}
		o.Status.Upgrade.Copy.Database = v1.DatabaseRef{SecretName: "pg-v2", Key: "dsn"}
		if o.Status.Database != nil {
			o.Status.Database = &o.Status.Upgrade.Copy.Database
		}
	}
	type want struct {
		phase   v1.UpgradePhase
		cleanup string // status.upgrade.copy.cleanup; a prefix for a failure
		job     *JobIntent
		deletes []string
		event   string
	}
	name := "auth-" + id + "-cleanup"
	onCopy := &JobIntent{Kind: JobCleanup, Name: name, Image: imgB, Database: &copyDB}
	onBlue := &JobIntent{Kind: JobCleanup, Name: name, Image: imgB, Database: &bundledDB, DropCopy: true}
	pg := v1.DatabaseRef{SecretName: "pg", Key: "dsn"}
	for name, tc := range map[string]struct {
		in   Observed
		want want
	}{
		"completed, the backward replay's pod still there: waits": {
			with(copyEnded(v1.UpgradeCompleted, false, "", JobAbsent), func(o *Observed) { o.ReplayPods = 1 }),
			want{phase: v1.UpgradeCompleted}},
		"rolled back during the copy, the deleted copy Job's pod still terminating: waits": {
			with(copyEnded(v1.UpgradeRolledBack, false, "", JobAbsent), func(o *Observed) { o.CopyPods = 1 }),
			want{phase: v1.UpgradeRolledBack}},
		"completed: the Job on the copy that serves, with the new image, dropping nothing": {
			copyEnded(v1.UpgradeCompleted, false, "", JobAbsent), want{phase: v1.UpgradeCompleted, cleanup: CleanupRunning, job: onCopy}},
		"completed: the Job runs": {copyEnded(v1.UpgradeCompleted, false, CleanupRunning, JobRunning),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupRunning}},
		"completed: the Job succeeded: done": {copyEnded(v1.UpgradeCompleted, false, CleanupRunning, JobSucceeded),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupDone, event: ReasonCleanedUp}},
		"completed: done, the Job deleted since: not run again": {copyEnded(v1.UpgradeCompleted, false, CleanupDone, JobAbsent),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupDone}},
		"completed: the Job failed: recorded, the upgrade stays completed": {copyEnded(v1.UpgradeCompleted, false, CleanupRunning, JobFailed),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupFailedPrefix + "BackoffLimitExceeded: lock timeout", event: ReasonCleanupFailed}},
		"completed: failed, then a person deleted the Job: run again": {
			copyEnded(v1.UpgradeCompleted, false, CleanupFailedPrefix+"BackoffLimitExceeded", JobAbsent),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupRunning, job: onCopy}},
		"completed on an external copy: on the user's target, dropping nothing": {
			with(copyEnded(v1.UpgradeCompleted, false, "", JobAbsent), ext),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupRunning,
				job: &JobIntent{Kind: JobCleanup, Name: name, Image: imgB, Database: &v1.DatabaseRef{SecretName: "pg-v2", Key: "dsn"}}}},
		"rolled back before the cutover: on blue's database, with the new image (the old may predate db cleanup), the bundled copy dropped": {
			copyEnded(v1.UpgradeRolledBack, false, "", JobAbsent), want{phase: v1.UpgradeRolledBack, cleanup: CleanupRunning, job: onBlue}},
		"rolled back after the cut back: the same": {
			copyEnded(v1.UpgradeRolledBack, true, "", JobAbsent), want{phase: v1.UpgradeRolledBack, cleanup: CleanupRunning, job: onBlue}},
		"rolled back from a copy of status.database: cleaned there": {
			with(copyEnded(v1.UpgradeRolledBack, true, "", JobAbsent), func(o *Observed) {
				prev := v1.DatabaseRef{SecretName: "auth-0ld-db", Key: "dsn"}
				o.Status.Upgrade.Copy.Source, o.Status.Database = &prev, &prev
			}), want{phase: v1.UpgradeRolledBack, cleanup: CleanupRunning,
				job: &JobIntent{Kind: JobCleanup, Name: name, Image: imgB, Database: &v1.DatabaseRef{SecretName: "auth-0ld-db", Key: "dsn"}, DropCopy: true}}},
		"rolled back, external: the user's target is never dropped": {
			with(copyEnded(v1.UpgradeRolledBack, false, "", JobAbsent), ext), want{phase: v1.UpgradeRolledBack, cleanup: CleanupRunning,
				job: &JobIntent{Kind: JobCleanup, Name: name, Image: imgB, Database: &pg}}},
		"rolled back while the copy Job runs: it is deleted, the cleanup waits for it": {
			with(copyEnded(v1.UpgradeRolledBack, false, "", JobAbsent), job(JobCopy, JobRunning)),
			want{phase: v1.UpgradeRolledBack, deletes: []string{"auth-" + id + "-copy"}}},
		"completed, cleanup running, a new image: the next upgrade waits": {
			with(copyEnded(v1.UpgradeCompleted, false, CleanupRunning, JobRunning), image(imgC)),
			want{phase: v1.UpgradeCompleted, cleanup: CleanupRunning}},
		"completed, cleanup failed, a new image: the next upgrade starts": {
			with(copyEnded(v1.UpgradeCompleted, false, CleanupFailedPrefix+"x", JobFailed), image(imgC)),
			want{phase: v1.UpgradePlanning}},
		"completed, cleaned up, a new image: the next upgrade starts": {
			with(copyEnded(v1.UpgradeCompleted, false, CleanupRunning, JobSucceeded), image(imgC)),
			want{phase: v1.UpgradePlanning, event: ReasonCleanedUp}},
		"a Shared upgrade completed: no cleanup": {
			with(copyEnded(v1.UpgradeCompleted, false, "", JobAbsent), func(o *Observed) { o.Status.Upgrade.Copy = nil }),
			want{phase: v1.UpgradeCompleted}},
	} {
		t.Run(name, func(t *testing.T) {
			d := Next(tc.in, t0.Add(2*time.Hour))
			u := d.Status.Upgrade
			if u.Phase != tc.want.phase {
				t.Fatalf("phase %s, want %s (%s)", u.Phase, tc.want.phase, u.Message)
			}
			if tc.want.phase == v1.UpgradePlanning {
				if !slices.ContainsFunc(d.Events, func(e Event) bool { return e.Reason == tc.want.event }) && tc.want.event != "" {
					t.Errorf("events %v, want %s", d.Events, tc.want.event)
				}
				return
			}
			got := ""
			if u.Copy != nil {
				got = u.Copy.Cleanup
			}
			if !strings.HasPrefix(got, tc.want.cleanup) || (tc.want.cleanup == "") != (got == "") {
				t.Errorf("copy.cleanup %q, want %q", got, tc.want.cleanup)
			}
			var jobs []JobIntent
			if tc.want.job != nil {
				jobs = []JobIntent{*tc.want.job}
			}
			if !slices.EqualFunc(d.Jobs, jobs, func(a, b JobIntent) bool {
				return a.Kind == b.Kind && a.Name == b.Name && a.Image == b.Image && a.DropCopy == b.DropCopy &&
					(a.Database == nil) == (b.Database == nil) && (a.Database == nil || *a.Database == *b.Database)
			}) {
				t.Errorf("jobs %+v, want %+v", d.Jobs, jobs)
			}
			if !slices.Equal(d.DeleteJobs, tc.want.deletes) {
				t.Errorf("deleted Jobs %v, want %v", d.DeleteJobs, tc.want.deletes)
			}
			reasons := []string{}
			for _, e := range d.Events {
				reasons = append(reasons, e.Reason)
			}
			if (tc.want.event == "") != (len(reasons) == 0) || (tc.want.event != "" && !slices.Contains(reasons, tc.want.event)) {
				t.Errorf("events %v, want %q", d.Events, tc.want.event)
			}
			// Whatever the cleanup does, the upgrade's conditions are as they were.
			deg := meta.FindStatusCondition(d.Conditions, v1.ConditionDegraded)
			wantDeg := metav1.ConditionFalse
			if u.Phase == v1.UpgradeRolledBack {
				wantDeg = metav1.ConditionTrue // the rollback annotation: a failure of imgB, not of the cleanup
			}
			if deg == nil || deg.Status != wantDeg || strings.Contains(deg.Message, "cleanup") {
				t.Errorf("Degraded %+v, want %s", deg, wantDeg)
			}
			// A second pass on the written status asks for nothing new.
			again := tc.in
			again.Status = d.Status
			if d2 := Next(again, t0.Add(2*time.Hour)); d2.WriteStatus || len(d2.Events) > 0 {
				t.Errorf("a second pass writes %v, records %v", d2.WriteStatus, d2.Events)
			}
		})
	}
}
