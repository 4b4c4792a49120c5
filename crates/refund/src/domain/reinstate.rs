//! Reinstatement (恢复成功): a refund the platform made FAILED although the bank paid it — a
//! status conflict that reconciliation resolves bank-wins, a bank's late correction, a force-fail
//! the bank overtook — becomes SUCCEEDED, the attempt the bank paid with it. What follows is one
//! finalisation step, [`OutboxStep::ClearingReinstate`]: clearing takes the money from the
//! merchant again (a shortfall becomes a receivable from the merchant, never a second refund).
//! The business layer is told before the order moves, so that the trade's amount is held again
//! before anything else can take it.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{
    AttemptOutcome, BankStatus, OutboxEntry, OutboxStep, Outcome, RefundOrder, RefundStatus,
    SubmitStatus,
};

/// The ordinal of the reinstatement step: after the failure's steps (1, 2) and a return's (3, 4),
/// so the reversal it corrects is always posted first.
const REINSTATE_ORDINAL: i32 = 5;

impl OutboxEntry {
    /// The step of a reinstated order: clearing takes the money from the merchant again.
    pub fn for_reinstate(refund_id: &str) -> Vec<OutboxEntry> {
        let step = OutboxStep::ClearingReinstate;
        vec![OutboxEntry {
            id: format!("{refund_id}:{step}"),
            refund_id: refund_id.to_string(),
            step,
            ordinal: REINSTATE_ORDINAL,
            done: false,
            attempts: 0,
            last_error: String::new(),
        }]
    }
}

impl RefundOrder {
    /// FAILED → SUCCEEDED: the bank paid the attempt it knows by `bank_reference_id` (empty: the
    /// last attempt handed to a bank). That attempt becomes the order's current one, SUCCEEDED.
    /// A SUCCEEDED order is [`Outcome::Unchanged`] (a repeat); any other status, or an attempt no
    /// bank ever had, is `INVALID_STATE_TRANSITION`; an unknown reference is `NOT_FOUND`.
    pub fn reinstate(
        &mut self,
        bank_reference_id: &str,
        reason: &str,
        source: &str,
        at_ms: i64,
    ) -> Result<Outcome> {
        match self.refund_status {
            RefundStatus::Succeeded => return Ok(Outcome::Unchanged),
            RefundStatus::Failed => {}
            other => {
                return Err(Error::new(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "refund {} is {other}: only a FAILED refund can be reinstated as succeeded",
                        self.refund_id
                    ),
                ))
            }
        }
        let number = if bank_reference_id.is_empty() {
            self.attempts
                .iter()
                .rev()
                .find(|a| !a.bank_reference_id.is_empty() && a.outcome != AttemptOutcome::Pending)
                .map(|a| a.number)
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::InvalidStateTransition,
                        format!(
                            "no attempt of refund {} was ever handed to a bank, so no bank paid it",
                            self.refund_id
                        ),
                    )
                })?
        } else {
            self.attempt_by_reference(bank_reference_id)
                .map(|a| a.number)
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::NotFound,
                        format!(
                            "refund {} has no attempt with bank reference id {}",
                            self.refund_id,
                            tuikuan_kernel::echo(bank_reference_id)
                        ),
                    )
                })?
        };
        let attempt = self
            .attempts
            .iter_mut()
            .find(|a| a.number == number)
            .ok_or_else(|| Error::internal(format!("attempt {number} vanished")))?;
        attempt.outcome = AttemptOutcome::Succeeded;
        attempt.reason = reason.to_string();
        attempt.ended_at_ms = Some(at_ms);
        self.attempt = attempt.number;
        self.method = attempt.method;
        self.bank_reference_id = attempt.bank_reference_id.clone();
        self.submit_status = SubmitStatus::Submitted;
        self.bank_status = Some(BankStatus::Succeeded);
        self.refund_status = RefundStatus::Succeeded;
        self.reason = reason.to_string();
        self.final_source = source.to_string();
        self.finalized_at_ms = Some(at_ms);
        self.waiting_manual = false;
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel, ChannelKind, NewRefund, RefundKind, RefundMethod,
        DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
    };
    use tuikuan_kernel::{Currency, Money, WorkingCalendar};

    const NOW: i64 = 1_800_000_000_000;

    fn channel(methods: Vec<RefundMethod>) -> Channel {
        Channel {
            code: "CH1".into(),
            kind: ChannelKind::NetBanking,
            methods,
            original_route_window_days: DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
            bank_code: "ICBC".into(),
            id_scheme: None,
        }
    }

    /// An interface refund that fell back to a payout, both submitted, then failed for good.
    fn failed_order() -> RefundOrder {
        let ch = channel(vec![RefundMethod::Interface, RefundMethod::Payout]);
        let cal = WorkingCalendar::default();
        let mut o = RefundOrder::accept(
            NewRefund {
                refund_id: "rf-1".into(),
                merchant_id: "m1".into(),
                trade_id: "t1".into(),
                order_no: "o1".into(),
                channel: "CH1".into(),
                amount: Money::from_minor(12113, Currency::Cny),
                trade_paid_at_ms: NOW - 86_400_000,
                payer_card_no: "6222000011112223".into(),
                payer_name: "张三".into(),
                kind: RefundKind::Normal,
                trade_amount: None,
            },
            &ch,
            &cal,
            NOW,
        )
        .unwrap();
        o.submit_accepted("B1", NOW, NOW).unwrap();
        o.fail_attempt("CARD_CANCELLED", &ch, &cal, "run-1", NOW)
            .unwrap();
        o.submit_accepted("", NOW, NOW).unwrap();
        o.finalize(
            super::super::FinalStatus::Failed,
            "bank said no",
            "run-2",
            NOW,
        )
        .unwrap();
        o
    }

    #[test]
    fn a_failed_refund_becomes_succeeded_with_the_attempt_the_bank_paid() {
        let mut o = failed_order();
        let first = o.attempts[0].bank_reference_id.clone();
        assert_eq!(
            o.reinstate(&first, "bank paid it", "dsc_1", NOW + 1)
                .unwrap(),
            Outcome::Changed
        );
        assert_eq!(o.refund_status, RefundStatus::Succeeded);
        assert_eq!(o.attempt, 1);
        assert_eq!(o.method, RefundMethod::Interface);
        assert_eq!(o.bank_reference_id, first);
        assert_eq!(o.attempts[0].outcome, AttemptOutcome::Succeeded);
        assert_eq!(o.attempts[1].outcome, AttemptOutcome::Failed);
        assert_eq!(o.final_source, "dsc_1");
        assert_eq!(o.bank_status, Some(BankStatus::Succeeded));
        // A repeat changes nothing.
        let before = o.clone();
        assert_eq!(
            o.reinstate(&first, "again", "dsc_2", NOW + 2).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(o, before);
    }

    #[test]
    fn without_a_reference_the_last_attempt_a_bank_had_is_taken() {
        let mut o = failed_order();
        o.reinstate("", "late correction", "staff", NOW + 1)
            .unwrap();
        assert_eq!(o.attempt, 2);
        assert_eq!(o.method, RefundMethod::Payout);
    }

    #[test]
    fn only_failed_orders_and_known_attempts() {
        let mut o = failed_order();
        assert_eq!(
            o.reinstate("nope", "x", "s", NOW).unwrap_err().code,
            ErrorCode::NotFound
        );
        o.refund_status = RefundStatus::Processing;
        assert_eq!(
            o.reinstate("", "x", "s", NOW).unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        o.refund_status = RefundStatus::Returned;
        assert!(o.reinstate("", "x", "s", NOW).is_err());
        // Nothing was ever handed to a bank.
        let mut o = failed_order();
        for a in &mut o.attempts {
            a.bank_reference_id.clear();
        }
        assert_eq!(
            o.reinstate("", "x", "s", NOW).unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn the_step_comes_after_the_failure_and_return_steps() {
        let steps = OutboxEntry::for_reinstate("rf-1");
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].id, "rf-1:CLEARING_REINSTATE");
        let last_return = OutboxEntry::for_return("rf-1")
            .iter()
            .map(|e| e.ordinal)
            .max()
            .unwrap();
        assert!(steps[0].ordinal > last_return);
    }
}
