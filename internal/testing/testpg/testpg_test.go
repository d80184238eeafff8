package testpg

import (
	"database/sql"
	"os"
	"syscall"
	"testing"

	_ "github.com/lib/pq"
)

func TestServerLifecycle(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	local := s.cmd != nil

	// The databases are dropped when the subtest ends, before the server stops.
	t.Run("databases", func(t *testing.T) {
		a, b := s.NewDatabase(t), s.NewDatabase(t)
		if a == b {
			t.Fatalf("two tests got the same database: %s", a)
		}
		dbA := open(t, a)
		if _, err := dbA.Exec(`CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t (id) VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := dbA.QueryRow(`SELECT count(id) FROM t`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("count = %d, %v; want 1 row", n, err)
		}
		// The other database is empty: tests do not see each other's rows.
		if _, err := open(t, b).Exec(`SELECT id FROM t`); err == nil {
			t.Fatal("table t is visible from the other test database")
		}
	})
	if !local {
		return
	}
	pid, dir := s.cmd.Process.Pid, s.dir
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("postgres (pid %d) still runs after Stop", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still exists after Stop (stat: %v)", dir, err)
	}
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestWithDatabase(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"key/value": {"host=/tmp/x user=postgres dbname=postgres", "host=/tmp/x user=postgres dbname=postgres dbname=other"},
		"url":       {"postgres://u:p@localhost:5432/postgres?sslmode=disable", "postgres://u:p@localhost:5432/other?sslmode=disable"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := withDatabase(tc.in, "other")
			if err != nil || got != tc.want {
				t.Fatalf("withDatabase(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
