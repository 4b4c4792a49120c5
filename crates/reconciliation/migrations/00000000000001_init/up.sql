-- Reconciliation center: one run per (channel, business date, clearing-file checksum), and the
-- run's items in report order. Portable SQL (SQLite and PostgreSQL).

CREATE TABLE runs (
    run_id TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    business_date TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    file_format TEXT NOT NULL,
    file_rows BIGINT NOT NULL,
    payout_rows BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (channel, business_date, file_sha256)
);

CREATE INDEX runs_channel_created ON runs (channel, created_at_ms);
CREATE INDEX runs_created ON runs (created_at_ms);

-- write_back: the final status to write back (SUCCEEDED or FAILED), NULL when the item writes none.
-- written_back: 1 once the refund center recorded it. write_back_refused: 1 when the refund center
-- refused (it was already final otherwise: a discrepancy, explained in detail). Pending means
-- write_back IS NOT NULL AND written_back = 0 AND write_back_refused = 0.
CREATE TABLE items (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    refund_id TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    outcome TEXT NOT NULL,
    platform_amount_minor BIGINT,
    bank_amount_minor BIGINT,
    currency TEXT NOT NULL,
    bank_currency TEXT,
    bank_status TEXT,
    file_line BIGINT,
    detail TEXT NOT NULL,
    write_back TEXT,
    write_back_reason TEXT NOT NULL,
    written_back INTEGER NOT NULL,
    write_back_refused INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX items_refund ON items (refund_id);
