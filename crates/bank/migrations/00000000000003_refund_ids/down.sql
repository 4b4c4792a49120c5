DROP INDEX transactions_refund;
ALTER TABLE transactions DROP COLUMN refund_id;
