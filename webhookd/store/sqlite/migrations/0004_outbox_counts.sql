-- webhookd schema v4 (SQLite): delivery counts by status, kept by triggers, so the metrics scrape
-- reads seven rows instead of counting a million pending deliveries.

CREATE TABLE outbox_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO outbox_counts (status, n) VALUES
    ('pending', 0), ('in_flight', 0), ('held', 0), ('parked', 0), ('delivered', 0), ('failed', 0),
    ('canceled', 0);
UPDATE outbox_counts SET n = (SELECT count(*) FROM deliveries WHERE deliveries.status = outbox_counts.status);

CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries BEGIN
    UPDATE outbox_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER deliveries_counted_update AFTER UPDATE OF status ON deliveries
WHEN OLD.status <> NEW.status BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE outbox_counts SET n = n + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE status = OLD.status;
END;
