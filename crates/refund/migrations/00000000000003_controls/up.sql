-- Error refunds, risk holds, manual controls, the audit trail and card numbers at rest (issue 5).
-- Portable: runs unchanged on SQLite and PostgreSQL. Card numbers are encrypted by the refund
-- center itself (AES-256-GCM, `enc:v1:` prefix); rows written before this migration are encrypted
-- by its startup pass, which also fills refund_cards for them.

-- NORMAL | ERROR_DUPLICATE | ERROR_EXPIRED
ALTER TABLE refunds ADD COLUMN kind TEXT NOT NULL DEFAULT 'NORMAL';
-- '' (never held) | HELD | RELEASED | REJECTED
ALTER TABLE refunds ADD COLUMN hold_status TEXT NOT NULL DEFAULT '';
ALTER TABLE refunds ADD COLUMN hold_rule_id TEXT NOT NULL DEFAULT '';
ALTER TABLE refunds ADD COLUMN hold_reason TEXT NOT NULL DEFAULT '';
-- 1 while an operator suspended automatic processing (挂起).
ALTER TABLE refunds ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
CREATE INDEX refunds_merchant_created ON refunds (merchant_id, created_at_ms);
CREATE INDEX refunds_hold ON refunds (hold_status);

-- A keyed hash (HMAC-SHA256) of each refund's card number, never the number: the card-velocity
-- rule counts by it.
CREATE TABLE refund_cards (
    refund_id TEXT PRIMARY KEY,
    card_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX refund_cards_hash ON refund_cards (card_hash, created_at_ms);

-- Risk rules (风控规则).
CREATE TABLE risk_rules (
    rule_id TEXT PRIMARY KEY,
    -- AMOUNT_ABOVE | MERCHANT_VELOCITY | CARD_VELOCITY | SOON_AFTER_PAYMENT
    kind TEXT NOT NULL,
    -- '' = every channel.
    channel TEXT NOT NULL,
    threshold_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    max_count INTEGER NOT NULL,
    window_minutes INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    description TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Every manual action and hold decision.
CREATE TABLE refund_audit (
    audit_id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL,
    action TEXT NOT NULL,
    operator TEXT NOT NULL,
    role TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    -- The order's control-relevant state as JSON ('' when there was none).
    state_before TEXT NOT NULL,
    state_after TEXT NOT NULL
);
CREATE INDEX refund_audit_refund ON refund_audit (refund_id, audit_id);
