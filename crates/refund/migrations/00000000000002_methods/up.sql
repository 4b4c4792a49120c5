-- Refund methods (issue 3): attempts, bank reference ids, expected completion, file-upload and
-- offline batches, banks' spreadsheet templates. Portable: runs unchanged on SQLite and PostgreSQL.

-- The order's current attempt: its number, the id the bank knows it by, its expected completion.
ALTER TABLE refunds ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE refunds ADD COLUMN bank_reference_id TEXT NOT NULL DEFAULT '';
ALTER TABLE refunds ADD COLUMN expected_completion_ms BIGINT NULL;
UPDATE refunds SET bank_reference_id = refund_id WHERE method = 'INTERFACE';
UPDATE refunds SET bank_reference_id = 'po_' || refund_id || '_1' WHERE method = 'PAYOUT';

-- Every attempt of every order: one method tried once (refused-up-front ones included).
CREATE TABLE refund_attempts (
    refund_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    method TEXT NOT NULL,
    -- '' for an attempt refused up front, and for a file/offline attempt until a batch takes it.
    bank_reference_id TEXT NOT NULL,
    -- PENDING | SUBMITTED | FAILED | SUCCEEDED
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT NULL,
    PRIMARY KEY (refund_id, number)
);
CREATE INDEX refund_attempts_reference ON refund_attempts (bank_reference_id);

-- Orders accepted before this migration had exactly one attempt.
INSERT INTO refund_attempts (refund_id, number, method, bank_reference_id, outcome, reason, started_at_ms, ended_at_ms)
SELECT refund_id, 1, method, bank_reference_id,
       CASE WHEN refund_status = 'SUCCEEDED' THEN 'SUCCEEDED'
            WHEN refund_status = 'FAILED' THEN 'FAILED'
            WHEN submit_status = 'SUBMITTED' THEN 'SUBMITTED'
            ELSE 'PENDING' END,
       reason, created_at_ms, finalized_at_ms
FROM refunds;

-- Numbered, immutable spreadsheets of file-upload and offline refunds.
CREATE TABLE refund_batches (
    batch_id TEXT PRIMARY KEY,
    bank_code TEXT NOT NULL,
    channel TEXT NOT NULL,
    method TEXT NOT NULL,
    -- Business date, YYYY-MM-DD.
    batch_date TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    -- GENERATED | UPLOADED | SENT
    status TEXT NOT NULL,
    currency TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    total_minor BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    -- The .xlsx bytes, hex-encoded (portable; verified against file_sha256 on download).
    file_hex TEXT NOT NULL,
    generated_at_ms BIGINT NOT NULL,
    marked_at_ms BIGINT NULL,
    marked_by TEXT NOT NULL,
    note TEXT NOT NULL,
    -- 1 once the bank received the rows (SubmitFileBatch).
    bank_delivered INTEGER NOT NULL,
    bank_error TEXT NOT NULL,
    UNIQUE (bank_code, method, batch_date, sequence)
);
CREATE INDEX refund_batches_date ON refund_batches (batch_date, status);

CREATE TABLE refund_batch_rows (
    row_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    line INTEGER NOT NULL,
    order_no TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    card_no TEXT NOT NULL,
    holder_name TEXT NOT NULL,
    -- INCLUDED | ROW_SUBMITTED | ROW_FAILED
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (refund_id, attempt),
    UNIQUE (batch_id, line)
);

-- Banks' spreadsheet templates (built-in defaults apply where none is configured).
CREATE TABLE bank_templates (
    bank_code TEXT PRIMARY KEY,
    sheet_name TEXT NOT NULL,
    -- JSON array of {"header": ..., "field": ...}.
    column_spec TEXT NOT NULL,
    date_format TEXT NOT NULL,
    amount_format TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
