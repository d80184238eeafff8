package upgrade

import (
	"time"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Color names one of the two StatefulSets of a TokenServer.
type Color string

// The two colors; their values are those of the StatefulSets' color label.
const (
	Blue  Color = "blue"
	Green Color = "green"
)

// Other is the color an upgrade from c moves to.
func (c Color) Other() Color {
	if c == Green {
		return Blue
	}
	return Green
}

// JobKind is one of the Jobs an upgrade runs with the new image.
type JobKind string

// The upgrade's Jobs, in the order they run.
const (
	// JobPlan runs `migrate plan`: the mode (Shared, Copy, Refused) and why.
	JobPlan JobKind = "plan"
	// JobExpand runs the expand migrations only (`migrate up --expand-only`).
	JobExpand JobKind = "expand"
	// JobVerify issues, introspects, refreshes and revokes a token through the new
	// color and cross-checks with the old one.
	JobVerify JobKind = "verify"
	// JobContract runs the contract migrations, once the old version is gone for good.
	JobContract JobKind = "contract"
	// JobCopy runs `db copy`: the old version's database into the copy, migrated.
	JobCopy JobKind = "copy"
	// JobCutover runs `db cutover --direction forward`: fence the old version, drain
	// the replay, move the database to the copy.
	JobCutover JobKind = "cutover"
	// JobCutback runs `db cutover --direction backward` at a rollback after the
	// cutover: the database back to the old version's.
	JobCutback JobKind = "cutback"
	// JobCleanup runs `db cleanup` once a Copy upgrade ended, with the image that
	// serves: capture, the fence and the upgrade's records off the serving database;
	// after a rollback, the bundled copy dropped too.
	JobCleanup JobKind = "cleanup"
)

// CutoverLeaseExpiredExitCode is the exit code of `tokenserver db cutover` when the
// fence's lease ran out before the replay drained: the old version resumed by
// itself, nothing moved, and another attempt may pass.
const CutoverLeaseExpiredExitCode = 4

// Replay directions, as `tokenserver db replay --direction` takes them.
const (
	Forward  = "forward"
	Backward = "backward"
)

// JobState is what a Job's conditions say.
type JobState string

// Job states; the zero value is a Job that does not exist.
const (
	JobAbsent    JobState = ""
	JobRunning   JobState = "Running"
	JobSucceeded JobState = "Succeeded"
	JobFailed    JobState = "Failed"
)

// Job is an observed Job of the current upgrade, found by JobName.
type Job struct {
	State JobState
	// Message of the Failed condition, for the rollback reason.
	Message string
	// ExitCode of a failed Job's pod (0 when unknown).
	ExitCode int32
	// Output is a succeeded Job's termination message: the JSON line of `db copy`
	// and `db cutover`.
	Output string
}

// ReplayFigures are what the forward replay's pod reports on its metrics:
// kubeoauth_replay_pending_changes and kubeoauth_replay_lag_seconds.
type ReplayFigures struct {
	Pending int64
	Lag     time.Duration
}

// Plan modes, as the plan Job reports them (and status.upgrade.plan.mode).
const (
	ModeShared  = "Shared"
	ModeCopy    = "Copy"
	ModeRefused = "Refused"
)

// PlanResult is the plan Job's report, parsed by the controller from its
// termination message or logs. Its JSON is the contract with `tokenserver migrate
// plan` (which cannot import this package: the token server links no Kubernetes
// code): {"mode": "Shared", "schemaFrom": 5, "schemaTo": 6, "reason": "..."}.
type PlanResult struct {
	Mode       string `json:"mode"`
	SchemaFrom int64  `json:"schemaFrom"`
	SchemaTo   int64  `json:"schemaTo"`
	Reason     string `json:"reason"`
}

// StatefulSet is an existing StatefulSet's spec: the image of its template and its
// replicas.
type StatefulSet struct {
	Image    string
	Replicas int32
}

// Pod is a token server pod as observed.
type Pod struct {
	Name    string
	Color   Color
	Ordinal int
	Image   string
	// Ready: the pod's Ready condition.
	Ready bool
	// Serving: the pod carries LabelServing=true.
	Serving bool
	// Terminating: the pod has a deletion timestamp. A pod whose node is lost stays
	// so for good; it serves nothing (not ready, out of the EndpointSlices).
	Terminating bool
}

// Counts are one endpoint's cumulative counters: requests answered, without the
// answers the caller caused (4xx), and those answered with a 5xx.
type Counts struct {
	Requests int64
	Errors   int64
}

// Metrics are the new color's counters by endpoint (the label of the token server's
// kubeoauth_http_requests_total), summed over its pods. nil: they could not be read.
type Metrics map[string]Counts

// Spec is what Next reads of the TokenServer's spec.
type Spec struct {
	Image    string
	Replicas int32
	Upgrade  oauthv1alpha1.UpgradeSettings
	// Database is spec.database's DSN (the bundled one, or the user's); External:
	// spec.database.external, which a copy goes into only through
	// spec.upgrade.copy.targetSecretRef.
	Database oauthv1alpha1.DatabaseRef
	External bool
}

// Status is the part of the TokenServer's status the upgrade owns.
type Status struct {
	ActiveColor Color
	FailedImage string
	// FailedSettings is the digest of spec.upgrade when FailedImage was recorded.
	FailedSettings string
	Upgrade        *oauthv1alpha1.UpgradeStatus
	// Database is status.database: the serving version's DSN when a Copy upgrade
	// moved it; nil: Spec.Database.
	Database *oauthv1alpha1.DatabaseRef
}

// Observed holds only facts the controller can read; Next decides from nothing else.
//
// Next assumes the database holds the schema of the active image: the first install
// (no StatefulSet yet) migrates fully before, as today, and then Next only asks for
// the first StatefulSet.
type Observed struct {
	// Name of the TokenServer; it prefixes the Jobs' names.
	Name string
	Spec Spec
	// Annotations of the TokenServer (AnnotationPromote, AnnotationRollback).
	Annotations map[string]string
	Status      Status
	// StatefulSets by color; a missing color has no StatefulSet.
	StatefulSets map[Color]StatefulSet
	// Pods of both colors.
	Pods []Pod
	// Jobs of status.upgrade.id, by kind; a missing kind has no Job.
	Jobs map[JobKind]Job
	// Plan is the plan Job's result once it succeeded and could be read.
	Plan *PlanResult
	// Endpoints counts, per color, the ready endpoints of the public Service's
	// EndpointSlices: what actually receives traffic.
	Endpoints map[Color]int32
	// Metrics of the new color (status.upgrade.toColor); nil when they could not be read.
	Metrics Metrics
	// Replay is what the forward replay reports, during Replaying; nil when it
	// could not be read.
	Replay *ReplayFigures
	// ReplayPods counts the pods of the TokenServer's replay Deployments that still
	// exist (terminating ones included): a Copy upgrade's cleanup waits for them.
	ReplayPods int
	// CopyPods counts the pods of the upgrade's copy Job that still exist
	// (terminating ones included): a copy Job deleted at a rollback leaves its pod
	// terminating, maybe still installing the capture or creating the copy's
	// database, and the cleanup waits for it too.
	CopyPods int
	// Location of spec.upgrade.window.timeZone, loaded by the controller; nil when
	// that name is unknown (or unset: UTC).
	Location *time.Location
}
