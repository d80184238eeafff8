// Command tokenserver-dev runs the token server by hand on a throwaway PostgreSQL:
// it starts PostgreSQL in a temp dir, migrates it, writes a signing key, an HMAC
// secret, an admin token and a users file (alice), registers a demo client, prints
// the curl commands to try, and serves until Ctrl-C, then removes everything.
//
//	make run-tokenserver     (go run ./hack/tokenserver-dev)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "tokenserver-dev:", err)
		os.Exit(1)
	}
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run(ctx context.Context) error {
	addr := flag.String("listen", "127.0.0.1:4444", "public address")
	adminAddr := flag.String("admin-listen", "127.0.0.1:4445", "admin address")
	flag.Parse()

	fmt.Println("==> starting a throwaway PostgreSQL")
	pg, err := testpg.Start()
	if err != nil {
		return err
	}
	defer func() { _ = pg.Stop() }()
	dsn := pg.DSN
	db, err := postgres.OpenDB(dsn, 2)
	if err != nil {
		return err
	}
	if _, err := postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{
		Log: func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) }}); err != nil {
		return err
	}
	_ = db.Close()

	dir, err := os.MkdirTemp("", "kubeoauth-tokenserver-dev-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	key, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("alice"), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	adminToken := random()
	files := map[string][]byte{"key.pem": key, "hmac": []byte(random()), "users": []byte("alice:" + string(hash) + "\n")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	pub, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	adm, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		return err
	}
	issuer := "http://" + pub.Addr().String()
	done := make(chan error, 1)
	go func() {
		done <- tokenserver.Serve(ctx, tokenserver.Options{
			DSN: dsn, Issuer: issuer, PublicListener: pub, AdminListener: adm, AdminToken: adminToken,
			SigningKeyFile: filepath.Join(dir, "key.pem"), HMACSecret: files["hmac"], AccessTokenFormat: oauth.FormatOpaque,
			AccessTokenLifespan: time.Hour, RefreshTokenLifespan: 720 * time.Hour, IDTokenLifespan: time.Hour,
			AuthorizeCodeLifespan: 10 * time.Minute, RefreshGracePeriod: 30 * time.Second, ShutdownTimeout: 10 * time.Second,
			JanitorInterval: time.Minute, UsersFile: filepath.Join(dir, "users"),
			ScopeDescriptions: map[string]string{"zones.read": "Read your DNS zones", "openid": "Sign you in"},
			Log:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	}()

	admin := &adminapi.HTTPClient{BaseURL: "http://" + adm.Addr().String(), Token: adminToken}
	secret := random()
	var putErr error
	for range 50 { // until the server listens
		if _, putErr = admin.PutClient(ctx, &adminapi.Client{ID: "demo", Secret: secret, OwnerNamespace: "default",
			ClientMetadata: adminapi.ClientMetadata{Name: "Demo app",
				GrantTypes:   []string{"client_credentials", "authorization_code", "refresh_token"},
				RedirectURIs: []string{"http://127.0.0.1:5555/callback"}, Scopes: []string{"openid", "zones.read", "offline_access"},
				TokenEndpointAuthMethod: "client_secret_basic"},
		}); putErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if putErr != nil {
		return putErr
	}
	fmt.Printf(`==> token server at %[1]s (admin API at %[2]s)

Get a token:
  curl -s -u demo:%[3]s -d grant_type=client_credentials -d scope=zones.read %[1]s/oauth2/token
Introspect it:
  curl -s -u demo:%[3]s -d token=<access_token> %[1]s/oauth2/introspect
Revoke it:
  curl -s -u demo:%[3]s -d token=<access_token> %[1]s/oauth2/revoke
Discovery and keys:
  curl -s %[1]s/.well-known/openid-configuration
Admin API:
  curl -s -H 'Authorization: Bearer %[4]s' %[2]s/admin/clients
Sign in as alice (password alice) in a browser:
  %[1]s/oauth2/auth?%[5]s

Ctrl-C stops the server and removes the database.
`, issuer, admin.BaseURL, secret, adminToken, url.Values{
		"client_id": {"demo"}, "response_type": {"code"}, "scope": {"openid zones.read"}, "state": {"some-state-123"},
		"redirect_uri": {"http://127.0.0.1:5555/callback"}, "code_challenge_method": {"S256"},
		// The S256 challenge of the verifier "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" (RFC 7636 appendix B).
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
	}.Encode())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	fmt.Println("\n==> stopping")
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
