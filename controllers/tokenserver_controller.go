package controllers

import (
	"context"
	"errors"
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
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
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
	Secrets  *SecretReader
	Recorder events.EventRecorder
	// HealthInterval is how often a Ready server's admin API is checked again.
	HealthInterval time.Duration
	// Operator is admitted to the admin port by the NetworkPolicy; with no
	// namespace, no NetworkPolicies are made.
	Operator resources.OperatorPeer
	// Clock decides key rotation and certificate renewal (clock.RealClock when nil).
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// Reconcile runs the server's phases and patches its status once.
func (r *TokenServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, req.NamespacedName, &ts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := ts.DeepCopy()
	ts.Status.ObservedGeneration = ts.Generation
	ts.Status.Issuer = string(ts.Spec.Issuer)
	var next time.Duration
	var err error
	if ts.Spec.External != nil {
		ts.Status.AdminEndpoint = ts.Spec.External.AdminURL
		var admin *adminapi.HTTPClient
		if admin, err = adminClientFor(ctx, r.Secrets, &ts); err == nil {
			err = admin.Health(ctx)
		}
	} else {
		next, err = r.reconcileManaged(ctx, &ts)
	}
	setServerConditions(&ts, err)
	if ext := ts.Spec.External; ext != nil && ext.Insecure && insecureAdminURL(ext) {
		r.insecureWarning(before, &ts)
	}
	if perr := patchStatusIfChanged(ctx, r.Client, before, &ts, !equality.Semantic.DeepEqual(before.Status, ts.Status)); perr != nil {
		return ctrl.Result{}, perr
	}
	log.FromContext(ctx).V(1).Info("reconciled token server", "error", err)
	var prog *progress
	var deg *degraded
	interval := r.HealthInterval
	switch {
	case errors.As(err, &prog), errors.As(err, &deg):
		// The owned objects' watches bring the next pass; the requeue is a safety net.
		interval = min(interval, 30*time.Second)
	case err != nil:
		interval = min(interval, 10*time.Second)
	}
	if next > 0 && next < interval {
		interval = next
	}
	return ctrl.Result{RequeueAfter: interval}, nil
}

// ReasonInsecureAdminURL: spec.external.insecure lets the admin token travel over http.
const ReasonInsecureAdminURL = "InsecureAdminURL"

const insecureNote = "; the admin token travels in clear text (http adminURL, spec.external.insecure: true)"

// insecureWarning says in Ready, and once in a Warning event, that the admin token
// crosses the network unencrypted: accepted because the TokenServer's author said so,
// never silently.
func (r *TokenServerReconciler) insecureWarning(before, ts *oauthv1alpha1.TokenServer) {
	c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionTrue {
		return
	}
	c.Message += insecureNote
	old := meta.FindStatusCondition(before.Status.Conditions, oauthv1alpha1.ConditionReady)
	if old == nil || !strings.HasSuffix(old.Message, insecureNote) {
		r.Recorder.Eventf(ts, nil, corev1.EventTypeWarning, ReasonInsecureAdminURL, "Connect",
			"TokenServer %s/%s: spec.external.adminURL %s is http: the admin bearer token, which can register, change and "+
				"delete any client, crosses the network in clear text (spec.external.insecure: true)",
			ts.Namespace, ts.Name, ts.Spec.External.AdminURL)
	}
}

// setServerConditions turns the pass's outcome into Ready, Progressing and Degraded.
func setServerConditions(ts *oauthv1alpha1.TokenServer, err error) {
	cond := func(t string, ok bool, reason, msg string) {
		st := metav1.ConditionFalse
		if ok {
			st = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&ts.Status.Conditions, metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg,
			ObservedGeneration: ts.Generation})
	}
	var prog *progress
	var deg *degraded
	serving := ts.Status.ReadyReplicas > 0 || ts.Spec.External != nil
	switch {
	case err == nil:
		reason, msg := ReasonAvailable, "every replica is ready and up to date"
		if ts.Spec.External != nil {
			reason, msg = ReasonAdminReachable, "the admin API answers and accepts the token"
		}
		cond(oauthv1alpha1.ConditionReady, true, reason, msg)
		cond(oauthv1alpha1.ConditionProgressing, false, reason, msg)
		cond(oauthv1alpha1.ConditionDegraded, false, reason, msg)
	case errors.As(err, &prog):
		// Serving while rolling out is Ready: clients keep working.
		cond(oauthv1alpha1.ConditionReady, serving && prog.reason == ReasonRollingOut, prog.reason, prog.message)
		cond(oauthv1alpha1.ConditionProgressing, true, prog.reason, prog.message)
		cond(oauthv1alpha1.ConditionDegraded, false, prog.reason, prog.message)
	case errors.As(err, &deg):
		cond(oauthv1alpha1.ConditionReady, false, deg.reason, deg.message)
		cond(oauthv1alpha1.ConditionProgressing, false, deg.reason, deg.message)
		cond(oauthv1alpha1.ConditionDegraded, true, deg.reason, deg.message)
	case errors.Is(err, errServerNotReady):
		cond(oauthv1alpha1.ConditionReady, false, ReasonAdminUnreachable, err.Error())
		cond(oauthv1alpha1.ConditionProgressing, ts.Spec.External == nil, ReasonAdminUnreachable, err.Error())
		cond(oauthv1alpha1.ConditionDegraded, false, ReasonAdminUnreachable, err.Error())
	default:
		reason := ReasonReconcileFailed
		if ts.Spec.External != nil {
			reason = ReasonAdminUnreachable
		}
		cond(oauthv1alpha1.ConditionReady, false, reason, err.Error())
		cond(oauthv1alpha1.ConditionProgressing, false, reason, err.Error())
		cond(oauthv1alpha1.ConditionDegraded, true, reason, err.Error())
	}
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
		Owns(&appsv1.StatefulSet{}).Owns(&batchv1.Job{}).Owns(&corev1.Service{}).
		// Secrets as metadata only: see SecretReader.
		Owns(&corev1.Secret{}, builder.OnlyMetadata).
		// A pod becoming ready behind the admin Service is what makes the server Ready.
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(serverOfSlice)).
		// The users, DSN and external admin-token Secrets are the user's: a change
		// rolls the pods (config hash) or reaches the admin API at once, not at the
		// next resync.
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.serversUsingSecret)).
		Named("tokenserver").Complete(r)
}

// serversUsingSecret maps a Secret to the TokenServers of its namespace that refer to
// it. Secrets the operator owns are left to Owns above; there are few TokenServers,
// so a list from the cache per event is cheap.
func (r *TokenServerReconciler) serversUsingSecret(ctx context.Context, o client.Object) []reconcile.Request {
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
		if slices.Contains(userSecrets(&list.Items[i]), o.GetName()) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
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
	if ext := ts.Spec.External; ext != nil {
		names = append(names, ext.TokenSecretRef.Name)
	}
	return names
}

// serverOfSlice maps an admin Service's EndpointSlice to its TokenServer.
func serverOfSlice(_ context.Context, o client.Object) []reconcile.Request {
	svc := o.GetLabels()[discoveryv1.LabelServiceName]
	name, ok := resources.ServerOfAdminService(svc)
	if !ok || o.GetLabels()[LabelManagedBy] != ManagedBy {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// patchStatusIfChanged patches obj's status from before, only when changed: a resync
// of an unchanged object writes nothing.
func patchStatusIfChanged(ctx context.Context, c client.Client, before, obj client.Object, changed bool) error {
	if !changed {
		return nil
	}
	err := c.Status().Patch(ctx, obj, client.MergeFrom(before))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
