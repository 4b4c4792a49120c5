//! A service's staff desk: its audit trail and its four-eyes proposals, and the `StaffService` RPCs
//! over them. Every service runs one ([`Desk`]) on its own database; a service whose staff actions
//! move money by hand gives it an [`Executor`] that runs approved proposals.

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};
use tuikuan_proto::staff::v1 as pb;
use tuikuan_proto::status::grpc_err;

use crate::domain::audit::{bounded, verb};
use crate::domain::proposal::PROPOSAL_TTL_MS;
use crate::domain::{
    check_decision, Action, AuditEntry, Decision, DecisionStep, FourEyes, Operator, Proposal,
    ProposalStatus,
};
use crate::guard::{staff, Staff};
use crate::store::{self, AuditFilter, ProposalFilter};

/// The longest reason accepted for a staff action or decision.
pub const MAX_REASON_CHARS: usize = 1024;

/// What an executed proposal changed: its subject's state before and after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    pub before: String,
    pub after: String,
}

impl Executed {
    pub fn new(before: impl Into<String>, after: impl Into<String>) -> Executed {
        Executed {
            before: before.into(),
            after: after.into(),
        }
    }

    /// The proposal's `result`: `before → after`.
    pub fn result(&self) -> String {
        format!("{} → {}", self.before, self.after)
    }
}

/// Runs approved proposals of a service.
pub trait Executor: Clone + Send + Sync + 'static {
    /// Runs `proposal`'s action, approved by `approver` (the operator and the RPC that approved
    /// it; its proposer when one operator sufficed); answers what it changed. It must be
    /// idempotent (an interrupted run is repeated by approving again) and should mark the
    /// proposal executed in the transaction of its change ([`mark_executed`], which also writes
    /// the execution's audit entry), refusing the change when the mark fails: then the action
    /// runs at most once whatever the retries. Otherwise the desk marks it after the run. A
    /// retryable error leaves the proposal APPROVED; any other marks it FAILED.
    fn execute(&self, proposal: Proposal, approver: Staff) -> BoxFuture<'static, Result<Executed>>;
}

/// The executor of a service whose actions need no second operator.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProposals;

impl Executor for NoProposals {
    fn execute(&self, proposal: Proposal, _: Staff) -> BoxFuture<'static, Result<Executed>> {
        Box::pin(async move {
            Err(Error::internal(format!(
                "this service runs no proposals ({} {})",
                proposal.action, proposal.proposal_id
            )))
        })
    }
}

/// A proposal about to be made.
#[derive(Debug, Clone)]
pub struct Draft {
    pub action: Action,
    pub subject: String,
    pub amount: Option<Money>,
    pub summary: String,
    /// The parameters the executor needs (JSON).
    pub payload: String,
    pub reason: String,
}

/// A required, bounded, printable reason.
pub fn validate_reason(reason: &str, field: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::field(field, "is required"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Error::field(
            field,
            format!("longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

/// Marks a proposal EXECUTED and writes the execution's audit entry (who proposed, who approved,
/// before → after, why) inside the executor's own transaction, so that the action, the mark and
/// the entry commit together. `false` when it was not APPROVED (already marked, or decided
/// otherwise): the executor then rolls its change back.
pub fn mark_executed(
    conn: &mut tuikuan_db::AnyConnection,
    proposal_id: &str,
    approver: &Staff,
    done: &Executed,
    now_ms: i64,
) -> Result<bool> {
    let Some(before) = store::get_proposal(conn, proposal_id)? else {
        return Ok(false);
    };
    if before.status != ProposalStatus::Approved {
        return Ok(false);
    }
    let mut after = before.clone();
    after.status = ProposalStatus::Executed;
    after.executed_at_ms = Some(now_ms);
    after.result = bounded(&done.result());
    if !store::save_proposal(conn, &before, &after)? {
        return Ok(false);
    }
    store::insert_audit(conn, &execution_entry(&before, approver, done, now_ms))?;
    Ok(true)
}

/// The audit entry of an executed proposal: the action, by its approver, with the proposer and
/// the reason, before → after.
fn execution_entry(p: &Proposal, approver: &Staff, done: &Executed, now_ms: i64) -> AuditEntry {
    let approved = if approver.operator.name == p.proposer {
        "one operator sufficed".to_string()
    } else {
        format!("approved by {}", approver.operator.name)
    };
    AuditEntry::of(
        &approver.operator,
        p.action,
        &approver.rpc,
        &p.subject,
        now_ms,
    )
    .reason(&format!(
        "{} (proposed by {}, {approved})",
        p.reason, p.proposer
    ))
    .change(&done.before, &done.after)
    .proposal(&p.proposal_id)
}

/// A service's audit trail and proposals.
#[derive(Clone)]
pub struct Desk {
    service: &'static str,
    db: Db,
    clock: SharedClock,
    four_eyes: FourEyes,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Desk {
    /// The desk of `service` (its name prefixes proposal ids) on its migrated database.
    pub fn new(service: &'static str, db: Db, clock: SharedClock, four_eyes: FourEyes) -> Desk {
        Desk {
            service,
            db,
            clock,
            four_eyes,
        }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Writes an audit entry in its own transaction.
    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.db.run(move |c| store::insert_audit(c, &entry)).await
    }

    /// Records that `staff` took `action` on `subject` (before → after, why).
    pub async fn record(
        &self,
        staff: &Staff,
        action: Action,
        subject: &str,
        reason: &str,
        before: &str,
        after: &str,
    ) -> Result<()> {
        let entry = AuditEntry::of(&staff.operator, action, &staff.rpc, subject, self.now_ms())
            .reason(reason)
            .change(before, after);
        self.audit(entry).await
    }

    /// Proposes `draft` as `staff`. Below the action's threshold one operator suffices and the
    /// action runs at once; otherwise the proposal waits for a second operator. Repeating the
    /// same proposal returns the open one; another open proposal for the same action and subject
    /// is `IDEMPOTENCY_CONFLICT`.
    pub async fn propose<E: Executor>(
        &self,
        staff: &Staff,
        draft: Draft,
        executor: &E,
    ) -> Result<Proposal> {
        staff.authorize(draft.action)?;
        validate_reason(&draft.reason, "reason")?;
        let now = self.now_ms();
        let needs_second = self
            .four_eyes
            .needs_second(draft.action, draft.amount.as_ref());
        let p = Proposal {
            proposal_id: format!("{}-{}", self.service, uuid_part()),
            service: self.service.to_string(),
            action: draft.action,
            subject: draft.subject,
            amount: draft.amount,
            summary: bounded(&draft.summary),
            payload: draft.payload,
            reason: draft.reason,
            proposer: staff.operator.name.clone(),
            proposer_roles: staff.operator.roles.clone(),
            status: ProposalStatus::Pending,
            approver: String::new(),
            decision_reason: String::new(),
            created_at_ms: now,
            decided_at_ms: None,
            executed_at_ms: None,
            expires_at_ms: now.saturating_add(PROPOSAL_TTL_MS),
            result: String::new(),
            needs_second,
        };
        let entry = AuditEntry::new(&staff.operator, verb::PROPOSE, &staff.rpc, &p.subject, now)
            .reason(&p.reason)
            .change(
                "",
                &format!("{} {}: {}", p.action, p.proposal_id, p.summary),
            )
            .proposal(&p.proposal_id);
        let draft_p = p.clone();
        let (new, stored) = self
            .db
            .transaction(move |c| {
                let (new, stored) = store::insert_proposal(c, &draft_p)?;
                if new {
                    store::insert_audit(c, &entry)?;
                }
                Ok((new, stored))
            })
            .await?;
        if !new {
            if stored.proposer == p.proposer && stored.payload == p.payload {
                return Ok(stored);
            }
            return Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "proposal {} ({} on {}, by {}) is still open; decide or cancel it first",
                    stored.proposal_id, stored.action, stored.subject, stored.proposer
                ),
            ));
        }
        tracing::info!(proposal_id = %p.proposal_id, action = %p.action, subject = %p.subject, proposer = %p.proposer, needs_second, "proposal");
        if needs_second {
            return Ok(stored);
        }
        // One operator suffices: approved by its proposer, run at once.
        let approved = self
            .move_to(
                &stored,
                &staff.operator,
                ProposalStatus::Approved,
                "below the single-operator threshold",
                verb::APPROVE,
                &staff.rpc,
            )
            .await?;
        self.run(approved, staff, executor).await
    }

    /// A second operator decides a proposal (or its proposer cancels it).
    pub async fn decide<E: Executor>(
        &self,
        staff: &Staff,
        proposal_id: &str,
        decision: Decision,
        reason: &str,
        executor: &E,
    ) -> Result<Proposal> {
        validate_reason(reason, "reason")?;
        let p = self.get(proposal_id).await?;
        let now = self.now_ms();
        match check_decision(&p, &staff.operator, decision, now)? {
            DecisionStep::Expire => {
                self.move_to(
                    &p,
                    &staff.operator,
                    ProposalStatus::Expired,
                    reason,
                    verb::EXPIRE,
                    &staff.rpc,
                )
                .await?;
                Err(Error::new(
                    ErrorCode::ProposalExpired,
                    format!("proposal {proposal_id} expired undecided; propose again"),
                ))
            }
            DecisionStep::Reject => {
                self.move_to(
                    &p,
                    &staff.operator,
                    ProposalStatus::Rejected,
                    reason,
                    verb::REJECT,
                    &staff.rpc,
                )
                .await
            }
            DecisionStep::Cancel => {
                self.move_to(
                    &p,
                    &staff.operator,
                    ProposalStatus::Cancelled,
                    reason,
                    verb::CANCEL,
                    &staff.rpc,
                )
                .await
            }
            DecisionStep::Approve => {
                let approved = self
                    .move_to(
                        &p,
                        &staff.operator,
                        ProposalStatus::Approved,
                        reason,
                        verb::APPROVE,
                        &staff.rpc,
                    )
                    .await?;
                self.run(approved, staff, executor).await
            }
            DecisionStep::Resume => self.run(p, staff, executor).await,
        }
    }

    pub async fn get(&self, proposal_id: &str) -> Result<Proposal> {
        tuikuan_kernel::id::validate_external_id(proposal_id, "proposal_id")?;
        let id = proposal_id.to_string();
        self.db
            .run(move |c| store::get_proposal(c, &id))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NotFound,
                    format!(
                        "proposal {proposal_id} not found at the {} service",
                        self.service
                    ),
                )
            })
    }

    /// Moves a proposal out of its current status, with an audit entry, guarded against a
    /// concurrent decision.
    async fn move_to(
        &self,
        p: &Proposal,
        by: &Operator,
        to: ProposalStatus,
        reason: &str,
        what: &str,
        rpc: &str,
    ) -> Result<Proposal> {
        let now = self.now_ms();
        let mut after = p.clone();
        after.status = to;
        if after.approver.is_empty() && to != ProposalStatus::Cancelled {
            after.approver = by.name.clone();
        }
        after.decision_reason = bounded(reason);
        after.decided_at_ms = Some(now);
        let entry = AuditEntry::new(by, what, rpc, &p.subject, now)
            .reason(reason)
            .change(p.status.as_str(), to.as_str())
            .proposal(&p.proposal_id);
        let before = p.clone();
        let saved = after.clone();
        let moved = self
            .db
            .transaction(move |c| {
                if !store::save_proposal(c, &before, &saved)? {
                    return Ok(false);
                }
                store::insert_audit(c, &entry)?;
                Ok(true)
            })
            .await?;
        if !moved {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "proposal {} was decided concurrently; look at it again",
                    p.proposal_id
                ),
            ));
        }
        Ok(after)
    }

    /// Runs an APPROVED proposal's action and records the outcome.
    async fn run<E: Executor>(
        &self,
        p: Proposal,
        approver: &Staff,
        executor: &E,
    ) -> Result<Proposal> {
        let outcome = executor.execute(p.clone(), approver.clone()).await;
        let now = self.now_ms();
        let current = self.get(&p.proposal_id).await?;
        match outcome {
            Ok(done) => {
                if current.status == ProposalStatus::Approved {
                    let (id, by) = (p.proposal_id.clone(), approver.clone());
                    self.db
                        .transaction(move |c| mark_executed(c, &id, &by, &done, now))
                        .await?;
                }
                tracing::info!(proposal_id = %p.proposal_id, action = %p.action, approver = %approver.operator.name, "proposal executed");
                self.get(&p.proposal_id).await
            }
            // A concurrent run (the approver approving again) did it: done once, answer that.
            Err(_) if current.status == ProposalStatus::Executed => Ok(current),
            Err(e) if e.is_retryable() => Err(Error::new(
                e.code,
                format!(
                    "proposal {} is approved but its action did not finish ({}); its approver \
                     approves it again to finish",
                    p.proposal_id, e.message
                ),
            )),
            Err(e) => {
                if current.status == ProposalStatus::Approved {
                    let mut failed = current.clone();
                    failed.status = ProposalStatus::Failed;
                    failed.executed_at_ms = Some(now);
                    failed.result = bounded(&format!("{}: {}", e.code, e.message));
                    let entry = AuditEntry::new(
                        &approver.operator,
                        p.action.as_str(),
                        &approver.rpc,
                        &p.subject,
                        now,
                    )
                    .reason("the action was refused when it was to run")
                    .change(ProposalStatus::Approved.as_str(), &failed.result)
                    .proposal(&p.proposal_id);
                    let before = current.clone();
                    self.db
                        .transaction(move |c| {
                            if store::save_proposal(c, &before, &failed)? {
                                store::insert_audit(c, &entry)?;
                            }
                            Ok(())
                        })
                        .await?;
                }
                Err(Error::new(
                    e.code,
                    format!("proposal {} failed: {}", p.proposal_id, e.message),
                ))
            }
        }
    }
}

fn uuid_part() -> String {
    let id = tuikuan_kernel::id::new_id("p");
    id.trim_start_matches("p_").to_string()
}

// ---------------------------------------------------------------------------------------------
// Wire

/// A proposal on the wire.
pub fn proposal_to_wire(p: &Proposal) -> pb::Proposal {
    pb::Proposal {
        proposal_id: p.proposal_id.clone(),
        service: p.service.clone(),
        action: p.action.as_str().to_string(),
        subject: p.subject.clone(),
        amount: p
            .amount
            .as_ref()
            .map(Money::amount_string)
            .unwrap_or_default(),
        currency: p
            .amount
            .as_ref()
            .map(|m| m.currency().code().to_string())
            .unwrap_or_default(),
        summary: p.summary.clone(),
        reason: p.reason.clone(),
        proposer: p.proposer.clone(),
        proposer_roles: p
            .proposer_roles
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        status: status_to_wire(p.status) as i32,
        approver: p.approver.clone(),
        decision_reason: p.decision_reason.clone(),
        created_at_ms: p.created_at_ms,
        decided_at_ms: p.decided_at_ms.unwrap_or_default(),
        executed_at_ms: p.executed_at_ms.unwrap_or_default(),
        expires_at_ms: p.expires_at_ms,
        result: p.result.clone(),
        needs_second: p.needs_second,
    }
}

fn status_to_wire(s: ProposalStatus) -> pb::ProposalStatus {
    match s {
        ProposalStatus::Pending => pb::ProposalStatus::Pending,
        ProposalStatus::Approved => pb::ProposalStatus::Approved,
        ProposalStatus::Executed => pb::ProposalStatus::Executed,
        ProposalStatus::Rejected => pb::ProposalStatus::Rejected,
        ProposalStatus::Failed => pb::ProposalStatus::Failed,
        ProposalStatus::Cancelled => pb::ProposalStatus::Cancelled,
        ProposalStatus::Expired => pb::ProposalStatus::Expired,
    }
}

fn status_from_wire(v: i32) -> Result<Option<ProposalStatus>> {
    Ok(match pb::ProposalStatus::try_from(v) {
        Ok(pb::ProposalStatus::Unspecified) => None,
        Ok(pb::ProposalStatus::Pending) => Some(ProposalStatus::Pending),
        Ok(pb::ProposalStatus::Approved) => Some(ProposalStatus::Approved),
        Ok(pb::ProposalStatus::Executed) => Some(ProposalStatus::Executed),
        Ok(pb::ProposalStatus::Rejected) => Some(ProposalStatus::Rejected),
        Ok(pb::ProposalStatus::Failed) => Some(ProposalStatus::Failed),
        Ok(pb::ProposalStatus::Cancelled) => Some(ProposalStatus::Cancelled),
        Ok(pb::ProposalStatus::Expired) => Some(ProposalStatus::Expired),
        Err(_) => return Err(Error::field("status", format!("unknown value {v}"))),
    })
}

/// An audit entry on the wire.
pub fn audit_to_wire(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        audit_id: e.audit_id.clone(),
        at_ms: e.at_ms,
        operator: e.operator.clone(),
        roles: e
            .roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        action: e.action.clone(),
        rpc: e.rpc.clone(),
        subject: e.subject.clone(),
        reason: e.reason.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        proposal_id: e.proposal_id.clone(),
    }
}

fn limit(v: u32) -> i64 {
    if v == 0 {
        100
    } else {
        i64::from(v)
    }
}

fn bounded_filter(value: String, field: &str) -> Result<String> {
    if value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(Error::field(field, "at most 128 printable characters"));
    }
    Ok(value)
}

/// `StaffService` over a service's desk and the executor of its proposals.
#[derive(Clone, Debug)]
pub struct StaffServer<E> {
    desk: Desk,
    executor: E,
}

impl<E: Executor> StaffServer<E> {
    pub fn new(desk: Desk, executor: E) -> StaffServer<E> {
        StaffServer { desk, executor }
    }

    /// The tonic server, behind `auth`'s guard.
    pub fn guarded(
        self,
        auth: &crate::StaffAuth,
    ) -> crate::Guarded<pb::staff_service_server::StaffServiceServer<StaffServer<E>>> {
        auth.guard(pb::staff_service_server::StaffServiceServer::new(self))
    }
}

#[tonic::async_trait]
impl<E: Executor + std::fmt::Debug> pb::staff_service_server::StaffService for StaffServer<E> {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        staff(&request)?;
        let r = request.into_inner();
        let filter = (|| {
            Ok::<_, Error>(AuditFilter {
                subject: bounded_filter(r.subject, "subject")?,
                operator: bounded_filter(r.operator, "operator")?,
                action: bounded_filter(r.action, "action")?,
                before: bounded_filter(r.before, "before")?,
                limit: limit(r.limit),
            })
        })()
        .map_err(grpc_err)?;
        let entries = self
            .desk
            .db
            .run(move |c| store::list_audit(c, &filter))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.iter().map(audit_to_wire).collect(),
        }))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        staff(&request)?;
        let r = request.into_inner();
        let filter = (|| {
            let action = if r.action.is_empty() {
                None
            } else {
                Some(
                    Action::parse(&r.action.to_ascii_uppercase()).ok_or_else(|| {
                        Error::field("action", "not a staff action (e.g. FORCE_FAIL)")
                    })?,
                )
            };
            Ok::<_, Error>(ProposalFilter {
                status: status_from_wire(r.status)?,
                action,
                subject: bounded_filter(r.subject, "subject")?,
                limit: limit(r.limit),
            })
        })()
        .map_err(grpc_err)?;
        let proposals = self
            .desk
            .db
            .run(move |c| store::list_proposals(c, &filter))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListProposalsResponse {
            proposals: proposals.iter().map(proposal_to_wire).collect(),
        }))
    }

    async fn get_proposal(
        &self,
        request: Request<pb::GetProposalRequest>,
    ) -> Result<Response<pb::Proposal>, Status> {
        staff(&request)?;
        let p = self
            .desk
            .get(&request.into_inner().proposal_id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(proposal_to_wire(&p)))
    }

    async fn approve_proposal(
        &self,
        request: Request<pb::DecideProposalRequest>,
    ) -> Result<Response<pb::Proposal>, Status> {
        self.decide_rpc(request, Decision::Approve).await
    }

    async fn reject_proposal(
        &self,
        request: Request<pb::DecideProposalRequest>,
    ) -> Result<Response<pb::Proposal>, Status> {
        self.decide_rpc(request, Decision::Reject).await
    }

    async fn cancel_proposal(
        &self,
        request: Request<pb::DecideProposalRequest>,
    ) -> Result<Response<pb::Proposal>, Status> {
        self.decide_rpc(request, Decision::Cancel).await
    }
}

impl<E: Executor> StaffServer<E> {
    async fn decide_rpc(
        &self,
        request: Request<pb::DecideProposalRequest>,
        decision: Decision,
    ) -> Result<Response<pb::Proposal>, Status> {
        let who = staff(&request)?;
        let r = request.into_inner();
        let p = self
            .desk
            .decide(&who, &r.proposal_id, decision, &r.reason, &self.executor)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(proposal_to_wire(&p)))
    }
}
