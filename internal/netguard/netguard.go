package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal, so callers can tell it from a network error.
var ErrRefused = errors.New("address refused")

// internal are the ranges that are not the public internet: where the cluster's
// pods, Services, nodes and cloud metadata endpoints live. Loopback, link-local and
// multicast are tested with netip's own predicates.
var internal = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT; Alibaba's metadata is 100.100.100.200
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and broadcast
	netip.MustParsePrefix("fc00::/7"),       // unique local; AWS's IPv6 metadata is fd00:ec2::254
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64 (RFC 8215): the site's own translators, any embedding
	netip.MustParsePrefix("2001::/32"),      // Teredo: a tunnel to an (obfuscated) IPv4 address
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("169.254.0.0/16"), // link-local: AWS, GCP and Azure metadata at .169.254
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("::1/128"),        // loopback
	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

// IPv6 ranges whose addresses carry an IPv4 address that a translator or tunnel on
// the path delivers to: 64:ff9b::a9fe:a9fe is 169.254.169.254 to a NAT64 gateway.
var (
	nat64          = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64 prefix (RFC 6052): last 32 bits
	ipv4Compatible = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible (RFC 4291): last 32 bits
	ipv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96") // SIIT (RFC 2765): last 32 bits
	sixToFour      = netip.MustParsePrefix("2002::/16")       // 6to4 (RFC 3056): bits 16 to 47
)

// embeddedIPv4 returns the IPv4 address ip carries, if it is in one of the ranges
// above.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case !ip.Is6():
		return netip.Addr{}, false
	case nat64.Contains(ip), ipv4Compatible.Contains(ip), ipv4Translated.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// Policy says which addresses a guarded client may connect to: public ones, and
// those in Allow. The zero Policy allows public addresses only.
type Policy struct {
	// Allow lists ranges allowed although internal, for an admin API or JWKS that
	// really lives inside the cluster or a private network. An explicit choice of
	// the operator's or token server's administrator, never of a tenant.
	Allow []netip.Prefix
}

// ParseAllow parses a comma-separated list of CIDRs or single addresses (a flag's value).
func ParseAllow(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want a CIDR (10.0.0.0/8) or an address", s)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q: want a CIDR (10.0.0.0/8) or an address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Check returns nil if ip may be connected to.
func (p Policy) Check(ip netip.Addr) error {
	// ::ffff:169.254.169.254 reaches the same host as 169.254.169.254.
	ip = ip.WithZone("").Unmap()
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	for _, r := range internal {
		if r.Contains(ip) {
			return fmt.Errorf("%w: %s is %s", ErrRefused, ip, describe(ip))
		}
	}
	// The IPv4 address inside is where the connection ends up, so it is judged as
	// if dialled itself (Allow included).
	if v4, ok := embeddedIPv4(ip); ok && p.Check(v4) != nil {
		return fmt.Errorf("%w: %s leads to %s, which is %s", ErrRefused, ip, v4, describe(v4))
	}
	return nil
}

func describe(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address (cloud metadata lives there)"
	case ip.IsPrivate():
		return "a private, cluster-internal address"
	default:
		return "not a public address"
	}
}

// Control is a net.Dialer Control function enforcing p: it runs on the address
// actually dialled, after DNS resolution and for every redirect.
func (p Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrRefused, address)
	}
	return p.Check(ap.Addr())
}

// Transport is an HTTP transport whose connections obey p. It uses no proxy: a
// proxy would make the dial check judge the proxy's address instead of the target's.
func (p Policy) Transport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	return t
}
