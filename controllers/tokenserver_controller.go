package controllers

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Reasons of TokenServer conditions.
const (
	ReasonAdminReachable   = "AdminAPIReachable"
	ReasonAdminUnreachable = "AdminAPIUnreachable"
	ReasonManagedNotYet    = "ManagedModeNotSupportedYet"
	ReasonExternalServer   = "External"
)

// TokenServerReconciler keeps a TokenServer's status. In this version it handles
// external servers (spec.external): it checks their admin API and reports Ready;
// running the bundled server (StatefulSets, database, keys) is the next step.
type TokenServerReconciler struct {
	client.Client
	// Secrets reads the Secrets the reconciler needs (see CacheOptions).
	Secrets *SecretReader
	// HealthInterval is how often a Ready server's admin API is checked again.
	HealthInterval time.Duration
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// Reconcile checks the server and patches its status once.
func (r *TokenServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, req.NamespacedName, &ts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := ts.DeepCopy()
	ts.Status.ObservedGeneration = ts.Generation
	ts.Status.Issuer = string(ts.Spec.Issuer)
	ready := metav1.Condition{Type: oauthv1alpha1.ConditionReady, ObservedGeneration: ts.Generation}
	if ts.Spec.External == nil {
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonManagedNotYet
		ready.Message = "this operator version manages clients of external token servers only (spec.external)"
	} else {
		ts.Status.AdminEndpoint = ts.Spec.External.AdminURL
		admin, err := adminClientFor(ctx, r.Secrets, &ts)
		if err == nil {
			err = admin.Health(ctx)
		}
		if err != nil {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonAdminUnreachable, err.Error()
		} else {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonAdminReachable, "the admin API answers and accepts the token"
		}
	}
	meta.SetStatusCondition(&ts.Status.Conditions, ready)
	if err := patchStatusIfChanged(ctx, r.Client, before, &ts, !equality.Semantic.DeepEqual(before.Status, ts.Status)); err != nil {
		return ctrl.Result{}, err
	}
	interval := r.HealthInterval
	if ready.Status != metav1.ConditionTrue {
		interval = min(interval, 10*time.Second)
	}
	if ts.Spec.External == nil {
		return ctrl.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("checked token server", "ready", ready.Status, "reason", ready.Reason)
	return ctrl.Result{RequeueAfter: interval}, nil
}

// SetupWithManager registers the reconciler.
func (r *TokenServerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.HealthInterval == 0 {
		r.HealthInterval = time.Minute
	}
	return ctrl.NewControllerManagedBy(mgr).For(&oauthv1alpha1.TokenServer{}).Named("tokenserver").Complete(r)
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
