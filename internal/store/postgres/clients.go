package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

const clientColumns = `id, secret_hash, previous_secret_hash, previous_secret_expires_at, owner_namespace, spec, created_at, updated_at`

// PutClient creates or replaces c. The update only happens when something differs, so
// the same PUT twice writes nothing and reports changed=false. A client of another
// owner namespace is left as it is (store.ErrOwnerConflict): the owner check is part
// of the upsert's WHERE, so no concurrent PUT can slip between check and write. A
// change that leaves skipConsent off revokes the client's first-party approvals.
func (s *Store) PutClient(ctx context.Context, c *store.Client) (bool, error) {
	spec, err := json.Marshal(clientSpec(c.ClientSpec))
	if err != nil {
		return false, err
	}
	changed := false
	err = s.inTx(ctx, func(ctx context.Context, q querier) error {
		// A client deleted between the upsert and the owner lookup below is looked at
		// once more: the second upsert then creates it.
		for range 2 {
			var id string
			err := q.QueryRowContext(ctx, `
INSERT INTO clients (id, secret_hash, previous_secret_hash, previous_secret_expires_at, owner_namespace, spec)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET
    secret_hash = EXCLUDED.secret_hash,
    previous_secret_hash = EXCLUDED.previous_secret_hash,
    previous_secret_expires_at = EXCLUDED.previous_secret_expires_at,
    spec = EXCLUDED.spec,
    updated_at = now()
WHERE clients.owner_namespace = EXCLUDED.owner_namespace
    AND (clients.secret_hash, clients.previous_secret_hash, clients.previous_secret_expires_at, clients.spec)
    IS DISTINCT FROM
    (EXCLUDED.secret_hash, EXCLUDED.previous_secret_hash, EXCLUDED.previous_secret_expires_at, EXCLUDED.spec)
RETURNING id`,
				c.ID, nullBytes(c.SecretHash), nullBytes(c.PreviousSecretHash), nullTime(c.PreviousSecretExpiresAt),
				c.OwnerNamespace, string(spec)).Scan(&id)
			if err == nil {
				changed = true
				if !c.SkipConsent {
					// First-party approvals end with first-party status, in this
					// transaction: no authorization sees the client without
					// skipConsent while they still stand.
					if err := s.revokeFirstParty(ctx, q, c.ID); err != nil {
						return err
					}
				}
				return s.clientChanged(ctx, q, c.ID)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			// Nothing written: either nothing differs, or the client is another owner's.
			var owner string
			err = q.QueryRowContext(ctx, `SELECT owner_namespace FROM clients WHERE id = $1`, c.ID).Scan(&owner)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				continue
			case err != nil:
				return err
			case owner != c.OwnerNamespace:
				return ownerConflict(c.ID, owner)
			}
			return nil
		}
		return fmt.Errorf("client %q was deleted and created again while it was being stored; try again", c.ID)
	})
	return changed, err
}

func ownerConflict(id, owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: client %q is registered without an owner namespace", store.ErrOwnerConflict, id)
	}
	return fmt.Errorf("%w: client %q belongs to namespace %q", store.ErrOwnerConflict, id, owner)
}

// clientChanged tells every replica, this one included, to drop its cached copy once
// q's transaction commits (see afterCommit and clientCache).
func (s *Store) clientChanged(ctx context.Context, q querier, id string) error {
	s.afterCommit(ctx, func() { s.InvalidateClient(id) })
	_, err := q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, ClientsChannel, id)
	return err
}

// GetClientByID returns the client or store.ErrNotFound, from the cache when it holds
// a recent copy. The result is shared: callers must not modify it.
func (s *Store) GetClientByID(ctx context.Context, id string) (*store.Client, error) {
	if !storable(id) {
		return nil, store.ErrNotFound
	}
	now := s.now()
	if s.caching() {
		if c, ok := s.clients.get(id, now, s.opts.ClientCacheTTL); ok {
			return c, nil
		}
	}
	gen := s.clients.generation()
	row := s.q(ctx).QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE id = $1`, id)
	c, err := scanClient(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	if s.testHooks.afterClientRead != nil {
		s.testHooks.afterClientRead(id)
	}
	if !s.inTxCtx(ctx) && s.caching() { // a transaction may read what it has not committed yet
		s.clients.put(c, now, gen)
	}
	return c, nil
}

// ListClients returns the clients of page, by ID.
func (s *Store) ListClients(ctx context.Context, page store.Page) ([]*store.Client, error) {
	rows, err := s.q(ctx).QueryContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE id > $1 ORDER BY id LIMIT $2`,
		page.After, limitArg(page.Limit))
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	defer func() { _ = rows.Close() }()
	var out []*store.Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, s.mapErr(ctx, err)
		}
		out = append(out, c)
	}
	return out, s.mapErr(ctx, rows.Err())
}

// DeleteClient removes the client, its grants and every token issued to it (foreign
// keys, ON DELETE CASCADE), and logs the deletion; with an owner, only when the client
// is that owner's.
func (s *Store) DeleteClient(ctx context.Context, id, owner string) error {
	return s.inTx(ctx, func(ctx context.Context, q querier) error {
		var current string
		err := q.QueryRowContext(ctx, `DELETE FROM clients WHERE id = $1 AND ($2 = '' OR owner_namespace = $2)
RETURNING owner_namespace`, id, owner).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			err = q.QueryRowContext(ctx, `SELECT owner_namespace FROM clients WHERE id = $1`, id).Scan(&current)
			if errors.Is(err, sql.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
			}
			return ownerConflict(id, current)
		}
		if err != nil {
			return err
		}
		// The foreign keys delete its grants and tokens (0001, 0003); dropping the
		// client from the caches drops its cached tokens too.
		if err := s.clientChanged(ctx, q, id); err != nil {
			return err
		}
		err = s.appendEvent(ctx, q, store.Event{Kind: store.EventClientDeleted, ClientID: id})
		return err
	})
}

// clientSpec is the clients.spec column: what a client is, as one JSON document. Its
// keys and omitempty rules are the stored format: rows written before the store had
// its own client type hold exactly this shape, and a change that alters the document
// (a key, an omitempty) makes every PUT of an unchanged client look like a change. A
// new field needs omitempty for the same reason. TestStoredClientFormat pins it.
// store.ClientSpec converts to it as long as the two have the same fields: one that
// store.ClientSpec gains needs its key here before this compiles.
type clientSpec struct {
	Name                    string            `json:"name"`
	OwnerTeam               string            `json:"ownerTeam,omitempty"`
	OwnerContact            string            `json:"ownerContact,omitempty"`
	LogoURI                 string            `json:"logoURI,omitempty"`
	ClientURI               string            `json:"clientURI,omitempty"`
	PolicyURI               string            `json:"policyURI,omitempty"`
	TOSURI                  string            `json:"tosURI,omitempty"`
	GrantTypes              []string          `json:"grantTypes"`
	ResponseTypes           []string          `json:"responseTypes,omitempty"`
	RedirectURIs            []string          `json:"redirectURIs,omitempty"`
	PostLogoutRedirectURIs  []string          `json:"postLogoutRedirectURIs,omitempty"`
	Scopes                  []string          `json:"scopes,omitempty"`
	Audience                []string          `json:"audience,omitempty"`
	TokenEndpointAuthMethod string            `json:"tokenEndpointAuthMethod"`
	JWKS                    json.RawMessage   `json:"jwks,omitempty"`
	JWKSURI                 string            `json:"jwksURI,omitempty"`
	SkipConsent             bool              `json:"skipConsent,omitempty"`
	TokenLifespans          map[string]string `json:"tokenLifespans,omitempty"`
	JWTBearer               json.RawMessage   `json:"jwtBearer,omitempty"`
}

type scanner interface{ Scan(dest ...any) error }

func scanClient(row scanner) (*store.Client, error) {
	var (
		c       store.Client
		spec    []byte
		prevExp sql.NullTime
	)
	if err := row.Scan(&c.ID, &c.SecretHash, &c.PreviousSecretHash, &prevExp, &c.OwnerNamespace, &spec,
		&c.CreatedAt, &c.UpdatedAt); err != nil {
		return nil, err
	}
	var doc clientSpec
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, err
	}
	c.ClientSpec = store.ClientSpec(doc)
	c.PreviousSecretExpiresAt = prevExp.Time
	return &c, nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// limitArg is a LIMIT's parameter: NULL, no limit, for 0.
func limitArg(n int) sql.NullInt64 {
	return sql.NullInt64{Int64: int64(n), Valid: n > 0}
}
