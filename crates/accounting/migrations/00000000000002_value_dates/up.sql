-- Every posting carries a value date (the bank's date of the movement, YYYY-MM-DD; its text order
-- is date order) and the bank's reference where one exists. Postings made before this migration
-- get the business date on which they were posted (filled in by the service at start).
ALTER TABLE postings ADD COLUMN value_date TEXT NOT NULL DEFAULT '';
ALTER TABLE postings ADD COLUMN bank_reference TEXT NOT NULL DEFAULT '';

CREATE INDEX postings_by_value_date ON postings (value_date, posting_id);
