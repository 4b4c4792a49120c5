//! Reopen ([`crate::domain::reopen`]): `RefundService/ReopenRefund`, asked by reconciliation when
//! a status conflict the bank failed is resolved bank-wins (keyed by the discrepancy id as the
//! source). The order moves SUCCEEDED → PROCESSING on its next method (or FAILED with none left)
//! in one guarded transaction with the reopen's steps; the steps run at once (and the outbox
//! retries them): clearing undoes the failed attempt's completion, the business layer shows the
//! merchant PROCESSING again. A new payout attempt is created at once too; an interface, file-upload
//! or offline attempt is taken by its next cycle or batch.

use tonic::{Request, Response, Status};
use tuikuan_db::AnyConnection;
use tuikuan_kernel::Result;
use tuikuan_proto::business::v1 as business;
use tuikuan_proto::clearing::v1 as clearing;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use super::{order_to_wire, RefundCenter};
use crate::domain::reopen::is_reopen;
use crate::domain::{FinalStatus, OutboxEntry, OutboxStep, Outcome, RefundOrder};
use crate::store;

impl RefundCenter {
    /// Reopens the refund's attempt the bank knows by `bank_reference_id` (see the module
    /// documentation). Idempotent: a reopened attempt answers the order as it stands (finishing
    /// its undelivered steps).
    pub async fn reopen_refund(
        &self,
        refund_id: &str,
        bank_reference_id: &str,
        reason: &str,
        source: &str,
    ) -> Result<RefundOrder> {
        super::reinstate::validate_correction(refund_id, bank_reference_id, reason, source)?;
        let (reference, why, src) = (
            bank_reference_id.to_string(),
            reason.to_string(),
            source.to_string(),
        );
        let now_ms = self.clock.now_ms();
        let calendar = self.calendar.clone();
        let moved = self
            .transition(refund_id, move |o, channel| {
                Ok(
                    o.reopen(&reference, &why, &src, channel, &calendar, now_ms)?
                        == Outcome::Changed,
                )
            })
            .await?;
        if moved.changed {
            tracing::info!(refund_id, attempt = moved.before.attempt, "refund reopened");
            self.follow_up(&moved).await;
        } else if moved.after.pending_steps > 0 {
            if let Err(e) = self.deliver(refund_id).await {
                tracing::warn!(refund_id, code = %e.code, error = %e.message, "reopen steps stay queued");
            }
        }
        self.reread(refund_id).await
    }

    /// Runs a reopen step (`attempt`: the reopened attempt, from the step's id).
    pub(super) async fn run_reopen_step(
        &self,
        order: &RefundOrder,
        step: OutboxStep,
        attempt: u32,
    ) -> Result<()> {
        match step {
            OutboxStep::ClearingReopen => {
                self.clearing
                    .clone()
                    .reopen_debit(clearing::ReopenDebitRequest {
                        refund_id: order.refund_id.clone(),
                        attempt,
                        reason: order.reason.clone(),
                    })
                    .await
                    .map_err(peer_err)?;
            }
            _ => {
                self.business
                    .clone()
                    .report_refund_outcome(business::ReportRefundOutcomeRequest {
                        refund_id: order.refund_id.clone(),
                        status: business::RefundStatus::Processing as i32,
                        reason: for_business(&order.reason),
                        returned: false,
                        expected_completion_ms: order.expected_completion_ms.unwrap_or(0),
                        reinstated: false,
                        reopened: true,
                    })
                    .await
                    .map_err(peer_err)?;
            }
        }
        Ok(())
    }
}

/// The final steps of an order that became `status`: keyed by the refund alone, or by refund and
/// attempt once the order was reopened (its first final steps exist).
pub(super) fn insert_final_steps(
    conn: &mut AnyConnection,
    order: &RefundOrder,
    status: FinalStatus,
    now_ms: i64,
) -> Result<()> {
    let reopened = store::outbox_of(conn, &order.refund_id)?
        .iter()
        .any(|e| e.step == OutboxStep::ClearingReopen);
    let steps = if reopened {
        OutboxEntry::for_final_of_attempt(&order.refund_id, status, order.attempt)
    } else {
        OutboxEntry::for_final(&order.refund_id, status)
    };
    store::insert_outbox(conn, &steps, now_ms)
}

/// The steps of a reopen, if `before` → `after` was one: clearing and the business layer; when no
/// method was left, the FAILED order's final steps after them (keyed past every attempt).
pub(super) fn insert_reopen_steps(
    conn: &mut AnyConnection,
    before: &RefundOrder,
    after: &RefundOrder,
    now_ms: i64,
) -> Result<()> {
    if !is_reopen(before, after) {
        return Ok(());
    }
    let id = &after.refund_id;
    store::insert_outbox(conn, &OutboxEntry::for_reopen(id, before.attempt), now_ms)?;
    if let Some(status) = FinalStatus::from_refund_status(after.refund_status) {
        let past = u32::try_from(after.attempts.len())
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1);
        store::insert_outbox(
            conn,
            &OutboxEntry::for_final_of_attempt(id, status, past),
            now_ms,
        )?;
    }
    Ok(())
}

/// The most of a reason the business layer takes (its `MAX_REASON_CHARS`).
const BUSINESS_REASON_CHARS: usize = 256;

/// A reason as the business layer takes it: at most [`BUSINESS_REASON_CHARS`] characters (a
/// fallback chain's reason grows with every attempt; the order keeps it whole).
pub(super) fn for_business(reason: &str) -> String {
    reason.chars().take(BUSINESS_REASON_CHARS).collect()
}

/// Whether an order that is not final may have steps to deliver: those of a reopen.
pub(super) fn reopen_pending(steps: &[OutboxEntry]) -> bool {
    steps.iter().any(|s| {
        !s.done
            && matches!(
                s.step,
                OutboxStep::ClearingReopen | OutboxStep::NotifyReopened
            )
    })
}

/// `RefundService/ReopenRefund`.
pub(super) async fn reopen_refund_rpc(
    center: &RefundCenter,
    request: Request<pb::ReopenRefundRequest>,
) -> std::result::Result<Response<pb::RefundOrder>, Status> {
    let r = request.into_inner();
    let order = center
        .reopen_refund(&r.refund_id, &r.bank_reference_id, &r.reason, &r.source)
        .await
        .map_err(grpc_err)?;
    Ok(Response::new(order_to_wire(&order)))
}
