//! Reinstatement (恢复成功) of a merchant refund: the refund center reports that a refund it had
//! failed was paid by the bank after all (a discrepancy resolved bank-wins, staff's approved
//! reinstate). The merchant refund becomes SUCCEEDED and its amount counts on the trade again at
//! once, so no new refund can take the same money while the ledger catches up.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::ChainState;

/// What a reinstatement report does to a refund in a given chain state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReinstateAction {
    /// FAILED → SUCCEEDED, taking the amount on the trade again (within the payment).
    Reinstate,
    /// The failure never reached the business layer (ACCEPTED, or DEBITED with a lost answer): the
    /// plain move to SUCCEEDED; the amount is still held.
    Succeed,
    /// SUCCEEDED already: nothing to do (a repeat).
    AlreadyDone,
}

/// Decides how a reinstatement applies; a refund that was never accepted cannot have been paid.
pub fn reinstate_action(current: ChainState) -> Result<ReinstateAction> {
    match current {
        ChainState::Failed => Ok(ReinstateAction::Reinstate),
        ChainState::Accepted | ChainState::Debited => Ok(ReinstateAction::Succeed),
        ChainState::Succeeded => Ok(ReinstateAction::AlreadyDone),
        ChainState::Reserved | ChainState::Reversing | ChainState::Rejected => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!("a refund in {current} was never accepted and cannot be reinstated"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_an_answer() {
        let table: Vec<(ChainState, String)> = ChainState::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    match reinstate_action(*s) {
                        Ok(a) => format!("{a:?}"),
                        Err(e) => e.code.to_string(),
                    },
                )
            })
            .collect();
        let want: Vec<(ChainState, String)> = [
            (ChainState::Reserved, "INVALID_STATE_TRANSITION"),
            (ChainState::Debited, "Succeed"),
            (ChainState::Accepted, "Succeed"),
            (ChainState::Succeeded, "AlreadyDone"),
            (ChainState::Failed, "Reinstate"),
            (ChainState::Reversing, "INVALID_STATE_TRANSITION"),
            (ChainState::Rejected, "INVALID_STATE_TRANSITION"),
        ]
        .into_iter()
        .map(|(s, a)| (s, a.to_string()))
        .collect();
        assert_eq!(table, want);
        // The reinstated state holds the trade's reservation again.
        assert!(ChainState::Succeeded.holds_reservation());
        assert!(!ChainState::Failed.holds_reservation());
    }
}
