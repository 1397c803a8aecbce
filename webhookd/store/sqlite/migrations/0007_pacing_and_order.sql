-- webhookd schema v7 (SQLite): per-subscription pacing and per-key ordering.

-- Pacing: at most rate_limit_per_second attempts a second; next_send_at is the next free slot, moved on
-- by every claim of the subscription, so every worker process counts.
ALTER TABLE subscriptions ADD COLUMN rate_limit_per_second INTEGER;
ALTER TABLE subscriptions ADD COLUMN next_send_at REAL;

-- Ordering: an ordered subscription's deliveries that share an ordering key go one at a time, in
-- event order. Only the head of a key may be claimed; this index finds whether one is ahead.
ALTER TABLE subscriptions ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
CREATE INDEX deliveries_unfinished_by_key ON deliveries (subscription_id, ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'in_flight', 'held', 'parked');
