DROP TABLE refunds;
DROP TABLE trades;
DROP TABLE channels;
DROP TABLE merchants;
