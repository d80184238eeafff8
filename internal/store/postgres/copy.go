package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/lib/pq"
)

// UpgradeSchema holds a Copy upgrade's own records, in whichever database they
// concern: the copy's state in the copy, each replay direction's progress in its
// target.
const UpgradeSchema = "kubeoauth_upgrade"

// upgradeSetup makes kubeoauth_upgrade with every table a Copy upgrade keeps there:
// the copy's record, each replay direction's progress, the fence and the cutover
// markers. One definition, run by the copy and by the fence's install under one
// advisory lock, so the two never race on CREATE ... IF NOT EXISTS.
const upgradeSetup = `
CREATE SCHEMA IF NOT EXISTS kubeoauth_upgrade;
CREATE TABLE IF NOT EXISTS kubeoauth_upgrade.copy (
    upgrade_id  text PRIMARY KEY,
    state       text NOT NULL,
    snapshot    text,
    schema_from integer,
    schema_to   integer,
    rows_copied bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS kubeoauth_upgrade.replay (
    upgrade_id  text NOT NULL,
    direction   text NOT NULL,
    since       text NOT NULL,
    schema_from integer NOT NULL,
    schema_to   integer NOT NULL,
    replayed    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upgrade_id, direction)
);
CREATE TABLE IF NOT EXISTS kubeoauth_upgrade.fence (
    id          int PRIMARY KEY CHECK (id = 1),
    upgrade_id  text NOT NULL,
    state       text NOT NULL CHECK (state IN ('holding', 'cut_over', 'forwarding')),
    lease_until timestamptz NOT NULL,
    forward_to  text NOT NULL DEFAULT '',
    set_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kubeoauth_upgrade.cutover (
    upgrade_id text NOT NULL,
    direction  text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upgrade_id, direction)
)`

// States of a copy (kubeoauth_upgrade.copy.state).
const (
	CopyCopying   = "copying"
	CopyMigrating = "migrating"
	CopyDone      = "done"
)

// upgradeLockID serialises the creation of kubeoauth_upgrade, so that two never
// race on CREATE SCHEMA IF NOT EXISTS.
const upgradeLockID = 0x6b756265_75706772 // "kubeupgr"

// ensureUpgradeSchema creates kubeoauth_upgrade's copy and replay tables on q.
func ensureUpgradeSchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(upgradeLockID)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, upgradeSetup); err != nil {
		return err
	}
	return tx.Commit()
}

// replayLock is the advisory lock key of a replay direction on its target database.
// The copy holds the forward one too, so that no replay pass runs into a copy
// being made.
func replayLock(upgradeID, direction string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("kubeoauth-replay\x00" + upgradeID + "\x00" + direction))
	return int64(h.Sum64()) // #nosec G115 -- a lock key: any 64 bits do
}

// lockSession takes a session-level advisory lock on a connection of its own and
// returns it with the function that releases it. When the unlock fails (ctx ended
// mid-statement, a lost connection) the connection is thrown away, which ends the
// session and so the lock.
func lockSession(ctx context.Context, db *sql.DB, key int64) (*sql.Conn, func(), error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}, nil
}

// RefusedError is a copy refused for a reason another run would meet again (the
// target holds another database's data, the source's schema is unknown to this
// binary): the copy Job fails at once instead of retrying.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// Deterministic is always true: see ExitMigrationFailed.
func (e *RefusedError) Deterministic() bool { return true }

// CopyOptions configure CopyDatabase.
type CopyOptions struct {
	// UpgradeID names the copy; a rerun with the same one resumes it.
	UpgradeID string
	// Migrations are this binary's (Migrations()): the target is migrated with them
	// to the source's schema version before the rows are copied, and to the latest
	// after.
	Migrations []Migration
	// CreateDatabase creates TargetDatabase on the source's server when it does not
	// exist (the bundled database: the copy lives beside the original).
	CreateDatabase bool
	TargetDatabase string
	// ForwardTo is the URL of the serving version's servers. When set, the copy is
	// fenced as it is finished: the guard refuses every write but the replay's, and
	// the servers started on it forward every request to ForwardTo, until the
	// cutover takes the fence away. Before then a refresh token is live in two
	// databases, and a client that reached the new servers directly (their own
	// Service) could spend it once on each.
	ForwardTo string
	// Capture is passed to InstallCapture on the source (its lock waits) and
	// InstallFence on the target.
	Capture CaptureOptions
	Log     func(format string, args ...any)
}

// CopyResult is what `tokenserver db copy` prints.
type CopyResult struct {
	RowsCopied int64   `json:"rowsCopied"`
	SchemaFrom int     `json:"schemaFrom"`
	SchemaTo   int     `json:"schemaTo"`
	Snapshot   string  `json:"snapshot"`
	Seconds    float64 `json:"seconds"`
}

// CopyDatabase makes target a copy of source for a Copy upgrade, ready for the
// forward replay: capture on source first (every write after the copy's snapshot is
// then recorded), target migrated to source's schema version, every table's rows as
// of one snapshot of source, the sequences, the copy and forward replay records,
// then target migrated in full, breaking migrations included.
//
// A rerun with the same upgrade ID returns the finished copy's result, or starts a
// partial one over (dropping the tables it made). A target with tables that is not
// this upgrade's copy is refused (RefusedError), as is a source whose schema this
// binary does not know.
func CopyDatabase(ctx context.Context, source, target *sql.DB, o CopyOptions) (CopyResult, error) {
	start := time.Now()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			o.Log(format, args...)
		}
	}
	if o.UpgradeID == "" {
		return CopyResult{}, errors.New("copy: no upgrade ID")
	}
	if err := ValidateMigrations(o.Migrations); err != nil {
		return CopyResult{}, &RefusedError{Reason: err.Error()}
	}
	// Installing again would take a lock on the changes table that queues the
	// serving version's writes behind those in flight: only when something is missing.
	if ok, err := captureComplete(ctx, source); err != nil {
		return CopyResult{}, err
	} else if !ok {
		if err := InstallCapture(ctx, source, o.Capture); err != nil {
			return CopyResult{}, err
		}
	}
	if o.CreateDatabase {
		if err := createDatabase(ctx, source, o.TargetDatabase, logf); err != nil {
			return CopyResult{}, err
		}
	}
	conn, unlock, err := lockSession(ctx, target, replayLock(o.UpgradeID, DirectionForward))
	if err != nil {
		return CopyResult{}, fmt.Errorf("copy: locking the target: %w", err)
	}
	defer unlock()
	done, res, err := claimTarget(ctx, target, conn, o.UpgradeID, logf)
	if err != nil || done {
		return res, err
	}

	applied, err := ReadApplied(ctx, source)
	if err != nil {
		return CopyResult{}, fmt.Errorf("copy: reading the source's schema_migrations: %w", err)
	}
	for i, a := range applied {
		if a.Version != i+1 {
			return CopyResult{}, &RefusedError{Reason: fmt.Sprintf("copy: the source's schema_migrations has a gap before %04d_%s",
				a.Version, a.Name)}
		}
	}
	if err := divergence(o.Migrations, applied); err != nil {
		return CopyResult{}, &RefusedError{Reason: "copy: " + err.Error()}
	}
	res.SchemaFrom = len(applied)
	if res.SchemaFrom > len(o.Migrations) {
		a := applied[len(applied)-1]
		return CopyResult{}, &RefusedError{Reason: fmt.Sprintf("copy: the source has migration %04d_%s, which this binary "+
			"(schema %d) does not know", a.Version, a.Name, len(o.Migrations))}
	}
	res.SchemaTo = len(o.Migrations)
	if res.SchemaFrom > 0 {
		if _, err := Migrate(ctx, target, o.Migrations, MigrateOptions{To: res.SchemaFrom, Log: o.Log}); err != nil {
			return CopyResult{}, fmt.Errorf("copy: migrating the target to the source's schema %d: %w", res.SchemaFrom, err)
		}
	}

	snap, rows, err := copyRows(ctx, source, conn, o.UpgradeID, res, logf)
	if err != nil {
		return CopyResult{}, err
	}
	res.Snapshot, res.RowsCopied = snap, rows

	if _, err := Migrate(ctx, target, o.Migrations, MigrateOptions{Log: o.Log}); err != nil {
		return CopyResult{}, fmt.Errorf("copy: migrating the copy to schema %d: %w", res.SchemaTo, err)
	}
	if o.ForwardTo != "" {
		if err := InstallFence(ctx, target, o.Capture); err != nil {
			return CopyResult{}, fmt.Errorf("copy: fencing the copy: %w", err)
		}
	}
	// The fence and done in one transaction: a copy that is done is fenced. The
	// seconds from the record, so that a rerun reports the same.
	err = inConnTx(ctx, conn, func(tx *sql.Tx) error {
		if o.ForwardTo != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until, forward_to, set_at)
VALUES (1, $1, 'forwarding', now(), $2, now())
ON CONFLICT (id) DO UPDATE SET upgrade_id = EXCLUDED.upgrade_id, state = EXCLUDED.state, lease_until = EXCLUDED.lease_until,
    forward_to = EXCLUDED.forward_to, set_at = EXCLUDED.set_at`, o.UpgradeID, o.ForwardTo); err != nil {
				return err
			}
		}
		return tx.QueryRowContext(ctx, `UPDATE kubeoauth_upgrade.copy SET state = $2, schema_to = $3, finished_at = clock_timestamp()
WHERE upgrade_id = $1 RETURNING round(extract(epoch FROM finished_at - started_at), 6)::float8`, o.UpgradeID, CopyDone, res.SchemaTo).
			Scan(&res.Seconds)
	})
	if err != nil {
		return CopyResult{}, err
	}
	logf("copied %d rows at snapshot %s, schema %d → %d, in %s", res.RowsCopied, res.Snapshot, res.SchemaFrom, res.SchemaTo,
		time.Since(start).Round(time.Millisecond))
	return res, nil
}

// captureComplete reports whether capture is installed on every table of db.
func captureComplete(ctx context.Context, db *sql.DB) (bool, error) {
	var ok bool
	err := db.QueryRowContext(ctx, `SELECT to_regclass('kubeoauth_capture.changes') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
        AND c.relname <> 'schema_migrations'
        AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = $1))`, captureTrigger).Scan(&ok)
	return ok, err
}

// createDatabase creates name on db's server unless it exists.
func createDatabase(ctx context.Context, db *sql.DB, name string, logf func(string, ...any)) error {
	if name == "" {
		return errors.New("copy: no target database name to create")
	}
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err := db.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name))
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: another run got there first
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy: creating database %s: %w", name, err)
	}
	logf("created database %s", name)
	return nil
}

// claimTarget checks that target is empty or this upgrade's copy. A finished copy
// returns done and its result; a partial one has its tables dropped; either way the
// copy row then says copying.
func claimTarget(ctx context.Context, target *sql.DB, conn *sql.Conn, upgradeID string,
	logf func(string, ...any)) (bool, CopyResult, error) {
	var res CopyResult
	var hasCopy bool
	if err := conn.QueryRowContext(ctx, `SELECT to_regclass('kubeoauth_upgrade.copy') IS NOT NULL`).Scan(&hasCopy); err != nil {
		return false, res, err
	}
	var state string
	if hasCopy {
		var (
			snap          sql.NullString
			from, to      sql.NullInt64
			started, done sql.NullTime
		)
		err := conn.QueryRowContext(ctx, `SELECT state, snapshot, schema_from, schema_to, rows_copied, started_at, finished_at
FROM kubeoauth_upgrade.copy WHERE upgrade_id = $1`, upgradeID).Scan(&state, &snap, &from, &to, &res.RowsCopied, &started, &done)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			var other string
			err := conn.QueryRowContext(ctx, `SELECT upgrade_id FROM kubeoauth_upgrade.copy ORDER BY started_at LIMIT 1`).Scan(&other)
			if err == nil {
				return false, res, &RefusedError{Reason: fmt.Sprintf("copy: the target database is the copy of upgrade %s, "+
					"not of %s: give this upgrade an empty database", other, upgradeID)}
			}
		case err != nil:
			return false, res, err
		case state == CopyDone:
			res.Snapshot, res.SchemaFrom, res.SchemaTo = snap.String, int(from.Int64), int(to.Int64)
			res.Seconds = math.Round(done.Time.Sub(started.Time).Seconds()*1e6) / 1e6
			logf("the copy of upgrade %s is done already", upgradeID)
			return true, res, nil
		}
	}
	tables, err := listTables(ctx, conn, true)
	if err != nil {
		return false, res, err
	}
	if state == "" && len(tables) > 0 {
		return false, res, &RefusedError{Reason: fmt.Sprintf("copy: the target database is not empty (it has table %s) and is not "+
			"a copy of upgrade %s: give the upgrade an empty database", tables[0], upgradeID)}
	}
	if state != "" {
		logf("the copy of upgrade %s was left %s: starting over", upgradeID, state)
		for _, name := range tables {
			if _, err := conn.ExecContext(ctx, `DROP TABLE IF EXISTS `+pq.QuoteIdentifier(name)+` CASCADE`); err != nil {
				return false, res, fmt.Errorf("copy: dropping %s of the partial copy: %w", name, err)
			}
		}
	}
	if err := ensureUpgradeSchema(ctx, target); err != nil {
		return false, res, fmt.Errorf("copy: creating %s on the target: %w", UpgradeSchema, err)
	}
	// The record comes before anything else, so that a rerun knows what it made.
	if _, err := conn.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.copy (upgrade_id, state) VALUES ($1, $2)
ON CONFLICT (upgrade_id) DO UPDATE SET state = EXCLUDED.state, snapshot = NULL, schema_from = NULL, schema_to = NULL,
    rows_copied = 0, started_at = clock_timestamp(), finished_at = NULL`, upgradeID, CopyCopying); err != nil {
		return false, res, err
	}
	if _, err := conn.ExecContext(ctx, `DELETE FROM kubeoauth_upgrade.replay WHERE upgrade_id = $1 AND direction = $2`,
		upgradeID, DirectionForward); err != nil {
		return false, res, err
	}
	return false, res, nil
}

// copyRows copies every table of source, as of one snapshot, into target through
// conn in one transaction, with the sequences and the copy and replay records, and
// returns the snapshot and the number of rows.
func copyRows(ctx context.Context, source *sql.DB, conn *sql.Conn, upgradeID string, res CopyResult,
	logf func(string, ...any)) (string, int64, error) {
	src, err := source.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = src.Rollback() }()
	// The first statement fixes the transaction's snapshot: this is it.
	snap, err := Snapshot(ctx, src)
	if err != nil {
		return "", 0, fmt.Errorf("copy: taking the snapshot: %w", err)
	}
	tables, err := tableInfos(ctx, src)
	if err != nil {
		return "", 0, fmt.Errorf("copy: reading the source's tables: %w", err)
	}
	dst, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = dst.Rollback() }()
	var total int64
	for _, t := range tables {
		n, err := copyTable(ctx, src, dst, t)
		if err != nil {
			return "", 0, fmt.Errorf("copy: table %s: %w", t.name, err)
		}
		logf("copied %s: %d rows", t.name, n)
		total += n
	}
	if err := copySequences(ctx, src, dst); err != nil {
		return "", 0, fmt.Errorf("copy: sequences: %w", err)
	}
	if _, err := dst.ExecContext(ctx, `UPDATE kubeoauth_upgrade.copy SET state = $2, snapshot = $3, schema_from = $4, schema_to = $5,
    rows_copied = $6 WHERE upgrade_id = $1`, upgradeID, CopyMigrating, snap, res.SchemaFrom, res.SchemaTo, total); err != nil {
		return "", 0, err
	}
	if _, err := dst.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.replay (upgrade_id, direction, since, schema_from, schema_to)
VALUES ($1, $2, $3, $4, $5)`, upgradeID, DirectionForward, snap, res.SchemaFrom, res.SchemaTo); err != nil {
		return "", 0, err
	}
	if err := dst.Commit(); err != nil {
		return "", 0, err
	}
	return snap, total, nil
}

// copyTable streams t's rows from src into dst (COPY FROM STDIN), every value in
// its text form.
func copyTable(ctx context.Context, src *sql.Tx, dst *sql.Tx, t tableInfo) (int64, error) {
	names := t.columnNames()
	// #nosec G202 -- identifiers are quoted.
	rows, err := src.QueryContext(ctx, `SELECT `+textColumns(names)+` FROM `+pq.QuoteIdentifier(t.name))
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = pq.QuoteIdentifier(n)
	}
	stmt, err := dst.PrepareContext(ctx, `COPY `+pq.QuoteIdentifier(t.name)+` (`+strings.Join(quoted, ", ")+`) FROM STDIN`)
	if err != nil {
		return 0, err
	}
	defer func() { _ = stmt.Close() }()
	vals := make([]sql.NullString, len(names))
	ptrs := make([]any, len(names))
	args := make([]any, len(names))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, v := range vals {
			args[i] = nil
			if v.Valid {
				args[i] = v.String
			}
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return n, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return n, err
	}
	return n, nil
}

// copySequences sets each sequence of dst that src has to src's value, so that a
// bigserial (events.seq) goes on after the rows copied.
func copySequences(ctx context.Context, src, dst *sql.Tx) error {
	rows, err := src.QueryContext(ctx, `SELECT sequencename::text, last_value FROM pg_sequences
WHERE schemaname = current_schema() AND last_value IS NOT NULL`)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	type seq struct {
		name string
		last int64
	}
	var seqs []seq
	for rows.Next() {
		var s seq
		if err := rows.Scan(&s.name, &s.last); err != nil {
			return err
		}
		seqs = append(seqs, s)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, s := range seqs {
		if _, err := dst.ExecContext(ctx, `SELECT setval(to_regclass(quote_ident($1)), $2)`, s.name, s.last); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// tableInfo describes a table of the current schema.
type tableInfo struct {
	name    string
	columns []columnInfo // in attnum order, no generated columns
	key     []string
	parents []string // tables its foreign keys reference
}

type columnInfo struct {
	name, typ string
}

func (t tableInfo) columnNames() []string {
	out := make([]string, len(t.columns))
	for i, c := range t.columns {
		out[i] = c.name
	}
	return out
}

func (t tableInfo) has(column string) bool {
	for _, c := range t.columns {
		if c.name == column {
			return true
		}
	}
	return false
}

// textColumns is a select list of every column as its text form.
func textColumns(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = pq.QuoteIdentifier(n) + "::text"
	}
	return strings.Join(out, ", ")
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// listTables lists the tables of the current schema; withMigrations includes
// schema_migrations.
func listTables(ctx context.Context, q queryer, withMigrations bool) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT relname::text FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p') AND (relname <> 'schema_migrations' OR $1)
ORDER BY 1`, withMigrations)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// tableInfos describes every table of the current schema but schema_migrations, in
// foreign-key order: a table after those it references.
func tableInfos(ctx context.Context, q queryer) ([]tableInfo, error) {
	rows, err := q.QueryContext(ctx, `
SELECT c.relname::text,
    coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}'),
    coalesce((SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}'),
    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
    coalesce((SELECT array_agg(DISTINCT p.relname::text) FROM pg_constraint f JOIN pg_class p ON p.oid = f.confrelid
        WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid), '{}')
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations'
ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	byName := map[string]tableInfo{}
	var names []string
	for rows.Next() {
		var (
			t           tableInfo
			cols, types []string
		)
		if err := rows.Scan(&t.name, pq.Array(&cols), pq.Array(&types), pq.Array(&t.key), pq.Array(&t.parents)); err != nil {
			return nil, err
		}
		for i := range cols {
			t.columns = append(t.columns, columnInfo{name: cols[i], typ: types[i]})
		}
		byName[t.name] = t
		names = append(names, t.name)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Depth-first: parents first; a cycle (none in the token server's schema) is
	// broken where it is met.
	var (
		out  []tableInfo
		seen = map[string]bool{}
	)
	var visit func(string)
	visit = func(n string) {
		t, ok := byName[n]
		if !ok || seen[n] {
			return
		}
		seen[n] = true
		sort.Strings(t.parents)
		for _, p := range t.parents {
			visit(p)
		}
		out = append(out, t)
	}
	for _, n := range names {
		visit(n)
	}
	return out, nil
}

// DatabaseName is the database a DSN connects to, for --create-database.
func DatabaseName(dsn string) (string, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("database DSN: %w", err)
	}
	if cfg.Database == "" {
		return "", errors.New("the DSN names no database (dbname)")
	}
	return cfg.Database, nil
}

// CleanupUpgrade removes from db what a Copy upgrade added: capture
// (UninstallCapture), then the fence's guard triggers and the kubeoauth_upgrade
// schema (UninstallFence), each trigger with opts' bounded lock waits (dropping one
// locks its table).
func CleanupUpgrade(ctx context.Context, db *sql.DB, opts CaptureOptions) error {
	if err := UninstallCapture(ctx, db, opts); err != nil {
		return err
	}
	return UninstallFence(ctx, db, opts)
}

// DropDatabase drops database name on db's server, if it exists; not db's own.
// WITH (FORCE) (PostgreSQL 13+) ends the sessions still connected to it: a fenced
// server's pod on its way out, or a replay killed mid-pass, would otherwise fail
// the drop.
func DropDatabase(ctx context.Context, db *sql.DB, name string) error {
	var current string
	if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&current); err != nil {
		return err
	}
	if name == current {
		return fmt.Errorf("refusing to drop database %s: it is the one connected to", name)
	}
	if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(name)+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	return nil
}
