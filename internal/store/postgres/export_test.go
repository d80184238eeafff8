package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// ParseMigrations is parseMigrations, for tests of the file rules.
var ParseMigrations = parseMigrations

// AfterClientRead makes GetClientByID call f after reading a client from the database
// and before caching it.
func AfterClientRead(s *Store, f func(id string)) { s.testHooks.afterClientRead = f }

// AfterTokenRead makes access-token lookups call f after reading a token from the
// database and before caching it.
func AfterTokenRead(s *Store, f func(signature string)) { s.testHooks.afterTokenRead = f }

// TokenCacheTTL is tokenCacheTTL, for the staleness-bound test.
const TokenCacheTTL = tokenCacheTTL

// LoadMigrations is Migrations returning its error instead of panicking.
var LoadMigrations = loadMigrations

// CurrentXID is pg_current_xact_id() of the transaction on ctx (BeginTX's), so that
// a test can tell which transaction a captured change came from.
func CurrentXID(ctx context.Context, s *Store) (uint64, error) {
	var xid string
	if err := s.q(ctx).QueryRowContext(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
		return 0, err
	}
	return strconv.ParseUint(xid, 10, 64)
}

// ReplayLockKey is the advisory lock a replay pass holds on its target.
var ReplayLockKey = replayLock

// GroupCommitMaxFlushes is how many group-commit batches are written at once.
const GroupCommitMaxFlushes = groupCommitMaxFlushes

// GroupCommitLockWaits is how many of clientID's writes wait alone on a lock (or
// for their turn to): while any does, its next writes skip the batches.
func GroupCommitLockWaits(s *Store, clientID string) int {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.locked[clientID]
}

// GroupCommitIdle says whether no batch is queued or being written.
func GroupCommitIdle(s *Store) bool {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return len(s.group.queue) == 0 && s.group.flushes == 0
}

// SetGroupCommitTimeout bounds s's batches by d instead of its commit timeout.
func SetGroupCommitTimeout(s *Store, d time.Duration) { s.group.timeout = d }

// ExplainRotation runs the group commit's rotation statement for the refresh tokens
// sigs (and no new rows) under EXPLAIN ANALYZE, in a transaction it rolls back, and
// returns the plan as JSON.
func ExplainRotation(ctx context.Context, s *Store, sigs []string) ([]byte, error) {
	var plan []byte
	err := rotationStatement(ctx, s, "EXPLAIN (ANALYZE, FORMAT JSON) ", sigs, false, func(row scanner) error {
		return row.Scan(&plan)
	})
	return plan, err
}

// RotateInBatch runs the group commit's rotation statement for the refresh tokens
// sigs (and no new rows) in a transaction of its own, committed, and returns how many
// refresh tokens it rotated and which access tokens it deleted, as flushUnits reads them.
func RotateInBatch(ctx context.Context, s *Store, sigs []string) (rotated int, gone []string, err error) {
	err = rotationStatement(ctx, s, "", sigs, true, func(row scanner) error {
		return scanRotationRow(row, &gone, &rotated)
	})
	return rotated, gone, err
}

func rotationStatement(ctx context.Context, s *Store, prefix string, sigs []string, commit bool, each func(scanner) error) error {
	args, err := batchArgs(nil)
	if err != nil {
		return err
	}
	args = append([]any{s.now(), pq.Array(sigs), TokensChannel}, args...)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := queryRows(ctx, tx, each, prefix+s.batchSQL.rotate, args...); err != nil || !commit {
		return err
	}
	return tx.Commit()
}
