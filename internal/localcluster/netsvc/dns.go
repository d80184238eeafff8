package netsvc

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
)

const (
	// ttl is short because endpoints come and go with readiness; CoreDNS uses 5 s too.
	ttl = 5
	// ednsUDPSize is the UDP payload size we advertise (the DNS flag day 2020 value).
	ednsUDPSize = 1232
	// shutdownTimeout bounds how long ServeDNS waits for queries in flight.
	shutdownTimeout = 5 * time.Second
)

// zones are the names the server answers for, the longer first so that a name under
// svc.cluster.local. is not taken for one under svc.
var zones = []string{"svc.cluster.local.", "svc."}

// ServeDNS serves cluster DNS on addr, over UDP and TCP, until ctx ends; then it shuts
// both servers down and returns nil. It fails at once if it cannot bind addr.
//
// It answers A queries for <service>.<namespace>.svc[.cluster.local]. with the
// Service's cluster IP, or for a headless Service with the addresses of its ready
// endpoints, and <hostname>.<service>.<namespace>.svc[.cluster.local]. with the address
// of a headless Service's ready endpoint of that hostname (a StatefulSet pod). A name
// that exists gets no records of other types. Every name outside those zones is
// NXDOMAIN: there is no upstream resolver to forward to.
func ServeDNS(ctx context.Context, addr string, c kubernetes.Interface, log logr.Logger) error {
	servers, err := listenDNS(addr)
	if err != nil {
		return err
	}
	v := startView(ctx, c)
	defer v.stop()
	h := &dnsHandler{view: v, log: log}
	errc := make(chan error, len(servers))
	var started []*dns.Server
	for _, srv := range servers {
		srv.Handler = h
		done, err := activate(srv)
		if err != nil {
			shutdownDNS(started, servers)
			return fmt.Errorf("serving DNS on %s: %w", addr, err)
		}
		started = append(started, srv)
		go func() { errc <- <-done }()
	}
	log.Info("serving cluster DNS", "addr", addr, "zones", zones)
	select {
	case <-ctx.Done():
	case err = <-errc:
		if err != nil {
			err = fmt.Errorf("serving DNS on %s: %w", addr, err)
		}
	}
	shutdownDNS(started, servers)
	return err
}

// listenDNS binds addr over UDP and TCP.
func listenDNS(addr string) ([]*dns.Server, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("DNS over UDP: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("DNS over TCP: %w", err)
	}
	return []*dns.Server{{PacketConn: pc}, {Listener: l}}, nil
}

// activate runs srv in the background and returns once it is serving: miekg/dns refuses
// to shut down a server that has not started yet, so a shutdown that came earlier
// would leave it running.
func activate(srv *dns.Server) (<-chan error, error) {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return done, nil
	case err := <-done:
		return nil, err
	}
}

// shutdownDNS shuts the started servers down and closes every server's sockets.
func shutdownDNS(started, all []*dns.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, srv := range started {
		_ = srv.ShutdownContext(ctx)
	}
	for _, srv := range all {
		if srv.PacketConn != nil {
			_ = srv.PacketConn.Close()
		}
		if srv.Listener != nil {
			_ = srv.Listener.Close()
		}
	}
}

type dnsHandler struct {
	view *view
	log  logr.Logger
}

// ServeDNS implements dns.Handler.
func (h *dnsHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := h.reply(r)
	size := dns.MaxMsgSize
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
	}
	// Sets the TC bit when records had to go, so that the client asks again over TCP.
	m.Truncate(size)
	if err := w.WriteMsg(m); err != nil {
		h.log.V(1).Info("writing DNS reply", "err", err.Error())
	}
}

func (h *dnsHandler) reply(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg).SetReply(r)
	if r.IsEdns0() != nil {
		m.SetEdns0(ednsUDPSize, false)
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	zone, labels, ok := splitName(q.Name)
	if !ok {
		// There is no upstream resolver on this machine to forward to, and pods have no
		// business outside the cluster: a name outside our zones does not exist.
		m.Rcode = dns.RcodeNameError
		return m
	}
	// Authoritative: Go's resolver takes a reply with neither AA nor RA and no answer
	// for a lame referral and moves on, instead of accepting "no such record".
	m.Authoritative = true
	if !h.view.synced() {
		// Until the caches hold the API server's state, "no such name" could be wrong;
		// SERVFAIL makes the client try again.
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	addrs, found, err := h.lookup(labels)
	switch {
	case err != nil:
		h.log.Error(err, "answering DNS query", "name", q.Name)
		m.Rcode = dns.RcodeServerFailure
		return m
	case !found:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET:
		m.Answer = aRecords(q.Name, addrs)
	}
	if len(m.Answer) == 0 {
		// The zone's SOA tells resolvers how long they may cache the negative answer.
		m.Ns = []dns.RR{soa(zone)}
	}
	return m
}

// splitName returns the zone name lies in and the labels in front of it, lower case,
// the leftmost first; ok is false when name lies in none of our zones.
func splitName(name string) (zone string, labels []string, ok bool) {
	name = dns.CanonicalName(name)
	for _, z := range zones {
		if name == z {
			return z, nil, true
		}
		if prefix, found := strings.CutSuffix(name, "."+z); found {
			return z, strings.Split(prefix, "."), true
		}
	}
	return "", nil, false
}

// lookup returns the addresses of the name whose labels (in front of the zone) are
// given; found is false when no such name exists. A name can exist without addresses:
// a headless Service without ready endpoints, or the zone itself.
func (h *dnsHandler) lookup(labels []string) (addrs []netip.Addr, found bool, err error) {
	switch len(labels) {
	case 0:
		return nil, true, nil
	case 2:
		return h.serviceAddrs(labels[1], labels[0], nil)
	case 3:
		hostname := labels[0]
		return h.serviceAddrs(labels[2], labels[1], func(e endpoint) bool { return e.hostname == hostname })
	}
	return nil, false, nil
}

// serviceAddrs answers for a Service, or, with a match, for its endpoints' own names,
// which only headless Services have.
func (h *dnsHandler) serviceAddrs(namespace, name string, match func(endpoint) bool) ([]netip.Addr, bool, error) {
	svc, err := h.view.service(namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		if match != nil {
			return nil, false, nil
		}
		return clusterIP(svc), true, nil
	}
	eps, err := h.view.endpointSlices(namespace, name)
	if err != nil {
		return nil, false, err
	}
	addrs := readyAddresses(eps, match)
	return addrs, match == nil || len(addrs) > 0, nil
}

// clusterIP returns the Service's IPv4 cluster IP, if it has one; an ExternalName
// Service has none and gets no records (CoreDNS would answer with a CNAME to a name
// this server could not resolve anyway).
func clusterIP(svc *corev1.Service) []netip.Addr {
	addr, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !addr.Is4() {
		return nil
	}
	return []netip.Addr{addr}
}

func aRecords(name string, addrs []netip.Addr) []dns.RR {
	rrs := make([]dns.RR, 0, len(addrs))
	for _, a := range addrs {
		rrs = append(rrs, &dns.A{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   a.AsSlice(),
		})
	}
	return rrs
}

func soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns.dns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  1,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  ttl,
	}
}

// Compile-time check that dnsHandler is a dns.Handler.
var _ dns.Handler = (*dnsHandler)(nil)
