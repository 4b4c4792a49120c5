//! The business layer's part of a reinstatement ([`crate::domain::reinstate`]): the refund center
//! reports SUCCEEDED with `reinstated` before it moves any money, so the trade's amount is held
//! again before anything else can take it.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{enqueue_final, Business, DriveOrigin};
use crate::domain::reinstate::{reinstate_action, ReinstateAction};
use crate::domain::{ChainState, MerchantRefund};
use crate::store;

impl Business {
    /// Applies a reinstatement report (idempotent; see [`reinstate_action`]). The merchant is
    /// notified of the new outcome like of any other.
    pub(super) async fn report_reinstated(
        &self,
        refund_id: String,
        reason: String,
    ) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        let refund = self
            .db
            .transaction(move |c| {
                for _ in 0..3 {
                    let refund = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                        Error::new(ErrorCode::RefundNotFound, format!("no refund {refund_id}"))
                    })?;
                    let moved = match reinstate_action(refund.chain_state)? {
                        ReinstateAction::AlreadyDone => return Ok(refund),
                        ReinstateAction::Succeed => store::advance_refund(
                            c,
                            &refund,
                            ChainState::Succeeded,
                            (None, None),
                            now_ms,
                        )?,
                        ReinstateAction::Reinstate => {
                            store::reinstate::reinstate_refund(c, &refund, now_ms)?
                        }
                    };
                    if moved {
                        let stored = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                            Error::internal(format!("refund {refund_id} vanished"))
                        })?;
                        enqueue_final(c, &stored, DriveOrigin::Recovery, now_ms)?;
                        return Ok(stored);
                    }
                }
                Err(Error::internal(format!("refund {refund_id} kept changing")))
            })
            .await?;
        tracing::warn!(refund_id = %refund.refund_id, %reason, "refund reinstated as succeeded: the bank paid it");
        Ok(refund)
    }
}
