-- The bank simulator's own books: every transaction it took (refunds and payouts) and every
-- callback it owes. One row per id: the bank never pays the same id twice.
CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    original_trade_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    return_due_at_ms BIGINT,
    returned_at_ms BIGINT
);

CREATE INDEX transactions_status_due ON transactions (status, due_at_ms);
CREATE INDEX transactions_channel_completed ON transactions (channel, completed_at_ms);

CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    tx_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tx_id, idx)
);

CREATE INDEX callbacks_pending ON callbacks (delivered, created_at_ms);
