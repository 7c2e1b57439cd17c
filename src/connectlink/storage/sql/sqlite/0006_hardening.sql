-- Version 6: hardening (issue 19).

-- A journal entry says when one of its texts held a character the database cannot hold (NUL,
-- which PostgreSQL's text refuses, or a lone surrogate, which is no UTF-8): it is stored with
-- U+FFFD in that character's place, and this is 1.
ALTER TABLE emulator_journal ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0;

-- The Login pages' signed-in sessions, server-side, so that signing out ("Not you?"), a lock of
-- the account and a change of its password end them (OWASP ASVS V3.3.1): the session cookie
-- carries a random id, stored here only as its SHA-256.
CREATE TABLE login_sessions (
    id_digest   BLOB PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES instacart_accounts (id) ON DELETE CASCADE,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX login_sessions_by_account ON login_sessions (account_id);
CREATE INDEX login_sessions_by_expiry ON login_sessions (expires_at);
