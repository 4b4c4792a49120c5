//! Risk holds (风控拦截), manual controls (挂起 / 恢复 / 终止 / 强制失败 / 确认结果), operator roles and
//! the audit trail. Pure: the rules, the permission table and the explicit transitions.
//!
//! Where each control is allowed (anything else is `INVALID_STATE_TRANSITION` naming the state):
//!
//! | action          | role              | allowed when (refund PROCESSING in every case)               |
//! |-----------------|-------------------|--------------------------------------------------------------|
//! | ReleaseHold     | risk              | HELD                                                         |
//! | RejectHold      | risk              | HELD → final FAILED, debit reversed                          |
//! | Suspend         | ops               | not suspended; HELD, or the attempt not handed over (PENDING, |
//! |                 |                   | not in a generated batch)                                    |
//! | Resume          | ops               | suspended                                                    |
//! | Terminate       | ops               | attempt not handed over (as Suspend) → final FAILED          |
//! | ForceFail       | finance           | not HELD (use RejectHold), and the bank has not paid and     |
//! |                 |                   | cannot still pay ([`RefundOrder::may_be_paid`]: not          |
//! |                 |                   | BANK_SUCCEEDED, not SUBMITTED without BANK_FAILED)           |
//! |                 |                   | → final FAILED, debit reversed                               |
//! | ConfirmOutcome  | finance (ops: SUCCEEDED only) | SUBMITTED file-upload or offline attempt → final  |
//! |                 |                   | (FAILED not when the bank said BANK_SUCCEEDED)               |
//! | UpsertRiskRule  | risk              | —                                                            |
//!
//! Ops may confirm an offline success (the bank's phone call that the money arrived is routine
//! operations work, and a wrong SUCCEEDED leaves the customer to complain, the money still at
//! the bank); confirming a failure gives the money back to the merchant, so it needs finance.

use std::fmt;
use tuikuan_kernel::string_enum;

use serde_json::json;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};

use super::{
    validate_text, AttemptOutcome, BankStatus, FinalStatus, HoldStatus, Outcome, RefundMethod,
    RefundOrder, RefundStatus, SubmitStatus,
};

/// The refusal of a staff action that would give back money the bank paid or may still pay.
fn bank_may_have_paid(refund_id: &str, action: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::BankMayHavePaid,
        format!(
            "refund {refund_id}: {action} refused, {why}; wait for the bank's answer or \
             reconciliation (a refund the bank never paid is failed by resolving its BANK_MISSED \
             discrepancy bank-wins)"
        ),
    )
}

/// The longest operator id accepted.
pub const MAX_OPERATOR_LEN: usize = 128;
/// The longest risk window (30 days).
pub const MAX_WINDOW_MINUTES: u32 = 30 * 24 * 60;

string_enum!(
    /// An operator's role.
    Role {
        Ops => "ops",
        Finance => "finance",
        Risk => "risk",
    }
);

string_enum!(
    /// A manual action or hold decision, as the audit trail names it.
    ControlAction {
        /// The risk engine held the order at acceptance.
        Hold => "HOLD",
        ReleaseHold => "RELEASE_HOLD",
        RejectHold => "REJECT_HOLD",
        Suspend => "SUSPEND",
        Resume => "RESUME",
        Terminate => "TERMINATE",
        ForceFail => "FORCE_FAIL",
        ConfirmSucceeded => "CONFIRM_SUCCEEDED",
        ConfirmFailed => "CONFIRM_FAILED",
        /// A FAILED refund the bank paid after all becomes SUCCEEDED (恢复成功).
        Reinstate => "REINSTATE",
        /// An error refund was raised (by the business layer or an operator).
        CreateErrorRefund => "CREATE_ERROR_REFUND",
        UpsertRiskRule => "UPSERT_RISK_RULE",
    }
);

impl ControlAction {
    /// The roles that may take this action (empty: no operator takes it).
    pub fn roles(self) -> &'static [Role] {
        match self {
            ControlAction::ReleaseHold
            | ControlAction::RejectHold
            | ControlAction::UpsertRiskRule => &[Role::Risk],
            ControlAction::Suspend | ControlAction::Resume | ControlAction::Terminate => {
                &[Role::Ops]
            }
            ControlAction::ForceFail | ControlAction::ConfirmFailed | ControlAction::Reinstate => {
                &[Role::Finance]
            }
            ControlAction::ConfirmSucceeded => &[Role::Finance, Role::Ops],
            ControlAction::Hold | ControlAction::CreateErrorRefund => &[],
        }
    }
}

/// Who acts: the operator named by a verified operator token, with the token's roles that the
/// refund center knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
    pub roles: Vec<Role>,
}

impl Operator {
    /// Parses the asserted identity: both parts are required (`UNAUTHENTICATED`), the role must
    /// be one of ops, finance, risk (`PERMISSION_DENIED`).
    pub fn parse(id: Option<&str>, role: Option<&str>) -> Result<Operator> {
        let id = id.map(str::trim).unwrap_or_default();
        let role = role.map(str::trim).unwrap_or_default();
        if id.is_empty() || role.is_empty() {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                "operator identity is required (x-operator-id and x-operator-role)",
            ));
        }
        if id.chars().count() > MAX_OPERATOR_LEN || id.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                format!("operator id must be 1 to {MAX_OPERATOR_LEN} printable characters"),
            ));
        }
        let role = Role::parse(&role.to_ascii_lowercase()).ok_or_else(|| {
            Error::new(
                ErrorCode::PermissionDenied,
                format!("unknown operator role {role:?}: expected ops, finance or risk"),
            )
        })?;
        Ok(Operator {
            id: id.to_string(),
            roles: vec![role],
        })
    }

    /// The operator `id` with those of `roles` (role names) the refund center knows.
    pub fn with_roles<'a>(id: &str, roles: impl IntoIterator<Item = &'a str>) -> Operator {
        Operator {
            id: id.to_string(),
            roles: roles.into_iter().filter_map(Role::parse).collect(),
        }
    }

    /// `ops,finance`.
    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `PERMISSION_DENIED` unless this operator's role may take `action`.
    pub fn authorize(&self, action: ControlAction) -> Result<()> {
        if self.roles.iter().any(|r| action.roles().contains(r)) {
            return Ok(());
        }
        let needed: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
        Err(Error::new(
            ErrorCode::PermissionDenied,
            format!(
                "operator {} with role {} may not {action}; it needs role {}",
                self.id,
                self.roles_text(),
                if needed.is_empty() {
                    "(none)".to_string()
                } else {
                    needed.join(" or ")
                }
            ),
        ))
    }
}

/// A reason for a manual action: required, bounded, printable.
pub fn validate_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::field("reason", "is required"));
    }
    validate_text(reason, "reason")
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub audit_id: String,
    pub refund_id: String,
    pub action: ControlAction,
    pub operator: String,
    /// The operator's role, or `system` / `service` for the risk engine and service callers.
    pub role: String,
    pub reason: String,
    pub at_ms: i64,
    /// JSON of [`RefundOrder::control_snapshot`]; empty when there was no order before.
    pub state_before: String,
    pub state_after: String,
}

// ---------------------------------------------------------------------------------------------
// Risk rules

string_enum!(
    /// What a risk rule looks at.
    RiskRuleKind {
        /// The refund's amount is above a threshold (per channel or global).
        AmountAbove => "AMOUNT_ABOVE",
        /// More than N refunds of one merchant within the last M minutes.
        MerchantVelocity => "MERCHANT_VELOCITY",
        /// More than N refunds to one card within the last M minutes.
        CardVelocity => "CARD_VELOCITY",
        /// The refund comes within M minutes of the payment.
        SoonAfterPayment => "SOON_AFTER_PAYMENT",
    }
);

/// A configured risk rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskRule {
    pub rule_id: String,
    pub kind: RiskRuleKind,
    /// Only this channel's refunds; `None`: every channel.
    pub channel: Option<String>,
    /// AMOUNT_ABOVE: the threshold (its currency is the rule's).
    pub threshold: Option<Money>,
    /// The velocity rules: held when the refunds in the window, counting the new one, are more
    /// than this.
    pub max_count: u32,
    pub window_minutes: u32,
    pub enabled: bool,
    pub description: String,
    pub updated_at_ms: i64,
}

/// What the risk rules look at for one new refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskFacts {
    pub channel: String,
    pub amount: Money,
    pub trade_paid_at_ms: i64,
    pub now_ms: i64,
    /// The merchant's refunds accepted in each velocity rule's window, by rule id (not counting
    /// the new one).
    pub merchant_recent: Vec<(String, u64)>,
    /// The same for the card; `None` for a rule whose window was not counted (no card).
    pub card_recent: Vec<(String, u64)>,
}

const MS_PER_MINUTE: i64 = 60_000;

impl RiskRule {
    /// Checks the rule's configuration for its kind.
    pub fn validate(&self) -> Result<()> {
        tuikuan_kernel::id::validate_external_id(&self.rule_id, "rule_id")?;
        if let Some(c) = &self.channel {
            tuikuan_kernel::id::validate_external_id(c, "channel")?;
        }
        validate_text(&self.description, "description")?;
        let window = || {
            if self.window_minutes == 0 || self.window_minutes > MAX_WINDOW_MINUTES {
                return Err(Error::field(
                    "window_minutes",
                    format!("must be between 1 and {MAX_WINDOW_MINUTES}"),
                ));
            }
            Ok(())
        };
        match self.kind {
            RiskRuleKind::AmountAbove => match &self.threshold {
                Some(t) if t.to_minor() >= 0 => Ok(()),
                Some(_) => Err(Error::field("threshold_amount", "must not be negative")),
                None => Err(Error::field("threshold_amount", "is required")),
            },
            RiskRuleKind::MerchantVelocity | RiskRuleKind::CardVelocity => {
                window()?;
                if self.max_count == 0 {
                    return Err(Error::field("max_count", "must be at least 1"));
                }
                Ok(())
            }
            RiskRuleKind::SoonAfterPayment => window(),
        }
    }

    /// The start of the rule's window (velocity rules count refunds accepted after it).
    pub fn window_start_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(i64::from(self.window_minutes) * MS_PER_MINUTE)
    }

    /// Why this rule holds the refund, or `None` when it does not.
    pub fn evaluate(&self, facts: &RiskFacts) -> Option<String> {
        if !self.enabled {
            return None;
        }
        if self.channel.as_ref().is_some_and(|c| *c != facts.channel) {
            return None;
        }
        let recent = |list: &[(String, u64)]| {
            list.iter()
                .find(|(id, _)| *id == self.rule_id)
                .map(|(_, n)| *n)
        };
        match self.kind {
            RiskRuleKind::AmountAbove => {
                let t = self.threshold.as_ref()?;
                if t.currency() != facts.amount.currency()
                    || facts.amount.to_minor() <= t.to_minor()
                {
                    return None;
                }
                Some(format!(
                    "amount {} is above the threshold {t}",
                    facts.amount
                ))
            }
            RiskRuleKind::MerchantVelocity => {
                let n = recent(&facts.merchant_recent)?.saturating_add(1);
                (n > u64::from(self.max_count)).then(|| {
                    format!(
                        "{n} refunds of the merchant within {} minutes (more than {})",
                        self.window_minutes, self.max_count
                    )
                })
            }
            RiskRuleKind::CardVelocity => {
                let n = recent(&facts.card_recent)?.saturating_add(1);
                (n > u64::from(self.max_count)).then(|| {
                    format!(
                        "{n} refunds to the card within {} minutes (more than {})",
                        self.window_minutes, self.max_count
                    )
                })
            }
            RiskRuleKind::SoonAfterPayment => {
                let since = facts.now_ms.saturating_sub(facts.trade_paid_at_ms);
                (since < i64::from(self.window_minutes) * MS_PER_MINUTE).then(|| {
                    format!(
                        "refund {} minutes after the payment (within {} minutes)",
                        since / MS_PER_MINUTE,
                        self.window_minutes
                    )
                })
            }
        }
    }
}

/// The first rule (by rule id) that holds the refund, with every matching rule's reason.
pub fn evaluate_rules(rules: &[RiskRule], facts: &RiskFacts) -> Option<(String, String)> {
    let mut sorted: Vec<&RiskRule> = rules.iter().collect();
    sorted.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
    let hits: Vec<(String, String)> = sorted
        .into_iter()
        .filter_map(|r| r.evaluate(facts).map(|why| (r.rule_id.clone(), why)))
        .collect();
    let first = hits.first()?.0.clone();
    let why = hits
        .iter()
        .map(|(id, why)| format!("rule {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    Some((first, why))
}

// ---------------------------------------------------------------------------------------------
// Control transitions

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.roles_text())
    }
}

impl RefundOrder {
    fn state_line(&self) -> String {
        let mut extra = String::new();
        if let Some(h) = self.hold_status {
            extra.push_str(&format!(", hold {h}"));
        }
        if self.suspended {
            extra.push_str(", suspended");
        }
        if matches!(
            self.method,
            RefundMethod::FileUpload | RefundMethod::Offline
        ) && self.submit_status == SubmitStatus::Pending
            && !self.bank_reference_id.is_empty()
        {
            extra.push_str(&format!(", in batch row {}", self.bank_reference_id));
        }
        format!(
            "refund status {}, submit status {}, method {}{extra}",
            self.refund_status, self.submit_status, self.method
        )
    }

    fn control_illegal(&self, action: ControlAction, why: &str) -> Error {
        Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "refund {} cannot {action} from {}: {why}",
                self.refund_id,
                self.state_line()
            ),
        )
    }

    fn require_processing(&self, action: ControlAction) -> Result<()> {
        if self.refund_status.is_final() {
            return Err(self.control_illegal(action, "the refund is final"));
        }
        Ok(())
    }

    /// Whether the current attempt has not been handed to anyone: PENDING, and (file-upload,
    /// offline) not in a generated batch — a generated spreadsheet already carries the row.
    pub fn not_handed_over(&self) -> bool {
        let in_batch = matches!(
            self.method,
            RefundMethod::FileUpload | RefundMethod::Offline
        ) && !self.bank_reference_id.is_empty();
        self.submit_status == SubmitStatus::Pending && !in_batch
    }

    /// The control-relevant state as JSON, for the audit trail.
    pub fn control_snapshot(&self) -> String {
        json!({
            "refund_status": self.refund_status.as_str(),
            "submit_status": self.submit_status.as_str(),
            "method": self.method.as_str(),
            "attempt": self.attempt,
            "bank_reference_id": self.bank_reference_id,
            "hold_status": self.hold_status.map(HoldStatus::as_str),
            "suspended": self.suspended,
            "reason": self.reason,
        })
        .to_string()
    }

    /// The risk engine holds a just-accepted order: nothing is sent until risk decides.
    pub fn hold(&mut self, rule_id: &str, reason: &str) -> Result<()> {
        if self.refund_status.is_final() || self.submit_status != SubmitStatus::Pending {
            return Err(self.control_illegal(ControlAction::Hold, "only a new order is held"));
        }
        self.hold_status = Some(HoldStatus::Held);
        self.hold_rule_id = rule_id.to_string();
        self.hold_reason = reason.to_string();
        Ok(())
    }

    /// HELD → released; dispatch continues as normal.
    pub fn release_hold(&mut self) -> Result<()> {
        self.require_processing(ControlAction::ReleaseHold)?;
        if self.hold_status != Some(HoldStatus::Held) {
            return Err(self.control_illegal(ControlAction::ReleaseHold, "it is not HELD"));
        }
        self.hold_status = Some(HoldStatus::Released);
        Ok(())
    }

    /// HELD → rejected: the order fails for good (its debit is reversed by the outbox).
    pub fn reject_hold(&mut self, reason: &str, source: &str, now_ms: i64) -> Result<()> {
        self.require_processing(ControlAction::RejectHold)?;
        if self.hold_status != Some(HoldStatus::Held) {
            return Err(self.control_illegal(ControlAction::RejectHold, "it is not HELD"));
        }
        self.hold_status = Some(HoldStatus::Rejected);
        self.fail_manually(
            &format!("rejected by risk review: {reason}"),
            source,
            now_ms,
        );
        Ok(())
    }

    /// Stops automatic processing (挂起): only while HELD or before the attempt was handed over.
    pub fn suspend(&mut self) -> Result<()> {
        self.require_processing(ControlAction::Suspend)?;
        if self.suspended {
            return Err(self.control_illegal(ControlAction::Suspend, "it is already suspended"));
        }
        if self.hold_status != Some(HoldStatus::Held) && !self.not_handed_over() {
            return Err(self.control_illegal(
                ControlAction::Suspend,
                "the attempt was already handed to the bank, the payout center or a batch",
            ));
        }
        self.suspended = true;
        Ok(())
    }

    /// Undoes [`RefundOrder::suspend`].
    pub fn resume(&mut self) -> Result<()> {
        self.require_processing(ControlAction::Resume)?;
        if !self.suspended {
            return Err(self.control_illegal(ControlAction::Resume, "it is not suspended"));
        }
        self.suspended = false;
        Ok(())
    }

    /// Terminates (终止) an order before submission: final FAILED, the money goes back.
    pub fn terminate(&mut self, reason: &str, source: &str, now_ms: i64) -> Result<()> {
        self.require_processing(ControlAction::Terminate)?;
        if !self.not_handed_over() {
            return Err(self.control_illegal(
                ControlAction::Terminate,
                "only an attempt not yet handed over can be terminated; finance can force-fail it",
            ));
        }
        self.fail_manually(
            &format!("terminated by operations: {reason}"),
            source,
            now_ms,
        );
        Ok(())
    }

    /// Finance decides the refund failed (强制失败), submitted or not: final FAILED, the money goes
    /// back. Not while HELD (risk decides those).
    pub fn force_fail(&mut self, reason: &str, source: &str, now_ms: i64) -> Result<()> {
        self.require_processing(ControlAction::ForceFail)?;
        if self.hold_status == Some(HoldStatus::Held) {
            return Err(self.control_illegal(
                ControlAction::ForceFail,
                "it is HELD; risk rejects held orders",
            ));
        }
        if let Some(why) = self.may_be_paid() {
            return Err(bank_may_have_paid(
                &self.refund_id,
                ControlAction::ForceFail.as_str(),
                why,
            ));
        }
        self.fail_manually(
            &format!("force-failed by finance: {reason}"),
            source,
            now_ms,
        );
        Ok(())
    }

    /// Finance or operations confirm the outcome of an offline or file-upload attempt whose answer
    /// came by phone or fax: SUBMITTED → final, like reconciliation.
    pub fn confirm_outcome(
        &mut self,
        status: FinalStatus,
        reason: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<Outcome> {
        let action = match status {
            FinalStatus::Succeeded => ControlAction::ConfirmSucceeded,
            FinalStatus::Failed => ControlAction::ConfirmFailed,
        };
        self.require_processing(action)?;
        if !matches!(
            self.method,
            RefundMethod::FileUpload | RefundMethod::Offline
        ) {
            return Err(self.control_illegal(
                action,
                "only file-upload and offline attempts are confirmed by hand",
            ));
        }
        if self.submit_status != SubmitStatus::Submitted {
            return Err(self.control_illegal(action, "the attempt is not SUBMITTED"));
        }
        if status == FinalStatus::Failed {
            self.check_not_paid(action.as_str())?;
        }
        self.finalize(status, reason, source, now_ms)
    }

    /// Why the bank has paid or may still pay the current attempt (`None`: it has not and will
    /// not): it said SUCCEEDED, or the attempt was handed over (SUBMITTED) and no answer of the
    /// bank says it failed. Earlier attempts ended FAILED before the next one started.
    pub fn may_be_paid(&self) -> Option<&'static str> {
        match (self.bank_status, self.submit_status) {
            (Some(BankStatus::Succeeded), _) => Some("the bank says it paid (BANK_SUCCEEDED)"),
            (Some(BankStatus::Failed), _) => None,
            (_, SubmitStatus::Submitted) => {
                Some("it was submitted and no answer of the bank says it failed")
            }
            _ => None,
        }
    }

    /// `BANK_MAY_HAVE_PAID` when the bank says it paid the current attempt: a staff action that
    /// gives the money back (confirm failed, fail a spreadsheet row) is refused.
    pub fn check_not_paid(&self, action: &str) -> Result<()> {
        if self.bank_status == Some(BankStatus::Succeeded) {
            return Err(bank_may_have_paid(
                &self.refund_id,
                action,
                "the bank says it paid (BANK_SUCCEEDED)",
            ));
        }
        Ok(())
    }

    /// Final FAILED by a person's decision: the current attempt fails, no next method starts.
    fn fail_manually(&mut self, why: &str, source: &str, now_ms: i64) {
        self.refund_status = RefundStatus::Failed;
        self.finalized_at_ms = Some(now_ms);
        self.final_source = source.to_string();
        self.waiting_manual = false;
        self.reason = why.to_string();
        let number = self.attempt;
        if let Some(a) = self.attempts.iter_mut().find(|a| a.number == number) {
            if matches!(
                a.outcome,
                AttemptOutcome::Pending | AttemptOutcome::Submitted
            ) {
                a.outcome = AttemptOutcome::Failed;
                a.reason = why.to_string();
                a.ended_at_ms = Some(now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, ChannelKind, NewRefund, RefundKind};
    use tuikuan_kernel::{Currency, WorkingCalendar};

    const NOW: i64 = 1_800_000_000_000;

    fn order(methods: Vec<RefundMethod>) -> RefundOrder {
        let channel = Channel {
            code: "CH1".into(),
            kind: ChannelKind::NetBanking,
            methods,
            original_route_window_days: 180,
            bank_code: "ICBC".into(),
            id_scheme: None,
        };
        RefundOrder::accept(
            NewRefund {
                refund_id: "rf-1".into(),
                merchant_id: "m1".into(),
                trade_id: "t1".into(),
                order_no: "o1".into(),
                channel: "CH1".into(),
                amount: Money::from_minor(10_000, Currency::Cny),
                trade_paid_at_ms: NOW - 3_600_000,
                payer_card_no: "6222000011112223".into(),
                payer_name: "张三".into(),
                kind: RefundKind::Normal,
                trade_amount: None,
            },
            &channel,
            &WorkingCalendar::default(),
            NOW,
        )
        .unwrap()
    }

    fn code(r: Result<()>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn identities_and_roles() {
        assert_eq!(
            Operator::parse(None, Some("ops")).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            Operator::parse(Some("alice"), Some(" ")).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            Operator::parse(Some("alice"), Some("boss"))
                .unwrap_err()
                .code,
            ErrorCode::PermissionDenied
        );
        let ops = Operator::parse(Some("alice"), Some("OPS")).unwrap();
        assert_eq!(ops.roles, vec![Role::Ops]);
        assert!(ops.authorize(ControlAction::Suspend).is_ok());
        assert!(ops.authorize(ControlAction::ConfirmSucceeded).is_ok());
        for denied in [
            ControlAction::ConfirmFailed,
            ControlAction::ForceFail,
            ControlAction::ReleaseHold,
            ControlAction::UpsertRiskRule,
            ControlAction::Hold,
        ] {
            assert_eq!(
                ops.authorize(denied).unwrap_err().code,
                ErrorCode::PermissionDenied,
                "{denied}"
            );
        }
        let risk = Operator::parse(Some("rita"), Some("risk")).unwrap();
        assert!(risk.authorize(ControlAction::RejectHold).is_ok());
        assert!(risk.authorize(ControlAction::Terminate).is_err());
        let fin = Operator::parse(Some("fred"), Some("finance")).unwrap();
        assert!(fin.authorize(ControlAction::ForceFail).is_ok());
        assert!(fin.authorize(ControlAction::Resume).is_err());
    }

    #[test]
    fn holds_block_until_decided() {
        let mut o = order(vec![]);
        assert!(o.is_due_for_interface());
        o.hold("r1", "amount above").unwrap();
        assert!(o.is_blocked() && !o.is_due_for_interface());
        let mut released = o.clone();
        released.release_hold().unwrap();
        assert!(released.is_due_for_interface());
        assert_eq!(
            code(released.release_hold()),
            ErrorCode::InvalidStateTransition
        );
        let mut rejected = o.clone();
        rejected.reject_hold("fraud", "risk: rita", NOW).unwrap();
        assert_eq!(rejected.refund_status, RefundStatus::Failed);
        assert_eq!(rejected.hold_status, Some(HoldStatus::Rejected));
        assert!(rejected.reason.contains("rejected by risk review"));
        assert_eq!(rejected.attempts[0].outcome, AttemptOutcome::Failed);
        assert_eq!(
            code(o.force_fail("x", "s", NOW)),
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn suspend_terminate_force_fail_by_state() {
        let mut o = order(vec![]);
        o.suspend().unwrap();
        assert!(!o.is_due_for_interface());
        assert_eq!(code(o.suspend()), ErrorCode::InvalidStateTransition);
        o.resume().unwrap();
        assert_eq!(code(o.resume()), ErrorCode::InvalidStateTransition);
        let mut t = o.clone();
        t.terminate("merchant asked", "ops: alice", NOW).unwrap();
        assert_eq!(t.refund_status, RefundStatus::Failed);
        assert_eq!(
            code(t.terminate("again", "s", NOW)),
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(code(t.suspend()), ErrorCode::InvalidStateTransition);

        // Submitted: no suspend, no terminate; finance may force-fail.
        o.submit_accepted("B1", NOW, NOW + 1).unwrap();
        let e = o.suspend().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidStateTransition);
        assert!(
            e.message.contains("submit status SUBMITTED"),
            "{}",
            e.message
        );
        assert_eq!(
            code(o.terminate("x", "s", NOW)),
            ErrorCode::InvalidStateTransition
        );
        // No answer of the bank says it failed: it may still pay; refused.
        let e = o
            .force_fail("merchant insists", "finance: fred", NOW)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BankMayHavePaid);
        assert!(e.message.contains("submitted"), "{}", e.message);
        let mut paid = o.clone();
        paid.bank_status = Some(BankStatus::Succeeded);
        assert_eq!(
            code(paid.force_fail("x", "s", NOW)),
            ErrorCode::BankMayHavePaid
        );
        o.bank_status = Some(BankStatus::Failed);
        o.force_fail("bank confirmed by phone", "finance: fred", NOW)
            .unwrap();
        assert_eq!(o.refund_status, RefundStatus::Failed);
        assert_eq!(o.attempts[0].outcome, AttemptOutcome::Failed);

        // A file attempt in a generated batch is handed over already.
        let mut f = order(vec![RefundMethod::FileUpload]);
        assert!(f.not_handed_over());
        f.assign_batch_row("b-1-1", NOW).unwrap();
        assert!(!f.not_handed_over());
        assert_eq!(code(f.suspend()), ErrorCode::InvalidStateTransition);
        assert_eq!(
            code(f.terminate("x", "s", NOW)),
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn confirm_only_submitted_file_and_offline() {
        let mut i = order(vec![]);
        i.submit_accepted("B1", NOW, NOW + 1).unwrap();
        assert_eq!(
            i.confirm_outcome(FinalStatus::Succeeded, "phone", "s", NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        let mut f = order(vec![RefundMethod::Offline]);
        assert_eq!(
            f.confirm_outcome(FinalStatus::Succeeded, "phone", "s", NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        f.assign_batch_row("b-1-1", NOW).unwrap();
        f.submit_accepted("", NOW, NOW + 1).unwrap();
        // The bank said it paid: nobody confirms a failure by hand.
        let mut paid = f.clone();
        paid.bank_status = Some(BankStatus::Succeeded);
        assert_eq!(
            paid.confirm_outcome(FinalStatus::Failed, "phone", "s", NOW)
                .unwrap_err()
                .code,
            ErrorCode::BankMayHavePaid
        );
        assert_eq!(
            f.confirm_outcome(FinalStatus::Succeeded, "phone", "s", NOW)
                .unwrap(),
            Outcome::Changed
        );
        assert_eq!(f.refund_status, RefundStatus::Succeeded);
        assert_eq!(f.attempts[0].outcome, AttemptOutcome::Succeeded);
    }

    fn rule(kind: RiskRuleKind) -> RiskRule {
        RiskRule {
            rule_id: "r1".into(),
            kind,
            channel: None,
            threshold: Some(Money::from_minor(5_000, Currency::Cny)),
            max_count: 2,
            window_minutes: 60,
            enabled: true,
            description: String::new(),
            updated_at_ms: 0,
        }
    }

    fn facts() -> RiskFacts {
        RiskFacts {
            channel: "CH1".into(),
            amount: Money::from_minor(10_000, Currency::Cny),
            trade_paid_at_ms: NOW - 2 * 3_600_000,
            now_ms: NOW,
            merchant_recent: vec![("r1".into(), 1)],
            card_recent: vec![("r1".into(), 2)],
        }
    }

    #[test]
    fn risk_rules_evaluate() {
        let f = facts();
        let amount = rule(RiskRuleKind::AmountAbove);
        assert!(amount.evaluate(&f).unwrap().contains("above the threshold"));
        let mut equal = f.clone();
        equal.amount = Money::from_minor(5_000, Currency::Cny);
        assert_eq!(
            amount.evaluate(&equal),
            None,
            "at the threshold is not above"
        );
        let other_channel = RiskRule {
            channel: Some("CH2".into()),
            ..amount.clone()
        };
        assert_eq!(other_channel.evaluate(&f), None);
        let disabled = RiskRule {
            enabled: false,
            ..amount.clone()
        };
        assert_eq!(disabled.evaluate(&f), None);
        // 1 earlier + the new one = 2, not more than 2.
        assert_eq!(rule(RiskRuleKind::MerchantVelocity).evaluate(&f), None);
        // 2 earlier + the new one = 3 > 2.
        assert!(rule(RiskRuleKind::CardVelocity).evaluate(&f).is_some());
        let mut no_card = f.clone();
        no_card.card_recent.clear();
        assert_eq!(rule(RiskRuleKind::CardVelocity).evaluate(&no_card), None);
        // Paid two hours ago: outside a 60-minute window, inside a 180-minute one.
        assert_eq!(rule(RiskRuleKind::SoonAfterPayment).evaluate(&f), None);
        let soon = RiskRule {
            window_minutes: 180,
            ..rule(RiskRuleKind::SoonAfterPayment)
        };
        assert!(soon.evaluate(&f).unwrap().contains("120 minutes after"));
        let (first, why) = evaluate_rules(
            &[
                RiskRule {
                    rule_id: "z".into(),
                    ..soon.clone()
                },
                amount.clone(),
            ],
            &f,
        )
        .unwrap();
        assert_eq!(first, "r1");
        assert!(why.contains("rule r1") && why.contains("rule z"));
    }

    #[test]
    fn risk_rules_validate() {
        assert!(rule(RiskRuleKind::AmountAbove).validate().is_ok());
        let no_threshold = RiskRule {
            threshold: None,
            ..rule(RiskRuleKind::AmountAbove)
        };
        assert!(no_threshold
            .validate()
            .unwrap_err()
            .message
            .starts_with("threshold_amount"));
        let zero = RiskRule {
            max_count: 0,
            ..rule(RiskRuleKind::MerchantVelocity)
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .message
            .starts_with("max_count"));
        let no_window = RiskRule {
            window_minutes: 0,
            ..rule(RiskRuleKind::SoonAfterPayment)
        };
        assert!(no_window
            .validate()
            .unwrap_err()
            .message
            .starts_with("window_minutes"));
    }
}
