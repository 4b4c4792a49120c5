ALTER TABLE transactions DROP COLUMN batch_id;
DROP TABLE file_batches;
