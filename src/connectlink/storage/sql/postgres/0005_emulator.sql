-- Version 5: the emulator's control plane (docs/emulator.md; storage/emulator.py). Its state
-- lives here, not in a worker's memory, so every worker and host on the database sees one
-- clock per retailer, one count of each fault rule's firings and one journal.

-- A retailer's virtual clock: the wall clock plus offset_seconds, or stopped at frozen_at. A
-- retailer on the wall clock has no row.
CREATE TABLE retailer_clocks (
    retailer_id     BIGINT PRIMARY KEY REFERENCES retailers (id) ON DELETE CASCADE,
    offset_seconds  DOUBLE PRECISION NOT NULL DEFAULT 0,
    frozen_at       DOUBLE PRECISION
);

-- Fault rules: a handful, read on every request by endpoint. matched and fired are counted by
-- conditional UPDATEs, so racing workers never fire a rule more than `times` times.
CREATE TABLE emulator_faults (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id  BIGINT,                  -- NULL: any retailer (client_id is set then)
    client_id    TEXT,                    -- NULL: any client of the retailer
    endpoint     TEXT NOT NULL,           -- "POST /v2/oauth/token": method and path template
    fault        TEXT NOT NULL,
    times        INTEGER,                 -- NULL: no limit
    every        INTEGER NOT NULL DEFAULT 1,
    probability  DOUBLE PRECISION NOT NULL DEFAULT 1,
    seed         BIGINT NOT NULL DEFAULT 0,
    retry_after  INTEGER NOT NULL DEFAULT 1,
    latency_ms   INTEGER NOT NULL DEFAULT 1000,
    matched      BIGINT NOT NULL DEFAULT 0,
    fired        BIGINT NOT NULL DEFAULT 0,
    created_at   DOUBLE PRECISION NOT NULL
);

-- The request journal: the newest entries per retailer (older ones are trimmed in batches).
-- Secrets only as fingerprints, the first 16 hex digits of their SHA-256.
CREATE TABLE emulator_journal (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retailer_id  BIGINT NOT NULL,
    at           DOUBLE PRECISION NOT NULL,   -- the retailer's virtual time
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    operation    TEXT,
    status       INTEGER NOT NULL,
    latency_ms   DOUBLE PRECISION NOT NULL,
    request_id   TEXT NOT NULL,
    error_code   TEXT,
    error_key    TEXT,
    client_id    TEXT,
    credential   TEXT,                        -- the bearer token's fingerprint
    secrets      TEXT NOT NULL DEFAULT '{}',  -- JSON object: body field -> fingerprint
    fault        TEXT
);
CREATE INDEX emulator_journal_by_retailer ON emulator_journal (retailer_id, id);

-- Each worker journals in batches (server/controls.py); a reader of the journal raises the
-- barrier and waits until every live worker has written out what it held when it saw it.
CREATE TABLE emulator_workers (
    worker        TEXT PRIMARY KEY,                -- "host:pid:random"
    heartbeat_at  DOUBLE PRECISION NOT NULL,       -- not heard from in 2 seconds: gone
    barrier       BIGINT NOT NULL DEFAULT 0        -- the last barrier it has written out for
);
CREATE TABLE emulator_barrier (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  BIGINT NOT NULL
);
INSERT INTO emulator_barrier (id, value) VALUES (1, 0);
