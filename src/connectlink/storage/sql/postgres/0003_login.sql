-- Version 3: the "Login with Instacart" pages. Failed sign-ins are counted per subject (an
-- account's email, or a client address) to lock web login after too many; the server's secret
-- key, which signs the pages' session cookies, is kept here in the emulator profile.

CREATE TABLE login_throttles (
    subject       TEXT PRIMARY KEY,        -- "account:<SHA-256 of the email>" or "address:<ip>"
    failures      TEXT NOT NULL,           -- times of the failures in the window, space-separated
    locked_until  DOUBLE PRECISION
);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
