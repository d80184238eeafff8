// Package devserver prepares a token server for the commands in hack/ that run one by
// hand or for a benchmark (tokenserver-dev, bench-tokenserver, bench-operator): a
// throwaway PostgreSQL with the schema migrated, and a private directory holding the
// files `tokenserver serve` reads — signing key, HMAC secret, admin token, users.
// Stop removes all of it. It is for development only: secrets sit in a temp dir.
package devserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// The files Start writes into Env.Dir.
const (
	KeyFile        = "key.pem"
	HMACFile       = "hmac"
	AdminTokenFile = "admin"
	UsersFile      = "users"
)

// Options says what Start prepares beyond the database and the keys.
type Options struct {
	// Users go into the users file, name to password.
	Users map[string]string
	// PasswordCost is the users file's bcrypt cost; 0 means bcrypt.DefaultCost.
	// Benchmarks that sign in a lot use bcrypt.MinCost so they measure the server,
	// not bcrypt.
	PasswordCost int
	// Log, when not nil, gets one line per migration applied.
	Log func(format string, args ...any)
	// Durable runs PostgreSQL with its default durability settings (testpg.Options):
	// what a benchmark of writes should measure.
	Durable bool
	// PGSettings are more PostgreSQL settings, "name=value" each.
	PGSettings []string
}

// Env is a prepared database and secrets directory.
type Env struct {
	// DSN of the migrated database.
	DSN string
	// Dir holds the files named by the constants above.
	Dir        string
	AdminToken string
	HMACSecret []byte

	pg       *testpg.Server
	hasUsers bool
	procs    []*exec.Cmd // started by Serve
}

// Start starts a throwaway PostgreSQL, applies the schema and writes the secrets
// directory. Call Stop when done, also after an error.
func Start(ctx context.Context, opts Options) (*Env, error) {
	e := &Env{AdminToken: randsecret.MustNew(32), HMACSecret: []byte(randsecret.MustNew(32))}
	var err error
	if e.pg, err = testpg.StartWith(testpg.Options{Durable: opts.Durable, Settings: opts.PGSettings}); err != nil {
		return e, err
	}
	e.DSN = e.pg.DSN
	if err := testpg.Migrate(ctx, e.DSN, opts.Log); err != nil {
		return e, fmt.Errorf("migrate: %w", err)
	}
	if e.Dir, err = os.MkdirTemp("", "kubeoauth-devserver-"); err != nil {
		return e, err
	}
	key, err := signingkey.Generate(signingkey.ES256)
	if err != nil {
		return e, err
	}
	cost := opts.PasswordCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	var users strings.Builder
	for name, password := range opts.Users {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
		if err != nil {
			return e, err
		}
		fmt.Fprintf(&users, "%s:%s\n", name, hash)
	}
	files := map[string][]byte{KeyFile: key, HMACFile: e.HMACSecret, AdminTokenFile: []byte(e.AdminToken)}
	if e.hasUsers = len(opts.Users) > 0; e.hasUsers {
		files[UsersFile] = []byte(users.String())
	}
	for name, data := range files {
		if err := os.WriteFile(e.Path(name), data, 0o600); err != nil {
			return e, err
		}
	}
	return e, nil
}

// PG is the PostgreSQL server holding the database.
func (e *Env) PG() *testpg.Server { return e.pg }

// Path is the path of one of the files in Dir.
func (e *Env) Path(name string) string { return filepath.Join(e.Dir, name) }

// Serve starts bin, a cmd/tokenserver binary, as `tokenserver serve` on this
// environment — issuer http://<listen>, no metrics listener, warnings only, then
// extra flags; its output goes to stderr — and waits until its admin API answers.
// Stop kills it.
func (e *Env) Serve(ctx context.Context, bin, listen, adminListen string, extra ...string) (*exec.Cmd, *adminapi.HTTPClient, error) {
	args := []string{"serve", "--dsn", e.DSN, "--issuer", "http://" + listen, "--listen", listen,
		"--admin-listen", adminListen, "--metrics-listen=", "--admin-token-file", e.Path(AdminTokenFile),
		"--signing-key-file", e.Path(KeyFile), "--hmac-secret-file", e.Path(HMACFile), "--log-level", "warn"}
	if e.hasUsers {
		args = append(args, "--users-file", e.Path(UsersFile))
	}
	cmd := exec.Command(bin, append(args, extra...)...) // #nosec G204 -- a binary this command built
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// The memory limit the server finds in a pod with the default resources, from
	// which it also sets GOGC (tuneGC), so that make bench-tokenserver measures what a
	// cluster runs.
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMEMLIMIT=%d", resources.ServerResources.Limits.Memory().Value()*9/10))
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	e.procs = append(e.procs, cmd)
	admin := &adminapi.HTTPClient{BaseURL: "http://" + adminListen, Token: e.AdminToken}
	return cmd, admin, WaitHealthy(ctx, admin)
}

// Stop kills the token servers Serve started, stops PostgreSQL and removes the
// database and the secrets directory.
func (e *Env) Stop() error {
	for _, cmd := range e.procs {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if e.Dir != "" {
		_ = os.RemoveAll(e.Dir)
	}
	if e.pg == nil {
		return nil
	}
	return e.pg.Stop()
}

// FreeAddrs returns n distinct loopback addresses whose ports nothing listens on now,
// for processes that must be told their addresses before they start.
func FreeAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		// Held open until all are taken, so that no port is handed out twice.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer func() { _ = l.Close() }()
		addrs[i] = l.Addr().String()
	}
	return addrs, nil
}

// Build builds each of cmd/<name> into dir/<name>. Run it from the repository root,
// as `go run ./hack/...` is.
func Build(dir string, names ...string) error {
	for _, name := range names {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name).CombinedOutput() // #nosec G204
		if err != nil {
			return fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// WaitHealthy waits up to ten seconds for the admin API to answer its health check:
// the server was just started and has no way to say it is listening.
func WaitHealthy(ctx context.Context, admin *adminapi.HTTPClient) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := admin.Health(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the token server never became healthy: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PeakRSS is the peak resident set size of a running process (VmHWM, as Linux's
// /proc reports it, e.g. "51732 kB"), what the benchmarks report; "unknown" when it
// cannot be read.
func PeakRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
