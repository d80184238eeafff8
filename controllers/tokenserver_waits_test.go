package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
)

// TestTokenServerSecretDeadline: a bundled TokenServer whose external database's
// Secret does not exist reads Reconciling SecretMissing (kstatus InProgress, Argo CD
// Progressing) up to spec.progressDeadline, then Stalled=True
// ProgressDeadlineExceeded naming the Secret, its key and the field (kstatus
// Failed, Argo CD Degraded) with a Warning event, where before it read Reconciling
// forever. The count lives in status: an operator started after the deadline stalls
// at its first pass. Once that Secret exists the server waits for the next one it
// names (the users Secret): another cause, so a new count, Reconciling again though
// the first wait began more than a deadline ago; past its own deadline it stalls
// naming that Secret, and once it exists the server is Ready, nothing Stalled left.
func TestTokenServerSecretDeadline(t *testing.T) {
	step := advanceOperatorClock(t)
	health := argoHealthScripts(t)
	ns := namespace(t, "secretwait", nil)
	ts, _ := bundledServer(t, ns, func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.ProgressDeadline = "5s"
		ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{
			SecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-dsn", Key: "dsn"}}}
		ts.Spec.Login = &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"}}
	})
	first := waitFor(t, ts, controllers.ReasonSecretMissing, "Secret auth-dsn key dsn")
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")

	restartOperator(t, func() { step(6 * time.Second) })
	stalled := waitStalled(t, ts, "waiting for Secret auth-dsn with key dsn (spec.database.external.secretRef); "+
		"no progress for 5s (spec.progressDeadline)")
	if r := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse ||
		r.Reason != controllers.ReasonProgressDeadlineExceeded {
		t.Errorf("Ready %+v, want False, %s", r, controllers.ReasonProgressDeadlineExceeded)
	}
	if ts.Status.Waiting == nil || !ts.Status.Waiting.Since.Equal(&first.Since) {
		t.Errorf("status.waiting %+v, want it still counting from %s", ts.Status.Waiting, first.Since)
	}
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")
	waitDeadlineWarning(t, ns, ts.Name, stalled.Message)

	createSecret(t, ns, "auth-dsn", map[string]string{"dsn": "postgres://auth@db.example.com:5432/auth?sslmode=verify-full"})
	second := waitFor(t, ts, controllers.ReasonSecretMissing, "Secret auth-users")
	newCount(t, ts, second, first, "waiting for Secret auth-users (spec.login.usersSecretRef)")
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")

	step(6 * time.Second)
	poke(t, ts)
	stalled = waitStalled(t, ts, "waiting for Secret auth-users (spec.login.usersSecretRef); no progress for 5s (spec.progressDeadline)")
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")
	waitDeadlineWarning(t, ns, ts.Name, stalled.Message)

	createSecret(t, ns, "auth-users", map[string]string{"users": "alice:$2y$10$abcdefghijklmnopqrstuuDCmUqMzDpFOe5YDz7L9dNaUv4ABQWnS"})
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAvailable)
	checkRecovered(t, health, ts)
}

// TestExternalTokenServerSecretDeadline: an external TokenServer's Secrets (its admin
// API's CA, spec.external.caSecretRef, and admin token, spec.external.tokenSecretRef)
// are waited for as a bundled server's are, each on its own: a missing one reads
// Reconciling SecretMissing naming it and the field, Stalled past the deadline, not
// "the admin API does not answer"; a CA that holds no certificate reads
// InvalidSecret. Fixing one is progress (found by review 18: the next Secret stalled
// at once): the wait for the next starts a new count. Each Secret's creation brings a
// pass, with no other change.
func TestExternalTokenServerSecretDeadline(t *testing.T) {
	ctx := context.Background()
	step := advanceOperatorClock(t)
	health := argoHealthScripts(t)
	ns := namespace(t, "extsecretwait", nil)
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), ProgressDeadline: "5s",
			External: &oauthv1alpha1.ExternalTokenServer{AdminURL: admin.BaseURL, Insecure: true,
				CASecretRef:    &oauthv1alpha1.SecretKeyReference{Name: "auth-ca"},
				TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })
	first := waitFor(t, ts, controllers.ReasonSecretMissing, "Secret auth-ca key ca.crt")
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")
	step(6 * time.Second)
	poke(t, ts)
	stalled := waitStalled(t, ts, "waiting for Secret auth-ca with key ca.crt (spec.external.caSecretRef); "+
		"no progress for 5s (spec.progressDeadline)")
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")
	waitDeadlineWarning(t, ns, ts.Name, stalled.Message)

	createSecret(t, ns, "auth-ca", map[string]string{"ca.crt": "not a certificate"})
	invalid := waitFor(t, ts, controllers.ReasonInvalidSecret, "Secret auth-ca key ca.crt")
	newCount(t, ts, invalid, first, "Secret auth-ca key ca.crt holds no PEM certificate (spec.external.caSecretRef)")

	// Three seconds into this wait: a count that went on from here would stall
	// within the next, with six seconds since this one began.
	step(3 * time.Second)
	caPEM, _, err := adminpki.NewCA("external admin CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var ca corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "auth-ca"}, &ca); err != nil {
		t.Fatal(err)
	}
	ca.Data = map[string][]byte{"ca.crt": caPEM}
	if err := k8s.Update(ctx, &ca); err != nil {
		t.Fatal(err)
	}
	second := waitFor(t, ts, controllers.ReasonSecretMissing, "Secret auth-admin key token")
	newCount(t, ts, second, invalid, "waiting for Secret auth-admin with key token (spec.external.tokenSecretRef)")
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")

	createSecret(t, ns, "auth-admin", map[string]string{"token": adminToken})
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAdminReachable)
	checkRecovered(t, health, ts)
}

// newCount checks that w, the wait ts counts now, began after the wait before, and
// that ts reads Reconciling saying msg, not Stalled.
func newCount(t *testing.T, ts *oauthv1alpha1.TokenServer, w, before *oauthv1alpha1.Wait, msg string) {
	t.Helper()
	if !w.Since.After(before.Since.Time) {
		t.Errorf("status.waiting %+v, want a new count, after %s", w, before.Since)
	}
	for _, c := range []struct{ typ, want string }{
		{oauthv1alpha1.ConditionReconciling, msg},
		{oauthv1alpha1.ConditionStalled, ""},
	} {
		got := meta.FindStatusCondition(ts.Status.Conditions, c.typ)
		if (got == nil) != (c.want == "") || (got != nil && got.Message != c.want) {
			t.Errorf("%s %+v, want %q", c.typ, got, c.want)
		}
	}
}

// TestTokenServerAdminDeadline: a TokenServer whose admin API fails its health check
// (here an external one answering 503; a bundled one's counts the same) reads
// Reconciling AdminAPIUnreachable while it lasts less than spec.progressDeadline,
// and an answer in between starts the count again: a server that still serves does
// not go Stalled for a transient error. Past the deadline it reads Stalled=True
// ProgressDeadlineExceeded with the admin API's last error (kstatus Failed, Argo CD
// Degraded) and a Warning event, even across an operator restart, while the failure
// is still retried and counted in controller_runtime_reconcile_errors_total. Once
// the admin API answers it is Ready, nothing Stalled left.
func TestTokenServerAdminDeadline(t *testing.T) {
	ctx := context.Background()
	step := advanceOperatorClock(t)
	health := argoHealthScripts(t)
	ns := namespace(t, "adminwait", nil)
	srv, failing, refused := failingAdmin(t)
	// passesAfter returns once two more health checks were refused: the pass of the
	// second began after the first's had written its status, and both read the
	// operator's clock after the caller moved it.
	passesAfter := func() {
		t.Helper()
		n := refused.Load()
		eventually(t, 20*time.Second, "two more health checks", func() bool { return refused.Load() >= n+2 }, nil)
	}

	createSecret(t, ns, "auth-admin", map[string]string{"token": adminToken})
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), ProgressDeadline: "5s",
			External: &oauthv1alpha1.ExternalTokenServer{AdminURL: srv.URL, Insecure: true,
				TokenSecretRef: oauthv1alpha1.SecretKeyReference{Name: "auth-admin"}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	first := waitFor(t, ts, controllers.ReasonAdminUnreachable, "")
	checkGitOps(t, health, ts, status.InProgressStatus, "Progressing")

	// Four seconds of failing: less than the deadline.
	step(4 * time.Second)
	passesAfter()
	notStalled(t, ts, first)

	// It answers, then fails again: a new count, which the six seconds since the
	// first failure do not exhaust.
	failing.Store(false)
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAdminReachable)
	if ts.Status.Waiting != nil {
		t.Errorf("status.waiting %+v once Ready", ts.Status.Waiting)
	}
	failing.Store(true)
	again := waitFor(t, ts, controllers.ReasonAdminUnreachable, "")
	step(2 * time.Second)
	passesAfter()
	notStalled(t, ts, again)

	errorsBefore := tokenServerReconcileErrors(t)
	restartOperator(t, func() { step(4 * time.Second) })
	stalled := waitStalled(t, ts, "the admin API does not answer; no progress for 5s (spec.progressDeadline): admin API health check")
	if !strings.Contains(stalled.Message, "503 Service Unavailable") {
		t.Errorf("Stalled says %q, want the admin API's last error", stalled.Message)
	}
	if ts.Status.Waiting == nil || !ts.Status.Waiting.Since.Equal(&again.Since) {
		t.Errorf("status.waiting %+v, want it still counting from %s", ts.Status.Waiting, again.Since)
	}
	for _, c := range []struct {
		typ    string
		status metav1.ConditionStatus
	}{{oauthv1alpha1.ConditionReady, metav1.ConditionFalse}, {oauthv1alpha1.ConditionDegraded, metav1.ConditionTrue}} {
		if got := meta.FindStatusCondition(ts.Status.Conditions, c.typ); got == nil || got.Status != c.status ||
			got.Reason != controllers.ReasonProgressDeadlineExceeded {
			t.Errorf("%s %+v, want %s %s", c.typ, got, c.status, controllers.ReasonProgressDeadlineExceeded)
		}
	}
	checkGitOps(t, health, ts, status.FailedStatus, "Degraded")
	waitDeadlineWarning(t, ns, ts.Name, "the admin API does not answer")
	eventually(t, 20*time.Second, "the stalled passes still counted as reconcile errors", func() bool {
		return tokenServerReconcileErrors(t)-errorsBefore >= 2
	}, nil)

	failing.Store(false)
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, controllers.ReasonAdminReachable)
	checkRecovered(t, health, ts)
}

// waitFor waits until ts counts a wait for reason (and object, when given) in
// status.waiting, reading Reconciling with that reason, and returns the wait.
func waitFor(t *testing.T, ts *oauthv1alpha1.TokenServer, reason, object string) *oauthv1alpha1.Wait {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("status.waiting for %s %s", reason, object), func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return false
		}
		w, r := ts.Status.Waiting, meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReconciling)
		return w != nil && w.Reason == reason && (object == "" || w.Object == object) && r != nil && r.Reason == reason
	}, func() string {
		return fmt.Sprintf("status.waiting %+v, conditions %+v", ts.Status.Waiting, ts.Status.Conditions)
	})
	return ts.Status.Waiting.DeepCopy()
}

// waitStalled waits for Stalled=True ProgressDeadlineExceeded saying part, and
// checks that nothing reads Reconciling beside it.
func waitStalled(t *testing.T, ts *oauthv1alpha1.TokenServer, part string) *metav1.Condition {
	t.Helper()
	var stalled *metav1.Condition
	eventually(t, 20*time.Second, "Stalled saying "+part, func() bool {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
			return false
		}
		stalled = meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled)
		return stalled != nil && stalled.Status == metav1.ConditionTrue && stalled.Reason == controllers.ReasonProgressDeadlineExceeded &&
			strings.Contains(stalled.Message, part)
	}, func() string { return fmt.Sprintf("conditions %+v", ts.Status.Conditions) })
	t.Logf("Stalled: %s", stalled.Message)
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReconciling); c != nil {
		t.Errorf("Reconciling %+v beside Stalled", c)
	}
	return stalled
}

// notStalled checks that ts, as last read, still counts the wait w and is not Stalled.
func notStalled(t *testing.T, ts *oauthv1alpha1.TokenServer, w *oauthv1alpha1.Wait) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled); c != nil {
		t.Errorf("Stalled %+v before the deadline", c)
	}
	if ts.Status.Waiting == nil || !ts.Status.Waiting.Since.Equal(&w.Since) {
		t.Errorf("status.waiting %+v, want the count since %s", ts.Status.Waiting, w.Since)
	}
}

// waitDeadlineWarning waits for a Warning event ProgressDeadlineExceeded on the object
// name whose note says part.
func waitDeadlineWarning(t *testing.T, ns, name, part string) {
	const reason = controllers.ReasonProgressDeadlineExceeded
	t.Helper()
	var notes []string
	eventually(t, 20*time.Second, fmt.Sprintf("a Warning event %s on %s/%s saying %q", reason, ns, name, part), func() bool {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false
		}
		notes = notes[:0]
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
				if strings.Contains(e.Note, part) {
					return true
				}
				notes = append(notes, e.Note)
			}
		}
		return false
	}, func() string { return fmt.Sprintf("events %s: %q", reason, notes) })
}

func createSecret(t *testing.T, ns, name string, data map[string]string) {
	t.Helper()
	if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		StringData: data}); err != nil {
		t.Fatal(err)
	}
}

// failingAdmin is the shared token server's admin API behind a proxy that answers
// 503 while failing is set (as it is at first), counting the requests it refuses.
func failingAdmin(t *testing.T) (srv *httptest.Server, failing *atomic.Bool, refused *atomic.Int32) {
	t.Helper()
	target, err := url.Parse(admin.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	failing, refused = &atomic.Bool{}, &atomic.Int32{}
	failing.Store(true)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			refused.Add(1)
			http.Error(w, "the database is unavailable", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, failing, refused
}

// checkRecovered checks that a Ready ts keeps nothing of a wait: no Stalled or
// Reconciling condition, no status.waiting, and kstatus and Argo CD read it Current
// and Healthy.
func checkRecovered(t *testing.T, health map[string]string, ts *oauthv1alpha1.TokenServer) {
	t.Helper()
	for _, typ := range []string{oauthv1alpha1.ConditionStalled, oauthv1alpha1.ConditionReconciling} {
		if c := meta.FindStatusCondition(ts.Status.Conditions, typ); c != nil {
			t.Errorf("%s %+v once Ready", typ, c)
		}
	}
	if ts.Status.Waiting != nil {
		t.Errorf("status.waiting %+v once Ready", ts.Status.Waiting)
	}
	checkGitOps(t, health, ts, status.CurrentStatus, "Healthy")
}
