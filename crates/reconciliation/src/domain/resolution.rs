//! Resolutions that correct the refund, not only the money (差错处理).
//!
//! - **Bank wins on a status conflict the bank paid** (the platform had made the refund FAILED and
//!   given the money back to the merchant): the refund is reinstated as SUCCEEDED through the
//!   refund center ([`ResolutionAction::Reinstate`]); the business layer holds the trade's amount
//!   again at once and clearing takes the money from the merchant again, a shortfall becoming a
//!   receivable from the merchant. Nothing is parked in suspense and no second refund is possible.
//! - **Bank wins on a status conflict the bank failed** (the platform had made the refund
//!   SUCCEEDED): the refund is reopened through the refund center ([`ResolutionAction::Reopen`]):
//!   the failed attempt's completion is undone, the merchant sees PROCESSING again and the next
//!   method delivers the refund; only with every method exhausted does it become FAILED, the money
//!   back with the merchant. Nothing is parked in suspense.
//! - **Platform wins with evidence** on a refund the bank never reported (银行漏单): the platform
//!   has the bank's statement reference that shows it paid, so the refund is completed
//!   (write-back SUCCEEDED), whatever its method — interface refunds included. Without evidence a
//!   platform-wins on it is refused: recording it would leave the refund PROCESSING for good.
//!   Platform wins on every other kind records the decision only.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{
    BankRecordStatus, Discrepancy, DiscrepancyKind, FinalStatus, ResolutionAction, WriteBackVerdict,
};

/// The longest evidence reference accepted (a statement or clearing-file reference).
pub const MAX_EVIDENCE_CHARS: usize = 128;

/// Checks an evidence reference: at most [`MAX_EVIDENCE_CHARS`], no control characters.
pub fn check_evidence(evidence: &str) -> Result<()> {
    if evidence.chars().count() > MAX_EVIDENCE_CHARS || evidence.chars().any(char::is_control) {
        return Err(Error::field(
            "evidence",
            format!("at most {MAX_EVIDENCE_CHARS} characters, no control characters"),
        ));
    }
    Ok(())
}

/// What PLATFORM_WINS does (see the module documentation).
pub fn platform_wins(d: &Discrepancy, evidence: &str) -> Result<Vec<ResolutionAction>> {
    check_evidence(evidence)?;
    if d.kind != DiscrepancyKind::BankMissed {
        return Ok(Vec::new());
    }
    let evidence = evidence.trim();
    if evidence.is_empty() {
        return Err(Error::field(
            "evidence",
            "is required to resolve a refund the bank never reported platform-wins: the bank \
             statement reference that shows it paid",
        ));
    }
    Ok(vec![ResolutionAction::WriteBack {
        status: FinalStatus::Succeeded,
        reason: format!(
            "the bank paid it per its statement {evidence} (银行漏单 resolved platform-wins)"
        ),
    }])
}

/// What BANK_WINS does on a status conflict: the bank paid → reinstate; the bank failed → reopen
/// (the refund is delivered by its next method, or fails back to the merchant with none left).
pub fn bank_wins_on_conflict(d: &Discrepancy) -> Option<ResolutionAction> {
    if d.kind != DiscrepancyKind::StatusConflict {
        return None;
    }
    match d.bank_status {
        Some(BankRecordStatus::Success) => Some(ResolutionAction::Reinstate {
            reason: format!(
                "the bank paid it (row {}), bank wins: reinstated as succeeded",
                d.bank_reference_id
            ),
        }),
        Some(BankRecordStatus::Failed) => Some(ResolutionAction::Reopen {
            reason: format!(
                "the bank failed it (row {}), bank wins: reopened for the next method",
                d.bank_reference_id
            ),
        }),
        _ => None,
    }
}

/// Judges the refund center's answer to a reinstatement or a reopen: a definite refusal (the
/// refund is not FAILED or not SUCCEEDED, other refunds hold the trade's amount, unknown refund or
/// attempt) reopens the discrepancy; anything else is retried by repeating the request.
pub fn judge_reinstate(answer: std::result::Result<(), &Error>) -> WriteBackVerdict {
    match answer {
        Ok(()) => WriteBackVerdict::Done,
        Err(e) => match e.code {
            ErrorCode::InvalidStateTransition
            | ErrorCode::RefundExceedsPaid
            | ErrorCode::RefundNotFound
            | ErrorCode::NotFound
            | ErrorCode::InvalidArgument
            | ErrorCode::DebitNotActive => {
                WriteBackVerdict::Refused(format!("{}: {}", e.code, e.message))
            }
            _ => WriteBackVerdict::Retry,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinstatement_answers() {
        assert_eq!(judge_reinstate(Ok(())), WriteBackVerdict::Done);
        for code in [
            ErrorCode::InvalidStateTransition,
            ErrorCode::RefundExceedsPaid,
            ErrorCode::RefundNotFound,
        ] {
            let e = Error::new(code, "no");
            assert!(
                matches!(judge_reinstate(Err(&e)), WriteBackVerdict::Refused(ref w) if w.ends_with("no")),
                "{code}"
            );
        }
        for code in [ErrorCode::Unavailable, ErrorCode::Internal] {
            let e = Error::new(code, "later");
            assert_eq!(judge_reinstate(Err(&e)), WriteBackVerdict::Retry, "{code}");
        }
    }

    #[test]
    fn evidence_is_bounded() {
        assert!(check_evidence("STMT-1").is_ok());
        assert!(check_evidence("").is_ok());
        assert!(check_evidence("a\nb").is_err());
        assert!(check_evidence(&"9".repeat(MAX_EVIDENCE_CHARS + 1)).is_err());
    }
}
