package controllers

import (
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

// Options tune the reconcilers; zero values take the defaults.
type Options struct {
	// ClientResync is how often unchanged OAuthClients are pushed again (drift repair).
	ClientResync time.Duration
	// ServerHealthInterval is how often an external TokenServer's admin API is checked.
	ServerHealthInterval time.Duration
}

// Setup registers every reconciler with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	if err := (&TokenServerReconciler{Client: mgr.GetClient(), HealthInterval: o.ServerHealthInterval}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&OAuthClientReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kubeoauth"),
		Resync: o.ClientResync}).SetupWithManager(mgr)
}
