package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

// copyReport is db copy's JSON, field for field: any other field breaks the contract.
type copyReport struct {
	RowsCopied int64   `json:"rowsCopied"`
	SchemaFrom int     `json:"schemaFrom"`
	SchemaTo   int     `json:"schemaTo"`
	Snapshot   string  `json:"snapshot"`
	Seconds    float64 `json:"seconds"`
}

func readCopyReport(t *testing.T, where string, data []byte) copyReport {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r copyReport
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s is not the copy report: %v\n%s", where, err, data)
	}
	return r
}

// withDatabase is dsn with another database name.
func withDatabase(t *testing.T, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// `db copy` creates the target database on the source's server, copies, migrates
// and reports one JSON line on stdout and in the termination message; a rerun
// reports the same; a foreign target exits 3 naming its table. `db replay` then
// carries a client written on the source to the copy, says so on /metrics and is
// ready; SIGTERM ends it cleanly. `db cleanup` removes what the upgrade added.
func TestDBCopyAndReplayCommands(t *testing.T) {
	ctx := context.Background()
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	srcDSN := srv.NewMigratedDatabase(t)
	s, err := postgres.Open(ctx, srcDSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	put := func(id string) {
		t.Helper()
		if _, err := s.PutClient(ctx, &store.Client{ID: id, OwnerNamespace: "ns", ClientSpec: store.ClientSpec{Name: id,
			GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
			t.Fatal(err)
		}
	}
	put("before-copy")

	copyName := fmt.Sprintf("kubeoauth_copytest_%d", time.Now().UnixNano())
	dstDSN := withDatabase(t, srv.DSN, copyName)
	t.Cleanup(func() {
		db, err := sql.Open("postgres", srv.DSN)
		if err == nil {
			_, _ = db.Exec(`DROP DATABASE IF EXISTS ` + pq.QuoteIdentifier(copyName) + ` WITH (FORCE)`)
			_ = db.Close()
		}
	})
	srcFile, dstFile := secretFile(t, srcDSN), secretFile(t, dstDSN)
	termLog := terminationFile(t)
	copyCmd := func(args ...string) (copyReport, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"db", "copy", "--source-dsn-file", srcFile, "--termination-log", termLog}, args...), &out, &errOut)
		if err != nil {
			return copyReport{}, errOut.String(), err
		}
		got := readCopyReport(t, "stdout", out.Bytes())
		msg, _ := os.ReadFile(termLog) // #nosec G304 -- the test's file
		if fromLog := readCopyReport(t, "the termination log", msg); fromLog != got {
			t.Errorf("termination log %+v differs from stdout %+v", fromLog, got)
		}
		return got, errOut.String(), nil
	}
	latest := len(postgres.Migrations())
	first, log, err := copyCmd("--target-dsn-file", dstFile, "--upgrade-id", "cmd1", "--create-database")
	if err != nil {
		t.Fatalf("db copy: %v\n%s", err, log)
	}
	if first.RowsCopied < 1 || first.SchemaFrom != latest || first.SchemaTo != latest || first.Snapshot == "" || first.Seconds <= 0 {
		t.Errorf("db copy = %+v; want rows, schema %d → %d, a snapshot and the time", first, latest, latest)
	}
	if !strings.Contains(log, "created database "+copyName) {
		t.Errorf("db copy's log does not say it created %s:\n%s", copyName, log)
	}
	if again, log, err := copyCmd("--target-dsn-file", dstFile, "--upgrade-id", "cmd1", "--create-database"); err != nil || again != first {
		t.Errorf("db copy again = %+v, %v; want %+v\n%s", again, err, first, log)
	}
	// A target that holds something else: exit 3, naming the table, in the termination message too.
	foreign := srv.NewDatabase(t)
	fdb, err := postgres.OpenDB(foreign, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fdb.Close() }()
	if _, err := fdb.Exec(`CREATE TABLE invoices (id int)`); err != nil {
		t.Fatal(err)
	}
	_, _, err = copyCmd("--target-dsn-file", secretFile(t, foreign), "--upgrade-id", "cmd1")
	if err == nil || exitCode(err) != 3 || !strings.Contains(err.Error(), "table invoices") {
		t.Errorf("db copy onto a foreign database: %v (exit %d); want exit 3 naming invoices", err, exitCode(err))
	}
	if msg, _ := os.ReadFile(termLog); !strings.HasPrefix(string(msg), "db copy: ") || !strings.Contains(string(msg), "invoices") { // #nosec G304
		t.Errorf("termination message after a refused copy: %q", msg)
	}
	if _, _, err := copyCmd("--target-dsn-file", dstFile); err == nil || exitCode(err) != 1 {
		t.Errorf("db copy without --upgrade-id: %v (exit %d); want exit 1", err, exitCode(err))
	}

	// The replay, until SIGTERM.
	put("after-copy")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rctx, stop := context.WithCancel(ctx)
	var (
		wg        sync.WaitGroup
		replayErr error
		replayLog bytes.Buffer
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		replayErr = run(rctx, []string{"db", "replay", "--source-dsn-file", srcFile, "--target-dsn-file", dstFile,
			"--upgrade-id", "cmd1", "--direction", "forward", "--interval", "50ms", "--metrics-address", addr}, io.Discard, &replayLog)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path) // #nosec G107 -- the test's own address
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/metrics")
		if code == http.StatusOK && metricAtLeast(body, "kubeoauth_replay_changes_total", 1) {
			for _, name := range []string{"kubeoauth_replay_pending_changes 0", "kubeoauth_replay_lag_seconds",
				"kubeoauth_replay_passes_total", "kubeoauth_replay_errors_total 0"} {
				if !strings.Contains(body, name) {
					t.Errorf("/metrics has no %s:\n%s", name, body)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no change replayed in 20s; /metrics: %d %s", code, body)
		}
		<-time.After(50 * time.Millisecond) // polling the endpoint
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	dst, err := postgres.OpenDB(dstDSN, 1)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := dst.QueryRow(`SELECT count(*) FROM clients WHERE id = 'after-copy'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the client written after the copy is not on the copy: %d (%v)", n, err)
	}
	_ = dst.Close()
	stop()
	wg.Wait()
	if replayErr != nil {
		t.Errorf("db replay after SIGTERM: %v\n%s", replayErr, replayLog.String())
	}

	// The cutover: what the source took since the replay stopped is on the copy, the
	// source refuses writes and its fence forwards to the new side.
	put("before-cutover")
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"db", "cutover", "--from-dsn-file", srcFile, "--to-dsn-file", dstFile, "--upgrade-id", "cmd1",
		"--direction", "forward", "--forward-to", "http://green.example:4444", "--lease", "3s", "--termination-log", termLog},
		&out, &errOut); err != nil {
		t.Fatalf("db cutover: %v\n%s", err, errOut.String())
	}
	var rep cutoverReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.FenceHoldSeconds <= 0 || rep.Replayed < 1 || rep.Resumed {
		t.Errorf("db cutover printed %q (%v); want the fence hold and the client replayed, not resumed", out.String(), err)
	}
	if msg, _ := os.ReadFile(termLog); strings.TrimSpace(string(msg)) != strings.TrimSpace(out.String()) { // #nosec G304
		t.Errorf("termination message %q; want the report %q", msg, out.String())
	}
	t.Logf("db cutover: %s", strings.TrimSpace(out.String()))
	fence, ok, err := s.ReadFence(ctx)
	if err != nil || !ok || fence.State != postgres.FenceForwarding || fence.ForwardTo != "http://green.example:4444" {
		t.Errorf("the source's fence after the cutover: %+v %v %v; want forwarding to the --forward-to URL", fence, ok, err)
	}
	if dst, err := postgres.OpenDB(dstDSN, 1); err == nil {
		if err := dst.QueryRow(`SELECT count(*) FROM clients WHERE id = 'before-cutover'`).Scan(&n); err != nil || n != 1 {
			t.Errorf("the client written before the cutover is not on the copy: %d (%v)", n, err)
		}
		_ = dst.Close()
	}
	if _, err := s.PutClient(ctx, &store.Client{ID: "after-cutover", OwnerNamespace: "ns", ClientSpec: store.ClientSpec{
		Name: "x", GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic"}}); err == nil {
		t.Error("a write on the source after the cutover was accepted")
	}

	// Cleanup: capture and the upgrade's schema go from the source, the copy with --drop-database.
	if out, err := runCmd(t, "db", "cleanup", "--dsn-file", srcFile, "--drop-database", copyName); err != nil {
		t.Fatalf("db cleanup: %v\n%s", err, out)
	}
	src, err := postgres.OpenDB(srcDSN, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	var left string
	if err := src.QueryRow(`SELECT concat_ws(',', to_regnamespace('kubeoauth_capture')::text, to_regnamespace('kubeoauth_upgrade')::text,
    (SELECT string_agg(datname, ',') FROM pg_database WHERE datname = $1),
    (SELECT string_agg(tgname, ',') FROM pg_trigger WHERE tgname LIKE 'kubeoauth%'))`, copyName).Scan(&left); err != nil || left != "" {
		t.Errorf("after db cleanup: %q left (%v)", left, err)
	}
}

// metricAtLeast reports whether the exposition has metric name at v or more.
func metricAtLeast(body, name string, v float64) bool {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var got float64
			if _, err := fmt.Sscan(rest, &got); err == nil && got >= v {
				return true
			}
		}
	}
	return false
}

// A failure another run would meet again exits 3, so the Job fails at once: a
// migration PostgreSQL refused, a copy refused; anything else 1, retried.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("copy: %w", &postgres.MigrationError{Version: 6, Name: "split", Err: &pq.Error{Code: "42601"}}), 3},
		{&postgres.MigrationError{Version: 6, Name: "split", Err: &pq.Error{Code: "08006"}}, 1},
		{fmt.Errorf("copy: %w", &postgres.RefusedError{Reason: "not empty"}), 3},
		{fmt.Errorf("cutover: %w", postgres.ErrLeaseExpired), 4},
		{io.ErrUnexpectedEOF, 1},
	} {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d; want %d", tt.err, got, tt.want)
		}
	}
}

// A copy whose target refuses connections fails with exit code 1 (retried; the
// operator rolls the upgrade back when its retries are spent), saying so in the
// termination message, and the source goes on taking writes.
func TestDBCopyToARefusedTarget(t *testing.T) {
	ctx := context.Background()
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	srcDSN := srv.NewMigratedDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	termLog := terminationFile(t)
	var out, errOut bytes.Buffer
	err = run(ctx, []string{"db", "copy", "--source-dsn-file", secretFile(t, srcDSN), "--target-dsn-file",
		secretFile(t, "postgres://kubeoauth@"+closed+"/copy?sslmode=disable&connect_timeout=2"), "--upgrade-id", "refused",
		"--termination-log", termLog}, &out, &errOut)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("db copy to a target that refuses connections: %v (exit %d); want exit 1 saying it cannot connect", err, exitCode(err))
	}
	if msg, _ := os.ReadFile(termLog); !strings.HasPrefix(string(msg), "db copy: ") { // #nosec G304 -- the test's file
		t.Errorf("termination message %q", msg)
	}
	s, err := postgres.Open(ctx, srcDSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if _, err := s.PutClient(ctx, &store.Client{ID: "still-writable", OwnerNamespace: "ns", ClientSpec: store.ClientSpec{Name: "x",
		GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
		t.Errorf("a write on the source after the failed copy: %v", err)
	}
}

// A copy whose target runs out of disk fails (exit 1: PostgreSQL's disk_full is a
// resource error, retried; the operator rolls the upgrade back when the retries
// are spent), saying so in the termination message, and the source goes on taking
// writes. The target's tables live in a tablespace on a 1 MiB tmpfs, so this
// needs root, as make test does (README).
func TestDBCopyToAFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs for the target's tablespace: run it as root, as make test is")
	}
	ctx := context.Background()
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	if err := os.Chown(small, uid, gid); err != nil {
		t.Fatal(err)
	}
	// The server (the postgres user) must reach it through the test's temp dir.
	if err := os.Chmod(filepath.Dir(small), 0o755); err != nil { // #nosec G302 -- a directory others must traverse
		t.Fatal(err)
	}
	srcDSN := srv.NewMigratedDatabase(t)
	src, err := postgres.OpenDB(srcDSN, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	if _, err := src.Exec(`INSERT INTO clients (id, spec) VALUES ('c', '{}');
INSERT INTO tokens (kind, signature, request_id, client_id, requested_at, expires_at, session)
SELECT 'access_token', 'seed-' || i, 'req-' || i, 'c', now(), now() + interval '1 day', '{}'::jsonb
FROM generate_series(1, 20000) AS i`); err != nil {
		t.Fatal(err)
	}
	dstDSN := srv.NewDatabase(t)
	name, err := postgres.DatabaseName(dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := postgres.OpenDB(srv.DSN, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close() }()
	tablespace := fmt.Sprintf("small_%d", time.Now().UnixNano())
	for _, stmt := range []string{
		`CREATE TABLESPACE ` + tablespace + ` LOCATION '` + small + `'`,
		`ALTER DATABASE ` + pq.QuoteIdentifier(name) + ` SET default_tablespace = ` + tablespace,
	} {
		if _, err := admin.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(`DROP DATABASE IF EXISTS ` + pq.QuoteIdentifier(name) + ` WITH (FORCE)`)
		_, _ = admin.Exec(`DROP TABLESPACE IF EXISTS ` + tablespace)
	})
	termLog := terminationFile(t)
	var out, errOut bytes.Buffer
	err = run(ctx, []string{"db", "copy", "--source-dsn-file", secretFile(t, srcDSN), "--target-dsn-file", secretFile(t, dstDSN),
		"--upgrade-id", "full", "--termination-log", termLog}, &out, &errOut)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "No space left on device") {
		t.Fatalf("db copy onto a full disk: %v (exit %d); want exit 1 saying the disk is full", err, exitCode(err))
	}
	if msg, _ := os.ReadFile(termLog); !strings.Contains(string(msg), "No space left on device") { // #nosec G304 -- the test's file
		t.Errorf("termination message %q", msg)
	}
	if _, err := src.Exec(`INSERT INTO clients (id, spec) VALUES ('after', '{}')`); err != nil {
		t.Errorf("a write on the source after the failed copy: %v", err)
	}
	t.Logf("db copy onto a full disk: %v", err)
}
