package netsvc

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
)

// view is an informer-backed, read-only view of Services and their EndpointSlices, so
// that a DNS query or a new connection costs no API call.
type view struct {
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	synced   func() bool

	factory informers.SharedInformerFactory
	cancel  context.CancelFunc
}

// startView starts the informers; they run until stop is called or ctx ends.
func startView(ctx context.Context, c kubernetes.Interface, opts ...informers.SharedInformerOption) *view {
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, opts...)
	services := f.Core().V1().Services()
	slices := f.Discovery().V1().EndpointSlices()
	// Informer() registers the informer with the factory, which Start needs.
	si, ei := services.Informer(), slices.Informer()
	ctx, cancel := context.WithCancel(ctx)
	f.StartWithContext(ctx)
	return &view{
		services: services.Lister(),
		slices:   slices.Lister(),
		synced:   func() bool { return si.HasSynced() && ei.HasSynced() },
		factory:  f,
		cancel:   cancel,
	}
}

// waitSynced waits until the caches hold the API server's state; it fails only when
// ctx ends first.
func (v *view) waitSynced(ctx context.Context) error {
	return v.factory.WaitForCacheSyncWithContext(ctx).AsError()
}

// stop stops the informers and waits for them to finish.
func (v *view) stop() {
	v.cancel()
	v.factory.Shutdown()
}

func (v *view) service(namespace, name string) (*corev1.Service, error) {
	return v.services.Services(namespace).Get(name)
}

// endpointSlices lists the Service's EndpointSlices, found by the label the
// EndpointSlice controller sets (and hand-written slices must set too).
func (v *view) endpointSlices(namespace, service string) ([]*discoveryv1.EndpointSlice, error) {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service})
	return v.slices.EndpointSlices(namespace).List(sel)
}
