//! The bank subsystem's pure part: what the refund and payout centers need from a bank (the
//! [`BankConnector`] interface), the simulator's deterministic decisions ([`Decision`]), the
//! transaction state machine ([`TxStatus`]) and the clearing file format ([`write_clearing_csv`],
//! [`parse_clearing_csv`]).
//!
//! Nothing here touches a database or the network, so the reconciliation center can reuse
//! [`parse_clearing_csv`] and [`ClearingRow`] as a library.

use std::future::Future;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use tuikuan_kernel::card::{mask_card, CardNumber};
use tuikuan_kernel::clock::{business_tz, from_ms};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};

// ---------------------------------------------------------------------------------------------
// The connector interface
// ---------------------------------------------------------------------------------------------

/// What tuikuan needs from a bank. The simulator implements it; a real bank's connector would too.
///
/// Every submission is idempotent by its id (refund_id or payout_id): a repeat returns the first
/// answer, the same id with other content is [`ErrorCode::IdempotencyConflict`]. A transport
/// failure is [`ErrorCode::Unavailable`]: the caller retries with the same id.
pub trait BankConnector: Send + Sync {
    /// Submits an interface refund (接口退款) to the bank.
    fn submit_refund(
        &self,
        submission: RefundSubmission,
    ) -> impl Future<Output = Result<SubmitOutcome>> + Send;

    /// Submits a payout (打款) to a card.
    fn submit_payout(
        &self,
        submission: PayoutSubmission,
    ) -> impl Future<Output = Result<SubmitOutcome>> + Send;

    /// Takes a refund spreadsheet (file-upload or offline). Idempotent by batch id.
    fn submit_file_batch(
        &self,
        batch: FileBatchSubmission,
    ) -> impl Future<Output = Result<FileBatchOutcome>> + Send;

    /// The bank's view of one transaction.
    fn query(&self, kind: TxKind, id: &str) -> impl Future<Output = Result<BankTx>> + Send;

    /// The bank's clearing file (清算文件) of a channel for a business date.
    fn clearing_file(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> impl Future<Output = Result<ClearingFile>> + Send;
}

/// The bank's synchronous answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// False when the bank refused at once; nothing will happen at the bank.
    pub accepted: bool,
    pub bank_ref: String,
    /// Why the bank refused (empty when accepted).
    pub reason: String,
}

/// A clearing file as the bank hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearingFile {
    pub channel: String,
    pub date: NaiveDate,
    /// Always [`CLEARING_FILE_FORMAT`].
    pub format: String,
    pub content: Vec<u8>,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

/// Which interface a transaction came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxKind {
    Refund,
    Payout,
    /// A row of a refund spreadsheet staff uploaded (file-upload) or sent (offline). The bank
    /// sends no callbacks for these: its answer is its clearing file (and result file).
    File,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Refund => "REFUND",
            TxKind::Payout => "PAYOUT",
            TxKind::File => "FILE",
        }
    }

    pub fn parse(s: &str) -> Option<TxKind> {
        match s {
            "REFUND" => Some(TxKind::Refund),
            "PAYOUT" => Some(TxKind::Payout),
            "FILE" => Some(TxKind::File),
            _ => None,
        }
    }
}

/// A bank transaction's status.
///
/// ```text
/// (submit) -> REJECTED                       refused synchronously, final
/// (submit) -> ACCEPTED -> SUCCEEDED | FAILED
///                         SUCCEEDED -> RETURNED   payouts only: the bank returns the money (退票)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxStatus {
    Accepted,
    Succeeded,
    Failed,
    Returned,
    Rejected,
}

impl TxStatus {
    pub const ALL: &'static [TxStatus] = &[
        TxStatus::Accepted,
        TxStatus::Succeeded,
        TxStatus::Failed,
        TxStatus::Returned,
        TxStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Accepted => "ACCEPTED",
            TxStatus::Succeeded => "SUCCEEDED",
            TxStatus::Failed => "FAILED",
            TxStatus::Returned => "RETURNED",
            TxStatus::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<TxStatus> {
        TxStatus::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// Whether `self -> to` is allowed for a transaction of `kind`.
    pub fn can_transition(self, to: TxStatus, kind: TxKind) -> bool {
        matches!(
            (self, to),
            (TxStatus::Accepted, TxStatus::Succeeded) | (TxStatus::Accepted, TxStatus::Failed)
        ) || (kind == TxKind::Payout && self == TxStatus::Succeeded && to == TxStatus::Returned)
    }

    /// Checks a transition against the state machine.
    pub fn transition(self, to: TxStatus, kind: TxKind) -> Result<TxStatus> {
        if self.can_transition(to, kind) {
            Ok(to)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "bank {} transaction cannot go from {} to {}",
                    kind.as_str().to_lowercase(),
                    self.as_str(),
                    to.as_str()
                ),
            ))
        }
    }
}

/// The bank's record of one transaction (never the card number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankTx {
    pub id: String,
    pub kind: TxKind,
    pub channel: String,
    pub bank_ref: String,
    /// The original trade for refunds; the refund the row pays for FILE rows; empty for payouts.
    pub original_trade_id: String,
    /// FILE rows: the batch (spreadsheet) the row came in; empty otherwise.
    pub batch_id: String,
    /// The refund this money movement is for: the id itself for refunds, the submitter's
    /// reference for payouts (empty when none was given), the row's refund for FILE rows.
    pub refund_id: String,
    pub amount: Money,
    pub status: TxStatus,
    pub reason: String,
    pub fingerprint: String,
    pub submitted_at_ms: i64,
    pub due_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    /// Payouts the bank will return: when the return happens.
    pub return_due_at_ms: Option<i64>,
    pub returned_at_ms: Option<i64>,
}

impl BankTx {
    pub fn outcome(&self) -> SubmitOutcome {
        SubmitOutcome {
            accepted: self.status != TxStatus::Rejected,
            bank_ref: self.bank_ref.clone(),
            reason: if self.status == TxStatus::Rejected {
                self.reason.clone()
            } else {
                String::new()
            },
        }
    }
}

/// The status a callback reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackStatus {
    /// Accepted and being processed (sequence 1).
    Processing,
    Succeeded,
    Failed,
    /// Payouts: the bank returned the money after reporting success (sequence 3).
    Returned,
}

impl CallbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackStatus::Processing => "PROCESSING",
            CallbackStatus::Succeeded => "SUCCEEDED",
            CallbackStatus::Failed => "FAILED",
            CallbackStatus::Returned => "RETURNED",
        }
    }

    pub fn parse(s: &str) -> Option<CallbackStatus> {
        [
            CallbackStatus::Processing,
            CallbackStatus::Succeeded,
            CallbackStatus::Failed,
            CallbackStatus::Returned,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Sequence numbers of a transaction's callbacks.
pub const SEQ_PROCESSING: i32 = 1;
pub const SEQ_FINAL: i32 = 2;
pub const SEQ_RETURNED: i32 = 3;

/// A callback the bank owes a center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub id: String,
    pub tx_id: String,
    pub kind: TxKind,
    /// Per-transaction enqueue number (1, 2, ...): with `created_at_ms` and `tx_id`, the delivery order.
    pub idx: i32,
    pub sequence: i32,
    pub status: CallbackStatus,
    pub reason: String,
    pub bank_ref: String,
    pub delivered: bool,
    pub attempts: i32,
    pub created_at_ms: i64,
}

/// The callbacks a completion enqueues, in delivery order: the final one, a duplicate of it, and a
/// stale "processing" one after it (out of order), as decided.
pub fn completion_callbacks(
    succeeded: bool,
    reason: &str,
    decision: &Decision,
) -> Vec<(i32, CallbackStatus, String)> {
    let status = if succeeded {
        CallbackStatus::Succeeded
    } else {
        CallbackStatus::Failed
    };
    let mut out = vec![(SEQ_FINAL, status, reason.to_string())];
    if decision.duplicate_callback {
        out.push((SEQ_FINAL, status, reason.to_string()));
    }
    if decision.out_of_order {
        out.push((SEQ_PROCESSING, CallbackStatus::Processing, String::new()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Submissions
// ---------------------------------------------------------------------------------------------

/// A channel code: an external id that is also safe as a directory name.
pub fn validate_channel(channel: &str) -> Result<()> {
    validate_external_id(channel, "channel")?;
    if channel.starts_with('.') {
        return Err(Error::new(
            ErrorCode::MalformedId,
            "channel: must not start with '.'",
        ));
    }
    Ok(())
}

/// An interface refund as submitted to the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSubmission {
    pub channel: String,
    pub refund_id: String,
    pub original_trade_id: String,
    pub amount: Money,
}

impl RefundSubmission {
    pub fn new(
        channel: &str,
        refund_id: &str,
        original_trade_id: &str,
        amount: Money,
    ) -> Result<RefundSubmission> {
        validate_channel(channel)?;
        validate_external_id(refund_id, "refund_id")?;
        validate_external_id(original_trade_id, "original_trade_id")?;
        check_positive(&amount)?;
        Ok(RefundSubmission {
            channel: channel.to_string(),
            refund_id: refund_id.to_string(),
            original_trade_id: original_trade_id.to_string(),
            amount,
        })
    }

    /// What makes two submissions "the same request".
    pub fn fingerprint(&self) -> String {
        fingerprint(&[
            "REFUND",
            &self.channel,
            &self.refund_id,
            &self.original_trade_id,
            &self.amount.to_minor().to_string(),
            self.amount.currency().code(),
        ])
    }
}

/// A payout as submitted to the bank. The card number is only checked by the bank (a bad one is a
/// synchronous refusal, not an argument error) and never stored or printed by it.
#[derive(Clone, PartialEq, Eq)]
pub struct PayoutSubmission {
    pub channel: String,
    pub payout_id: String,
    /// The refund the payout pays for (the payer's reference, 附言); empty when not given.
    pub refund_id: String,
    pub card_no: String,
    pub holder_name: String,
    pub amount: Money,
}

impl std::fmt::Debug for PayoutSubmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayoutSubmission")
            .field("channel", &self.channel)
            .field("payout_id", &self.payout_id)
            .field("refund_id", &self.refund_id)
            .field("card_no", &mask_card(&self.card_no))
            .field("holder_name", &self.holder_name)
            .field("amount", &self.amount)
            .finish()
    }
}

impl PayoutSubmission {
    pub fn new(
        channel: &str,
        payout_id: &str,
        card_no: &str,
        holder_name: &str,
        amount: Money,
    ) -> Result<PayoutSubmission> {
        validate_channel(channel)?;
        validate_external_id(payout_id, "payout_id")?;
        check_positive(&amount)?;
        if card_no.len() > 64 {
            return Err(Error::field("card_no", "longer than 64 characters"));
        }
        if holder_name.chars().count() > 256 {
            return Err(Error::field("holder_name", "longer than 256 characters"));
        }
        Ok(PayoutSubmission {
            channel: channel.to_string(),
            payout_id: payout_id.to_string(),
            refund_id: String::new(),
            card_no: card_no.to_string(),
            holder_name: holder_name.to_string(),
            amount,
        })
    }

    /// The same payout, carrying the refund it pays for (validated as an external id; empty
    /// leaves it unset).
    pub fn with_refund_id(mut self, refund_id: &str) -> Result<PayoutSubmission> {
        if !refund_id.is_empty() {
            validate_external_id(refund_id, "refund_id")?;
        }
        self.refund_id = refund_id.to_string();
        Ok(self)
    }

    pub fn fingerprint(&self) -> String {
        let amount = self.amount.to_minor().to_string();
        let mut parts = vec![
            "PAYOUT",
            &self.channel,
            &self.payout_id,
            &self.card_no,
            &self.holder_name,
            &amount,
            self.amount.currency().code(),
        ];
        // Appended only when given, so payouts submitted without one keep their fingerprint.
        if !self.refund_id.is_empty() {
            parts.push(&self.refund_id);
        }
        fingerprint(&parts)
    }

    /// The bank's own checks of the card and name: `Some(reason)` refuses the payout at once.
    pub fn bank_check(&self) -> Option<String> {
        if !CardNumber::is_valid(&self.card_no) {
            return Some(format!("{REASON_INVALID_CARD}: card number is not valid"));
        }
        if self.holder_name.trim().is_empty() {
            return Some(format!("{REASON_NAME_MISMATCH}: holder name is missing"));
        }
        None
    }
}

/// How a refund spreadsheet reached the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileMethod {
    /// 上传文件退款: staff uploaded it to the bank's site.
    FileUpload,
    /// 线下退款: sent by fax, e-mail or paper.
    Offline,
}

impl FileMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            FileMethod::FileUpload => "FILE_UPLOAD",
            FileMethod::Offline => "OFFLINE",
        }
    }

    pub fn parse(s: &str) -> Option<FileMethod> {
        match s {
            "FILE_UPLOAD" => Some(FileMethod::FileUpload),
            "OFFLINE" => Some(FileMethod::Offline),
            _ => None,
        }
    }
}

/// The most rows one file batch may have.
pub const MAX_FILE_ROWS: usize = 10_000;

/// One row of a refund spreadsheet. The card number is checked and fingerprinted, never stored or
/// printed.
#[derive(Clone, PartialEq, Eq)]
pub struct FileRowSubmission {
    pub row_id: String,
    pub refund_id: String,
    pub amount: Money,
    /// Empty when the template has no card column.
    pub card_no: String,
    pub holder_name: String,
}

impl std::fmt::Debug for FileRowSubmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRowSubmission")
            .field("row_id", &self.row_id)
            .field("refund_id", &self.refund_id)
            .field("amount", &self.amount)
            .field("card_no", &mask_card(&self.card_no))
            .field("holder_name", &self.holder_name)
            .finish()
    }
}

impl FileRowSubmission {
    /// Validates one row; errors name the row (`rows[i].field`).
    pub fn new(
        index: usize,
        row_id: &str,
        refund_id: &str,
        amount: Money,
        card_no: &str,
        holder_name: &str,
    ) -> Result<FileRowSubmission> {
        let field = |name: &str| format!("rows[{index}].{name}");
        validate_external_id(row_id, &field("row_id"))?;
        validate_external_id(refund_id, &field("refund_id"))?;
        if !amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                format!("{}: must be greater than zero", field("amount")),
            ));
        }
        if card_no.len() > 64 {
            return Err(Error::field(&field("card_no"), "longer than 64 characters"));
        }
        if holder_name.chars().count() > 256 {
            return Err(Error::field(
                &field("holder_name"),
                "longer than 256 characters",
            ));
        }
        Ok(FileRowSubmission {
            row_id: row_id.to_string(),
            refund_id: refund_id.to_string(),
            amount,
            card_no: card_no.to_string(),
            holder_name: holder_name.to_string(),
        })
    }

    /// What makes two submissions of this row "the same" (the card enters only as a hash).
    pub fn fingerprint(&self, channel: &str) -> String {
        fingerprint(&[
            "FILE",
            channel,
            &self.row_id,
            &self.refund_id,
            &self.amount.to_minor().to_string(),
            self.amount.currency().code(),
            &sha256_hex(self.card_no.replace(' ', "").as_bytes()),
            &self.holder_name,
        ])
    }

    /// The bank's check of the row when it processes the file: a card number that is given but
    /// not valid fails the row (reported in the clearing file, like any other failure).
    pub fn bank_check(&self) -> Option<String> {
        if !self.card_no.is_empty() && !CardNumber::is_valid(&self.card_no) {
            return Some(format!("{REASON_INVALID_CARD}: card number is not valid"));
        }
        None
    }
}

/// A refund spreadsheet (file-upload or offline) as the bank receives it. Idempotent by
/// `batch_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBatchSubmission {
    pub channel: String,
    pub batch_id: String,
    pub method: FileMethod,
    pub rows: Vec<FileRowSubmission>,
}

impl FileBatchSubmission {
    /// Validates the batch: 1 to [`MAX_FILE_ROWS`] rows with distinct row ids.
    pub fn new(
        channel: &str,
        batch_id: &str,
        method: &str,
        rows: Vec<FileRowSubmission>,
    ) -> Result<FileBatchSubmission> {
        validate_channel(channel)?;
        validate_external_id(batch_id, "batch_id")?;
        let method = FileMethod::parse(method).ok_or_else(|| {
            Error::field(
                "method",
                format!("{method:?} is not FILE_UPLOAD or OFFLINE"),
            )
        })?;
        if rows.is_empty() {
            return Err(Error::field("rows", "at least one row is required"));
        }
        if rows.len() > MAX_FILE_ROWS {
            return Err(Error::field(
                "rows",
                format!("at most {MAX_FILE_ROWS} rows per batch"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, r) in rows.iter().enumerate() {
            if !seen.insert(r.row_id.as_str()) {
                return Err(Error::field(
                    &format!("rows[{i}].row_id"),
                    format!("{} appears twice in the batch", r.row_id),
                ));
            }
        }
        Ok(FileBatchSubmission {
            channel: channel.to_string(),
            batch_id: batch_id.to_string(),
            method,
            rows,
        })
    }

    /// What makes two submissions of the batch "the same request" (row order included).
    pub fn fingerprint(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| r.fingerprint(&self.channel))
            .collect();
        let mut parts: Vec<&str> =
            vec!["BATCH", &self.channel, &self.batch_id, self.method.as_str()];
        parts.extend(rows.iter().map(String::as_str));
        fingerprint(&parts)
    }
}

/// The bank's answer to a file batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBatchOutcome {
    /// Rows the bank took (each becomes a FILE transaction).
    pub accepted: u32,
    /// Rows refused at submission. The simulator takes every row of a well-formed batch: a row's
    /// problems show up as a FAILED row in the clearing file when the bank processes it.
    pub rejected: u32,
}

fn check_positive(amount: &Money) -> Result<()> {
    if !amount.is_positive() {
        return Err(Error::new(
            ErrorCode::InvalidAmount,
            "amount: must be greater than zero",
        ));
    }
    Ok(())
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// The simulator's deterministic decisions
// ---------------------------------------------------------------------------------------------

pub const REASON_CARD_CANCELLED: &str = "CARD_CANCELLED: card cancelled";
pub const REASON_BEYOND_WINDOW: &str = "BEYOND_WINDOW: beyond the bank's refund window";
pub const REASON_ACCOUNT_CLOSED: &str = "ACCOUNT_CLOSED: account closed";
/// Refund failure reasons, one of which a failing refund gets.
pub const REFUND_FAIL_REASONS: &[&str] = &[
    REASON_CARD_CANCELLED,
    REASON_BEYOND_WINDOW,
    REASON_ACCOUNT_CLOSED,
];
/// File-upload and offline refund failure reasons (the refund goes to the customer's card or
/// account, which may be gone).
pub const FILE_FAIL_REASONS: &[&str] = &[REASON_CARD_CANCELLED, REASON_ACCOUNT_CLOSED];
pub const REASON_INVALID_CARD: &str = "INVALID_CARD";
pub const REASON_NAME_MISMATCH: &str = "NAME_MISMATCH";
/// Payout failure reasons.
pub const PAYOUT_FAIL_REASONS: &[&str] = &[REASON_INVALID_CARD, REASON_NAME_MISMATCH];
/// Why the simulator refuses at random (sync_reject_per_mille).
pub const REASON_SYNC_REJECT: &str = "BANK_REJECTED: the bank refused the request";
/// Why a paid payout comes back.
pub const REASON_RETURNED: &str = "RETURNED: the receiving bank returned the payout";

/// The simulator's knobs. All rates are per mille (0..=1000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimParams {
    pub seed: u64,
    pub delay_min_secs: u64,
    pub delay_max_secs: u64,
    pub fail_per_mille: u32,
    pub duplicate_callback_per_mille: u32,
    pub out_of_order_per_mille: u32,
    pub sync_reject_per_mille: u32,
    /// Share of paid payouts the bank later returns (退票).
    pub return_per_mille: u32,
    /// How long after payment a return happens.
    pub return_delay_secs: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            seed: 0,
            delay_min_secs: 60,
            delay_max_secs: 7200,
            fail_per_mille: 100,
            duplicate_callback_per_mille: 100,
            out_of_order_per_mille: 100,
            sync_reject_per_mille: 0,
            return_per_mille: 0,
            return_delay_secs: 3600,
        }
    }
}

impl SimParams {
    pub fn validate(&self) -> Result<()> {
        if self.delay_min_secs > self.delay_max_secs {
            return Err(Error::field(
                "delay_min_secs",
                "must not exceed delay_max_secs",
            ));
        }
        // A week of delay is far beyond any bank's; the bound keeps millisecond sums far from overflow.
        if self.delay_max_secs > 366 * 24 * 3600 || self.return_delay_secs > 366 * 24 * 3600 {
            return Err(Error::field("delay_max_secs", "must not exceed one year"));
        }
        for (name, v) in [
            ("fail_per_mille", self.fail_per_mille),
            (
                "duplicate_callback_per_mille",
                self.duplicate_callback_per_mille,
            ),
            ("out_of_order_per_mille", self.out_of_order_per_mille),
            ("sync_reject_per_mille", self.sync_reject_per_mille),
            ("return_per_mille", self.return_per_mille),
        ] {
            if v > 1000 {
                return Err(Error::field(name, "must be at most 1000"));
            }
        }
        Ok(())
    }
}

/// Amounts whose outcome is scripted, as payment sandboxes do with test card numbers, so that
/// demos and tests can ask the simulated bank for a particular behaviour whatever the seed:
/// - cents `.13`: an interface refund is accepted, then fails `CARD_CANCELLED`;
/// - cents `.23`: a payout is accepted, then fails `NAME_MISMATCH`;
/// - cents `.33`: a file-upload or offline row fails `ACCOUNT_CLOSED`;
/// - cents `.44`: a payout is paid, then returned (退票) `return_delay_secs` later;
/// - cents `.88`: it succeeds.
///
/// A scripted amount of another kind (a payout of `.13`, say) succeeds; every other amount is
/// decided by the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Fail(&'static str),
    Return,
    Succeed,
}

/// The scripted behaviour of a transaction of `kind` and `amount`, if any.
pub fn scripted(kind: TxKind, amount: &Money) -> Option<Script> {
    match (amount.to_minor().rem_euclid(100), kind) {
        (13, TxKind::Refund) => Some(Script::Fail(REASON_CARD_CANCELLED)),
        (23, TxKind::Payout) => Some(Script::Fail(REASON_NAME_MISMATCH)),
        (33, TxKind::File) => Some(Script::Fail(REASON_ACCOUNT_CLOSED)),
        (44, TxKind::Payout) => Some(Script::Return),
        (13 | 23 | 33 | 44 | 88, _) => Some(Script::Succeed),
        _ => None,
    }
}

/// Everything the simulator decides about one transaction, from `sha256(seed, kind, id)` and, for
/// the scripted amounts, the amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub bank_ref: String,
    /// `Some(reason)`: refused synchronously.
    pub sync_reject: Option<String>,
    /// `Some(reason)`: accepted, then fails.
    pub fail_reason: Option<String>,
    pub delay_secs: u64,
    pub duplicate_callback: bool,
    pub out_of_order: bool,
    /// Payouts only: returned this long after being paid.
    pub return_after_secs: Option<u64>,
}

impl Decision {
    /// What the simulator does with transaction `id` of `amount`. Seeded by `(seed, kind, id)`,
    /// except for the scripted amounts of [`scripted`], which behave the same for every seed.
    pub fn decide(params: &SimParams, kind: TxKind, id: &str, amount: &Money) -> Decision {
        let mut d = Decision::seeded(params, kind, id);
        if let Some(script) = scripted(kind, amount) {
            d.sync_reject = None;
            d.fail_reason = None;
            d.return_after_secs = None;
            match script {
                Script::Fail(reason) => d.fail_reason = Some(reason.to_string()),
                Script::Return => d.return_after_secs = Some(params.return_delay_secs),
                Script::Succeed => {}
            }
        }
        d
    }

    fn seeded(params: &SimParams, kind: TxKind, id: &str) -> Decision {
        let mut h = Sha256::new();
        h.update(b"tuikuan-bank-sim-v1");
        h.update(params.seed.to_be_bytes());
        h.update(kind.as_str().as_bytes());
        h.update(b":");
        h.update(id.as_bytes());
        let d: [u8; 32] = h.finalize().into();
        let word = |i: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let per_mille = |i: usize, rate: u32| -> bool {
            let v = u16::from_be_bytes([d[i], d[i + 1]]) % 1000;
            u32::from(v) < rate
        };
        let bank_ref = format!("BK{}", hex::encode_upper(&d[0..8]));
        let span = params.delay_max_secs.saturating_sub(params.delay_min_secs);
        let delay_secs = params.delay_min_secs + word(8) % (span + 1);
        // A bank takes an uploaded file as a whole: its rows are never refused at submission.
        let sync_reject = (kind != TxKind::File && per_mille(16, params.sync_reject_per_mille))
            .then(|| REASON_SYNC_REJECT.to_string());
        let reasons = match kind {
            TxKind::Refund => REFUND_FAIL_REASONS,
            TxKind::Payout => PAYOUT_FAIL_REASONS,
            TxKind::File => FILE_FAIL_REASONS,
        };
        let fail_reason = per_mille(18, params.fail_per_mille)
            .then(|| reasons[usize::from(d[20]) % reasons.len()].to_string());
        let duplicate_callback = per_mille(21, params.duplicate_callback_per_mille);
        let out_of_order = per_mille(23, params.out_of_order_per_mille);
        let return_after_secs = (kind == TxKind::Payout
            && fail_reason.is_none()
            && per_mille(25, params.return_per_mille))
        .then_some(params.return_delay_secs);
        Decision {
            bank_ref,
            sync_reject,
            fail_reason,
            delay_secs,
            duplicate_callback,
            out_of_order,
            return_after_secs,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clearing file
// ---------------------------------------------------------------------------------------------

/// The `format` of every clearing file this crate writes.
pub const CLEARING_FILE_FORMAT: &str = "tuikuan-csv-v1";

/// The exact header line of a clearing file.
pub const CLEARING_HEADER: [&str; 9] = [
    "record_type",
    "id",
    "bank_ref",
    "channel",
    "amount",
    "currency",
    "status",
    "completed_at",
    "reason",
];

/// The largest clearing file [`parse_clearing_csv`] reads.
pub const MAX_CLEARING_FILE_BYTES: usize = 256 * 1024 * 1024;

/// The clearing file format, as documentation (`docs/clearing-file.md`).
pub const CLEARING_FILE_FORMAT_DOC: &str = include_str!("../../../docs/clearing-file.md");

/// A clearing file row's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    Refund,
    Payout,
    /// A file-upload or offline refund row (reported by its row id).
    File,
}

impl RecordType {
    pub const ALL: &'static [RecordType] =
        &[RecordType::Refund, RecordType::Payout, RecordType::File];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Refund => "REFUND",
            RecordType::Payout => "PAYOUT",
            RecordType::File => "FILE",
        }
    }

    pub fn parse(s: &str) -> Option<RecordType> {
        RecordType::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

impl From<TxKind> for RecordType {
    fn from(k: TxKind) -> Self {
        match k {
            TxKind::Refund => RecordType::Refund,
            TxKind::Payout => RecordType::Payout,
            TxKind::File => RecordType::File,
        }
    }
}

/// A clearing file row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClearingStatus {
    Success,
    Failed,
}

impl ClearingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClearingStatus::Success => "SUCCESS",
            ClearingStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<ClearingStatus> {
        match s {
            "SUCCESS" => Some(ClearingStatus::Success),
            "FAILED" => Some(ClearingStatus::Failed),
            _ => None,
        }
    }
}

/// One row of a clearing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearingRow {
    pub record_type: RecordType,
    pub id: String,
    pub bank_ref: String,
    pub channel: String,
    pub amount: Money,
    pub status: ClearingStatus,
    pub completed_at: DateTime<Utc>,
    pub reason: String,
}

impl ClearingRow {
    /// The row of a completed transaction (`None` for one that is not complete).
    pub fn from_tx(tx: &BankTx) -> Option<ClearingRow> {
        let status = match tx.status {
            TxStatus::Succeeded | TxStatus::Returned => ClearingStatus::Success,
            TxStatus::Failed => ClearingStatus::Failed,
            TxStatus::Accepted | TxStatus::Rejected => return None,
        };
        Some(ClearingRow {
            record_type: tx.kind.into(),
            id: tx.id.clone(),
            bank_ref: tx.bank_ref.clone(),
            channel: tx.channel.clone(),
            amount: tx.amount,
            status,
            completed_at: from_ms(tx.completed_at_ms?),
            reason: if status == ClearingStatus::Failed {
                tx.reason.clone()
            } else {
                String::new()
            },
        })
    }
}

/// `completed_at` as written: RFC 3339 with milliseconds in +08:00.
pub fn format_completed_at(at: DateTime<Utc>) -> String {
    at.with_timezone(&business_tz())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// Writes rows as a `tuikuan-csv-v1` clearing file.
pub fn write_clearing_csv(rows: &[ClearingRow]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let io = |e: csv::Error| Error::internal(format!("cannot write clearing file: {e}"));
    w.write_record(CLEARING_HEADER).map_err(io)?;
    for r in rows {
        let amount = r.amount.amount_string();
        let completed_at = format_completed_at(r.completed_at);
        w.write_record([
            r.record_type.as_str(),
            &r.id,
            &r.bank_ref,
            &r.channel,
            &amount,
            r.amount.currency().code(),
            r.status.as_str(),
            &completed_at,
            &r.reason,
        ])
        .map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| Error::internal(format!("cannot write clearing file: {e}")))
}

fn bad_line(line: u64, field: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::InvalidArgument,
        format!("clearing file line {line}: {field}: {problem}"),
    )
}

/// Parses a `tuikuan-csv-v1` clearing file strictly: the header must be exact, and every row must
/// have all nine fields, valid ids, a positive amount within the currency's decimals, a known
/// status and an RFC 3339 `completed_at`. Any defect rejects the whole file with
/// `INVALID_ARGUMENT` naming the line number and the field. Never panics.
pub fn parse_clearing_csv(bytes: &[u8]) -> Result<Vec<ClearingRow>> {
    if bytes.len() > MAX_CLEARING_FILE_BYTES {
        return Err(bad_line(
            1,
            "file",
            format!("larger than {MAX_CLEARING_FILE_BYTES} bytes"),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records = reader.byte_records();
    let csv_err = |e: csv::Error, fallback_line: u64| {
        let line = e.position().map(|p| p.line()).unwrap_or(fallback_line);
        bad_line(line, "record", format!("malformed csv ({e})"))
    };
    let header = match records.next() {
        None => return Err(bad_line(1, "header", "missing (the file is empty)")),
        Some(r) => r.map_err(|e| csv_err(e, 1))?,
    };
    let header_fields: Vec<&[u8]> = header.iter().collect();
    let expected: Vec<&[u8]> = CLEARING_HEADER.iter().map(|h| h.as_bytes()).collect();
    if header_fields != expected {
        return Err(bad_line(
            1,
            "header",
            format!("expected {:?}", CLEARING_HEADER.join(",")),
        ));
    }
    let mut rows = Vec::new();
    let mut last_line = 1u64;
    for rec in records {
        let rec = rec.map_err(|e| csv_err(e, last_line + 1))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(last_line + 1);
        last_line = line;
        if rec.len() != CLEARING_HEADER.len() {
            return Err(bad_line(
                line,
                "record",
                format!(
                    "has {} fields, expected {}",
                    rec.len(),
                    CLEARING_HEADER.len()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(CLEARING_HEADER.len());
        for (i, raw) in rec.iter().enumerate() {
            let s = std::str::from_utf8(raw)
                .map_err(|_| bad_line(line, CLEARING_HEADER[i], "is not valid UTF-8"))?;
            fields.push(s);
        }
        rows.push(parse_row(line, &fields)?);
    }
    Ok(rows)
}

fn parse_row(line: u64, f: &[&str]) -> Result<ClearingRow> {
    let record_type = RecordType::parse(f[0]).ok_or_else(|| {
        bad_line(
            line,
            "record_type",
            format!("{:?} is not REFUND, PAYOUT or FILE", f[0]),
        )
    })?;
    let id_ok = |value: &str, field: &str| {
        validate_external_id(value, field).map_err(|e| {
            Error::new(
                ErrorCode::InvalidArgument,
                format!("clearing file line {line}: {}", e.message),
            )
        })
    };
    id_ok(f[1], "id")?;
    id_ok(f[2], "bank_ref")?;
    id_ok(f[3], "channel")?;
    let amount = Money::parse(f[4], f[5], "amount").map_err(|e| {
        let field = if e.message.starts_with("amount.currency") {
            "currency"
        } else {
            "amount"
        };
        let problem = e
            .message
            .split_once(": ")
            .map(|(_, p)| p.to_string())
            .unwrap_or(e.message.clone());
        bad_line(line, field, problem)
    })?;
    if amount.amount_string() != f[4] {
        return Err(bad_line(
            line,
            "amount",
            format!(
                "{:?} must be written with exactly {} decimals",
                f[4],
                amount.currency().decimals()
            ),
        ));
    }
    let status = ClearingStatus::parse(f[6]).ok_or_else(|| {
        bad_line(
            line,
            "status",
            format!("{:?} is not SUCCESS or FAILED", f[6]),
        )
    })?;
    let completed_at = DateTime::parse_from_rfc3339(f[7])
        .map_err(|e| {
            bad_line(
                line,
                "completed_at",
                format!("{:?} is not RFC 3339 ({e})", f[7]),
            )
        })?
        .with_timezone(&Utc);
    if f[8].chars().count() > 1024 {
        return Err(bad_line(line, "reason", "longer than 1024 characters"));
    }
    Ok(ClearingRow {
        record_type,
        id: f[1].to_string(),
        bank_ref: f[2].to_string(),
        channel: f[3].to_string(),
        amount,
        status,
        completed_at,
        reason: f[8].to_string(),
    })
}

/// Parses a business date written `YYYY-MM-DD`.
pub fn parse_date(s: &str, field: &str) -> Result<NaiveDate> {
    if s.len() != 10 {
        return Err(Error::field(
            field,
            format!("{} is not a YYYY-MM-DD date", tuikuan_kernel::echo(s)),
        ));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        Error::field(
            field,
            format!("{} is not a YYYY-MM-DD date", tuikuan_kernel::echo(s)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_kernel::clock::start_of_business_date;
    use tuikuan_kernel::Currency;

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    #[test]
    fn transition_table() {
        use TxStatus::*;
        let mut table = String::new();
        for kind in [TxKind::Refund, TxKind::Payout] {
            for from in TxStatus::ALL {
                for to in TxStatus::ALL {
                    if from.can_transition(*to, kind) {
                        table.push_str(&format!(
                            "{} {} -> {}\n",
                            kind.as_str(),
                            from.as_str(),
                            to.as_str()
                        ));
                    }
                }
            }
        }
        assert_eq!(
            table,
            "REFUND ACCEPTED -> SUCCEEDED\nREFUND ACCEPTED -> FAILED\n\
             PAYOUT ACCEPTED -> SUCCEEDED\nPAYOUT ACCEPTED -> FAILED\nPAYOUT SUCCEEDED -> RETURNED\n"
        );
        assert_eq!(
            Succeeded
                .transition(Failed, TxKind::Refund)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(
            Succeeded
                .transition(Returned, TxKind::Refund)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
    }

    #[test]
    fn decisions_are_deterministic_and_seeded() {
        let p = SimParams {
            seed: 7,
            ..SimParams::default()
        };
        let a = Decision::decide(
            &p,
            TxKind::Refund,
            "rf-1",
            &Money::from_minor(100, Currency::Cny),
        );
        assert_eq!(
            a,
            Decision::decide(
                &p,
                TxKind::Refund,
                "rf-1",
                &Money::from_minor(100, Currency::Cny)
            )
        );
        assert!(a.bank_ref.starts_with("BK") && a.bank_ref.len() == 18);
        assert!((60..=7200).contains(&a.delay_secs));
        let other = SimParams {
            seed: 8,
            ..p.clone()
        };
        assert_ne!(
            a.bank_ref,
            Decision::decide(
                &other,
                TxKind::Refund,
                "rf-1",
                &Money::from_minor(100, Currency::Cny)
            )
            .bank_ref
        );
        // Rates: 0 never, 1000 always; the share in between is roughly the rate.
        let never = SimParams {
            fail_per_mille: 0,
            duplicate_callback_per_mille: 0,
            out_of_order_per_mille: 0,
            ..p.clone()
        };
        let always = SimParams {
            fail_per_mille: 1000,
            duplicate_callback_per_mille: 1000,
            out_of_order_per_mille: 1000,
            sync_reject_per_mille: 1000,
            ..p.clone()
        };
        let mut failed = 0;
        for i in 0..1000 {
            let id = format!("rf-{i}");
            let n = Decision::decide(
                &never,
                TxKind::Refund,
                &id,
                &Money::from_minor(100, Currency::Cny),
            );
            assert!(
                n.fail_reason.is_none()
                    && !n.duplicate_callback
                    && !n.out_of_order
                    && n.sync_reject.is_none()
            );
            let a = Decision::decide(
                &always,
                TxKind::Payout,
                &id,
                &Money::from_minor(100, Currency::Cny),
            );
            assert!(a.duplicate_callback && a.out_of_order && a.sync_reject.is_some());
            assert!(PAYOUT_FAIL_REASONS.contains(&a.fail_reason.as_deref().unwrap_or("")));
            if let Some(r) = Decision::decide(
                &p,
                TxKind::Refund,
                &id,
                &Money::from_minor(100, Currency::Cny),
            )
            .fail_reason
            {
                assert!(REFUND_FAIL_REASONS.contains(&r.as_str()));
                failed += 1;
            }
        }
        assert!(
            (50..150).contains(&failed),
            "{failed} failures of 1000 at 100 per mille"
        );
        let fixed = SimParams {
            delay_min_secs: 30,
            delay_max_secs: 30,
            ..p
        };
        assert_eq!(
            Decision::decide(
                &fixed,
                TxKind::Refund,
                "x",
                &Money::from_minor(100, Currency::Cny)
            )
            .delay_secs,
            30
        );
    }

    #[test]
    fn params_are_checked() {
        assert!(SimParams::default().validate().is_ok());
        let bad = SimParams {
            delay_min_secs: 10,
            delay_max_secs: 5,
            ..SimParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().code, ErrorCode::InvalidArgument);
        let bad = SimParams {
            fail_per_mille: 1001,
            ..SimParams::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .message
            .contains("fail_per_mille"));
    }

    #[test]
    fn payout_bank_checks() {
        let ok = PayoutSubmission::new("quick", "po-1", "4111 1111 1111 1111", "Li Lei", cny("1"))
            .unwrap();
        assert_eq!(ok.bank_check(), None);
        assert!(!format!("{ok:?}").contains("4111 1111 1111 1111"));
        assert!(format!("{ok:?}").contains("**** 1111"));
        for card in [
            "4111111111111112",
            "12345",
            "41111111111111111111",
            "4111-1111-1111-1111",
            "",
        ] {
            let s = PayoutSubmission::new("quick", "po-1", card, "Li Lei", cny("1")).unwrap();
            assert!(
                s.bank_check().unwrap().starts_with("INVALID_CARD"),
                "{card}"
            );
        }
        let s = PayoutSubmission::new("quick", "po-1", "4111111111111111", " ", cny("1")).unwrap();
        assert!(s.bank_check().unwrap().starts_with("NAME_MISMATCH"));
        assert_eq!(
            PayoutSubmission::new("..", "po-1", "4111111111111111", "a", cny("1"))
                .unwrap_err()
                .code,
            ErrorCode::MalformedId
        );
    }

    #[test]
    fn refund_submission_validates_and_fingerprints() {
        let a = RefundSubmission::new("netbank", "rf-1", "tr-1", cny("12.5")).unwrap();
        let b = RefundSubmission::new("netbank", "rf-1", "tr-1", cny("12.50")).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = RefundSubmission::new("netbank", "rf-1", "tr-1", cny("12.51")).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(
            RefundSubmission::new("netbank", "", "tr-1", cny("1"))
                .unwrap_err()
                .message,
            "refund_id: is required"
        );
        assert_eq!(
            RefundSubmission::new("netbank", "rf", "tr", Money::zero(Currency::Cny))
                .unwrap_err()
                .code,
            ErrorCode::InvalidAmount
        );
    }

    fn sample_rows() -> Vec<ClearingRow> {
        let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let t0 = start_of_business_date(day);
        vec![
            ClearingRow {
                record_type: RecordType::Refund,
                id: "rf-1".into(),
                bank_ref: "BK0001".into(),
                channel: "netbank".into(),
                amount: cny("12.5"),
                status: ClearingStatus::Success,
                completed_at: t0 + chrono::Duration::minutes(61),
                reason: String::new(),
            },
            ClearingRow {
                record_type: RecordType::Payout,
                id: "po-2".into(),
                bank_ref: "BK0002".into(),
                channel: "netbank".into(),
                amount: Money::parse("100", "JPY", "amount").unwrap(),
                status: ClearingStatus::Failed,
                completed_at: t0 + chrono::Duration::milliseconds(86_399_999),
                reason: "ACCOUNT_CLOSED: account closed, \"really\"".into(),
            },
        ]
    }

    #[test]
    fn clearing_csv_round_trips() {
        let rows = sample_rows();
        let bytes = write_clearing_csv(&rows).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n\
             REFUND,rf-1,BK0001,netbank,12.50,CNY,SUCCESS,2026-11-26T01:01:00.000+08:00,\n\
             PAYOUT,po-2,BK0002,netbank,100,JPY,FAILED,2026-11-26T23:59:59.999+08:00,\"ACCOUNT_CLOSED: account closed, \"\"really\"\"\"\n"
        );
        assert_eq!(parse_clearing_csv(&bytes).unwrap(), rows);
        let empty = write_clearing_csv(&[]).unwrap();
        assert_eq!(parse_clearing_csv(&empty).unwrap(), vec![]);
        assert_eq!(sha256_hex(b"").len(), 64);
    }

    #[test]
    fn malformed_clearing_csv_names_line_and_field() {
        let good = String::from_utf8(write_clearing_csv(&sample_rows()).unwrap()).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "line 1: header"),
            ("id,record_type\n".into(), "line 1: header"),
            (good.replace("12.50,CNY", "12.5x,CNY"), "line 2: amount"),
            (good.replace("12.50,CNY", "12.5,CNY"), "line 2: amount"),
            (good.replace("12.50,CNY", "-1.00,CNY"), "line 2: amount"),
            (good.replace("12.50,CNY", "12.50,XXX"), "line 2: currency"),
            (
                good.replace("100,JPY,FAILED", "100,JPY,LOST"),
                "line 3: status",
            ),
            (
                good.replace("REFUND,rf-1", "REFUNDS,rf-1"),
                "line 2: record_type",
            ),
            (good.replace("rf-1", "rf 1"), "line 2: id"),
            (good.replace("rf-1", ""), "line 2: id"),
            (
                good.replace("2026-11-26T01:01:00.000+08:00", "yesterday"),
                "line 2: completed_at",
            ),
            (good.replace(",netbank,12.50", ",12.50"), "line 2: record"),
            (format!("{good}REFUND,x\n"), "line 4: record"),
            (format!("{good}\"unterminated,"), "line 4"),
        ];
        for (text, want) in cases {
            let e = parse_clearing_csv(text.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{text}");
            assert!(
                e.message.contains(want),
                "{:?} should contain {want:?}",
                e.message
            );
        }
        let mut bytes = good.into_bytes();
        bytes.extend_from_slice(
            b"REFUND,\xff,BK,c,1.00,CNY,SUCCESS,2026-11-26T01:01:00.000+08:00,\n",
        );
        let e = parse_clearing_csv(&bytes).unwrap_err();
        assert!(e.message.contains("line 4: id"), "{}", e.message);
    }

    #[test]
    fn parsing_damaged_files_never_panics() {
        let good = write_clearing_csv(&sample_rows()).unwrap();
        let mut accepted = 0;
        for i in 0u32..3000 {
            let h = Sha256::digest(i.to_be_bytes());
            let mut bytes = good.clone();
            // One to three byte edits: replace, truncate, or insert.
            for k in 0..=(h[0] % 3) as usize {
                let pos = usize::from(u16::from_be_bytes([h[1 + k], h[2 + k]])) % bytes.len();
                match h[5 + k] % 3 {
                    0 => bytes[pos] = h[8 + k],
                    1 => bytes.truncate(pos),
                    _ => bytes.insert(pos, h[8 + k]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            match parse_clearing_csv(&bytes) {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::InvalidArgument);
                    assert!(
                        e.message.starts_with("clearing file line "),
                        "{}",
                        e.message
                    );
                }
            }
        }
        assert!(accepted < 3000);
    }

    #[test]
    fn file_batches_validate_and_fingerprint() {
        let row = |i: usize, id: &str, amount: &str, card: &str| {
            FileRowSubmission::new(i, id, &format!("rf-{id}"), cny(amount), card, "Han Meimei")
        };
        let a = row(0, "r1", "12.5", "4111 1111 1111 1111").unwrap();
        let shown = format!("{a:?}");
        assert!(!shown.contains("4111 1111 1111 1111") && shown.contains("**** 1111"));
        assert_eq!(a.bank_check(), None);
        assert_eq!(row(1, "r2", "1", "").unwrap().bank_check(), None);
        assert!(row(1, "r2", "1", "4111111111111112")
            .unwrap()
            .bank_check()
            .unwrap()
            .starts_with("INVALID_CARD"));
        let e = row(3, "r 3", "1", "").unwrap_err();
        assert!(e.message.starts_with("rows[3].row_id"), "{}", e.message);
        // The card enters the fingerprint only hashed, spaces ignored.
        let same = row(0, "r1", "12.50", "4111111111111111").unwrap();
        assert_eq!(a.fingerprint("unionpay"), same.fingerprint("unionpay"));
        assert!(!a.fingerprint("unionpay").contains("4111"));

        let b = row(1, "r2", "3", "").unwrap();
        let batch =
            FileBatchSubmission::new("unionpay", "fb-1", "OFFLINE", vec![a.clone(), b.clone()])
                .unwrap();
        assert_eq!(batch.method, FileMethod::Offline);
        let upload = FileBatchSubmission::new(
            "unionpay",
            "fb-1",
            "FILE_UPLOAD",
            vec![a.clone(), b.clone()],
        )
        .unwrap();
        assert_ne!(batch.fingerprint(), upload.fingerprint());
        let reordered =
            FileBatchSubmission::new("unionpay", "fb-1", "OFFLINE", vec![b, a.clone()]).unwrap();
        assert_ne!(batch.fingerprint(), reordered.fingerprint());
        for (method, rows, want) in [
            ("FAX", vec![a.clone()], "method"),
            ("OFFLINE", vec![], "rows"),
            ("OFFLINE", vec![a.clone(), a.clone()], "rows[1].row_id"),
        ] {
            let e = FileBatchSubmission::new("unionpay", "fb-1", method, rows).unwrap_err();
            assert!(e.message.starts_with(want), "{}", e.message);
        }
        // File rows are never refused synchronously, and fail with file reasons.
        let p = SimParams {
            sync_reject_per_mille: 1000,
            fail_per_mille: 1000,
            ..SimParams::default()
        };
        for i in 0..50 {
            let d = Decision::decide(
                &p,
                TxKind::File,
                &format!("r{i}"),
                &Money::from_minor(100, Currency::Cny),
            );
            assert_eq!(d.sync_reject, None);
            assert!(FILE_FAIL_REASONS.contains(&d.fail_reason.as_deref().unwrap()));
            assert_eq!(d.return_after_secs, None);
        }
    }

    #[test]
    fn file_rows_in_the_clearing_file() {
        let text = format!(
            "{}\nFILE,fb1-03,BK1,unionpay,3.50,CNY,FAILED,2026-11-27T16:00:00.000+08:00,ACCOUNT_CLOSED: account closed\n",
            CLEARING_HEADER.join(",")
        );
        let rows = parse_clearing_csv(text.as_bytes()).unwrap();
        assert_eq!(rows[0].record_type, RecordType::File);
        assert_eq!(write_clearing_csv(&rows).unwrap(), text.as_bytes());
        let bad = text.replace("FILE,", "SHEET,");
        let e = parse_clearing_csv(bad.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("is not REFUND, PAYOUT or FILE"),
            "{}",
            e.message
        );
        for r in RecordType::ALL {
            assert_eq!(RecordType::parse(r.as_str()), Some(*r));
        }
        assert_eq!(RecordType::from(TxKind::File), RecordType::File);
    }

    #[test]
    fn completion_callbacks_follow_the_decision() {
        let p = SimParams {
            duplicate_callback_per_mille: 1000,
            out_of_order_per_mille: 1000,
            ..SimParams::default()
        };
        let d = Decision::decide(
            &p,
            TxKind::Refund,
            "rf-1",
            &Money::from_minor(100, Currency::Cny),
        );
        let cbs = completion_callbacks(true, "", &d);
        assert_eq!(
            cbs.iter().map(|(s, st, _)| (*s, *st)).collect::<Vec<_>>(),
            vec![
                (2, CallbackStatus::Succeeded),
                (2, CallbackStatus::Succeeded),
                (1, CallbackStatus::Processing)
            ]
        );
        let p = SimParams {
            duplicate_callback_per_mille: 0,
            out_of_order_per_mille: 0,
            ..SimParams::default()
        };
        let d = Decision::decide(
            &p,
            TxKind::Refund,
            "rf-1",
            &Money::from_minor(100, Currency::Cny),
        );
        assert_eq!(
            completion_callbacks(false, "x", &d),
            vec![(2, CallbackStatus::Failed, "x".to_string())]
        );
    }

    #[test]
    fn scripted_amounts_override_the_seed() {
        let always_fail = SimParams {
            fail_per_mille: 1000,
            sync_reject_per_mille: 1000,
            ..SimParams::default()
        };
        let m = |minor| Money::from_minor(minor, Currency::Cny);
        let refund = Decision::decide(&always_fail, TxKind::Refund, "rf-x", &m(1013));
        assert_eq!(refund.fail_reason.as_deref(), Some(REASON_CARD_CANCELLED));
        assert_eq!(refund.sync_reject, None);
        // The same amount paid out is not scripted to fail.
        let payout = Decision::decide(&always_fail, TxKind::Payout, "po-x", &m(1013));
        assert_eq!((payout.fail_reason, payout.sync_reject), (None, None));
        let payout = Decision::decide(&always_fail, TxKind::Payout, "po-y", &m(1023));
        assert_eq!(payout.fail_reason.as_deref(), Some(REASON_NAME_MISMATCH));
        let row = Decision::decide(&always_fail, TxKind::File, "row-1", &m(1033));
        assert_eq!(row.fail_reason.as_deref(), Some(REASON_ACCOUNT_CLOSED));
        let returned = Decision::decide(&SimParams::default(), TxKind::Payout, "po-z", &m(1044));
        assert!(returned.return_after_secs.is_some() && returned.fail_reason.is_none());
        let ok = Decision::decide(&always_fail, TxKind::Refund, "rf-z", &m(1088));
        assert_eq!((ok.fail_reason, ok.sync_reject), (None, None));
        assert_eq!(scripted(TxKind::Refund, &m(1000)), None);
    }
}
