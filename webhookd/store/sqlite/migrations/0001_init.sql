-- webhookd schema v1 (SQLite). Times are unix seconds (REAL, UTC).

CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    created_at  REAL NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    key_hash    TEXT NOT NULL UNIQUE,
    name        TEXT,
    scopes      TEXT NOT NULL,            -- comma-separated
    created_at  REAL NOT NULL
);

CREATE TABLE sources (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    carrier     TEXT NOT NULL,
    credentials BLOB NOT NULL,            -- AES-GCM ciphertext of a JSON object
    created_at  REAL NOT NULL
);

CREATE TABLE subscriptions (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    url         TEXT NOT NULL,
    events_key  TEXT NOT NULL,            -- sorted, comma-joined event types: the idempotency key
    description TEXT,
    secret      BLOB NOT NULL,            -- AES-GCM ciphertext of the whsec_ secret
    is_active   INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    deleted_at  REAL,
    -- Per-subscription failure tracking: consecutive failures, and a generation that
    -- moves on every counted failure so attempts already in flight then do not count again.
    failure_count     INTEGER NOT NULL DEFAULT 0,
    health_gen        INTEGER NOT NULL DEFAULT 0,
    probe_at          REAL,               -- while failing: when the next single probe may go
    probe_delivery_id TEXT,               -- the probe in flight, if any
    probe_lease_until REAL,
    disabled_reason   TEXT,
    disabled_at       REAL
);
CREATE INDEX subscriptions_probe_due ON subscriptions (probe_at)
    WHERE failure_count > 0 AND is_active = 1 AND deleted_at IS NULL;
-- Idempotent create rests on this index, not on check-then-insert.
CREATE UNIQUE INDEX subscriptions_identity
    ON subscriptions (customer_id, url, events_key) WHERE deleted_at IS NULL;

CREATE TABLE subscription_event_types (
    customer_id     TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    PRIMARY KEY (customer_id, event_type, subscription_id)
) WITHOUT ROWID;

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL,
    type            TEXT NOT NULL,
    idempotency_key TEXT,
    payload         BLOB NOT NULL,        -- the exact JSON body sent to receivers
    created_at      REAL NOT NULL
);
CREATE UNIQUE INDEX events_idempotency ON events (customer_id, idempotency_key);

CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL REFERENCES events(id),
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    customer_id     TEXT NOT NULL,
    status          TEXT NOT NULL,        -- pending|in_flight|held|parked|delivered|failed|canceled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_until     REAL,
    claimed_gen     INTEGER,              -- the subscription's health_gen when claimed
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    delivered_at    REAL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'in_flight';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, status, next_attempt_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
-- Retention walks finished deliveries oldest first.
CREATE INDEX deliveries_finished ON deliveries (updated_at)
    WHERE status IN ('delivered', 'failed', 'canceled');

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id),
    attempt_no       INTEGER NOT NULL,
    started_at       REAL NOT NULL,
    duration_s       REAL NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt BLOB,
    succeeded        INTEGER NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
