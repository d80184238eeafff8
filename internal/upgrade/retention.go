package upgrade

import (
	"regexp"
	"strings"
	"time"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// FinishedJob is a Job the TokenServer controls, as the retention of upgrade Jobs
// reads it.
type FinishedJob struct {
	Name string
	// Finished is when the Job completed or failed; zero while it runs.
	Finished time.Time
}

// upgradeJobName matches the names JobName and UpgradeJobName give, capturing the
// upgrade's id: <server>-<id>-<kind>, and -<n> for a retry.
var upgradeJobName = regexp.MustCompile(`-([0-9a-f]{8})-(` + strings.Join([]string{string(JobPlan), string(JobExpand),
	string(JobVerify), string(JobContract), string(JobCopy), string(JobCutover), string(JobCutback), string(JobCleanup)}, "|") +
	`)(-[0-9]+)?$`)

// ExpiredJobs says which of the TokenServer's upgrade Jobs to delete at now, and how
// long until the next one is due (0 when none waits). keep is
// spec.jobs.ttlSecondsAfterFinished. The rule:
//
//   - A Job that still runs stays: nothing here stops work (see staleJobs).
//   - The current upgrade's Jobs (status.upgrade.id) stay while it runs and while
//     its Copy cleanup is owed: it reads their status and results, and a Job gone
//     would be made and run again.
//   - Once it Completed, they go keep after it completed.
//   - Once it ended otherwise (RolledBack, Refused, Failed), they stay while it is
//     the last upgrade: its failed Job's logs say why, for as long as a person
//     takes to read them (kubectl logs job/<name>), as a CronJob keeps its last
//     failed Job. The image it failed with is not tried again by itself, so they
//     stay until someone starts the next upgrade.
//   - An earlier upgrade's Jobs go keep after the current one started: whoever
//     starts the next upgrade at once still has that long to read the last one's.
//
// Jobs that are no upgrade's (the first install's migrations, which carry their
// own ttlSecondsAfterFinished) are not its to delete. Pure: table-tested.
func ExpiredJobs(s *oauthv1alpha1.TokenServerStatus, jobs []FinishedJob, keep time.Duration, now time.Time) (
	expired []string, next time.Duration) {
	u := s.Upgrade
	if u == nil {
		return nil, 0
	}
	for _, j := range jobs {
		m := upgradeJobName.FindStringSubmatch(j.Name)
		if m == nil || j.Finished.IsZero() {
			continue
		}
		var from time.Time
		switch {
		case m[1] != u.ID:
			if u.StartedAt == nil {
				continue
			}
			from = u.StartedAt.Time
		case u.Phase != oauthv1alpha1.UpgradeCompleted || u.CompletedAt == nil:
			continue
		case u.Copy != nil && u.Copy.Cleanup != CleanupDone:
			continue
		default:
			from = u.CompletedAt.Time
		}
		if from.Before(j.Finished) {
			from = j.Finished
		}
		due := from.Add(keep)
		if !now.Before(due) {
			expired = append(expired, j.Name)
			continue
		}
		if wait := due.Sub(now); next == 0 || wait < next {
			next = wait
		}
	}
	return expired, next
}
