//! The clearing center's pure rules: merchant policies (fee, fee refund, advance line), split
//! settlements and their fees and subsidy, the refund debit's plan (receivers' parts by largest
//! remainder, fee and subsidy shares cumulative, so partial refunds never lose or create a cent),
//! the advance counters, the debit state machine, and the postings each step asks accounting for.
//!
//! Architecture invariant: this module knows nothing of storage or the wire. It uses the ledger's
//! pure domain (account keys and sides) from `tuikuan_accounting::domain`.

use std::collections::BTreeSet;
use std::fmt;
use tuikuan_kernel::echo;

use rust_decimal::Decimal;
use tuikuan_accounting::domain::{AccountKey, AccountType, Entry, Side};
use tuikuan_kernel::money::MAX_AMOUNT_UNITS;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

pub mod funds;
#[cfg(test)]
mod ledger_doc;
pub mod reinstate;
pub mod reopen;
pub mod shortfall;
use funds::reserve_lines;

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
            format!("{} is not a decimal rate", echo(value)),
        ));
    }
    let rate = Decimal::from_str_exact(value)
        .map_err(|_| Error::field(field, format!("{} is not a decimal rate", echo(value))))?
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

/// The most decimals an advance credit line may have.
pub const MAX_ADVANCE_LIMIT_DECIMALS: u32 = 2;

/// Parses an advance credit line (垫付额度): a plain non-negative decimal string with at most two
/// decimals and at most [`MAX_AMOUNT_UNITS`]. Empty means no line (zero).
pub fn parse_advance_limit(value: &str, field: &str) -> Result<Decimal, Error> {
    if value.is_empty() {
        return Ok(Decimal::ZERO);
    }
    let not_amount = || Error::field(field, format!("{} is not a decimal amount", echo(value)));
    if value.len() > 24 || !value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(not_amount());
    }
    let limit = Decimal::from_str_exact(value)
        .map_err(|_| not_amount())?
        .normalize();
    if limit > Decimal::from(MAX_AMOUNT_UNITS) {
        return Err(Error::field(
            field,
            format!("must not exceed {MAX_AMOUNT_UNITS}"),
        ));
    }
    if limit.scale() > MAX_ADVANCE_LIMIT_DECIMALS {
        return Err(Error::field(
            field,
            format!("at most {MAX_ADVANCE_LIMIT_DECIMALS} decimals"),
        ));
    }
    Ok(limit)
}

/// A merchant's terms: fee rate, fee-refund policy and advance credit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPolicy {
    pub merchant_id: String,
    /// In `[0, 0.2]`, e.g. 0.006 for 0.6%.
    pub fee_rate: Decimal,
    pub fee_refund: FeeRefundPolicy,
    /// How much the platform may have advanced (垫付) for the merchant at any time, in the major
    /// unit of `advance_currency`; zero = no line.
    pub advance_limit: Decimal,
    /// The currency of the advance line (`None` only when there is no line): refunds in any other
    /// currency get no advance ([`shortfall`]).
    pub advance_currency: Option<Currency>,
}

impl MerchantPolicy {
    /// The fee on a payment: amount × rate, half-even to the minor unit.
    pub fn fee_on(&self, amount: &Money) -> Money {
        amount.times_rate(self.fee_rate)
    }

    /// The advance line in minor units of `currency` (rounded down where the currency has fewer
    /// decimals than the line); zero when the line is in another currency.
    pub fn advance_limit_minor(&self, currency: Currency) -> i64 {
        if self.advance_currency != Some(currency) {
            return 0;
        }
        let scaled = (self.advance_limit * Decimal::from(10i64.pow(currency.decimals()))).floor();
        i64::try_from(scaled).unwrap_or(0).max(0)
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

// ---------- split payments (分账) ----------

/// The most receivers one split payment may have (keeps every posting within the ledger's entry
/// limit: two entries per receiver plus a few platform lines).
pub const MAX_SPLITS: usize = 20;

/// One receiver's amount: its share of a payment, or its part of a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// A merchant id (with a policy).
    pub receiver_id: String,
    pub amount: Money,
}

/// Splits as a comparable set: (receiver, minor units), sorted by receiver.
pub fn split_set(splits: &[Split]) -> Vec<(String, i64)> {
    let mut set: Vec<(String, i64)> = splits
        .iter()
        .map(|s| (s.receiver_id.clone(), s.amount.to_minor()))
        .collect();
    set.sort();
    set
}

/// Checks splits against the total they must add up to: at most [`MAX_SPLITS`], no receiver twice,
/// each amount positive and in the total's currency, and the sum exactly the total. `field` names
/// the list in errors.
pub fn check_splits(splits: &[Split], total: &Money, field: &str) -> Result<(), Error> {
    if splits.len() > MAX_SPLITS {
        return Err(Error::field(
            field,
            format!("at most {MAX_SPLITS} receivers, got {}", splits.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut sum: i64 = 0;
    for (i, s) in splits.iter().enumerate() {
        if !seen.insert(s.receiver_id.as_str()) {
            return Err(Error::field(
                field,
                format!("receiver {} appears more than once", s.receiver_id),
            ));
        }
        if s.amount.currency() != total.currency() {
            return Err(Error::new(
                ErrorCode::CurrencyMismatch,
                format!(
                    "{field}[{i}].amount: in {}, not {}",
                    s.amount.currency(),
                    total.currency()
                ),
            ));
        }
        if !s.amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                format!("{field}[{i}].amount: must be greater than zero"),
            ));
        }
        sum += s.amount.to_minor();
    }
    if sum != total.to_minor() {
        return Err(Error::field(
            field,
            format!(
                "the receivers' amounts add up to {}, not the amount {}",
                Money::from_minor(sum, total.currency()),
                total
            ),
        ));
    }
    Ok(())
}

/// Splits `amount` over `capacities` in proportion to them by the largest-remainder rule
/// (Hamilton), all in minor units: each part is first `⌊amount × capacity / Σcapacity⌋`, then the
/// cents still missing go one each to the largest fractional remainders (ties: the larger
/// capacity, then the earlier receiver). The parts add up to exactly `amount` (when
/// `amount ≤ Σcapacity`), no part exceeds its capacity, and `amount = Σcapacity` gives every
/// capacity exactly.
pub fn allocate_by_share(amount: i64, capacities: &[i64]) -> Vec<i64> {
    let caps: Vec<i128> = capacities.iter().map(|c| i128::from((*c).max(0))).collect();
    let total: i128 = caps.iter().sum();
    if total == 0 || amount <= 0 {
        return vec![0; caps.len()];
    }
    let amount = i128::from(amount).min(total);
    let mut parts: Vec<i128> = caps.iter().map(|c| amount * c / total).collect();
    let mut leftover = amount - parts.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (amount * caps[a] % total, amount * caps[b] % total);
        rb.cmp(&ra).then(caps[b].cmp(&caps[a])).then(a.cmp(&b))
    });
    for i in order {
        if leftover == 0 {
            break;
        }
        if parts[i] < caps[i] {
            parts[i] += 1;
            leftover -= 1;
        }
    }
    parts
        .into_iter()
        .map(|p| i64::try_from(p).unwrap_or(0))
        .collect()
}

/// The share of `part_total` that goes with refunding `amount` of `total`, all in minor units.
///
/// Cumulative: after this refund, `round_half_even(part_total × done_after / total)` of the part
/// has gone back in all; this refund's share is that minus what went back before
/// (`part_done_before`). Refunds that add up to the whole total therefore give back exactly
/// `part_total`. Clamped to `[0, min(amount, part_total − part_done_before)]`.
pub fn prorated_share(
    part_total: i64,
    total: i64,
    done_before: i64,
    part_done_before: i64,
    amount: i64,
) -> i64 {
    if part_total <= 0 || total <= 0 {
        return 0;
    }
    let after =
        Decimal::from(part_total) * Decimal::from(done_before + amount) / Decimal::from(total);
    let cumulative = after
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .try_into()
        .unwrap_or(part_total);
    let share: i64 = cumulative - part_done_before;
    let ceiling = (part_total - part_done_before).min(amount).max(0);
    share.clamp(0, ceiling)
}

/// The fee given back with a refund of `amount_minor`, all in minor units: by policy, the
/// [`prorated_share`] of the fee (PROPORTIONAL) or nothing (NONE).
pub fn fee_share(
    policy: FeeRefundPolicy,
    fee_minor: i64,
    total_minor: i64,
    debited_before_minor: i64,
    fee_refunded_before_minor: i64,
    amount_minor: i64,
) -> i64 {
    if policy == FeeRefundPolicy::None {
        return 0;
    }
    prorated_share(
        fee_minor,
        total_minor,
        debited_before_minor,
        fee_refunded_before_minor,
        amount_minor,
    )
}

// ---------- settlements ----------

/// A request to settle a succeeded payment, validated (see [`SettleRequest::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    pub trade_id: String,
    pub merchant_id: String,
    pub channel: String,
    pub amount: Money,
    /// The receivers and their shares (分账); empty = the whole amount to `merchant_id`.
    pub splits: Vec<Split>,
    /// The platform-funded subsidy / coupon part of `amount` (zero = none).
    pub subsidy: Money,
}

impl SettleRequest {
    /// Checks what is not an id: the splits add up to the amount, `0 ≤ subsidy < amount`.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.splits.is_empty() {
            check_splits(&self.splits, &self.amount, "splits")?;
        }
        if self.subsidy.currency() != self.amount.currency() {
            return Err(Error::new(
                ErrorCode::CurrencyMismatch,
                "platform_subsidy: not in the payment's currency",
            ));
        }
        let subsidy = self.subsidy.to_minor();
        if subsidy < 0 || subsidy >= self.amount.to_minor() {
            return Err(Error::field(
                "platform_subsidy",
                format!(
                    "must be at least 0 and less than the amount {}",
                    self.amount
                ),
            ));
        }
        Ok(())
    }

    /// The receivers and their shares: the splits, or the whole amount to the merchant.
    pub fn receivers(&self) -> Vec<Split> {
        if self.splits.is_empty() {
            vec![Split {
                receiver_id: self.merchant_id.clone(),
                amount: self.amount,
            }]
        } else {
            self.splits.clone()
        }
    }
}

/// One receiver of a settled payment: its share, its fee, and what was refunded of it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub receiver_id: String,
    /// Its share of the payment (the whole amount when the payment is not split).
    pub share: Money,
    /// Its fee, by its own rate: `round_half_even(share × rate)`.
    pub fee: Money,
    /// Its fee-refund policy when the payment settled (it governs refunds of its share).
    pub fee_refund: FeeRefundPolicy,
    pub refunded_minor: i64,
    pub fee_refunded_minor: i64,
    /// The part of its net credit that repaid its outstanding advance (Cr ADVANCE instead of
    /// MERCHANT_SETTLEMENT), decided when the settlement was recorded.
    pub advance_repaid_minor: i64,
}

impl Receiver {
    /// What the receiver is credited in all: share − fee.
    pub fn net_minor(&self) -> i64 {
        self.share.to_minor() - self.fee.to_minor()
    }

    /// What is left of its share to refund.
    pub fn remaining_minor(&self) -> i64 {
        self.share.to_minor() - self.refunded_minor
    }
}

/// A settled payment and the refund debits taken against it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub trade_id: String,
    /// The merchant the payment belongs to (who refunds it).
    pub merchant_id: String,
    pub channel: String,
    /// The order amount (cash from the customer plus the platform's subsidy).
    pub amount: Money,
    /// The receivers' fees in all.
    pub fee: Money,
    /// The merchant's fee-refund policy when the payment settled. With splits, each receiver's
    /// own policy ([`Receiver::fee_refund`]) governs its share.
    pub fee_refund: FeeRefundPolicy,
    /// The platform-funded part of `amount`.
    pub subsidy: Money,
    pub debited_minor: i64,
    pub fee_refunded_minor: i64,
    pub subsidy_refunded_minor: i64,
    /// At least one; shares add up to `amount`.
    pub receivers: Vec<Receiver>,
    pub posting_id: Option<String>,
    pub status: SettlementStatus,
}

impl Settlement {
    /// A new, pending settlement; `policy_of` finds each merchant's policy (the merchant's and
    /// every receiver's must exist: MERCHANT_NOT_FOUND). Advance repayments are decided by the
    /// store (they depend on the receivers' outstanding advances).
    pub fn new(
        request: &SettleRequest,
        policy_of: impl Fn(&str) -> Option<MerchantPolicy>,
    ) -> Result<Settlement, Error> {
        request.validate()?;
        let not_found = |id: &str| {
            Error::new(
                ErrorCode::MerchantNotFound,
                format!("merchant {id} has no clearing policy"),
            )
        };
        let primary =
            policy_of(&request.merchant_id).ok_or_else(|| not_found(&request.merchant_id))?;
        let mut receivers = Vec::new();
        for split in request.receivers() {
            let policy = if split.receiver_id == request.merchant_id {
                primary.clone()
            } else {
                policy_of(&split.receiver_id).ok_or_else(|| not_found(&split.receiver_id))?
            };
            receivers.push(Receiver {
                fee: policy.fee_on(&split.amount),
                fee_refund: policy.fee_refund,
                receiver_id: split.receiver_id,
                share: split.amount,
                refunded_minor: 0,
                fee_refunded_minor: 0,
                advance_repaid_minor: 0,
            });
        }
        let c = request.amount.currency();
        let fee = Money::from_minor(receivers.iter().map(|r| r.fee.to_minor()).sum(), c);
        Ok(Settlement {
            trade_id: request.trade_id.clone(),
            merchant_id: request.merchant_id.clone(),
            channel: request.channel.clone(),
            amount: request.amount,
            fee,
            fee_refund: primary.fee_refund,
            subsidy: request.subsidy,
            debited_minor: 0,
            fee_refunded_minor: 0,
            subsidy_refunded_minor: 0,
            receivers,
            posting_id: None,
            status: SettlementStatus::Pending,
        })
    }

    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// What the receivers are credited in all: amount − fee.
    pub fn net(&self) -> Money {
        Money::from_minor(
            self.amount.to_minor() - self.fee.to_minor(),
            self.currency(),
        )
    }

    /// What the customer paid in cash: amount − subsidy.
    pub fn cash(&self) -> Money {
        Money::from_minor(
            self.amount.to_minor() - self.subsidy.to_minor(),
            self.currency(),
        )
    }

    /// The receivers' advances repaid by this settlement, in all.
    pub fn advance_repaid(&self) -> Money {
        Money::from_minor(
            self.receivers.iter().map(|r| r.advance_repaid_minor).sum(),
            self.currency(),
        )
    }

    /// The receivers and their shares.
    pub fn splits(&self) -> Vec<Split> {
        self.receivers
            .iter()
            .map(|r| Split {
                receiver_id: r.receiver_id.clone(),
                amount: r.share,
            })
            .collect()
    }

    /// Whether a repeat of SettlePayment carries the same content (receivers compared as a set).
    pub fn matches(&self, request: &SettleRequest) -> bool {
        let c = self.currency();
        let same_currency = request.receivers().iter().all(|s| s.amount.currency() == c);
        self.trade_id == request.trade_id
            && self.merchant_id == request.merchant_id
            && self.channel == request.channel
            && self.amount == request.amount
            && self.subsidy == request.subsidy
            && same_currency
            && split_set(&self.splits()) == split_set(&request.receivers())
    }

    /// The accounting idempotency key of the settlement posting.
    pub fn request_id(&self) -> String {
        settle_request_id(&self.trade_id)
    }

    /// Dr CHANNEL_RESERVE(channel) cash (= amount − subsidy); Dr SUBSIDY(platform) subsidy, paid
    /// into the reserve from OWN_FUNDS; per receiver Cr ADVANCE(receiver) its repayment and Cr
    /// MERCHANT_SETTLEMENT(receiver) share − fee − repayment; Cr FEE_INCOME(platform) the fees.
    /// Fees and repayments are the platform's: they move to PLATFORM_IN_RESERVE (see [`funds`]).
    pub fn postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        let mut entries = reserve_lines(
            &self.channel,
            c,
            self.cash().to_minor(),
            self.subsidy.to_minor(),
            self.fee.to_minor() + self.advance_repaid().to_minor(),
        );
        entries.push((
            AccountKey::platform(AccountType::Subsidy, c),
            Side::Debit,
            self.subsidy,
        ));
        for r in &self.receivers {
            entries.push((
                AccountKey::merchant_settlement(&r.receiver_id, c),
                Side::Credit,
                Money::from_minor(r.net_minor() - r.advance_repaid_minor, c),
            ));
            entries.push((
                advance_account(&r.receiver_id, c),
                Side::Credit,
                Money::from_minor(r.advance_repaid_minor, c),
            ));
        }
        entries.push((
            AccountKey::platform(AccountType::FeeIncome, c),
            Side::Credit,
            self.fee,
        ));
        non_zero(entries)
    }

    /// Plans a refund debit of this trade: checks the currency, the cap (the trade's debits never
    /// exceed the payment), an error refund's full amount, explicit receiver amounts; splits the
    /// amount over the receivers ([`allocate_by_share`] on what remains of each share, unless the
    /// request names the amounts); and computes each receiver's fee share and the trade's subsidy
    /// share ([`prorated_share`]). Pure: the store applies it with conditional updates.
    pub fn plan_debit(&self, request: &DebitRequest) -> Result<DebitPlan, Error> {
        let c = self.currency();
        if request.amount.currency() != c {
            return Err(Error::new(
                ErrorCode::CurrencyMismatch,
                format!(
                    "currency: the payment was in {}, not {}",
                    c,
                    request.amount.currency()
                ),
            ));
        }
        let total = self.amount.to_minor();
        let amount = request.amount.to_minor();
        if request.error_refund && amount != total {
            return Err(Error::field(
                "amount",
                format!(
                    "an error refund (差错退款) is for the full payment {}, not {}",
                    self.amount, request.amount
                ),
            ));
        }
        let debited = self.debited_minor + amount;
        if debited > total {
            return Err(Error::new(
                ErrorCode::RefundExceedsPaid,
                format!(
                    "trade {} paid {}, {} is already debited, {} more is too much",
                    self.trade_id,
                    self.amount,
                    Money::from_minor(self.debited_minor, c),
                    request.amount
                ),
            ));
        }
        let amounts: Vec<i64> = if request.splits.is_empty() {
            let remaining: Vec<i64> = self
                .receivers
                .iter()
                .map(Receiver::remaining_minor)
                .collect();
            allocate_by_share(amount, &remaining)
        } else {
            check_splits(&request.splits, &request.amount, "splits")?;
            let mut amounts = vec![0; self.receivers.len()];
            for s in &request.splits {
                let Some(i) = self
                    .receivers
                    .iter()
                    .position(|r| r.receiver_id == s.receiver_id)
                else {
                    return Err(Error::field(
                        "splits",
                        format!(
                            "{} is not a receiver of trade {}",
                            s.receiver_id, self.trade_id
                        ),
                    ));
                };
                let left = self.receivers[i].remaining_minor();
                if s.amount.to_minor() > left {
                    return Err(Error::new(
                        ErrorCode::RefundExceedsPaid,
                        format!(
                            "splits: receiver {} has {} left of its share, {} is too much",
                            s.receiver_id,
                            Money::from_minor(left, c),
                            s.amount
                        ),
                    ));
                }
                amounts[i] = s.amount.to_minor();
            }
            amounts
        };
        let mut parts = Vec::new();
        for (r, part) in self.receivers.iter().zip(amounts) {
            if part == 0 {
                continue;
            }
            let fee = if request.error_refund {
                // The payment should never have happened: the whole fee goes back.
                (r.fee.to_minor() - r.fee_refunded_minor).clamp(0, part)
            } else {
                fee_share(
                    r.fee_refund,
                    r.fee.to_minor(),
                    r.share.to_minor(),
                    r.refunded_minor,
                    r.fee_refunded_minor,
                    part,
                )
            };
            parts.push(PlannedPart {
                receiver_id: r.receiver_id.clone(),
                amount_minor: part,
                fee_minor: fee,
                refunded_before_minor: r.refunded_minor,
                fee_refunded_before_minor: r.fee_refunded_minor,
            });
        }
        let fee: i64 = parts.iter().map(|p| p.fee_minor).sum();
        let subsidy = prorated_share(
            self.subsidy.to_minor(),
            total,
            self.debited_minor,
            self.subsidy_refunded_minor,
            amount,
        );
        if subsidy == amount {
            return Err(Error::new(
                ErrorCode::CouponOnlyRefund,
                format!("the platform's coupon share {} covers the whole refund: there is no cash to pay back", request.amount),
            ));
        }
        Ok(DebitPlan {
            debited_minor: debited,
            fee_refunded_minor: self.fee_refunded_minor + fee,
            subsidy_refunded_minor: self.subsidy_refunded_minor + subsidy,
            subsidy_share_minor: subsidy,
            parts,
        })
    }
}

/// A planned refund debit: the trade's counters after it, and each receiver's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitPlan {
    pub debited_minor: i64,
    pub fee_refunded_minor: i64,
    pub subsidy_refunded_minor: i64,
    /// The platform-funded part of the refund (back to SUBSIDY, not paid in cash).
    pub subsidy_share_minor: i64,
    /// Receivers with a non-zero part, in the settlement's receiver order.
    pub parts: Vec<PlannedPart>,
}

/// One receiver's part of a planned refund debit, with its counters before (the store's guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPart {
    pub receiver_id: String,
    pub amount_minor: i64,
    /// The fee given back with it (the platform's part).
    pub fee_minor: i64,
    pub refunded_before_minor: i64,
    pub fee_refunded_before_minor: i64,
}

impl PlannedPart {
    /// What the receiver gives back: its part minus the fee share.
    pub fn merchant_minor(&self) -> i64 {
        self.amount_minor - self.fee_minor
    }
}

// ---------- advances (垫付) ----------

/// A merchant's advance counters in one currency, in minor units, as the clearing center keeps
/// them. `posted` is what the ledger's ADVANCE account holds once every confirmed posting is in;
/// `reserved` is lent by debits whose posting is not confirmed yet; `repaying` is promised to
/// settlements, reversals and returns whose posting is not confirmed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvanceLine {
    pub posted_minor: i64,
    pub reserved_minor: i64,
    pub repaying_minor: i64,
}

impl AdvanceLine {
    /// What a new advance may still take under `limit_minor`: the line minus everything lent or
    /// being lent (repayments count only once posted).
    pub fn room(&self, limit_minor: i64) -> i64 {
        (limit_minor - self.posted_minor - self.reserved_minor).max(0)
    }

    /// What a credit to the merchant may still repay: posted advances not already promised.
    pub fn repayable(&self) -> i64 {
        (self.posted_minor - self.repaying_minor).max(0)
    }

    /// The invariants: no counter negative, repayments never exceed posted advances, and — right
    /// after an advance was reserved under `limit_minor` — everything lent stays within the line,
    /// so the platform never pays out more for a merchant than it received plus its line.
    pub fn check(&self, merchant_id: &str, limit_minor: Option<i64>) -> Result<(), Error> {
        let broken = |what: &str| {
            Err(Error::internal(format!(
                "advance of merchant {merchant_id}: {what} ({self:?})"
            )))
        };
        if self.posted_minor < 0 || self.reserved_minor < 0 || self.repaying_minor < 0 {
            return broken("a counter went negative");
        }
        if self.repaying_minor > self.posted_minor {
            return broken("repayments exceed the advances");
        }
        if let Some(limit) = limit_minor {
            if self.posted_minor + self.reserved_minor > limit {
                return broken("advances exceed the credit line");
            }
        }
        Ok(())
    }
}

/// How much of a receiver's merchant part the platform advances: the shortfall of its available
/// balance, when the line has room for all of it. When it has not, nothing is advanced: the
/// whole part is debited from the balance and the ledger refuses it (INSUFFICIENT_BALANCE) — a
/// line is used up to its limit, never beyond, and never for part of a refund it cannot carry.
pub fn advance_needed(merchant_minor: i64, balance_minor: i64, room_minor: i64) -> i64 {
    let shortfall = merchant_minor - balance_minor.max(0);
    if shortfall <= 0 || shortfall > room_minor {
        0
    } else {
        shortfall
    }
}

/// A merchant's ADVANCE account (what it owes the platform; debit-normal).
pub fn advance_account(merchant_id: &str, currency: Currency) -> AccountKey {
    AccountKey {
        account_type: AccountType::Advance,
        owner: merchant_id.to_string(),
        currency,
    }
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
    /// A REVERSED debit whose refund the bank did pay is being taken again and completed
    /// ([`reinstate`]): REVERSED → REINSTATING → COMPLETED.
    Reinstating,
    /// A COMPLETED debit whose attempt the bank failed is being reopened ([`reopen`]):
    /// COMPLETED → REOPENING → DEBITED.
    Reopening,
}

impl DebitStatus {
    pub const ALL: [DebitStatus; 11] = [
        DebitStatus::Pending,
        DebitStatus::Debited,
        DebitStatus::Rejected,
        DebitStatus::Reversing,
        DebitStatus::Reversed,
        DebitStatus::Completing,
        DebitStatus::Completed,
        DebitStatus::Returning,
        DebitStatus::Returned,
        DebitStatus::Reinstating,
        DebitStatus::Reopening,
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
            DebitStatus::Reinstating => "REINSTATING",
            DebitStatus::Reopening => "REOPENING",
        }
    }

    pub fn parse(s: &str) -> Option<DebitStatus> {
        DebitStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// No move leaves these. COMPLETED is not among them (a returned payout still moves it), nor
    /// REVERSED (a refund the bank did pay after all is reinstated, see [`reinstate`]).
    pub fn is_final(self) -> bool {
        matches!(self, DebitStatus::Rejected | DebitStatus::Returned)
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
                | (Reversed, Reinstating)
                | (Reinstating, Completed)
                | (Completed, Reopening)
                | (Reopening, Debited)
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
    /// The refund amount (of the order amount).
    pub amount: Money,
    /// How much to take back from each receiver; empty = by share.
    pub splits: Vec<Split>,
    /// An error refund (差错退款): the full amount only, and the whole fee goes back.
    pub error_refund: bool,
}

/// One receiver's part of a refund debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitPart {
    pub receiver_id: String,
    /// Its part of the refund amount.
    pub amount: Money,
    /// The fee share the platform gives back with it (Dr FEE_INCOME).
    pub fee: Money,
    /// The part of `amount − fee` the platform advanced from the receiver's line (Dr ADVANCE);
    /// the rest came from its balance (Dr MERCHANT_SETTLEMENT).
    pub advance: Money,
    /// On a reversal or return: the part of `amount − fee` that repays the receiver's outstanding
    /// advance (Cr ADVANCE) instead of going back to its balance; decided when the reversal or
    /// return starts.
    pub back_to_advance: Money,
}

impl DebitPart {
    /// What the receiver gives back: its part minus the fee share.
    pub fn merchant(&self) -> Money {
        Money::from_minor(
            self.amount.to_minor() - self.fee.to_minor(),
            self.amount.currency(),
        )
    }

    /// The part of [`DebitPart::merchant`] its balance covered.
    pub fn covered(&self) -> Money {
        Money::from_minor(
            self.merchant().to_minor() - self.advance.to_minor(),
            self.amount.currency(),
        )
    }

    /// On a reversal or return: what goes back to its balance.
    pub fn back_to_settlement(&self) -> Money {
        Money::from_minor(
            self.merchant().to_minor() - self.back_to_advance.to_minor(),
            self.amount.currency(),
        )
    }
}

/// A refund debit (扣账).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    pub refund_id: String,
    pub trade_id: String,
    pub merchant_id: String,
    pub channel: String,
    /// The refund amount, of the order amount (what the customer gets back is
    /// [`Debit::cash_amount`]).
    pub amount: Money,
    /// The receivers' part of it (from their balances and advances).
    pub merchant_amount: Money,
    /// The platform's part: the fee refunded by policy.
    pub fee_amount: Money,
    /// The platform-funded subsidy share: goes back to SUBSIDY, not to the customer.
    pub subsidy_amount: Money,
    pub error_refund: bool,
    /// Whether the request named the receivers' amounts (else they were taken by share).
    pub explicit_splits: bool,
    /// At least one, amounts adding up to `amount`.
    pub parts: Vec<DebitPart>,
    pub status: DebitStatus,
    pub debit_posting_id: Option<String>,
    pub final_posting_id: Option<String>,
    /// Why it was reversed or rejected.
    pub reason: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Debit {
    /// A new pending debit from its plan; `advances[i]` is what the platform advances for
    /// `plan.parts[i]` (0 when its balance covers it or there is no line).
    pub fn new(
        request: &DebitRequest,
        settlement: &Settlement,
        plan: &DebitPlan,
        advances: &[i64],
        now_ms: i64,
    ) -> Debit {
        let c = request.amount.currency();
        let parts: Vec<DebitPart> = plan
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| DebitPart {
                receiver_id: p.receiver_id.clone(),
                amount: Money::from_minor(p.amount_minor, c),
                fee: Money::from_minor(p.fee_minor, c),
                advance: Money::from_minor(
                    advances
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .clamp(0, p.merchant_minor()),
                    c,
                ),
                back_to_advance: Money::zero(c),
            })
            .collect();
        let fee: i64 = parts.iter().map(|p| p.fee.to_minor()).sum();
        Debit {
            refund_id: request.refund_id.clone(),
            trade_id: request.trade_id.clone(),
            merchant_id: request.merchant_id.clone(),
            channel: settlement.channel.clone(),
            amount: request.amount,
            merchant_amount: Money::from_minor(request.amount.to_minor() - fee, c),
            fee_amount: Money::from_minor(fee, c),
            subsidy_amount: Money::from_minor(plan.subsidy_share_minor, c),
            error_refund: request.error_refund,
            explicit_splits: !request.splits.is_empty(),
            parts,
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

    /// What the customer gets back in cash: amount − subsidy share (through REFUND_IN_TRANSIT
    /// and out of the channel reserve).
    pub fn cash_amount(&self) -> Money {
        Money::from_minor(
            self.amount.to_minor() - self.subsidy_amount.to_minor(),
            self.currency(),
        )
    }

    /// What the platform advanced for the receivers.
    pub fn advance_amount(&self) -> Money {
        Money::from_minor(
            self.parts.iter().map(|p| p.advance.to_minor()).sum(),
            self.currency(),
        )
    }

    /// Each receiver's part of the amount.
    pub fn splits(&self) -> Vec<Split> {
        self.parts
            .iter()
            .map(|p| Split {
                receiver_id: p.receiver_id.clone(),
                amount: p.amount,
            })
            .collect()
    }

    /// Whether a repeat of RefundDebit carries the same content (explicit amounts compared as a
    /// set).
    pub fn matches(&self, request: &DebitRequest) -> bool {
        let same_split = if request.splits.is_empty() {
            !self.explicit_splits
        } else {
            self.explicit_splits && split_set(&self.splits()) == split_set(&request.splits)
        };
        self.refund_id == request.refund_id
            && self.trade_id == request.trade_id
            && self.merchant_id == request.merchant_id
            && self.amount == request.amount
            && self.error_refund == request.error_refund
            && same_split
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

    /// Per receiver Dr MERCHANT_SETTLEMENT covered part and Dr ADVANCE advanced part; Dr
    /// FEE_INCOME fee share → Cr REFUND_IN_TRANSIT cash (amount − subsidy share); Cr SUBSIDY
    /// subsidy share. The fee share and the advances are paid into the reserve from OWN_FUNDS;
    /// the subsidy share goes back to the platform's part of the reserve (see [`funds`]).
    pub fn debit_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        let advanced: i64 = self.parts.iter().map(|p| p.advance.to_minor()).sum();
        let mut entries = reserve_lines(
            &self.channel,
            c,
            0,
            self.fee_amount.to_minor() + advanced,
            self.subsidy_amount.to_minor(),
        );
        for p in &self.parts {
            entries.push((
                AccountKey::merchant_settlement(&p.receiver_id, c),
                Side::Debit,
                p.covered(),
            ));
            entries.push((advance_account(&p.receiver_id, c), Side::Debit, p.advance));
        }
        entries.extend([
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Debit,
                self.fee_amount,
            ),
            (
                AccountKey::platform(AccountType::RefundInTransit, c),
                Side::Credit,
                self.cash_amount(),
            ),
            (
                AccountKey::platform(AccountType::Subsidy, c),
                Side::Credit,
                self.subsidy_amount,
            ),
        ]);
        non_zero(entries)
    }

    /// Dr REFUND_IN_TRANSIT cash; Cr CHANNEL_RESERVE(channel) cash: the money left. Empty when the
    /// subsidy share is the whole refund (nothing to pay in cash).
    pub fn complete_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        non_zero(vec![
            (
                AccountKey::platform(AccountType::RefundInTransit, c),
                Side::Debit,
                self.cash_amount(),
            ),
            (
                AccountKey::channel_reserve(&self.channel, c),
                Side::Credit,
                self.cash_amount(),
            ),
        ])
    }

    /// The lines that give a debit back, with `reserve_minor` coming back into the customers' part
    /// of the reserve for the step's own reason: per receiver Cr ADVANCE what repays its advance
    /// (`back_to_advance`, or with `exact` the advance this debit took) and Cr MERCHANT_SETTLEMENT
    /// the rest of its part; Cr FEE_INCOME the fee share; Dr SUBSIDY the subsidy share. Funding
    /// ([`funds`]): the subsidy share is paid into the reserve again from OWN_FUNDS; the fee share
    /// and what repays advances go to the platform's part of the reserve.
    fn give_back(&self, reserve_minor: i64, exact: bool) -> Vec<(AccountKey, Side, Money)> {
        let c = self.currency();
        let mut repaid = 0;
        let mut entries = Vec::new();
        for p in &self.parts {
            let to_advance = if exact { p.advance } else { p.back_to_advance };
            repaid += to_advance.to_minor();
            entries.push((
                AccountKey::merchant_settlement(&p.receiver_id, c),
                Side::Credit,
                Money::from_minor(p.merchant().to_minor() - to_advance.to_minor(), c),
            ));
            entries.push((advance_account(&p.receiver_id, c), Side::Credit, to_advance));
        }
        entries.extend([
            (
                AccountKey::platform(AccountType::FeeIncome, c),
                Side::Credit,
                self.fee_amount,
            ),
            (
                AccountKey::platform(AccountType::Subsidy, c),
                Side::Debit,
                self.subsidy_amount,
            ),
        ]);
        entries.extend(reserve_lines(
            &self.channel,
            c,
            reserve_minor,
            self.subsidy_amount.to_minor(),
            self.fee_amount.to_minor() + repaid,
        ));
        non_zero(entries)
    }

    /// Dr REFUND_IN_TRANSIT cash → the money back where it came from ([`Debit::give_back`],
    /// repaying advances first).
    pub fn reverse_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        self.out_of_transit(false)
    }

    /// The exact undo of [`Debit::debit_postings`] (every line back to the account it came from),
    /// used when a retry's debit posting landed after the debit was already REJECTED.
    pub fn undo_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        self.out_of_transit(true)
    }

    fn out_of_transit(&self, exact: bool) -> Vec<(AccountKey, Side, Money)> {
        let mut entries = vec![(
            AccountKey::platform(AccountType::RefundInTransit, self.currency()),
            Side::Debit,
            self.cash_amount(),
        )];
        entries.extend(self.give_back(0, exact));
        non_zero(entries)
    }

    /// The returned payout (退票): the cash came back to the reserve (Dr CHANNEL_RESERVE) → the
    /// same as a reversal ([`Debit::give_back`]).
    pub fn return_postings(&self) -> Vec<(AccountKey, Side, Money)> {
        self.give_back(self.cash_amount().to_minor(), false)
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

/// Which way an adjustment moves money between a channel's reserve and a suspense item (the
/// item's id is the adjustment id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentKind {
    /// The bank paid out what the platform has no refund for, a claim on the bank: Dr
    /// SUSPENSE_BANK_CLAIM(channel), Cr CHANNEL_RESERVE(channel).
    BankToSuspense,
    /// The books took more from the reserve than the bank paid, money owed to a customer: Dr
    /// CHANNEL_RESERVE(channel), Cr SUSPENSE_OWED_CUSTOMER(channel).
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

    /// The posting: the reserve line and the line that opens suspense item `adjustment_id`.
    pub fn postings(&self) -> Vec<Entry> {
        let c = self.amount.currency();
        let (item_type, reserve_side) = match self.kind {
            AdjustmentKind::BankToSuspense => (AccountType::SuspenseBankClaim, Side::Credit),
            AdjustmentKind::SuspenseToBank => (AccountType::SuspenseOwedCustomer, Side::Debit),
        };
        let item = AccountKey {
            account_type: item_type,
            owner: self.channel.clone(),
            currency: c,
        };
        vec![
            Entry {
                item: self.adjustment_id.clone(),
                ..Entry::new(item, reserve_side.opposite(), self.amount)
            },
            Entry::new(
                AccountKey::channel_reserve(&self.channel, c),
                reserve_side,
                self.amount,
            ),
        ]
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
    /// ReinstateDebit: the bank paid a refund the platform had failed; the money taken from the
    /// merchant again and out through the channel reserve ([`reinstate`]).
    Reinstate,
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
    /// Move REVERSED → REINSTATING, taking the trade's counters again.
    BeginReinstate,
    /// Post (or re-post) `refund-reinstate:` and finish the reinstatement (→ COMPLETED).
    PostReinstate,
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
        (Goal::Reinstate, _) => reinstate::next_step(debit),
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
        (
            Goal::Reverse,
            Completing | Completed | Returning | Returned | Reinstating | Reopening,
        ) => not_active(),
        (Goal::Complete, Debited) => Step::BeginComplete,
        (Goal::Complete, Completing) => Step::PostComplete,
        // The completion happened; a later return does not undo that answer.
        (Goal::Complete, Completed | Returning | Returned) => Step::Done,
        (Goal::Complete, Reversing | Reversed | Rejected | Reinstating | Reopening) => not_active(),
        (Goal::Return, Completed) => Step::BeginReturn,
        (Goal::Return, Returning) => Step::PostReturn,
        (Goal::Return, Returned) => Step::Done,
        (
            Goal::Return,
            Debited | Rejected | Reversing | Reversed | Completing | Reinstating | Reopening,
        ) => not_active(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    fn policy_for(id: &str, rate: &str, fee_refund: FeeRefundPolicy, line: &str) -> MerchantPolicy {
        MerchantPolicy {
            merchant_id: id.into(),
            fee_rate: parse_fee_rate(rate, "fee_rate").unwrap(),
            fee_refund,
            advance_limit: parse_advance_limit(line, "advance_limit").unwrap(),
            advance_currency: Some(Currency::Cny),
        }
    }

    fn settle_req(amount: &str, splits: &[(&str, &str)], subsidy: &str) -> SettleRequest {
        SettleRequest {
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            channel: "netbank".into(),
            amount: cny(amount),
            splits: splits
                .iter()
                .map(|(id, a)| Split {
                    receiver_id: id.to_string(),
                    amount: cny(a),
                })
                .collect(),
            subsidy: if subsidy == "0" {
                Money::zero(Currency::Cny)
            } else {
                cny(subsidy)
            },
        }
    }

    fn settlement(amount: &str, rate: &str, fee_refund: FeeRefundPolicy) -> Settlement {
        let p = policy_for("m1", rate, fee_refund, "0");
        Settlement::new(&settle_req(amount, &[], "0"), |_| Some(p.clone())).unwrap()
    }

    fn debit_req(id: &str, amount: &str) -> DebitRequest {
        DebitRequest {
            refund_id: id.into(),
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            amount: cny(amount),
            splits: Vec::new(),
            error_refund: false,
        }
    }

    /// Applies a plan to the settlement's counters, as the store does.
    fn apply(s: &mut Settlement, plan: &DebitPlan) {
        s.debited_minor = plan.debited_minor;
        s.fee_refunded_minor = plan.fee_refunded_minor;
        s.subsidy_refunded_minor = plan.subsidy_refunded_minor;
        for p in &plan.parts {
            let r = s
                .receivers
                .iter_mut()
                .find(|r| r.receiver_id == p.receiver_id)
                .unwrap();
            r.refunded_minor += p.amount_minor;
            r.fee_refunded_minor += p.fee_minor;
        }
    }

    /// Plans, applies and returns a debit.
    fn take(s: &mut Settlement, req: &DebitRequest) -> Debit {
        let plan = s.plan_debit(req).unwrap();
        apply(s, &plan);
        Debit::new(req, s, &plan, &[], 0)
    }

    /// A toy ledger: balances on the normal side per account id, asserting every posting balances.
    #[derive(Default)]
    struct Ledger(BTreeMap<String, i64>);

    impl Ledger {
        fn post(&mut self, entries: Vec<(AccountKey, Side, Money)>) {
            let (mut dr, mut cr) = (0, 0);
            for (key, side, m) in entries {
                assert!(m.is_positive(), "{key} {m}");
                let sign = if side == key.account_type.normal_side() {
                    1
                } else {
                    -1
                };
                *self.0.entry(key.account_id()).or_default() += sign * m.to_minor();
                match side {
                    Side::Debit => dr += m.to_minor(),
                    Side::Credit => cr += m.to_minor(),
                }
            }
            assert_eq!(dr, cr, "unbalanced posting");
        }

        fn get(&self, id: &str) -> i64 {
            self.0.get(id).copied().unwrap_or(0)
        }

        /// Every account back at zero once the sweep has moved the platform's part of the
        /// reserves to its own funds.
        fn all_zero(&self) -> bool {
            let swept: i64 = self
                .0
                .iter()
                .filter(|(id, _)| {
                    id.starts_with("PLATFORM_IN_RESERVE:") || id.starts_with("OWN_FUNDS:")
                })
                .map(|(_, v)| v)
                .sum();
            swept == 0
                && self.0.iter().all(|(id, v)| {
                    *v == 0
                        || id.starts_with("PLATFORM_IN_RESERVE:")
                        || id.starts_with("OWN_FUNDS:")
                })
        }
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
    fn advance_limits_are_validated() {
        assert_eq!(parse_advance_limit("", "l").unwrap(), Decimal::ZERO);
        assert_eq!(parse_advance_limit("500", "l").unwrap(), Decimal::from(500));
        assert!(parse_advance_limit("0.01", "l").is_ok());
        for bad in ["-1", "0.001", "abc", "1e3", "10000000000000"] {
            assert_eq!(
                parse_advance_limit(bad, "l").unwrap_err().code,
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
        let p = policy_for("m1", "0", FeeRefundPolicy::None, "12.34");
        assert_eq!(p.advance_limit_minor(Currency::Cny), 1234);
        assert_eq!(
            p.advance_limit_minor(Currency::Usd),
            0,
            "a CNY line lends no USD"
        );
        let yen = MerchantPolicy {
            advance_currency: Some(Currency::Jpy),
            ..p.clone()
        };
        assert_eq!(yen.advance_limit_minor(Currency::Jpy), 12);
        assert_eq!(yen.advance_limit_minor(Currency::Cny), 0);
    }

    #[test]
    fn settlement_fee_and_postings() {
        let s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        assert_eq!(s.fee.to_minor(), 60);
        assert_eq!(s.net().to_minor(), 9940);
        let p = s.postings();
        // The reserve, the fee as the platform's part of it, the merchant, fee income.
        assert_eq!(p.len(), 4);
        // Half-even: 0.125 → 0.12
        let s = settlement("12.5", "0.01", FeeRefundPolicy::None);
        assert_eq!(s.fee.to_minor(), 12);
        let s = settlement("10", "0", FeeRefundPolicy::None);
        assert_eq!(s.postings().len(), 2, "zero fee entry omitted");
    }

    #[test]
    fn largest_remainder_allocation() {
        assert_eq!(
            allocate_by_share(1001, &[3333, 3333, 3334]),
            vec![334, 333, 334]
        );
        assert_eq!(
            allocate_by_share(10000, &[3333, 3333, 3334]),
            vec![3333, 3333, 3334]
        );
        assert_eq!(allocate_by_share(1, &[50, 50]), vec![1, 0]);
        assert_eq!(allocate_by_share(3, &[0, 5, 0]), vec![0, 3, 0]);
        assert_eq!(allocate_by_share(0, &[5, 5]), vec![0, 0]);
        // Every amount up to the total: exact sum, within capacity.
        let caps = [7, 13, 1, 29];
        for amount in 0..=50 {
            let parts = allocate_by_share(amount, &caps);
            assert_eq!(parts.iter().sum::<i64>(), amount);
            assert!(parts.iter().zip(caps).all(|(p, c)| *p >= 0 && *p <= c));
        }
    }

    #[test]
    fn split_refunds_by_share_sum_exactly_and_never_exceed_a_share() {
        let policies = [
            policy_for("m1", "0.006", FeeRefundPolicy::Proportional, "0"),
            policy_for("r2", "0.01", FeeRefundPolicy::None, "0"),
            policy_for("r3", "0", FeeRefundPolicy::Proportional, "0"),
        ];
        let find = |id: &str| policies.iter().find(|p| p.merchant_id == id).cloned();
        let req = settle_req(
            "100",
            &[("m1", "33.33"), ("r2", "33.33"), ("r3", "33.34")],
            "0",
        );
        let mut s = Settlement::new(&req, find).unwrap();
        assert_eq!(
            s.receivers
                .iter()
                .map(|r| r.fee.to_minor())
                .collect::<Vec<_>>(),
            vec![20, 33, 0]
        );
        assert_eq!(s.fee.to_minor(), 53);
        let mut ledger = Ledger::default();
        ledger.post(s.postings());
        assert_eq!(ledger.get("MERCHANT_SETTLEMENT:r2:CNY"), 3300);
        let mut n = 0;
        while s.debited_minor + 1001 <= 10000 {
            let d = take(&mut s, &debit_req(&format!("rf{n}"), "10.01"));
            assert_eq!(
                d.parts.iter().map(|p| p.amount.to_minor()).sum::<i64>(),
                1001
            );
            ledger.post(d.debit_postings());
            ledger.post(d.complete_postings());
            for r in &s.receivers {
                assert!(r.refunded_minor <= r.share.to_minor());
                assert!(r.fee_refunded_minor <= r.fee.to_minor());
            }
            n += 1;
        }
        assert_eq!(n, 9);
        let rest = Money::from_minor(10000 - s.debited_minor, Currency::Cny);
        let d = take(&mut s, &debit_req("last", &rest.amount_string()));
        ledger.post(d.debit_postings());
        ledger.post(d.complete_postings());
        for r in &s.receivers {
            assert_eq!(r.refunded_minor, r.share.to_minor(), "{}", r.receiver_id);
        }
        // m1 refunded its whole fee (proportional), r2 kept its fee (NONE).
        assert_eq!(s.receivers[0].fee_refunded_minor, 20);
        assert_eq!(s.receivers[1].fee_refunded_minor, 0);
        assert_eq!(ledger.get("MERCHANT_SETTLEMENT:m1:CNY"), 0);
        assert_eq!(ledger.get("MERCHANT_SETTLEMENT:r2:CNY"), -33);
        assert_eq!(ledger.get("FEE_INCOME:platform:CNY"), 33);
        // The customers' part of the reserve is what the merchants hold: r2 paid the fee it kept
        // from other money. The platform's part holds the fees it kept.
        assert_eq!(ledger.get("CHANNEL_RESERVE:netbank:CNY"), -33);
        assert_eq!(ledger.get("PLATFORM_IN_RESERVE:netbank:CNY"), 53);
        assert_eq!(ledger.get("OWN_FUNDS:platform:CNY"), -20);
        assert_eq!(
            s.plan_debit(&debit_req("x", "0.01")).unwrap_err().code,
            ErrorCode::RefundExceedsPaid
        );
    }

    #[test]
    fn explicit_split_amounts_are_checked() {
        let p = policy_for("m1", "0", FeeRefundPolicy::None, "0");
        let req = settle_req("10", &[("m1", "6"), ("r2", "4")], "0");
        let mut s = Settlement::new(&req, |id| {
            Some(MerchantPolicy {
                merchant_id: id.into(),
                ..p.clone()
            })
        })
        .unwrap();
        let with = |amount: &str, splits: &[(&str, &str)]| DebitRequest {
            splits: splits
                .iter()
                .map(|(id, a)| Split {
                    receiver_id: id.to_string(),
                    amount: cny(a),
                })
                .collect(),
            ..debit_req("rf", amount)
        };
        let d = take(&mut s, &with("5", &[("r2", "4"), ("m1", "1")]));
        assert!(d.explicit_splits);
        assert!(d.matches(&with("5", &[("m1", "1"), ("r2", "4")])));
        assert!(!d.matches(&with("5", &[("m1", "2"), ("r2", "3")])));
        assert!(!d.matches(&debit_req("rf", "5")));
        // r2 has nothing left; the sum must be the amount; receivers must be the trade's.
        let err = s.plan_debit(&with("1", &[("r2", "1")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::RefundExceedsPaid);
        assert!(err.message.starts_with("splits:"), "{}", err.message);
        let err = s.plan_debit(&with("2", &[("m1", "1")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with("splits:"), "{}", err.message);
        let err = s.plan_debit(&with("1", &[("zz", "1")])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = s
            .plan_debit(&with("2", &[("m1", "1"), ("m1", "1")]))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        // By share now takes only from m1 (r2's share is used up).
        let d = take(&mut s, &debit_req("rf2", "5"));
        assert_eq!(
            d.splits(),
            vec![Split {
                receiver_id: "m1".into(),
                amount: cny("5")
            }]
        );
    }

    #[test]
    fn settle_requests_are_validated() {
        let p = policy_for("m1", "0", FeeRefundPolicy::None, "0");
        let find = |id: &str| {
            (id != "ghost").then(|| MerchantPolicy {
                merchant_id: id.into(),
                ..p.clone()
            })
        };
        let err = settle_req("10", &[("m1", "6"), ("r2", "3.99")], "0")
            .validate()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with("splits:"));
        let err = settle_req("10", &[], "10").validate().unwrap_err();
        assert!(err.message.starts_with("platform_subsidy:"));
        assert!(settle_req("10", &[], "9.99").validate().is_ok());
        let err = Settlement::new(&settle_req("10", &[("ghost", "10")], "0"), find).unwrap_err();
        assert_eq!(err.code, ErrorCode::MerchantNotFound);
        let s = Settlement::new(&settle_req("10", &[("r2", "4"), ("m1", "6")], "1"), find).unwrap();
        assert!(s.matches(&settle_req("10", &[("m1", "6"), ("r2", "4")], "1")));
        assert!(!s.matches(&settle_req("10", &[("m1", "6"), ("r2", "4")], "0")));
        assert!(!s.matches(&settle_req("10", &[], "1")));
    }

    #[test]
    fn subsidy_is_prorated_and_every_account_returns_to_zero() {
        // 100.00 order, 20.00 platform coupon, 0.6% fee refunded in proportion.
        let p = policy_for("m1", "0.006", FeeRefundPolicy::Proportional, "0");
        let mut s = Settlement::new(&settle_req("100", &[], "20"), |_| Some(p.clone())).unwrap();
        let mut ledger = Ledger::default();
        ledger.post(s.postings());
        // Cash 80.00 and the coupon 20.00 paid in from own funds, less the fee 0.60 (the
        // platform's part of the reserve).
        assert_eq!(ledger.get("CHANNEL_RESERVE:netbank:CNY"), 9940);
        assert_eq!(ledger.get("PLATFORM_IN_RESERVE:netbank:CNY"), 60);
        assert_eq!(ledger.get("OWN_FUNDS:platform:CNY"), -2000);
        assert_eq!(ledger.get("SUBSIDY:platform:CNY"), 2000);
        assert_eq!(ledger.get("MERCHANT_SETTLEMENT:m1:CNY"), 9940);
        let d = take(&mut s, &debit_req("rf1", "33.33"));
        // subsidy share round(20.00 × 33.33 / 100) = 6.67 (6.666); cash 26.66
        assert_eq!(d.subsidy_amount, cny("6.67"));
        assert_eq!(d.cash_amount(), cny("26.66"));
        assert_eq!(d.fee_amount, cny("0.20"));
        ledger.post(d.debit_postings());
        ledger.post(d.complete_postings());
        assert_eq!(ledger.get("SUBSIDY:platform:CNY"), 2000 - 667);
        assert_eq!(ledger.get("REFUND_IN_TRANSIT:platform:CNY"), 0);
        let d = take(&mut s, &debit_req("rf2", "33.33"));
        assert_eq!(d.subsidy_amount, cny("6.66"));
        ledger.post(d.debit_postings());
        ledger.post(d.complete_postings());
        let d = take(&mut s, &debit_req("rf3", "33.34"));
        assert_eq!(d.subsidy_amount, cny("6.67"));
        ledger.post(d.debit_postings());
        ledger.post(d.complete_postings());
        assert!(ledger.all_zero(), "{:?}", ledger.0);
    }

    #[test]
    fn a_refund_that_is_all_subsidy_is_refused_up_front() {
        let p = policy_for("m1", "0", FeeRefundPolicy::None, "0");
        let s = Settlement::new(&settle_req("1", &[], "0.99"), |_| Some(p.clone())).unwrap();
        let err = s.plan_debit(&debit_req("rf1", "0.01")).unwrap_err();
        assert_eq!(err.code, ErrorCode::CouponOnlyRefund);
        let whole = s.plan_debit(&debit_req("rf1", "1")).unwrap();
        assert_eq!(
            whole.subsidy_share_minor, 99,
            "the whole payment has 0.01 cash"
        );
    }

    #[test]
    fn error_refunds_are_full_and_give_back_the_whole_fee() {
        let mut s = settlement("100", "0.006", FeeRefundPolicy::None);
        let req = DebitRequest {
            error_refund: true,
            ..debit_req("rf1", "50")
        };
        let err = s.plan_debit(&req).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.starts_with("amount:"), "{}", err.message);
        let full = DebitRequest {
            error_refund: true,
            ..debit_req("rf1", "100")
        };
        let d = take(&mut s, &full);
        assert_eq!(
            d.fee_amount,
            cny("0.60"),
            "NONE policy, but an error refund gives the fee back"
        );
        assert!(d.matches(&full));
        assert!(!d.matches(&debit_req("rf1", "100")));
    }

    #[test]
    fn proportional_fee_shares_add_up_to_the_fee() {
        let mut s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let mut shares = Vec::new();
        for part in ["33.33", "33.33", "33.34"] {
            let d = take(&mut s, &debit_req("rf", part));
            shares.push(d.fee_amount.to_minor());
        }
        assert_eq!(shares, vec![20, 20, 20]);
        assert_eq!(s.fee_refunded_minor, 60);
        let err = s.plan_debit(&debit_req("rf", "0.01")).unwrap_err();
        assert_eq!(err.code, ErrorCode::RefundExceedsPaid);
    }

    #[test]
    fn fee_shares_never_lose_a_cent_over_many_small_refunds() {
        let mut s = settlement("7.77", "0.013", FeeRefundPolicy::Proportional);
        let fee = s.fee.to_minor();
        let mut sum = 0;
        while s.debited_minor < s.amount.to_minor() {
            let d = take(&mut s, &debit_req("rf", "0.03"));
            assert!(d.fee_amount.to_minor() >= 0 && d.fee_amount.to_minor() <= 3);
            sum += d.fee_amount.to_minor();
        }
        assert_eq!(sum, fee);
    }

    #[test]
    fn no_fee_refund_policy_keeps_the_fee() {
        let s = settlement("100", "0.006", FeeRefundPolicy::None);
        let plan = s.plan_debit(&debit_req("rf", "100")).unwrap();
        assert_eq!(plan.fee_refunded_minor, 0);
        let other = DebitRequest {
            amount: Money::parse("1", "USD", "a").unwrap(),
            ..debit_req("rf", "1")
        };
        assert_eq!(
            s.plan_debit(&other).unwrap_err().code,
            ErrorCode::CurrencyMismatch
        );
    }

    #[test]
    fn advances_fund_the_shortfall_within_the_line_only() {
        assert_eq!(advance_needed(5000, 8000, 0), 0, "the balance covers it");
        assert_eq!(advance_needed(5000, 3000, 2000), 2000, "exactly the room");
        assert_eq!(
            advance_needed(5000, 3000, 1999),
            0,
            "no room: refused by the ledger"
        );
        assert_eq!(advance_needed(5000, -1, 5000), 5000);
        let line = AdvanceLine {
            posted_minor: 300,
            reserved_minor: 200,
            repaying_minor: 100,
        };
        assert_eq!(line.room(1000), 500);
        assert_eq!(line.room(400), 0);
        assert_eq!(line.repayable(), 200);
        assert!(line.check("m1", Some(500)).is_ok());
        assert_eq!(
            line.check("m1", Some(499)).unwrap_err().code,
            ErrorCode::Internal
        );
        let bad = AdvanceLine {
            repaying_minor: 301,
            ..line
        };
        assert_eq!(bad.check("m1", None).unwrap_err().code, ErrorCode::Internal);
    }

    #[test]
    fn advanced_debits_post_to_advance_and_give_back_repaying_first() {
        let p = policy_for("m1", "0.006", FeeRefundPolicy::Proportional, "100");
        let mut s = Settlement::new(&settle_req("100", &[], "0"), |_| Some(p.clone())).unwrap();
        let req = debit_req("rf1", "100");
        let plan = s.plan_debit(&req).unwrap();
        apply(&mut s, &plan);
        // The merchant has 60.00 of the 99.40 it gives back: 39.40 is advanced.
        let mut d = Debit::new(&req, &s, &plan, &[3940], 0);
        assert_eq!(d.advance_amount(), cny("39.40"));
        assert_eq!(d.parts[0].covered(), cny("60.00"));
        let mut ledger = Ledger::default();
        ledger.post(d.debit_postings());
        assert_eq!(ledger.get("ADVANCE:m1:CNY"), 3940);
        assert_eq!(ledger.get("MERCHANT_SETTLEMENT:m1:CNY"), -6000);
        // Reversed after 30.00 of the advance was repaid elsewhere: 9.40 repays the rest.
        d.parts[0].back_to_advance = cny("9.40");
        let entries = d.reverse_postings();
        assert!(entries.contains(&(
            advance_account("m1", Currency::Cny),
            Side::Credit,
            cny("9.40")
        )));
        assert!(entries.contains(&(
            AccountKey::merchant_settlement("m1", Currency::Cny),
            Side::Credit,
            cny("90.00")
        )));
        ledger.post(entries);
        // The exact undo returns the advance as taken.
        let undo = d.undo_postings();
        assert!(undo.contains(&(
            advance_account("m1", Currency::Cny),
            Side::Credit,
            cny("39.40")
        )));
        ledger.post(undo);
        ledger.post(d.return_postings());
    }

    #[test]
    fn split_settlement_repays_advances_first() {
        let p = policy_for("m1", "0.01", FeeRefundPolicy::Proportional, "50");
        let mut s = Settlement::new(&settle_req("10", &[], "0"), |_| Some(p.clone())).unwrap();
        s.receivers[0].advance_repaid_minor = 500;
        assert_eq!(s.advance_repaid(), cny("5"));
        let entries = s.postings();
        assert!(entries.contains(&(advance_account("m1", Currency::Cny), Side::Credit, cny("5"))));
        assert!(entries.contains(&(
            AccountKey::merchant_settlement("m1", Currency::Cny),
            Side::Credit,
            cny("4.90")
        )));
        Ledger::default().post(entries);
    }

    #[test]
    fn debit_postings_balance() {
        let mut s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let d = take(&mut s, &debit_req("rf1", "50"));
        assert_eq!(d.fee_amount.to_minor(), 30);
        assert_eq!(d.merchant_amount.to_minor(), 4970);
        for entries in [
            d.debit_postings(),
            d.reverse_postings(),
            d.complete_postings(),
            d.return_postings(),
            d.undo_postings(),
        ] {
            Ledger::default().post(entries);
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
            (Reversed, Reinstating),
            (Reinstating, Completed),
            (Completed, Reopening),
            (Reopening, Debited),
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
        let mut s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let mut d = take(&mut s, &debit_req("rf1", "50"));
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
        let mut s = settlement("100", "0.006", FeeRefundPolicy::Proportional);
        let d = take(&mut s, &debit_req("rf1", "50"));
        assert_eq!(d.return_request_id(), "refund-return:rf1");
        let p = d.return_postings();
        assert_eq!(
            p,
            vec![
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
                // 50.00 came back; the fee share of it is the platform's again.
                (
                    AccountKey::channel_reserve("netbank", Currency::Cny),
                    Side::Debit,
                    cny("49.70")
                ),
                (
                    funds::platform_in_reserve("netbank", Currency::Cny),
                    Side::Debit,
                    cny("0.30")
                ),
            ]
        );
        // No fee share: the zero fee entry is omitted.
        let mut s = settlement("100", "0.006", FeeRefundPolicy::None);
        let no_fee = take(&mut s, &debit_req("rf1", "50"));
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
        let item = |t: AccountType, side: Side| Entry {
            item: "adj1".into(),
            ..Entry::new(
                AccountKey {
                    account_type: t,
                    owner: "netbank".into(),
                    currency: Currency::Cny,
                },
                side,
                cny("5"),
            )
        };
        let reserve = AccountKey::channel_reserve("netbank", Currency::Cny);
        assert_eq!(
            a.postings(),
            vec![
                item(AccountType::SuspenseBankClaim, Side::Debit),
                Entry::new(reserve.clone(), Side::Credit, cny("5"))
            ]
        );
        let b = Adjustment {
            kind: AdjustmentKind::SuspenseToBank,
            ..a.clone()
        };
        assert_eq!(
            b.postings(),
            vec![
                item(AccountType::SuspenseOwedCustomer, Side::Credit),
                Entry::new(reserve, Side::Debit, cny("5"))
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
