package upgrade

import (
	"fmt"
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
	ReasonStarted          = "UpgradeStarted"
	ReasonPlanFailed       = "PlanFailed"
	ReasonCopyNotSupported = "CopyNotSupported"
	ReasonPlanRefused      = "PlanRefused"
	ReasonVerifyFailed     = "VerificationFailed"
	ReasonAnalysisFailed   = "AnalysisFailed"
	ReasonCheckFailed      = "AnalysisCheckFailed"
	ReasonCheckPassed      = "AnalysisCheckPassed"
	ReasonDeadline         = "ProgressDeadlineExceeded"
	ReasonRollbackAsked    = "RollbackRequested"
	ReasonImageReverted    = "ImageReverted"
	ReasonImageChanged     = "ImageChanged"
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
		oauthv1alpha1.UpgradeScalingDown, oauthv1alpha1.UpgradeRollbackWindow:
		return true
	}
	return false
}

// hasDeadline are the phases progressDeadline bounds: those that wait for the new
// version to prove itself. A pause waits for a person; after promotion, waits are
// timed by the settings themselves.
func hasDeadline(p phase) bool {
	switch p {
	case oauthv1alpha1.UpgradePlanning, oauthv1alpha1.UpgradeMigrating, oauthv1alpha1.UpgradeDeploying,
		oauthv1alpha1.UpgradeVerifying, oauthv1alpha1.UpgradePromoting:
		return true
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
	// in this pass has none yet.
	jobsOf string
}

// Next decides the next step of the upgrade from observed facts at now. It is pure.
func Next(o Observed, now time.Time) Decision {
	m := &machine{o: o, now: now, s: settingsOf(o.Spec.Upgrade), st: o.Status}
	m.st.Upgrade = o.Status.Upgrade.DeepCopy()
	if u := o.Status.Upgrade; u != nil {
		m.jobsOf = u.ID
	}
	if m.st.ActiveColor == "" {
		m.st.ActiveColor = Blue
	}
	if m.st.FailedImage != "" && m.o.Spec.Image != m.st.FailedImage {
		m.st.FailedImage = "" // the spec moved on: that image may be tried again later
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
	d.Jobs = m.jobs()
	d.Labels = m.labels()
	d.Conditions = m.conditions()
	d.RequeueAfter = m.requeue()
	return d
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

// job is the observed Job of kind of the current upgrade.
func (m *machine) job(kind JobKind) Job {
	if m.st.Upgrade == nil || m.st.Upgrade.ID != m.jobsOf {
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
		return m.start()
	}
	if m.trigger() {
		return true
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
		if m.now.Before(m.since().Add(m.s.scaleDownDelay)) || len(m.pods(m.from())) > 0 ||
			m.o.StatefulSets[m.from()].Replicas != 0 {
			return false
		}
		m.enter(oauthv1alpha1.UpgradeRollbackWindow, fmt.Sprintf("%s is scaled to zero and kept until %s; contract migrations wait until then",
			u.FromColor, m.now.Add(m.s.rollbackWindow).UTC().Format(time.RFC3339)))
		return true
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
		switch j := m.job(JobContract); j.State {
		case JobSucceeded:
			u.Reason = ""
			m.enter(oauthv1alpha1.UpgradeCompleted, u.ToImage+" serves; the upgrade is complete")
			return true
		case JobFailed:
			u.Reason = oauthv1alpha1.ReasonMigrationFailed
			m.enter(oauthv1alpha1.UpgradeFailed, fmt.Sprintf(
				"the contract migrations failed (%s); %s serves, %s cannot come back: see kubectl logs job/%s",
				j.Message, u.ToImage, u.FromImage, JobName(m.o.Name, u.ID, JobContract)))
			return true
		}
		return false
	case oauthv1alpha1.UpgradeRollingBack:
		if len(m.pods(m.to())) > 0 || m.o.StatefulSets[m.to()].Replicas != 0 {
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
	m.st.Upgrade = &oauthv1alpha1.UpgradeStatus{
		ID:        newID(sts.Image, img, m.now),
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
	if !beforeNoReturn(u.Phase) {
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
		m.st.FailedImage = u.ToImage
	}
	m.enter(oauthv1alpha1.UpgradeRollingBack, "rolling back to "+u.FromImage+": "+why)
}

// refuse ends an upgrade before anything changed.
func (m *machine) refuse(reason, why string) {
	u := m.st.Upgrade
	u.Reason = reason
	m.st.FailedImage = u.ToImage
	m.enter(oauthv1alpha1.UpgradeRefused, "refused before anything changed: "+why)
}

func (m *machine) planning() bool {
	u := m.st.Upgrade
	if m.s.dataMode == ModeCopy {
		m.refuse(ReasonCopyNotSupported, "spec.upgrade.dataMode is Copy, and upgrades with a copied database are not built yet")
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
	switch p.Mode {
	case ModeShared:
		m.enter(oauthv1alpha1.UpgradeMigrating, fmt.Sprintf("running the expand migrations of %s (schema %d to %d); %s keeps serving",
			u.ToImage, p.SchemaFrom, p.SchemaTo, u.FromImage))
	case ModeCopy:
		m.refuse(oauthv1alpha1.ReasonUpgradeRefused,
			"the plan needs a copied database ("+p.Reason+"); upgrades with a copied database are not built yet")
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

// baseline records the counters a step's analysis counts from; without metrics it
// waits for them (LastCheck stays nil).
func (m *machine) baseline() {
	a := m.st.Upgrade.Analysis
	if mt := m.o.Metrics; mt != nil {
		a.BaselineRequests, a.BaselineErrors, a.LastCheck = mt.Requests, mt.Errors, stamp(m.now)
		a.Requests, a.Errors, a.Rate = 0, 0, ""
	}
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
	mt := m.o.Metrics
	var failure string
	switch {
	case mt == nil:
		failure = "the metrics of " + u.ToColor + " could not be read"
	case mt.Requests < a.BaselineRequests || mt.Errors < a.BaselineErrors:
		failure = "the counters of " + u.ToColor + " went back: a pod restarted"
		m.baseline()
	default:
		a.Requests, a.Errors = mt.Requests-a.BaselineRequests, mt.Errors-a.BaselineErrors
		rate := 0.0
		if a.Requests > 0 {
			rate = float64(a.Errors) / float64(a.Requests)
		}
		a.Rate = fmt.Sprintf("%.2f%%", rate*100)
		switch {
		case rate > m.s.maxErrorRate:
			failure = fmt.Sprintf("error rate %s (%d of %d requests) is above spec.upgrade.maxErrorRate %s",
				a.Rate, a.Errors, a.Requests, m.o.Spec.Upgrade.MaxErrorRate)
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
	keep := func(c Color, replicas int32) {
		if s, ok := m.o.StatefulSets[c]; ok {
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
	case oauthv1alpha1.UpgradePlanning, oauthv1alpha1.UpgradeMigrating:
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
	default: // Deploying, Verifying, Paused, Promoting
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
	}[u.Phase]
	if kind == "" || m.job(kind).State != JobAbsent {
		return nil
	}
	return []JobIntent{{Kind: kind, Name: JobName(m.o.Name, u.ID, kind), Image: u.ToImage}}
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
	}
	msg := u.Message
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
			at = append(at, m.since().Add(m.s.scaleDownDelay))
		case oauthv1alpha1.UpgradeRollbackWindow:
			at = append(at, m.since().Add(m.s.rollbackWindow))
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

// CurrentImage is status.currentImage as observed: the image of the ready pods that
// carry the serving label, when they all run one. While two images serve (a
// promotion or a rollback in the middle) ok is false and the status keeps the image
// it had, so that it moves only once no old pod serves.
func CurrentImage(pods []Pod) (image string, ok bool) {
	for _, p := range pods {
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
