-- Version 4: retention (src/connectlink/linking/retention.py). The sweeper finds the tokens and
-- codes that expired long ago by index, a short batch at a time, instead of scanning the table
-- while it holds the write lock; and a lease row lets one sweeper at a time run, across every
-- process on the database.

CREATE INDEX tokens_by_expiry ON tokens (expires_at);

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,          -- "host:pid:random", whoever took it
    expires_at  REAL NOT NULL           -- free for anyone from then on (the holder died)
) WITHOUT ROWID;
