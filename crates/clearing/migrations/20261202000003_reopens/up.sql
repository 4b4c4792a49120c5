-- Reopens: a completed refund whose attempt the bank failed after all is reopened (its completion
-- undone, the debit DEBITED again). One row per refund and attempt: REOPENING while the undoing
-- posting is made, REOPENED after.
CREATE TABLE debit_reopens (
    refund_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    posting_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (refund_id, attempt)
);
