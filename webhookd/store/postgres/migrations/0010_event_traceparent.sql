-- webhookd schema v10 (PostgreSQL): an event keeps the W3C trace context of the request that
-- published it, so its deliveries, sent later by any worker, continue that trace. NULL without tracing.
ALTER TABLE events ADD COLUMN traceparent text;
