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
	cmd    *exec.Cmd
	exited chan struct{} // closed when postgres has exited
	reaper *reaper.Reaper
}

// Start starts a throwaway server, or connects to KUBEOAUTH_TEST_DSN when set. Call
// Stop when done.
func Start() (*Server, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		s := &Server{DSN: dsn}
		if err := s.ping(10 * time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvDSN, err)
		}
		return s, nil
	}
	return startLocal()
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

func startLocal() (*Server, error) {
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

	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath) // #nosec G304 -- our temp dir
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer func() { _ = logFile.Close() }()
	if cred != nil {
		_ = logFile.Chown(int(cred.Uid), int(cred.Gid))
	}
	// Durability settings are off: a test database is thrown away, and fsync is most of
	// the cost of a write.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, // #nosec G204 -- system binary
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	s := &Server{
		DSN:    fmt.Sprintf("host=%s user=postgres dbname=postgres sslmode=disable", dir),
		dir:    dir,
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	// SIGQUIT is PostgreSQL's immediate shutdown, the right one when the test is gone.
	s.reaper, err = reaper.Watch([]reaper.Target{{PID: cmd.Process.Pid, Signal: "QUIT"}}, []string{dir})
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	if err := s.ping(30 * time.Second); err != nil {
		logText, _ := os.ReadFile(logPath) // #nosec G304 -- our temp dir
		_ = s.Stop()
		return nil, fmt.Errorf("postgres did not come up: %w\n%s", err, logText)
	}
	return s, nil
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
