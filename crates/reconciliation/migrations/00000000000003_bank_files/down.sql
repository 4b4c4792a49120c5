DROP TABLE rejected_files;
DROP INDEX runs_content;
ALTER TABLE runs DROP COLUMN content_sha256;
