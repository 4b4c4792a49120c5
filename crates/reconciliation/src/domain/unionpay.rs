//! UnionPay's 全渠道 merchant reconciliation file, the ZM file (商户对账文件 `ZM_<merId>`), as
//! UnionPay's file interface specification (《全渠道平台接入接口规范 第3部分 文件接口》, 6.1 ZM文件)
//! defines it and UnionPay's acp SDK reads it (`parseZMFile`, its field-length table).
//!
//! One cleared transaction per line, no header or trailer, GBK text. 42 fields at fixed widths
//! **in bytes**, one space (0x20) between fields: 566 bytes of fields and 41 separators, 607 bytes
//! a line. Text fields are left-aligned and padded with spaces; amounts are in fen (分):
//! 交易金额 is 12 digits, the settlement amounts carry a direction letter first (`C` credit to the
//! merchant, `D` debit) then 12 digits (分期付款附加手续费: 11). Lines end with `\n` (`\r\n` is
//! accepted); trailing spaces of the last field (保留使用) may be missing. A blank line is an error; a
//! file without a single byte is a day without transactions.
//!
//! Only cleared transactions are listed, so every row is a success. Refund rows are told from
//! payment rows by 交易类型: `04` (退货, the refund a platform requests) and `31` (消费撤销, a same-day
//! cancellation) are refunds, every other code a payment. A refund row becomes a refund
//! [`BankRecord`] with `id` = 商户订单号 (the orderId the platform's refund request carried),
//! `bank_ref` = 查询流水号 (queryId), `original_ref` = 原始交易订单号 (the paid order's orderId), the
//! amount = 交易金额 in CNY, completed at 交易传输时间 (`MMDDhhmmss`, China time; the year is the
//! business date's, the year before when the month is later). 交易代码 is read and shown, not
//! interpreted.

use std::io::BufRead;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use tuikuan_kernel::{Currency, Money, Result};

use super::text::{decode_as, encode_as, read_line, TextEncoding, UTF8_BOM};
use super::wechat::china;
use super::{
    check_reference, line_error, BankRecord, BankRecordStatus, ClearingFileParser, FileStats,
    RecordKind, RecordSink, MAX_BANK_REF_CHARS,
};

/// The format name of UnionPay ZM files.
pub const UNIONPAY_FORMAT: &str = "unionpay-zm";

/// How a field is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZmKind {
    /// Digits only, never blank.
    Digits,
    /// A direction letter (`C` / `D`) and digits, in fen; or blank.
    Signed,
    /// Letters and digits, or blank.
    Code,
    /// Any text (GBK), left-aligned.
    Text,
}

/// One field of a ZM line: its name in the specification, the acp SDK's key, its width in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ZmField {
    pub name: &'static str,
    pub key: &'static str,
    pub width: usize,
    pub kind: ZmKind,
}

const fn f(name: &'static str, key: &'static str, width: usize, kind: ZmKind) -> ZmField {
    ZmField {
        name,
        key,
        width,
        kind,
    }
}

use ZmKind::{Code, Digits, Signed, Text};

/// The 42 fields of a ZM line, in order.
pub const ZM_FIELDS: [ZmField; 42] = [
    f("交易代码", "tradeCode", 3, Code),
    f("代理机构标识码", "acqInsCode", 11, Digits),
    f("发送机构标识码", "sendInsCode", 11, Digits),
    f("系统跟踪号", "traceNo", 6, Digits),
    f("交易传输时间", "txnTime", 10, Digits),
    f("帐号", "accNo", 19, Text),
    f("交易金额", "txnAmt", 12, Digits),
    f("商户类别", "merCatCode", 4, Code),
    f("终端类型", "termType", 2, Code),
    f("查询流水号", "queryId", 21, Code),
    f("支付方式（旧）", "oldPayType", 2, Code),
    f("商户订单号", "orderId", 32, Text),
    f("支付卡类型", "payCardType", 2, Code),
    f("原始交易的系统跟踪号", "origTraceNo", 6, Code),
    f("原始交易日期时间", "origTxnTime", 10, Code),
    f("商户手续费", "merFee", 13, Signed),
    f("结算金额", "settleAmt", 13, Signed),
    f("支付方式", "payType", 4, Code),
    f("集团商户代码", "groupMerId", 15, Code),
    f("交易类型", "txnType", 2, Digits),
    f("交易子类", "txnSubType", 2, Code),
    f("业务类型", "bizType", 6, Code),
    f("帐号类型", "accType", 2, Code),
    f("账单类型", "billType", 4, Code),
    f("账单号码", "billNo", 32, Text),
    f("交互方式", "interactMode", 1, Code),
    f("原交易查询流水号", "origQryId", 21, Code),
    f("商户代码", "merId", 15, Code),
    f("分账入账方式", "accSplitMode", 1, Code),
    f("二级商户代码", "subMerId", 15, Code),
    f("二级商户简称", "subMerAbbr", 32, Text),
    f("二级商户分账入账金额", "subMerAmt", 13, Signed),
    f("清算净额", "settleNetAmt", 13, Signed),
    f("终端号", "termId", 8, Text),
    f("商户自定义域", "merReserved", 32, Text),
    f("优惠金额", "discountAmt", 13, Signed),
    f("发票金额", "invoiceAmt", 13, Signed),
    f("分期付款附加手续费", "instalFee", 12, Signed),
    f("分期付款期数", "instalNum", 2, Code),
    f("交易介质", "tradeMedia", 1, Code),
    f("原始交易订单号", "origOrderId", 32, Text),
    f("保留使用", "reserved", 98, Text),
];

/// The bytes of a line: the widths plus one separator between fields (607).
pub const ZM_LINE_BYTES: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < ZM_FIELDS.len() {
        total += ZM_FIELDS[i].width;
        i += 1;
    }
    total + ZM_FIELDS.len() - 1
};

/// The shortest line accepted: the last field's trailing spaces may be cut.
const MIN_LINE_BYTES: usize = ZM_LINE_BYTES - ZM_FIELDS[ZM_FIELDS.len() - 1].width;

/// Field positions used below (0-based).
const TXN_TIME: usize = 4;
const TXN_AMT: usize = 6;
const QUERY_ID: usize = 9;
const ORDER_ID: usize = 11;
const TXN_TYPE: usize = 19;
const ORIG_ORDER_ID: usize = 40;

/// 交易类型 of refunds: 退货 (04) and 消费撤销 (31).
pub const REFUND_TXN_TYPES: [(&str, &str); 2] = [("04", "退货"), ("31", "消费撤销")];

/// The UnionPay ZM parser. The business date gives 交易传输时间 its year.
#[derive(Debug, Clone, Copy)]
pub struct UnionpayZmParser {
    /// `Detect` reads GBK (as UnionPay sends it) unless the file starts with a UTF-8 byte-order
    /// mark; widths are counted in bytes of the encoding.
    pub encoding: TextEncoding,
    pub business_date: NaiveDate,
}

/// Byte offsets (start, end) of each field.
fn spans() -> [(usize, usize); 42] {
    let mut out = [(0, 0); 42];
    let mut at = 0;
    for (i, field) in ZM_FIELDS.iter().enumerate() {
        out[i] = (at, at + field.width);
        at += field.width + 1;
    }
    out
}

/// One line split into its decoded, right-trimmed fields.
struct ZmLine {
    fields: Vec<String>,
}

fn split_line(
    buf: &mut Vec<u8>,
    spans: &[(usize, usize); 42],
    encoding: TextEncoding,
    line: usize,
) -> Result<ZmLine> {
    if buf.is_empty() {
        return Err(line_error(
            line,
            "row",
            "blank line (a ZM file has one transaction on every line)",
        ));
    }
    if buf.len() > ZM_LINE_BYTES || buf.len() < MIN_LINE_BYTES {
        return Err(line_error(
            line,
            "row",
            format!("expected {ZM_LINE_BYTES} bytes, found {}", buf.len()),
        ));
    }
    buf.resize(ZM_LINE_BYTES, b' ');
    let mut fields = Vec::with_capacity(ZM_FIELDS.len());
    for (i, (start, end)) in spans.iter().enumerate() {
        let spec = &ZM_FIELDS[i];
        if *end < ZM_LINE_BYTES && buf[*end] != b' ' {
            return Err(line_error(
                line,
                ZM_FIELDS[i + 1].name,
                format!("expected a single space before it at byte {}", end + 1),
            ));
        }
        let raw = &buf[*start..*end];
        let text = decode_as(raw, encoding).ok_or_else(|| {
            line_error(
                line,
                spec.name,
                format!("is not valid {} text", encoding.as_str()),
            )
        })?;
        if text.chars().any(char::is_control) {
            return Err(line_error(line, spec.name, "contains control characters"));
        }
        let value = text.trim_end();
        check_kind(spec, value, line)?;
        fields.push(value.to_string());
    }
    Ok(ZmLine { fields })
}

fn check_kind(spec: &ZmField, value: &str, line: usize) -> Result<()> {
    let ok = match spec.kind {
        ZmKind::Digits => value.len() == spec.width && value.bytes().all(|b| b.is_ascii_digit()),
        ZmKind::Signed => {
            value.is_empty()
                || (value.len() == spec.width
                    && matches!(value.as_bytes()[0], b'C' | b'D')
                    && value[1..].bytes().all(|b| b.is_ascii_digit()))
        }
        ZmKind::Code => value.bytes().all(|b| b.is_ascii_alphanumeric()),
        ZmKind::Text => true,
    };
    if ok {
        return Ok(());
    }
    let expected = match spec.kind {
        ZmKind::Digits => format!("{} digits", spec.width),
        ZmKind::Signed => format!(
            "blank, or C or D followed by {} digits in fen",
            spec.width - 1
        ),
        ZmKind::Code => "letters and digits".to_string(),
        ZmKind::Text => String::new(),
    };
    Err(line_error(
        line,
        spec.name,
        format!("{value:?} must be {expected}"),
    ))
}

/// A signed ZM amount (`C000000001250` → +1250, `D…` → −…) in fen; `None` when blank.
pub fn signed_fen(value: &str) -> Option<i64> {
    let (sign, digits) = match value.as_bytes().first()? {
        b'C' => (1, &value[1..]),
        b'D' => (-1, &value[1..]),
        _ => return None,
    };
    digits.parse::<i64>().ok().map(|v| sign * v)
}

impl ClearingFileParser for UnionpayZmParser {
    fn format(&self) -> &'static str {
        UNIONPAY_FORMAT
    }

    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats> {
        let spans = spans();
        let mut buf = Vec::with_capacity(ZM_LINE_BYTES + 2);
        let mut line = 0usize;
        let mut encoding = self.encoding;
        let mut stats = FileStats {
            layout: format!(
                "UnionPay ZM ({} fields, {ZM_LINE_BYTES} bytes a line)",
                ZM_FIELDS.len()
            ),
            ..FileStats::default()
        };
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            if line == 1 {
                if buf.starts_with(UTF8_BOM) {
                    if encoding == TextEncoding::Gbk {
                        return Err(line_error(
                            1,
                            "encoding",
                            "the file starts with a UTF-8 byte-order mark but was declared gbk",
                        ));
                    }
                    encoding = TextEncoding::Utf8;
                    buf.drain(..UTF8_BOM.len());
                }
                if encoding == TextEncoding::Detect {
                    encoding = TextEncoding::Gbk;
                }
            }
            let zm = split_line(&mut buf, &spans, encoding, line)?;
            stats.add_row(line)?;
            let record = self.record(&zm, line)?;
            stats.count(&record);
            sink(record)?;
        }
        stats.encoding = match encoding {
            TextEncoding::Detect => "gbk",
            other => other.as_str(),
        };
        stats.summary = vec![format!(
            "{} lines of {ZM_LINE_BYTES} bytes (a ZM file has no summary line)",
            stats.rows
        )];
        Ok(stats)
    }
}

impl UnionpayZmParser {
    fn record(&self, zm: &ZmLine, line: usize) -> Result<BankRecord> {
        let field = |i: usize| zm.fields[i].as_str();
        let refund = REFUND_TXN_TYPES.iter().any(|(c, _)| *c == field(TXN_TYPE));
        let fen: i64 = field(TXN_AMT)
            .parse()
            .map_err(|_| line_error(line, ZM_FIELDS[TXN_AMT].name, "is not a number"))?;
        let amount = Money::from_minor(fen, Currency::Cny);
        let completed_at = trans_instant(field(TXN_TIME), self.business_date).ok_or_else(|| {
            line_error(
                line,
                ZM_FIELDS[TXN_TIME].name,
                format!("{:?} is not MMDDhhmmss", field(TXN_TIME)),
            )
        })?;
        let query_id = field(QUERY_ID);
        if query_id.is_empty() {
            return Err(line_error(line, ZM_FIELDS[QUERY_ID].name, "is required"));
        }
        let order_id = field(ORDER_ID);
        let original = field(ORIG_ORDER_ID);
        if refund {
            check_reference(order_id).map_err(|p| line_error(line, ZM_FIELDS[ORDER_ID].name, p))?;
            if !original.is_empty() {
                check_reference(original)
                    .map_err(|p| line_error(line, ZM_FIELDS[ORIG_ORDER_ID].name, p))?;
            }
            if fen == 0 {
                return Err(line_error(
                    line,
                    ZM_FIELDS[TXN_AMT].name,
                    "must be greater than zero",
                ));
            }
        }
        Ok(BankRecord {
            kind: if refund {
                RecordKind::Refund
            } else {
                RecordKind::Payment
            },
            id: order_id.chars().take(MAX_BANK_REF_CHARS).collect(),
            bank_ref: query_id.to_string(),
            original_ref: original.to_string(),
            channel: String::new(),
            amount,
            status: BankRecordStatus::Success,
            completed_at,
            reason: String::new(),
            line,
        })
    }
}

fn trans_instant(mmddhhmmss: &str, business: NaiveDate) -> Option<chrono::DateTime<Utc>> {
    let month: u32 = mmddhhmmss.get(0..2)?.parse().ok()?;
    let day: u32 = mmddhhmmss.get(2..4)?.parse().ok()?;
    let time = NaiveTime::parse_from_str(mmddhhmmss.get(4..10)?, "%H%M%S").ok()?;
    let year = if month > business.month() {
        business.year() - 1
    } else {
        business.year()
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    china()
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// The values of one line to write, by field position (blank when absent).
fn line_values(r: &BankRecord, trace_no: usize) -> [String; 42] {
    let refund = r.kind != RecordKind::Payment;
    let fen = r.amount.to_minor().unsigned_abs();
    let when = r.completed_at.with_timezone(&china());
    let mut v: [String; 42] = std::array::from_fn(|_| String::new());
    v[1] = "00048020000".into();
    v[2] = "00048020000".into();
    v[3] = format!("{:06}", trace_no % 1_000_000);
    v[TXN_TIME] = when.format("%m%d%H%M%S").to_string();
    v[5] = "6222020200001234567".into();
    v[TXN_AMT] = format!("{fen:012}");
    v[7] = "5311".into();
    v[8] = "07".into();
    v[QUERY_ID] = r.bank_ref.clone();
    v[ORDER_ID] = r.id.clone();
    v[12] = "01".into();
    let (fee_dir, settle_dir) = if refund { ('C', 'D') } else { ('D', 'C') };
    v[15] = format!("{fee_dir}{:012}", 0);
    v[16] = format!("{settle_dir}{fen:012}");
    v[TXN_TYPE] = if refund { "04" } else { "01" }.into();
    v[20] = if refund { "00" } else { "01" }.into();
    v[21] = "000201".into();
    v[22] = "01".into();
    v[27] = "898110248990001".into();
    v[30] = "tuikuan退款平台".into();
    v[32] = format!("{settle_dir}{fen:012}");
    if refund {
        v[ORIG_ORDER_ID] = r.original_ref.clone();
    }
    v
}

/// Writes a ZM file from records, in `encoding` (`Detect` means GBK). Only successful records
/// are written (a ZM file lists cleared transactions); values longer than their field are cut at a
/// character boundary. For fixtures, the benchmark and the bank simulator.
pub fn write_zm(records: &[BankRecord], encoding: TextEncoding) -> Vec<u8> {
    let encoding = match encoding {
        TextEncoding::Detect => TextEncoding::Gbk,
        other => other,
    };
    let mut out = Vec::with_capacity(records.len() * (ZM_LINE_BYTES + 1));
    let cleared = records
        .iter()
        .filter(|r| r.status == BankRecordStatus::Success);
    for (n, r) in cleared.enumerate() {
        let values = line_values(r, n + 1);
        for (i, spec) in ZM_FIELDS.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            let mut bytes = Vec::with_capacity(spec.width);
            for c in values[i].chars() {
                let mut tmp = [0u8; 4];
                let encoded = encode_as(c.encode_utf8(&mut tmp), encoding);
                if bytes.len() + encoded.len() > spec.width {
                    break;
                }
                bytes.extend_from_slice(&encoded);
            }
            if spec.kind == ZmKind::Digits && bytes.len() < spec.width {
                let mut padded = vec![b'0'; spec.width - bytes.len()];
                padded.extend_from_slice(&bytes);
                bytes = padded;
            }
            bytes.resize(spec.width, b' ');
            out.extend_from_slice(&bytes);
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_field_table() {
        let widths: Vec<usize> = ZM_FIELDS.iter().map(|f| f.width).collect();
        // UnionPay acp SDK, parseZMFile's lengthArray.
        assert_eq!(
            widths,
            vec![
                3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4,
                32, 1, 21, 15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98
            ]
        );
        assert_eq!(ZM_LINE_BYTES, 607);
        assert_eq!(ZM_FIELDS[ORDER_ID].name, "商户订单号");
        assert_eq!(ZM_FIELDS[ORIG_ORDER_ID].name, "原始交易订单号");
        assert_eq!(ZM_FIELDS[TXN_TYPE].name, "交易类型");
    }

    #[test]
    fn signed_amounts() {
        assert_eq!(signed_fen("C000000001250"), Some(1250));
        assert_eq!(signed_fen("D000000000006"), Some(-6));
        assert_eq!(signed_fen(""), None);
        assert_eq!(signed_fen("X000000000001"), None);
    }
}
