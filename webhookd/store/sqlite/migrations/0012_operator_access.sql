-- webhookd schema v12 (SQLite): the operator's dashboard. A link opens a customer's dashboard or the
-- operator's view (which has no customer), API keys can be revoked and say when they were last used,
-- and a signed-out session is remembered until it would have ended. SQLite cannot drop NOT NULL in
-- place: the links table is rebuilt (it holds only short-lived links).
ALTER TABLE api_keys ADD COLUMN revoked_at REAL;
ALTER TABLE api_keys ADD COLUMN last_used_at REAL;
-- A customer's keys, listed and counted for the operator.
CREATE INDEX api_keys_by_customer ON api_keys (customer_id);

CREATE TABLE dashboard_links_v12 (
    token_hash  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'operator')),
    customer_id TEXT REFERENCES customers(id),
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL,
    CHECK ((kind = 'customer') = (customer_id IS NOT NULL))
);
INSERT INTO dashboard_links_v12 (token_hash, customer_id, created_at, expires_at, used_at)
    SELECT token_hash, customer_id, created_at, expires_at, used_at FROM dashboard_links;
DROP TABLE dashboard_links;
ALTER TABLE dashboard_links_v12 RENAME TO dashboard_links;

CREATE TABLE dashboard_session_ends (
    session_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
