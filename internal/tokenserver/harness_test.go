package tokenserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
	"github.com/kubeoauth/kubeoauth/internal/testing/testlog"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

var pg *testpg.Server

func TestMain(m *testing.M) { testpg.Main(m, &pg) }

const (
	adminToken    = "admin-token-for-tests-0123456789abcdef"
	alicePassword = "correct horse battery staple"
	redirectURI   = "http://127.0.0.1:5555/callback"
)

// instance is one running token server.
type instance struct {
	URL, AdminURL, MetricsURL string
	// Users is the users file; rewrite it with writeUsers.
	Users string
	Admin *adminapi.HTTPClient
	stop  context.CancelFunc
	done  chan error
	// stopped makes Stop safe to call before the cleanup calls it again.
	stopped sync.Once
}

type setup struct {
	accessTTL time.Duration // default an hour
	janitor   time.Duration // default an hour
	format    string
	grace     time.Duration
	dsn       string // empty: a fresh migrated database
	keyDir    string // shared signing key and HMAC secret (replicas); empty: a new one
	// previousKey is a PEM file: the previous signing key, as during a rotation.
	previousKey string
	logTo       io.Writer
	// shutdownDelay: how long the server goes on serving after SIGTERM; default 0.
	shutdownDelay time.Duration
	// httpsIssuer: the issuer is https://<address> (behind a TLS-terminating proxy),
	// while the test still talks plain http to the listener.
	httpsIssuer  bool
	throttle     tokenserver.LoginThrottle
	optionalPKCE bool
	// coalesce: the refresh coalescing window; default a second.
	coalesce time.Duration
	// jwksAllow: internal ranges a client's jwks_uri may resolve to.
	jwksAllow []netip.Prefix
	// ipHeader and ipTrusted: the client-address header and who may set it.
	ipHeader  string
	ipTrusted []netip.Prefix
	// tokenMiddleware wraps the token endpoint, as the test builds of cmd/tokenserver do.
	tokenMiddleware func(http.Handler) http.Handler
	// maxConnAge: see Options.MaxConnectionAge; default 0, no limit.
	maxConnAge time.Duration
	// fenceMaxHold: see Options.FenceMaxHold; default 30s.
	fenceMaxHold time.Duration
	// commitTimeout: see Options.CommitTimeout; default 30s.
	commitTimeout time.Duration
	// fencePoll: see Options.FencePollInterval.
	fencePoll time.Duration
	// requirePAR and parLifespan: see Options.RequirePAR and Options.PARLifespan.
	requirePAR  bool
	parLifespan time.Duration
	// deviceInterval and deviceLifespan: see Options.DeviceInterval and DeviceCodeLifespan.
	deviceInterval, deviceLifespan time.Duration
	// displayName, logoURL and templatesDir: see Options.
	displayName, logoURL, templatesDir string
	// upstream signs people in through another OpenID provider; noUsers leaves out
	// the users file.
	upstream *tokenserver.UpstreamOIDC
	noUsers  bool
}

// secrets writes a signing key and an HMAC secret into a new directory.
func secrets(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	key, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hmac"), []byte("hmac-secret-shared-by-replicas-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	writeUsers(t, filepath.Join(dir, "users"), "alice:"+string(hash))
	return dir
}

// writeUsers replaces the users file the way the kubelet updates a mounted Secret:
// a new file renamed over the old, never a half-written one.
func writeUsers(t testing.TB, path string, lines ...string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte("# test users\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func start(t testing.TB, s setup) *instance {
	t.Helper()
	if s.dsn == "" {
		s.dsn = pg.NewMigratedDatabase(t)
	}
	if s.keyDir == "" {
		s.keyDir = secrets(t)
	}
	if s.format == "" {
		s.format = oauth.FormatOpaque
	}
	if s.accessTTL == 0 {
		s.accessTTL = time.Hour
	}
	if s.janitor == 0 {
		s.janitor = time.Hour
	}
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	met, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hmacSecret, _ := os.ReadFile(filepath.Join(s.keyDir, "hmac"))
	url := "http://" + pub.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	issuer := url
	if s.httpsIssuer {
		issuer = "https://" + pub.Addr().String()
	}
	in := &instance{URL: url, AdminURL: "http://" + adm.Addr().String(), MetricsURL: "http://" + met.Addr().String(),
		Users: filepath.Join(s.keyDir, "users"), stop: cancel, done: make(chan error, 1)}
	in.Admin = &adminapi.HTTPClient{BaseURL: in.AdminURL, Token: adminToken}
	// A failed test prints what this server logged (-v prints it as it comes).
	logs := &testlog.Buffer{}
	logs.DumpOnFailure(t, "token server "+url)
	logOut := io.Writer(logs)
	if testing.Verbose() {
		logOut = io.MultiWriter(logs, os.Stderr)
	}
	if s.logTo != nil {
		logOut = io.MultiWriter(logs, s.logTo)
	}
	usersFile := filepath.Join(s.keyDir, "users")
	if s.noUsers {
		usersFile = ""
	}
	go func() {
		in.done <- tokenserver.Serve(ctx, tokenserver.Options{
			DSN: s.dsn, Issuer: issuer, PublicListener: pub, AdminListener: adm, MetricsListener: met, AdminToken: adminToken,
			SigningKeyFile: filepath.Join(s.keyDir, "key.pem"), PreviousSigningKeyFile: s.previousKey, HMACSecret: hmacSecret, AccessTokenFormat: s.format,
			AccessTokenLifespan: s.accessTTL, RefreshTokenLifespan: 24 * time.Hour, IDTokenLifespan: time.Hour,
			AuthorizeCodeLifespan: 10 * time.Minute, RefreshGracePeriod: s.grace, ShutdownTimeout: 5 * time.Second,
			ShutdownDelay: s.shutdownDelay, JanitorInterval: s.janitor, RefreshCoalesceWindow: s.coalesce, UsersFile: usersFile, Upstream: s.upstream,
			ScopeDescriptions: map[string]string{"zones.read": "Read your DNS zones", "openid": "Sign you in"},
			Log:               slog.New(slog.NewTextHandler(logOut, nil)),
			LoginThrottle:     s.throttle, OptionalPKCE: s.optionalPKCE,
			JWKSFetchAllow: s.jwksAllow, ClientIPHeader: s.ipHeader, ClientIPTrustedProxies: s.ipTrusted,
			TokenMiddleware: s.tokenMiddleware, MaxConnectionAge: s.maxConnAge, FenceMaxHold: s.fenceMaxHold, FencePollInterval: s.fencePoll,
			RequirePAR: s.requirePAR, PARLifespan: s.parLifespan, CommitTimeout: s.commitTimeout,
			DeviceInterval: s.deviceInterval, DeviceCodeLifespan: s.deviceLifespan,
			DisplayName: s.displayName, LogoURL: s.logoURL, TemplatesDir: s.templatesDir,
		})
	}()
	t.Cleanup(func() { in.Stop(t) })
	waitReady(t, in)
	return in
}

// Stop drains the server and waits for Serve to return.
func (in *instance) Stop(t testing.TB) { in.stopped.Do(func() { in.stopOnce(t) }) }

func (in *instance) stopOnce(t testing.TB) {
	in.stop()
	select {
	case err, ok := <-in.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		close(in.done)
	case <-time.After(15 * time.Second):
		t.Error("token server did not stop within 15s")
	}
}

func waitReady(t testing.TB, in *instance) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-in.done:
			t.Fatalf("token server exited: %v", err)
		default:
		}
		resp, err := httpClient.Get(in.URL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("token server never became ready")
}

// confidentialClient registers a client_credentials + authorization_code client.
func confidentialClient(t testing.TB, in *instance, id string) (secret string) {
	t.Helper()
	secret = "secret-" + id + "-0123456789abcdefghijklmnop"
	_, err := in.Admin.PutClient(context.Background(), &adminapi.Client{
		ID: id, Secret: secret, OwnerNamespace: "observability", ClientMetadata: adminapi.ClientMetadata{
			Name:                    "Grafana " + id,
			GrantTypes:              []string{"client_credentials", "authorization_code", "refresh_token"},
			RedirectURIs:            []string{redirectURI},
			Scopes:                  []string{"openid", "profile", "offline_access", "zones.read"},
			Audience:                []string{"https://api.example.com"},
			TokenEndpointAuthMethod: "client_secret_basic",
		}})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// newDBProxy puts a proxy that can cut connections in front of the database of dsn,
// to stand for a database that goes away and comes back (the real server keeps
// running behind it); it returns the proxy and a DSN that goes through it.
func newDBProxy(t *testing.T, dsn string) (*tcpproxy.Proxy, string) {
	t.Helper()
	fields := map[string]string{}
	for _, f := range strings.Fields(dsn) {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	port := fields["port"]
	if port == "" {
		port = "5432"
	}
	network, target := "tcp", net.JoinHostPort(fields["host"], port)
	if strings.HasPrefix(fields["host"], "/") {
		network, target = "unix", filepath.Join(fields["host"], ".s.PGSQL."+port)
	}
	p := tcpproxy.Start(t, "127.0.0.1", network, target)
	host, prt, _ := net.SplitHostPort(p.Addr)
	fields["host"], fields["port"] = host, prt
	parts := make([]string, 0, len(fields))
	for k, v := range fields {
		parts = append(parts, k+"="+v)
	}
	parts = append(parts, "connect_timeout=2")
	return p, strings.Join(parts, " ")
}
