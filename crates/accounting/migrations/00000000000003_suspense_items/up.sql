-- Suspense as items: each line on a suspense item account (SUSPENSE_BANK_CLAIM,
-- SUSPENSE_OWED_CUSTOMER, SUSPENSE_OWED_MERCHANT) names its item; '' on every other line.
ALTER TABLE entries ADD COLUMN item_id TEXT NOT NULL DEFAULT '';

-- One row per item, opened by a line on its account's normal side and reduced (never below zero)
-- by lines on the other side, in the same transaction as the posting. account_type is the
-- direction, channel the account's owner. source is the opening posting's request id; closed_by
-- the request id of the posting that took it to zero.
CREATE TABLE suspense_items (
    item_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    account_type TEXT NOT NULL,
    channel TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    remaining_minor BIGINT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL,
    value_date TEXT NOT NULL,
    bank_reference TEXT NOT NULL,
    opened_at_ms BIGINT NOT NULL,
    closed_by TEXT NOT NULL,
    closed_at_ms BIGINT
);

CREATE INDEX suspense_items_by_status ON suspense_items (status, channel, item_id);
