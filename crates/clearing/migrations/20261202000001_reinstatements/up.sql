-- Reinstatements (恢复成功): a reversed debit whose refund the bank did pay is taken again. Per
-- receiver, what its balance covers and what it owes (MERCHANT_RECEIVABLE), decided when the
-- reinstatement starts so that a retry posts the same content.
CREATE TABLE debit_reinstatements (
    refund_id TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    covered_minor BIGINT NOT NULL,
    receivable_minor BIGINT NOT NULL,
    PRIMARY KEY (refund_id, receiver_id)
);
