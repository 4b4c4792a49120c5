DROP TABLE advances;
DROP TABLE debit_parts;
ALTER TABLE debits DROP COLUMN flags;
ALTER TABLE debits DROP COLUMN subsidy_minor;
DROP TABLE settlement_receivers;
ALTER TABLE settlements DROP COLUMN subsidy_refunded_minor;
ALTER TABLE settlements DROP COLUMN subsidy_minor;
ALTER TABLE policies DROP COLUMN advance_limit;
