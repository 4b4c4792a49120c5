DROP INDEX postings_by_value_date;
ALTER TABLE postings DROP COLUMN bank_reference;
ALTER TABLE postings DROP COLUMN value_date;
