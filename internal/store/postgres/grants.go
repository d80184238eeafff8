package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

const grantColumns = `id, client_id, subject, scopes, source, granted_at, last_used_at, expires_at`

// grantWithTokens reads a grant and how many of its tokens (access and refresh) are
// live: the tokens index by grant_id keeps the count cheap.
const grantWithTokens = `SELECT ` + grantColumns + `, (SELECT count(*) FROM tokens t
 WHERE t.grant_id = consent_grants.id AND t.active AND t.kind IN ('` + kindAccessToken + `', '` + kindRefreshToken + `')
   AND (t.expires_at IS NULL OR t.expires_at > now())) FROM consent_grants`

// PutGrant stores the grant for (ClientID, Subject). A declared grant replaces the
// scopes (git is the truth); a browser consent widens them (the user approved more).
// When the stored grant changes, EventConsentGiven is logged.
func (s *Store) PutGrant(ctx context.Context, g *store.ConsentGrant) (*store.ConsentGrant, error) {
	var out *store.ConsentGrant
	err := s.inTx(ctx, func(q querier) error {
		old, err := scanGrant(q.QueryRowContext(ctx,
			`SELECT `+grantColumns+` FROM consent_grants WHERE client_id = $1 AND subject = $2 FOR UPDATE`, g.ClientID, g.Subject))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			old = nil
		case err != nil:
			return err
		}
		next := *g
		next.Scopes = slices.Clone(g.Scopes)
		if old != nil {
			next.ID, next.GrantedAt, next.LastUsedAt = old.ID, old.GrantedAt, old.LastUsedAt
			if g.Source == store.SourceBrowser {
				next.Scopes = union(old.Scopes, g.Scopes)
				if old.Source == store.SourceDeclared {
					next.Source = store.SourceDeclared
				}
			}
			if slices.Equal(sorted(old.Scopes), sorted(next.Scopes)) && old.Source == next.Source &&
				old.ExpiresAt.Equal(next.ExpiresAt) {
				out = old
				return nil
			}
		} else {
			next.ID = newID()
			next.GrantedAt = s.now()
		}
		next.Scopes = sorted(next.Scopes)
		if _, err := q.ExecContext(ctx, `
INSERT INTO consent_grants (id, client_id, subject, scopes, source, granted_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET scopes = EXCLUDED.scopes, source = EXCLUDED.source, expires_at = EXCLUDED.expires_at`,
			next.ID, next.ClientID, next.Subject, pq.Array(next.Scopes), next.Source, next.GrantedAt,
			nullTime(next.ExpiresAt)); err != nil {
			if isForeignKeyViolation(err) {
				return store.ErrNotFound
			}
			return err
		}
		if err := s.appendEvent(ctx, q, store.Event{Kind: store.EventConsentGiven, ClientID: next.ClientID,
			Subject: next.Subject, GrantID: next.ID, Scopes: next.Scopes}); err != nil {
			return err
		}
		out = &next
		return nil
	})
	return out, err
}

// GetGrant returns the grant of subject to clientID, or store.ErrNotFound.
func (s *Store) GetGrant(ctx context.Context, clientID, subject string) (*store.ConsentGrant, error) {
	g, err := scanGrantRow(s.q(ctx).QueryRowContext(ctx,
		grantWithTokens+` WHERE client_id = $1 AND subject = $2`, clientID, subject), true)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return g, s.mapErr(err)
}

// ListGrants returns the grants matching f, by client then subject.
func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter) ([]*store.ConsentGrant, error) {
	rows, err := s.q(ctx).QueryContext(ctx, grantWithTokens+`
WHERE ($1 = '' OR client_id = $1) AND ($2 = '' OR subject = $2) ORDER BY client_id, subject`, f.ClientID, f.Subject)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer func() { _ = rows.Close() }()
	out := []*store.ConsentGrant{}
	for rows.Next() {
		g, err := scanGrantRow(rows, true)
		if err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, g)
	}
	return out, s.mapErr(rows.Err())
}

// RevokeGrant deletes the grant and every token issued under it, and logs it.
func (s *Store) RevokeGrant(ctx context.Context, clientID, subject string) error {
	return s.inTx(ctx, func(q querier) error {
		var id string
		err := q.QueryRowContext(ctx, `DELETE FROM consent_grants WHERE client_id = $1 AND subject = $2 RETURNING id`,
			clientID, subject).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := q.ExecContext(ctx, `DELETE FROM tokens WHERE grant_id = $1`, id); err != nil {
			return err
		}
		if err := s.tokensGone(ctx, q, Invalidation{GrantID: id}); err != nil {
			return err
		}
		err = s.appendEvent(ctx, q, store.Event{Kind: store.EventGrantRevoked, ClientID: clientID, Subject: subject, GrantID: id})
		return err
	})
}

// TouchGrant records that the grant was used at at. It writes at most once a minute
// per grant, so busy apps do not turn every token into a grant update.
func (s *Store) TouchGrant(ctx context.Context, id string, at time.Time) error {
	_, err := s.q(ctx).ExecContext(ctx, `UPDATE consent_grants SET last_used_at = $2
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')`, id, at.UTC())
	return s.mapErr(err)
}

func scanGrant(row scanner) (*store.ConsentGrant, error) { return scanGrantRow(row, false) }

// scanGrantRow scans grantColumns, then the live token count when withTokens.
func scanGrantRow(row scanner, withTokens bool) (*store.ConsentGrant, error) {
	var (
		g                 store.ConsentGrant
		lastUsed, expires sql.NullTime
	)
	dest := []any{&g.ID, &g.ClientID, &g.Subject, pq.Array(&g.Scopes), &g.Source, &g.GrantedAt, &lastUsed, &expires}
	if withTokens {
		dest = append(dest, &g.ActiveTokens)
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	g.LastUsedAt, g.ExpiresAt = lastUsed.Time, expires.Time
	return &g, nil
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func isForeignKeyViolation(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23503"
}
