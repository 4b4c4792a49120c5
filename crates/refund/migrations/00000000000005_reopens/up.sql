-- Reopens: an order reopened after it succeeded has a second set of finalisation steps, keyed by
-- refund, step and attempt in the step's id (`{refund}:{step}:{attempt}`), so the same step may
-- appear once per attempt. The id stays the primary key; (refund_id, step) is no longer unique.
CREATE TABLE outbox_steps (
    id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL,
    step TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    done INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
INSERT INTO outbox_steps (id, refund_id, step, ordinal, done, attempts, last_error, created_at_ms, updated_at_ms)
    SELECT id, refund_id, step, ordinal, done, attempts, last_error, created_at_ms, updated_at_ms FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_steps RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (done, refund_id, ordinal);
