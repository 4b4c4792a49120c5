-- Transactional outbox of status changes reported to the refund center (RefundService.PayoutUpdate).
-- A row is written in the same transaction as the payout's status change; delivered_at_ms stays
-- NULL until the refund center answered. Rows are delivered in sequence order per payout; a
-- deliverer claims a row by moving lease_until_ms forward (a conditional update), so replicas do
-- not deliver the same row at the same time.
CREATE TABLE payout_updates (
    payout_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    refund_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    lease_until_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    PRIMARY KEY (payout_id, sequence)
);

CREATE INDEX payout_updates_pending ON payout_updates (delivered_at_ms, created_at_ms);
