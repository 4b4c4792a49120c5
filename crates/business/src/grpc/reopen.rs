//! The business layer's part of a reopen ([`crate::domain::reopen`]): the refund center reports
//! PROCESSING with `reopened`; the merchant refund is PROCESSING again and the merchant is notified
//! (event PROCESSING), then of the final status when it comes.

use tuikuan_kernel::id::new_id;
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::Business;
use crate::domain::notify::Notification;
use crate::domain::reopen::{reopen_action, ReopenAction};
use crate::domain::MerchantRefund;
use crate::store;

impl Business {
    /// Applies a reopen report (idempotent; see [`reopen_action`]).
    pub(super) async fn report_reopened(
        &self,
        refund_id: String,
        reason: String,
        expected_completion_ms: i64,
    ) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        let refund = self
            .db
            .transaction(move |c| {
                for _ in 0..3 {
                    let refund = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                        Error::new(ErrorCode::RefundNotFound, format!("no refund {refund_id}"))
                    })?;
                    if reopen_action(refund.chain_state)? == ReopenAction::AlreadyDone {
                        return Ok(refund);
                    }
                    if store::reopen::reopen_refund(c, &refund, now_ms)? {
                        store::set_expected_completion(
                            c,
                            &refund_id,
                            expected_completion_ms,
                            now_ms,
                        )?;
                        let stored = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                            Error::internal(format!("refund {refund_id} vanished"))
                        })?;
                        if store::has_notify_url(c, &stored.merchant_id)? {
                            let n = Notification::for_refund(new_id("ntf"), &stored, now_ms)?;
                            store::enqueue_notification(c, &n)?;
                        }
                        return Ok(stored);
                    }
                }
                Err(Error::internal(format!("refund {refund_id} kept changing")))
            })
            .await?;
        tracing::warn!(refund_id = %refund.refund_id, %reason, "refund reopened: the bank failed the attempt taken as paid");
        Ok(refund)
    }
}
