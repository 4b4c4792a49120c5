DROP TABLE callbacks;
DROP TABLE transactions;
