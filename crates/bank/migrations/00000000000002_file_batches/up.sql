-- Refund spreadsheets (file-upload and offline refunds) the bank received, idempotent by batch_id.
-- Each row is a transaction of kind FILE (id = row id) that records its batch.
CREATE TABLE file_batches (
    batch_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    submitted_at_ms BIGINT NOT NULL
);

ALTER TABLE transactions ADD COLUMN batch_id TEXT NOT NULL DEFAULT '';
