package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

const clientColumns = `id, secret_hash, previous_secret_hash, previous_secret_expires_at, owner_namespace, spec, created_at, updated_at`

// PutClient creates or replaces c. The update only happens when something differs, so
// the same PUT twice writes nothing and reports changed=false. A client of another
// owner namespace is left as it is (store.ErrOwnerConflict): the owner check is part
// of the upsert's WHERE, so no concurrent PUT can slip between check and write.
func (s *Store) PutClient(ctx context.Context, c *store.Client) (bool, error) {
	spec, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	// A client deleted between the upsert and the owner lookup below is looked at once
	// more: the second upsert then creates it.
	for range 2 {
		var id string
		err = s.q(ctx).QueryRowContext(ctx, `
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
			return true, s.clientChanged(ctx, s.q(ctx), c.ID)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, s.mapErr(err)
		}
		// Nothing written: either nothing differs, or the client is another owner's.
		var owner string
		err = s.q(ctx).QueryRowContext(ctx, `SELECT owner_namespace FROM clients WHERE id = $1`, c.ID).Scan(&owner)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return false, s.mapErr(err)
		case owner != c.OwnerNamespace:
			return false, ownerConflict(c.ID, owner)
		}
		return false, nil
	}
	return false, s.mapErr(err)
}

func ownerConflict(id, owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: client %q is registered without an owner namespace", store.ErrOwnerConflict, id)
	}
	return fmt.Errorf("%w: client %q belongs to namespace %q", store.ErrOwnerConflict, id, owner)
}

// clientChanged drops the local cached copy and tells the other replicas to.
func (s *Store) clientChanged(ctx context.Context, q querier, id string) error {
	s.InvalidateClient(id)
	_, err := q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, ClientsChannel, id)
	return s.mapErr(err)
}

// GetClientByID returns the client or store.ErrNotFound, from the cache when it holds
// a recent copy. The result is shared: callers must not modify it.
func (s *Store) GetClientByID(ctx context.Context, id string) (*store.Client, error) {
	now := time.Now()
	if c, ok := s.clients.get(id, now); ok {
		return c, nil
	}
	row := s.q(ctx).QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE id = $1`, id)
	c, err := scanClient(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, s.mapErr(err)
	}
	s.clients.put(c, now)
	return c, nil
}

// ListClients returns every client, by ID.
func (s *Store) ListClients(ctx context.Context) ([]*store.Client, error) {
	rows, err := s.q(ctx).QueryContext(ctx, `SELECT `+clientColumns+` FROM clients ORDER BY id`)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer func() { _ = rows.Close() }()
	var out []*store.Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, c)
	}
	return out, s.mapErr(rows.Err())
}

// DeleteClient removes the client, its grants (cascade) and every token issued to it,
// and logs the deletion; with an owner, only when the client is that owner's.
func (s *Store) DeleteClient(ctx context.Context, id, owner string) error {
	return s.inTx(ctx, func(q querier) error {
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
		if _, err := q.ExecContext(ctx, `DELETE FROM tokens WHERE client_id = $1`, id); err != nil {
			return err
		}
		if err := s.clientChanged(ctx, q, id); err != nil {
			return err
		}
		err = s.appendEvent(ctx, q, store.Event{Kind: store.EventClientDeleted, ClientID: id})
		return err
	})
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
	if err := json.Unmarshal(spec, &c); err != nil {
		return nil, err
	}
	c.PreviousSecretExpiresAt = prevExp.Time
	return &c, nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
