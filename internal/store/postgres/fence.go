package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/lib/pq"
)

// The fence stops the token servers of one database (from) from writing while a
// Copy upgrade moves the service to the other (to): two databases taking writes at
// once would let a refresh token be spent once on each side, so the switch is one
// atomic step for every replica, not a pod-by-pod shift. The servers poll the fence
// row (ReadFence) and hold their write requests while it is up; a guard trigger on
// every token-server table refuses the writes that slip through once the cutover
// marker is committed, whatever binary sends them, for the old binary knows nothing
// of the fence.

// Fence states, in kubeoauth_upgrade.fence.state.
const (
	// FenceHolding: the servers hold write requests while the lease lasts; writes
	// still commit (the requests already running finish).
	FenceHolding = "holding"
	// FenceCutOver: the marker is committed, the point of no return; the guard
	// refuses writes and the servers go on holding.
	FenceCutOver = "cut_over"
	// FenceForwarding: the other database serves; the servers forward every
	// request to ForwardTo and the guard refuses writes.
	FenceForwarding = "forwarding"
)

// Directions of a replay and a cutover.
const (
	DirectionForward  = "forward"
	DirectionBackward = "backward"
)

// FenceChannel is the NOTIFY channel every fence change is announced on, with the
// new state as payload ("" when the fence is lifted).
const FenceChannel = "kubeoauth_fence"

// FenceRefused is the SQLSTATE the guard raises: read_only_sql_transaction, what a
// hot standby answers a write with, so that tools and people read it as "this
// database takes no writes now".
const FenceRefused = "25006"

// FenceRefusedMessage is the guard's error message.
const FenceRefusedMessage = "kubeoauth: this database was cut over to another; writes go to the new one"

// ReplaySetting is the session setting that lets the replayer through the guard
// (SET LOCAL kubeoauth.replay = 'on').
const ReplaySetting = "kubeoauth.replay"

// guardTrigger names the guard trigger on each table (kubeoauth_fence).
const guardTrigger = "kubeoauth_fence"

// The guard is a statement trigger: one cheap look at a one-row table per write
// statement, never per row. SECURITY DEFINER with a fixed search_path for the same
// reasons as capture's record(): the writer needs no right on the schema and cannot
// redirect it. The tables are upgradeSetup's.
const fenceSetup = upgradeSetup + `;
CREATE OR REPLACE FUNCTION kubeoauth_upgrade.guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('kubeoauth.replay', true) IS DISTINCT FROM 'on'
       AND EXISTS (SELECT 1 FROM kubeoauth_upgrade.fence WHERE state IN ('cut_over', 'forwarding')) THEN
        RAISE EXCEPTION 'kubeoauth: this database was cut over to another; writes go to the new one'
            USING ERRCODE = '25006',
                  HINT = 'The token servers of this database forward their requests to the new one; '
                         'see docs/upgrades.md, "Fence and cutover".';
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION kubeoauth_upgrade.guard() FROM PUBLIC`

// InstallFence creates the kubeoauth_upgrade schema with its fence, cutover and
// replay tables and puts the guard trigger on every token-server table of db
// (opts.Tables, or every table of the current schema but schema_migrations). Like
// InstallCapture it can be run again and never waits for a lock longer than
// opts.LockTimeout at a time. Installing it changes nothing while there is no fence
// row.
func InstallFence(ctx context.Context, db *sql.DB, opts CaptureOptions) error {
	return installTriggers(ctx, db, opts, triggerInstall{what: "the fence", lockID: upgradeLockID, setup: fenceSetup,
		trigger: guardTrigger,
		tables: func(ctx context.Context, conn *sql.Conn) ([]string, error) {
			return fenceTables(ctx, conn, opts.Tables)
		},
		create: func(table string) (string, string) {
			// #nosec G201 -- the identifiers are quoted.
			return fmt.Sprintf(`CREATE TRIGGER %s BEFORE INSERT OR UPDATE OR DELETE ON %s
FOR EACH STATEMENT EXECUTE FUNCTION kubeoauth_upgrade.guard()`, guardTrigger, pq.QuoteIdentifier(table)), "fence guard on " + table
		}})
}

// UninstallFence drops the guard triggers and the kubeoauth_upgrade schema (the
// copy's and replay's records too: cleanup ends the upgrade), with the same bounded
// lock waits.
func UninstallFence(ctx context.Context, db *sql.DB, opts CaptureOptions) error {
	return dropTriggersAndSchema(ctx, db, opts, "the fence", guardTrigger, UpgradeSchema)
}

// fenceTables lists the tables to guard: only, or every table of the current
// schema but schema_migrations (a migration is no token write).
func fenceTables(ctx context.Context, conn *sql.Conn, only []string) ([]string, error) {
	all, err := listTables(ctx, conn, false)
	if err != nil || only == nil {
		return all, err
	}
	for _, name := range only {
		found := false
		for _, a := range all {
			found = found || a == name
		}
		if !found {
			return nil, fmt.Errorf("table %s does not exist", name)
		}
	}
	return only, nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Fence is the fence row of a database, as its token servers act on it.
type Fence struct {
	UpgradeID string
	// State is FenceHolding, FenceCutOver or FenceForwarding.
	State string
	// LeaseLive: the holding lease has not run out, by the database's clock (the
	// servers' clocks play no part).
	LeaseLive bool
	// ForwardTo is the URL of the token servers of the other database.
	ForwardTo string
}

// ReadFence reads the fence row; false when there is none, or no fence table at
// all. The servers call it every 100 ms: a lookup of the table by name, then one
// row by primary key, so a database that was never fenced logs no error.
func ReadFence(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (Fence, bool, error) {
	var exists bool
	if err := q.QueryRowContext(ctx, `SELECT to_regclass('kubeoauth_upgrade.fence') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return Fence{}, false, err
	}
	var f Fence
	err := q.QueryRowContext(ctx, `SELECT upgrade_id, state, lease_until > now(), forward_to FROM kubeoauth_upgrade.fence WHERE id = 1`).
		Scan(&f.UpgradeID, &f.State, &f.LeaseLive, &f.ForwardTo)
	var pe *pq.Error
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Fence{}, false, nil
	case errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000"): // dropped between the two queries
		return Fence{}, false, nil
	case err != nil:
		return Fence{}, false, err
	}
	return f, true, nil
}

// ReadFence reads the store's database's fence row (see the function ReadFence).
// A failure is not counted as a database error: the servers poll ten times a
// second, and the requests count the outage already.
func (s *Store) ReadFence(ctx context.Context) (Fence, bool, error) {
	f, ok, err := ReadFence(ctx, s.db)
	return f, ok, mapErr(err)
}

// ErrLeaseExpired: the fence's lease ran out before the replay drained and the
// marker was committed. The fence is lifted, the old version serves on (it never
// stopped for longer than the lease); the cutover can be tried again.
var ErrLeaseExpired = errors.New("the fence's lease ran out before the replay drained; " +
	"the old version serves on, try the cutover again")

// Cutover defaults.
const (
	DefaultFenceLease  = 5 * time.Second
	DefaultNoticeDelay = 300 * time.Millisecond
)

// CutoverOptions configure Cutover.
type CutoverOptions struct {
	UpgradeID string
	// Direction: DirectionForward (from is blue's database) or DirectionBackward (a
	// rollback after a cutover: from is green's).
	Direction string
	// ForwardTo is where from's servers send their requests once it is done: the
	// URL of to's token servers.
	ForwardTo string
	// Lease is how long from's servers hold write requests before they resume on
	// their own if the cutover does not reach its marker; 0 means DefaultFenceLease.
	Lease time.Duration
	// NoticeDelay is how long Cutover waits after raising the fence for the servers
	// to see it (they poll every 100 ms); 0 means DefaultNoticeDelay.
	NoticeDelay time.Duration
	// Drain replays what changed on from to to once (one ReplayPass) and says how
	// many keys it replayed: 0 means to has everything from committed.
	Drain func(ctx context.Context) (replayed int, err error)
	// LockTimeout, LockRetries and LockRetryWait bound the lock waits of installing
	// the guard and capture triggers (see CaptureOptions).
	LockTimeout   time.Duration
	LockRetries   int
	LockRetryWait time.Duration
	Log           func(format string, args ...any)
}

// CutoverResult reports a Cutover.
type CutoverResult struct {
	// FenceHold is how long from's servers held write requests: from raising the
	// fence to forwarding. On a resumed cutover, from the marker.
	FenceHold time.Duration
	// Replayed counts the keys the drains replayed.
	Replayed int
	// Resumed: the marker was already committed by an earlier run, which this one
	// finished.
	Resumed bool
}

// Cutover moves the service from one database to the other, for every token
// server at once (COPY14 steps 0–9; docs/upgrades.md, "Fence and cutover"):
//
//  0. the guard on both databases and capture on to (the replay back), before the
//     fence, so that their lock waits never count in the hold;
//  1. a run that finds its own marker on from resumes at 5;
//  2. the fence on from: holding, with a lease;
//  3. a wait for from's servers to see it;
//  4. drains until a pass replays nothing, then the marker on from (cut_over, only
//     while the lease lasts) — the point of no return; a lease that runs out first
//     lifts the fence and ends with ErrLeaseExpired;
//  5. a wait for from's transactions that began before the marker, and drains
//     until nothing is left;
//  6. to's sequences past from's;
//  7. the other direction's replay row on from, since a snapshot of to taken now;
//  8. the marker on to, and to's own fence lifted;
//  9. from forwarding.
//
// It holds one connection of from's pool for its whole run (a session lock that
// keeps two runs of one upgrade apart), so from's pool needs room for that, the
// drain's and its own queries.
func Cutover(ctx context.Context, from, to *sql.DB, o CutoverOptions) (CutoverResult, error) {
	var res CutoverResult
	switch {
	case o.UpgradeID == "":
		return res, errors.New("cutover: an upgrade id is required")
	case o.Direction != DirectionForward && o.Direction != DirectionBackward:
		return res, fmt.Errorf("cutover: direction %q: want %s or %s", o.Direction, DirectionForward, DirectionBackward)
	case o.ForwardTo == "":
		return res, errors.New("cutover: the URL to forward to is required")
	case o.Drain == nil:
		return res, errors.New("cutover: a drain is required")
	}
	if o.Lease <= 0 {
		o.Lease = DefaultFenceLease
	}
	if o.NoticeDelay <= 0 {
		o.NoticeDelay = DefaultNoticeDelay
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			o.Log(format, args...)
		}
	}
	// Step 0.
	install := CaptureOptions{LockTimeout: o.LockTimeout, LockRetries: o.LockRetries, LockRetryWait: o.LockRetryWait, Log: o.Log}
	if err := InstallFence(ctx, from, install); err != nil {
		return res, fmt.Errorf("cutover: the database served from: %w", err)
	}
	if err := InstallFence(ctx, to, install); err != nil {
		return res, fmt.Errorf("cutover: the database to serve from: %w", err)
	}
	if err := InstallCapture(ctx, to, install); err != nil {
		return res, fmt.Errorf("cutover: the database to serve from: %w", err)
	}
	// Two cutovers of one database at once (a Job's pod that lingers while its
	// retry runs) would undo each other's fence; a session lock on from keeps them in
	// line, and dies with its process.
	lockConn, err := from.Conn(ctx)
	if err != nil {
		return res, err
	}
	defer func() { _ = lockConn.Close() }()
	if _, err := lockConn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, cutoverLockKey(o.UpgradeID)); err != nil {
		return res, fmt.Errorf("cutover: waiting for another run of it: %w", err)
	}
	defer func() {
		_, _ = lockConn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, cutoverLockKey(o.UpgradeID))
	}()

	// Step 1.
	cur, found, err := ReadFence(ctx, from)
	if err != nil {
		return res, fmt.Errorf("cutover: reading the fence: %w", err)
	}
	var t0 time.Time
	switch {
	case found && cur.UpgradeID != o.UpgradeID && cur.State != FenceHolding:
		return res, fmt.Errorf("cutover: the database served from was already cut over by upgrade %s (state %s)", cur.UpgradeID, cur.State)
	case found && cur.UpgradeID != o.UpgradeID && cur.LeaseLive:
		return res, fmt.Errorf("cutover: upgrade %s holds a fence on the database served from; wait for its lease to run out", cur.UpgradeID)
	case found && cur.State != FenceHolding:
		res.Resumed = true
		var since time.Duration
		if err := from.QueryRowContext(ctx, `SELECT CASE WHEN state = 'cut_over' THEN extract(epoch FROM now() - set_at) ELSE 0 END
FROM kubeoauth_upgrade.fence WHERE id = 1`).Scan(&seconds{&since}); err != nil {
			return res, fmt.Errorf("cutover: reading the fence: %w", err)
		}
		t0 = time.Now().Add(-since)
		logf("cutover %s: the marker is committed (%s); resuming", o.UpgradeID, cur.State)
	default:
		// Steps 2–4.
		if t0, err = fenceAndMark(ctx, from, o, &res, logf); err != nil {
			return res, err
		}
	}
	if err := finishCutover(ctx, from, to, o, &res, logf); err != nil {
		return res, err
	}
	res.FenceHold = time.Since(t0)
	logf("cutover %s: done; from's servers forward to %s; fence held %s", o.UpgradeID, o.ForwardTo, res.FenceHold.Round(time.Millisecond))
	return res, nil
}

// seconds scans an epoch interval into a duration.
type seconds struct{ d *time.Duration }

func (s seconds) Scan(v any) error {
	var f sql.NullFloat64
	if err := f.Scan(v); err != nil {
		return err
	}
	*s.d = time.Duration(f.Float64 * float64(time.Second))
	return nil
}

func cutoverLockKey(upgradeID string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("kubeoauth cutover " + upgradeID))
	return int64(h.Sum64()) // #nosec G115 -- a lock key, any bits do
}

// fenceAndMark raises the fence on from, drains, and commits the marker (steps
// 2–4), returning when the fence went up.
func fenceAndMark(ctx context.Context, from *sql.DB, o CutoverOptions, res *CutoverResult, logf func(string, ...any)) (time.Time, error) {
	if err := setFence(ctx, from, `INSERT INTO kubeoauth_upgrade.fence (id, upgrade_id, state, lease_until, forward_to, set_at)
VALUES (1, $1, 'holding', now() + make_interval(secs => $2), $3, now())
ON CONFLICT (id) DO UPDATE SET upgrade_id = EXCLUDED.upgrade_id, state = EXCLUDED.state, lease_until = EXCLUDED.lease_until,
    forward_to = EXCLUDED.forward_to, set_at = EXCLUDED.set_at`, FenceHolding,
		o.UpgradeID, o.Lease.Seconds(), o.ForwardTo); err != nil {
		return time.Time{}, fmt.Errorf("cutover: raising the fence: %w", err)
	}
	t0 := time.Now()
	deadline := t0.Add(o.Lease)
	logf("cutover %s: fence up, lease %s", o.UpgradeID, o.Lease)
	// The drains after the notice stop at the lease: past it the servers serve
	// again, and the marker would be refused anyway.
	leaseCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	lift := func(cause error) error {
		// The servers resume by themselves once the lease is over; lifting the fence
		// now saves them the wait. On a lost database the lease does it alone.
		if err := setFence(context.WithoutCancel(ctx), from,
			`DELETE FROM kubeoauth_upgrade.fence WHERE upgrade_id = $1 AND state = 'holding'`, "", o.UpgradeID); err != nil {
			logf("cutover %s: lifting the fence: %v (its lease lifts it)", o.UpgradeID, err)
		}
		if cause != nil && ctx.Err() == nil && !errors.Is(cause, context.DeadlineExceeded) {
			return fmt.Errorf("cutover (the fence is lifted, the old version serves on): %w", cause)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrLeaseExpired
	}
	// Step 3.
	select {
	case <-leaseCtx.Done():
		return time.Time{}, lift(leaseCtx.Err())
	case <-time.After(o.NoticeDelay):
	}
	// Step 4.
	for pass := 1; ; pass++ {
		n, err := o.Drain(leaseCtx)
		if err != nil {
			return time.Time{}, lift(fmt.Errorf("draining: %w", err))
		}
		res.Replayed += n
		if n == 0 {
			break
		}
		logf("cutover %s: drain pass %d replayed %d", o.UpgradeID, pass, n)
		if leaseCtx.Err() != nil {
			return time.Time{}, lift(leaseCtx.Err())
		}
	}
	// The marker's own test of the lease is the database's clock, so its statement
	// runs on ctx: a local deadline that cancelled it mid-commit would leave its
	// outcome unknown.
	marked := false
	err := inTx(ctx, from, func(tx *sql.Tx) error {
		// clock_timestamp, not now(): now() is the transaction's start, and a
		// process stalled between BEGIN and this statement would mark a fence
		// whose lease the servers have already seen run out.
		r, err := tx.ExecContext(ctx, `UPDATE kubeoauth_upgrade.fence SET state = 'cut_over', set_at = clock_timestamp()
WHERE upgrade_id = $1 AND state = 'holding' AND lease_until > clock_timestamp()`, o.UpgradeID)
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		if err != nil || n == 0 {
			return err
		}
		marked = true
		_, err = tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, FenceChannel, FenceCutOver)
		return err
	})
	if err != nil && ctx.Err() == nil {
		// A commit whose answer was lost may still have gone through.
		if f, ok, rerr := ReadFence(ctx, from); rerr == nil && ok && f.UpgradeID == o.UpgradeID && f.State == FenceCutOver {
			marked, err = true, nil
		}
	}
	if err != nil || !marked {
		return time.Time{}, lift(err)
	}
	logf("cutover %s: marker committed after %s: no return from here", o.UpgradeID, time.Since(t0).Round(time.Millisecond))
	return t0, nil
}

// finishCutover runs steps 5–9, each of which a rerun may repeat.
func finishCutover(ctx context.Context, from, to *sql.DB, o CutoverOptions, res *CutoverResult, logf func(string, ...any)) error {
	// Step 5: a transaction that passed the guard before the marker may commit
	// after it; once every one has ended, what the drains see is final.
	if err := waitForWriters(ctx, from, o, logf); err != nil {
		return fmt.Errorf("cutover: waiting for the writes in flight: %w", err)
	}
	for {
		n, err := o.Drain(ctx)
		if err != nil {
			return fmt.Errorf("cutover: draining after the marker: %w", err)
		}
		res.Replayed += n
		if n == 0 {
			break
		}
	}
	// Step 6.
	if err := advanceSequences(ctx, from, to, logf); err != nil {
		return fmt.Errorf("cutover: advancing the sequences: %w", err)
	}
	// Step 7.
	if err := replayBackRow(ctx, from, to, o); err != nil {
		return fmt.Errorf("cutover: recording where the replay back starts: %w", err)
	}
	// Step 8, under this direction's replay lock on to: a pass in flight ends first,
	// and every pass after the marker does nothing (ReplayPass), so no replayer
	// that outlived the cutover writes from's older rows over to's.
	conn, unlock, err := lockSession(ctx, to, replayLock(o.UpgradeID, o.Direction))
	if err != nil {
		return fmt.Errorf("cutover: locking the replay: %w", err)
	}
	defer unlock()
	err = inConnTx(ctx, conn, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.cutover (upgrade_id, direction, at) VALUES ($1, $2, now())
ON CONFLICT (upgrade_id, direction) DO NOTHING`, o.UpgradeID, o.Direction); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM kubeoauth_upgrade.fence`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, FenceChannel)
		return err
	})
	if err != nil {
		return fmt.Errorf("cutover: the marker on the database to serve from: %w", err)
	}
	// Step 9.
	if err := setFence(ctx, from, `UPDATE kubeoauth_upgrade.fence SET state = 'forwarding', forward_to = $2, set_at = now()
WHERE upgrade_id = $1 AND state <> 'forwarding'`, FenceForwarding, o.UpgradeID, o.ForwardTo); err != nil {
		return fmt.Errorf("cutover: forwarding: %w", err)
	}
	return nil
}

// setFence runs one change of the fence row and announces the new state, in one
// transaction.
func setFence(ctx context.Context, db *sql.DB, stmt, state string, args ...any) error {
	return inTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, FenceChannel, state)
		return err
	})
}

func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func inConnTx(ctx context.Context, conn *sql.Conn, fn func(tx *sql.Tx) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// waitForWriters waits until every transaction that wrote a guarded table of db
// before the marker has ended. It waits on the tables' locks, not on transaction
// ids: a writer holds ROW EXCLUSIVE on its table from before the guard let it
// through until it ends, whereas its transaction id may be assigned only after the
// snapshot that would list it, and a snapshot lists the writers of every database
// of the server. SHARE, taken and let go table by table, waits for exactly those
// writers; a writer that comes after the marker is refused by the guard, and reads
// never wait. Past the point of no return, so it never gives up: each wait is
// bounded by the lock timeout, and logged while it lasts.
func waitForWriters(ctx context.Context, db *sql.DB, o CutoverOptions, logf func(string, ...any)) (err error) {
	defer func() {
		// lib/pq answers a statement ctx cancels with its own error (57014), not
		// ctx's; the caller tells a killed cutover by ctx's.
		if err != nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	}()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	tables, err := triggeredTables(ctx, conn, guardTrigger)
	if err != nil {
		return err
	}
	timeout := o.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	start := time.Now()
	for _, name := range tables {
		for {
			err := inConnTx(ctx, conn, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, timeout.Milliseconds())); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `LOCK TABLE `+pq.QuoteIdentifier(name)+` IN SHARE MODE`) // #nosec G202 -- quoted
				return err
			})
			if err == nil {
				break
			}
			if !isLockTimeout(err) {
				return fmt.Errorf("waiting for the writers of %s: %w", name, err)
			}
			logf("cutover %s: waiting %s for a transaction that wrote %s before the marker (see pg_stat_activity)",
				o.UpgradeID, time.Since(start).Round(time.Second), name)
		}
	}
	return nil
}

// advanceSequences sets every sequence of to's current schema that from has too
// past the last value from handed out, so that a row to's servers insert (an event)
// never takes a number from already gave: the replay carries rows, not sequences.
// A sequence never moves back.
func advanceSequences(ctx context.Context, from, to *sql.DB, logf func(string, ...any)) error {
	rows, err := to.QueryContext(ctx, `SELECT c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'S' ORDER BY 1`)
	if err != nil {
		return err
	}
	names, err := scanStrings(rows)
	if err != nil {
		return err
	}
	for _, name := range names {
		var last sql.NullInt64
		// #nosec G201 -- the identifier is quoted.
		q := fmt.Sprintf(`SELECT CASE WHEN is_called THEN last_value END FROM %s`, pq.QuoteIdentifier(name))
		err := from.QueryRowContext(ctx, q).Scan(&last)
		var pe *pq.Error
		switch {
		case errors.As(err, &pe) && pe.Code == "42P01": // from has no such sequence
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", name, err)
		case !last.Valid: // from never used it
			continue
		}
		// #nosec G201 -- the identifier is quoted.
		r, err := to.ExecContext(ctx, fmt.Sprintf(`SELECT setval(%[1]s, $1) FROM %[2]s
WHERE NOT is_called OR last_value < $1`, pq.QuoteLiteral(pq.QuoteIdentifier(name)), pq.QuoteIdentifier(name)), last.Int64)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if n, _ := r.RowsAffected(); n > 0 {
			logf("sequence %s set to %d", name, last.Int64)
		}
	}
	return nil
}

// replayBackRow writes the other direction's replay row on from: its since is a
// snapshot of to taken now, when to has taken no write yet (its servers serve only
// after step 8), and its schema range is this direction's, swapped. A row this
// cutover already wrote (a rerun) is kept: a snapshot of to taken on the rerun
// could miss what to's servers wrote since; an older one (the forward row, when a
// rollback cuts back) is replaced.
func replayBackRow(ctx context.Context, from, to *sql.DB, o CutoverOptions) error {
	back := DirectionBackward
	if o.Direction == DirectionBackward {
		back = DirectionForward
	}
	var schemaFrom, schemaTo int
	err := to.QueryRowContext(ctx, `SELECT schema_to, schema_from FROM kubeoauth_upgrade.replay
WHERE upgrade_id = $1 AND direction = $2`, o.UpgradeID, o.Direction).Scan(&schemaFrom, &schemaTo)
	if errors.Is(err, sql.ErrNoRows) {
		// No replay row this way (a cutover of databases that never replayed):
		// the schemas the databases are at.
		if schemaFrom, err = latestApplied(ctx, to); err == nil {
			schemaTo, err = latestApplied(ctx, from)
		}
	}
	if err != nil {
		return err
	}
	since, err := Snapshot(ctx, to)
	if err != nil {
		return err
	}
	_, err = from.ExecContext(ctx, `INSERT INTO kubeoauth_upgrade.replay AS r
    (upgrade_id, direction, since, schema_from, schema_to, replayed, updated_at)
VALUES ($1, $2, $3, $4, $5, 0, now())
ON CONFLICT (upgrade_id, direction) DO UPDATE SET since = EXCLUDED.since, schema_from = EXCLUDED.schema_from,
    schema_to = EXCLUDED.schema_to, replayed = 0, updated_at = EXCLUDED.updated_at
WHERE r.updated_at < (SELECT set_at FROM kubeoauth_upgrade.fence WHERE id = 1 AND upgrade_id = $1 AND state = 'cut_over')`,
		o.UpgradeID, back, since, schemaFrom, schemaTo)
	return err
}

// latestApplied is the highest migration version applied on db.
func latestApplied(ctx context.Context, db *sql.DB) (int, error) {
	var v sql.NullInt64
	err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}
