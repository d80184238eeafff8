package netsvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// startDNS runs ServeDNS on a free loopback port until the test ends and returns its
// address, once it answers from synced caches.
func startDNS(t *testing.T) string {
	t.Helper()
	addr := freeDNSAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeDNS(ctx, addr, clientset, testr.New(t)) }()
	t.Cleanup(func() {
		cancel()
		wait(t, "ServeDNS", done)
	})
	// The zone itself exists: NOERROR once the caches have synced, SERVFAIL before.
	eventually(t, "DNS server ready", func() error {
		r, err := query(addr, "udp", "svc.cluster.local.", dns.TypeA)
		if err == nil && r.Rcode != dns.RcodeSuccess {
			err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		return err
	})
	return addr
}

// freeDNSAddr finds a loopback port free for both UDP and TCP, as DNS needs.
func freeDNSAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		_ = pc.Close()
		if err == nil {
			_ = l.Close()
			return addr
		}
	}
	t.Fatal("found no loopback port free for both UDP and TCP")
	return ""
}

func query(addr, network, name string, qtype uint16) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), addr)
	return r, err
}

// answer returns the rcode and the A records' addresses of a query's reply, in the
// order given, checking the TTLs on the way.
func answer(t *testing.T, addr, network, name string, qtype uint16) (string, []string) {
	t.Helper()
	r, err := query(addr, network, name, qtype)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", dns.TypeToString[qtype], name, network, err)
	}
	ips := make([]string, 0, len(r.Answer))
	for _, rr := range r.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			t.Fatalf("%s: unexpected record %v", name, rr)
		}
		if a.Hdr.Ttl != 5 || a.Hdr.Name != name {
			t.Errorf("%s: record %v: want TTL 5 and the question's name", name, rr)
		}
		ips = append(ips, a.A.String())
	}
	return dns.RcodeToString[r.Rcode], ips
}

// goResolver is Go's own DNS client, sending every query to addr.
func goResolver(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

type dnsFixture struct {
	ns        string
	clusterIP string
}

// dnsObjects creates: headless Service db with endpoints 10.244.0.9 (ready),
// .10 (readiness unknown, hostname db-0), .11 (ready, db-1, in both slices), .12 (not
// ready, db-2) and an IPv6 one; ClusterIP Service web; headless Service empty without
// endpoints; headless Service big with 100 ready endpoints.
func dnsObjects(t *testing.T) dnsFixture {
	t.Helper()
	ns := namespace(t)
	headless := func(name string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
				Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}},
		}
	}
	createService(t, headless("db"))
	createService(t, headless("empty"))
	createService(t, headless("big"))
	web := createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	})
	pg := []discoveryv1.EndpointPort{port("pg", 5432)}
	createSlice(t, slice(ns, "db-a", "db", pg,
		ep("10.244.0.10", nil, "db-0"), ep("10.244.0.11", ptr.To(true), "db-1"), ep("10.244.0.12", ptr.To(false), "db-2")))
	createSlice(t, slice(ns, "db-b", "db", pg, ep("10.244.0.11", ptr.To(true), "db-1"), ep("10.244.0.9", ptr.To(true), "")))
	v6 := slice(ns, "db-v6", "db", pg, ep("fd00::9", ptr.To(true), ""))
	v6.AddressType = discoveryv1.AddressTypeIPv6
	createSlice(t, v6)
	// Another Service's endpoints with the same hostname must not leak into db's names.
	createSlice(t, slice(ns, "web-a", "web", nil, ep("10.244.0.20", ptr.To(true), "db-0")))
	many := make([]discoveryv1.Endpoint, 0, 100)
	for i := range 100 {
		many = append(many, ep(fmt.Sprintf("10.244.1.%d", i+1), ptr.To(true), ""))
	}
	createSlice(t, slice(ns, "big-a", "big", pg, many...))
	return dnsFixture{ns: ns, clusterIP: web.Spec.ClusterIP}
}

func TestServeDNS(t *testing.T) {
	f := dnsObjects(t)
	addr := startDNS(t)
	ns := f.ns
	dbIPs := []string{"10.244.0.9", "10.244.0.10", "10.244.0.11"}

	type want struct {
		rcode string
		ips   []string
	}
	tests := map[string]struct {
		name  string
		qtype uint16
		want  want
	}{
		"headless service: its ready IPv4 endpoints, sorted, once each": {
			name: "db." + ns + ".svc.cluster.local.", want: want{"NOERROR", dbIPs}},
		"the short zone": {name: "db." + ns + ".svc.", want: want{"NOERROR", dbIPs}},
		"names are case-insensitive": {
			name: "DB." + strings.ToUpper(ns) + ".SVC.Cluster.Local.", want: want{"NOERROR", dbIPs}},
		"ClusterIP service: its cluster IP": {
			name: "web." + ns + ".svc.cluster.local.", want: want{"NOERROR", []string{f.clusterIP}}},
		"headless service without ready endpoints: no records": {
			name: "empty." + ns + ".svc.cluster.local.", want: want{rcode: "NOERROR"}},
		"AAAA of a service: no records": {
			name: "db." + ns + ".svc.cluster.local.", qtype: dns.TypeAAAA, want: want{rcode: "NOERROR"}},
		"SRV of a service: no records": {
			name: "web." + ns + ".svc.cluster.local.", qtype: dns.TypeSRV, want: want{rcode: "NOERROR"}},
		"endpoint hostname": {
			name: "db-0.db." + ns + ".svc.cluster.local.", want: want{"NOERROR", []string{"10.244.0.10"}}},
		"endpoint hostname in the short zone": {
			name: "db-1.db." + ns + ".svc.", want: want{"NOERROR", []string{"10.244.0.11"}}},
		"hostname of a not ready endpoint": {name: "db-2.db." + ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"unknown hostname":                 {name: "db-7.db." + ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"hostnames only under headless services": {
			name: "db-0.web." + ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"unknown service":     {name: "nope." + ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"unknown namespace":   {name: "db.nope.svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"namespace name":      {name: ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"too many labels":     {name: "a.db-0.db." + ns + ".svc.cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"outside the zone":    {name: "example.com.", want: want{rcode: "NXDOMAIN"}},
		"search list suffix":  {name: "db." + ns + ".cluster.local.", want: want{rcode: "NXDOMAIN"}},
		"AAAA outside a zone": {name: "example.com.", qtype: dns.TypeAAAA, want: want{rcode: "NXDOMAIN"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			qtype := tc.qtype
			if qtype == 0 {
				qtype = dns.TypeA
			}
			for _, network := range []string{"udp", "tcp"} {
				rcode, ips := answer(t, addr, network, tc.name, qtype)
				if rcode != tc.want.rcode || !slices.Equal(ips, tc.want.ips) {
					t.Errorf("%s over %s: got %s %v, want %s %v", tc.name, network, rcode, ips, tc.want.rcode, tc.want.ips)
				}
			}
		})
	}

	t.Run("authoritative, with the zone's SOA when there is no answer", func(t *testing.T) {
		r, err := query(addr, "udp", "empty."+ns+".svc.", dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		soa, ok := func() (*dns.SOA, bool) {
			if len(r.Ns) != 1 {
				return nil, false
			}
			s, ok := r.Ns[0].(*dns.SOA)
			return s, ok
		}()
		if !r.Authoritative || !ok || soa.Hdr.Name != "svc." || soa.Minttl != 5 {
			t.Fatalf("got %v", r)
		}
	})

	t.Run("a large answer is truncated over UDP and whole over TCP", func(t *testing.T) {
		name := "big." + ns + ".svc.cluster.local."
		r, err := query(addr, "udp", name, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Truncated || len(r.Answer) >= 100 {
			t.Fatalf("over UDP: truncated %v with %d answers, want truncated", r.Truncated, len(r.Answer))
		}
		if _, ips := answer(t, addr, "tcp", name, dns.TypeA); len(ips) != 100 {
			t.Fatalf("over TCP: %d answers, want 100", len(ips))
		}
		// Go's resolver falls back to TCP by itself.
		ips, err := goResolver(addr).LookupHost(t.Context(), name)
		if err != nil || len(ips) != 100 {
			t.Fatalf("Go resolver: %d addresses, %v; want 100", len(ips), err)
		}
	})

	t.Run("Go resolver", func(t *testing.T) {
		testGoResolver(t, addr, f)
	})

}

// podSearch is the search list of a pod in namespace ns on the local cluster, whose
// resolv.conf reads:
//
//	nameserver 10.244.0.1
//	search <ns>.svc.cluster.local svc.cluster.local cluster.local
//	options ndots:5
func podSearch(ns string) []string {
	return []string{ns + ".svc.cluster.local.", "svc.cluster.local.", "cluster.local."}
}

// searchLookup looks name up as Go's resolver does with a pod's resolv.conf: a name
// with a final dot as it is; one with fewer than five dots through the search list
// first, then as it is; one with five or more the other way round. A name that does
// not exist moves on to the next, the first to have addresses wins. Go reads
// resolv.conf from /etc only, so the test walks the list itself.
func searchLookup(ctx context.Context, r *net.Resolver, ns, name string) ([]string, error) {
	if strings.HasSuffix(name, ".") {
		return r.LookupHost(ctx, name)
	}
	var names []string
	ndots := strings.Count(name, ".") >= 5
	if ndots {
		names = append(names, name+".")
	}
	for _, s := range podSearch(ns) {
		names = append(names, name+"."+s)
	}
	if !ndots {
		names = append(names, name+".")
	}
	var err error
	for _, n := range names {
		var ips []string
		ips, err = r.LookupHost(ctx, n)
		var dnsErr *net.DNSError
		if err == nil || !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			return ips, err
		}
	}
	return nil, err
}

func testGoResolver(t *testing.T, addr string, f dnsFixture) {
	r := goResolver(addr)
	ns := f.ns
	tests := map[string]struct {
		name     string
		want     []string
		notFound bool
	}{
		"service in the pod's namespace":     {name: "db", want: []string{"10.244.0.10", "10.244.0.11", "10.244.0.9"}},
		"service.namespace":                  {name: "web." + ns, want: []string{f.clusterIP}},
		"service.namespace.svc":              {name: "web." + ns + ".svc", want: []string{f.clusterIP}},
		"fully qualified":                    {name: "web." + ns + ".svc.cluster.local.", want: []string{f.clusterIP}},
		"fully qualified in the short zone":  {name: "web." + ns + ".svc.", want: []string{f.clusterIP}},
		"StatefulSet pod":                    {name: "db-1.db", want: []string{"10.244.0.11"}},
		"StatefulSet pod, fully qualified":   {name: "db-0.db." + ns + ".svc.cluster.local", want: []string{"10.244.0.10"}},
		"headless service without endpoints": {name: "empty", notFound: true},
		"unknown service":                    {name: "nope", notFound: true},
		"outside the cluster":                {name: "example.com", notFound: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ips, err := searchLookup(t.Context(), r, ns, tc.name)
			if tc.notFound {
				var dnsErr *net.DNSError
				if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
					t.Fatalf("got %v, %v; want a not-found error", ips, err)
				}
				return
			}
			slices.Sort(ips)
			if err != nil || !slices.Equal(ips, tc.want) {
				t.Fatalf("got %v, %v; want %v", ips, err, tc.want)
			}
		})
	}
	t.Run("LookupIP ip4", func(t *testing.T) {
		ips, err := r.LookupIP(t.Context(), "ip4", "web."+ns+".svc.cluster.local.")
		if err != nil || len(ips) != 1 || ips[0].String() != f.clusterIP {
			t.Fatalf("got %v, %v; want %s", ips, err, f.clusterIP)
		}
	})
}

// TestServeDNSFollowsReadiness flips endpoints' ready conditions and waits for the
// answers to follow, as they do when pods become ready or stop being ready.
func TestServeDNSFollowsReadiness(t *testing.T) {
	ns := namespace(t)
	createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}},
	})
	createSlice(t, slice(ns, "db-a", "db", []discoveryv1.EndpointPort{port("pg", 5432)},
		ep("10.244.0.10", ptr.To(true), "db-0"), ep("10.244.0.11", ptr.To(false), "db-1")))
	addr := startDNS(t)
	r := goResolver(addr)
	name := "db." + ns + ".svc.cluster.local."
	expect := func(name string, want ...string) func() error {
		return func() error {
			rcode, ips := answer(t, addr, "udp", name, dns.TypeA)
			goIPs, _ := r.LookupHost(t.Context(), name)
			slices.Sort(goIPs)
			if !slices.Equal(ips, want) || !slices.Equal(goIPs, want) {
				return fmt.Errorf("%s: got %s %v (Go resolver: %v), want %v", name, rcode, ips, goIPs, want)
			}
			return nil
		}
	}
	eventually(t, "initial answer", expect(name, "10.244.0.10"))

	setReady(t, ns, "db-a", map[string]bool{"10.244.0.10": false, "10.244.0.11": true})
	eventually(t, "db-0 not ready, db-1 ready", expect(name, "10.244.0.11"))
	eventually(t, "db-1's name", expect("db-1.db."+ns+".svc.cluster.local.", "10.244.0.11"))
	eventually(t, "db-0's name is gone", expect("db-0.db."+ns+".svc.cluster.local."))

	setReady(t, ns, "db-a", map[string]bool{"10.244.0.11": false})
	eventually(t, "none ready", expect(name))
	if rcode, _ := answer(t, addr, "udp", name, dns.TypeA); rcode != "NOERROR" {
		t.Fatalf("headless service without ready endpoints: %s, want NOERROR", rcode)
	}

	setReady(t, ns, "db-a", map[string]bool{"10.244.0.10": true, "10.244.0.11": true})
	eventually(t, "both ready", expect(name, "10.244.0.10", "10.244.0.11"))
}

// TestServeDNSBindError checks that ServeDNS fails at once when its address is taken.
func TestServeDNSBindError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ServeDNS(ctx, pc.LocalAddr().String(), clientset, testr.New(t)) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("got %v, want an address-in-use error", err)
		}
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatalf("ServeDNS did not fail on an address in use; after its context ended: %v", <-done)
	}
}
