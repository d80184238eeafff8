package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
)

// Finalizer held by OAuthClients and ConsentGrants until the token server has let go.
const Finalizer = "oauth.kubeoauth.io/finalizer"

// Reasons of OAuthClient conditions and events.
const (
	ReasonSynced              = "Synced"
	ReasonServerNotFound      = "ServerNotFound"
	ReasonServerNotReady      = "ServerNotReady"
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonSecretInvalid       = "SecretInvalid"
	ReasonSyncFailed          = "SyncFailed"
	ReasonNotFirstParty       = "NotFirstParty"
	ReasonFirstParty          = "FirstParty"
	// ReasonClientIDNotAllowed: spec.clientID is outside the namespace's range (see
	// clientspec.ClientIDAllowed).
	ReasonClientIDNotAllowed = "ClientIDNotAllowed"
	// ReasonClientIDConflict: the client ID is another OAuthClient's, in this namespace
	// or (as the token server says) in another.
	ReasonClientIDConflict = "ClientIDConflict"
	// ReasonDeregistered: the client was deleted from the token server because its
	// namespace is no longer admitted.
	ReasonDeregistered   = "Deregistered"
	ConditionSkipConsent = "SkipConsent"
)

// Index keys: field names, not credentials.
const (
	indexServer = "oauthclient.server"
	indexSecret = "oauthclient.secret" // #nosec G101
	// indexWantedID is "<server> <client ID it would register>", to find OAuthClients
	// of one namespace that want the same ID.
	indexWantedID = "oauthclient.wantedClientID"
)

func serverClientKey(server types.NamespacedName, clientID string) string {
	return server.String() + " " + clientID
}

// OAuthClientReconciler registers OAuthClients on their TokenServer and keeps their
// credentials Secret.
type OAuthClientReconciler struct {
	client.Client
	// Secrets reads the Secrets the reconciler needs (see CacheOptions).
	Secrets  *SecretReader
	Recorder events.EventRecorder
	// Resync is how often an unchanged client is pushed again, repairing drift in the
	// token server (an idempotent PUT: no change, no write).
	Resync time.Duration
	// Workers is how many clients are reconciled at once (default 8): each pass waits
	// on the token server and the API server, so one worker would leave both idle.
	Workers int
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// stopped ends a pass with a condition already set: nothing to retry until something
// changes or the requeue comes.
type stopped struct {
	reason, message string
	requeue         time.Duration
}

func (s *stopped) Error() string { return s.reason + ": " + s.message }

// Reconcile fetches the client, ensures the finalizer, runs the phases and patches
// status once.
func (r *OAuthClientReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var oc oauthv1alpha1.OAuthClient
	if err := r.Get(ctx, req.NamespacedName, &oc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !oc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, &oc)
	}
	if controllerutil.AddFinalizer(&oc, Finalizer) {
		if err := r.Update(ctx, &oc); err != nil {
			return ctrl.Result{}, err
		}
	}
	before := oc.DeepCopy()
	next, err := r.sync(ctx, &oc)
	var stop *stopped
	ready := metav1.Condition{Type: oauthv1alpha1.ConditionReady, ObservedGeneration: oc.Generation}
	synced := metav1.Condition{Type: oauthv1alpha1.ConditionSynced, ObservedGeneration: oc.Generation}
	result := ctrl.Result{RequeueAfter: r.Resync}
	if next > 0 && next < result.RequeueAfter {
		result.RequeueAfter = next // a rotation or the end of an overlap is due first
	}
	switch {
	case err == nil:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonSynced, "registered on the token server"
		synced.Status, synced.Reason, synced.Message = metav1.ConditionTrue, ReasonSynced, "the token server has this spec"
	case errors.As(err, &stop):
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, stop.reason, stop.message
		synced.Status, synced.Reason, synced.Message = metav1.ConditionFalse, stop.reason, stop.message
		result, err = ctrl.Result{RequeueAfter: stop.requeue}, nil
	default:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonSyncFailed, err.Error()
		synced.Status, synced.Reason, synced.Message = metav1.ConditionFalse, ReasonSyncFailed, err.Error()
	}
	meta.SetStatusCondition(&oc.Status.Conditions, ready)
	meta.SetStatusCondition(&oc.Status.Conditions, synced)
	oc.Status.ObservedGeneration = oc.Generation
	if perr := patchStatusIfChanged(ctx, r.Client, before, &oc, !equality.Semantic.DeepEqual(before.Status, oc.Status)); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	return result, err
}

// sync resolves the server, checks the namespace policy and the client ID, and pushes
// the client with its credentials: the token server first, then the Secret, so that
// apps never hold a secret the server does not know. It returns when a secret
// rotation needs the next look.
func (r *OAuthClientReconciler) sync(ctx context.Context, oc *oauthv1alpha1.OAuthClient) (time.Duration, error) {
	ts, admin, err := r.server(ctx, oc)
	if err != nil {
		return 0, err
	}
	admitted, firstParty, err := r.policy(ctx, ts, oc.Namespace)
	if err != nil {
		return 0, err
	}
	if !admitted {
		return 0, r.deregister(ctx, oc, ts, admin)
	}
	r.skipConsentCondition(oc, firstParty)

	clientID := clientspec.ClientID(oc)
	if err := r.checkClientID(ctx, oc, ts, clientID); err != nil {
		return 0, err
	}
	creds, commit, next, err := r.credentials(ctx, oc, clientID, string(ts.Spec.Issuer))
	if err != nil {
		return 0, err
	}
	out, err := admin.PutClient(ctx, clientspec.Desired(oc, clientID, creds, firstParty))
	if errors.Is(err, adminapi.ErrConflict) {
		oc.Status.ClientID = ""
		return 0, r.warn(oc, &stopped{ReasonClientIDConflict, fmt.Sprintf(
			"client ID %s is taken on TokenServer %s/%s: %s", clientID, ts.Namespace, ts.Name, errMessage(err)), r.Resync})
	}
	if err != nil {
		return 0, fmt.Errorf("pushing the client to the token server: %w", err)
	}
	if commit != nil {
		if err := commit(ctx); err != nil {
			return 0, fmt.Errorf("writing Secret %s after the token server took its secret: %w", clientspec.SecretName(oc), err)
		}
	}
	// One event per change, not one per step: with thousands of clients applied at
	// once, every event is a write to the API server.
	if out.Changed {
		msg := fmt.Sprintf("client %s registered on %s/%s", clientID, ts.Namespace, ts.Name)
		if clientspec.NeedsSecret(oc) && oc.Status.SecretName == "" {
			msg += "; credentials in Secret " + clientspec.SecretName(oc)
		}
		r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, ReasonSynced, "Sync", "%s", msg)
		log.FromContext(ctx).Info("client pushed", "clientID", clientID)
	}
	// Recorded only after the token server took it: status.clientID is what this
	// object registered, and the only ID its finalizer ever deletes.
	oc.Status.ClientID = clientID
	if clientspec.NeedsSecret(oc) {
		oc.Status.SecretName = clientspec.SecretName(oc)
	}
	return next, nil
}

// errMessage is the token server's own words for an admin API error.
func errMessage(err error) string {
	var apiErr *adminapi.Error
	if errors.As(err, &apiErr) {
		return apiErr.Message
	}
	return err.Error()
}

// policy says whether the server admits clients of namespace name, and whether they
// are first-party.
func (r *OAuthClientReconciler) policy(ctx context.Context, ts *oauthv1alpha1.TokenServer, name string) (
	admitted, firstParty bool, err error) {
	var ns corev1.Namespace
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &ns); err != nil {
		return false, false, err
	}
	if admitted, err = clientspec.Admitted(ts, &ns); err != nil || !admitted {
		return false, false, err
	}
	firstParty, err = clientspec.FirstParty(ts, &ns)
	return admitted, firstParty, err
}

// deregister handles a namespace the server does not admit: nothing is pushed, and a
// client this object registered before the namespace lost admission is deleted from
// the token server (its tokens and grants with it), as the owner, so that nothing of
// another namespace can go.
func (r *OAuthClientReconciler) deregister(ctx context.Context, oc *oauthv1alpha1.OAuthClient,
	ts *oauthv1alpha1.TokenServer, admin *adminapi.HTTPClient) error {
	stop := &stopped{ReasonNamespaceNotAllowed, fmt.Sprintf(
		"TokenServer %s/%s does not admit clients from namespace %s (spec.clientNamespaces)", ts.Namespace, ts.Name, oc.Namespace), 0}
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
				"namespace %s is no longer admitted by TokenServer %s/%s: client %s deleted from the token server, its tokens and grants revoked",
				oc.Namespace, ts.Namespace, ts.Name, id)
			stop.message += "; client " + id + " was deleted from the token server and comes back when the namespace is admitted again"
		case errors.Is(err, adminapi.ErrNotFound), errors.Is(err, adminapi.ErrConflict):
			// Gone already, or not ours: nothing of ours is left to delete.
		default:
			return fmt.Errorf("deregistering client %s from the token server: %w", id, err)
		}
	}
	oc.Status.ClientID = ""
	return r.warn(oc, stop)
}

// heldBySibling says whether another OAuthClient of oc's namespace, on any
// TokenServer, has id registered.
func (r *OAuthClientReconciler) heldBySibling(ctx context.Context, oc *oauthv1alpha1.OAuthClient, id string) (bool, error) {
	var list oauthv1alpha1.OAuthClientList
	if err := r.List(ctx, &list, client.InNamespace(oc.Namespace)); err != nil {
		return false, err
	}
	for i := range list.Items {
		if other := &list.Items[i]; other.Name != oc.Name && other.Status.ClientID == id {
			return true, nil
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
			return r.warn(oc, &stopped{ReasonClientIDNotAllowed, msg, 0})
		}
		oc.Status.LegacyClientID = clientID
	} else {
		oc.Status.LegacyClientID = ""
	}
	var list oauthv1alpha1.OAuthClientList
	if err := r.List(ctx, &list, client.InNamespace(oc.Namespace),
		client.MatchingFields{indexWantedID: serverClientKey(clientspec.Server(oc), clientID)}); err != nil {
		return err
	}
	for i := range list.Items {
		if other := &list.Items[i]; other.Name != oc.Name && firstClaim(other, oc, clientID) {
			oc.Status.ClientID = ""
			return r.warn(oc, &stopped{ReasonClientIDConflict, fmt.Sprintf(
				"client ID %s is already OAuthClient %s's in this namespace", clientID, other.Name), r.Resync})
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

// warn emits a Warning event for a stop the object was not already in, so that a
// refused client says so once, not on every resync.
func (r *OAuthClientReconciler) warn(oc *oauthv1alpha1.OAuthClient, s *stopped) error {
	if c := meta.FindStatusCondition(oc.Status.Conditions, oauthv1alpha1.ConditionReady); c == nil || c.Reason != s.reason {
		r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, s.reason, "Sync", "%s", s.message)
	}
	return s
}

// server returns the client's TokenServer, Ready, and its admin API.
func (r *OAuthClientReconciler) server(ctx context.Context, oc *oauthv1alpha1.OAuthClient) (
	*oauthv1alpha1.TokenServer, *adminapi.HTTPClient, error) {
	key := clientspec.Server(oc)
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, key, &ts); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, &stopped{ReasonServerNotFound, fmt.Sprintf("TokenServer %s not found", key), 30 * time.Second}
		}
		return nil, nil, err
	}
	if !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
		return nil, nil, &stopped{ReasonServerNotReady, fmt.Sprintf("waiting for TokenServer %s to be Ready", key), 0}
	}
	admin, err := adminClientFor(ctx, r.Secrets, &ts)
	if err != nil {
		return nil, nil, &stopped{ReasonServerNotReady, err.Error(), 10 * time.Second}
	}
	return &ts, admin, nil
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
		if meta.IsStatusConditionTrue(oc.Status.Conditions, ConditionSkipConsent) {
			r.Recorder.Eventf(oc, nil, corev1.EventTypeWarning, ReasonNotFirstParty, "Sync",
				"namespace %s lost first-party status: users are asked for consent again", oc.Namespace)
		}
	}
	meta.SetStatusCondition(&oc.Status.Conditions, c)
}

// secretWrite writes the credentials Secret once the token server has the secrets in
// it (nil: nothing to write).
type secretWrite func(context.Context) error

// credentials returns the client's secrets: from the Secret the operator generated
// (creating it the first time, rotating it on schedule with the previous secret kept
// for the overlap), or from the user's Secret with create: false, which it waits for
// without inventing one. A new or rotated secret is only returned with the write that
// puts it in the Secret, which the caller runs after the token server took it. It
// returns when rotation needs the next look.
func (r *OAuthClientReconciler) credentials(ctx context.Context, oc *oauthv1alpha1.OAuthClient, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	if !clientspec.NeedsSecret(oc) {
		return none, nil, 0, nil
	}
	key := types.NamespacedName{Namespace: oc.Namespace, Name: clientspec.SecretName(oc)}
	var sec corev1.Secret
	err := r.Secrets.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) && clientspec.CreatesSecret(oc) {
		// The cache may not show a Secret created a moment ago: pushing a fresh secret
		// for it would lock out the apps that read the one in it.
		err = r.Secrets.api.Get(ctx, key, &sec)
	}
	switch {
	case apierrors.IsNotFound(err) && !clientspec.CreatesSecret(oc):
		return none, nil, 0, &stopped{ReasonSecretNotFound,
			fmt.Sprintf("waiting for Secret %s with key %s (spec.secret.create is false)", key.Name, clientspec.KeyClientSecret), 0}
	case apierrors.IsNotFound(err):
		return r.newCredentials(oc, key, clientID, issuer)
	case err != nil:
		return none, nil, 0, err
	}
	secret := string(sec.Data[clientspec.KeyClientSecret])
	if len(secret) < 32 {
		return none, nil, 0, &stopped{ReasonSecretInvalid,
			fmt.Sprintf("Secret %s: key %s must hold at least 32 characters", key.Name, clientspec.KeyClientSecret), 0}
	}
	if !clientspec.CreatesSecret(oc) || !metav1.IsControlledBy(&sec, oc) {
		return clientspec.Credentials{Secret: secret}, nil, 0, nil
	}
	return r.rotate(ctx, oc, &sec, clientID, issuer)
}

// newCredentials makes the first secret and the Secret that will hold it.
func (r *OAuthClientReconciler) newCredentials(oc *oauthv1alpha1.OAuthClient, key types.NamespacedName, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	secret, err := newSecret()
	if err != nil {
		return none, nil, 0, err
	}
	now := time.Now().Truncate(time.Second)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
		Labels:      map[string]string{LabelManagedBy: ManagedBy},
		Annotations: map[string]string{clientspec.AnnotationRotatedAt: now.UTC().Format(time.RFC3339)}},
		Type: corev1.SecretTypeOpaque, Data: clientspec.SecretData(clientID, secret, issuer)}
	if err := controllerutil.SetControllerReference(oc, sec, r.Scheme()); err != nil {
		return none, nil, 0, err
	}
	plan, err := clientspec.PlanRotation(oc.Spec.Secret.Rotation, now, time.Time{}, now)
	if err != nil {
		return none, nil, 0, err
	}
	write := func(ctx context.Context) error {
		if err := r.Create(ctx, sec); err != nil {
			return err
		}
		t := metav1.NewTime(now)
		oc.Status.SecretRotatedAt = &t
		return nil
	}
	return clientspec.Credentials{Secret: secret}, write, plan.Next, nil
}

// rotationState is what a generated Secret says about its rotation: when it was last
// rotated (or created) and until when its previous secret works (zero: none).
func rotationState(sec *corev1.Secret) (rotatedAt, previousUntil time.Time) {
	rotatedAt = sec.CreationTimestamp.Time
	if v, err := time.Parse(time.RFC3339, sec.Annotations[clientspec.AnnotationRotatedAt]); err == nil {
		rotatedAt = v
	}
	if v := sec.Annotations[clientspec.AnnotationPreviousUntil]; v != "" {
		previousUntil, _ = time.Parse(time.RFC3339, v)
	}
	return rotatedAt, previousUntil
}

// rotate brings a generated Secret in line: a new secret when rotation is due (the
// old one kept as previous_client_secret until the overlap ends), the previous one
// dropped after, and the other keys as they should be. It returns the secrets to push
// and the write that follows (nil when the Secret is as it should be). Crash-safe in
// either order of failure: the token server first learns the new secret with the
// current one as previous, so apps holding the current one keep working whether or
// not the Secret write that follows happens; if it does not, the next pass rotates
// afresh from the Secret as it stands.
func (r *OAuthClientReconciler) rotate(ctx context.Context, oc *oauthv1alpha1.OAuthClient, sec *corev1.Secret, clientID, issuer string) (
	clientspec.Credentials, secretWrite, time.Duration, error) {
	var none clientspec.Credentials
	rot := oc.Spec.Secret.Rotation
	now := time.Now()
	rotatedAt, previousUntil := rotationState(sec)
	plan, err := clientspec.PlanRotation(rot, rotatedAt, previousUntil, now)
	if err != nil {
		return none, nil, 0, err
	}
	if plan.Rotate {
		// Rotating from a stale cached copy would push a secret that makes the one
		// already in the Secret (and in the apps) unknown to the server: read it fresh.
		var fresh corev1.Secret
		if err := r.Secrets.api.Get(ctx, client.ObjectKeyFromObject(sec), &fresh); err != nil {
			return none, nil, 0, err
		}
		if fresh.ResourceVersion != sec.ResourceVersion {
			sec = &fresh
			rotatedAt, previousUntil = rotationState(sec)
			if plan, err = clientspec.PlanRotation(rot, rotatedAt, previousUntil, now); err != nil {
				return none, nil, 0, err
			}
		}
	}
	creds := clientspec.Credentials{Secret: string(sec.Data[clientspec.KeyClientSecret]),
		PreviousSecret: string(sec.Data[clientspec.KeyPreviousClientSecret])}
	if plan.Rotate {
		overlap, err := clientspec.Overlap(rot)
		if err != nil {
			return none, nil, 0, err
		}
		fresh, err := newSecret()
		if err != nil {
			return none, nil, 0, err
		}
		creds.PreviousSecret, creds.Secret = creds.Secret, fresh
		previousUntil = now.Add(overlap).Truncate(time.Second)
	}
	if plan.DropPrevious {
		creds.PreviousSecret, previousUntil = "", time.Time{}
	}
	want := clientspec.SecretData(clientID, creds.Secret, issuer)
	annotations := map[string]string{}
	for k, v := range sec.Annotations {
		annotations[k] = v
	}
	delete(annotations, clientspec.AnnotationPreviousUntil)
	if plan.Rotate {
		rotatedAt = now.Truncate(time.Second)
		annotations[clientspec.AnnotationRotatedAt] = rotatedAt.UTC().Format(time.RFC3339)
	}
	if creds.PreviousSecret != "" && !previousUntil.IsZero() {
		want[clientspec.KeyPreviousClientSecret] = []byte(creds.PreviousSecret)
		annotations[clientspec.AnnotationPreviousUntil] = previousUntil.UTC().Format(time.RFC3339)
		until := metav1.NewTime(previousUntil)
		creds.PreviousUntil = &until
	} else {
		creds.PreviousSecret = ""
	}
	next := plan.Next
	if plan.Rotate {
		if overlap := time.Until(previousUntil); overlap > 0 && overlap < next {
			next = overlap
		}
	}
	t := metav1.NewTime(rotatedAt)
	if equality.Semantic.DeepEqual(sec.Data, want) && equality.Semantic.DeepEqual(nilIfEmpty(sec.Annotations), nilIfEmpty(annotations)) {
		oc.Status.SecretRotatedAt = &t
		return creds, nil, next, nil
	}
	write := func(ctx context.Context) error {
		sec.Data, sec.Annotations = want, annotations
		if err := r.Update(ctx, sec); err != nil {
			return err
		}
		oc.Status.SecretRotatedAt = &t
		if plan.Rotate {
			r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, "SecretRotated", "Rotate",
				"new secret in %s; the previous one works until %s", sec.Name, previousUntil.UTC().Format(time.RFC3339))
		}
		return nil
	}
	return creds, write, next, nil
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// newSecret is 256 random bits, base64url: 43 characters.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// finalize removes the client from its token server, which revokes every token
// issued to it, before the finalizer goes; deletionPolicy Orphan leaves it there,
// for as long as its namespace stays admitted (OwnerSweeper deletes it after). A
// server that cannot be reached keeps the finalizer, and the delete is retried.
func (r *OAuthClientReconciler) finalize(ctx context.Context, oc *oauthv1alpha1.OAuthClient) error {
	if !controllerutil.ContainsFinalizer(oc, Finalizer) {
		return nil
	}
	if oc.Spec.DeletionPolicy != "Orphan" && oc.Status.ClientID != "" {
		if err := r.deleteRegistered(ctx, oc); err != nil {
			return err
		}
	}
	controllerutil.RemoveFinalizer(oc, Finalizer)
	return client.IgnoreNotFound(r.Update(ctx, oc))
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
		return err
	}
	admin, err := adminClientFor(ctx, r.Secrets, &ts)
	if err != nil {
		return err
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
		return fmt.Errorf("deleting the client from the token server: %w", err)
	}
	return nil
}

// SetupWithManager registers the reconciler and what it watches: its Secrets, the
// user's Secrets it waits for, its TokenServers and the labels of Namespaces.
func (r *OAuthClientReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Resync == 0 {
		r.Resync = 10 * time.Minute
	}
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &oauthv1alpha1.OAuthClient{}, indexServer, func(o client.Object) []string {
		return []string{clientspec.Server(o.(*oauthv1alpha1.OAuthClient)).String()}
	}); err != nil {
		return err
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
		return err
	}
	if err := idx.IndexField(ctx, &oauthv1alpha1.OAuthClient{}, indexWantedID, func(o client.Object) []string {
		oc := o.(*oauthv1alpha1.OAuthClient)
		return []string{serverClientKey(clientspec.Server(oc), clientspec.ClientID(oc))}
	}); err != nil {
		return err
	}
	if r.Workers == 0 {
		r.Workers = 8
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status patches and finalizer updates change neither the generation nor
		// labels or annotations: they need no second pass. (Setting deletionTimestamp
		// bumps the generation, so deletes still come through.)
		For(&oauthv1alpha1.OAuthClient{}, builder.WithPredicates(specChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Workers}).
		// A Secret we own appears because we created it, in a pass that already used it:
		// only its changes and deletion need another pass.
		// Secrets as metadata only (see SecretReader): a user's Secret this client
		// waits for is noticed by its name, without the cache holding its data.
		Owns(&corev1.Secret{}, builder.OnlyMetadata,
			builder.WithPredicates(predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clientsUsingSecret)).
		Watches(&oauthv1alpha1.TokenServer{}, handler.EnqueueRequestsFromMapFunc(r.clientsOfServer)).
		// A namespace's labels decide admission and first-party status: a label change
		// registers, deregisters or drops skipConsent within seconds, not at the resync.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.clientsInNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("oauthclient").
		Complete(r)
}

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
