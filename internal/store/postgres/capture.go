package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Capture records, on the database the old version serves on, the key and
// transaction of every row its token server changes, so that a Copy upgrade can carry
// over what was written after its snapshot: the replay takes the changes whose
// transactions the snapshot did not see (ChangesBetween), re-reads each key's current
// row and writes it to the copy. It needs nothing from the old binary, no wal_level
// change and no replication privilege: a schema of its own (CaptureSchema), a table,
// a function and one row trigger per table, which the tables' owner may create.
//
// Logical replication would carry the rows themselves, but it needs wal_level=logical
// (a restart of a managed database), a publication on blue and a subscription on
// green (superuser, or pg_create_subscription from PostgreSQL 16), matching table
// shapes on both sides (a breaking migration changes them), sequences are not
// replicated, and a stalled subscriber makes blue keep WAL without bound. Keys and
// transaction IDs in a table cost a row insert per change and nothing else.

// CaptureSchema is the schema InstallCapture creates and UninstallCapture drops.
const CaptureSchema = "kubeoauth_capture"

// captureTrigger names the trigger on each captured table.
const captureTrigger = "kubeoauth_capture"

// CaptureOptions configure InstallCapture and UninstallCapture.
type CaptureOptions struct {
	// Tables to capture, in the connection's current schema; nil means every table
	// there but schema_migrations. Each must have a primary key.
	Tables []string
	// LockTimeout, LockRetries, LockRetryWait and Log as for Migrate: creating a
	// trigger takes a lock that token writes queue behind, so it waits at most
	// LockTimeout at a time.
	LockTimeout   time.Duration
	LockRetries   int
	LockRetryWait time.Duration
	Log           func(format string, args ...any)
}

func (o CaptureOptions) lock() MigrateOptions {
	return MigrateOptions{LockTimeout: o.LockTimeout, LockRetries: o.LockRetries, LockRetryWait: o.LockRetryWait, Log: o.Log}
}

// The function is SECURITY DEFINER so that a role that may write the token tables
// needs no right on the capture schema; its search_path is fixed so that the writer's
// cannot redirect it. An UPDATE records the old key, and the new one when the key
// changed, so that the replay deletes a row that moved.
const captureSetup = `
CREATE SCHEMA IF NOT EXISTS kubeoauth_capture;
CREATE TABLE IF NOT EXISTS kubeoauth_capture.changes (
    seq        bigserial PRIMARY KEY,
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
DO $$ BEGIN
    -- CREATE INDEX IF NOT EXISTS takes a SHARE lock on the table before it finds
    -- the index there: on a second install it would queue the token writes that
    -- the triggers record behind those in flight.
    IF to_regclass('kubeoauth_capture.changes_xid_idx') IS NULL THEN
        CREATE INDEX changes_xid_idx ON kubeoauth_capture.changes (xid);
    END IF;
END $$;
CREATE OR REPLACE FUNCTION kubeoauth_capture.record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_key jsonb;
    new_key jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT jsonb_object_agg(c, to_jsonb(OLD) -> c) INTO old_key FROM unnest(TG_ARGV) AS c;
        INSERT INTO kubeoauth_capture.changes (table_name, key) VALUES (TG_TABLE_NAME, old_key);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT jsonb_object_agg(c, to_jsonb(NEW) -> c) INTO new_key FROM unnest(TG_ARGV) AS c;
        IF new_key IS DISTINCT FROM old_key THEN
            INSERT INTO kubeoauth_capture.changes (table_name, key) VALUES (TG_TABLE_NAME, new_key);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION kubeoauth_capture.record() FROM PUBLIC`

// captureLockID serialises installs and uninstalls, so that two never race on
// CREATE SCHEMA IF NOT EXISTS.
const captureLockID = 0x6b756265_63617074 // "kubecapt"

// InstallCapture starts recording every change to the tables on db. It can be run
// again (what is there stays) and, like a migration, never waits for a lock longer
// than opts.LockTimeout at a time: each table's trigger is created in a transaction
// of its own, so a long transaction on one table holds up only that table's trigger,
// and a write on a table whose trigger is being created waits at most that long.
// Every write that commits after InstallCapture returns is captured.
func InstallCapture(ctx context.Context, db *sql.DB, opts CaptureOptions) error {
	keys := map[string][]string{}
	return installTriggers(ctx, db, opts, triggerInstall{what: "capture", lockID: captureLockID, setup: captureSetup,
		trigger: captureTrigger,
		tables: func(ctx context.Context, conn *sql.Conn) ([]string, error) {
			tables, err := captureTables(ctx, conn, opts.Tables)
			names := make([]string, 0, len(tables))
			for _, t := range tables {
				keys[t.name] = t.key
				names = append(names, t.name)
			}
			return names, err
		},
		create: func(table string) (string, string) {
			args := make([]string, len(keys[table]))
			for i, k := range keys[table] {
				args[i] = pq.QuoteLiteral(k)
			}
			// #nosec G201 -- the identifiers and literals are quoted.
			return fmt.Sprintf(`CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW
EXECUTE FUNCTION kubeoauth_capture.record(%s)`, captureTrigger, pq.QuoteIdentifier(table), strings.Join(args, ", ")),
				fmt.Sprintf("capturing changes to %s (key %s)", table, strings.Join(keys[table], ", "))
		}})
}

// triggerInstall is what InstallCapture and InstallFence put on a database: setup
// SQL (a schema and its functions, run under an advisory lock so that two installs
// never race on CREATE ... IF NOT EXISTS) and one trigger per table.
type triggerInstall struct {
	what    string // in errors and logs: "capture", "the fence"
	lockID  int64
	setup   string
	trigger string
	// tables lists the tables to put the trigger on, after the setup ran.
	tables func(ctx context.Context, conn *sql.Conn) ([]string, error)
	// create is a table's CREATE TRIGGER statement and the line logged once made.
	create func(table string) (stmt, logged string)
}

// installTriggers runs in's setup, then creates its trigger on each table that
// lacks it, each in a transaction of its own and with opts' bounded lock waits.
func installTriggers(ctx context.Context, db *sql.DB, opts CaptureOptions, in triggerInstall) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), `RESET lock_timeout`) }()
	lock := opts.lock()
	err = retryOnLock(ctx, conn, in.what+" schema", lock, func() error {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, in.lockID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, in.setup); err != nil {
			return err
		}
		return tx.Commit()
	})
	if err != nil {
		return fmt.Errorf("installing %s: %w", in.what, err)
	}
	tables, err := in.tables(ctx, conn)
	if err != nil {
		return fmt.Errorf("installing %s: %w", in.what, err)
	}
	for _, name := range tables {
		var exists bool
		if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_trigger
WHERE tgrelid = to_regclass(quote_ident($1)) AND tgname = $2)`, name, in.trigger).Scan(&exists); err != nil {
			return fmt.Errorf("installing %s on %s: %w", in.what, name, err)
		}
		if exists {
			continue
		}
		stmt, logged := in.create(name)
		err := retryOnLock(ctx, conn, in.what+" trigger on "+name, lock, func() error {
			_, err := conn.ExecContext(ctx, stmt)
			var pe *pq.Error
			if errors.As(err, &pe) && pe.Code == "42710" { // duplicate_object: another install got there first
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("installing %s on %s: %w", in.what, name, err)
		}
		if opts.Log != nil {
			opts.Log("%s", logged)
		}
	}
	return nil
}

// UninstallCapture removes the triggers, the changes recorded and the capture
// schema, with the same bounded lock waits: dropping a trigger locks its table
// against reads and writes while it waits.
func UninstallCapture(ctx context.Context, db *sql.DB, opts CaptureOptions) error {
	return dropTriggersAndSchema(ctx, db, opts, "capture", captureTrigger, CaptureSchema)
}

// dropTriggersAndSchema drops trigger from every table that has it, one table at a
// time with opts' bounded lock waits (dropping a trigger locks its table against
// reads and writes while it waits), then schema with what it holds; what names the
// work in errors and logs.
func dropTriggersAndSchema(ctx context.Context, db *sql.DB, opts CaptureOptions, what, trigger, schema string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), `RESET lock_timeout`) }()
	names, err := triggeredTables(ctx, conn, trigger)
	if err != nil {
		return fmt.Errorf("uninstalling %s: %w", what, err)
	}
	lock := opts.lock()
	for _, name := range names {
		stmt := fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, trigger, pq.QuoteIdentifier(name))
		if err := retryOnLock(ctx, conn, what+" trigger on "+name, lock, func() error {
			_, err := conn.ExecContext(ctx, stmt)
			return err
		}); err != nil {
			return fmt.Errorf("uninstalling %s on %s: %w", what, name, err)
		}
	}
	if err := retryOnLock(ctx, conn, schema, lock, func() error {
		_, err := conn.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+pq.QuoteIdentifier(schema)+` CASCADE`) // #nosec G202 -- quoted
		return err
	}); err != nil {
		return fmt.Errorf("uninstalling %s: %w", what, err)
	}
	return nil
}

// triggeredTables lists the tables of the current schema that carry trigger.
func triggeredTables(ctx context.Context, q queryer, trigger string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname = $1 AND c.relnamespace = current_schema()::regnamespace ORDER BY 1`, trigger)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

type captureTable struct {
	name string
	key  []string
}

// captureTables lists the tables to capture with their primary keys' columns.
func captureTables(ctx context.Context, conn *sql.Conn, only []string) ([]captureTable, error) {
	rows, err := conn.QueryContext(ctx, `
SELECT c.relname, coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations'
ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	found := map[string]captureTable{}
	var all []captureTable
	for rows.Next() {
		var t captureTable
		if err := rows.Scan(&t.name, pq.Array(&t.key)); err != nil {
			return nil, err
		}
		found[t.name] = t
		all = append(all, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if only != nil {
		all = all[:0]
		for _, name := range only {
			t, ok := found[name]
			if !ok {
				return nil, fmt.Errorf("table %s does not exist", name)
			}
			all = append(all, t)
		}
	}
	for _, t := range all {
		if len(t.key) == 0 {
			return nil, fmt.Errorf("table %s has no primary key: its changes cannot be captured by key", t.name)
		}
	}
	return all, nil
}

// Change is a row changed after capture was installed: the table, the row's
// primary key as a JSON object of its columns, and the transaction that changed it.
type Change struct {
	Seq   int64
	Table string
	Key   json.RawMessage
	XID   uint64
	At    time.Time
}

// Snapshot returns pg_current_snapshot() of q, as text: taken in the copy's
// REPEATABLE READ transaction, it says which transactions the copy saw.
func Snapshot(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (string, error) {
	var snap string
	err := q.QueryRowContext(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap)
	return snap, err
}

// ChangesBetween lists the changes (seq greater than after, at most limit, in seq
// order) made by the transactions that snapshot since did not see and snapshot
// until did: with since the copy's snapshot, those the copy missed that had ended
// by until. A replay pass takes a new until (Snapshot) and then uses it as the next
// pass's since, so that every committed change falls in exactly one window.
//
// Not a cursor on seq alone: seq is taken when a row changes, not when its
// transaction commits, so a transaction still in progress can commit a lower seq
// after a higher one was read; within one window the set is fixed (every
// transaction until sees had ended), so paging by seq is safe there. A transaction
// below since's xmin had ended before since was taken, so the copy saw it; the xmin
// bound (and until's xmax) only let the index on xid skip the rest.
func ChangesBetween(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, since, until string, after int64, limit int) ([]Change, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, table_name, key::text, xid::text, at FROM kubeoauth_capture.changes
WHERE xid >= pg_snapshot_xmin($1::pg_snapshot) AND xid < pg_snapshot_xmax($2::pg_snapshot)
  AND NOT pg_visible_in_snapshot(xid, $1::pg_snapshot) AND pg_visible_in_snapshot(xid, $2::pg_snapshot)
  AND seq > $3
ORDER BY seq LIMIT $4`, since, until, after, limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []Change
	for rows.Next() {
		var (
			c        Change
			key, xid string
		)
		if err := rows.Scan(&c.Seq, &c.Table, &key, &xid, &c.At); err != nil {
			return nil, err
		}
		c.Key = json.RawMessage(key)
		if c.XID, err = strconv.ParseUint(xid, 10, 64); err != nil {
			return nil, fmt.Errorf("change %d: xid %q: %w", c.Seq, xid, err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
