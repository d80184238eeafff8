package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestVerifyCommand runs `tokenserver verify` as the upgrade's Job does: two colors
// of one token server (`tokenserver serve`, an https issuer behind an ingress, the
// admin API over TLS) on one database, reached directly in clear text; the admin API
// at an address its certificate does not name, with --admin-server-name. It passes,
// prints one line per check, and leaves its summary in the termination log.
func TestVerifyCommand(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pass:word with a colon"), bcrypt.MinCost)
	dsn, dir := serveFiles(t, map[string][]byte{"users": []byte("upgrade-check:" + string(hash) + "\n"),
		"login": []byte("upgrade-check:pass:word with a colon\n"), "termination-log": nil})
	var public, admin [2]string
	for i, color := range []string{"blue", "green"} {
		public[i], admin[i] = freePort(t), freePort(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--dsn", dsn, "--issuer", "https://auth.example.test", "--listen", public[i],
				"--admin-listen", admin[i], "--metrics-listen=", "--admin-token-file", filepath.Join(dir, "token"),
				"--signing-key-file", filepath.Join(dir, "signing.pem"), "--hmac-secret-file", filepath.Join(dir, "hmac"),
				"--admin-tls-cert-file", filepath.Join(dir, "tls.crt"), "--admin-tls-key-file", filepath.Join(dir, "tls.key"),
				"--users-file", filepath.Join(dir, "users"), "--shutdown-delay", "0", "--log-level", "error"}, os.Stdout, os.Stderr)
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve %s: %v", color, err)
			}
		})
	}
	for _, addr := range public {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never became ready: %v", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	termLog := filepath.Join(dir, "termination-log")
	t.Setenv("KUBEOAUTH_TERMINATION_LOG", termLog) // as the Job sets it, or the default path
	out, err := runCmd(t, "verify", "--server", "http://"+public[1], "--peer", "http://"+public[0],
		"--admin-url", "https://"+admin[1], "--admin-token-file", filepath.Join(dir, "token"),
		"--admin-ca-file", filepath.Join(dir, "ca.crt"), "--admin-server-name", "auth-admin.platform.svc",
		"--issuer", "https://auth.example.test", "--login-file", filepath.Join(dir, "login"), "--timeout", "1m")
	t.Log(out)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, want := range []string{"ok    register a temporary client", "ok    green's discovery document names the issuer",
		"ok    blue introspects green's token as active", "ok    green refreshes the refresh token blue rotated",
		"ok    delete the temporary client", "verification passed: 22 checks"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q", want)
		}
	}
	if data, _ := os.ReadFile(termLog); string(data) != "verification passed: 22 checks\n" {
		t.Errorf("termination log = %q", data)
	}

	// Without --login-file, as an operator runs it with no user of its own: the
	// admin API gives the code, and every check runs.
	out, err = runCmd(t, "verify", "--server", "http://"+public[1], "--peer", "http://"+public[0],
		"--admin-url", "https://"+admin[1], "--admin-token-file", filepath.Join(dir, "token"),
		"--admin-ca-file", filepath.Join(dir, "ca.crt"), "--admin-server-name", "auth-admin.platform.svc",
		"--issuer", "https://auth.example.test", "--timeout", "1m")
	t.Log(out)
	if err != nil {
		t.Fatalf("verify without --login-file: %v", err)
	}
	if !strings.Contains(out, "ok    green refreshes the refresh token blue rotated") || strings.Contains(out, "skip") {
		t.Errorf("without --login-file the refresh checks did not all run:\n%s", out)
	}
	if data, _ := os.ReadFile(termLog); string(data) != "verification passed: 22 checks\n" {
		t.Errorf("termination log without --login-file = %q", data)
	}

	// Pointed at a peer that does not answer, it fails, and the termination log says
	// which check failed.
	out, err = runCmd(t, "verify", "--server", "http://"+public[1], "--peer", "http://"+freePort(t),
		"--admin-url", "https://"+admin[1], "--admin-token-file", filepath.Join(dir, "token"),
		"--admin-ca-file", filepath.Join(dir, "ca.crt"), "--admin-server-name", "auth-admin.platform.svc")
	if err == nil {
		t.Fatalf("verify against a dead peer passed:\n%s", out)
	}
	const want = "verification failed: blue introspects green's token as active: "
	if data, _ := os.ReadFile(termLog); !strings.HasPrefix(string(data), want) || !strings.Contains(out, "ok    delete the temporary client") {
		t.Errorf("termination log = %q, want %q…; output:\n%s", data, want, out)
	}
}

func TestVerifyRefusesBadFlags(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"token": "admin-token", "login": "no-colon\n", "ca": "not PEM"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ok := []string{"verify", "--server", "http://green:4444", "--peer", "http://blue:4444", "--admin-url", "https://admin:4445",
		"--admin-token-file", filepath.Join(dir, "token")}
	tests := map[string]struct {
		args []string
		want string
	}{
		"no server":       {[]string{"verify"}, "--server is required"},
		"no peer":         {[]string{"verify", "--server", "http://green"}, "--peer is required"},
		"relative server": {[]string{"verify", "--server", "green:4444", "--peer", "http://blue"}, `--server "green:4444"`},
		"no admin URL":    {[]string{"verify", "--server", "http://green", "--peer", "http://blue"}, "--admin-url is required"},
		"no admin token": {[]string{"verify", "--server", "http://green", "--peer", "http://blue", "--admin-url", "https://a"},
			"--admin-token-file is required"},
		"bad login file":  {append(ok, "--login-file", filepath.Join(dir, "login")), "want one line username:password"},
		"missing login":   {append(ok, "--login-file", filepath.Join(dir, "nothing")), "--login-file"},
		"bad CA":          {append(ok, "--admin-ca-file", filepath.Join(dir, "ca")), "--admin-ca-file"},
		"bad propagation": {append(ok, "--propagation", "0s"), "--propagation must be positive"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := runCmd(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: err = %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
}
