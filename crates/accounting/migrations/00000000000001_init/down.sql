DROP INDEX entries_by_account;
DROP TABLE entries;
DROP TABLE postings;
DROP TABLE accounts;
