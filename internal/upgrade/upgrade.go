package upgrade

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Reasons an upgrade records in status.upgrade.reason and its events, besides the
// phases' own (oauthv1alpha1.ProgressingReason).
const (
	ReasonStarted           = "UpgradeStarted"
	ReasonPlanFailed        = "PlanFailed"
	ReasonCopyTargetMissing = "CopyTargetMissing"
	ReasonCopyFailed        = "CopyFailed"
	ReasonCutoverRetry      = "CutoverRetry"
	ReasonCutoverExpired    = "CutoverLeaseExpired"
	ReasonCutBack           = "CutBack"
	ReasonPlanRefused       = "PlanRefused"
	ReasonVerifyFailed      = "VerificationFailed"
	ReasonAnalysisFailed    = "AnalysisFailed"
	ReasonCheckFailed       = "AnalysisCheckFailed"
	ReasonCheckPassed       = "AnalysisCheckPassed"
	ReasonDeadline          = "ProgressDeadlineExceeded"
	ReasonRollbackAsked     = "RollbackRequested"
	ReasonImageReverted     = "ImageReverted"
	ReasonImageChanged      = "ImageChanged"
	ReasonRollbackStuck     = "RollbackStuck"
	ReasonRollbackAbandoned = "RollbackAbandoned"
	ReasonContractRetry     = "ContractRetry"
	ReasonCleanedUp         = "CopyCleanedUp"
	ReasonCleanupFailed     = "CopyCleanupFailed"
	// ReasonBackwardReplayBehind: after a Copy upgrade's cutover, the replay of the
	// new version's writes onto the old database fell behind (see backwardFigures).
	ReasonBackwardReplayBehind = "BackwardReplayBehind"
)

type phase = oauthv1alpha1.UpgradePhase

// Active says whether an upgrade runs: from planning until it completes, fails or is
// rolled back, the rollback window included (the old color may still come back).
// Signing-key rotation waits while it does: a new key would roll both colors' pods
// in the middle of moving traffic between them.
func Active(s *oauthv1alpha1.TokenServerStatus) bool {
	return s != nil && s.Upgrade != nil && !terminal(s.Upgrade.Phase)
}

func terminal(p phase) bool {
	switch p {
	case oauthv1alpha1.UpgradeCompleted, oauthv1alpha1.UpgradeRolledBack, oauthv1alpha1.UpgradeRefused, oauthv1alpha1.UpgradeFailed:
		return true
	}
	return false
}

// beforeNoReturn are the phases a rollback can still leave: the old version's schema
// is intact until the contract migrations start.
func beforeNoReturn(p phase) bool {
	switch p {
	case oauthv1alpha1.UpgradePlanning, oauthv1alpha1.UpgradeMigrating, oauthv1alpha1.UpgradeDeploying,
		oauthv1alpha1.UpgradeVerifying, oauthv1alpha1.UpgradePaused, oauthv1alpha1.UpgradePromoting,
		oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow,
		oauthv1alpha1.UpgradeCopying, oauthv1alpha1.UpgradeReplaying, oauthv1alpha1.UpgradeCuttingOver:
		return true
	}
	return false
}

// hasDeadline are the phases progressDeadline bounds: those that wait for the new
// version to prove itself. A pause waits for a person; after promotion, waits are
// timed by the settings themselves. Copying is bounded by its Job alone (a large
// database takes as long as it takes); CuttingOver by the fence's lease.
func hasDeadline(p phase) bool {
	switch p {
	case oauthv1alpha1.UpgradePlanning, oauthv1alpha1.UpgradeMigrating, oauthv1alpha1.UpgradeDeploying,
		oauthv1alpha1.UpgradeVerifying, oauthv1alpha1.UpgradePromoting, oauthv1alpha1.UpgradeReplaying:
		return true
	}
	return false
}

// HoldsRollouts says whether a change that rolls the pods (a new signing key, a
// change of the config hash) must wait: while both colors run pods and traffic moves
// or may move between them. Every such phase is bounded (progressDeadline, the
// scale-down delay), a rollback by its deadline too: past it, a stuck rollback no
// longer holds key rotation and config back. A pause waits for a person, maybe for
// long: it does not hold them (green is idle; a roll restarts both colors' pods one
// at a time, as any rotation does).
func HoldsRollouts(spec oauthv1alpha1.UpgradeSettings, s *oauthv1alpha1.TokenServerStatus, now time.Time) bool {
	if s == nil || s.Upgrade == nil {
		return false
	}
	u := s.Upgrade
	switch u.Phase {
	case oauthv1alpha1.UpgradeDeploying, oauthv1alpha1.UpgradeVerifying, oauthv1alpha1.UpgradePromoting,
		oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeReplaying, oauthv1alpha1.UpgradeCuttingOver:
		return true
	case oauthv1alpha1.UpgradeRollingBack:
		return u.PhaseSince == nil || !now.After(u.PhaseSince.Add(settingsOf(spec).deadline))
	}
	return false
}

// SpecMet says whether the upgrade that progressing (a Progressing condition)
// reports has met the spec: past promotion the new image serves every request, and what is left
// (the old color's scale-down delay, the rollback window, the contract migrations,
// retried on their own) is the operator's own, timed by the upgrade settings. GitOps
// tools read Reconciling to wait on an apply (kstatus InProgress, Argo CD
// Progressing): holding it for a whole rollback window (1h by default) would hold
// every Flux dependsOn and Argo CD sync wave behind each image bump. A pause before
// promotion has not met it: the old image still serves until a person promotes.
func SpecMet(progressing metav1.Condition) bool {
	for _, p := range []phase{oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradeContracting} {
		if progressing.Reason == oauthv1alpha1.ProgressingReason(p) {
			return true
		}
	}
	return false
}

// promoted are the phases in which the new color holds all the traffic.
func promoted(p phase) bool {
	switch p {
	case oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradeContracting,
		oauthv1alpha1.UpgradeCompleted, oauthv1alpha1.UpgradeFailed:
		return true
	}
	return false
}

type machine struct {
	o      Observed
	now    time.Time
	s      settings
	st     Status
	events []Event
	// waiting explains why an image change has not started an upgrade.
	waiting string
	opens   time.Time
	// jobsOf is the upgrade the observed Jobs and plan belong to: an upgrade started
	// in this pass has none yet; jobsRetry the contract attempt.
	jobsOf    string
	jobsRetry int32
	cutRetry  int32
	digest    string
}

// Next decides the next step of the upgrade from observed facts at now. It is pure.
func Next(o Observed, now time.Time) Decision {
	m := &machine{o: o, now: now, s: settingsOf(o.Spec.Upgrade), st: o.Status, digest: settingsDigest(o.Spec.Upgrade)}
	m.st.Upgrade = o.Status.Upgrade.DeepCopy()
	m.st.Database = o.Status.Database.DeepCopy()
	if u := o.Status.Upgrade; u != nil {
		m.jobsOf, m.jobsRetry = u.ID, u.ContractRetries
		if u.Copy != nil {
			m.cutRetry = u.Copy.CutoverRetries
		}
	}
	m.st.ActiveColor = m.activeColor()
	// The spec moved on (another image, or other settings, which may have caused
	// the failure): that image may be tried again. A failure recorded without the
	// settings' digest (by an older operator) waits for another image.
	if f := m.st.FailedImage; f != "" && (m.o.Spec.Image != f || (m.st.FailedSettings != "" && m.st.FailedSettings != m.digest)) {
		m.st.FailedImage, m.st.FailedSettings = "", ""
	}
	// Advance as far as the facts allow, so that re-reading the written status
	// finds nothing more to do and asks for the same actions.
	for range 32 {
		if !m.transition() {
			break
		}
	}
	d := Decision{Status: m.st, Events: m.events}
	d.WriteStatus = !equality.Semantic.DeepEqual(m.st, o.Status)
	d.StatefulSets = m.statefulSets()
	d.Jobs = append(m.jobs(), m.cleanupJob()...)
	d.DeleteJobs = m.staleJobs()
	d.Databases, d.Replays, d.TargetSecret = m.databases(), m.replays(), m.targetSecret()
	d.Labels = m.labels()
	d.Conditions = m.conditions()
	d.RequeueAfter = m.requeue()
	return d
}

// activeColor is the color that serves outside an upgrade. status.activeColor is
// not trusted alone: status may be lost (a status edit, a restore from a backup, a
// GitOps tool), and a wrong color would be scaled down while it serves everything.
// When it is empty, or names a color with no ready pod while the facts show the
// other one serving, the facts decide: the only StatefulSet with replicas, or the
// color with the most ready serving pods. A recorded color with ready pods is kept
// even when they do not carry the serving label yet: the pass right after a cut back
// or a rollback may observe them through a cache that has not seen the label moved
// to them, nor the other color scaled down, and taking the other color then undid
// the rollback (status.activeColor back to the color rolled back from, Ready=False
// waiting for its pods at zero).
func (m *machine) activeColor() Color {
	recorded := m.st.ActiveColor
	if u := m.st.Upgrade; u != nil && !terminal(u.Phase) {
		if recorded != "" {
			return recorded
		}
		if promoted(u.Phase) {
			return m.to()
		}
		return m.from()
	}
	observed := m.observedActive()
	switch {
	case recorded == "" && observed != "":
		return observed
	case recorded == "":
		return Blue // the first version; upgrades bring up green
	case observed != "" && observed != recorded && m.ready(recorded) == 0:
		return observed
	}
	return recorded
}

// observedActive is the color the facts show serving, "" when they do not say.
func (m *machine) observedActive() Color {
	var scaled []Color
	for _, c := range []Color{Blue, Green} {
		if s, ok := m.o.StatefulSets[c]; ok && s.Replicas > 0 {
			scaled = append(scaled, c)
		}
	}
	switch len(scaled) {
	case 1:
		return scaled[0]
	case 2:
		if b, g := m.readyServing(Blue), m.readyServing(Green); b != g {
			return map[bool]Color{true: Blue, false: Green}[b > g]
		}
	}
	return ""
}

// ready counts the ready pods of color c, serving or not.
func (m *machine) ready(c Color) int {
	n := 0
	for _, p := range m.pods(c) {
		if p.Ready {
			n++
		}
	}
	return n
}

func (m *machine) readyServing(c Color) int {
	n := 0
	for _, p := range m.pods(c) {
		if p.Ready && p.Serving {
			n++
		}
	}
	return n
}

func stamp(t time.Time) *metav1.Time {
	v := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &v
}

func (m *machine) event(typ, reason, format string, args ...any) {
	m.events = append(m.events, Event{Type: typ, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

func (m *machine) enter(p phase, message string) {
	u := m.st.Upgrade
	u.Phase, u.PhaseSince, u.Message = p, stamp(m.now), message
	typ := corev1.EventTypeNormal
	switch p {
	case oauthv1alpha1.UpgradeRollingBack, oauthv1alpha1.UpgradeRolledBack, oauthv1alpha1.UpgradeRefused, oauthv1alpha1.UpgradeFailed:
		typ = corev1.EventTypeWarning
	}
	if terminal(p) {
		u.CompletedAt = stamp(m.now)
	}
	m.event(typ, oauthv1alpha1.ProgressingReason(p), "%s", message)
}

func (m *machine) since() time.Time {
	if u := m.st.Upgrade; u != nil && u.PhaseSince != nil {
		return u.PhaseSince.Time
	}
	return m.now
}

// job is the observed Job of kind of the current upgrade (and contract attempt).
func (m *machine) job(kind JobKind) Job {
	u := m.st.Upgrade
	if u == nil || u.ID != m.jobsOf || (kind == JobContract && u.ContractRetries != m.jobsRetry) {
		return Job{}
	}
	if (kind == JobCutover || kind == JobCutback) && (u.Copy == nil || u.Copy.CutoverRetries != m.cutRetry) {
		return Job{}
	}
	return m.o.Jobs[kind]
}

func (m *machine) from() Color { return Color(m.st.Upgrade.FromColor) }
func (m *machine) to() Color   { return Color(m.st.Upgrade.ToColor) }

// transition makes one step and says whether it did.
func (m *machine) transition() bool {
	u := m.st.Upgrade
	if u == nil || terminal(u.Phase) {
		if m.cleanupStep() {
			return true
		}
		if m.cleanupWaits() {
			return false
		}
		return m.start()
	}
	if m.trigger() {
		return true
	}
	if moved, ok := m.copyStep(); ok {
		return moved
	}
	switch u.Phase {
	case oauthv1alpha1.UpgradePlanning:
		return m.planning()
	case oauthv1alpha1.UpgradeMigrating:
		return m.afterJob(JobExpand, func() {
			m.enter(oauthv1alpha1.UpgradeDeploying, fmt.Sprintf("bringing up %d pods of %s in the %s StatefulSet", u.Steps, u.ToImage, u.ToColor))
		},
			oauthv1alpha1.ReasonMigrationFailed, "the expand migrations failed")
	case oauthv1alpha1.UpgradeDeploying:
		if m.readyNew() < int(u.Steps) {
			return false
		}
		if m.s.verify {
			m.enter(oauthv1alpha1.UpgradeVerifying, "verifying "+u.ToImage+
				" through its own pods: issue, introspect, refresh, revoke, and cross-checks with "+u.FromImage)
		} else {
			m.verified()
		}
		return true
	case oauthv1alpha1.UpgradeVerifying:
		return m.afterJob(JobVerify, m.verified, ReasonVerifyFailed, "the verification of "+u.ToImage+" failed")
	case oauthv1alpha1.UpgradePaused:
		if !m.s.pause || m.o.Annotations[oauthv1alpha1.AnnotationPromote] == u.ID {
			m.promoteStep(1)
			return true
		}
		return false
	case oauthv1alpha1.UpgradePromoting:
		return m.promoting()
	case oauthv1alpha1.UpgradeScalingDown:
		return m.scalingDown()
	case oauthv1alpha1.UpgradeRollbackWindow:
		img := m.o.Spec.Image
		moved := img != u.FromImage && img != u.ToImage
		if m.now.Before(m.since().Add(m.s.rollbackWindow)) && !moved {
			return false
		}
		msg := "the rollback window ended: running the contract migrations of " + u.ToImage
		if moved {
			msg = "spec.image changed to " + img + ": " + u.ToImage + " is accepted and its contract migrations run now; the next upgrade follows"
		}
		m.enter(oauthv1alpha1.UpgradeContracting, msg)
		return true
	case oauthv1alpha1.UpgradeContracting:
		return m.contracting()
	case oauthv1alpha1.UpgradeRollingBack:
		if m.abandonRollback() {
			return true
		}
		if len(m.running(m.to())) > 0 || m.o.StatefulSets[m.to()].Replicas != 0 {
			if m.now.After(m.since().Add(m.s.deadline)) && !strings.HasPrefix(u.Message, stuckPrefix) {
				u.Message = stuckPrefix + m.rollbackStuck()
				m.event(corev1.EventTypeWarning, ReasonRollbackStuck, "%s", u.Message)
				return true
			}
			return false
		}
		m.st.ActiveColor = m.from()
		u.Step = 0
		u.Progress = ""
		m.enter(oauthv1alpha1.UpgradeRolledBack, u.FromImage+" serves again: "+u.RollbackReason)
		return true
	}
	return false
}

// scalingDown waits for the old color to be gone. A Terminating pod is not waited
// for: one on a lost node stays so for good, and it serves nothing.
func (m *machine) scalingDown() bool {
	u := m.st.Upgrade
	if m.now.Before(m.since().Add(m.s.scaleDownDelay)) || len(m.running(m.from())) > 0 ||
		m.o.StatefulSets[m.from()].Replicas != 0 {
		return false
	}
	m.enter(oauthv1alpha1.UpgradeRollbackWindow, fmt.Sprintf("%s is scaled to zero and kept until %s; contract migrations wait until then",
		u.FromColor, m.now.Add(m.s.rollbackWindow).UTC().Format(time.RFC3339)))
	return true
}

// contracting waits for the contract Job. One that failed is started again under a
// new name after a backoff (1m, doubling, at most 1h): the new version serves
// meanwhile, and every later upgrade waits for the contract, so giving up would
// leave the server stuck for good on a passing fault (the database restarting).
func (m *machine) contracting() bool {
	u := m.st.Upgrade
	name := UpgradeJobName(m.o.Name, u, JobContract)
	switch j := m.job(JobContract); {
	case j.State == JobSucceeded:
		u.Reason, u.NextRetry = "", nil
		m.enter(oauthv1alpha1.UpgradeCompleted, u.ToImage+" serves; the upgrade is complete")
		return true
	case j.State == JobFailed && u.NextRetry == nil:
		at := m.now.Add(contractBackoff(u.ContractRetries))
		u.Reason, u.NextRetry = oauthv1alpha1.ReasonMigrationFailed, stamp(at)
		u.Message = fmt.Sprintf("the contract migrations failed (%s): see kubectl logs job/%s; %s serves, and they run again at %s",
			j.Message, name, u.ToImage, at.UTC().Format(time.RFC3339))
		m.event(corev1.EventTypeWarning, oauthv1alpha1.ReasonMigrationFailed, "%s", u.Message)
		return true
	case u.NextRetry != nil && !m.now.Before(u.NextRetry.Time):
		u.ContractRetries++
		u.NextRetry = nil
		u.Message = fmt.Sprintf("running the contract migrations of %s again (retry %d): Job %s", u.ToImage, u.ContractRetries,
			UpgradeJobName(m.o.Name, u, JobContract))
		m.event(corev1.EventTypeNormal, ReasonContractRetry, "%s", u.Message)
		return true
	}
	return false
}

func contractBackoff(retries int32) time.Duration {
	return min(time.Minute<<min(retries, 6), time.Hour)
}

// abandonRollback keeps the new version when a stuck rollback is asked to stop by
// the promote annotation (with the upgrade's id, the rollback annotation gone, the
// spec still on the new image), and only while the new color serves every request:
// back to ScalingDown, as if the rollback never began.
func (m *machine) abandonRollback() bool {
	u := m.st.Upgrade
	if u.Copy != nil && u.Copy.CutBack {
		return false // the database is the old version's again
	}
	if !m.now.After(m.since().Add(m.s.deadline)) || m.o.Annotations[oauthv1alpha1.AnnotationPromote] != u.ID ||
		m.o.Annotations[oauthv1alpha1.AnnotationRollback] == u.ID || m.o.Spec.Image != u.ToImage ||
		m.o.Endpoints[m.to()] < u.Steps || m.readyServing(m.to()) < int(u.Steps) {
		return false
	}
	if m.st.FailedImage == u.ToImage {
		m.st.FailedImage, m.st.FailedSettings = "", ""
	}
	u.Reason, u.RollbackReason = ReasonRollbackAbandoned, ""
	u.Step, u.Progress = u.Steps, fmt.Sprintf("%d/%d", u.Steps, u.Steps)
	m.st.ActiveColor = m.to()
	m.enter(oauthv1alpha1.UpgradeScalingDown, fmt.Sprintf(
		"the annotation %s abandoned the stuck rollback: %s keeps all traffic; %s is scaled to zero after %s",
		oauthv1alpha1.AnnotationPromote, u.ToImage, u.FromColor, m.s.scaleDownDelay))
	return true
}

const stuckPrefix = "the rollback is stuck: "

// rollbackStuck says what a rollback waits for.
func (m *machine) rollbackStuck() string {
	u := m.st.Upgrade
	if c := u.Copy; c != nil && c.CutoverAt != nil && !c.CutBack && m.cutbackDue() {
		name := UpgradeJobName(m.o.Name, u, JobCutback)
		return fmt.Sprintf("%s is back and ready, but the cut back (Job %s) has not moved the database back after %s; "+
			"%s keeps serving meanwhile: see kubectl logs job/%s. The rollback cannot be abandoned while it may have "+
			"passed its point of no return", u.FromColor, name, m.s.deadline, u.ToColor, name)
	}
	if m.o.Endpoints[m.from()] < u.Steps {
		return fmt.Sprintf("%d of %d pods of %s (%s) are ready in the Service after %s; %s keeps serving meanwhile: see the events of %s's pods",
			m.o.Endpoints[m.from()], u.Steps, u.FromColor, u.FromImage, m.s.deadline, u.ToColor, u.FromColor)
	}
	return fmt.Sprintf("%s serves again, but %d pods of %s are still running after %s",
		u.FromColor, len(m.running(m.to())), u.ToColor, m.s.deadline)
}

// start begins an upgrade when spec.image differs from what the active color runs,
// is not a failed image, and the window is open.
func (m *machine) start() bool {
	active := m.st.ActiveColor
	sts, ok := m.o.StatefulSets[active]
	img := m.o.Spec.Image
	if !ok || img == "" || img == sts.Image || img == m.st.FailedImage {
		return false
	}
	open, opens, why := windowState(m.s.window, m.o.Location, m.now)
	if !open {
		m.waiting, m.opens = why, opens
		return false
	}
	replicas := max(m.o.Spec.Replicas, 1)
	previous := ""
	if m.st.Upgrade != nil {
		previous = m.st.Upgrade.ID
	}
	m.st.Upgrade = &oauthv1alpha1.UpgradeStatus{
		ID:        newID(sts.Image, img, m.now, previous),
		FromImage: sts.Image, ToImage: img,
		FromColor: string(active), ToColor: string(active.Other()),
		Steps: replicas, Progress: fmt.Sprintf("0/%d", replicas),
		StartedAt: stamp(m.now),
	}
	m.event(corev1.EventTypeNormal, ReasonStarted, "upgrading from %s (%s) to %s (%s)", sts.Image, active, img, active.Other())
	m.enter(oauthv1alpha1.UpgradePlanning, "running the migration plan of "+img)
	return true
}

// trigger rolls back, before the point of no return, on what the user or the clock
// says: the image set back, a third image, the rollback annotation, a deadline.
func (m *machine) trigger() bool {
	u := m.st.Upgrade
	if !beforeNoReturn(u.Phase) || (u.Phase == oauthv1alpha1.UpgradeCuttingOver && !m.cutoverUndone()) {
		return false
	}
	img := m.o.Spec.Image
	switch {
	case img == u.FromImage:
		m.rollback(ReasonImageReverted, "spec.image was set back to "+u.FromImage, false)
	case img != u.ToImage && !promoted(u.Phase):
		m.rollback(ReasonImageChanged, "spec.image changed to "+img+" mid-upgrade: back to "+u.FromImage+" first, then an upgrade to "+img, false)
	case m.o.Annotations[oauthv1alpha1.AnnotationRollback] == u.ID:
		m.rollback(ReasonRollbackAsked, "the annotation "+oauthv1alpha1.AnnotationRollback+" asked for it", true)
	case hasDeadline(u.Phase) && m.now.Sub(m.since()) > m.s.deadline:
		m.rollback(ReasonDeadline, fmt.Sprintf("phase %s made no progress for %s (spec.upgrade.progressDeadline)", u.Phase, m.s.deadline), true)
	default:
		return false
	}
	return true
}

// rollback turns traffic back to the old color. A rollback the new image caused
// records it in failedImage, so that it is not tried again in a loop.
func (m *machine) rollback(reason, why string, failed bool) {
	u := m.st.Upgrade
	u.Reason, u.RollbackReason = reason, why
	if failed {
		m.st.FailedImage, m.st.FailedSettings = u.ToImage, m.digest
	}
	m.enter(oauthv1alpha1.UpgradeRollingBack, "rolling back to "+u.FromImage+": "+why)
}

// refuse ends an upgrade before anything changed.
func (m *machine) refuse(reason, why string) {
	u := m.st.Upgrade
	u.Reason = reason
	m.st.FailedImage, m.st.FailedSettings = u.ToImage, m.digest
	m.enter(oauthv1alpha1.UpgradeRefused, "refused before anything changed: "+why)
}

func (m *machine) planning() bool {
	u := m.st.Upgrade
	if m.s.dataMode == ModeCopy && !m.copyTargetKnown() {
		m.refuse(ReasonCopyTargetMissing, copyTargetMissing)
		return true
	}
	j := m.job(JobPlan)
	switch j.State {
	case JobFailed:
		m.refuse(ReasonPlanFailed, "the migration plan of "+u.ToImage+" failed: "+j.Message)
		return true
	case JobSucceeded:
	default:
		return false
	}
	p := m.o.Plan
	if p == nil || u.ID != m.jobsOf {
		return false // succeeded, result not read yet; the deadline bounds the wait
	}
	// The plan comes from the new image: what status accepts (an enum, a bounded
	// reason) is enforced here, or the status write that records it would fail forever.
	plan := oauthv1alpha1.UpgradePlan{Mode: p.Mode, SchemaFrom: p.SchemaFrom, SchemaTo: p.SchemaTo, Reason: p.Reason}
	if plan.Mode != ModeShared && plan.Mode != ModeCopy && plan.Mode != ModeRefused {
		plan.Mode, plan.Reason = ModeRefused, fmt.Sprintf("the plan reported an unknown mode %q: %s", p.Mode, p.Reason)
	}
	if len(plan.Reason) > 1024 {
		plan.Reason = plan.Reason[:1021] + "..."
	}
	u.Plan = &plan
	p = &PlanResult{Mode: plan.Mode, SchemaFrom: plan.SchemaFrom, SchemaTo: plan.SchemaTo, Reason: plan.Reason}
	switch {
	case p.Mode == ModeShared && m.s.dataMode == ModeCopy, p.Mode == ModeCopy && m.s.dataMode != ModeShared:
		if !m.copyTargetKnown() {
			m.refuse(ReasonCopyTargetMissing, "the plan needs a copied database ("+p.Reason+"): "+copyTargetMissing)
			return true
		}
		m.startCopy(p)
	case p.Mode == ModeShared:
		m.enter(oauthv1alpha1.UpgradeMigrating, fmt.Sprintf("running the expand migrations of %s (schema %d to %d); %s keeps serving",
			u.ToImage, p.SchemaFrom, p.SchemaTo, u.FromImage))
	case p.Mode == ModeCopy:
		m.refuse(oauthv1alpha1.ReasonUpgradeRefused,
			"the plan needs a copied database ("+p.Reason+"), and spec.upgrade.dataMode is Shared: set it to Copy or Auto")
	default:
		m.refuse(ReasonPlanRefused, "the plan refuses this upgrade: "+p.Reason)
	}
	return true
}

// afterJob moves on when the phase's Job succeeded and rolls back when it failed.
func (m *machine) afterJob(kind JobKind, next func(), failReason, failWhy string) bool {
	switch j := m.job(kind); j.State {
	case JobSucceeded:
		next()
		return true
	case JobFailed:
		m.rollback(failReason, fmt.Sprintf("%s: %s (Job %s)", failWhy, j.Message, JobName(m.o.Name, m.st.Upgrade.ID, kind)), true)
		return true
	}
	return false
}

func (m *machine) verified() {
	u := m.st.Upgrade
	if m.s.pause {
		m.enter(oauthv1alpha1.UpgradePaused, fmt.Sprintf("%s is verified and waits: kubectl annotate tokenserver %s=%s", u.ToImage,
			oauthv1alpha1.AnnotationPromote, u.ID))
		return
	}
	m.promoteStep(1)
}

// promoteStep starts step k: the k-th pod of the new color gets the serving label,
// and the analysis counts from the new color's counters now.
func (m *machine) promoteStep(k int32) {
	u := m.st.Upgrade
	failed := int32(0)
	if u.Analysis != nil {
		failed = u.Analysis.FailedChecks
	}
	u.Step, u.Progress = k, fmt.Sprintf("%d/%d", k-1, u.Steps)
	u.Analysis = &oauthv1alpha1.UpgradeAnalysisStatus{FailedChecks: failed}
	m.baseline()
	m.enter(oauthv1alpha1.UpgradePromoting, fmt.Sprintf("step %d of %d: moving traffic to pod %d of %s", k, u.Steps, k-1, u.ToColor))
}

// Judged says whether the analysis judges an endpoint: the public OAuth endpoints
// and pages, where clients meet the new version. Not the admin API (the operator's
// own calls: the consent mirror's long polls, the owner sweep), nor discovery and
// jwks (static documents anyone can fetch for free, which would only dilute the
// rate of the endpoints that do work).
func Judged(endpoint string) bool {
	return !strings.HasPrefix(endpoint, "admin_") && endpoint != "discovery" && endpoint != "jwks"
}

// baseline records the counters a step's analysis counts from; without metrics it
// waits for them (LastCheck stays nil).
func (m *machine) baseline() {
	a := m.st.Upgrade.Analysis
	mt := m.o.Metrics
	if mt == nil {
		return
	}
	a.Baseline = nil
	for _, e := range slices.Sorted(maps.Keys(mt)) {
		if Judged(e) {
			a.Baseline = append(a.Baseline, oauthv1alpha1.UpgradeEndpointCounts{Endpoint: e, Requests: mt[e].Requests, Errors: mt[e].Errors})
		}
	}
	a.LastCheck = stamp(m.now)
	a.Requests, a.Errors, a.Rate, a.Endpoints = 0, 0, "", nil
}

// measure is what each judged endpoint answered since the baseline; ok is false
// when a counter went back (a pod restarted, or left the color).
func (m *machine) measure() (since []oauthv1alpha1.UpgradeEndpointCounts, ok bool) {
	base := map[string]Counts{}
	for _, b := range m.st.Upgrade.Analysis.Baseline {
		base[b.Endpoint] = Counts{Requests: b.Requests, Errors: b.Errors}
		if _, seen := m.o.Metrics[b.Endpoint]; !seen {
			return nil, false
		}
	}
	for _, e := range slices.Sorted(maps.Keys(m.o.Metrics)) {
		c, b := m.o.Metrics[e], base[e]
		if !Judged(e) {
			continue
		}
		if c.Requests < b.Requests || c.Errors < b.Errors {
			return nil, false
		}
		if d := (Counts{Requests: c.Requests - b.Requests, Errors: c.Errors - b.Errors}); d.Requests > 0 || d.Errors > 0 {
			since = append(since, oauthv1alpha1.UpgradeEndpointCounts{Endpoint: e, Requests: d.Requests, Errors: d.Errors})
		}
	}
	return since, true
}

// worst is the endpoint whose error rate fares worst. An endpoint with fewer than
// minRequestsPerStep requests is judged as if the rest of that sample succeeded
// (errors over minRequestsPerStep): it fails only when it would fail whatever comes,
// so a rarely called endpoint neither escapes the analysis nor fails on one error in
// a handful of requests.
func (m *machine) worst(since []oauthv1alpha1.UpgradeEndpointCounts) (w oauthv1alpha1.UpgradeEndpointCounts, judged float64) {
	judged = -1
	for _, e := range since {
		n := max(e.Requests, m.s.minRequests)
		r := 0.0
		if n > 0 {
			r = float64(e.Errors) / float64(n)
		}
		if r > judged {
			w, judged = e, r
		}
	}
	return w, max(judged, 0)
}

// swapped: the step's new pods serve, as the EndpointSlices say, and the old pods
// they replace no longer carry the label.
func (m *machine) swapped() bool {
	u := m.st.Upgrade
	if m.o.Endpoints[m.to()] < u.Step {
		return false
	}
	for _, p := range m.pods(m.from()) {
		if p.Ordinal < int(u.Step) && p.Serving {
			return false
		}
	}
	return true
}

func (m *machine) promoting() bool {
	u := m.st.Upgrade
	a := u.Analysis
	if a == nil {
		u.Analysis = &oauthv1alpha1.UpgradeAnalysisStatus{}
		a = u.Analysis
	}
	if a.LastCheck == nil {
		m.baseline()
		return a.LastCheck != nil
	}
	if !m.swapped() || m.now.Before(a.LastCheck.Add(m.s.interval)) {
		return false
	}
	a.LastCheck = stamp(m.now)
	var failure string
	since, ok := m.measure()
	switch {
	case m.o.Metrics == nil:
		failure = "the metrics of " + u.ToColor + " could not be read"
	case !ok:
		failure = "the counters of " + u.ToColor + " went back: a pod restarted"
		m.baseline()
	default:
		a.Endpoints, a.Requests, a.Errors = since, 0, 0
		for _, e := range since {
			a.Requests += e.Requests
			a.Errors += e.Errors
		}
		w, judged := m.worst(since)
		rate := 0.0
		if w.Requests > 0 {
			rate = float64(w.Errors) / float64(w.Requests)
		}
		a.Rate = fmt.Sprintf("%.2f%%", rate*100)
		switch {
		case judged > m.s.maxErrorRate && w.Requests < m.s.minRequests:
			failure = fmt.Sprintf("endpoint %s answered %d of %d requests with an error: above spec.upgrade.maxErrorRate %s "+
				"even if the rest of its %d (minRequestsPerStep) succeed", w.Endpoint, w.Errors, w.Requests,
				m.o.Spec.Upgrade.MaxErrorRate, m.s.minRequests)
		case judged > m.s.maxErrorRate:
			failure = fmt.Sprintf("endpoint %s: error rate %s (%d of %d requests) is above spec.upgrade.maxErrorRate %s",
				w.Endpoint, a.Rate, w.Errors, w.Requests, m.o.Spec.Upgrade.MaxErrorRate)
		case a.Requests < m.s.minRequests:
			return true // too little traffic proves nothing yet: the step waits, bounded by the deadline
		}
	}
	if failure != "" {
		a.FailedChecks++
		if a.FailedChecks >= m.s.failureThreshold {
			m.rollback(ReasonAnalysisFailed, fmt.Sprintf("%s (%d failed checks, spec.upgrade.analysis.failureThreshold %d)",
				failure, a.FailedChecks, m.s.failureThreshold), true)
			return true
		}
		m.event(corev1.EventTypeWarning, ReasonCheckFailed, "step %d of %d: %s (%d of %d failed checks)", u.Step, u.Steps,
			failure, a.FailedChecks, m.s.failureThreshold)
		return true
	}
	m.event(corev1.EventTypeNormal, ReasonCheckPassed, "step %d of %d: %d requests, error rate %s", u.Step, u.Steps, a.Requests, a.Rate)
	if u.Step < u.Steps {
		m.promoteStep(u.Step + 1)
		return true
	}
	u.Progress = fmt.Sprintf("%d/%d", u.Steps, u.Steps)
	m.st.ActiveColor = m.to()
	m.enter(oauthv1alpha1.UpgradeScalingDown, fmt.Sprintf("all traffic is on %s (%s); %s is scaled to zero after %s",
		u.ToColor, u.ToImage, u.FromColor, m.s.scaleDownDelay))
	return true
}

// running are the pods of c that are not terminating.
func (m *machine) running(c Color) []Pod {
	var out []Pod
	for _, p := range m.pods(c) {
		if !p.Terminating {
			out = append(out, p)
		}
	}
	return out
}

func (m *machine) pods(c Color) []Pod {
	var out []Pod
	for _, p := range m.o.Pods {
		if p.Color == c {
			out = append(out, p)
		}
	}
	return out
}

// readyNew counts the new color's ready pods that run the new image.
func (m *machine) readyNew() int {
	u := m.st.Upgrade
	if m.o.StatefulSets[m.to()] != (StatefulSet{Image: u.ToImage, Replicas: u.Steps}) {
		return 0
	}
	n := 0
	for _, p := range m.pods(m.to()) {
		if p.Ready && p.Image == u.ToImage {
			n++
		}
	}
	return n
}

// statefulSets: the image and replicas of each color that should exist.
func (m *machine) statefulSets() []StatefulSetIntent {
	u := m.st.Upgrade
	want := map[Color]StatefulSetIntent{}
	// keep scales a color it does not want serving; never to zero while one of its
	// pods still carries the serving label (status lost or wrong: see activeColor):
	// the labels move first, and the next pass scales it.
	keep := func(c Color, replicas int32) {
		if s, ok := m.o.StatefulSets[c]; ok {
			if replicas == 0 && m.anyServing(c) {
				replicas = s.Replicas
			}
			want[c] = StatefulSetIntent{Color: c, Image: s.Image, Replicas: replicas}
		}
	}
	if u == nil || terminal(u.Phase) {
		active := m.st.ActiveColor
		if s, ok := m.o.StatefulSets[active]; ok {
			want[active] = StatefulSetIntent{Color: active, Image: s.Image, Replicas: max(m.o.Spec.Replicas, 1)}
		} else if m.o.Spec.Image != "" {
			want[active] = StatefulSetIntent{Color: active, Image: m.o.Spec.Image, Replicas: max(m.o.Spec.Replicas, 1)}
		}
		keep(active.Other(), 0)
		return sorted(want)
	}
	from, to := m.from(), m.to()
	fromSet := StatefulSetIntent{Color: from, Image: u.FromImage, Replicas: u.Steps}
	toSet := StatefulSetIntent{Color: to, Image: u.ToImage, Replicas: u.Steps}
	switch u.Phase {
	case oauthv1alpha1.UpgradePlanning, oauthv1alpha1.UpgradeMigrating, oauthv1alpha1.UpgradeCopying:
		want[from] = fromSet
		keep(to, 0)
	case oauthv1alpha1.UpgradeScalingDown:
		if !m.now.Before(m.since().Add(m.s.scaleDownDelay)) && m.o.Endpoints[to] >= u.Steps && !m.anyServing(from) {
			fromSet.Replicas = 0
		}
		want[from], want[to] = fromSet, toSet
	case oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradeContracting:
		fromSet.Replicas = 0
		want[from], want[to] = fromSet, toSet
	case oauthv1alpha1.UpgradeRollingBack:
		want[from] = fromSet
		if _, ok := m.o.StatefulSets[to]; ok {
			if !m.anyServing(to) {
				toSet.Replicas = 0
			}
			want[to] = toSet
		}
	default: // Deploying, Verifying, Paused, Promoting; Replaying, CuttingOver
		want[from], want[to] = fromSet, toSet
	}
	return sorted(want)
}

func sorted(want map[Color]StatefulSetIntent) []StatefulSetIntent {
	out := make([]StatefulSetIntent, 0, len(want))
	for _, c := range []Color{Blue, Green} {
		if s, ok := want[c]; ok {
			out = append(out, s)
		}
	}
	return out
}

func (m *machine) anyServing(c Color) bool {
	for _, p := range m.pods(c) {
		if p.Serving {
			return true
		}
	}
	return false
}

// jobs: the phase's Job, when it does not exist yet.
func (m *machine) jobs() []JobIntent {
	u := m.st.Upgrade
	if u == nil {
		return nil
	}
	kind := map[phase]JobKind{
		oauthv1alpha1.UpgradePlanning:    JobPlan,
		oauthv1alpha1.UpgradeMigrating:   JobExpand,
		oauthv1alpha1.UpgradeVerifying:   JobVerify,
		oauthv1alpha1.UpgradeContracting: JobContract,
		oauthv1alpha1.UpgradeCopying:     JobCopy,
		oauthv1alpha1.UpgradeCuttingOver: JobCutover,
	}[u.Phase]
	if m.cutbackDue() {
		kind = JobCutback
	}
	if kind == "" || m.job(kind).State != JobAbsent {
		return nil
	}
	if kind == JobContract && u.NextRetry != nil {
		return nil // the failed attempt waits for its retry
	}
	return []JobIntent{{Kind: kind, Name: UpgradeJobName(m.o.Name, u, kind), Image: u.ToImage}}
}

// wantServing says, pod by pod, which carry the serving label.
//
// Outside a promotion, the active color's pods serve. During step k of a promotion,
// the new color's first k pods serve, and the old pod of ordinal i < k stops only
// once the EndpointSlices show i+1 new pods ready; should new pods stop being ready,
// old ones serve again. A rollback labels all old pods and unlabels the new only
// once every old pod is ready in the EndpointSlices.
func (m *machine) wantServing(p Pod) bool {
	u := m.st.Upgrade
	if u == nil || terminal(u.Phase) {
		return p.Color == m.st.ActiveColor
	}
	from, to := m.from(), m.to()
	// The old pod of ordinal i stops once i+1 new pods are ready in the Service.
	covered := func(p Pod) bool { return int(m.o.Endpoints[to]) > p.Ordinal }
	switch u.Phase {
	case oauthv1alpha1.UpgradePromoting:
		if p.Color == to {
			return p.Ordinal < int(u.Step)
		}
		return p.Ordinal >= int(u.Step) || !covered(p)
	case oauthv1alpha1.UpgradeScalingDown:
		return p.Color == to || !covered(p)
	case oauthv1alpha1.UpgradeRollbackWindow, oauthv1alpha1.UpgradeContracting:
		return p.Color == to
	case oauthv1alpha1.UpgradeRollingBack:
		if c := u.Copy; c != nil && c.CutoverAt != nil && !c.CutBack {
			// The database is still the copy: the new pods serve until the cut back.
			return p.Color == to || p.Serving
		}
		// New pods keep the label they have until every old pod serves, and get none.
		return p.Color == from || (p.Serving && m.o.Endpoints[from] < u.Steps)
	default:
		return p.Color == from
	}
}

// guardRemovals is the second line behind the phases' own rules; the property test
// turns it off to prove that those rules alone keep serving capacity.
var guardRemovals = true

// labels: the label changes to make. Removals that would leave fewer ready serving
// pods than the replicas (or than there are now, if fewer) are held back, whatever
// the phase asks: the machine never itself shrinks what serves.
func (m *machine) labels() []LabelIntent {
	var add, remove []LabelIntent
	readyServing, readyRemoved := int32(0), int32(0)
	for _, p := range m.o.Pods {
		if p.Ready && p.Serving {
			readyServing++
		}
		want := m.wantServing(p)
		switch {
		case want && !p.Serving:
			add = append(add, LabelIntent{Pod: p.Name, Serving: true})
		case !want && p.Serving:
			remove = append(remove, LabelIntent{Pod: p.Name})
			if p.Ready {
				readyRemoved++
			}
		}
	}
	floor := max(m.o.Spec.Replicas, 1)
	if u := m.st.Upgrade; u != nil && !terminal(u.Phase) {
		floor = u.Steps
	}
	if guardRemovals && readyServing-readyRemoved < min(floor, readyServing) {
		remove = nil
	}
	out := append(add, remove...)
	slices.SortFunc(out, func(a, b LabelIntent) int { return strings.Compare(a.Pod, b.Pod) })
	return out
}

func (m *machine) conditions() []metav1.Condition {
	u := m.st.Upgrade
	cond := func(t string, s bool, reason, msg string) metav1.Condition {
		st := metav1.ConditionFalse
		if s {
			st = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg}
	}
	var out []metav1.Condition
	switch {
	case m.waiting != "":
		out = append(out, cond(oauthv1alpha1.ConditionProgressing, true, oauthv1alpha1.ReasonUpgradeWaitingForWindow, m.waiting))
	case u != nil:
		out = append(out, cond(oauthv1alpha1.ConditionProgressing, !terminal(u.Phase), oauthv1alpha1.ProgressingReason(u.Phase), u.Message))
	}
	if u == nil {
		return out
	}
	degraded, reason := false, oauthv1alpha1.ProgressingReason(u.Phase)
	asked := m.o.Spec.Image == u.ToImage // the spec still asks for the image that did not make it
	switch u.Phase {
	case oauthv1alpha1.UpgradeRollingBack, oauthv1alpha1.UpgradeRolledBack:
		degraded = asked // a rollback the user asked for by setting the image is no failure
		reason = oauthv1alpha1.ReasonUpgradeRolledBack
		if u.Reason == oauthv1alpha1.ReasonMigrationFailed {
			reason = oauthv1alpha1.ReasonMigrationFailed
		}
	case oauthv1alpha1.UpgradeRefused:
		degraded, reason = asked, oauthv1alpha1.ReasonUpgradeRefused
	case oauthv1alpha1.UpgradeFailed:
		degraded, reason = true, oauthv1alpha1.ReasonMigrationFailed
	case oauthv1alpha1.UpgradeContracting:
		degraded, reason = u.Reason == oauthv1alpha1.ReasonMigrationFailed, oauthv1alpha1.ReasonMigrationFailed
	}
	if u.Reason == oauthv1alpha1.ReasonCutoverFailed && !terminal(u.Phase) {
		degraded, reason = true, oauthv1alpha1.ReasonCutoverFailed
	}
	msg := u.Message
	if u.Phase == oauthv1alpha1.UpgradeRollingBack && m.now.After(m.since().Add(m.s.deadline)) {
		degraded, reason, msg = true, ReasonRollbackStuck, stuckPrefix+m.rollbackStuck()
	}
	if !degraded {
		msg = "no upgrade failure: " + string(u.Phase)
	}
	return append(out, cond(oauthv1alpha1.ConditionDegraded, degraded, reason, msg))
}

// requeue is when the next timer matters.
func (m *machine) requeue() time.Duration {
	var at []time.Time
	if !m.opens.IsZero() {
		at = append(at, m.opens)
	}
	if u := m.st.Upgrade; u != nil && !terminal(u.Phase) {
		if hasDeadline(u.Phase) {
			at = append(at, m.since().Add(m.s.deadline))
		}
		switch u.Phase {
		case oauthv1alpha1.UpgradePromoting:
			if a := u.Analysis; a != nil && a.LastCheck != nil {
				at = append(at, a.LastCheck.Add(m.s.interval))
			} else {
				at = append(at, m.now.Add(m.s.interval)) // metrics are not watched
			}
		case oauthv1alpha1.UpgradeScalingDown:
			// Past the delay only pods (watched) move it: no polling.
			if t := m.since().Add(m.s.scaleDownDelay); t.After(m.now) {
				at = append(at, t)
			}
		case oauthv1alpha1.UpgradeRollbackWindow:
			at = append(at, m.since().Add(m.s.rollbackWindow))
		case oauthv1alpha1.UpgradeReplaying:
			at = append(at, m.now.Add(replayPoll)) // the replay's figures are not watched
		case oauthv1alpha1.UpgradeRollingBack:
			// Its deadline only reports a stuck rollback (Degraded).
			if t := m.since().Add(m.s.deadline); t.After(m.now) {
				at = append(at, t.Add(time.Second))
			}
		case oauthv1alpha1.UpgradeContracting:
			if u.NextRetry != nil {
				at = append(at, u.NextRetry.Time)
			}
		}
	}
	var next time.Duration
	for _, t := range at {
		d := t.Sub(m.now)
		if d <= 0 {
			d = time.Second // due: come back soon, not in a hot loop
		}
		if next == 0 || d < next {
			next = d
		}
	}
	return next
}

// CurrentImage is status.currentImage: the image of the ready pods that carry the
// serving label once this pass's label moves (labels) are made, when they all run
// one. Counting the moves makes the pass that hands traffic to a color report that
// color's image in the same status write as its phase, rather than one pass later.
// While two images serve (a promotion or a rollback in the middle) ok is false and
// the status keeps the image it had, so that it moves only once no old pod serves.
func CurrentImage(pods []Pod, labels []LabelIntent) (image string, ok bool) {
	serving := make(map[string]bool, len(labels))
	for _, l := range labels {
		serving[l.Pod] = l.Serving
	}
	for _, p := range pods {
		if s, moved := serving[p.Name]; moved {
			p.Serving = s
		}
		if !p.Ready || !p.Serving {
			continue
		}
		if image != "" && p.Image != image {
			return "", false
		}
		image = p.Image
	}
	return image, image != ""
}
