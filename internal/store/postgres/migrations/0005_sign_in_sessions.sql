-- kubeoauth:migration kind=expand transaction=false
-- Sign-in sessions of the token server's pages, one row per signed-in browser, keyed
-- by a hash of the cookie's random session ID. Sign-out deletes the row, so that a
-- copy of the cookie is refused by every replica at once; the janitor removes rows
-- past expires_at. A token server of schema 4 neither writes nor reads the table.
-- Safe to re-run: the table only if missing, the index dropped first.

CREATE TABLE IF NOT EXISTS sign_in_sessions (
    id         text PRIMARY KEY,
    subject    text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

DROP INDEX CONCURRENTLY IF EXISTS sign_in_sessions_expires_at_idx;
CREATE INDEX CONCURRENTLY sign_in_sessions_expires_at_idx ON sign_in_sessions (expires_at);
