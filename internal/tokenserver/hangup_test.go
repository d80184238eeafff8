package tokenserver_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Found by review 19: a client that hangs up before its answer (a timeout, a cancelled
// request, or anyone on purpose) cancels the request's context; the store's calls
// then fail with "context canceled", and oauthEndpoint's database check runs under
// that same cancelled context, so it fails too: the request is logged as WARN
// "database unavailable", counted in kubeoauth_database_errors_total (sometimes) and
// as a 503 of its handler. Every revocation whose client hangs up counts as a failed
// revocation, which the chart's KubeoauthRevocationsFailing alert pages on after
// five minutes of any; token requests feed KubeoauthTokenErrorRate. The database
// was fine throughout: nothing should read as a database outage or a server error.
func TestClientHangUpIsNoDatabaseOutage(t *testing.T) {
	var logs syncBuffer
	in := start(t, setup{logTo: &logs})
	secret := confidentialClient(t, in, "grafana")
	host := strings.TrimPrefix(in.URL, "http://")
	auth := base64.StdEncoding.EncodeToString([]byte("grafana:" + secret))
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		body := "token=ory_at_unknown.signature"
		_, _ = fmt.Fprintf(c, "POST /oauth2/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"+
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", auth, len(body), body)
		_ = c.Close()
	}
	// The same revocation, waited for: 200 (RFC 7009), so the hang-ups above are what
	// differs.
	if code, body := postForm(t, in.URL+"/oauth2/revoke", map[string][]string{"token": {"ory_at_unknown.signature"}}, "grafana", secret); code != http.StatusOK {
		t.Fatalf("revoking an unknown token: %d %v; want 200", code, body)
	}
	time.Sleep(500 * time.Millisecond)

	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, `kubeoauth_http_requests_total{code="5`) && strings.Contains(l, `handler="revoke"`) {
			t.Errorf("metrics: %s; want no revocation counted as a server error: the clients hung up, the server was fine", l)
		}
		if strings.HasPrefix(l, "kubeoauth_database_errors_total ") && !strings.HasSuffix(l, " 0") {
			t.Errorf("metrics: %s; want 0: the database was reachable throughout", l)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if n := strings.Count(logs.String(), `msg="database unavailable"`); n > 0 {
		t.Errorf("the server logged \"database unavailable\" %d times; want none: only the clients went away", n)
	}
}
