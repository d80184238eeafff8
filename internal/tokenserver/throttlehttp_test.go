package tokenserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

// throttleKeys reads how many usernames and addresses the sign-in throttle remembers.
func throttleKeys(t *testing.T, in *instance, kind string) int {
	t.Helper()
	resp, err := httpClient.Get(in.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	m := regexp.MustCompile(`kubeoauth_login_throttle_keys\{kind="` + kind + `"\} (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no kubeoauth_login_throttle_keys for %s", kind)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// syncWriter is a log sink the test reads while the server writes.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.buf.String() }

// One address sending many distinct, long usernames cannot make the throttle
// remember more than its allowance of them: a username over 256 bytes is refused
// with a message before the throttle sees it, and once the address is out of
// attempts a new username adds nothing. The log holds no more than the start of a
// username.
func TestLoginThrottleMemoryIsBounded(t *testing.T) {
	logs := &syncWriter{}
	in := start(t, setup{throttle: tokenserver.LoginThrottle{PerUser: 3, PerIP: 3, Refill: time.Hour}, logTo: logs})
	b := newBrowser(t)
	long := strings.Repeat("é", 200) // 400 bytes
	resp, page := b.signIn(in, long, "guess")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "That username is too long") {
		t.Errorf("a 400-byte username: %d %.300s; want 400 saying it is too long", resp.StatusCode, page)
	}
	if strings.Contains(page, long) {
		t.Error("the page echoes the over-long username")
	}
	codes := map[int]int{}
	for i := range 100 {
		name := fmt.Sprintf("%03d-%s", i, strings.Repeat("u", 252)) // 256 bytes: allowed
		resp, _ := b.signIn(in, name, "guess")
		codes[resp.StatusCode]++
	}
	if codes[http.StatusUnauthorized] != 3 || codes[http.StatusTooManyRequests] != 97 {
		t.Errorf("100 usernames from one address with 3 attempts: %v; want 3 × 401 and 97 × 429", codes)
	}
	if n := throttleKeys(t, in, "username"); n > 3 {
		t.Errorf("the throttle remembers %d usernames after 3 were tried and 97 refused; want at most 3", n)
	}
	if n := throttleKeys(t, in, "address"); n != 1 {
		t.Errorf("the throttle remembers %d addresses; want 1", n)
	}
	if strings.Contains(logs.String(), strings.Repeat("u", 100)) {
		t.Error("the log holds a username of more than 100 bytes; want it shortened")
	}
	if !strings.Contains(logs.String(), "sign-in throttled") {
		t.Error("the refusals were not logged")
	}
}

// A sign-in with the old password that overlaps a password change starts no session
// that survives the change: the session is bound to the hash the password was
// checked against, not to the file as it reads a moment later.
func TestSignInOverlappingAPasswordChange(t *testing.T) {
	in := start(t, setup{})
	newLine := "alice:" + bcryptHash(t, "the new password, long enough", bcrypt.MinCost)
	restore := tokenserver.SetAfterPasswordCheck(func() { writeUsers(t, in.Users, newLine) })
	b := newBrowser(t)
	resp, _ := b.signIn(in, "alice", alicePassword)
	restore()
	if resp.StatusCode != http.StatusOK { // the redirect after sign-in was followed
		t.Fatalf("sign-in with the password valid when it was checked: %d; want it accepted", resp.StatusCode)
	}
	if got := b.signedInAs(in); got != "" {
		t.Errorf("a session started with the old password still shows the account of %q after the change", got)
	}
}

// --client-ip-header is believed only from trusted proxies: anyone else setting it
// to a new address for every guess still spends their own address's attempts.
func TestClientIPHeaderOnlyFromTrustedProxies(t *testing.T) {
	guesses := func(in *instance) map[int]int {
		t.Helper()
		b := newBrowser(t)
		codes := map[int]int{}
		for i := range 6 {
			_, page := b.get(in.URL + "/login")
			f := formFields(page)
			f.Set("username", fmt.Sprintf("user%d", i))
			f.Set("password", "guess")
			req, _ := http.NewRequest(http.MethodPost, in.URL+"/login", strings.NewReader(f.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i+1))
			resp, _ := b.do(req)
			codes[resp.StatusCode]++
		}
		return codes
	}
	lim := tokenserver.LoginThrottle{PerUser: 5, PerIP: 3, Refill: time.Hour}
	untrusted := start(t, setup{throttle: lim, ipHeader: "X-Forwarded-For", ipTrusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if got := guesses(untrusted); got[http.StatusUnauthorized] != 3 || got[http.StatusTooManyRequests] != 3 {
		t.Errorf("6 guesses from 127.0.0.1 (not a trusted proxy), each with a new X-Forwarded-For: %v; want 3 × 401, 3 × 429", got)
	}
	trusted := start(t, setup{throttle: lim, ipHeader: "X-Forwarded-For", ipTrusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if got := guesses(trusted); got[http.StatusUnauthorized] != 6 {
		t.Errorf("6 guesses through a trusted proxy from 6 client addresses: %v; want 6 × 401", got)
	}

	err := tokenserver.Serve(context.Background(), tokenserver.Options{DSN: "host=/nowhere", AdminToken: adminToken,
		ClientIPHeader: "X-Forwarded-For"})
	if err == nil || !strings.Contains(err.Error(), "--client-ip-trusted-proxies") {
		t.Errorf("a client IP header without trusted proxies: %v; want a refusal naming --client-ip-trusted-proxies", err)
	}
}
