package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// TestNextWait: what counts as progress, and so starts spec.progressDeadline again,
// as a Deployment counts it.
func TestNextWait(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	now := t0.Add(7 * time.Minute).Add(300 * time.Millisecond)
	since := func(at time.Time, reason string, ready int32, gen int64) *oauthv1alpha1.Wait {
		return &oauthv1alpha1.Wait{Reason: reason, ReadyReplicas: ready, Generation: gen, Since: metav1.NewTime(at)}
	}
	secret := func(at time.Time, object string) *oauthv1alpha1.Wait {
		return &oauthv1alpha1.Wait{Reason: ReasonSecretMissing, Object: object, Generation: 1, Since: metav1.NewTime(at)}
	}
	pods := func(reason string, ready int32) boundedWait { return boundedWait{reason: reason, ready: ready} }
	dsn, users := boundedWait{reason: ReasonSecretMissing, object: "Secret db key dsn"}, boundedWait{reason: ReasonSecretMissing, object: "Secret users"}
	tests := map[string]struct {
		last *oauthv1alpha1.Wait
		w    boundedWait
		gen  int64
		want *oauthv1alpha1.Wait
	}{
		"a wait begins":                      {nil, pods(ReasonRollingOut, 0), 1, since(now.Truncate(time.Second), ReasonRollingOut, 0, 1)},
		"the same wait goes on":              {since(t0, ReasonRollingOut, 1, 1), pods(ReasonRollingOut, 1), 1, since(t0, ReasonRollingOut, 1, 1)},
		"one more pod ready":                 {since(t0, ReasonRollingOut, 1, 1), pods(ReasonRollingOut, 2), 1, since(now.Truncate(time.Second), ReasonRollingOut, 2, 1)},
		"a pod went unready: no progress":    {since(t0, ReasonRollingOut, 2, 1), pods(ReasonRollingOut, 1), 1, since(t0, ReasonRollingOut, 1, 1)},
		"the next phase":                     {since(t0, ReasonWaitingForDatabase, 0, 1), pods(ReasonMigrating, 0), 1, since(now.Truncate(time.Second), ReasonMigrating, 0, 1)},
		"a new generation, which may fix it": {since(t0, ReasonRollingOut, 0, 1), pods(ReasonRollingOut, 0), 2, since(now.Truncate(time.Second), ReasonRollingOut, 0, 2)},
		"the same Secret still missing":      {secret(t0, dsn.object), dsn, 1, secret(t0, dsn.object)},
		"another Secret missing":             {secret(t0, dsn.object), users, 1, secret(now.Truncate(time.Second), users.object)},
		"the admin API still unreachable": {since(t0, ReasonAdminUnreachable, 0, 1), boundedWait{reason: ReasonAdminUnreachable}, 1,
			since(t0, ReasonAdminUnreachable, 0, 1)},
		"the pods came, the admin API does not answer": {since(t0, ReasonRollingOut, 0, 1), boundedWait{reason: ReasonAdminUnreachable}, 1,
			since(now.Truncate(time.Second), ReasonAdminUnreachable, 0, 1)},
		"a failed admin check amid a rollout that serves: the rollout's count goes on": {since(t0, ReasonRollingOut, 1, 1),
			boundedWait{reason: ReasonAdminUnreachable}, 1, since(t0, ReasonRollingOut, 1, 1)},
		"the same, the rollout back after the failed check": {since(t0, ReasonRollingOut, 1, 1), pods(ReasonRollingOut, 1), 1,
			since(t0, ReasonRollingOut, 1, 1)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			before := tt.last.DeepCopy()
			got := nextWait(tt.last, tt.w, tt.gen, now)
			if *got != *tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if tt.last != nil && *tt.last != *before {
				t.Errorf("the last wait was changed in place: %+v", tt.last)
			}
		})
	}
}

// TestPodTrouble: what a pod says about why it is not ready, in the words a user
// looks for.
func TestPodTrouble(t *testing.T) {
	pod := func(st corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "auth-blue-0"}, Status: st}
	}
	waiting := func(reason, msg string) corev1.PodStatus {
		return corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "tokenserver",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
	}
	tests := map[string]struct {
		pod  *corev1.Pod
		want string
	}{
		"unschedulable": {pod(corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/3 nodes are available: 3 Insufficient cpu."}}}),
			"pod auth-blue-0 cannot be scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."},
		"image not pulled": {pod(waiting("ImagePullBackOff", `Back-off pulling image "ghcr.io/x:v9"`)),
			`pod auth-blue-0 container tokenserver is waiting: ImagePullBackOff: Back-off pulling image "ghcr.io/x:v9"`},
		"starting":  {pod(waiting("ContainerCreating", "")), ""},
		"scheduled": {pod(corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}}), ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := podTrouble(tt.pod); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLastSeen: an event of either events API is dated by its latest time.
func TestLastSeen(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	core := &corev1.Event{FirstTimestamp: metav1.NewTime(t0), LastTimestamp: metav1.NewTime(t0.Add(time.Minute))}
	series := &corev1.Event{EventTime: metav1.NewMicroTime(t0), Series: &corev1.EventSeries{LastObservedTime: metav1.NewMicroTime(t0.Add(2 * time.Minute))}}
	if got := lastSeen(core); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("core/v1 event: %s", got)
	}
	if got := lastSeen(series); !got.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("events.k8s.io event with a series: %s", got)
	}
}

// TestProgressDeadlineRequeue: a wait with time left is looked at again when its
// deadline falls due, with no other event; an upgrade's waits for pods and the admin
// API, and a pass that waits for nothing that counts, end the count; a failure of
// the API server leaves it.
func TestProgressDeadlineRequeue(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	begun := &oauthv1alpha1.Wait{Reason: ReasonRollingOut, Generation: 1, Since: metav1.NewTime(t0)}
	rollout := func() error {
		return waiting(ReasonRollingOut, "waiting for StatefulSet auth-blue: 0 of 2 pods ready").waitingFor(
			podWait{kind: "StatefulSet", want: 2})
	}
	tests := map[string]struct {
		deadline oauthv1alpha1.Duration
		upgrade  *oauthv1alpha1.UpgradeStatus
		err      error
		requeue  time.Duration
		waiting  *oauthv1alpha1.Wait
	}{
		"the default deadline, 4 minutes in": {"", nil, rollout(), 6 * time.Minute, begun},
		"a deadline of 5m, 4 minutes in":     {"5m", nil, rollout(), time.Minute, begun},
		"an upgrade runs: its own deadline": {"", &oauthv1alpha1.UpgradeStatus{Phase: oauthv1alpha1.UpgradeDeploying},
			rollout(), 0, nil},
		"Ready": {"", nil, nil, 0, nil},
		"a wait for a Secret: its own count": {"", nil, waiting(ReasonSecretMissing, "waiting for Secret x (spec.login.usersSecretRef)").
			waitingOn("Secret x"), 10 * time.Minute, &oauthv1alpha1.Wait{Reason: ReasonSecretMissing, Object: "Secret x", Generation: 1,
			Since: metav1.NewTime(t0.Add(4 * time.Minute))}},
		"the admin API does not answer: its own count": {"", nil, fmt.Errorf("%w: admin API health check: 503", errServerNotReady), 0,
			&oauthv1alpha1.Wait{Reason: ReasonAdminUnreachable, Generation: 1, Since: metav1.NewTime(t0.Add(4 * time.Minute))}},
		"the admin API in an upgrade: the upgrade's": {"", &oauthv1alpha1.UpgradeStatus{Phase: oauthv1alpha1.UpgradePromoting},
			fmt.Errorf("%w: admin API health check: 503", errServerNotReady), 0, nil},
		"a wait for what comes at once: no count": {"", nil, waiting(ReasonRollingOut, "creating StatefulSet auth-blue"), 0, nil},
		"the API server failed: no verdict":       {"", nil, errors.New("get StatefulSet auth-blue: timeout"), 0, begun},
		// Its pod is up and migrating, for as long as the migrations take.
		"a migrations Job whose pod is ready": {"", nil, waiting(ReasonMigrating, "Job auth-migrate is migrating the database").
			waitingFor(podWait{kind: "Job", created: 1, ready: 1, want: 1}), 0, nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := &TokenServerReconciler{Clock: clocktesting.NewFakePassiveClock(t0.Add(4 * time.Minute))}
			ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Generation: 1},
				Spec:   oauthv1alpha1.TokenServerSpec{ProgressDeadline: tt.deadline},
				Status: oauthv1alpha1.TokenServerStatus{Waiting: begun.DeepCopy(), Upgrade: tt.upgrade}}
			got := r.progressDeadline(context.Background(), ts, tt.err)
			if got != tt.err {
				t.Fatalf("the pass's outcome became %v", got)
			}
			if ce, ok := conditionOf(got); ok && ce.requeue != tt.requeue {
				t.Errorf("looked at again after %s, want %s", ce.requeue, tt.requeue)
			}
			if (ts.Status.Waiting == nil) != (tt.waiting == nil) || (tt.waiting != nil && *ts.Status.Waiting != *tt.waiting) {
				t.Errorf("status.waiting %+v, want %+v", ts.Status.Waiting, tt.waiting)
			}
		})
	}
}

// TestNamesPod: a FailedCreate event about a pod that exists now is of a refusal
// since overcome.
func TestNamesPod(t *testing.T) {
	sts := `Create Pod auth-blue-0 in StatefulSet auth-blue failed error: pods "auth-blue-0" is forbidden: exceeded quota: compute`
	tests := map[string]struct {
		message, pod string
		want         bool
	}{
		"the StatefulSet controller's words":  {sts, "auth-blue-0", true},
		"another ordinal":                     {sts, "auth-blue-1", false},
		"a prefix of another ordinal's name":  {`Create Pod auth-blue-10 in StatefulSet auth-blue failed error: pods "auth-blue-10"`, "auth-blue-1", false},
		"the API server's words only":         {`pods "auth-db-0" is forbidden: violates PodSecurity "restricted:latest"`, "auth-db-0", true},
		"a Job's pod, named after its prefix": {`Error creating: pods "auth-migrate-x-" is forbidden: exceeded quota`, "auth-migrate-x-7hq2m", false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := namesPod(tt.message, tt.pod); got != tt.want {
				t.Errorf("namesPod(%q, %q) = %v", tt.message, tt.pod, got)
			}
		})
	}
}

// TestQuote: what a condition quotes of others' messages has no control characters
// and fits its bound, cut on a character boundary.
func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"exceeded quota: compute", 64, "exceeded quota: compute"},
		{"line\nforged\x1b[31m red", 64, "line forged [31m red"},
		{"bad \xff byte", 64, "bad \uFFFD byte"},
		{strings.Repeat("a", 20), 10, strings.Repeat("a", 7) + "…"},
		{"éééééé", 10, "ééé…"}, // 12 bytes: "é" is 2 bytes, "…" 3, and no "é" is cut in two
	} {
		if got := quote(tc.in, tc.max); got != tc.want || len(got) > tc.max {
			t.Errorf("quote(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

// TestProgressDeadlineVerdict: when a wait for a Secret or for the admin API goes
// Stalled, and what it then says. A wait whose cause changed (another Secret), a
// spec change and an admin API that answered in between start the count again; a
// failure of the admin API shorter than the deadline stalls nothing.
func TestProgressDeadlineVerdict(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	dsnMissing := func() error {
		return waiting(ReasonSecretMissing, "waiting for Secret db with key dsn (spec.database.external.secretRef)").
			waitingOn(secretKey("db", "dsn"))
	}
	usersMissing := func() error {
		return waiting(ReasonSecretMissing, "waiting for Secret users (spec.login.usersSecretRef)").waitingOn("Secret users")
	}
	refused := func() error {
		return fmt.Errorf("%w: admin API health check: dial tcp 10.0.0.7:4445: connect: connection refused", errServerNotReady)
	}
	dsnWait := &oauthv1alpha1.Wait{Reason: ReasonSecretMissing, Object: "Secret db key dsn", Generation: 1, Since: at(0)}
	adminWait := func(since time.Duration) *oauthv1alpha1.Wait {
		return &oauthv1alpha1.Wait{Reason: ReasonAdminUnreachable, Generation: 1, Since: at(since)}
	}
	tests := map[string]struct {
		last     *oauthv1alpha1.Wait
		external bool
		upgrade  *oauthv1alpha1.UpgradeStatus
		gen      int64
		err      error
		// stalled: what Stalled says; "": not stalled, the pass's outcome unchanged.
		stalled string
		// since: when status.waiting's count began, after t0.
		since time.Duration
	}{
		"a Secret missing for the deadline": {last: dsnWait, err: dsnMissing(),
			stalled: "waiting for Secret db with key dsn (spec.database.external.secretRef); no progress for 5m0s (spec.progressDeadline)"},
		"another Secret missing: a new count":  {last: dsnWait, err: usersMissing(), since: 5 * time.Minute},
		"the Secret missing, the spec changed": {last: dsnWait, gen: 2, err: dsnMissing(), since: 5 * time.Minute},
		"a Secret missing while an upgrade is held by it": {last: dsnWait, err: dsnMissing(),
			upgrade: &oauthv1alpha1.UpgradeStatus{Phase: oauthv1alpha1.UpgradeDeploying}, stalled: "waiting for Secret db with key dsn"},
		"the admin API unreachable for the deadline": {last: adminWait(0), err: refused(),
			stalled: "the admin API does not answer; no progress for 5m0s (spec.progressDeadline): token server not ready: admin API health " +
				"check: dial tcp 10.0.0.7:4445: connect: connection refused"},
		"an external server's admin API for the deadline": {last: adminWait(0), external: true,
			err: errors.New("admin API health check: 503 Service Unavailable: the database is unavailable"), stalled: "the database is unavailable"},
		"the admin API unreachable for less than the deadline": {last: adminWait(2 * time.Minute), err: refused(), since: 2 * time.Minute},
		"the admin API answered in between: a new count":       {err: refused(), since: 5 * time.Minute},
		"the pods were awaited, then the admin API": {last: &oauthv1alpha1.Wait{Reason: ReasonRollingOut, Generation: 1, Since: at(0)},
			err: refused(), since: 5 * time.Minute},
		"a rollout that serves, stuck for the deadline, the admin API failing": {last: &oauthv1alpha1.Wait{Reason: ReasonRollingOut,
			ReadyReplicas: 1, Generation: 1, Since: at(0)}, err: refused(), stalled: "the admin API does not answer; no progress for 5m0s"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			r := &TokenServerReconciler{Clock: clocktesting.NewFakePassiveClock(t0.Add(5 * time.Minute))}
			ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Generation: max(tt.gen, 1)},
				Spec:   oauthv1alpha1.TokenServerSpec{ProgressDeadline: "5m"},
				Status: oauthv1alpha1.TokenServerStatus{Waiting: tt.last.DeepCopy(), Upgrade: tt.upgrade}}
			if tt.external {
				ts.Spec.External = &oauthv1alpha1.ExternalTokenServer{AdminURL: "https://auth.example.com:4445"}
			}
			got := r.progressDeadline(context.Background(), ts, tt.err)
			ce, reported := conditionOf(got)
			stalled := reported && ce.reason == ReasonProgressDeadlineExceeded
			switch {
			case tt.stalled == "" && got != tt.err:
				t.Fatalf("the pass's outcome became %v", got)
			case ts.Status.Waiting == nil || !ts.Status.Waiting.Since.Equal(ptr.To(at(tt.since))):
				t.Errorf("status.waiting %+v, want a count since %s", ts.Status.Waiting, at(tt.since))
			case tt.stalled == "":
			case !stalled || !ce.human:
				t.Fatalf("outcome %v, want Stalled %s", got, ReasonProgressDeadlineExceeded)
			case !strings.Contains(ce.message, tt.stalled):
				t.Errorf("Stalled says %q, want it to say %q", ce.message, tt.stalled)
			case !reported || (ce.cause != nil) != !errors.As(tt.err, new(*conditionError)):
				t.Errorf("cause %v: an admin API's failure stays a failure, a wait does not become one", ce.cause)
			}
		})
	}
}
