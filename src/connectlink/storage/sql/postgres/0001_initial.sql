-- ConnectLink schema, version 1 (PostgreSQL). Times are Unix epoch seconds (double precision).
-- Tokens, codes and client secrets are stored only as SHA-256 digests.

CREATE TABLE retailers (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE oauth_clients (
    pk             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id    BIGINT NOT NULL REFERENCES retailers (id),
    client_id      TEXT NOT NULL UNIQUE,
    secret_digest  BYTEA NOT NULL,
    redirect_uris  TEXT NOT NULL,            -- JSON array
    grants         TEXT NOT NULL,            -- JSON object: grant type -> [scope, ...]
    require_pkce   BOOLEAN NOT NULL DEFAULT false,
    created_at     DOUBLE PRECISION NOT NULL
);

CREATE TABLE instacart_accounts (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email                  TEXT NOT NULL UNIQUE,   -- global: accounts belong to no retailer
    phone                  TEXT NOT NULL,
    password_hash          TEXT NOT NULL,          -- argon2id
    membership_expires_at  DOUBLE PRECISION,
    created_at             DOUBLE PRECISION NOT NULL
);

CREATE TABLE authorization_codes (
    digest                 BYTEA PRIMARY KEY,
    client_pk              BIGINT NOT NULL REFERENCES oauth_clients (pk),
    retailer_id            BIGINT NOT NULL REFERENCES retailers (id),
    account_id             BIGINT NOT NULL REFERENCES instacart_accounts (id),
    redirect_uri           TEXT NOT NULL,
    scopes                 TEXT NOT NULL,
    code_challenge         TEXT,
    code_challenge_method  TEXT,
    created_at             DOUBLE PRECISION NOT NULL,
    expires_at             DOUBLE PRECISION NOT NULL,
    consumed_at            DOUBLE PRECISION
);

-- Access tokens and linking tokens (a linking token has an account_id).
CREATE TABLE tokens (
    digest       BYTEA PRIMARY KEY,
    client_pk    BIGINT NOT NULL REFERENCES oauth_clients (pk),
    retailer_id  BIGINT NOT NULL REFERENCES retailers (id),
    scopes       TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL,
    account_id   BIGINT REFERENCES instacart_accounts (id),
    code_digest  BYTEA,
    revoked_at   DOUBLE PRECISION,
    consumed_at  DOUBLE PRECISION
);
CREATE INDEX tokens_by_code ON tokens (code_digest) WHERE code_digest IS NOT NULL;

CREATE TABLE connect_users (
    pk            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id   BIGINT NOT NULL REFERENCES retailers (id),
    user_id       TEXT NOT NULL,
    first_name    TEXT NOT NULL,
    last_name     TEXT,
    phone_number  TEXT,
    locale        TEXT,
    active        BOOLEAN NOT NULL DEFAULT true,
    purge_after   DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    UNIQUE (retailer_id, user_id)             -- user ids are unique per retailer, not globally
);

CREATE TABLE links (
    connect_user_pk  BIGINT PRIMARY KEY REFERENCES connect_users (pk) ON DELETE CASCADE,
    retailer_id      BIGINT NOT NULL REFERENCES retailers (id),
    account_id       BIGINT NOT NULL REFERENCES instacart_accounts (id),
    linked_at        DOUBLE PRECISION NOT NULL,
    -- the isolation rule: an Instacart account backs one Connect user per retailer
    UNIQUE (retailer_id, account_id)
);

CREATE TABLE audit_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id  BIGINT NOT NULL REFERENCES retailers (id),
    occurred_at  DOUBLE PRECISION NOT NULL,
    action       TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    account_id   BIGINT,
    detail       TEXT
);
CREATE INDEX audit_events_by_retailer ON audit_events (retailer_id, id);
