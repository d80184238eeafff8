package tokenserver_test

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestOldKeepAliveConnectionsMoveOn: a keep-alive client (a real http.Transport, as
// every Go client pools connections) that keeps sending token requests gets
// "Connection: close" on the first response after its connection reached the maximum
// age, opens a new connection (which a Service would send to a pod that serves now),
// and no request fails on the way. Without a maximum age it stays on its first
// connection for good: after a blue-green promotion, on a pod that no longer serves.
func TestOldKeepAliveConnectionsMoveOn(t *testing.T) {
	const maxAge = 300 * time.Millisecond
	// The window in which the client sends: long enough for a few connections to age.
	const window = 4 * maxAge

	type conn struct {
		opened   time.Time
		requests int
		closedAt time.Time // when the response saying Connection: close arrived
	}
	run := func(t *testing.T, in *instance) []*conn {
		t.Helper()
		secret := confidentialClient(t, in, "grafana")
		transport := &http.Transport{MaxIdleConnsPerHost: 1}
		defer transport.CloseIdleConnections()
		client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
		var conns []*conn
		byAddr := map[string]*conn{}
		for end := time.Now().Add(window); time.Now().Before(end); {
			var current *conn
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
				addr := info.Conn.LocalAddr().String()
				if !info.Reused {
					if c, ok := byAddr[addr]; ok && c.closedAt.IsZero() {
						t.Errorf("connection %s was closed without Connection: close after %d requests", addr, c.requests)
					}
					byAddr[addr] = &conn{opened: time.Now()}
					conns = append(conns, byAddr[addr])
				}
				current = byAddr[addr]
			}}
			form := url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}}
			req, err := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader(form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("grafana", secret)
			resp, err := client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
			if err != nil {
				t.Fatalf("token request failed: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body) // read to the end, or the transport cannot reuse the connection
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("token request: %d", resp.StatusCode)
			}
			current.requests++
			if resp.Close {
				current.closedAt = time.Now()
			}
		}
		return conns
	}

	t.Run("max age", func(t *testing.T) {
		conns := run(t, start(t, setup{maxConnAge: maxAge}))
		closed := 0
		for i, c := range conns {
			if c.closedAt.IsZero() {
				if i != len(conns)-1 {
					t.Errorf("connection %d of %d was never told to close", i+1, len(conns))
				}
				continue
			}
			closed++
			// The server's deadline is the age less at most a tenth of jitter.
			if lived := c.closedAt.Sub(c.opened); lived < maxAge*9/10 {
				t.Errorf("connection %d was closed after %s, younger than the maximum age %s", i+1, lived, maxAge)
			}
		}
		if closed < 2 {
			t.Errorf("in %s a keep-alive client was moved to a new connection %d times; want one every %s", window, closed, maxAge)
		}
	})
	t.Run("no max age", func(t *testing.T) {
		if conns := run(t, start(t, setup{})); len(conns) != 1 {
			t.Errorf("without a maximum age the client used %d connections, want its first for good", len(conns))
		}
	})
}
