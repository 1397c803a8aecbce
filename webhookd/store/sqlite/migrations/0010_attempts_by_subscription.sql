-- webhookd schema v10 (SQLite): each attempt names its subscription, so that a subscription's
-- attempts in a time window (the dashboard's 24-hour chart and last attempt) are one index range
-- instead of a walk through every delivery the subscription ever had.
ALTER TABLE attempts ADD COLUMN subscription_id TEXT REFERENCES subscriptions(id);
UPDATE attempts SET subscription_id =
    (SELECT d.subscription_id FROM deliveries AS d WHERE d.id = attempts.delivery_id);
CREATE INDEX attempts_by_subscription ON attempts (subscription_id, started_at, succeeded);
