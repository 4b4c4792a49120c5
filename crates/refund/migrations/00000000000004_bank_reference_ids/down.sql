ALTER TABLE channels DROP COLUMN id_scheme;
