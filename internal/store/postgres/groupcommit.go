package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// Group commit. On durable settings every transaction waits for its WAL flush, and at
// 64 concurrent requests PostgreSQL's CPU per transaction (snapshot, lock on the
// client's row for the foreign key, commit record) rather than the INSERT is what
// bounds the token rate. So the writes of a token request that can wait for its
// commit — the new token rows and, for a refresh, the rotation of the used refresh
// token — are gathered from concurrent requests and written by one statement in one
// transaction. Nobody waits on purpose: a batch is whatever queued while the previous
// one was being committed, so an idle server commits each request alone, at once.
// Every request in a batch is answered only after the batch's COMMIT returned; when
// it failed, each request's writes are tried again alone, so that each gets its own
// answer (one request's token for a deleted client must not fail the others).
//
// A batch never waits long on another transaction's row lock: a client's deletion
// holds the client's row while it cascades over the client's tokens (seconds, for a
// client with many), and every insert of a token for that client waits for it on the
// foreign key. A batch writer that waited with it would hold up every other tenant's
// requests queued behind it. So a batch's lock waits end after groupCommitLockTimeout,
// and its requests are then written alone, each in its own transaction, in parallel
// and outside the batch writers: only the requests of the client whose row is locked
// wait for that lock, as long as their own contexts let them. Such waits hold at most
// half the pool's connections, whatever number of requests or clients wait, so that
// the others always have connections to write with.

// Bounds of group commit: units per statement (each at most a few rows of 15
// parameters, far below PostgreSQL's 65,535), and statements in flight at once, so
// that the commits of a few batches overlap rather than queue behind each other.
const (
	groupCommitMaxBatch   = 128
	groupCommitMaxFlushes = 4
	// groupCommitLockTimeout bounds each lock wait of a batch (lock_timeout). Token
	// writes meet locks only on rows another transaction deletes or rotates, which
	// takes milliseconds unless a whole client is being deleted; a batch that waits
	// longer costs its requests no more than this before they go alone.
	groupCommitLockTimeout = 100 * time.Millisecond
)

// Outcomes of a batch, for GroupCommitHooks.Batch.
const (
	// BatchCommitted: every request in the batch was committed.
	BatchCommitted = "committed"
	// BatchFailed: every request got the batch's error (the database unreachable, or
	// a batch of one whose write failed).
	BatchFailed = "failed"
	// BatchLockTimeout: the batch waited on a row lock longer than
	// groupCommitLockTimeout; its requests were written alone.
	BatchLockTimeout = "lock_timeout"
	// BatchRetried: the batch failed for another reason (a token of a client deleted
	// meanwhile); its requests were written alone.
	BatchRetried = "retried"
)

// GroupCommitHooks observe the group commit for metrics; nil fields are skipped.
type GroupCommitHooks struct {
	// Batch is called once per batch written, with its number of requests and outcome.
	Batch func(size int, outcome string)
	// QueueWait is called once per request taken into a batch, with how long it
	// waited in the queue for a batch writer.
	QueueWait func(time.Duration)
}

// tokenWrite is one tokens row to insert: tokenInsert's arguments.
type tokenWrite struct {
	args     []any
	clientID string
}

// writeUnit is the writes of one request, committed all together or not at all.
type writeUnit struct {
	// rotations are refresh-token signatures to rotate (see RotateRefreshToken).
	rotations []string
	tokens    []tokenWrite
}

func (u *writeUnit) empty() bool { return len(u.rotations) == 0 && len(u.tokens) == 0 }

// clientID is the client u's tokens are for (a request's are all for one), or "".
func (u *writeUnit) clientID() string {
	if len(u.tokens) == 0 {
		return ""
	}
	return u.tokens[0].clientID
}

// groupCommit gathers units into batches. flush writes units in one transaction,
// committed before it returns; when bounded, its lock waits end after
// groupCommitLockTimeout with an error for which isLockTimeout holds.
type groupCommit struct {
	flush      func(ctx context.Context, units []*writeUnit, bounded bool) error
	maxBatch   int
	maxFlushes int
	// timeout bounds a batch, COMMIT included (the store's commit timeout,
	// DefaultCommitTimeout): it serves many requests, so no single request's
	// context may cancel it. A COMMIT cut short is answered as failed (see
	// errCommitCut).
	timeout time.Duration
	hooks   GroupCommitHooks

	mu      sync.Mutex
	queue   []*queued
	flushes int // running
	// locked counts, per client, its writes that wait alone on a lock (or for their
	// turn to, see lockWaiters): the client's row is locked (its deletion in
	// progress, most likely). Meanwhile its next writes go alone at once instead of
	// costing every batch they join its lock timeout.
	locked map[string]int
	// lockWaiters holds a token per write waiting on a lock with no timeout: they
	// hold a pool connection each as long as the lock is held.
	lockWaiters chan struct{}
}

type queued struct {
	ctx    context.Context // the request's: bounds its write when it goes alone
	unit   *writeUnit
	queued time.Time
	done   chan error // buffered: the flusher never waits for a caller that gave up
}

// commit queues u and waits until it is committed or failed. When ctx ends while u
// still waits in the queue, u is withdrawn and never written; once its batch is
// being written, commit waits for the outcome (bounded by g.timeout, or by
// ctx once u is written alone), so that the caller learns what happened to u rather
// than guessing.
func (g *groupCommit) commit(ctx context.Context, u *writeUnit) error {
	q := &queued{ctx: ctx, unit: u, queued: time.Now(), done: make(chan error, 1)}
	g.mu.Lock()
	if g.locked[u.clientID()] > 0 {
		g.mu.Unlock()
		return g.alone(q, false)
	}
	g.queue = append(g.queue, q)
	if g.flushes < g.maxFlushes {
		g.flushes++
		go g.run()
	}
	g.mu.Unlock()
	select {
	case err := <-q.done:
		return err
	case <-ctx.Done():
	}
	g.mu.Lock()
	for i, other := range g.queue {
		if other == q {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			g.mu.Unlock()
			return ctx.Err()
		}
	}
	g.mu.Unlock()
	return <-q.done
}

// run flushes batches until the queue is empty.
func (g *groupCommit) run() {
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.flushes--
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), g.maxBatch)
		batch := make([]*queued, n)
		copy(batch, g.queue)
		g.queue = append(g.queue[:0], g.queue[n:]...)
		g.mu.Unlock()
		g.write(batch)
	}
}

// write writes batch with bounded lock waits. When that fails for a reason writing
// alone may change, it hands each request to a goroutine of its own and returns, so
// that the batch writer goes on with the queue whatever those requests wait for.
func (g *groupCommit) write(batch []*queued) {
	now := time.Now()
	units := make([]*writeUnit, len(batch))
	for i, q := range batch {
		units[i] = q.unit
		if g.hooks.QueueWait != nil {
			g.hooks.QueueWait(now.Sub(q.queued))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	err := g.flush(ctx, units, true)
	cancel()
	outcome := BatchCommitted
	switch {
	case err == nil:
	case isLockTimeout(err):
		// Even a batch of one: it waited for another transaction, and may wait on,
		// but not in a batch writer.
		outcome = BatchLockTimeout
	case len(batch) == 1 || errors.Is(err, store.ErrUnavailable):
		outcome = BatchFailed
	default:
		// One unit may have failed them all (a token for a client deleted meanwhile).
		outcome = BatchRetried
	}
	if g.hooks.Batch != nil {
		g.hooks.Batch(len(batch), outcome)
	}
	if outcome == BatchCommitted || outcome == BatchFailed {
		for _, q := range batch {
			q.done <- err
		}
		return
	}
	for _, q := range batch {
		// A batch of one that waited on a lock need not try again to know.
		probe := len(batch) > 1 || outcome != BatchLockTimeout
		go func() { q.done <- g.alone(q, probe) }()
	}
}

// alone writes q's unit in a transaction of its own. When probe, it first waits for
// locks no longer than a batch does, which a request that only shared a batch with a
// locked row's needs no more. A write that waits longer marks its client locked and
// waits as long as its request lasts, but as one of at most cap(g.lockWaiters).
func (g *groupCommit) alone(q *queued, probe bool) error {
	units := []*writeUnit{q.unit}
	client := q.unit.clientID()
	g.mu.Lock()
	// The others of a batch that waited on the client's row need not each find out
	// again, holding a connection for the while.
	probe = probe && g.locked[client] == 0
	g.mu.Unlock()
	if probe {
		if err := g.flush(q.ctx, units, true); !isLockTimeout(err) {
			return err
		}
	}
	g.countLocked(client, 1)
	defer g.countLocked(client, -1)
	select {
	case g.lockWaiters <- struct{}{}:
	case <-q.ctx.Done():
		return q.ctx.Err()
	}
	defer func() { <-g.lockWaiters }()
	return g.flush(q.ctx, units, false)
}

func (g *groupCommit) countLocked(client string, n int) {
	if client == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.locked == nil {
		g.locked = map[string]int{}
	}
	if g.locked[client] += n; g.locked[client] == 0 {
		delete(g.locked, client)
	}
}

// lockTimeoutSQL sets groupCommitLockTimeout for the rest of a transaction. SET LOCAL
// rather than a connection parameter: it works behind a transaction-mode pooler and
// leaves the pool's connections as they were.
var lockTimeoutSQL = fmt.Sprintf(`SET LOCAL lock_timeout = '%dms'`, groupCommitLockTimeout.Milliseconds())

// flushUnits writes units in one statement: one transaction, committed before it
// returns. Access tokens that rotations revoke leave this replica's cache once it
// committed, and the others' through the NOTIFY sent in the same transaction. When
// bounded, the statement runs in a transaction whose lock waits end after
// groupCommitLockTimeout; otherwise alone, as its own transaction, waiting as long as
// ctx lets it.
func (s *Store) flushUnits(ctx context.Context, units []*writeUnit, bounded bool) error {
	var rotations []string
	var rows []tokenWrite
	for _, u := range units {
		rotations = append(rotations, u.rotations...)
		rows = append(rows, u.tokens...)
	}
	args, err := batchArgs(rows)
	if err != nil {
		return err
	}
	query := s.batchSQL.insert
	if len(rotations) > 0 {
		args = append([]any{s.now(), pq.Array(rotations), TokensChannel}, args...)
		query = s.batchSQL.rotate
	}
	// Prepared once per connection: the text is the same for every batch. Before
	// the transaction takes its connection: the first preparation takes one of its
	// own, and a writer that held one while waiting for another could deadlock the
	// pool.
	stmt, err := s.prepare(ctx, query) //nolint:sqlclosecheck // the store's, closed by Close
	if err != nil {
		return s.unitErr(ctx, err, rows)
	}
	// A batch with rotations commits only if every rotated refresh token still
	// exists, which the statement's result tells: it needs a transaction of its own
	// even when not bounded.
	var tx *sql.Tx
	if bounded || len(rotations) > 0 {
		var err error
		if tx, err = s.db.BeginTx(ctx, nil); err != nil {
			return s.mapErr(ctx, err)
		}
		defer func() { _ = tx.Rollback() }() // after Commit: sql.ErrTxDone, ignored
		if bounded {
			if _, err := tx.ExecContext(ctx, lockTimeoutSQL); err != nil {
				return s.mapErr(ctx, err)
			}
		}
	}
	if tx != nil {
		stmt = tx.StmtContext(ctx, stmt)
		defer func() { _ = stmt.Close() }() // the transaction's, not the store's
	}
	dbRows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return s.unitErr(ctx, err, rows)
	}
	defer func() { _ = dbRows.Close() }()
	var gone []string
	rotatedRows := -1
	for dbRows.Next() {
		if err := scanRotationRow(dbRows, &gone, &rotatedRows); err != nil {
			return s.mapErr(ctx, err)
		}
	}
	// Without a transaction of its own, the statement's commit error (a deferred
	// constraint, a failed WAL flush) comes here; with one, from tx.Commit.
	if err := dbRows.Err(); err != nil {
		return s.unitErr(ctx, err, rows)
	}
	if err := dbRows.Close(); err != nil {
		return s.unitErr(ctx, err, rows)
	}
	if tx != nil {
		if len(rotations) > 0 && rotatedRows < distinct(rotations) {
			// Rolled back. Retried alone, the unit whose token is gone fails alone.
			return errRefreshRevoked
		}
		// Deferred constraints and the WAL flush fail here.
		if err := tx.Commit(); err != nil {
			return s.unitErr(ctx, err, rows)
		}
	}
	for _, sig := range gone {
		s.tokens.drop(Invalidation{Signature: sig})
	}
	if ctx.Err() != nil {
		return errCommitCut
	}
	return nil
}

// scanRotationRow reads a row of batchRotate's result: an access token the rotations
// deleted, or, with no signature, the count of refresh tokens rotated.
func scanRotationRow(row scanner, gone *[]string, rotated *int) error {
	var sig sql.NullString
	var notified string
	if err := row.Scan(&sig, &notified); err != nil {
		return err
	}
	if !sig.Valid {
		n, err := strconv.Atoi(notified)
		*rotated = n
		return err
	}
	*gone = append(*gone, sig.String)
	return nil
}

// errCommitCut answers the requests of a write whose context ended while its COMMIT
// waited. PostgreSQL then keeps the transaction committed locally and reports
// success, but a COMMIT waiting for a synchronous standby was cut short: the rows may
// not be on the standby, and a failover to it would lose them. An answer that
// handed them out would break the promise that an answered token survives, so the
// requests fail instead. Nothing is lost by that: a token never answered is never
// used, and a refresh whose answer failed after its rotation committed is a lost
// answer, which the client's retry within the refresh grace period recovers. It
// wraps ErrUnavailable, so that the batch is failed, not retried: retrying rows that
// may be committed would only fail on them.
var errCommitCut = fmt.Errorf("%w: the commit's wait for the database was cut short; it may not be replicated", store.ErrUnavailable)

func distinct(ss []string) int {
	seen := make(map[string]bool, len(ss))
	for _, x := range ss {
		seen[x] = true
	}
	return len(seen)
}

// unitErr maps a failed write as createToken would: a foreign-key violation means
// the client is gone.
func (s *Store) unitErr(ctx context.Context, err error, rows []tokenWrite) error {
	if isForeignKeyViolation(err) && len(rows) > 0 {
		return fmt.Errorf("%w: %s", store.ErrClientGone, rows[0].clientID)
	}
	return s.mapErr(ctx, err)
}

// A batch is written by one of two statements whose text does not depend on its
// size (the rows come as one array per column, unnested), so that each is prepared
// once per connection instead of parsed and planned for every batch: with a
// statement of its own per batch size, planning cost PostgreSQL about a quarter of
// a token's CPU.

// batchColumnTypes are the types of tokenInsert's columns as batchArgs sends them:
// arrays of scopes and audiences, and the JSON, as text, cast back by batchInsert.
var batchColumnTypes = [...]string{pgText, pgText, pgText, pgText, pgText, pgText, pgText, "timestamptz", "timestamptz",
	pgText, pgText, pgText, pgText, pgText, pgText}

const pgText = "text"

// batchInsert is tokenInsert for any number of rows, its parameters numbered from
// first on, one array per column.
func batchInsert(first int) string {
	head, _, _ := strings.Cut(tokenInsert, "VALUES")
	var b strings.Builder
	b.WriteString(strings.TrimSpace(head))
	b.WriteString("\nSELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10::text[], c11::text[], c12::text[], c13::text[], c14::jsonb, c15::jsonb" +
		"\nFROM unnest(")
	for i, t := range batchColumnTypes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d::%s[]", first+i, t)
	}
	b.WriteString(") AS u(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15)")
	return b.String()
}

// batchRotate writes rotations ($2, at $1) with their new rows ($4 on, as
// batchInsert's) in one statement, and notifies ($3) the other replicas of the
// access tokens gone. The used refresh tokens become inactive, remembering when,
// unless rotated before (a grace-period reuse keeps its first rotation time); the
// access token each was issued with goes. The UPDATE does not skip rows rotated
// before, so that a row revoked while this waited for its lock is missing from
// rotated (see rotate); the last row counts them.
//
// Each token is found by its whole primary key (byKey) and joined to the row to
// change on that key. The plain form, kind = … AND signature = ANY(…), let the
// planner read every token of the kind whenever its statistics said the kind was
// rare — as they do after an ANALYZE that ran before the first refresh, for
// minutes — 10–35 ms a batch at 20,000 refresh tokens, growing with the table
// (TestRotationBatchFindsTokensByKeyWhateverTheStatistics). Joined on the key, a
// row another transaction rotated while this waited for its lock is still updated
// at its newest version, and a row it deleted is missing
// (TestRotationBatchAfterAConcurrentRotationOrRevocation); by row address
// (ctid), PostgreSQL's recheck would drop the rotated row as well.
func batchRotate() string {
	return `WITH rotated AS (
    UPDATE tokens t SET active = false, rotated_at = coalesce(t.rotated_at, $1)
    FROM (` + byKey(kindRefreshToken, "unnest($2::text[]) AS r(sig)", "r.sig", "") + `) k
    WHERE t.kind = k.kind AND t.signature = k.signature
    RETURNING t.signature, t.access_signature, t.rotated_at = $1 AS first),
gone AS (
    DELETE FROM tokens t USING (` + byKey(kindAccessToken, "rotated r", "r.access_signature", "r.first") + `) k
    WHERE t.kind = k.kind AND t.signature = k.signature
    RETURNING t.signature),
added AS (` + batchInsert(4) + ` RETURNING 1)
SELECT signature, pg_notify($3, '` + invalidationSignaturePrefix + `' || signature)::text FROM gone
UNION ALL SELECT NULL, count(*)::text FROM rotated`
}

// byKey selects the keys (kind, signature) of the tokens of kind whose signatures
// are sig, one per row of from that meets where (if not empty). The lateral
// subquery with its LIMIT is not flattened into the join, so each signature is an
// equality on the primary key's second column, always an index condition; and the
// row to change, joined on a key the planner cannot see is constant in kind, is
// found through the primary key too, since any other plan reads the whole table.
func byKey(kind, from, sig, where string) string {
	q := `SELECT x.kind, x.signature FROM ` + from + `,
        LATERAL (SELECT kind, signature FROM tokens WHERE kind = '` + kind + `' AND signature = ` + sig + ` LIMIT 1) x`
	if where != "" {
		q += "\n        WHERE " + where
	}
	return q
}

// batchArgs are rows as batchInsert's parameters: for each column, the rows' values
// as text (NULL kept), in an array.
func batchArgs(rows []tokenWrite) ([]any, error) {
	cols := make([][]sql.NullString, len(batchColumnTypes))
	for _, row := range rows {
		for j, a := range row.args {
			v, err := driver.DefaultParameterConverter.ConvertValue(a)
			if err != nil {
				return nil, err
			}
			var text sql.NullString
			switch x := v.(type) {
			case nil:
			case string:
				text = sql.NullString{String: x, Valid: true}
			case []byte:
				text = sql.NullString{String: string(x), Valid: true}
			case time.Time:
				text = sql.NullString{String: x.UTC().Format(time.RFC3339Nano), Valid: true}
			default:
				return nil, fmt.Errorf("token column %d: unexpected %T", j+1, v)
			}
			cols[j] = append(cols[j], text)
		}
	}
	args := make([]any, len(cols))
	for j, col := range cols {
		args[j] = pq.Array(col)
		if !slices.ContainsFunc(col, func(v sql.NullString) bool { return !v.Valid }) {
			// Without NULLs, as pq.StringArray, which encodes without reflection.
			strs := make(pq.StringArray, len(col))
			for i, v := range col {
				strs[i] = v.String
			}
			args[j] = strs
		}
	}
	return args, nil
}
