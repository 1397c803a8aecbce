-- webhookd schema v2 (SQLite): secret rotation, per-call callback URLs, log listing indexes.

-- 'webhook': a customer's subscription. 'callback': the per-call callback_url of events,
-- signed with the customer's callback secret; hidden from the subscriptions API.
ALTER TABLE subscriptions ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE subscriptions ADD COLUMN previous_secret BLOB;
ALTER TABLE subscriptions ADD COLUMN previous_secret_until REAL;

ALTER TABLE customers ADD COLUMN callback_secret BLOB;
ALTER TABLE customers ADD COLUMN previous_callback_secret BLOB;
ALTER TABLE customers ADD COLUMN previous_callback_secret_until REAL;

ALTER TABLE events ADD COLUMN callback_url TEXT;

CREATE INDEX deliveries_log ON deliveries (subscription_id, created_at, id);
CREATE INDEX events_log ON events (customer_id, created_at, id);
