package tokenserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/version"
)

// Every response of the public, admin and metrics listeners says which version
// answered, and the metrics say it too: an upgrade's tests tell the colors apart so.
func TestVersionOnEveryResponseAndMetric(t *testing.T) {
	defer func(v string) { version.Version = v }(version.Version)
	version.Version = "v9.8.7-test"
	in := start(t, setup{})
	secret := confidentialClient(t, in, "grafana")
	get := func(u string) http.Header {
		t.Helper()
		resp, err := httpClient.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.Header
	}
	token, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	token.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	token.SetBasicAuth("grafana", secret)
	tokenResp, err := httpClient.Do(token)
	if err != nil {
		t.Fatal(err)
	}
	_ = tokenResp.Body.Close()
	for name, h := range map[string]http.Header{
		"token":              tokenResp.Header,
		"discovery":          get(in.URL + "/.well-known/openid-configuration"),
		"readyz":             get(in.URL + "/readyz"),
		"a page not found":   get(in.URL + "/nothing-here"),
		"admin unauthorized": get(in.AdminURL + "/admin/clients"),
		"admin healthz":      get(in.AdminURL + "/healthz"),
		"metrics":            get(in.MetricsURL + "/metrics"),
	} {
		if got := h.Get("X-Kubeoauth-Version"); got != "v9.8.7-test" {
			t.Errorf("%s: X-Kubeoauth-Version %q, want v9.8.7-test", name, got)
		}
	}
	if m := metricsText(t, in); !strings.Contains(m, `kubeoauth_build_info{version="v9.8.7-test"} 1`) {
		t.Errorf("/metrics lacks kubeoauth_build_info{version=\"v9.8.7-test\"} 1")
	}
}

// kubeoauth_http_requests_total counts what clients asked, by handler and status
// code, so that an upgrade's analysis can take its 5xx share; probes and scrapes are
// not counted, or they would pass for traffic.
func TestRequestMetricsCountTrafficNotProbes(t *testing.T) {
	in := start(t, setup{tokenMiddleware: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Test-Fail") != "" {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r)
		})
	}})
	secret := confidentialClient(t, in, "grafana") // one admin_clients 200
	for range 2 {
		for _, u := range []string{in.URL + "/healthz", in.URL + "/readyz", in.AdminURL + "/healthz", in.AdminURL + "/readyz",
			in.MetricsURL + "/metrics"} {
			resp, err := httpClient.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
		}
		if err := in.Admin.Health(context.Background()); err != nil { // GET /admin/health
			t.Fatal(err)
		}
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if code, _ := postForm(t, in.URL+"/oauth2/token", form, "grafana", secret); code != 200 {
		t.Fatalf("token: %d", code)
	}
	if code, _ := postForm(t, in.URL+"/oauth2/token", form, "grafana", "wrong"); code != 401 {
		t.Fatalf("token with a wrong secret: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Test-Fail", "1")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("failing token request: %d", resp.StatusCode)
	}
	got := requestCounts(t, metricsText(t, in))
	want := map[string]float64{"token 200": 1, "token 401": 1, "token 500": 1, "admin_clients 200": 1}
	if len(got) != len(want) {
		t.Errorf("kubeoauth_http_requests_total = %v, want exactly %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("kubeoauth_http_requests_total{%s} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func metricsText(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// requestCounts reads kubeoauth_http_requests_total as "handler code" → count.
func requestCounts(t *testing.T, metrics string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for line := range strings.SplitSeq(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, "kubeoauth_http_requests_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[l["handler"]+" "+l["code"]] = n
	}
	return out
}

// trackedConn tells when the client's transport closes a connection: after the
// server closed it, the transport has dropped it from its pool.
type trackedConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// keepAliveClient is a keep-alive client whose dialed connections arrive on conns.
func keepAliveClient(conns chan *trackedConn) *http.Client {
	d := &net.Dialer{}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 16,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := &trackedConn{Conn: c, closed: make(chan struct{})}
			if conns != nil {
				conns <- tc
			}
			return tc, nil
		},
	}}
}

// A client holding a keep-alive connection to a replica that drains is not stranded
// there: the replica answers with Connection: close and closes the connection once
// idle, so the client's next request goes out on a new connection (to another
// replica, behind a Service); and no request fails across the drain, busy
// keep-alive clients included.
func TestKeepAliveClientLeavesADrainingReplica(t *testing.T) {
	in := start(t, setup{shutdownDelay: 4 * time.Second})
	secret := confidentialClient(t, in, "grafana")
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	// answer is what a client saw of a token response.
	type answer struct {
		StatusCode int
		// Close: the server said Connection: close.
		Close bool
	}
	token := func(c *http.Client) (a answer, reused bool, err error) {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("grafana", secret)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		}))
		resp, err := c.Do(req)
		if err != nil {
			return answer{}, reused, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return answer{StatusCode: resp.StatusCode, Close: resp.Close}, reused, nil
	}

	// Busy keep-alive clients, from before the drain until after it closed the idle
	// connections.
	var failures, sent, closing atomic.Int64
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	busy := keepAliveClient(nil)
	for range 2 {
		load.Go(func() {
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				resp, _, err := token(busy)
				sent.Add(1)
				switch {
				case err != nil:
					failures.Add(1)
					t.Errorf("a busy keep-alive client's request across the drain: %v", err)
				case resp.StatusCode != 200:
					failures.Add(1)
					t.Errorf("a busy keep-alive client's request across the drain: %d", resp.StatusCode)
				case resp.Close:
					closing.Add(1)
				}
			}
		})
	}
	defer func() {
		close(stopLoad)
		load.Wait()
	}()

	// A quiet keep-alive client: one request, then its connection idles.
	conns := make(chan *trackedConn, 8)
	quiet := keepAliveClient(conns)
	resp, _, err := token(quiet)
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before the drain: %v %v; want 200 on a kept-alive connection", err, resp)
	}
	idle := <-conns

	in.stop() // SIGTERM: the replica drains.
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := probe.Get(in.URL + "/readyz")
		if err != nil {
			t.Fatalf("readyz while draining: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz never failed after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-idle.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the quiet client's idle keep-alive connection is still open 3s into the drain")
	}
	// Its next request goes out on a new connection, which is answered with
	// Connection: close and closed after the answer.
	resp, reused, err := token(quiet)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the quiet client's next request during the drain: %v %v", err, resp)
	}
	if reused || !resp.Close {
		t.Errorf("during the drain: reused connection %v, Connection: close %v; want a new connection, closed after the answer", reused, resp.Close)
	}
	select {
	case c := <-conns:
		select {
		case <-c.closed:
		case <-time.After(3 * time.Second):
			t.Error("the connection answered with Connection: close is still open")
		}
	default:
		t.Error("the quiet client's request during the drain dialed no connection")
	}
	close(stopLoad)
	load.Wait()
	stopLoad = make(chan struct{}) // for the deferred close
	if failures.Load() != 0 || closing.Load() == 0 {
		t.Errorf("busy clients: %d of %d requests failed, %d answered with Connection: close; want none failed, some told to close",
			failures.Load(), sent.Load(), closing.Load())
	}
}
