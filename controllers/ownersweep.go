package controllers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// Reasons of the owner sweep's events, on the TokenServer.
const (
	// ReasonSwept: a client of a namespace the server no longer admits was deleted.
	ReasonSwept = "ClientSwept"
	// ReasonSweptOrphan: a client no OAuthClient manages kept skipConsent or the
	// jwt-bearer grant after its namespace lost first-party status, and was deleted.
	ReasonSweptOrphan = "OrphanSwept"
	// ReasonGrantSwept: a declared grant of a namespace that is not first-party was
	// revoked.
	ReasonGrantSwept = "GrantSwept"
	// ReasonSweepSkipped: a TokenServer of the same server could not be evaluated, so
	// the pass deleted nothing: what that one admits is unknown.
	ReasonSweepSkipped = "SweepSkipped"
	// ReasonSweptVerifyClient: an upgrade's verification client outlived its Job.
	ReasonSweptVerifyClient = "SweptVerificationClient"
)

// OwnerSweeper makes a token server hold only what the TokenServer's namespace
// policies allow, whatever happened in Kubernetes: it lists the server's clients by
// owner namespace and deletes those of namespaces not admitted (deletionPolicy Orphan,
// a delete during an outage, a status that never recorded the ID: nothing escapes),
// and, for namespaces that are not first-party, revokes declared grants and deletes
// orphaned clients that still skip consent. The OAuthClient and ConsentGrant
// reconcilers do the same for what they manage, at once; the sweep is what holds for
// what they do not. It runs when a Namespace's labels change and every Interval.
//
// A wrong deletion takes a legitimate client with all its users' tokens, so the sweep
// runs only where this operator install is the only registrar of namespaced clients:
// bundled servers, and external ones whose TokenServer says so
// (spec.external.ownsAllClients).
type OwnerSweeper struct {
	client.Client
	Secrets  *SecretReader
	Recorder events.EventRecorder
	// Interval between sweeps of one TokenServer (the TokenServer's health interval).
	Interval time.Duration
}

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// sweeps says whether the sweep may delete ts's server's clients.
func sweeps(ts *oauthv1alpha1.TokenServer) bool {
	return ts.Spec.External == nil || ts.Spec.External.OwnsAllClients
}

// Reconcile sweeps one TokenServer when it is Ready.
func (r *OwnerSweeper) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, req.NamespacedName, &ts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sweeps(&ts) {
		return ctrl.Result{}, nil // a change of the TokenServer brings the next look
	}
	if !ts.DeletionTimestamp.IsZero() || !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
		// The TokenServer's Ready change brings the next sweep; the requeue is a net.
		return ctrl.Result{RequeueAfter: r.Interval}, nil
	}
	admin, err := adminClientFor(ctx, r.Secrets, &ts)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("admin client of TokenServer %s/%s: %w", ts.Namespace, ts.Name, err)
	}
	if err := r.sweep(ctx, client.ObjectKeyFromObject(&ts), admin); err != nil {
		// A skipped sweep has no status to be reported in: its Warning event says it,
		// and it stays an error, retried with backoff and counted, because clients
		// that should go stay until a sweep goes through.
		if skipped, ok := conditionOf(err); ok {
			r.Recorder.Eventf(&ts, nil, corev1.EventTypeWarning, skipped.reason, "Sweep",
				"the owner sweep deleted nothing: %s", skipped.message)
		}
		return ctrl.Result{}, fmt.Errorf("sweep TokenServer %s/%s by owner: %w", ts.Namespace, ts.Name, err)
	}
	return ctrl.Result{RequeueAfter: r.Interval}, nil
}

// sweep is one pass over the server's clients. The clients and declared grants are
// listed before any TokenServer or namespace is read: a client registered because a
// TokenServer's policy admitted its namespace is judged on a view of both at least as
// new as the one that admitted it (the reconcilers read the same cache), so a sweep
// never deletes a client on a stale "not admitted".
func (r *OwnerSweeper) sweep(ctx context.Context, key client.ObjectKey, admin *adminapi.HTTPClient) error {
	clients, err := admin.ListClients(ctx)
	if err != nil {
		return fmt.Errorf("list clients: %w", err)
	}
	grants, err := admin.ListGrantsFrom(ctx, adminapi.SourceDeclared)
	if err != nil {
		return fmt.Errorf("list declared grants: %w", err)
	}
	peers, err := r.sameServer(ctx, key, admin)
	if err != nil || len(peers) == 0 {
		return err // gone since: nothing to sweep for
	}
	ts := &peers[0]
	if !sweeps(ts) {
		return nil
	}
	// Upgrades' verification clients that outlived their Job (tokenserver_upgrade.go).
	deleted, err := sweepVerifyClients(ctx, r.Client, ts, clients, admin)
	for _, id := range deleted {
		r.Recorder.Eventf(ts, nil, corev1.EventTypeNormal, ReasonSweptVerifyClient, "Sweep",
			"deleted the upgrade verification client %s, left behind by a verification that ended without it", id)
	}
	if err != nil {
		return err
	}
	// In a bundled server's database only this operator registers clients: an owner
	// namespace missing here was deleted. On an external one it may be another
	// cluster's.
	bundled := false
	for i := range peers {
		bundled = bundled || peers[i].Spec.External == nil
	}
	type verdict struct{ known, admitted, firstParty bool }
	verdicts := map[string]verdict{}
	policy := func(name string) (verdict, error) {
		if v, ok := verdicts[name]; ok {
			return v, nil
		}
		var v verdict
		var ns corev1.Namespace
		switch err := r.Get(ctx, types.NamespacedName{Name: name}, &ns); {
		case apierrors.IsNotFound(err):
			v.known = bundled // deleted: admits nothing; or someone else's: not ours to judge
		case err != nil:
			return v, fmt.Errorf("get Namespace %s: %w", name, err)
		default:
			v.known = true
			for i := range peers {
				admitted, err := clientspec.Admitted(&peers[i], &ns)
				if err != nil {
					return v, policyErr(&peers[i], err)
				}
				firstParty, err := clientspec.FirstParty(&peers[i], &ns)
				if err != nil {
					return v, policyErr(&peers[i], err)
				}
				v.admitted = v.admitted || admitted
				v.firstParty = v.firstParty || (admitted && firstParty)
			}
		}
		verdicts[name] = v
		return v, nil
	}
	owners := map[string]string{} // client ID -> owner, for clients of namespaces admitted but not first-party
	var errs []error
	for _, c := range clients {
		owner := c.OwnerNamespace
		if owner == "" {
			continue // registered by an administrator, not by the operator: not a tenant's
		}
		v, err := policy(owner)
		if err != nil {
			return err
		}
		switch {
		case !v.known:
		case !v.admitted:
			errs = append(errs, r.deleteClient(ctx, ts, admin, c.ID, owner, ReasonSwept, fmt.Sprintf(
				"namespace %s is not admitted by TokenServer %s/%s: its client %s was deleted from the token server, "+
					"with every token and grant of it", owner, ts.Namespace, ts.Name, c.ID)))
		case v.firstParty:
		default:
			owners[c.ID] = owner
			if !c.SkipConsent && !slices.Contains(c.GrantTypes, string(oauthv1alpha1.GrantJWTBearer)) {
				continue
			}
			managed, err := r.managed(ctx, peers, owner, c.ID)
			if err != nil {
				return err
			}
			// A managed client is put again without skipConsent and jwt-bearer by its
			// OAuthClient, or deleted when that fails (withoutFirstParty). An orphan
			// cannot be: nothing holds its secret to put it with. Deleting it is the
			// only way its users are asked for consent again.
			if !managed {
				errs = append(errs, r.deleteClient(ctx, ts, admin, c.ID, owner, ReasonSweptOrphan, fmt.Sprintf(
					"namespace %s is not first-party on TokenServer %s/%s: client %s, which no OAuthClient manages, "+
						"still skipped consent or had the jwt-bearer grant and was deleted from the token server",
					owner, ts.Namespace, ts.Name, c.ID)))
			}
		}
	}
	errs = append(errs, r.revokeDeclared(ctx, ts, admin, grants, owners))
	return errors.Join(errs...)
}

// sameServer reads the TokenServer key and those that describe the same token server
// (the same issuer or the same external adminURL, both normalised), key's first; none
// if key is gone. Each may admit namespaces of its own: a namespace any of them admits
// keeps its clients, so that two TokenServers of one server never sweep each other's
// clients. One that cannot be evaluated (its admin client cannot be built, or its
// token differs from ours: a Secret being rotated, or a server that only claims our
// issuer) makes the whole pass a SweepSkipped condition error: whether its policy
// counts is unknown, and guessing "no" would delete its clients.
func (r *OwnerSweeper) sameServer(ctx context.Context, key client.ObjectKey, admin *adminapi.HTTPClient) (
	[]oauthv1alpha1.TokenServer, error) {
	var list oauthv1alpha1.TokenServerList
	if err := r.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list TokenServers: %w", err)
	}
	var peers []oauthv1alpha1.TokenServer
	for i := range list.Items {
		if client.ObjectKeyFromObject(&list.Items[i]) == key {
			peers = append(peers, list.Items[i])
		}
	}
	if len(peers) == 0 || !peers[0].DeletionTimestamp.IsZero() {
		return nil, nil
	}
	ts := &peers[0]
	issuer, adminURL := normalURL(string(ts.Spec.Issuer)), normalURL(admin.BaseURL)
	for i := range list.Items {
		other := &list.Items[i]
		if client.ObjectKeyFromObject(other) == key || !other.DeletionTimestamp.IsZero() {
			continue
		}
		if normalURL(string(other.Spec.Issuer)) != issuer &&
			(other.Spec.External == nil || normalURL(other.Spec.External.AdminURL) != adminURL) {
			continue
		}
		name := other.Namespace + "/" + other.Name
		// Its policy is in its spec: whether it is Ready does not matter, only that
		// the admin token proves it is the same server.
		theirs, err := adminClientFor(ctx, r.Secrets, other)
		if err != nil {
			return nil, waiting(ReasonSweepSkipped, fmt.Sprintf(
				"TokenServer %s, of the same token server, has no usable admin client: %v", name, err))
		}
		if subtle.ConstantTimeCompare([]byte(theirs.Token), []byte(admin.Token)) != 1 {
			return nil, waiting(ReasonSweepSkipped, fmt.Sprintf("TokenServer %s names the same token server with a different admin "+
				"token (a rotation in progress, or not the same server)", name))
		}
		peers = append(peers, *other)
	}
	return peers, nil
}

// normalURL is u as the sweep compares servers: scheme and host lower-case, the
// scheme's default port and trailing slashes dropped. A URL that does not parse
// stays as written, compared as such.
func normalURL(u string) string {
	p, err := url.Parse(strings.TrimSpace(u))
	if err != nil || p.Host == "" {
		return strings.TrimRight(u, "/")
	}
	p.Scheme = strings.ToLower(p.Scheme)
	host, port := strings.ToLower(p.Hostname()), p.Port()
	if (p.Scheme == "https" && port == "443") || (p.Scheme == "http" && port == "80") {
		port = ""
	}
	p.Host = host
	if port != "" {
		p.Host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		p.Host = "[" + host + "]"
	}
	p.Path = strings.TrimRight(p.Path, "/")
	p.RawPath = ""
	return p.String()
}

// revokeDeclared revokes the declared grants (listed with the clients) of the clients
// in owners (client ID -> owner namespace, none first-party), each as that owner.
func (r *OwnerSweeper) revokeDeclared(ctx context.Context, ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient,
	grants []adminapi.Grant, owners map[string]string) error {
	var errs []error
	for _, g := range grants {
		owner, ok := owners[g.ClientID]
		if !ok || g.Source != adminapi.SourceDeclared {
			continue // the user's own consent stays theirs to revoke
		}
		err := admin.DeleteOwnedGrant(ctx, g.ClientID, g.Subject, owner)
		switch {
		case err == nil:
			msg := fmt.Sprintf("namespace %s is not first-party on TokenServer %s/%s: the declared grant of %s to client %s "+
				"was revoked with every token issued under it", owner, ts.Namespace, ts.Name, g.Subject, g.ClientID)
			r.Recorder.Eventf(ts, ownerRef(owner), corev1.EventTypeWarning, ReasonGrantSwept, "Sweep", "%s", msg)
			log.FromContext(ctx).Info("owner sweep: "+msg, "namespace", owner, "clientID", g.ClientID, "subject", g.Subject)
		case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
			// Gone already, or the client changed hands since the list.
		default:
			errs = append(errs, fmt.Errorf("revoke the declared grant of %s to %s: %w", g.Subject, g.ClientID, err))
		}
	}
	return errors.Join(errs...)
}

// ownerRef is the event's related object: the owner namespace. Events of one object,
// reason and related object are merged into a series that keeps the first note, so
// without it the sweeps of two namespaces would read as one.
func ownerRef(owner string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: owner}}
}

// deleteClient deletes client id as owner: if it changed hands since the list, the
// owner precondition keeps the new owner's.
func (r *OwnerSweeper) deleteClient(ctx context.Context, ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient,
	id, owner, reason, msg string) error {
	err := admin.DeleteClient(ctx, id, owner)
	switch {
	case err == nil:
		r.Recorder.Eventf(ts, ownerRef(owner), corev1.EventTypeWarning, reason, "Sweep", "%s", msg)
		log.FromContext(ctx).Info("owner sweep: "+msg, "namespace", owner, "clientID", id)
	case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
	default:
		return fmt.Errorf("delete client %s of namespace %s: %w", id, owner, err)
	}
	return nil
}

// managed says whether an OAuthClient of namespace ns on one of servers registered
// client id or is about to (its wanted ID: the status that records it may not be in
// the cache yet).
func (r *OwnerSweeper) managed(ctx context.Context, servers []oauthv1alpha1.TokenServer, ns, id string) (bool, error) {
	for i := range servers {
		key := serverClientKey(client.ObjectKeyFromObject(&servers[i]), id)
		for _, index := range []string{indexRegisteredID, indexWantedID} {
			var list oauthv1alpha1.OAuthClientList
			if err := r.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{index: key}); err != nil {
				return false, fmt.Errorf("list OAuthClients in %s: %w", ns, err)
			}
			for j := range list.Items {
				if list.Items[j].DeletionTimestamp.IsZero() {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// SetupWithManager sweeps each TokenServer when it changes, every Interval, and all
// of them when a Namespace's labels change or a Namespace comes or goes.
func (r *OwnerSweeper) SetupWithManager(mgr ctrl.Manager) error {
	if r.Interval == 0 {
		r.Interval = time.Minute
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&oauthv1alpha1.TokenServer{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allServers),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("ownersweep").Complete(r)
}

func (r *OwnerSweeper) allServers(ctx context.Context, _ client.Object) []reconcile.Request {
	var list oauthv1alpha1.TokenServerList
	if err := r.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "listing TokenServers")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
