-- Reconciliation's corrections between a channel's reserve and its suspense account, keyed by the
-- caller's adjustment id. posting_id is NULL until accounting confirmed the `adjust:` posting.
-- (Returned payouts need no schema change: debits.status gains RETURNING and RETURNED.)
CREATE TABLE adjustments (
    adjustment_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    memo TEXT NOT NULL,
    posting_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX adjustments_unposted ON adjustments (posting_id, created_at_ms);
