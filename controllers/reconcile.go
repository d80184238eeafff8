package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// The skeleton every reconciler of this package that reports status runs a pass
// through, as Cluster API's controllers do: begin (fetch; finalize a deleting object;
// otherwise hold the finalizer before any work), the phases, then finish (conditions,
// observedGeneration, one status patch, controller-runtime's result). The phases end
// early with a *conditionError for a state the status reports, or with any other
// error for a failure.

// conditionError ends a pass in a state the object's conditions report: waiting for
// something (a database, a Secret, another object to be Ready) or refused until a
// human changes something. It is not a failure: the pass returns no error to
// controller-runtime, and the object is looked at again after requeue (0: only when a
// watch brings it). Its message is already the user's: it is not wrapped.
type conditionError struct {
	reason, message string
	// requeue is when to look again; 0: only on watch events.
	requeue time.Duration
	// human: a retry will not fix it (Stalled; TokenServer: Degraded); otherwise the
	// object waits (Reconciling; TokenServer: Progressing).
	human bool
	// pods: a wait for the pods of an object, which a TokenServer's
	// spec.progressDeadline bounds (tokenserver_progress.go); nil for any other.
	pods *podWait
	// object: a wait for an object the TokenServer names ("Secret db key dsn"),
	// which its spec.progressDeadline bounds too; another object is another wait.
	object string
	// cause: a failure this condition reports (a deadline passed while it lasted).
	// finish returns it as well, so that controller-runtime goes on retrying it with
	// backoff and counting it (controller_runtime_reconcile_errors_total).
	cause error
}

func (e *conditionError) Error() string { return e.reason + ": " + e.message }

// waiting is a pass waiting for something that will happen without a human: a watch
// (or .after) brings the next pass.
func waiting(reason, message string) *conditionError {
	return &conditionError{reason: reason, message: message}
}

// needsHuman is a pass refused until someone changes a spec, a Secret or a policy.
func needsHuman(reason, message string) *conditionError {
	return &conditionError{reason: reason, message: message, human: true}
}

// waitingOn marks e as a wait for object, named as the user knows it.
func (e *conditionError) waitingOn(object string) *conditionError {
	e.object = object
	return e
}

// after sets when to look again even if no watch brings a change.
func (e *conditionError) after(d time.Duration) *conditionError {
	e.requeue = d
	return e
}

// conditionOf finds the condition error in err's chain, through any wrapping.
func conditionOf(err error) (*conditionError, bool) {
	var ce *conditionError
	return ce, errors.As(err, &ce)
}

// begin fetches req's object into obj and returns the copy the status patch is made
// from. The zero T (nil) ends the pass at once with err: the object is gone, or it is
// being deleted and finalize ran. A kind with a finalizer (finalize not nil) holds it
// before any work, so that nothing is put on a token server that a delete could
// leave behind.
func begin[T client.Object](ctx context.Context, c client.Client, req ctrl.Request, obj T,
	finalize func(context.Context, T) error) (before T, err error) {
	var none T
	if err := c.Get(ctx, req.NamespacedName, obj); err != nil {
		return none, client.IgnoreNotFound(err)
	}
	if finalize == nil {
		return obj.DeepCopyObject().(T), nil
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return none, finalize(ctx, obj)
	}
	if controllerutil.AddFinalizer(obj, Finalizer) {
		if err := c.Update(ctx, obj); err != nil {
			return none, fmt.Errorf("add finalizer: %w", err)
		}
	}
	return obj.DeepCopyObject().(T), nil
}

// releaseFinalizer lets a deleted object go once its finalize has done its work.
func releaseFinalizer(ctx context.Context, c client.Client, obj client.Object) error {
	controllerutil.RemoveFinalizer(obj, Finalizer)
	if err := c.Update(ctx, obj); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}

// ReasonDeleteFailed: a deleted OAuthClient or ConsentGrant stays Terminating because
// its finalizer could not undo it on the token server (deregister the client, revoke
// the grant); the delete is retried with backoff.
const ReasonDeleteFailed = "DeleteFailed"

// holdDelete reports a finalize that failed (err) on obj, whose status conditions are
// conds: without it a delete held by the finalizer shows nothing in kubectl describe
// but Terminating. Ready=False and Reconciling=True DeleteFailed say why, and a
// Warning event says so when the object enters that state, not on every retry. It
// returns err, so that controller-runtime retries the delete with backoff.
func holdDelete(ctx context.Context, c client.Client, rec events.EventRecorder, obj client.Object, conds *[]metav1.Condition,
	what string, err error) error {
	before := obj.DeepCopyObject().(client.Object)
	was := slices.Clone(*conds)
	msg := what + "; the delete completes once it does (retried with backoff): " + err.Error()
	reconciling := condition(oauthv1alpha1.ConditionReconciling, true, ReasonDeleteFailed, msg)
	for _, cond := range []metav1.Condition{condition(oauthv1alpha1.ConditionReady, false, ReasonDeleteFailed, msg), reconciling} {
		cond.ObservedGeneration = obj.GetGeneration()
		meta.SetStatusCondition(conds, cond)
	}
	meta.RemoveStatusCondition(conds, oauthv1alpha1.ConditionStalled)
	recordOnce(rec, obj, was, &reconciling)
	if !equality.Semantic.DeepEqual(was, *conds) {
		if perr := patchStatus(ctx, c, before, obj); perr != nil {
			return errors.Join(err, perr)
		}
	}
	return err
}

// reported points at what finish writes in a kind's status.
type reported struct {
	conditions         *[]metav1.Condition
	observedGeneration *int64
	// status is the whole status, compared with the before-copy's: a pass that
	// changed nothing writes nothing.
	status any
}

// kind is what finish needs to know of a kind that reports status.
type kind[T client.Object] struct {
	status func(T) reported
	// conditions turns the pass's error (nil: it succeeded; a *conditionError; any
	// other: a failure) into the kind's conditions. Pure: table-tested.
	conditions func(obj T, err error) []metav1.Condition
}

// finish ends a pass over obj, fetched as before: the kind's conditions for the
// outcome, Reconciling and Stalled (progress), status.observedGeneration, and one
// status patch when the status changed. It returns controller-runtime's pair: a pass
// that succeeded is looked at again after next (0: on watch events only); a
// condition error is reported, not returned, and looked at again after its requeue;
// any other error is returned, so that controller-runtime retries it with backoff and
// counts it (controller_runtime_reconcile_errors_total).
//
// observedGeneration says that the conditions are this generation's verdict: it
// advances when the pass went through, waits or stalled, not when an error (the API
// server, the token server) cut it short. kstatus reads a status whose
// observedGeneration lags as InProgress, whatever its conditions say.
//
// A pass that ends Stalled, or failed, records one Warning event with the condition's
// reason (SyncFailed, MigrationFailed, NamespaceNotAllowed, ...) when the object was
// not already in it: a refused object says so once, not on every resync, and a
// pass that went through records none (every event is a write to the API server).
func finish[T client.Object](ctx context.Context, c client.Client, rec events.EventRecorder, k kind[T], before, obj T,
	next time.Duration, err error) (ctrl.Result, error) {
	st := k.status(obj)
	conds := k.conditions(obj, err)
	for _, cond := range conds {
		cond.ObservedGeneration = obj.GetGeneration()
		meta.SetStatusCondition(st.conditions, cond)
	}
	reconciling, stalled := progress(err, conds)
	for _, p := range []struct {
		typ  string
		cond *metav1.Condition
	}{{oauthv1alpha1.ConditionReconciling, reconciling}, {oauthv1alpha1.ConditionStalled, stalled}} {
		if p.cond == nil {
			meta.RemoveStatusCondition(st.conditions, p.typ)
			continue
		}
		p.cond.ObservedGeneration = obj.GetGeneration()
		meta.SetStatusCondition(st.conditions, *p.cond)
	}
	warnOnce(rec, obj, *k.status(before).conditions, stalled, reconciling, err)
	for _, typ := range retiredConditions {
		meta.RemoveStatusCondition(st.conditions, typ)
	}
	ce, reported := conditionOf(err)
	if err == nil || reported {
		*st.observedGeneration = obj.GetGeneration()
	}
	if !equality.Semantic.DeepEqual(k.status(before).status, st.status) {
		if perr := patchStatus(ctx, c, before, obj); perr != nil {
			if reported {
				return ctrl.Result{}, perr
			}
			return ctrl.Result{}, errors.Join(err, perr)
		}
	}
	switch {
	case reported && ce.cause != nil:
		return ctrl.Result{}, ce.cause
	case reported:
		return ctrl.Result{RequeueAfter: ce.requeue}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// warnOnce records a Warning event for a pass that failed: stalled by a
// needs-a-human condition error, or cut short by any other error (Reconciling while
// controller-runtime retries). States a kind's conditions report without the pass
// failing (TokenServer's upgrade and page templates) record their own events.
func warnOnce(rec events.EventRecorder, obj runtime.Object, was []metav1.Condition, stalled, reconciling *metav1.Condition, err error) {
	failure := reconciling
	switch ce, reported := conditionOf(err); {
	case err == nil, reported && !ce.human:
		return
	case reported:
		failure = stalled
	}
	recordOnce(rec, obj, was, failure)
}

// recordOnce records failure, a condition, as a Warning event with its reason unless
// the conditions before the pass (was) already had it: an object that stays refused
// says so once, not on every resync.
func recordOnce(rec events.EventRecorder, obj runtime.Object, was []metav1.Condition, failure *metav1.Condition) {
	if failure == nil || rec == nil {
		return
	}
	if old := meta.FindStatusCondition(was, failure.Type); old != nil && old.Status == metav1.ConditionTrue && old.Reason == failure.Reason {
		return
	}
	// An event's note may not pass 1024 bytes (events.k8s.io/v1): a longer one is
	// refused, and the warning lost.
	rec.Eventf(obj, nil, corev1.EventTypeWarning, failure.Reason, "Reconcile", "%s", quote(failure.Message, 1024))
}

// retiredConditions are condition types earlier versions set: an object they were
// left on loses them at its next pass. (Synced said what Ready says; Reconciling and
// Stalled now say what it could not.)
var retiredConditions = []string{"Synced"}

// progress is what kstatus (Flux, kpt, cli-utils) and the Argo CD health checks of
// docs/argocd-health.md read of a pass, for every kind alike: Reconciling while the
// operator is still at it, Stalled when only a human can move it on. Both follow
// kstatus's abnormal-true convention and are absent (nil) when not True, as Flux's own
// controllers have them; at most one is True. conds are the kind's conditions for the
// pass.
//
//   - a needs-a-human condition error: Stalled, with its reason and message;
//   - a waiting condition error: Reconciling, with its reason and message;
//   - any other error: Reconciling, as Ready reads it (SyncFailed, ReconcileFailed,
//     AdminAPIUnreachable): controller-runtime retries it with backoff;
//   - a pass that went through, on a kind that also reports Progressing and Degraded
//     (TokenServer: an upgrade, the page templates): Progressing=True is
//     Reconciling until the new image serves every request (upgrade.SpecMet: after
//     promotion, the rest of the upgrade reads only as Progressing); Degraded=True is Stalled (an upgrade rolled back, refused or
//     failed, templates missing or invalid: each needs spec.image or the templates
//     changed), but while the operator's own rollback is under way (Progressing,
//     unless stuck past its deadline).
func progress(err error, conds []metav1.Condition) (reconciling, stalled *metav1.Condition) {
	isTrue := func(typ, reason, message string) *metav1.Condition {
		c := condition(typ, true, reason, message)
		return &c
	}
	ce, reported := conditionOf(err)
	switch {
	case reported && ce.human:
		return nil, isTrue(oauthv1alpha1.ConditionStalled, ce.reason, ce.message)
	case reported:
		return isTrue(oauthv1alpha1.ConditionReconciling, ce.reason, ce.message), nil
	case err != nil:
		reason, message := ReasonRetrying, err.Error()
		if r := meta.FindStatusCondition(conds, oauthv1alpha1.ConditionReady); r != nil && r.Status != metav1.ConditionTrue {
			reason, message = r.Reason, r.Message
		}
		return isTrue(oauthv1alpha1.ConditionReconciling, reason, message), nil
	}
	progressing := meta.FindStatusCondition(conds, oauthv1alpha1.ConditionProgressing)
	degraded := meta.FindStatusCondition(conds, oauthv1alpha1.ConditionDegraded)
	moving := progressing != nil && progressing.Status == metav1.ConditionTrue
	switch {
	case degraded != nil && degraded.Status == metav1.ConditionTrue && (!moving || waitsForPerson(degraded.Reason)):
		return nil, isTrue(oauthv1alpha1.ConditionStalled, degraded.Reason, degraded.Message)
	case moving && !upgrade.SpecMet(*progressing):
		return isTrue(oauthv1alpha1.ConditionReconciling, progressing.Reason, progressing.Message), nil
	}
	return nil, nil
}

// waitsForPerson says whether an upgrade that is Degraded for reason, though still in
// a phase that moves, can move no further without a person: a rollback that cannot
// finish, or a cutover or cut back whose Job failed every time it was tried (it may
// have passed its point of no return, so nothing undoes it by itself). Stalled, not
// Reconciling: a GitOps tool must show it failed rather than wait for it.
func waitsForPerson(reason string) bool {
	return reason == upgrade.ReasonRollbackStuck || reason == oauthv1alpha1.ReasonCutoverFailed
}

// ReasonRetrying: Reconciling after a failure whose kind has no Ready reason for it.
const ReasonRetrying = "Retrying"

// patchStatus patches obj's status from before. An object deleted meanwhile has no
// status left to write.
func patchStatus(ctx context.Context, c client.Client, before, obj client.Object) error {
	patch := client.MergeFrom(before)
	if _, ok := obj.(*oauthv1alpha1.TokenServer); ok {
		// A TokenServer's status carries state from pass to pass (status.waiting counts
		// toward the progress deadline, status.upgrade drives an upgrade): a pass that
		// read it from a cache that had not yet seen the previous pass's write must not
		// write its stale view over it. It gets a conflict, and the retry reads afresh.
		patch = client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	}
	if err := c.Status().Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

// condition is a condition of type t, True when ok.
func condition(t string, ok bool, reason, message string) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: st, Reason: reason, Message: message}
}

// soonest is the shortest of the positive durations ds; 0 if there is none.
func soonest(ds ...time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		if d > 0 && (s == 0 || d < s) {
			s = d
		}
	}
	return s
}
