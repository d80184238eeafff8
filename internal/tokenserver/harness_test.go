package tokenserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

var pg *testpg.Server

func TestMain(m *testing.M) {
	var err error
	if pg, err = testpg.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = pg.Stop()
	os.Exit(code)
}

const (
	adminToken    = "admin-token-for-tests-0123456789abcdef"
	alicePassword = "correct horse battery staple"
	redirectURI   = "http://127.0.0.1:5555/callback"
)

// instance is one running token server.
type instance struct {
	URL, AdminURL string
	Admin         *adminapi.HTTPClient
	stop          context.CancelFunc
	done          chan error
}

type setup struct {
	accessTTL time.Duration // default an hour
	janitor   time.Duration // default an hour
	format    string
	grace     time.Duration
	dsn       string // empty: a fresh migrated database
	keyDir    string // shared signing key and HMAC secret (replicas); empty: a new one
	logTo     io.Writer
	// shutdownDelay: how long the server goes on serving after SIGTERM; default 0.
	shutdownDelay time.Duration
	// jwksAllow: internal ranges a client's jwks_uri may resolve to.
	jwksAllow []netip.Prefix
}

// migratedDB returns the DSN of a fresh database with the schema applied.
func migratedDB(t testing.TB) string {
	t.Helper()
	dsn := pg.NewDatabase(t)
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := postgres.Migrate(context.Background(), db, postgres.Migrations(), postgres.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// secrets writes a signing key and an HMAC secret into a new directory.
func secrets(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	key, err := oauth.GenerateKey(oauth.ES256)
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
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte("# test users\nalice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t testing.TB, s setup) *instance {
	t.Helper()
	if s.dsn == "" {
		s.dsn = migratedDB(t)
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
	hmacSecret, _ := os.ReadFile(filepath.Join(s.keyDir, "hmac"))
	url := "http://" + pub.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{URL: url, AdminURL: "http://" + adm.Addr().String(), stop: cancel, done: make(chan error, 1)}
	in.Admin = &adminapi.HTTPClient{BaseURL: in.AdminURL, Token: adminToken}
	logOut := io.Discard
	if testing.Verbose() {
		logOut = os.Stderr
	}
	if s.logTo != nil {
		logOut = s.logTo
	}
	go func() {
		in.done <- tokenserver.Serve(ctx, tokenserver.Options{
			DSN: s.dsn, Issuer: url, PublicListener: pub, AdminListener: adm, AdminToken: adminToken,
			SigningKeyFile: filepath.Join(s.keyDir, "key.pem"), HMACSecret: hmacSecret, AccessTokenFormat: s.format,
			AccessTokenLifespan: s.accessTTL, RefreshTokenLifespan: 24 * time.Hour, IDTokenLifespan: time.Hour,
			AuthorizeCodeLifespan: 10 * time.Minute, RefreshGracePeriod: s.grace, ShutdownTimeout: 5 * time.Second,
			ShutdownDelay: s.shutdownDelay, JanitorInterval: s.janitor, UsersFile: filepath.Join(s.keyDir, "users"),
			ScopeDescriptions: map[string]string{"zones.read": "Read your DNS zones", "openid": "Sign you in"},
			Log:               slog.New(slog.NewTextHandler(logOut, nil)), JWKSFetchAllow: s.jwksAllow,
		})
	}()
	t.Cleanup(func() { in.Stop(t) })
	waitReady(t, in)
	return in
}

// Stop drains the server and waits for Serve to return.
func (in *instance) Stop(t testing.TB) {
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

// dbProxy forwards TCP connections to PostgreSQL and can cut them, to stand for a
// database that goes away and comes back (the real server keeps running behind it).
type dbProxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newDBProxy(t *testing.T, dsn string) (*dbProxy, string) {
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
	p := &dbProxy{target: net.JoinHostPort(fields["host"], port)}
	network := "tcp"
	if strings.HasPrefix(fields["host"], "/") {
		p.target, network = filepath.Join(fields["host"], ".s.PGSQL."+port), "unix"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln, network)
	t.Cleanup(p.Down)
	host, prt, _ := net.SplitHostPort(p.addr)
	fields["host"], fields["port"] = host, prt
	parts := make([]string, 0, len(fields))
	for k, v := range fields {
		parts = append(parts, k+"="+v)
	}
	parts = append(parts, "connect_timeout=2")
	return p, strings.Join(parts, " ")
}

func (p *dbProxy) serve(ln net.Listener, network string) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial(network, p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
}

// Down closes the listener and every connection.
func (p *dbProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// Up listens again on the same address.
func (p *dbProxy) Up(t *testing.T, network string) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln, network)
}
