package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

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
	// Clock decides secret rotation (clock.RealClock when nil).
	Clock clock.PassiveClock
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
