//! The UnionPay fixed-width transaction file (ZM-style 全渠道流水文件), as tuikuan reads it.
//!
//! One transaction per line, no header or trailer. Fields have fixed widths **in bytes** and are
//! separated by exactly one space (0x20); text fields are left-aligned and padded with spaces,
//! numeric fields are zero-padded. Lines end with `\n` (a `\r` before it is ignored). The file is
//! GBK (as UnionPay sends it) or UTF-8: declare it, or let the reader detect it (a line that is not
//! valid UTF-8 is GBK; once GBK is seen, the rest of the file is read as GBK). Only the 附言 field
//! may hold non-ASCII text. Trailing spaces of the last field may be trimmed.
//!
//! | # | field | 名称 | width | content |
//! |---|---|---|---|---|
//! | 1 | `acq_ins_code` | 代理机构标识码 | 11 | digits |
//! | 2 | `fwd_ins_code` | 发送机构标识码 | 11 | digits |
//! | 3 | `trace_no` | 系统跟踪号 | 6 | digits |
//! | 4 | `trans_time` | 交易传输时间 | 10 | `MMDDhhmmss`, China time |
//! | 5 | `pan` | 主账号 | 19 | card number, digits or `*` (masked), left-aligned |
//! | 6 | `amount` | 交易金额 | 13 | sign `+` or `-` then 12 digits, in fen |
//! | 7 | `msg_type` | 报文类型 | 4 | digits (`0220` for refunds) |
//! | 8 | `txn_type` | 交易类型 | 2 | `01` consume, `04` refund (退货), `31` revoke, … |
//! | 9 | `mcc` | 商户类别 | 4 | digits |
//! | 10 | `mer_id` | 商户代码 | 15 | letters and digits |
//! | 11 | `retrieval_ref` | 检索参考号 | 12 | the bank's reference, letters and digits |
//! | 12 | `resp_code` | 应答码 | 2 | `00` success, anything else failed |
//! | 13 | `order_id` | 商户订单号 | 40 | the platform's bank reference id, left-aligned |
//! | 14 | `settle_date` | 清算日期 | 8 | `YYYYMMDD` |
//! | 15 | `currency` | 交易币种 | 3 | ISO 4217 numeric: `156` CNY, `344` HKD, `840` USD, `392` JPY |
//! | 16 | `remark` | 附言 | 40 | free text (failure reason), left-aligned |
//!
//! A line is 215 bytes. Only `txn_type` `04` rows are refunds; other rows are counted and skipped.
//! A refund row becomes a [`BankRecord`] with `id` = 商户订单号, `bank_ref` = 检索参考号, the amount
//! (absolute value), SUCCESS when the 应答码 is `00` else FAILED with reason
//! `resp <code>: <附言>`. The year of 交易传输时间 is the 清算日期's (the year before when the month is
//! later than the settlement month).

use std::io::BufRead;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Money, Result};

use super::wechat::china;
use super::{
    line_error, read_line, strip_field, BankRecord, BankRecordStatus, ClearingFileParser,
    FileStats, RecordKind, RecordSink, MAX_FILE_ROWS,
};

/// The format name of UnionPay ZM-style files.
pub const UNIONPAY_FORMAT: &str = "unionpay-zm";

/// The fields of a line: (name, width in bytes).
pub const UNIONPAY_FIELDS: [(&str, usize); 16] = [
    ("acq_ins_code", 11),
    ("fwd_ins_code", 11),
    ("trace_no", 6),
    ("trans_time", 10),
    ("pan", 19),
    ("amount", 13),
    ("msg_type", 4),
    ("txn_type", 2),
    ("mcc", 4),
    ("mer_id", 15),
    ("retrieval_ref", 12),
    ("resp_code", 2),
    ("order_id", 40),
    ("settle_date", 8),
    ("currency", 3),
    ("remark", 40),
];

/// The length of a line in bytes: the widths plus one separator between fields.
pub const UNIONPAY_LINE_BYTES: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < UNIONPAY_FIELDS.len() {
        total += UNIONPAY_FIELDS[i].1;
        i += 1;
    }
    total + UNIONPAY_FIELDS.len() - 1
};

/// The transaction type of refunds (退货).
pub const TXN_TYPE_REFUND: &str = "04";

/// The text encoding of a UnionPay file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextEncoding {
    /// UTF-8 unless a line is not valid UTF-8, then GBK from there on.
    #[default]
    Detect,
    Utf8,
    Gbk,
}

impl TextEncoding {
    /// `""` (detect), `utf-8`/`utf8`, `gbk`.
    pub fn parse(s: &str) -> Result<TextEncoding> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(TextEncoding::Detect),
            "utf-8" | "utf8" => Ok(TextEncoding::Utf8),
            "gbk" | "gb2312" | "gb18030" => Ok(TextEncoding::Gbk),
            other => Err(tuikuan_kernel::Error::field(
                "encoding",
                format!("expected utf-8 or gbk, found {other:?}"),
            )),
        }
    }
}

/// The UnionPay ZM-style parser.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnionpayZmParser {
    pub encoding: TextEncoding,
}

/// Byte offsets of each field.
fn offsets() -> [(usize, usize); 16] {
    let mut out = [(0, 0); 16];
    let mut at = 0;
    for (i, (_, width)) in UNIONPAY_FIELDS.iter().enumerate() {
        out[i] = (at, at + width);
        at += width + 1;
    }
    out
}

const REMARK_START: usize = UNIONPAY_LINE_BYTES - 40;

impl ClearingFileParser for UnionpayZmParser {
    fn format(&self) -> &'static str {
        UNIONPAY_FORMAT
    }

    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats> {
        let spans = offsets();
        let mut buf = Vec::with_capacity(UNIONPAY_LINE_BYTES + 2);
        let mut line = 0usize;
        let mut encoding = self.encoding;
        let mut stats = FileStats::default();
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            if buf.is_empty() {
                continue;
            }
            if buf.len() > UNIONPAY_LINE_BYTES {
                return Err(line_error(
                    line,
                    "row",
                    format!("expected {UNIONPAY_LINE_BYTES} bytes, found {}", buf.len()),
                ));
            }
            if buf.len() < REMARK_START {
                return Err(line_error(
                    line,
                    "row",
                    format!("expected {UNIONPAY_LINE_BYTES} bytes, found {}", buf.len()),
                ));
            }
            buf.resize(UNIONPAY_LINE_BYTES, b' ');
            for (i, (_, end)) in spans.iter().enumerate().take(UNIONPAY_FIELDS.len() - 1) {
                if buf[*end] != b' ' {
                    return Err(line_error(
                        line,
                        UNIONPAY_FIELDS[i + 1].0,
                        format!("expected a single space before it at byte {}", end + 1),
                    ));
                }
            }
            if stats.rows >= MAX_FILE_ROWS {
                return Err(line_error(
                    line,
                    "row",
                    format!("more than {MAX_FILE_ROWS} rows"),
                ));
            }
            stats.rows += 1;
            if encoding == TextEncoding::Detect && std::str::from_utf8(&buf).is_err() {
                encoding = TextEncoding::Gbk;
            }
            let field = |i: usize| -> &[u8] { &buf[spans[i].0..spans[i].1] };
            let ascii = |i: usize| -> Result<&str> {
                let raw = field(i);
                if !raw.is_ascii() {
                    return Err(line_error(line, UNIONPAY_FIELDS[i].0, "must be ASCII"));
                }
                std::str::from_utf8(raw)
                    .map_err(|_| line_error(line, UNIONPAY_FIELDS[i].0, "must be ASCII"))
            };
            let digits = |i: usize| -> Result<&str> {
                let s = ascii(i)?;
                if s.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(s)
                } else {
                    Err(line_error(
                        line,
                        UNIONPAY_FIELDS[i].0,
                        format!("{s:?} must be {} digits", UNIONPAY_FIELDS[i].1),
                    ))
                }
            };
            digits(0)?;
            digits(1)?;
            digits(2)?;
            let trans_time = digits(3)?;
            let pan = ascii(4)?.trim_end();
            if pan.is_empty() || !pan.bytes().all(|b| b.is_ascii_digit() || b == b'*') {
                return Err(line_error(line, "pan", "must be digits or * (masked)"));
            }
            let amount_raw = ascii(5)?;
            let (sign, amount_digits) = amount_raw.split_at(1);
            if !matches!(sign, "+" | "-") || !amount_digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(line_error(
                    line,
                    "amount",
                    format!("{amount_raw:?} must be a sign (+ or -) and 12 digits in fen"),
                ));
            }
            digits(6)?;
            let txn_type = digits(7)?;
            digits(8)?;
            let mer_id = ascii(9)?.trim_end();
            if mer_id.is_empty() || !mer_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(line_error(line, "mer_id", "must be letters and digits"));
            }
            let retrieval_ref = ascii(10)?.trim_end();
            if retrieval_ref.is_empty() || !retrieval_ref.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(line_error(
                    line,
                    "retrieval_ref",
                    "must be letters and digits",
                ));
            }
            let resp_code = ascii(11)?;
            if !resp_code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(line_error(line, "resp_code", "must be letters and digits"));
            }
            let order_id = ascii(12)?.trim_end();
            let settle_raw = digits(13)?;
            let settle_date = NaiveDate::parse_from_str(settle_raw, "%Y%m%d").map_err(|_| {
                line_error(
                    line,
                    "settle_date",
                    format!("{settle_raw:?} is not YYYYMMDD"),
                )
            })?;
            let currency_raw = digits(14)?;
            let remark = decode(field(15), encoding)
                .ok_or_else(|| {
                    line_error(
                        line,
                        "remark",
                        match encoding {
                            TextEncoding::Gbk => "is not valid GBK",
                            _ => "is not valid UTF-8",
                        },
                    )
                })?
                .trim_end()
                .to_string();
            if remark.chars().any(char::is_control) {
                return Err(line_error(line, "remark", "contains control characters"));
            }
            if txn_type != TXN_TYPE_REFUND {
                stats.skipped += 1;
                continue;
            }
            validate_external_id(order_id, "order_id")
                .map_err(|e| line_error(line, "order_id", strip_field(&e, "order_id")))?;
            let currency = match currency_raw {
                "156" => Currency::Cny,
                "344" => Currency::Hkd,
                "840" => Currency::Usd,
                "392" => Currency::Jpy,
                other => {
                    return Err(line_error(
                        line,
                        "currency",
                        format!("unsupported currency code {other}"),
                    ))
                }
            };
            let fen: i64 = amount_digits.parse().map_err(|_| {
                line_error(line, "amount", format!("{amount_raw:?} is not a number"))
            })?;
            if fen == 0 {
                return Err(line_error(line, "amount", "must not be zero"));
            }
            let amount = Money::from_minor(fen, currency);
            let completed_at = trans_instant(trans_time, settle_date).ok_or_else(|| {
                line_error(
                    line,
                    "trans_time",
                    format!("{trans_time:?} is not MMDDhhmmss"),
                )
            })?;
            let (status, reason) = if resp_code == "00" {
                (BankRecordStatus::Success, String::new())
            } else {
                (
                    BankRecordStatus::Failed,
                    if remark.is_empty() {
                        format!("resp {resp_code}")
                    } else {
                        format!("resp {resp_code}: {remark}")
                    },
                )
            };
            stats.records += 1;
            sink(BankRecord {
                kind: RecordKind::Refund,
                id: order_id.to_string(),
                bank_ref: retrieval_ref.to_string(),
                channel: String::new(),
                amount,
                status,
                completed_at,
                reason,
                line,
            })?;
        }
        Ok(stats)
    }
}

fn decode(raw: &[u8], encoding: TextEncoding) -> Option<String> {
    match encoding {
        TextEncoding::Gbk => encoding_rs::GBK
            .decode_without_bom_handling_and_without_replacement(raw)
            .map(|c| c.into_owned()),
        TextEncoding::Utf8 | TextEncoding::Detect => {
            std::str::from_utf8(raw).ok().map(str::to_string)
        }
    }
}

fn trans_instant(mmddhhmmss: &str, settle: NaiveDate) -> Option<chrono::DateTime<Utc>> {
    let month: u32 = mmddhhmmss.get(0..2)?.parse().ok()?;
    let day: u32 = mmddhhmmss.get(2..4)?.parse().ok()?;
    let time = NaiveTime::parse_from_str(mmddhhmmss.get(4..10)?, "%H%M%S").ok()?;
    let year = if month > settle.month() {
        settle.year() - 1
    } else {
        settle.year()
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    china()
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// One line of a ZM-style file (for fixtures, the benchmark and the simulator): the fields in
/// order, padded to their widths. `remark` is encoded as `encoding` (GBK or UTF-8) and padded in
/// bytes; it is cut at a character boundary if too long.
#[allow(clippy::too_many_arguments)]
pub fn unionpay_line(
    trace_no: u32,
    trans_time: &str,
    amount: &Money,
    txn_type: &str,
    retrieval_ref: &str,
    resp_code: &str,
    order_id: &str,
    settle_date: NaiveDate,
    remark: &str,
    encoding: TextEncoding,
) -> Vec<u8> {
    let currency = match amount.currency() {
        Currency::Cny => "156",
        Currency::Hkd => "344",
        Currency::Usd => "840",
        Currency::Jpy => "392",
    };
    let minor = amount.to_minor();
    let sign = if minor < 0 { '-' } else { '+' };
    let mut out = format!(
        "{:0>11} {:0>11} {:06} {:<10} {:<19} {sign}{:012} {} {:<2} {} {:<15} {:<12} {:<2} {:<40} {} {} ",
        "48020000",
        "48020000",
        trace_no % 1_000_000,
        trans_time,
        "6222020200001234567",
        minor.unsigned_abs(),
        "0220",
        txn_type,
        "5311",
        "898110248990001",
        retrieval_ref,
        resp_code,
        order_id,
        settle_date.format("%Y%m%d"),
        currency,
    )
    .into_bytes();
    let mut encoded: Vec<u8> = Vec::new();
    for c in remark.chars() {
        let mut tmp = [0u8; 4];
        let s: &str = c.encode_utf8(&mut tmp);
        let bytes: Vec<u8> = match encoding {
            TextEncoding::Gbk => encoding_rs::GBK.encode(s).0.into_owned(),
            _ => s.as_bytes().to_vec(),
        };
        if encoded.len() + bytes.len() > 40 {
            break;
        }
        encoded.extend_from_slice(&bytes);
    }
    encoded.resize(40, b' ');
    out.extend_from_slice(&encoded);
    out.push(b'\n');
    out
}
