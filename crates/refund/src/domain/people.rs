//! Failures that go to people, not to the next method.
//!
//! A failed attempt normally falls back to the channel's next method when another method can fix
//! its reason (`CARD_CANCELLED`, …: [`super::is_fallback_reason`]), else fails the order. Some
//! failures are neither: the channel still holds the money and people must decide where it goes.
//! WeChat Pay's `ABNORMAL` (退款异常) is one: the refund to the payer's card failed (the card is
//! closed or frozen) and the money waits in WeChat Pay's refund account until the merchant
//! handles it on its merchant platform (交易中心) or with 发起异常退款 (to another card of the
//! payer, or back to the merchant's bank account). Falling back to a payout then could pay the
//! customer twice; failing back to the merchant could give the money back while WeChat Pay still
//! pays it out. The bank reports such failures with reason code [`BANK_ABNORMAL`].
//!
//! Such an order stays PROCESSING (promised) with its attempt SUBMITTED and waits for people
//! (`waiting_manual`): nothing automatic moves it. A later success from the channel (the money
//! reached the payer after the exception was handled) clears the wait, and reconciliation makes
//! it final as usual; finance may instead force-fail it (the channel said it failed), as for any
//! refund the bank failed.

use super::{reason_code, BankStatus, RefundOrder, RefundStatus, SubmitStatus};

/// The reason code of a refund the channel holds as abnormal (WeChat Pay `ABNORMAL`, bill
/// 退款状态 `CHANGE`).
pub const BANK_ABNORMAL: &str = "BANK_ABNORMAL";

/// Reason codes of a failure that waits for people instead of falling back or failing.
pub const PEOPLE_REASON_CODES: &[&str] = &[BANK_ABNORMAL];

/// Whether a failure with this reason (`CODE: text`) waits for people.
pub fn needs_people(reason: &str) -> bool {
    PEOPLE_REASON_CODES.contains(&reason_code(reason).as_str())
}

impl RefundOrder {
    /// A failure of the current, submitted attempt that waits for people ([`needs_people`]): the
    /// order keeps its status and attempt and is marked waiting; `false` when it already was (or
    /// is not a submitted, processing order).
    pub fn hand_to_people(&mut self, reason: &str) -> bool {
        if self.refund_status != RefundStatus::Processing
            || self.submit_status != SubmitStatus::Submitted
            || self.waiting_manual
        {
            return false;
        }
        self.waiting_manual = true;
        self.reason = reason.to_string();
        true
    }

    /// After a bank event was applied: a failure that needs people marks the order waiting; a
    /// success ends the wait.
    pub(super) fn after_bank_event(&mut self, status: BankStatus, reason: &str) {
        match status {
            BankStatus::Failed if needs_people(reason) => {
                self.hand_to_people(reason);
            }
            BankStatus::Succeeded => self.waiting_manual = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abnormal_needs_people_and_falls_back_to_nothing() {
        assert!(needs_people(
            "BANK_ABNORMAL: WeChat Pay ABNORMAL (退款异常), the card is closed"
        ));
        assert!(!needs_people("CARD_CANCELLED: gone"));
        assert!(!needs_people("BANK_ABNORMALX: no"));
        assert!(!super::super::is_fallback_reason("BANK_ABNORMAL: x"));
    }
}
