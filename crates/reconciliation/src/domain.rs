//! The pure part of reconciliation: clearing-file records and their parsers, the matcher, the
//! outcomes and the write-back state machine. No storage and no RPC here.
//!
//! - [`ClearingFileParser`] turns a bank's clearing file into [`BankRecord`]s; [`CsvV1Parser`] reads
//!   the documented `tuikuan-csv-v1` format strictly (a bad file is rejected whole, naming line and
//!   field). Later formats (WeChat bills, UnionPay fixed width) plug in behind the same trait and
//!   [`parser_for`].
//! - [`match_refunds`] matches the bank's REFUND records against the platform's submitted refunds
//!   and yields one [`MatchItem`] per record or refund, in a deterministic order.
//! - [`resolve_bank_only`] turns a bank-only record whose refund the platform already finalised the
//!   same way into an "already final" match (no write-back).
//! - [`WriteBackState`] is the life of an item's write-back: `NotNeeded`, or `Pending` → `Done` /
//!   `Refused` (the refund center already had a different final status: a discrepancy).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

/// The name of the documented CSV clearing-file format.
pub const CSV_V1_FORMAT: &str = "tuikuan-csv-v1";

/// The exact header line of a `tuikuan-csv-v1` file.
pub const CSV_V1_HEADER: [&str; 9] = [
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

/// The most data rows one clearing file may have.
pub const MAX_FILE_ROWS: usize = 1_000_000;

/// The longest failure reason accepted from a clearing file, in characters.
pub const MAX_REASON_CHARS: usize = 512;

/// The longest bank reference accepted, in characters.
pub const MAX_BANK_REF_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Clearing-file records
// ---------------------------------------------------------------------------------------------

/// What a clearing-file row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// An interface refund (reconciled here).
    Refund,
    /// A payout (counted, reconciled by a later issue).
    Payout,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Refund => "REFUND",
            RecordKind::Payout => "PAYOUT",
        }
    }
}

/// What the bank says happened to one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BankRecordStatus {
    Success,
    Failed,
}

impl BankRecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BankRecordStatus::Success => "SUCCESS",
            BankRecordStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<BankRecordStatus> {
        match s {
            "SUCCESS" => Some(BankRecordStatus::Success),
            "FAILED" => Some(BankRecordStatus::Failed),
            _ => None,
        }
    }

    /// The final refund status this bank status confirms.
    pub fn final_status(self) -> FinalStatus {
        match self {
            BankRecordStatus::Success => FinalStatus::Succeeded,
            BankRecordStatus::Failed => FinalStatus::Failed,
        }
    }
}

/// One row of a bank's clearing file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRecord {
    pub kind: RecordKind,
    /// Our id for the transaction (refund id or payout id).
    pub id: String,
    pub bank_ref: String,
    pub channel: String,
    pub amount: Money,
    pub status: BankRecordStatus,
    pub completed_at: DateTime<Utc>,
    /// The bank's failure reason (may be empty).
    pub reason: String,
    /// 1-based line of the file (the header is line 1).
    pub line: usize,
}

/// Reads one clearing-file format into records. Implementations are strict: any malformed row
/// rejects the whole file with `INVALID_ARGUMENT` naming the line and the field.
pub trait ClearingFileParser: Send + Sync {
    /// The format name, as the bank labels its files.
    fn format(&self) -> &'static str;

    /// Parses the whole file.
    fn parse(&self, bytes: &[u8]) -> Result<Vec<BankRecord>>;
}

/// The parser for a file format. An empty format label means the documented default,
/// [`CSV_V1_FORMAT`].
pub fn parser_for(format: &str) -> Result<&'static dyn ClearingFileParser> {
    static CSV_V1: CsvV1Parser = CsvV1Parser;
    match format {
        "" | CSV_V1_FORMAT => Ok(&CSV_V1),
        other => Err(Error::field(
            "clearing file format",
            format!("unsupported format {other:?}"),
        )),
    }
}

/// The `tuikuan-csv-v1` clearing file: a header line
/// `record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason`, then one row per
/// completed transaction. `record_type` is `REFUND` or `PAYOUT`; `amount` is a plain positive
/// decimal with at most the currency's decimals (`12.50`); `status` is `SUCCESS` or `FAILED`;
/// `completed_at` is RFC 3339. Fields may be quoted as usual in CSV. A UTF-8 byte-order mark and
/// blank lines are tolerated.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvV1Parser;

fn line_error(line: usize, field: &str, problem: impl fmt::Display) -> Error {
    Error::new(
        ErrorCode::InvalidArgument,
        format!("clearing file line {line}: {field}: {problem}"),
    )
}

impl ClearingFileParser for CsvV1Parser {
    fn format(&self) -> &'static str {
        CSV_V1_FORMAT
    }

    fn parse(&self, bytes: &[u8]) -> Result<Vec<BankRecord>> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut record = csv::ByteRecord::new();
        let mut header_seen = false;
        let mut out = Vec::new();
        loop {
            let more = reader.read_byte_record(&mut record).map_err(|e| {
                let line = e
                    .position()
                    .map(|p| p.line())
                    .unwrap_or(reader.position().line());
                line_error(to_line(line), "row", format!("unreadable csv: {e}"))
            })?;
            if !more {
                break;
            }
            let line = match record.position() {
                Some(p) => start_line(bytes, p.byte(), p.line()),
                None => to_line(reader.position().line()),
            };
            if !header_seen {
                check_header(&record, line)?;
                header_seen = true;
                continue;
            }
            if out.len() >= MAX_FILE_ROWS {
                return Err(line_error(
                    line,
                    "row",
                    format!("more than {MAX_FILE_ROWS} rows"),
                ));
            }
            out.push(parse_row(&record, line)?);
        }
        if !header_seen {
            return Err(line_error(1, "header", "missing (the file is empty)"));
        }
        Ok(out)
    }
}

/// The line a record really starts on. The reader reports the position where it started
/// reading, before skipping blank lines; skip them here too.
fn start_line(bytes: &[u8], byte: u64, line: u64) -> usize {
    let mut line = line;
    let start = usize::try_from(byte).unwrap_or(usize::MAX);
    for b in bytes.iter().skip(start) {
        match b {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
    }
    to_line(line)
}

fn to_line(line: u64) -> usize {
    usize::try_from(line).unwrap_or(usize::MAX)
}

fn check_header(record: &csv::ByteRecord, line: usize) -> Result<()> {
    let expected = CSV_V1_HEADER.join(",");
    let matches = record.len() == CSV_V1_HEADER.len()
        && record
            .iter()
            .zip(CSV_V1_HEADER.iter())
            .all(|(got, want)| got == want.as_bytes());
    if matches {
        Ok(())
    } else {
        Err(line_error(line, "header", format!("expected {expected:?}")))
    }
}

fn parse_row(record: &csv::ByteRecord, line: usize) -> Result<BankRecord> {
    if record.len() != CSV_V1_HEADER.len() {
        return Err(line_error(
            line,
            "row",
            format!(
                "expected {} fields, found {}",
                CSV_V1_HEADER.len(),
                record.len()
            ),
        ));
    }
    let field = |index: usize| -> Result<&str> {
        let name = CSV_V1_HEADER[index];
        let raw = record.get(index).unwrap_or_default();
        std::str::from_utf8(raw).map_err(|_| line_error(line, name, "is not valid UTF-8"))
    };
    let kind = match field(0)? {
        "REFUND" => RecordKind::Refund,
        "PAYOUT" => RecordKind::Payout,
        other => {
            return Err(line_error(
                line,
                "record_type",
                format!("expected REFUND or PAYOUT, found {other:?}"),
            ))
        }
    };
    let id = field(1)?;
    validate_external_id(id, "id").map_err(|e| line_error(line, "id", strip_field(&e, "id")))?;
    let bank_ref = field(2)?;
    check_bank_ref(bank_ref).map_err(|problem| line_error(line, "bank_ref", problem))?;
    let channel = field(3)?;
    validate_external_id(channel, "channel")
        .map_err(|e| line_error(line, "channel", strip_field(&e, "channel")))?;
    let currency_code = field(5)?;
    let currency = Currency::parse(currency_code, "currency")
        .map_err(|e| line_error(line, "currency", strip_field(&e, "currency")))?;
    let amount = parse_file_amount(field(4)?, currency)
        .map_err(|problem| line_error(line, "amount", problem))?;
    let status = BankRecordStatus::parse(field(6)?).ok_or_else(|| {
        line_error(
            line,
            "status",
            format!(
                "expected SUCCESS or FAILED, found {:?}",
                field(6).unwrap_or("")
            ),
        )
    })?;
    let completed_raw = field(7)?;
    let completed_at = DateTime::parse_from_rfc3339(completed_raw)
        .map_err(|e| {
            line_error(
                line,
                "completed_at",
                format!("{completed_raw:?} is not an RFC 3339 instant ({e})"),
            )
        })?
        .with_timezone(&Utc);
    let reason = field(8)?;
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(line_error(
            line,
            "reason",
            format!("longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(line_error(line, "reason", "contains control characters"));
    }
    Ok(BankRecord {
        kind,
        id: id.to_string(),
        bank_ref: bank_ref.to_string(),
        channel: channel.to_string(),
        amount,
        status,
        completed_at,
        reason: reason.to_string(),
        line,
    })
}

/// The problem part of a kernel field error (`"id: is required"` → `"is required"`).
fn strip_field(e: &Error, field: &str) -> String {
    e.message
        .strip_prefix(field)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(&e.message)
        .to_string()
}

fn check_bank_ref(value: &str) -> std::result::Result<(), String> {
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

/// A file amount: plain digits with an optional fraction (no sign, exponent or spaces), positive,
/// at most the currency's decimals.
fn parse_file_amount(raw: &str, currency: Currency) -> std::result::Result<Money, String> {
    let (whole, fraction) = match raw.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (raw, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(format!("{raw:?} is not a plain decimal amount"));
    }
    Money::parse(raw, currency.code(), "amount").map_err(|e| strip_field(&e, "amount"))
}

/// Checks that every record belongs to the channel the file was fetched for.
pub fn check_channel(records: &[BankRecord], channel: &str) -> Result<()> {
    match records.iter().find(|r| r.channel != channel) {
        Some(r) => Err(line_error(
            r.line,
            "channel",
            format!("expected {channel:?}, found {:?}", r.channel),
        )),
        None => Ok(()),
    }
}

/// Splits a file into the REFUND records (reconciled here) and the number of PAYOUT rows
/// (counted, left for payout reconciliation).
pub fn split_refunds(records: Vec<BankRecord>) -> (Vec<BankRecord>, usize) {
    let (refunds, payouts): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| r.kind == RecordKind::Refund);
    (refunds, payouts.len())
}

/// Parses a business date written `YYYY-MM-DD` (exactly: no other spelling).
pub fn parse_business_date(value: &str, field: &str) -> Result<NaiveDate> {
    if value.is_empty() {
        return Err(Error::field(field, "is required"));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| format_date(*d) == value)
        .ok_or_else(|| Error::field(field, format!("{value:?} is not a date (YYYY-MM-DD)")))?;
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
    pub amount: Money,
}

/// The outcome of one reconciliation item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The bank succeeded and the amounts agree: write back SUCCEEDED.
    Matched,
    /// The bank failed and the amounts agree: write back FAILED with the bank's reason.
    BankFailed,
    /// 短款: submitted on our side, not in the bank's file (yet). No write-back; stays PROCESSING.
    PlatformOnly,
    /// 长款: in the bank's file, not among the platform's submitted refunds.
    BankOnly,
    /// Both sides know the refund but the amounts (or currencies) differ. No write-back.
    AmountMismatch,
    /// The same refund again in the file; the first occurrence is matched normally.
    Duplicate,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[
        Outcome::Matched,
        Outcome::BankFailed,
        Outcome::PlatformOnly,
        Outcome::BankOnly,
        Outcome::AmountMismatch,
        Outcome::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "MATCHED",
            Outcome::BankFailed => "BANK_FAILED",
            Outcome::PlatformOnly => "PLATFORM_ONLY",
            Outcome::BankOnly => "BANK_ONLY",
            Outcome::AmountMismatch => "AMOUNT_MISMATCH",
            Outcome::Duplicate => "DUPLICATE",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == s)
    }

    /// Which side's amount an outcome is totalled by: the bank's for rows only the bank vouches
    /// for (bank-only, duplicate), the platform's otherwise.
    fn totals_bank_amount(self) -> bool {
        matches!(self, Outcome::BankOnly | Outcome::Duplicate)
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
    pub refund_id: String,
    /// The bank's reference (empty for platform-only items).
    pub bank_ref: String,
    pub outcome: Outcome,
    pub platform_amount: Option<Money>,
    pub bank_amount: Option<Money>,
    pub bank_status: Option<BankRecordStatus>,
    /// The file line the item comes from (none for platform-only items).
    pub line: Option<usize>,
    /// Human-readable explanation (amounts, duplicate of which line, discrepancies).
    pub detail: String,
    /// The final status to write back, if the item makes one.
    pub write_back: Option<WriteBack>,
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

fn from_bank(record: &BankRecord, outcome: Outcome, platform: Option<&Money>) -> MatchItem {
    MatchItem {
        refund_id: record.id.clone(),
        bank_ref: record.bank_ref.clone(),
        outcome,
        platform_amount: platform.copied(),
        bank_amount: Some(record.amount),
        bank_status: Some(record.status),
        line: Some(record.line),
        detail: String::new(),
        write_back: None,
    }
}

fn bank_failure_reason(record: &BankRecord) -> String {
    if record.reason.is_empty() {
        "bank reported failure".to_string()
    } else {
        record.reason.clone()
    }
}

/// Matches the bank's REFUND records against the platform's submitted refunds.
///
/// Every record and every platform refund yields exactly one item:
/// - the first record of a refund id (lowest line) is MATCHED / BANK_FAILED (same amount and
///   currency; these carry a write-back), AMOUNT_MISMATCH, or BANK_ONLY (unknown to the platform);
/// - later records of the same id are DUPLICATE (no write-back);
/// - platform refunds with no record are PLATFORM_ONLY (no write-back).
///
/// Items are ordered by refund id, then by file line (platform-only items have none), whatever
/// order the inputs came in. PAYOUT records are ignored. The same refund listed twice by the
/// platform with the same amount counts once; with different amounts it is an internal error.
pub fn match_refunds(bank: &[BankRecord], platform: &[PlatformRefund]) -> Result<Vec<MatchItem>> {
    let mut submitted: HashMap<&str, &Money> = HashMap::with_capacity(platform.len());
    for p in platform {
        if let Some(previous) = submitted.insert(p.refund_id.as_str(), &p.amount) {
            if *previous != p.amount {
                return Err(Error::internal(format!(
                    "refund center listed {} twice with amounts {previous} and {}",
                    p.refund_id, p.amount
                )));
            }
        }
    }

    let mut records: Vec<&BankRecord> = bank
        .iter()
        .filter(|r| r.kind == RecordKind::Refund)
        .collect();
    records.sort_by_key(|r| r.line);

    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut items = Vec::with_capacity(records.len() + platform.len());
    for record in records {
        let platform_amount = submitted.get(record.id.as_str()).copied();
        if let Some(first) = first_line.get(record.id.as_str()) {
            let mut item = from_bank(record, Outcome::Duplicate, platform_amount);
            item.detail = format!(
                "duplicate of line {first}: bank {} {}",
                record.status.as_str(),
                record.amount
            );
            items.push(item);
            continue;
        }
        first_line.insert(record.id.as_str(), record.line);
        let item = match platform_amount {
            None => {
                let mut item = from_bank(record, Outcome::BankOnly, None);
                item.detail = format!(
                    "not among the platform's submitted refunds: bank {} {}",
                    record.status.as_str(),
                    record.amount
                );
                item
            }
            Some(expected) if *expected != record.amount => {
                let mut item = from_bank(record, Outcome::AmountMismatch, Some(expected));
                item.detail = format!(
                    "platform {expected}, bank {} (bank {})",
                    record.amount,
                    record.status.as_str()
                );
                item
            }
            Some(expected) => match record.status {
                BankRecordStatus::Success => {
                    let mut item = from_bank(record, Outcome::Matched, Some(expected));
                    item.write_back = Some(WriteBack {
                        status: FinalStatus::Succeeded,
                        reason: String::new(),
                    });
                    item
                }
                BankRecordStatus::Failed => {
                    let reason = bank_failure_reason(record);
                    let mut item = from_bank(record, Outcome::BankFailed, Some(expected));
                    item.detail = format!("bank failed: {reason}");
                    item.write_back = Some(WriteBack {
                        status: FinalStatus::Failed,
                        reason,
                    });
                    item
                }
            },
        };
        items.push(item);
    }

    let mut platform_only: Vec<&PlatformRefund> = platform
        .iter()
        .filter(|p| !first_line.contains_key(p.refund_id.as_str()))
        .collect();
    platform_only.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
    platform_only.dedup_by(|a, b| a.refund_id == b.refund_id);
    for p in platform_only {
        items.push(MatchItem {
            refund_id: p.refund_id.clone(),
            bank_ref: String::new(),
            outcome: Outcome::PlatformOnly,
            platform_amount: Some(p.amount),
            bank_amount: None,
            bank_status: None,
            line: None,
            detail: format!("not in the bank's clearing file: platform {}", p.amount),
            write_back: None,
        });
    }

    items.sort_by(|a, b| {
        a.refund_id.cmp(&b.refund_id).then(
            a.line
                .unwrap_or(usize::MAX)
                .cmp(&b.line.unwrap_or(usize::MAX)),
        )
    });
    Ok(items)
}

/// What the refund center says about a refund, for resolving bank-only rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRefund {
    pub refund_id: String,
    pub amount: Money,
    /// `None` while the refund is not final (processing).
    pub final_status: Option<FinalStatus>,
}

/// Resolves a BANK_ONLY item against what the refund center knows about that refund.
///
/// A bank-only row whose refund the platform already finalised earlier, with the same status and
/// the same amount (a re-delivered or superseding file, reconciled before), is not a 长款: it is
/// recorded as MATCHED (bank SUCCESS) or BANK_FAILED (bank FAILED) with detail "already final" and
/// no write-back. Anything else stays BANK_ONLY, with what the platform knows added to the detail.
/// Items that are not BANK_ONLY are returned unchanged.
pub fn resolve_bank_only(item: MatchItem, known: Option<&KnownRefund>) -> MatchItem {
    if item.outcome != Outcome::BankOnly {
        return item;
    }
    let (Some(known), Some(bank_status), Some(bank_amount)) =
        (known, item.bank_status, item.bank_amount)
    else {
        return item;
    };
    if known.refund_id != item.refund_id {
        return item;
    }
    let wanted = bank_status.final_status();
    if known.final_status == Some(wanted) && known.amount == bank_amount {
        let outcome = match bank_status {
            BankRecordStatus::Success => Outcome::Matched,
            BankRecordStatus::Failed => Outcome::BankFailed,
        };
        return MatchItem {
            outcome,
            platform_amount: Some(known.amount),
            detail: format!("already final: refund center has {wanted} {}", known.amount),
            write_back: None,
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

/// Counts and totals per outcome (and currency), ordered by outcome then currency. Outcomes with
/// no item are left out.
pub fn summarize<'a>(items: impl IntoIterator<Item = &'a MatchItem>) -> Result<Vec<OutcomeTotal>> {
    let mut totals: BTreeMap<(Outcome, Currency), (u32, Money)> = BTreeMap::new();
    for item in items {
        let Some(amount) = item.counted_amount() else {
            return Err(Error::internal(format!(
                "reconciliation item {} has no amount",
                item.refund_id
            )));
        };
        let entry = totals
            .entry((item.outcome, amount.currency()))
            .or_insert((0, Money::zero(amount.currency())));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = entry.1.checked_add(&amount)?;
    }
    Ok(totals
        .into_iter()
        .map(|((outcome, _), (count, amount))| OutcomeTotal {
            outcome,
            count,
            amount,
        })
        .collect())
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
}

/// A reconciliation run: one clearing file of one channel and business date, matched once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    pub channel: String,
    pub date: NaiveDate,
    /// Lowercase hex SHA-256 of the file.
    pub file_sha256: String,
    pub file_format: String,
    /// Data rows in the file (REFUND and PAYOUT).
    pub file_rows: u32,
    /// PAYOUT rows in the file (not reconciled here).
    pub payout_rows: u32,
    pub created_at_ms: i64,
    pub items: Vec<RunItem>,
}

impl Run {
    /// Items whose write-back has not been accepted yet.
    pub fn pending_write_backs(&self) -> u32 {
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
            Ok(RunItem { seq, item, state })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    fn rec(line: usize, id: &str, amount: &str, status: BankRecordStatus) -> BankRecord {
        BankRecord {
            kind: RecordKind::Refund,
            id: id.to_string(),
            bank_ref: format!("B-{id}-{line}"),
            channel: "netbank".into(),
            amount: cny(amount),
            status,
            completed_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00+08:00")
                .unwrap()
                .with_timezone(&Utc),
            reason: if status == BankRecordStatus::Failed {
                "card cancelled".into()
            } else {
                String::new()
            },
            line,
        }
    }

    fn plat(id: &str, amount: &str) -> PlatformRefund {
        PlatformRefund {
            refund_id: id.into(),
            amount: cny(amount),
        }
    }

    use BankRecordStatus::{Failed, Success};

    fn parse(body: &str) -> Result<Vec<BankRecord>> {
        CsvV1Parser.parse(format!("{HEADER}{body}").as_bytes())
    }

    fn parse_err(body: &str) -> String {
        let e = parse(body).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
        e.message
    }

    // ----- parser -----

    #[test]
    fn csv_parses_valid_rows() {
        let records = parse(
            "REFUND,rf_1,BK001,netbank,12.50,CNY,SUCCESS,2026-11-25T10:00:00+08:00,\n\
             PAYOUT,po_1,BK002,netbank,3,CNY,FAILED,2026-11-25T02:00:00Z,\"account closed, sorry\"\n\
             REFUND,rf_2,BK003,netbank,100,JPY,FAILED,2026-11-25T10:00:00.123+08:00,card cancelled\n",
        )
        .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].kind, RecordKind::Refund);
        assert_eq!(records[0].amount.to_minor(), 1250);
        assert_eq!(records[0].line, 2);
        assert_eq!(records[0].status, Success);
        assert_eq!(records[1].kind, RecordKind::Payout);
        assert_eq!(records[1].reason, "account closed, sorry");
        assert_eq!(records[1].amount.to_minor(), 300);
        assert_eq!(records[2].amount.currency(), Currency::Jpy);
        assert_eq!(records[2].amount.to_minor(), 100);
        assert_eq!(records[2].line, 4);
        assert_eq!(
            records[1].completed_at,
            DateTime::parse_from_rfc3339("2026-11-25T10:00:00+08:00").unwrap()
        );
        let (refunds, payouts) = split_refunds(records);
        assert_eq!((refunds.len(), payouts), (2, 1));
    }

    #[test]
    fn csv_header_only_bom_and_blank_lines() {
        assert!(parse("").unwrap().is_empty());
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(HEADER.as_bytes());
        bytes.extend_from_slice(
            b"\nREFUND,rf_1,BK1,netbank,0.01,CNY,SUCCESS,2026-11-25T10:00:00Z,\n\n",
        );
        let records = CsvV1Parser.parse(&bytes).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].amount.to_minor(), 1);
        assert_eq!(records[0].line, 3);
        let records = CsvV1Parser
            .parse(
                format!(
                    "{HEADER}\r\n\r\nREFUND,rf_1,BK1,netbank,1.00,CNY,FAILED,2026-11-25T10:00:00Z,\"a, b\"\r\n\r\n\
                     REFUND,rf_2,BK2,netbank,2.00,CNY,SUCCESS,2026-11-25T10:00:00Z,\n"
                )
                .as_bytes(),
            )
            .unwrap();
        assert_eq!(records[0].line, 4);
        assert_eq!(records[0].reason, "a, b");
        assert_eq!(records[1].line, 6);
        let e = CsvV1Parser
            .parse(format!("{HEADER}\n\nREFUND,rf_1\n").as_bytes())
            .unwrap_err();
        assert!(
            e.message.starts_with("clearing file line 4: row: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn csv_rejects_bad_headers() {
        let e = CsvV1Parser.parse(b"").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("line 1: header"), "{}", e.message);
        let e = CsvV1Parser
            .parse(b"record_type,id,bank_ref,channel,amount,currency,status,completed_at\n")
            .unwrap_err();
        assert!(e.message.contains("line 1: header"), "{}", e.message);
        let e = CsvV1Parser
            .parse(b"id,record_type,bank_ref,channel,amount,currency,status,completed_at,reason\n")
            .unwrap_err();
        assert!(e.message.contains("line 1: header"), "{}", e.message);
    }

    #[test]
    fn csv_rejects_every_bad_field_naming_line_and_field() {
        let ok = "REFUND,rf_0,BK0,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,\n";
        let cases: &[(&str, &str)] = &[
            (
                "TRANSFER,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "record_type",
            ),
            (
                "refund,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "record_type",
            ),
            (
                "REFUND,,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "id",
            ),
            (
                "REFUND,rf 1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "id",
            ),
            (
                "REFUND,rf_1,,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "bank_ref",
            ),
            (
                "REFUND,rf_1,B K,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "bank_ref",
            ),
            (
                "REFUND,rf_1,BK1,,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "channel",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.001,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.5,JPY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,0.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,-1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,+1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1e2,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank, 1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,.50,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,,CNY,SUCCESS,2026-11-25T10:00:00Z,",
                "amount",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,XYZ,SUCCESS,2026-11-25T10:00:00Z,",
                "currency",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,,SUCCESS,2026-11-25T10:00:00Z,",
                "currency",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,OK,2026-11-25T10:00:00Z,",
                "status",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,success,2026-11-25T10:00:00Z,",
                "status",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25 10:00:00,",
                "completed_at",
            ),
            ("REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,,", "completed_at"),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z",
                "row",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,x,y",
                "row",
            ),
            (
                "REFUND,rf_1,BK1,netbank,1.00,CNY,FAILED,2026-11-25T10:00:00Z,\"a\u{7}b\"",
                "reason",
            ),
        ];
        for (row, field) in cases {
            let msg = parse_err(&format!("{ok}{row}\n"));
            assert!(
                msg.starts_with(&format!("clearing file line 3: {field}: ")),
                "row {row:?}: {msg}"
            );
        }
        let long_reason = "x".repeat(MAX_REASON_CHARS + 1);
        let msg = parse_err(&format!(
            "REFUND,rf_1,BK1,netbank,1.00,CNY,FAILED,2026-11-25T10:00:00Z,{long_reason}\n"
        ));
        assert!(msg.starts_with("clearing file line 2: reason: "), "{msg}");
        let mut bytes = HEADER.as_bytes().to_vec();
        bytes.extend_from_slice(
            b"REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,\xFF\n",
        );
        let e = CsvV1Parser.parse(&bytes).unwrap_err();
        assert!(
            e.message.starts_with("clearing file line 2: reason: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn parser_registry_and_channel_check() {
        assert_eq!(parser_for("").unwrap().format(), CSV_V1_FORMAT);
        assert_eq!(parser_for(CSV_V1_FORMAT).unwrap().format(), CSV_V1_FORMAT);
        assert_eq!(
            parser_for("wechat-bill").map(|_| ()).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let records = vec![rec(2, "rf_1", "1.00", Success), {
            let mut r = rec(3, "rf_2", "1.00", Success);
            r.channel = "quickpay".into();
            r
        }];
        let e = check_channel(&records, "netbank").unwrap_err();
        assert!(
            e.message.starts_with("clearing file line 3: channel: "),
            "{}",
            e.message
        );
        assert!(check_channel(&records[..1], "netbank").is_ok());
    }

    #[test]
    fn business_dates_are_strict() {
        assert_eq!(
            parse_business_date("2026-11-25", "date").unwrap(),
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
        );
        for bad in [
            "",
            "2026-1-5",
            "2026/11/25",
            "2026-02-30",
            "20261125",
            " 2026-11-25",
        ] {
            let e = parse_business_date(bad, "date").unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad:?}");
            assert!(e.message.starts_with("date: "), "{}", e.message);
        }
    }

    // ----- matcher -----

    fn outcomes(items: &[MatchItem]) -> Vec<(&str, Outcome)> {
        items
            .iter()
            .map(|i| (i.refund_id.as_str(), i.outcome))
            .collect()
    }

    #[test]
    fn matched_item_writes_back_succeeded() {
        let items = match_refunds(
            &[rec(2, "rf_a", "12.34", Success)],
            &[plat("rf_a", "12.34")],
        )
        .unwrap();
        assert_eq!(items.len(), 1);
        let i = &items[0];
        assert_eq!(i.outcome, Outcome::Matched);
        assert_eq!(i.bank_ref, "B-rf_a-2");
        assert_eq!(i.platform_amount.unwrap().to_minor(), 1234);
        assert_eq!(i.bank_amount.unwrap().to_minor(), 1234);
        assert_eq!(i.line, Some(2));
        assert_eq!(
            i.write_back,
            Some(WriteBack {
                status: FinalStatus::Succeeded,
                reason: String::new()
            })
        );
        assert_eq!(WriteBackState::initial(i), WriteBackState::Pending);
    }

    #[test]
    fn bank_failed_item_writes_back_failed_with_the_reason() {
        let items = match_refunds(&[rec(2, "rf_a", "5.00", Failed)], &[plat("rf_a", "5")]).unwrap();
        let i = &items[0];
        assert_eq!(i.outcome, Outcome::BankFailed);
        assert_eq!(
            i.write_back,
            Some(WriteBack {
                status: FinalStatus::Failed,
                reason: "card cancelled".into()
            })
        );
        assert!(i.detail.contains("card cancelled"));
        let mut r = rec(2, "rf_b", "5.00", Failed);
        r.reason.clear();
        let items = match_refunds(&[r], &[plat("rf_b", "5.00")]).unwrap();
        assert_eq!(
            items[0].write_back.as_ref().map(|w| w.reason.as_str()),
            Some("bank reported failure")
        );
    }

    #[test]
    fn amounts_must_agree_to_the_cent() {
        let items = match_refunds(
            &[
                rec(2, "rf_a", "100.00", Success),
                rec(3, "rf_b", "100.01", Success),
                rec(4, "rf_c", "99.99", Failed),
            ],
            &[
                plat("rf_a", "100"),
                plat("rf_b", "100.00"),
                plat("rf_c", "100.00"),
            ],
        )
        .unwrap();
        assert_eq!(
            outcomes(&items),
            vec![
                ("rf_a", Outcome::Matched),
                ("rf_b", Outcome::AmountMismatch),
                ("rf_c", Outcome::AmountMismatch),
            ]
        );
        for i in &items[1..] {
            assert_eq!(i.write_back, None);
            assert!(i.detail.contains("platform 100.00 CNY"), "{}", i.detail);
        }
        assert!(items[1].detail.contains("bank 100.01 CNY"));
        assert!(items[2].detail.contains("bank 99.99 CNY"));
        assert_eq!(items[1].bank_amount.unwrap().to_minor(), 10001);
        assert_eq!(items[1].platform_amount.unwrap().to_minor(), 10000);
    }

    #[test]
    fn a_different_currency_is_a_mismatch() {
        let mut r = rec(2, "rf_a", "1.00", Success);
        r.amount = Money::parse("1.00", "USD", "a").unwrap();
        let items = match_refunds(&[r], &[plat("rf_a", "1.00")]).unwrap();
        assert_eq!(items[0].outcome, Outcome::AmountMismatch);
        assert!(items[0].detail.contains("USD"), "{}", items[0].detail);
    }

    #[test]
    fn duplicates_match_the_first_occurrence_and_flag_the_rest() {
        let items = match_refunds(
            &[
                rec(7, "rf_a", "1.00", Failed),
                rec(2, "rf_a", "1.00", Success),
                rec(5, "rf_a", "1.00", Success),
                rec(3, "rf_x", "2.00", Success),
                rec(4, "rf_x", "2.00", Success),
            ],
            &[plat("rf_a", "1.00")],
        )
        .unwrap();
        assert_eq!(
            outcomes(&items),
            vec![
                ("rf_a", Outcome::Matched),
                ("rf_a", Outcome::Duplicate),
                ("rf_a", Outcome::Duplicate),
                ("rf_x", Outcome::BankOnly),
                ("rf_x", Outcome::Duplicate),
            ]
        );
        assert_eq!(items[0].line, Some(2));
        assert_eq!(items[1].line, Some(5));
        assert_eq!(items[2].line, Some(7));
        assert!(items[1].detail.starts_with("duplicate of line 2"));
        assert!(items[2].detail.starts_with("duplicate of line 2"));
        assert!(items[4].detail.starts_with("duplicate of line 3"));
        assert!(items[1..].iter().all(|i| i.write_back.is_none()));
        assert_eq!(items[1].platform_amount.unwrap().to_minor(), 100);
        assert_eq!(items[4].platform_amount, None);
    }

    #[test]
    fn bank_only_and_platform_only() {
        let items = match_refunds(
            &[rec(2, "rf_bank", "3.00", Success)],
            &[plat("rf_plat", "4.00")],
        )
        .unwrap();
        assert_eq!(
            outcomes(&items),
            vec![
                ("rf_bank", Outcome::BankOnly),
                ("rf_plat", Outcome::PlatformOnly)
            ]
        );
        assert_eq!(items[0].platform_amount, None);
        assert_eq!(items[0].bank_amount.unwrap().to_minor(), 300);
        assert_eq!(items[1].bank_amount, None);
        assert_eq!(items[1].bank_ref, "");
        assert_eq!(items[1].line, None);
        assert_eq!(items[1].platform_amount.unwrap().to_minor(), 400);
        assert!(items.iter().all(|i| i.write_back.is_none()));
    }

    #[test]
    fn payout_rows_are_not_matched() {
        let mut payout = rec(2, "rf_a", "1.00", Success);
        payout.kind = RecordKind::Payout;
        let items = match_refunds(&[payout], &[plat("rf_a", "1.00")]).unwrap();
        assert_eq!(outcomes(&items), vec![("rf_a", Outcome::PlatformOnly)]);
    }

    #[test]
    fn ordering_is_deterministic_whatever_the_input_order() {
        let bank = vec![
            rec(2, "rf_c", "1.00", Success),
            rec(3, "rf_a", "2.00", Failed),
            rec(4, "rf_e", "3.00", Success),
            rec(5, "rf_c", "1.00", Success),
        ];
        let platform = vec![
            plat("rf_d", "9.00"),
            plat("rf_c", "1.00"),
            plat("rf_a", "2.00"),
            plat("rf_b", "8.00"),
        ];
        let expected = match_refunds(&bank, &platform).unwrap();
        assert_eq!(
            outcomes(&expected),
            vec![
                ("rf_a", Outcome::BankFailed),
                ("rf_b", Outcome::PlatformOnly),
                ("rf_c", Outcome::Matched),
                ("rf_c", Outcome::Duplicate),
                ("rf_d", Outcome::PlatformOnly),
                ("rf_e", Outcome::BankOnly),
            ]
        );
        let mut bank_rev = bank.clone();
        bank_rev.reverse();
        let mut plat_rev = platform.clone();
        plat_rev.reverse();
        assert_eq!(match_refunds(&bank_rev, &plat_rev).unwrap(), expected);
        let mut plat_rot = platform.clone();
        plat_rot.rotate_left(1);
        assert_eq!(match_refunds(&bank, &plat_rot).unwrap(), expected);
    }

    #[test]
    fn platform_listing_duplicates() {
        let items = match_refunds(&[], &[plat("rf_a", "1.00"), plat("rf_a", "1.00")]).unwrap();
        assert_eq!(outcomes(&items), vec![("rf_a", Outcome::PlatformOnly)]);
        let e = match_refunds(&[], &[plat("rf_a", "1.00"), plat("rf_a", "2.00")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
    }

    #[test]
    fn empty_inputs_make_an_empty_report() {
        assert!(match_refunds(&[], &[]).unwrap().is_empty());
        assert!(summarize(&[]).unwrap().is_empty());
    }

    #[test]
    fn totals_per_outcome_to_the_cent() {
        let items = match_refunds(
            &[
                rec(2, "rf_1", "0.01", Success),
                rec(3, "rf_2", "999999.99", Success),
                rec(4, "rf_3", "10.10", Failed),
                rec(5, "rf_4", "5.55", Success),
                rec(6, "rf_1", "0.01", Success),
                rec(7, "rf_5", "1.11", Success),
            ],
            &[
                plat("rf_1", "0.01"),
                plat("rf_2", "999999.99"),
                plat("rf_3", "10.10"),
                plat("rf_4", "5.56"),
                plat("rf_6", "0.30"),
                plat("rf_7", "0.70"),
            ],
        )
        .unwrap();
        let totals = summarize(&items).unwrap();
        let got: Vec<(Outcome, u32, i64)> = totals
            .iter()
            .map(|t| (t.outcome, t.count, t.amount.to_minor()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Outcome::Matched, 2, 100_000_000),
                (Outcome::BankFailed, 1, 1010),
                (Outcome::PlatformOnly, 2, 100),
                (Outcome::BankOnly, 1, 111),
                (Outcome::AmountMismatch, 1, 556),
                (Outcome::Duplicate, 1, 1),
            ]
        );
        assert_eq!(totals[2].amount.amount_string(), "1.00");
    }

    #[test]
    fn totals_keep_currencies_apart() {
        let mut usd = rec(3, "rf_2", "2.00", Success);
        usd.amount = Money::parse("2.00", "USD", "a").unwrap();
        let items = match_refunds(&[rec(2, "rf_1", "1.00", Success), usd], &[]).unwrap();
        let totals = summarize(&items).unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[0].amount.currency(), Currency::Cny);
        assert_eq!(totals[1].amount.currency(), Currency::Usd);
    }

    // ----- bank-only resolution -----

    fn bank_only(status: BankRecordStatus, amount: &str) -> MatchItem {
        match_refunds(&[rec(2, "rf_a", amount, status)], &[])
            .unwrap()
            .remove(0)
    }

    fn known(status: Option<FinalStatus>, amount: &str) -> KnownRefund {
        KnownRefund {
            refund_id: "rf_a".into(),
            amount: cny(amount),
            final_status: status,
        }
    }

    #[test]
    fn bank_only_already_final_the_same_way_is_matched_without_write_back() {
        let item = resolve_bank_only(
            bank_only(Success, "3.00"),
            Some(&known(Some(FinalStatus::Succeeded), "3.00")),
        );
        assert_eq!(item.outcome, Outcome::Matched);
        assert_eq!(item.write_back, None);
        assert_eq!(item.platform_amount.unwrap().to_minor(), 300);
        assert!(item.detail.starts_with("already final"), "{}", item.detail);
        assert_eq!(WriteBackState::initial(&item), WriteBackState::NotNeeded);

        let item = resolve_bank_only(
            bank_only(Failed, "3.00"),
            Some(&known(Some(FinalStatus::Failed), "3.00")),
        );
        assert_eq!(item.outcome, Outcome::BankFailed);
        assert_eq!(item.write_back, None);
    }

    #[test]
    fn bank_only_stays_bank_only_otherwise() {
        for k in [
            None,
            Some(known(Some(FinalStatus::Failed), "3.00")),
            Some(known(Some(FinalStatus::Succeeded), "3.01")),
            Some(known(None, "3.00")),
        ] {
            let item = resolve_bank_only(bank_only(Success, "3.00"), k.as_ref());
            assert_eq!(item.outcome, Outcome::BankOnly, "{k:?}");
            assert_eq!(item.write_back, None);
            assert_eq!(item.platform_amount, None);
            if k.is_some() {
                assert!(
                    item.detail.contains("refund center has it"),
                    "{}",
                    item.detail
                );
            }
        }
        let matched = match_refunds(&[rec(2, "rf_a", "1.00", Success)], &[plat("rf_a", "1.00")])
            .unwrap()
            .remove(0);
        assert_eq!(
            resolve_bank_only(
                matched.clone(),
                Some(&known(Some(FinalStatus::Failed), "1.00"))
            ),
            matched
        );
    }

    // ----- write-back -----

    #[test]
    fn write_back_state_machine() {
        use WriteBackState::*;
        assert_eq!(Pending.complete().unwrap(), Done);
        assert_eq!(Done.complete().unwrap(), Done);
        assert_eq!(Pending.refuse().unwrap(), Refused);
        assert_eq!(Refused.refuse().unwrap(), Refused);
        assert_eq!(
            Refused.complete().unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(
            NotNeeded.refuse().unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(
            NotNeeded.complete().unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(
            Done.refuse().unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert!(Pending.is_pending() && !Done.is_pending() && !Refused.is_pending());
    }

    #[test]
    fn write_back_answers_are_judged() {
        use FinalStatus::*;
        assert_eq!(
            judge_write_back(Succeeded, Ok(Some(Succeeded))),
            WriteBackVerdict::Done
        );
        assert!(matches!(
            judge_write_back(Succeeded, Ok(Some(Failed))),
            WriteBackVerdict::Refused(d) if d.starts_with("discrepancy")
        ));
        assert_eq!(judge_write_back(Failed, Ok(None)), WriteBackVerdict::Retry);
        let refused = Error::new(ErrorCode::InvalidStateTransition, "already succeeded");
        assert!(matches!(
            judge_write_back(Failed, Err(&refused)),
            WriteBackVerdict::Refused(d) if d.contains("already succeeded")
        ));
        for code in [
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::Storage,
            ErrorCode::InProgress,
        ] {
            assert_eq!(
                judge_write_back(Failed, Err(&Error::new(code, "x"))),
                WriteBackVerdict::Retry,
                "{code}"
            );
        }
        assert!(matches!(
            judge_write_back(Failed, Err(&Error::new(ErrorCode::RefundNotFound, "x"))),
            WriteBackVerdict::Refused(_)
        ));
    }

    #[test]
    fn numbering_and_pending_count() {
        let items = match_refunds(
            &[
                rec(2, "rf_a", "1.00", Success),
                rec(3, "rf_b", "1.00", Failed),
                rec(4, "rf_c", "1.00", Success),
            ],
            &[plat("rf_a", "1.00"), plat("rf_b", "1.00")],
        )
        .unwrap();
        let numbered = number_items(items).unwrap();
        assert_eq!(
            numbered.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let run = Run {
            run_id: "rcn_x".into(),
            channel: "netbank".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
            file_sha256: String::new(),
            file_format: CSV_V1_FORMAT.into(),
            file_rows: 3,
            payout_rows: 0,
            created_at_ms: 0,
            items: numbered,
        };
        assert_eq!(run.pending_write_backs(), 2);
        assert_eq!(run.totals().unwrap().len(), 3);
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(*o));
        }
        assert_eq!(Outcome::parse("NOPE"), None);
        for s in [FinalStatus::Succeeded, FinalStatus::Failed] {
            assert_eq!(FinalStatus::parse(s.as_str()), Some(s));
        }
        for s in [Success, Failed] {
            assert_eq!(BankRecordStatus::parse(s.as_str()), Some(s));
        }
    }
}
