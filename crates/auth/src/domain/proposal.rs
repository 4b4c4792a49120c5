//! Four eyes on money moved by hand (双人复核): the proposal, its state machine, and the
//! single-operator thresholds.
//!
//! A staff action that moves money by hand ([`Action::needs_four_eyes`]) does not act at once: it
//! creates a proposal. A second operator — a different identity, holding a role the action allows —
//! approves it (then the action runs) or rejects it (then nothing happens). The proposer may
//! withdraw it while it is pending. Below an action's configured amount threshold one operator
//! suffices: the proposal is approved by its proposer and runs at once (the default is no
//! threshold: always two).
//!
//! ```text
//! PENDING ──approve──► APPROVED ──action runs──► EXECUTED
//!    │                    │  └──action refused──► FAILED
//!    │                    └──peer outage: approve again to finish
//!    ├──reject──► REJECTED
//!    ├──cancel (proposer)──► CANCELLED
//!    └──72 hours──► EXPIRED
//! ```

use std::collections::BTreeMap;

use tuikuan_kernel::{Error, ErrorCode, Money, Result};

use super::claims::Operator;
use super::permissions::{string_enum, Action, Role};

/// How long a proposal waits for a decision.
pub const PROPOSAL_TTL_MS: i64 = 72 * 3600 * 1000;

string_enum!(
    /// Where a proposal stands.
    ProposalStatus {
        Pending => "PENDING",
        Approved => "APPROVED",
        Executed => "EXECUTED",
        Rejected => "REJECTED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
        Expired => "EXPIRED",
    }
);

impl ProposalStatus {
    /// Whether nothing will happen to the proposal any more.
    pub fn is_final(self) -> bool {
        !matches!(self, ProposalStatus::Pending | ProposalStatus::Approved)
    }
}

/// A four-eyes proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// `{service}-{uuid}`: the service that holds it, then a unique part.
    pub proposal_id: String,
    pub service: String,
    pub action: Action,
    pub subject: String,
    /// The money it moves, when it moves a known amount.
    pub amount: Option<Money>,
    /// The action's parameters for people.
    pub summary: String,
    /// The action's parameters for the service that runs it (JSON).
    pub payload: String,
    pub reason: String,
    pub proposer: String,
    pub proposer_roles: Vec<Role>,
    pub status: ProposalStatus,
    pub approver: String,
    pub decision_reason: String,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub executed_at_ms: Option<i64>,
    pub expires_at_ms: i64,
    pub result: String,
    pub needs_second: bool,
}

/// What a decision on a proposal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    Cancel,
}

/// The step a decision leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionStep {
    /// PENDING → APPROVED, then run the action.
    Approve,
    /// APPROVED already (a run was interrupted): run the action again (it is idempotent).
    Resume,
    /// PENDING → REJECTED.
    Reject,
    /// PENDING → CANCELLED.
    Cancel,
    /// PENDING past its lifetime → EXPIRED (and the decision is refused).
    Expire,
}

fn illegal(p: &Proposal, what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidStateTransition,
        format!(
            "proposal {} is {}{}; it cannot be {what}",
            p.proposal_id,
            p.status,
            if p.approver.is_empty() {
                String::new()
            } else {
                format!(" (decided by {})", p.approver)
            }
        ),
    )
}

/// Checks a decision by `decider` at `now_ms`. The proposer may only cancel; approving or
/// rejecting needs a different operator holding a role the proposal's action allows.
pub fn check_decision(
    p: &Proposal,
    decider: &Operator,
    decision: Decision,
    now_ms: i64,
) -> Result<DecisionStep> {
    if decision == Decision::Cancel {
        if decider.name != p.proposer {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "only its proposer {} may cancel proposal {}",
                    p.proposer, p.proposal_id
                ),
            ));
        }
        return match p.status {
            ProposalStatus::Pending => Ok(DecisionStep::Cancel),
            _ => Err(illegal(p, "cancelled")),
        };
    }
    if decider.name == p.proposer {
        return Err(Error::new(
            ErrorCode::SelfApproval,
            format!(
                "{} proposed {} and may not decide it; a second operator must",
                p.proposer, p.proposal_id
            ),
        ));
    }
    decider.authorize(p.action)?;
    match (p.status, decision) {
        (ProposalStatus::Pending, _) if now_ms >= p.expires_at_ms => Ok(DecisionStep::Expire),
        (ProposalStatus::Pending, Decision::Approve) => Ok(DecisionStep::Approve),
        (ProposalStatus::Pending, Decision::Reject) => Ok(DecisionStep::Reject),
        // Only its approver finishes an interrupted run: a second approver racing the first
        // would otherwise run the action beside it.
        (ProposalStatus::Approved, Decision::Approve) if decider.name == p.approver => {
            Ok(DecisionStep::Resume)
        }
        (_, Decision::Approve) => Err(illegal(p, "approved")),
        _ => Err(illegal(p, "rejected")),
    }
}

/// The single-operator thresholds: per action, an amount below which one operator suffices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FourEyes {
    thresholds: BTreeMap<Action, Money>,
    /// Tests of one service only: one operator suffices for every action.
    one_operator: bool,
}

impl FourEyes {
    /// Always two operators (no thresholds).
    pub fn always_two() -> FourEyes {
        FourEyes::default()
    }

    /// For a service's own tests (never from configuration): one operator suffices for every
    /// action, whatever the amount.
    #[cfg(any(test, feature = "testing"))]
    pub fn one_operator_for_tests() -> FourEyes {
        FourEyes {
            thresholds: BTreeMap::new(),
            one_operator: true,
        }
    }

    /// Thresholds from configuration: `force_fail = "100.00 CNY"` (the action's lowercase name,
    /// an amount and its currency). Only four-eyes actions take one.
    pub fn parse(config: &BTreeMap<String, String>) -> Result<FourEyes> {
        let mut thresholds = BTreeMap::new();
        for (key, value) in config {
            let field = format!("four_eyes.{key}");
            let action = Action::ALL
                .iter()
                .copied()
                .find(|a| a.config_key() == *key && a.needs_four_eyes())
                .ok_or_else(|| {
                    Error::field(&field, "not an action that needs a second operator")
                })?;
            let (amount, currency) = value.trim().split_once(' ').ok_or_else(|| {
                Error::field(
                    &field,
                    "expected an amount and a currency, e.g. \"100.00 CNY\"",
                )
            })?;
            let money = Money::parse(amount.trim(), currency.trim(), &field)?;
            thresholds.insert(action, money);
        }
        Ok(FourEyes {
            thresholds,
            one_operator: false,
        })
    }

    /// Whether `action` moving `amount` needs a second operator: yes unless the action has a
    /// threshold in the amount's currency and the amount is below it.
    pub fn needs_second(&self, action: Action, amount: Option<&Money>) -> bool {
        if self.one_operator {
            return false;
        }
        match (self.thresholds.get(&action), amount) {
            (Some(t), Some(a)) => a.currency() != t.currency() || a.to_minor() >= t.to_minor(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_kernel::Currency;

    fn op(name: &str, role: Role) -> Operator {
        Operator {
            name: name.into(),
            roles: vec![role],
        }
    }

    fn proposal(status: ProposalStatus) -> Proposal {
        Proposal {
            proposal_id: "refund-1".into(),
            service: "refund".into(),
            action: Action::ForceFail,
            subject: "rf_1".into(),
            amount: Some(Money::from_minor(12_113, Currency::Cny)),
            summary: String::new(),
            payload: "{}".into(),
            reason: "bank said failed".into(),
            proposer: "fiona".into(),
            proposer_roles: vec![Role::Finance],
            status,
            approver: String::new(),
            decision_reason: String::new(),
            created_at_ms: 0,
            decided_at_ms: None,
            executed_at_ms: None,
            expires_at_ms: PROPOSAL_TTL_MS,
            result: String::new(),
            needs_second: true,
        }
    }

    #[test]
    fn a_second_operator_in_an_allowed_role_decides() {
        let p = proposal(ProposalStatus::Pending);
        let frank = op("frank", Role::Finance);
        assert_eq!(
            check_decision(&p, &frank, Decision::Approve, 1).unwrap(),
            DecisionStep::Approve
        );
        assert_eq!(
            check_decision(&p, &frank, Decision::Reject, 1).unwrap(),
            DecisionStep::Reject
        );
        let own = check_decision(&p, &op("fiona", Role::Finance), Decision::Approve, 1);
        assert_eq!(own.unwrap_err().code, ErrorCode::SelfApproval);
        let ops = check_decision(&p, &op("olivia", Role::Ops), Decision::Approve, 1);
        assert_eq!(ops.unwrap_err().code, ErrorCode::PermissionDenied);
        assert_eq!(
            check_decision(&p, &frank, Decision::Approve, PROPOSAL_TTL_MS).unwrap(),
            DecisionStep::Expire
        );
    }

    #[test]
    fn only_pending_or_interrupted_proposals_move() {
        let frank = op("frank", Role::Finance);
        let mut approved = proposal(ProposalStatus::Approved);
        approved.approver = "frank".into();
        assert_eq!(
            check_decision(&approved, &frank, Decision::Approve, 1).unwrap(),
            DecisionStep::Resume
        );
        // Another operator does not run it beside its approver.
        assert_eq!(
            check_decision(&approved, &op("fred", Role::Finance), Decision::Approve, 1)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        for s in [
            ProposalStatus::Executed,
            ProposalStatus::Rejected,
            ProposalStatus::Failed,
            ProposalStatus::Cancelled,
            ProposalStatus::Expired,
        ] {
            for d in [Decision::Approve, Decision::Reject] {
                assert_eq!(
                    check_decision(&proposal(s), &frank, d, 1).unwrap_err().code,
                    ErrorCode::InvalidStateTransition,
                    "{s} {d:?}"
                );
            }
        }
        let fiona = op("fiona", Role::Finance);
        assert_eq!(
            check_decision(
                &proposal(ProposalStatus::Pending),
                &fiona,
                Decision::Cancel,
                1
            )
            .unwrap(),
            DecisionStep::Cancel
        );
        assert_eq!(
            check_decision(
                &proposal(ProposalStatus::Pending),
                &frank,
                Decision::Cancel,
                1
            )
            .unwrap_err()
            .code,
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn thresholds_per_action_and_currency() {
        assert!(FourEyes::always_two().needs_second(Action::ForceFail, None));
        let config: BTreeMap<String, String> =
            [("force_fail".to_string(), "100.00 CNY".to_string())].into();
        let f = FourEyes::parse(&config).unwrap();
        let cny = |minor| Money::from_minor(minor, Currency::Cny);
        assert!(!f.needs_second(Action::ForceFail, Some(&cny(9_999))));
        assert!(f.needs_second(Action::ForceFail, Some(&cny(10_000))));
        assert!(f.needs_second(
            Action::ForceFail,
            Some(&Money::from_minor(1, Currency::Usd))
        ));
        assert!(f.needs_second(Action::ConfirmFailed, Some(&cny(1))));
        for bad in [
            ("suspend", "1.00 CNY"),
            ("force_fail", "100"),
            ("force_fail", "x CNY"),
        ] {
            let config: BTreeMap<String, String> = [(bad.0.to_string(), bad.1.to_string())].into();
            let e = FourEyes::parse(&config).unwrap_err();
            assert!(e.message.starts_with("four_eyes."), "{}", e.message);
        }
    }
}
