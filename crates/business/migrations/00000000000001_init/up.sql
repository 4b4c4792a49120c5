-- Business layer: merchants, channels, trades (original payments) and merchant refunds.
-- Portable across SQLite and PostgreSQL: TEXT ids, BIGINT minor units and epoch milliseconds,
-- INTEGER 0/1 booleans.

CREATE TABLE merchants (
    merchant_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE channels (
    code TEXT PRIMARY KEY NOT NULL,
    refund_window_days INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE trades (
    trade_id TEXT PRIMARY KEY NOT NULL,
    merchant_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    paid_at_ms BIGINT NOT NULL,
    -- Sum of live refunds (reserved, in progress, accepted or succeeded); never above amount_minor.
    refunded_minor BIGINT NOT NULL,
    settle_status TEXT NOT NULL,
    payer_card_no TEXT,
    payer_name TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, order_no)
);

CREATE INDEX trades_settle_status ON trades (settle_status, created_at_ms);

CREATE TABLE refunds (
    refund_id TEXT PRIMARY KEY NOT NULL,
    merchant_id TEXT NOT NULL,
    merchant_refund_no TEXT NOT NULL,
    trade_id TEXT NOT NULL,
    order_no TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    chain_state TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (merchant_id, merchant_refund_no)
);

CREATE INDEX refunds_chain_state ON refunds (chain_state, created_at_ms);
CREATE INDEX refunds_trade ON refunds (trade_id);
