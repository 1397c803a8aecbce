-- webhookd schema v5 (PostgreSQL): dashboard links. Only a link token's SHA-256 is stored; a link
-- is redeemed once, by one UPDATE that sets used_at while it is unused and not expired.
CREATE TABLE dashboard_links (
    token_hash  text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL REFERENCES customers (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
