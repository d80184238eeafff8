package upgrade

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Decision is what the controller does, in this order: write Status when
// WriteStatus (the intent, before any action), then apply StatefulSets, create Jobs,
// set Labels, record Events, set Conditions, and come back after RequeueAfter (or
// at the next watch event). Every action is safe on its own against the world Next
// observed, so the actions may run in any order and a crash between two is harmless:
// the next pass asks again for what is not yet visible.
type Decision struct {
	Status      Status
	WriteStatus bool
	// StatefulSets to apply: the image and replicas of every color that should
	// exist. A color not listed is left as it is (or not created).
	StatefulSets []StatefulSetIntent
	// Jobs to create; each is missing in the observed world.
	Jobs []JobIntent
	// DeleteJobs names Jobs of the current upgrade to delete: a copy Job still
	// running once its upgrade ended (a rollback during Copying), which would
	// otherwise go on writing what the cleanup removes.
	DeleteJobs []string
	// Databases are the DSNs the colors' StatefulSets mount during a Copy upgrade
	// (the old color its own, the new one the copy); a color not listed mounts the
	// serving version's (status.database, else spec.database's).
	Databases map[Color]oauthv1alpha1.DatabaseRef
	// Replays are the replay Deployments that should exist; the controller deletes
	// the TokenServer's others.
	Replays []ReplayIntent
	// TargetSecret, when set, is the Secret of the bundled copy's DSN to create
	// when it is missing (resources.CopyTargetSecret), before the copy Job runs.
	TargetSecret string
	// Labels to set on pods: LabelServing "true", or removed.
	Labels []LabelIntent
	Events []Event
	// Conditions Progressing and Degraded, without times (meta.SetStatusCondition
	// keeps the transition time of an unchanged one). None when no upgrade ever ran
	// and none waits.
	Conditions []metav1.Condition
	// RequeueAfter is when a timer (a deadline, an analysis interval, a delay, a
	// window) next matters; 0 when only watched objects can move the upgrade.
	RequeueAfter time.Duration
}

// StatefulSetIntent is the image and replicas of one color's StatefulSet.
type StatefulSetIntent struct {
	Color    Color
	Image    string
	Replicas int32
}

// JobIntent is a Job to create: kind, its deterministic name and the image it runs.
type JobIntent struct {
	Kind  JobKind
	Name  string
	Image string
	// Database is the DSN JobCleanup cleans: the one the serving version uses.
	Database *oauthv1alpha1.DatabaseRef
	// DropCopy: JobCleanup also drops the bundled copy's database (after a rollback).
	DropCopy bool
}

// ReplayIntent is a replay Deployment: `db replay` in one direction, from the
// database of the version that serves to the other one.
type ReplayIntent struct {
	Name      string
	Direction string
}

// LabelIntent sets (Serving) or removes (!Serving) LabelServing on a pod.
type LabelIntent struct {
	Pod     string
	Serving bool
}

// Event is a Kubernetes event to record on the TokenServer.
type Event struct {
	Type    string // Normal or Warning
	Reason  string
	Message string
}
