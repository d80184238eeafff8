package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The environment the operator sets (KUBEOAUTH_TEMPLATES_DIR, KUBEOAUTH_LOGO_URL)
// reaches the checks: a template that cannot be used, or a logo that is not an
// image URL, stops serve, naming it.
func TestServeRefusesBadPages(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"token": "admin-token", "hmac": strings.Repeat("h", 32)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	templates := filepath.Join(dir, "templates")
	if err := os.Mkdir(templates, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(templates, "login.html"), []byte("{{.Usrname}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := []string{"serve", "--issuer", "https://a", "--dsn", "host=/nowhere", "--admin-token-file", filepath.Join(dir, "token"),
		"--signing-key-file", "k", "--hmac-secret-file", filepath.Join(dir, "hmac"),
		"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--metrics-listen", ""}
	t.Setenv("KUBEOAUTH_TEMPLATES_DIR", templates)
	if _, err := runCmd(t, serve...); err == nil || !strings.Contains(err.Error(), "login.html: template: login.html:1:2: executing") {
		t.Errorf("serve with a bad login.html: %v; want it refused, naming the file", err)
	}
	t.Setenv("KUBEOAUTH_TEMPLATES_DIR", "")
	t.Setenv("KUBEOAUTH_LOGO_URL", "http://cdn.example.com/logo.png")
	if _, err := runCmd(t, serve...); err == nil || !strings.Contains(err.Error(), "logo URL: must be an https URL") {
		t.Errorf("serve with an http logo: %v; want it refused", err)
	}
	t.Setenv("KUBEOAUTH_LOGO_URL", "")
	t.Setenv("KUBEOAUTH_DISPLAY_NAME", "\u202eproC elpmaxE")
	if _, err := runCmd(t, serve...); err == nil || !strings.Contains(err.Error(), "bidirectional overrides and isolates") {
		t.Errorf("serve with a right-to-left override in the display name: %v; want it refused", err)
	}
}
