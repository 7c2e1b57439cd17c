-- Version 2: privacy purges find due users by index instead of scanning every user, and a link
-- remembers the banner (X-Retailer-Id) it was made through.

CREATE INDEX connect_users_purge_due ON connect_users (purge_after) WHERE purge_after IS NOT NULL;

ALTER TABLE links ADD COLUMN banner TEXT;
