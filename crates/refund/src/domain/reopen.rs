//! Reopen (重新退款): a SUCCEEDED refund whose attempt the bank's file says failed — a status
//! conflict reconciliation resolves bank-wins — is not finished: the customer is still owed the
//! money. The attempt fails and the order goes on as any failed attempt does: the channel's next
//! method (interface → payout → file-upload/offline spreadsheet), and only with every method
//! exhausted does it become FAILED, the money back with the merchant.
//!
//! What follows are the reopen's steps, keyed by refund and attempt
//! ([`OutboxEntry::for_reopen`]): clearing undoes the failed attempt's completion
//! ([`OutboxStep::ClearingReopen`]; the merchant's debit stays), then the business layer shows the
//! merchant PROCESSING again ([`OutboxStep::NotifyReopened`]). The final steps of the order after a
//! reopen carry the attempt too ([`OutboxEntry::for_final_of_attempt`]), so the next attempt's
//! completion is delivered once, after the reopen.
//!
//! A reopen is a guarded transition from SUCCEEDED: a repeat (the attempt already failed) changes
//! nothing, so two resolutions cannot reopen it twice; a late success of the failed attempt from
//! the bank is ignored (its attempt is no longer the current one), and a late file saying it paid
//! is a new status conflict for finance — never a second payment.

use tuikuan_kernel::{Error, ErrorCode, Result, WorkingCalendar};

use super::{
    AttemptEnd, AttemptOutcome, BankStatus, Channel, FinalStatus, OutboxEntry, OutboxStep, Outcome,
    RefundOrder, RefundStatus,
};

/// Ordinals of an attempt's steps: `ATTEMPT_ORDINALS × attempt` plus the offset, after every step
/// of an order that was never reopened (1–5) and in attempt order.
const ATTEMPT_ORDINALS: i32 = 100;
/// Offset of a reopen's steps: after the reopened attempt's own final steps.
const REOPEN_OFFSET: i32 = 51;

fn step_entry(refund_id: &str, step: OutboxStep, attempt: u32, ordinal: i32) -> OutboxEntry {
    OutboxEntry {
        id: format!("{refund_id}:{step}:{attempt}"),
        refund_id: refund_id.to_string(),
        step,
        ordinal,
        done: false,
        attempts: 0,
        last_error: String::new(),
    }
}

fn base(attempt: u32) -> i32 {
    i32::try_from(attempt)
        .unwrap_or(i32::MAX / ATTEMPT_ORDINALS - 1)
        .saturating_mul(ATTEMPT_ORDINALS)
}

impl OutboxEntry {
    /// The steps of reopening `attempt`: clearing undoes its completion, then the business layer
    /// hears the refund is PROCESSING again.
    pub fn for_reopen(refund_id: &str, attempt: u32) -> Vec<OutboxEntry> {
        [OutboxStep::ClearingReopen, OutboxStep::NotifyReopened]
            .iter()
            .zip(0..)
            .map(|(step, i)| {
                step_entry(refund_id, *step, attempt, base(attempt) + REOPEN_OFFSET + i)
            })
            .collect()
    }

    /// The final steps of an order that was reopened before, for its attempt `attempt`.
    pub fn for_final_of_attempt(
        refund_id: &str,
        status: FinalStatus,
        attempt: u32,
    ) -> Vec<OutboxEntry> {
        status
            .outbox_steps()
            .iter()
            .zip(1..)
            .map(|(step, i)| step_entry(refund_id, *step, attempt, base(attempt) + i))
            .collect()
    }

    /// The attempt a step was queued for, from its id (`None`: a step of an order never reopened).
    pub fn attempt_of(&self) -> Option<u32> {
        self.id
            .strip_prefix(&format!("{}:{}:", self.refund_id, self.step))
            .and_then(|n| n.parse().ok())
    }
}

impl RefundOrder {
    /// SUCCEEDED → PROCESSING on the next method (or FAILED when none is left): the bank failed the
    /// attempt it knows by `bank_reference_id` (empty: the current one), which the platform had taken as paid. Only the
    /// order's current, succeeded attempt can be reopened, and only once its completion steps were
    /// delivered (`UNAVAILABLE` until then: the reopen must undo a completion that was made). An
    /// attempt that already failed is [`Outcome::Unchanged`] (a repeat); an unknown reference is
    /// `NOT_FOUND`; any other state is `INVALID_STATE_TRANSITION`.
    pub fn reopen(
        &mut self,
        bank_reference_id: &str,
        reason: &str,
        source: &str,
        channel: &Channel,
        calendar: &WorkingCalendar,
        now_ms: i64,
    ) -> Result<Outcome> {
        let reference = if bank_reference_id.is_empty() {
            self.bank_reference_id.clone()
        } else {
            bank_reference_id.to_string()
        };
        let attempt = self.attempt_by_reference(&reference).ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                format!(
                    "refund {} has no attempt with bank reference id {}",
                    self.refund_id,
                    tuikuan_kernel::echo(bank_reference_id)
                ),
            )
        })?;
        if attempt.outcome == AttemptOutcome::Failed {
            return Ok(Outcome::Unchanged);
        }
        if self.refund_status != RefundStatus::Succeeded || attempt.number != self.attempt {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "refund {} is {} on attempt {}: only the succeeded attempt of a SUCCEEDED \
                     refund can be reopened (bank reference id {} is attempt {}, {})",
                    self.refund_id,
                    self.refund_status,
                    self.attempt,
                    tuikuan_kernel::echo(bank_reference_id),
                    attempt.number,
                    attempt.outcome
                ),
            ));
        }
        if self.pending_steps > 0 {
            return Err(Error::unavailable(format!(
                "refund {}'s completion is still being delivered; retry",
                self.refund_id
            )));
        }
        self.refund_status = RefundStatus::Processing;
        self.finalized_at_ms = None;
        self.waiting_manual = false;
        let why =
            format!("REOPENED: the bank failed the attempt after it was taken as paid: {reason}");
        if self.end_attempt_failed(&why, channel, calendar, source, now_ms) == AttemptEnd::Exhausted
        {
            self.bank_status = Some(BankStatus::Failed);
        } else {
            self.final_source = source.to_string();
        }
        Ok(Outcome::Changed)
    }
}

/// Whether a committed move `before` → `after` was a reopen (SUCCEEDED to PROCESSING or FAILED).
pub fn is_reopen(before: &RefundOrder, after: &RefundOrder) -> bool {
    before.refund_status == RefundStatus::Succeeded
        && matches!(
            after.refund_status,
            RefundStatus::Processing | RefundStatus::Failed
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        ChannelKind, NewRefund, RefundKind, RefundMethod, SubmitStatus,
        DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
    };
    use tuikuan_kernel::{Currency, Money};

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

    /// An interface refund the platform took as paid (reconciled SUCCEEDED).
    fn succeeded(ch: &Channel) -> RefundOrder {
        let cal = WorkingCalendar::default();
        let mut o = RefundOrder::accept(
            NewRefund {
                refund_id: "rf-1".into(),
                merchant_id: "m1".into(),
                trade_id: "t1".into(),
                order_no: "o1".into(),
                channel: "CH1".into(),
                amount: Money::from_minor(9413, Currency::Cny),
                trade_paid_at_ms: NOW - 86_400_000,
                payer_card_no: "6222000011112223".into(),
                payer_name: "张三".into(),
                kind: RefundKind::Normal,
                trade_amount: None,
            },
            ch,
            &cal,
            NOW,
        )
        .unwrap();
        o.submit_accepted("B1", NOW, NOW).unwrap();
        o.finalize(FinalStatus::Succeeded, "paid", "run-1", NOW)
            .unwrap();
        o
    }

    #[test]
    fn a_reopened_refund_falls_back_to_the_next_method() {
        let ch = channel(vec![RefundMethod::Interface, RefundMethod::Payout]);
        let cal = WorkingCalendar::default();
        let mut o = succeeded(&ch);
        let first = o.bank_reference_id.clone();
        assert_eq!(
            o.reopen(&first, "bank file says failed", "dsc_1", &ch, &cal, NOW + 1)
                .unwrap(),
            Outcome::Changed
        );
        assert_eq!(o.refund_status, RefundStatus::Processing);
        assert_eq!(o.method, RefundMethod::Payout);
        assert_eq!(o.attempt, 2);
        assert_eq!(o.submit_status, SubmitStatus::Pending);
        assert_eq!(o.finalized_at_ms, None);
        assert_eq!(o.attempts[0].outcome, AttemptOutcome::Failed);
        assert!(
            o.attempts[0].reason.starts_with("REOPENED"),
            "{:?}",
            o.attempts[0]
        );
        // A repeat (a second resolution, a retry) changes nothing.
        let before = o.clone();
        assert_eq!(
            o.reopen(&first, "again", "dsc_2", &ch, &cal, NOW + 2)
                .unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(o, before);
        // The new attempt is not succeeded: it cannot be reopened.
        let second = o.bank_reference_id.clone();
        assert_eq!(
            o.reopen(&second, "x", "s", &ch, &cal, NOW + 3)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn with_no_method_left_it_fails() {
        let ch = channel(vec![RefundMethod::Interface]);
        let cal = WorkingCalendar::default();
        let mut o = succeeded(&ch);
        let first = o.bank_reference_id.clone();
        o.reopen(&first, "bank failed it", "dsc_1", &ch, &cal, NOW + 1)
            .unwrap();
        assert_eq!(o.refund_status, RefundStatus::Failed);
        assert_eq!(o.final_source, "dsc_1");
        assert_eq!(o.bank_status, Some(BankStatus::Failed));
        assert!(
            o.reason.starts_with("every refund method is exhausted"),
            "{}",
            o.reason
        );
    }

    #[test]
    fn only_a_delivered_succeeded_attempt() {
        let ch = channel(vec![RefundMethod::Interface, RefundMethod::Payout]);
        let cal = WorkingCalendar::default();
        let mut o = succeeded(&ch);
        let first = o.bank_reference_id.clone();
        assert_eq!(
            o.reopen("nope", "x", "s", &ch, &cal, NOW).unwrap_err().code,
            ErrorCode::NotFound
        );
        o.pending_steps = 1;
        assert_eq!(
            o.reopen(&first, "x", "s", &ch, &cal, NOW).unwrap_err().code,
            ErrorCode::Unavailable
        );
        o.pending_steps = 0;
        o.refund_status = RefundStatus::Returned;
        assert_eq!(
            o.reopen(&first, "x", "s", &ch, &cal, NOW).unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn steps_are_keyed_by_attempt_and_ordered() {
        let reopen = OutboxEntry::for_reopen("rf-1", 1);
        assert_eq!(reopen[0].id, "rf-1:CLEARING_REOPEN:1");
        assert_eq!(reopen[0].attempt_of(), Some(1));
        let last_plain = OutboxEntry::for_reinstate("rf-1")[0].ordinal;
        assert!(reopen[0].ordinal > last_plain);
        assert!(reopen[0].ordinal < reopen[1].ordinal);
        let next = OutboxEntry::for_final_of_attempt("rf-1", FinalStatus::Succeeded, 2);
        assert_eq!(next[0].id, "rf-1:CLEARING_COMPLETE:2");
        assert!(next[0].ordinal > reopen[1].ordinal);
        assert_eq!(
            OutboxEntry::for_final("rf-1", FinalStatus::Succeeded)[0].attempt_of(),
            None
        );
    }
}
