-- Card numbers stay encrypted: decrypting them needs the key, which SQL does not have.
DROP TABLE refund_audit;
DROP TABLE risk_rules;
DROP TABLE refund_cards;
DROP INDEX refunds_hold;
DROP INDEX refunds_merchant_created;
ALTER TABLE refunds DROP COLUMN suspended;
ALTER TABLE refunds DROP COLUMN hold_reason;
ALTER TABLE refunds DROP COLUMN hold_rule_id;
ALTER TABLE refunds DROP COLUMN hold_status;
ALTER TABLE refunds DROP COLUMN kind;
