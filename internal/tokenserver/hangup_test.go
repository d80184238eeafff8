package tokenserver_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

// A refresh whose client hangs up while the rotation waits to be written (a test
// transaction holds the refresh token's row) still ends: the identical request that
// joined it meanwhile gets the new pair rather than the first caller's cancellation,
// and the chain stays whole. Cut short, the rotation committed once the row was free
// while both requests had failed, and the client's next try, with the same refresh
// token, read as reuse and revoked the chain.
func TestRefreshLeaderHangUpLeavesTheFollowerItsAnswer(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn})
	secret := confidentialClient(t, in, "grafana")
	tok := codeFlowToken(t, in, secret)

	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	hold, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hold.Rollback() }()
	if _, err := hold.ExecContext(ctx, `SELECT 1 FROM tokens WHERE kind = 'refresh_token' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	// The first caller, by hand so that it can hang up: the same Authorization and
	// form as refresh() sends, so that the two are one refresh to the server.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}.Encode()
	leader, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = leader.Close() }()
	auth := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape("grafana") + ":" + url.QueryEscape(secret)))
	_, _ = fmt.Fprintf(leader, "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", auth, len(form), form)
	if _, ok := waitForLockWaits(t, db, 1); !ok {
		t.Fatal("the first caller's rotation does not wait on the refresh token's row")
	}

	type answer struct {
		code int
		body map[string]any
	}
	followed := make(chan answer, 1)
	go func() {
		code, body := refresh(t, in, secret, tok.RefreshToken)
		followed <- answer{code, body}
	}()
	// The second caller joins the first's refresh; nothing shows it has, so give it
	// time to (were it late, it would read the first's stored answer, the same).
	time.Sleep(300 * time.Millisecond)
	_ = leader.Close()
	time.Sleep(300 * time.Millisecond) // the hang-up reaches the server
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}

	var got answer
	select {
	case got = <-followed:
	case <-time.After(30 * time.Second):
		t.Fatal("the second caller got no answer within 30 s")
	}
	if got.code != http.StatusOK || got.body["refresh_token"] == nil {
		t.Fatalf("the second caller: %d %v; want the new pair", got.code, got.body)
	}
	if a := introspect(t, in, got.body["access_token"].(string), "grafana", secret); a["active"] != true {
		t.Errorf("the new access token: %v; want active", a)
	}
	// The chain goes on from the new refresh token.
	if code, body := refresh(t, in, secret, got.body["refresh_token"].(string)); code != http.StatusOK {
		t.Errorf("refreshing with the new refresh token: %d %v; want 200", code, body)
	}
}
