//! The engine's side of the resolutions that correct the refund ([`crate::domain::resolution`]):
//! asking the refund center to reinstate a refund the bank paid or to reopen one the bank failed,
//! and reopening a discrepancy
//! whose correction the refund center refused.

use tuikuan_kernel::id::new_id;
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{Engine, Peers, ReinstateRequest};
use crate::domain::resolution::judge_reinstate;
use crate::domain::{Discrepancy, WriteBackVerdict};
use crate::store::{self, AuditEntry};

impl<P: Peers> Engine<P> {
    /// Reinstates the discrepancy's refund (idempotent: the refund center answers a reinstated
    /// refund as it is). A definite refusal reopens the discrepancy; transport trouble asks for
    /// the request to be repeated.
    pub(super) async fn reinstate_for(
        &self,
        d: &Discrepancy,
        why: &str,
        operator: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.correct_for(d, why, operator, reason, now_ms, false)
            .await
    }

    /// Reopens the discrepancy's refund for its next method (idempotent by refund and attempt),
    /// with the same handling of the answer as [`Engine::reinstate_for`].
    pub(super) async fn reopen_for(
        &self,
        d: &Discrepancy,
        why: &str,
        operator: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.correct_for(d, why, operator, reason, now_ms, true)
            .await
    }

    async fn correct_for(
        &self,
        d: &Discrepancy,
        why: &str,
        operator: &str,
        reason: &str,
        now_ms: i64,
        reopen: bool,
    ) -> Result<()> {
        let request = ReinstateRequest {
            refund_id: d.refund_id.clone(),
            bank_reference_id: d.bank_reference_id.clone(),
            reason: format!("{why}: {operator}: {reason}"),
            source: d.discrepancy_id.clone(),
        };
        let answer = if reopen {
            self.peers.reopen(request).await
        } else {
            self.peers.reinstate(request).await
        };
        match judge_reinstate(answer.as_ref().map(|_| ())) {
            WriteBackVerdict::Done => Ok(()),
            WriteBackVerdict::Refused(why) => {
                Err(self.reopen_refused(d, operator, reason, &why, now_ms).await)
            }
            WriteBackVerdict::Retry => Err(Error::new(
                ErrorCode::Unavailable,
                format!(
                    "correction not finished yet ({}); repeat the request to finish",
                    answer.err().map(|e| e.message).unwrap_or_default()
                ),
            )),
        }
    }

    /// The refund center definitely refused a correction: RESOLVING → OPEN with a RESOLVE_REFUSED
    /// audit entry; the answer is `INVALID_STATE_TRANSITION` with the refund center's reason (or
    /// the storage error, if recording it failed).
    pub(super) async fn reopen_refused(
        &self,
        d: &Discrepancy,
        operator: &str,
        reason: &str,
        why: &str,
        now_ms: i64,
    ) -> Error {
        let id = d.discrepancy_id.clone();
        let (op, r, w) = (operator.to_string(), reason.to_string(), why.to_string());
        let recorded = self
            .db
            .transaction(move |conn| {
                store::abort_resolving(conn, &id)?;
                store::insert_audit(
                    conn,
                    &AuditEntry {
                        audit_id: new_id("aud"),
                        subject_kind: "DISCREPANCY".into(),
                        subject_id: id.clone(),
                        action: "RESOLVE_REFUSED".into(),
                        operator: op,
                        reason: r,
                        before_state: "RESOLVING".into(),
                        after_state: format!("OPEN ({w})"),
                        at_ms: now_ms,
                    },
                )
            })
            .await;
        match recorded {
            Ok(()) => Error::new(
                ErrorCode::InvalidStateTransition,
                format!("the refund center refused the correction: {why}"),
            ),
            Err(e) => e,
        }
    }
}
