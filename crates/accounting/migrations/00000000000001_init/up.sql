-- Accounts: running totals per (type, owner, currency). Balances are derived from the totals.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    account_type TEXT NOT NULL,
    owner TEXT NOT NULL,
    currency TEXT NOT NULL,
    debits_minor BIGINT NOT NULL,
    credits_minor BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Postings: immutable, one per idempotency key (request_id).
CREATE TABLE postings (
    posting_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    posted_at_ms BIGINT NOT NULL
);

-- Entries: the lines of a posting, in request order.
CREATE TABLE entries (
    posting_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    side TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    PRIMARY KEY (posting_id, seq)
);

CREATE INDEX entries_by_account ON entries (account_id, posting_id);
