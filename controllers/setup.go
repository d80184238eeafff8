package controllers

import (
	"context"
	"net/netip"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// Options tune the reconcilers; zero values take the defaults.
type Options struct {
	// ClientResync is how often unchanged OAuthClients are pushed again (drift repair).
	ClientResync time.Duration
	// ServerHealthInterval is how often an external TokenServer's admin API is checked.
	ServerHealthInterval time.Duration
	// MirrorPoll is how often the consent mirror looks for new TokenServers.
	MirrorPoll time.Duration
	// ClientWorkers is how many OAuthClients, and how many ConsentGrants, are
	// reconciled at once.
	ClientWorkers int
	// Operator is where the operator's pods run: the only peers the NetworkPolicy of
	// a bundled server's admin port admits. With no namespace (the operator runs
	// outside the cluster) no NetworkPolicies are made: none could admit it.
	Operator resources.OperatorPeer
	// ExternalAdminAllow are internal ranges an external TokenServer's adminURL may
	// still connect to (netguard); public addresses are always allowed.
	ExternalAdminAllow []netip.Prefix
	// Clock decides secret and key rotation and certificate renewal (the real clock
	// when nil; tests pass a fake one).
	Clock clock.PassiveClock
}

// specChanged passes events that may need work: a new generation (spec or deletion),
// labels or annotations. Status-only and finalizer-only updates are ours.
var specChanged = predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{},
	predicate.AnnotationChangedPredicate{})

// secretReaderFor reads Secret metadata from mgr's cache itself, not through its
// client: the client sends every read of a kind in ClientOptions' DisableFor (Secret)
// to the API server, metadata reads too, which cost two GETs per pass of every
// OAuthClient.
func secretReaderFor(mgr ctrl.Manager) *SecretReader {
	return NewSecretReader(mgr.GetCache(), mgr.GetAPIReader())
}

// Setup registers every reconciler with mgr.
// The manager's cache should be built with CacheOptions.
func Setup(mgr ctrl.Manager, o Options) error {
	secrets := secretReaderFor(mgr)
	secrets.ExternalAdmin = netguard.Policy{Allow: o.ExternalAdminAllow}
	if err := (&TokenServerReconciler{Client: mgr.GetClient(), Secrets: secrets, APIReader: mgr.GetAPIReader(),
		Recorder:       mgr.GetEventRecorder("kubeoauth"),
		HealthInterval: o.ServerHealthInterval, Operator: o.Operator, Clock: o.Clock}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&OAuthClientReconciler{Client: mgr.GetClient(), Secrets: secrets, Recorder: mgr.GetEventRecorder("kubeoauth"),
		Resync: o.ClientResync, Workers: o.ClientWorkers, Clock: o.Clock}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&ConsentGrantReconciler{Client: mgr.GetClient(), Secrets: secrets, Recorder: mgr.GetEventRecorder("kubeoauth"),
		Resync: o.ClientResync, Workers: o.ClientWorkers}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &oauthv1alpha1.OAuthClient{}, indexRegisteredID,
		func(o client.Object) []string {
			oc := o.(*oauthv1alpha1.OAuthClient)
			if oc.Status.ClientID == "" {
				return nil
			}
			return []string{serverClientKey(clientspec.Server(oc), oc.Status.ClientID)}
		}); err != nil {
		return err
	}
	if err := (&OwnerSweeper{Client: mgr.GetClient(), Secrets: secrets, Recorder: mgr.GetEventRecorder("kubeoauth"),
		Interval: o.ServerHealthInterval}).SetupWithManager(mgr); err != nil {
		return err
	}
	poll := o.MirrorPoll
	if poll == 0 {
		poll = 10 * time.Second
	}
	return mgr.Add(&Mirror{Client: mgr.GetClient(), Secrets: secrets, Poll: poll, Recorder: mgr.GetEventRecorder("kubeoauth")})
}
