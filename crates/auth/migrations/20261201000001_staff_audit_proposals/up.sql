-- Staff security, in every service's own database: the audit trail of staff actions and the
-- four-eyes proposals of actions that move money by hand. Portable: SQLite and PostgreSQL.

CREATE TABLE staff_audit (
    -- Time-ordered (UUIDv7): newest first is descending id.
    audit_id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    operator TEXT NOT NULL,
    -- ops,finance,...
    roles TEXT NOT NULL,
    -- A permission-table action, or PROPOSE / APPROVE / REJECT / CANCEL / EXECUTE / LOGIN ...
    action TEXT NOT NULL,
    rpc TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    before_state TEXT NOT NULL,
    after_state TEXT NOT NULL,
    proposal_id TEXT NOT NULL
);
CREATE INDEX staff_audit_subject ON staff_audit (subject, audit_id);
CREATE INDEX staff_audit_operator ON staff_audit (operator, audit_id);

CREATE TABLE staff_proposals (
    proposal_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The money the action moves (NULL: none known); currency '' then.
    amount_minor BIGINT,
    currency TEXT NOT NULL,
    summary TEXT NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL,
    proposer TEXT NOT NULL,
    proposer_roles TEXT NOT NULL,
    -- PENDING | APPROVED | EXECUTED | REJECTED | FAILED | CANCELLED | EXPIRED
    status TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision_reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    decided_at_ms BIGINT,
    executed_at_ms BIGINT,
    expires_at_ms BIGINT NOT NULL,
    result TEXT NOT NULL,
    needs_second INTEGER NOT NULL,
    -- 'ACTION|subject' while PENDING or APPROVED, NULL once final: one open proposal per action
    -- and subject (NULLs never collide, on both databases).
    open_key TEXT UNIQUE
);
CREATE INDEX staff_proposals_status ON staff_proposals (status, proposal_id);
