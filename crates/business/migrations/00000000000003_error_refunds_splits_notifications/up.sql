-- Issue 5: error refunds, split payments and subsidies, merchant notifications, cards at rest.
-- Portable across SQLite and PostgreSQL.

-- The platform-funded subsidy part of a trade's amount (minor units, 0 = none).
ALTER TABLE trades ADD COLUMN platform_subsidy_minor BIGINT NOT NULL DEFAULT 0;

-- Split receivers (分账) of a trade and their shares; they sum to the trade's amount.
CREATE TABLE trade_receivers (
    trade_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (trade_id, receiver_id)
);

-- NORMAL, DUPLICATE_PAYMENT or EXPIRED_ORDER.
ALTER TABLE refunds ADD COLUMN kind TEXT NOT NULL DEFAULT 'NORMAL';
-- The operator who raised an error refund.
ALTER TABLE refunds ADD COLUMN operator TEXT;
-- Error refunds only: the trade id, unique (one error refund per trade); NULL for the others.
ALTER TABLE refunds ADD COLUMN error_trade_id TEXT;
CREATE UNIQUE INDEX refunds_error_trade ON refunds (error_trade_id);

-- What a refund takes back from each split receiver, as the merchant gave it.
CREATE TABLE refund_splits (
    refund_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (refund_id, receiver_id)
);

-- Merchant notification settings; the secret sealed like card numbers ("enc:v1:").
ALTER TABLE merchants ADD COLUMN notify_url TEXT;
ALTER TABLE merchants ADD COLUMN notify_secret TEXT;

CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY NOT NULL,
    refund_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    -- The final refund status notified: SUCCEEDED, FAILED or REJECTED.
    event TEXT NOT NULL,
    -- PENDING, DELIVERED or ABANDONED.
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_error TEXT,
    UNIQUE (refund_id, event)
);

CREATE INDEX notifications_due ON notifications (status, next_attempt_at_ms);

CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL,
    attempt_no INTEGER NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    -- The merchant's HTTP status; NULL when it did not answer.
    http_status INTEGER,
    error TEXT,
    PRIMARY KEY (notification_id, attempt_no)
);
