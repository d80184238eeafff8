-- kubeoauth:migration kind=expand transaction=false
-- The janitor revokes expired grants every pass; without an index it would read the
-- whole grants table (one row per user and app) each minute.

DROP INDEX CONCURRENTLY IF EXISTS consent_grants_expires_at_idx;
CREATE INDEX CONCURRENTLY consent_grants_expires_at_idx ON consent_grants (expires_at) WHERE expires_at IS NOT NULL;
