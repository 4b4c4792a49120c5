//! Storage of staff security in a service's own database (SQLite or PostgreSQL, through
//! `tuikuan-db`): the audit trail and the four-eyes proposals ([`MIGRATIONS`], run by every
//! service at start), and the operator registry ([`REGISTRY_MIGRATIONS`], the business layer only).
//!
//! Functions take `&mut AnyConnection`, so that a service writes an audit entry or marks a
//! proposal executed in the same transaction as the change it records.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::{
    parse_roles, Action, AuditEntry, OperatorRecord, Proposal, ProposalStatus, Role,
};

/// The audit trail and the proposals (every service).
pub const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");
/// The operator registry (business layer).
pub const REGISTRY_MIGRATIONS: tuikuan_db::Migrations =
    tuikuan_db::embed_migrations!("registry_migrations");

/// The most entries one listing returns.
pub const MAX_LIST: i64 = 1000;

diesel::table! {
    staff_audit (audit_id) {
        audit_id -> Text,
        at_ms -> BigInt,
        operator -> Text,
        roles -> Text,
        action -> Text,
        rpc -> Text,
        subject -> Text,
        reason -> Text,
        before_state -> Text,
        after_state -> Text,
        proposal_id -> Text,
    }
}

diesel::table! {
    staff_proposals (proposal_id) {
        proposal_id -> Text,
        service -> Text,
        action -> Text,
        subject -> Text,
        amount_minor -> Nullable<BigInt>,
        currency -> Text,
        summary -> Text,
        payload -> Text,
        reason -> Text,
        proposer -> Text,
        proposer_roles -> Text,
        status -> Text,
        approver -> Text,
        decision_reason -> Text,
        created_at_ms -> BigInt,
        decided_at_ms -> Nullable<BigInt>,
        executed_at_ms -> Nullable<BigInt>,
        expires_at_ms -> BigInt,
        result -> Text,
        needs_second -> Integer,
        open_key -> Nullable<Text>,
    }
}

diesel::table! {
    operators (name) {
        name -> Text,
        roles -> Text,
        password_hash -> Text,
        enabled -> Integer,
        failed_logins -> Integer,
        locked_until_ms -> BigInt,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        password_changed_at_ms -> BigInt,
    }
}

// ---------------------------------------------------------------------------------------------
// Audit trail

#[derive(Queryable, Insertable)]
#[diesel(table_name = staff_audit)]
struct AuditRow {
    audit_id: String,
    at_ms: i64,
    operator: String,
    roles: String,
    action: String,
    rpc: String,
    subject: String,
    reason: String,
    before_state: String,
    after_state: String,
    proposal_id: String,
}

/// Writes one audit entry.
pub fn insert_audit(conn: &mut AnyConnection, e: &AuditEntry) -> Result<()> {
    diesel::insert_into(staff_audit::table)
        .values(AuditRow {
            audit_id: e.audit_id.clone(),
            at_ms: e.at_ms,
            operator: e.operator.clone(),
            roles: e.roles.clone(),
            action: e.action.clone(),
            rpc: e.rpc.clone(),
            subject: e.subject.clone(),
            reason: e.reason.clone(),
            before_state: e.before.clone(),
            after_state: e.after.clone(),
            proposal_id: e.proposal_id.clone(),
        })
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// Filters of [`list_audit`]; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub subject: String,
    pub operator: String,
    pub action: String,
    /// Entries older than this audit id.
    pub before: String,
    pub limit: i64,
}

/// Audit entries, newest first.
pub fn list_audit(conn: &mut AnyConnection, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let mut q = staff_audit::table.into_boxed();
    if !f.subject.is_empty() {
        q = q.filter(staff_audit::subject.eq(f.subject.clone()));
    }
    if !f.operator.is_empty() {
        q = q.filter(staff_audit::operator.eq(f.operator.clone()));
    }
    if !f.action.is_empty() {
        q = q.filter(staff_audit::action.eq(f.action.clone()));
    }
    if !f.before.is_empty() {
        q = q.filter(staff_audit::audit_id.lt(f.before.clone()));
    }
    let rows: Vec<AuditRow> = q
        .order(staff_audit::audit_id.desc())
        .limit(f.limit.clamp(1, MAX_LIST))
        .load(conn)
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            audit_id: r.audit_id,
            at_ms: r.at_ms,
            operator: r.operator,
            roles: r.roles,
            action: r.action,
            rpc: r.rpc,
            subject: r.subject,
            reason: r.reason,
            before: r.before_state,
            after: r.after_state,
            proposal_id: r.proposal_id,
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Proposals

#[derive(Queryable, Insertable)]
#[diesel(table_name = staff_proposals)]
struct ProposalRow {
    proposal_id: String,
    service: String,
    action: String,
    subject: String,
    amount_minor: Option<i64>,
    currency: String,
    summary: String,
    payload: String,
    reason: String,
    proposer: String,
    proposer_roles: String,
    status: String,
    approver: String,
    decision_reason: String,
    created_at_ms: i64,
    decided_at_ms: Option<i64>,
    executed_at_ms: Option<i64>,
    expires_at_ms: i64,
    result: String,
    needs_second: i32,
    open_key: Option<String>,
}

fn open_key(p: &Proposal) -> Option<String> {
    (!p.status.is_final()).then(|| format!("{}|{}", p.action, p.subject))
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl ProposalRow {
    fn from_domain(p: &Proposal) -> ProposalRow {
        ProposalRow {
            proposal_id: p.proposal_id.clone(),
            service: p.service.clone(),
            action: p.action.as_str().to_string(),
            subject: p.subject.clone(),
            amount_minor: p.amount.as_ref().map(Money::to_minor),
            currency: p
                .amount
                .as_ref()
                .map(|m| m.currency().code().to_string())
                .unwrap_or_default(),
            summary: p.summary.clone(),
            payload: p.payload.clone(),
            reason: p.reason.clone(),
            proposer: p.proposer.clone(),
            proposer_roles: roles_text(&p.proposer_roles),
            status: p.status.as_str().to_string(),
            approver: p.approver.clone(),
            decision_reason: p.decision_reason.clone(),
            created_at_ms: p.created_at_ms,
            decided_at_ms: p.decided_at_ms,
            executed_at_ms: p.executed_at_ms,
            expires_at_ms: p.expires_at_ms,
            result: p.result.clone(),
            needs_second: i32::from(p.needs_second),
            open_key: open_key(p),
        }
    }

    fn into_domain(self) -> Result<Proposal> {
        let corrupt = |what: &str| {
            Error::internal(format!(
                "proposal {}: stored {what} is invalid",
                self.proposal_id
            ))
        };
        let amount = match self.amount_minor {
            Some(minor) => Some(Money::from_minor(
                minor,
                Currency::parse(&self.currency, "currency").map_err(|_| corrupt("currency"))?,
            )),
            None => None,
        };
        Ok(Proposal {
            action: Action::parse(&self.action).ok_or_else(|| corrupt("action"))?,
            status: ProposalStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            proposer_roles: parse_roles(&[self.proposer_roles.as_str()], "proposer_roles")
                .map_err(|_| corrupt("roles"))?,
            amount,
            proposal_id: self.proposal_id,
            service: self.service,
            subject: self.subject,
            summary: self.summary,
            payload: self.payload,
            reason: self.reason,
            proposer: self.proposer,
            approver: self.approver,
            decision_reason: self.decision_reason,
            created_at_ms: self.created_at_ms,
            decided_at_ms: self.decided_at_ms,
            executed_at_ms: self.executed_at_ms,
            expires_at_ms: self.expires_at_ms,
            result: self.result,
            needs_second: self.needs_second != 0,
        })
    }
}

/// Stores a new proposal: `(true, p)`; when an open proposal for the same action and subject
/// exists, that one instead: `(false, existing)`. The insert runs in a savepoint, so that a
/// conflict inside a caller's PostgreSQL transaction leaves the transaction usable.
pub fn insert_proposal(conn: &mut AnyConnection, p: &Proposal) -> Result<(bool, Proposal)> {
    let row = ProposalRow::from_domain(p);
    match conn.transaction(|c| {
        diesel::insert_into(staff_proposals::table)
            .values(row)
            .execute(c)
    }) {
        Ok(_) => Ok((true, p.clone())),
        Err(e) if is_unique_violation(&e) => {
            let key = open_key(p);
            let row: Option<ProposalRow> = staff_proposals::table
                .filter(staff_proposals::open_key.eq(key))
                .first(conn)
                .optional()
                .map_err(db_err)?;
            match row {
                Some(r) => Ok((false, r.into_domain()?)),
                None => Err(Error::unavailable(
                    "a proposal for this action and subject changed concurrently; retry",
                )),
            }
        }
        Err(e) => Err(db_err(e)),
    }
}

pub fn get_proposal(conn: &mut AnyConnection, proposal_id: &str) -> Result<Option<Proposal>> {
    let row: Option<ProposalRow> = staff_proposals::table
        .find(proposal_id)
        .first(conn)
        .optional()
        .map_err(db_err)?;
    row.map(ProposalRow::into_domain).transpose()
}

/// Filters of [`list_proposals`].
#[derive(Debug, Clone, Default)]
pub struct ProposalFilter {
    pub status: Option<ProposalStatus>,
    pub action: Option<Action>,
    pub subject: String,
    pub limit: i64,
}

/// Proposals, newest first.
pub fn list_proposals(conn: &mut AnyConnection, f: &ProposalFilter) -> Result<Vec<Proposal>> {
    let mut q = staff_proposals::table.into_boxed();
    if let Some(s) = f.status {
        q = q.filter(staff_proposals::status.eq(s.as_str()));
    }
    if let Some(a) = f.action {
        q = q.filter(staff_proposals::action.eq(a.as_str()));
    }
    if !f.subject.is_empty() {
        q = q.filter(staff_proposals::subject.eq(f.subject.clone()));
    }
    let rows: Vec<ProposalRow> = q
        .order(staff_proposals::proposal_id.desc())
        .limit(f.limit.clamp(1, MAX_LIST))
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(ProposalRow::into_domain).collect()
}

/// Writes `after` over the proposal if it still is in `before`'s status (the guard against two
/// deciders at once). `false`: someone moved it first.
pub fn save_proposal(
    conn: &mut AnyConnection,
    before: &Proposal,
    after: &Proposal,
) -> Result<bool> {
    let row = ProposalRow::from_domain(after);
    let n = diesel::update(
        staff_proposals::table
            .filter(staff_proposals::proposal_id.eq(&before.proposal_id))
            .filter(staff_proposals::status.eq(before.status.as_str())),
    )
    .set((
        staff_proposals::status.eq(row.status),
        staff_proposals::approver.eq(row.approver),
        staff_proposals::decision_reason.eq(row.decision_reason),
        staff_proposals::decided_at_ms.eq(row.decided_at_ms),
        staff_proposals::executed_at_ms.eq(row.executed_at_ms),
        staff_proposals::result.eq(row.result),
        staff_proposals::open_key.eq(row.open_key),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

// ---------------------------------------------------------------------------------------------
// Operator registry

#[derive(Queryable, Insertable, AsChangeset)]
#[diesel(table_name = operators)]
struct OperatorRow {
    name: String,
    roles: String,
    password_hash: String,
    enabled: i32,
    failed_logins: i32,
    locked_until_ms: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    password_changed_at_ms: i64,
}

impl OperatorRow {
    fn from_domain(r: &OperatorRecord) -> OperatorRow {
        OperatorRow {
            name: r.name.clone(),
            roles: roles_text(&r.roles),
            password_hash: r.password_hash.clone(),
            enabled: i32::from(r.enabled),
            failed_logins: r.failed_logins,
            locked_until_ms: r.locked_until_ms,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            password_changed_at_ms: r.password_changed_at_ms,
        }
    }

    fn into_domain(self) -> Result<OperatorRecord> {
        let roles = parse_roles(&[self.roles.as_str()], "roles").map_err(|_| {
            Error::internal(format!("operator {}: stored roles are invalid", self.name))
        })?;
        Ok(OperatorRecord {
            name: self.name,
            roles,
            password_hash: self.password_hash,
            enabled: self.enabled != 0,
            failed_logins: self.failed_logins,
            locked_until_ms: self.locked_until_ms,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            password_changed_at_ms: self.password_changed_at_ms,
        })
    }
}

/// Adds an operator; `false` when the name is taken (in a savepoint, as [`insert_proposal`]).
pub fn insert_operator(conn: &mut AnyConnection, r: &OperatorRecord) -> Result<bool> {
    let row = OperatorRow::from_domain(r);
    match conn.transaction(|c| diesel::insert_into(operators::table).values(row).execute(c)) {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

pub fn get_operator(conn: &mut AnyConnection, name: &str) -> Result<Option<OperatorRecord>> {
    let row: Option<OperatorRow> = operators::table
        .find(name)
        .first(conn)
        .optional()
        .map_err(db_err)?;
    row.map(OperatorRow::into_domain).transpose()
}

/// Writes an operator's record (the whole row; the registry reads, changes and writes it in one
/// transaction).
pub fn update_operator(conn: &mut AnyConnection, r: &OperatorRecord) -> Result<()> {
    diesel::update(operators::table.find(&r.name))
        .set(OperatorRow::from_domain(r))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub fn list_operators(conn: &mut AnyConnection) -> Result<Vec<OperatorRecord>> {
    let rows: Vec<OperatorRow> = operators::table
        .order(operators::name.asc())
        .limit(MAX_LIST)
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(OperatorRow::into_domain).collect()
}

pub fn count_operators(conn: &mut AnyConnection) -> Result<i64> {
    operators::table.count().get_result(conn).map_err(db_err)
}
