package controllers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// Reasons of ConsentGrant conditions.
const (
	ReasonClientNotFound = "ClientNotFound"
	ReasonClientNotReady = "ClientNotReady"
	ReasonMirrored       = "Mirrored"
	ReasonGrantGone      = "GrantGone"
	// ReasonRevoked (event): the grant was revoked on the token server, with every
	// token issued under it.
	ReasonRevoked = "Revoked"
)

// ConsentGrantReconciler pushes declared grants to the token server as pre-approved
// consent, keeps mirrored ones in step with it, and revokes a grant (and its tokens)
// before the resource goes.
type ConsentGrantReconciler struct {
	client.Client
	// Secrets reads the Secrets the reconciler needs (see CacheOptions).
	Secrets  *SecretReader
	Recorder events.EventRecorder
	// Resync is how often a grant's status is refreshed from the token server.
	Resync time.Duration
	// Workers is how many grants are reconciled at once (default 8): each pass
	// waits on the admin API, and with one worker a tenant rewriting thousands of
	// its grants' labels queued every other tenant's revocation behind them.
	Workers int
}

// Reconcile pushes the grant, or follows a mirrored one, and reports whether the
// token server has it.
func (r *ConsentGrantReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cg := &oauthv1alpha1.ConsentGrant{}
	before, err := begin(ctx, r.Client, req, cg, r.finalize)
	if before == nil {
		return ctrl.Result{}, err
	}
	if err = r.sync(ctx, cg); errors.Is(err, errGrantGone) {
		// The user revoked a mirrored grant in the browser: the resource follows.
		if err := r.Delete(ctx, cg); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete the ConsentGrant of a revoked grant: %w", err)
		}
		return ctrl.Result{}, nil
	}
	return finish(ctx, r.Client, r.Recorder, grantKind, before, cg, r.Resync, err)
}

// grantKind: Ready says whether the token server has this grant.
var grantKind = kind[*oauthv1alpha1.ConsentGrant]{
	status: func(cg *oauthv1alpha1.ConsentGrant) reported {
		return reported{&cg.Status.Conditions, &cg.Status.ObservedGeneration, &cg.Status}
	},
	conditions: func(_ *oauthv1alpha1.ConsentGrant, err error) []metav1.Condition {
		if err == nil {
			return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, true, ReasonSynced, "the token server has this grant")}
		}
		reason, msg := notSynced(err)
		return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, false, reason, msg)}
	},
}

var errGrantGone = errors.New("the grant is gone from the token server")

func mirrored(cg *oauthv1alpha1.ConsentGrant) bool {
	return cg.Labels[oauthv1alpha1.LabelSource] == oauthv1alpha1.SourceMirrored
}

// sync pushes a declared grant, or checks that a mirrored one still exists.
func (r *ConsentGrantReconciler) sync(ctx context.Context, cg *oauthv1alpha1.ConsentGrant) error {
	oc, ts, admin, err := r.resolve(ctx, cg)
	if err != nil {
		return err
	}
	server := clientspec.Server(oc)
	cg.Status.ClientID = oc.Status.ClientID
	cg.Status.ServerRef = &oauthv1alpha1.ServerReference{Namespace: server.Namespace, Name: server.Name}
	var g *adminapi.Grant
	if mirrored(cg) {
		grants, err := admin.ListGrants(ctx, oc.Status.ClientID, cg.Spec.Subject)
		if err != nil {
			return fmt.Errorf("list the grants of %s to %s on the token server: %w", cg.Spec.Subject, oc.Status.ClientID, err)
		}
		if len(grants) == 0 {
			return errGrantGone
		}
		g = &grants[0]
	} else {
		var ns corev1.Namespace
		if err := r.Get(ctx, types.NamespacedName{Name: cg.Namespace}, &ns); err != nil {
			return fmt.Errorf("get Namespace %s: %w", cg.Namespace, err)
		}
		firstParty, err := clientspec.FirstParty(ts, &ns)
		if err != nil {
			return policyErr(ts, err)
		}
		if !firstParty {
			return r.notFirstParty(ctx, cg, oc, admin)
		}
		in := &adminapi.Grant{ClientID: oc.Status.ClientID, Subject: cg.Spec.Subject, Scopes: scopes(cg.Spec.Scopes),
			Source: adminapi.SourceDeclared}
		if cg.Spec.ExpiresAt != nil {
			t := cg.Spec.ExpiresAt.UTC()
			in.ExpiresAt = &t
		}
		// The owner check in the token server's transaction is what holds; ownedBy in
		// resolve only gave the readable refusal early.
		g, err = admin.PutOwnedGrant(ctx, in, cg.Namespace)
		if errors.Is(err, adminapi.ErrConflict) {
			return needsHuman(ReasonClientIDConflict, fmt.Sprintf("client %s on the token server is not namespace %s's: %s",
				oc.Status.ClientID, cg.Namespace, errMessage(err)))
		}
		if err != nil {
			return fmt.Errorf("push the grant of %s to %s to the token server: %w", cg.Spec.Subject, oc.Status.ClientID, err)
		}
	}
	cg.Status.GrantedAt, cg.Status.LastUsedAt = metaTime(g.GrantedAt), metaTime(g.LastUsedAt)
	cg.Status.ActiveTokens = int32(min(g.ActiveTokens, math.MaxInt32)) // #nosec G115 -- clamped
	return nil
}

// notFirstParty refuses a declared grant outside the first-party namespaces and
// revokes what it put on the token server while the namespace was first-party (with
// every token issued under it): consent nobody gave does not outlive the status that
// allowed it.
func (r *ConsentGrantReconciler) notFirstParty(ctx context.Context, cg *oauthv1alpha1.ConsentGrant,
	oc *oauthv1alpha1.OAuthClient, admin *adminapi.HTTPClient) error {
	refused := needsHuman(ReasonNotFirstParty, fmt.Sprintf("a declared grant is consent the user is not asked for: only clients in "+
		"the TokenServer's firstPartyNamespaces may have one, and namespace %s is not one of them", cg.Namespace))
	grants, err := admin.ListGrants(ctx, oc.Status.ClientID, cg.Spec.Subject)
	if err != nil {
		return fmt.Errorf("list the grants of %s to %s on the token server: %w", cg.Spec.Subject, oc.Status.ClientID, err)
	}
	// The owner sweep may have revoked it first: a grant this resource had put on the
	// server (grantedAt) still says, once, that it is revoked.
	revoked := cg.Status.GrantedAt != nil
	for _, g := range grants {
		if g.Source != adminapi.SourceDeclared {
			continue // the user's own consent stays theirs to revoke
		}
		if err := admin.DeleteOwnedGrant(ctx, oc.Status.ClientID, cg.Spec.Subject, cg.Namespace); err != nil &&
			!errors.Is(err, adminapi.ErrNotFound) {
			return fmt.Errorf("revoke the declared grant of %s to %s on the token server: %w", cg.Spec.Subject, oc.Status.ClientID, err)
		}
		revoked = true
	}
	if revoked {
		r.Recorder.Eventf(cg, nil, corev1.EventTypeWarning, ReasonRevoked, "Revoke",
			"namespace %s is not first-party: the declared grant of %s to %s is revoked with every token issued under it",
			cg.Namespace, cg.Spec.Subject, oc.Status.ClientID)
		refused.message += "; the grant was revoked on the token server"
	}
	cg.Status.GrantedAt, cg.Status.LastUsedAt, cg.Status.ActiveTokens = nil, nil, 0
	return refused
}

// resolve finds the grant's OAuthClient (Ready, so it has a client ID), its
// TokenServer and the admin API.
func (r *ConsentGrantReconciler) resolve(ctx context.Context, cg *oauthv1alpha1.ConsentGrant) (
	*oauthv1alpha1.OAuthClient, *oauthv1alpha1.TokenServer, *adminapi.HTTPClient, error) {
	var oc oauthv1alpha1.OAuthClient
	if err := r.Get(ctx, types.NamespacedName{Namespace: cg.Namespace, Name: cg.Spec.ClientRef.Name}, &oc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, nil, waiting(ReasonClientNotFound, "OAuthClient "+cg.Spec.ClientRef.Name+" not found").after(30 * time.Second)
		}
		return nil, nil, nil, fmt.Errorf("get OAuthClient %s: %w", cg.Spec.ClientRef.Name, err)
	}
	if c := meta.FindStatusCondition(oc.Status.Conditions, oauthv1alpha1.ConditionReady); c != nil && c.Reason == ReasonNamespaceNotAllowed {
		return nil, nil, nil, needsHuman(ReasonNamespaceNotAllowed, "the TokenServer does not admit namespace "+cg.Namespace+
			": OAuthClient "+oc.Name+" is not registered, and no grant of it is on the token server")
	}
	if oc.Status.ClientID == "" || !meta.IsStatusConditionTrue(oc.Status.Conditions, oauthv1alpha1.ConditionReady) {
		return nil, nil, nil, waiting(ReasonClientNotReady, "waiting for OAuthClient "+oc.Name+" to be Ready").after(10 * time.Second)
	}
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, clientspec.Server(&oc), &ts); err != nil {
		return nil, nil, nil, fmt.Errorf("get TokenServer %s: %w", clientspec.Server(&oc), err)
	}
	admin, err := adminClientFor(ctx, r.Secrets, &ts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("admin client of TokenServer %s/%s: %w", ts.Namespace, ts.Name, err)
	}
	if err := ownedBy(ctx, admin, oc.Status.ClientID, cg.Namespace); err != nil {
		return nil, nil, nil, err
	}
	return &oc, &ts, admin, nil
}

// ownedBy checks that the token server's client clientID belongs to namespace ns. The
// grant API knows no owners, and status.clientID is only as trustworthy as whoever may
// write OAuthClient status: a grant is put or revoked only on a client of its own
// namespace, so no namespace pre-approves or revokes consent to another's client.
func ownedBy(ctx context.Context, admin *adminapi.HTTPClient, clientID, ns string) error {
	c, err := admin.GetClient(ctx, clientID)
	if errors.Is(err, adminapi.ErrNotFound) {
		return waiting(ReasonClientNotReady, "client "+clientID+" is not on the token server").after(10 * time.Second)
	}
	if err != nil {
		return fmt.Errorf("get client %s from the token server: %w", clientID, err)
	}
	if c.OwnerNamespace != ns {
		return needsHuman(ReasonClientIDConflict, fmt.Sprintf("client %s on the token server belongs to namespace %q, not %q",
			clientID, c.OwnerNamespace, ns))
	}
	return nil
}

// finalize revokes the grant and every token issued under it before the finalizer
// goes. An unreachable token server keeps the finalizer: the delete is retried with
// backoff and never lost. The grant is revoked as the namespace's (the token server
// checks the owner in the same transaction), by the client ID its OAuthClient
// registered or, when that is gone (deleted with deletionPolicy Orphan, which leaves
// the client and its grants on the server) or no longer records one, by the ID this
// grant recorded when it was pushed.
func (r *ConsentGrantReconciler) finalize(ctx context.Context, cg *oauthv1alpha1.ConsentGrant) error {
	if !controllerutil.ContainsFinalizer(cg, Finalizer) {
		return nil
	}
	if err := r.revokeDeleted(ctx, cg); err != nil {
		return holdDelete(ctx, r.Client, r.Recorder, cg, &cg.Status.Conditions,
			"the grant of "+cg.Spec.Subject+" is not revoked on the token server yet, nor the tokens issued under it", err)
	}
	return releaseFinalizer(ctx, r.Client, cg)
}

// revokeDeleted revokes the grant of a deleted cg on the token server that holds it.
func (r *ConsentGrantReconciler) revokeDeleted(ctx context.Context, cg *oauthv1alpha1.ConsentGrant) error {
	id := cg.Status.ClientID
	var servers []oauthv1alpha1.TokenServer
	guessing := false // asking every TokenServer, not the one that holds the grant
	var oc oauthv1alpha1.OAuthClient
	err := r.Get(ctx, types.NamespacedName{Namespace: cg.Namespace, Name: cg.Spec.ClientRef.Name}, &oc)
	switch {
	case apierrors.IsNotFound(err) && cg.Status.ServerRef != nil:
		var ts oauthv1alpha1.TokenServer
		key := types.NamespacedName{Namespace: cg.Status.ServerRef.Namespace, Name: cg.Status.ServerRef.Name}
		if err := r.Get(ctx, key, &ts); err == nil {
			servers = append(servers, ts)
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get TokenServer %s (status.serverRef): %w", key, err)
		}
	case apierrors.IsNotFound(err):
		// Recorded before status.serverRef existed: the owner check makes asking each
		// server safe, and there are few.
		// One that is not Ready (or whose admin client cannot be built) is passed
		// over: it may be any TokenServer, and would keep the finalizer forever.
		var list oauthv1alpha1.TokenServerList
		if err := r.List(ctx, &list); err != nil {
			return fmt.Errorf("list TokenServers: %w", err)
		}
		for i := range list.Items {
			if meta.IsStatusConditionTrue(list.Items[i].Status.Conditions, oauthv1alpha1.ConditionReady) {
				servers = append(servers, list.Items[i])
			}
		}
		guessing = true
	case err != nil:
		return fmt.Errorf("get OAuthClient %s: %w", cg.Spec.ClientRef.Name, err)
	default:
		if oc.Status.ClientID != "" {
			id = oc.Status.ClientID
		}
		var ts oauthv1alpha1.TokenServer
		if err := r.Get(ctx, clientspec.Server(&oc), &ts); err == nil {
			servers = append(servers, ts)
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get TokenServer %s: %w", clientspec.Server(&oc), err)
		}
	}
	if id != "" {
		for i := range servers {
			err := r.revoke(ctx, &servers[i], cg, id)
			if guessing && errors.Is(err, errNoAdminClient) {
				log.FromContext(ctx).Info("not asking a TokenServer without a usable admin client to revoke a grant of "+
					"unknown server", "tokenServer", servers[i].Namespace+"/"+servers[i].Name, "err", err)
				continue
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// errNoAdminClient: the TokenServer's admin client could not be built.
var errNoAdminClient = errors.New("no admin client")

// revoke deletes the grant of cg's subject to client id on ts, as cg's namespace: a
// client of another namespace (or none) keeps its grants.
func (r *ConsentGrantReconciler) revoke(ctx context.Context, ts *oauthv1alpha1.TokenServer,
	cg *oauthv1alpha1.ConsentGrant, id string) error {
	if !ts.DeletionTimestamp.IsZero() {
		return nil // going, with its clients and grants
	}
	admin, err := adminClientFor(ctx, r.Secrets, ts)
	if err != nil {
		return fmt.Errorf("%w of TokenServer %s/%s: %w", errNoAdminClient, ts.Namespace, ts.Name, err)
	}
	err = admin.DeleteOwnedGrant(ctx, id, cg.Spec.Subject, cg.Namespace)
	switch {
	case err == nil:
		r.Recorder.Eventf(cg, nil, corev1.EventTypeNormal, ReasonRevoked, "Delete",
			"grant of %s to %s revoked on TokenServer %s/%s with every token issued under it", cg.Spec.Subject, id, ts.Namespace, ts.Name)
	case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
		// No such grant, or not a client of this namespace: nothing of ours to revoke.
	default:
		return fmt.Errorf("revoking the grant on TokenServer %s/%s: %w", ts.Namespace, ts.Name, err)
	}
	return nil
}

// SetupWithManager registers the reconciler.
func (r *ConsentGrantReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync == 0 {
		r.Resync = 10 * time.Minute
	}
	if r.Workers == 0 {
		r.Workers = 8
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &oauthv1alpha1.ConsentGrant{}, indexGrantClient,
		func(o client.Object) []string { return []string{o.(*oauthv1alpha1.ConsentGrant).Spec.ClientRef.Name} }); err != nil {
		return fmt.Errorf("index ConsentGrants by client: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &oauthv1alpha1.ConsentGrant{}, indexDeclaredGrant,
		func(o client.Object) []string {
			cg := o.(*oauthv1alpha1.ConsentGrant)
			if mirrored(cg) {
				return nil
			}
			return []string{declaredGrantKey(cg.Spec.ClientRef.Name, cg.Spec.Subject)}
		}); err != nil {
		return fmt.Errorf("index declared ConsentGrants by client and subject: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).For(&oauthv1alpha1.ConsentGrant{}).
		// A grant follows its client (registered, deregistered) and its namespace's
		// first-party status within seconds.
		Watches(&oauthv1alpha1.OAuthClient{}, handler.EnqueueRequestsFromMapFunc(r.grantsOfClient)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.grantsInNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// One tenant's backlog does not hold up the others' changes (newFairQueue).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers, NewQueue: newFairQueue(mgr.GetLogger())}).
		Named("consentgrant").Complete(r)
}

const indexGrantClient = "consentgrant.clientRef"

// indexDeclaredGrant is "<clientRef> <subject>" of the ConsentGrants that are not
// mirrored: the declared grant, if any, that stands for a subject's consent.
const indexDeclaredGrant = "consentgrant.declared"

func declaredGrantKey(clientName, subject string) string { return clientName + " " + subject }

func (r *ConsentGrantReconciler) grantsOfClient(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexGrantClient: o.GetName()})
}

func (r *ConsentGrantReconciler) grantsInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return r.list(ctx, client.InNamespace(o.GetName()))
}

func (r *ConsentGrantReconciler) list(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list oauthv1alpha1.ConsentGrantList
	if err := r.List(ctx, &list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing ConsentGrants")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cg := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cg)})
	}
	return reqs
}

func scopes(in []oauthv1alpha1.Scope) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	mt := metav1.NewTime(t.UTC().Truncate(time.Second))
	return &mt
}
