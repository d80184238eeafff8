package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/devserver"
)

// The test builds (make tokenserver-variants) are genuinely different token servers,
// built here the same way and run as processes on a real PostgreSQL.

const baseVersion = "v1.0.0-test"

// buildVariant builds this command with a build tag ("" for the ordinary build) and
// the version baseVersion.
func buildVariant(t *testing.T, tag string) string {
	t.Helper()
	name := "tokenserver"
	args := []string{"build", "-ldflags", "-X github.com/kubeoauth/kubeoauth/internal/version.Version=" + baseVersion}
	if tag != "" {
		name += "-" + tag
		args = append(args, "-tags", tag)
	}
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", append(args, "-o", bin, ".")...).CombinedOutput() // #nosec G204 -- go build of this package
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// runBin runs bin to completion and returns its stdout, and its stderr in the error.
func runBin(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...) // #nosec G204 -- a binary the test built
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// startEnv prepares a PostgreSQL migrated by this (v1) build and the secrets.
func startEnv(t *testing.T) *devserver.Env {
	t.Helper()
	env, err := devserver.Start(t.Context(), devserver.Options{})
	t.Cleanup(func() { _ = env.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// serveVariant runs bin as `tokenserver serve` on env and registers a
// client_credentials client; it returns the public URL.
func serveVariant(t *testing.T, env *devserver.Env, bin string, extra ...string) string {
	t.Helper()
	public, _ := serveVariantAdmin(t, env, bin, extra...)
	return public
}

// serveVariantAdmin is serveVariant also returning the admin API's URL.
func serveVariantAdmin(t *testing.T, env *devserver.Env, bin string, extra ...string) (public, adminURL string) {
	t.Helper()
	addrs, err := devserver.FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	_, admin, err := env.Serve(t.Context(), bin, addrs[0], addrs[1], extra...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.PutClient(t.Context(), &adminapi.Client{ID: "robot", Secret: robotSecret, OwnerNamespace: "tests",
		ClientMetadata: adminapi.ClientMetadata{Name: "Robot", GrantTypes: []string{"client_credentials"},
			Scopes: []string{"zones.read"}, TokenEndpointAuthMethod: "client_secret_basic"}})
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addrs[0], "http://" + addrs[1]
}

const robotSecret = "robot-secret-0123456789abcdefghijklmnop"

// issue asks for a client_credentials token and returns the status and the version
// that answered.
func issue(t *testing.T, base string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("robot", robotSecret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Kubeoauth-Version")
}

// v2test adds an expand migration and writes to its table on every token issued: its
// plan against a v1 database says Shared, it cannot start before its migration ran,
// and after it v1 and v2 both serve on the one schema, only v2 writing the table.
func TestVariantV2TestSharesTheSchemaWithV1(t *testing.T) {
	v1, v2 := buildVariant(t, ""), buildVariant(t, "v2test")
	env := startEnv(t)
	v1Schema := int64(len(postgres.Migrations()))

	if out, err := runBin(t, v2, "version"); err != nil || out != baseVersion+"-v2test\n" {
		t.Errorf("v2test version = %q, %v", out, err)
	}
	termLog := terminationFile(t)
	out, err := runBin(t, v2, "migrate", "plan", "--dsn", env.DSN, "--termination-log", termLog)
	if err != nil {
		t.Fatal(err)
	}
	got := readReport(t, "v2's plan", []byte(out))
	if got.Mode != "Shared" || got.SchemaFrom != v1Schema || got.SchemaTo != v1Schema+1 ||
		!strings.Contains(got.Reason, fmt.Sprintf("%04d_token_issue_log", v1Schema+1)) {
		t.Errorf("v2's plan against a v1 database = %+v; want Shared from %d to %d naming token_issue_log", got, v1Schema, v1Schema+1)
	}
	// Before its migration v2 cannot serve: it needs its table.
	if out, err := runBin(t, v2, "migrate", "status", "--dsn", env.DSN); err != nil ||
		!strings.Contains(out, "cannot serve on this schema") || !strings.Contains(out, "token_issue_log") {
		t.Errorf("v2's status before its migration: %v\n%s", err, out)
	}
	if out, err := runBin(t, v2, "migrate", "up", "--expand-only", "--dsn", env.DSN); err != nil ||
		!strings.Contains(out, "token_issue_log (expand)") {
		t.Fatalf("v2's expand migration: %v\n%s", err, out)
	}

	// v1 and v2 side by side on v2's schema.
	v1URL := serveVariant(t, env, v1)
	v2URL := serveVariant(t, env, v2)
	if code, ver := issue(t, v1URL); code != 200 || ver != baseVersion {
		t.Errorf("v1 on v2's schema: %d from version %q; want 200 from %s", code, ver, baseVersion)
	}
	db, err := postgres.OpenDB(env.DSN, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	logged := func() (n int, versions string) {
		t.Helper()
		err := db.QueryRowContext(t.Context(), `SELECT count(*), coalesce(string_agg(DISTINCT version, ','), '')
			FROM token_issue_log WHERE client_id = 'robot' AND kind = 'access_token'`).Scan(&n, &versions)
		if err != nil {
			t.Fatal(err)
		}
		return n, versions
	}
	if n, _ := logged(); n != 0 {
		t.Errorf("token_issue_log has %d rows after a v1 token; v1 does not know the table", n)
	}
	for range 2 {
		if code, ver := issue(t, v2URL); code != 200 || ver != baseVersion+"-v2test" {
			t.Errorf("v2: %d from version %q; want 200 from %s-v2test", code, ver, baseVersion)
		}
	}
	if n, versions := logged(); n != 2 || versions != baseVersion+"-v2test" {
		t.Errorf("token_issue_log after two v2 tokens: %d rows by %q; want 2 by v2", n, versions)
	}
	if code, _ := issue(t, v1URL); code != 200 {
		t.Errorf("v1 after v2 wrote its table: %d", code)
	}

	// Planned from either side now, nothing is left to do; v1 (a rollback) serves as is.
	for name, bin := range map[string]string{"v1": v1, "v2": v2} {
		out, err := runBin(t, bin, "migrate", "plan", "--dsn", env.DSN, "--termination-log", termLog)
		if err != nil {
			t.Fatal(err)
		}
		if got := readReport(t, name+"'s plan", []byte(out)); got.Mode != "Shared" || got.SchemaFrom != v1Schema+1 ||
			!strings.Contains(got.Reason, "no migration to apply") {
			t.Errorf("%s's plan on v2's schema = %+v; want Shared, nothing to apply", name, got)
		}
	}
}

// v4test renames tokens.requested_at to issued_at, a breaking migration, and its
// store uses the new name: its plan against a v1 database says Copy, naming the
// migration; --expand-only (the step of a Shared upgrade) leaves the database alone
// and v1 serving; after a full `migrate up` (what the copy gets) v4test issues,
// introspects, refreshes and revokes tokens, those v1 issued before included, while
// v1 refuses to start on that schema.
func TestVariantV4TestNeedsACopy(t *testing.T) {
	v1, v4 := buildVariant(t, ""), buildVariant(t, "v4test")
	env := startEnv(t)
	v1Schema := int64(len(postgres.Migrations()))
	migration := fmt.Sprintf("%04d_tokens_issued_at", v1Schema+1)

	if out, err := runBin(t, v4, "version"); err != nil || out != baseVersion+"-v4test\n" {
		t.Errorf("v4test version = %q, %v", out, err)
	}
	termLog := terminationFile(t)
	out, err := runBin(t, v4, "migrate", "plan", "--dsn", env.DSN, "--termination-log", termLog)
	if err != nil {
		t.Fatal(err)
	}
	if got := readReport(t, "v4's plan", []byte(out)); got.Mode != "Copy" || got.SchemaFrom != v1Schema ||
		got.SchemaTo != v1Schema+1 || !strings.Contains(got.Reason, migration+" (breaking)") {
		t.Errorf("v4's plan against a v1 database = %+v; want Copy from %d to %d naming %s (breaking)", got, v1Schema, v1Schema+1, migration)
	}
	if out, err := runBin(t, v4, "migrate", "status", "--dsn", env.DSN); err != nil ||
		!strings.Contains(out, "cannot serve on this schema") || !strings.Contains(out, migration) {
		t.Errorf("v4's status before its migration: %v\n%s", err, out)
	}

	v1URL := serveVariant(t, env, v1)
	before := clientCredentialsToken(t, v1URL)
	if out, err := runBin(t, v4, "migrate", "up", "--expand-only", "--dsn", env.DSN); err != nil || strings.Contains(out, migration) {
		t.Fatalf("v4's migrate up --expand-only: %v\n%s; want nothing applied", err, out)
	}
	if out, err := runBin(t, v1, "migrate", "status", "--dsn", env.DSN); err != nil || strings.Contains(out, "cannot serve") {
		t.Errorf("v1's status after v4's --expand-only: %v\n%s", err, out)
	}
	if code, ver := issue(t, v1URL); code != 200 || ver != baseVersion {
		t.Errorf("v1 after v4's --expand-only: %d from %q; want 200", code, ver)
	}

	if out, err := runBin(t, v4, "migrate", "up", "--dsn", env.DSN); err != nil || !strings.Contains(out, migration+" (breaking)") {
		t.Fatalf("v4's migrate up: %v\n%s; want %s applied", err, out, migration)
	}
	// The ordinary build refuses to start on v4's schema, saying why.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	addrs, err := devserver.FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, v1, "serve", "--dsn", env.DSN, "--issuer", "http://"+addrs[0], "--listen", addrs[0], // #nosec G204 -- a binary the test built
		"--admin-listen", addrs[1], "--metrics-listen=", "--admin-token-file", env.Path(devserver.AdminTokenFile),
		"--signing-key-file", env.Path(devserver.KeyFile), "--hmac-secret-file", env.Path(devserver.HMACFile))
	cmd.Stderr = &stderr
	if err := cmd.Run(); ctx.Err() != nil || err == nil || !strings.Contains(stderr.String(), "breaking migration "+migration) ||
		!strings.Contains(stderr.String(), "newer token server") {
		t.Errorf("v1 serve on v4's schema: %v, %s; want it refused, naming %s", err, stderr.String(), migration)
	}

	// Two v4 replicas: v1's token came through the migration, and every token flow
	// works on the renamed column, across replicas (what the upgrade's verification
	// Job checks, run here as it runs there).
	blue, _ := serveVariantAdmin(t, env, v4)
	green, greenAdmin := serveVariantAdmin(t, env, v4)
	if !introspectActive(t, green, before) {
		t.Errorf("v4 introspects the token v1 issued before the migration as inactive")
	}
	if code, ver := issue(t, blue); code != 200 || ver != baseVersion+"-v4test" {
		t.Errorf("v4: %d from version %q; want 200 from %s-v4test", code, ver, baseVersion)
	}
	out, err = runBin(t, v4, "verify", "--server", green, "--peer", blue, "--admin-url", greenAdmin,
		"--admin-token-file", env.Path(devserver.AdminTokenFile), "--termination-log", termLog, "--timeout", "1m")
	if err != nil || !strings.Contains(out, "ok    green refreshes the refresh token blue rotated") ||
		!strings.Contains(out, "verification passed") || strings.Contains(out, "skip") {
		t.Errorf("verify of two v4 replicas on v4's schema: %v\n%s", err, out)
	}
}

// clientCredentialsToken is an access token of the client serveVariant registers.
func clientCredentialsToken(t *testing.T, base string) string {
	t.Helper()
	cfg := clientcredentials.Config{ClientID: "robot", ClientSecret: robotSecret, TokenURL: base + "/oauth2/token",
		AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cfg.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// introspectActive asks base, as that client, whether token is active.
func introspectActive(t *testing.T, base, token string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("robot", robotSecret)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var got struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d, %v", resp.StatusCode, err)
	}
	return got.Active
}

// crashloop exits non-zero soon after `serve` starts, before it ever listens; its
// migrate commands work, so an upgrade to it reaches its deployment.
func TestVariantCrashloop(t *testing.T) {
	bin := buildVariant(t, "crashloop")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "serve") // #nosec G204 -- a binary the test built
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil || err == nil || cmd.ProcessState.ExitCode() < 1 || !strings.Contains(stderr.String(), "crashloop") {
		t.Errorf("crashloop serve: %v (exit %d), %s; want a non-zero exit saying why", err, cmd.ProcessState.ExitCode(), stderr.String())
	}
	if out, err := runBin(t, bin, "migrate", "plan"); err != nil || !strings.Contains(out, `"latest"`) {
		t.Errorf("crashloop migrate plan: %v\n%s", err, out)
	}
	if out, err := runBin(t, bin, "version"); err != nil || out != baseVersion+"-crashloop\n" {
		t.Errorf("crashloop version = %q, %v", out, err)
	}
}

// errors answers 500 to a share of token requests, and its metrics count them as
// 5xx; a share out of range is refused by name.
func TestVariantErrors(t *testing.T) {
	bin := buildVariant(t, "errors")
	t.Setenv("KUBEOAUTH_TEST_ERROR_RATE", "1.5")
	if _, err := runBin(t, bin, "serve"); err == nil || !strings.Contains(err.Error(), "KUBEOAUTH_TEST_ERROR_RATE") {
		t.Errorf("errors build with a rate of 1.5: %v; want it refused by name", err)
	}
	t.Setenv("KUBEOAUTH_TEST_ERROR_RATE", "0.5")
	env := startEnv(t)
	metricsAddr, err := devserver.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	base := serveVariant(t, env, bin, "--metrics-listen", metricsAddr[0])
	const n = 100
	failed := 0
	for range n {
		code, ver := issue(t, base)
		if ver != baseVersion+"-errors" {
			t.Fatalf("version %q, want %s-errors", ver, baseVersion)
		}
		switch code {
		case 200:
		case 500:
			failed++
		default:
			t.Fatalf("token: %d, want 200 or 500", code)
		}
	}
	// Binomial(100, 0.5): outside 20..80 once in 10^9 runs.
	if failed < 20 || failed > 80 {
		t.Errorf("%d of %d token requests failed at a rate of 0.5", failed, n)
	}
	resp, err := http.Get("http://" + metricsAddr[0] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`kubeoauth_http_requests_total{code="500",handler="token"} %d`, failed),
		fmt.Sprintf(`kubeoauth_http_requests_total{code="200",handler="token"} %d`, n-failed),
		fmt.Sprintf(`kubeoauth_build_info{version="%s-errors"} 1`, baseVersion),
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// badexpand plans Shared (one expand migration) and then fails that migration,
// leaving the schema as it was: the ordinary build keeps serving on it.
func TestVariantBadexpand(t *testing.T) {
	v1, bad := buildVariant(t, ""), buildVariant(t, "badexpand")
	env := startEnv(t)
	v1Schema := int64(len(postgres.Migrations()))
	out, err := runBin(t, bad, "migrate", "plan", "--dsn", env.DSN, "--termination-log", terminationFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := readReport(t, "badexpand's plan", []byte(out)); got.Mode != "Shared" || got.SchemaTo != v1Schema+1 {
		t.Errorf("badexpand's plan = %+v; want Shared to %d", got, v1Schema+1)
	}
	// Refused SQL is no reason to retry: a distinct exit code, on which the
	// operator's migration Jobs fail at once (their podFailurePolicy).
	out, err = runBin(t, bad, "migrate", "up", "--expand-only", "--dsn", env.DSN)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != postgres.ExitMigrationFailed || !strings.Contains(err.Error(), "bad_expand") {
		t.Errorf("badexpand's expand migration: %v\n%s; want exit code %d naming bad_expand", err, out, postgres.ExitMigrationFailed)
	}
	if resources.MigrationFailedExitCode != postgres.ExitMigrationFailed {
		t.Errorf("the Jobs' podFailurePolicy fails on exit code %d, the command exits %d", resources.MigrationFailedExitCode,
			postgres.ExitMigrationFailed)
	}
	// A database that cannot be reached is worth a retry: exit code 1.
	_, err = runBin(t, bad, "migrate", "up", "--expand-only", "--dsn", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("migrate up without a database: %v; want exit code 1", err)
	}
	if out, err := runBin(t, v1, "migrate", "status", "--dsn", env.DSN); err != nil ||
		!strings.Contains(out, fmt.Sprint(v1Schema)) {
		t.Errorf("v1's status after the failed migration: %v\n%s", err, out)
	}
	if code, ver := issue(t, serveVariant(t, env, v1)); code != 200 || ver != baseVersion {
		t.Errorf("v1 after the failed migration: %d from %q", code, ver)
	}
}
