-- kubeoauth:migration kind=expand transaction=false
-- Indexes for revoking by request, grant and client, and for the janitor. Built
-- concurrently so a running token server keeps writing; a concurrent build that failed
-- leaves an invalid index behind, so each is dropped first.

DROP INDEX CONCURRENTLY IF EXISTS tokens_request_id_idx;
CREATE INDEX CONCURRENTLY tokens_request_id_idx ON tokens (request_id);

DROP INDEX CONCURRENTLY IF EXISTS tokens_grant_id_idx;
CREATE INDEX CONCURRENTLY tokens_grant_id_idx ON tokens (grant_id) WHERE grant_id IS NOT NULL;

DROP INDEX CONCURRENTLY IF EXISTS tokens_client_id_idx;
CREATE INDEX CONCURRENTLY tokens_client_id_idx ON tokens (client_id);

DROP INDEX CONCURRENTLY IF EXISTS tokens_expires_at_idx;
CREATE INDEX CONCURRENTLY tokens_expires_at_idx ON tokens (expires_at);

DROP INDEX CONCURRENTLY IF EXISTS consent_grants_subject_idx;
CREATE INDEX CONCURRENTLY consent_grants_subject_idx ON consent_grants (subject);
