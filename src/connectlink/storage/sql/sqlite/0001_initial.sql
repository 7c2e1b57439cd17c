-- ConnectLink schema, version 1 (SQLite). Times are Unix epoch seconds (REAL).
-- Tokens, codes and client secrets are stored only as SHA-256 digests.

CREATE TABLE retailers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE oauth_clients (
    pk             INTEGER PRIMARY KEY,
    retailer_id    INTEGER NOT NULL REFERENCES retailers (id),
    client_id      TEXT NOT NULL UNIQUE,
    secret_digest  BLOB NOT NULL,
    redirect_uris  TEXT NOT NULL,            -- JSON array
    grants         TEXT NOT NULL,            -- JSON object: grant type -> [scope, ...]
    require_pkce   INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL
);

CREATE TABLE instacart_accounts (
    id                     INTEGER PRIMARY KEY,
    email                  TEXT NOT NULL UNIQUE,   -- global: accounts belong to no retailer
    phone                  TEXT NOT NULL,
    password_hash          TEXT NOT NULL,          -- argon2id
    membership_expires_at  REAL,
    created_at             REAL NOT NULL
);

CREATE TABLE authorization_codes (
    digest                 BLOB PRIMARY KEY,
    client_pk              INTEGER NOT NULL REFERENCES oauth_clients (pk),
    retailer_id            INTEGER NOT NULL REFERENCES retailers (id),
    account_id             INTEGER NOT NULL REFERENCES instacart_accounts (id),
    redirect_uri           TEXT NOT NULL,
    scopes                 TEXT NOT NULL,
    code_challenge         TEXT,
    code_challenge_method  TEXT,
    created_at             REAL NOT NULL,
    expires_at             REAL NOT NULL,
    consumed_at            REAL
) WITHOUT ROWID;

-- Access tokens and linking tokens (a linking token has an account_id).
CREATE TABLE tokens (
    digest       BLOB PRIMARY KEY,
    client_pk    INTEGER NOT NULL REFERENCES oauth_clients (pk),
    retailer_id  INTEGER NOT NULL REFERENCES retailers (id),
    scopes       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    account_id   INTEGER REFERENCES instacart_accounts (id),
    code_digest  BLOB,
    revoked_at   REAL,
    consumed_at  REAL
) WITHOUT ROWID;
CREATE INDEX tokens_by_code ON tokens (code_digest) WHERE code_digest IS NOT NULL;

CREATE TABLE connect_users (
    pk            INTEGER PRIMARY KEY,
    retailer_id   INTEGER NOT NULL REFERENCES retailers (id),
    user_id       TEXT NOT NULL,
    first_name    TEXT NOT NULL,
    last_name     TEXT,
    phone_number  TEXT,
    locale        TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    purge_after   REAL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (retailer_id, user_id)             -- user ids are unique per retailer, not globally
);

CREATE TABLE links (
    connect_user_pk  INTEGER PRIMARY KEY REFERENCES connect_users (pk) ON DELETE CASCADE,
    retailer_id      INTEGER NOT NULL REFERENCES retailers (id),
    account_id       INTEGER NOT NULL REFERENCES instacart_accounts (id),
    linked_at        REAL NOT NULL,
    -- the isolation rule: an Instacart account backs one Connect user per retailer
    UNIQUE (retailer_id, account_id)
);

CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY,
    retailer_id  INTEGER NOT NULL REFERENCES retailers (id),
    occurred_at  REAL NOT NULL,
    action       TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    account_id   INTEGER,
    detail       TEXT
);
CREATE INDEX audit_events_by_retailer ON audit_events (retailer_id, id);
