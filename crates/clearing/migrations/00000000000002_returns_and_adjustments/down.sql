DROP TABLE adjustments;
