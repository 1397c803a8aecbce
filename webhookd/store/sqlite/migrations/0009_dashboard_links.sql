-- webhookd schema v9 (SQLite): dashboard links. Only a link token's SHA-256 is stored; a link is
-- redeemed once, by one UPDATE that sets used_at while it is unused and not expired.
CREATE TABLE dashboard_links (
    token_hash  TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);
