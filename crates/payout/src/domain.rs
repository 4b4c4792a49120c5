//! The payout center's pure part: holder names, the payout state machine, how bank callbacks apply
//! (monotone by sequence), and the status updates reported to the refund center. Card numbers are
//! the kernel's [`CardNumber`] (validated, masked, never printed in full).

use sha2::{Digest, Sha256};
pub use tuikuan_kernel::card::CardNumber;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};

/// The longest holder name accepted, in characters.
pub const MAX_HOLDER_NAME_CHARS: usize = 64;

/// Checks a cardholder's name: required, at most 64 characters, no control characters. Returns
/// it trimmed.
pub fn validate_holder_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::field("holder_name", "is required"));
    }
    if name.chars().count() > MAX_HOLDER_NAME_CHARS {
        return Err(Error::field(
            "holder_name",
            format!("longer than {MAX_HOLDER_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::field(
            "holder_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// A payout's status.
///
/// ```text
/// CREATED -> SENT -> PAID -> RETURNED
///              \---> FAILED
/// CREATED -> FAILED            (the bank refused synchronously)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    Created,
    Sent,
    Paid,
    Failed,
    Returned,
}

impl PayoutStatus {
    pub const ALL: &'static [PayoutStatus] = &[
        PayoutStatus::Created,
        PayoutStatus::Sent,
        PayoutStatus::Paid,
        PayoutStatus::Failed,
        PayoutStatus::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Created => "CREATED",
            PayoutStatus::Sent => "SENT",
            PayoutStatus::Paid => "PAID",
            PayoutStatus::Failed => "FAILED",
            PayoutStatus::Returned => "RETURNED",
        }
    }

    pub fn parse(s: &str) -> Option<PayoutStatus> {
        PayoutStatus::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    /// The order statuses move in; transitions only go up.
    fn rank(self) -> u8 {
        match self {
            PayoutStatus::Created => 0,
            PayoutStatus::Sent => 1,
            PayoutStatus::Paid | PayoutStatus::Failed => 2,
            PayoutStatus::Returned => 3,
        }
    }

    pub fn can_transition(self, to: PayoutStatus) -> bool {
        use PayoutStatus::*;
        matches!(
            (self, to),
            (Created, Sent) | (Created, Failed) | (Sent, Paid) | (Sent, Failed) | (Paid, Returned)
        )
    }

    /// Checks one transition against the state machine.
    pub fn transition(self, to: PayoutStatus) -> Result<PayoutStatus> {
        if self.can_transition(to) {
            Ok(to)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("payout cannot go from {} to {}", self.as_str(), to.as_str()),
            ))
        }
    }

    /// No further change except a PAID payout's return.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PayoutStatus::Paid | PayoutStatus::Failed | PayoutStatus::Returned
        )
    }
}

/// A payout request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayout {
    pub payout_id: String,
    pub refund_id: String,
    pub channel: String,
    pub card: CardNumber,
    pub holder_name: String,
    pub amount: Money,
}

impl NewPayout {
    pub fn new(
        payout_id: &str,
        refund_id: &str,
        channel: &str,
        card_no: &str,
        holder_name: &str,
        amount: Money,
    ) -> Result<NewPayout> {
        validate_external_id(payout_id, "payout_id")?;
        validate_external_id(refund_id, "refund_id")?;
        validate_external_id(channel, "channel")?;
        let card = CardNumber::parse(card_no)?;
        let holder_name = validate_holder_name(holder_name)?;
        if !amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                "amount: must be greater than zero",
            ));
        }
        Ok(NewPayout {
            payout_id: payout_id.to_string(),
            refund_id: refund_id.to_string(),
            channel: channel.to_string(),
            card,
            holder_name,
            amount,
        })
    }

    /// What makes two requests with the same payout_id "the same request".
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.payout_id.as_str(),
            &self.refund_id,
            &self.channel,
            self.card.expose(),
            &self.holder_name,
            &self.amount.to_minor().to_string(),
            self.amount.currency().code(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// A stored payout. Holds the full card number (the bank needs it); `Debug` masks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub payout_id: String,
    pub refund_id: String,
    pub channel: String,
    pub card: CardNumber,
    pub holder_name: String,
    pub amount: Money,
    pub status: PayoutStatus,
    pub bank_ref: String,
    pub reason: String,
    /// The highest bank callback sequence applied.
    pub callback_seq: i64,
    pub fingerprint: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A bank callback, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankCallback {
    pub payout_id: String,
    pub bank_ref: String,
    /// SENT (still processing), PAID, FAILED or RETURNED.
    pub status: PayoutStatus,
    pub reason: String,
    pub sequence: i64,
}

/// What a callback does to a payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackEffect {
    /// Nothing: a duplicate, a stale (lower sequence) or a backwards callback.
    Ignore(&'static str),
    /// Move to `status` (possibly through SENT first, if the callback overtook the send result).
    Apply { status: PayoutStatus },
}

/// Decides a callback's effect: monotone by sequence, and only along the state machine. A
/// callback never moves a payout backwards.
pub fn callback_effect(current: &Payout, cb: &BankCallback) -> Result<CallbackEffect> {
    if !current.bank_ref.is_empty() && !cb.bank_ref.is_empty() && current.bank_ref != cb.bank_ref {
        return Err(Error::field(
            "bank_ref",
            format!("{} does not match the payout's bank reference", cb.bank_ref),
        ));
    }
    if cb.sequence <= current.callback_seq {
        return Ok(CallbackEffect::Ignore("stale or duplicate sequence"));
    }
    if cb.status == current.status {
        return Ok(CallbackEffect::Ignore("no change"));
    }
    if cb.status.rank() <= current.status.rank() {
        return Ok(CallbackEffect::Ignore("would move the payout backwards"));
    }
    let path_ok = current.status.can_transition(cb.status)
        || (current.status == PayoutStatus::Created
            && PayoutStatus::Sent.can_transition(cb.status));
    if !path_ok {
        return Ok(CallbackEffect::Ignore("not allowed by the state machine"));
    }
    Ok(CallbackEffect::Apply { status: cb.status })
}

/// A status change of a payout, to be reported to the refund center (`RefundService.PayoutUpdate`)
/// through the transactional outbox: written in the same transaction as the change, delivered
/// after commit, in `sequence` order per payout, retried until the refund center answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutUpdate {
    pub payout_id: String,
    pub refund_id: String,
    /// From 1, increasing by one per status change of the payout.
    pub sequence: i64,
    /// SENT, PAID, FAILED or RETURNED.
    pub status: PayoutStatus,
    pub reason: String,
    pub bank_ref: String,
    pub created_at_ms: i64,
    /// `None` until the refund center answered.
    pub delivered_at_ms: Option<i64>,
    /// Failed delivery attempts so far.
    pub attempts: i32,
    pub last_error: String,
}

/// Whether a change to `status` is reported to the refund center (every change is: CREATED is
/// where payouts start, not a change).
pub fn is_reported(status: PayoutStatus) -> bool {
    status != PayoutStatus::Created
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISA: &str = "4111 1111 1111 1111";

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    #[test]
    fn debug_of_a_payout_never_shows_the_full_card() {
        let p = NewPayout::new("po-1", "rf-1", "quick", VISA, " Li Lei ", cny("10")).unwrap();
        assert_eq!(p.holder_name, "Li Lei");
        let shown = format!("{p:?}");
        assert!(!shown.contains("4111111111111111") && shown.contains("**** 1111"));
    }

    #[test]
    fn holder_names() {
        assert_eq!(
            validate_holder_name("").unwrap_err().message,
            "holder_name: is required"
        );
        assert!(validate_holder_name(&"名".repeat(64)).is_ok());
        assert!(validate_holder_name(&"名".repeat(65)).is_err());
        assert!(validate_holder_name("a\nb").is_err());
    }

    #[test]
    fn fingerprint_covers_the_content() {
        let a = NewPayout::new("po-1", "rf-1", "quick", VISA, "Li Lei", cny("10")).unwrap();
        let b = NewPayout::new(
            "po-1",
            "rf-1",
            "quick",
            "4111111111111111",
            "Li Lei",
            cny("10.00"),
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = NewPayout::new(
            "po-1",
            "rf-1",
            "quick",
            "5500005555555559",
            "Li Lei",
            cny("10"),
        )
        .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn transition_table() {
        let mut table = String::new();
        for from in PayoutStatus::ALL {
            for to in PayoutStatus::ALL {
                if from.can_transition(*to) {
                    table.push_str(&format!("{} -> {}\n", from.as_str(), to.as_str()));
                }
            }
        }
        assert_eq!(
            table,
            "CREATED -> SENT\nCREATED -> FAILED\nSENT -> PAID\nSENT -> FAILED\nPAID -> RETURNED\n"
        );
        // Monotone: every allowed transition goes up in rank.
        for from in PayoutStatus::ALL {
            for to in PayoutStatus::ALL {
                if from.can_transition(*to) {
                    assert!(to.rank() > from.rank());
                }
            }
        }
        assert_eq!(
            PayoutStatus::Paid
                .transition(PayoutStatus::Failed)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        assert!(PayoutStatus::Failed.is_final() && !PayoutStatus::Sent.is_final());
    }

    fn payout(status: PayoutStatus, seq: i64) -> Payout {
        let n = NewPayout::new("po-1", "rf-1", "quick", VISA, "Li Lei", cny("10")).unwrap();
        Payout {
            fingerprint: n.fingerprint(),
            payout_id: n.payout_id,
            refund_id: n.refund_id,
            channel: n.channel,
            card: n.card,
            holder_name: n.holder_name,
            amount: n.amount,
            status,
            bank_ref: "BK1".into(),
            reason: String::new(),
            callback_seq: seq,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn cb(status: PayoutStatus, sequence: i64) -> BankCallback {
        BankCallback {
            payout_id: "po-1".into(),
            bank_ref: "BK1".into(),
            status,
            reason: String::new(),
            sequence,
        }
    }

    #[test]
    fn callbacks_are_monotone() {
        use PayoutStatus::*;
        let apply = |s| CallbackEffect::Apply { status: s };
        assert_eq!(
            callback_effect(&payout(Sent, 0), &cb(Paid, 2)).unwrap(),
            apply(Paid)
        );
        assert_eq!(
            callback_effect(&payout(Created, 0), &cb(Failed, 2)).unwrap(),
            apply(Failed)
        );
        assert_eq!(
            callback_effect(&payout(Created, 0), &cb(Paid, 2)).unwrap(),
            apply(Paid)
        );
        assert_eq!(
            callback_effect(&payout(Paid, 2), &cb(Returned, 3)).unwrap(),
            apply(Returned)
        );
        // Duplicate, stale, backwards.
        assert!(matches!(
            callback_effect(&payout(Paid, 2), &cb(Paid, 2)).unwrap(),
            CallbackEffect::Ignore(_)
        ));
        assert!(matches!(
            callback_effect(&payout(Paid, 2), &cb(Sent, 1)).unwrap(),
            CallbackEffect::Ignore(_)
        ));
        assert!(matches!(
            callback_effect(&payout(Paid, 2), &cb(Failed, 5)).unwrap(),
            CallbackEffect::Ignore(_)
        ));
        assert!(matches!(
            callback_effect(&payout(Failed, 2), &cb(Returned, 3)).unwrap(),
            CallbackEffect::Ignore(_)
        ));
        assert!(matches!(
            callback_effect(&payout(Sent, 0), &cb(Sent, 1)).unwrap(),
            CallbackEffect::Ignore(_)
        ));
        let mut wrong = cb(Paid, 2);
        wrong.bank_ref = "BK2".into();
        assert!(callback_effect(&payout(Sent, 0), &wrong)
            .unwrap_err()
            .message
            .starts_with("bank_ref: "));
    }
}
