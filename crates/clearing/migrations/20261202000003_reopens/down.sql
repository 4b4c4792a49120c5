DROP TABLE debit_reopens;
