package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// Reasons of TokenServer conditions.
const (
	ReasonAdminReachable   = "AdminAPIReachable"
	ReasonAdminUnreachable = "AdminAPIUnreachable"
	ReasonExternalServer   = "External"
	ReasonReconcileFailed  = "ReconcileFailed"
)

// TokenServerReconciler runs a bundled token server (its database, keys, migrations,
// StatefulSet and Services; tokenserver_managed.go) or, for spec.external, checks the
// admin API of one run elsewhere; either way it reports Ready, Progressing and Degraded.
type TokenServerReconciler struct {
	client.Client
	// Secrets reads the Secrets the reconciler needs (see CacheOptions).
	Secrets *SecretReader
	// APIReader reads what the cache does not hold: the events of a StatefulSet or
	// Job whose pods are refused (progressDeadline).
	APIReader client.Reader
	Recorder  events.EventRecorder
	// HealthInterval is how often a Ready server's admin API is checked again.
	HealthInterval time.Duration
	// Operator is admitted to the admin port by the NetworkPolicy; with no
	// namespace, no NetworkPolicies are made.
	Operator resources.OperatorPeer
	// Clock decides key rotation and certificate renewal (clock.RealClock when nil).
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// Reconcile runs the server's phases and reports them in Ready, Progressing and
// Degraded.
func (r *TokenServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ts := &oauthv1alpha1.TokenServer{}
	before, err := begin(ctx, r.Client, req, ts, nil)
	if before == nil {
		return ctrl.Result{}, err
	}
	ts.Status.Issuer = string(ts.Spec.Issuer)
	var next time.Duration
	var upgradeConds []metav1.Condition
	var pagesProblem *conditionError
	if ts.Spec.External != nil {
		err = r.reconcileExternal(ctx, ts)
	} else {
		var pagesHash string
		if pagesHash, pagesProblem, err = r.pages(ctx, ts); err == nil {
			upgradeConds, next, err = r.reconcileManaged(ctx, ts, pagesHash)
		}
	}
	err = r.progressDeadline(ctx, ts, err)
	log.FromContext(ctx).V(1).Info("reconciled token server", "error", err)
	// A Ready server's admin API is checked again every HealthInterval; the signing
	// key is rotated when due, whatever else the pass waits for.
	next = soonest(next, r.HealthInterval)
	if ce, ok := conditionOf(err); ok {
		// The owned objects' watches bring the next pass; the requeue is a safety net.
		ce.requeue = soonest(ce.requeue, 30*time.Second, next)
	}
	if pagesProblem != nil {
		// Not the pass's error (the rest went on): recorded here, as the upgrade
		// records its own.
		c := condition(oauthv1alpha1.ConditionStalled, true, pagesProblem.reason, pagesProblem.message)
		recordOnce(r.Recorder, ts, ts.Status.Conditions, &c)
	}
	k := serverKind
	k.conditions = func(ts *oauthv1alpha1.TokenServer, err error) []metav1.Condition {
		return withPages(withUpgrade(serverConditions(ts, err), upgradeConds), pagesProblem)
	}
	return finish(ctx, r.Client, r.Recorder, k, before, ts, next, err)
}

// reconcileExternal checks the admin API of a token server run elsewhere.
func (r *TokenServerReconciler) reconcileExternal(ctx context.Context, ts *oauthv1alpha1.TokenServer) error {
	ext := ts.Spec.External
	ts.Status.AdminEndpoint = ext.AdminURL
	// The Secrets first: one that is missing is a wait for it, as a bundled server's
	// are, not a failure of the admin API.
	if err := r.requireSecrets(ctx, ts.Namespace, externalSecrets(ext)); err != nil {
		return err
	}
	admin, err := adminClientFor(ctx, r.Secrets, ts)
	if err != nil {
		return err // it names the Secret or the field at fault
	}
	if err := admin.Health(ctx); err != nil {
		return fmt.Errorf("admin API health check: %w", err)
	}
	if ext.Insecure && insecureAdminURL(ext) {
		r.insecureWarning(ts)
	}
	return nil
}

// externalSecrets are the Secrets an external server's admin API needs: its CA, if
// named, and the admin token.
func externalSecrets(ext *oauthv1alpha1.ExternalTokenServer) []secretRef {
	var refs []secretRef
	if ref := ext.CASecretRef; ref != nil {
		refs = append(refs, secretRef{ref.Name, cmp.Or(ref.Key, resources.KeyCACert), "spec.external.caSecretRef", true})
	}
	// #nosec G101 -- a field path, not a credential
	return append(refs, secretRef{ext.TokenSecretRef.Name, cmp.Or(ext.TokenSecretRef.Key, "token"), "spec.external.tokenSecretRef", false})
}

// ReasonInsecureAdminURL: spec.external.insecure lets the admin token travel over http.
const ReasonInsecureAdminURL = "InsecureAdminURL"

const insecureNote = "; the admin token travels in clear text (http adminURL, spec.external.insecure: true)"

// insecureWarning says once, in a Warning event, that the admin token crosses the
// network unencrypted (Ready says it on every pass, see serverConditions): accepted
// because the TokenServer's author said so, never silently. It runs before the pass's
// conditions are set: the Ready it reads is the last pass's.
func (r *TokenServerReconciler) insecureWarning(ts *oauthv1alpha1.TokenServer) {
	old := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady)
	if old == nil || !strings.HasSuffix(old.Message, insecureNote) {
		r.Recorder.Eventf(ts, nil, corev1.EventTypeWarning, ReasonInsecureAdminURL, "Connect",
			"TokenServer %s/%s: spec.external.adminURL %s is http: the admin bearer token, which can register, change and "+
				"delete any client, crosses the network in clear text (spec.external.insecure: true)",
			ts.Namespace, ts.Name, ts.Spec.External.AdminURL)
	}
}

// serverKind: Ready, Progressing and Degraded, as Deployments have them.
var serverKind = kind[*oauthv1alpha1.TokenServer]{
	status: func(ts *oauthv1alpha1.TokenServer) reported {
		return reported{&ts.Status.Conditions, &ts.Status.ObservedGeneration, &ts.Status}
	},
	conditions: serverConditions,
}

// serverConditions turns the pass's outcome into Ready, Progressing and Degraded.
func serverConditions(ts *oauthv1alpha1.TokenServer, err error) []metav1.Condition {
	all := func(ready, progressing, degraded bool, reason, msg string) []metav1.Condition {
		return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, ready, reason, msg),
			condition(oauthv1alpha1.ConditionProgressing, progressing, reason, msg),
			condition(oauthv1alpha1.ConditionDegraded, degraded, reason, msg)}
	}
	ext := ts.Spec.External
	ce, reported := conditionOf(err)
	switch {
	case err == nil && ext != nil:
		conds := all(true, false, false, ReasonAdminReachable, "the admin API answers and accepts the token")
		if ext.Insecure && insecureAdminURL(ext) {
			conds[0].Message += insecureNote
		}
		return conds
	case err == nil:
		return all(true, false, false, ReasonAvailable, "every replica is ready and up to date")
	case reported && ce.human:
		return all(servingPastDeadline(ts, ce), false, true, ce.reason, ce.message)
	case reported:
		// Serving while rolling out is Ready: clients keep working.
		serving := ts.Status.ReadyReplicas > 0 || ext != nil
		return all(serving && ce.reason == ReasonRollingOut, true, false, ce.reason, ce.message)
	case errors.Is(err, errServerNotReady):
		return all(false, ext == nil, false, ReasonAdminUnreachable, err.Error())
	case ext != nil:
		return all(false, false, true, ReasonAdminUnreachable, err.Error())
	}
	return all(false, false, true, ReasonReconcileFailed, err.Error())
}

// SetupWithManager registers the reconciler and the objects it owns.
func (r *TokenServerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.HealthInterval == 0 {
		r.HealthInterval = time.Minute
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).For(&oauthv1alpha1.TokenServer{}).
		// A failed pass is retried with backoff, but a server that stays unreachable is
		// still checked every 10 s (or HealthInterval, if shorter), so that it is seen
		// Ready again, and its clients registered, soon after it comes back.
		WithOptions(controller.Options{RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](
			5*time.Millisecond, min(r.HealthInterval, 10*time.Second))}).
		Owns(&appsv1.StatefulSet{}).Owns(&batchv1.Job{}).Owns(&corev1.Service{}).
		// Secrets as metadata only: see SecretReader.
		Owns(&corev1.Secret{}, builder.OnlyMetadata).
		// The ConfigMaps the pods mount: an edit by someone else is undone at once
		// (writePages), not at the next resync.
		Owns(&corev1.ConfigMap{}, builder.OnlyMetadata).
		// A pod becoming ready behind the admin Service is what makes the server Ready;
		// behind the public Service, what moves an upgrade's promotion on.
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(serverOfSlice)).
		// A token server pod's readiness, image and labels are what an upgrade waits for.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(serverOfPod)).
		// The users, DSN and external admin-token Secrets are the user's: a change
		// rolls the pods (config hash) or reaches the admin API at once, not at the
		// next resync. So is the templates ConfigMap (checked, then copied: tokenserver_pages.go).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.serversReferringTo(userSecrets))).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.serversReferringTo(userConfigMaps))).
		Named("tokenserver").Complete(r)
}

// serversReferringTo maps a Secret or ConfigMap to the TokenServers of its namespace
// whose names (userSecrets, userConfigMaps) hold it. Objects the operator owns are
// left to Owns above; there are few TokenServers, so a list from the cache per event
// is cheap.
func (r *TokenServerReconciler) serversReferringTo(names func(*oauthv1alpha1.TokenServer) []string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		if metav1.GetControllerOf(o) != nil || o.GetLabels()[LabelManagedBy] == ManagedBy {
			return nil
		}
		var list oauthv1alpha1.TokenServerList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
			log.FromContext(ctx).Error(err, "listing TokenServers")
			return nil
		}
		var reqs []reconcile.Request
		for i := range list.Items {
			if slices.Contains(names(&list.Items[i]), o.GetName()) {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return reqs
	}
}

// userSecrets names the Secrets a TokenServer reads that the user provides.
func userSecrets(ts *oauthv1alpha1.TokenServer) []string {
	var names []string
	if l := ts.Spec.Login; l != nil && l.UsersSecretRef != nil {
		names = append(names, l.UsersSecretRef.Name)
	}
	if db := ts.Spec.Database; db != nil && db.External != nil {
		names = append(names, db.External.SecretRef.Name)
	}
	for _, ref := range []func(*oauthv1alpha1.TokenServer) (string, string){resources.UpstreamSecretRef, resources.UpstreamCARef} {
		if name, _ := ref(ts); name != "" {
			names = append(names, name)
		}
	}
	if ext := ts.Spec.External; ext != nil {
		for _, ref := range externalSecrets(ext) {
			names = append(names, ref.name)
		}
	}
	return names
}

// serverOfSlice maps an admin or public Service's EndpointSlice to its TokenServer.
// The public Service is named after the TokenServer; a name that is both (a server
// named x-admin) brings a pass of both, which is harmless.
func serverOfSlice(_ context.Context, o client.Object) []reconcile.Request {
	svc := o.GetLabels()[discoveryv1.LabelServiceName]
	if svc == "" || o.GetLabels()[LabelManagedBy] != ManagedBy {
		return nil
	}
	reqs := []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: svc}}}
	if name, ok := resources.ServerOfAdminService(svc); ok {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
	}
	return reqs
}

// serverOfPod maps a pod the operator made (through a StatefulSet or a Job) to its
// TokenServer.
func serverOfPod(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[resources.LabelInstance]
	if name == "" || o.GetLabels()[LabelManagedBy] != ManagedBy {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}
