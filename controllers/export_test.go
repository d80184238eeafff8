package controllers

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// UpgradeStep runs one upgrade step of r on ts, for tests that must hand it a stale
// TokenServer (a pass racing another writer). Ready is what the pass would report
// from the step's outcome on a server whose pods are ready.
func UpgradeStep(ctx context.Context, r *TokenServerReconciler, ts *oauthv1alpha1.TokenServer) (
	ready metav1.Condition, next time.Duration, err error) {
	conds, next, err := r.upgradeStep(ctx, ts, resources.Inputs{})
	for _, c := range withUpgrade(serverConditions(ts, err), conds) {
		if c.Type == oauthv1alpha1.ConditionReady {
			ready = c
		}
	}
	return ready, next, err
}

// SecretReaderFor is the SecretReader Setup gives the reconcilers.
var SecretReaderFor = secretReaderFor

// RemembersSecret says whether r keeps a copy of the Secret key.
func RemembersSecret(r *SecretReader, key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key] != nil
}

// SetMinPruneAt makes SecretReaders prune from n Secrets on, until the returned
// function restores the default.
func SetMinPruneAt(n int) (restore func()) {
	old := minPruneAt
	minPruneAt = n
	return func() { minPruneAt = old }
}
