package postgres

import (
	"context"
	"database/sql"
	"errors"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// CreateSignInSession stores a sign-in session. Session IDs are random, so a clash
// is a defect and fails as one.
func (s *Store) CreateSignInSession(ctx context.Context, ss *store.SignInSession) error {
	_, err := s.q(ctx).ExecContext(ctx,
		`INSERT INTO sign_in_sessions (id, subject, created_at, expires_at, identity) VALUES ($1, $2, $3, $4, $5)`,
		ss.ID, ss.Subject, ss.CreatedAt.UTC(), ss.ExpiresAt.UTC(), nullJSON(ss.Identity))
	return s.mapErr(ctx, err)
}

// GetSignInSession reads the session from the database on every call, with no cache:
// a sign-out on another replica must count at once, and pages are not hot enough
// for one primary-key read to matter.
func (s *Store) GetSignInSession(ctx context.Context, id string) (*store.SignInSession, error) {
	if !storable(id) {
		return nil, store.ErrNotFound
	}
	ss := &store.SignInSession{ID: id}
	err := s.q(ctx).QueryRowContext(ctx,
		`SELECT subject, created_at, expires_at, identity FROM sign_in_sessions WHERE id = $1 AND expires_at > $2`,
		id, s.now()).Scan(&ss.Subject, &ss.CreatedAt, &ss.ExpiresAt, &ss.Identity)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	return ss, nil
}

// EndSignInSession deletes the session's row: nothing about an ended session is
// needed later, and a missing row is what GetSignInSession refuses.
func (s *Store) EndSignInSession(ctx context.Context, id string) error {
	_, err := s.q(ctx).ExecContext(ctx, `DELETE FROM sign_in_sessions WHERE id = $1`, id)
	return s.mapErr(ctx, err)
}

// nullJSON stores an absent identity as NULL: jsonb refuses an empty string.
func nullJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}
