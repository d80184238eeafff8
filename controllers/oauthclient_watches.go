package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

func serverClientKey(server types.NamespacedName, clientID string) string {
	return server.String() + " " + clientID
}

// SetupWithManager registers the reconciler and what it watches: its Secrets, the
// user's Secrets it waits for, its TokenServers and the labels of Namespaces.
func (r *OAuthClientReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync == 0 {
		r.Resync = 10 * time.Minute
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &oauthv1alpha1.OAuthClient{}, indexServer, func(o client.Object) []string {
		return []string{clientspec.Server(o.(*oauthv1alpha1.OAuthClient)).String()}
	}); err != nil {
		return fmt.Errorf("index OAuthClients by server: %w", err)
	}
	// Only clients that wait for a user's Secret (create: false) are indexed by it: a
	// generated Secret is owned, and Owns below follows it. 10,000 generated Secrets
	// would otherwise cost an index entry each.
	if err := idx.IndexField(ctx, &oauthv1alpha1.OAuthClient{}, indexSecret, func(o client.Object) []string {
		oc := o.(*oauthv1alpha1.OAuthClient)
		if !clientspec.NeedsSecret(oc) || clientspec.CreatesSecret(oc) {
			return nil
		}
		return []string{clientspec.SecretName(oc)}
	}); err != nil {
		return fmt.Errorf("index OAuthClients by the Secret they wait for: %w", err)
	}
	if err := idx.IndexField(ctx, &oauthv1alpha1.OAuthClient{}, indexWantedID, func(o client.Object) []string {
		oc := o.(*oauthv1alpha1.OAuthClient)
		return []string{serverClientKey(clientspec.Server(oc), clientspec.ClientID(oc))}
	}); err != nil {
		return fmt.Errorf("index OAuthClients by the client ID they want: %w", err)
	}
	if r.Workers == 0 {
		r.Workers = 8
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status patches and finalizer updates change neither the generation nor
		// labels or annotations: they need no second pass. (Setting deletionTimestamp
		// bumps the generation, so deletes still come through.)
		For(&oauthv1alpha1.OAuthClient{}, builder.WithPredicates(specChanged)).
		// One tenant's backlog does not hold up the others' changes (newFairQueue).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, NewQueue: newFairQueue(mgr.GetLogger())}).
		// A Secret we own appears because we created it, in a pass that already used it:
		// only its changes and deletion need another pass.
		// Secrets as metadata only (see SecretReader): a user's Secret this client
		// waits for is noticed by its name, without the cache holding its data.
		Owns(&corev1.Secret{}, builder.OnlyMetadata,
			builder.WithPredicates(predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clientsUsingSecret)).
		Watches(&oauthv1alpha1.TokenServer{}, handler.EnqueueRequestsFromMapFunc(r.clientsOfServer),
			builder.WithPredicates(serverChangedForClients)).
		// A namespace's labels decide admission and first-party status: a label change
		// registers, deregisters or drops skipConsent within seconds, not at the resync.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.clientsInNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("oauthclient").
		Complete(r)
}

// serverChangedForClients passes the changes of a TokenServer that a pass of its
// clients reads: its spec (the generation), whether it is Ready, and its creation
// and deletion. Its status changes often otherwise, with every step of an upgrade,
// and each change brought a pass of every one of its clients, thousands maybe.
var serverChangedForClients = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	old, okOld := e.ObjectOld.(*oauthv1alpha1.TokenServer)
	cur, okNew := e.ObjectNew.(*oauthv1alpha1.TokenServer)
	if !okOld || !okNew {
		return true
	}
	ready := func(ts *oauthv1alpha1.TokenServer) bool {
		return meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady)
	}
	return old.Generation != cur.Generation || ready(old) != ready(cur) ||
		old.DeletionTimestamp.IsZero() != cur.DeletionTimestamp.IsZero()
}}

func (r *OAuthClientReconciler) clientsUsingSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if metav1.GetControllerOf(o) != nil && metav1.GetControllerOf(o).Kind == "OAuthClient" {
		return nil // ours: Owns above handles it
	}
	return r.list(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexSecret: o.GetName()})
}

func (r *OAuthClientReconciler) clientsInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, client.InNamespace(o.GetName()))
}

func (r *OAuthClientReconciler) clientsOfServer(ctx context.Context, o client.Object) []reconcile.Request {
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	return r.list(ctx, client.MatchingFields{indexServer: key.String()})
}

func (r *OAuthClientReconciler) list(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list oauthv1alpha1.OAuthClientList
	if err := r.List(ctx, &list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing OAuthClients")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, oc := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&oc)})
	}
	return reqs
}
