-- webhookd schema v3 (SQLite): the call state machine and carrier-callback dedupe.

-- One row per call: the state machine's JSON state.
CREATE TABLE calls (
    customer_id TEXT NOT NULL,
    carrier     TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (customer_id, carrier, call_id)
) WITHOUT ROWID;
CREATE INDEX calls_updated ON calls (updated_at);

-- Every verified callback, delivered or not (late ones are recorded, not delivered). The key is
-- the carrier callback's idempotency key; rows are kept at least 7 days (retention never less).
CREATE TABLE call_callbacks (
    customer_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    carrier         TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    status_raw      TEXT,
    received_at     REAL NOT NULL,
    event_id        TEXT,
    PRIMARY KEY (customer_id, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX call_callbacks_received ON call_callbacks (received_at);
