package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// want is one condition as a user reads it: status and reason.
type want struct {
	status metav1.ConditionStatus
	reason string
}

var (
	yes = metav1.ConditionTrue
	no  = metav1.ConditionFalse
)

func checkConditions(t *testing.T, got []metav1.Condition, wants map[string]want, message string) {
	t.Helper()
	if len(got) != len(wants) {
		t.Errorf("%d conditions, want %d: %+v", len(got), len(wants), got)
	}
	for typ, w := range wants {
		c := meta.FindStatusCondition(got, typ)
		if c == nil {
			t.Errorf("no %s condition in %+v", typ, got)
			continue
		}
		if c.Status != w.status || c.Reason != w.reason {
			t.Errorf("%s=%s %s, want %s %s (%q)", typ, c.Status, c.Reason, w.status, w.reason, c.Message)
		}
		if message != "" && !strings.Contains(c.Message, message) {
			t.Errorf("%s message %q, want it to say %q", typ, c.Message, message)
		}
	}
}

func TestServerConditions(t *testing.T) {
	managed := func(readyReplicas int32) *oauthv1alpha1.TokenServer {
		return &oauthv1alpha1.TokenServer{Status: oauthv1alpha1.TokenServerStatus{ReadyReplicas: readyReplicas}}
	}
	pastDeadline := func(readyReplicas int32, waitingFor string) *oauthv1alpha1.TokenServer {
		ts := managed(readyReplicas)
		ts.Status.Waiting = &oauthv1alpha1.Wait{Reason: waitingFor}
		return ts
	}
	external := func(url string, insecure bool) *oauthv1alpha1.TokenServer {
		return &oauthv1alpha1.TokenServer{Spec: oauthv1alpha1.TokenServerSpec{
			External: &oauthv1alpha1.ExternalTokenServer{AdminURL: url, Insecure: insecure}}}
	}
	const (
		ready, progressing, degraded = oauthv1alpha1.ConditionReady, oauthv1alpha1.ConditionProgressing, oauthv1alpha1.ConditionDegraded
	)
	conds := func(r, p, d metav1.ConditionStatus, reason string) map[string]want {
		return map[string]want{ready: {r, reason}, progressing: {p, reason}, degraded: {d, reason}}
	}
	refused := errors.New("dial tcp 10.0.0.1:4445: connection refused")
	tests := map[string]struct {
		ts      *oauthv1alpha1.TokenServer
		err     error
		want    map[string]want
		message string // every condition's message says this
	}{
		"managed, every replica up to date": {ts: managed(2), want: conds(yes, no, no, ReasonAvailable)},
		"managed, rolling out while serving: clients keep working": {ts: managed(1),
			err:  waiting(ReasonRollingOut, "serving; StatefulSet auth-blue has 1 of 2 pods ready and up to date"),
			want: conds(yes, yes, no, ReasonRollingOut), message: "1 of 2 pods"},
		"managed, rolling out with no pod ready": {ts: managed(0),
			err:  waiting(ReasonRollingOut, "waiting for StatefulSet auth-blue: 0 of 2 pods ready"),
			want: conds(no, yes, no, ReasonRollingOut)},
		"managed, waiting for something else while pods serve": {ts: managed(1),
			err:  waiting(ReasonMigrating, "Job auth-migrate-x is migrating the database"),
			want: conds(no, yes, no, ReasonMigrating), message: "migrating"},
		"managed, waiting, found through a wrap": {ts: managed(0),
			err:  fmt.Errorf("database: %w", waiting(ReasonWaitingForDatabase, "waiting for the database StatefulSet auth-db to be ready")),
			want: conds(no, yes, no, ReasonWaitingForDatabase), message: "waiting for the database"},
		"managed, needs a human": {ts: managed(2),
			err:  needsHuman(ReasonMigrationFailed, "Job auth-migrate-x failed: BackoffLimitExceeded").after(time.Minute),
			want: conds(no, no, yes, ReasonMigrationFailed), message: "BackoffLimitExceeded"},
		"managed, past the progress deadline with no pod ready": {ts: pastDeadline(0, ReasonRollingOut),
			err:  needsHuman(ReasonProgressDeadlineExceeded, "waiting for StatefulSet auth-blue: 0 of 2 pods ready; no progress for 10m0s"),
			want: conds(no, no, yes, ReasonProgressDeadlineExceeded), message: "no progress for 10m0s"},
		"managed, past the progress deadline while serving: clients keep working": {ts: pastDeadline(1, ReasonRollingOut),
			err:  needsHuman(ReasonProgressDeadlineExceeded, "serving; StatefulSet auth-blue has 1 of 2 pods ready and up to date; no progress"),
			want: conds(yes, no, yes, ReasonProgressDeadlineExceeded), message: "1 of 2 pods"},
		"managed, past the progress deadline of the database, pods of before": {ts: pastDeadline(2, ReasonWaitingForDatabase),
			err:  needsHuman(ReasonProgressDeadlineExceeded, "waiting for the database StatefulSet auth-db to be ready; no progress"),
			want: conds(no, no, yes, ReasonProgressDeadlineExceeded), message: "auth-db"},
		"managed, past the deadline amid a rollout, the admin API failing: not Ready": {ts: pastDeadline(1, ReasonRollingOut),
			err: func() error {
				ce := needsHuman(ReasonProgressDeadlineExceeded, "the admin API does not answer; no progress for 10m0s")
				ce.cause = fmt.Errorf("%w: admin API health check: 503", errServerNotReady)
				return ce
			}(),
			want: conds(no, no, yes, ReasonProgressDeadlineExceeded), message: "the admin API does not answer"},
		"managed, admin API not answering yet": {ts: managed(1),
			err:  fmt.Errorf("%w: admin API health check: %w", errServerNotReady, refused),
			want: conds(no, yes, no, ReasonAdminUnreachable), message: "connection refused"},
		"managed, a step failed": {ts: managed(1),
			err:  fmt.Errorf("apply StatefulSet auth-blue: %w", errors.New("the server is currently unable to handle the request")),
			want: conds(no, no, yes, ReasonReconcileFailed), message: "apply StatefulSet auth-blue: the server"},
		"external, admin API answers": {ts: external("https://auth.example.com", false),
			want: conds(yes, no, no, ReasonAdminReachable), message: "answers"},
		"external, unreachable": {ts: external("https://auth.example.com", false),
			err:  fmt.Errorf("admin API health check: %w", refused),
			want: conds(no, no, yes, ReasonAdminUnreachable), message: "connection refused"},
		"external, not ready: nothing of ours is progressing": {ts: external("https://auth.example.com", false),
			err:  fmt.Errorf("%w: %w", errServerNotReady, refused),
			want: conds(no, no, no, ReasonAdminUnreachable)},
		"external, needs a human": {ts: external("https://auth.example.com", false),
			err:  needsHuman(ReasonSecretMissing, "Secret auth-admin is missing"),
			want: conds(no, no, yes, ReasonSecretMissing)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkConditions(t, serverConditions(tc.ts, tc.err), tc.want, tc.message)
		})
	}
}

// An external server reached over http says so in Ready, and only there, for as
// long as it is Ready.
func TestServerConditionsInsecureNote(t *testing.T) {
	ts := &oauthv1alpha1.TokenServer{Spec: oauthv1alpha1.TokenServerSpec{
		External: &oauthv1alpha1.ExternalTokenServer{AdminURL: "http://auth.example.com", Insecure: true}}}
	got := serverConditions(ts, nil)
	if c := meta.FindStatusCondition(got, oauthv1alpha1.ConditionReady); c == nil || !strings.HasSuffix(c.Message, insecureNote) {
		t.Errorf("Ready %+v should end with the clear-text note", c)
	}
	if c := meta.FindStatusCondition(got, oauthv1alpha1.ConditionProgressing); c == nil || strings.Contains(c.Message, "clear text") {
		t.Errorf("Progressing %+v should not carry the note", c)
	}
	for _, c := range serverConditions(ts, errors.New("connection refused")) {
		if strings.Contains(c.Message, "clear text") {
			t.Errorf("%s %q: the note is for a Ready server", c.Type, c.Message)
		}
	}
}

// OAuthClient and ConsentGrant: Ready carries a condition error's own
// reason and message, waiting or refused alike; any other error is SyncFailed.
func TestClientAndGrantConditions(t *testing.T) {
	const ready = oauthv1alpha1.ConditionReady
	tests := map[string]struct {
		err     error
		reason  string
		status  metav1.ConditionStatus
		message string
	}{
		"synced":  {reason: ReasonSynced, status: yes},
		"waiting": {err: waiting(ReasonServerNotReady, "waiting for TokenServer a/auth to be Ready"), reason: ReasonServerNotReady, status: no, message: "waiting for TokenServer a/auth"},
		"refused, through a wrap": {err: fmt.Errorf("check: %w", needsHuman(ReasonClientIDConflict, "client ID x is taken")),
			reason: ReasonClientIDConflict, status: no, message: "client ID x is taken"},
		"failed": {err: fmt.Errorf("push client x to TokenServer a/auth: %w", errors.New("503")), reason: ReasonSyncFailed, status: no,
			message: "push client x to TokenServer a/auth: 503"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkConditions(t, clientKind.conditions(&oauthv1alpha1.OAuthClient{}, tc.err),
				map[string]want{ready: {tc.status, tc.reason}}, tc.message)
			checkConditions(t, grantKind.conditions(&oauthv1alpha1.ConsentGrant{}, tc.err),
				map[string]want{ready: {tc.status, tc.reason}}, tc.message)
		})
	}
}

// Reconciling and Stalled, as kstatus and Argo CD read them: at most one True, the
// other absent; a failure only a human can fix is Stalled, anything the operator
// is still at (waiting, retrying, an upgrade moving) is Reconciling.
func TestProgress(t *testing.T) {
	const (
		reconciling, stalled = oauthv1alpha1.ConditionReconciling, oauthv1alpha1.ConditionStalled
		ready, progressing   = oauthv1alpha1.ConditionReady, oauthv1alpha1.ConditionProgressing
		degraded             = oauthv1alpha1.ConditionDegraded
	)
	c := func(typ string, ok bool, reason string) metav1.Condition {
		return condition(typ, ok, reason, reason+" message")
	}
	tests := map[string]struct {
		err   error
		conds []metav1.Condition
		want  map[string]want // the True one, if any
	}{
		"went through":  {conds: []metav1.Condition{c(ready, true, ReasonSynced)}, want: map[string]want{}},
		"waiting":       {err: waiting(ReasonServerNotReady, "waiting"), want: map[string]want{reconciling: {yes, ReasonServerNotReady}}},
		"needs a human": {err: fmt.Errorf("x: %w", needsHuman(ReasonNamespaceNotAllowed, "no")), want: map[string]want{stalled: {yes, ReasonNamespaceNotAllowed}}},
		"retried failure, as Ready reads it": {err: errors.New("503"), conds: []metav1.Condition{c(ready, false, ReasonSyncFailed)},
			want: map[string]want{reconciling: {yes, ReasonSyncFailed}}},
		"retried failure, no Ready": {err: errors.New("503"), want: map[string]want{reconciling: {yes, ReasonRetrying}}},
		"upgrade moving": {conds: []metav1.Condition{c(ready, true, ReasonAvailable), c(progressing, true, oauthv1alpha1.ReasonUpgradeWaitingForWindow),
			c(degraded, false, ReasonAvailable)}, want: map[string]want{reconciling: {yes, oauthv1alpha1.ReasonUpgradeWaitingForWindow}}},
		"upgrade rolled back: the spec's image needs a human": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, false, oauthv1alpha1.ReasonUpgradeRolledBack), c(degraded, true, oauthv1alpha1.ReasonUpgradeRolledBack)},
			want: map[string]want{stalled: {yes, oauthv1alpha1.ReasonUpgradeRolledBack}}},
		"rolling back on its own after a cutover's lease ran out": {conds: []metav1.Condition{c(progressing, true, "RollingBack"),
			c(degraded, true, oauthv1alpha1.ReasonUpgradeRolledBack)}, want: map[string]want{reconciling: {yes, "RollingBack"}}},
		// The cutover's (or cut back's) Job failed every time: the upgrade waits for
		// a person, though its phase is not a final one.
		"cutover failed: waits for a person": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeCuttingOver)),
			c(degraded, true, oauthv1alpha1.ReasonCutoverFailed)}, want: map[string]want{stalled: {yes, oauthv1alpha1.ReasonCutoverFailed}}},
		"cut back failed: waits for a person": {conds: []metav1.Condition{c(progressing, true, "RollingBack"),
			c(degraded, true, oauthv1alpha1.ReasonCutoverFailed)}, want: map[string]want{stalled: {yes, oauthv1alpha1.ReasonCutoverFailed}}},
		// The new image serves everything: the spec is met, the rest of the upgrade
		// is for people (Progressing), not for a GitOps tool to wait on.
		"upgrade promoted, scaling down": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeScalingDown)), c(degraded, false, "UpgradeScalingDown")},
			want: map[string]want{}},
		"upgrade in the rollback window": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeRollbackWindow)), c(degraded, false, "UpgradeRollbackWindow")},
			want: map[string]want{}},
		"contract migrations failed, retried on their own": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradeContracting)),
			c(degraded, true, oauthv1alpha1.ReasonMigrationFailed)}, want: map[string]want{}},
		"upgrade promoting": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradePromoting))},
			want: map[string]want{reconciling: {yes, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradePromoting)}}},
		"upgrade paused before promotion: the old image serves": {conds: []metav1.Condition{c(ready, true, ReasonAvailable),
			c(progressing, true, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradePaused))},
			want: map[string]want{reconciling: {yes, oauthv1alpha1.ProgressingReason(oauthv1alpha1.UpgradePaused)}}},
		"rollback stuck": {conds: []metav1.Condition{c(progressing, true, "RollingBack"), c(degraded, true, upgrade.ReasonRollbackStuck)},
			want: map[string]want{stalled: {yes, upgrade.ReasonRollbackStuck}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []metav1.Condition
			r, s := progress(tc.err, tc.conds)
			for _, p := range []*metav1.Condition{r, s} {
				if p != nil {
					got = append(got, *p)
				}
			}
			checkConditions(t, got, tc.want, "")
		})
	}
}

// A failed pass is a Warning event once, when the object enters the failure, with
// the condition's reason: not on every resync of an object still refused, never for
// a pass that went through or waits (every event is a write to the API server).
func TestWarnOnce(t *testing.T) {
	stalledAt := func(reason string) []metav1.Condition {
		return []metav1.Condition{condition(oauthv1alpha1.ConditionStalled, true, reason, "")}
	}
	failing := []metav1.Condition{condition(oauthv1alpha1.ConditionReconciling, true, ReasonSyncFailed, "")}
	refused := needsHuman(ReasonNamespaceNotAllowed, "TokenServer a/auth does not admit clients from namespace b")
	migration := needsHuman(ReasonMigrationFailed, "Job auth-migrate-x failed")
	failed := errors.New("push client x: 503")
	ready := []metav1.Condition{condition(oauthv1alpha1.ConditionReady, false, ReasonSyncFailed, "push client x: 503")}
	tests := map[string]struct {
		was   []metav1.Condition
		err   error
		conds []metav1.Condition
		want  string // the event, "" for none
	}{
		"stalls":                     {err: refused, want: "Warning NamespaceNotAllowed TokenServer a/auth does not admit"},
		"still stalled: no repeat":   {was: stalledAt(ReasonNamespaceNotAllowed), err: refused},
		"stalled for another reason": {was: stalledAt(ReasonNamespaceNotAllowed), err: migration, want: "Warning MigrationFailed Job auth-migrate-x failed"},
		"fails":                      {err: failed, conds: ready, want: "Warning SyncFailed push client x: 503"},
		"still failing: no repeat":   {was: failing, err: failed, conds: ready},
		"waits: no event":            {err: waiting(ReasonServerNotReady, "waiting for TokenServer a/auth")},
		"goes through: no event":     {was: stalledAt(ReasonNamespaceNotAllowed)},
		// The upgrade records its own events (internal/upgrade).
		"an upgrade rolled back: Stalled, no second event": {
			conds: []metav1.Condition{condition(oauthv1alpha1.ConditionDegraded, true, oauthv1alpha1.ReasonUpgradeRolledBack, "v2 rolled back")}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rec := events.NewFakeRecorder(2)
			reconciling, stalled := progress(tc.err, tc.conds)
			warnOnce(rec, &oauthv1alpha1.OAuthClient{}, tc.was, stalled, reconciling, tc.err)
			close(rec.Events)
			var got []string
			for e := range rec.Events {
				got = append(got, e)
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("events %q, want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want)):
				t.Errorf("events %q, want one starting %q", got, tc.want)
			}
		})
	}
}

func TestSoonest(t *testing.T) {
	tests := map[string]struct {
		in   []time.Duration
		want time.Duration
	}{
		"none":             {nil, 0},
		"zeros mean none":  {[]time.Duration{0, 0}, 0},
		"the shortest":     {[]time.Duration{time.Minute, 30 * time.Second, 0}, 30 * time.Second},
		"one is the whole": {[]time.Duration{0, time.Hour}, time.Hour},
	}
	for name, tc := range tests {
		if got := soonest(tc.in...); got != tc.want {
			t.Errorf("%s: soonest(%v) = %s, want %s", name, tc.in, got, tc.want)
		}
	}
}
