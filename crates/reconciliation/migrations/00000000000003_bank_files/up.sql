-- Reconciliation of the files banks really send (portable SQL, SQLite and PostgreSQL).

-- A run is idempotent per (channel, date, content digest): the SHA-256 of the file with a leading
-- UTF-8 byte-order mark dropped and line endings made `\n`, so that the same bill saved with a BOM
-- or CRLF line endings is the same file, not a corrected one. Runs stored before had no digest:
-- their file hash stands in for it.
ALTER TABLE runs ADD COLUMN content_sha256 TEXT NOT NULL DEFAULT '';
UPDATE runs SET content_sha256 = file_sha256 WHERE content_sha256 = '';
CREATE UNIQUE INDEX runs_content ON runs (channel, business_date, content_sha256);

-- Every file a run refused (malformed, unknown channel, wrong checksum, ...): who, when, what,
-- and the error with its line and field. error_line is 0 when the error is not on a line.
CREATE TABLE rejected_files (
    rejection_id TEXT PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL,
    business_date TEXT NOT NULL,
    -- bank or upload.
    source TEXT NOT NULL,
    operator TEXT NOT NULL,
    file_format TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    error_code TEXT NOT NULL,
    error_line BIGINT NOT NULL,
    error_field TEXT NOT NULL,
    error_message TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

CREATE INDEX rejected_files_at ON rejected_files (at_ms);
CREATE INDEX rejected_files_channel ON rejected_files (channel, at_ms);
