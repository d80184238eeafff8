package postgres

import (
	"context"
	"time"
)

// janitorLockID makes one replica at a time clean up; the others skip the pass.
const janitorLockID = 0x6b6f6175_6a616e69 // "koaujani"

// DeleteExpired removes up to batch rows past their expiry: tokens, consent grants and
// client-assertion JWT IDs, plus events older than a week. Small batches keep each
// transaction short, so the janitor never holds locks that token requests wait on.
// When another replica's janitor is running it returns 0 at once.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time, batch int) (int, error) {
	total := 0
	err := s.inTx(ctx, func(q querier) error {
		var locked bool
		if err := q.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(janitorLockID)).Scan(&locked); err != nil || !locked {
			return err
		}
		for _, stmt := range []string{
			`DELETE FROM tokens WHERE ctid = ANY (ARRAY(SELECT ctid FROM tokens WHERE expires_at < $1 LIMIT $2))`,
			`DELETE FROM consent_grants WHERE id = ANY (ARRAY(SELECT id FROM consent_grants WHERE expires_at < $1 LIMIT $2))`,
			`DELETE FROM client_assertion_jtis WHERE jti = ANY (ARRAY(SELECT jti FROM client_assertion_jtis WHERE expires_at < $1 LIMIT $2))`,
			`DELETE FROM events WHERE seq = ANY (ARRAY(SELECT seq FROM events WHERE at < $1::timestamptz - interval '7 days' LIMIT $2))`,
		} {
			res, err := q.ExecContext(ctx, stmt, now.UTC(), batch)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += int(n)
		}
		return nil
	})
	return total, err
}
