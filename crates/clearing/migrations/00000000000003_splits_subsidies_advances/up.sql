-- Split payments (分账), platform subsidies and advances (垫付).

-- The merchant's advance credit line, a decimal string in the currency's major unit ('0' = none).
ALTER TABLE policies ADD COLUMN advance_limit TEXT NOT NULL DEFAULT '0';

-- The platform-funded part of a payment and how much of it went back with refunds.
ALTER TABLE settlements ADD COLUMN subsidy_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE settlements ADD COLUMN subsidy_refunded_minor BIGINT NOT NULL DEFAULT 0;

-- Each receiver's share of a settled payment (one row, the merchant, when not split), its fee by
-- its own rate and policy, the running refund counters (guarded together with the settlement's),
-- and the part of its credit that repaid its advance.
CREATE TABLE settlement_receivers (
    trade_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    amount_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    fee_refund TEXT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    fee_refunded_minor BIGINT NOT NULL,
    advance_repaid_minor BIGINT NOT NULL,
    PRIMARY KEY (trade_id, receiver_id)
);

INSERT INTO settlement_receivers (trade_id, receiver_id, seq, amount_minor, fee_minor, fee_refund,
    refunded_minor, fee_refunded_minor, advance_repaid_minor)
SELECT trade_id, merchant_id, 0, amount_minor, fee_minor, fee_refund, debited_minor,
    fee_refunded_minor, 0
FROM settlements;

-- A debit's subsidy share, and its flags: 1 = an error refund (差错退款), 2 = the caller named the
-- receivers' amounts (else they were taken by share).
ALTER TABLE debits ADD COLUMN subsidy_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE debits ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;

-- Each receiver's part of a debit: amount, fee share, the advanced part, and (on a reversal or
-- return) the part that repays its advance.
CREATE TABLE debit_parts (
    refund_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    amount_minor BIGINT NOT NULL,
    fee_minor BIGINT NOT NULL,
    advance_minor BIGINT NOT NULL,
    back_to_advance_minor BIGINT NOT NULL,
    PRIMARY KEY (refund_id, receiver_id)
);

INSERT INTO debit_parts (refund_id, receiver_id, seq, amount_minor, fee_minor, advance_minor,
    back_to_advance_minor)
SELECT refund_id, merchant_id, 0, amount_minor, fee_minor, 0, 0
FROM debits;

-- A merchant's advance counters per currency (minor units), moved only by conditional updates:
-- posted = the ledger's ADVANCE balance once confirmed postings are in; reserved = lent by debits
-- not yet posted; repaying = promised to settlements / reversals / returns not yet posted.
-- posted + reserved <= the line when an advance is taken; repaying <= posted.
CREATE TABLE advances (
    merchant_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    posted_minor BIGINT NOT NULL,
    reserved_minor BIGINT NOT NULL,
    repaying_minor BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, currency)
);
