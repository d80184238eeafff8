package netsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// backend is an HTTP server on ip that answers every request with its name.
func backend(t *testing.T, ip, name string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, name)
	}))
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// startForward runs PortForward for the Service's port on a loopback port until the
// test ends and returns the address to connect to.
func startForward(t *testing.T, ns, service string, servicePort int32) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- PortForward(ctx, clientset, ns, service, servicePort, l, testr.New(t)) }()
	t.Cleanup(func() {
		cancel()
		wait(t, "PortForward", done)
	})
	return l.Addr().String()
}

// get makes one request through the forwarder, on a new connection, and returns the
// body: the name of the backend that answered.
func get(ctx context.Context, addr string) (string, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func expectBackend(t *testing.T, addr, want string) func() error {
	return func() error {
		got, err := get(t.Context(), addr)
		if err != nil || got != want {
			return fmt.Errorf("got %q, %v; want %q", got, err, want)
		}
		return nil
	}
}

// expectClosed checks that the forwarder closes a new connection without a byte.
func expectClosed(addr string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %d bytes, %v; want the connection closed", n, err)
	}
	return nil
}

// TestPortForward puts two HTTP servers behind a Service with a named target port, each
// in its own EndpointSlice, and flips their readiness.
func TestPortForward(t *testing.T) {
	ip := hostIP(t)
	ns := namespace(t)
	createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "metrics", Port: 9090},
			{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
		}},
	})
	// Both servers listen on the same address; their ports, the pods' "web" ports,
	// differ, so each is in a slice of its own.
	a, b := backend(t, ip, "a"), backend(t, ip, "b")
	createSlice(t, slice(ns, "web-a", "web", []discoveryv1.EndpointPort{port("http", a), port("metrics", 1)},
		ep(ip, ptr.To(true), "")))
	createSlice(t, slice(ns, "web-b", "web", []discoveryv1.EndpointPort{port("http", b), port("metrics", 1)},
		ep(ip, ptr.To(false), "")))
	addr := startForward(t, ns, "web", 80)

	eventually(t, "a ready, b not", expectBackend(t, addr, "a"))
	for range 5 {
		if err := expectBackend(t, addr, "a")(); err != nil {
			t.Fatal(err)
		}
	}

	setReady(t, ns, "web-a", map[string]bool{ip: false})
	setReady(t, ns, "web-b", map[string]bool{ip: true})
	eventually(t, "b ready, a not", expectBackend(t, addr, "b"))
	for range 5 {
		if err := expectBackend(t, addr, "b")(); err != nil {
			t.Fatal(err)
		}
	}

	setReady(t, ns, "web-a", map[string]bool{ip: true})
	eventually(t, "both ready: round robin", func() error {
		seen := map[string]int{}
		for range 4 {
			got, err := get(t.Context(), addr)
			if err != nil {
				return err
			}
			seen[got]++
		}
		if seen["a"] != 2 || seen["b"] != 2 {
			return fmt.Errorf("answers from %v, want two from each", seen)
		}
		return nil
	})

	setReady(t, ns, "web-a", map[string]bool{ip: false})
	setReady(t, ns, "web-b", map[string]bool{ip: false})
	eventually(t, "none ready: connections closed", func() error { return expectClosed(addr) })
}

// tcpServer serves each connection on ip with handle, then closes it.
func tcpServer(t *testing.T, ip string, handle func(net.Conn)) int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				handle(conn)
				_ = conn.Close()
			})
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-accepting
		conns.Wait()
	})
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// countBytes reads a request to its end, then answers with its length: it only works
// through a proxy that passes a half-close on.
func countBytes(conn net.Conn) {
	data, _ := io.ReadAll(conn)
	_, _ = io.WriteString(conn, "got "+strconv.Itoa(len(data))+" bytes")
}

// echo sends back what it reads, until the client is done.
func echo(conn net.Conn) { _, _ = io.Copy(conn, conn) }

// TestPortForwardHalfClose uses a numeric target port and a client that half-closes.
func TestPortForwardHalfClose(t *testing.T) {
	ip := hostIP(t)
	ns := namespace(t)
	target := tcpServer(t, ip, countBytes)
	createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "count"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 7, TargetPort: intstr.FromInt32(target)}}},
	})
	createSlice(t, slice(ns, "count-a", "count", []discoveryv1.EndpointPort{port("", target)}, ep(ip, nil, "")))
	addr := startForward(t, ns, "count", 7)

	eventually(t, "answer after half-close", func() error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(conn, "hello"); err != nil {
			return err
		}
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "got 5 bytes" {
			return fmt.Errorf("got %q, %v; want %q", got, err, "got 5 bytes")
		}
		return nil
	})
}

// TestPortForwardStops checks that ending the context closes the listener and the
// connections in progress, and that PortForward returns.
func TestPortForwardStops(t *testing.T) {
	ip := hostIP(t)
	ns := namespace(t)
	target := tcpServer(t, ip, echo)
	createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 7, TargetPort: intstr.FromInt32(target)}}},
	})
	createSlice(t, slice(ns, "echo-a", "echo", []discoveryv1.EndpointPort{port("", target)}, ep(ip, nil, "")))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- PortForward(ctx, clientset, ns, "echo", 7, l, testr.New(t)) }()

	// An echo through the forwarder shows the connection reached the backend; it stays
	// open, as the client does not close it, until PortForward closes it.
	var conn net.Conn
	eventually(t, "echo through the forwarder", func() error {
		var err error
		if conn, err = net.Dial("tcp", l.Addr().String()); err != nil {
			return err
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 5)
		_, err = io.WriteString(conn, "hello")
		if err == nil {
			_, err = io.ReadFull(conn, buf)
		}
		if err != nil || string(buf) != "hello" {
			_ = conn.Close()
			return fmt.Errorf("got %q, %v", buf, err)
		}
		return nil
	})
	defer func() { _ = conn.Close() }()
	cancel()
	wait(t, "PortForward", done)

	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection in progress: read %d bytes, %v; want it closed", n, err)
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		_ = c.Close()
		t.Fatal("the listener still accepts connections")
	}
}

// A backend that is still listed ready but refuses connections (its process just
// died) is skipped: every request is answered by the live one.
func TestPortForwardSkipsARefusingBackend(t *testing.T) {
	ip := hostIP(t)
	ns := namespace(t)
	createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web")}}},
	})
	live := backend(t, ip, "live")
	// A port that was listening and is closed now refuses connections.
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	dead := int32(ln.Addr().(*net.TCPAddr).Port) // #nosec G115 -- a port
	_ = ln.Close()
	createSlice(t, slice(ns, "web-live", "web", []discoveryv1.EndpointPort{port("http", live)}, ep(ip, ptr.To(true), "")))
	createSlice(t, slice(ns, "web-dead", "web", []discoveryv1.EndpointPort{port("http", dead)}, ep(ip, ptr.To(true), "")))
	addr := startForward(t, ns, "web", 80)
	eventually(t, "the live backend answers", expectBackend(t, addr, "live"))
	for i := range 10 {
		if err := expectBackend(t, addr, "live")(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
}
