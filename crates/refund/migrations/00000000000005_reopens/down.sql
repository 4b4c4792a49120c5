CREATE TABLE outbox_steps (
    id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL,
    step TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    done INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (refund_id, step)
);
INSERT INTO outbox_steps SELECT * FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_steps RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (done, refund_id, ordinal);
