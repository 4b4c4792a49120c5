-- Per-merchant fee rate (decimal string) and fee-refund policy.
CREATE TABLE policies (
    merchant_id TEXT PRIMARY KEY,
    fee_rate TEXT NOT NULL,
    fee_refund TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- One row per settled payment. debited_minor / fee_refunded_minor are the running sums of the
-- refund debits against it, guarded by conditional updates (never above amount_minor / fee_minor).
-- fee_refund is the merchant's fee-refund policy when the payment settled.
CREATE TABLE settlements (
    trade_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    fee_refund TEXT NOT NULL,
    debited_minor BIGINT NOT NULL,
    fee_refunded_minor BIGINT NOT NULL,
    posting_id TEXT,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX settlements_by_status ON settlements (status, trade_id);

-- One row per refund debit (扣账), keyed by the refund id.
CREATE TABLE debits (
    refund_id TEXT PRIMARY KEY,
    trade_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    merchant_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    debit_posting_id TEXT,
    final_posting_id TEXT,
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX debits_by_status ON debits (status, refund_id);
CREATE INDEX debits_by_trade ON debits (trade_id);
