//! Reopen (重新退款): a refund the platform took as delivered — its debit COMPLETED, the cash out
//! of the channel reserve — whose attempt the bank's file says failed (a status conflict resolved
//! bank-wins). The customer is still owed the money, so the merchant's debit stays where it is and
//! only the completion is undone: `refund-reopen:{refund}:{attempt}` moves the cash from the
//! channel reserve back to refund-in-transit (Dr CHANNEL_RESERVE, Cr REFUND_IN_TRANSIT), and the
//! debit is DEBITED again (COMPLETED → REOPENING → DEBITED), the trade's counters untouched. The
//! refund center's next attempt then completes it once more, under
//! `refund-complete:{refund}:{n}` (n = the reopens before it), or fails it for good and the
//! ordinary reversal gives the money back to the merchant.
//!
//! Everything is keyed by refund and attempt: one reopen per attempt ([`reopen_request_id`]), a
//! reopened attempt is answered as the debit stands, and a completion that names a reopened
//! attempt is refused ([`check_completion`]) — a late repeat of the failed attempt's completion
//! cannot book the refund as delivered again.

use tuikuan_accounting::domain::{AccountKey, Side};
use tuikuan_kernel::{Error, ErrorCode, Money};

use super::{Debit, DebitStatus};

/// Where one attempt's reopen stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReopenState {
    /// The debit is REOPENING for it: the undoing posting is (being) made.
    Reopening,
    /// Done: the debit was DEBITED again.
    Reopened,
}

impl ReopenState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReopenState::Reopening => "REOPENING",
            ReopenState::Reopened => "REOPENED",
        }
    }

    pub fn parse(s: &str) -> Option<ReopenState> {
        [ReopenState::Reopening, ReopenState::Reopened]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The next step of a reopen of `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReopenStep {
    /// Answer the debit as it stands.
    Done,
    Fail(Error),
    /// COMPLETED → REOPENING, recording the attempt.
    Begin,
    /// Post (or re-post) `refund-reopen:` and move REOPENING → DEBITED.
    Post,
}

/// Decides the next step of reopening `attempt` of `debit`, given that attempt's reopen (if any)
/// and whether another attempt's reopen is under way. Pure.
pub fn next_step(debit: &Debit, attempt: u32, this: Option<ReopenState>) -> ReopenStep {
    if attempt == 0 {
        return ReopenStep::Fail(Error::field("attempt", "is required (at least 1)"));
    }
    match (debit.status, this) {
        (_, Some(ReopenState::Reopened)) => ReopenStep::Done,
        (DebitStatus::Reopening, Some(ReopenState::Reopening)) => ReopenStep::Post,
        (DebitStatus::Completed, None) => ReopenStep::Begin,
        (DebitStatus::Reopening, None) => ReopenStep::Fail(Error::unavailable(format!(
            "debit of refund {} is being reopened for another attempt; retry",
            debit.refund_id
        ))),
        (status, _) => ReopenStep::Fail(Error::new(
            ErrorCode::DebitNotActive,
            format!(
                "debit of refund {} is {status}: only a completed refund can be reopened",
                debit.refund_id
            ),
        )),
    }
}

/// The ledger key of the reopen of `attempt`: `refund-reopen:{refund}:{attempt}`.
pub fn reopen_request_id(refund_id: &str, attempt: u32) -> String {
    format!("refund-reopen:{refund_id}:{attempt}")
}

/// The ledger key of the completion made after `reopens` reopens: `refund-complete:{refund}`
/// before any, `refund-complete:{refund}:{reopens}` after.
pub fn complete_request_id(debit: &Debit, reopens: u32) -> String {
    if reopens == 0 {
        debit.complete_request_id()
    } else {
        format!("{}:{reopens}", debit.complete_request_id())
    }
}

/// A completion naming `attempt` (0: not named) is refused when that attempt was reopened.
pub fn check_completion(debit: &Debit, attempt: u32, reopened: &[u32]) -> Result<(), Error> {
    if attempt != 0 && reopened.contains(&attempt) {
        return Err(Error::new(
            ErrorCode::DebitNotActive,
            format!(
                "attempt {attempt} of refund {} was reopened (the bank failed it): it cannot \
                 complete the refund",
                debit.refund_id
            ),
        ));
    }
    Ok(())
}

/// The reopen posting: the completion's lines on the other side (Dr CHANNEL_RESERVE, Cr
/// REFUND_IN_TRANSIT, the cash). Empty when the refund paid no cash (nothing was completed).
pub fn reopen_postings(debit: &Debit) -> Vec<(AccountKey, Side, Money)> {
    debit
        .complete_postings()
        .into_iter()
        .map(|(account, side, amount)| {
            let other = match side {
                Side::Debit => Side::Credit,
                Side::Credit => Side::Debit,
            };
            (account, other, amount)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_accounting::domain::AccountType;

    fn debit(status: DebitStatus) -> Debit {
        let mut d = crate::domain::reinstate::tests::debit();
        d.status = status;
        d
    }

    #[test]
    fn steps_by_state() {
        use DebitStatus::*;
        assert_eq!(next_step(&debit(Completed), 1, None), ReopenStep::Begin);
        assert_eq!(
            next_step(&debit(Reopening), 1, Some(ReopenState::Reopening)),
            ReopenStep::Post
        );
        // A reopened attempt is answered as the debit stands, whatever happened since (the next
        // attempt completed it again: no second reopen).
        for s in [Debited, Completed, Reversed] {
            assert_eq!(
                next_step(&debit(s), 1, Some(ReopenState::Reopened)),
                ReopenStep::Done
            );
        }
        for s in [
            Pending,
            Debited,
            Reversed,
            Returned,
            Completing,
            Reinstating,
        ] {
            assert!(
                matches!(next_step(&debit(s), 2, None), ReopenStep::Fail(ref e) if e.code == ErrorCode::DebitNotActive),
                "{s}"
            );
        }
        assert!(matches!(
            next_step(&debit(Reopening), 2, None),
            ReopenStep::Fail(ref e) if e.code == ErrorCode::Unavailable
        ));
        assert!(matches!(
            next_step(&debit(Completed), 0, None),
            ReopenStep::Fail(ref e) if e.code == ErrorCode::InvalidArgument
        ));
    }

    #[test]
    fn keys_and_lines() {
        let d = debit(DebitStatus::Completed);
        assert_eq!(reopen_request_id("rf1", 2), "refund-reopen:rf1:2");
        assert_eq!(complete_request_id(&d, 0), d.complete_request_id());
        assert_eq!(
            complete_request_id(&d, 1),
            format!("{}:1", d.complete_request_id())
        );
        let lines = reopen_postings(&d);
        let complete = d.complete_postings();
        assert_eq!(lines.len(), complete.len());
        for ((a, s, m), (ca, cs, cm)) in lines.iter().zip(&complete) {
            assert_eq!((a, m), (ca, cm));
            assert_ne!(s, cs);
        }
        assert!(lines
            .iter()
            .any(|(a, s, _)| a.account_type == AccountType::ChannelReserve && *s == Side::Debit));
        assert!(check_completion(&d, 3, &[1, 2]).is_ok());
        assert!(check_completion(&d, 0, &[1]).is_ok());
        assert_eq!(
            check_completion(&d, 2, &[2]).unwrap_err().code,
            ErrorCode::DebitNotActive
        );
    }
}
