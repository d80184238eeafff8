package verify_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testlog"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
	"github.com/kubeoauth/kubeoauth/internal/verify"
)

var pg *testpg.Server

func TestMain(m *testing.M) { testpg.Main(m, &pg) }

const (
	adminToken = "admin-token-for-verify-tests-0123456789"
	username   = "upgrade-check"
	password   = "a password only the verification Job knows"
)

// secrets writes what the replicas of one token server share: signing key, HMAC
// secret, users file.
func secrets(t *testing.T, hmac string) string {
	t.Helper()
	dir := t.TempDir()
	key, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"key.pem": key, "hmac": []byte(hmac), "users": []byte(username + ":" + string(hash) + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const sharedHMAC = "hmac-secret-shared-by-both-colors-0123456789"

// issuer is both colors' public URL, served by a TLS-terminating ingress in front;
// verification reaches each color directly, in clear text, as the Job does through
// the colors' Services. Its cookies are Secure all the same.
const issuer = "https://auth.example.test"

// server is one color of a token server, running in this process.
type server struct {
	URL   string
	Admin *adminapi.HTTPClient
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func logger(t *testing.T, name string) *slog.Logger {
	logs := &testlog.Buffer{}
	logs.DumpOnFailure(t, name)
	return slog.New(slog.NewTextHandler(logs, nil))
}

// serve runs a token server as `tokenserver serve` does, on dsn with the secrets in
// dir, until the test ends.
func serve(t *testing.T, name, dsn, dir string) *server {
	t.Helper()
	pub, adm := listen(t), listen(t)
	s := &server{URL: "http://" + pub.Addr().String(),
		Admin: &adminapi.HTTPClient{BaseURL: "http://" + adm.Addr().String(), Token: adminToken}}
	hmac, _ := os.ReadFile(filepath.Join(dir, "hmac"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tokenserver.Serve(ctx, tokenserver.Options{DSN: dsn, Issuer: issuer, PublicListener: pub, AdminListener: adm,
			AdminToken: adminToken, SigningKeyFile: filepath.Join(dir, "key.pem"), HMACSecret: hmac,
			AccessTokenFormat: oauth.FormatOpaque, AccessTokenLifespan: time.Hour, RefreshTokenLifespan: time.Hour,
			IDTokenLifespan: time.Hour, AuthorizeCodeLifespan: time.Minute, ShutdownTimeout: 5 * time.Second,
			JanitorInterval: time.Hour, UsersFile: filepath.Join(dir, "users"), Log: logger(t, name)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	waitReady(t, s, done)
	return s
}

// serveDeaf runs a token server built as Serve builds it, except that it never
// listens for the other replicas' notifications: it keeps serving the tokens it has
// cached for the cache's lifetime after they ended elsewhere — a version that listens
// on another channel than its peer notifies on.
func serveDeaf(t *testing.T, dsn, dir string) *server {
	t.Helper()
	ctx := context.Background()
	log := logger(t, "deaf blue")
	pub, adm := listen(t), listen(t)
	s := &server{URL: "http://" + pub.Addr().String(),
		Admin: &adminapi.HTTPClient{BaseURL: "http://" + adm.Addr().String(), Token: adminToken}}
	st, err := postgres.Open(ctx, dsn, postgres.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	keys, err := signingkey.Load(filepath.Join(dir, "key.pem"), "")
	if err != nil {
		t.Fatal(err)
	}
	hmac, _ := os.ReadFile(filepath.Join(dir, "hmac"))
	hasher, err := store.NewSecretHasher(store.DeriveSecretHashKey(hmac))
	if err != nil {
		t.Fatal(err)
	}
	provider, err := oauth.New(oauth.Config{Issuer: issuer, AccessTokenFormat: oauth.FormatOpaque, HMACSecret: hmac, Keys: keys,
		SecretHasher: hasher, AccessTokenLifespan: time.Hour, RefreshTokenLifespan: time.Hour, IDTokenLifespan: time.Hour,
		AuthorizeCodeLifespan: time.Minute}, st)
	if err != nil {
		t.Fatal(err)
	}
	users, err := tokenserver.OpenUsers(filepath.Join(dir, "users"), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := tokenserver.New(tokenserver.Config{Provider: provider, Store: st, Log: log, AdminToken: adminToken,
		SigningAlgorithm: keys.Current.Algorithm, JWKS: keys.JWKS(), Users: users, CookieSecret: hmac, SecretHasher: hasher,
		SecureCookies: true})
	for ln, h := range map[net.Listener]http.Handler{pub: srv.PublicHandler(), adm: srv.AdminHandler()} {
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close() })
	}
	waitReady(t, s, nil)
	return s
}

// waitReady polls readiness: the server was just started and has no other way to
// say it listens.
func waitReady(t *testing.T, s *server, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("the token server exited: %v", err)
		default:
		}
		if s.Admin.Health(context.Background()) == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the token server never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, green, blue *server, login *verify.Login) (*verify.Report, string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	report, err := verify.Run(ctx, verify.Config{Server: inCluster(green.URL), Peer: inCluster(blue.URL), Admin: green.Admin,
		Issuer: issuer, Login: login, Out: io.MultiWriter(&out, testWriter{t}), HTTP: clusterHTTP})
	if report == nil {
		t.Fatal("no report")
	}
	return report, out.String(), err
}

// inCluster names a server by a name, as a Service is named, rather than by its
// loopback address, which HTTP clients treat as a secure context like https.
func inCluster(u string) string { return strings.Replace(u, "127.0.0.1", "svc.cluster.test", 1) }

// clusterHTTP resolves svc.cluster.test to the loopback address, as the cluster's DNS
// would resolve a Service's name.
var clusterHTTP = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, strings.Replace(addr, "svc.cluster.test", "127.0.0.1", 1))
	}}}

// testWriter logs what verification prints, line by line, as the Job's log would.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// noTemporaryClient checks that no temporary client is left on any of servers.
func noTemporaryClient(t *testing.T, servers ...*server) {
	t.Helper()
	for _, s := range servers {
		clients, err := s.Admin.ListClients(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if strings.HasPrefix(c.ID, verify.ClientIDPrefix) {
				t.Errorf("the temporary client %s (owner %q) is still registered on %s", c.ID, c.OwnerNamespace, s.URL)
			}
		}
	}
}

func failedNames(r *verify.Report) []string {
	failed := r.Failed()
	names := make([]string, 0, len(failed))
	for _, c := range failed {
		names = append(names, c.Name)
	}
	return names
}

// Two colors on one database, sharing their secrets, as a Shared upgrade runs them:
// every check passes, with a sign-in for the refresh chain and without one (then
// the admin API issues the code): none is skipped.
func TestVerificationPassesOnSharedDatabase(t *testing.T) {
	dsn, dir := pg.NewMigratedDatabase(t), secrets(t, sharedHMAC)
	blue, green := serve(t, "blue", dsn, dir), serve(t, "green", dsn, dir)

	report, out, err := run(t, green, blue, &verify.Login{Username: username, Password: password})
	if err != nil {
		t.Fatalf("verification failed: %v", err)
	}
	for _, want := range []string{
		"ok    blue introspects green's token as active", "ok    blue sees green's revocation",
		"ok    green introspects blue's token as active", "ok    green sees blue's revocation",
		"ok    blue refreshes the refresh token green rotated", "ok    green refreshes the refresh token blue rotated",
		"ok    blue sees the refresh chain revoked", "ok    delete the temporary client",
		"verification passed: 22 checks\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q", want)
		}
	}
	if s := report.Summary(); s != "verification passed: 22 checks" {
		t.Errorf("summary = %q", s)
	}
	noTemporaryClient(t, green)

	// Without a login the chain starts with a code from the admin API, for no user:
	// every check runs, the refresh chain across both colors included.
	report, out, err = run(t, green, blue, nil)
	if err != nil {
		t.Fatalf("verification without a login failed: %v", err)
	}
	for _, want := range []string{
		"ok    get an authorization code from the admin API and exchange it at green for a refresh token (PKCE)",
		"ok    green refreshes green's refresh token", "ok    blue refreshes the refresh token green rotated",
		"ok    green refreshes the refresh token blue rotated", "ok    blue introspects the refreshed access token as active",
		"ok    green sees the refresh chain revoked", "ok    blue sees the refresh chain revoked",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output without a login has no %q", want)
		}
	}
	if s := report.Summary(); s != "verification passed: 22 checks" || len(report.Checks) != 22 {
		t.Errorf("summary without a login = %q (%d checks); want all 22 checks run and passed", s, len(report.Checks))
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "ok    ") && !strings.HasPrefix(line, "verification passed") {
			t.Errorf("a line that is not a passed check: %q", line)
		}
	}
	noTemporaryClient(t, green)
	// The code's approval went with the client.
	if gs, err := green.Admin.ListGrants(context.Background(), "", adminapi.VerifySubject); err != nil || len(gs) != 0 {
		t.Errorf("grants of %s after verification = %+v, %v; want none", adminapi.VerifySubject, gs, err)
	}
}

// A green that does not share blue's tokens fails verification, by the name of the
// first check that shows it, and leaves no client behind.
func TestVerificationFailsWhenGreenCannotSeeBluesTokens(t *testing.T) {
	tests := map[string]struct {
		// green starts green beside blue, which runs on dsn with dir's secrets.
		green func(t *testing.T, dsn string) *server
		want  string
	}{
		"green on another database": {
			green: func(t *testing.T, _ string) *server {
				return serve(t, "green", pg.NewMigratedDatabase(t), secrets(t, sharedHMAC))
			},
			want: "verification failed: blue introspects green's token as active: POST ",
		},
		"green with another HMAC secret": {
			green: func(t *testing.T, dsn string) *server {
				return serve(t, "green", dsn, secrets(t, "another-hmac-secret-than-blue-0123456789"))
			},
			want: "verification failed: blue introspects green's token as active: ",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			dsn := pg.NewMigratedDatabase(t)
			blue := serve(t, "blue", dsn, secrets(t, sharedHMAC))
			green := tt.green(t, dsn)
			report, _, err := run(t, green, blue, &verify.Login{Username: username, Password: password})
			if err == nil {
				t.Fatal("verification passed")
			}
			if !strings.HasPrefix(err.Error(), tt.want) || report.Summary() != err.Error() {
				t.Errorf("error = %q; want it to start with %q and be the summary", err, tt.want)
			}
			failed := failedNames(report)
			if len(failed) < 2 || failed[1] != "blue issues a client_credentials token" && failed[1] != "green introspects blue's token as active" {
				t.Errorf("failed checks = %q; want blue's token refused by green too", failed)
			}
			noTemporaryClient(t, green, blue)
		})
	}
}

// A blue that never hears of green's revocations (here: it does not listen for the
// notifications at all) still accepts a token green revoked: verification fails on
// that check, although every token works everywhere.
func TestVerificationFailsWhenBlueMissesGreensRevocation(t *testing.T) {
	dsn, dir := pg.NewMigratedDatabase(t), secrets(t, sharedHMAC)
	blue, green := serveDeaf(t, dsn, dir), serve(t, "green", dsn, dir)
	_, out, err := run(t, green, blue, &verify.Login{Username: username, Password: password})
	if err == nil {
		t.Fatal("verification passed")
	}
	const want = "verification failed: blue sees green's revocation: the token is still active there 2s after its revocation"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q; want it to start with %q", err, want)
	}
	// Blue's own revocation reaches green, which listens.
	if !strings.Contains(out, "ok    green sees blue's revocation") {
		t.Errorf("green did not see blue's revocation:\n%s", out)
	}
	noTemporaryClient(t, green)
}

// A wrong password for the sign-in fails the refresh chain, saying why, and the
// client is deleted all the same.
func TestVerificationFailsOnAWrongLogin(t *testing.T) {
	dsn, dir := pg.NewMigratedDatabase(t), secrets(t, sharedHMAC)
	blue, green := serve(t, "blue", dsn, dir), serve(t, "green", dsn, dir)
	report, _, err := run(t, green, blue, &verify.Login{Username: username, Password: "not the password"})
	if err == nil {
		t.Fatal("verification passed")
	}
	if failed := failedNames(report); len(failed) != 1 || !strings.HasPrefix(failed[0], "sign in on green") {
		t.Errorf("failed checks = %q; want the sign-in only", failed)
	}
	if !strings.Contains(err.Error(), "The username or password is wrong.") {
		t.Errorf("error = %q; want the sign-in page's message", err)
	}
	noTemporaryClient(t, green)
}

// When the admin API refuses the registration nothing else runs, and the failure
// says what the admin API said.
func TestVerificationFailsWhenTheClientCannotBeRegistered(t *testing.T) {
	dsn, dir := pg.NewMigratedDatabase(t), secrets(t, sharedHMAC)
	blue, green := serve(t, "blue", dsn, dir), serve(t, "green", dsn, dir)
	wrong := *green
	wrong.Admin = &adminapi.HTTPClient{BaseURL: green.Admin.BaseURL, Token: "not-the-admin-token-0123456789"}
	report, _, err := run(t, &wrong, blue, nil)
	if err == nil || len(report.Checks) != 1 || !strings.Contains(err.Error(), "401") {
		t.Errorf("err = %v, checks %+v; want the registration refused with 401, and nothing else run", err, report.Checks)
	}
	if !errors.Is(report.Checks[0].Err, report.Failed()[0].Err) {
		t.Error("the failed check is not the registration")
	}
}

// The summary fits a termination message (4096 bytes, which the kubelet cuts
// without regard for characters) and stays valid UTF-8.
func TestSummaryFitsATerminationMessage(t *testing.T) {
	long := errors.New(strings.Repeat("é", 3000))
	r := &verify.Report{Checks: []verify.Check{{Name: "a check"}, {Name: "blue sees green's revocation", Err: long},
		{Name: "another", Err: errors.New("x")}}}
	s := r.Summary()
	if len(s) > 4096 || !utf8.ValidString(s) || !strings.HasPrefix(s, "verification failed: blue sees green's revocation: éé") {
		t.Errorf("summary of %d bytes, valid UTF-8 %v: %.80q", len(s), utf8.ValidString(s), s)
	}
}

// Without a login, an admin API of a version before POST /admin/verify/authorize
// fails the refresh chain, saying what to do, rather than passing without it.
func TestVerificationWithoutLoginNeedsTheVerifyEndpoint(t *testing.T) {
	dsn, dir := pg.NewMigratedDatabase(t), secrets(t, sharedHMAC)
	blue, green := serve(t, "blue", dsn, dir), serve(t, "green", dsn, dir)
	target, err := url.Parse(blue.Admin.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	// Blue's admin API as an older version serves it: every route but that one.
	proxy := httputil.NewSingleHostReverseProxy(target)
	older := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/admin/verify/authorize" {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(older.Close)
	viaOlder := *green
	viaOlder.Admin = &adminapi.HTTPClient{BaseURL: older.URL, Token: adminToken}
	report, _, err := run(t, &viaOlder, blue, nil)
	if err == nil {
		t.Fatal("verification passed without its refresh checks")
	}
	const want = "has no POST /admin/verify/authorize (a version before it): point --admin-url at green's admin API, or give --login-file"
	if failed := failedNames(report); len(failed) != 1 || !strings.HasPrefix(failed[0], "get an authorization code from the admin API") ||
		!strings.Contains(err.Error(), want) {
		t.Errorf("failed checks = %q, error %v; want the admin code only, saying %q", failed, err, want)
	}
	noTemporaryClient(t, green)
}
