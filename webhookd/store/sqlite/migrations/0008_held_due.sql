-- webhookd schema v8 (SQLite): held deliveries by due time, so the metrics scrape finds the
-- longest-waiting one with one index probe (held deliveries wait behind a failing endpoint).
CREATE INDEX deliveries_held ON deliveries (next_attempt_at) WHERE status = 'held';
