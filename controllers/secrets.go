package controllers

import (
	"context"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// LabelManagedBy marks the objects the operator creates; its value is ManagedBy.
const (
	LabelManagedBy = resources.LabelManagedBy
	ManagedBy      = resources.ManagedBy
)

// CacheOptions are the manager's cache settings: no managedFields on any object, and
// Secrets trimmed so the cache does not hold every Secret of every watched namespace
// (service-account tokens, Helm releases, TLS keys): only the Secrets the operator
// made keep their data; of the others it keeps metadata, enough to notice a change.
// namespaces nil watches all.
func CacheOptions(namespaces map[string]cache.Config) cache.Options {
	strip := cache.TransformStripManagedFields()
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy}), Transform: strip}
	return cache.Options{
		DefaultNamespaces: namespaces,
		DefaultTransform:  strip,
		ByObject: map[client.Object]cache.ByObject{
			// Of these kinds the operator reads only what it made (EndpointSlices carry
			// their Service's labels): not every Service and Job of the cluster.
			&appsv1.StatefulSet{}:        ours,
			&batchv1.Job{}:               ours,
			&corev1.Service{}:            ours,
			&discoveryv1.EndpointSlice{}: ours,
			&corev1.Secret{}: {Transform: func(in any) (any, error) {
				if s, ok := in.(*corev1.Secret); ok && s.Labels[LabelManagedBy] != ManagedBy {
					s.Data, s.StringData = nil, nil
				}
				return strip(in)
			}},
		},
	}
}

// SecretReader reads Secrets through the trimmed cache. The operator's own Secrets
// come whole from the cache; a user's Secret that we reference (an external server's
// admin token, a client secret with create: false) is read from the API server once
// per resourceVersion and kept here, so a resync of thousands of clients sharing one
// admin token does not read it thousands of times.
type SecretReader struct {
	cache, api client.Reader

	mu   sync.Mutex
	seen map[types.NamespacedName]*corev1.Secret
}

func NewSecretReader(cached, api client.Reader) *SecretReader {
	return &SecretReader{cache: cached, api: api, seen: map[types.NamespacedName]*corev1.Secret{}}
}

// Get fills sec with the whole Secret key.
func (r *SecretReader) Get(ctx context.Context, key types.NamespacedName, sec *corev1.Secret) error {
	if err := r.cache.Get(ctx, key, sec); err != nil {
		r.mu.Lock()
		delete(r.seen, key)
		r.mu.Unlock()
		return err
	}
	if sec.Labels[LabelManagedBy] == ManagedBy {
		return nil
	}
	r.mu.Lock()
	known := r.seen[key]
	r.mu.Unlock()
	if known != nil && known.ResourceVersion == sec.ResourceVersion {
		known.DeepCopyInto(sec)
		return nil
	}
	if err := r.api.Get(ctx, key, sec); err != nil {
		return err
	}
	r.mu.Lock()
	r.seen[key] = sec.DeepCopy()
	r.mu.Unlock()
	return nil
}
