package netsvc

import (
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestResolveEndpoint(t *testing.T) {
	svc := func(ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
			Spec:       corev1.ServiceSpec{Ports: ports},
		}
	}
	numbered := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}
	named := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}
	httpPort := []discoveryv1.EndpointPort{port("metrics", 9090), port("http", 8081)}
	ready, notReady := ptr.To(true), ptr.To(false)

	tests := map[string]struct {
		svc     *corev1.Service
		eps     []*discoveryv1.EndpointSlice
		port    int32
		n       uint64
		want    string
		wantErr error
	}{
		"numeric target port": {
			svc:  svc(numbered),
			eps:  []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort, ep("10.0.0.1", ready, ""))},
			port: 80,
			want: "10.0.0.1:8080",
		},
		"unset target port is the service port": {
			svc:  svc(corev1.ServicePort{Port: 80}),
			eps:  []*discoveryv1.EndpointSlice{slice("ns", "a", "web", nil, ep("10.0.0.1", ready, ""))},
			port: 80,
			want: "10.0.0.1:80",
		},
		"named target port comes from the slice port named like the service port": {
			svc:  svc(named),
			eps:  []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort, ep("10.0.0.1", ready, ""))},
			port: 80,
			want: "10.0.0.1:8081",
		},
		"named target port of an unnamed service port": {
			svc: svc(corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("web")}),
			eps: []*discoveryv1.EndpointSlice{slice("ns", "a", "web",
				[]discoveryv1.EndpointPort{port("", 8082)}, ep("10.0.0.1", ready, ""))},
			port: 80,
			want: "10.0.0.1:8082",
		},
		"named target port can differ from slice to slice": {
			svc: svc(named),
			eps: []*discoveryv1.EndpointSlice{
				slice("ns", "a", "web", []discoveryv1.EndpointPort{port("http", 8081)}, ep("10.0.0.1", ready, "")),
				slice("ns", "b", "web", []discoveryv1.EndpointPort{port("http", 9091)}, ep("10.0.0.1", ready, "")),
			},
			port: 80,
			n:    1,
			want: "10.0.0.1:9091",
		},
		"slice without the named port is skipped": {
			svc: svc(named),
			eps: []*discoveryv1.EndpointSlice{
				slice("ns", "a", "web", []discoveryv1.EndpointPort{port("metrics", 9090)}, ep("10.0.0.1", ready, "")),
				slice("ns", "b", "web", httpPort, ep("10.0.0.2", ready, "")),
			},
			port: 80,
			want: "10.0.0.2:8081",
		},
		"unknown readiness counts as ready, not ready is skipped": {
			svc:  svc(numbered),
			eps:  []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort, ep("10.0.0.1", notReady, ""), ep("10.0.0.2", nil, ""))},
			port: 80,
			want: "10.0.0.2:8080",
		},
		"round robin in address order, wrapping around": {
			svc: svc(numbered),
			eps: []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort,
				ep("10.0.0.3", ready, ""), ep("10.0.0.1", ready, ""), ep("10.0.0.2", ready, ""))},
			port: 80,
			n:    4,
			want: "10.0.0.2:8080",
		},
		"an endpoint in two slices counts once": {
			svc: svc(numbered),
			eps: []*discoveryv1.EndpointSlice{
				slice("ns", "a", "web", httpPort, ep("10.0.0.1", ready, ""), ep("10.0.0.2", ready, "")),
				slice("ns", "b", "web", httpPort, ep("10.0.0.1", ready, "")),
			},
			port: 80,
			n:    3,
			want: "10.0.0.2:8080",
		},
		"only the first address counts": {
			svc: svc(numbered),
			eps: []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort,
				discoveryv1.Endpoint{Addresses: []string{"10.0.0.5", "10.0.0.6"}})},
			port: 80,
			n:    1,
			want: "10.0.0.5:8080",
		},
		"IPv6 and FQDN slices are skipped": {
			svc: svc(numbered),
			eps: func() []*discoveryv1.EndpointSlice {
				v6 := slice("ns", "a", "web", httpPort, ep("fd00::1", ready, ""))
				v6.AddressType = discoveryv1.AddressTypeIPv6
				fqdn := slice("ns", "b", "web", httpPort, ep("db.example.com", ready, ""))
				fqdn.AddressType = discoveryv1.AddressTypeFQDN
				return []*discoveryv1.EndpointSlice{v6, fqdn}
			}(),
			port:    80,
			wantErr: ErrNoReadyEndpoint,
		},
		"no ready endpoint": {
			svc:     svc(numbered),
			eps:     []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort, ep("10.0.0.1", notReady, ""))},
			port:    80,
			wantErr: ErrNoReadyEndpoint,
		},
		"no slices": {
			svc:     svc(numbered),
			port:    80,
			wantErr: ErrNoReadyEndpoint,
		},
		"no such service port": {
			svc:     svc(numbered),
			eps:     []*discoveryv1.EndpointSlice{slice("ns", "a", "web", httpPort, ep("10.0.0.1", ready, ""))},
			port:    8080,
			wantErr: ErrNoServicePort,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ResolveEndpoint(tc.svc, tc.eps, tc.port, tc.n)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, %v; want error %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestReadyAddresses(t *testing.T) {
	eps := []*discoveryv1.EndpointSlice{
		slice("ns", "a", "db", nil,
			ep("10.0.0.10", nil, "db-0"), ep("10.0.0.9", ptr.To(true), "db-1"), ep("10.0.0.8", ptr.To(false), "db-2")),
		slice("ns", "b", "db", nil, ep("10.0.0.10", ptr.To(true), "db-0"), ep("not-an-ip", nil, "")),
	}
	tests := map[string]struct {
		match func(endpoint) bool
		want  []string
	}{
		"all ready, sorted, once each": {want: []string{"10.0.0.9", "10.0.0.10"}},
		"by hostname":                  {match: func(e endpoint) bool { return e.hostname == "db-1" }, want: []string{"10.0.0.9"}},
		"hostname of a not ready one":  {match: func(e endpoint) bool { return e.hostname == "db-2" }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, a := range readyAddresses(eps, tc.match) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSplitName(t *testing.T) {
	tests := map[string]struct {
		zone   string
		labels []string
		ok     bool
	}{
		"web.ns.svc.cluster.local.":     {zone: "svc.cluster.local.", labels: []string{"web", "ns"}, ok: true},
		"Web.NS.svc.Cluster.Local":      {zone: "svc.cluster.local.", labels: []string{"web", "ns"}, ok: true},
		"db-0.db.ns.svc.":               {zone: "svc.", labels: []string{"db-0", "db", "ns"}, ok: true},
		"svc.cluster.local.":            {zone: "svc.cluster.local.", ok: true},
		"cluster.local.":                {},
		"web.ns.svc.cluster.local.com.": {},
		"example.com.":                  {},
		"notsvc.":                       {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			zone, labels, ok := splitName(name)
			if zone != tc.zone || !slices.Equal(labels, tc.labels) || ok != tc.ok {
				t.Fatalf("got %q %q %v, want %q %q %v", zone, labels, ok, tc.zone, tc.labels, tc.ok)
			}
		})
	}
}
