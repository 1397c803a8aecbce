-- webhookd schema v2 (PostgreSQL): fair claims and workers that are known to be alive.
--
-- A claim walks the subscriptions that have pending deliveries, one index probe each, and takes a few
-- from each in turn; this index is that walk, and its cost does not grow with the backlog.
CREATE INDEX deliveries_pending_by_subscription ON deliveries (subscription_id, next_attempt_at)
    WHERE status = 'pending';

-- A claim belongs to the worker that made it, and lasts while that worker's heartbeat does: no lease
-- to outlast a slow attempt, and a dead worker's claims come back within seconds.
ALTER TABLE deliveries ADD COLUMN claimed_by text COLLATE "C";
CREATE INDEX deliveries_claimed_by ON deliveries (claimed_by) WHERE status = 'in_flight';
DROP INDEX deliveries_leased;

CREATE TABLE workers (
    id           text COLLATE "C" PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);
