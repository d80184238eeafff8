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
// When the stored grant changes, EventConsentGiven is logged; when its scopes narrow,
// the tokens issued under it for scopes it no longer covers are revoked. A grant
// already expired is revoked as RevokeGrant would, and a new one takes its place; a
// grant that arrives expired revokes the one standing and is not stored (its ID is
// empty).
func (s *Store) PutGrant(ctx context.Context, g *store.ConsentGrant) (*store.ConsentGrant, error) {
	var out *store.ConsentGrant
	err := s.inTx(ctx, func(ctx context.Context, q querier) error {
		if g.Source == store.SourceFirstParty {
			if err := firstParty(ctx, q, g.ClientID); err != nil {
				return err
			}
		}
		if err := clientOwnedBy(ctx, q, g.ClientID, g.Owner); err != nil {
			return err
		}
		old, err := scanGrant(q.QueryRowContext(ctx,
			`SELECT `+grantColumns+` FROM consent_grants WHERE client_id = $1 AND subject = $2 FOR UPDATE`, g.ClientID, g.Subject))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			old = nil
		case err != nil:
			return err
		}
		if old != nil && !old.ExpiresAt.IsZero() && !s.now().Before(old.ExpiresAt) {
			if _, err := q.ExecContext(ctx, `DELETE FROM consent_grants WHERE id = $1`, old.ID); err != nil {
				return err
			}
			if err := s.grantRevoked(ctx, q, old); err != nil {
				return err
			}
			old = nil
		}
		next := *g
		next.Scopes = slices.Clone(g.Scopes)
		if !next.ExpiresAt.IsZero() && !s.now().Before(next.ExpiresAt) {
			// Expired on arrival (a declared grant reconciled after its expiry): it
			// revokes what stands and stores nothing, so that the next identical PUT
			// changes nothing and logs nothing.
			if old != nil {
				if _, err := q.ExecContext(ctx, `DELETE FROM consent_grants WHERE id = $1`, old.ID); err != nil {
					return err
				}
				if err := s.grantRevoked(ctx, q, old); err != nil {
					return err
				}
			}
			out = &next
			return nil
		}
		if old != nil {
			next = merged(old, g, s.now())
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
		if old != nil {
			if err := s.narrowed(ctx, q, &next); err != nil {
				return err
			}
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

// merged is what grant old becomes when g is put over it (neither expired).
func merged(old, g *store.ConsentGrant, now time.Time) store.ConsentGrant {
	next := *g
	next.Scopes = slices.Clone(g.Scopes)
	next.ID, next.GrantedAt, next.LastUsedAt = old.ID, old.GrantedAt, old.LastUsedAt
	switch {
	case g.Source == store.SourceFirstParty && old.Covers(g.Scopes, now):
		return *old // what stands already allows it; a user's consent stays theirs
	case g.Source == store.SourceFirstParty:
		next.Scopes = union(old.Scopes, g.Scopes)
		if old.Source == store.SourceDeclared {
			next.ExpiresAt = old.ExpiresAt
		}
	case g.Source == store.SourceBrowser && old.Source == store.SourceFirstParty:
		// The user was asked for these scopes only; the rest was never theirs to
		// give, and its tokens go (PutGrant's narrowing).
	case g.Source == store.SourceBrowser:
		next.Scopes = union(old.Scopes, g.Scopes)
		if old.Source == store.SourceDeclared {
			next.Source = store.SourceDeclared
			next.ExpiresAt = old.ExpiresAt // a consent page does not lift a declared expiry
		}
	}
	return next
}

// firstParty locks client id's row against a concurrent PutClient (FOR SHARE waits
// for its update and then reads what it wrote) and fails unless it skips consent.
func firstParty(ctx context.Context, q querier, id string) error {
	var skip bool
	err := q.QueryRowContext(ctx, `SELECT coalesce((spec->>'skipConsent')::boolean, false) FROM clients WHERE id = $1 FOR SHARE`,
		id).Scan(&skip)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	case !skip:
		return store.ErrNotFirstParty
	}
	return nil
}

// revokeFirstParty revokes every first-party approval of client id, each as
// RevokeGrant would.
func (s *Store) revokeFirstParty(ctx context.Context, q querier, id string) error {
	var gone []*store.ConsentGrant
	err := queryRows(ctx, q, func(row scanner) error {
		g := &store.ConsentGrant{ClientID: id}
		gone = append(gone, g)
		return row.Scan(&g.ID, &g.Subject)
	}, `DELETE FROM consent_grants WHERE client_id = $1 AND source = $2 RETURNING id, subject`, id, store.SourceFirstParty)
	if err != nil {
		return err
	}
	for _, g := range gone {
		if err := s.grantRevoked(ctx, q, g); err != nil {
			return err
		}
	}
	return nil
}

// narrowed follows a change of grant g: tokens issued under it for a scope g no longer
// holds are revoked (each authorization logged as EventTokenRevoked), and every
// replica drops the grant's cached tokens, whose cached grant expiry may have changed.
func (s *Store) narrowed(ctx context.Context, q querier, g *store.ConsentGrant) error {
	// Repeated until a DELETE finds nothing, for the pairs that rotations committed
	// while it waited on their used refresh tokens (see revokeRequest).
	var revoked [][2]string
	seen := map[string]bool{}
	for {
		n := 0
		err := queryRows(ctx, q, func(row scanner) error {
			var requestID, subject string
			if err := row.Scan(&requestID, &subject); err != nil {
				return err
			}
			n++
			if !seen[requestID] {
				seen[requestID] = true
				revoked = append(revoked, [2]string{requestID, subject})
			}
			return nil
		}, `WITH gone AS (
    DELETE FROM tokens WHERE grant_id = $1 AND NOT (granted_scopes <@ $2::text[]) RETURNING request_id, subject)
SELECT DISTINCT request_id, subject FROM gone ORDER BY request_id`, g.ID, pq.Array(g.Scopes))
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	if err := s.tokensGone(ctx, q, Invalidation{GrantID: g.ID}); err != nil {
		return err
	}
	for _, r := range revoked {
		if err := s.appendEvent(ctx, q, store.Event{Kind: store.EventTokenRevoked, ClientID: g.ClientID, Subject: r[1],
			GrantID: g.ID, RequestID: r[0]}); err != nil {
			return err
		}
	}
	return nil
}

// grantRevoked follows the deletion of grant g's row in q: its tokens go, every
// replica drops them from its cache, and EventGrantRevoked is logged. RevokeGrant,
// the janitor (expiry) and PutGrant (an expired grant replaced) share it, so that
// expiry revokes exactly as a delete does.
func (s *Store) grantRevoked(ctx context.Context, q querier, g *store.ConsentGrant) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM tokens WHERE grant_id = $1`, g.ID); err != nil {
		return err
	}
	if err := s.tokensGone(ctx, q, Invalidation{GrantID: g.ID}); err != nil {
		return err
	}
	return s.appendEvent(ctx, q, store.Event{Kind: store.EventGrantRevoked, ClientID: g.ClientID, Subject: g.Subject, GrantID: g.ID})
}

// GetGrant returns the grant of subject to clientID, or store.ErrNotFound.
func (s *Store) GetGrant(ctx context.Context, clientID, subject string) (*store.ConsentGrant, error) {
	g, err := scanGrantRow(s.q(ctx).QueryRowContext(ctx,
		grantWithTokens+` WHERE client_id = $1 AND subject = $2`, clientID, subject), true)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return g, s.mapErr(ctx, err)
}

// LookupGrant implements store.Store.
func (s *Store) LookupGrant(ctx context.Context, clientID, subject string) (*store.ConsentGrant, error) {
	g, err := scanGrant(s.queryRow(ctx, grantBySubject, clientID, subject))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return g, s.mapErr(ctx, err)
}

const grantBySubject = `SELECT ` + grantColumns + ` FROM consent_grants WHERE client_id = $1 AND subject = $2`

// ListGrants returns the grants matching f, by client then subject.
func (s *Store) ListGrants(ctx context.Context, f store.GrantFilter) ([]*store.ConsentGrant, error) {
	rows, err := s.q(ctx).QueryContext(ctx, grantWithTokens+`
WHERE ($1 = '' OR client_id = $1) AND ($2 = '' OR subject = $2) AND ($3 = '' OR source = $3)
  AND (client_id, subject) > ($4, $5)
ORDER BY client_id, subject LIMIT $6`, f.ClientID, f.Subject, f.Source, f.AfterClientID, f.AfterSubject, limitArg(f.Limit))
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	defer func() { _ = rows.Close() }()
	out := []*store.ConsentGrant{}
	for rows.Next() {
		g, err := scanGrantRow(rows, true)
		if err != nil {
			return nil, s.mapErr(ctx, err)
		}
		out = append(out, g)
	}
	return out, s.mapErr(ctx, rows.Err())
}

// RevokeGrant deletes the grant and every token issued under it, and logs it.
func (s *Store) RevokeGrant(ctx context.Context, clientID, subject string) error {
	return s.RevokeOwnedGrant(ctx, clientID, subject, "")
}

// RevokeOwnedGrant is RevokeGrant when the client's owner namespace is owner (or
// owner is empty).
func (s *Store) RevokeOwnedGrant(ctx context.Context, clientID, subject, owner string) error {
	return s.inTx(ctx, func(ctx context.Context, q querier) error {
		if err := clientOwnedBy(ctx, q, clientID, owner); err != nil {
			return err
		}
		g := &store.ConsentGrant{ClientID: clientID, Subject: subject}
		err := q.QueryRowContext(ctx, `DELETE FROM consent_grants WHERE client_id = $1 AND subject = $2 RETURNING id`,
			clientID, subject).Scan(&g.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return s.grantRevoked(ctx, q, g)
	})
}

// clientOwnedBy checks, for a non-empty owner, that client id belongs to it. The row
// stays locked (FOR SHARE) until the transaction ends, so the owner cannot change, nor
// the client be deleted and re-created by another namespace, between the check and
// the grant write.
func clientOwnedBy(ctx context.Context, q querier, id, owner string) error {
	if owner == "" {
		return nil
	}
	var current string
	err := q.QueryRowContext(ctx, `SELECT owner_namespace FROM clients WHERE id = $1 FOR SHARE`, id).Scan(&current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	case current != owner:
		return ownerConflict(id, current)
	}
	return nil
}

// GetGrantByID returns the grant with id, or store.ErrNotFound.
const grantByID = `SELECT ` + grantColumns + ` FROM consent_grants WHERE id = $1`

func (s *Store) GetGrantByID(ctx context.Context, id string) (*store.ConsentGrant, error) {
	if !storable(id) {
		return nil, store.ErrNotFound
	}
	g, err := scanGrant(s.queryRow(ctx, grantByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return g, s.mapErr(ctx, err)
}

// TouchGrant records that the grant was used at at. It writes at most once a minute
// per grant, so busy apps do not turn every token into a grant update.
func (s *Store) TouchGrant(ctx context.Context, id string, at time.Time) error {
	_, err := s.q(ctx).ExecContext(ctx, `UPDATE consent_grants SET last_used_at = $2
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')`, id, at.UTC())
	return s.mapErr(ctx, err)
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

// queryRows runs query in q and calls each for every row, and closes the rows before
// it returns: the transaction's next statement cannot run while they are open.
func queryRows(ctx context.Context, q querier, each func(scanner) error, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := each(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
