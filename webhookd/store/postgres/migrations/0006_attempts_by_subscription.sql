-- webhookd schema v6 (PostgreSQL): each attempt names its subscription, so that a subscription's
-- attempts in a time window (the dashboard's 24-hour chart and last attempt) are one index range
-- instead of a walk through every delivery the subscription ever had.
ALTER TABLE attempts ADD COLUMN subscription_id text COLLATE "C" REFERENCES subscriptions (id);
UPDATE attempts AS a SET subscription_id = d.subscription_id FROM deliveries AS d WHERE d.id = a.delivery_id;
ALTER TABLE attempts ALTER COLUMN subscription_id SET NOT NULL;
CREATE INDEX attempts_by_subscription ON attempts (subscription_id, started_at) INCLUDE (succeeded);
