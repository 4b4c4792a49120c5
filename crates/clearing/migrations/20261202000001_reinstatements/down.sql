DROP TABLE debit_reinstatements;
