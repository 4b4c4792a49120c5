-- Refund methods: the refund center's expected completion of each accepted refund (epoch ms,
-- 0 = unknown), shown to the merchant.
ALTER TABLE refunds ADD COLUMN expected_completion_ms BIGINT NOT NULL DEFAULT 0;
