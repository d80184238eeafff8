package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestMigrateCommands(t *testing.T) {
	dsn := testpg.New(t)
	out, err := runCmd(t, "migrate", "status", "--dsn", dsn)
	if err != nil || !strings.Contains(out, "0001_init") || !strings.Contains(out, "pending") ||
		!strings.Contains(out, "cannot serve on this schema") {
		t.Fatalf("status on an empty database: %v\n%s", err, out)
	}
	out, err = runCmd(t, "migrate", "up", "--dsn", dsn)
	if err != nil || !strings.Contains(out, "applied 0001_init (expand)") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	t.Setenv("KUBEOAUTH_DSN", dsn) // the environment works as well as the flag
	if out, err = runCmd(t, "migrate", "up"); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate up: %v\n%s", err, out)
	}
	out, err = runCmd(t, "migrate", "status")
	if err != nil || strings.Contains(out, "pending") || strings.Contains(out, "cannot serve") {
		t.Fatalf("status after up: %v\n%s", err, out)
	}
}

func TestMigratePlanIsJSON(t *testing.T) {
	out, err := runCmd(t, "migrate", "plan")
	if err != nil {
		t.Fatal(err)
	}
	var plan postgres.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("plan is not JSON: %v\n%s", err, out)
	}
	if plan.Latest != len(postgres.Migrations()) || plan.MinSchema < 1 || len(plan.Migrations) != plan.Latest {
		t.Errorf("plan = %+v", plan)
	}
}

func TestKeygen(t *testing.T) {
	for _, alg := range []string{signingkey.ES256, signingkey.RS256} {
		out, err := runCmd(t, "keygen", "--alg", alg)
		if err != nil {
			t.Fatal(err)
		}
		k, err := signingkey.Parse([]byte(out))
		if err != nil || k.Algorithm != alg {
			t.Errorf("keygen --alg %s: %v, %+v", alg, err, k)
		}
	}
	if _, err := runCmd(t, "keygen", "--alg", "HS256"); err == nil || !strings.Contains(err.Error(), "ES256 or RS256") {
		t.Errorf("keygen --alg HS256: %v", err)
	}
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	tests := map[string]struct {
		args []string
		want string
	}{
		"no issuer":     {[]string{"serve"}, "--issuer is required"},
		"bad format":    {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x", "--signing-key-file", "k", "--hmac-secret-file", "h", "--access-token-format", "paseto"}, "want opaque or jwt"},
		"bad duration":  {[]string{"serve", "--refresh-grace-period", "soon"}, "refresh-grace-period"},
		"unknown":       {[]string{"frobnicate"}, "unknown command"},
		"unknown flag":  {[]string{"serve", "--issuer-url", "x"}, "issuer-url"},
		"bad migrate":   {[]string{"migrate", "down"}, "want up, status or plan"},
		"missing dsn":   {[]string{"migrate", "up"}, "--dsn or --dsn-file is required"},
		"bad log level": {[]string{"serve", "--log-level", "loud"}, "--log-level"},
		"bad algorithm": {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x", "--signing-key-file", "k",
			"--hmac-secret-file", "h", "--signing-algorithm", "HS256"}, "want ES256 or RS256"},
		"TLS cert without key": {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x", "--signing-key-file", "k",
			"--hmac-secret-file", "h", "--admin-tls-cert-file", "c"}, "go together"},
		"client IP header without trusted proxies": {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x",
			"--signing-key-file", "k", "--hmac-secret-file", "h", "--client-ip-header", "X-Forwarded-For"}, "needs --client-ip-trusted-proxies"},
		"bad trusted proxies": {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x", "--signing-key-file", "k",
			"--hmac-secret-file", "h", "--client-ip-header", "X-Forwarded-For", "--client-ip-trusted-proxies", "10.0.0.0/33"},
			"--client-ip-trusted-proxies"},
		"bad jwks allow": {[]string{"serve", "--issuer", "https://a", "--admin-token-file", "x", "--signing-key-file", "k",
			"--hmac-secret-file", "h", "--jwks-fetch-allow", "10.0.0.0/33"}, "--jwks-fetch-allow"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := runCmd(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: err = %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
	// A client-secret hashing key too short to key anything is refused, by name.
	dir := t.TempDir()
	for name, content := range map[string]string{"token": "admin-token", "hmac": strings.Repeat("h", 32), "short": "tiny-key\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := runCmd(t, "serve", "--issuer", "https://a", "--dsn", "host=/nowhere", "--admin-token-file", filepath.Join(dir, "token"),
		"--signing-key-file", "k", "--hmac-secret-file", filepath.Join(dir, "hmac"), "--secret-hash-key-file", filepath.Join(dir, "short"))
	if err == nil || !strings.Contains(err.Error(), "--secret-hash-key-file") || !strings.Contains(err.Error(), "32 bytes") {
		t.Errorf("a short secret hashing key: %v; want it refused by name", err)
	}
	t.Setenv("KUBEOAUTH_REFRESH_GRACE_PERIOD", "later")
	if _, err := runCmd(t, "serve"); err == nil || !strings.Contains(err.Error(), "KUBEOAUTH_REFRESH_GRACE_PERIOD") {
		t.Errorf("a bad environment value: %v; want it named", err)
	}
}
