//! The WeChat Pay trade bill (`downloadbill`, bill type `ALL` or `REFUND`).
//!
//! Layout, as WeChat Pay publishes it:
//! 1. a detail header line: column names separated by commas, no backticks
//!    (`交易时间,公众账号ID,商户号,…`);
//! 2. detail rows: every value prefixed with a backtick, values separated by commas
//!    (`` `2026-11-25 10:00:00,`wx123,… ``). Values may themselves contain commas (商品名称,
//!    商户数据包), so a row is split on the backtick-comma boundary (`` ,` ``), never on a bare comma;
//! 3. a summary header line (`总交易单数,应结订单总金额,退款总金额,…`), no backticks;
//! 4. one summary row, backtick-prefixed like the detail rows.
//!
//! Columns are read by header name, so both layouts WeChat has used are accepted: the legacy
//! 24-column one (交易时间, 公众账号ID, 商户号, 特约商户号 or 子商户号, 设备号, 微信订单号, 商户订单号,
//! 用户标识, 交易类型, 交易状态, 付款银行, 货币种类, 应结订单金额, 代金券金额, 微信退款单号, 商户退款单号,
//! 退款金额, 充值券退款金额, 退款类型, 退款状态, 商品名称, 商户数据包, 手续费, 费率) and the newer 27-column
//! one, which adds 订单金额, 申请退款金额 and 费率备注 (29-column variants add more at the end).
//!
//! Refund rows are the rows with a 商户退款单号 (other rows, payments, are counted and skipped). A
//! refund row becomes a [`BankRecord`] with `id` = 商户退款单号 (the bank reference id the platform
//! sent), `bank_ref` = 微信退款单号, `amount` = 退款金额 (yuan), and a status from 退款状态:
//! `SUCCESS` → success; `REFUNDCLOSE`, `FAIL` and `CHANGE` (退款异常: the money could not reach the
//! user) → failed; `PROCESSING` → still processing (not final). 交易时间 is China time (UTC+8).
//!
//! The summary row is checked against the detail rows: 总交易单数 must equal the number of detail
//! rows, and each total it carries must equal the sum of its column: 应结订单总金额 (legacy:
//! 总交易额) = Σ 应结订单金额, 退款总金额 (legacy: 总退款金额) = Σ 退款金额, 充值券退款总金额 = Σ 充值券退款金额,
//! 手续费总金额 = Σ 手续费, 订单总金额 = Σ 订单金额, 申请退款总金额 = Σ 申请退款金额. Unknown summary columns
//! are ignored. A mismatch rejects the file.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::{NaiveDateTime, TimeZone, Utc};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Money, Result};

use super::{
    check_bank_ref, line_error, read_line, strip_field, BankRecord, BankRecordStatus,
    ClearingFileParser, FileStats, RecordKind, RecordSink, MAX_FILE_ROWS,
};

/// The format name of WeChat Pay trade bills.
pub const WECHAT_FORMAT: &str = "wechat-bill";

/// The detail columns of the legacy 24-column layout, in order.
pub const WECHAT_LEGACY_COLUMNS: [&str; 24] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
];

/// The columns the newer 27-column layout appends to the legacy ones.
pub const WECHAT_NEW_EXTRA_COLUMNS: [&str; 3] = ["订单金额", "申请退款金额", "费率备注"];

/// The summary columns of the newer layout.
pub const WECHAT_SUMMARY_COLUMNS: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];

/// The summary columns of the legacy layout.
pub const WECHAT_LEGACY_SUMMARY_COLUMNS: [&str; 5] = [
    "总交易单数",
    "总交易额",
    "总退款金额",
    "总企业红包退款金额",
    "手续费总金额",
];

const REQUIRED: [&str; 7] = [
    "交易时间",
    "货币种类",
    "应结订单金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "退款状态",
];

/// Summed detail columns, by the summary names that carry their totals.
const SUMMED: [(&str, &[&str]); 6] = [
    ("应结订单金额", &["应结订单总金额", "总交易额"]),
    ("退款金额", &["退款总金额", "总退款金额"]),
    (
        "充值券退款金额",
        &["充值券退款总金额", "总企业红包退款金额"],
    ),
    ("手续费", &["手续费总金额"]),
    ("订单金额", &["订单总金额"]),
    ("申请退款金额", &["申请退款总金额"]),
];

/// The WeChat Pay trade bill parser.
#[derive(Debug, Clone, Copy, Default)]
pub struct WechatBillParser;

struct Columns {
    count: usize,
    time: usize,
    currency: usize,
    wx_refund_no: usize,
    refund_no: usize,
    refund_amount: usize,
    refund_status: usize,
    /// (detail column index, summary names) of the columns whose sums the summary carries.
    summed: Vec<(usize, &'static str, &'static [&'static str])>,
}

fn header_columns(names: &[&str], line: usize) -> Result<Columns> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(line_error(
                line,
                "header",
                format!("column {} has no name", i + 1),
            ));
        }
        if index.insert(name, i).is_some() {
            return Err(line_error(
                line,
                "header",
                format!("column {name} appears twice"),
            ));
        }
    }
    let find = |name: &str| {
        index
            .get(name)
            .copied()
            .ok_or_else(|| line_error(line, "header", format!("missing column {name}")))
    };
    for name in REQUIRED {
        find(name)?;
    }
    let summed = SUMMED
        .iter()
        .filter_map(|(column, totals)| index.get(column).map(|i| (*i, *column, *totals)))
        .collect();
    Ok(Columns {
        count: names.len(),
        time: find("交易时间")?,
        currency: find("货币种类")?,
        wx_refund_no: find("微信退款单号")?,
        refund_no: find("商户退款单号")?,
        refund_amount: find("退款金额")?,
        refund_status: find("退款状态")?,
        summed,
    })
}

/// Splits a backtick row (`` `a,`b,c`d ``) into its values (`a`, `b,c`, `d`).
fn split_backtick_row<'a>(text: &'a str, line: usize, out: &mut Vec<&'a str>) -> Result<()> {
    out.clear();
    let Some(rest) = text.strip_prefix('`') else {
        return Err(line_error(line, "row", "values must start with a backtick"));
    };
    out.extend(rest.split(",`"));
    Ok(())
}

/// Yuan with at most two decimals, optionally signed, into fen.
fn parse_yuan(raw: &str) -> std::result::Result<i64, String> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 12 || !ok(whole) || !ok(fraction) || fraction.len() > 2 {
        return Err(format!(
            "{raw:?} is not an amount in yuan (at most 2 decimals)"
        ));
    }
    if digits.contains('.') && fraction.is_empty() {
        return Err(format!(
            "{raw:?} is not an amount in yuan (at most 2 decimals)"
        ));
    }
    let mut fen: i64 = whole.parse::<i64>().map_err(|e| e.to_string())? * 100;
    let mut f = fraction.to_string();
    while f.len() < 2 {
        f.push('0');
    }
    fen += f.parse::<i64>().map_err(|e| e.to_string())?;
    Ok(if negative { -fen } else { fen })
}

/// Whether a 商户退款单号 value means "no refund" (payment rows carry an empty value or `0`).
fn no_refund(value: &str) -> bool {
    value.is_empty() || value == "0"
}

enum Stage {
    Header,
    Detail,
    Summary {
        names: Vec<String>,
        header_line: usize,
    },
    Done,
}

impl ClearingFileParser for WechatBillParser {
    fn format(&self) -> &'static str {
        WECHAT_FORMAT
    }

    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats> {
        let mut buf = Vec::with_capacity(512);
        let mut line = 0usize;
        let mut stage = Stage::Header;
        let mut columns: Option<Columns> = None;
        let mut sums: Vec<i64> = Vec::new();
        let mut stats = FileStats::default();
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            let raw = if line == 1 {
                buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
            } else {
                &buf[..]
            };
            if raw.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(raw)
                .map_err(|_| line_error(line, "row", "is not valid UTF-8"))?;
            match &mut stage {
                Stage::Header => {
                    let names: Vec<&str> = text.split(',').map(str::trim).collect();
                    let cols = header_columns(&names, line)?;
                    sums = vec![0; cols.summed.len()];
                    columns = Some(cols);
                    stage = Stage::Detail;
                }
                Stage::Detail if !text.starts_with('`') => {
                    stage = Stage::Summary {
                        names: text.split(',').map(|s| s.trim().to_string()).collect(),
                        header_line: line,
                    };
                }
                Stage::Detail => {
                    let Some(cols) = columns.as_ref() else {
                        return Err(line_error(line, "header", "missing"));
                    };
                    if stats.rows >= MAX_FILE_ROWS {
                        return Err(line_error(
                            line,
                            "row",
                            format!("more than {MAX_FILE_ROWS} rows"),
                        ));
                    }
                    let mut values: Vec<&str> = Vec::with_capacity(cols.count);
                    split_backtick_row(text, line, &mut values)?;
                    if values.len() != cols.count {
                        return Err(line_error(
                            line,
                            "row",
                            format!("expected {} values, found {}", cols.count, values.len()),
                        ));
                    }
                    stats.rows += 1;
                    for (k, (i, name, _)) in cols.summed.iter().enumerate() {
                        let v = values[*i];
                        // The newer layout leaves some amounts empty on rows they do not apply to.
                        let fen = if v.is_empty() {
                            0
                        } else {
                            parse_yuan(v).map_err(|p| line_error(line, name, p))?
                        };
                        sums[k] = sums[k].saturating_add(fen);
                    }
                    let refund_no = values[cols.refund_no];
                    if no_refund(refund_no) {
                        stats.skipped += 1;
                        continue;
                    }
                    stats.records += 1;
                    sink(refund_record(&values, cols, line)?)?;
                }
                Stage::Summary { names, header_line } => {
                    let Some(cols) = columns.as_ref() else {
                        return Err(line_error(line, "header", "missing"));
                    };
                    let mut values: Vec<&str> = Vec::new();
                    split_backtick_row(text, line, &mut values)?;
                    check_summary(names, *header_line, &values, line, cols, &sums, stats.rows)?;
                    stage = Stage::Done;
                }
                Stage::Done => {
                    return Err(line_error(line, "row", "text after the summary row"));
                }
            }
        }
        match stage {
            Stage::Done => Ok(stats),
            Stage::Header => Err(line_error(1, "header", "missing (the file is empty)")),
            Stage::Detail => Err(line_error(line + 1, "summary", "missing summary header")),
            Stage::Summary { .. } => Err(line_error(line + 1, "summary", "missing summary row")),
        }
    }
}

fn refund_record(values: &[&str], cols: &Columns, line: usize) -> Result<BankRecord> {
    let refund_no = values[cols.refund_no];
    validate_external_id(refund_no, "商户退款单号")
        .map_err(|e| line_error(line, "商户退款单号", strip_field(&e, "商户退款单号")))?;
    let wx_no = values[cols.wx_refund_no];
    check_bank_ref(wx_no).map_err(|p| line_error(line, "微信退款单号", p))?;
    let currency_raw = values[cols.currency];
    let currency = Currency::parse(currency_raw, "货币种类")
        .map_err(|e| line_error(line, "货币种类", strip_field(&e, "货币种类")))?;
    if currency.decimals() != 2 {
        return Err(line_error(
            line,
            "货币种类",
            format!("{currency_raw} is not billed in yuan-like units"),
        ));
    }
    let fen =
        parse_yuan(values[cols.refund_amount]).map_err(|p| line_error(line, "退款金额", p))?;
    if fen <= 0 {
        return Err(line_error(line, "退款金额", "must be greater than zero"));
    }
    let amount = Money::from_minor(fen, currency);
    let status_raw = values[cols.refund_status];
    let (status, reason) = match status_raw {
        "SUCCESS" => (BankRecordStatus::Success, String::new()),
        "REFUNDCLOSE" => (
            BankRecordStatus::Failed,
            "REFUNDCLOSE: refund closed".to_string(),
        ),
        "FAIL" => (BankRecordStatus::Failed, "FAIL: refund failed".to_string()),
        "CHANGE" => (
            BankRecordStatus::Failed,
            "CHANGE: refund abnormal (退款异常), the money did not reach the user".to_string(),
        ),
        "PROCESSING" => (BankRecordStatus::Processing, String::new()),
        other => {
            return Err(line_error(
                line,
                "退款状态",
                format!(
                    "expected SUCCESS, REFUNDCLOSE, FAIL, CHANGE or PROCESSING, found {other:?}"
                ),
            ))
        }
    };
    let time_raw = values[cols.time];
    let naive = NaiveDateTime::parse_from_str(time_raw, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        line_error(
            line,
            "交易时间",
            format!("{time_raw:?} is not YYYY-MM-DD hh:mm:ss"),
        )
    })?;
    let completed_at = china()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| line_error(line, "交易时间", "is not a valid instant"))?;
    Ok(BankRecord {
        kind: RecordKind::Refund,
        id: refund_no.to_string(),
        bank_ref: wx_no.to_string(),
        channel: String::new(),
        amount,
        status,
        completed_at,
        reason,
        line,
    })
}

/// China Standard Time (UTC+8), the time zone of every bank file here.
pub(crate) fn china() -> chrono::FixedOffset {
    #[allow(clippy::expect_used)]
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

fn check_summary(
    names: &[String],
    header_line: usize,
    values: &[&str],
    line: usize,
    cols: &Columns,
    sums: &[i64],
    rows: usize,
) -> Result<()> {
    if !names.iter().any(|n| n == "总交易单数") {
        return Err(line_error(
            header_line,
            "summary",
            "expected a summary header with 总交易单数 (or a detail row starting with a backtick)",
        ));
    }
    if values.len() != names.len() {
        return Err(line_error(
            line,
            "summary",
            format!("expected {} values, found {}", names.len(), values.len()),
        ));
    }
    for (name, value) in names.iter().zip(values) {
        if name == "总交易单数" {
            let count: usize = value
                .parse()
                .map_err(|_| line_error(line, name, format!("{value:?} is not a count")))?;
            if count != rows {
                return Err(line_error(
                    line,
                    name,
                    format!("says {count} but the bill has {rows} detail rows"),
                ));
            }
            continue;
        }
        let Some(k) = cols
            .summed
            .iter()
            .position(|(_, _, totals)| totals.contains(&name.as_str()))
        else {
            continue;
        };
        let total = parse_yuan(value).map_err(|p| line_error(line, name, p))?;
        if total != sums[k] {
            return Err(line_error(
                line,
                name,
                format!(
                    "says {} but the detail rows ({}) add up to {}",
                    fen_str(total),
                    cols.summed[k].1,
                    fen_str(sums[k])
                ),
            ));
        }
    }
    Ok(())
}

fn fen_str(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_amounts() {
        assert_eq!(parse_yuan("12.50"), Ok(1250));
        assert_eq!(parse_yuan("0.01"), Ok(1));
        assert_eq!(parse_yuan("3"), Ok(300));
        assert_eq!(parse_yuan("-0.06"), Ok(-6));
        for bad in ["", "1.234", "1.", ".5", "1e2", "a", "--1"] {
            assert!(parse_yuan(bad).is_err(), "{bad}");
        }
        assert_eq!(fen_str(-6), "-0.06");
        assert_eq!(fen_str(123456), "1234.56");
    }

    #[test]
    fn backtick_rows_keep_commas_inside_values() {
        let mut out = Vec::new();
        split_backtick_row("`a,`Apple, red`,`c", 2, &mut out).unwrap();
        assert_eq!(out, vec!["a", "Apple, red`", "c"]);
        split_backtick_row("`a,`b,c,`", 2, &mut out).unwrap();
        assert_eq!(out, vec!["a", "b,c", ""]);
        assert!(split_backtick_row("a,`b", 3, &mut out).is_err());
    }
}
