package netsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// dialTimeout bounds the connection to a backend; a ready pod on the local bridge
// answers at once.
const dialTimeout = 5 * time.Second

// PortForward forwards each TCP connection accepted on listen to a ready endpoint of
// port servicePort of the Service, until ctx ends; then it closes listen and every
// connection, and returns nil.
//
// It does what kube-proxy does for a pod: each new connection resolves the Service
// afresh (port, targetPort, ready endpoints, from informers), so it follows readiness
// and selector changes, and successive connections go round robin over the ready
// endpoints. A connection for which there is no ready endpoint is closed at once.
func PortForward(ctx context.Context, c kubernetes.Interface, namespace, service string, servicePort int32,
	listen net.Listener, log logr.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	v := startView(ctx, c, informers.WithNamespace(namespace))
	defer v.stop()
	defer func() { _ = listen.Close() }()
	var conns sync.WaitGroup
	defer conns.Wait()
	// Runs first: ends the connections that Wait waits for.
	defer cancel()
	// Unblocks Accept when ctx ends.
	context.AfterFunc(ctx, func() { _ = listen.Close() })

	f := &forwarder{view: v, namespace: namespace, service: service, port: servicePort,
		log: log.WithValues("service", namespace+"/"+service, "port", servicePort)}
	if v.waitSynced(ctx) != nil {
		return nil // ctx ended before the caches synced: a normal stop
	}
	f.log.Info("forwarding", "listen", listen.Addr().String())
	for {
		conn, err := listen.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("forwarding to service %s/%s: %w", namespace, service, err)
		}
		conns.Go(func() { f.forward(ctx, conn) })
	}
}

type forwarder struct {
	view      *view
	namespace string
	service   string
	port      int32
	log       logr.Logger
	// next counts connections, for round robin.
	next atomic.Uint64
}

// forward connects conn to a backend and copies between them until both are done or
// ctx ends.
func (f *forwarder) forward(ctx context.Context, conn net.Conn) {
	up, backend, err := f.dial(ctx)
	if err != nil {
		f.log.Info("closing connection", "from", conn.RemoteAddr().String(), "reason", err.Error())
		_ = conn.Close()
		return
	}
	f.log.V(1).Info("connection", "from", conn.RemoteAddr().String(), "backend", backend.String())
	stop := context.AfterFunc(ctx, func() {
		_ = conn.Close()
		_ = up.Close()
	})
	defer stop()
	splice(conn, up)
}

// dial connects to a ready backend. A backend that refuses (its process just died and
// readiness has not caught up yet) is skipped for the next one, up to a few tries, as
// a load balancer with connection retries does; nothing has been sent yet, so no
// request is lost or repeated.
func (f *forwarder) dial(ctx context.Context) (net.Conn, netip.AddrPort, error) {
	var errs []error
	for range maxDialAttempts {
		backend, err := f.pick()
		if err != nil {
			return nil, backend, errors.Join(append(errs, err)...)
		}
		d := net.Dialer{Timeout: dialTimeout}
		up, err := d.DialContext(ctx, "tcp", backend.String())
		if err == nil {
			return up, backend, nil
		}
		errs = append(errs, fmt.Errorf("backend %s: %w", backend, err))
	}
	return nil, netip.AddrPort{}, errors.Join(errs...)
}

const maxDialAttempts = 3

// pick resolves the Service from the informers' caches and picks the next backend.
func (f *forwarder) pick() (netip.AddrPort, error) {
	svc, err := f.view.service(f.namespace, f.service)
	if err != nil {
		return netip.AddrPort{}, err
	}
	eps, err := f.view.endpointSlices(f.namespace, f.service)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return ResolveEndpoint(svc, eps, f.port, f.next.Add(1)-1)
}

// splice copies both ways between a and b, then closes both. When one side is done
// sending, the other is told so by a half-close and may still answer; an error either
// way ends both ways.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Go(func() { pump(a, b) })
	wg.Go(func() { pump(b, a) })
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// pump copies src to dst until src is done sending.
func pump(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
		return
	}
	_ = dst.Close()
}
