package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// finalize removes the client from its token server, which revokes every token
// issued to it, before the finalizer goes; deletionPolicy Orphan leaves it there,
// for as long as its namespace stays admitted (OwnerSweeper deletes it after). A
// server that cannot be reached keeps the finalizer, and the delete is retried.
func (r *OAuthClientReconciler) finalize(ctx context.Context, oc *oauthv1alpha1.OAuthClient) error {
	if !controllerutil.ContainsFinalizer(oc, Finalizer) {
		return nil
	}
	if oc.Spec.DeletionPolicy != oauthv1alpha1.DeletionPolicyOrphan && oc.Status.ClientID != "" {
		if err := r.deleteRegistered(ctx, oc); err != nil {
			return holdDelete(ctx, r.Client, r.Recorder, oc, &oc.Status.Conditions,
				"client "+oc.Status.ClientID+" is still registered on the token server, with its tokens", err)
		}
	}
	return releaseFinalizer(ctx, r.Client, oc)
}

// deleteRegistered deletes from the token server only what this object registered
// (status.clientID), and only as the client's owner: an OAuthClient can never delete
// another namespace's client, whatever its spec says. Whether the namespace is still
// admitted does not matter: the owner check is what makes the delete safe, and a
// client left behind because its namespace lost admission during an outage would
// outlive its OAuthClient.
func (r *OAuthClientReconciler) deleteRegistered(ctx context.Context, oc *oauthv1alpha1.OAuthClient) error {
	id := oc.Status.ClientID
	var ts oauthv1alpha1.TokenServer
	err := r.Get(ctx, clientspec.Server(oc), &ts)
	if apierrors.IsNotFound(err) {
		return nil // the server is gone, and its clients with it
	}
	if err != nil {
		return fmt.Errorf("get TokenServer %s: %w", clientspec.Server(oc), err)
	}
	admin, err := adminClientFor(ctx, r.Secrets, &ts)
	if err != nil {
		return fmt.Errorf("admin client of TokenServer %s/%s: %w", ts.Namespace, ts.Name, err)
	}
	err = admin.DeleteClient(ctx, id, oc.Namespace)
	switch {
	case err == nil:
		r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, "Deleted", "Delete",
			"client %s deleted from the token server; its tokens are revoked", id)
	case errors.Is(err, adminapi.ErrNotFound):
	case errors.Is(err, adminapi.ErrConflict):
		r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonClientIDConflict, "Delete",
			"client %s left on the token server: %s", id, errMessage(err))
	default:
		return fmt.Errorf("delete client %s from TokenServer %s/%s: %w", id, ts.Namespace, ts.Name, err)
	}
	return nil
}
