ALTER TABLE policies DROP COLUMN advance_currency;
