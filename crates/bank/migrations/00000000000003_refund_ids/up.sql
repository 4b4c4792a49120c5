-- Which refund each money movement is for, so the bank's own books can be audited per refund:
-- the id itself for REFUND, the submitter's reference for PAYOUT, the row's refund for FILE.
ALTER TABLE transactions ADD COLUMN refund_id TEXT NOT NULL DEFAULT '';
UPDATE transactions SET refund_id = id WHERE kind = 'REFUND';
UPDATE transactions SET refund_id = original_trade_id WHERE kind = 'FILE';
CREATE INDEX transactions_refund ON transactions (refund_id);
