//! The clearing center's pure rules: merchant fee policies, settlements and their fee, the refund
//! debit's fee share (cumulative, so partial refunds never lose or create a cent), the debit state
//! machine, and the postings each step asks accounting for.
//!
//! Architecture invariant: this module knows nothing of storage or the wire. It uses the ledger's
//! pure domain (account keys and sides) from `tuikuan_accounting::domain`.

use std::fmt;

use rust_decimal::Decimal;
use tuikuan_accounting::domain::{AccountKey, AccountType, Side};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

/// The highest fee rate a merchant may have (20%).
pub const MAX_FEE_RATE: &str = "0.2";
/// The most decimals a fee rate may have.
pub const MAX_FEE_RATE_DECIMALS: u32 = 6;
/// The longest reason kept with a reversal.
pub const MAX_REASON_LEN: usize = 512;

/// Whether the merchant's fee is given back when a payment is refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeeRefundPolicy {
    /// In proportion to the refunded amount (the platform bears it).
    Proportional,
    /// The fee is kept; the merchant bears the whole refund.
    None,
}

impl FeeRefundPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FeeRefundPolicy::Proportional => "PROPORTIONAL",
            FeeRefundPolicy::None => "NONE",
        }
    }

    pub fn parse(s: &str) -> Option<FeeRefundPolicy> {
        match s {
            "PROPORTIONAL" => Some(FeeRefundPolicy::Proportional),
            "NONE" => Some(FeeRefundPolicy::None),
            _ => None,
        }
    }
}

/// Parses a fee rate: a plain decimal string in `[0, 0.2]` with at most 6 decimals.
pub fn parse_fee_rate(value: &str, field: &str) -> Result<Decimal, Error> {
    if value.is_empty() {
        return Err(Error::field(field, "is required"));
    }
    if value.len() > 20 || !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(Error::field(
            field,
            format!("{value:?} is not a decimal rate"),
        ));
    }
    let rate = Decimal::from_str_exact(value)
        .map_err(|_| Error::field(field, format!("{value:?} is not a decimal rate")))?
        .normalize();
    let max = Decimal::from_str_exact(MAX_FEE_RATE).unwrap_or(Decimal::ZERO);
    if rate.is_sign_negative() || rate > max {
        return Err(Error::field(
            field,
            format!("must be between 0 and {MAX_FEE_RATE}"),
        ));
    }
    if rate.scale() > MAX_FEE_RATE_DECIMALS {
        return Err(Error::field(
            field,
            format!("at most {MAX_FEE_RATE_DECIMALS} decimals"),
        ));
    }
    Ok(rate)
}

/// A merchant's fee terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPolicy {
    pub merchant_id: String,
    /// In `[0, 0.2]`, e.g. 0.006 for 0.6%.
    pub fee_rate: Decimal,
    pub fee_refund: FeeRefundPolicy,
}

impl MerchantPolicy {
    /// The fee on a payment: amount × rate, half-even to the minor unit.
    pub fn fee_on(&self, amount: &Money) -> Money {
        amount.times_rate(self.fee_rate)
    }
}

/// Whether a settlement's posting is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementStatus {
    /// Recorded; the `settle:` posting is not confirmed yet (a retry or recovery finishes it).
    Pending,
    Posted,
}

impl SettlementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementStatus::Pending => "PENDING",
            SettlementStatus::Posted => "POSTED",
        }
    }

    pub fn parse(s: &str) -> Option<SettlementStatus> {
        match s {
            "PENDING" => Some(SettlementStatus::Pending),
            "POSTED" => Some(SettlementStatus::Posted),
            _ => None,
        }
    }
}

/// A request to settle a succeeded payment, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    pub trade_id: String,
    pub merchant_id: String,
    pub channel: String,
    pub amount: Money,
}

/// A settled payment and the refund debits taken against it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub trade_id: String,
    pub merchant_id: String,
    pub channel: String,
    pub amount: Money,
    pub fee: Money,
    /// The merchant's fee-refund policy when the payment settled (it governs refunds of it).
    pub fee_refund: FeeRefundPolicy,
    pub debited_minor: i64,
    pub fee_refunded_minor: i64,
    pub posting_id: Option<String>,
    pub status: SettlementStatus,
}

impl Settlement {
    /// A new, pending settlement under `policy`.
    pub fn new(request: &SettleRequest, policy: &MerchantPolicy) -> Settlement {
        Settlement {
            trade_id: request.trade_id.clone(),
            merchant_id: request.merchant_id.clone(),
            channel: request.channel.clone(),
            amount: request.amount,
            fee: policy.fee_on(&request.amount),
            fee_refund: policy.fee_refund,
            debited_minor: 0,
            fee_refunded_minor: 0,
            posting_id: None,
            status: SettlementStatus::Pending,
        }
    }

    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// What the merchant is credited: amount − fee.
    pub fn net(&self) -> Money {
        Money::from_minor(
            self.amount.to_minor() - self.fee.to_minor(),
            self.currency(),
        )
    }

    /// Whether a repeat of SettlePayment carries the same content.
    pub fn matches(&self, request: &SettleRequest) -> bool {
        self.trade_id == request.trade_id
            && self.merchant_id == request.merchant_id
            && self.channel == request.channel
            && self.amount == request.amount
    }

    /// The accounting idempotency key of the settlement posting.
    pub fn request_id(&self) -> String {
        settle_request_id(&self.trade_id)
    }

    /// Dr CHANNEL_RESERVE(channel) amount; Cr MERCHANT_SETTLEMENT(merchant) net; Cr FEE_INCOME fee.
    pub fn postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::channel_reserve(&self.channel, c),
                Side::Debit,
                self.amount,
            ),
            (
                AccountKey::merchant_settlement(&self.merchant_id, c),
                Side::Credit,
                self.net(),
            ),
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Credit,
                self.fee,
            ),
        ])
    }

    /// Reserves `amount` of this trade for a refund debit: checks the cap and computes the fee
    /// share. Returns the new (debited, fee_refunded) counters and the share, in minor units.
    pub fn reserve(&self, amount: &Money) -> Result<Reservation, Error> {
        if amount.currency() != self.currency() {
            return Err(Error::new(
                ErrorCode::CurrencyMismatch,
                format!(
                    "currency: the payment was in {}, not {}",
                    self.currency(),
                    amount.currency()
                ),
            ));
        }
        let total = self.amount.to_minor();
        let debited = self.debited_minor + amount.to_minor();
        if debited > total {
            return Err(Error::new(
                ErrorCode::RefundExceedsPaid,
                format!(
                    "trade {} paid {}, {} is already debited, {} more is too much",
                    self.trade_id,
                    self.amount,
                    Money::from_minor(self.debited_minor, self.currency()),
                    amount
                ),
            ));
        }
        let fee_share_minor = fee_share(
            self.fee_refund,
            self.fee.to_minor(),
            total,
            self.debited_minor,
            self.fee_refunded_minor,
            amount.to_minor(),
        );
        Ok(Reservation {
            debited_minor: debited,
            fee_refunded_minor: self.fee_refunded_minor + fee_share_minor,
            fee_share_minor,
        })
    }
}

/// The outcome of [`Settlement::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub debited_minor: i64,
    pub fee_refunded_minor: i64,
    pub fee_share_minor: i64,
}

/// The fee given back with a refund of `amount_minor`, all in minor units.
///
/// Cumulative: the fee refunded after this debit is `round_half_even(fee × debited_after / total)`,
/// and this debit's share is that minus what was refunded before. The shares of refunds that add
/// up to the whole payment therefore add up to exactly the fee. Clamped to
/// `[0, min(amount, fee − fee_refunded)]`.
pub fn fee_share(
    policy: FeeRefundPolicy,
    fee_minor: i64,
    total_minor: i64,
    debited_before_minor: i64,
    fee_refunded_before_minor: i64,
    amount_minor: i64,
) -> i64 {
    if policy == FeeRefundPolicy::None || fee_minor <= 0 || total_minor <= 0 {
        return 0;
    }
    let after = Decimal::from(fee_minor) * Decimal::from(debited_before_minor + amount_minor)
        / Decimal::from(total_minor);
    let cumulative = after
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .try_into()
        .unwrap_or(fee_minor);
    let share: i64 = cumulative - fee_refunded_before_minor;
    let ceiling = (fee_minor - fee_refunded_before_minor)
        .min(amount_minor)
        .max(0);
    share.clamp(0, ceiling)
}

/// Where a refund debit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebitStatus {
    /// Recorded and reserved against the trade; the debit posting is not confirmed yet.
    Pending,
    /// The money sits in refund-in-transit.
    Debited,
    /// Final: the merchant could not cover it; nothing was posted.
    Rejected,
    /// Reversal under way.
    Reversing,
    /// Final: the money went back where it was debited from.
    Reversed,
    /// Completion under way.
    Completing,
    /// The refund succeeded and the money left through the channel reserve. Final, except that
    /// the bank may return a payout afterwards (退票): COMPLETED → RETURNING → RETURNED.
    Completed,
    /// Return under way (a retry or recovery finishes it).
    Returning,
    /// Final: the bank returned the payout; the money went back where it was debited from.
    Returned,
}

impl DebitStatus {
    pub const ALL: [DebitStatus; 9] = [
        DebitStatus::Pending,
        DebitStatus::Debited,
        DebitStatus::Rejected,
        DebitStatus::Reversing,
        DebitStatus::Reversed,
        DebitStatus::Completing,
        DebitStatus::Completed,
        DebitStatus::Returning,
        DebitStatus::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DebitStatus::Pending => "PENDING",
            DebitStatus::Debited => "DEBITED",
            DebitStatus::Rejected => "REJECTED",
            DebitStatus::Reversing => "REVERSING",
            DebitStatus::Reversed => "REVERSED",
            DebitStatus::Completing => "COMPLETING",
            DebitStatus::Completed => "COMPLETED",
            DebitStatus::Returning => "RETURNING",
            DebitStatus::Returned => "RETURNED",
        }
    }

    pub fn parse(s: &str) -> Option<DebitStatus> {
        DebitStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// No move leaves these. COMPLETED is not among them: a returned payout still moves it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DebitStatus::Rejected | DebitStatus::Reversed | DebitStatus::Returned
        )
    }

    /// Whether the money is back with the merchant (the trade's counters are given back on
    /// entering these states, so the amount can be refunded again).
    pub fn gives_back(self) -> bool {
        matches!(
            self,
            DebitStatus::Rejected | DebitStatus::Reversed | DebitStatus::Returned
        )
    }

    /// The state machine: which moves are allowed.
    pub fn can_move_to(self, to: DebitStatus) -> bool {
        use DebitStatus::*;
        matches!(
            (self, to),
            (Pending, Debited)
                | (Pending, Rejected)
                | (Debited, Reversing)
                | (Debited, Completing)
                | (Reversing, Reversed)
                | (Completing, Completed)
                | (Completed, Returning)
                | (Returning, Returned)
        )
    }

    /// Checks a move against the state machine.
    pub fn transition(self, to: DebitStatus) -> Result<DebitStatus, Error> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("a debit cannot move from {self} to {to}"),
            ))
        }
    }
}

impl fmt::Display for DebitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to debit the merchant for a refund, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitRequest {
    pub refund_id: String,
    pub trade_id: String,
    pub merchant_id: String,
    pub amount: Money,
}

/// A refund debit (扣账).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    pub refund_id: String,
    pub trade_id: String,
    pub merchant_id: String,
    pub channel: String,
    /// What the customer gets back.
    pub amount: Money,
    /// The merchant's part of it.
    pub merchant_amount: Money,
    /// The platform's part: the fee refunded by policy.
    pub fee_amount: Money,
    pub status: DebitStatus,
    pub debit_posting_id: Option<String>,
    pub final_posting_id: Option<String>,
    /// Why it was reversed or rejected.
    pub reason: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Debit {
    /// A new pending debit reserved against `settlement` with the given fee share.
    pub fn new(
        request: &DebitRequest,
        settlement: &Settlement,
        fee_share_minor: i64,
        now_ms: i64,
    ) -> Debit {
        let c = request.amount.currency();
        Debit {
            refund_id: request.refund_id.clone(),
            trade_id: request.trade_id.clone(),
            merchant_id: request.merchant_id.clone(),
            channel: settlement.channel.clone(),
            amount: request.amount,
            merchant_amount: Money::from_minor(request.amount.to_minor() - fee_share_minor, c),
            fee_amount: Money::from_minor(fee_share_minor, c),
            status: DebitStatus::Pending,
            debit_posting_id: None,
            final_posting_id: None,
            reason: String::new(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// Whether a repeat of RefundDebit carries the same content.
    pub fn matches(&self, request: &DebitRequest) -> bool {
        self.refund_id == request.refund_id
            && self.trade_id == request.trade_id
            && self.merchant_id == request.merchant_id
            && self.amount == request.amount
    }

    pub fn debit_request_id(&self) -> String {
        format!("refund-debit:{}", self.refund_id)
    }

    pub fn complete_request_id(&self) -> String {
        format!("refund-complete:{}", self.refund_id)
    }

    pub fn reverse_request_id(&self) -> String {
        format!("refund-reverse:{}", self.refund_id)
    }

    pub fn return_request_id(&self) -> String {
        format!("refund-return:{}", self.refund_id)
    }

    /// Dr MERCHANT_SETTLEMENT merchant part; Dr FEE_INCOME fee part; Cr REFUND_IN_TRANSIT amount.
    pub fn debit_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::merchant_settlement(&self.merchant_id, c),
                Side::Debit,
                self.merchant_amount,
            ),
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Debit,
                self.fee_amount,
            ),
            (
                AccountKey::platform(AccountType::RefundInTransit, c),
                Side::Credit,
                self.amount,
            ),
        ])
    }

    /// Dr REFUND_IN_TRANSIT amount; Cr CHANNEL_RESERVE(channel) amount: the money left.
    pub fn complete_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::platform(AccountType::RefundInTransit, c),
                Side::Debit,
                self.amount,
            ),
            (
                AccountKey::channel_reserve(&self.channel, c),
                Side::Credit,
                self.amount,
            ),
        ])
    }

    /// Dr REFUND_IN_TRANSIT amount; Cr MERCHANT_SETTLEMENT merchant part; Cr FEE_INCOME fee part.
    pub fn reverse_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::platform(AccountType::RefundInTransit, c),
                Side::Debit,
                self.amount,
            ),
            (
                AccountKey::merchant_settlement(&self.merchant_id, c),
                Side::Credit,
                self.merchant_amount,
            ),
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Credit,
                self.fee_amount,
            ),
        ])
    }
}

impl Debit {
    /// The returned payout (退票): Dr CHANNEL_RESERVE(channel) amount (the money came back to
    /// the reserve); Cr MERCHANT_SETTLEMENT merchant part; Cr FEE_INCOME fee part.
    pub fn return_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::channel_reserve(&self.channel, c),
                Side::Debit,
                self.amount,
            ),
            (
                AccountKey::merchant_settlement(&self.merchant_id, c),
                Side::Credit,
                self.merchant_amount,
            ),
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Credit,
                self.fee_amount,
            ),
        ])
    }
}

/// The accounting idempotency key of a payment's settlement posting.
pub fn settle_request_id(trade_id: &str) -> String {
    format!("settle:{trade_id}")
}

fn non_zero(entries: Vec<(AccountKey, Side, Money)>) -> Vec<(AccountKey, Side, Money)> {
    entries.into_iter().filter(|e| !e.2.is_zero()).collect()
}

// ---------- adjustments ----------

/// The longest memo kept with an adjustment.
pub const MAX_MEMO_LEN: usize = 512;

/// Which way an adjustment moves money between a channel's reserve and its suspense account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentKind {
    /// The bank paid out what the platform has no refund for: Dr SUSPENSE(channel), Cr
    /// CHANNEL_RESERVE(channel).
    BankToSuspense,
    /// The reverse: Dr CHANNEL_RESERVE(channel), Cr SUSPENSE(channel).
    SuspenseToBank,
}

impl AdjustmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentKind::BankToSuspense => "BANK_TO_SUSPENSE",
            AdjustmentKind::SuspenseToBank => "SUSPENSE_TO_BANK",
        }
    }

    pub fn parse(s: &str) -> Option<AdjustmentKind> {
        match s {
            "BANK_TO_SUSPENSE" => Some(AdjustmentKind::BankToSuspense),
            "SUSPENSE_TO_BANK" => Some(AdjustmentKind::SuspenseToBank),
            _ => None,
        }
    }
}

/// A reconciliation correction (差错处理, "bank wins"), validated. Idempotent by
/// `adjustment_id`: the same id with other content is a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub adjustment_id: String,
    pub kind: AdjustmentKind,
    pub channel: String,
    pub amount: Money,
    pub memo: String,
    /// Set once accounting confirmed the posting; `None` while it is pending (a retry or the
    /// recovery job posts it under the same key).
    pub posting_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Adjustment {
    /// Validates the parts that are not ids (those are checked on receipt).
    pub fn new(
        adjustment_id: &str,
        kind: AdjustmentKind,
        channel: &str,
        amount: Money,
        memo: &str,
        now_ms: i64,
    ) -> Result<Adjustment, Error> {
        if !amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                "amount: must be greater than zero",
            ));
        }
        if memo.chars().count() > MAX_MEMO_LEN {
            return Err(Error::field(
                "memo",
                format!("longer than {MAX_MEMO_LEN} characters"),
            ));
        }
        Ok(Adjustment {
            adjustment_id: adjustment_id.to_string(),
            kind,
            channel: channel.to_string(),
            amount,
            memo: memo.to_string(),
            posting_id: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        })
    }

    /// Whether a repeat carries the same content (ids, kind, channel, amount, memo).
    pub fn same_content(&self, other: &Adjustment) -> bool {
        self.adjustment_id == other.adjustment_id
            && self.kind == other.kind
            && self.channel == other.channel
            && self.amount == other.amount
            && self.memo == other.memo
    }

    /// The accounting idempotency key: `adjust:{adjustment_id}`.
    pub fn request_id(&self) -> String {
        format!("adjust:{}", self.adjustment_id)
    }

    pub fn postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.amount.currency();
        let suspense = AccountKey {
            account_type: AccountType::Suspense,
            owner: self.channel.clone(),
            currency: c,
        };
        let reserve = AccountKey::channel_reserve(&self.channel, c);
        let (debit, credit) = match self.kind {
            AdjustmentKind::BankToSuspense => (suspense, reserve),
            AdjustmentKind::SuspenseToBank => (reserve, suspense),
        };
        non_zero(vec![
            (debit, Side::Debit, self.amount),
            (credit, Side::Credit, self.amount),
        ])
    }
}

/// What a caller wants from a debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// RefundDebit: the debit posted (or rejected).
    Debit,
    /// ReverseDebit: the money back where it came from.
    Reverse,
    /// CompleteDebit: the money out through the channel reserve.
    Complete,
    /// ReturnDebit: a completed refund's payout came back; the money back to the merchant.
    Return,
}

/// The next step towards a goal from a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do: return the debit.
    Done,
    /// Fail with this error.
    Fail(Error),
    /// Post (or re-post) `refund-debit:`.
    PostDebit,
    /// Move DEBITED → REVERSING.
    BeginReverse,
    /// Post (or re-post) `refund-reverse:` and finish the reversal.
    PostReverse,
    /// Move DEBITED → COMPLETING.
    BeginComplete,
    /// Post (or re-post) `refund-complete:` and finish the completion.
    PostComplete,
    /// Move COMPLETED → RETURNING.
    BeginReturn,
    /// Post (or re-post) `refund-return:` and finish the return.
    PostReturn,
}

/// Decides the next step for `debit` towards `goal`. Pure; the service loops on it.
pub fn next_step(debit: &Debit, goal: Goal) -> Step {
    use DebitStatus::*;
    let not_active = || {
        Step::Fail(Error::new(
            ErrorCode::DebitNotActive,
            format!("debit of refund {} is {}", debit.refund_id, debit.status),
        ))
    };
    match (goal, debit.status) {
        // Only a completed refund can be returned; a pending debit is not posted for a return.
        (Goal::Return, Pending) => not_active(),
        (_, Pending) => Step::PostDebit,
        (Goal::Debit, Rejected) => Step::Fail(Error::new(
            ErrorCode::InsufficientBalance,
            if debit.reason.is_empty() {
                format!(
                    "merchant {} could not cover refund {}",
                    debit.merchant_id, debit.refund_id
                )
            } else {
                debit.reason.clone()
            },
        )),
        (Goal::Debit, _) => Step::Done,
        (Goal::Reverse, Debited) => Step::BeginReverse,
        (Goal::Reverse, Reversing) => Step::PostReverse,
        (Goal::Reverse, Reversed | Rejected) => Step::Done,
        (Goal::Reverse, Completing | Completed | Returning | Returned) => not_active(),
        (Goal::Complete, Debited) => Step::BeginComplete,
        (Goal::Complete, Completing) => Step::PostComplete,
        // The completion happened; a later return does not undo that answer.
        (Goal::Complete, Completed | Returning | Returned) => Step::Done,
        (Goal::Complete, Reversing | Reversed | Rejected) => not_active(),
        (Goal::Return, Completed) => Step::BeginReturn,
        (Goal::Return, Returning) => Step::PostReturn,
        (Goal::Return, Returned) => Step::Done,
        (Goal::Return, Debited | Rejected | Reversing | Reversed | Completing) => not_active(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    fn policy(rate: &str, fee_refund: FeeRefundPolicy) -> MerchantPolicy {
        MerchantPolicy {
            merchant_id: "m1".into(),
            fee_rate: parse_fee_rate(rate, "fee_rate").unwrap(),
            fee_refund,
        }
    }

    fn settlement(amount: &str, rate: &str, fee_refund: FeeRefundPolicy) -> Settlement {
        Settlement::new(
            &SettleRequest {
                trade_id: "t1".into(),
                merchant_id: "m1".into(),
                channel: "netbank".into(),
                amount: cny(amount),
            },
            &policy(rate, fee_refund),
        )
    }

    #[test]
    fn fee_rates_are_validated() {
        assert!(parse_fee_rate("0", "r").is_ok());
        assert!(parse_fee_rate("0.2", "r").is_ok());
        assert!(parse_fee_rate("0.006", "r").is_ok());
        for bad in [
            "",
            "0.2000001",
            "0.21",
            "-0.1",
            "1",
            "abc",
            "1e-3",
            "0.0000001",
        ] {
            assert_eq!(
                parse_fee_rate(bad, "r").unwrap_err().code,
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn settlement_fee_and_postings() {
        let s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        assert_eq!(s.fee.to_minor(), 60);
        assert_eq!(s.net().to_minor(), 9940);
        let p = s.postings();
        assert_eq!(p.len(), 3);
        // Half-even: 0.125 → 0.12
        let s = settlement("12.5", "0.01", FeeRefundPolicy::None);
        assert_eq!(s.fee.to_minor(), 12);
        let s = settlement("10", "0", FeeRefundPolicy::None);
        assert_eq!(s.postings().len(), 2, "zero fee entry omitted");
    }

    #[test]
    fn proportional_fee_shares_add_up_to_the_fee() {
        let mut s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let mut shares = Vec::new();
        for part in ["33.33", "33.33", "33.34"] {
            let r = s.reserve(&cny(part)).unwrap();
            shares.push(r.fee_share_minor);
            s.debited_minor = r.debited_minor;
            s.fee_refunded_minor = r.fee_refunded_minor;
        }
        assert_eq!(shares, vec![20, 20, 20]);
        assert_eq!(s.fee_refunded_minor, 60);
        let err = s.reserve(&cny("0.01")).unwrap_err();
        assert_eq!(err.code, ErrorCode::RefundExceedsPaid);
    }

    #[test]
    fn fee_shares_never_lose_a_cent_over_many_small_refunds() {
        let mut s = settlement("7.77", "0.013", FeeRefundPolicy::Proportional);
        let fee = s.fee.to_minor();
        let mut sum = 0;
        while s.debited_minor < s.amount.to_minor() {
            let r = s.reserve(&cny("0.03")).unwrap();
            assert!(r.fee_share_minor >= 0 && r.fee_share_minor <= 3);
            sum += r.fee_share_minor;
            s.debited_minor = r.debited_minor;
            s.fee_refunded_minor = r.fee_refunded_minor;
        }
        assert_eq!(sum, fee);
    }

    #[test]
    fn no_fee_refund_policy_keeps_the_fee() {
        let s = settlement("100", "0.006", FeeRefundPolicy::None);
        let r = s.reserve(&cny("100")).unwrap();
        assert_eq!(r.fee_share_minor, 0);
        let other = Money::parse("1", "USD", "a").unwrap();
        assert_eq!(
            s.reserve(&other).unwrap_err().code,
            ErrorCode::CurrencyMismatch
        );
    }

    #[test]
    fn debit_postings_balance() {
        let s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let req = DebitRequest {
            refund_id: "rf1".into(),
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            amount: cny("50"),
        };
        let r = s.reserve(&req.amount).unwrap();
        let d = Debit::new(&req, &s, r.fee_share_minor, 0);
        assert_eq!(d.fee_amount.to_minor(), 30);
        assert_eq!(d.merchant_amount.to_minor(), 4970);
        for entries in [
            d.debit_postings(),
            d.reverse_postings(),
            d.complete_postings(),
            d.return_postings(),
        ] {
            let (mut dr, mut cr) = (0, 0);
            for (_, side, m) in entries {
                match side {
                    Side::Debit => dr += m.to_minor(),
                    Side::Credit => cr += m.to_minor(),
                }
            }
            assert_eq!(dr, cr);
        }
    }

    #[test]
    fn state_machine() {
        use DebitStatus::*;
        let allowed = [
            (Pending, Debited),
            (Pending, Rejected),
            (Debited, Reversing),
            (Debited, Completing),
            (Reversing, Reversed),
            (Completing, Completed),
            (Completed, Returning),
            (Returning, Returned),
        ];
        for from in DebitStatus::ALL {
            assert_eq!(DebitStatus::parse(from.as_str()), Some(from));
            for to in DebitStatus::ALL {
                assert_eq!(from.can_move_to(to), allowed.contains(&(from, to)));
                if !allowed.contains(&(from, to)) {
                    assert_eq!(
                        from.transition(to).unwrap_err().code,
                        ErrorCode::InvalidStateTransition
                    );
                }
            }
            if from.is_final() {
                assert!(DebitStatus::ALL.iter().all(|to| !from.can_move_to(*to)));
            }
        }
    }

    #[test]
    fn next_steps() {
        let s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let req = DebitRequest {
            refund_id: "rf1".into(),
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            amount: cny("50"),
        };
        let mut d = Debit::new(&req, &s, 30, 0);
        let step = |d: &Debit, g| match next_step(d, g) {
            Step::Fail(e) => format!("fail {}", e.code),
            other => format!("{other:?}"),
        };
        assert_eq!(step(&d, Goal::Reverse), "PostDebit");
        d.status = DebitStatus::Rejected;
        assert_eq!(step(&d, Goal::Debit), "fail INSUFFICIENT_BALANCE");
        assert_eq!(step(&d, Goal::Reverse), "Done");
        assert_eq!(step(&d, Goal::Complete), "fail DEBIT_NOT_ACTIVE");
        d.status = DebitStatus::Debited;
        assert_eq!(step(&d, Goal::Debit), "Done");
        assert_eq!(step(&d, Goal::Reverse), "BeginReverse");
        assert_eq!(step(&d, Goal::Complete), "BeginComplete");
        d.status = DebitStatus::Completing;
        assert_eq!(step(&d, Goal::Reverse), "fail DEBIT_NOT_ACTIVE");
        assert_eq!(step(&d, Goal::Complete), "PostComplete");
        d.status = DebitStatus::Reversing;
        assert_eq!(step(&d, Goal::Reverse), "PostReverse");
        assert_eq!(step(&d, Goal::Complete), "fail DEBIT_NOT_ACTIVE");
        // Returns: only from COMPLETED.
        for status in [
            DebitStatus::Pending,
            DebitStatus::Debited,
            DebitStatus::Rejected,
            DebitStatus::Reversing,
            DebitStatus::Reversed,
            DebitStatus::Completing,
        ] {
            d.status = status;
            assert_eq!(step(&d, Goal::Return), "fail DEBIT_NOT_ACTIVE", "{status}");
        }
        d.status = DebitStatus::Completed;
        assert_eq!(step(&d, Goal::Return), "BeginReturn");
        d.status = DebitStatus::Returning;
        assert_eq!(step(&d, Goal::Return), "PostReturn");
        assert_eq!(step(&d, Goal::Complete), "Done");
        assert_eq!(step(&d, Goal::Reverse), "fail DEBIT_NOT_ACTIVE");
        d.status = DebitStatus::Returned;
        assert_eq!(step(&d, Goal::Return), "Done");
        assert_eq!(step(&d, Goal::Complete), "Done");
        assert_eq!(step(&d, Goal::Debit), "Done");
        assert!(d.status.is_final() && d.status.gives_back());
        assert!(!DebitStatus::Completed.is_final() && !DebitStatus::Completed.gives_back());
    }

    #[test]
    fn return_postings_undo_the_completion() {
        let s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let req = DebitRequest {
            refund_id: "rf1".into(),
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            amount: cny("50"),
        };
        let d = Debit::new(&req, &s, 30, 0);
        assert_eq!(d.return_request_id(), "refund-return:rf1");
        let p = d.return_postings();
        assert_eq!(
            p,
            vec![
                (
                    AccountKey::channel_reserve("netbank", Currency::Cny),
                    Side::Debit,
                    cny("50")
                ),
                (
                    AccountKey::merchant_settlement("m1", Currency::Cny),
                    Side::Credit,
                    cny("49.70")
                ),
                (
                    AccountKey::platform(AccountType::FeeIncome, Currency::Cny),
                    Side::Credit,
                    cny("0.30")
                ),
            ]
        );
        // No fee share: the zero fee entry is omitted.
        let no_fee = Debit::new(&req, &s, 0, 0);
        assert_eq!(no_fee.return_postings().len(), 2);
    }

    #[test]
    fn adjustments() {
        let a = Adjustment::new(
            "adj1",
            AdjustmentKind::BankToSuspense,
            "netbank",
            cny("5"),
            "bank wins",
            1,
        )
        .unwrap();
        assert_eq!(a.request_id(), "adjust:adj1");
        let suspense = AccountKey {
            account_type: AccountType::Suspense,
            owner: "netbank".into(),
            currency: Currency::Cny,
        };
        let reserve = AccountKey::channel_reserve("netbank", Currency::Cny);
        assert_eq!(
            a.postings(),
            vec![
                (suspense.clone(), Side::Debit, cny("5")),
                (reserve.clone(), Side::Credit, cny("5"))
            ]
        );
        let b = Adjustment {
            kind: AdjustmentKind::SuspenseToBank,
            ..a.clone()
        };
        assert_eq!(
            b.postings(),
            vec![
                (reserve, Side::Debit, cny("5")),
                (suspense, Side::Credit, cny("5"))
            ]
        );
        assert!(!a.same_content(&b));
        let later = Adjustment {
            created_at_ms: 9,
            posting_id: Some("pst_1".into()),
            ..a.clone()
        };
        assert!(a.same_content(&later));
        for kind in [
            AdjustmentKind::BankToSuspense,
            AdjustmentKind::SuspenseToBank,
        ] {
            assert_eq!(AdjustmentKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            Adjustment::new(
                "a",
                AdjustmentKind::BankToSuspense,
                "c",
                cny("1"),
                &"m".repeat(513),
                0
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidArgument
        );
    }
}
