package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// tableOwner makes a role that is neither superuser nor replication, gives it the
// token server's tables and the right to create a schema in the database (what the
// token server's own database user has), and returns a DSN that logs in as it.
func tableOwner(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	role := "owner_" + hex.EncodeToString(suffix)
	password := hex.EncodeToString(suffix) + "-pw"
	admin, err := postgres.OpenDB(dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close() }()
	tables := column(t, admin, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`)
	stmts := make([]string, 0, 2+len(tables))
	stmts = append(stmts,
		fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER NOREPLICATION NOCREATEDB NOCREATEROLE PASSWORD %s`, role, pq.QuoteLiteral(password)),
		fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, pq.QuoteIdentifier(column(t, admin, `SELECT current_database()`)[0]), role))
	for _, name := range tables {
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE %s OWNER TO %s`, pq.QuoteIdentifier(name), role))
	}
	for _, s := range stmts {
		if _, err := admin.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		admin, err := postgres.OpenDB(dsn, 1)
		if err != nil {
			t.Error(err)
			return
		}
		defer func() { _ = admin.Close() }()
		for _, s := range []string{`DROP OWNED BY ` + role + ` CASCADE`, `DROP ROLE ` + role} {
			if _, err := admin.ExecContext(context.Background(), s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(role, password)
		return u.String()
	}
	// lib/pq lets a later key override an earlier one.
	return dsn + " user=" + role + " password=" + password
}

// change is a captured change as a test compares it.
type change struct {
	table string
	key   string // the key's JSON, canonical (encoding/json sorts a map's keys)
}

func keyOf(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// newChanges returns the changes recorded after seq, and the last seq.
func newChanges(t *testing.T, db *sql.DB, after int64) ([]postgres.Change, int64) {
	t.Helper()
	rows, err := db.Query(`SELECT seq, table_name, key::text, xid::text FROM kubeoauth_capture.changes WHERE seq > $1 ORDER BY seq`, after)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []postgres.Change
	for rows.Next() {
		var (
			c        postgres.Change
			key, xid string
		)
		if err := rows.Scan(&c.Seq, &c.Table, &key, &xid); err != nil {
			t.Fatal(err)
		}
		c.Key = json.RawMessage(key)
		if _, err := fmt.Sscan(xid, &c.XID); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
		after = c.Seq
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out, after
}

// Every write through the real store leaves a change naming the row's table and
// primary key, recorded by the transaction that wrote it; a transaction rolled back
// leaves none. Capture is installed by a role that only owns the tables (no
// superuser, no replication, wal_level untouched), and uninstalled without a trace.
func TestCaptureRecordsEveryWrite(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	ownerDSN := tableOwner(t, dsn)
	owner, err := postgres.OpenDB(ownerDSN, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = owner.Close() }()
	var super, repl bool
	var walLevel string
	if err := owner.QueryRow(`SELECT rolsuper, rolreplication, current_setting('wal_level') FROM pg_roles WHERE rolname = current_user`).
		Scan(&super, &repl, &walLevel); err != nil || super || repl {
		t.Fatalf("the installing role: superuser %v, replication %v (%v); want neither", super, repl, err)
	}
	if err := postgres.InstallCapture(ctx, owner, postgres.CaptureOptions{}); err != nil {
		t.Fatalf("InstallCapture as the tables' owner (wal_level %s): %v", walLevel, err)
	}
	// Again: it is there already, and stays.
	if err := postgres.InstallCapture(ctx, owner, postgres.CaptureOptions{}); err != nil {
		t.Fatalf("InstallCapture a second time: %v", err)
	}
	var triggers int
	if err := owner.QueryRow(`SELECT count(*) FROM pg_trigger WHERE tgname = 'kubeoauth_capture'`).Scan(&triggers); err != nil || triggers != 6 {
		t.Fatalf("%d capture triggers (%v); want one on each of the 6 token server tables", triggers, err)
	}

	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var last int64
	// expect runs a write and checks that it left changes with at least these keys,
	// all from one transaction, one not seen before.
	seen := map[uint64]bool{}
	expect := func(what string, want []change, write func() error) {
		t.Helper()
		if err := write(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var got []postgres.Change
		got, last = newChanges(t, owner, last)
		have := map[change]bool{}
		for _, c := range got {
			have[change{c.Table, keyOf(t, c.Key)}] = true
			if c.XID != got[0].XID {
				t.Errorf("%s: changes from transactions %d and %d; want one", what, got[0].XID, c.XID)
			}
		}
		for _, w := range want {
			if !have[w] {
				t.Errorf("%s: no change of %s %s among %v", what, w.table, w.key, have)
			}
		}
		if len(got) > 0 {
			if seen[got[0].XID] {
				t.Errorf("%s: transaction %d already seen", what, got[0].XID)
			}
			seen[got[0].XID] = true
		}
	}
	key := func(table string, kv ...string) change {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		b, _ := json.Marshal(m)
		return change{table, string(b)}
	}
	now := time.Now()
	expect("put client", []change{key("clients", "id", "grafana")}, func() error {
		_, err := s.PutClient(ctx, client("secret"))
		return err
	})
	var xid uint64
	expect("issue an access and a refresh token", []change{
		key("tokens", "kind", postgres.TokenKindAccess, "signature", "at-1"),
		key("tokens", "kind", postgres.TokenKindRefresh, "signature", "rt-1"),
	}, func() error {
		tctx, err := s.BeginTX(ctx)
		if err != nil {
			return err
		}
		req := tokenRequest(t, s, "req-1", now)
		if err := s.CreateAccessTokenSession(tctx, "at-1", req); err != nil {
			return err
		}
		if err := s.CreateRefreshTokenSession(tctx, "rt-1", "at-1", req); err != nil {
			return err
		}
		if xid, err = postgres.CurrentXID(tctx, s); err != nil {
			return err
		}
		return s.Commit(tctx)
	})
	if n := countXID(t, owner, xid); n != 2 {
		t.Errorf("%d changes recorded under the token transaction's id %d; want its 2 tokens", n, xid)
	}
	expect("revoke the refresh token", []change{key("tokens", "kind", postgres.TokenKindRefresh, "signature", "rt-1")},
		func() error { return s.RevokeRefreshToken(ctx, "req-1") })
	var grant *store.ConsentGrant
	expect("put a grant", nil, func() error {
		var err error
		grant, err = s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
			Source: store.SourceBrowser, GrantedAt: now})
		return err
	})
	if n := countKey(t, owner, "consent_grants", key("consent_grants", "id", grant.ID).key); n != 1 {
		t.Errorf("%d changes of grant %s; want 1", n, grant.ID)
	}
	expect("revoke the grant", []change{key("consent_grants", "id", grant.ID)},
		func() error { return s.RevokeGrant(ctx, "grafana", "alice") })
	expect("client assertion jti", []change{key("client_assertion_jtis", "jti", "jti-1")},
		func() error { return s.SetClientAssertionJWT(ctx, "jti-1", now.Add(time.Hour)) })
	// The client's tokens (the access token; the refresh token went with its
	// revocation) go with it (ON DELETE CASCADE), and so are captured.
	expect("delete the client", []change{key("clients", "id", "grafana"),
		key("tokens", "kind", postgres.TokenKindAccess, "signature", "at-1")},
		func() error { return s.DeleteClient(ctx, "grafana", "observability") })

	// A transaction rolled back leaves nothing.
	if _, err := s.PutClient(ctx, client("secret")); err != nil {
		t.Fatal(err)
	}
	_, last = newChanges(t, owner, last)
	tctx, err := s.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(tctx, "at-rolled-back", tokenRequest(t, s, "req-2", now)); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback(tctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := newChanges(t, owner, last); len(got) != 0 {
		t.Errorf("a rolled back transaction left changes: %+v", got)
	}

	if err := postgres.UninstallCapture(ctx, owner, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	var schema sql.NullString
	if err := owner.QueryRow(`SELECT to_regnamespace('kubeoauth_capture')::text`).Scan(&schema); err != nil || schema.Valid {
		t.Errorf("schema after UninstallCapture: %v (%v); want none", schema, err)
	}
	if err := owner.QueryRow(`SELECT count(*) FROM pg_trigger WHERE tgname = 'kubeoauth_capture'`).Scan(&triggers); err != nil || triggers != 0 {
		t.Errorf("%d capture triggers after UninstallCapture (%v)", triggers, err)
	}
	if err := s.CreateAccessTokenSession(ctx, "at-after", tokenRequest(t, s, "req-3", now)); err != nil {
		t.Errorf("a token write after UninstallCapture: %v", err)
	}
}

func countXID(t *testing.T, db *sql.DB, xid uint64) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM kubeoauth_capture.changes WHERE xid = $1::text::xid8`, fmt.Sprint(xid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func countKey(t *testing.T, db *sql.DB, table, key string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM kubeoauth_capture.changes WHERE table_name = $1 AND key = $2::jsonb`, table, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The replay's contract: a copy made in one REPEATABLE READ transaction, with the
// snapshot it records, sees some transactions; ChangesBetween that snapshot and a
// later one selects exactly the changes of the others that had ended by the later
// one: those committed after the copy's snapshot and those in progress when it was
// taken, never those the copy saw nor those rolled back; a transaction still in
// progress at the later snapshot falls in the next window, even though its changes'
// seq is lower than some already replayed. The copy's rows and the windows together
// cover every write once.
func TestCaptureChangesBetweenSnapshots(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewMigratedDatabase(t)
	db, err := postgres.OpenDB(dsn, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if err := postgres.InstallCapture(ctx, db, postgres.CaptureOptions{}); err != nil {
		t.Fatal(err)
	}
	write := func(q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	}, jti string) {
		t.Helper()
		if _, err := q.ExecContext(ctx, `INSERT INTO client_assertion_jtis (jti, expires_at) VALUES ($1, now() + interval '1 hour')`, jti); err != nil {
			t.Fatal(err)
		}
	}
	begin := func(opts *sql.TxOptions) *sql.Tx {
		t.Helper()
		tx, err := db.BeginTx(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })
		return tx
	}
	write(db, "committed-before")
	inFlight := begin(nil)
	write(inFlight, "in-flight-at-snapshot")
	// A transaction that began before the snapshot but writes only after it.
	lateWriter := begin(nil)
	if _, err := lateWriter.ExecContext(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}

	copyTx := begin(&sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	snapshot, err := postgres.Snapshot(ctx, copyTx)
	if err != nil {
		t.Fatal(err)
	}
	copied := column(t, copyTx, `SELECT jti FROM client_assertion_jtis ORDER BY jti`)

	// Open across the replay's first window, with a lower seq than what follows.
	open := begin(nil)
	write(open, "open-across-window")
	write(db, "committed-after")
	write(inFlight, "in-flight-at-snapshot-2")
	if err := inFlight.Commit(); err != nil {
		t.Fatal(err)
	}
	write(lateWriter, "began-before-wrote-after")
	if err := lateWriter.Commit(); err != nil {
		t.Fatal(err)
	}
	rolledBack := begin(nil)
	write(rolledBack, "rolled-back")
	if err := rolledBack.Rollback(); err != nil {
		t.Fatal(err)
	}
	// The copy still sees what it saw.
	if got := column(t, copyTx, `SELECT jti FROM client_assertion_jtis ORDER BY jti`); !reflect.DeepEqual(got, copied) {
		t.Fatalf("the copy's transaction saw %v, then %v", copied, got)
	}

	between := func(since, until string, after int64, limit int) ([]string, []postgres.Change) {
		t.Helper()
		changes, err := postgres.ChangesBetween(ctx, db, since, until, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, 0, len(changes))
		for _, c := range changes {
			var k struct{ JTI string }
			if err := json.Unmarshal(c.Key, &k); err != nil || c.Table != "client_assertion_jtis" {
				t.Fatalf("change %+v (%v)", c, err)
			}
			out = append(out, k.JTI)
		}
		sort.Strings(out)
		return out, changes
	}
	snap := func() string {
		t.Helper()
		s, err := postgres.Snapshot(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if want := []string{"committed-before"}; !reflect.DeepEqual(copied, want) {
		t.Errorf("the copy saw %v; want %v", copied, want)
	}
	until1 := snap()
	want1 := []string{"began-before-wrote-after", "committed-after", "in-flight-at-snapshot", "in-flight-at-snapshot-2"}
	got1, changes1 := between(snapshot, until1, 0, 100)
	if !reflect.DeepEqual(got1, want1) {
		t.Errorf("ChangesBetween(copy, first pass) = %v; want %v", got1, want1)
	}
	// The bounds on xid only narrow the scan: without them the same changes qualify.
	var unbounded int
	if err := db.QueryRow(`SELECT count(*) FROM kubeoauth_capture.changes
WHERE NOT pg_visible_in_snapshot(xid, $1::pg_snapshot) AND pg_visible_in_snapshot(xid, $2::pg_snapshot)`,
		snapshot, until1).Scan(&unbounded); err != nil || unbounded != len(want1) {
		t.Errorf("the visibility tests alone select %d changes (%v); want %d", unbounded, err, len(want1))
	}
	// Paging by seq within a window gives the same changes.
	first, firstChanges := between(snapshot, until1, 0, 2)
	rest, _ := between(snapshot, until1, firstChanges[1].Seq, 100)
	if len(first)+len(rest) != len(want1) {
		t.Errorf("pages of %d and %d changes; want %d in all", len(first), len(rest), len(want1))
	}

	if err := open.Commit(); err != nil {
		t.Fatal(err)
	}
	until2 := snap()
	got2, changes2 := between(until1, until2, 0, 100)
	if want2 := []string{"open-across-window"}; !reflect.DeepEqual(got2, want2) {
		t.Errorf("ChangesBetween(first pass, second pass) = %v; want %v", got2, want2)
	}
	// A cursor on seq alone would have skipped it.
	if len(changes2) == 1 && changes2[0].Seq > changes1[len(changes1)-1].Seq {
		t.Errorf("the change of the transaction open across the window has seq %d, after the first window's last %d: "+
			"the test no longer shows why windows are by snapshot", changes2[0].Seq, changes1[len(changes1)-1].Seq)
	}
	if got, _ := between(until2, snap(), 0, 100); len(got) != 0 {
		t.Errorf("a window with no writes has changes %v", got)
	}
}

// column is the first column of a query's rows.
func column(t *testing.T, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, query string) []string {
	t.Helper()
	rows, err := q.QueryContext(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var j string
		if err := rows.Scan(&j); err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Installing capture behind a long transaction that wrote tokens (its lock conflicts
// with CREATE TRIGGER's) times out on the lock and retries instead of waiting, so
// token writes, which would queue behind the waiting CREATE TRIGGER, go on; once the
// transaction ends capture is installed. If it never ends, installing gives up.
func TestInstallCaptureNeverStallsTokenWrites(t *testing.T) {
	ctx := context.Background()
	// The long transaction wrote a token: it holds ROW EXCLUSIVE on tokens.
	l := lockTokens(t, `UPDATE tokens SET active = active WHERE false`)
	// The bounds only keep a failing test from hanging.
	bounded, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t.Run("gives up", func(t *testing.T) {
		err := postgres.InstallCapture(bounded, l.db, postgres.CaptureOptions{LockTimeout: 100 * time.Millisecond,
			LockRetries: 1, LockRetryWait: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "tokens") || !strings.Contains(err.Error(), "lock") {
			t.Fatalf("InstallCapture behind a transaction that never ends: %v; want an error about the lock on tokens", err)
		}
	})
	done := l.retrying(t, bounded, "InstallCapture", func(log func(string, ...any)) error {
		return postgres.InstallCapture(bounded, l.db, postgres.CaptureOptions{LockTimeout: 100 * time.Millisecond,
			LockRetries: 1000, LockRetryWait: 10 * time.Millisecond, Log: log})
	}, func(line string) (bool, error) {
		if !strings.Contains(line, "retrying") {
			return false, nil
		}
		if !strings.Contains(line, "tokens") {
			return false, fmt.Errorf("retry of capture on another table than tokens: %q", line)
		}
		return true, nil
	})
	l.writesGoOn(t, done, "InstallCapture")
	if err := l.store.CreateAccessTokenSession(ctx, "at-captured", tokenRequest(t, l.store, "req-c", time.Now())); err != nil {
		t.Fatal(err)
	}
	if n := countKey(t, l.db, "tokens", fmt.Sprintf(`{"kind": %q, "signature": "at-captured"}`, postgres.TokenKindAccess)); n != 1 {
		t.Errorf("%d changes of a token written after InstallCapture; want 1", n)
	}
}
