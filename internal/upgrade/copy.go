package upgrade

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// The Copy path: Planning, Copying (copy Job), Deploying (the new color on the
// copy, the forward replay running), Replaying (until the new color is ready and
// the replay is nearly caught up), optional Paused, CuttingOver (cutover Job: the
// fence, the last changes, the database moves), then ScalingDown, RollbackWindow
// (the backward replay keeps the old database current) and Completed. Traffic moves
// at once at the cutover, never pod by pod: two databases taking writes at once
// would let a refresh token be spent on both.

// The replay is caught up enough for a cutover when so few changes wait, and none
// for longer than that: the cutover's drain then fits well within its lease.
const (
	cutoverMaxPending = 100
	cutoverMaxLag     = 5 * time.Second
	// replayPoll is how often Replaying reads the replay's figures.
	replayPoll = 5 * time.Second
	// maxCutoverRetries: cutover (or cut back) Jobs started again after a failure.
	maxCutoverRetries = 3
)

const copyTargetMissing = "spec.database is external, and spec.upgrade.copy.targetSecretRef does not name " +
	"the empty database the copy goes into"

// CopyOutput is the JSON line `tokenserver db copy` writes to its termination log.
type CopyOutput struct {
	RowsCopied int64 `json:"rowsCopied"`
	SchemaFrom int64 `json:"schemaFrom"`
	SchemaTo   int64 `json:"schemaTo"`
}

// CutoverOutput is the JSON line of `tokenserver db cutover`.
type CutoverOutput struct {
	FenceHoldSeconds float64 `json:"fenceHoldSeconds"`
	Replayed         int64   `json:"replayed"`
	Resumed          bool    `json:"resumed"`
}

// copyStep makes the step of a Copy upgrade's phase where it differs from Shared
// mode; ok is false for the phases they share.
func (m *machine) copyStep() (moved, ok bool) {
	u := m.st.Upgrade
	if u.Copy == nil {
		return false, false
	}
	if m.backwardRuns() {
		m.backwardFigures()
	}
	switch u.Phase {
	case oauthv1alpha1.UpgradeCopying:
		return m.afterJob(JobCopy, m.copied, ReasonCopyFailed, "the copy of the database failed"), true
	case oauthv1alpha1.UpgradeDeploying:
		if m.readyNew() < int(u.Steps) {
			return false, true
		}
		// No verification Job: it cross-checks with the old version's database, which
		// the new version does not share. Replaying waits for green's own readiness on
		// the copy and for the replay.
		m.enter(oauthv1alpha1.UpgradeReplaying, fmt.Sprintf("%s is ready on the copy; the replay applies %s's writes to it "+
			"until the cutover can drain the rest within spec.upgrade.copy.fenceLease", u.ToColor, u.FromColor))
		return true, true
	case oauthv1alpha1.UpgradeReplaying:
		return m.replaying(), true
	case oauthv1alpha1.UpgradePaused:
		// Promoted, it cuts over through the same gate as Replaying: green may
		// have rolled, or the replay fallen behind, while it was paused.
		return m.replaying(), true
	case oauthv1alpha1.UpgradeCuttingOver:
		return m.cuttingOver(), true
	case oauthv1alpha1.UpgradeRollbackWindow:
		img := m.o.Spec.Image
		moved := img != u.FromImage && img != u.ToImage
		if m.now.Before(m.since().Add(m.s.rollbackWindow)) && !moved {
			return false, true
		}
		// The copy Job migrated the copy fully: no contract migrations.
		msg := "the rollback window ended: " + u.ToImage + " serves on " + u.Copy.Database.SecretName +
			"; the old database is kept, unused, until you drop it; a cleanup Job takes the upgrade's triggers off the copy"
		if moved {
			msg = "spec.image changed to " + img + ": " + u.ToImage + " is accepted; the next upgrade follows"
		}
		m.enter(oauthv1alpha1.UpgradeCompleted, msg)
		return true, true
	case oauthv1alpha1.UpgradeRollingBack:
		if u.Copy.CutoverAt == nil || u.Copy.CutBack {
			return false, false // as in Shared mode: the old version's database serves
		}
		if m.cutbackUndone() && m.abandonRollback() {
			return true, true
		}
		return m.cuttingBack(), true
	}
	return false, false
}

// copyTargetKnown: a bundled database is copied into one the operator names; an
// external one only into the user's.
func (m *machine) copyTargetKnown() bool {
	return !m.o.Spec.External || m.o.Spec.Upgrade.Copy.TargetSecretRef != nil
}

// copyTarget is where the copy goes.
func (m *machine) copyTarget() oauthv1alpha1.DatabaseRef {
	if r := m.o.Spec.Upgrade.Copy.TargetSecretRef; m.o.Spec.External && r != nil {
		key := r.Key
		if key == "" {
			key = "dsn"
		}
		return oauthv1alpha1.DatabaseRef{SecretName: r.Name, Key: key}
	}
	return oauthv1alpha1.DatabaseRef{SecretName: CopySecretName(m.o.Name, m.st.Upgrade.ID), Key: "dsn"}
}

// source is the old version's database.
func (m *machine) source() oauthv1alpha1.DatabaseRef {
	if c := m.st.Upgrade.Copy; c != nil && c.Source != nil {
		return *c.Source
	}
	return m.o.Spec.Database
}

func (m *machine) startCopy(p *PlanResult) {
	u := m.st.Upgrade
	u.Copy = &oauthv1alpha1.UpgradeCopyStatus{Database: m.copyTarget(), Source: m.st.Database.DeepCopy()}
	m.enter(oauthv1alpha1.UpgradeCopying, fmt.Sprintf("copying the database into %s (schema %d, then migrated to %d): "+
		"Job %s; %s keeps serving", u.Copy.Database.SecretName, p.SchemaFrom, p.SchemaTo, JobName(m.o.Name, u.ID, JobCopy), u.FromImage))
}

func (m *machine) copied() {
	u := m.st.Upgrade
	var out CopyOutput
	if err := json.Unmarshal([]byte(m.job(JobCopy).Output), &out); err == nil {
		u.Copy.RowsCopied = out.RowsCopied
	}
	m.enter(oauthv1alpha1.UpgradeDeploying, fmt.Sprintf("%d rows copied; bringing up %d pods of %s on the copy, "+
		"and the replay of %s's writes onto it", u.Copy.RowsCopied, u.Steps, u.ToImage, u.FromImage))
}

// backwardMaxLag: a backward replay whose oldest pending change is older than this
// is behind. Its passes run every few seconds; a minute means they fail.
const backwardMaxLag = time.Minute

// backwardRuns: the cutover happened and no cut back did, so the backward replay
// carries the new version's writes to the old database, which a rollback needs.
func (m *machine) backwardRuns() bool {
	u := m.st.Upgrade
	switch u.Phase {
	case oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradeRollingBack:
		return u.Copy.CutoverAt != nil && !u.Copy.CutBack
	}
	return false
}

// backwardFigures records the backward replay's figures in the fields the forward
// replay's held before the cutover, and warns once as it falls behind: a rollback
// then waits for it to catch up (the cut back drains the rest within its lease),
// and for good while its passes fail (see the replay pod's logs). Without figures
// (its pod not ready, its metrics unreadable) the last ones stay.
func (m *machine) backwardFigures() {
	c := m.st.Upgrade.Copy
	f := m.o.Replay
	if f == nil {
		return
	}
	wasBehind := false
	if lag, err := strconv.ParseFloat(c.ReplayLagSeconds, 64); err == nil {
		wasBehind = lag > backwardMaxLag.Seconds()
	}
	c.ReplayPending, c.ReplayLagSeconds = f.Pending, strconv.FormatFloat(f.Lag.Seconds(), 'f', 1, 64)
	if f.Lag > backwardMaxLag && !wasBehind {
		m.event(corev1.EventTypeWarning, ReasonBackwardReplayBehind, "the backward replay (Deployment %s) is %d changes and %s "+
			"behind: the new version's writes are not reaching the old database, and a rollback waits until they do. "+
			"Its pod's logs say why (kubeoauth_replay_errors_total counts its failed passes)",
			ReplayName(m.o.Name, m.st.Upgrade.ID, Backward), f.Pending, f.Lag.Round(time.Second))
	}
}

// replaying records the replay's figures and cuts over once the new color is
// ready and the replay nearly caught up.
func (m *machine) replaying() bool {
	u := m.st.Upgrade
	f := m.o.Replay
	if f != nil {
		u.Copy.ReplayPending, u.Copy.ReplayLagSeconds = f.Pending, strconv.FormatFloat(f.Lag.Seconds(), 'f', 1, 64)
	}
	if m.readyNew() < int(u.Steps) || f == nil || f.Pending > cutoverMaxPending || f.Lag > cutoverMaxLag {
		return false
	}
	if m.s.pause && m.o.Annotations[oauthv1alpha1.AnnotationPromote] != u.ID {
		if u.Phase == oauthv1alpha1.UpgradePaused {
			return false
		}
		m.enter(oauthv1alpha1.UpgradePaused, fmt.Sprintf("%s is ready on the copy and the replay keeps it current; "+
			"the cutover waits: kubectl annotate tokenserver %s=%s", u.ToImage, oauthv1alpha1.AnnotationPromote, u.ID))
		return true
	}
	m.cutover()
	return true
}

func (m *machine) cutover() {
	u := m.st.Upgrade
	m.enter(oauthv1alpha1.UpgradeCuttingOver, fmt.Sprintf("cutting over: %s holds its write requests while the last changes "+
		"are replayed, then %s takes all traffic on the copy: Job %s", u.FromColor, u.ToColor, UpgradeJobName(m.o.Name, u, JobCutover)))
}

// cutoverUndone: no cutover attempt can have passed its point of no return, so a
// rollback may leave the old version serving on its own database. A cutover Job
// that runs, or failed in another way than its lease running out, may have; so may
// one that is not seen: CuttingOver is written before the Job is made, so an
// absent Job may be one the cache does not show yet, or one a person deleted
// after its marker. It is made again (a rerun resumes past a marker, or raises a
// fresh fence) and its end decides.
func (m *machine) cutoverUndone() bool {
	switch j := m.job(JobCutover); j.State {
	case JobFailed:
		return j.ExitCode == CutoverLeaseExpiredExitCode
	}
	return false
}

func (m *machine) cuttingOver() bool {
	u := m.st.Upgrade
	switch j := m.job(JobCutover); j.State {
	case JobSucceeded:
		c := u.Copy
		c.FenceHoldSeconds, c.CutoverAt, c.CutoverRetries = fenceHold(j.Output), stamp(m.now), 0
		u.Reason, u.Step, u.Progress = "", u.Steps, fmt.Sprintf("%d/%d", u.Steps, u.Steps)
		db := c.Database
		m.st.Database, m.st.ActiveColor = &db, m.to()
		m.enter(oauthv1alpha1.UpgradeScalingDown, fmt.Sprintf(
			"cut over in %ss of held writes: %s serves on %s; %s forwards what still reaches it and is scaled to zero after %s",
			c.FenceHoldSeconds, u.ToImage, db.SecretName, u.FromColor, m.s.scaleDownDelay))
		return true
	case JobRunning:
		return m.rerunning(JobCutover)
	case JobFailed:
		return m.attemptFailed(j, JobCutover, func() {
			m.rollback(ReasonCutoverExpired, fmt.Sprintf("the cutover's fence lease ran out %d times before the replay drained "+
				"(spec.upgrade.copy.fenceLease); %s never stopped serving", maxCutoverRetries+1, u.FromColor), true)
		})
	}
	return false
}

// attemptFailed starts a failed cutover or cut back again under a new name; once
// the retries are spent, a lease that ran out calls expired (nothing moved), and
// any other failure waits for a person: it may have passed the point of no return.
func (m *machine) attemptFailed(j Job, kind JobKind, expired func()) bool {
	u := m.st.Upgrade
	c := u.Copy
	name := UpgradeJobName(m.o.Name, u, kind)
	if c.CutoverRetries < maxCutoverRetries {
		c.CutoverRetries++
		u.Message = fmt.Sprintf("Job %s failed (exit code %d: %s); trying again: Job %s", name, j.ExitCode, j.Message,
			UpgradeJobName(m.o.Name, u, kind))
		m.event(corev1.EventTypeWarning, ReasonCutoverRetry, "%s", u.Message)
		return true
	}
	if j.ExitCode == CutoverLeaseExpiredExitCode && expired != nil {
		expired()
		return true
	}
	if u.Reason == oauthv1alpha1.ReasonCutoverFailed {
		return false
	}
	u.Reason = oauthv1alpha1.ReasonCutoverFailed
	u.Message = fmt.Sprintf("Job %s failed %d times (last: exit code %d, %s): see kubectl logs job/%s; it may have passed "+
		"its point of no return, so nothing is rolled back by itself; kubectl delete job %s runs it again",
		name, maxCutoverRetries+1, j.ExitCode, j.Message, name, name)
	m.event(corev1.EventTypeWarning, oauthv1alpha1.ReasonCutoverFailed, "%s", u.Message)
	return true
}

func fenceHold(output string) string {
	var out CutoverOutput
	if err := json.Unmarshal([]byte(output), &out); err != nil {
		return ""
	}
	return strconv.FormatFloat(out.FenceHoldSeconds, 'f', 2, 64)
}

// cutbackDue: a rollback after the cutover, the old color back at full size and
// ready on its own database, waits for the cut back.
func (m *machine) cutbackDue() bool {
	u := m.st.Upgrade
	return u != nil && u.Phase == oauthv1alpha1.UpgradeRollingBack && u.Copy != nil && u.Copy.CutoverAt != nil &&
		!u.Copy.CutBack && m.readyOld() >= int(u.Steps)
}

// cutbackUndone: no cut back can have passed its point of no return, so the
// rollback may still be abandoned: its Job never came due (the old color never got
// ready) and none was ever made, or its last attempt's lease ran out. A cut back
// that runs, or ended otherwise, may have moved the database to the old version's.
func (m *machine) cutbackUndone() bool {
	switch j := m.job(JobCutback); j.State {
	case JobAbsent:
		return !m.cutbackDue() && m.st.Upgrade.Copy.CutoverRetries == 0
	case JobFailed:
		return j.ExitCode == CutoverLeaseExpiredExitCode
	}
	return false
}

// cuttingBack moves the database back to the old version's at a rollback after
// the cutover: the backward replay kept it current; the cut back fences the new
// version and drains the rest. Until it succeeds the new version serves.
func (m *machine) cuttingBack() bool {
	u := m.st.Upgrade
	if !m.cutbackDue() {
		return false
	}
	c := u.Copy
	switch j := m.job(JobCutback); j.State {
	case JobSucceeded:
		c.CutBack, c.CutoverRetries = true, 0
		if u.Reason == oauthv1alpha1.ReasonCutoverFailed {
			// A person's rerun that succeeded before a pass saw it run (rerunning).
			u.Reason = ReasonCutBack
		}
		if h := fenceHold(j.Output); h != "" {
			c.FenceHoldSeconds = h
		}
		m.st.Database = c.Source.DeepCopy()
		u.Message = fmt.Sprintf("cut back in %ss of held writes: %s serves again on its own database; %s is scaled to zero",
			c.FenceHoldSeconds, u.FromImage, u.ToColor)
		m.event(corev1.EventTypeNormal, ReasonCutBack, "%s", u.Message)
		return true
	case JobRunning:
		return m.rerunning(JobCutback)
	case JobFailed:
		return m.attemptFailed(j, JobCutback, nil)
	}
	return false
}

// rerunning: the cutover's or cut back's Job runs again after its retries were spent
// (a person deleted the failed one, see attemptFailed), so the upgrade no longer
// waits for a person: it reads Progressing, not Degraded, until that Job ends. A
// rerun that fails again waits for a person again at once (the retries stay spent).
func (m *machine) rerunning(kind JobKind) bool {
	u := m.st.Upgrade
	if u.Reason != oauthv1alpha1.ReasonCutoverFailed {
		return false
	}
	name := UpgradeJobName(m.o.Name, u, kind)
	u.Reason = ""
	u.Message = fmt.Sprintf("Job %s runs again; if it fails again the upgrade waits for a person again (kubectl logs job/%s)", name, name)
	return true
}

// readyOld counts the old color's ready pods on the old image, at full size.
func (m *machine) readyOld() int {
	u := m.st.Upgrade
	if m.o.StatefulSets[m.from()] != (StatefulSet{Image: u.FromImage, Replicas: u.Steps}) {
		return 0
	}
	n := 0
	for _, p := range m.pods(m.from()) {
		if p.Ready && p.Image == u.FromImage {
			n++
		}
	}
	return n
}

// databases: during a Copy upgrade each color mounts its own database, whatever
// status.database says meanwhile.
func (m *machine) databases() map[Color]oauthv1alpha1.DatabaseRef {
	u := m.st.Upgrade
	if u == nil || u.Copy == nil || terminal(u.Phase) {
		return nil
	}
	return map[Color]oauthv1alpha1.DatabaseRef{m.from(): m.source(), m.to(): u.Copy.Database}
}

// replays: forward while the new color catches up, backward after the cutover
// until the rollback window ends (or the cut back took it over).
func (m *machine) replays() []ReplayIntent {
	u := m.st.Upgrade
	if u == nil || u.Copy == nil || terminal(u.Phase) {
		return nil
	}
	dir := ""
	switch u.Phase {
	case oauthv1alpha1.UpgradeDeploying, oauthv1alpha1.UpgradeReplaying, oauthv1alpha1.UpgradePaused, oauthv1alpha1.UpgradeCuttingOver:
		dir = Forward
	case oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow:
		dir = Backward
	case oauthv1alpha1.UpgradeRollingBack:
		if u.Copy.CutoverAt != nil && !u.Copy.CutBack {
			dir = Backward
		}
	}
	if dir == "" {
		return nil
	}
	return []ReplayIntent{{Name: ReplayName(m.o.Name, u.ID, dir), Direction: dir}}
}

// targetSecret: the bundled copy's DSN Secret, made before the copy Job needs it.
func (m *machine) targetSecret() string {
	u := m.st.Upgrade
	if u == nil || u.Copy == nil || u.Phase != oauthv1alpha1.UpgradeCopying || m.o.Spec.External {
		return ""
	}
	return u.Copy.Database.SecretName
}

// The states of status.upgrade.copy.cleanup.
const (
	CleanupRunning = "Running"
	CleanupDone    = "Done"
	// CleanupFailedPrefix starts the state of a failed cleanup, followed by why.
	CleanupFailedPrefix = "Failed: "
)

// cleanupOwed: a Copy upgrade ended with one version serving on its own database,
// which still carries the upgrade's capture triggers (every token write pays one
// more row, kept for good), the fence's guard triggers and its records; after a
// rollback, a bundled copy also still takes space. Refused upgrades made nothing.
func (m *machine) cleanupOwed() bool {
	u := m.st.Upgrade
	return u != nil && u.Copy != nil && u.Copy.Cleanup != CleanupDone &&
		(u.Phase == oauthv1alpha1.UpgradeCompleted || u.Phase == oauthv1alpha1.UpgradeRolledBack)
}

// cleanupReady: nothing of the upgrade still writes what the cleanup removes: no
// replay pod left (a deleted Deployment's pod finishes its pass first), no copy
// Job running (see staleJobs), and no pod of one left (a deleted Job's pod may
// still be installing the capture the cleanup would remove).
func (m *machine) cleanupReady() bool {
	return m.o.ReplayPods == 0 && m.o.CopyPods == 0 && m.job(JobCopy).State != JobRunning
}

// cleanupStep records the cleanup Job's state in status.upgrade.copy.cleanup,
// Running before the Job is made. Its failure fails nothing: the upgrade ended;
// it is reported (event, status) and runs again once someone deletes the Job.
func (m *machine) cleanupStep() bool {
	if !m.cleanupOwed() {
		return false
	}
	u := m.st.Upgrade
	c := u.Copy
	name := JobName(m.o.Name, u.ID, JobCleanup)
	state := c.Cleanup
	switch j := m.job(JobCleanup); j.State {
	case JobSucceeded:
		state = CleanupDone
	case JobFailed:
		state = CleanupFailedPrefix + j.Message
		if len(state) > 1024 {
			state = state[:1021] + "..."
		}
	case JobRunning:
		state = CleanupRunning
	case JobAbsent:
		if m.cleanupReady() {
			state = CleanupRunning // the intent, before the Job: jobs() makes it
		}
	}
	if state == c.Cleanup {
		return false
	}
	c.Cleanup = state
	switch {
	case state == CleanupDone:
		m.event(corev1.EventTypeNormal, ReasonCleanedUp, "Job %s removed the upgrade's capture, fence and records from the "+
			"database that serves%s", name, map[bool]string{true: ", and dropped the copy", false: ""}[m.dropCopy()])
	case state != CleanupRunning:
		m.event(corev1.EventTypeWarning, ReasonCleanupFailed, "Job %s failed (%s): the upgrade itself is not affected; "+
			"see kubectl logs job/%s, and kubectl delete job %s runs it again", name, strings.TrimPrefix(state, CleanupFailedPrefix), name, name)
	}
	return true
}

// cleanupWaits: the next upgrade waits for the ended one's cleanup, unless it
// failed (which a person sees and may rerun by hand): the next copy would
// otherwise install capture on the very database the cleanup clears.
func (m *machine) cleanupWaits() bool {
	return m.cleanupOwed() && !strings.HasPrefix(m.st.Upgrade.Copy.Cleanup, CleanupFailedPrefix)
}

// dropCopy: after a rollback, the bundled copy's database goes too. A copy into
// the user's external database is never dropped.
func (m *machine) dropCopy() bool {
	u := m.st.Upgrade
	return u.Phase == oauthv1alpha1.UpgradeRolledBack && !m.o.Spec.External &&
		u.Copy.Database.SecretName == CopySecretName(m.o.Name, u.ID)
}

// cleanupJob is the cleanup Job to make, once its intent is recorded: on the
// database that serves, always with the new image — it installed the capture and
// the fence and ran the copy and the cutover, while the old one may predate `db
// cleanup` (a cleanup that fails leaves the capture on the serving database).
func (m *machine) cleanupJob() []JobIntent {
	u := m.st.Upgrade
	if !m.cleanupOwed() || u.Copy.Cleanup != CleanupRunning || m.job(JobCleanup).State != JobAbsent || !m.cleanupReady() {
		return nil
	}
	img, db := u.ToImage, u.Copy.Database
	if m.st.Database != nil {
		db = *m.st.Database
	}
	if u.Phase == oauthv1alpha1.UpgradeRolledBack {
		db = m.source()
	}
	return []JobIntent{{Kind: JobCleanup, Name: JobName(m.o.Name, u.ID, JobCleanup), Image: img, Database: &db, DropCopy: m.dropCopy()}}
}

// staleJobs: a copy Job still running after its upgrade ended (a rollback during
// Copying) is deleted; the copy is safe to kill anywhere.
func (m *machine) staleJobs() []string {
	u := m.st.Upgrade
	if u == nil || u.Copy == nil || !terminal(u.Phase) || m.job(JobCopy).State != JobRunning {
		return nil
	}
	return []string{JobName(m.o.Name, u.ID, JobCopy)}
}
