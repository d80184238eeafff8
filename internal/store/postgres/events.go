package postgres

import (
	"context"
	"strconv"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// NotifyChannel is the LISTEN/NOTIFY channel on which every appended event's sequence
// number is announced.
const NotifyChannel = "kubeoauth_events"

// eventLockID serialises appends to the event log. A sequence alone hands out numbers
// in call order, not commit order: a reader could see seq 8 committed while seq 7 is
// still open, move its cursor past 7 and never see it. Holding this lock from nextval
// to commit makes seq order commit order. Revocations and consents are rare next to
// token issuance, so the lock costs nothing where it matters.
const eventLockID = 0x6b6f6175_6576656e // "koauEven"

// appendEvent adds ev to the log inside q, which must be a transaction.
func (s *Store) appendEvent(ctx context.Context, q querier, ev store.Event) error {
	if _, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(eventLockID)); err != nil {
		return err
	}
	var seq int64
	scopes := ev.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	if err := q.QueryRowContext(ctx, `
INSERT INTO events (kind, client_id, subject, grant_id, request_id, scopes)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
		ev.Kind, ev.ClientID, ev.Subject, ev.GrantID, ev.RequestID, pq.Array(scopes)).Scan(&seq); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, strconv.FormatInt(seq, 10))
	if err == nil && s.opts.Hooks.Event != nil {
		s.opts.Hooks.Event(ev.Kind)
	}
	return err
}

// Events returns up to limit events after seq after, oldest first.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	rows, err := s.q(ctx).QueryContext(ctx, `
SELECT seq, at, kind, client_id, subject, grant_id, request_id, scopes
FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	defer func() { _ = rows.Close() }()
	out := []store.Event{}
	for rows.Next() {
		var ev store.Event
		if err := rows.Scan(&ev.Seq, &ev.At, &ev.Kind, &ev.ClientID, &ev.Subject, &ev.GrantID, &ev.RequestID,
			pq.Array(&ev.Scopes)); err != nil {
			return nil, s.mapErr(ctx, err)
		}
		out = append(out, ev)
	}
	return out, s.mapErr(ctx, rows.Err())
}

// LastEventSeq is the highest committed sequence number, 0 when the log is empty.
func (s *Store) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.q(ctx).QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&seq)
	return seq, s.mapErr(ctx, err)
}
