DROP TABLE bank_templates;
DROP TABLE refund_batch_rows;
DROP TABLE refund_batches;
DROP TABLE refund_attempts;
ALTER TABLE refunds DROP COLUMN expected_completion_ms;
ALTER TABLE refunds DROP COLUMN bank_reference_id;
ALTER TABLE refunds DROP COLUMN attempt;
