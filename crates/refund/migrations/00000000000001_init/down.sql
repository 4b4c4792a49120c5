DROP INDEX outbox_pending;
DROP TABLE outbox;
DROP INDEX refunds_submitted;
DROP INDEX refunds_cycle;
DROP TABLE refunds;
DROP TABLE channels;
