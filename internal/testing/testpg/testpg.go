// Package testpg gives tests a real, throwaway PostgreSQL: a cluster made with initdb in
// a temp dir, listening on a Unix socket in that dir only (no port to collide on), and
// removed at the end. When KUBEOAUTH_TEST_DSN is set, it uses that server instead.
//
// Each test gets a database of its own (NewDatabase), so tests sharing one server never
// see each other's rows.
package testpg

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/testing/reaper"
)

// EnvDSN names the variable holding the DSN of a PostgreSQL to use instead of starting
// one. Its user must be allowed to create databases.
const EnvDSN = "KUBEOAUTH_TEST_DSN"

// Server is a PostgreSQL server for tests.
type Server struct {
	// DSN of the server's maintenance database (postgres).
	DSN string

	dir    string
	bin    string
	cred   *syscall.Credential
	args   []string // of postgres
	cmd    *exec.Cmd
	exited chan struct{} // closed when postgres has exited
	reaper *reaper.Reaper
}

// Options say how StartWith runs the server.
type Options struct {
	// Durable keeps PostgreSQL's default durability (fsync, synchronous_commit,
	// full_page_writes on), so that a committed row survives a crash and a write costs
	// what it costs in production: for benchmarks and crash tests. Otherwise they are
	// off, as a throwaway test database can afford.
	Durable bool
	// Settings are more server settings, "name=value" each (postgres -c).
	Settings []string
}

// Start starts a throwaway server, or connects to KUBEOAUTH_TEST_DSN when set. Call
// Stop when done.
func Start() (*Server, error) { return StartWith(Options{}) }

// StartWith is Start with options. With KUBEOAUTH_TEST_DSN set the options are
// ignored: that server's settings are its own.
func StartWith(o Options) (*Server, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		s := &Server{DSN: dsn}
		if err := s.ping(10 * time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvDSN, err)
		}
		return s, nil
	}
	return startLocal(o)
}

// New starts a server for one test and returns the DSN of a fresh database on it. The
// server is stopped when the test ends. Packages with many tests should Start one
// server in TestMain and call NewDatabase instead.
func New(t testing.TB) string {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s.NewDatabase(t)
}

// NewDatabase creates an empty database for the test, dropped when the test ends, and
// returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := "test_" + hex.EncodeToString(suffix)
	db, err := sql.Open("postgres", s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("postgres", s.DSN)
		if err != nil {
			t.Error(err)
			return
		}
		defer func() { _ = db.Close() }()
		// WITH (FORCE) ends connections a test left open.
		if _, err := db.Exec("DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database: %v", err)
		}
	})
	dsn, err := withDatabase(s.DSN, name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Stop stops a server Start started, and removes its files. For KUBEOAUTH_TEST_DSN it
// does nothing.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	defer s.reaper.Stop()
	defer func() { _ = os.RemoveAll(s.dir) }()
	// SIGINT is PostgreSQL's fast shutdown: it ends sessions and exits at once.
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("postgres did not stop within 15s of SIGINT; killed it")
	}
}

func startLocal(o Options) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubeoauth-pg-")
	if err != nil {
		return nil, err
	}
	cred, err := credential(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", // #nosec G204 -- system binary
		"--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	s := &Server{
		DSN:  fmt.Sprintf("host=%s user=postgres dbname=postgres sslmode=disable", dir),
		dir:  dir,
		bin:  bin,
		cred: cred,
		args: []string{"-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "max_connections=200"},
	}
	if !o.Durable {
		// A test database is thrown away, and fsync is most of the cost of a write.
		s.args = append(s.args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, setting := range o.Settings {
		s.args = append(s.args, "-c", setting)
	}
	if err := s.launch(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// launch starts postgres on s's data directory and waits until it answers.
func (s *Server) launch() error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // #nosec G304 -- our temp dir
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	if s.cred != nil {
		_ = logFile.Chown(int(s.cred.Uid), int(s.cred.Gid))
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), s.args...) // #nosec G204 -- system binary
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	exited := s.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	// SIGQUIT is PostgreSQL's immediate shutdown, the right one when the test is gone.
	s.reaper, err = reaper.Watch([]reaper.Target{{PID: cmd.Process.Pid, Signal: "QUIT"}}, []string{s.dir})
	if err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-exited
		return err
	}
	if err := s.ping(30 * time.Second); err != nil {
		logText, _ := os.ReadFile(logPath) // #nosec G304 -- our temp dir
		s.reaper.Stop()
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-exited
		return fmt.Errorf("postgres did not come up: %w\n%s", err, logText)
	}
	return nil
}

// Crash stops the server as a crash would: PostgreSQL's immediate shutdown (SIGQUIT)
// ends every process at once, without a checkpoint, so what it held in memory only is
// lost and what it committed comes back from the WAL on Restart. A test of durability
// calls Crash, then Restart. Not for KUBEOAUTH_TEST_DSN.
func (s *Server) Crash() error {
	if s.cmd == nil {
		return errors.New("testpg: Crash needs a server Start started, not " + EnvDSN)
	}
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	<-s.exited
	s.reaper.Stop()
	return nil
}

// Restart starts the server again on its data after Crash, with the same settings,
// and waits until it has recovered and answers.
func (s *Server) Restart() error {
	if s.cmd == nil {
		return errors.New("testpg: Restart needs a server Start started, not " + EnvDSN)
	}
	return s.launch()
}

func (s *Server) ping(timeout time.Duration) error {
	db, err := sql.Open("postgres", s.DSN)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err = db.PingContext(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-s.exitedOrNil():
			return errors.New("postgres exited")
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) exitedOrNil() <-chan struct{} {
	if s.exited == nil {
		return nil
	}
	return s.exited
}

// BinDir is the directory of the PostgreSQL binaries Start runs (initdb, postgres,
// and the client tools that come with them, such as pgbench).
func BinDir() (string, error) { return binDir() }

// SocketDir is the directory of the server's Unix socket, the host for a client tool
// (psql -h, pgbench -h); empty for KUBEOAUTH_TEST_DSN.
func (s *Server) SocketDir() string { return s.dir }

// PID is the postmaster's process ID, 0 for KUBEOAUTH_TEST_DSN. Its backends are in
// its process group.
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// binDir finds the PostgreSQL server binaries: KUBEOAUTH_PG_BIN, else the newest
// Debian-installed version.
func binDir() (string, error) {
	if dir := os.Getenv("KUBEOAUTH_PG_BIN"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", errors.New("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: " +
			"install them (apt-get install postgresql), set KUBEOAUTH_PG_BIN, or set " + EnvDSN)
	}
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	return filepath.Dir(matches[0]), nil
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// credential returns the user to run initdb and postgres as. They refuse to run as
// root, so as root (CI) they run as the postgres user, which then owns dir.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to: need the postgres user to run it as: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// withDatabase returns dsn with its database name replaced.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// lib/pq lets a later key override an earlier one.
	return dsn + " dbname=" + name, nil
}

// StalledStandby starts, for one test, a durable server whose synchronous standby
// never connects (synchronous_standby_names names one that does not exist): a session
// with synchronous_commit=on waits at each COMMIT until the wait is cancelled, and
// PostgreSQL then reports the transaction committed, on the primary only. Every other
// session commits locally (synchronous_commit=local is the server's default), so that
// setting up a database waits for nothing. The server is stopped when the test ends.
func StalledStandby(t testing.TB) *Server {
	t.Helper()
	s, err := StartWith(Options{Durable: true, Settings: []string{"synchronous_standby_names=nobody", "synchronous_commit=local"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}
