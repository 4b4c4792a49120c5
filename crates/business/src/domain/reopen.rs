//! Reopen of a merchant refund: the refund center reports that a refund it had reported SUCCEEDED
//! was failed by the bank after all (a status conflict resolved bank-wins) and goes on with its
//! next method. The merchant refund is PROCESSING again (chain state ACCEPTED: accepted and
//! promised), its amount still held on the trade, and the merchant is notified; the final status
//! follows as for any refund.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::ChainState;

/// What a reopen report does to a refund in a given chain state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReopenAction {
    /// SUCCEEDED → ACCEPTED (PROCESSING to the merchant); the reservation stays.
    Reopen,
    /// Already PROCESSING: nothing to do (a repeat).
    AlreadyDone,
}

/// Decides how a reopen applies: only a SUCCEEDED refund can be reopened.
pub fn reopen_action(current: ChainState) -> Result<ReopenAction> {
    match current {
        ChainState::Succeeded => Ok(ReopenAction::Reopen),
        ChainState::Accepted => Ok(ReopenAction::AlreadyDone),
        other => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!("a refund in {other} cannot be reopened: only a SUCCEEDED one"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_succeeded_refunds_reopen_and_keep_their_hold() {
        for s in ChainState::ALL {
            let got = reopen_action(*s);
            match s {
                ChainState::Succeeded => assert_eq!(got.unwrap(), ReopenAction::Reopen),
                ChainState::Accepted => assert_eq!(got.unwrap(), ReopenAction::AlreadyDone),
                _ => assert_eq!(got.unwrap_err().code, ErrorCode::InvalidStateTransition),
            }
        }
        assert!(ChainState::Succeeded.holds_reservation());
        assert!(ChainState::Accepted.holds_reservation());
    }
}
