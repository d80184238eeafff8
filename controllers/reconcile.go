package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
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
	// human: a retry will not fix it (TokenServer: Degraded); otherwise the object
	// waits (Progressing, or Ready=False).
	human bool
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
// outcome, status.observedGeneration, and one status patch when the status changed.
// It returns controller-runtime's pair: a pass that succeeded is looked at again after
// next (0: on watch events only); a condition error is reported, not returned, and
// looked at again after its requeue; any other error is returned, so that
// controller-runtime retries it with backoff and counts it
// (controller_runtime_reconcile_errors_total).
//
// Everything a pass reports is written here, in one place: conditions such as
// Reconciling or Stalled, or an observedGeneration that only advances once a pass
// has gone through, are a change to this function.
func finish[T client.Object](ctx context.Context, c client.Client, k kind[T], before, obj T,
	next time.Duration, err error) (ctrl.Result, error) {
	st := k.status(obj)
	for _, cond := range k.conditions(obj, err) {
		cond.ObservedGeneration = obj.GetGeneration()
		meta.SetStatusCondition(st.conditions, cond)
	}
	*st.observedGeneration = obj.GetGeneration()
	ce, reported := conditionOf(err)
	if !equality.Semantic.DeepEqual(k.status(before).status, st.status) {
		if perr := patchStatus(ctx, c, before, obj); perr != nil {
			if reported {
				return ctrl.Result{}, perr
			}
			return ctrl.Result{}, errors.Join(err, perr)
		}
	}
	switch {
	case reported:
		return ctrl.Result{RequeueAfter: ce.requeue}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// patchStatus patches obj's status from before. An object deleted meanwhile has no
// status left to write.
func patchStatus(ctx context.Context, c client.Client, before, obj client.Object) error {
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
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
