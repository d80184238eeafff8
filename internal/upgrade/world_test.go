package upgrade

import (
	"fmt"
	"maps"
	"time"

	"k8s.io/utils/ptr"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Fixtures: three images, a clock, settings with short timers.
const (
	imgA = "ghcr.io/kubeoauth/tokenserver:v1"
	imgB = "ghcr.io/kubeoauth/tokenserver:v2"
	imgC = "ghcr.io/kubeoauth/tokenserver:v3"
	id   = "0badc0de"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func settingsFixture() v1.UpgradeSettings {
	return v1.UpgradeSettings{
		Verify: ptr.To(true), MaxErrorRate: "1%", DataMode: "Auto",
		Analysis:         v1.UpgradeAnalysis{Interval: "10s", MinRequestsPerStep: ptr.To[int32](20), FailureThreshold: 2},
		ProgressDeadline: "2m", ScaleDownDelay: "10s", RollbackWindow: "1m",
	}
}

func podName(c Color, i int) string { return fmt.Sprintf("auth-%s-%d", c, i) }

func pods(c Color, img string, n int, ready bool, serving func(i int) bool) []Pod {
	out := make([]Pod, 0, n)
	for i := range n {
		out = append(out, Pod{Name: podName(c, i), Color: c, Ordinal: i, Image: img, Ready: ready, Serving: serving(i)})
	}
	return out
}

func all(int) bool  { return true }
func none(int) bool { return false }

// settled is blue serving imgA with n ready pods, nothing upgrading, spec at image.
func settled(n int32, image string) Observed {
	return Observed{
		Name:         "auth",
		Spec:         Spec{Image: image, Replicas: n, Upgrade: settingsFixture()},
		Status:       Status{ActiveColor: Blue},
		StatefulSets: map[Color]StatefulSet{Blue: {Image: imgA, Replicas: n}},
		Pods:         pods(Blue, imgA, int(n), true, all),
		Endpoints:    map[Color]int32{Blue: n},
		Jobs:         map[JobKind]Job{},
	}
}

// at is the world just as phase p began at t0 (for Promoting: step k swapped, the
// baseline taken), upgrading blue imgA to green imgB with n replicas: every fact the
// earlier phases needed is there, none the phase itself waits for.
//
//nolint:unparam // the table reads as "at Promoting, 3 replicas, step k": the size stays explicit
func at(p v1.UpgradePhase, n int32, k int32) Observed {
	o := settled(n, imgB)
	u := &v1.UpgradeStatus{ID: id, Phase: p, PhaseSince: stamp(t0), FromImage: imgA, ToImage: imgB,
		FromColor: "blue", ToColor: "green", Steps: n, Progress: fmt.Sprintf("0/%d", n), StartedAt: stamp(t0.Add(-time.Hour))}
	o.Status.Upgrade = u
	done := func(kinds ...JobKind) {
		for _, k := range kinds {
			o.Jobs[k] = Job{State: JobSucceeded}
		}
	}
	green := func(ready bool, serving func(int) bool) {
		o.StatefulSets[Green] = StatefulSet{Image: imgB, Replicas: n}
		o.Pods = append(pods(Blue, imgA, int(n), true, func(i int) bool { return !serving(i) }),
			pods(Green, imgB, int(n), ready, serving)...)
		c := int32(0)
		for i := range int(n) {
			if ready && serving(i) {
				c++
			}
		}
		o.Endpoints = map[Color]int32{Blue: n - c, Green: c}
	}
	plan := func() {
		o.Plan = &PlanResult{Mode: ModeShared, SchemaFrom: 3, SchemaTo: 4, Reason: "expand only: add column clients.logo_etag"}
		u.Plan = &v1.UpgradePlan{Mode: ModeShared, SchemaFrom: 3, SchemaTo: 4, Reason: o.Plan.Reason}
	}
	switch p {
	case v1.UpgradePlanning:
	case v1.UpgradeMigrating:
		done(JobPlan)
		plan()
	case v1.UpgradeDeploying:
		done(JobPlan, JobExpand)
		plan()
		green(false, none)
	case v1.UpgradeVerifying, v1.UpgradePaused:
		done(JobPlan, JobExpand)
		if p == v1.UpgradePaused {
			done(JobVerify)
		}
		plan()
		green(true, none)
	case v1.UpgradePromoting:
		done(JobPlan, JobExpand, JobVerify)
		plan()
		green(true, func(i int) bool { return i < int(k) })
		u.Step, u.Progress = k, fmt.Sprintf("%d/%d", k-1, n)
		u.Analysis = &v1.UpgradeAnalysisStatus{Baseline: []v1.UpgradeEndpointCounts{{Endpoint: "token", Requests: 100, Errors: 1}},
			LastCheck: stamp(t0)}
		o.Metrics = Metrics{"token": {Requests: 100, Errors: 1}}
	case v1.UpgradeScalingDown, v1.UpgradeRollbackWindow, v1.UpgradeContracting:
		done(JobPlan, JobExpand, JobVerify)
		plan()
		green(true, all)
		u.Step, u.Progress = n, fmt.Sprintf("%d/%d", n, n)
		o.Status.ActiveColor = Green
		if p != v1.UpgradeScalingDown {
			o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 0}
			o.Pods = pods(Green, imgB, int(n), true, all)
		}
	}
	return o
}

// with applies changes to a copy of o.
func with(o Observed, changes ...func(*Observed)) Observed {
	o.Status.Upgrade = o.Status.Upgrade.DeepCopy()
	o.Pods = append([]Pod(nil), o.Pods...)
	o.Jobs = cloneMap(o.Jobs)
	o.StatefulSets = cloneMap(o.StatefulSets)
	o.Endpoints = cloneMap(o.Endpoints)
	o.Annotations = cloneMap(o.Annotations)
	if o.Metrics != nil {
		o.Metrics = maps.Clone(o.Metrics)
	}
	for _, c := range changes {
		c(&o)
	}
	return o
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func job(k JobKind, s JobState) func(*Observed) {
	return func(o *Observed) { o.Jobs[k] = Job{State: s, Message: "BackoffLimitExceeded"} }
}

func annotate(key, value string) func(*Observed) {
	return func(o *Observed) { o.Annotations[key] = value }
}

func image(img string) func(*Observed) { return func(o *Observed) { o.Spec.Image = img } }

// metrics sets the token endpoint's counters, the others unchanged.
func metrics(requests, errors int64) func(*Observed) {
	return func(o *Observed) {
		o.Metrics = maps.Clone(o.Metrics)
		if o.Metrics == nil {
			o.Metrics = Metrics{}
		}
		o.Metrics["token"] = Counts{Requests: requests, Errors: errors}
	}
}

// endpoint sets one endpoint's counters.
func endpoint(name string, requests, errors int64) func(*Observed) {
	return func(o *Observed) {
		o.Metrics = maps.Clone(o.Metrics)
		o.Metrics[name] = Counts{Requests: requests, Errors: errors}
	}
}

func noMetrics(o *Observed) { o.Metrics = nil }

// greenReady marks n green pods with imgB ready (the StatefulSet at full size).
//
//nolint:unparam // as at: the size stays explicit in the table
func greenReady(n int32) func(*Observed) {
	return func(o *Observed) {
		o.StatefulSets[Green] = StatefulSet{Image: imgB, Replicas: n}
		var kept []Pod
		for _, p := range o.Pods {
			if p.Color == Blue {
				kept = append(kept, p)
			}
		}
		o.Pods = append(kept, pods(Green, imgB, int(n), true, none)...)
	}
}

// retryAt says a failed contract Job is started again at t.
func retryAt(t time.Time) func(*Observed) {
	return func(o *Observed) {
		o.Status.Upgrade.Reason, o.Status.Upgrade.NextRetry = v1.ReasonMigrationFailed, stamp(t)
	}
}

// lostStatus is green serving imgB after a completed upgrade (blue kept at zero)
// with status replaced by st.
func lostStatus(st Status) Observed {
	return Observed{
		Name:         "auth",
		Spec:         Spec{Image: imgB, Replicas: 3, Upgrade: settingsFixture()},
		Status:       st,
		StatefulSets: map[Color]StatefulSet{Blue: {Image: imgA, Replicas: 0}, Green: {Image: imgB, Replicas: 3}},
		Pods:         pods(Green, imgB, 3, true, all),
		Endpoints:    map[Color]int32{Green: 3},
		Jobs:         map[JobKind]Job{},
	}
}

// stuckRollback rolls back at t0 from the rollback window, the rollback annotation
// gone since; blue-2 never gets ready (no room on the nodes).
func stuckRollback() Observed {
	return with(at(v1.UpgradeRollbackWindow, 3, 0), func(o *Observed) {
		u := o.Status.Upgrade
		u.Phase, u.Reason, u.RollbackReason = v1.UpgradeRollingBack, ReasonRollbackAsked, "asked"
		o.StatefulSets[Blue] = StatefulSet{Image: imgA, Replicas: 3}
		o.Pods = append(pods(Blue, imgA, 3, true, all), pods(Green, imgB, 3, true, all)...)
		o.Pods[2].Ready = false
		o.Endpoints = map[Color]int32{Blue: 2, Green: 3}
	})
}
