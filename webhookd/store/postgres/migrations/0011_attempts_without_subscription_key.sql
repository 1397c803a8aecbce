-- webhookd schema v11 (PostgreSQL): an attempt's subscription_id is no longer a foreign key. Checking
-- it took a KEY SHARE lock on the subscription's row for every attempt recorded, so every worker
-- locked the same row of a busy subscription (a multixact for each batch). The attempt's delivery
-- still references its subscription, and an attempt is written with its delivery's subscription.
ALTER TABLE attempts DROP CONSTRAINT attempts_subscription_id_fkey;
