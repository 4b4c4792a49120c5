//! The refund center's domain: channels and their refund methods, refund orders with their two
//! status dimensions, the explicit state transitions, method selection at acceptance and the
//! finalisation steps. Pure: no storage, no RPC.
//!
//! A refund order carries two independent dimensions (DESIGN §5):
//! - [`SubmitStatus`]: whether the order was handed to its method (PENDING → SUBMITTED or
//!   SUBMIT_FAILED);
//! - [`RefundStatus`]: the money outcome (PROCESSING → SUCCEEDED or FAILED), made final only by
//!   reconciliation ([`RefundOrder::finalize`]).
//!
//! Besides them, [`BankStatus`] keeps what the bank last said. It only moves forward
//! ([`RefundOrder::apply_bank_event`]): a late, duplicated or out-of-order bank callback changes
//! nothing, and the bank never makes an order final.

use std::fmt;

use chrono::NaiveDate;
use tuikuan_kernel::bank_ref::IdScheme;
use tuikuan_kernel::clock::{business_date, start_of_business_date};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, WorkingCalendar};

pub mod bank_ids;
pub mod batch;
pub mod people;

/// How long after payment the original route (interface) takes refunds, unless the channel says
/// otherwise.
pub const DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS: u32 = 180;
/// The longest original-route window a channel may configure (ten years).
pub const MAX_ORIGINAL_ROUTE_WINDOW_DAYS: u32 = 3650;
/// The longest free-text field (reasons, payer names) accepted from outside, in characters.
pub const MAX_TEXT_LEN: usize = 512;
/// The longest card number accepted.
pub const MAX_CARD_NO_LEN: usize = 32;

const MS_PER_DAY: i64 = 86_400_000;

// One definition of `string_enum!` for the workspace: the kernel's.
use tuikuan_kernel::string_enum;

pub mod control;
pub mod reinstate;
pub mod reopen;

string_enum!(
    /// Why a refund exists: an ordinary merchant refund, or an error refund (差错退款) of a
    /// payment that should not have been taken.
    RefundKind {
        Normal => "NORMAL",
        /// The payer paid the same order twice.
        ErrorDuplicate => "ERROR_DUPLICATE",
        /// The payment arrived after its order expired.
        ErrorExpired => "ERROR_EXPIRED",
    }
);

string_enum!(
    /// The risk-review state of an order (风控拦截); absent when it was never held.
    HoldStatus {
        /// Waiting for a risk decision: nothing is sent.
        Held => "HELD",
        /// Released by risk: dispatch continues as normal.
        Released => "RELEASED",
        /// Rejected by risk: the order failed and its debit is reversed.
        Rejected => "REJECTED",
    }
);

impl RefundKind {
    /// Whether this is an error refund (full amount only).
    pub fn is_error(self) -> bool {
        !matches!(self, RefundKind::Normal)
    }
}

string_enum!(
    /// The route a payment came in by (通道类型).
    ChannelKind {
        /// 网银
        NetBanking => "NET_BANKING",
        /// 聚合 (WeChat / Alipay)
        Aggregated => "AGGREGATED",
        /// 快捷
        QuickPay => "QUICK_PAY",
        /// 代扣
        Withholding => "WITHHOLDING",
        /// 银联
        UnionPay => "UNIONPAY",
    }
);

string_enum!(
    /// How a refund reaches the customer.
    RefundMethod {
        /// 接口退款: the bank's refund API, sent by the interface cycle.
        Interface => "INTERFACE",
        /// 打款退款: pay the cardholder through the payout center.
        Payout => "PAYOUT",
        /// 上传文件退款: a daily spreadsheet uploaded to the bank's site.
        FileUpload => "FILE_UPLOAD",
        /// 线下退款: a daily spreadsheet sent by fax, e-mail or paper.
        Offline => "OFFLINE",
    }
);

string_enum!(
    /// Whether the order was handed to its method.
    SubmitStatus {
        Pending => "PENDING",
        Submitted => "SUBMITTED",
        SubmitFailed => "SUBMIT_FAILED",
    }
);

string_enum!(
    /// The money outcome. Only reconciliation (or, later, an audited manual action) makes it final.
    RefundStatus {
        Processing => "PROCESSING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        /// After SUCCEEDED: the bank returned the payout (退票); the money goes back to the merchant.
        Returned => "RETURNED",
    }
);

string_enum!(
    /// How one attempt of an order ended (or where it stands).
    AttemptOutcome {
        /// Started, not handed to its method yet (or the hand-over's answer is unknown).
        Pending => "PENDING",
        /// Handed over: the bank, the payout center or a marked batch has it.
        Submitted => "SUBMITTED",
        /// Known not to pay: refused up front, refused by the bank, failed or returned.
        Failed => "FAILED",
        /// Reconciliation confirmed it.
        Succeeded => "SUCCEEDED",
    }
);

string_enum!(
    /// What the bank last said about an order. Never final by itself.
    BankStatus {
        Accepted => "BANK_ACCEPTED",
        Processing => "BANK_PROCESSING",
        Succeeded => "BANK_SUCCEEDED",
        Failed => "BANK_FAILED",
    }
);

string_enum!(
    /// A finalisation step delivered through the outbox after an order became final.
    OutboxStep {
        /// clearing.CompleteDebit: refund in transit → channel reserve.
        ClearingComplete => "CLEARING_COMPLETE",
        /// clearing.ReverseDebit: refund in transit → back where it was debited from.
        ClearingReverse => "CLEARING_REVERSE",
        /// business.ReportRefundOutcome: the merchant-facing refund learns the outcome.
        NotifyBusiness => "NOTIFY_BUSINESS",
        /// clearing.ReturnDebit: a returned payout's money, channel reserve → merchant.
        ClearingReturn => "CLEARING_RETURN",
        /// business.ReportRefundOutcome(FAILED, returned): the merchant learns of the return.
        NotifyReturned => "NOTIFY_RETURNED",
        /// clearing.ReinstateDebit: a FAILED refund the bank paid is taken from the merchant
        /// again ([`reinstate`]).
        ClearingReinstate => "CLEARING_REINSTATE",
        /// clearing.ReopenDebit: the completion of an attempt the bank failed is undone
        /// ([`reopen`]).
        ClearingReopen => "CLEARING_REOPEN",
        /// business.ReportRefundOutcome(PROCESSING, reopened): the merchant sees PROCESSING again.
        NotifyReopened => "NOTIFY_REOPENED",
    }
);

impl ChannelKind {
    /// The kind's default refund methods, in order of preference (DESIGN §2.3).
    pub fn default_methods(self) -> Vec<RefundMethod> {
        match self {
            ChannelKind::NetBanking | ChannelKind::Aggregated => vec![RefundMethod::Interface],
            ChannelKind::QuickPay | ChannelKind::Withholding => vec![RefundMethod::Payout],
            ChannelKind::UnionPay => vec![RefundMethod::FileUpload],
        }
    }
}

impl RefundStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RefundStatus::Processing)
    }
}

impl BankStatus {
    /// Progress order of bank answers: ACCEPTED < PROCESSING < SUCCEEDED = FAILED.
    pub fn rank(self) -> u8 {
        match self {
            BankStatus::Accepted => 1,
            BankStatus::Processing => 2,
            BankStatus::Succeeded | BankStatus::Failed => 3,
        }
    }
}

/// A final refund outcome, as reconciliation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Succeeded,
    Failed,
}

impl FinalStatus {
    pub fn refund_status(self) -> RefundStatus {
        match self {
            FinalStatus::Succeeded => RefundStatus::Succeeded,
            FinalStatus::Failed => RefundStatus::Failed,
        }
    }

    pub fn from_refund_status(status: RefundStatus) -> Option<FinalStatus> {
        match status {
            RefundStatus::Processing | RefundStatus::Returned => None,
            RefundStatus::Succeeded => Some(FinalStatus::Succeeded),
            RefundStatus::Failed => Some(FinalStatus::Failed),
        }
    }

    /// The outbox steps that deliver this outcome, in order: first the clearing posting, then the
    /// business notification (so the merchant hears of it only once the money is where it says).
    pub fn outbox_steps(self) -> [OutboxStep; 2] {
        match self {
            FinalStatus::Succeeded => [OutboxStep::ClearingComplete, OutboxStep::NotifyBusiness],
            FinalStatus::Failed => [OutboxStep::ClearingReverse, OutboxStep::NotifyBusiness],
        }
    }
}

/// One finalisation step of one order, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub refund_id: String,
    pub step: OutboxStep,
    /// Position among the order's steps; steps run in this order.
    pub ordinal: i32,
    pub done: bool,
    pub attempts: i32,
    pub last_error: String,
}

impl OutboxEntry {
    /// The steps an order that became `status` must deliver. The id is derived from the refund and
    /// the step, so the same step can never be written twice.
    pub fn for_final(refund_id: &str, status: FinalStatus) -> Vec<OutboxEntry> {
        status
            .outbox_steps()
            .iter()
            .zip(1..)
            .map(|(step, ordinal)| OutboxEntry {
                id: format!("{refund_id}:{step}"),
                refund_id: refund_id.to_string(),
                step: *step,
                ordinal,
                done: false,
                attempts: 0,
                last_error: String::new(),
            })
            .collect()
    }

    /// The steps of a payout returned after the order succeeded: the money goes back to the
    /// merchant, then the business layer hears of it. They follow the success steps (ordinals 3
    /// and 4), so the merchant hears "succeeded" before "returned".
    pub fn for_return(refund_id: &str) -> Vec<OutboxEntry> {
        [OutboxStep::ClearingReturn, OutboxStep::NotifyReturned]
            .iter()
            .zip(3..)
            .map(|(step, ordinal)| OutboxEntry {
                id: format!("{refund_id}:{step}"),
                refund_id: refund_id.to_string(),
                step: *step,
                ordinal,
                done: false,
                attempts: 0,
                last_error: String::new(),
            })
            .collect()
    }
}

/// What one run of the interface cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleCounts {
    /// Submissions sent to the bank.
    pub sent: u32,
    /// The bank accepted them (now SUBMITTED).
    pub accepted: u32,
    /// The bank refused them synchronously (now SUBMIT_FAILED, waiting for people).
    pub rejected: u32,
    /// No answer (transport error or a bank error): still PENDING, retried next cycle.
    pub errors: u32,
    /// Unfinished orders that wait for people (no automatic method can move them).
    pub waiting: u32,
    /// Refused orders that fell back to their next method (included in `rejected`).
    pub fell_back: u32,
}

/// What one outbox run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub delivered: u32,
    pub failed: u32,
    /// Steps still undelivered after the run.
    pub remaining: u32,
}

/// A configured channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub code: String,
    pub kind: ChannelKind,
    /// Methods in order of preference; empty means [`ChannelKind::default_methods`].
    pub methods: Vec<RefundMethod>,
    pub original_route_window_days: u32,
    pub bank_code: String,
    /// The rules of the ids the channel's bank is given (`None`: the kind's default).
    pub id_scheme: Option<IdScheme>,
}

impl Channel {
    /// Checks the configuration (ids, no repeated method, window bounds).
    pub fn validate(&self) -> Result<()> {
        validate_external_id(&self.code, "code")?;
        if !self.bank_code.is_empty() {
            validate_external_id(&self.bank_code, "bank_code")?;
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(Error::field("methods", format!("{m} is listed twice")));
            }
        }
        if self.original_route_window_days == 0
            || self.original_route_window_days > MAX_ORIGINAL_ROUTE_WINDOW_DAYS
        {
            return Err(Error::field(
                "original_route_window_days",
                format!("must be between 1 and {MAX_ORIGINAL_ROUTE_WINDOW_DAYS}"),
            ));
        }
        Ok(())
    }

    /// The methods that apply: the configured ones, or the kind's defaults.
    pub fn effective_methods(&self) -> Vec<RefundMethod> {
        if self.methods.is_empty() {
            self.kind.default_methods()
        } else {
            self.methods.clone()
        }
    }

    /// Whether the original route still takes a refund of a payment made at `paid_at_ms`.
    pub fn within_original_route_window(&self, paid_at_ms: i64, now_ms: i64) -> bool {
        let window_ms = i64::from(self.original_route_window_days) * MS_PER_DAY;
        now_ms.saturating_sub(paid_at_ms) <= window_ms
    }
}

/// A refund request as accepted from the business layer, validated. Its `Debug` masks the card.
#[derive(Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub refund_id: String,
    pub merchant_id: String,
    pub trade_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    pub trade_paid_at_ms: i64,
    pub payer_card_no: String,
    pub payer_name: String,
    pub kind: RefundKind,
    /// The trade's paid amount, when the caller gave it (required for error refunds).
    pub trade_amount: Option<Money>,
}

impl NewRefund {
    /// Checks every field that [`Money::parse`] did not already check.
    pub fn validate(&self) -> Result<()> {
        validate_external_id(&self.refund_id, "refund_id")?;
        validate_external_id(&self.merchant_id, "merchant_id")?;
        validate_external_id(&self.trade_id, "trade_id")?;
        validate_external_id(&self.order_no, "order_no")?;
        validate_external_id(&self.channel, "channel")?;
        if !self.amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                "amount: must be greater than zero",
            ));
        }
        if self.trade_paid_at_ms <= 0 {
            return Err(Error::field("trade_paid_at_ms", "is required"));
        }
        if self.payer_card_no.len() > MAX_CARD_NO_LEN
            || !self.payer_card_no.chars().all(|c| c.is_ascii_digit())
        {
            return Err(Error::field(
                "payer_card_no",
                format!("must be at most {MAX_CARD_NO_LEN} digits"),
            ));
        }
        validate_text(&self.payer_name, "payer_name")?;
        if let Some(paid) = &self.trade_amount {
            if paid.currency() != self.amount.currency() {
                return Err(Error::new(
                    ErrorCode::CurrencyMismatch,
                    format!(
                        "trade_amount: is in {}, the refund in {}",
                        paid.currency().code(),
                        self.amount.currency().code()
                    ),
                ));
            }
            if self.amount.to_minor() > paid.to_minor() {
                return Err(Error::new(
                    ErrorCode::RefundExceedsPaid,
                    format!("amount: {} is more than the trade's {paid}", self.amount),
                ));
            }
        }
        if self.kind.is_error() {
            let Some(paid) = &self.trade_amount else {
                return Err(Error::field(
                    "trade_amount",
                    "is required for an error refund (error refunds are full-amount only)",
                ));
            };
            if paid.to_minor() != self.amount.to_minor() {
                return Err(Error::field("amount", ERROR_REFUND_FULL_AMOUNT_ONLY));
            }
        }
        Ok(())
    }

    /// A canonical form of the request's content: two requests with the same refund id are the
    /// same request exactly when their fingerprints are equal. Length-prefixed, so no field can
    /// bleed into the next.
    pub fn fingerprint(&self) -> String {
        let amount_minor = self.amount.to_minor().to_string();
        let paid = self.trade_paid_at_ms.to_string();
        let fields: [&str; 9] = [
            &self.merchant_id,
            &self.trade_id,
            &self.order_no,
            &self.channel,
            &amount_minor,
            self.amount.currency().code(),
            &paid,
            &self.payer_card_no,
            &self.payer_name,
        ];
        let mut out = String::from("v1");
        let kind = self.kind.as_str();
        // Ordinary refunds keep the fingerprint they had before kinds existed (orders stored then
        // still answer their repeats); error refunds add their kind.
        let extra: &[&str] = if self.kind.is_error() { &[kind] } else { &[] };
        for f in fields.iter().chain(extra) {
            out.push('|');
            out.push_str(&f.len().to_string());
            out.push(':');
            out.push_str(f);
        }
        out
    }
}

/// The message of a partial error refund's rejection (INVALID_ARGUMENT naming `amount`).
pub const ERROR_REFUND_FULL_AMOUNT_ONLY: &str = "error refunds are full-amount only";

impl fmt::Debug for NewRefund {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRefund")
            .field("refund_id", &self.refund_id)
            .field("merchant_id", &self.merchant_id)
            .field("trade_id", &self.trade_id)
            .field("order_no", &self.order_no)
            .field("channel", &self.channel)
            .field("amount", &self.amount)
            .field("trade_paid_at_ms", &self.trade_paid_at_ms)
            .field("payer_card_no", &mask_card(&self.payer_card_no))
            .field("kind", &self.kind)
            .field("trade_amount", &self.trade_amount)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RefundOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefundOrder")
            .field("refund_id", &self.refund_id)
            .field("merchant_id", &self.merchant_id)
            .field("trade_id", &self.trade_id)
            .field("channel", &self.channel)
            .field("amount", &self.amount)
            .field("kind", &self.kind)
            .field("payer_card_no", &mask_card(&self.payer_card_no))
            .field("method", &self.method)
            .field("submit_status", &self.submit_status)
            .field("refund_status", &self.refund_status)
            .field("bank_status", &self.bank_status)
            .field("bank_seq", &self.bank_seq)
            .field("reason", &self.reason)
            .field("attempt", &self.attempt)
            .field("bank_reference_id", &self.bank_reference_id)
            .field("hold_status", &self.hold_status)
            .field("hold_rule_id", &self.hold_rule_id)
            .field("suspended", &self.suspended)
            .field("final_source", &self.final_source)
            .field("attempts", &self.attempts)
            .field("pending_steps", &self.pending_steps)
            .finish_non_exhaustive()
    }
}

/// Checks a free-text field: bounded, no control characters.
pub fn validate_text(value: &str, field: &str) -> Result<()> {
    if value.chars().count() > MAX_TEXT_LEN {
        return Err(Error::field(
            field,
            format!("longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Method choice

/// Reason codes of a failed refund that another method can fix (the bank's reasons read
/// `"CODE: text"`): the card was cancelled, the account closed, the original route's window passed.
pub const FALLBACK_REASON_CODES: &[&str] = &["CARD_CANCELLED", "ACCOUNT_CLOSED", "BEYOND_WINDOW"];

/// Whether a failure with this reason can be fixed by the next method (by its leading code).
pub fn is_fallback_reason(reason: &str) -> bool {
    FALLBACK_REASON_CODES.contains(&reason_code(reason).as_str())
}

/// The leading code of a reason (`CODE: text`).
pub fn reason_code(reason: &str) -> String {
    reason
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
        .collect()
}

/// The shortest card number a payout takes.
pub const MIN_PAYOUT_CARD_LEN: usize = 12;
/// The longest card number a payout takes.
pub const MAX_PAYOUT_CARD_LEN: usize = 19;

/// The Luhn check of a string of ASCII digits (false for anything else or an empty string).
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Why a card number cannot take a payout, or `None` when it can.
pub fn card_problem(card_no: &str) -> Option<String> {
    if card_no.is_empty() {
        return Some("NO_CARD: the trade carries no payer card number".to_string());
    }
    if !card_no.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!(
            "INVALID_CARD: the payer card number {} is not all digits",
            mask_card(card_no)
        ));
    }
    if !(MIN_PAYOUT_CARD_LEN..=MAX_PAYOUT_CARD_LEN).contains(&card_no.len()) {
        return Some(format!(
            "INVALID_CARD: the payer card number {} has {} digits, not {MIN_PAYOUT_CARD_LEN} to {MAX_PAYOUT_CARD_LEN}",
            mask_card(card_no),
            card_no.len()
        ));
    }
    if !luhn_valid(card_no) {
        return Some(format!(
            "INVALID_CARD: the payer card number {} fails the Luhn check",
            mask_card(card_no)
        ));
    }
    None
}

/// A card number for logs and responses: the last four digits only (`**** 1234`); empty stays
/// empty.
pub fn mask_card(card_no: &str) -> String {
    if card_no.is_empty() {
        return String::new();
    }
    let chars: Vec<char> = card_no.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("**** {tail}")
}

/// The longest id the bank and the payout center accept.
const MAX_REFERENCE_LEN: usize = 64;

/// The natural id the bank (or the payout center) knows an attempt by, before it is fitted to the
/// channel's rules ([`Channel::reference_for`]): the refund id for the first interface attempt, `{refund_id}-{n}` for later ones, `po_{refund_id}_{n}` for payouts; empty for
/// file-upload and offline attempts, whose batch row id is assigned when a batch takes them. An id
/// that would be longer than 64 characters uses a digest of the refund id instead.
pub fn bank_reference_for(method: RefundMethod, refund_id: &str, attempt: u32) -> String {
    let shorten = |id: String| -> String {
        if id.len() <= MAX_REFERENCE_LEN {
            return id;
        }
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(refund_id.as_bytes()));
        let short = &digest[..40];
        match method {
            RefundMethod::Payout => format!("po_{short}_{attempt}"),
            _ => format!("{short}-{attempt}"),
        }
    };
    match method {
        RefundMethod::Interface if attempt <= 1 => refund_id.to_string(),
        RefundMethod::Interface => shorten(format!("{refund_id}-{attempt}")),
        RefundMethod::Payout => shorten(format!("po_{refund_id}_{attempt}")),
        RefundMethod::FileUpload | RefundMethod::Offline => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Expected completion

/// A payout is expected to complete this long after the payout center accepted it.
pub const PAYOUT_EXPECTED_MS: i64 = 30 * 60 * 1000;
/// An interface refund is expected by the end of this many working days after submission.
pub const INTERFACE_WORKING_DAYS: u32 = 7;
/// A file-upload or offline refund is expected by the end of this many working days after its
/// batch's working day.
pub const BATCH_WORKING_DAYS: u32 = 1;

/// The last millisecond of a business date.
pub fn end_of_business_date_ms(date: NaiveDate) -> i64 {
    start_of_business_date(date).timestamp_millis() + MS_PER_DAY - 1
}

/// When an attempt of `method` started (or submitted) at `from_ms` is expected to complete:
/// payout: 30 minutes later; interface: the end of the 7th working day after the business date;
/// file-upload and offline: the end of the working day after the batch's working day (the batch
/// is the first working day on or after the business date).
pub fn expected_completion(method: RefundMethod, from_ms: i64, calendar: &WorkingCalendar) -> i64 {
    let date = business_date(from_ms_to_utc(from_ms));
    match method {
        RefundMethod::Payout => from_ms + PAYOUT_EXPECTED_MS,
        RefundMethod::Interface => {
            end_of_business_date_ms(calendar.add_working_days(date, INTERFACE_WORKING_DAYS))
        }
        RefundMethod::FileUpload | RefundMethod::Offline => {
            expected_for_batch(calendar.this_or_next_working_day(date), calendar)
        }
    }
}

/// When the rows of a batch of `batch_date` are expected to complete.
pub fn expected_for_batch(batch_date: NaiveDate, calendar: &WorkingCalendar) -> i64 {
    end_of_business_date_ms(calendar.add_working_days(batch_date, BATCH_WORKING_DAYS))
}

fn from_ms_to_utc(ms: i64) -> chrono::DateTime<chrono::Utc> {
    tuikuan_kernel::clock::from_ms(ms)
}

// ---------------------------------------------------------------------------------------------
// Refund orders

/// One attempt of an order: one method, tried once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1, 2, ...
    pub number: u32,
    pub method: RefundMethod,
    /// The id the bank knows this attempt by (empty for an attempt refused up front, and for a
    /// file-upload or offline attempt until a batch takes it).
    pub bank_reference_id: String,
    pub outcome: AttemptOutcome,
    pub reason: String,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// A refund order. Its method, submit status and bank fields describe the current attempt. Its
/// `Debug` masks the card number (orders may end up in logs).
#[derive(Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub refund_id: String,
    pub merchant_id: String,
    pub trade_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    pub trade_paid_at_ms: i64,
    /// Full card number: only in storage, for the payout and the spreadsheets; never logged.
    pub payer_card_no: String,
    pub payer_name: String,
    pub method: RefundMethod,
    pub submit_status: SubmitStatus,
    pub refund_status: RefundStatus,
    /// What the bank last said about the current attempt; `None` before it said anything.
    pub bank_status: Option<BankStatus>,
    /// The sequence number of the last applied bank or payout event of the current attempt.
    pub bank_seq: Option<u64>,
    pub bank_ref: String,
    /// Why the order waits, fell back or failed (human-readable).
    pub reason: String,
    /// No automatic method will move this order: it waits for people.
    pub waiting_manual: bool,
    pub fingerprint: String,
    pub created_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finalized_at_ms: Option<i64>,
    pub final_source: String,
    /// The current attempt's number.
    pub attempt: u32,
    /// The current attempt's bank reference id.
    pub bank_reference_id: String,
    /// When the current attempt is expected to complete.
    pub expected_completion_ms: Option<i64>,
    /// Every attempt, in order (refused-up-front ones included).
    pub attempts: Vec<Attempt>,
    /// Finalisation steps not delivered yet (filled by the store).
    pub pending_steps: u32,
    pub kind: RefundKind,
    /// Risk review: `None` when never held.
    pub hold_status: Option<HoldStatus>,
    /// The rule that held the order and why (empty when never held).
    pub hold_rule_id: String,
    pub hold_reason: String,
    /// An operator stopped automatic processing (挂起).
    pub suspended: bool,
}

/// A bank answer or callback about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankEvent {
    pub status: BankStatus,
    pub sequence: u64,
    pub bank_ref: String,
    pub reason: String,
}

/// The result of a transition that may be a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order changed.
    Changed,
    /// The order already was in the requested state; nothing changed.
    Unchanged,
}

/// How a failed attempt ended the order's current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The next method started (a new attempt, PENDING); the order stays PROCESSING.
    FellBack(RefundMethod),
    /// No method is left: the order is final FAILED (its debit must be reversed).
    Exhausted,
}

/// What the payout center says about a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutState {
    Sent,
    Paid,
    Failed,
    Returned,
}

impl PayoutState {
    pub fn parse(s: &str) -> Option<PayoutState> {
        match s {
            "SENT" => Some(PayoutState::Sent),
            "PAID" => Some(PayoutState::Paid),
            "FAILED" => Some(PayoutState::Failed),
            "RETURNED" => Some(PayoutState::Returned),
            _ => None,
        }
    }
}

/// A payout center update, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutUpdate {
    pub payout_id: String,
    pub state: PayoutState,
    pub sequence: u64,
    pub reason: String,
    pub bank_ref: String,
}

/// What a payout update did to its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutEffect {
    /// Late, duplicated, out of order, for an earlier attempt, or the order is final: nothing.
    Ignored,
    /// The bank status moved (SENT, PAID): not final.
    Progressed,
    /// The payout failed (or came back before the order was final): the attempt failed.
    AttemptFailed(AttemptEnd),
    /// The payout came back after the order succeeded: RETURNED.
    Returned,
}

fn illegal(order: &RefundOrder, what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidStateTransition,
        format!(
            "refund {} cannot {what} from submit status {} and refund status {}",
            order.refund_id, order.submit_status, order.refund_status
        ),
    )
}

fn or_no_reason(reason: &str) -> &str {
    if reason.trim().is_empty() {
        "no reason given"
    } else {
        reason
    }
}

impl RefundOrder {
    /// A new order accepted from `request`: its first attempt is the channel's first method that
    /// can work (methods that cannot are recorded as attempts refused up front). No method that
    /// can work: `NO_REFUND_METHOD` (the refund is rejected, nothing was promised).
    pub fn accept(
        request: NewRefund,
        channel: &Channel,
        calendar: &WorkingCalendar,
        now_ms: i64,
    ) -> Result<RefundOrder> {
        let fingerprint = request.fingerprint();
        let first = channel
            .effective_methods()
            .first()
            .copied()
            .unwrap_or(RefundMethod::Interface);
        let mut order = RefundOrder {
            refund_id: request.refund_id,
            merchant_id: request.merchant_id,
            trade_id: request.trade_id,
            order_no: request.order_no,
            channel: request.channel,
            amount: request.amount,
            trade_paid_at_ms: request.trade_paid_at_ms,
            payer_card_no: request.payer_card_no,
            payer_name: request.payer_name,
            method: first,
            submit_status: SubmitStatus::Pending,
            refund_status: RefundStatus::Processing,
            bank_status: None,
            bank_seq: None,
            bank_ref: String::new(),
            reason: String::new(),
            waiting_manual: false,
            fingerprint,
            created_at_ms: now_ms,
            submitted_at_ms: None,
            finalized_at_ms: None,
            final_source: String::new(),
            attempt: 0,
            bank_reference_id: String::new(),
            expected_completion_ms: None,
            attempts: Vec::new(),
            pending_steps: 0,
            kind: request.kind,
            hold_status: None,
            hold_rule_id: String::new(),
            hold_reason: String::new(),
            suspended: false,
        };
        if !order.start_next_attempt(channel, calendar, now_ms) {
            return Err(Error::new(
                ErrorCode::NoRefundMethod,
                format!(
                    "no refund method of channel {} can take refund {}: {}",
                    channel.code,
                    order.refund_id,
                    order.refusals()
                ),
            ));
        }
        Ok(order)
    }

    /// The attempts refused up front, as one readable line.
    fn refusals(&self) -> String {
        self.attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Failed)
            .map(|a| format!("{} {}", a.method, a.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Why `method` cannot work for this order on `channel` now, or `None` when it can.
    pub fn refusal(&self, method: RefundMethod, channel: &Channel, now_ms: i64) -> Option<String> {
        match method {
            RefundMethod::Interface => {
                if channel.within_original_route_window(self.trade_paid_at_ms, now_ms) {
                    None
                } else {
                    let age_days = now_ms.saturating_sub(self.trade_paid_at_ms) / MS_PER_DAY;
                    Some(format!(
                        "BEYOND_WINDOW: the trade was paid {age_days} days ago, outside channel {}'s \
                         original-route window of {} days",
                        channel.code, channel.original_route_window_days
                    ))
                }
            }
            RefundMethod::Payout => {
                if let Some(problem) = card_problem(&self.payer_card_no) {
                    Some(format!("{problem}; a payout would certainly fail"))
                } else if self.payer_name.trim().is_empty() {
                    Some(
                        "NO_NAME: the trade carries no payer name; a payout would certainly fail"
                            .to_string(),
                    )
                } else {
                    None
                }
            }
            RefundMethod::FileUpload | RefundMethod::Offline => {
                if channel.bank_code.is_empty() {
                    Some(format!(
                        "NO_BANK_CODE: channel {} has no bank code, so no {method} batch can take \
                         the refund",
                        channel.code
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Starts the next method of the channel not tried yet that can work; methods that cannot are
    /// recorded as attempts refused up front. `false`: none is left.
    fn start_next_attempt(
        &mut self,
        channel: &Channel,
        calendar: &WorkingCalendar,
        now_ms: i64,
    ) -> bool {
        for method in channel.effective_methods() {
            if self.attempts.iter().any(|a| a.method == method) {
                continue;
            }
            let number = u32::try_from(self.attempts.len())
                .unwrap_or(u32::MAX - 1)
                .saturating_add(1);
            if let Some(reason) = self.refusal(method, channel, now_ms) {
                self.attempts.push(Attempt {
                    number,
                    method,
                    bank_reference_id: String::new(),
                    outcome: AttemptOutcome::Failed,
                    reason: format!("refused up front: {reason}"),
                    started_at_ms: now_ms,
                    ended_at_ms: Some(now_ms),
                });
                continue;
            }
            let bank_reference_id = channel.reference_for(method, &self.refund_id, number);
            self.attempts.push(Attempt {
                number,
                method,
                bank_reference_id: bank_reference_id.clone(),
                outcome: AttemptOutcome::Pending,
                reason: String::new(),
                started_at_ms: now_ms,
                ended_at_ms: None,
            });
            let refused: Vec<String> = self
                .attempts
                .iter()
                .filter(|a| a.number > self.attempt && a.number < number)
                .map(|a| format!("{} {}", a.method, a.reason))
                .collect();
            self.attempt = number;
            self.method = method;
            self.bank_reference_id = bank_reference_id;
            self.submit_status = SubmitStatus::Pending;
            self.bank_status = None;
            self.bank_seq = None;
            self.bank_ref = String::new();
            self.submitted_at_ms = None;
            self.waiting_manual = false;
            self.expected_completion_ms = Some(expected_completion(method, now_ms, calendar));
            self.reason = refused.join("; ");
            return true;
        }
        false
    }

    /// A file-upload or offline batch took the current attempt as row `row_id` (its bank
    /// reference id from now on).
    pub fn assign_batch_row(&mut self, row_id: &str, expected_ms: i64) -> Result<()> {
        if !matches!(
            self.method,
            RefundMethod::FileUpload | RefundMethod::Offline
        ) || self.submit_status != SubmitStatus::Pending
            || self.refund_status != RefundStatus::Processing
            || !self.bank_reference_id.is_empty()
        {
            return Err(illegal(self, "join a batch"));
        }
        self.bank_reference_id = row_id.to_string();
        self.expected_completion_ms = Some(expected_ms);
        if let Some(a) = self.current_attempt_mut() {
            a.bank_reference_id = row_id.to_string();
        }
        Ok(())
    }

    /// The current attempt.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.number == self.attempt)
    }

    fn current_attempt_mut(&mut self) -> Option<&mut Attempt> {
        let n = self.attempt;
        self.attempts.iter_mut().find(|a| a.number == n)
    }

    /// The attempt the bank knows by `bank_reference_id`.
    pub fn attempt_by_reference(&self, bank_reference_id: &str) -> Option<&Attempt> {
        if bank_reference_id.is_empty() {
            return None;
        }
        self.attempts
            .iter()
            .find(|a| a.bank_reference_id == bank_reference_id)
    }

    fn is_due_for(&self, method: RefundMethod) -> bool {
        self.method == method
            && self.submit_status == SubmitStatus::Pending
            && self.refund_status == RefundStatus::Processing
            && !self.waiting_manual
            && !self.is_blocked()
    }

    /// Whether people stopped automatic processing: HELD by risk or suspended by an operator.
    /// Nothing is sent (no interface submission, no payout, no batch) while blocked.
    pub fn is_blocked(&self) -> bool {
        self.suspended || self.hold_status == Some(HoldStatus::Held)
    }

    /// Whether the interface cycle may send this order to the bank.
    pub fn is_due_for_interface(&self) -> bool {
        self.is_due_for(RefundMethod::Interface)
    }

    /// Whether the payout dispatch may (re)create this order's payout.
    pub fn is_due_for_payout(&self) -> bool {
        self.is_due_for(RefundMethod::Payout)
    }

    /// The current attempt was handed over (bank accepted the interface refund, the payout center
    /// took the payout, a batch was marked): PENDING → SUBMITTED. A bank status the bank already
    /// reported by callback (a callback can overtake the answer) is kept.
    pub fn submit_accepted(&mut self, bank_ref: &str, at_ms: i64, expected_ms: i64) -> Result<()> {
        if self.submit_status != SubmitStatus::Pending
            || self.refund_status != RefundStatus::Processing
        {
            return Err(illegal(self, "be accepted by the bank"));
        }
        self.submit_status = SubmitStatus::Submitted;
        if self.method == RefundMethod::Interface {
            self.bank_status = Some(match self.bank_status {
                Some(current) if current.rank() > BankStatus::Accepted.rank() => current,
                _ => BankStatus::Accepted,
            });
        }
        if !bank_ref.is_empty() {
            self.bank_ref = bank_ref.to_string();
        }
        self.submitted_at_ms = Some(at_ms);
        self.expected_completion_ms = Some(expected_ms);
        self.reason.clear();
        self.waiting_manual = false;
        if let Some(a) = self.current_attempt_mut() {
            a.outcome = AttemptOutcome::Submitted;
        }
        Ok(())
    }

    /// The bank refused the submission synchronously: nothing happens at the bank, so the attempt
    /// failed and the next method starts (or, with none left, the order is final FAILED).
    pub fn submit_refused(
        &mut self,
        bank_reason: &str,
        channel: &Channel,
        calendar: &WorkingCalendar,
        now_ms: i64,
    ) -> Result<AttemptEnd> {
        if self.submit_status != SubmitStatus::Pending
            || self.refund_status != RefundStatus::Processing
        {
            return Err(illegal(self, "be refused by the bank"));
        }
        self.submit_status = SubmitStatus::SubmitFailed;
        let why = format!(
            "the bank refused the {} refund: {}",
            self.method,
            or_no_reason(bank_reason)
        );
        Ok(self.end_attempt_failed(&why, channel, calendar, "bank refusal", now_ms))
    }

    /// The current attempt is known to have failed (nothing was or will be paid by it): it is
    /// marked FAILED and the next method starts; with none left the order is final FAILED
    /// (`source` is recorded as the final source). Only while PROCESSING and not SUBMIT_FAILED.
    pub fn fail_attempt(
        &mut self,
        reason: &str,
        channel: &Channel,
        calendar: &WorkingCalendar,
        source: &str,
        now_ms: i64,
    ) -> Result<AttemptEnd> {
        if self.refund_status != RefundStatus::Processing
            || self.submit_status == SubmitStatus::SubmitFailed
        {
            return Err(illegal(self, "fail its current attempt"));
        }
        Ok(self.end_attempt_failed(or_no_reason(reason), channel, calendar, source, now_ms))
    }

    fn end_attempt_failed(
        &mut self,
        why: &str,
        channel: &Channel,
        calendar: &WorkingCalendar,
        source: &str,
        now_ms: i64,
    ) -> AttemptEnd {
        let (number, method) = (self.attempt, self.method);
        if let Some(a) = self.current_attempt_mut() {
            a.outcome = AttemptOutcome::Failed;
            a.reason = why.to_string();
            a.ended_at_ms = Some(now_ms);
        }
        if self.start_next_attempt(channel, calendar, now_ms) {
            let refused = std::mem::take(&mut self.reason);
            self.reason = format!(
                "attempt {number} ({method}) failed: {why}; {}falling back to {}",
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("{refused}; ")
                },
                self.method
            );
            AttemptEnd::FellBack(self.method)
        } else {
            self.refund_status = RefundStatus::Failed;
            self.finalized_at_ms = Some(now_ms);
            self.final_source = source.to_string();
            self.waiting_manual = false;
            self.reason = format!(
                "every refund method is exhausted; attempt {number} ({method}) failed: {why}"
            );
            AttemptEnd::Exhausted
        }
    }

    /// Applies a bank answer or callback. Monotone: ignored (returns `false`, nothing changes) when
    /// the order is final, the bank refused the submission, the sequence is not newer than the last
    /// applied one, or the status would go back. Never makes the order final.
    pub fn apply_bank_event(&mut self, event: &BankEvent) -> bool {
        if self.refund_status.is_final() || self.submit_status == SubmitStatus::SubmitFailed {
            return false;
        }
        if self.bank_seq.is_some_and(|seq| event.sequence <= seq) {
            return false;
        }
        if self
            .bank_status
            .is_some_and(|current| event.status.rank() < current.rank())
        {
            return false;
        }
        self.bank_status = Some(event.status);
        self.bank_seq = Some(event.sequence);
        if !event.bank_ref.is_empty() {
            self.bank_ref = event.bank_ref.clone();
        }
        if !event.reason.is_empty() {
            self.reason = event.reason.clone();
        }
        self.after_bank_event(event.status, &event.reason);
        true
    }

    /// Applies a payout center update: monotone by sequence per payout; only the current
    /// attempt's payout counts. SENT and PAID move the bank status (never final); FAILED, and
    /// RETURNED before the order is final, fail the attempt (fallback); RETURNED after SUCCEEDED
    /// makes the order RETURNED.
    pub fn apply_payout_update(
        &mut self,
        update: &PayoutUpdate,
        channel: &Channel,
        calendar: &WorkingCalendar,
        now_ms: i64,
    ) -> Result<PayoutEffect> {
        if self.method != RefundMethod::Payout || update.payout_id != self.bank_reference_id {
            return Ok(PayoutEffect::Ignored);
        }
        if self.bank_seq.is_some_and(|seq| update.sequence <= seq) {
            return Ok(PayoutEffect::Ignored);
        }
        let source = format!("payout {}", update.payout_id);
        match update.state {
            PayoutState::Sent | PayoutState::Paid => {
                if self.refund_status.is_final() || self.submit_status == SubmitStatus::SubmitFailed
                {
                    return Ok(PayoutEffect::Ignored);
                }
                if self.submit_status == SubmitStatus::Pending {
                    // The payout center's answer to the creation was lost; it has the payout.
                    self.submit_accepted("", now_ms, now_ms + PAYOUT_EXPECTED_MS)?;
                }
                let status = if update.state == PayoutState::Paid {
                    BankStatus::Succeeded
                } else {
                    BankStatus::Accepted
                };
                let event = BankEvent {
                    status,
                    sequence: update.sequence,
                    bank_ref: update.bank_ref.clone(),
                    reason: String::new(),
                };
                Ok(if self.apply_bank_event(&event) {
                    PayoutEffect::Progressed
                } else {
                    PayoutEffect::Ignored
                })
            }
            PayoutState::Failed => {
                if self.refund_status.is_final() {
                    return Ok(PayoutEffect::Ignored);
                }
                self.bank_seq = Some(update.sequence);
                let why = format!("PAYOUT_FAILED: {}", or_no_reason(&update.reason));
                let end = self.fail_attempt(&why, channel, calendar, &source, now_ms)?;
                Ok(PayoutEffect::AttemptFailed(end))
            }
            PayoutState::Returned => match self.refund_status {
                RefundStatus::Processing => {
                    self.bank_seq = Some(update.sequence);
                    let why = format!(
                        "RETURNED: the bank returned the payout before it was reconciled: {}",
                        or_no_reason(&update.reason)
                    );
                    let end = self.fail_attempt(&why, channel, calendar, &source, now_ms)?;
                    Ok(PayoutEffect::AttemptFailed(end))
                }
                RefundStatus::Succeeded => {
                    self.bank_seq = Some(update.sequence);
                    self.mark_returned(&update.reason, now_ms)?;
                    Ok(PayoutEffect::Returned)
                }
                RefundStatus::Failed | RefundStatus::Returned => Ok(PayoutEffect::Ignored),
            },
        }
    }

    /// A payout the bank returned after the order succeeded: SUCCEEDED → RETURNED (final; the
    /// money goes back to the merchant).
    pub fn mark_returned(&mut self, bank_reason: &str, now_ms: i64) -> Result<Outcome> {
        if self.refund_status == RefundStatus::Returned {
            return Ok(Outcome::Unchanged);
        }
        if self.refund_status != RefundStatus::Succeeded || self.method != RefundMethod::Payout {
            return Err(illegal(self, "be returned"));
        }
        let why = format!(
            "RETURNED: the bank returned the payout after it was paid: {}",
            or_no_reason(bank_reason)
        );
        self.refund_status = RefundStatus::Returned;
        self.reason = why.clone();
        self.finalized_at_ms = Some(now_ms);
        if let Some(a) = self.current_attempt_mut() {
            a.outcome = AttemptOutcome::Failed;
            a.reason = why;
            a.ended_at_ms = Some(now_ms);
        }
        Ok(Outcome::Changed)
    }

    /// Makes the order final (reconciliation). Only from SUBMITTED + PROCESSING. Repeating the same
    /// final status is [`Outcome::Unchanged`] (SUCCEEDED on a RETURNED order too: it did succeed
    /// before the return); a different one is `INVALID_STATE_TRANSITION`.
    pub fn finalize(
        &mut self,
        status: FinalStatus,
        reason: &str,
        source: &str,
        at_ms: i64,
    ) -> Result<Outcome> {
        if self.refund_status.is_final() {
            if self.refund_status == status.refund_status()
                || (self.refund_status == RefundStatus::Returned
                    && status == FinalStatus::Succeeded)
            {
                return Ok(Outcome::Unchanged);
            }
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "refund {} is already final as {}; it cannot become {}",
                    self.refund_id,
                    self.refund_status,
                    status.refund_status()
                ),
            ));
        }
        if self.submit_status != SubmitStatus::Submitted {
            return Err(illegal(self, &format!("become {}", status.refund_status())));
        }
        self.refund_status = status.refund_status();
        if !reason.is_empty() {
            self.reason = reason.to_string();
        }
        self.final_source = source.to_string();
        self.finalized_at_ms = Some(at_ms);
        self.waiting_manual = false;
        let outcome = match status {
            FinalStatus::Succeeded => AttemptOutcome::Succeeded,
            FinalStatus::Failed => AttemptOutcome::Failed,
        };
        if let Some(a) = self.current_attempt_mut() {
            a.outcome = outcome;
            a.reason = reason.to_string();
            a.ended_at_ms = Some(at_ms);
        }
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_kernel::Currency;

    const NOW: i64 = 1_800_000_000_000;

    fn channel(kind: ChannelKind, methods: Vec<RefundMethod>) -> Channel {
        Channel {
            code: "CH1".into(),
            kind,
            methods,
            original_route_window_days: DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
            bank_code: "ICBC".into(),
            id_scheme: None,
        }
    }

    fn request() -> NewRefund {
        NewRefund {
            refund_id: "rf-1".into(),
            merchant_id: "m1".into(),
            trade_id: "t1".into(),
            order_no: "o1".into(),
            channel: "CH1".into(),
            amount: Money::from_minor(1250, Currency::Cny),
            trade_paid_at_ms: NOW - MS_PER_DAY,
            payer_card_no: "6222000011112223".into(),
            payer_name: "张三".into(),
            kind: RefundKind::Normal,
            trade_amount: None,
        }
    }

    fn order(submit: SubmitStatus, refund: RefundStatus) -> RefundOrder {
        let mut o = RefundOrder::accept(
            request(),
            &channel(ChannelKind::NetBanking, vec![]),
            &WorkingCalendar::default(),
            NOW,
        )
        .unwrap();
        o.submit_status = submit;
        o.refund_status = refund;
        if submit == SubmitStatus::Submitted {
            o.bank_status = Some(BankStatus::Accepted);
            o.submitted_at_ms = Some(NOW);
        }
        o
    }

    #[test]
    fn default_methods_by_kind() {
        use ChannelKind::*;
        use RefundMethod::*;
        let table: Vec<(ChannelKind, Vec<RefundMethod>)> = ChannelKind::ALL
            .iter()
            .map(|k| (*k, k.default_methods()))
            .collect();
        assert_eq!(
            table,
            vec![
                (NetBanking, vec![Interface]),
                (Aggregated, vec![Interface]),
                (QuickPay, vec![Payout]),
                (Withholding, vec![Payout]),
                (UnionPay, vec![FileUpload]),
            ]
        );
        let configured = channel(QuickPay, vec![Interface, Payout]);
        assert_eq!(configured.effective_methods(), vec![Interface, Payout]);
    }

    #[test]
    fn string_forms_round_trip() {
        for k in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(k.as_str()), Some(*k));
        }
        for m in RefundMethod::ALL {
            assert_eq!(RefundMethod::parse(m.as_str()), Some(*m));
        }
        for s in BankStatus::ALL {
            assert_eq!(BankStatus::parse(s.as_str()), Some(*s));
        }
        for s in OutboxStep::ALL {
            assert_eq!(OutboxStep::parse(s.as_str()), Some(*s));
        }
        assert_eq!(SubmitStatus::parse("nope"), None);
    }

    #[test]
    fn channel_validation() {
        assert!(channel(ChannelKind::NetBanking, vec![]).validate().is_ok());
        let mut c = channel(
            ChannelKind::NetBanking,
            vec![RefundMethod::Interface, RefundMethod::Interface],
        );
        assert_eq!(c.validate().unwrap_err().code, ErrorCode::InvalidArgument);
        c.methods.clear();
        c.original_route_window_days = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .message
            .starts_with("original_route_window_days"));
        c.original_route_window_days = 30;
        c.code = "bad code".into();
        assert_eq!(c.validate().unwrap_err().code, ErrorCode::MalformedId);
    }

    #[test]
    fn request_validation_names_the_field() {
        assert!(request().validate().is_ok());
        let mut r = request();
        r.trade_paid_at_ms = 0;
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .starts_with("trade_paid_at_ms"));
        let mut r = request();
        r.payer_card_no = "6222-0000".into();
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .starts_with("payer_card_no"));
        let mut r = request();
        r.payer_name = "a\nb".into();
        assert!(r.validate().unwrap_err().message.starts_with("payer_name"));
        let mut r = request();
        r.order_no = String::new();
        assert!(r.validate().unwrap_err().message.starts_with("order_no"));
    }

    #[test]
    fn debug_masks_the_card() {
        let r = request();
        let o = RefundOrder::accept(
            r.clone(),
            &channel(ChannelKind::NetBanking, vec![]),
            &WorkingCalendar::default(),
            NOW,
        )
        .unwrap();
        for text in [format!("{r:?}"), format!("{o:?}")] {
            assert!(!text.contains("6222000011112223"), "{text}");
            assert!(text.contains("**** 2223"), "{text}");
        }
    }

    #[test]
    fn error_refunds_are_full_amount_only() {
        let mut r = request();
        r.kind = RefundKind::ErrorDuplicate;
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .starts_with("trade_amount"));
        r.trade_amount = Some(Money::from_minor(5000, Currency::Cny));
        let e = r.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.message, "amount: error refunds are full-amount only");
        r.trade_amount = Some(r.amount);
        assert!(r.validate().is_ok());
        // The kind is part of the content: the same request as a normal refund differs.
        let mut normal = r.clone();
        normal.kind = RefundKind::Normal;
        assert_ne!(r.fingerprint(), normal.fingerprint());
        // Normal refunds keep the fingerprint format they had before kinds existed.
        assert_eq!(normal.fingerprint(), request().fingerprint());
        // A normal refund may be partial, never more than paid.
        normal.trade_amount = Some(Money::from_minor(1000, Currency::Cny));
        assert_eq!(
            normal.validate().unwrap_err().code,
            ErrorCode::RefundExceedsPaid
        );
    }

    #[test]
    fn fingerprint_separates_fields() {
        let a = request();
        let mut b = request();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.amount = Money::from_minor(1251, Currency::Cny);
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Moving characters between adjacent fields changes the fingerprint.
        let mut c = request();
        c.trade_id = "t".into();
        c.order_no = "1o1".into();
        let mut d = request();
        d.trade_id = "t1".into();
        d.order_no = "o1".into();
        assert_ne!(c.fingerprint(), d.fingerprint());
    }

    /// (methods, paid at, card, name, bank code) -> current method, or the refusal codes.
    type Case = (
        Vec<RefundMethod>,
        i64,
        &'static str,
        &'static str,
        &'static str,
        std::result::Result<RefundMethod, Vec<&'static str>>,
    );

    #[test]
    fn method_choice_table() {
        use RefundMethod::*;
        let cal = WorkingCalendar::default();
        let recent = NOW - 10 * MS_PER_DAY;
        let old = NOW - 181 * MS_PER_DAY;
        let good_card = "6222000011112223";
        // (methods, paid at, card, name, bank code) -> current method or the refusal codes.
        let cases: Vec<Case> = vec![
            (
                vec![Interface, Payout],
                recent,
                good_card,
                "Zhang",
                "ICBC",
                Ok(Interface),
            ),
            // Window past: interface refused up front, payout next.
            (
                vec![Interface, Payout],
                old,
                good_card,
                "Zhang",
                "ICBC",
                Ok(Payout),
            ),
            // No card: payout refused up front, offline next.
            (
                vec![Payout, Offline],
                recent,
                "",
                "Zhang",
                "ICBC",
                Ok(Offline),
            ),
            // Bad Luhn, too short, no name.
            (
                vec![Payout, FileUpload],
                recent,
                "6222000011112222",
                "Zhang",
                "ICBC",
                Ok(FileUpload),
            ),
            (
                vec![Payout, FileUpload],
                recent,
                "12345678",
                "Zhang",
                "ICBC",
                Ok(FileUpload),
            ),
            (
                vec![Payout, Interface],
                recent,
                good_card,
                " ",
                "ICBC",
                Ok(Interface),
            ),
            // Bank code missing: no file or offline batch.
            (
                vec![FileUpload, Offline, Payout],
                recent,
                good_card,
                "Zhang",
                "",
                Ok(Payout),
            ),
            // List exhausted.
            (
                vec![Interface, Payout],
                old,
                "",
                "Zhang",
                "ICBC",
                Err(vec!["BEYOND_WINDOW", "NO_CARD"]),
            ),
            (
                vec![Payout],
                recent,
                "6222000011112222",
                "Zhang",
                "ICBC",
                Err(vec!["INVALID_CARD"]),
            ),
            (
                vec![Offline],
                recent,
                good_card,
                "Zhang",
                "",
                Err(vec!["NO_BANK_CODE"]),
            ),
        ];
        for (methods, paid, card, name, bank, expected) in cases {
            let mut ch = channel(ChannelKind::NetBanking, methods.clone());
            ch.bank_code = bank.into();
            let mut r = request();
            r.trade_paid_at_ms = paid;
            r.payer_card_no = card.into();
            r.payer_name = name.into();
            match (RefundOrder::accept(r, &ch, &cal, NOW), expected) {
                (Ok(o), Ok(m)) => {
                    assert_eq!(o.method, m, "{methods:?}");
                    let cur = o.current_attempt().unwrap();
                    assert_eq!(cur.outcome, AttemptOutcome::Pending);
                    assert_eq!(o.attempt, u32::try_from(o.attempts.len()).unwrap());
                    // Every earlier attempt was refused up front, with its reason.
                    for a in &o.attempts[..o.attempts.len() - 1] {
                        assert_eq!(a.outcome, AttemptOutcome::Failed);
                        assert!(a.reason.starts_with("refused up front: "), "{}", a.reason);
                        assert!(a.bank_reference_id.is_empty());
                    }
                    // The card never appears in full in a reason.
                    assert!(!o.reason.contains("11112222") && !o.reason.contains("11112223"));
                }
                (Err(e), Err(codes)) => {
                    assert_eq!(e.code, ErrorCode::NoRefundMethod);
                    for c in codes {
                        assert!(e.message.contains(c), "{}", e.message);
                    }
                }
                (got, want) => panic!("{methods:?}: got {got:?}, want {want:?}"),
            }
        }
        // The reasons read well.
        let mut r = request();
        r.trade_paid_at_ms = old;
        let o = RefundOrder::accept(r, &channel(ChannelKind::Aggregated, vec![]), &cal, NOW);
        let e = o.unwrap_err();
        assert!(e.message.contains("181 days ago"), "{}", e.message);
        assert!(e.message.contains("window of 180 days"), "{}", e.message);
        let ch = channel(ChannelKind::Aggregated, vec![Interface, Payout]);
        let mut r = request();
        r.trade_paid_at_ms = old;
        let o = RefundOrder::accept(r, &ch, &cal, NOW).unwrap();
        assert_eq!(o.bank_reference_id, "po_rf-1_2");
        assert!(
            o.reason
                .starts_with("INTERFACE refused up front: BEYOND_WINDOW"),
            "{}",
            o.reason
        );
        // Exactly at the window's edge the original route still works.
        let mut r = request();
        r.trade_paid_at_ms = NOW - 180 * MS_PER_DAY;
        assert_eq!(
            RefundOrder::accept(r, &ch, &cal, NOW).unwrap().method,
            Interface
        );
    }

    #[test]
    fn cards_and_references() {
        assert!(luhn_valid("6222000011112223"));
        assert!(!luhn_valid("6222000011112222"));
        assert!(luhn_valid("4111111111111111"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid(""));
        assert!(card_problem("4111111111111111").is_none());
        assert!(card_problem("41111111").unwrap().contains("has 8 digits"));
        assert_eq!(mask_card("6222000011112223"), "**** 2223");
        assert_eq!(mask_card("12"), "**** 12");
        assert_eq!(mask_card(""), "");
        assert_eq!(bank_reference_for(RefundMethod::Interface, "rf", 1), "rf");
        assert_eq!(bank_reference_for(RefundMethod::Interface, "rf", 3), "rf-3");
        assert_eq!(bank_reference_for(RefundMethod::Payout, "rf", 2), "po_rf_2");
        assert_eq!(bank_reference_for(RefundMethod::Offline, "rf", 2), "");
        let long = "r".repeat(64);
        let p = bank_reference_for(RefundMethod::Payout, &long, 2);
        assert!(
            p.len() <= 64 && p.starts_with("po_") && p.ends_with("_2"),
            "{p}"
        );
        assert_ne!(
            p,
            bank_reference_for(RefundMethod::Payout, &"s".repeat(64), 2)
        );
    }

    #[test]
    fn fallback_reasons() {
        assert!(is_fallback_reason("CARD_CANCELLED: card was cancelled"));
        assert!(is_fallback_reason("ACCOUNT_CLOSED: closed"));
        assert!(is_fallback_reason("BEYOND_WINDOW"));
        assert!(!is_fallback_reason("INSUFFICIENT_FUNDS: no"));
        assert!(!is_fallback_reason("card cancelled"));
        assert!(!is_fallback_reason("CARD_CANCELLEDX: no"));
        assert!(!is_fallback_reason(""));
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn at(date: NaiveDate, hour: i64) -> i64 {
        start_of_business_date(date).timestamp_millis() + hour * 3_600_000
    }

    #[test]
    fn expected_completion_counts_working_days() {
        // National Day 2026: Oct 1-7 off (Thu-Wed), Sat Oct 10 worked (调休).
        let cal = WorkingCalendar {
            holidays: (1..=7).map(|day| d(2026, 10, day)).collect(),
            makeup_workdays: [d(2026, 10, 10)].into_iter().collect(),
        };
        let sept30 = at(d(2026, 9, 30), 10);
        // Payout: 30 minutes.
        assert_eq!(
            expected_completion(RefundMethod::Payout, sept30, &cal),
            sept30 + 1_800_000
        );
        // Interface on Wed Sep 30: working days Oct 8, 9, 10 (make-up Saturday), 12, 13, 14, 15.
        assert_eq!(
            expected_completion(RefundMethod::Interface, sept30, &cal),
            end_of_business_date_ms(d(2026, 10, 15))
        );
        // Without the calendar: 7 weekdays after Sep 30 is Oct 9.
        assert_eq!(
            expected_completion(RefundMethod::Interface, sept30, &WorkingCalendar::default()),
            end_of_business_date_ms(d(2026, 10, 9))
        );
        // A file refund accepted on a holiday joins Oct 8's batch and is expected Oct 9.
        let holiday = at(d(2026, 10, 3), 10);
        assert_eq!(
            expected_completion(RefundMethod::FileUpload, holiday, &cal),
            end_of_business_date_ms(d(2026, 10, 9))
        );
        // A batch of Fri Oct 9 is expected on the make-up Saturday; one of a weekend's Friday
        // otherwise on Monday.
        assert_eq!(
            expected_for_batch(d(2026, 10, 9), &cal),
            end_of_business_date_ms(d(2026, 10, 10))
        );
        assert_eq!(
            expected_for_batch(d(2026, 10, 16), &cal),
            end_of_business_date_ms(d(2026, 10, 19))
        );
        // The last millisecond of the day, in business time.
        assert_eq!(
            end_of_business_date_ms(d(2026, 10, 9)) + 1,
            at(d(2026, 10, 10), 0)
        );
    }

    fn payout_update(state: PayoutState, sequence: u64) -> PayoutUpdate {
        PayoutUpdate {
            payout_id: "po_rf-1_1".into(),
            state,
            sequence,
            reason: "bank says so".into(),
            bank_ref: "PB1".into(),
        }
    }

    #[test]
    fn payouts_fall_back_and_return() {
        use RefundMethod::*;
        let cal = WorkingCalendar::default();
        let ch = channel(ChannelKind::QuickPay, vec![Payout, Offline]);
        let new = || {
            let mut o = RefundOrder::accept(request(), &ch, &cal, NOW).unwrap();
            o.submit_accepted("", NOW, NOW + PAYOUT_EXPECTED_MS)
                .unwrap();
            o
        };
        // PAID is not final; a late SENT changes nothing; reconciliation makes it final.
        let mut o = new();
        assert_eq!(o.expected_completion_ms, Some(NOW + PAYOUT_EXPECTED_MS));
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Sent, 1), &ch, &cal, NOW),
            Ok(PayoutEffect::Progressed)
        );
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Paid, 2), &ch, &cal, NOW),
            Ok(PayoutEffect::Progressed)
        );
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Sent, 1), &ch, &cal, NOW),
            Ok(PayoutEffect::Ignored)
        );
        assert_eq!(o.bank_status, Some(BankStatus::Succeeded));
        assert_eq!(o.refund_status, RefundStatus::Processing);
        // Another payout id (an earlier attempt) changes nothing.
        let mut other = payout_update(PayoutState::Failed, 9);
        other.payout_id = "po_rf-1_9".into();
        assert_eq!(
            o.apply_payout_update(&other, &ch, &cal, NOW),
            Ok(PayoutEffect::Ignored)
        );
        o.finalize(FinalStatus::Succeeded, "matched", "recon", NOW)
            .unwrap();
        // Returned after success.
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Returned, 3), &ch, &cal, NOW),
            Ok(PayoutEffect::Returned)
        );
        assert_eq!(o.refund_status, RefundStatus::Returned);
        assert!(o.reason.starts_with("RETURNED: "), "{}", o.reason);
        assert_eq!(o.current_attempt().unwrap().outcome, AttemptOutcome::Failed);
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Returned, 4), &ch, &cal, NOW),
            Ok(PayoutEffect::Ignored)
        );
        // Reconciliation repeating SUCCEEDED is no error; FAILED is.
        assert_eq!(
            o.finalize(FinalStatus::Succeeded, "", "recon", NOW),
            Ok(Outcome::Unchanged)
        );
        assert!(o.finalize(FinalStatus::Failed, "", "recon", NOW).is_err());

        // FAILED falls back to the next method without touching the money.
        let mut o = new();
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Failed, 2), &ch, &cal, NOW + 5),
            Ok(PayoutEffect::AttemptFailed(AttemptEnd::FellBack(Offline)))
        );
        assert_eq!(
            (o.attempt, o.method, o.submit_status, o.refund_status),
            (2, Offline, SubmitStatus::Pending, RefundStatus::Processing)
        );
        assert_eq!(o.bank_reference_id, "");
        assert_eq!(o.bank_status, None);
        assert_eq!(o.attempts[0].outcome, AttemptOutcome::Failed);
        assert!(o.attempts[0]
            .reason
            .starts_with("PAYOUT_FAILED: bank says so"));
        assert!(o.reason.contains("falling back to OFFLINE"), "{}", o.reason);
        // RETURNED before final on the last method: exhausted, final FAILED.
        let ch1 = channel(ChannelKind::QuickPay, vec![Payout]);
        let mut o = RefundOrder::accept(request(), &ch1, &cal, NOW).unwrap();
        assert_eq!(
            o.apply_payout_update(&payout_update(PayoutState::Returned, 2), &ch1, &cal, NOW),
            Ok(PayoutEffect::AttemptFailed(AttemptEnd::Exhausted))
        );
        assert_eq!(o.refund_status, RefundStatus::Failed);
        assert_eq!(o.final_source, "payout po_rf-1_1");
        assert!(
            o.reason.starts_with("every refund method is exhausted"),
            "{}",
            o.reason
        );
    }

    #[test]
    fn interface_refusal_and_reconciliation_fall_back() {
        use RefundMethod::*;
        let cal = WorkingCalendar::default();
        let ch = channel(ChannelKind::NetBanking, vec![Interface, Payout, Offline]);
        let mut o = RefundOrder::accept(request(), &ch, &cal, NOW).unwrap();
        assert_eq!(o.bank_reference_id, "rf-1");
        assert_eq!(
            o.submit_refused("CARD_CANCELLED: gone", &ch, &cal, NOW),
            Ok(AttemptEnd::FellBack(Payout))
        );
        assert_eq!(o.attempts[0].outcome, AttemptOutcome::Failed);
        assert_eq!((o.attempt, o.bank_reference_id.as_str()), (2, "po_rf-1_2"));
        o.submit_accepted("", NOW, NOW).unwrap();
        assert_eq!(
            o.fail_attempt("ACCOUNT_CLOSED: x", &ch, &cal, "recon", NOW),
            Ok(AttemptEnd::FellBack(Offline))
        );
        let rid = "B20261124-ICBC-OFFLINE-01-0001";
        o.assign_batch_row(rid, NOW + 1).unwrap();
        assert_eq!(o.attempt_by_reference(rid).unwrap().number, 3);
        assert!(o.assign_batch_row("again", NOW).is_err());
        o.submit_accepted("", NOW, NOW + 1).unwrap();
        assert_eq!(
            o.fail_attempt("REJECTED: no", &ch, &cal, "staff", NOW),
            Ok(AttemptEnd::Exhausted)
        );
        assert_eq!(o.refund_status, RefundStatus::Failed);
        assert!(o.fail_attempt("again", &ch, &cal, "staff", NOW).is_err());
        assert_eq!(
            o.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            vec![AttemptOutcome::Failed; 3]
        );
    }

    fn ev(status: BankStatus, sequence: u64) -> BankEvent {
        BankEvent {
            status,
            sequence,
            bank_ref: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn bank_events_are_monotone() {
        let mut o = order(SubmitStatus::Submitted, RefundStatus::Processing);
        assert!(o.apply_bank_event(&ev(BankStatus::Processing, 2)));
        // Duplicate.
        assert!(!o.apply_bank_event(&ev(BankStatus::Processing, 2)));
        // Older sequence, even with a higher rank.
        assert!(!o.apply_bank_event(&ev(BankStatus::Succeeded, 1)));
        assert!(o.apply_bank_event(&ev(BankStatus::Succeeded, 4)));
        // Newer sequence but lower rank.
        assert!(!o.apply_bank_event(&ev(BankStatus::Processing, 5)));
        assert_eq!(o.bank_status, Some(BankStatus::Succeeded));
        assert_eq!(o.bank_seq, Some(4));
        // The bank never makes an order final.
        assert_eq!(o.refund_status, RefundStatus::Processing);
        // A callback that overtook the bank's answer is kept by submit_accepted.
        let mut p = order(SubmitStatus::Pending, RefundStatus::Processing);
        assert!(p.apply_bank_event(&ev(BankStatus::Processing, 1)));
        p.submit_accepted("B1", NOW, NOW).unwrap();
        assert_eq!(p.bank_status, Some(BankStatus::Processing));
        assert_eq!(p.submit_status, SubmitStatus::Submitted);
    }

    #[test]
    fn finalize_is_idempotent_for_the_same_status() {
        let mut o = order(SubmitStatus::Submitted, RefundStatus::Processing);
        assert_eq!(
            o.finalize(FinalStatus::Succeeded, "matched", "run-1", NOW),
            Ok(Outcome::Changed)
        );
        let after = o.clone();
        assert_eq!(
            o.finalize(FinalStatus::Succeeded, "again", "run-2", NOW + 1),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(o, after);
        assert_eq!(
            o.finalize(FinalStatus::Failed, "no", "run-3", NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(o.final_source, "run-1");
        assert_eq!(o.finalized_at_ms, Some(NOW));
    }

    #[test]
    fn outbox_steps_by_outcome() {
        assert_eq!(
            FinalStatus::Succeeded.outbox_steps(),
            [OutboxStep::ClearingComplete, OutboxStep::NotifyBusiness]
        );
        assert_eq!(
            FinalStatus::Failed.outbox_steps(),
            [OutboxStep::ClearingReverse, OutboxStep::NotifyBusiness]
        );
    }

    /// Renders an order's state dimensions for the transition table.
    fn state(o: &RefundOrder) -> String {
        format!(
            "{}/{}/{}",
            o.submit_status,
            o.refund_status,
            o.bank_status.map_or("-", BankStatus::as_str)
        )
    }

    /// Every state × every event, against the expected table: the state machine at one glance.
    #[test]
    fn transition_table() {
        use RefundStatus as R;
        use SubmitStatus as S;
        let states = [
            (S::Pending, R::Processing),
            (S::Submitted, R::Processing),
            (S::SubmitFailed, R::Processing),
            (S::Submitted, R::Succeeded),
            (S::Submitted, R::Failed),
        ];
        type Event = (&'static str, fn(&mut RefundOrder) -> String);
        let events: [Event; 7] = [
            ("submit_accepted", |o| {
                o.submit_accepted("B1", NOW, NOW)
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.code.to_string())
            }),
            ("submit_refused", |o| {
                let ch = channel(ChannelKind::NetBanking, vec![]);
                o.submit_refused("card closed", &ch, &WorkingCalendar::default(), NOW)
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.code.to_string())
            }),
            ("bank PROCESSING #5", |o| {
                if o.apply_bank_event(&ev(BankStatus::Processing, 5)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("bank SUCCEEDED #1", |o| {
                if o.apply_bank_event(&ev(BankStatus::Succeeded, 1)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("bank ACCEPTED #0", |o| {
                if o.apply_bank_event(&ev(BankStatus::Accepted, 0)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("finalize SUCCEEDED", |o| {
                match o.finalize(FinalStatus::Succeeded, "", "run", NOW) {
                    Ok(Outcome::Changed) => String::new(),
                    Ok(Outcome::Unchanged) => "unchanged".into(),
                    Err(e) => e.code.to_string(),
                }
            }),
            ("finalize FAILED", |o| {
                match o.finalize(FinalStatus::Failed, "", "run", NOW) {
                    Ok(Outcome::Changed) => String::new(),
                    Ok(Outcome::Unchanged) => "unchanged".into(),
                    Err(e) => e.code.to_string(),
                }
            }),
        ];
        let mut table = Vec::new();
        for (submit, refund) in states {
            for (name, event) in &events {
                let mut o = order(submit, refund);
                // Submitted orders start with bank sequence 3, so #1 is late and #5 is news.
                if submit == S::Submitted {
                    o.bank_seq = Some(3);
                }
                let before = state(&o);
                let note = event(&mut o);
                let after = state(&o);
                let result = if note.is_empty() {
                    after
                } else {
                    assert_eq!(before, after, "a refused event must change nothing");
                    note
                };
                table.push(format!("{before:<42} {name:<20} -> {result}"));
            }
        }
        let expected = "\
PENDING/PROCESSING/-                       submit_accepted      -> SUBMITTED/PROCESSING/BANK_ACCEPTED
PENDING/PROCESSING/-                       submit_refused       -> SUBMIT_FAILED/FAILED/-
PENDING/PROCESSING/-                       bank PROCESSING #5   -> PENDING/PROCESSING/BANK_PROCESSING
PENDING/PROCESSING/-                       bank SUCCEEDED #1    -> PENDING/PROCESSING/BANK_SUCCEEDED
PENDING/PROCESSING/-                       bank ACCEPTED #0     -> PENDING/PROCESSING/BANK_ACCEPTED
PENDING/PROCESSING/-                       finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
PENDING/PROCESSING/-                       finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank PROCESSING #5   -> SUBMITTED/PROCESSING/BANK_PROCESSING
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank SUCCEEDED #1    -> ignored
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank ACCEPTED #0     -> ignored
SUBMITTED/PROCESSING/BANK_ACCEPTED         finalize SUCCEEDED   -> SUBMITTED/SUCCEEDED/BANK_ACCEPTED
SUBMITTED/PROCESSING/BANK_ACCEPTED         finalize FAILED      -> SUBMITTED/FAILED/BANK_ACCEPTED
SUBMIT_FAILED/PROCESSING/-                 submit_accepted      -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 submit_refused       -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 bank PROCESSING #5   -> ignored
SUBMIT_FAILED/PROCESSING/-                 bank SUCCEEDED #1    -> ignored
SUBMIT_FAILED/PROCESSING/-                 bank ACCEPTED #0     -> ignored
SUBMIT_FAILED/PROCESSING/-                 finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank PROCESSING #5   -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank SUCCEEDED #1    -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank ACCEPTED #0     -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          finalize SUCCEEDED   -> unchanged
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             bank PROCESSING #5   -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             bank SUCCEEDED #1    -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             bank ACCEPTED #0     -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             finalize FAILED      -> unchanged";
        let actual = table.join("\n");
        assert_eq!(
            actual, expected,
            "transition table changed:\n{actual}\n--- expected ---\n{expected}"
        );
    }
}
