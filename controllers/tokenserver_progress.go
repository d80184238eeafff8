package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// ReasonProgressDeadlineExceeded: a TokenServer waited spec.progressDeadline without
// progress: for pods (its database's, its migrations Job's, its own), for a Secret it
// names, or for its admin API to answer. The message says what keeps it back. (The
// same word as the upgrade's rollback reason: it means the same thing, a deadline
// without progress, outside an upgrade.)
const ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"

// defaultProgressDeadline is spec.progressDeadline when unset (the CRD defaults it):
// a Deployment's progressDeadlineSeconds default.
const defaultProgressDeadline = 10 * time.Minute

// The reason a StatefulSet's or Job's controller records an event with when the API
// server refuses one of its pods (a quota, a LimitRange, PodSecurity, an admission
// webhook, a missing ServiceAccount): the only place that refusal is written down,
// since the pod never exists.
const reasonFailedCreate = "FailedCreate"

// The operator reads those events (never watched: only a pass past the deadline
// lists them, by the owner's uid, straight from the API server).
// +kubebuilder:rbac:groups="",resources=events,verbs=list

// podWait is what a waiting pass waits for: the pods of owner, a StatefulSet or a Job.
type podWait struct {
	owner client.Object
	kind  string
	// created, ready and want count owner's pods: made, ready, wanted.
	created, ready, want int32
}

// waitingFor marks e as a wait for the pods w counts.
func (e *conditionError) waitingFor(w podWait) *conditionError {
	e.pods = &w
	return e
}

// boundedWait is a wait spec.progressDeadline bounds: its reason, the object it
// waits for when the reason does not say (a Secret), and how many of its pods are
// ready (for a wait for pods).
type boundedWait struct {
	reason, object string
	ready          int32
}

// waitOf is what a pass whose outcome is err waits for, as spec.progressDeadline
// counts it. ok is false when nothing is: the pass went through, it is refused
// (Stalled already), or what it waits for comes at once by itself (an object just
// made, not yet in the cache). keep says the pass tells nothing either way (the API
// server failed): the count stays as it is. Pure: table-tested.
//
// While an upgrade runs, spec.upgrade.progressDeadline bounds the waits for pods and
// the admin API (the upgrade checks both and rolls back); a wait for a Secret holds
// the whole pass, the upgrade's steps with it, and counts all the same.
func waitOf(ts *oauthv1alpha1.TokenServer, err error) (w boundedWait, ok, keep bool) {
	upgrading := ts.Spec.External == nil && upgrade.Active(&ts.Status)
	ce, reported := conditionOf(err)
	switch {
	case err == nil:
		return w, false, false
	case reported && ce.object != "" && !ce.human:
		return boundedWait{reason: ce.reason, object: ce.object}, true, false
	case reported && ce.pods != nil && ce.pods.ready < ce.pods.want && !upgrading:
		// A migration Job's pod ready runs its migrations, for as long as they take:
		// what is awaited is no longer pods.
		return boundedWait{reason: ce.reason, ready: ce.pods.ready}, true, false
	case reported:
		return w, false, false
	case adminUnreachable(ts, err):
		return boundedWait{reason: ReasonAdminUnreachable}, !upgrading, false
	}
	return w, false, true
}

// adminUnreachable says whether err, a pass's failure, is the admin API's, as the
// Ready condition reports it (serverConditions): a bundled server's that does not
// answer through its Service, or any of an external server's (its URL, token and
// CA are all the admin API's).
func adminUnreachable(ts *oauthv1alpha1.TokenServer, err error) bool {
	return ts.Spec.External != nil || errors.Is(err, errServerNotReady)
}

// nextWait is status.waiting after a pass that waits (w), for the TokenServer's
// generation gen, at now; last is the previous pass's (nil: none). Progress, as a
// Deployment counts it, starts the count again: a wait for something else (the next
// phase, another Secret), a new generation (a spec change, which may be the fix),
// one pod more ready than last seen. A pod that goes unready is remembered as such,
// so that it coming back counts too. A failed check of the admin API amid a rollout
// whose pods serve is no progress either way: the rollout's count goes on, so that
// an occasional failure does not start it again. Pure: table-tested.
func nextWait(last *oauthv1alpha1.Wait, w boundedWait, gen int64, now time.Time) *oauthv1alpha1.Wait {
	if last != nil && w.reason == ReasonAdminUnreachable && last.Reason == ReasonRollingOut && last.ReadyReplicas > 0 &&
		last.Generation == gen {
		return last.DeepCopy()
	}
	if last != nil && last.Reason == w.reason && last.Object == w.object && last.Generation == gen && w.ready <= last.ReadyReplicas {
		next := last.DeepCopy()
		next.ReadyReplicas = w.ready
		return next
	}
	// Seconds, as the API server stores it: the copy in hand equals the one read back.
	return &oauthv1alpha1.Wait{Reason: w.reason, Object: w.object, ReadyReplicas: w.ready, Generation: gen,
		Since: metav1.NewTime(now).Rfc3339Copy()}
}

// progressDeadlineOf is the TokenServer's spec.progressDeadline.
func progressDeadlineOf(ts *oauthv1alpha1.TokenServer) time.Duration {
	if d, err := ts.Spec.ProgressDeadline.Parse(); err == nil && d > 0 {
		return d
	}
	return defaultProgressDeadline
}

// progressDeadline bounds a TokenServer's waits (waitOf): err is the pass's outcome,
// and the result is what the pass reports. A wait that made no progress for
// spec.progressDeadline becomes Stalled, ProgressDeadlineExceeded, naming the cause:
// what keeps the pods back (whyNoProgress), the Secret and the field naming it, or
// the admin API's last error. A wait with time left is looked at again when it runs
// out, so that the deadline is noticed with no other event (a failure of the admin
// API is retried with backoff anyway). The count lives in status.waiting: an
// operator restart goes on with it.
//
// The admin API's failure stays a failure past the deadline (Stalled's cause): it is
// retried with backoff and counted as before, and one shorter than the deadline, on
// a server that otherwise serves, reads Reconciling only.
func (r *TokenServerReconciler) progressDeadline(ctx context.Context, ts *oauthv1alpha1.TokenServer, err error) error {
	bw, ok, keep := waitOf(ts, err)
	switch {
	case keep:
		return err
	case !ok:
		ts.Status.Waiting = nil
		return err
	}
	now := r.Clock.Now()
	w := nextWait(ts.Status.Waiting, bw, ts.Generation, now)
	ts.Status.Waiting = w
	deadline := progressDeadlineOf(ts)
	ce, reported := conditionOf(err)
	if left := w.Since.Add(deadline).Sub(now); left > 0 {
		if reported {
			ce.requeue = soonest(ce.requeue, left)
		}
		return err
	}
	switch {
	case !reported:
		stalled := needsHuman(ReasonProgressDeadlineExceeded, fmt.Sprintf("the admin API does not answer; no progress for %s "+
			"(spec.progressDeadline): %s", deadline, quote(err.Error(), maxQuoted)))
		stalled.cause = err
		return stalled
	case ce.pods != nil:
		return needsHuman(ReasonProgressDeadlineExceeded, fmt.Sprintf("%s; no progress for %s (spec.progressDeadline): %s",
			ce.message, deadline, r.whyNoProgress(ctx, ts, ce.pods)))
	}
	return needsHuman(ReasonProgressDeadlineExceeded, fmt.Sprintf("%s; no progress for %s (spec.progressDeadline)", ce.message, deadline))
}

// servingPastDeadline says whether a server stalled by its progress deadline still
// serves: its rollout's new pods never came (a scale-up, a roll of the pods) while
// others are ready behind the admin Service. It stays Ready, as a Deployment stays
// Available past its deadline: its clients keep working, and so do the OAuthClients,
// ConsentGrants and the consent mirror, which wait on its Ready; Stalled says the
// rollout needs a person, and kstatus reads Failed all the same. Pure.
func servingPastDeadline(ts *oauthv1alpha1.TokenServer, ce *conditionError) bool {
	w := ts.Status.Waiting
	// Not when the admin API fails (cause): the server is not Ready before the
	// deadline either.
	return ce.reason == ReasonProgressDeadlineExceeded && ce.cause == nil && w != nil && w.Reason == ReasonRollingOut &&
		ts.Status.ReadyReplicas > 0
}

// whyNoProgress says what keeps w's pods back, most telling first: the refusal of a
// pod that could not be created (its owner's latest FailedCreate event, which quotes
// the API server), a pod the scheduler cannot place, a container that cannot start;
// otherwise how many are ready.
func (r *TokenServerReconciler) whyNoProgress(ctx context.Context, ts *oauthv1alpha1.TokenServer, w *podWait) string {
	name := w.owner.GetName()
	var pods []corev1.Pod
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(ts.Namespace),
		client.MatchingLabels{resources.LabelInstance: ts.Name, LabelManagedBy: ManagedBy}); err == nil {
		for _, p := range list.Items {
			if metav1.IsControlledBy(&p, w.owner) {
				pods = append(pods, p)
			}
		}
		slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	}
	if w.created < w.want {
		ev, err := r.latestFailedCreate(ctx, w.owner, pods)
		switch {
		case err != nil:
			return fmt.Sprintf("%s %s has %d of %d pods, and its events could not be read: %v", w.kind, name, w.created, w.want, err)
		case ev != nil:
			return fmt.Sprintf("%s %s cannot create its pods: %s", w.kind, name, quote(ev.Message, maxQuoted))
		}
	}
	for i := range pods {
		if why := podTrouble(&pods[i]); why != "" {
			return why
		}
	}
	return fmt.Sprintf("%d of %d pods of %s %s ready", w.ready, w.want, w.kind, name)
}

// podTrouble is what keeps a pod from being ready, if the pod says: not scheduled
// (the scheduler's message names the resources, taints or affinity at fault), or a
// container waiting for a reason other than starting (ImagePullBackOff,
// CrashLoopBackOff, CreateContainerConfigError). Pure.
func podTrouble(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("pod %s cannot be scheduled: %s: %s", p.Name, c.Reason, quote(c.Message, maxQuoted))
		}
	}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if wt := cs.State.Waiting; wt != nil && wt.Reason != "" && wt.Reason != "ContainerCreating" && wt.Reason != "PodInitializing" {
			return fmt.Sprintf("pod %s container %s is waiting: %s: %s", p.Name, cs.Name, quote(wt.Reason, 64), quote(wt.Message, maxQuoted))
		}
	}
	return ""
}

// latestFailedCreate is owner's most recent FailedCreate event, or nil. An event
// that names one of pods, which exist, is of a refusal since overcome (a quota raised
// before): the event outlives it by an hour.
func (r *TokenServerReconciler) latestFailedCreate(ctx context.Context, owner client.Object, pods []corev1.Pod) (*corev1.Event, error) {
	var events corev1.EventList
	// At most maxFailedCreateEvents: a controller's recorder folds repeats into one
	// event, so an honest list is short, and anyone who may create Events in the
	// namespace could otherwise make every pass read a great many into the operator
	// every tenant shares.
	if err := r.APIReader.List(ctx, &events, client.InNamespace(owner.GetNamespace()), client.Limit(maxFailedCreateEvents),
		client.MatchingFields{"involvedObject.uid": string(owner.GetUID()), "reason": reasonFailedCreate}); err != nil {
		return nil, fmt.Errorf("list the events of %s: %w", owner.GetName(), err)
	}
	var latest *corev1.Event
	for i := range events.Items {
		e := &events.Items[i]
		if !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return namesPod(e.Message, p.Name) }) &&
			(latest == nil || lastSeen(e).After(lastSeen(latest))) {
			latest = e
		}
	}
	return latest, nil
}

const maxFailedCreateEvents = 50

// maxQuoted bounds what a condition quotes of a message others wrote (an admission
// webhook's refusal in an event, a scheduler's or kubelet's message): a policy
// engine's refusal can run to many kilobytes, and a condition's message may not pass
// 32768 characters nor an event's note 1024.
const maxQuoted = 512

// quote is s as a condition may quote it: control characters (terminal escapes, line
// breaks that would forge lines in kubectl describe, logs or a UI) replaced by
// spaces, and cut to at most max bytes, on a character boundary, marked with "…".
// Pure.
func quote(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// namesPod says whether a FailedCreate message is about the pod named name: the
// StatefulSet controller writes "Create Pod <name> in StatefulSet ...", and the API
// server's refusal quotes it (pods "<name>" is forbidden). A Job's pods have
// generated names, which its events do not know yet. Pure.
func namesPod(message, name string) bool {
	return strings.Contains(message, "Pod "+name+" ") || strings.Contains(message, `"`+name+`"`)
}

// lastSeen is when an event last happened, whichever API (core/v1 or
// events.k8s.io/v1) recorded it.
func lastSeen(e *corev1.Event) time.Time {
	t := e.CreationTimestamp.Time
	for _, c := range []time.Time{e.FirstTimestamp.Time, e.LastTimestamp.Time, e.EventTime.Time} {
		if c.After(t) {
			t = c
		}
	}
	if e.Series != nil && e.Series.LastObservedTime.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	return t
}
