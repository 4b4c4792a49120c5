-- Refund center schema. Portable: runs unchanged on SQLite and PostgreSQL.
-- Money is BIGINT minor units + currency TEXT; instants are BIGINT milliseconds; booleans INTEGER 0/1.

CREATE TABLE channels (
    code TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- Comma-separated refund methods in order of preference; empty = the kind's default.
    methods TEXT NOT NULL,
    original_route_window_days INTEGER NOT NULL,
    bank_code TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE refunds (
    refund_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    trade_paid_at_ms BIGINT NOT NULL,
    payer_card_no TEXT NOT NULL,
    payer_name TEXT NOT NULL,
    method TEXT NOT NULL,
    submit_status TEXT NOT NULL,
    refund_status TEXT NOT NULL,
    -- '' until the bank said something.
    bank_status TEXT NOT NULL,
    -- Sequence of the last applied bank event; -1 before any.
    bank_seq BIGINT NOT NULL,
    bank_ref TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- 1 when no automatic method will move the order: it waits for people.
    waiting_manual INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    submitted_at_ms BIGINT NULL,
    finalized_at_ms BIGINT NULL,
    final_source TEXT NOT NULL
);

-- The interface cycle: PENDING orders of a method.
CREATE INDEX refunds_cycle ON refunds (submit_status, method, refund_status);
-- ListSubmitted: a channel's SUBMITTED + PROCESSING orders submitted before a bound.
CREATE INDEX refunds_submitted ON refunds (channel, submit_status, refund_status, submitted_at_ms);

-- Finalisation steps, written in the same transaction that makes an order final.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL,
    -- CLEARING_COMPLETE | CLEARING_REVERSE | NOTIFY_BUSINESS
    step TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    done INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (refund_id, step)
);

CREATE INDEX outbox_pending ON outbox (done, refund_id, ordinal);
