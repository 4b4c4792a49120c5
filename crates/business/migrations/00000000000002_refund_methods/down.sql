ALTER TABLE refunds DROP COLUMN expected_completion_ms;
