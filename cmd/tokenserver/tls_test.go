package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// TestServeAdminTLS: with --admin-tls-cert-file and --admin-tls-key-file the admin
// API answers only over TLS, with a certificate that verifies against the CA for
// the admin Service's name; a clear-text request gets no answer from the API.
func TestServeAdminTLS(t *testing.T) {
	dsn, dir := serveFiles(t, nil)
	adminAddr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dsn", dsn, "--issuer", "http://127.0.0.1", "--listen", freePort(t),
			"--admin-listen", adminAddr, "--admin-token-file", filepath.Join(dir, "token"),
			"--signing-key-file", filepath.Join(dir, "signing.pem"), "--hmac-secret-file", filepath.Join(dir, "hmac"),
			"--admin-tls-cert-file", filepath.Join(dir, "tls.crt"), "--admin-tls-key-file", filepath.Join(dir, "tls.key"),
			"--shutdown-delay", "0", "--log-level", "error"}, os.Stdout, os.Stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := adminpki.Pool(ca)
	trusted := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "auth-admin.platform.svc", MinVersion: tls.VersionTLS12}}}
	health := func(c *http.Client, scheme string) (int, error) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, scheme+"://"+adminAddr+"/admin/health", nil)
		req.Header.Set("Authorization", "Bearer admin-token-0123456789")
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, err := health(trusted, "https")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin API over TLS: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, err := health(&http.Client{Timeout: 2 * time.Second}, "http"); err == nil && code == http.StatusOK {
		t.Fatal("the admin API answered a clear-text request")
	}
	// A client that checks another name refuses the certificate.
	other := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "auth-admin.other.svc", MinVersion: tls.VersionTLS12}}}
	if _, err := health(other, "https"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a certificate for another name: %v", err)
	}
}

// serveFiles migrates a fresh database and writes what `tokenserver serve` reads into
// a temp dir: the admin API's certificate for auth-admin.platform.svc (tls.crt,
// tls.key) and its CA (ca.crt), the admin token (token), a signing key
// (signing.pem), the HMAC secret (hmac), and the extra files given.
func serveFiles(t *testing.T, extra map[string][]byte) (dsn, dir string) {
	t.Helper()
	dsn = testpg.New(t)
	if out, err := runCmd(t, "migrate", "up", "--dsn", dsn); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	dir = t.TempDir()
	now := time.Now()
	ca, caKey, _ := adminpki.NewCA("test", now)
	cert, key, _ := adminpki.IssueServing(ca, caKey, []string{"auth-admin.platform.svc"}, now)
	signing, _ := signingkey.Generate(signingkey.ES256)
	files := map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": ca, "token": []byte("admin-token-0123456789"),
		"signing.pem": signing, "hmac": []byte("hmac-secret-0123456789-0123456789-abc")}
	for name, data := range extra {
		files[name] = data
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dsn, dir
}
