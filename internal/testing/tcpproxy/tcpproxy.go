// Package tcpproxy forwards connections to a target and can cut them: the tests'
// stand-in for a server that goes away and comes back while the real one keeps
// running behind it, or, with TLS, for a pod serving a given certificate.
package tcpproxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy listens on Addr and forwards each connection to its target.
type Proxy struct {
	// Addr is where the proxy listens (host:port).
	Addr string
	// Accepted counts the connections accepted, up or down.
	Accepted atomic.Int32

	network, target string
	down            atomic.Bool
	mu              sync.Mutex
	conns           []net.Conn
}

// Start listens on host (an IP address) at a free port and forwards to target, a
// host:port (network "tcp") or a socket path ("unix"). Everything stops when t ends.
func Start(t testing.TB, host, network, target string) *Proxy {
	return start(t, host, network, target, nil)
}

// StartTLS is Start serving TLS with cert, forwarding the clear text to target.
func StartTLS(t testing.TB, host, target string, cert tls.Certificate) *Proxy {
	return start(t, host, "tcp", target, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
}

func start(t testing.TB, host, network, target string, conf *tls.Config) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), network: network, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.Down() })
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	go p.serve(ln)
	return p
}

// serve keeps listening while down (a connection is then closed at once), so that
// coming back up never races another process for the port.
func (p *Proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.Accepted.Add(1)
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial(p.network, p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.down.Load() { // went down while dialling
			p.mu.Unlock()
			_, _ = c.Close(), up.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// Down cuts every connection and refuses new ones until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down.Store(true)
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// Up forwards new connections again.
func (p *Proxy) Up() { p.down.Store(false) }
