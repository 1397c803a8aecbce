-- webhookd schema v1 (PostgreSQL): everything SQLite's migrations 0001-0004 hold, in one step.
-- Times are timestamptz; ids and other keys compare bytewise (COLLATE "C"), as they sort in Python.

CREATE TABLE customers (
    id                             text COLLATE "C" PRIMARY KEY,
    name                           text,
    created_at                     timestamptz NOT NULL,
    callback_secret                bytea,
    previous_callback_secret       bytea,
    previous_callback_secret_until timestamptz
);

CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL REFERENCES customers (id),
    key_hash    text COLLATE "C" NOT NULL UNIQUE,
    name        text,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE sources (
    id          text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL REFERENCES customers (id),
    carrier     text NOT NULL,
    credentials bytea NOT NULL,           -- AES-GCM ciphertext of a JSON object
    created_at  timestamptz NOT NULL
);

CREATE TABLE subscriptions (
    id                    text COLLATE "C" PRIMARY KEY,
    customer_id           text COLLATE "C" NOT NULL REFERENCES customers (id),
    -- 'webhook': a customer's subscription. 'callback': the per-call callback_url of events
    -- (per-call callback URLs), signed with the customer's callback secret; hidden from the subscriptions API.
    kind                  text NOT NULL DEFAULT 'webhook',
    url                   text COLLATE "C" NOT NULL,
    events_key            text COLLATE "C" NOT NULL,  -- sorted, comma-joined event types
    description           text,
    secret                bytea NOT NULL,             -- AES-GCM ciphertext of the whsec_ secret
    previous_secret       bytea,
    previous_secret_until timestamptz,
    is_active             boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    deleted_at            timestamptz,
    -- Per-subscription health: consecutive failures, and a generation that moves on
    -- every counted failure so attempts already in flight then do not count again.
    failure_count         integer NOT NULL DEFAULT 0,
    health_gen            bigint NOT NULL DEFAULT 0,
    probe_at              timestamptz,          -- while failing: when the next single probe may go
    probe_delivery_id     text COLLATE "C",     -- the probe in flight, if any
    probe_lease_until     timestamptz,
    disabled_reason       text,
    disabled_at           timestamptz
);
CREATE INDEX subscriptions_probe_due ON subscriptions (probe_at)
    WHERE failure_count > 0 AND is_active AND deleted_at IS NULL;
-- Idempotent create rests on this index (INSERT ... ON CONFLICT DO NOTHING), not on check-then-insert.
CREATE UNIQUE INDEX subscriptions_identity
    ON subscriptions (customer_id, url, events_key) WHERE deleted_at IS NULL;

CREATE TABLE subscription_event_types (
    customer_id     text COLLATE "C" NOT NULL,
    event_type      text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL REFERENCES subscriptions (id),
    PRIMARY KEY (customer_id, event_type, subscription_id)
);
CREATE INDEX subscription_event_types_by_subscription ON subscription_event_types (subscription_id);

CREATE TABLE events (
    id              text COLLATE "C" PRIMARY KEY,
    customer_id     text COLLATE "C" NOT NULL,
    type            text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C",
    payload         bytea NOT NULL,        -- the exact JSON body sent to receivers
    callback_url    text,
    created_at      timestamptz NOT NULL,
    CONSTRAINT events_idempotency UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX events_log ON events (customer_id, created_at, id);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE deliveries (
    id              text COLLATE "C" PRIMARY KEY,
    event_id        text COLLATE "C" NOT NULL REFERENCES events (id),
    subscription_id text COLLATE "C" NOT NULL REFERENCES subscriptions (id),
    customer_id     text COLLATE "C" NOT NULL,
    status          text NOT NULL,         -- pending|in_flight|held|parked|delivered|failed|canceled
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    claimed_gen     bigint,                -- the subscription's health_gen when claimed
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    delivered_at    timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'in_flight';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, status, next_attempt_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_log ON deliveries (subscription_id, created_at, id);
-- Retention walks finished deliveries oldest first.
CREATE INDEX deliveries_finished ON deliveries (updated_at)
    WHERE status IN ('delivered', 'failed', 'canceled');

CREATE TABLE attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      text COLLATE "C" NOT NULL REFERENCES deliveries (id),
    attempt_no       integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_s       double precision NOT NULL,
    status_code      integer,
    error            text,
    response_excerpt bytea,
    succeeded        boolean NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);

-- One row per call: the state machine's JSON state. A NULL state exists only
-- inside the transaction that first sees the call (the row is there to be locked).
CREATE TABLE calls (
    customer_id text COLLATE "C" NOT NULL,
    carrier     text COLLATE "C" NOT NULL,
    call_id     text COLLATE "C" NOT NULL,
    state       jsonb,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, carrier, call_id)
);
CREATE INDEX calls_updated ON calls (updated_at);

-- Every verified callback, delivered or not. The key is the carrier callback's idempotency key;
-- rows are kept at least 7 days (retention never less).
CREATE TABLE call_callbacks (
    customer_id     text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    carrier         text NOT NULL,
    call_id         text NOT NULL,
    status_raw      text,
    received_at     timestamptz NOT NULL,
    event_id        text COLLATE "C",
    PRIMARY KEY (customer_id, idempotency_key)
);
CREATE INDEX call_callbacks_received ON call_callbacks (received_at);

-- Delivery counts by status for the metrics scrape, kept by statement triggers. Writers only
-- append signed deltas (never update a shared counter row, so concurrent transactions neither
-- serialize on a hot row nor deadlock on two of them); readers sum, and fold the deltas now and
-- then into one row per status.
CREATE TABLE outbox_counts (
    status text NOT NULL,
    n      bigint NOT NULL
);

CREATE FUNCTION webhookd_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (status, n) SELECT status, count(*) FROM new_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION webhookd_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (status, n)
    SELECT status, sum(n) FROM (
        SELECT status, 1 AS n FROM new_rows UNION ALL SELECT status, -1 FROM old_rows
    ) AS moved GROUP BY status HAVING sum(n) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION webhookd_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (status, n) SELECT status, -count(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhookd_count_inserted();
CREATE TRIGGER deliveries_counted_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhookd_count_updated();
CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhookd_count_deleted();
