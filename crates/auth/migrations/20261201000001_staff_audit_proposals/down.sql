DROP TABLE staff_proposals;
DROP TABLE staff_audit;
