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
	ConditionSkipConsent      = "SkipConsent"
)

// Index keys: field names, not credentials.
const (
	indexServer = "oauthclient.server"
	indexSecret = "oauthclient.secret" // #nosec G101
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

// sync resolves the server, checks the namespace policy, ensures the credentials and
// pushes the client. It returns when a secret rotation needs the next look.
func (r *OAuthClientReconciler) sync(ctx context.Context, oc *oauthv1alpha1.OAuthClient) (time.Duration, error) {
	ts, admin, err := r.server(ctx, oc)
	if err != nil {
		return 0, err
	}
	var ns corev1.Namespace
	if err := r.Get(ctx, types.NamespacedName{Name: oc.Namespace}, &ns); err != nil {
		return 0, err
	}
	admitted, err := clientspec.Admitted(ts, &ns)
	if err != nil {
		return 0, err
	}
	if !admitted {
		return 0, &stopped{ReasonNamespaceNotAllowed, fmt.Sprintf(
			"TokenServer %s/%s does not admit clients from namespace %s (spec.clientNamespaces)", ts.Namespace, ts.Name, oc.Namespace), 0}
	}
	firstParty, err := clientspec.FirstParty(ts, &ns)
	if err != nil {
		return 0, err
	}
	r.skipConsentCondition(oc, firstParty)

	clientID := clientspec.ClientID(oc)
	creds, next, err := r.credentials(ctx, oc, clientID, string(ts.Spec.Issuer))
	if err != nil {
		return 0, err
	}
	out, err := admin.PutClient(ctx, clientspec.Desired(oc, clientID, creds, firstParty))
	if err != nil {
		return 0, fmt.Errorf("pushing the client to the token server: %w", err)
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
	oc.Status.ClientID = clientID
	if clientspec.NeedsSecret(oc) {
		oc.Status.SecretName = clientspec.SecretName(oc)
	}
	return next, nil
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
	}
	meta.SetStatusCondition(&oc.Status.Conditions, c)
}

// credentials returns the client's secrets: from the Secret the operator generated
// (creating it the first time, rotating it on schedule with the previous secret kept
// for the overlap), or from the user's Secret with create: false, which it waits for
// without inventing one. It returns when rotation needs the next look.
func (r *OAuthClientReconciler) credentials(ctx context.Context, oc *oauthv1alpha1.OAuthClient, clientID, issuer string) (
	clientspec.Credentials, time.Duration, error) {
	var none clientspec.Credentials
	if !clientspec.NeedsSecret(oc) {
		return none, 0, nil
	}
	name := clientspec.SecretName(oc)
	var sec corev1.Secret
	err := r.Secrets.Get(ctx, types.NamespacedName{Namespace: oc.Namespace, Name: name}, &sec)
	switch {
	case apierrors.IsNotFound(err) && !clientspec.CreatesSecret(oc):
		return none, 0, &stopped{ReasonSecretNotFound,
			fmt.Sprintf("waiting for Secret %s with key %s (spec.secret.create is false)", name, clientspec.KeyClientSecret), 0}
	case apierrors.IsNotFound(err):
		secret, err := newSecret()
		if err != nil {
			return none, 0, err
		}
		sec = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: oc.Namespace, Name: name,
			Labels: map[string]string{LabelManagedBy: ManagedBy}},
			Type: corev1.SecretTypeOpaque, Data: clientspec.SecretData(clientID, secret, issuer)}
		if err := controllerutil.SetControllerReference(oc, &sec, r.Scheme()); err != nil {
			return none, 0, err
		}
		if err := r.Create(ctx, &sec); err != nil {
			return none, 0, err
		}
		_, next, err := r.rotate(ctx, oc, &sec, clientID, issuer)
		return clientspec.Credentials{Secret: secret}, next, err
	case err != nil:
		return none, 0, err
	}
	secret := string(sec.Data[clientspec.KeyClientSecret])
	if len(secret) < 32 {
		return none, 0, &stopped{ReasonSecretInvalid,
			fmt.Sprintf("Secret %s: key %s must hold at least 32 characters", name, clientspec.KeyClientSecret), 0}
	}
	if !clientspec.CreatesSecret(oc) || !metav1.IsControlledBy(&sec, oc) {
		return clientspec.Credentials{Secret: secret}, 0, nil
	}
	return r.rotate(ctx, oc, &sec, clientID, issuer)
}

// rotate brings a generated Secret in line: a new secret when rotation is due (the
// old one kept as previous_client_secret until the overlap ends), the previous one
// dropped after, and the other keys as they should be. It writes only on a change.
func (r *OAuthClientReconciler) rotate(ctx context.Context, oc *oauthv1alpha1.OAuthClient, sec *corev1.Secret, clientID, issuer string) (
	clientspec.Credentials, time.Duration, error) {
	rot := oc.Spec.Secret.Rotation
	// The Secret itself says when it was last rotated: a stale cached copy of it then
	// fails the update (resourceVersion) instead of rotating twice.
	rotatedAt := sec.CreationTimestamp.Time
	if v, err := time.Parse(time.RFC3339, sec.Annotations[clientspec.AnnotationRotatedAt]); err == nil {
		rotatedAt = v
	}
	var previousUntil time.Time
	if v := sec.Annotations[clientspec.AnnotationPreviousUntil]; v != "" {
		previousUntil, _ = time.Parse(time.RFC3339, v)
	}
	now := time.Now()
	plan, err := clientspec.PlanRotation(rot, rotatedAt, previousUntil, now)
	if err != nil {
		return clientspec.Credentials{}, 0, err
	}
	creds := clientspec.Credentials{Secret: string(sec.Data[clientspec.KeyClientSecret]),
		PreviousSecret: string(sec.Data[clientspec.KeyPreviousClientSecret])}
	if plan.Rotate {
		overlap, err := clientspec.Overlap(rot)
		if err != nil {
			return clientspec.Credentials{}, 0, err
		}
		fresh, err := newSecret()
		if err != nil {
			return clientspec.Credentials{}, 0, err
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
	if !equality.Semantic.DeepEqual(sec.Data, want) || !equality.Semantic.DeepEqual(nilIfEmpty(sec.Annotations), nilIfEmpty(annotations)) {
		sec.Data, sec.Annotations = want, annotations
		if err := r.Update(ctx, sec); err != nil {
			return clientspec.Credentials{}, 0, err
		}
	}
	t := metav1.NewTime(rotatedAt)
	oc.Status.SecretRotatedAt = &t
	if plan.Rotate {
		r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, "SecretRotated", "Rotate",
			"new secret in %s; the previous one works until %s", sec.Name, previousUntil.UTC().Format(time.RFC3339))
	}
	next := plan.Next
	if plan.Rotate {
		if overlap := time.Until(previousUntil); overlap > 0 && overlap < next {
			next = overlap
		}
	}
	return creds, next, nil
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
// issued to it, before the finalizer goes; deletionPolicy Orphan leaves it there. A
// server that cannot be reached keeps the finalizer, and the delete is retried.
func (r *OAuthClientReconciler) finalize(ctx context.Context, oc *oauthv1alpha1.OAuthClient) error {
	if !controllerutil.ContainsFinalizer(oc, Finalizer) {
		return nil
	}
	if oc.Spec.DeletionPolicy != "Orphan" {
		var ts oauthv1alpha1.TokenServer
		err := r.Get(ctx, clientspec.Server(oc), &ts)
		switch {
		case apierrors.IsNotFound(err):
			// The server is gone, and its clients with it.
		case err != nil:
			return err
		default:
			admin, err := adminClientFor(ctx, r.Secrets, &ts)
			if err != nil {
				return err
			}
			if err := admin.DeleteClient(ctx, clientspec.ClientID(oc)); err != nil && !errors.Is(err, adminapi.ErrNotFound) {
				return fmt.Errorf("deleting the client from the token server: %w", err)
			}
			r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, "Deleted", "Delete",
				"client %s deleted from the token server; its tokens are revoked", clientspec.ClientID(oc))
		}
	}
	controllerutil.RemoveFinalizer(oc, Finalizer)
	return client.IgnoreNotFound(r.Update(ctx, oc))
}

// SetupWithManager registers the reconciler and what it watches: its Secrets, the
// user's Secrets it waits for, its TokenServers and Namespaces.
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
		Named("oauthclient").
		Complete(r)
}

func (r *OAuthClientReconciler) clientsUsingSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if metav1.GetControllerOf(o) != nil && metav1.GetControllerOf(o).Kind == "OAuthClient" {
		return nil // ours: Owns above handles it
	}
	return r.list(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexSecret: o.GetName()})
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
