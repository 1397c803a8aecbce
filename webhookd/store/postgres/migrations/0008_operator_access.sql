-- webhookd schema v8 (PostgreSQL): the operator's dashboard. A link opens a customer's dashboard or
-- the operator's view (which has no customer), API keys can be revoked and say when they were last
-- used, and a signed-out session is remembered until it would have ended.
ALTER TABLE api_keys ADD COLUMN revoked_at timestamptz, ADD COLUMN last_used_at timestamptz;
-- A customer's keys, listed and counted for the operator.
CREATE INDEX api_keys_by_customer ON api_keys (customer_id);

ALTER TABLE dashboard_links
    ADD COLUMN kind text NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'operator')),
    ALTER COLUMN customer_id DROP NOT NULL,
    ADD CHECK ((kind = 'customer') = (customer_id IS NOT NULL));

CREATE TABLE dashboard_session_ends (
    session_id text COLLATE "C" PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
