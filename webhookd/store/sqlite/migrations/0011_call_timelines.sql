-- webhookd schema v11 (SQLite): calls by customer, and callbacks by call, for the calls list and a
-- call's timeline. Without them a customer's newest calls were a sort of all its calls, and one call's
-- callbacks a walk through all of its customer's (call_callbacks is keyed by idempotency key).
-- calls is WITHOUT ROWID: its index ends with the primary key (carrier, call_id), so the list's
-- order (updated_at, carrier, call_id) is the index's own.
CREATE INDEX calls_by_customer ON calls (customer_id, updated_at);
CREATE INDEX call_callbacks_by_call ON call_callbacks (customer_id, carrier, call_id, received_at);
