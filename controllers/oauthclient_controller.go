package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
	// ReasonClientRefused: the token server refused the client's spec, naming the
	// field (an audience that is another namespace's client ID).
	ReasonClientRefused = "ClientRefused"
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

// Reconcile registers the client on its TokenServer and keeps its credentials
// Secret; its status says whether the token server has this spec.
func (r *OAuthClientReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	oc := &oauthv1alpha1.OAuthClient{}
	before, err := begin(ctx, r.Client, req, oc, r.finalize)
	if before == nil {
		return ctrl.Result{}, err
	}
	next, err := r.sync(ctx, oc)
	// Unchanged clients are pushed again every Resync (drift repair); a rotation or
	// the end of an overlap may be due first.
	return finish(ctx, r.Client, r.Recorder, clientKind, before, oc, soonest(next, r.Resync), err)
}

// clientKind: Ready says registered with this spec, or why not (and finish adds
// Reconciling or Stalled).
var clientKind = kind[*oauthv1alpha1.OAuthClient]{
	status: func(oc *oauthv1alpha1.OAuthClient) reported {
		return reported{&oc.Status.Conditions, &oc.Status.ObservedGeneration, &oc.Status}
	},
	conditions: func(_ *oauthv1alpha1.OAuthClient, err error) []metav1.Condition {
		if err == nil {
			return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, true, ReasonSynced, "the token server has this spec")}
		}
		reason, msg := notSynced(err)
		return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, false, reason, msg)}
	},
}

// notSynced is how a pass of an OAuthClient or ConsentGrant that did not go through
// reads in its conditions: a condition error's reason and message, any other error
// as SyncFailed.
func notSynced(err error) (reason, message string) {
	if ce, ok := conditionOf(err); ok {
		return ce.reason, ce.message
	}
	return ReasonSyncFailed, err.Error()
}

// sync resolves the server, checks the namespace policy and the client ID, and pushes
// the client with its credentials: the token server first, then the Secret, so that
// apps never hold a secret the server does not know. It returns when a secret
// rotation needs the next look.
func (r *OAuthClientReconciler) sync(ctx context.Context, oc *oauthv1alpha1.OAuthClient) (time.Duration, error) {
	ts, err := r.tokenServer(ctx, oc)
	if err != nil {
		return 0, err
	}
	// Admission first: a namespace the server does not admit learns that and
	// nothing more of the server (whether it is Ready, its admin Secret or URL).
	admitted, firstParty, err := r.policy(ctx, ts, oc.Namespace)
	if err != nil {
		return 0, err
	}
	admin, adminErr := r.admin(ctx, ts)
	if !admitted {
		if adminErr != nil {
			// What this object may have registered before is deleted once the
			// server answers again.
			return 0, notAdmitted(ts, oc).after(10 * time.Second)
		}
		return 0, r.deregister(ctx, oc, ts, admin)
	}
	if adminErr != nil {
		return 0, adminErr
	}
	r.skipConsentCondition(oc, firstParty)
	if len(clientspec.GrantTypes(oc, firstParty)) == 0 {
		return 0, r.notFirstParty(ctx, oc, ts, admin)
	}
	registered := oc.Status.ClientID
	next, err := r.push(ctx, oc, ts, admin, firstParty)
	if err != nil && !firstParty && r.dropsFirstParty(oc, err) {
		return 0, r.withoutFirstParty(ctx, oc, ts, admin, registered, err)
	}
	return next, err
}

// firstPartyGrace: after a failure a retry may mend (the token server answered an
// error, timed out), a client that kept first-party rights is deleted only once it
// has not been Ready for this long: one failure must not revoke every token of a
// client the next pass would put without them. After a failure a person must mend
// (a missing or short Secret, a refused client ID or spec), which the tenant may
// well have chosen, it is deleted at once.
const firstPartyGrace = 5 * time.Minute

// dropsFirstParty says whether a pass that failed with err goes on to delete what
// oc registered if it kept first-party rights (withoutFirstParty).
func (r *OAuthClientReconciler) dropsFirstParty(oc *oauthv1alpha1.OAuthClient, err error) bool {
	if _, ok := conditionOf(err); ok {
		return true
	}
	ready := meta.FindStatusCondition(oc.Status.Conditions, oauthv1alpha1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionFalse && r.Clock.Since(ready.LastTransitionTime.Time) > firstPartyGrace
}

// push checks the client ID, reads or makes the credentials and puts the client on
// the token server, then writes its Secret.
func (r *OAuthClientReconciler) push(ctx context.Context, oc *oauthv1alpha1.OAuthClient, ts *oauthv1alpha1.TokenServer,
	admin *adminapi.HTTPClient, firstParty bool) (time.Duration, error) {
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
		return 0, needsHuman(ReasonClientIDConflict, fmt.Sprintf(
			"client ID %s is taken on TokenServer %s/%s: %s", clientID, ts.Namespace, ts.Name, errMessage(err))).after(r.Resync)
	}
	if errors.Is(err, adminapi.ErrRefused) {
		// A rule only the token server can check (one that reads its other clients,
		// such as an audience naming another namespace's client): a person must
		// change the spec.
		return 0, needsHuman(ReasonClientRefused, fmt.Sprintf("TokenServer %s/%s refused the client: %s",
			ts.Namespace, ts.Name, refusedField(err))).after(r.Resync)
	}
	if err != nil {
		return 0, fmt.Errorf("push client %s to TokenServer %s/%s: %w", clientID, ts.Namespace, ts.Name, err)
	}
	if commit != nil {
		if err := commit(ctx); err != nil {
			return 0, fmt.Errorf("write Secret %s after the token server took its secret: %w", clientspec.SecretName(oc), err)
		}
	}
	// An event only when a push changed a client registered before (a spec change,
	// drift repaired): the first registration is told by Ready=True and its
	// lastTransitionTime. With thousands of clients applied at once, an event each
	// was one write to the API server in four.
	if out.Changed {
		if oc.Status.ClientID != "" {
			r.Recorder.Eventf(oc, nil, corev1.EventTypeNormal, ReasonSynced, "Sync", "client %s registered on %s/%s",
				clientID, ts.Namespace, ts.Name)
		}
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
// refusedField is the admin API's refusal of err as the spec field and what is
// wrong with it (spec.audience[1]: ...).
func refusedField(err error) string {
	var apiErr *adminapi.Error
	if errors.As(err, &apiErr) && apiErr.Field != "" {
		return "spec." + apiErr.Field + ": " + apiErr.Message
	}
	return errMessage(err)
}

func errMessage(err error) string {
	var apiErr *adminapi.Error
	if errors.As(err, &apiErr) {
		return apiErr.Message
	}
	return err.Error()
}

// tokenServer returns the client's TokenServer.
func (r *OAuthClientReconciler) tokenServer(ctx context.Context, oc *oauthv1alpha1.OAuthClient) (*oauthv1alpha1.TokenServer, error) {
	key := clientspec.Server(oc)
	var ts oauthv1alpha1.TokenServer
	if err := r.Get(ctx, key, &ts); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, waiting(ReasonServerNotFound, fmt.Sprintf("TokenServer %s not found", key)).after(30 * time.Second)
		}
		return nil, fmt.Errorf("get TokenServer %s: %w", key, err)
	}
	return &ts, nil
}

// admin returns the admin API of ts, once it is Ready.
func (r *OAuthClientReconciler) admin(ctx context.Context, ts *oauthv1alpha1.TokenServer) (*adminapi.HTTPClient, error) {
	key := client.ObjectKeyFromObject(ts)
	if !meta.IsStatusConditionTrue(ts.Status.Conditions, oauthv1alpha1.ConditionReady) {
		return nil, waiting(ReasonServerNotReady, fmt.Sprintf("waiting for TokenServer %s to be Ready", key))
	}
	admin, err := adminClientFor(ctx, r.Secrets, ts)
	if err != nil {
		return nil, waiting(ReasonServerNotReady, err.Error()).after(10 * time.Second)
	}
	return admin, nil
}
