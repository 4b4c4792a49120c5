-- Refunds the bank subsystem sent to real payment channels (WeChat Pay, Alipay), one row per bank
-- reference id: what was asked, the channel's last verified word, and when to ask again.
CREATE TABLE channel_refunds (
    reference TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    original_trade_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    channel_status TEXT NOT NULL,
    channel_ref TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    next_query_at_ms BIGINT,
    completed_at_ms BIGINT
);

CREATE INDEX channel_refunds_due ON channel_refunds (next_query_at_ms);
CREATE INDEX channel_refunds_channel ON channel_refunds (channel, completed_at_ms);

-- Every notification a channel sent: ACCEPTED ones by the channel's notification id (a second
-- one with the same id is a replay), and the REFUSED and DUPLICATE ones, for operators.
CREATE TABLE channel_notifications (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

CREATE UNIQUE INDEX channel_notifications_accepted ON channel_notifications (channel, notification_id);
