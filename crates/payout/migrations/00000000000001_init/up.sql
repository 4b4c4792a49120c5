-- Payouts to cards. card_no is kept in full because the bank needs it (a later change encrypts
-- it); every answer and every log line uses card_masked.
CREATE TABLE payouts (
    payout_id TEXT PRIMARY KEY,
    refund_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    card_no TEXT NOT NULL,
    card_masked TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    reason TEXT NOT NULL,
    callback_seq BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX payouts_status_created ON payouts (status, created_at_ms);
CREATE INDEX payouts_refund ON payouts (refund_id);
