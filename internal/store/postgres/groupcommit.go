package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// Bounds of group commit: units per statement (each at most a few rows of 15
// parameters, far below PostgreSQL's 65,535), and statements in flight at once, so
// that the commits of a few batches overlap rather than queue behind each other.
const (
	groupCommitMaxBatch   = 128
	groupCommitMaxFlushes = 4
	// groupCommitTimeout bounds a batch's statement: it serves many requests, so no
	// single request's context may cancel it.
	groupCommitTimeout = 30 * time.Second
)

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

// groupCommit gathers units into batches. flush writes a batch in one transaction and
// returns each unit's error when the batch as a whole succeeded or failed for a
// reason that retrying alone would not change.
type groupCommit struct {
	flush      func(units []*writeUnit) error
	maxBatch   int
	maxFlushes int

	mu      sync.Mutex
	queue   []*queued
	flushes int // running
}

type queued struct {
	unit *writeUnit
	done chan error // buffered: the flusher never waits for a caller that gave up
}

// commit queues u and waits until it is committed or failed. When ctx ends while u
// still waits in the queue, u is withdrawn and never written; once its batch is
// being written, commit waits for the outcome (bounded by groupCommitTimeout), so
// that the caller learns what happened to u rather than guessing.
func (g *groupCommit) commit(ctx context.Context, u *writeUnit) error {
	q := &queued{unit: u, done: make(chan error, 1)}
	g.mu.Lock()
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

func (g *groupCommit) write(batch []*queued) {
	units := make([]*writeUnit, len(batch))
	for i, q := range batch {
		units[i] = q.unit
	}
	err := g.flush(units)
	if err == nil || len(batch) == 1 || errors.Is(err, store.ErrUnavailable) {
		for _, q := range batch {
			q.done <- err
		}
		return
	}
	// One unit may have failed them all (a token for a client deleted meanwhile):
	// each alone, each gets its own answer.
	for _, q := range batch {
		q.done <- g.flush([]*writeUnit{q.unit})
	}
}

// flushUnits writes units in one statement: one transaction, committed before it
// returns. Access tokens that rotations revoke leave this replica's cache once it
// committed, and the others' through the NOTIFY sent in the same transaction.
func (s *Store) flushUnits(units []*writeUnit) error {
	ctx, cancel := context.WithTimeout(context.Background(), groupCommitTimeout)
	defer cancel()
	var rotations []string
	var rows []tokenWrite
	for _, u := range units {
		rotations = append(rotations, u.rotations...)
		rows = append(rows, u.tokens...)
	}
	var args []any
	var query strings.Builder
	if len(rotations) > 0 {
		args = append(args, s.now(), pq.Array(rotations), TokensChannel)
		// The used refresh tokens become inactive, remembering when, unless rotated
		// before (a grace-period reuse keeps its first rotation time); the access
		// token each was issued with goes. The UPDATE does not skip rows rotated
		// before, so that a row revoked while this waited for its lock is missing
		// from rotated (see rotate); the last row counts them.
		query.WriteString(`WITH rotated AS (
    UPDATE tokens SET active = false, rotated_at = coalesce(rotated_at, $1)
    WHERE kind = '` + kindRefreshToken + `' AND signature = ANY($2::text[])
    RETURNING signature, access_signature, rotated_at = $1 AS first),
gone AS (
    DELETE FROM tokens WHERE kind = '` + kindAccessToken + `' AND signature IN (SELECT access_signature FROM rotated WHERE first)
    RETURNING signature)`)
		if len(rows) > 0 {
			query.WriteString(",\nadded AS (")
			writeTokenInsert(&query, &args, rows)
			query.WriteString(" RETURNING 1)")
		}
		query.WriteString("\nSELECT signature, pg_notify($3, '" + invalidationSignaturePrefix + "' || signature)::text FROM gone" +
			"\nUNION ALL SELECT NULL, count(*)::text FROM rotated")
	} else {
		writeTokenInsert(&query, &args, rows)
	}
	// A batch with rotations commits only if every rotated refresh token still
	// exists, which the statement's result tells: it runs in a transaction of its own.
	var q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	} = s.db
	var tx *sql.Tx
	if len(rotations) > 0 {
		var err error
		if tx, err = s.db.BeginTx(ctx, nil); err != nil {
			return s.mapErr(err)
		}
		defer func() { _ = tx.Rollback() }()
		q = tx
	}
	dbRows, err := q.QueryContext(ctx, query.String(), args...)
	if err != nil {
		return s.unitErr(err, rows)
	}
	defer func() { _ = dbRows.Close() }()
	var gone []string
	rotatedRows := -1
	for dbRows.Next() {
		var sig sql.NullString
		var notified string
		if err := dbRows.Scan(&sig, &notified); err != nil {
			return s.mapErr(err)
		}
		if !sig.Valid {
			if rotatedRows, err = strconv.Atoi(notified); err != nil {
				return err
			}
			continue
		}
		gone = append(gone, sig.String)
	}
	// Without a transaction of its own, the statement's commit error (a deferred
	// constraint, a failed WAL flush) comes here; with one, from tx.Commit.
	if err := dbRows.Err(); err != nil {
		return s.unitErr(err, rows)
	}
	if err := dbRows.Close(); err != nil {
		return s.unitErr(err, rows)
	}
	if tx != nil {
		if rotatedRows < distinct(rotations) {
			// Rolled back. Retried alone, the unit whose token is gone fails alone.
			return errRefreshRevoked
		}
		if err := tx.Commit(); err != nil {
			return s.unitErr(err, rows)
		}
	}
	for _, sig := range gone {
		s.tokens.drop(Invalidation{Signature: sig})
	}
	return nil
}

func distinct(ss []string) int {
	seen := make(map[string]bool, len(ss))
	for _, x := range ss {
		seen[x] = true
	}
	return len(seen)
}

// unitErr maps a failed write as createToken would: a foreign-key violation means
// the client is gone.
func (s *Store) unitErr(err error, rows []tokenWrite) error {
	if isForeignKeyViolation(err) && len(rows) > 0 {
		return fmt.Errorf("%w: %s", store.ErrClientGone, rows[0].clientID)
	}
	return s.mapErr(err)
}

// writeTokenInsert writes tokenInsert for all rows, numbering their parameters after
// those already in args, and appends their arguments.
func writeTokenInsert(query *strings.Builder, args *[]any, rows []tokenWrite) {
	head, _, _ := strings.Cut(tokenInsert, "VALUES")
	query.WriteString(strings.TrimSpace(head))
	query.WriteString("\nVALUES ")
	for i, row := range rows {
		if i > 0 {
			query.WriteString(", ")
		}
		query.WriteByte('(')
		for j, a := range row.args {
			if j > 0 {
				query.WriteString(", ")
			}
			*args = append(*args, a)
			query.WriteString("$" + strconv.Itoa(len(*args)))
		}
		query.WriteByte(')')
	}
}
