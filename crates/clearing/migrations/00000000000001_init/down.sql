DROP INDEX debits_by_trade;
DROP INDEX debits_by_status;
DROP TABLE debits;
DROP INDEX settlements_by_status;
DROP TABLE settlements;
DROP TABLE policies;
