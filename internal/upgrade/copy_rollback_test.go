package upgrade

import (
	"testing"
	"time"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// A stuck rollback after the cutover is not abandoned (the promote annotation) while
// its cut back Job runs: the Job may pass its point of no return and move the
// database to blue, which the abandoned rollback would then scale to zero.
func TestCopyRollbackNotAbandonedWhileCutbackRuns(t *testing.T) {
	o := with(rollingBackAfterCutover(true), job(JobCutback, JobRunning), func(o *Observed) {
		o.Spec.Image = imgB
		o.Annotations = map[string]string{v1.AnnotationPromote: id}
		o.Endpoints = map[Color]int32{Blue: 0, Green: 3}
	})
	d := Next(o, t0.Add(11*time.Minute))
	t.Logf("phase %s, active %s, jobs %v, delete %v, replays %v", d.Status.Upgrade.Phase, d.Status.ActiveColor, d.Jobs, d.DeleteJobs, d.Replays)
	if d.Status.Upgrade.Phase == v1.UpgradeScalingDown {
		t.Errorf("abandoned the rollback while the cut back Job %s runs: it goes on, fences green, forwards to blue, which is then scaled to zero",
			UpgradeJobName("auth", d.Status.Upgrade, JobCutback))
	}
}

// Promoted from Paused with green not ready (its pods rolling after a key rotation,
// which a pause does not hold) and the replay an hour behind: no cutover until the
// Replaying gate passes again.
func TestCopyPromotedFromPausedWaitsForTheGate(t *testing.T) {
	o := with(atCopy(v1.UpgradePaused, 3), func(o *Observed) {
		o.Spec.Upgrade.PauseBeforePromotion = true
		o.Annotations = map[string]string{v1.AnnotationPromote: id}
		o.Pods = append(pods(Blue, imgA, 3, true, all), pods(Green, imgB, 3, false, none)...)
		o.Replay = &ReplayFigures{Pending: 900000, Lag: time.Hour}
	})
	d := Next(o, t0.Add(time.Hour))
	t.Logf("phase %s, jobs %v", d.Status.Upgrade.Phase, d.Jobs)
	if d.Status.Upgrade.Phase == v1.UpgradeCuttingOver {
		t.Error("cutting over with no green pod ready and the replay an hour behind")
	}
}

// The cleanup after a rollback runs the new image: the old one may predate `db
// cleanup`, and a failed cleanup leaves the capture on the serving database.
func TestCopyCleanupAfterRollbackRunsTheNewImage(t *testing.T) {
	o := with(atCopy(v1.UpgradeCopying, 3), job(JobCopy, JobFailed))
	d := Next(o, t0)
	for _, j := range d.Jobs {
		if j.Kind == JobCleanup {
			t.Logf("cleanup image %s db %+v drop %v", j.Image, j.Database, j.DropCopy)
			if j.Image != imgB {
				t.Errorf("cleanup runs `db cleanup` with %s, the old image, which may predate the command", j.Image)
			}
		}
	}
}

// A rollback asked in CuttingOver while the cutover Job is not seen (the cache is
// behind, or a person deleted it after its marker) waits: the Job is made again
// and its end decides, never a rollback that leaves it running.
func TestCopyRollbackWaitsForAnUnseenCutoverJob(t *testing.T) {
	o := with(atCopy(v1.UpgradeCuttingOver, 3), annotate(v1.AnnotationRollback, id))
	d := Next(o, t0)
	t.Logf("phase %s, delete %v, jobs %v", d.Status.Upgrade.Phase, d.DeleteJobs, d.Jobs)
	if d.Status.Upgrade.Phase != v1.UpgradeCuttingOver || len(d.Jobs) != 1 || d.Jobs[0].Kind != JobCutover {
		t.Errorf("phase %s, jobs %v: want CuttingOver, the cutover Job made again", d.Status.Upgrade.Phase, d.Jobs)
	}
}
