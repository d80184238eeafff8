package netsvc

import (
	"errors"
	"fmt"
	"iter"
	"math"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var (
	// ErrNoServicePort means the Service has no port with the number asked for.
	ErrNoServicePort = errors.New("no such service port")
	// ErrNoReadyEndpoint means no ready endpoint serves the port: nothing to connect to.
	ErrNoReadyEndpoint = errors.New("no ready endpoint")
)

// endpoint is a ready endpoint with its parsed address and the slice it came from (the
// slice carries the port numbers).
type endpoint struct {
	slice    *discoveryv1.EndpointSlice
	hostname string
	addr     netip.Addr
}

// readyEndpoints yields the ready IPv4 endpoints of eps. Ready means what kube-proxy and
// CoreDNS take it to mean: the ready condition is true or unknown (nil). Only an
// endpoint's first address counts; the API defines no meaning for the others.
func readyEndpoints(eps []*discoveryv1.EndpointSlice) iter.Seq[endpoint] {
	return func(yield func(endpoint) bool) {
		for _, s := range eps {
			if s.AddressType != discoveryv1.AddressTypeIPv4 {
				continue
			}
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready || len(ep.Addresses) == 0 {
					continue
				}
				addr, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil || !addr.Is4() {
					continue
				}
				e := endpoint{slice: s, addr: addr}
				if ep.Hostname != nil {
					e.hostname = *ep.Hostname
				}
				if !yield(e) {
					return
				}
			}
		}
	}
}

// readyAddresses returns the addresses of the ready endpoints that match, sorted and
// without duplicates (an address may appear in more than one slice while it moves).
// A nil match takes every ready endpoint.
func readyAddresses(eps []*discoveryv1.EndpointSlice, match func(endpoint) bool) []netip.Addr {
	var out []netip.Addr
	for e := range readyEndpoints(eps) {
		if match == nil || match(e) {
			out = append(out, e.addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// ResolveEndpoint picks the backend for a new connection to port servicePort of svc,
// whose EndpointSlices are eps, as kube-proxy would. The backends are the ready IPv4
// endpoints, each at the Service port's targetPort, in a stable order; n counts
// connections, and the n-th goes to backend n mod len(backends): round robin.
//
// It is pure so that the choice can be table-tested without an API server.
func ResolveEndpoint(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, servicePort int32, n uint64) (netip.AddrPort, error) {
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == servicePort })
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: service %s/%s has no port %d", ErrNoServicePort, svc.Namespace, svc.Name, servicePort)
	}
	backends := backendsFor(svc.Spec.Ports[i], eps)
	if len(backends) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w for port %d of service %s/%s", ErrNoReadyEndpoint, servicePort, svc.Namespace, svc.Name)
	}
	return backends[n%uint64(len(backends))], nil
}

// backendsFor lists where the ready endpoints serve sp, sorted and without duplicates.
func backendsFor(sp corev1.ServicePort, eps []*discoveryv1.EndpointSlice) []netip.AddrPort {
	var out []netip.AddrPort
	for e := range readyEndpoints(eps) {
		if port, ok := targetPort(sp, e.slice); ok {
			out = append(out, netip.AddrPortFrom(e.addr, port))
		}
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return slices.Compact(out)
}

// targetPort is the port the slice's endpoints serve sp on. A number is that port (0,
// unset, means the Service port itself: the API server defaults it so, a hand-built
// object may not). A name is a container port's name, which can differ from pod to pod:
// each slice's ports carry the ServicePort's name and the number on that slice's pods.
func targetPort(sp corev1.ServicePort, s *discoveryv1.EndpointSlice) (uint16, bool) {
	if sp.TargetPort.Type == intstr.String {
		i := slices.IndexFunc(s.Ports, func(p discoveryv1.EndpointPort) bool {
			return p.Port != nil && (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name)
		})
		if i < 0 {
			return 0, false
		}
		return portNumber(*s.Ports[i].Port)
	}
	if sp.TargetPort.IntVal == 0 {
		return portNumber(sp.Port)
	}
	return portNumber(sp.TargetPort.IntVal)
}

func portNumber(p int32) (uint16, bool) {
	if p <= 0 || p > math.MaxUint16 {
		return 0, false
	}
	return uint16(p), true
}
