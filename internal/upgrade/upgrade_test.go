package upgrade

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// want is what a decision must say; zero fields are checked too (no Jobs, no labels),
// except sts, checked only when set.
type want struct {
	phase    v1.UpgradePhase // "" = no upgrade recorded
	step     int32
	jobs     []JobKind
	labels   []LabelIntent
	sts      []StatefulSetIntent
	failed   string // status.failedImage
	reason   string // status.upgrade.reason
	active   Color
	degraded string // reason of Degraded=True; "" = not True
	replay   string // the direction of the one replay Deployment; "" = none
	database string // status.database's Secret; "" = unset
}

func on(p string) LabelIntent  { return LabelIntent{Pod: p, Serving: true} }
func off(p string) LabelIntent { return LabelIntent{Pod: p} }

var (
	blue0, blue1, blue2    = podName(Blue, 0), podName(Blue, 1), podName(Blue, 2)
	green0, green1, green2 = podName(Green, 0), podName(Green, 1), podName(Green, 2)
)

type transition struct {
	in   Observed
	now  time.Time
	want want
}

// transitions covers every transition of the machine, phase by phase.
func transitions() map[string]transition {
	t10 := t0.Add(10 * time.Second)
	window := func(start, length, tz string, loc *time.Location) func(*Observed) {
		return func(o *Observed) {
			o.Spec.Upgrade.Window = &v1.UpgradeWindow{Start: start, Duration: v1.Duration(length), TimeZone: tz}
			o.Location = loc
		}
	}
	status := func(f func(*v1.UpgradeStatus)) func(*Observed) { return func(o *Observed) { f(o.Status.Upgrade) } }
	ends := func(blue, green int32) func(*Observed) {
		return func(o *Observed) { o.Endpoints = map[Color]int32{Blue: blue, Green: green} }
	}
	label := func(name string, serving bool) func(*Observed) {
		return func(o *Observed) {
			for i := range o.Pods {
				if o.Pods[i].Name == name {
					o.Pods[i].Serving = serving
				}
			}
		}
	}
	unready := func(name string) func(*Observed) {
		return func(o *Observed) {
			for i := range o.Pods {
				if o.Pods[i].Name == name {
					o.Pods[i].Ready = false
				}
			}
		}
	}
	failedChecks := func(n int32) func(*Observed) {
		return status(func(u *v1.UpgradeStatus) { u.Analysis.FailedChecks = n })
	}
	noGreenPods := func(o *Observed) { o.Pods = pods(Blue, imgA, 3, true, all) }
	// RollingBack from step 2: blue all labelled again. A function: each row gets
	// its own maps to change.
	rolling := func() Observed {
		return with(at(v1.UpgradePromoting, 3, 2), status(func(u *v1.UpgradeStatus) {
			u.Phase, u.Reason, u.RollbackReason = v1.UpgradeRollingBack, ReasonAnalysisFailed, "error rate"
		}), label(blue0, true), label(blue1, true), ends(3, 2), func(o *Observed) { o.Status.FailedImage = imgB })
	}
	promoting := func(step int32) want {
		return want{phase: v1.UpgradePromoting, step: step, active: Blue}
	}
	upgradeSts := []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 3}}

	return map[string]transition{
		// No upgrade.
		"settled: nothing to do": {settled(3, imgA), t0,
			want{active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 3}}}},
		"install: no StatefulSet yet, blue with the spec's image": {with(settled(2, imgA), func(o *Observed) {
			o.StatefulSets, o.Pods, o.Endpoints = map[Color]StatefulSet{}, nil, nil
		}), t0, want{active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 2}}}},
		"settled: a new pod of the active color gets the label": {with(settled(3, imgA), label(blue2, false)), t0,
			want{active: Blue, labels: []LabelIntent{on(blue2)}}},
		"settled: scaled out by spec.replicas": {with(settled(3, imgA), func(o *Observed) { o.Spec.Replicas = 4 }), t0,
			want{active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 4}}}},
		"image change: planning starts": {settled(3, imgB), t0,
			want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 3}}}},
		"image change to the failed image: not retried": {with(settled(3, imgB), func(o *Observed) { o.Status.FailedImage = imgB }), t0,
			want{active: Blue, failed: imgB}},
		"spec moved off the failed image: it may be tried again later": {with(settled(3, imgA), func(o *Observed) { o.Status.FailedImage = imgB }), t0,
			want{active: Blue}},
		"image change outside the window: waits": {with(settled(3, imgB), window("02:00", "2h", "", nil)), t0,
			want{active: Blue}},
		"image change inside the window: starts": {with(settled(3, imgB), window("11:30", "1h", "", nil)), t0,
			want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue}},
		"image change inside a window across midnight, in its time zone": {with(settled(3, imgB),
			window("23:00", "4h", "Pacific/Pago_Pago", time.FixedZone("SST", -11*3600))), t0, // 01:00 there
			want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue}},
		"image change with an unknown time zone: waits": {with(settled(3, imgB), window("00:00", "24h", "Mars/Olympus", nil)), t0,
			want{active: Blue}},

		// Planning.
		"planning: the plan runs": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobRunning)), t0,
			want{phase: v1.UpgradePlanning, active: Blue, sts: []StatefulSetIntent{{Blue, imgA, 3}}}},
		"planning: plan Job missing after a restart: created again": {at(v1.UpgradePlanning, 3, 0), t0,
			want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue}},
		"planning: plan says Shared: expand migrations": {with(at(v1.UpgradeMigrating, 3, 0), status(func(u *v1.UpgradeStatus) {
			u.Phase, u.Plan = v1.UpgradePlanning, nil
		})), t0, want{phase: v1.UpgradeMigrating, jobs: []JobKind{JobExpand}, active: Blue}},
		"planning: plan succeeded, result not read yet: waits": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobSucceeded)), t0,
			want{phase: v1.UpgradePlanning, active: Blue}},
		"planning: plan says Copy, dataMode Shared: refused": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobSucceeded), func(o *Observed) {
			o.Plan = &PlanResult{Mode: ModeCopy, Reason: "breaking: tokens split into two tables"}
			o.Spec.Upgrade.DataMode = ModeShared
		}), t0, want{phase: v1.UpgradeRefused, active: Blue, failed: imgB, reason: v1.ReasonUpgradeRefused, degraded: v1.ReasonUpgradeRefused}},
		"planning: plan refuses": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobSucceeded), func(o *Observed) {
			o.Plan = &PlanResult{Mode: ModeRefused, Reason: "schema 9 is newer than this image knows"}
		}), t0, want{phase: v1.UpgradeRefused, active: Blue, failed: imgB, reason: ReasonPlanRefused, degraded: v1.ReasonUpgradeRefused}},
		"planning: plan reports a mode it should not: refused, and status can hold it": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobSucceeded), func(o *Observed) {
			o.Plan = &PlanResult{Mode: "Magic", Reason: strings.Repeat("x", 5000)}
		}), t0, want{phase: v1.UpgradeRefused, active: Blue, failed: imgB, reason: ReasonPlanRefused, degraded: v1.ReasonUpgradeRefused}},
		"planning: plan Job failed: refused": {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobFailed)), t0,
			want{phase: v1.UpgradeRefused, active: Blue, failed: imgB, reason: ReasonPlanFailed, degraded: v1.ReasonUpgradeRefused}},
		"planning: dataMode Copy: the plan runs first": {with(at(v1.UpgradePlanning, 3, 0), func(o *Observed) {
			o.Spec.Upgrade.DataMode = ModeCopy
		}), t0, want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue}},

		// Migrating.
		"migrating: expand running": {with(at(v1.UpgradeMigrating, 3, 0), job(JobExpand, JobRunning)), t0,
			want{phase: v1.UpgradeMigrating, active: Blue}},
		"migrating: expand done: green at full size": {with(at(v1.UpgradeMigrating, 3, 0), job(JobExpand, JobSucceeded)), t0,
			want{phase: v1.UpgradeDeploying, active: Blue, sts: upgradeSts}},
		"migrating: expand failed: rolled back, blue untouched": {with(at(v1.UpgradeMigrating, 3, 0), job(JobExpand, JobFailed)), t0,
			want{phase: v1.UpgradeRolledBack, active: Blue, failed: imgB, reason: v1.ReasonMigrationFailed, degraded: v1.ReasonMigrationFailed,
				sts: []StatefulSetIntent{{Blue, imgA, 3}}}},

		// Deploying.
		"deploying: green not ready yet": {at(v1.UpgradeDeploying, 3, 0), t0,
			want{phase: v1.UpgradeDeploying, active: Blue, sts: upgradeSts}},
		"deploying: two of three green pods ready": {with(at(v1.UpgradeDeploying, 3, 0), greenReady(3), unready(green2)), t0,
			want{phase: v1.UpgradeDeploying, active: Blue}},
		"deploying: green ready: verification": {with(at(v1.UpgradeDeploying, 3, 0), greenReady(3)), t0,
			want{phase: v1.UpgradeVerifying, jobs: []JobKind{JobVerify}, active: Blue, sts: upgradeSts}},
		"deploying: green ready, no verification: promotion": {with(at(v1.UpgradeDeploying, 3, 0), greenReady(3), func(o *Observed) {
			o.Spec.Upgrade.Verify = ptr.To(false)
		}), t0, want{phase: v1.UpgradePromoting, step: 1, active: Blue, labels: []LabelIntent{on(green0)}}},

		"deploying: green ready, no verification, pause asked: paused": {with(at(v1.UpgradeDeploying, 3, 0), greenReady(3), func(o *Observed) {
			o.Spec.Upgrade.Verify, o.Spec.Upgrade.PauseBeforePromotion = ptr.To(false), true
		}), t0, want{phase: v1.UpgradePaused, active: Blue}},
		"planning: image set back: nothing changed, rolled back at once": {with(at(v1.UpgradePlanning, 3, 0), image(imgA)), t0,
			want{phase: v1.UpgradeRolledBack, active: Blue, reason: ReasonImageReverted, sts: []StatefulSetIntent{{Blue, imgA, 3}}}},

		// Verifying.
		"verifying: running": {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobRunning)), t0,
			want{phase: v1.UpgradeVerifying, active: Blue}},
		"verifying: passed: step 1": {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobSucceeded)), t0,
			want{phase: v1.UpgradePromoting, step: 1, active: Blue, labels: []LabelIntent{on(green0)}, sts: upgradeSts}},
		"verifying: passed, pause asked: paused": {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobSucceeded), func(o *Observed) {
			o.Spec.Upgrade.PauseBeforePromotion = true
		}), t0, want{phase: v1.UpgradePaused, active: Blue}},
		"verifying: failed: rolling back, green scaled down": {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobFailed)), t0,
			want{phase: v1.UpgradeRollingBack, active: Blue, failed: imgB, reason: ReasonVerifyFailed, degraded: v1.ReasonUpgradeRolledBack,
				sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},

		// Paused.
		"paused: waits for the annotation": {with(at(v1.UpgradePaused, 3, 0), func(o *Observed) { o.Spec.Upgrade.PauseBeforePromotion = true }), t0.Add(time.Hour),
			want{phase: v1.UpgradePaused, active: Blue}},
		"paused: promote annotation of another upgrade: still waits": {with(at(v1.UpgradePaused, 3, 0), annotate(v1.AnnotationPromote, "true"),
			func(o *Observed) { o.Spec.Upgrade.PauseBeforePromotion = true }), t0, want{phase: v1.UpgradePaused, active: Blue}},
		"paused: promote annotation with the id: step 1": {with(at(v1.UpgradePaused, 3, 0), annotate(v1.AnnotationPromote, id),
			func(o *Observed) { o.Spec.Upgrade.PauseBeforePromotion = true }), t0,
			want{phase: v1.UpgradePromoting, step: 1, active: Blue, labels: []LabelIntent{on(green0)}}},
		"paused: pauseBeforePromotion set back to false: step 1": {at(v1.UpgradePaused, 3, 0), t0,
			want{phase: v1.UpgradePromoting, step: 1, active: Blue, labels: []LabelIntent{on(green0)}}},

		// Promoting.
		"promoting: green-0 labelled, not yet in the EndpointSlices: blue-0 keeps serving": {with(at(v1.UpgradePromoting, 3, 1),
			label(blue0, true), ends(3, 0)), t10, want{phase: v1.UpgradePromoting, step: 1, active: Blue}},
		"promoting: green-0 ready in the EndpointSlices: blue-0 stops serving": {with(at(v1.UpgradePromoting, 3, 1),
			label(blue0, true), ends(3, 1)), t10, want{phase: v1.UpgradePromoting, step: 1, active: Blue, labels: []LabelIntent{off(blue0)}}},
		"promoting: before the interval: waits": {at(v1.UpgradePromoting, 3, 1), t0.Add(5 * time.Second),
			promoting(1)},
		"promoting: check passes: step 2": {with(at(v1.UpgradePromoting, 3, 1), metrics(150, 1)), t10,
			want{phase: v1.UpgradePromoting, step: 2, active: Blue, labels: []LabelIntent{on(green1)}, sts: upgradeSts}},
		"promoting: too little traffic: waits, no failure": {with(at(v1.UpgradePromoting, 3, 1), metrics(110, 1)), t10,
			promoting(1)},
		"promoting: error rate above the limit: a failed check": {with(at(v1.UpgradePromoting, 3, 1), metrics(150, 11)), t10,
			promoting(1)},
		"promoting: metrics missing: a failed check":    {with(at(v1.UpgradePromoting, 3, 1), noMetrics), t10, promoting(1)},
		"promoting: counters went back: a failed check": {with(at(v1.UpgradePromoting, 3, 1), metrics(40, 0)), t10, promoting(1)},
		"promoting: failure threshold reached: rolling back, blue-0 serves again": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(150, 11), failedChecks(1)), t10,
			want{phase: v1.UpgradeRollingBack, step: 1, active: Blue, failed: imgB, reason: ReasonAnalysisFailed,
				degraded: v1.ReasonUpgradeRolledBack, labels: []LabelIntent{on(blue0)}}},
		"promoting: a green pod stops being ready: the blue pod it covered serves again": {with(at(v1.UpgradePromoting, 3, 2), unready(green1), ends(1, 1)), t10,
			want{phase: v1.UpgradePromoting, step: 2, active: Blue, labels: []LabelIntent{on(blue1)}}},
		"promoting: last step passes: all traffic on green": {with(at(v1.UpgradePromoting, 3, 3), metrics(150, 1)), t10,
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, sts: upgradeSts}},

		// Scaling down.
		"scaling down: before the delay blue stays up": {at(v1.UpgradeScalingDown, 3, 0), t0.Add(5 * time.Second),
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, sts: upgradeSts}},
		"scaling down: after the delay blue goes to zero": {at(v1.UpgradeScalingDown, 3, 0), t10,
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"scaling down: a green pod not ready: blue serves again and stays up": {with(at(v1.UpgradeScalingDown, 3, 0), unready(green0), ends(0, 2)), t10,
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, labels: []LabelIntent{on(blue2)}, sts: upgradeSts}},
		"scaling down: blue gone: rollback window": {with(at(v1.UpgradeRollbackWindow, 3, 0), status(func(u *v1.UpgradeStatus) {
			u.Phase = v1.UpgradeScalingDown
		})), t10, want{phase: v1.UpgradeRollbackWindow, step: 3, active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},

		"scaling down: a third image: the promotion stands": {with(at(v1.UpgradeScalingDown, 3, 0), image(imgC)), t0.Add(5 * time.Second),
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, sts: upgradeSts}},

		// Rollback window.
		"rollback window: kept": {at(v1.UpgradeRollbackWindow, 3, 0), t0.Add(59 * time.Second),
			want{phase: v1.UpgradeRollbackWindow, step: 3, active: Green}},
		"rollback window: ends: contract migrations": {at(v1.UpgradeRollbackWindow, 3, 0), t0.Add(time.Minute),
			want{phase: v1.UpgradeContracting, step: 3, active: Green, jobs: []JobKind{JobContract}}},
		"rollback window: a third image accepts this one: contract now": {with(at(v1.UpgradeRollbackWindow, 3, 0), image(imgC)), t10,
			want{phase: v1.UpgradeContracting, step: 3, active: Green, jobs: []JobKind{JobContract}}},
		"rollback window: rollback annotation: blue back up, green keeps serving meanwhile": {with(at(v1.UpgradeRollbackWindow, 3, 0),
			annotate(v1.AnnotationRollback, id)), t10,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				sts: upgradeSts}},
		"rollback window: image set back: rolling back, not recorded as failed": {with(at(v1.UpgradeRollbackWindow, 3, 0), image(imgA)), t10,
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, reason: ReasonImageReverted, sts: upgradeSts}},

		// Contracting.
		"contracting: running": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobRunning)), t10,
			want{phase: v1.UpgradeContracting, step: 3, active: Green}},
		"contracting: rollback annotation is too late": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobRunning),
			annotate(v1.AnnotationRollback, id)), t10, want{phase: v1.UpgradeContracting, step: 3, active: Green}},
		"contracting: done: completed": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobSucceeded)), t10,
			want{phase: v1.UpgradeCompleted, step: 3, active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"contracting: failed: green serves, retried after a backoff": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobFailed)), t10,
			want{phase: v1.UpgradeContracting, step: 3, active: Green, reason: v1.ReasonMigrationFailed, degraded: v1.ReasonMigrationFailed}},
		"contracting: failed, before the retry: waits": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobFailed), retryAt(t0.Add(time.Minute))),
			t0.Add(59 * time.Second),
			want{phase: v1.UpgradeContracting, step: 3, active: Green, reason: v1.ReasonMigrationFailed, degraded: v1.ReasonMigrationFailed}},
		"contracting: failed, retry due: a Job of a new name": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobFailed), retryAt(t0.Add(time.Minute))),
			t0.Add(time.Minute),
			want{phase: v1.UpgradeContracting, step: 3, active: Green, reason: v1.ReasonMigrationFailed, degraded: v1.ReasonMigrationFailed,
				jobs: []JobKind{JobContract}}},
		"contracting: a retry succeeded: completed": {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobSucceeded), status(func(u *v1.UpgradeStatus) {
			u.ContractRetries, u.Reason = 2, v1.ReasonMigrationFailed
		})), t10, want{phase: v1.UpgradeCompleted, step: 3, active: Green}},

		// Rolling back.
		"rolling back: blue not all ready in the EndpointSlices: green keeps serving": {with(rolling(), ends(2, 2)), t10,
			want{phase: v1.UpgradeRollingBack, step: 2, active: Blue, failed: imgB, reason: ReasonAnalysisFailed, degraded: v1.ReasonUpgradeRolledBack,
				sts: upgradeSts}},
		"rolling back: blue serves: green unlabelled": {rolling(), t10,
			want{phase: v1.UpgradeRollingBack, step: 2, active: Blue, failed: imgB, reason: ReasonAnalysisFailed, degraded: v1.ReasonUpgradeRolledBack,
				labels: []LabelIntent{off(green0), off(green1)}, sts: upgradeSts}},
		"rolling back: green unlabelled: scaled to zero": {with(rolling(), label(green0, false), label(green1, false), ends(3, 0)), t10,
			want{phase: v1.UpgradeRollingBack, step: 2, active: Blue, failed: imgB, reason: ReasonAnalysisFailed, degraded: v1.ReasonUpgradeRolledBack,
				sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},
		"rolling back: green gone: rolled back": {with(rolling(), noGreenPods, ends(3, 0), func(o *Observed) {
			o.StatefulSets[Green] = StatefulSet{Image: imgB, Replicas: 0}
		}), t10, want{phase: v1.UpgradeRolledBack, active: Blue, failed: imgB, reason: ReasonAnalysisFailed, degraded: v1.ReasonUpgradeRolledBack,
			sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},

		// After a rollback.
		"rolled back: the failed image stays refused": {with(rolling(), noGreenPods, ends(3, 0), status(func(u *v1.UpgradeStatus) {
			u.Phase = v1.UpgradeRolledBack
		}), func(o *Observed) { o.StatefulSets[Green] = StatefulSet{Image: imgB} }), t10,
			want{phase: v1.UpgradeRolledBack, step: 2, active: Blue, failed: imgB, reason: ReasonAnalysisFailed, degraded: v1.ReasonUpgradeRolledBack}},
		"rolled back: spec set back to the old image: no longer degraded": {with(rolling(), noGreenPods, ends(3, 0), image(imgA),
			status(func(u *v1.UpgradeStatus) { u.Phase = v1.UpgradeRolledBack }), func(o *Observed) { o.StatefulSets[Green] = StatefulSet{Image: imgB} }), t10,
			want{phase: v1.UpgradeRolledBack, step: 2, active: Blue, reason: ReasonAnalysisFailed}},
		"rolled back: a new image: a new upgrade": {with(rolling(), noGreenPods, ends(3, 0), image(imgC),
			status(func(u *v1.UpgradeStatus) { u.Phase = v1.UpgradeRolledBack }), func(o *Observed) { o.StatefulSets[Green] = StatefulSet{Image: imgB} }), t10,
			want{phase: v1.UpgradePlanning, active: Blue, jobs: []JobKind{JobPlan}}},

		"completed: a new image: green to blue this time": {with(at(v1.UpgradeContracting, 3, 0), image(imgC), func(o *Observed) {
			o.Status.Upgrade.Phase = v1.UpgradeCompleted
		}), t10, want{phase: v1.UpgradePlanning, active: Green, jobs: []JobKind{JobPlan}, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"refused: a new image: a new upgrade": {with(at(v1.UpgradePlanning, 3, 0), image(imgC), func(o *Observed) {
			o.Status.Upgrade.Phase, o.Status.FailedImage = v1.UpgradeRefused, imgB
		}), t10, want{phase: v1.UpgradePlanning, active: Blue, jobs: []JobKind{JobPlan}}},

		// Rollbacks the user asks for, before the point of no return.
		"deploying: image set back: rolling back, not recorded as failed": {with(at(v1.UpgradeDeploying, 3, 0), image(imgA)), t10,
			want{phase: v1.UpgradeRollingBack, active: Blue, reason: ReasonImageReverted, sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},
		"verifying: a third image: rolling back first": {with(at(v1.UpgradeVerifying, 3, 0), image(imgC)), t10,
			want{phase: v1.UpgradeRollingBack, active: Blue, reason: ReasonImageChanged, sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 0}}}},
		"migrating: a third image: rolled back at once and a new upgrade planned": {with(at(v1.UpgradeMigrating, 3, 0), image(imgC)), t10,
			want{phase: v1.UpgradePlanning, active: Blue, jobs: []JobKind{JobPlan}}},
		"promoting: rollback annotation: rolling back": {with(at(v1.UpgradePromoting, 3, 2), annotate(v1.AnnotationRollback, id)), t10,
			want{phase: v1.UpgradeRollingBack, step: 2, active: Blue, failed: imgB, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack,
				labels: []LabelIntent{on(blue0), on(blue1)}}},
		// The analysis judges each public endpoint on its own (review finding 2).
		"promoting: half the token requests fail, hidden among introspections: a failed check": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(120, 11), endpoint("introspect", 1980, 0)), t10, promoting(1)},
		"promoting: the admin API, discovery and jwks do not make up the traffic": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(110, 1), endpoint("admin_events", 5000, 0), endpoint("discovery", 5000, 0), endpoint("jwks", 5000, 0)), t10, promoting(1)},
		"promoting: the admin API's errors are not the new version's": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(150, 1), endpoint("admin_clients", 10, 10)), t10,
			want{phase: v1.UpgradePromoting, step: 2, active: Blue, labels: []LabelIntent{on(green1)}}},
		"promoting: a rarely called endpoint fails whatever comes: a failed check": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(200, 1), endpoint("revoke", 5, 3)), t10, promoting(1)},
		"promoting: a rarely called endpoint without errors: step 2": {with(at(v1.UpgradePromoting, 3, 1),
			metrics(200, 1), endpoint("revoke", 5, 0)), t10,
			want{phase: v1.UpgradePromoting, step: 2, active: Blue, labels: []LabelIntent{on(green1)}}},

		// Status lost or wrong (review finding 4): the facts say which color serves.
		"status lost after an upgrade to green: green stays, nothing scaled": {lostStatus(Status{}), t0,
			want{active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"status says blue while only green serves (a restored backup): green stays": {lostStatus(Status{ActiveColor: Blue}), t0,
			want{active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},
		"rolled back, the cache behind (blue's pods not yet labelled, green not yet scaled down): blue stays": {with(
			lostStatus(Status{ActiveColor: Blue}), func(o *Observed) {
				o.Spec.Image = imgA
				o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 3}
				o.Pods = append(pods(Blue, imgA, 3, true, none), pods(Green, imgB, 3, true, all)...)
			}), t0, want{active: Blue, labels: []LabelIntent{on(blue0), on(blue1), on(blue2)},
			sts: []StatefulSetIntent{{Blue, imgA, 3}, {Green, imgB, 3}}}},
		"status lost mid-promotion: the color serving more is active, the other is not scaled while labelled": {with(at(v1.UpgradePromoting, 3, 2),
			func(o *Observed) { o.Status = Status{} }), t0,
			want{active: Green, labels: []LabelIntent{on(green2)}, sts: upgradeSts}},

		"scaling down: a blue pod stuck Terminating (its node lost) is not waited for": {with(at(v1.UpgradeScalingDown, 3, 0), func(o *Observed) {
			o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 0}
			o.Pods = append(pods(Green, imgB, 3, true, all), Pod{Name: blue2, Color: Blue, Ordinal: 2, Image: imgA, Terminating: true})
			o.Endpoints = map[Color]int32{Green: 3}
		}), t10, want{phase: v1.UpgradeRollbackWindow, step: 3, active: Green, sts: []StatefulSetIntent{{Blue, imgA, 0}, {Green, imgB, 3}}}},

		// A rollback that cannot finish (review finding 5).
		"rolling back: a blue pod never gets ready: at the deadline, Degraded says so, traffic stays": {stuckRollback(), t0.Add(3 * time.Minute),
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, reason: ReasonRollbackAsked, degraded: ReasonRollbackStuck, sts: upgradeSts}},
		"rolling back, stuck: the promote annotation keeps green": {with(stuckRollback(), annotate(v1.AnnotationPromote, id)), t0.Add(3 * time.Minute),
			want{phase: v1.UpgradeScalingDown, step: 3, active: Green, reason: ReasonRollbackAbandoned, sts: upgradeSts,
				labels: []LabelIntent{off(blue0), off(blue1), off(blue2)}}},
		"rolling back, before the deadline: the promote annotation waits": {with(stuckRollback(), annotate(v1.AnnotationPromote, id)), t0.Add(time.Minute),
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, reason: ReasonRollbackAsked, degraded: v1.ReasonUpgradeRolledBack, sts: upgradeSts}},
		"rolling back, stuck: promote with the rollback annotation still there: ignored": {with(stuckRollback(), annotate(v1.AnnotationPromote, id),
			annotate(v1.AnnotationRollback, id)), t0.Add(3 * time.Minute),
			want{phase: v1.UpgradeRollingBack, step: 3, active: Green, reason: ReasonRollbackAsked, degraded: ReasonRollbackStuck, sts: upgradeSts}},

		// failedImage and the settings that caused the failure (review finding 14).
		"failed image, spec.upgrade changed since: tried again": {with(settled(3, imgB), func(o *Observed) {
			o.Status.FailedImage, o.Status.FailedSettings = imgB, "0123456789abcdef"
		}), t0, want{phase: v1.UpgradePlanning, jobs: []JobKind{JobPlan}, active: Blue}},
		"failed image, same settings: not retried": {with(settled(3, imgB), func(o *Observed) {
			o.Status.FailedImage, o.Status.FailedSettings = imgB, settingsDigest(settingsFixture())
		}), t0, want{active: Blue, failed: imgB}},

		"promoting: rollback annotation of another upgrade: ignored": {with(at(v1.UpgradePromoting, 3, 2), annotate(v1.AnnotationRollback, "true")),
			t0.Add(5 * time.Second), promoting(2)},
	}
}

func TestTransitions(t *testing.T) {
	for name, tc := range allTransitions() {
		t.Run(name, func(t *testing.T) { check(t, tc.in, Next(tc.in, tc.now), tc.want) })
	}
}

func check(t *testing.T, in Observed, d Decision, w want) {
	t.Helper()
	u := d.Status.Upgrade
	var phase v1.UpgradePhase
	var step int32
	var reason string
	if u != nil {
		phase, step, reason = u.Phase, u.Step, u.Reason
	}
	if phase != w.phase || step != w.step {
		t.Fatalf("phase %q step %d, want %q step %d; status %+v; events %v", phase, step, w.phase, w.step, u, d.Events)
	}
	if reason != w.reason {
		t.Errorf("reason %q, want %q", reason, w.reason)
	}
	if d.Status.ActiveColor != w.active {
		t.Errorf("activeColor %q, want %q", d.Status.ActiveColor, w.active)
	}
	if d.Status.FailedImage != w.failed {
		t.Errorf("failedImage %q, want %q", d.Status.FailedImage, w.failed)
	}
	jobs := make([]JobKind, 0, len(d.Jobs))
	for _, j := range d.Jobs {
		jobs = append(jobs, j.Kind)
		img := u.ToImage // every Job runs the new image, the cleanup after a rollback too
		if j.Image != img || j.Name != UpgradeJobName(in.Name, u, j.Kind) {
			t.Errorf("job %+v: want image %s, name %s", j, img, UpgradeJobName(in.Name, u, j.Kind))
		}
	}
	if !slices.Equal(jobs, w.jobs) {
		t.Errorf("jobs %v, want %v", jobs, w.jobs)
	}
	var replays []ReplayIntent
	if w.replay != "" {
		replays = []ReplayIntent{{Name: ReplayName(in.Name, u.ID, w.replay), Direction: w.replay}}
	}
	if !slices.Equal(d.Replays, replays) {
		t.Errorf("replays %v, want %v", d.Replays, replays)
	}
	if db := d.Status.Database; (db == nil && w.database != "") || (db != nil && db.SecretName != w.database) {
		t.Errorf("status.database %+v, want %q", db, w.database)
	}
	if !slices.Equal(d.Labels, w.labels) {
		t.Errorf("labels %v, want %v", d.Labels, w.labels)
	}
	if w.sts != nil && !slices.Equal(d.StatefulSets, w.sts) {
		t.Errorf("statefulSets %v, want %v", d.StatefulSets, w.sts)
	}
	deg := meta.FindStatusCondition(d.Conditions, v1.ConditionDegraded)
	switch {
	case w.degraded == "" && deg != nil && deg.Status == metav1.ConditionTrue:
		t.Errorf("Degraded %s %s, want not True", deg.Reason, deg.Message)
	case w.degraded != "" && (deg == nil || deg.Status != metav1.ConditionTrue || deg.Reason != w.degraded):
		t.Errorf("Degraded %+v, want True with reason %s", deg, w.degraded)
	}
	if u != nil {
		prog := meta.FindStatusCondition(d.Conditions, v1.ConditionProgressing)
		if prog == nil || prog.Reason != v1.ProgressingReason(u.Phase) || (prog.Status == metav1.ConditionTrue) == terminal(u.Phase) {
			t.Errorf("Progressing %+v in phase %s", prog, u.Phase)
		}
	}
	if d.WriteStatus != !equality.Semantic.DeepEqual(d.Status, in.Status) {
		t.Errorf("WriteStatus %v, but the status changed: %v", d.WriteStatus, !d.WriteStatus)
	}
}

// An operator restarted at any point: the same facts give the same decision; and
// once the decision's intent is written but none of its actions is visible yet, the
// next pass asks for the same actions and moves no further.
func TestRestartResumes(t *testing.T) {
	for name, tc := range allTransitions() {
		t.Run(name, func(t *testing.T) {
			d := Next(tc.in, tc.now)
			if again := Next(tc.in, tc.now); !reflect.DeepEqual(d, again) {
				t.Fatalf("the same observation gave two decisions:\n%+v\n%+v", d, again)
			}
			written := with(tc.in, func(o *Observed) {
				o.Status = d.Status
				if u := tc.in.Status.Upgrade; u == nil || d.Status.Upgrade == nil || u.ID != d.Status.Upgrade.ID {
					o.Jobs, o.Plan = map[JobKind]Job{}, nil // the controller reads the Jobs of the new id: none yet
				} else if u.ContractRetries != d.Status.Upgrade.ContractRetries {
					delete(o.Jobs, JobContract) // nor the contract Job of a new attempt
				} else if c, dc := u.Copy, d.Status.Upgrade.Copy; c != nil && dc != nil && c.CutoverRetries != dc.CutoverRetries {
					delete(o.Jobs, JobCutover) // nor the cutover (cut back) Job of a new attempt
					delete(o.Jobs, JobCutback)
				}
			})
			resumed := Next(written, tc.now)
			if resumed.WriteStatus || !equality.Semantic.DeepEqual(resumed.Status, d.Status) {
				t.Errorf("intent written, actions not applied: the status moved on:\n%+v\n%+v", d.Status.Upgrade, resumed.Status.Upgrade)
			}
			if len(resumed.Events) != 0 {
				t.Errorf("events again: %v", resumed.Events)
			}
			if !reflect.DeepEqual(resumed.Jobs, d.Jobs) || !reflect.DeepEqual(resumed.Labels, d.Labels) ||
				!reflect.DeepEqual(resumed.StatefulSets, d.StatefulSets) {
				t.Errorf("actions differ after a restart:\n%+v %+v %+v\n%+v %+v %+v", d.Jobs, d.Labels, d.StatefulSets,
					resumed.Jobs, resumed.Labels, resumed.StatefulSets)
			}
		})
	}
}

// A failure at every phase before the point of no return rolls back (or, before
// anything changed, refuses); after it, the upgrade fails forward with green serving.
func TestFailureAtEveryPhase(t *testing.T) {
	tests := map[v1.UpgradePhase]struct {
		failure Observed
		want    v1.UpgradePhase
	}{ // Contracting: green serves imgB and the contract is retried; no failedImage.
		v1.UpgradePlanning:       {with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobFailed)), v1.UpgradeRefused},
		v1.UpgradeMigrating:      {with(at(v1.UpgradeMigrating, 3, 0), job(JobExpand, JobFailed)), v1.UpgradeRolledBack},
		v1.UpgradeDeploying:      {with(at(v1.UpgradeDeploying, 3, 0), annotate(v1.AnnotationRollback, id)), v1.UpgradeRollingBack},
		v1.UpgradeVerifying:      {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobFailed)), v1.UpgradeRollingBack},
		v1.UpgradePaused:         {with(at(v1.UpgradePaused, 3, 0), annotate(v1.AnnotationRollback, id)), v1.UpgradeRollingBack},
		v1.UpgradePromoting:      {with(at(v1.UpgradePromoting, 3, 1), metrics(150, 60), func(o *Observed) { o.Status.Upgrade.Analysis.FailedChecks = 1 }), v1.UpgradeRollingBack},
		v1.UpgradeScalingDown:    {with(at(v1.UpgradeScalingDown, 3, 0), annotate(v1.AnnotationRollback, id)), v1.UpgradeRollingBack},
		v1.UpgradeRollbackWindow: {with(at(v1.UpgradeRollbackWindow, 3, 0), annotate(v1.AnnotationRollback, id)), v1.UpgradeRollingBack},
		v1.UpgradeContracting:    {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobFailed)), v1.UpgradeContracting},
	}
	for p, tc := range tests {
		t.Run(string(p), func(t *testing.T) {
			d := Next(tc.failure, t0.Add(10*time.Second))
			if got := d.Status.Upgrade.Phase; got != tc.want {
				t.Fatalf("phase %s, want %s (%s)", got, tc.want, d.Status.Upgrade.Message)
			}
			if d.Status.FailedImage != imgB && tc.want != v1.UpgradeContracting {
				t.Errorf("failedImage %q, want %q: the image would be retried in a loop", d.Status.FailedImage, imgB)
			}
			if !slices.ContainsFunc(d.Events, func(e Event) bool { return e.Type == "Warning" }) {
				t.Errorf("no Warning event: %v", d.Events)
			}
			deg := meta.FindStatusCondition(d.Conditions, v1.ConditionDegraded)
			if deg == nil || deg.Status != metav1.ConditionTrue || deg.Message == "" {
				t.Errorf("Degraded %+v, want True with a message", deg)
			}
		})
	}
}

// progressDeadline counts from the phase's (or the step's) start; a pause and the
// phases after promotion have no deadline.
func TestProgressDeadline(t *testing.T) {
	deadline := 2 * time.Minute
	phases := map[v1.UpgradePhase]bool{
		v1.UpgradePlanning: true, v1.UpgradeMigrating: true, v1.UpgradeDeploying: true, v1.UpgradeVerifying: true,
		v1.UpgradePromoting: true, v1.UpgradePaused: false, v1.UpgradeScalingDown: false, v1.UpgradeRollbackWindow: false,
		v1.UpgradeContracting: false,
	}
	for p, bounded := range phases {
		t.Run(string(p), func(t *testing.T) {
			in := with(at(p, 3, 1), func(o *Observed) {
				o.Spec.Upgrade.PauseBeforePromotion = true
				o.Spec.Upgrade.RollbackWindow = "1000h"
				o.Spec.Upgrade.ScaleDownDelay = "1000h"
				o.Metrics = nil // a promotion step that cannot be analysed makes no progress
				o.Spec.Upgrade.Analysis.FailureThreshold = 100
				for k := range o.Jobs {
					if (p == v1.UpgradePlanning && k == JobPlan) || (p == v1.UpgradeMigrating && k == JobExpand) ||
						(p == v1.UpgradeVerifying && k == JobVerify) {
						o.Jobs[k] = Job{State: JobRunning}
					}
				}
				if p == v1.UpgradeContracting {
					o.Jobs[JobContract] = Job{State: JobRunning}
				}
			})
			if d := Next(in, t0.Add(deadline)); d.Status.Upgrade.Phase != p {
				t.Fatalf("at the deadline: phase %s, want still %s", d.Status.Upgrade.Phase, p)
			} else if bounded && d.RequeueAfter <= 0 {
				t.Errorf("no requeue for the deadline")
			}
			d := Next(in, t0.Add(deadline+time.Second))
			rolled := d.Status.Upgrade.Phase == v1.UpgradeRollingBack || d.Status.Upgrade.Phase == v1.UpgradeRolledBack
			if rolled != bounded {
				t.Fatalf("past the deadline: phase %s (%s), want rolled back: %v", d.Status.Upgrade.Phase, d.Status.Upgrade.Message, bounded)
			}
			if bounded && d.Status.Upgrade.Reason != ReasonDeadline {
				t.Errorf("reason %q, want %q", d.Status.Upgrade.Reason, ReasonDeadline)
			}
		})
	}
}

// A step waits for traffic: the analysis counts from the step's baseline, and figures
// land in status for kubectl describe.
func TestAnalysisFigures(t *testing.T) {
	in := with(at(v1.UpgradePromoting, 3, 1), metrics(150, 1))
	d := Next(with(in, metrics(110, 1)), t0.Add(10*time.Second))
	a := d.Status.Upgrade.Analysis
	if a.Requests != 10 || a.Errors != 0 || a.Rate != "0.00%" || a.FailedChecks != 0 || !a.LastCheck.Time.Equal(t0.Add(10*time.Second)) {
		t.Errorf("too little traffic: %+v", a)
	}
	d = Next(with(in, metrics(150, 11)), t0.Add(10*time.Second))
	a = d.Status.Upgrade.Analysis
	if a.Requests != 50 || a.Errors != 10 || a.Rate != "20.00%" || a.FailedChecks != 1 {
		t.Errorf("a failed check: %+v", a)
	}
	if !slices.ContainsFunc(d.Events, func(e Event) bool { return e.Reason == ReasonCheckFailed && strings.Contains(e.Message, "20.00%") }) {
		t.Errorf("no AnalysisCheckFailed event with the rate: %v", d.Events)
	}
	d = Next(in, t0.Add(10*time.Second))
	if a := d.Status.Upgrade.Analysis; len(a.Baseline) != 1 || a.Baseline[0] != (v1.UpgradeEndpointCounts{Endpoint: "token", Requests: 150, Errors: 1}) || a.Requests != 0 {
		t.Errorf("step 2 must count from the counters at its start: %+v", a)
	}
	// A quiet server that allows steps without traffic: still needs readable metrics.
	quiet := with(at(v1.UpgradePromoting, 3, 1), func(o *Observed) { o.Spec.Upgrade.Analysis.MinRequestsPerStep = ptr.To[int32](0) })
	if d := Next(quiet, t0.Add(10*time.Second)); d.Status.Upgrade.Step != 2 {
		t.Errorf("minRequestsPerStep 0, no traffic: step %d, want 2", d.Status.Upgrade.Step)
	}
	if d := Next(with(quiet, noMetrics), t0.Add(10*time.Second)); d.Status.Upgrade.Step != 1 || d.Status.Upgrade.Analysis.FailedChecks != 1 {
		t.Errorf("minRequestsPerStep 0, no metrics: %+v, want a failed check", d.Status.Upgrade.Analysis)
	}
}

func TestWindowCondition(t *testing.T) {
	in := with(settled(3, imgB), func(o *Observed) {
		o.Spec.Upgrade.Window = &v1.UpgradeWindow{Start: "02:00", Duration: "2h"}
	})
	d := Next(in, t0)
	c := meta.FindStatusCondition(d.Conditions, v1.ConditionProgressing)
	if c == nil || c.Reason != v1.ReasonUpgradeWaitingForWindow || !strings.Contains(c.Message, "2026-12-01T02:00:00Z") {
		t.Fatalf("Progressing %+v, want waiting with when it opens", c)
	}
	if d.RequeueAfter != 14*time.Hour {
		t.Errorf("requeue %s, want 14h: when the window opens", d.RequeueAfter)
	}
	in.Spec.Upgrade.Window.TimeZone = "Mars/Olympus"
	c = meta.FindStatusCondition(Next(in, t0).Conditions, v1.ConditionProgressing)
	if c == nil || !strings.Contains(c.Message, "spec.upgrade.window.timeZone") {
		t.Errorf("Progressing %+v, want the unknown time zone named", c)
	}
}

func TestActive(t *testing.T) {
	for p, want := range map[v1.UpgradePhase]bool{
		v1.UpgradePlanning: true, v1.UpgradePromoting: true, v1.UpgradeRollbackWindow: true, v1.UpgradeRollingBack: true,
		v1.UpgradeCompleted: false, v1.UpgradeRolledBack: false, v1.UpgradeRefused: false, v1.UpgradeFailed: false,
	} {
		if got := Active(&v1.TokenServerStatus{Upgrade: &v1.UpgradeStatus{Phase: p}}); got != want {
			t.Errorf("Active in %s = %v, want %v", p, got, want)
		}
	}
	if Active(&v1.TokenServerStatus{}) {
		t.Error("Active without an upgrade")
	}
}

func TestJobName(t *testing.T) {
	if got := JobName("auth", id, JobPlan); got != "auth-0badc0de-plan" {
		t.Errorf("JobName = %q", got)
	}
	long := JobName(strings.Repeat("a", 60)+"-b", id, JobContract)
	if len(long) > 63 || !strings.HasSuffix(long, "-0badc0de-contract") {
		t.Errorf("JobName of a long server = %q (%d)", long, len(long))
	}
}

func TestCurrentImage(t *testing.T) {
	tests := map[string]struct {
		in   Observed
		want string
		ok   bool
	}{
		"blue serves":                                 {settled(3, imgA), imgA, true},
		"mid-promotion: two images serve":             {at(v1.UpgradePromoting, 3, 2), "", false},
		"promoted, blue still up but unserved":        {at(v1.UpgradeScalingDown, 3, 0), imgB, true},
		"step 1, green-0 not ready: only blue serves": {with(at(v1.UpgradePromoting, 3, 1), func(o *Observed) { o.Pods[3].Ready = false }), imgA, true},
		"nothing serves":                              {with(settled(3, imgA), func(o *Observed) { o.Pods = nil }), "", false},
	}
	for name, tc := range tests {
		if got, ok := CurrentImage(tc.in.Pods, nil); got != tc.want || ok != tc.ok {
			t.Errorf("%s: CurrentImage = %q, %v; want %q, %v", name, got, ok, tc.want, tc.ok)
		}
	}
	// The pass that moves the serving label reports the image that serves after it.
	promoted := at(v1.UpgradeScalingDown, 3, 0)
	back := make([]LabelIntent, 0, len(promoted.Pods))
	for _, p := range promoted.Pods {
		back = append(back, LabelIntent{Pod: p.Name, Serving: p.Color == Blue})
	}
	if got, ok := CurrentImage(promoted.Pods, back); got != imgA || !ok {
		t.Errorf("labels moved back to blue: CurrentImage = %q, %v; want %q", got, ok, imgA)
	}
	if got, ok := CurrentImage(promoted.Pods, back[:1]); ok {
		t.Errorf("label moved to one blue pod while green serves: CurrentImage = %q, want two images", got)
	}
}

// Status holds only what the CRD accepts, whatever the new image's plan reports.
func TestPlanFitsStatus(t *testing.T) {
	in := with(at(v1.UpgradePlanning, 3, 0), job(JobPlan, JobSucceeded), func(o *Observed) {
		o.Plan = &PlanResult{Mode: "Magic", Reason: strings.Repeat("x", 5000)}
	})
	p := Next(in, t0).Status.Upgrade.Plan
	if p.Mode != ModeRefused || len(p.Reason) > 1024 || !strings.Contains(p.Reason, `"Magic"`) {
		t.Errorf("plan %s, %d characters of reason: want Refused, at most 1024, naming the mode", p.Mode, len(p.Reason))
	}
}

// A failed image tried again at once (spec.upgrade changed in the same instant,
// on a coarse clock) gets a new id: the old upgrade's Jobs must not decide it.
func TestRetryGetsANewID(t *testing.T) {
	in := with(at(v1.UpgradePlanning, 3, 0), func(o *Observed) {
		u := o.Status.Upgrade
		u.ID, u.Phase = newID(imgA, imgB, t0, ""), v1.UpgradeRolledBack
		o.Status.FailedImage, o.Status.FailedSettings = imgB, "0123456789abcdef"
	})
	if u := Next(in, t0).Status.Upgrade; u.Phase != v1.UpgradePlanning || u.ID == in.Status.Upgrade.ID {
		t.Errorf("retry: %s with id %s, want Planning with an id other than %s", u.Phase, u.ID, in.Status.Upgrade.ID)
	}
}

func TestColorsOfANewUpgrade(t *testing.T) {
	in := with(at(v1.UpgradeContracting, 3, 0), image(imgC), func(o *Observed) { o.Status.Upgrade.Phase = v1.UpgradeCompleted })
	u := Next(in, t0).Status.Upgrade
	if u.FromColor != "green" || u.ToColor != "blue" || u.FromImage != imgB || u.ToImage != imgC || u.ID == id {
		t.Errorf("after a completed upgrade to green: %+v, want green (imgB) to blue (imgC) with a new id", u)
	}
}

// Timers: Next says when to come back, since nothing is watched for them.
func TestRequeue(t *testing.T) {
	tests := map[string]struct {
		in   Observed
		now  time.Time
		want time.Duration
	}{
		"promoting: the next check":                      {at(v1.UpgradePromoting, 3, 1), t0.Add(4 * time.Second), 6 * time.Second},
		"scaling down: the delay":                        {at(v1.UpgradeScalingDown, 3, 0), t0.Add(4 * time.Second), 6 * time.Second},
		"rollback window: its end":                       {at(v1.UpgradeRollbackWindow, 3, 0), t0.Add(40 * time.Second), 20 * time.Second},
		"deploying: the deadline":                        {at(v1.UpgradeDeploying, 3, 0), t0.Add(time.Minute), time.Minute},
		"paused: only the annotation":                    {with(at(v1.UpgradePaused, 3, 0), func(o *Observed) { o.Spec.Upgrade.PauseBeforePromotion = true }), t0, 0},
		"settled: nothing to wait for":                   {settled(3, imgA), t0, 0},
		"rolling back: its deadline, to report it stuck": {with(at(v1.UpgradeVerifying, 3, 0), job(JobVerify, JobFailed)), t0, 2*time.Minute + time.Second},
		"scaling down: past the delay, pods only":        {at(v1.UpgradeScalingDown, 3, 0), t0.Add(time.Hour), 0},
		"contracting: the retry":                         {with(at(v1.UpgradeContracting, 3, 0), job(JobContract, JobFailed)), t0, time.Minute},
	}
	for name, tc := range tests {
		if got := Next(tc.in, tc.now).RequeueAfter; got != tc.want {
			t.Errorf("%s: requeue %s, want %s", name, got, tc.want)
		}
	}
}

// HoldsRollouts: key rotation and config changes wait while both colors run and
// traffic moves, and never for good (review findings 5 and 9).
func TestHoldsRollouts(t *testing.T) {
	spec := settingsFixture() // progressDeadline 2m
	for name, tc := range map[string]struct {
		phase v1.UpgradePhase
		since time.Duration // how long the phase has lasted
		want  bool
	}{
		"planning: only the old color runs": {v1.UpgradePlanning, 0, false},
		"deploying":                         {v1.UpgradeDeploying, 0, true},
		"promoting":                         {v1.UpgradePromoting, time.Minute, true},
		"scaling down":                      {v1.UpgradeScalingDown, time.Minute, true},
		"paused: a person decides, maybe in a week": {v1.UpgradePaused, 0, false},
		"rollback window: only the new color runs":  {v1.UpgradeRollbackWindow, 0, false},
		"rolling back":                          {v1.UpgradeRollingBack, time.Minute, true},
		"rolling back, stuck past the deadline": {v1.UpgradeRollingBack, 3 * time.Minute, false},
		"completed":                             {v1.UpgradeCompleted, 0, false},
	} {
		s := &v1.TokenServerStatus{Upgrade: &v1.UpgradeStatus{Phase: tc.phase, PhaseSince: stamp(t0)}}
		if got := HoldsRollouts(spec, s, t0.Add(tc.since)); got != tc.want {
			t.Errorf("%s: HoldsRollouts = %v, want %v", name, got, tc.want)
		}
	}
	if HoldsRollouts(spec, &v1.TokenServerStatus{}, t0) {
		t.Error("held without an upgrade")
	}
}

// The analysis figures are per endpoint, and the failure names the endpoint.
func TestAnalysisPerEndpoint(t *testing.T) {
	in := with(at(v1.UpgradePromoting, 3, 1), metrics(120, 11), endpoint("introspect", 1980, 0), endpoint("admin_events", 900, 0))
	d := Next(in, t0.Add(10*time.Second))
	a := d.Status.Upgrade.Analysis
	if a.FailedChecks != 1 || a.Rate != "50.00%" || a.Requests != 2000 || a.Errors != 10 {
		t.Errorf("analysis %+v: want one failed check at 50.00%%, 2000 requests (admin left out), 10 errors", a)
	}
	want := []v1.UpgradeEndpointCounts{{Endpoint: "introspect", Requests: 1980}, {Endpoint: "token", Requests: 20, Errors: 10}}
	if !slices.Equal(a.Endpoints, want) {
		t.Errorf("endpoints %+v, want %+v", a.Endpoints, want)
	}
	if !slices.ContainsFunc(d.Events, func(e Event) bool {
		return e.Reason == ReasonCheckFailed && strings.Contains(e.Message, "endpoint token")
	}) {
		t.Errorf("no AnalysisCheckFailed event naming the token endpoint: %v", d.Events)
	}
	// The next step's baseline survives an operator restart: it is in status.
	d = Next(with(at(v1.UpgradePromoting, 3, 1), metrics(150, 1), endpoint("introspect", 70, 0), endpoint("admin_events", 9, 0)), t0.Add(10*time.Second))
	base := []v1.UpgradeEndpointCounts{{Endpoint: "introspect", Requests: 70}, {Endpoint: "token", Requests: 150, Errors: 1}}
	if got := d.Status.Upgrade.Analysis.Baseline; !slices.Equal(got, base) || !d.WriteStatus {
		t.Errorf("baseline of step 2 %+v, want %+v written to status", got, base)
	}
}
