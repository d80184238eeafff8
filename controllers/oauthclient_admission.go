package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// policy says whether the server admits clients of namespace name, and whether they
// are first-party.
func (r *OAuthClientReconciler) policy(ctx context.Context, ts *oauthv1alpha1.TokenServer, name string) (
	admitted, firstParty bool, err error) {
	var ns corev1.Namespace
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &ns); err != nil {
		return false, false, fmt.Errorf("get Namespace %s: %w", name, err)
	}
	if admitted, err = clientspec.Admitted(ts, &ns); err != nil || !admitted {
		return false, false, policyErr(ts, err)
	}
	firstParty, err = clientspec.FirstParty(ts, &ns)
	return admitted, firstParty, policyErr(ts, err)
}

// policyErr says which TokenServer's namespace selectors could not be evaluated.
func policyErr(ts *oauthv1alpha1.TokenServer, err error) error {
	if err != nil {
		return fmt.Errorf("namespace policy of TokenServer %s/%s: %w", ts.Namespace, ts.Name, err)
	}
	return nil
}

// deregister handles a namespace the server does not admit: nothing is pushed, and a
// client this object registered before the namespace lost admission is deleted from
// the token server (its tokens and grants with it), as the owner, so that nothing of
// another namespace can go.
func (r *OAuthClientReconciler) deregister(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient) error {
	return r.unregister(ctx, oc, ts, admin, notAdmitted(ts, oc),
		fmt.Sprintf("namespace %s is no longer admitted by TokenServer %s/%s", oc.Namespace, ts.Namespace, ts.Name),
		"admitted")
}

// notAdmitted says that ts does not admit oc's namespace.
func notAdmitted(ts *oauthv1alpha1.TokenServer, oc *oauthv1alpha1.OAuthClient) *conditionError {
	return needsHuman(ReasonNamespaceNotAllowed, fmt.Sprintf(
		"TokenServer %s/%s does not admit clients from namespace %s (spec.clientNamespaces)", ts.Namespace, ts.Name, oc.Namespace))
}

// notFirstParty handles a client whose only grant is jwt-bearer in a namespace that
// is not first-party: with that grant dropped (clientspec.GrantTypes) nothing is
// left to register, and the client registered while the namespace was first-party
// must not keep the grant, so it is deleted, as deregister does.
func (r *OAuthClientReconciler) notFirstParty(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient) error {
	return r.unregister(ctx, oc, ts, admin, needsHuman(ReasonNotFirstParty, fmt.Sprintf(
		"grant type %s is for first-party clients only, and namespace %s is not in TokenServer %s/%s's firstPartyNamespaces: "+
			"the client has no other grant to register", oauthv1alpha1.GrantJWTBearer, oc.Namespace, ts.Namespace, ts.Name)),
		fmt.Sprintf("namespace %s is not first-party on TokenServer %s/%s and jwt-bearer is the client's only grant",
			oc.Namespace, ts.Namespace, ts.Name),
		"first-party")
}

// withoutFirstParty is the end of a pass, failed with cause, of a client whose
// namespace is not first-party: what it registered as id must not keep first-party
// rights for want of a push without them. A push needs the client's secret, a
// usable client ID and a spec the server takes, and a tenant whose namespace lost
// first-party status could otherwise keep skipping consent, or keep exchanging
// assertions for any user's tokens, by breaking any of them (deleting its Secret,
// say). So a registered client that still skips consent or has the jwt-bearer
// grant is deleted, with its tokens and grants; the first pass that goes through
// registers it again, without them.
func (r *OAuthClientReconciler) withoutFirstParty(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient, id string, cause error) error {
	if id == "" {
		return cause
	}
	c, err := admin.GetClient(ctx, id)
	if errors.Is(err, adminapi.ErrNotFound) {
		return cause
	}
	if err != nil {
		return errors.Join(cause, fmt.Errorf("read client %s to check that it has no first-party rights left: %w", id, err))
	}
	if c.OwnerNamespace != oc.Namespace || !c.SkipConsent && !slices.Contains(c.GrantTypes, string(oauthv1alpha1.GrantJWTBearer)) {
		return cause
	}
	err = admin.DeleteClient(ctx, id, oc.Namespace)
	switch {
	case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
		return cause // gone meanwhile, or no longer ours
	case err != nil:
		return errors.Join(cause, fmt.Errorf("delete client %s, which kept first-party rights: %w", id, err))
	}
	why := fmt.Sprintf("namespace %s is not first-party on TokenServer %s/%s and client %s could not be put without "+
		"first-party rights (%s): it was deleted from the token server, its tokens and grants revoked, and is "+
		"registered again once the OAuthClient syncs", oc.Namespace, ts.Namespace, ts.Name, id, errText(cause))
	r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonDeregistered, "Deregister", "%s", why)
	oc.Status.ClientID = ""
	if ce, ok := conditionOf(cause); ok {
		ce.message += "; client " + id + " was deleted from the token server, as it kept first-party rights"
	}
	return cause
}

// errText is err's message as a condition would say it.
func errText(err error) string {
	_, msg := notSynced(err)
	return msg
}

// unregister deletes what oc registered, says why (event, once per client deleted),
// and leaves oc in refused; the client comes back when the namespace is again what
// again says.
func (r *OAuthClientReconciler) unregister(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient, refused *conditionError, why, again string) error {
	// The ID in status, and the one the spec asks for: a pass that registered the
	// client may have recorded it in a status this pass's cached copy does not show
	// yet. A sibling whose TokenServer (another of the same server) still admits the
	// namespace may hold the wanted ID, registered: then it is the sibling's.
	ids := []string{oc.Status.ClientID}
	if wanted := clientspec.ClientID(oc); wanted != oc.Status.ClientID {
		held, err := r.heldBySibling(ctx, oc, wanted)
		if err != nil {
			return err
		}
		if !held {
			ids = append(ids, wanted)
		}
	}
	for _, id := range ids {
		if id == "" {
			continue
		}
		err := admin.DeleteClient(ctx, id, oc.Namespace)
		// The owner sweep may have deleted the registered client first: the object
		// still says, once, that it is no longer on the token server.
		if errors.Is(err, adminapi.ErrNotFound) && id == oc.Status.ClientID {
			err = nil
		}
		switch {
		case err == nil:
			r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonDeregistered, "Deregister",
				"%s: client %s deleted from the token server, its tokens and grants revoked", why, id)
			refused.message += "; client " + id + " was deleted from the token server and comes back when the namespace is " + again + " again"
		case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
			// Gone already, or not ours: nothing of ours is left to delete.
		default:
			return fmt.Errorf("deregister client %s from TokenServer %s/%s: %w", id, ts.Namespace, ts.Name, err)
		}
	}
	oc.Status.ClientID = ""
	return refused
}

// heldBySibling says whether another OAuthClient of oc's namespace, on any
// TokenServer, has id registered. It looks id up in the index of registered IDs
// once per TokenServer (there are few), not through the namespace's clients: a
// namespace the server does not admit may hold thousands, each of whose passes
// would otherwise read every other.
func (r *OAuthClientReconciler) heldBySibling(ctx context.Context, oc *oauthv1alpha1.OAuthClient, id string) (bool, error) {
	var servers oauthv1alpha1.TokenServerList
	if err := r.List(ctx, &servers); err != nil {
		return false, fmt.Errorf("list TokenServers: %w", err)
	}
	for i := range servers.Items {
		var list oauthv1alpha1.OAuthClientList
		key := serverClientKey(client.ObjectKeyFromObject(&servers.Items[i]), id)
		if err := r.List(ctx, &list, client.InNamespace(oc.Namespace), client.MatchingFields{indexRegisteredID: key}); err != nil {
			return false, fmt.Errorf("list OAuthClients in %s that registered %s: %w", oc.Namespace, id, err)
		}
		for j := range list.Items {
			if list.Items[j].Name != oc.Name {
				return true, nil
			}
		}
	}
	return false, nil
}

// checkClientID refuses a new custom ID outside the namespace's range, and an ID another
// OAuthClient of the namespace registered first: the token server cannot tell two
// OAuthClients of one owner apart, so it would let them overwrite each other.
func (r *OAuthClientReconciler) checkClientID(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, clientID string) error {
	// An ID this object registered before the rule existed keeps working: the token
	// server's owner check still stands between it and any other namespace's client.
	// It is remembered apart from status.clientID, which a de-admission clears.
	if ok, msg := clientspec.ClientIDAllowed(oc, ts); !ok {
		if oc.Status.ClientID != clientID && oc.Status.LegacyClientID != clientID {
			return needsHuman(ReasonClientIDNotAllowed, msg)
		}
		oc.Status.LegacyClientID = clientID
	} else {
		oc.Status.LegacyClientID = ""
	}
	var list oauthv1alpha1.OAuthClientList
	if err := r.List(ctx, &list, client.InNamespace(oc.Namespace),
		client.MatchingFields{indexWantedID: serverClientKey(clientspec.Server(oc), clientID)}); err != nil {
		return fmt.Errorf("list OAuthClients in %s that want client ID %s: %w", oc.Namespace, clientID, err)
	}
	for i := range list.Items {
		if other := &list.Items[i]; other.Name != oc.Name && firstClaim(other, oc, clientID) {
			oc.Status.ClientID = ""
			return needsHuman(ReasonClientIDConflict, fmt.Sprintf(
				"client ID %s is already OAuthClient %s's in this namespace", clientID, other.Name)).after(r.Resync)
		}
	}
	return nil
}

// firstClaim says whether a holds clientID before b: the one that registered it,
// else the older, else the first by name.
func firstClaim(a, b *oauthv1alpha1.OAuthClient, clientID string) bool {
	ra, rb := a.Status.ClientID == clientID, b.Status.ClientID == clientID
	switch {
	case ra != rb:
		return ra
	case !a.CreationTimestamp.Equal(&b.CreationTimestamp):
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func (r *OAuthClientReconciler) skipConsentCondition(oc *oauthv1alpha1.OAuthClient, firstParty bool) {
	if !oc.Spec.SkipConsent {
		meta.RemoveStatusCondition(&oc.Status.Conditions, ConditionSkipConsent)
		return
	}
	c := metav1.Condition{Type: ConditionSkipConsent, ObservedGeneration: oc.Generation, Status: metav1.ConditionTrue,
		Reason: ReasonFirstParty, Message: "users are not asked for consent"}
	if !firstParty {
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNotFirstParty
		c.Message = "skipConsent is ignored: namespace " + oc.Namespace + " is not in the TokenServer's firstPartyNamespaces"
		if slices.Contains(oc.Spec.GrantTypes, oauthv1alpha1.GrantJWTBearer) {
			c.Message += "; grant type " + string(oauthv1alpha1.GrantJWTBearer) + " is not registered, as it is for first-party clients only"
		}
		if meta.IsStatusConditionTrue(oc.Status.Conditions, ConditionSkipConsent) {
			r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonNotFirstParty, "Sync",
				"namespace %s lost first-party status: users are asked for consent again", oc.Namespace)
		}
	}
	meta.SetStatusCondition(&oc.Status.Conditions, c)
}
