-- Version 4: retention (src/connectlink/linking/retention.py). The sweeper finds the tokens and
-- codes that expired long ago by index, a short batch at a time, instead of scanning the table;
-- and a lease row lets one sweeper at a time run, across every worker and host.
--
-- The indexes are built inside the migration's transaction, so token and code writes wait for
-- them: about a third of a second per million rows on a 2-core machine.

CREATE INDEX tokens_by_expiry ON tokens (expires_at);

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,          -- "host:pid:random", whoever took it
    expires_at  DOUBLE PRECISION NOT NULL  -- free for anyone from then on (the holder died)
);
