-- kubeoauth:migration kind=expand
-- The first schema: clients, consent grants, tokens (by signature, never raw) and the
-- event log (revocations and consents).

CREATE TABLE clients (
    id                         text PRIMARY KEY,
    secret_hash                bytea,
    previous_secret_hash       bytea,
    previous_secret_expires_at timestamptz,
    owner_namespace            text NOT NULL DEFAULT '',
    spec                       jsonb NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE consent_grants (
    id           text PRIMARY KEY,
    client_id    text NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subject      text NOT NULL,
    scopes       text[] NOT NULL,
    source       text NOT NULL,
    granted_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    expires_at   timestamptz,
    UNIQUE (client_id, subject)
);

-- One row per token. kind: authorize_code, access_token, refresh_token, pkce, oidc.
-- request_id ties together every token of one authorization (a refresh chain keeps it).
CREATE TABLE tokens (
    kind               text NOT NULL,
    signature          text NOT NULL,
    request_id         text NOT NULL,
    client_id          text NOT NULL,
    subject            text NOT NULL DEFAULT '',
    grant_id           text,
    active             boolean NOT NULL DEFAULT true,
    rotated_at         timestamptz,
    access_signature   text,
    requested_at       timestamptz NOT NULL,
    expires_at         timestamptz,
    requested_scopes   text[] NOT NULL DEFAULT '{}',
    granted_scopes     text[] NOT NULL DEFAULT '{}',
    requested_audience text[] NOT NULL DEFAULT '{}',
    granted_audience   text[] NOT NULL DEFAULT '{}',
    form               jsonb NOT NULL DEFAULT '{}',
    session            jsonb NOT NULL,
    PRIMARY KEY (kind, signature)
);

-- Client assertion JWT IDs already seen (private_key_jwt replay protection).
CREATE TABLE client_assertion_jtis (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

CREATE TABLE events (
    seq        bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL,
    client_id  text NOT NULL DEFAULT '',
    subject    text NOT NULL DEFAULT '',
    grant_id   text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    scopes     text[] NOT NULL DEFAULT '{}'
);
