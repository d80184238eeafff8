package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"net/http"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// LabelManagedBy marks the objects the operator creates; its value is ManagedBy.
const (
	LabelManagedBy = resources.LabelManagedBy
	ManagedBy      = resources.ManagedBy
)

// CacheOptions are the manager's cache settings: no managedFields on any object;
// of Pods, Services, StatefulSets, Deployments, Jobs and EndpointSlices only those
// with the operator's label; of Secrets and ConfigMaps only metadata (see
// SecretReader); of all of these only what the operator reads (slim). namespaces
// nil watches all.
func CacheOptions(namespaces map[string]cache.Config) cache.Options {
	ourLabel := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})
	// Anyone who may create these kinds in a watched namespace may set the label:
	// their cached copies are slimmed (slim). The operator applies its own
	// objects server-side, never writing back what it read of them.
	ours := cache.ByObject{Label: ourLabel, Transform: slim}
	return cache.Options{
		DefaultNamespaces: namespaces,
		DefaultTransform:  cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			// Of these kinds the operator reads only what it made (EndpointSlices carry
			// their Service's labels): not every Service and Job of the cluster.
			&appsv1.StatefulSet{}:        ours,
			&appsv1.Deployment{}:         ours,
			&batchv1.Job{}:               ours,
			&corev1.Service{}:            ours,
			&discoveryv1.EndpointSlice{}: ours,
			// The token server's and its Jobs' pods carry their template's labels.
			&corev1.Pod{}: ours,
			// Only metadata informers are started for Secrets and ConfigMaps
			// (ClientOptions keeps the typed ones out), of every namespace watched.
			&corev1.Secret{}:    {Transform: slim},
			&corev1.ConfigMap{}: {Transform: slim},
		},
	}
}

// slim is the transform of the kinds whose objects tenants may create, in numbers,
// where the operator watches them: their cached copies keep only what the operator
// reads of them, so that no tenant can grow the memory of the operator every
// tenant shares at will (an object may hold about a megabyte; the metadata cache
// of Secrets and ConfigMaps holds every one of the watched namespaces). It drops:
//
//   - managed fields, annotations and finalizers: the operator reads a Secret's
//     annotations from the API server (SecretReader), no other kind's at all;
//   - every label but those it selects, maps or reads by (keptLabels);
//   - every owner reference but the controller's, by which Owns maps events and
//     the operator tells its objects from look-alikes;
//   - of the specs, all but what the operator reads (slimSpec): a Job's or a
//     StatefulSet's pod template, a pod's, may carry a megabyte of commands,
//     environment and volumes.
//
// Nothing the operator applies or updates is read from these copies: it applies
// its objects server-side, and updates Secrets read from the API server. Statuses
// are kept: their controllers, the kubelet and the scheduler write them.
func slim(in any) (any, error) {
	slimSpec(in)
	if o, err := meta.Accessor(in); err == nil {
		o.SetManagedFields(nil)
		o.SetAnnotations(nil)
		o.SetFinalizers(nil)
		if l := o.GetLabels(); len(l) > 0 {
			kept := map[string]string{}
			for _, k := range keptLabels {
				if v, ok := l[k]; ok {
					kept[k] = v
				}
			}
			o.SetLabels(kept)
		}
		if refs := o.GetOwnerReferences(); len(refs) > 0 {
			var kept []metav1.OwnerReference
			if c := metav1.GetControllerOfNoCopy(o); c != nil {
				kept = []metav1.OwnerReference{*c}
			}
			o.SetOwnerReferences(kept)
		}
	}
	return in, nil
}

// keptLabels are the labels the operator reads of the objects slim transforms:
// what its selectors and event mappings use.
var keptLabels = []string{
	resources.LabelName, resources.LabelInstance, resources.LabelComponent, LabelManagedBy,
	resources.LabelColor, resources.LabelReplay, oauthv1alpha1.LabelServing,
	batchv1.JobNameLabel, discoveryv1.LabelServiceName,
}

// slimSpec keeps of an object's spec what the operator reads of its kind:
//
//   - a pod's containers' names, images and ports (serverPods, scrapeReplay);
//   - a StatefulSet's replicas and its pod template's containers, as a pod's
//     (observe: the image each color runs);
//   - a Service's selector (serviceSelector);
//   - an EndpointSlice's ports and its endpoints' addresses, readiness and pod
//     (readyAdminURL, servingEndpoints);
//   - nothing of a Job's or a Deployment's (their status, name and owner only).
func slimSpec(in any) {
	switch o := in.(type) {
	case *corev1.Pod:
		o.Spec = corev1.PodSpec{NodeName: o.Spec.NodeName, Containers: slimContainers(o.Spec.Containers)}
	case *appsv1.StatefulSet:
		o.Spec = appsv1.StatefulSetSpec{Replicas: o.Spec.Replicas,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: slimContainers(o.Spec.Template.Spec.Containers)}}}
	case *corev1.Service:
		o.Spec = corev1.ServiceSpec{Selector: o.Spec.Selector}
	case *discoveryv1.EndpointSlice:
		for i, e := range o.Endpoints {
			o.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, TargetRef: e.TargetRef}
		}
	case *batchv1.Job:
		o.Spec = batchv1.JobSpec{}
	case *appsv1.Deployment:
		o.Spec = appsv1.DeploymentSpec{}
	}
}

func slimContainers(in []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, len(in))
	for i, c := range in {
		out[i] = corev1.Container{Name: c.Name, Image: c.Image, Ports: c.Ports}
	}
	return out
}

// ClientOptions are the manager's client settings: typed Secrets and ConfigMaps are
// never read through the cache, so no informer over their data is ever started, even
// by a Get someone adds later; SecretReader reads Secrets, a Get from the API server
// the few ConfigMaps the operator reads (templates, tokenserver_pages.go).
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}}}}
}

// SecretReader reads Secrets without a cache of their data. The operator watches
// Secrets as metadata only (enough to see that one changed, with its labels and
// owner) and reads a Secret's data with a GET, once per resourceVersion, kept here:
// a resync of thousands of clients sharing one admin token reads it once, and the
// operator's memory grows with the Secrets it uses, not with every Secret of the
// namespaces it watches (service-account tokens, Helm releases, TLS keys).
//
// This is cert-manager's SecretsFilteredCaching design (a metadata-only informer
// for Secrets, direct reads for their data) without its second, label-filtered
// typed informer: controller-runtime configures a cache per kind, so a typed
// informer filtered by our label and an unfiltered metadata informer of Secrets
// cannot share one manager cache, and the memo below gives the same effect. A label
// required on users' Secrets (CloudNativePG's way for the Secrets it reloads) was
// not chosen: an OAuthClient waiting for an unlabelled Secret would wait forever
// with no sign of why.
type SecretReader struct {
	// cache is the manager's cache (not its client, which reads Secrets, metadata
	// included, from the API server): Secret metadata, EndpointSlices, Services;
	// api reads Secret data from the API server.
	cache, api client.Reader

	// ExternalAdmin is where an external TokenServer's adminURL may connect.
	ExternalAdmin netguard.Policy

	mu   sync.Mutex
	seen map[types.NamespacedName]*corev1.Secret
	// pruneAt is the size of seen at which Get next drops the Secrets that are
	// gone (see pruneIfDue).
	pruneAt int
	// transports of admin clients, by trust (CA bundle, server name): connections
	// are kept alive between passes, and a new CA gets a new transport.
	transports map[[sha256.Size]byte]*http.Client
}

func NewSecretReader(cached, api client.Reader) *SecretReader {
	return &SecretReader{cache: cached, api: api, seen: map[types.NamespacedName]*corev1.Secret{},
		transports: map[[sha256.Size]byte]*http.Client{}}
}

// Get fills sec with the whole Secret key.
func (r *SecretReader) Get(ctx context.Context, key types.NamespacedName, sec *corev1.Secret) error {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.cache.Get(ctx, key, &m); err != nil {
		r.mu.Lock()
		delete(r.seen, key)
		r.mu.Unlock()
		return err
	}
	r.mu.Lock()
	known := r.seen[key]
	r.mu.Unlock()
	if known != nil && known.ResourceVersion == m.ResourceVersion {
		known.DeepCopyInto(sec)
		return nil
	}
	if err := r.api.Get(ctx, key, sec); err != nil {
		return err
	}
	r.remember(sec)
	r.pruneIfDue(ctx)
	return nil
}

// maxRemembered is the largest Secret (its keys and values) the reader keeps: the
// credentials, tokens and CA certificates it reads are a few KiB. A tenant names
// any Secret of its namespace in spec.secret.name, up to the API's 1 MiB; larger
// ones are read again at each pass rather than held.
const maxRemembered = 256 << 10

// minPruneAt is the size of seen below which it is never pruned (a variable for
// tests, which prune small memos).
var minPruneAt = 1024

// pruneIfDue drops, once seen has doubled since the last time, the Secrets that are
// gone from the metadata cache: a Secret read once and then deleted (or no longer
// named by any object) is otherwise never read again, and a tenant renaming
// spec.secret.name through a series of Secrets it deletes would grow the operator's
// memory without bound. Amortized, each remember costs O(1) cache reads.
func (r *SecretReader) pruneIfDue(ctx context.Context) {
	r.mu.Lock()
	if len(r.seen) < max(r.pruneAt, minPruneAt) {
		r.mu.Unlock()
		return
	}
	keys := make([]types.NamespacedName, 0, len(r.seen))
	for k := range r.seen {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	var gone []types.NamespacedName
	for _, k := range keys {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		if err := r.cache.Get(ctx, k, &m); apierrors.IsNotFound(err) {
			gone = append(gone, k)
		}
	}
	r.mu.Lock()
	for _, k := range gone {
		delete(r.seen, k)
	}
	r.pruneAt = 2 * len(r.seen)
	r.mu.Unlock()
}

// remember keeps a Secret as the API server returned it, read or just written by the
// operator: its next read (for a new client, its first resync) finds the metadata
// cache at the same resourceVersion and needs no GET. 10,000 new clients would
// otherwise cost 10,000 GETs at their first resync. The copy has no managed fields,
// as the manager's cache holds objects: 10,000 Secrets' worth of them pushed the
// manager's peak RSS past 150 MiB. An update from the copy leaves them as they are.
func (r *SecretReader) remember(sec *corev1.Secret) {
	size := 0
	for k, v := range sec.Data {
		size += len(k) + len(v)
	}
	if size > maxRemembered {
		r.mu.Lock()
		delete(r.seen, client.ObjectKeyFromObject(sec))
		r.mu.Unlock()
		return
	}
	c := sec.DeepCopy()
	c.ManagedFields = nil
	r.mu.Lock()
	r.seen[client.ObjectKeyFromObject(sec)] = c
	r.mu.Unlock()
}

// Version returns a Secret's resourceVersion from the metadata cache, without
// reading its data.
func (r *SecretReader) Version(ctx context.Context, key types.NamespacedName) (string, error) {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.cache.Get(ctx, key, &m); err != nil {
		return "", err
	}
	return m.ResourceVersion, nil
}

// httpClient returns the admin client for one trust setting: caPEM empty trusts
// the system's roots; guard, when set, is checked on every dial.
func (r *SecretReader) httpClient(caPEM []byte, serverName string, guard *netguard.Policy) (*http.Client, error) {
	h := sha256.New()
	h.Write(caPEM)
	h.Write([]byte{0})
	h.Write([]byte(serverName))
	if guard != nil {
		h.Write([]byte{1})
	}
	var id [sha256.Size]byte
	copy(id[:], h.Sum(nil))
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.transports[id]; c != nil {
		return c, nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	if guard != nil {
		t = guard.Transport()
	}
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if len(caPEM) > 0 {
		pool, err := adminPool(caPEM)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig.RootCAs = pool
	}
	// Bounded, so an unreachable server fails a reconcile instead of hanging it.
	c := &http.Client{Transport: t, Timeout: 10 * time.Second}
	if len(r.transports) > 256 { // CAs rotated many times: start over rather than grow
		for k, old := range r.transports {
			old.CloseIdleConnections()
			delete(r.transports, k)
		}
	}
	r.transports[id] = c
	return c, nil
}
