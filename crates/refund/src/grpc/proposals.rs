//! Four eyes (双人复核) on the refund center's money actions: force-fail, confirm succeeded or
//! failed, reinstate as succeeded and failing spreadsheet rows do not act when asked. Their RPCs check the request and the
//! order as they stand (what would be refused at approval is refused now, e.g.
//! `BANK_MAY_HAVE_PAID`), then create a proposal on the refund center's staff desk
//! ([`tuikuan_auth::Desk`]) and answer the subject as it stands with the proposal in the response
//! metadata ([`tuikuan_auth::answer`]). A second operator approves it through `StaffService`;
//! then [`RefundExecutor`] runs the action through the same code path as before, as the approver,
//! checked again against the state at that moment. Force-fail and confirm mark the proposal
//! executed in the transaction of the change ([`Mark`]), so a retried or concurrent approval
//! never acts twice; reinstating answers a SUCCEEDED order as it is, and failing rows is
//! idempotent row by row.

use serde::{Deserialize, Serialize};
use std::future::Future;

use tonic::{Request, Response, Status};
use tuikuan_auth::domain::Proposal;
use tuikuan_auth::{Action, BoxFuture, Draft, Executed, Executor, Staff};
use tuikuan_db::AnyConnection;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::grpc_err;

use super::batch::{batch_to_wire, required, FailedRow};
use super::control::check_attempt;
use super::{order_to_wire, refund_status_from_wire, Moved, RefundCenter};
use crate::domain::batch::{row_fails_order, Batch, BatchStatus};
use crate::domain::control::{validate_reason, ControlAction, Operator};
use crate::domain::{validate_text, FinalStatus, RefundOrder};

/// The longest bank-statement reference a confirmation of success carries.
pub const MAX_EVIDENCE_CHARS: usize = 128;

/// What an approved proposal runs (the proposal's payload, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Payload {
    ForceFail {
        refund_id: String,
    },
    Confirm {
        refund_id: String,
        /// SUCCEEDED or FAILED.
        status: String,
        bank_reference_id: String,
        evidence: String,
    },
    FailRows {
        batch_id: String,
        rows: Vec<(String, String)>,
        source: String,
    },
    Reinstate {
        refund_id: String,
        bank_reference_id: String,
        evidence: String,
    },
}

/// Marks an approved proposal executed in the transaction of its change.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    proposal_id: String,
    approver: Staff,
}

impl Mark {
    /// Marks it (with the execution's audit entry: the order before → after); refuses the change
    /// when the proposal is no longer APPROVED (a concurrent run did it).
    pub(crate) fn executed(
        &self,
        conn: &mut AnyConnection,
        moved: &Moved,
        now_ms: i64,
    ) -> Result<()> {
        let done = Executed::new(
            moved.before.control_snapshot(),
            moved.after.control_snapshot(),
        );
        if tuikuan_auth::mark_executed(conn, &self.proposal_id, &self.approver, &done, now_ms)? {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "proposal {} is no longer APPROVED; its action ran already or was decided otherwise",
                self.proposal_id
            ),
        ))
    }
}

/// Runs the refund center's approved proposals.
#[derive(Clone)]
pub struct RefundExecutor {
    center: RefundCenter,
}

impl std::fmt::Debug for RefundExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefundExecutor")
    }
}

impl Executor for RefundExecutor {
    fn execute(&self, p: Proposal, approver: Staff) -> BoxFuture<'static, Result<Executed>> {
        let center = self.center.clone();
        Box::pin(async move { center.execute_proposal(p, approver).await })
    }
}

/// The refund center's operator for a staff caller.
fn operator(staff: &Staff) -> Operator {
    Operator::with_roles(
        &staff.operator.name,
        staff.operator.roles.iter().map(|r| r.as_str()),
    )
}

fn final_status(text: &str) -> Result<FinalStatus> {
    match text {
        "SUCCEEDED" => Ok(FinalStatus::Succeeded),
        "FAILED" => Ok(FinalStatus::Failed),
        other => Err(Error::internal(format!(
            "proposal payload: status {other:?}"
        ))),
    }
}

fn confirm_action(status: FinalStatus) -> (Action, ControlAction) {
    match status {
        FinalStatus::Succeeded => (Action::ConfirmSucceeded, ControlAction::ConfirmSucceeded),
        FinalStatus::Failed => (Action::ConfirmFailed, ControlAction::ConfirmFailed),
    }
}

/// The reason recorded on the order for a confirmation: the operator's, plus the evidence.
pub(super) fn confirm_reason(reason: &str, evidence: &str) -> String {
    if evidence.is_empty() {
        reason.to_string()
    } else {
        format!("{reason} (bank evidence: {evidence})")
    }
}

/// A confirmation of success needs where the bank shows it paid: bounded and printable.
fn validate_evidence(status: FinalStatus, evidence: &str) -> Result<()> {
    if evidence.chars().count() > MAX_EVIDENCE_CHARS || evidence.chars().any(char::is_control) {
        return Err(Error::field(
            "evidence",
            format!("at most {MAX_EVIDENCE_CHARS} printable characters"),
        ));
    }
    if status == FinalStatus::Succeeded && evidence.trim().is_empty() {
        return Err(Error::field(
            "evidence",
            "is required to confirm SUCCEEDED: where the bank shows it paid (a statement reference)",
        ));
    }
    Ok(())
}

fn payload(p: &Payload) -> Result<String> {
    serde_json::to_string(p).map_err(|e| Error::internal(format!("proposal payload: {e}")))
}

/// One line for people about an order: what a decision acts on.
fn describe(o: &RefundOrder) -> String {
    format!(
        "{} {} {} ({}, {}, attempt {} {} {})",
        o.refund_id,
        o.amount.amount_string(),
        o.amount.currency().code(),
        o.refund_status,
        o.submit_status,
        o.attempt,
        o.method,
        o.bank_reference_id
    )
}

/// The rows of `batch` named by `failed`, their total and a line for people.
fn rows_summary(batch: &Batch, failed: &[FailedRow]) -> Result<(Option<Money>, String)> {
    let mut total: Option<Money> = None;
    let mut lines = Vec::new();
    for f in failed {
        let row = batch
            .rows
            .iter()
            .find(|r| r.row_id == f.row_id)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NotFound,
                    format!("batch {} has no row {}", batch.batch_id, f.row_id),
                )
            })?;
        total = Some(match total {
            None => row.amount,
            Some(t) => t.checked_add(&row.amount)?,
        });
        lines.push(format!(
            "{} ({} {} {})",
            row.row_id,
            row.refund_id,
            row.amount.amount_string(),
            row.status
        ));
    }
    Ok((
        total,
        format!("fail rows of {}: {}", batch.batch_id, lines.join(", ")),
    ))
}

/// The rows' statuses, for an audit entry.
fn row_states(batch: &Batch, rows: &[(String, String)]) -> String {
    rows.iter()
        .filter_map(|(id, _)| batch.rows.iter().find(|r| r.row_id == *id))
        .map(|r| format!("{} {}", r.row_id, r.status))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RefundCenter {
    /// The executor of the refund center's proposals.
    pub fn executor(&self) -> RefundExecutor {
        RefundExecutor {
            center: self.clone(),
        }
    }

    /// The shape every proposing RPC shares: `draft` checks the request against the subject as it
    /// stands and names the proposal (`None`: nothing to propose); the proposal is made as `staff`;
    /// the answer is the subject as it stands afterwards (`current`), naming the proposal in its
    /// metadata ([`tuikuan_auth::answer`]).
    async fn propose_answering<W, C>(
        &self,
        staff: &Staff,
        draft: impl Future<Output = Result<Option<Draft>>>,
        current: impl FnOnce() -> C,
    ) -> Result<Response<W>, Status>
    where
        C: Future<Output = Result<W>>,
    {
        let (p, body) = async {
            let p = match draft.await? {
                Some(draft) => Some(self.desk.propose(staff, draft, &self.executor()).await?),
                None => None,
            };
            Ok::<_, Error>((p, current().await?))
        }
        .await
        .map_err(grpc_err)?;
        Ok(match p {
            Some(p) => tuikuan_auth::answer::answer(body, &p),
            None => Response::new(body),
        })
    }

    /// The order `refund_id` as it stands, in wire form.
    async fn order_now(&self, refund_id: &str) -> Result<pb::RefundOrder> {
        Ok(order_to_wire(&self.reread(refund_id).await?))
    }

    /// `ForceFail`: a proposal, answered with the order.
    pub(crate) async fn propose_force_fail(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let staff = tuikuan_auth::staff(&request)?;
        let r = request.into_inner();
        let draft = async {
            validate_external_id(&r.refund_id, "refund_id")?;
            validate_reason(&r.reason)?;
            let order = self.reread(&r.refund_id).await?;
            // What the approval would refuse is refused now.
            order
                .clone()
                .force_fail(&r.reason, "proposal", self.clock.now_ms())?;
            let draft = Draft {
                action: Action::ForceFail,
                subject: r.refund_id.clone(),
                amount: Some(order.amount),
                summary: format!("force-fail {}", describe(&order)),
                payload: payload(&Payload::ForceFail {
                    refund_id: r.refund_id.clone(),
                })?,
                reason: r.reason.clone(),
            };
            Ok(Some(draft))
        };
        self.propose_answering(&staff, draft, || self.order_now(&r.refund_id))
            .await
    }

    /// `ConfirmOutcome`: a proposal, answered with the order.
    pub(crate) async fn propose_confirm(
        &self,
        request: Request<pb::ConfirmOutcomeRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let staff = tuikuan_auth::staff(&request)?;
        let r = request.into_inner();
        let draft = async {
            validate_external_id(&r.refund_id, "refund_id")?;
            if !r.bank_reference_id.is_empty() {
                validate_external_id(&r.bank_reference_id, "bank_reference_id")?;
            }
            let status = refund_status_from_wire(r.status, "status")?
                .and_then(FinalStatus::from_refund_status)
                .ok_or_else(|| Error::field("status", "must be SUCCEEDED or FAILED"))?;
            validate_reason(&r.reason)?;
            validate_evidence(status, &r.evidence)?;
            let why = confirm_reason(&r.reason, &r.evidence);
            validate_text(&why, "reason")?;
            let (action, control) = confirm_action(status);
            staff.authorize(action)?;
            let order = self.reread(&r.refund_id).await?;
            check_attempt(&order, &r.bank_reference_id, control)?;
            order
                .clone()
                .confirm_outcome(status, &why, "proposal", self.clock.now_ms())?;
            let draft = Draft {
                action,
                subject: r.refund_id.clone(),
                amount: Some(order.amount),
                summary: format!(
                    "confirm {} {}{}",
                    status.refund_status().as_str(),
                    describe(&order),
                    if r.evidence.is_empty() {
                        String::new()
                    } else {
                        format!("; bank evidence: {}", r.evidence)
                    }
                ),
                payload: payload(&Payload::Confirm {
                    refund_id: r.refund_id.clone(),
                    status: status.refund_status().as_str().to_string(),
                    bank_reference_id: order.bank_reference_id.clone(),
                    evidence: r.evidence.clone(),
                })?,
                reason: r.reason.clone(),
            };
            Ok(Some(draft))
        };
        self.propose_answering(&staff, draft, || self.order_now(&r.refund_id))
            .await
    }

    /// `Reinstate`: a proposal, answered with the order; a SUCCEEDED order is answered as it is,
    /// with no proposal (a repeated reinstatement moves nothing).
    pub(crate) async fn propose_reinstate(
        &self,
        request: Request<pb::ReinstateRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let staff = tuikuan_auth::staff(&request)?;
        let r = request.into_inner();
        let draft = async {
            let Some(order) = self
                .check_staff_reinstate(&r.refund_id, &r.reason, &r.evidence, &r.bank_reference_id)
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(Draft {
                action: Action::Reinstate,
                subject: r.refund_id.clone(),
                amount: Some(order.amount),
                summary: format!(
                    "reinstate as SUCCEEDED {}; bank evidence: {}",
                    describe(&order),
                    r.evidence
                ),
                payload: payload(&Payload::Reinstate {
                    refund_id: r.refund_id.clone(),
                    bank_reference_id: r.bank_reference_id.clone(),
                    evidence: r.evidence.clone(),
                })?,
                reason: r.reason.clone(),
            }))
        };
        self.propose_answering(&staff, draft, || self.order_now(&r.refund_id))
            .await
    }

    /// `MarkRows`: a proposal, answered with the batch.
    pub(crate) async fn propose_fail_rows(
        &self,
        request: Request<pb::MarkRowsRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        // The request may name the operator only as the token's (a service's own tests name one).
        let name = tuikuan_auth::acting_name(&request, &request.get_ref().operator, "operator")?;
        let mut staff = tuikuan_auth::staff(&request)?;
        staff.operator.name = name;
        let r = request.into_inner();
        let draft = async {
            validate_external_id(&r.batch_id, "batch_id")?;
            required(&r.source, "source")?;
            if r.failed.is_empty() {
                return Err(Error::field("failed", "lists no row"));
            }
            let failed = r
                .failed
                .iter()
                .map(|f| {
                    validate_external_id(&f.row_id, "failed.row_id")?;
                    required(&f.reason, "failed.reason")?;
                    Ok(FailedRow {
                        row_id: f.row_id.clone(),
                        reason: f.reason.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let batch = self.get_batch(&r.batch_id).await?;
            if batch.status == BatchStatus::Generated {
                return Err(Error::new(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "batch {} is not marked uploaded or sent yet: its rows are not with the bank",
                        r.batch_id
                    ),
                ));
            }
            let (amount, summary) = rows_summary(&batch, &failed)?;
            // What the approval would refuse (a row whose refund the bank paid) is refused now.
            for row in batch
                .rows
                .iter()
                .filter(|r| failed.iter().any(|f| f.row_id == r.row_id))
            {
                row_fails_order(&self.reread(&row.refund_id).await?, &row.row_id)?;
            }
            let draft = Draft {
                action: Action::BatchFailRows,
                subject: r.batch_id.clone(),
                amount,
                summary,
                payload: payload(&Payload::FailRows {
                    batch_id: r.batch_id.clone(),
                    rows: failed
                        .iter()
                        .map(|f| (f.row_id.clone(), f.reason.clone()))
                        .collect(),
                    source: r.source.clone(),
                })?,
                reason: r.source.clone(),
            };
            Ok(Some(draft))
        };
        self.propose_answering(&staff, draft, || async {
            Ok(batch_to_wire(&self.get_batch(&r.batch_id).await?))
        })
        .await
    }

    /// Runs an approved proposal as its approver.
    async fn execute_proposal(&self, p: Proposal, approver: Staff) -> Result<Executed> {
        let payload: Payload = serde_json::from_str(&p.payload).map_err(|e| {
            Error::internal(format!(
                "proposal {}: unreadable payload: {e}",
                p.proposal_id
            ))
        })?;
        let operator = operator(&approver);
        let mark = Some(Mark {
            proposal_id: p.proposal_id.clone(),
            approver: approver.clone(),
        });
        match payload {
            Payload::ForceFail { refund_id } => {
                let (before, after) = self
                    .force_fail_marked(&refund_id, &operator, &p.reason, mark)
                    .await?;
                Ok(Executed::new(before, after.control_snapshot()))
            }
            Payload::Confirm {
                refund_id,
                status,
                bank_reference_id,
                evidence,
            } => {
                let status = final_status(&status)?;
                let why = confirm_reason(&p.reason, &evidence);
                let (before, after) = self
                    .confirm_outcome_marked(
                        &refund_id,
                        &operator,
                        status,
                        &why,
                        &bank_reference_id,
                        mark,
                    )
                    .await?;
                Ok(Executed::new(before, after.control_snapshot()))
            }
            Payload::FailRows {
                batch_id,
                rows,
                source,
            } => {
                let before = self.get_batch(&batch_id).await?;
                let failed = rows
                    .iter()
                    .map(|(row_id, reason)| FailedRow {
                        row_id: row_id.clone(),
                        reason: reason.clone(),
                    })
                    .collect();
                let after = self
                    .mark_rows(&batch_id, failed, &approver.operator.name, &source)
                    .await?;
                Ok(Executed::new(
                    row_states(&before, &rows),
                    row_states(&after, &rows),
                ))
            }
            Payload::Reinstate {
                refund_id,
                bank_reference_id,
                evidence,
            } => {
                let (before, after) = self
                    .reinstate_by_staff(
                        &refund_id,
                        &operator,
                        &p.reason,
                        &evidence,
                        &bank_reference_id,
                        mark,
                    )
                    .await?;
                Ok(Executed::new(before, after.control_snapshot()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_needs_bounded_evidence() {
        assert!(validate_evidence(FinalStatus::Failed, "").is_ok());
        assert!(validate_evidence(FinalStatus::Succeeded, "ICBC 2026-06-18 #42").is_ok());
        for bad in ["", " ", "a\nb"] {
            let e = validate_evidence(FinalStatus::Succeeded, bad).unwrap_err();
            assert!(e.message.starts_with("evidence"), "{}", e.message);
        }
        let long = "x".repeat(MAX_EVIDENCE_CHARS + 1);
        assert!(validate_evidence(FinalStatus::Failed, &long).is_err());
        assert_eq!(
            confirm_reason("phoned", "ICBC #42"),
            "phoned (bank evidence: ICBC #42)"
        );
        let p = Payload::FailRows {
            batch_id: "B1".into(),
            rows: vec![("B1-0001".into(), "closed".into())],
            source: "bank result file".into(),
        };
        let back: Payload = serde_json::from_str(&payload(&p).unwrap()).unwrap();
        assert!(matches!(back, Payload::FailRows { rows, .. } if rows.len() == 1));
    }
}
