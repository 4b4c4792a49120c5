//! The pure part of reconciliation: clearing-file records and their parsers, the streaming
//! matcher, the outcomes, suspense and discrepancy rules, and the write-back state machine. No
//! storage and no RPC here.
//!
//! - [`ClearingFileParser`] reads a bank file from a [`BufRead`] line by line and hands each
//!   [`BankRecord`] to a callback (files are never loaded whole). Four formats:
//!   [`csv_v1`] (`tuikuan-csv-v1`), [`wechat`] (WeChat Pay trade bills, every layout),
//!   [`unionpay`] (UnionPay's ZM file) and [`alipay`] (Alipay's 业务明细); [`text`] holds what
//!   they share (encodings, amounts, the content digest). [`FileFormat`] names them (and detects
//!   one from a file's first bytes) and [`parser_for`] picks one. Parsers are strict: a malformed
//!   file is rejected whole, `INVALID_ARGUMENT` naming the line and the field. Records handed to
//!   the callback before an error are provisional: the caller writes nothing until `parse`
//!   returned `Ok`. Payment rows are handed on as [`RecordKind::Payment`] records, which matching
//!   skips. [`inspect`] reads a file for people, without matching it.
//! - [`Matcher`] matches bank records against the platform's submitted refunds, keyed by the
//!   refund's bank reference id (the refund id for interface refunds, the payout id for payout
//!   refunds, the batch row id for file-upload and offline refunds), one record at a time, with
//!   memory proportional to the platform side only. [`match_refunds`] is the batch form.
//! - [`suspense_decision`]: platform-only refunds wait in suspense for the channel's cross-day
//!   window, then become a 银行漏单 discrepancy.
//! - [`Discrepancy`], [`discrepancy_kind_of`], [`plan_resolution`]: what becomes a discrepancy, and
//!   what "bank wins" does for each kind.
//! - [`WriteBackState`] is the life of an item's write-back: `NotNeeded`, or `Pending` → `Done` /
//!   `Refused` (the refund center already had a different final status: a discrepancy).

pub mod alipay;
pub mod csv_v1;
pub mod inspect;
pub mod rejection;
pub mod resolution;
pub mod text;
pub mod unionpay;
pub mod wechat;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::BufRead;

use chrono::{DateTime, NaiveDate, Utc};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

pub use alipay::{AlipayBillParser, ALIPAY_FORMAT};
pub use csv_v1::{CsvV1Parser, CSV_V1_FORMAT, CSV_V1_HEADER};
pub use text::{ContentDigest, TextEncoding};
pub use unionpay::{UnionpayZmParser, UNIONPAY_FORMAT};
pub use wechat::{WechatBillParser, WechatLayout, WECHAT_FORMAT};

/// The most data rows one clearing file may have.
pub const MAX_FILE_ROWS: usize = 20_000_000;

/// The longest line accepted in any clearing file, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The longest failure reason accepted from a clearing file, in characters.
pub const MAX_REASON_CHARS: usize = 512;

/// The longest bank reference accepted, in characters.
pub const MAX_BANK_REF_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Clearing-file records
// ---------------------------------------------------------------------------------------------

/// What a clearing-file row is about. Every kind takes part in refund reconciliation: refunds are
/// paid by interface, by payout or by file, and the bank reference id says which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// An interface refund (id = refund id).
    Refund,
    /// A payout (id = payout id), for payout refunds.
    Payout,
    /// A row of a file-upload or offline batch (id = batch row id).
    File,
    /// A payment (or another row that is not a refund) of a bank's bill: shown, never matched.
    Payment,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Refund => "REFUND",
            RecordKind::Payout => "PAYOUT",
            RecordKind::File => "FILE",
            RecordKind::Payment => "PAYMENT",
        }
    }

    /// Whether records of this kind take part in refund reconciliation.
    pub fn is_refund(self) -> bool {
        self != RecordKind::Payment
    }
}

/// What the bank says happened to one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankRecordStatus {
    Success,
    Failed,
    /// Not final at the bank yet (WeChat `PROCESSING`): treated as not in the file.
    Processing,
}

impl BankRecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BankRecordStatus::Success => "SUCCESS",
            BankRecordStatus::Failed => "FAILED",
            BankRecordStatus::Processing => "PROCESSING",
        }
    }

    pub fn parse(s: &str) -> Option<BankRecordStatus> {
        match s {
            "SUCCESS" => Some(BankRecordStatus::Success),
            "FAILED" => Some(BankRecordStatus::Failed),
            "PROCESSING" => Some(BankRecordStatus::Processing),
            _ => None,
        }
    }

    /// The final refund status this bank status confirms (none while processing).
    pub fn final_status(self) -> Option<FinalStatus> {
        match self {
            BankRecordStatus::Success => Some(FinalStatus::Succeeded),
            BankRecordStatus::Failed => Some(FinalStatus::Failed),
            BankRecordStatus::Processing => None,
        }
    }
}

/// One row of a bank's clearing file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRecord {
    pub kind: RecordKind,
    /// The id the bank knows the transaction by, which the platform gave it: the refund's bank
    /// reference id.
    pub id: String,
    /// The bank's own reference.
    pub bank_ref: String,
    /// The channel, where the format carries one (empty otherwise).
    pub channel: String,
    pub amount: Money,
    pub status: BankRecordStatus,
    pub completed_at: DateTime<Utc>,
    /// The bank's failure reason (may be empty).
    pub reason: String,
    /// The original transaction's reference where the file carries it (the paid order's id:
    /// WeChat 商户订单号, ZM 原始交易订单号, Alipay 商户订单号); empty otherwise.
    pub original_ref: String,
    /// 1-based line of the file.
    pub line: usize,
}

/// What one parsed file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Data rows (detail rows; headers and summaries excluded).
    pub rows: usize,
    /// Refund rows (records that take part in matching).
    pub records: usize,
    /// Rows that are not refunds (payments, revocations), not matched.
    pub skipped: usize,
    /// The layout read, for people (`WeChat Pay ALL bill, legacy layout (24 columns)`).
    pub layout: String,
    /// The text encoding read (`utf-8`, `gbk`, `ascii`).
    pub encoding: &'static str,
    /// The summary checks that passed, one line each (empty for formats without a summary).
    pub summary: Vec<String>,
}

impl FileStats {
    /// Counts one more data row; a file with more than [`MAX_FILE_ROWS`] is refused.
    pub(crate) fn add_row(&mut self, line: usize) -> Result<()> {
        if self.rows >= MAX_FILE_ROWS {
            return Err(line_error(
                line,
                "row",
                format!("more than {MAX_FILE_ROWS} rows"),
            ));
        }
        self.rows += 1;
        Ok(())
    }

    /// Counts a record as a refund record or a skipped payment row.
    pub(crate) fn count(&mut self, record: &BankRecord) {
        if record.kind.is_refund() {
            self.records += 1;
        } else {
            self.skipped += 1;
        }
    }
}

/// A row with the wrong number of values.
pub(crate) fn check_value_count(found: usize, expected: usize, line: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(line_error(
            line,
            "row",
            format!("expected {expected} values, found {found}"),
        ))
    }
}

/// Receives each record as it is parsed; an error stops the parse.
pub type RecordSink<'a> = dyn FnMut(BankRecord) -> Result<()> + 'a;

/// Reads one clearing-file format, streaming. Implementations are strict: any malformed row
/// rejects the whole file with `INVALID_ARGUMENT` naming the line and the field.
pub trait ClearingFileParser: Send + Sync {
    /// The format name, as stored with a run.
    fn format(&self) -> &'static str;

    /// Reads the file line by line, handing each record to `sink` in file order.
    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats>;
}

/// Parses a whole in-memory file into records (tests, small files).
pub fn parse_all(
    parser: &dyn ClearingFileParser,
    mut bytes: &[u8],
) -> Result<(Vec<BankRecord>, FileStats)> {
    let mut out = Vec::new();
    let stats = parser.parse(&mut bytes, &mut |r| {
        out.push(r);
        Ok(())
    })?;
    Ok((out, stats))
}

/// The file formats the reconciliation center reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// `tuikuan-csv-v1` (also "csv").
    CsvV1,
    /// WeChat Pay trade bill (also "wechat").
    WechatBill,
    /// UnionPay ZM file (also "unionpay").
    UnionpayZm,
    /// Alipay 业务明细 (also "alipay").
    AlipayDetail,
}

impl FileFormat {
    pub const ALL: [FileFormat; 4] = [
        FileFormat::CsvV1,
        FileFormat::WechatBill,
        FileFormat::UnionpayZm,
        FileFormat::AlipayDetail,
    ];

    /// Accepts the short names of the API (`csv`, `wechat`, `unionpay`, `alipay`) and the stored
    /// names.
    pub fn parse(s: &str) -> Result<FileFormat> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | CSV_V1_FORMAT => Ok(FileFormat::CsvV1),
            "wechat" | WECHAT_FORMAT => Ok(FileFormat::WechatBill),
            "unionpay" | UNIONPAY_FORMAT => Ok(FileFormat::UnionpayZm),
            "alipay" | ALIPAY_FORMAT => Ok(FileFormat::AlipayDetail),
            other => Err(Error::field(
                "format",
                format!(
                    "unsupported format {} (expected csv, wechat, unionpay or alipay)",
                    tuikuan_kernel::echo(other)
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::CsvV1 => CSV_V1_FORMAT,
            FileFormat::WechatBill => WECHAT_FORMAT,
            FileFormat::UnionpayZm => UNIONPAY_FORMAT,
            FileFormat::AlipayDetail => ALIPAY_FORMAT,
        }
    }

    /// The short name (`csv`, `wechat`, `unionpay`, `alipay`).
    pub fn short_name(self) -> &'static str {
        match self {
            FileFormat::CsvV1 => "csv",
            FileFormat::WechatBill => "wechat",
            FileFormat::UnionpayZm => "unionpay",
            FileFormat::AlipayDetail => "alipay",
        }
    }

    /// Guesses the format from a file's first line: the platform's CSV header, a WeChat Pay bill
    /// header (交易时间 and 微信订单号 columns), an Alipay `#` comment, or a ZM line (607 bytes,
    /// or no bytes at all). `None` when nothing fits.
    pub fn detect(head: &[u8]) -> Option<FileFormat> {
        let first = head.split(|b| *b == b'\n').next().unwrap_or(head);
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let first = first.strip_prefix(text::UTF8_BOM).unwrap_or(first);
        if head.is_empty() || first.len() == unionpay::ZM_LINE_BYTES {
            return Some(FileFormat::UnionpayZm);
        }
        if first.starts_with(b"record_type,") {
            return Some(FileFormat::CsvV1);
        }
        if first.starts_with(b"#") {
            return Some(FileFormat::AlipayDetail);
        }
        let text = text::decode_as(first, TextEncoding::Utf8)
            .or_else(|| text::decode_as(first, TextEncoding::Gbk))?;
        if text.contains("交易时间") && text.contains("微信订单号") {
            return Some(FileFormat::WechatBill);
        }
        if text.contains("支付宝交易号") {
            return Some(FileFormat::AlipayDetail);
        }
        None
    }

    /// Picks the format: the request's explicit one, else the channel's configured one, else
    /// the one the bank declared, else csv.
    pub fn choose(explicit: &str, configured: Option<&str>, declared: &str) -> Result<FileFormat> {
        if !explicit.is_empty() {
            return FileFormat::parse(explicit);
        }
        if let Some(c) = configured.filter(|c| !c.is_empty()) {
            return FileFormat::parse(c);
        }
        if !declared.is_empty() {
            return FileFormat::parse(declared);
        }
        Ok(FileFormat::CsvV1)
    }
}

/// What a parser needs besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// The text encoding (`Detect` decides from the file; the platform CSV is always UTF-8).
    pub encoding: TextEncoding,
    /// The business date of the file (gives ZM times their year).
    pub business_date: NaiveDate,
}

/// The parser for a format.
pub fn parser_for(format: FileFormat, options: ParseOptions) -> Box<dyn ClearingFileParser> {
    let encoding = options.encoding;
    match format {
        FileFormat::CsvV1 => Box::new(CsvV1Parser),
        FileFormat::WechatBill => Box::new(WechatBillParser { encoding }),
        FileFormat::UnionpayZm => Box::new(UnionpayZmParser {
            encoding,
            business_date: options.business_date,
        }),
        FileFormat::AlipayDetail => Box::new(AlipayBillParser { encoding }),
    }
}

pub(crate) fn line_error(line: usize, field: &str, problem: impl fmt::Display) -> Error {
    Error::new(
        ErrorCode::InvalidArgument,
        format!("clearing file line {line}: {field}: {problem}"),
    )
}

/// The problem part of a kernel field error (`"id: is required"` → `"is required"`).
pub(crate) fn strip_field(e: &Error, field: &str) -> String {
    e.message
        .strip_prefix(field)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(&e.message)
        .to_string()
}

/// A reference id in a bank's bill (the platform's id for a refund, the bank's own number): 1 to
/// 64 printable ASCII characters without spaces. Channels' own alphabets are narrower (see
/// `tuikuan_kernel::bank_ref`); the bill is taken as the bank wrote it.
pub(crate) fn check_reference(value: &str) -> std::result::Result<(), String> {
    check_bank_ref(value)
}

pub(crate) fn check_bank_ref(value: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.chars().count() > MAX_BANK_REF_CHARS {
        return Err(format!("longer than {MAX_BANK_REF_CHARS} characters"));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces is allowed".into());
    }
    Ok(())
}

/// Checks that a record belongs to the channel the file is for (records without a channel do).
pub fn check_record_channel(record: &BankRecord, channel: &str) -> Result<()> {
    if record.channel.is_empty() || record.channel == channel {
        Ok(())
    } else {
        Err(line_error(
            record.line,
            "channel",
            format!("expected {channel:?}, found {:?}", record.channel),
        ))
    }
}

/// Splits a parser's error (`clearing file line N: field: problem`) into its parts.
pub fn line_error_parts(e: &Error) -> Option<(usize, String, String)> {
    let rest = e.message.strip_prefix("clearing file line ")?;
    let (line, rest) = rest.split_once(": ")?;
    let (field, problem) = rest.split_once(": ")?;
    Some((line.parse().ok()?, field.to_string(), problem.to_string()))
}

/// Parses a business date written `YYYY-MM-DD` (exactly: no other spelling).
pub fn parse_business_date(value: &str, field: &str) -> Result<NaiveDate> {
    if value.is_empty() {
        return Err(Error::field(field, "is required"));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| format_date(*d) == value)
        .ok_or_else(|| {
            Error::field(
                field,
                format!("{} is not a date (YYYY-MM-DD)", tuikuan_kernel::echo(value)),
            )
        })?;
    Ok(date)
}

/// The `YYYY-MM-DD` form of a business date.
pub fn format_date(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// A refund the platform submitted and still has PROCESSING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRefund {
    pub refund_id: String,
    /// The id the bank knows the current attempt by; empty means the refund id.
    pub bank_reference_id: String,
    pub amount: Money,
}

impl PlatformRefund {
    /// The id a bank row is matched on.
    pub fn reference(&self) -> &str {
        if self.bank_reference_id.is_empty() {
            &self.refund_id
        } else {
            &self.bank_reference_id
        }
    }
}

/// The outcome of one reconciliation item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The bank succeeded and the amounts agree: write back SUCCEEDED.
    Matched,
    /// The bank failed and the amounts agree: write back FAILED with the bank's reason.
    BankFailed,
    /// 短款: submitted on our side, not (finally) in the bank's file. No write-back; kept in
    /// suspense for the channel's cross-day window.
    PlatformOnly,
    /// 长款: in the bank's file, not among the platform's submitted refunds.
    BankOnly,
    /// Both sides know the refund but the amounts (or currencies) differ. No write-back.
    AmountMismatch,
    /// The same reference again in the file; the first occurrence is matched normally.
    Duplicate,
    /// The row's reference belongs to a refund of another channel: never matched here.
    OtherChannel,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[
        Outcome::Matched,
        Outcome::BankFailed,
        Outcome::PlatformOnly,
        Outcome::BankOnly,
        Outcome::AmountMismatch,
        Outcome::Duplicate,
        Outcome::OtherChannel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "MATCHED",
            Outcome::BankFailed => "BANK_FAILED",
            Outcome::PlatformOnly => "PLATFORM_ONLY",
            Outcome::BankOnly => "BANK_ONLY",
            Outcome::AmountMismatch => "AMOUNT_MISMATCH",
            Outcome::Duplicate => "DUPLICATE",
            Outcome::OtherChannel => "OTHER_CHANNEL",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == s)
    }

    /// Which side's amount an outcome is totalled by: the bank's for rows only the bank vouches
    /// for (bank-only, duplicate), the platform's otherwise.
    fn totals_bank_amount(self) -> bool {
        matches!(
            self,
            Outcome::BankOnly | Outcome::Duplicate | Outcome::OtherChannel
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A final refund status reconciliation writes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinalStatus {
    Succeeded,
    Failed,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Succeeded => "SUCCEEDED",
            FinalStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<FinalStatus> {
        match s {
            "SUCCEEDED" => Some(FinalStatus::Succeeded),
            "FAILED" => Some(FinalStatus::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for FinalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an item asks the refund center to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBack {
    pub status: FinalStatus,
    pub reason: String,
}

/// One line of a reconciliation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchItem {
    /// The platform's refund id (for bank-only rows: the row's id, which may be a refund id).
    pub refund_id: String,
    /// The id the row was matched on (the bank reference id).
    pub bank_reference_id: String,
    /// The bank's reference (empty for platform-only items).
    pub bank_ref: String,
    pub outcome: Outcome,
    pub platform_amount: Option<Money>,
    pub bank_amount: Option<Money>,
    pub bank_status: Option<BankRecordStatus>,
    /// The file line the item comes from (none for platform-only items).
    pub line: Option<usize>,
    /// Which occurrence of its reference in the file the row is (1 for the first, 2 for the
    /// first repeat, …; 0 for platform-only items). Duplicates are told apart by it, never by
    /// their line, so that a corrected file that moves a row keeps its discrepancy.
    pub occurrence: u32,
    /// Human-readable explanation (amounts, duplicate of which line, discrepancies).
    pub detail: String,
    /// The final status to write back, if the item makes one.
    pub write_back: Option<WriteBack>,
    /// For bank-only rows: the final status the refund center already has, if any.
    pub platform_final: Option<FinalStatus>,
}

impl MatchItem {
    /// The amount this item counts for in its outcome's total.
    pub fn counted_amount(&self) -> Option<Money> {
        if self.outcome.totals_bank_amount() {
            self.bank_amount.or(self.platform_amount)
        } else {
            self.platform_amount.or(self.bank_amount)
        }
    }
}

fn from_bank(
    record: &BankRecord,
    outcome: Outcome,
    refund_id: &str,
    platform: Option<Money>,
) -> MatchItem {
    MatchItem {
        refund_id: refund_id.to_string(),
        bank_reference_id: record.id.clone(),
        bank_ref: record.bank_ref.clone(),
        outcome,
        platform_amount: platform,
        bank_amount: Some(record.amount),
        bank_status: Some(record.status),
        line: Some(record.line),
        occurrence: 1,
        detail: String::new(),
        write_back: None,
        platform_final: None,
    }
}

fn bank_failure_reason(record: &BankRecord) -> String {
    if record.reason.is_empty() {
        "bank reported failure".to_string()
    } else {
        record.reason.clone()
    }
}

/// One platform refund inside the [`Matcher`], kept small: 10 million of them fit in about
/// 1.2 GiB.
#[derive(Debug)]
struct Slot {
    /// The refund id when it differs from the reference.
    refund_id: Option<Box<str>>,
    minor: i64,
    currency: Currency,
    /// The file line of the first row matched on it (0 = none yet).
    first_line: u32,
    /// Rows seen with its reference so far.
    seen: u32,
}

fn line_u32(line: usize) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
}

/// Matches bank records against the platform's submitted refunds, one record at a time.
///
/// Build it with the platform side ([`Matcher::add_platform`]), then [`Matcher::push`] each
/// record in file order: every record yields exactly one item at once —
/// - the first record of a reference is MATCHED / BANK_FAILED (same amount and currency; these
///   carry a write-back), AMOUNT_MISMATCH, BANK_ONLY (unknown to the platform), or PLATFORM_ONLY
///   when the bank reports it still processing;
/// - later records of the same reference are DUPLICATE (no write-back).
///
/// [`Matcher::finish`] then yields the platform refunds no record mentioned, PLATFORM_ONLY, in
/// refund-id order.
#[derive(Debug, Default)]
pub struct Matcher {
    slots: HashMap<Box<str>, Slot>,
    /// References unknown to the platform: (first line, rows seen).
    bank_only: HashMap<Box<str>, (u32, u32)>,
}

impl Matcher {
    pub fn with_capacity(platform_refunds: usize) -> Matcher {
        Matcher {
            slots: HashMap::with_capacity(platform_refunds),
            bank_only: HashMap::new(),
        }
    }

    /// Platform refunds known so far.
    pub fn platform_len(&self) -> usize {
        self.slots.len()
    }

    /// Adds a platform refund. The same refund listed twice with the same amount counts once;
    /// two listings of one reference with different amounts or refunds are an internal error.
    pub fn add_platform(&mut self, p: PlatformRefund) -> Result<()> {
        let reference: Box<str> = p.reference().into();
        let refund_id = (p.refund_id != *reference).then(|| p.refund_id.into_boxed_str());
        let slot = Slot {
            refund_id,
            minor: p.amount.to_minor(),
            currency: p.amount.currency(),
            first_line: 0,
            seen: 0,
        };
        if let Some(previous) = self.slots.get(&reference) {
            if previous.minor != slot.minor
                || previous.currency != slot.currency
                || previous.refund_id != slot.refund_id
            {
                return Err(Error::internal(format!(
                    "refund center listed bank reference {reference} twice, differently"
                )));
            }
            return Ok(());
        }
        self.slots.insert(reference, slot);
        Ok(())
    }

    /// Matches one record (records must come in file order).
    pub fn push(&mut self, record: &BankRecord) -> MatchItem {
        let Some(slot) = self.slots.get_mut(record.id.as_str()) else {
            if let Some((first, seen)) = self.bank_only.get_mut(record.id.as_str()) {
                *seen = seen.saturating_add(1);
                let mut item = from_bank(record, Outcome::Duplicate, &record.id, None);
                item.occurrence = *seen;
                item.detail = format!(
                    "duplicate of line {first}: bank {} {}",
                    record.status.as_str(),
                    record.amount
                );
                return item;
            }
            self.bank_only
                .insert(record.id.as_str().into(), (line_u32(record.line), 1));
            let mut item = from_bank(record, Outcome::BankOnly, &record.id, None);
            item.detail = format!(
                "not among the platform's submitted refunds: bank {} {}",
                record.status.as_str(),
                record.amount
            );
            return item;
        };
        let refund_id = slot
            .refund_id
            .as_deref()
            .unwrap_or(record.id.as_str())
            .to_string();
        let expected = Money::from_minor(slot.minor, slot.currency);
        slot.seen = slot.seen.saturating_add(1);
        if slot.first_line != 0 {
            let mut item = from_bank(record, Outcome::Duplicate, &refund_id, Some(expected));
            item.occurrence = slot.seen;
            item.detail = format!(
                "duplicate of line {}: bank {} {}",
                slot.first_line,
                record.status.as_str(),
                record.amount
            );
            return item;
        }
        slot.first_line = line_u32(record.line).max(1);
        if expected != record.amount {
            let mut item = from_bank(record, Outcome::AmountMismatch, &refund_id, Some(expected));
            item.detail = format!(
                "platform {expected}, bank {} (bank {})",
                record.amount,
                record.status.as_str()
            );
            return item;
        }
        match record.status {
            BankRecordStatus::Success => {
                let mut item = from_bank(record, Outcome::Matched, &refund_id, Some(expected));
                item.write_back = Some(WriteBack {
                    status: FinalStatus::Succeeded,
                    reason: String::new(),
                });
                item
            }
            BankRecordStatus::Failed => {
                let reason = bank_failure_reason(record);
                let mut item = from_bank(record, Outcome::BankFailed, &refund_id, Some(expected));
                item.detail = format!("bank failed: {reason}");
                item.write_back = Some(WriteBack {
                    status: FinalStatus::Failed,
                    reason,
                });
                item
            }
            BankRecordStatus::Processing => {
                let mut item = from_bank(record, Outcome::PlatformOnly, &refund_id, Some(expected));
                item.detail = "bank reports it still processing".to_string();
                item
            }
        }
    }

    /// The platform refunds no record mentioned, PLATFORM_ONLY, ordered by refund id.
    pub fn finish(self) -> Vec<MatchItem> {
        let mut out: Vec<MatchItem> = self
            .slots
            .into_iter()
            .filter(|(_, s)| s.first_line == 0)
            .map(|(reference, s)| {
                let amount = Money::from_minor(s.minor, s.currency);
                let refund_id = s
                    .refund_id
                    .map(String::from)
                    .unwrap_or_else(|| reference.to_string());
                MatchItem {
                    refund_id,
                    bank_reference_id: reference.into(),
                    bank_ref: String::new(),
                    outcome: Outcome::PlatformOnly,
                    platform_amount: Some(amount),
                    bank_amount: None,
                    bank_status: None,
                    line: None,
                    occurrence: 0,
                    detail: format!("not in the bank's clearing file: platform {amount}"),
                    write_back: None,
                    platform_final: None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
        out
    }
}

/// Batch matching: the records in file-line order through a [`Matcher`], then the platform-only
/// refunds in refund-id order.
pub fn match_refunds(bank: &[BankRecord], platform: &[PlatformRefund]) -> Result<Vec<MatchItem>> {
    let mut matcher = Matcher::with_capacity(platform.len());
    for p in platform {
        matcher.add_platform(p.clone())?;
    }
    let mut records: Vec<&BankRecord> = bank.iter().collect();
    records.sort_by_key(|r| r.line);
    let mut items: Vec<MatchItem> = records.into_iter().map(|r| matcher.push(r)).collect();
    items.extend(matcher.finish());
    Ok(items)
}

/// What the refund center says about a refund, for resolving bank-only rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRefund {
    pub refund_id: String,
    /// The channel the refund was submitted on (empty when the refund center did not say).
    pub channel: String,
    pub amount: Money,
    /// `None` while the refund is not final (processing).
    pub final_status: Option<FinalStatus>,
}

/// Resolves a BANK_ONLY item against what the refund center knows about the refund the row's
/// bank reference id belongs to (the item takes that refund's id).
///
/// A row of `channel`'s file whose refund was submitted on another channel is OTHER_CHANNEL,
/// whatever its status: it is never matched here, and never counted as matched.
///
/// A bank-only row whose refund the platform already finalised earlier, with the same status and
/// the same amount (a re-delivered or superseding file, reconciled before), is not a 长款: it is
/// recorded as MATCHED (bank SUCCESS) or BANK_FAILED (bank FAILED) with detail "already final" and
/// no write-back. Anything else stays BANK_ONLY, with what the platform knows added to the detail
/// (and `platform_final` set when the refund center has it final otherwise: a status conflict).
/// Items that are not BANK_ONLY are returned unchanged.
pub fn resolve_bank_only(item: MatchItem, known: Option<&KnownRefund>, channel: &str) -> MatchItem {
    if item.outcome != Outcome::BankOnly {
        return item;
    }
    let (Some(known), Some(bank_status), Some(bank_amount)) =
        (known, item.bank_status, item.bank_amount)
    else {
        return item;
    };
    if !known.channel.is_empty() && known.channel != channel {
        return MatchItem {
            outcome: Outcome::OtherChannel,
            detail: format!(
                "refund {} belongs to channel {}, not {channel}: bank {} {}",
                known.refund_id,
                known.channel,
                bank_status.as_str(),
                bank_amount
            ),
            refund_id: known.refund_id.clone(),
            platform_amount: Some(known.amount),
            platform_final: known.final_status,
            ..item
        };
    }
    let wanted = bank_status.final_status();
    if wanted.is_some() && known.final_status == wanted && known.amount == bank_amount {
        let outcome = match bank_status {
            BankRecordStatus::Failed => Outcome::BankFailed,
            _ => Outcome::Matched,
        };
        return MatchItem {
            outcome,
            refund_id: known.refund_id.clone(),
            platform_amount: Some(known.amount),
            detail: format!(
                "already final: refund center has {} {}",
                known.final_status.map(|s| s.as_str()).unwrap_or(""),
                known.amount
            ),
            write_back: None,
            platform_final: known.final_status,
            ..item
        };
    }
    let platform_state = known
        .final_status
        .map(|s| s.as_str())
        .unwrap_or("PROCESSING (not submitted for this date)");
    MatchItem {
        detail: format!(
            "{}; refund center has it {platform_state} {}",
            item.detail, known.amount
        ),
        refund_id: known.refund_id.clone(),
        platform_amount: Some(known.amount),
        platform_final: known.final_status,
        ..item
    }
}

/// Count and total amount of one outcome in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeTotal {
    pub outcome: Outcome,
    pub count: u32,
    pub amount: Money,
}

/// Running counts and totals per outcome (and currency).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    map: BTreeMap<(Outcome, Currency), (u32, Money)>,
}

impl Totals {
    pub fn add(&mut self, item: &MatchItem) -> Result<()> {
        let Some(amount) = item.counted_amount() else {
            return Err(Error::internal(format!(
                "reconciliation item {} has no amount",
                item.refund_id
            )));
        };
        let entry = self
            .map
            .entry((item.outcome, amount.currency()))
            .or_insert((0, Money::zero(amount.currency())));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = entry.1.checked_add(&amount)?;
        Ok(())
    }

    /// Ordered by outcome then currency; outcomes with no item are left out.
    pub fn into_vec(self) -> Vec<OutcomeTotal> {
        self.map
            .into_iter()
            .map(|((outcome, _), (count, amount))| OutcomeTotal {
                outcome,
                count,
                amount,
            })
            .collect()
    }
}

/// Counts and totals per outcome (and currency), ordered by outcome then currency. Outcomes with
/// no item are left out.
pub fn summarize<'a>(items: impl IntoIterator<Item = &'a MatchItem>) -> Result<Vec<OutcomeTotal>> {
    let mut totals = Totals::default();
    for item in items {
        totals.add(item)?;
    }
    Ok(totals.into_vec())
}

// ---------------------------------------------------------------------------------------------
// Suspense (挂账): platform-only refunds waiting for a later file
// ---------------------------------------------------------------------------------------------

/// The default cross-day window: a refund missing from the bank's file may still appear in the
/// next day's file.
pub const DEFAULT_SUSPENSE_DAYS: u32 = 1;

/// Where a suspense entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuspenseStatus {
    /// Waiting for a later file.
    Open,
    /// Found in a later file (matched, failed or mismatched there).
    Cleared,
    /// The window passed: a 银行漏单 discrepancy was opened.
    Expired,
}

impl SuspenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspenseStatus::Open => "OPEN",
            SuspenseStatus::Cleared => "CLEARED",
            SuspenseStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<SuspenseStatus> {
        match s {
            "OPEN" => Some(SuspenseStatus::Open),
            "CLEARED" => Some(SuspenseStatus::Cleared),
            "EXPIRED" => Some(SuspenseStatus::Expired),
            _ => None,
        }
    }
}

/// A platform-only refund kept in suspense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspenseEntry {
    pub channel: String,
    pub refund_id: String,
    pub bank_reference_id: String,
    pub amount: Money,
    /// The first business date whose file did not have it.
    pub since: NaiveDate,
    pub status: SuspenseStatus,
    pub discrepancy_id: Option<String>,
    pub cleared_by_run: Option<String>,
    pub updated_at_ms: i64,
}

/// What a run does with a platform-only refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspenseDecision {
    /// First time missing: enter suspense from this date.
    Enter,
    /// Still inside the window.
    Wait { since: NaiveDate, days_left: i64 },
    /// The window passed: open a 银行漏单 discrepancy.
    Expire { since: NaiveDate },
}

/// Decides for a platform-only refund of business date `date`, given since when it has been in
/// suspense (if it is) and the channel's window in days. With a window of 1 day a refund missing
/// from day D's file may still appear in day D+1's; missing there too, it expires.
pub fn suspense_decision(
    since: Option<NaiveDate>,
    date: NaiveDate,
    window_days: u32,
) -> SuspenseDecision {
    let Some(since) = since else {
        return if window_days == 0 {
            SuspenseDecision::Expire { since: date }
        } else {
            SuspenseDecision::Enter
        };
    };
    let waited = (date - since).num_days();
    if waited >= i64::from(window_days) {
        SuspenseDecision::Expire { since }
    } else {
        SuspenseDecision::Wait {
            since,
            days_left: i64::from(window_days) - waited.max(0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Discrepancies (差错)
// ---------------------------------------------------------------------------------------------

/// What kind of mismatch a discrepancy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscrepancyKind {
    /// 银行漏单: platform-only past the channel's cross-day window.
    BankMissed,
    /// 平台漏单: a bank row unknown to the platform.
    PlatformMissed,
    AmountMismatch,
    /// The same reference twice (or more) in the bank's file.
    Duplicate,
    /// The bank's row contradicts a status the platform already made final.
    StatusConflict,
    /// A row of this channel's file for a refund submitted on another channel.
    OtherChannel,
}

impl DiscrepancyKind {
    pub const ALL: &'static [DiscrepancyKind] = &[
        DiscrepancyKind::BankMissed,
        DiscrepancyKind::PlatformMissed,
        DiscrepancyKind::AmountMismatch,
        DiscrepancyKind::Duplicate,
        DiscrepancyKind::StatusConflict,
        DiscrepancyKind::OtherChannel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::BankMissed => "BANK_MISSED",
            DiscrepancyKind::PlatformMissed => "PLATFORM_MISSED",
            DiscrepancyKind::AmountMismatch => "AMOUNT_MISMATCH",
            DiscrepancyKind::Duplicate => "DUPLICATE",
            DiscrepancyKind::StatusConflict => "STATUS_CONFLICT",
            DiscrepancyKind::OtherChannel => "OTHER_CHANNEL",
        }
    }

    pub fn parse(s: &str) -> Option<DiscrepancyKind> {
        DiscrepancyKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
    }

    /// The Chinese label finance uses.
    pub fn label(self) -> &'static str {
        match self {
            DiscrepancyKind::BankMissed => "银行漏单",
            DiscrepancyKind::PlatformMissed => "平台漏单",
            DiscrepancyKind::AmountMismatch => "金额不符",
            DiscrepancyKind::Duplicate => "重复记录",
            DiscrepancyKind::StatusConflict => "状态冲突",
            DiscrepancyKind::OtherChannel => "通道不符",
        }
    }

    /// Money the platform cannot account for is high; a refund waiting too long is medium.
    pub fn severity(self) -> Severity {
        match self {
            DiscrepancyKind::PlatformMissed
            | DiscrepancyKind::AmountMismatch
            | DiscrepancyKind::StatusConflict
            | DiscrepancyKind::OtherChannel => Severity::High,
            DiscrepancyKind::BankMissed | DiscrepancyKind::Duplicate => Severity::Medium,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "LOW" => Some(Severity::Low),
            "MEDIUM" => Some(Severity::Medium),
            "HIGH" => Some(Severity::High),
            _ => None,
        }
    }
}

/// Where a discrepancy stands: OPEN → RESOLVING → RESOLVED (RESOLVING → OPEN when the peer
/// definitely refused the correction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscrepancyStatus {
    Open,
    Resolving,
    Resolved,
}

impl DiscrepancyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyStatus::Open => "OPEN",
            DiscrepancyStatus::Resolving => "RESOLVING",
            DiscrepancyStatus::Resolved => "RESOLVED",
        }
    }

    pub fn parse(s: &str) -> Option<DiscrepancyStatus> {
        match s {
            "OPEN" => Some(DiscrepancyStatus::Open),
            "RESOLVING" => Some(DiscrepancyStatus::Resolving),
            "RESOLVED" => Some(DiscrepancyStatus::Resolved),
            _ => None,
        }
    }
}

/// Who is right about a discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The bank's file is right: the platform corrects itself.
    BankWins,
    /// The platform is right: recorded only (the bank is chased outside the system).
    PlatformWins,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::BankWins => "BANK_WINS",
            Resolution::PlatformWins => "PLATFORM_WINS",
        }
    }

    pub fn parse(s: &str) -> Option<Resolution> {
        match s {
            "BANK_WINS" => Some(Resolution::BankWins),
            "PLATFORM_WINS" => Some(Resolution::PlatformWins),
            _ => None,
        }
    }
}

/// A discrepancy handed to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub discrepancy_id: String,
    pub channel: String,
    pub date: NaiveDate,
    pub run_id: String,
    pub kind: DiscrepancyKind,
    pub severity: Severity,
    pub status: DiscrepancyStatus,
    pub refund_id: String,
    pub bank_reference_id: String,
    pub bank_ref: String,
    pub platform_amount: Option<Money>,
    pub bank_amount: Option<Money>,
    pub bank_status: Option<BankRecordStatus>,
    pub detail: String,
    pub created_at_ms: i64,
    pub resolution: Option<Resolution>,
    pub operator: String,
    pub reason: String,
    pub resolved_at_ms: Option<i64>,
    /// What "bank wins" did.
    pub actions: String,
    pub adjustment_id: String,
    /// One discrepancy per fact: `kind:channel:date:reference[:#occurrence]` (BANK_MISSED has no
    /// date; a DUPLICATE is the n-th row of its reference, wherever it sits in the file);
    /// the id derives from it (empty when read back from storage).
    pub dedupe_key: String,
}

/// The discrepancy an item opens, if any.
pub fn discrepancy_kind_of(item: &MatchItem) -> Option<DiscrepancyKind> {
    match item.outcome {
        Outcome::BankOnly if item.platform_final.is_some() => Some(DiscrepancyKind::StatusConflict),
        Outcome::BankOnly => Some(DiscrepancyKind::PlatformMissed),
        Outcome::AmountMismatch => Some(DiscrepancyKind::AmountMismatch),
        Outcome::Duplicate => Some(DiscrepancyKind::Duplicate),
        Outcome::OtherChannel => Some(DiscrepancyKind::OtherChannel),
        Outcome::Matched | Outcome::BankFailed | Outcome::PlatformOnly => None,
    }
}

/// The dedupe key of a discrepancy.
pub fn dedupe_key(
    kind: DiscrepancyKind,
    channel: &str,
    date: NaiveDate,
    item: &MatchItem,
) -> String {
    match kind {
        DiscrepancyKind::BankMissed => {
            format!("{}:{channel}:{}", kind.as_str(), item.bank_reference_id)
        }
        DiscrepancyKind::Duplicate => format!(
            "{}:{channel}:{}:{}:#{}",
            kind.as_str(),
            format_date(date),
            item.bank_reference_id,
            item.occurrence
        ),
        _ => format!(
            "{}:{channel}:{}:{}",
            kind.as_str(),
            format_date(date),
            item.bank_reference_id
        ),
    }
}

/// The id of the discrepancy holding a fact: derived from its dedupe key, so the same fact never
/// opens two discrepancies.
pub fn discrepancy_id_for(dedupe_key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dedupe_key.as_bytes());
    format!("dsc_{}", &hex::encode(digest)[..32])
}

/// A new OPEN discrepancy for an item.
#[allow(clippy::too_many_arguments)]
pub fn new_discrepancy(
    kind: DiscrepancyKind,
    channel: &str,
    date: NaiveDate,
    run_id: &str,
    item: &MatchItem,
    detail: String,
    created_at_ms: i64,
) -> Discrepancy {
    let key = dedupe_key(kind, channel, date, item);
    Discrepancy {
        discrepancy_id: discrepancy_id_for(&key),
        channel: channel.to_string(),
        date,
        run_id: run_id.to_string(),
        kind,
        severity: kind.severity(),
        status: DiscrepancyStatus::Open,
        refund_id: item.refund_id.clone(),
        bank_reference_id: item.bank_reference_id.clone(),
        bank_ref: item.bank_ref.clone(),
        platform_amount: item.platform_amount,
        bank_amount: item.bank_amount,
        bank_status: item.bank_status,
        detail: format!("{}: {detail}", kind.label()),
        created_at_ms,
        resolution: None,
        operator: String::new(),
        reason: String::new(),
        resolved_at_ms: None,
        actions: String::new(),
        adjustment_id: String::new(),
        dedupe_key: key,
    }
}

/// A correcting ledger movement through the clearing center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentKind {
    /// Dr SUSPENSE(channel), Cr CHANNEL_RESERVE(channel): money left the reserve that no refund
    /// accounts for.
    BankToSuspense,
    /// Dr CHANNEL_RESERVE(channel), Cr SUSPENSE(channel): the books took more from the reserve
    /// than the bank paid.
    SuspenseToBank,
}

impl AdjustmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentKind::BankToSuspense => "BANK_TO_SUSPENSE",
            AdjustmentKind::SuspenseToBank => "SUSPENSE_TO_BANK",
        }
    }
}

/// One step of a "bank wins" resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolutionAction {
    /// Write the bank's verdict back to the refund center.
    WriteBack { status: FinalStatus, reason: String },
    /// Post a clearing adjustment of this amount.
    Adjust { kind: AdjustmentKind, amount: Money },
    /// Reinstate the FAILED refund as SUCCEEDED: the bank paid it ([`resolution`]).
    Reinstate { reason: String },
    /// Reopen the SUCCEEDED refund for its next method: the bank failed it ([`resolution`]).
    Reopen { reason: String },
}

impl fmt::Display for ResolutionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolutionAction::WriteBack { status, .. } => write!(f, "write back {status}"),
            ResolutionAction::Adjust { kind, amount } => write!(f, "{} {amount}", kind.as_str()),
            ResolutionAction::Reinstate { .. } => f.write_str("reinstate SUCCEEDED"),
            ResolutionAction::Reopen { .. } => f.write_str("reopen PROCESSING"),
        }
    }
}

/// The adjustment id of a discrepancy's resolution (idempotent in the clearing center).
pub fn adjustment_id_for(discrepancy_id: &str) -> String {
    format!("adj-{discrepancy_id}")
}

/// What a resolution does. PLATFORM_WINS: see [`resolution::platform_wins`] (a 银行漏单 with the
/// bank's evidence is completed; everything else recorded only). BANK_WINS:
/// - 银行漏单 (platform-only, the bank never paid): write back FAILED;
/// - 平台漏单 (the bank paid a row we have no refund for) and 通道不符 (a row paid from this
///   channel for a refund booked on another one): BANK_TO_SUSPENSE of the amount on this channel
///   when the bank reports SUCCESS (nothing moved otherwise);
/// - amount mismatch: write back per the bank's status; when the bank paid, post the difference
///   (bank more than platform: BANK_TO_SUSPENSE; less: SUSPENSE_TO_BANK);
/// - duplicate row: the bank paid twice when the row is SUCCESS: BANK_TO_SUSPENSE of it;
/// - status conflict: bank SUCCESS (platform FAILED, the merchant got the money back) → the
///   refund is reinstated as SUCCEEDED ([`resolution::bank_wins_on_conflict`]); bank FAILED
///   (platform SUCCEEDED, the reserve was credited) → SUSPENSE_TO_BANK.
pub fn plan_resolution(
    d: &Discrepancy,
    resolution: Resolution,
    evidence: &str,
) -> Result<Vec<ResolutionAction>> {
    if resolution == Resolution::PlatformWins {
        return resolution::platform_wins(d, evidence);
    }
    resolution::check_evidence(evidence)?;
    let bank_paid = d.bank_status == Some(BankRecordStatus::Success);
    let bank_amount = || {
        d.bank_amount.ok_or_else(|| {
            Error::internal(format!(
                "discrepancy {} has no bank amount",
                d.discrepancy_id
            ))
        })
    };
    let mut actions = Vec::new();
    match d.kind {
        DiscrepancyKind::BankMissed => actions.push(ResolutionAction::WriteBack {
            status: FinalStatus::Failed,
            reason: "bank never paid it (银行漏单), bank wins".to_string(),
        }),
        DiscrepancyKind::PlatformMissed
        | DiscrepancyKind::Duplicate
        | DiscrepancyKind::OtherChannel => {
            if bank_paid {
                actions.push(ResolutionAction::Adjust {
                    kind: AdjustmentKind::BankToSuspense,
                    amount: bank_amount()?,
                });
            }
        }
        DiscrepancyKind::AmountMismatch => {
            let bank = bank_amount()?;
            let platform = d.platform_amount.ok_or_else(|| {
                Error::internal(format!(
                    "discrepancy {} has no platform amount",
                    d.discrepancy_id
                ))
            })?;
            if bank.currency() != platform.currency() {
                return Err(Error::field(
                    "resolution",
                    format!(
                        "the bank paid in {} but the refund is in {}: bank wins cannot be applied automatically",
                        bank.currency(),
                        platform.currency()
                    ),
                ));
            }
            match d.bank_status {
                Some(BankRecordStatus::Success) => {
                    actions.push(ResolutionAction::WriteBack {
                        status: FinalStatus::Succeeded,
                        reason: format!("bank paid {bank} (platform {platform}), bank wins"),
                    });
                    let diff = bank.checked_sub(&platform)?;
                    if diff.is_positive() {
                        actions.push(ResolutionAction::Adjust {
                            kind: AdjustmentKind::BankToSuspense,
                            amount: diff,
                        });
                    } else if !diff.is_zero() {
                        actions.push(ResolutionAction::Adjust {
                            kind: AdjustmentKind::SuspenseToBank,
                            amount: platform.checked_sub(&bank)?,
                        });
                    }
                }
                Some(BankRecordStatus::Failed) => actions.push(ResolutionAction::WriteBack {
                    status: FinalStatus::Failed,
                    reason: "bank reported failure, bank wins".to_string(),
                }),
                _ => {
                    return Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        "the bank has not decided this refund yet: resolve after its final row",
                    ))
                }
            }
        }
        DiscrepancyKind::StatusConflict => actions.extend(resolution::bank_wins_on_conflict(d)),
    }
    Ok(actions)
}

/// What a resolve request does given where the discrepancy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveStep {
    /// OPEN: start it.
    Start,
    /// RESOLVING with the same resolution and operator: finish the interrupted resolution.
    Resume,
}

/// Checks a resolve request against the discrepancy's state. Operator and reason are required;
/// resolving a resolved discrepancy, or one being resolved differently, is
/// `INVALID_STATE_TRANSITION`.
pub fn check_resolve(
    d: &Discrepancy,
    resolution: Resolution,
    operator: &str,
    reason: &str,
) -> Result<ResolveStep> {
    if operator.trim().is_empty() {
        return Err(Error::field("operator", "is required"));
    }
    if reason.trim().is_empty() {
        return Err(Error::field("reason", "is required"));
    }
    if operator.chars().count() > 128 || operator.chars().any(char::is_control) {
        return Err(Error::field(
            "operator",
            "at most 128 characters, no control characters",
        ));
    }
    if reason.chars().count() > 1024 {
        return Err(Error::field("reason", "at most 1024 characters"));
    }
    match d.status {
        DiscrepancyStatus::Open => Ok(ResolveStep::Start),
        DiscrepancyStatus::Resolving
            if d.resolution == Some(resolution) && d.operator == operator =>
        {
            Ok(ResolveStep::Resume)
        }
        DiscrepancyStatus::Resolving => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "discrepancy {} is being resolved {} by {}",
                d.discrepancy_id,
                d.resolution.map(|r| r.as_str()).unwrap_or("?"),
                d.operator
            ),
        )),
        DiscrepancyStatus::Resolved => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "discrepancy {} is already resolved ({} by {})",
                d.discrepancy_id,
                d.resolution.map(|r| r.as_str()).unwrap_or("?"),
                d.operator
            ),
        )),
    }
}
// ---------------------------------------------------------------------------------------------
// Write-back
// ---------------------------------------------------------------------------------------------

/// Where an item's write-back stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteBackState {
    /// The item writes nothing back (platform-only, bank-only, mismatch, duplicate, already final).
    NotNeeded,
    /// Not yet accepted by the refund center; retried on the next run of the same file.
    Pending,
    /// The refund center recorded the final status.
    Done,
    /// The refund center refused: it already had a different final status (a discrepancy).
    Refused,
}

impl WriteBackState {
    /// The state a freshly matched item starts in.
    pub fn initial(item: &MatchItem) -> WriteBackState {
        if item.write_back.is_some() {
            WriteBackState::Pending
        } else {
            WriteBackState::NotNeeded
        }
    }

    /// Pending → Done (Done stays Done: the refund center is idempotent per refund).
    pub fn complete(self) -> Result<WriteBackState> {
        match self {
            WriteBackState::Pending | WriteBackState::Done => Ok(WriteBackState::Done),
            other => Err(invalid_transition(other, WriteBackState::Done)),
        }
    }

    /// Pending → Refused.
    pub fn refuse(self) -> Result<WriteBackState> {
        match self {
            WriteBackState::Pending | WriteBackState::Refused => Ok(WriteBackState::Refused),
            other => Err(invalid_transition(other, WriteBackState::Refused)),
        }
    }

    pub fn is_pending(self) -> bool {
        self == WriteBackState::Pending
    }
}

fn invalid_transition(from: WriteBackState, to: WriteBackState) -> Error {
    Error::new(
        ErrorCode::InvalidStateTransition,
        format!("write-back cannot go from {from:?} to {to:?}"),
    )
}

/// What to do after the refund center answered a write-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteBackVerdict {
    /// Recorded: mark the item written back.
    Done,
    /// A definite refusal (already final otherwise, unknown refund, rejected request): the item
    /// becomes a discrepancy, with this explanation.
    Refused(String),
    /// Transport trouble or a transient failure: leave pending, retry later.
    Retry,
}

/// Judges the refund center's answer to a write-back of `wanted`: `Ok(status)` is the refund's
/// final status after the call (`None` if it reports it still processing), `Err` its error.
pub fn judge_write_back(
    wanted: FinalStatus,
    answer: std::result::Result<Option<FinalStatus>, &Error>,
) -> WriteBackVerdict {
    match answer {
        Ok(Some(status)) if status == wanted => WriteBackVerdict::Done,
        Ok(Some(status)) => WriteBackVerdict::Refused(format!(
            "discrepancy: bank says {wanted}, refund center already final as {status}"
        )),
        Ok(None) => WriteBackVerdict::Retry,
        Err(e) => match e.code {
            ErrorCode::InvalidStateTransition => WriteBackVerdict::Refused(format!(
                "discrepancy: bank says {wanted}, refund center refused: {}",
                e.message
            )),
            ErrorCode::RefundNotFound
            | ErrorCode::NotFound
            | ErrorCode::InvalidArgument
            | ErrorCode::InvalidAmount
            | ErrorCode::MalformedId
            | ErrorCode::IdempotencyConflict => WriteBackVerdict::Refused(format!(
                "discrepancy: refund center rejected the write-back of {wanted}: {}: {}",
                e.code, e.message
            )),
            _ => WriteBackVerdict::Retry,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// One stored item of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    /// Position in the run (0-based), the report's order.
    pub seq: u32,
    pub item: MatchItem,
    pub state: WriteBackState,
    /// The discrepancy this item opened or belongs to.
    pub discrepancy_id: Option<String>,
}

/// A reconciliation run: one clearing file of one channel and business date, matched once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    pub channel: String,
    pub date: NaiveDate,
    /// Lowercase hex SHA-256 of the file.
    pub file_sha256: String,
    /// The file's content digest ([`ContentDigest`]): a run is idempotent per (channel, date,
    /// content digest).
    pub content_sha256: String,
    pub file_format: String,
    /// Data rows in the file.
    pub file_rows: u32,
    /// Rows that are not refunds (payments, revocations), skipped.
    pub skipped_rows: u32,
    pub created_at_ms: i64,
    /// `bank` (fetched from the bank subsystem) or `upload`.
    pub source: String,
    /// The earlier run of the same channel and date this one replaced.
    pub supersedes: Option<String>,
    /// The later run that replaced this one.
    pub superseded_by: Option<String>,
    /// Discrepancies this run opened.
    pub discrepancies: u32,
    pub items: Vec<RunItem>,
}

impl Run {
    /// Items whose write-back has not been accepted yet (none once superseded: the later run
    /// decides).
    pub fn pending_write_backs(&self) -> u32 {
        if self.superseded_by.is_some() {
            return 0;
        }
        let n = self.items.iter().filter(|i| i.state.is_pending()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn totals(&self) -> Result<Vec<OutcomeTotal>> {
        summarize(self.items.iter().map(|i| &i.item))
    }
}

/// Numbers matched items into run items, each in its initial write-back state.
pub fn number_items(items: Vec<MatchItem>) -> Result<Vec<RunItem>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let seq =
                u32::try_from(i).map_err(|_| Error::internal("too many reconciliation items"))?;
            let state = WriteBackState::initial(&item);
            Ok(RunItem {
                seq,
                item,
                state,
                discrepancy_id: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod tests;
