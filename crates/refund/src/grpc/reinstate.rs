//! Reinstatement ([`crate::domain::reinstate`]): one operation behind two doors.
//! - `RefundService/ReinstateSucceeded`: reconciliation resolves a status conflict bank-wins
//!   (the bank paid a refund the platform had failed), keyed by the discrepancy id.
//! - `RefundControlService/Reinstate`: finance, with the bank's evidence, after a bank's late
//!   correction or a force-fail the bank overtook; under four eyes (a proposal a second finance
//!   operator approves, [`super::proposals`]) and audited like every manual control.
//!
//! Order of the steps, each idempotent by refund id: (1) the business layer takes the trade's
//! amount again (FAILED → SUCCEEDED), so no new refund can pass the over-refund guard while the
//! rest happens; REFUND_EXCEEDS_PAID there stops everything; (2) the order becomes SUCCEEDED with
//! its finalisation step in the same transaction; (3) the step runs at once (and the outbox retries
//! it): clearing takes the money from the merchant again, a shortfall becoming a receivable. A
//! repeat after an interruption finishes what is left; a SUCCEEDED order is answered as it is.

use tonic::{Request, Response, Status};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Result};
use tuikuan_proto::business::v1 as business;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use super::{order_to_wire, required_text, RefundCenter};
use crate::domain::control::{validate_reason, ControlAction, Operator};
use crate::domain::{validate_text, Outcome, RefundOrder, RefundStatus};

impl RefundCenter {
    /// Reinstates a FAILED refund as SUCCEEDED for `source` (see the module documentation).
    pub async fn reinstate_succeeded(
        &self,
        refund_id: &str,
        bank_reference_id: &str,
        reason: &str,
        source: &str,
    ) -> Result<RefundOrder> {
        if !self
            .needs_reinstating(refund_id, bank_reference_id, reason, source)
            .await?
        {
            return self.reread(refund_id).await;
        }
        self.tell_business(refund_id, reason).await?;
        let (reference, why, src) = (
            bank_reference_id.to_string(),
            reason.to_string(),
            source.to_string(),
        );
        let now_ms = self.clock.now_ms();
        let moved = self
            .transition(refund_id, move |o, _| {
                Ok(o.reinstate(&reference, &why, &src, now_ms)? == Outcome::Changed)
            })
            .await?;
        self.follow_up(&moved).await;
        self.reread(refund_id).await
    }

    /// Finance's reinstate, run when its four-eyes proposal is approved
    /// ([`super::proposals`]): the same steps, with the bank's evidence in the reason and an entry
    /// in the audit trail; `mark` marks the proposal executed in the transaction of the change.
    /// Answers the order's control snapshot before, and the order after.
    pub(crate) async fn reinstate_by_staff(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
        evidence: &str,
        bank_reference_id: &str,
        mark: Option<super::proposals::Mark>,
    ) -> Result<(String, RefundOrder)> {
        operator.authorize(ControlAction::Reinstate)?;
        let why = staff_reason(reason, evidence)?;
        let source = format!("{} by {operator}", ControlAction::Reinstate);
        if !self
            .needs_reinstating(refund_id, bank_reference_id, &why, &source)
            .await?
        {
            let order = self.reread(refund_id).await?;
            return Ok((order.control_snapshot(), order));
        }
        self.tell_business(refund_id, &why).await?;
        let reference = bank_reference_id.to_string();
        let reason_kept = why.clone();
        let done = self
            .control_marked(
                refund_id,
                operator,
                ControlAction::Reinstate,
                &why,
                move |o, now_ms, source| match o.reinstate(
                    &reference,
                    &reason_kept,
                    source,
                    now_ms,
                )? {
                    Outcome::Changed => Ok(()),
                    // A concurrent reinstatement won: no second audit entry.
                    Outcome::Unchanged => Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        format!("refund {} was reinstated concurrently", o.refund_id),
                    )),
                },
                mark,
            )
            .await;
        match done {
            Err(e) if e.code == ErrorCode::InvalidStateTransition => {
                let order = self.reread(refund_id).await?;
                if order.refund_status == RefundStatus::Succeeded {
                    Ok((order.control_snapshot(), order))
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// The staff reinstatement's checks before it is proposed: the request is well formed and the
    /// order may be reinstated. `None`: the order is SUCCEEDED already, nothing to propose (its
    /// remaining steps are delivered).
    pub(crate) async fn check_staff_reinstate(
        &self,
        refund_id: &str,
        reason: &str,
        evidence: &str,
        bank_reference_id: &str,
    ) -> Result<Option<RefundOrder>> {
        let why = staff_reason(reason, evidence)?;
        if !self
            .needs_reinstating(refund_id, bank_reference_id, &why, "proposal")
            .await?
        {
            return Ok(None);
        }
        self.reread(refund_id).await.map(Some)
    }

    /// Checks the request against the order as it stands (`false`: already SUCCEEDED, nothing to
    /// do but finish its steps).
    async fn needs_reinstating(
        &self,
        refund_id: &str,
        bank_reference_id: &str,
        reason: &str,
        source: &str,
    ) -> Result<bool> {
        validate_correction(refund_id, bank_reference_id, reason, source)?;
        let order = self.reread(refund_id).await?;
        let mut probe = order.clone();
        let outcome = probe.reinstate(bank_reference_id, reason, source, self.clock.now_ms())?;
        if outcome == Outcome::Unchanged {
            if order.pending_steps > 0 {
                if let Err(e) = self.deliver(refund_id).await {
                    tracing::warn!(refund_id, code = %e.code, error = %e.message, "finalisation steps stay queued");
                }
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Step 1: the business layer holds the trade's amount again (idempotent).
    async fn tell_business(&self, refund_id: &str, reason: &str) -> Result<()> {
        self.business
            .clone()
            .report_refund_outcome(business::ReportRefundOutcomeRequest {
                refund_id: refund_id.to_string(),
                status: business::RefundStatus::Succeeded as i32,
                reason: reason.to_string(),
                returned: false,
                expected_completion_ms: 0,
                reinstated: true,
                reopened: false,
            })
            .await
            .map_err(peer_err)?;
        Ok(())
    }
}

/// The reason a staff reinstatement records: the operator's, plus the bank's evidence (required).
fn staff_reason(reason: &str, evidence: &str) -> Result<String> {
    validate_reason(reason)?;
    required_text(evidence, "evidence")?;
    let why = super::proposals::confirm_reason(reason, evidence);
    validate_text(&why, "reason")?;
    Ok(why)
}

/// `RefundService/ReinstateSucceeded`.
pub(super) async fn reinstate_succeeded_rpc(
    center: &RefundCenter,
    request: Request<pb::ReinstateSucceededRequest>,
) -> std::result::Result<Response<pb::RefundOrder>, Status> {
    let r = request.into_inner();
    let order = center
        .reinstate_succeeded(&r.refund_id, &r.bank_reference_id, &r.reason, &r.source)
        .await
        .map_err(grpc_err)?;
    Ok(Response::new(order_to_wire(&order)))
}

/// The fields of a correction of a final refund (reinstate, reopen): the refund, the bank's
/// reference of the attempt (empty: the current one), a reason and its source, all bounded.
pub(crate) fn validate_correction(
    refund_id: &str,
    bank_reference_id: &str,
    reason: &str,
    source: &str,
) -> Result<()> {
    validate_external_id(refund_id, "refund_id")?;
    if !bank_reference_id.is_empty() {
        validate_external_id(bank_reference_id, "bank_reference_id")?;
    }
    required_text(reason, "reason")?;
    validate_text(reason, "reason")?;
    required_text(source, "source")?;
    validate_text(source, "source")
}
