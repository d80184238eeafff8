package postgres

import (
	"context"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// janitorLockID makes one replica at a time clean up; the others skip the pass.
const janitorLockID = 0x6b6f6175_6a616e69 // "koaujani"

// DeleteExpired removes up to batch rows past their expiry: tokens, sign-in sessions,
// client-assertion JWT IDs and events older than a week; and it revokes up to batch expired consent
// grants exactly as RevokeGrant does (tokens, caches on every replica, and
// EventGrantRevoked, which the operator's mirror follows). Small batches keep each
// transaction short, so the janitor never holds locks that token requests wait on.
// When another replica's janitor is running it returns 0 at once.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time, batch int) (int, error) {
	total := 0
	err := s.inTx(ctx, func(ctx context.Context, q querier) error {
		var locked bool
		if err := q.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(janitorLockID)).Scan(&locked); err != nil || !locked {
			return err
		}
		expired, err := s.deleteExpiredGrants(ctx, q, now, batch)
		if err != nil {
			return err
		}
		total += expired
		// Ordered by expiry, so that each is an index scan from the oldest whatever
		// the statistics say: unordered, a table whose statistics promised many expired
		// rows was read whole, every pass, when few were.
		for _, stmt := range []string{
			`DELETE FROM tokens WHERE ctid = ANY (ARRAY(SELECT ctid FROM tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2))`,
			`DELETE FROM sign_in_sessions WHERE id = ANY (ARRAY(
    SELECT id FROM sign_in_sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2))`,
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

// deleteExpiredGrants revokes up to batch grants whose expiry has come.
func (s *Store) deleteExpiredGrants(ctx context.Context, q querier, now time.Time, batch int) (int, error) {
	var gone []*store.ConsentGrant
	err := queryRows(ctx, q, func(row scanner) error {
		g := &store.ConsentGrant{}
		gone = append(gone, g)
		return row.Scan(&g.ID, &g.ClientID, &g.Subject)
	}, `DELETE FROM consent_grants WHERE id = ANY (ARRAY(
    SELECT id FROM consent_grants WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING id, client_id, subject`, now.UTC(), batch)
	if err != nil {
		return 0, err
	}
	for _, g := range gone {
		if err := s.grantRevoked(ctx, q, g); err != nil {
			return 0, err
		}
	}
	return len(gone), nil
}
