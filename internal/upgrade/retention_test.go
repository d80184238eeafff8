package upgrade

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// TestExpiredJobs: an ended upgrade's Jobs are deleted keep after it completed, or,
// when it failed, keep after the next upgrade started, never while it runs or its
// cleanup is owed, never while a Job runs; other Jobs are not touched.
func TestExpiredJobs(t *testing.T) {
	const keep = time.Hour
	ended := t0.Add(10 * time.Minute)
	status := func(phase v1.UpgradePhase, mutate ...func(*v1.UpgradeStatus)) *v1.TokenServerStatus {
		u := &v1.UpgradeStatus{ID: id, Phase: phase, StartedAt: &metav1.Time{Time: t0}}
		if terminal(phase) {
			u.CompletedAt = &metav1.Time{Time: ended}
		}
		for _, m := range mutate {
			m(u)
		}
		return &v1.TokenServerStatus{Upgrade: u}
	}
	next := func(u *v1.UpgradeStatus) { u.ID, u.StartedAt = "feedf00d", &metav1.Time{Time: ended.Add(time.Hour)} }
	finished := func(name string, at time.Time) FinishedJob { return FinishedJob{Name: name, Finished: at} }
	this := []FinishedJob{
		finished("auth-"+id+"-plan", t0.Add(time.Minute)),
		finished("auth-"+id+"-verify", t0.Add(5*time.Minute)),
		finished("auth-"+id+"-contract-1", t0.Add(9*time.Minute)),
	}
	names := []string{"auth-" + id + "-plan", "auth-" + id + "-verify", "auth-" + id + "-contract-1"}
	for name, tc := range map[string]struct {
		status *v1.TokenServerStatus
		jobs   []FinishedJob
		now    time.Time
		want   []string
		next   time.Duration
	}{
		"no upgrade ever ran":        {&v1.TokenServerStatus{}, this, ended.Add(48 * time.Hour), nil, 0},
		"running: its Jobs are read": {status(v1.UpgradePromoting), this, ended.Add(48 * time.Hour), nil, 0},
		"completed, within keep":     {status(v1.UpgradeCompleted), this, ended.Add(keep - time.Second), nil, time.Second},
		"completed, keep after":      {status(v1.UpgradeCompleted), this, ended.Add(keep), names, 0},
		"completed, a Job still runs": {status(v1.UpgradeCompleted),
			append(slices.Clone(this), FinishedJob{Name: "auth-" + id + "-copy"}), ended.Add(keep), names, 0},
		"completed, its copy cleanup owed": {status(v1.UpgradeCompleted, func(u *v1.UpgradeStatus) {
			u.Copy = &v1.UpgradeCopyStatus{Cleanup: CleanupFailedPrefix + "lock timeout"}
		}), this, ended.Add(48 * time.Hour), nil, 0},
		"completed, its copy cleaned up": {status(v1.UpgradeCompleted, func(u *v1.UpgradeStatus) {
			u.Copy = &v1.UpgradeCopyStatus{Cleanup: CleanupDone}
		}), this, ended.Add(keep), names, 0},
		"completed, a Job that finished after it (the cleanup): keep after the Job": {status(v1.UpgradeCompleted),
			[]FinishedJob{finished("auth-"+id+"-cleanup", ended.Add(time.Minute))}, ended.Add(keep), nil, time.Minute},
		"rolled back: kept for a person, however long": {status(v1.UpgradeRolledBack), this, ended.Add(90 * 24 * time.Hour), nil, 0},
		"refused: kept":                      {status(v1.UpgradeRefused), this, ended.Add(90 * 24 * time.Hour), nil, 0},
		"failed (an older operator's): kept": {status(v1.UpgradeFailed), this, ended.Add(90 * 24 * time.Hour), nil, 0},
		"the next upgrade started: the last one's within keep of it": {status(v1.UpgradePlanning, next), this,
			ended.Add(time.Hour + keep - time.Minute), nil, time.Minute},
		"the next upgrade started: the last one's keep after it": {status(v1.UpgradePlanning, next), this,
			ended.Add(time.Hour + keep), names, 0},
		"not an upgrade's Job": {status(v1.UpgradeCompleted), []FinishedJob{finished("auth-migrate-5f3a9c1e", t0),
			finished("auth-"+id+"-sidecar", t0), finished("other", t0)}, ended.Add(48 * time.Hour), nil, 0},
		"a long server name, cut": {status(v1.UpgradeCompleted), []FinishedJob{
			finished(JobName("a-very-long-token-server-name-that-fills-most-of-a-label-value", id, JobContract), t0)},
			ended.Add(keep), []string{JobName("a-very-long-token-server-name-that-fills-most-of-a-label-value", id, JobContract)}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			got, wait := ExpiredJobs(tc.status, tc.jobs, keep, tc.now)
			if !slices.Equal(got, tc.want) || wait != tc.next {
				t.Errorf("ExpiredJobs = %v, next in %s; want %v, next in %s", got, wait, tc.want, tc.next)
			}
		})
	}
}
