-- Reconciliation at production depth: file formats and sources, corrected files that supersede
-- earlier runs, suspense for platform-only refunds, discrepancies (差错) and their audit trail.
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE runs ADD COLUMN skipped_rows BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN source TEXT NOT NULL DEFAULT 'bank';
ALTER TABLE runs ADD COLUMN supersedes TEXT;
ALTER TABLE runs ADD COLUMN superseded_by TEXT;
ALTER TABLE runs ADD COLUMN discrepancies BIGINT NOT NULL DEFAULT 0;

CREATE INDEX runs_channel_date ON runs (channel, business_date);

-- Nothing reads items by refund id (the refund center records which run made each refund final,
-- ApplyReconciliation.source); the index cost a third of the insert time of a million-row run.
DROP INDEX items_refund;

-- What an item was matched on when it differs from its refund id (payout and file refunds), and
-- the discrepancy it opened or belongs to. Only items with either have a row.
CREATE TABLE item_refs (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    bank_reference_id TEXT NOT NULL,
    discrepancy_id TEXT,
    PRIMARY KEY (run_id, seq)
);

-- Platform-only refunds waiting for a later file, one row per (channel, bank reference id).
-- status: OPEN, CLEARED (found in a later file), EXPIRED (became a BANK_MISSED discrepancy).
CREATE TABLE suspense (
    channel TEXT NOT NULL,
    bank_reference_id TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    since_date TEXT NOT NULL,
    status TEXT NOT NULL,
    discrepancy_id TEXT,
    cleared_by_run TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel, bank_reference_id)
);

CREATE INDEX suspense_status ON suspense (channel, status);

-- One discrepancy per fact: the id is derived from the fact (kind, channel, date, reference), so
-- re-runs and corrected files never open it twice. status: OPEN, RESOLVING, RESOLVED. Severity
-- follows from the kind.
CREATE TABLE discrepancies (
    discrepancy_id TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    business_date TEXT NOT NULL,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    bank_reference_id TEXT NOT NULL,
    bank_ref TEXT NOT NULL,
    platform_amount_minor BIGINT,
    bank_amount_minor BIGINT,
    currency TEXT NOT NULL,
    bank_currency TEXT,
    bank_status TEXT,
    detail TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX discrepancies_status ON discrepancies (status, channel);
CREATE INDEX discrepancies_channel_date ON discrepancies (channel, business_date);
CREATE INDEX discrepancies_created ON discrepancies (created_at_ms);

-- The resolution of a discrepancy (one row from the moment it starts).
CREATE TABLE resolutions (
    discrepancy_id TEXT PRIMARY KEY NOT NULL,
    resolution TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    resolved_at_ms BIGINT,
    actions TEXT NOT NULL,
    adjustment_id TEXT NOT NULL
);

-- Every resolution and every superseded run, with before/after.
CREATE TABLE audit_log (
    audit_id TEXT PRIMARY KEY NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    action TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    before_state TEXT NOT NULL,
    after_state TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

CREATE INDEX audit_subject ON audit_log (subject_id, at_ms);
CREATE INDEX audit_at ON audit_log (at_ms);
