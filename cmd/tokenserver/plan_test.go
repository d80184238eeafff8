package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
	"github.com/kubeoauth/kubeoauth/internal/upgrade"
)

// planReport is the plan Job's report as the operator parses it. The test links the
// operator's type, which the binary cannot (it links no Kubernetes code), so that
// the two sides of the contract cannot drift apart.
type planReport = upgrade.PlanResult

// readReport parses a report strictly: any other field is a break of the contract.
func readReport(t *testing.T, where string, data []byte) planReport {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var r planReport
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s is not the plan report: %v\n%s", where, err, data)
	}
	return r
}

// `migrate plan` with a DSN reports, on stdout and in the termination message, how
// this binary takes over the database; every mode exits 0, and only a plan that could
// not be made fails, with its error as the termination message.
func TestMigratePlanAgainstADatabase(t *testing.T) {
	dsn := testpg.New(t)
	latest := int64(len(postgres.Migrations()))
	termLog := terminationFile(t)
	plan := func(args ...string) planReport {
		t.Helper()
		out, err := runCmd(t, append([]string{"migrate", "plan", "--termination-log", termLog}, args...)...)
		if err != nil {
			t.Fatalf("migrate plan: %v\n%s", err, out)
		}
		fromStdout := readReport(t, "stdout", []byte(out))
		msg, err := os.ReadFile(termLog) // #nosec G304 -- the test's file
		if err != nil {
			t.Fatal(err)
		}
		if fromLog := readReport(t, "the termination log", msg); fromLog != fromStdout {
			t.Errorf("termination log %+v differs from stdout %+v", fromLog, fromStdout)
		}
		return fromStdout
	}

	// An empty database: every migration is expand, so Shared, from 0.
	got := plan("--dsn", dsn)
	if got.Mode != "Shared" || got.SchemaFrom != 0 || got.SchemaTo != latest || !strings.Contains(got.Reason, "0001_init") {
		t.Errorf("plan on an empty database = %+v; want Shared from 0 to %d naming 0001_init", got, latest)
	}
	// Planning changed nothing: the database is still empty.
	if out, err := runCmd(t, "migrate", "status", "--dsn", dsn); err != nil || strings.Contains(out, "applied") {
		t.Errorf("status after planning: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "migrate", "up", "--dsn", dsn); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got = plan("--dsn-file", dsnFile)
	if got.Mode != "Shared" || got.SchemaFrom != latest || got.SchemaTo != latest || !strings.Contains(got.Reason, "no migration") {
		t.Errorf("plan on an up-to-date database = %+v; want Shared %d to %d, no migration", got, latest, latest)
	}

	// A newer binary contracted the schema: this one cannot serve on it.
	db, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(context.Background(),
		`INSERT INTO schema_migrations (version, name, kind) VALUES ($1, 'drop_old_columns', 'contract')`, latest+1); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBEOAUTH_DSN", dsn) // the environment works as well as the flags
	got = plan()
	if got.Mode != "Refused" || got.SchemaFrom != latest+1 || got.SchemaTo != latest || !strings.Contains(got.Reason, "drop_old_columns") {
		t.Errorf("plan on a contracted schema = %+v; want Refused naming drop_old_columns", got)
	}

	// The termination log's path may come from the environment, as a node may give it.
	other := terminationFile(t)
	t.Setenv("KUBEOAUTH_TERMINATION_LOG", other)
	if out, err := runCmd(t, "migrate", "plan"); err != nil {
		t.Fatalf("migrate plan: %v\n%s", err, out)
	}
	if msg, err := os.ReadFile(other); err != nil || readReport(t, other, msg).Mode != "Refused" { // #nosec G304
		t.Errorf("KUBEOAUTH_TERMINATION_LOG: %v %s", err, msg)
	}

	// No database: an error, and it is the termination message.
	out, err := runCmd(t, "migrate", "plan", "--termination-log", termLog, "--dsn", "host=/nowhere connect_timeout=2")
	if err == nil {
		t.Fatalf("plan without a reachable database succeeded:\n%s", out)
	}
	if msg, _ := os.ReadFile(termLog); !strings.HasPrefix(string(msg), "migrate plan: ") || strings.Contains(string(msg), `"mode"`) { // #nosec G304
		t.Errorf("termination message after a failed plan: %q; want the error", msg)
	}

	// A termination log that cannot be written is skipped; the report still comes.
	if out, err := runCmd(t, "migrate", "plan", "--termination-log", "/nonexistent-dir/termination-log"); err != nil ||
		readReport(t, "stdout", []byte(out)).Mode != "Refused" {
		t.Errorf("plan with an unwritable termination log: %v\n%s", err, out)
	}
	// By hand, outside a container, there is no termination log: none is created.
	absent := filepath.Join(t.TempDir(), "termination-log")
	if out, err := runCmd(t, "migrate", "plan", "--termination-log", absent); err != nil ||
		readReport(t, "stdout", []byte(out)).Mode != "Refused" {
		t.Errorf("plan without a termination log: %v\n%s", err, out)
	}
	if _, err := os.Stat(absent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("migrate plan created the termination log %s (%v); Kubernetes creates it", absent, err)
	}
}

// terminationFile creates an empty termination-message file, as Kubernetes does for
// a container.
func terminationFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersionCommand(t *testing.T) {
	if out, err := runCmd(t, "version"); err != nil || out != "dev\n" {
		t.Errorf("version = %q, %v; want dev (no -ldflags in tests)", out, err)
	}
}
