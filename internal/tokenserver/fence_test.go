package tokenserver_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// metricValue reads one sample of in's /metrics: name with its labels as printed,
// e.g. `kubeoauth_fence_state{state="holding"}`; 0 when absent.
func metricValue(t *testing.T, in *instance, sample string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(metricsText(t, in), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// waitMetric waits until in's sample reads want. The bound is far above the fence's
// 100 ms poll; it only keeps a failing test from hanging.
func waitMetric(t *testing.T, in *instance, sample string, want float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, in, sample) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, not %v, after 10s", sample, metricValue(t, in, sample), want)
		}
	}
}

func openPool(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := postgres.OpenDB(dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func accessTokens(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM tokens WHERE kind = $1`, postgres.TokenKindAccess).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type tokenReply struct {
	code   int
	header http.Header
	close  bool
	body   map[string]any
	at     time.Time
	err    error
}

// requestToken asks in for a client_credentials token of the client grafana in the
// background.
func requestToken(in *instance, secret string) <-chan tokenReply {
	out := make(chan tokenReply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("grafana", secret)
		resp, err := httpClient.Do(req)
		if err != nil {
			out <- tokenReply{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		r := tokenReply{code: resp.StatusCode, header: resp.Header, close: resp.Close, at: time.Now()}
		raw, _ := io.ReadAll(resp.Body)
		r.err = json.Unmarshal(raw, &r.body)
		out <- r
	}()
	return out
}

// A cutover between two real token servers on two databases: while the fence
// holds, the old side holds a token request unanswered; once cut over, it forwards
// that request to the new side, which answers it on its database, and forwards
// every request after it, closing each connection so that the client moves on;
// the admin API answers 503 with Retry-After to reads as well as writes (its
// database is stale now: a consent mirror reading its event log would miss what
// the new side logs), probes are answered locally.
func TestFenceHoldsThenForwardsToTheNewSide(t *testing.T) {
	ctx := context.Background()
	keys := secrets(t)
	blueDSN, greenDSN := pg.NewMigratedDatabase(t), pg.NewMigratedDatabase(t)
	blue, green := start(t, setup{dsn: blueDSN, keyDir: keys}), start(t, setup{dsn: greenDSN, keyDir: keys})
	// The replay would carry the client over; here each side has it already.
	secret := confidentialClient(t, blue, "grafana")
	confidentialClient(t, green, "grafana")
	blueDB, greenDB := openPool(t, blueDSN), openPool(t, greenDSN)
	// A quiet keep-alive client, its connection to the old side idle in its pool.
	conns := make(chan *trackedConn, 4)
	quiet := keepAliveClient(conns)
	if resp, err := quiet.Get(blue.URL + "/.well-known/jwks.json"); err != nil {
		t.Fatal(err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	idle := <-conns

	draining, release := make(chan struct{}), make(chan struct{})
	type outcome struct {
		res postgres.CutoverResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := postgres.Cutover(ctx, blueDB, greenDB, postgres.CutoverOptions{UpgradeID: "u1",
			Direction: postgres.DirectionForward, ForwardTo: green.URL,
			Drain: func(ctx context.Context) (int, error) {
				select {
				case <-draining:
				default:
					close(draining)
				}
				select { // the drain lasts until the test has seen a request held through it
				case <-release:
					return 0, nil
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}})
		done <- outcome{res, err}
	}()
	waitMetric(t, blue, `kubeoauth_fence_state{state="holding"}`, 1)
	// Reads go on while the fence holds.
	var disco map[string]any
	if code := getJSON(t, blue.URL+"/.well-known/openid-configuration", &disco); code != http.StatusOK {
		t.Errorf("discovery on the fenced side: %d", code)
	}
	sent := time.Now()
	reply := requestToken(blue, secret)
	waitMetric(t, blue, "kubeoauth_fence_held_requests", 1)
	<-draining
	select {
	case r := <-reply:
		t.Fatalf("the token request was answered (%d %v) while the fence holds", r.code, r.body)
	default:
	}
	released := time.Now()
	close(release)
	var r tokenReply
	select {
	case r = <-reply:
	case <-time.After(15 * time.Second):
		t.Fatal("the held token request was never answered")
	}
	out := <-done
	if out.err != nil {
		t.Fatalf("Cutover: %v", out.err)
	}
	t.Logf("the token request was held %s (answered %s after the drain let the cutover go on); Cutover: %+v",
		r.at.Sub(sent).Round(time.Millisecond), r.at.Sub(released).Round(time.Millisecond), out.res)
	if r.err != nil || r.code != http.StatusOK || r.body["access_token"] == nil {
		t.Fatalf("the held token request: %d %v %v", r.code, r.body, r.err)
	}
	// Answered by the new side, on its database.
	if b, g := accessTokens(t, blueDB), accessTokens(t, greenDB); b != 0 || g != 1 {
		t.Errorf("access tokens: %d on the old database, %d on the new; want 0 and 1", b, g)
	}
	if got := introspect(t, green, r.body["access_token"].(string), "grafana", secret); got["active"] != true {
		t.Errorf("the forwarded request's token on the new side: %v", got)
	}
	if !r.close {
		t.Error("a forwarded answer kept the connection to the old side open")
	}
	if metricValue(t, blue, "kubeoauth_fence_forwarded_total") != 1 || metricValue(t, blue, "kubeoauth_fence_held_requests") != 0 {
		t.Errorf("the old side's fence metrics after forwarding the held request:\n%s", fenceMetrics(t, blue))
	}
	waitMetric(t, blue, `kubeoauth_fence_state{state="forwarding"}`, 1)
	waitMetric(t, blue, `kubeoauth_fence_state{state="holding"}`, 0)
	// The quiet client's idle connection is closed a moment later, so its next
	// request goes through the Service; the bound is far under the 90 s idle timeout.
	select {
	case <-idle.closed:
	case <-time.After(10 * time.Second):
		t.Error("the forwarding side kept a quiet client's idle keep-alive connection")
	}

	// Every request after it is forwarded, reads too.
	if r := <-requestToken(blue, secret); r.code != http.StatusOK {
		t.Errorf("a token request to the old side after the cutover: %d %v", r.code, r.body)
	}
	if code := getJSON(t, blue.URL+"/.well-known/openid-configuration", &disco); code != http.StatusOK {
		t.Errorf("discovery through the old side: %d", code)
	}
	if b, g := accessTokens(t, blueDB), accessTokens(t, greenDB); b != 0 || g != 2 {
		t.Errorf("access tokens: %d on the old database, %d on the new; want 0 and 2", b, g)
	}
	if n := metricValue(t, blue, "kubeoauth_fence_forwarded_total"); n != 3 {
		t.Errorf("kubeoauth_fence_forwarded_total %v; want 3", n)
	}
	// Probes are the old side's own.
	var status map[string]string
	if code := getJSON(t, blue.URL+"/readyz", &status); code != http.StatusOK {
		t.Errorf("readyz on the forwarding side: %d %v", code, status)
	}

	// The admin API is refused with a retry, reads included, and lets the
	// connection go so that the retry goes through the Service.
	for _, method := range []string{http.MethodPut, http.MethodDelete} {
		if code, retry := adminWrite(t, blue, method); code != http.StatusServiceUnavailable || retry != "1" {
			t.Errorf("admin %s on the old side after the cutover: %d Retry-After %q; want 503 and 1", method, code, retry)
		}
	}
	if _, err := blue.Admin.GetClient(ctx, "grafana"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("an admin read on the old side after the cutover: %v; want 503", err)
	}
	if _, err := blue.Admin.Events(ctx, 0, 0); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("the event log on the old side after the cutover: %v; want 503", err)
	}
}

func fenceMetrics(t *testing.T, in *instance) string {
	t.Helper()
	var out []string
	for line := range strings.SplitSeq(metricsText(t, in), "\n") {
		if strings.HasPrefix(line, "kubeoauth_fence_") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// A cutover that stalls before its marker (its drain never returns) leaves the
// servers holding for its lease only: then they serve the held request
// themselves, on their own database, with no word from the cutover.
func TestFenceLeaseRunsOutServesLocally(t *testing.T) {
	ctx := context.Background()
	blueDSN := pg.NewMigratedDatabase(t)
	blue := start(t, setup{dsn: blueDSN})
	secret := confidentialClient(t, blue, "grafana")
	blueDB, greenDB := openPool(t, blueDSN), openPool(t, pg.NewMigratedDatabase(t))
	const lease = 2 * time.Second
	stuck := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := postgres.Cutover(ctx, blueDB, greenDB, postgres.CutoverOptions{UpgradeID: "u1",
			Direction: postgres.DirectionForward, ForwardTo: "http://127.0.0.1:1", Lease: lease,
			Drain: func(context.Context) (int, error) {
				<-stuck // deaf to its context: a process stopped or cut off
				return 0, nil
			}})
		done <- err
	}()
	defer close(stuck)
	waitMetric(t, blue, `kubeoauth_fence_state{state="holding"}`, 1)
	sent := time.Now()
	reply := requestToken(blue, secret)
	waitMetric(t, blue, "kubeoauth_fence_held_requests", 1)
	var r tokenReply
	select {
	case r = <-reply:
	case <-time.After(lease + 10*time.Second):
		t.Fatal("the held request was never answered")
	}
	t.Logf("held %s under a %s lease, then served locally", r.at.Sub(sent).Round(time.Millisecond), lease)
	if r.err != nil || r.code != http.StatusOK {
		t.Fatalf("the request held past the lease: %d %v %v", r.code, r.body, r.err)
	}
	if n := accessTokens(t, blueDB); n != 1 {
		t.Errorf("%d access tokens on the old database; want the held request's", n)
	}
	select {
	case err := <-done:
		t.Fatalf("the stuck cutover ended (%v) before the request was served", err)
	default:
	}
	if metricValue(t, blue, `kubeoauth_fence_state{state="none"}`) != 1 || metricValue(t, blue, "kubeoauth_fence_held_requests") != 0 {
		t.Errorf("fence metrics after the lease:\n%s", fenceMetrics(t, blue))
	}
}

// A request the fence holds longer than FenceMaxHold gets 503 with Retry-After,
// as OAuth JSON; an admin write the same; reads are served meanwhile.
func TestFenceHeldTooLongIs503(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	in := start(t, setup{dsn: dsn, fenceMaxHold: 300 * time.Millisecond})
	secret := confidentialClient(t, in, "grafana")
	db := openPool(t, dsn)
	if err := postgres.InstallFence(ctx, db, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until)
VALUES (1, 'u1', 'cut_over', now())`); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, in, `kubeoauth_fence_state{state="cut_over"}`, 1)
	sent := time.Now()
	r := <-requestToken(in, secret)
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || r.body["error"] != "temporarily_unavailable" {
		t.Errorf("a token request held too long: %d Retry-After %q %v", r.code, r.header.Get("Retry-After"), r.body)
	}
	if held := r.at.Sub(sent); held < 300*time.Millisecond {
		t.Errorf("answered after %s; want it held 300ms first", held)
	}
	if code, retry := adminWrite(t, in, http.MethodPut); code != http.StatusServiceUnavailable || retry != "1" {
		t.Errorf("an admin write held too long: %d Retry-After %q; want 503 and 1", code, retry)
	}
	var disco map[string]any
	if code := getJSON(t, in.URL+"/.well-known/openid-configuration", &disco); code != http.StatusOK {
		t.Errorf("discovery while cut over: %d", code)
	}
}

// adminWrite puts (or deletes) a client through in's admin API and returns the
// status and Retry-After.
func adminWrite(t *testing.T, in *instance, method string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(adminapi.Client{ID: "late", OwnerNamespace: "observability", Secret: "secret-late-0123456789abcdefghijklmnop",
		ClientMetadata: adminapi.ClientMetadata{Name: "Late", GrantTypes: []string{"client_credentials"},
			TokenEndpointAuthMethod: "client_secret_basic"}})
	req, _ := http.NewRequest(method, in.AdminURL+"/admin/clients/late?owner=observability", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// A token request already running when the fence went up, whose write comes
// after the marker, meets the guard: it gets 503 temporarily_unavailable with
// Retry-After (its retry is held or forwarded), not a 500, and nothing is issued.
func TestFenceWriteThatSlippedThroughIs503(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	entered, proceed := make(chan struct{}, 1), make(chan struct{})
	in := start(t, setup{dsn: dsn, tokenMiddleware: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-proceed
			next.ServeHTTP(w, r)
		})
	}})
	secret := confidentialClient(t, in, "grafana")
	db := openPool(t, dsn)
	if err := postgres.InstallFence(ctx, db, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	reply := requestToken(in, secret)
	<-entered
	if _, err := db.Exec(`INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until)
VALUES (1, 'u1', 'cut_over', now())`); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, in, `kubeoauth_fence_state{state="cut_over"}`, 1)
	close(proceed)
	r := <-reply
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "1" || r.body["error"] != "temporarily_unavailable" {
		t.Errorf("a token request whose write met the guard: %d Retry-After %q %v", r.code, r.header.Get("Retry-After"), r.body)
	}
	if n := accessTokens(t, db); n != 0 {
		t.Errorf("%d access tokens written past the guard", n)
	}
}

// A request forwarded to a server whose view of the fence is one poll behind — at
// a cutover the new side's fence row goes (step 8) a moment before the old side
// forwards (step 9) — is served: the server looks again at once instead of
// refusing it as a loop. Two servers that really forward to each other refuse it,
// after a short wait, with 503.
func TestForwardedRequestToAServerThatJustStoppedForwarding(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	db := openPool(t, dsn)
	if err := postgres.InstallFence(ctx, db, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := confidentialClient(t, start(t, setup{dsn: dsn}), "grafana")
	if _, err := db.Exec(`INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until, forward_to)
VALUES (1, 'u1', 'forwarding', now(), 'http://127.0.0.1:1')`); err != nil {
		t.Fatal(err)
	}
	// Polls an hour apart: after the first, before it listens, the server's view
	// moves only when it looks itself.
	in := start(t, setup{dsn: dsn, fencePoll: time.Hour})
	waitMetric(t, in, `kubeoauth_fence_state{state="forwarding"}`, 1)
	forwarded := func() (int, time.Duration) {
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Kubeoauth-Forwarded", "1")
		req.SetBasicAuth("grafana", secret)
		start := time.Now()
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	// Really a loop: the row still forwards.
	if code, took := forwarded(); code != http.StatusServiceUnavailable || took < time.Second {
		t.Errorf("a forwarded request to a server that forwards: %d after %s; want 503 after waiting for a change", code, took)
	}
	// The row gone behind the server's back, as at step 8.
	if _, err := db.Exec(`DELETE FROM kubeoauth_upgrade.fence`); err != nil {
		t.Fatal(err)
	}
	if code, took := forwarded(); code != http.StatusOK {
		t.Errorf("a forwarded request to a server whose fence just went: %d after %s; want it served", code, took)
	}
}
