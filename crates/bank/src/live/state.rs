//! The bank subsystem's record of a refund sent to a real channel, and its state machine. Pure:
//! no database, no network.
//!
//! ```text
//! PENDING ──(verified answer)──► ACCEPTED ──► SUCCEEDED
//!    │                              │
//!    │                              └──────► FAILED ──► SUCCEEDED   (WeChat Pay ABNORMAL, later paid)
//!    ├──► SUCCEEDED | FAILED
//!    └──► REJECTED                  (the channel refused in a verified answer: no money moved)
//! ```
//!
//! PENDING means "sent, or about to be, with no verified answer": the outcome is unknown, so the
//! refund may only be retried under the same reference. Nothing ever leaves SUCCEEDED or
//! REJECTED.

use tuikuan_kernel::Money;

use crate::connector::{ChannelRefund, ChannelStatus};
use crate::domain::CallbackStatus;

/// Where a refund stands with its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiveStatus {
    Pending,
    Accepted,
    Succeeded,
    Failed,
    Rejected,
}

impl LiveStatus {
    pub const ALL: [LiveStatus; 5] = [
        LiveStatus::Pending,
        LiveStatus::Accepted,
        LiveStatus::Succeeded,
        LiveStatus::Failed,
        LiveStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LiveStatus::Pending => "PENDING",
            LiveStatus::Accepted => "ACCEPTED",
            LiveStatus::Succeeded => "SUCCEEDED",
            LiveStatus::Failed => "FAILED",
            LiveStatus::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<LiveStatus> {
        LiveStatus::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Whether the bank still asks the channel about it.
    pub fn is_open(self) -> bool {
        matches!(self, LiveStatus::Pending | LiveStatus::Accepted)
    }
}

/// One refund sent to a real channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRefund {
    /// The bank reference id (`out_refund_no` / `out_request_no`).
    pub reference: String,
    pub channel: String,
    pub original_trade_id: String,
    pub amount: Money,
    /// What makes two submissions the same request (as the simulator computes it).
    pub fingerprint: String,
    pub status: LiveStatus,
    /// The channel's last word, as it said it.
    pub channel_status: String,
    pub channel_ref: String,
    pub reason: String,
    /// Submissions sent to the channel.
    pub attempts: i32,
    /// The sequence number of the last callback enqueued for the refund center.
    pub sequence: i32,
    pub submitted_at_ms: i64,
    pub updated_at_ms: i64,
    /// When to ask the channel next; `None` once the refund is no longer open.
    pub next_query_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
}

/// What a verified word from the channel does to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes (the same status again, or an older one).
    Unchanged,
    /// Moves to `to`; `callback` is what the refund center is told (none for REJECTED).
    Move {
        to: LiveStatus,
        callback: Option<CallbackStatus>,
    },
    /// The channel contradicts a final state (e.g. success after a refusal): nothing changes,
    /// and operators must look.
    Contradiction(String),
}

/// The transition for `incoming` from `current`. Monotone.
pub fn step(current: LiveStatus, incoming: ChannelStatus) -> Step {
    use ChannelStatus as C;
    use LiveStatus as L;
    let to = match (current, incoming) {
        (L::Pending, C::Processing) => L::Accepted,
        (L::Pending, C::Rejected) => L::Rejected,
        (L::Pending | L::Accepted, C::Succeeded) | (L::Failed, C::Succeeded) => L::Succeeded,
        (L::Pending | L::Accepted, C::Failed) => L::Failed,
        (L::Accepted, C::Processing)
        | (L::Failed, C::Processing | C::Failed)
        | (L::Succeeded, C::Succeeded)
        | (L::Rejected, C::Rejected) => return Step::Unchanged,
        (L::Succeeded, C::Processing | C::Failed) => return Step::Unchanged,
        (from, to) => {
            return Step::Contradiction(format!(
                "the channel says {} for a refund that is {}",
                to.as_str(),
                from.as_str()
            ))
        }
    };
    let callback = match to {
        L::Accepted => Some(CallbackStatus::Processing),
        L::Succeeded => Some(CallbackStatus::Succeeded),
        L::Failed => Some(CallbackStatus::Failed),
        L::Pending | L::Rejected => None,
    };
    Step::Move { to, callback }
}

/// Why a verified word cannot be about this refund (another amount or original trade).
pub fn mismatch(
    refund: &LiveRefund,
    word: &ChannelRefund,
    original_trade_id: &str,
) -> Option<String> {
    if let Some(amount) = &word.amount {
        if amount != &refund.amount {
            return Some(format!(
                "the channel reports {amount} for refund {}, which is {}",
                refund.reference, refund.amount
            ));
        }
    }
    if !original_trade_id.is_empty() && original_trade_id != refund.original_trade_id {
        return Some(format!(
            "the channel reports refund {} on trade {original_trade_id}, not {}",
            refund.reference, refund.original_trade_id
        ));
    }
    None
}

/// The next time to ask the channel about an open refund: a quarter of its age, at least
/// `interval_ms`, at most an hour (young refunds often, old ones rarely).
pub fn next_query_at(now_ms: i64, submitted_at_ms: i64, interval_ms: i64) -> i64 {
    let age = now_ms.saturating_sub(submitted_at_ms).max(0);
    now_ms.saturating_add((age / 4).clamp(interval_ms.clamp(1, 3_600_000), 3_600_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_monotone() {
        use ChannelStatus as C;
        use LiveStatus as L;
        let moved = |from, word| match step(from, word) {
            Step::Move { to, .. } => Some(to),
            _ => None,
        };
        assert_eq!(moved(L::Pending, C::Processing), Some(L::Accepted));
        assert_eq!(moved(L::Pending, C::Rejected), Some(L::Rejected));
        assert_eq!(moved(L::Accepted, C::Succeeded), Some(L::Succeeded));
        assert_eq!(moved(L::Accepted, C::Failed), Some(L::Failed));
        assert_eq!(moved(L::Failed, C::Succeeded), Some(L::Succeeded));
        assert_eq!(step(L::Accepted, C::Processing), Step::Unchanged);
        assert_eq!(step(L::Succeeded, C::Failed), Step::Unchanged);
        assert_eq!(step(L::Succeeded, C::Processing), Step::Unchanged);
        assert!(matches!(
            step(L::Rejected, C::Succeeded),
            Step::Contradiction(_)
        ));
        assert!(matches!(
            step(L::Accepted, C::Rejected),
            Step::Contradiction(_)
        ));
        assert!(matches!(
            step(L::Succeeded, C::Rejected),
            Step::Contradiction(_)
        ));
        for s in LiveStatus::ALL {
            assert_eq!(LiveStatus::parse(s.as_str()), Some(s));
            for w in [C::Processing, C::Succeeded, C::Failed, C::Rejected] {
                if let Step::Move { to, callback } = step(s, w) {
                    assert_ne!(to, s);
                    assert_ne!(s, L::Succeeded);
                    assert_ne!(s, L::Rejected);
                    assert_eq!(callback.is_none(), to == L::Rejected);
                }
            }
        }
    }

    #[test]
    fn queries_back_off_to_an_hour() {
        assert_eq!(next_query_at(0, 0, 60_000), 60_000);
        assert_eq!(next_query_at(800_000, 0, 60_000), 1_000_000);
        assert_eq!(next_query_at(100_000_000, 0, 60_000), 103_600_000);
    }
}
