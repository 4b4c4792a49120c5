//! The business layer's domain: merchants, channels, trades, merchant refunds and the refund chain's
//! state machine. Pure: no storage, no RPC.
//!
//! # The chain state machine
//!
//! ```text
//!            debit ok            refund center ok           outcome
//! RESERVED ───────────▶ DEBITED ─────────────────▶ ACCEPTED ───────▶ SUCCEEDED | FAILED
//!    │ debit refused        │ refund center rejects
//!    ▼                      ▼          reversal ok
//! REJECTED ◀──────────── REVERSING
//! ```
//!
//! The merchant sees RESERVED, DEBITED and REVERSING as RECEIVED (the chain is still running),
//! ACCEPTED as PROCESSING (promised, 承诺成功), and the final states as they are.
//!
//! The one exception to "final states never change": a returned payout (退票, 退单不付). The bank
//! may return a payout after reporting it paid; the refund center then reports FAILED with
//! `returned = true`, and a SUCCEEDED refund moves to FAILED (code `PAYOUT_RETURNED`, the bank's
//! reason as message), releasing its reservation. That edge is [`ChainState::return_transition`],
//! kept apart from [`ChainState::can_move_to`] so that no ordinary outcome can take it.
//!
//! Architecture invariant: a refund *holds a reservation* on its trade (`trade.refunded` includes
//! its amount) in every state but REJECTED and FAILED, and the sum of reservations never exceeds the
//! trade's amount. The transition into REJECTED or FAILED releases the reservation in the same
//! database transaction.
//!
//! # Error refunds (差错退款)
//!
//! A refund of a duplicate payment ([`RefundKind::DuplicatePayment`]) or of a payment that arrived
//! after its order expired ([`RefundKind::ExpiredOrder`]), raised by an operator (ops or finance,
//! see [`operator`]) rather than the merchant. Rules ([`check_error_refundable`]): full amount only
//! (a partial one is INVALID_ARGUMENT naming `amount`), the trade settled and without other live
//! refunds, one per trade (its refund number is [`error_refund_no`], `ERR-<trade_id>`; the prefix
//! `ERR-` is reserved), no refund window (the money was never the merchant's to keep). The chain
//! is the same state machine; the debit is flagged `error_refund` and the refund center is asked
//! through its error-refund interface.
//!
//! # Splits and subsidies (分账, 补贴)
//!
//! A trade may record its split receivers and their shares ([`Split`], summing exactly to the
//! amount) and a platform-funded subsidy part; both go to the clearing center with the settlement,
//! which does the share arithmetic (its rounding rule: by share, largest remainder). A merchant
//! refund may give the amount to take back from each receiver (`split_amounts`, summing exactly to
//! the refund amount, each receiver one of the trade's and at most its share); otherwise the
//! clearing center takes back by share. Only the trade's own merchant refunds it.
//!
//! Submodules: [`crypto`] (card numbers and secrets at rest), [`notify`] (merchant notifications,
//! signatures, retries), [`egress`] (where notifications may go: the SSRF guard's rules),
//! [`operator`] (staff identity and roles).

pub mod crypto;
pub mod egress;
pub mod notify;
pub mod operator;
pub mod reinstate;
pub mod reopen;

use std::fmt;

use sha2::{Digest, Sha256};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

/// Refund window when a channel does not set one.
pub const DEFAULT_REFUND_WINDOW_DAYS: u32 = 365;
/// The longest refund window a channel may configure (ten years).
pub const MAX_REFUND_WINDOW_DAYS: u32 = 3650;
/// The longest refund reason, in characters.
pub const MAX_REASON_CHARS: usize = 256;
/// The longest merchant name, in characters.
pub const MAX_MERCHANT_NAME_CHARS: usize = 128;
/// The longest payer name, in characters.
pub const MAX_PAYER_NAME_CHARS: usize = 64;
/// API keys: at least this many characters ...
pub const MIN_API_KEY_CHARS: usize = 16;
/// ... and at most this many.
pub const MAX_API_KEY_CHARS: usize = 256;

const MS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Chain state
// ---------------------------------------------------------------------------------------------

/// Where a merchant refund is in the chain (internal; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainState {
    /// Persisted; the amount is reserved on the trade; the clearing debit is not confirmed.
    Reserved,
    /// The clearing center confirmed the debit; the refund center has not accepted yet.
    Debited,
    /// The refund center accepted the refund: promised to the merchant.
    Accepted,
    /// Final: the money arrived.
    Succeeded,
    /// Final: the refund finally failed; the money is back with the merchant.
    Failed,
    /// The refund center rejected the refund; the debit reversal is pending.
    Reversing,
    /// Final: never accepted (debit refused, or refund center rejected and debit reversed).
    Rejected,
}

impl ChainState {
    pub const ALL: &'static [ChainState] = &[
        ChainState::Reserved,
        ChainState::Debited,
        ChainState::Accepted,
        ChainState::Succeeded,
        ChainState::Failed,
        ChainState::Reversing,
        ChainState::Rejected,
    ];

    /// States the recovery loop resumes: the chain still has a call to make.
    pub const IN_FLIGHT: &'static [ChainState] = &[
        ChainState::Reserved,
        ChainState::Debited,
        ChainState::Reversing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChainState::Reserved => "RESERVED",
            ChainState::Debited => "DEBITED",
            ChainState::Accepted => "ACCEPTED",
            ChainState::Succeeded => "SUCCEEDED",
            ChainState::Failed => "FAILED",
            ChainState::Reversing => "REVERSING",
            ChainState::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Result<ChainState> {
        ChainState::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::internal(format!("unknown chain state {s:?}")))
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ChainState::Succeeded | ChainState::Failed | ChainState::Rejected
        )
    }

    /// Whether the chain still has a call to make (the recovery loop drives these).
    pub fn is_in_flight(self) -> bool {
        ChainState::IN_FLIGHT.contains(&self)
    }

    /// Whether the refund's amount counts in its trade's `refunded` sum.
    pub fn holds_reservation(self) -> bool {
        !matches!(self, ChainState::Rejected | ChainState::Failed)
    }

    /// What the merchant sees.
    pub fn merchant_status(self) -> RefundStatus {
        match self {
            ChainState::Reserved | ChainState::Debited | ChainState::Reversing => {
                RefundStatus::Received
            }
            ChainState::Accepted => RefundStatus::Processing,
            ChainState::Succeeded => RefundStatus::Succeeded,
            ChainState::Failed => RefundStatus::Failed,
            ChainState::Rejected => RefundStatus::Rejected,
        }
    }

    /// Whether `self -> to` is an edge of the state machine.
    pub fn can_move_to(self, to: ChainState) -> bool {
        use ChainState::*;
        matches!(
            (self, to),
            (Reserved, Debited)
                | (Reserved, Rejected)
                | (Debited, Accepted)
                | (Debited, Reversing)
                // The refund center reports an outcome only for refunds it accepted; when its
                // acceptance answer was lost (we are still DEBITED) the report proves acceptance.
                | (Debited, Succeeded)
                | (Debited, Failed)
                | (Accepted, Succeeded)
                | (Accepted, Failed)
                | (Reversing, Rejected)
        )
    }

    /// The returned-payout edge (退票): SUCCEEDED -> FAILED, the only way out of a final state.
    /// `Ok(FAILED)` from SUCCEEDED, else `INVALID_STATE_TRANSITION`.
    pub fn return_transition(self) -> Result<ChainState> {
        if self == ChainState::Succeeded {
            Ok(ChainState::Failed)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("refund cannot be returned from {self}"),
            ))
        }
    }

    /// The checked transition: `Ok(to)` for an edge of the state machine, else
    /// `INVALID_STATE_TRANSITION`.
    pub fn transition(self, to: ChainState) -> Result<ChainState> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("refund cannot move from {self} to {to}"),
            ))
        }
    }
}

impl fmt::Display for ChainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The merchant-facing refund status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Persisted; the chain is still running. Not yet promised.
    Received,
    /// Never accepted; nothing was paid.
    Rejected,
    /// Accepted and promised.
    Processing,
    Succeeded,
    /// The exception: the money is back with the merchant.
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Received => "RECEIVED",
            RefundStatus::Rejected => "REJECTED",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Succeeded => "SUCCEEDED",
            RefundStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Result<RefundStatus> {
        [
            RefundStatus::Received,
            RefundStatus::Rejected,
            RefundStatus::Processing,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| Error::internal(format!("unknown refund status {s:?}")))
    }

    /// The chain states a merchant-facing status covers (for filters).
    pub fn chain_states(self) -> &'static [ChainState] {
        match self {
            RefundStatus::Received => ChainState::IN_FLIGHT,
            RefundStatus::Rejected => &[ChainState::Rejected],
            RefundStatus::Processing => &[ChainState::Accepted],
            RefundStatus::Succeeded => &[ChainState::Succeeded],
            RefundStatus::Failed => &[ChainState::Failed],
        }
    }
}

/// An outcome reported by the refund center.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// FAILED after SUCCEEDED: the bank returned the payout (退票); the money is back with the
    /// merchant.
    Returned,
}

impl Outcome {
    pub fn chain_state(self) -> ChainState {
        match self {
            Outcome::Succeeded => ChainState::Succeeded,
            Outcome::Failed | Outcome::Returned => ChainState::Failed,
        }
    }
}

/// What applying a reported outcome to a refund in `current` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeAction {
    /// Move to this state along the state machine (releasing the reservation when it is FAILED).
    Apply(ChainState),
    /// Move SUCCEEDED -> FAILED: a returned payout (releases the reservation).
    Return,
    /// The same outcome was applied before: nothing to do.
    AlreadyApplied,
}

/// Decides how a reported outcome applies: monotone and idempotent, with the returned payout as
/// the one exception (SUCCEEDED -> FAILED, only for [`Outcome::Returned`]).
pub fn apply_outcome(current: ChainState, outcome: Outcome) -> Result<OutcomeAction> {
    let target = outcome.chain_state();
    if current == target {
        return Ok(OutcomeAction::AlreadyApplied);
    }
    if outcome == Outcome::Returned && current == ChainState::Succeeded {
        return current.return_transition().map(|_| OutcomeAction::Return);
    }
    current.transition(target).map(OutcomeAction::Apply)
}

/// What a progress report (status PROCESSING with a new expected completion) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressAction {
    /// DEBITED: the report proves the refund center accepted it (its answer was lost): accept.
    Accept,
    /// ACCEPTED: only the expected completion changes.
    Update,
    /// Final: a late progress report changes nothing.
    Ignore,
}

/// Decides how a progress report applies; a refund the refund center never accepted cannot have
/// progress.
pub fn apply_progress(current: ChainState) -> Result<ProgressAction> {
    match current {
        ChainState::Debited => Ok(ProgressAction::Accept),
        ChainState::Accepted => Ok(ProgressAction::Update),
        ChainState::Succeeded | ChainState::Failed => Ok(ProgressAction::Ignore),
        ChainState::Reserved | ChainState::Reversing | ChainState::Rejected => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!("refund in {current} has no progress to report"),
        )),
    }
}

/// How the chain treats a peer's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// A definite "no": the peer did nothing and will not (bad input, not found, precondition).
    Refused,
    /// Unknown outcome (unavailable, timeout, internal): retry later with the same key.
    Retry,
}

impl PeerVerdict {
    pub fn of(code: ErrorCode) -> PeerVerdict {
        use ErrorCode::*;
        match code {
            InvalidArgument
            | InvalidAmount
            | UnsupportedCurrency
            | MalformedId
            | MalformedRequest
            | NotifyUrlForbidden
            | TradeNotFound
            | RefundNotFound
            | MerchantNotFound
            | ChannelNotFound
            | DebitNotFound
            | SettlementNotFound
            | PayoutNotFound
            | NotFound
            | RefundExceedsPaid
            | RefundWindowExpired
            | TradeNotRefundable
            | InsufficientBalance
            | CurrencyMismatch
            | InvalidStateTransition
            | UnbalancedPosting
            | DebitNotActive
            | NoRefundMethod
            | RefundFailed
            | PayoutReturned
            | BankMayHavePaid
            | ProposalExpired
            | CouponOnlyRefund
            | AdvanceCurrencyMismatch
            // The platform's own funds cannot fund its part now: nothing was debited; the
            // merchant may ask again later with a new refund.
            | InsufficientFunds => PeerVerdict::Refused,
            // IDEMPOTENCY_CONFLICT means the peer holds other content under our refund id: a bug
            // or tampering that a human must look at; never guess, keep the refund where it is.
            // CALLER_NOT_ALLOWED: the deployment's certificates or allow-list are wrong; the peer
            // did nothing, and will once an operator fixes them.
            // REQUEST_TOO_LARGE from a peer: our own request was too big, a bug to look at.
            IdempotencyConflict | Unauthenticated | PermissionDenied | TokenExpired
            | InvalidCredentials | SelfApproval | CallerNotAllowed | RequestTooLarge
            | Unavailable | InProgress | ChannelUnverified | Storage | Internal => {
                PeerVerdict::Retry
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Merchants and channels
// ---------------------------------------------------------------------------------------------

/// The hex SHA-256 of an API key, as stored.
pub fn hash_api_key(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub merchant_id: String,
    pub name: String,
    pub api_key_hash: String,
    pub created_at_ms: i64,
}

impl Merchant {
    /// Validates a new merchant; the key is kept only as its hash.
    pub fn new(merchant_id: &str, name: &str, api_key: &str, now_ms: i64) -> Result<Merchant> {
        validate_external_id(merchant_id, "merchant_id")?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::field("name", "is required"));
        }
        if name.chars().count() > MAX_MERCHANT_NAME_CHARS {
            return Err(Error::field(
                "name",
                format!("longer than {MAX_MERCHANT_NAME_CHARS} characters"),
            ));
        }
        let key_chars = api_key.chars().count();
        if !(MIN_API_KEY_CHARS..=MAX_API_KEY_CHARS).contains(&key_chars) {
            return Err(Error::field(
                "api_key",
                format!("must be {MIN_API_KEY_CHARS} to {MAX_API_KEY_CHARS} characters"),
            ));
        }
        if api_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::field("api_key", "must not contain whitespace"));
        }
        Ok(Merchant {
            merchant_id: merchant_id.to_string(),
            name: name.to_string(),
            api_key_hash: hash_api_key(api_key),
            created_at_ms: now_ms,
        })
    }

    /// Whether a repeated CreateMerchant carries the same content.
    pub fn same_content(&self, other: &Merchant) -> bool {
        self.merchant_id == other.merchant_id
            && self.name == other.name
            && self.api_key_hash == other.api_key_hash
    }
}

/// A payment channel as the business layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub code: String,
    /// How long after payment a merchant may refund at all.
    pub refund_window_days: u32,
    /// A disabled channel takes no new refunds.
    pub enabled: bool,
}

impl ChannelConfig {
    /// Validates a channel; a window of 0 (unset) means [`DEFAULT_REFUND_WINDOW_DAYS`].
    pub fn new(code: &str, refund_window_days: u32, enabled: bool) -> Result<ChannelConfig> {
        validate_external_id(code, "code")?;
        let refund_window_days = match refund_window_days {
            0 => DEFAULT_REFUND_WINDOW_DAYS,
            d if d > MAX_REFUND_WINDOW_DAYS => {
                return Err(Error::field(
                    "refund_window_days",
                    format!("must not exceed {MAX_REFUND_WINDOW_DAYS}"),
                ))
            }
            d => d,
        };
        Ok(ChannelConfig {
            code: code.to_string(),
            refund_window_days,
            enabled,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Refund kinds, splits and subsidies
// ---------------------------------------------------------------------------------------------

/// A merchant's refund, or an error refund (差错退款) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundKind {
    Normal,
    /// The payer paid the same order twice.
    DuplicatePayment,
    /// The payment arrived after its order expired.
    ExpiredOrder,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Normal => "NORMAL",
            RefundKind::DuplicatePayment => "DUPLICATE_PAYMENT",
            RefundKind::ExpiredOrder => "EXPIRED_ORDER",
        }
    }

    pub fn parse(s: &str) -> Result<RefundKind> {
        match s {
            "NORMAL" => Ok(RefundKind::Normal),
            "DUPLICATE_PAYMENT" => Ok(RefundKind::DuplicatePayment),
            "EXPIRED_ORDER" => Ok(RefundKind::ExpiredOrder),
            other => Err(Error::internal(format!("unknown refund kind {other:?}"))),
        }
    }

    pub fn is_error_refund(self) -> bool {
        self != RefundKind::Normal
    }
}

/// The most split receivers a trade may have.
pub const MAX_SPLIT_RECEIVERS: usize = 50;

/// A split receiver (a merchant of the platform) and an amount: its share of a trade, or what a
/// refund takes back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub receiver_id: String,
    pub amount: Money,
}

/// Validates split entries `(receiver_id, amount)` in `total`'s currency: each receiver at most
/// once, each amount positive, the amounts summing exactly to `total`. Errors name
/// `field[i].receiver_id`, `field[i].amount` or `field`. Returns them ordered by receiver id.
pub fn validate_splits(raw: &[(&str, &str)], total: &Money, field: &str) -> Result<Vec<Split>> {
    if raw.len() > MAX_SPLIT_RECEIVERS {
        return Err(Error::field(
            field,
            format!("more than {MAX_SPLIT_RECEIVERS} receivers"),
        ));
    }
    let currency = total.currency().code();
    let mut out: Vec<Split> = Vec::with_capacity(raw.len());
    let mut sum = Money::zero(total.currency());
    for (i, (receiver_id, amount)) in raw.iter().enumerate() {
        validate_external_id(receiver_id, &format!("{field}[{i}].receiver_id"))?;
        if out.iter().any(|s| s.receiver_id == *receiver_id) {
            return Err(Error::field(
                &format!("{field}[{i}].receiver_id"),
                format!("{receiver_id} appears more than once"),
            ));
        }
        let amount = Money::parse(amount, currency, &format!("{field}[{i}].amount"))?;
        sum = sum.checked_add(&amount)?;
        out.push(Split {
            receiver_id: receiver_id.to_string(),
            amount,
        });
    }
    if !out.is_empty() && sum != *total {
        return Err(Error::field(
            field,
            format!("the amounts sum to {sum}, not to the amount {total}"),
        ));
    }
    out.sort_by(|a, b| a.receiver_id.cmp(&b.receiver_id));
    Ok(out)
}

/// The platform-funded subsidy part of a payment: empty or zero = none; else positive, at most the
/// currency's decimals, and below the amount (the payer paid something).
pub fn parse_subsidy(raw: &str, amount: &Money) -> Result<Money> {
    let raw = raw.trim();
    let zero = Money::zero(amount.currency());
    if raw.is_empty() || (raw.chars().all(|c| c == '0' || c == '.') && raw.contains('0')) {
        return Ok(zero);
    }
    let subsidy = Money::parse(raw, amount.currency().code(), "platform_subsidy")?;
    if subsidy.to_minor() >= amount.to_minor() {
        return Err(Error::new(
            ErrorCode::InvalidAmount,
            format!("platform_subsidy: {subsidy} must be less than the amount {amount}"),
        ));
    }
    Ok(subsidy)
}

// ---------------------------------------------------------------------------------------------
// Trades
// ---------------------------------------------------------------------------------------------

/// Whether the clearing center has settled a trade's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleStatus {
    Unsettled,
    Settled,
}

impl SettleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SettleStatus::Unsettled => "UNSETTLED",
            SettleStatus::Settled => "SETTLED",
        }
    }

    pub fn parse(s: &str) -> Result<SettleStatus> {
        match s {
            "UNSETTLED" => Ok(SettleStatus::Unsettled),
            "SETTLED" => Ok(SettleStatus::Settled),
            other => Err(Error::internal(format!("unknown settle status {other:?}"))),
        }
    }
}

/// A succeeded payment as recorded by the forward payment system, validated. `Debug` masks the
/// card.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub merchant_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    pub paid_at_ms: i64,
    pub payer_card_no: Option<String>,
    pub payer_name: Option<String>,
    /// Split receivers and shares, by receiver id (empty = not split).
    pub receivers: Vec<Split>,
    /// The platform-funded part of amount (zero = none).
    pub platform_subsidy: Money,
}

impl fmt::Debug for NewPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewPayment")
            .field("merchant_id", &self.merchant_id)
            .field("order_no", &self.order_no)
            .field("channel", &self.channel)
            .field("amount", &self.amount)
            .field("paid_at_ms", &self.paid_at_ms)
            .field(
                "payer_card_no",
                &mask_card(self.payer_card_no.as_deref().unwrap_or("")),
            )
            .field("receivers", &self.receivers)
            .field("platform_subsidy", &self.platform_subsidy)
            .finish_non_exhaustive()
    }
}

/// The raw fields of a payment record, before validation.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFields<'a> {
    pub merchant_id: &'a str,
    pub order_no: &'a str,
    pub channel: &'a str,
    pub amount: &'a str,
    pub currency: &'a str,
    pub paid_at_ms: i64,
    pub payer_card_no: &'a str,
    pub payer_name: &'a str,
    /// `(receiver_id, amount)` pairs (empty = not split).
    pub receivers: &'a [(&'a str, &'a str)],
    /// Empty = no subsidy.
    pub platform_subsidy: &'a str,
}

impl NewPayment {
    pub fn validate(f: PaymentFields<'_>) -> Result<NewPayment> {
        validate_external_id(f.merchant_id, "merchant_id")?;
        validate_external_id(f.order_no, "order_no")?;
        validate_external_id(f.channel, "channel")?;
        let amount = Money::parse(f.amount, f.currency, "amount")?;
        if f.paid_at_ms <= 0 {
            return Err(Error::field(
                "paid_at_ms",
                "must be a positive epoch millisecond",
            ));
        }
        let payer_card_no = match f.payer_card_no {
            "" => None,
            card => {
                if !card.chars().all(|c| c.is_ascii_digit()) || !(12..=19).contains(&card.len()) {
                    return Err(Error::field("payer_card_no", "must be 12 to 19 digits"));
                }
                Some(card.to_string())
            }
        };
        let payer_name = match f.payer_name.trim() {
            "" => None,
            name => {
                if name.chars().count() > MAX_PAYER_NAME_CHARS {
                    return Err(Error::field(
                        "payer_name",
                        format!("longer than {MAX_PAYER_NAME_CHARS} characters"),
                    ));
                }
                if name.chars().any(char::is_control) {
                    return Err(Error::field(
                        "payer_name",
                        "must not contain control characters",
                    ));
                }
                Some(name.to_string())
            }
        };
        let receivers = validate_splits(f.receivers, &amount, "receivers")?;
        let platform_subsidy = parse_subsidy(f.platform_subsidy, &amount)?;
        Ok(NewPayment {
            merchant_id: f.merchant_id.to_string(),
            order_no: f.order_no.to_string(),
            channel: f.channel.to_string(),
            amount,
            paid_at_ms: f.paid_at_ms,
            payer_card_no,
            payer_name,
            receivers,
            platform_subsidy,
        })
    }

    /// A new, unsettled trade for this payment.
    pub fn into_trade(self, trade_id: String, now_ms: i64) -> Trade {
        Trade {
            trade_id,
            merchant_id: self.merchant_id,
            order_no: self.order_no,
            channel: self.channel,
            refunded: Money::zero(self.amount.currency()),
            amount: self.amount,
            paid_at_ms: self.paid_at_ms,
            settle_status: SettleStatus::Unsettled,
            payer_card_no: self.payer_card_no,
            payer_name: self.payer_name,
            receivers: self.receivers,
            platform_subsidy: self.platform_subsidy,
            created_at_ms: now_ms,
        }
    }

    /// Whether a repeated record of the same (merchant, order) carries the same content.
    pub fn matches(&self, trade: &Trade) -> bool {
        self.merchant_id == trade.merchant_id
            && self.order_no == trade.order_no
            && self.channel == trade.channel
            && self.amount == trade.amount
            && self.paid_at_ms == trade.paid_at_ms
            && self.payer_card_no == trade.payer_card_no
            && self.payer_name == trade.payer_name
            && self.receivers == trade.receivers
            && self.platform_subsidy == trade.platform_subsidy
    }
}

/// An original payment (the trade a refund refers to). `Debug` masks the card.
#[derive(Clone, PartialEq, Eq)]
pub struct Trade {
    pub trade_id: String,
    pub merchant_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    /// Sum of live refunds (every refund that holds a reservation).
    pub refunded: Money,
    pub paid_at_ms: i64,
    pub settle_status: SettleStatus,
    /// In memory only; stored sealed (see [`crypto`]), shown masked.
    pub payer_card_no: Option<String>,
    pub payer_name: Option<String>,
    /// Split receivers and shares, by receiver id (empty = not split).
    pub receivers: Vec<Split>,
    /// The platform-funded part of amount (zero = none).
    pub platform_subsidy: Money,
    pub created_at_ms: i64,
}

impl fmt::Debug for Trade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trade")
            .field("trade_id", &self.trade_id)
            .field("merchant_id", &self.merchant_id)
            .field("order_no", &self.order_no)
            .field("channel", &self.channel)
            .field("amount", &self.amount)
            .field("refunded", &self.refunded)
            .field("paid_at_ms", &self.paid_at_ms)
            .field("settle_status", &self.settle_status)
            .field("payer_card_no", &self.masked_card())
            .field("receivers", &self.receivers)
            .field("platform_subsidy", &self.platform_subsidy)
            .finish_non_exhaustive()
    }
}

impl Trade {
    /// The payer's card with all but the last four digits hidden, or "" when unknown.
    pub fn masked_card(&self) -> String {
        mask_card(self.payer_card_no.as_deref().unwrap_or(""))
    }
}

/// `"6222020200112233"` -> `"************2233"`.
pub fn mask_card(card: &str) -> String {
    let n = card.chars().count();
    if n == 0 {
        return String::new();
    }
    let keep = n.min(4);
    let tail: String = card.chars().skip(n - keep).collect();
    format!("{}{}", "*".repeat(n - keep), tail)
}

// ---------------------------------------------------------------------------------------------
// Refund requests and refunds
// ---------------------------------------------------------------------------------------------

/// Merchant refund numbers starting with this (any case) are reserved for error refunds.
pub const ERROR_REFUND_NO_PREFIX: &str = "ERR-";

/// The refund number of a trade's error refund (one per trade).
pub fn error_refund_no(trade_id: &str) -> String {
    format!("{ERROR_REFUND_NO_PREFIX}{trade_id}")
}

/// A merchant's refund request, validated on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub merchant_refund_no: String,
    pub order_no: String,
    pub amount: Money,
    pub reason: String,
    /// What to take back from each split receiver (empty = by share), by receiver id.
    pub split_amounts: Vec<Split>,
}

impl RefundRequest {
    pub fn validate(
        merchant_refund_no: &str,
        order_no: &str,
        amount: &str,
        currency: &str,
        reason: &str,
    ) -> Result<RefundRequest> {
        validate_external_id(merchant_refund_no, "merchant_refund_no")?;
        if merchant_refund_no
            .get(..ERROR_REFUND_NO_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(ERROR_REFUND_NO_PREFIX))
        {
            return Err(Error::field(
                "merchant_refund_no",
                format!("the prefix {ERROR_REFUND_NO_PREFIX} is reserved for error refunds"),
            ));
        }
        validate_external_id(order_no, "order_no")?;
        let amount = Money::parse(amount, currency, "amount")?;
        validate_reason(reason)?;
        Ok(RefundRequest {
            merchant_refund_no: merchant_refund_no.to_string(),
            order_no: order_no.to_string(),
            amount,
            reason: reason.to_string(),
            split_amounts: Vec::new(),
        })
    }

    /// Adds the merchant's per-receiver amounts `(receiver_id, amount)`: they must sum exactly to
    /// the refund amount (errors name `split_amounts`).
    pub fn with_split_amounts(mut self, raw: &[(&str, &str)]) -> Result<RefundRequest> {
        self.split_amounts = validate_splits(raw, &self.amount, "split_amounts")?;
        Ok(self)
    }

    /// The idempotency fingerprint: hex SHA-256 over (order_no, amount, currency, reason), each
    /// length-prefixed so that no two different requests share a fingerprint, then the split
    /// amounts when there are any (so fingerprints of requests without splits never changed). The
    /// amount enters in minor units, so "10" and "10.00" are the same request.
    pub fn fingerprint(&self) -> String {
        let mut parts = vec![
            self.order_no.clone(),
            self.amount.to_minor().to_string(),
            self.amount.currency().code().to_string(),
            self.reason.clone(),
        ];
        for s in &self.split_amounts {
            parts.push(s.receiver_id.clone());
            parts.push(s.amount.to_minor().to_string());
        }
        fingerprint_of(&parts)
    }
}

/// A reason: at most [`MAX_REASON_CHARS`] characters, no control characters.
fn validate_reason(reason: &str) -> Result<()> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Error::field(
            "reason",
            format!("longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::field(
            "reason",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Hex SHA-256 over length-prefixed parts.
fn fingerprint_of(parts: &[String]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Checks that `trade` may take `request` now (the request is the merchant's own; the amount
/// guard is the store's conditional update, not this).
pub fn check_refundable(
    trade: &Trade,
    channel: Option<&ChannelConfig>,
    request: &RefundRequest,
    now_ms: i64,
) -> Result<()> {
    if trade.settle_status != SettleStatus::Settled {
        return Err(Error::new(
            ErrorCode::TradeNotRefundable,
            format!("trade {} is not settled yet", trade.order_no),
        ));
    }
    let window_days = match channel {
        Some(c) if !c.enabled => {
            return Err(Error::new(
                ErrorCode::TradeNotRefundable,
                format!("channel {} takes no refunds", c.code),
            ))
        }
        Some(c) => c.refund_window_days,
        None => DEFAULT_REFUND_WINDOW_DAYS,
    };
    let window_ms = i64::from(window_days) * MS_PER_DAY;
    if now_ms.saturating_sub(trade.paid_at_ms) > window_ms {
        return Err(Error::new(
            ErrorCode::RefundWindowExpired,
            format!(
                "trade {} was paid more than {window_days} days ago",
                trade.order_no
            ),
        ));
    }
    if request.amount.currency() != trade.amount.currency() {
        return Err(Error::new(
            ErrorCode::CurrencyMismatch,
            format!(
                "refund currency {} differs from the payment's {}",
                request.amount.currency(),
                trade.amount.currency()
            ),
        ));
    }
    if request.amount.to_minor() > trade.amount.to_minor() {
        return Err(Error::new(
            ErrorCode::RefundExceedsPaid,
            format!(
                "refund {} exceeds the payment {}",
                request.amount, trade.amount
            ),
        ));
    }
    check_split_amounts(trade, &request.split_amounts)
}

/// The merchant's per-receiver amounts fit the trade: it is split, each receiver is one of its
/// receivers, and no amount is above that receiver's share (what remains of the share is the
/// clearing center's check).
pub fn check_split_amounts(trade: &Trade, split_amounts: &[Split]) -> Result<()> {
    if split_amounts.is_empty() {
        return Ok(());
    }
    if trade.receivers.is_empty() {
        return Err(Error::field(
            "split_amounts",
            format!("trade {} is not a split payment", trade.order_no),
        ));
    }
    for (i, s) in split_amounts.iter().enumerate() {
        let Some(share) = trade
            .receivers
            .iter()
            .find(|r| r.receiver_id == s.receiver_id)
        else {
            return Err(Error::field(
                &format!("split_amounts[{i}].receiver_id"),
                format!(
                    "{} is not a receiver of trade {}",
                    s.receiver_id, trade.order_no
                ),
            ));
        };
        if s.amount.to_minor() > share.amount.to_minor() {
            return Err(Error::field(
                &format!("split_amounts[{i}].amount"),
                format!(
                    "{} exceeds the share {} of {}",
                    s.amount, share.amount, s.receiver_id
                ),
            ));
        }
    }
    Ok(())
}

/// An operator's error refund request (差错退款), validated on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRefundRequest {
    pub merchant_id: String,
    pub order_no: String,
    pub kind: RefundKind,
    pub amount: Money,
    pub reason: String,
}

impl ErrorRefundRequest {
    /// `kind` must be an error kind (`None` = not given).
    pub fn validate(
        merchant_id: &str,
        order_no: &str,
        kind: Option<RefundKind>,
        amount: &str,
        currency: &str,
        reason: &str,
    ) -> Result<ErrorRefundRequest> {
        validate_external_id(merchant_id, "merchant_id")?;
        validate_external_id(order_no, "order_no")?;
        let kind = match kind {
            Some(k) if k.is_error_refund() => k,
            _ => {
                return Err(Error::field(
                    "kind",
                    "must be DUPLICATE_PAYMENT or EXPIRED_ORDER",
                ))
            }
        };
        let amount = Money::parse(amount, currency, "amount")?;
        validate_reason(reason)?;
        if reason.trim().is_empty() {
            return Err(Error::field("reason", "is required for an error refund"));
        }
        Ok(ErrorRefundRequest {
            merchant_id: merchant_id.to_string(),
            order_no: order_no.to_string(),
            kind,
            amount,
            reason: reason.to_string(),
        })
    }

    /// The idempotency fingerprint: (order_no, amount, currency, reason, kind), length-prefixed,
    /// with a marker no merchant fingerprint has.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&[
            "error-refund".to_string(),
            self.order_no.clone(),
            self.amount.to_minor().to_string(),
            self.amount.currency().code().to_string(),
            self.reason.clone(),
            self.kind.as_str().to_string(),
        ])
    }
}

/// Checks that `trade` may take an error refund: settled (the money was credited somewhere to
/// take it back from), same currency, the full amount (partial error refunds are INVALID_ARGUMENT
/// naming `amount`), and no other live refunds. No refund window and no channel switch apply: the
/// payment was an error and is owed back whatever the merchant's terms. The store's conditional
/// update re-checks "no other live refund" atomically.
pub fn check_error_refundable(trade: &Trade, request: &ErrorRefundRequest) -> Result<()> {
    if trade.settle_status != SettleStatus::Settled {
        return Err(Error::new(
            ErrorCode::TradeNotRefundable,
            format!("trade {} is not settled yet", trade.order_no),
        ));
    }
    if request.amount.currency() != trade.amount.currency() {
        return Err(Error::new(
            ErrorCode::CurrencyMismatch,
            format!(
                "refund currency {} differs from the payment's {}",
                request.amount.currency(),
                trade.amount.currency()
            ),
        ));
    }
    if request.amount != trade.amount {
        return Err(Error::field(
            "amount",
            format!(
                "an error refund is for the full amount {} of trade {}; {} would be a partial error refund, which is not allowed",
                trade.amount, trade.order_no, request.amount
            ),
        ));
    }
    if !trade.refunded.is_zero() {
        return Err(Error::new(
            ErrorCode::TradeNotRefundable,
            format!(
                "trade {} already has refunds of {} accepted or in progress; an error refund needs a trade without other live refunds",
                trade.order_no, trade.refunded
            ),
        ));
    }
    Ok(())
}

/// A merchant refund request and its progress through the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantRefund {
    pub refund_id: String,
    pub merchant_id: String,
    pub merchant_refund_no: String,
    pub trade_id: String,
    pub order_no: String,
    pub amount: Money,
    pub reason: String,
    pub fingerprint: String,
    pub chain_state: ChainState,
    /// For REVERSING, REJECTED and FAILED: the stable code of why.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// When the refund center expects the refund to complete (0 = unknown): stored at acceptance
    /// and updated by its reports.
    pub expected_completion_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// NORMAL, or the kind of an error refund.
    pub kind: RefundKind,
    /// Who raised an error refund.
    pub operator: Option<String>,
    /// What the merchant asked to take back from each split receiver (empty = by share).
    pub split_amounts: Vec<Split>,
}

impl MerchantRefund {
    /// A new refund in RESERVED for `request` on `trade`.
    pub fn reserve(
        refund_id: String,
        merchant_id: &str,
        trade: &Trade,
        request: &RefundRequest,
        now_ms: i64,
    ) -> MerchantRefund {
        MerchantRefund {
            refund_id,
            merchant_id: merchant_id.to_string(),
            merchant_refund_no: request.merchant_refund_no.clone(),
            trade_id: trade.trade_id.clone(),
            order_no: request.order_no.clone(),
            amount: request.amount,
            reason: request.reason.clone(),
            fingerprint: request.fingerprint(),
            chain_state: ChainState::Reserved,
            error_code: None,
            error_message: None,
            expected_completion_ms: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            kind: RefundKind::Normal,
            operator: None,
            split_amounts: request.split_amounts.clone(),
        }
    }

    /// A new error refund in RESERVED for `request` on `trade`, raised by `operator`.
    pub fn reserve_error(
        refund_id: String,
        trade: &Trade,
        request: &ErrorRefundRequest,
        operator: &str,
        now_ms: i64,
    ) -> MerchantRefund {
        MerchantRefund {
            refund_id,
            merchant_id: trade.merchant_id.clone(),
            merchant_refund_no: error_refund_no(&trade.trade_id),
            trade_id: trade.trade_id.clone(),
            order_no: trade.order_no.clone(),
            amount: request.amount,
            reason: request.reason.clone(),
            fingerprint: request.fingerprint(),
            chain_state: ChainState::Reserved,
            error_code: None,
            error_message: None,
            expected_completion_ms: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            kind: request.kind,
            operator: Some(operator.to_string()),
            split_amounts: Vec::new(),
        }
    }

    /// A repeat of a trade's error refund: the same request, or a conflict.
    pub fn check_error_repeat(&self, request: &ErrorRefundRequest) -> Result<()> {
        if self.kind.is_error_refund() && self.fingerprint == request.fingerprint() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "trade {} already has an error refund {} with different content (one per trade)",
                    self.order_no, self.refund_id
                ),
            ))
        }
    }

    pub fn status(&self) -> RefundStatus {
        self.chain_state.merchant_status()
    }

    /// A repeat of the same merchant refund number: the same request, or a conflict.
    pub fn check_repeat(&self, request: &RefundRequest) -> Result<()> {
        if self.fingerprint == request.fingerprint() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "merchant_refund_no {} was used for a different refund",
                    self.merchant_refund_no
                ),
            ))
        }
    }
}

/// The code and message recorded for a final state reached by a reported outcome.
pub fn outcome_error(outcome: Outcome, reason: &str) -> (Option<String>, Option<String>) {
    let message = |default: &str| {
        if reason.trim().is_empty() {
            default.to_string()
        } else {
            reason.chars().take(MAX_REASON_CHARS).collect()
        }
    };
    match outcome {
        Outcome::Succeeded => (None, None),
        Outcome::Failed => (
            Some(ErrorCode::RefundFailed.as_str().to_string()),
            Some(message("the refund finally failed")),
        ),
        Outcome::Returned => (
            Some(ErrorCode::PayoutReturned.as_str().to_string()),
            Some(message("the bank returned the payout")),
        ),
    }
}

/// The currency of stored minor units.
pub fn money_from_storage(minor: i64, currency: &str) -> Result<Money> {
    let currency = Currency::parse(currency, "currency")
        .map_err(|e| Error::internal(format!("stored {}", e.message)))?;
    Ok(Money::from_minor(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    fn trade() -> Trade {
        Trade {
            trade_id: "tr_1".into(),
            merchant_id: "m1".into(),
            order_no: "o1".into(),
            channel: "NB".into(),
            amount: cny("100"),
            refunded: cny("0.01"),
            paid_at_ms: 1_000,
            settle_status: SettleStatus::Settled,
            payer_card_no: Some("6222020200112233".into()),
            payer_name: None,
            receivers: vec![],
            platform_subsidy: Money::zero(Currency::Cny),
            created_at_ms: 1_000,
        }
    }

    fn request(amount: &str, currency: &str) -> RefundRequest {
        RefundRequest::validate("r1", "o1", amount, currency, "broken").unwrap()
    }

    /// The whole state machine as a table: every (from, to) pair, allowed or not.
    #[test]
    fn transition_table() {
        use ChainState::*;
        let allowed = [
            (Reserved, Debited),
            (Reserved, Rejected),
            (Debited, Accepted),
            (Debited, Reversing),
            (Debited, Succeeded),
            (Debited, Failed),
            (Accepted, Succeeded),
            (Accepted, Failed),
            (Reversing, Rejected),
        ];
        for &from in ChainState::ALL {
            for &to in ChainState::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_move_to(to), expected, "{from} -> {to}");
                match from.transition(to) {
                    Ok(s) => assert!(expected && s == to),
                    Err(e) => {
                        assert!(!expected);
                        assert_eq!(e.code, ErrorCode::InvalidStateTransition);
                    }
                }
            }
            if from.is_final() {
                assert!(ChainState::ALL.iter().all(|&to| !from.can_move_to(to)));
            }
        }
    }

    #[test]
    fn merchant_status_table() {
        use ChainState::*;
        let table = [
            (Reserved, RefundStatus::Received, true, true),
            (Debited, RefundStatus::Received, true, true),
            (Reversing, RefundStatus::Received, true, true),
            (Accepted, RefundStatus::Processing, false, true),
            (Succeeded, RefundStatus::Succeeded, false, true),
            (Failed, RefundStatus::Failed, false, false),
            (Rejected, RefundStatus::Rejected, false, false),
        ];
        assert_eq!(table.len(), ChainState::ALL.len());
        for (state, status, in_flight, holds) in table {
            assert_eq!(state.merchant_status(), status, "{state}");
            assert_eq!(state.is_in_flight(), in_flight, "{state}");
            assert_eq!(state.holds_reservation(), holds, "{state}");
            assert!(status.chain_states().contains(&state));
            assert_eq!(ChainState::parse(state.as_str()).unwrap(), state);
        }
        assert!(ChainState::parse("NOPE").is_err());
    }

    #[test]
    fn outcomes_are_monotone_and_idempotent() {
        use ChainState::*;
        assert_eq!(
            apply_outcome(Accepted, Outcome::Succeeded).unwrap(),
            OutcomeAction::Apply(Succeeded)
        );
        assert_eq!(
            apply_outcome(Accepted, Outcome::Failed).unwrap(),
            OutcomeAction::Apply(Failed)
        );
        assert_eq!(
            apply_outcome(Debited, Outcome::Failed).unwrap(),
            OutcomeAction::Apply(Failed)
        );
        assert_eq!(
            apply_outcome(Succeeded, Outcome::Succeeded).unwrap(),
            OutcomeAction::AlreadyApplied
        );
        assert_eq!(
            apply_outcome(Failed, Outcome::Failed).unwrap(),
            OutcomeAction::AlreadyApplied
        );
        // The returned payout: the one way out of SUCCEEDED, and only for a return.
        assert_eq!(
            apply_outcome(Succeeded, Outcome::Returned).unwrap(),
            OutcomeAction::Return
        );
        assert_eq!(
            apply_outcome(Accepted, Outcome::Returned).unwrap(),
            OutcomeAction::Apply(Failed)
        );
        assert_eq!(
            apply_outcome(Failed, Outcome::Returned).unwrap(),
            OutcomeAction::AlreadyApplied
        );
        assert_eq!(Succeeded.return_transition().unwrap(), Failed);
        for &state in ChainState::ALL {
            if state != Succeeded {
                assert_eq!(
                    state.return_transition().unwrap_err().code,
                    ErrorCode::InvalidStateTransition
                );
            }
        }
        for (from, outcome) in [
            (Rejected, Outcome::Returned),
            (Reversing, Outcome::Returned),
            (Succeeded, Outcome::Failed),
            (Failed, Outcome::Succeeded),
            (Rejected, Outcome::Succeeded),
            (Reserved, Outcome::Succeeded),
            (Reversing, Outcome::Failed),
        ] {
            assert_eq!(
                apply_outcome(from, outcome).unwrap_err().code,
                ErrorCode::InvalidStateTransition
            );
        }
    }

    #[test]
    fn progress_reports() {
        use ChainState::*;
        assert_eq!(apply_progress(Debited).unwrap(), ProgressAction::Accept);
        assert_eq!(apply_progress(Accepted).unwrap(), ProgressAction::Update);
        assert_eq!(apply_progress(Succeeded).unwrap(), ProgressAction::Ignore);
        assert_eq!(apply_progress(Failed).unwrap(), ProgressAction::Ignore);
        for state in [Reserved, Reversing, Rejected] {
            assert_eq!(
                apply_progress(state).unwrap_err().code,
                ErrorCode::InvalidStateTransition
            );
        }
    }

    #[test]
    fn outcome_errors() {
        assert_eq!(outcome_error(Outcome::Succeeded, "x"), (None, None));
        assert_eq!(
            outcome_error(Outcome::Failed, ""),
            (
                Some("REFUND_FAILED".into()),
                Some("the refund finally failed".into())
            )
        );
        assert_eq!(
            outcome_error(Outcome::Returned, "ACCOUNT_CLOSED: account closed"),
            (
                Some("PAYOUT_RETURNED".into()),
                Some("ACCOUNT_CLOSED: account closed".into())
            )
        );
    }

    #[test]
    fn peer_verdicts() {
        assert_eq!(
            PeerVerdict::of(ErrorCode::InsufficientBalance),
            PeerVerdict::Refused
        );
        assert_eq!(
            PeerVerdict::of(ErrorCode::ChannelNotFound),
            PeerVerdict::Refused
        );
        assert_eq!(PeerVerdict::of(ErrorCode::Unavailable), PeerVerdict::Retry);
        assert_eq!(PeerVerdict::of(ErrorCode::Internal), PeerVerdict::Retry);
        assert_eq!(
            PeerVerdict::of(ErrorCode::IdempotencyConflict),
            PeerVerdict::Retry
        );
        // Every code a peer can refuse with travels as INVALID_ARGUMENT, NOT_FOUND or
        // FAILED_PRECONDITION.
        for &code in ErrorCode::ALL {
            let refusal = matches!(code.grpc_code(), 3 | 5 | 9);
            assert_eq!(
                PeerVerdict::of(code) == PeerVerdict::Refused,
                refusal,
                "{code}"
            );
        }
    }

    #[test]
    fn refund_request_validation_codes() {
        let code = |no: &str, order: &str, amount: &str, currency: &str, reason: &str| {
            RefundRequest::validate(no, order, amount, currency, reason)
                .unwrap_err()
                .code
        };
        assert_eq!(code("r1", "o1", "-1", "CNY", ""), ErrorCode::InvalidAmount);
        assert_eq!(code("r1", "o1", "0", "CNY", ""), ErrorCode::InvalidAmount);
        assert_eq!(
            code("r1", "o1", "1.001", "CNY", ""),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            code("r1", "o1", "1e13", "CNY", ""),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            code("r1", "o1", "10000000000000", "CNY", ""),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            code("r1", "o1", "1", "XXX", ""),
            ErrorCode::UnsupportedCurrency
        );
        assert_eq!(code("r 1", "o1", "1", "CNY", ""), ErrorCode::MalformedId);
        assert_eq!(
            code("r1", &"o".repeat(65), "1", "CNY", ""),
            ErrorCode::MalformedId
        );
        assert_eq!(code("", "o1", "1", "CNY", ""), ErrorCode::InvalidArgument);
        assert_eq!(
            code("r1", "o1", "1", "CNY", &"x".repeat(257)),
            ErrorCode::InvalidArgument
        );
        assert!(RefundRequest::validate("r1", "o1", "1", "CNY", &"字".repeat(256)).is_ok());
    }

    #[test]
    fn fingerprints_identify_the_request() {
        let a = request("10", "CNY");
        assert_eq!(a.fingerprint(), request("10.00", "CNY").fingerprint());
        assert_ne!(a.fingerprint(), request("10.01", "CNY").fingerprint());
        assert_ne!(a.fingerprint(), request("10", "HKD").fingerprint());
        let other_reason = RefundRequest::validate("r1", "o1", "10", "CNY", "other").unwrap();
        assert_ne!(a.fingerprint(), other_reason.fingerprint());
        // The refund number is the key, not part of the content.
        let other_no = RefundRequest::validate("r2", "o1", "10", "CNY", "broken").unwrap();
        assert_eq!(a.fingerprint(), other_no.fingerprint());
        let refund = MerchantRefund::reserve("rf_1".into(), "m1", &trade(), &a, 5);
        assert!(refund.check_repeat(&a).is_ok());
        assert_eq!(
            refund.check_repeat(&other_reason).unwrap_err().code,
            ErrorCode::IdempotencyConflict
        );
        assert_eq!(refund.status(), RefundStatus::Received);
    }

    #[test]
    fn refundability_rules() {
        let t = trade();
        let day = MS_PER_DAY;
        let ch = ChannelConfig::new("NB", 30, true).unwrap();
        let ok = request("10", "CNY");
        assert!(check_refundable(&t, Some(&ch), &ok, t.paid_at_ms + 30 * day).is_ok());
        let code = |t: &Trade, ch: Option<&ChannelConfig>, r: &RefundRequest, now: i64| {
            check_refundable(t, ch, r, now).unwrap_err().code
        };
        assert_eq!(
            code(&t, Some(&ch), &ok, t.paid_at_ms + 30 * day + 1),
            ErrorCode::RefundWindowExpired
        );
        // No channel row: the default window.
        assert!(check_refundable(&t, None, &ok, t.paid_at_ms + 365 * day).is_ok());
        assert_eq!(
            code(&t, None, &ok, t.paid_at_ms + 366 * day),
            ErrorCode::RefundWindowExpired
        );
        assert_eq!(
            code(&t, Some(&ch), &request("10", "HKD"), t.paid_at_ms),
            ErrorCode::CurrencyMismatch
        );
        assert_eq!(
            code(&t, Some(&ch), &request("100.01", "CNY"), t.paid_at_ms),
            ErrorCode::RefundExceedsPaid
        );
        let unsettled = Trade {
            settle_status: SettleStatus::Unsettled,
            ..t.clone()
        };
        assert_eq!(
            code(&unsettled, Some(&ch), &ok, t.paid_at_ms),
            ErrorCode::TradeNotRefundable
        );
        let disabled = ChannelConfig::new("NB", 30, false).unwrap();
        assert_eq!(
            code(&t, Some(&disabled), &ok, t.paid_at_ms),
            ErrorCode::TradeNotRefundable
        );
    }

    #[test]
    fn channels_merchants_and_payments() {
        assert_eq!(
            ChannelConfig::new("NB", 0, true)
                .unwrap()
                .refund_window_days,
            DEFAULT_REFUND_WINDOW_DAYS
        );
        assert!(ChannelConfig::new("NB", 3651, true).is_err());
        assert_eq!(
            ChannelConfig::new("N B", 1, true).unwrap_err().code,
            ErrorCode::MalformedId
        );

        let m = Merchant::new("m1", "Shop", "0123456789abcdef", 1).unwrap();
        assert_eq!(m.api_key_hash, hash_api_key("0123456789abcdef"));
        assert_eq!(m.api_key_hash.len(), 64);
        assert!(Merchant::new("m1", "Shop", "short", 1).is_err());
        assert!(Merchant::new("m1", " ", "0123456789abcdef", 1).is_err());
        assert!(m.same_content(&Merchant::new("m1", "Shop", "0123456789abcdef", 9).unwrap()));
        assert!(!m.same_content(&Merchant::new("m1", "Shop", "0123456789abcdeX", 1).unwrap()));

        let fields = PaymentFields {
            merchant_id: "m1",
            order_no: "o1",
            channel: "NB",
            amount: "100",
            currency: "CNY",
            paid_at_ms: 5,
            payer_card_no: "6222020200112233",
            payer_name: "Li Lei",
            receivers: &[],
            platform_subsidy: "",
        };
        let p = NewPayment::validate(fields).unwrap();
        let t = p.clone().into_trade("tr_1".into(), 9);
        assert!(p.matches(&t));
        assert_eq!(t.masked_card(), "************2233");
        assert_eq!(t.refunded.to_minor(), 0);
        let bad = |f: PaymentFields<'_>| NewPayment::validate(f).unwrap_err().code;
        for card in ["1234", "12345678901234567890", "6222-0202-0011-2233"] {
            assert_eq!(
                bad(PaymentFields {
                    payer_card_no: card,
                    ..fields
                }),
                ErrorCode::InvalidArgument
            );
        }
        assert_eq!(
            bad(PaymentFields {
                paid_at_ms: 0,
                ..fields
            }),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            bad(PaymentFields {
                amount: "0",
                ..fields
            }),
            ErrorCode::InvalidAmount
        );
        let long_name = "x".repeat(65);
        assert_eq!(
            bad(PaymentFields {
                payer_name: &long_name,
                ..fields
            }),
            ErrorCode::InvalidArgument
        );
        let no_card = NewPayment::validate(PaymentFields {
            payer_card_no: "",
            payer_name: "",
            ..fields
        })
        .unwrap();
        assert_eq!(no_card.payer_card_no, None);
        assert!(!no_card.matches(&t));
        assert_eq!(mask_card(""), "");
        assert_eq!(mask_card("123"), "123");
        // Debug never shows the card.
        assert!(!format!("{t:?}").contains("6222020200112233"));
        assert!(!format!("{p:?}").contains("6222020200112233"));
        assert!(format!("{t:?}").contains("2233"));
    }

    #[test]
    fn splits_and_subsidies() {
        let total = cny("100");
        let s = validate_splits(&[("m2", "40"), ("m1", "60.00")], &total, "receivers").unwrap();
        assert_eq!(s[0].receiver_id, "m1");
        assert_eq!(s[0].amount, cny("60"));
        assert!(validate_splits(&[], &total, "receivers")
            .unwrap()
            .is_empty());
        let err = |raw: &[(&str, &str)]| validate_splits(raw, &total, "receivers").unwrap_err();
        let e = err(&[("m1", "60"), ("m2", "39.99")]);
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.starts_with("receivers: "), "{}", e.message);
        let e = err(&[("m1", "50"), ("m1", "50")]);
        assert!(
            e.message.starts_with("receivers[1].receiver_id"),
            "{}",
            e.message
        );
        let e = err(&[("m1", "0"), ("m2", "100")]);
        assert_eq!(e.code, ErrorCode::InvalidAmount);
        assert!(
            e.message.starts_with("receivers[0].amount"),
            "{}",
            e.message
        );
        assert_eq!(err(&[("m 1", "100")]).code, ErrorCode::MalformedId);
        assert_eq!(
            err(&[("m1", "1.001"), ("m2", "98.999")]).code,
            ErrorCode::InvalidAmount
        );
        let many: Vec<(String, &str)> = (0..51).map(|i| (format!("m{i}"), "1")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        assert!(err(&many).message.contains("more than 50"));

        assert!(parse_subsidy("", &total).unwrap().is_zero());
        assert!(parse_subsidy("0.00", &total).unwrap().is_zero());
        assert_eq!(parse_subsidy("5.5", &total).unwrap(), cny("5.50"));
        for bad in ["100", "101", "-1", "1.001", "x"] {
            let e = parse_subsidy(bad, &total).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAmount, "{bad}");
            assert!(e.message.starts_with("platform_subsidy"), "{}", e.message);
        }

        // Refund split amounts against a split trade.
        let split_trade = Trade {
            receivers: s.clone(),
            ..trade()
        };
        let req = request("10", "CNY")
            .with_split_amounts(&[("m1", "6"), ("m2", "4")])
            .unwrap();
        assert_ne!(req.fingerprint(), request("10", "CNY").fingerprint());
        let ch = ChannelConfig::new("NB", 30, true).unwrap();
        assert!(check_refundable(&split_trade, Some(&ch), &req, 1_000).is_ok());
        // Not split, an unknown receiver, above a share, not summing to the amount.
        let e = check_refundable(&trade(), Some(&ch), &req, 1_000).unwrap_err();
        assert!(e.message.starts_with("split_amounts: "), "{}", e.message);
        let other = request("10", "CNY")
            .with_split_amounts(&[("m1", "6"), ("m9", "4")])
            .unwrap();
        let e = check_refundable(&split_trade, Some(&ch), &other, 1_000).unwrap_err();
        assert!(
            e.message.starts_with("split_amounts[1].receiver_id"),
            "{}",
            e.message
        );
        let big = Trade {
            receivers: validate_splits(&[("m1", "99"), ("m2", "1")], &total, "r").unwrap(),
            ..trade()
        };
        let e = check_refundable(&big, Some(&ch), &req, 1_000).unwrap_err();
        assert!(
            e.message.starts_with("split_amounts[1].amount"),
            "{}",
            e.message
        );
        let e = request("10", "CNY")
            .with_split_amounts(&[("m1", "6")])
            .unwrap_err();
        assert!(e.message.starts_with("split_amounts: "), "{}", e.message);
        // The error-refund prefix is reserved.
        for no in ["ERR-tr_1", "err-x"] {
            let e = RefundRequest::validate(no, "o1", "1", "CNY", "").unwrap_err();
            assert!(e.message.contains("reserved"), "{}", e.message);
        }
    }

    #[test]
    fn error_refund_rules() {
        let t = trade();
        let t = Trade {
            refunded: Money::zero(Currency::Cny),
            ..t
        };
        let req = |kind, amount: &str| {
            ErrorRefundRequest::validate("m1", "o1", Some(kind), amount, "CNY", "paid twice")
        };
        let full = req(RefundKind::DuplicatePayment, "100").unwrap();
        assert!(check_error_refundable(&t, &full).is_ok());
        let partial = req(RefundKind::DuplicatePayment, "99.99").unwrap();
        let e = check_error_refundable(&t, &partial).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.starts_with("amount: "), "{}", e.message);
        assert!(e.message.contains("partial"), "{}", e.message);
        let busy = Trade {
            refunded: cny("0.01"),
            ..t.clone()
        };
        assert_eq!(
            check_error_refundable(&busy, &full).unwrap_err().code,
            ErrorCode::TradeNotRefundable
        );
        let unsettled = Trade {
            settle_status: SettleStatus::Unsettled,
            ..t.clone()
        };
        assert_eq!(
            check_error_refundable(&unsettled, &full).unwrap_err().code,
            ErrorCode::TradeNotRefundable
        );
        let hkd = ErrorRefundRequest::validate(
            "m1",
            "o1",
            Some(RefundKind::ExpiredOrder),
            "100",
            "HKD",
            "late",
        )
        .unwrap();
        assert_eq!(
            check_error_refundable(&t, &hkd).unwrap_err().code,
            ErrorCode::CurrencyMismatch
        );
        // Kind and reason are required.
        for kind in [None, Some(RefundKind::Normal)] {
            let e = ErrorRefundRequest::validate("m1", "o1", kind, "1", "CNY", "x").unwrap_err();
            assert!(e.message.starts_with("kind: "), "{}", e.message);
        }
        let e = ErrorRefundRequest::validate(
            "m1",
            "o1",
            Some(RefundKind::ExpiredOrder),
            "1",
            "CNY",
            " ",
        )
        .unwrap_err();
        assert!(e.message.starts_with("reason: "), "{}", e.message);

        // One per trade: its number, and repeats.
        let r = MerchantRefund::reserve_error("rf_1".into(), &t, &full, "alice", 7);
        assert_eq!(r.merchant_refund_no, "ERR-tr_1");
        assert_eq!(r.kind, RefundKind::DuplicatePayment);
        assert_eq!(r.operator.as_deref(), Some("alice"));
        assert!(r.check_error_repeat(&full).is_ok());
        let expired = req(RefundKind::ExpiredOrder, "100").unwrap();
        assert_eq!(
            r.check_error_repeat(&expired).unwrap_err().code,
            ErrorCode::IdempotencyConflict
        );
        assert_ne!(full.fingerprint(), expired.fingerprint());
        for k in [
            RefundKind::Normal,
            RefundKind::DuplicatePayment,
            RefundKind::ExpiredOrder,
        ] {
            assert_eq!(RefundKind::parse(k.as_str()).unwrap(), k);
        }
        for st in [
            RefundStatus::Received,
            RefundStatus::Rejected,
            RefundStatus::Processing,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
        ] {
            assert_eq!(RefundStatus::parse(st.as_str()).unwrap(), st);
        }
    }
}
