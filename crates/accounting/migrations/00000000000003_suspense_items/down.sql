DROP INDEX suspense_items_by_status;
DROP TABLE suspense_items;
ALTER TABLE entries DROP COLUMN item_id;
