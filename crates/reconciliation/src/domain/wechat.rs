//! The WeChat Pay trade bill (交易账单): `downloadbill` (API v2) and `bill/tradebill` (API v3) with
//! bill type `ALL` or `REFUND`, in every layout WeChat Pay has used.
//!
//! A bill is text, one record per line:
//! 1. a detail header: column names separated by commas (`交易时间,公众账号ID,商户号,…`);
//! 2. detail rows: every value prefixed with a backtick (`` `2026-11-25 10:00:00,`wx…,… ``), so
//!    that Excel keeps long numbers as text. Values may contain commas (商品名称, 商户数据包), so a
//!    row is split on the backtick boundary (`` ,` ``), never on a bare comma;
//! 3. a summary header (`总交易单数,应结订单总金额,…`) and one summary row, backtick-prefixed.
//!
//! Columns are read by name, never by position. Four layouts are recognised from the header:
//!
//! | layout | detail columns | amount columns | summary |
//! |---|---|---|---|
//! | current ALL | 27 | 应结订单金额, 代金券金额, 退款金额, 充值券退款金额, 手续费, 订单金额, 申请退款金额 | 总交易单数, 应结订单总金额, 退款总金额, 充值券退款总金额, 手续费总金额, 订单总金额, 申请退款总金额 |
//! | current REFUND | 29 (adds 退款申请时间, 退款成功时间) | as above | as above |
//! | legacy ALL | 24 | 总金额, 企业红包金额, 退款金额, 企业红包退款金额, 手续费 | 总交易单数, 总交易额, 总退款金额, 总企业红包退款金额, 手续费总金额 |
//! | legacy REFUND | 26 (adds 退款申请时间, 退款成功时间) | as above | as above |
//!
//! A `SUCCESS` bill (payments only, no refund columns) is refused: it cannot confirm refunds.
//! The text is UTF-8 (a byte-order mark is allowed) or GBK / GB18030, declared or detected from
//! the header. Money columns have at most two decimals; 手续费 (and 手续费总金额) up to six, as
//! bills print it (`0.00600`).
//!
//! Refund rows are the rows with a 商户退款单号 (payment rows carry `0` or nothing there). A refund
//! row becomes a refund [`BankRecord`]: `id` = 商户退款单号 (the out_refund_no the platform sent),
//! `bank_ref` = 微信退款单号, `original_ref` = 商户订单号, amount = 退款金额, completed at
//! 退款成功时间 (refund bills) else 交易时间 (China time), status from 退款状态: `SUCCESS` →
//! success; `REFUNDCLOSE`, `FAIL`, `CHANGE` (退款异常, reason `BANK_ABNORMAL`: the refund center
//! hands it to people) → failed; `PROCESSING` → not final. Other
//! rows become payment records (`id` = 商户订单号, `bank_ref` = 微信订单号).
//!
//! The summary row is checked against the detail rows: 总交易单数 = the number of detail rows, and
//! each money total = the sum of its detail column (table above; 总代金券或立减优惠退款金额, an older
//! name, is the legacy 企业红包退款金额 total). A summary column the parser does not know is
//! ignored; a known total whose detail column is missing, or any difference, refuses the file.
//! The oldest legacy bills name the 企业红包 columns 代金券或立减优惠金额 and 代金券或立减优惠退款金额;
//! they are read as the same columns.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use tuikuan_kernel::{Currency, Money, Result};

use super::text::{decimal_to_minor, parse_decimal, read_line, LineDecoder, TextEncoding};
use super::{
    check_reference, check_value_count, line_error, BankRecord, BankRecordStatus,
    ClearingFileParser, FileStats, RecordKind, RecordSink,
};

/// The format name of WeChat Pay trade bills.
pub const WECHAT_FORMAT: &str = "wechat-bill";

/// A WeChat Pay bill layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WechatLayout {
    CurrentAll,
    CurrentRefund,
    LegacyAll,
    LegacyRefund,
}

impl WechatLayout {
    pub const ALL: [WechatLayout; 4] = [
        WechatLayout::CurrentAll,
        WechatLayout::CurrentRefund,
        WechatLayout::LegacyAll,
        WechatLayout::LegacyRefund,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WechatLayout::CurrentAll => "ALL bill, current layout",
            WechatLayout::CurrentRefund => "REFUND bill, current layout",
            WechatLayout::LegacyAll => "ALL bill, legacy layout",
            WechatLayout::LegacyRefund => "REFUND bill, legacy layout",
        }
    }

    fn legacy(self) -> bool {
        matches!(self, WechatLayout::LegacyAll | WechatLayout::LegacyRefund)
    }

    fn refund_bill(self) -> bool {
        matches!(
            self,
            WechatLayout::CurrentRefund | WechatLayout::LegacyRefund
        )
    }

    /// The detail columns, in WeChat Pay's order.
    pub fn columns(self) -> Vec<&'static str> {
        let (merchant, settle, coupon, recharge) = if self.legacy() {
            ("子商户号", "总金额", "企业红包金额", "企业红包退款金额")
        } else {
            ("特约商户号", "应结订单金额", "代金券金额", "充值券退款金额")
        };
        let mut c = vec![
            "交易时间",
            "公众账号ID",
            "商户号",
            merchant,
            "设备号",
            "微信订单号",
            "商户订单号",
            "用户标识",
            "交易类型",
            "交易状态",
            "付款银行",
            "货币种类",
            settle,
            coupon,
        ];
        if self.refund_bill() {
            c.extend(["退款申请时间", "退款成功时间"]);
        }
        c.extend([
            "微信退款单号",
            "商户退款单号",
            "退款金额",
            recharge,
            "退款类型",
            "退款状态",
            "商品名称",
            "商户数据包",
            "手续费",
            "费率",
        ]);
        if !self.legacy() {
            c.extend(["订单金额", "申请退款金额", "费率备注"]);
        }
        c
    }

    /// The summary columns, in WeChat Pay's order.
    pub fn summary_columns(self) -> Vec<&'static str> {
        if self.legacy() {
            vec![
                "总交易单数",
                "总交易额",
                "总退款金额",
                "总企业红包退款金额",
                "手续费总金额",
            ]
        } else {
            vec![
                "总交易单数",
                "应结订单总金额",
                "退款总金额",
                "充值券退款总金额",
                "手续费总金额",
                "订单总金额",
                "申请退款总金额",
            ]
        }
    }
}

/// A summed detail column: its name, its decimals and the summary names of its total.
struct SumSpec {
    column: &'static str,
    decimals: u32,
    totals: &'static [&'static str],
}

const SUMS: [SumSpec; 9] = [
    SumSpec {
        column: "应结订单金额",
        decimals: 2,
        totals: &["应结订单总金额"],
    },
    SumSpec {
        column: "总金额",
        decimals: 2,
        totals: &["总交易额"],
    },
    SumSpec {
        column: "代金券金额",
        decimals: 2,
        totals: &[],
    },
    SumSpec {
        column: "退款金额",
        decimals: 2,
        totals: &["退款总金额", "总退款金额"],
    },
    SumSpec {
        column: "充值券退款金额",
        decimals: 2,
        totals: &["充值券退款总金额"],
    },
    SumSpec {
        column: "企业红包退款金额",
        decimals: 2,
        totals: &["总企业红包退款金额", "总代金券或立减优惠退款金额"],
    },
    SumSpec {
        column: "手续费",
        decimals: 6,
        totals: &["手续费总金额"],
    },
    SumSpec {
        column: "订单金额",
        decimals: 2,
        totals: &["订单总金额"],
    },
    SumSpec {
        column: "申请退款金额",
        decimals: 2,
        totals: &["申请退款总金额"],
    },
];

/// The summary column holding the number of detail rows.
const COUNT_TOTAL: &str = "总交易单数";

/// The WeChat Pay trade bill parser.
#[derive(Debug, Clone, Copy, Default)]
pub struct WechatBillParser {
    pub encoding: TextEncoding,
}

struct Columns {
    layout: WechatLayout,
    count: usize,
    time: usize,
    refund_success_time: Option<usize>,
    currency: usize,
    transaction_id: usize,
    out_trade_no: usize,
    trade_state: usize,
    settle: usize,
    order_amount: Option<usize>,
    wx_refund_no: usize,
    refund_no: usize,
    refund_amount: usize,
    refund_status: usize,
    /// (detail column index, spec) of every amount column present.
    summed: Vec<(usize, &'static SumSpec)>,
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
        index.get(name).copied().ok_or_else(|| {
            line_error(
                line,
                "header",
                format!("missing column {name} (not a WeChat Pay ALL or REFUND bill)"),
            )
        })
    };
    if !index.contains_key("商户退款单号") && index.contains_key("交易时间") {
        return Err(line_error(
            line,
            "header",
            "this bill has no refund columns (a SUCCESS bill): download the ALL or REFUND bill",
        ));
    }
    let legacy = index.contains_key("总金额");
    let (settle_name, other) = if legacy {
        ("总金额", "应结订单金额")
    } else {
        ("应结订单金额", "总金额")
    };
    if index.contains_key(other) {
        return Err(line_error(
            line,
            "header",
            format!("has both {settle_name} and {other}: not one WeChat Pay layout"),
        ));
    }
    let refund_bill = index.contains_key("退款申请时间");
    let layout = match (legacy, refund_bill) {
        (false, false) => WechatLayout::CurrentAll,
        (false, true) => WechatLayout::CurrentRefund,
        (true, false) => WechatLayout::LegacyAll,
        (true, true) => WechatLayout::LegacyRefund,
    };
    for name in layout.columns() {
        find(name)?;
    }
    Ok(Columns {
        layout,
        count: names.len(),
        time: find("交易时间")?,
        refund_success_time: index.get("退款成功时间").copied(),
        currency: find("货币种类")?,
        transaction_id: find("微信订单号")?,
        out_trade_no: find("商户订单号")?,
        trade_state: find("交易状态")?,
        settle: find(settle_name)?,
        order_amount: index.get("订单金额").copied(),
        wx_refund_no: find("微信退款单号")?,
        refund_no: find("商户退款单号")?,
        refund_amount: find("退款金额")?,
        refund_status: find("退款状态")?,
        summed: SUMS
            .iter()
            .filter_map(|s| index.get(s.column).map(|i| (*i, s)))
            .collect(),
    })
}

/// Older names of legacy columns (the 2014 bill called the 企业红包 columns 代金券或立减优惠).
const ALIASES: [(&str, &str); 2] = [
    ("代金券或立减优惠金额", "企业红包金额"),
    ("代金券或立减优惠退款金额", "企业红包退款金额"),
];

fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(old, _)| *old == name)
        .map_or(name, |(_, new)| new)
}

/// Splits a backtick row (`` `a,`b,c`d ``) into its values (`a`, `b,c`d`).
fn split_backtick_row<'a>(text: &'a str, line: usize, out: &mut Vec<&'a str>) -> Result<()> {
    out.clear();
    let Some(rest) = text.strip_prefix('`') else {
        return Err(line_error(line, "row", "values must start with a backtick"));
    };
    out.extend(rest.split(",`"));
    Ok(())
}

/// Whether a 商户退款单号 value means "no refund" (payment rows carry `0` or nothing).
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
        let mut decoder = LineDecoder::new(self.encoding);
        let mut line = 0usize;
        let mut stage = Stage::Header;
        let mut columns: Option<Columns> = None;
        let mut sums: Vec<Decimal> = Vec::new();
        let mut stats = FileStats::default();
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            let text = decoder.decode(&buf, line)?;
            if text.trim().is_empty() {
                continue;
            }
            let mut values: Vec<&str> = Vec::new();
            match &mut stage {
                Stage::Header => {
                    let names: Vec<&str> = text.split(',').map(|n| canonical(n.trim())).collect();
                    let cols = header_columns(&names, line)?;
                    sums = vec![Decimal::ZERO; cols.summed.len()];
                    stats.layout =
                        format!("WeChat Pay {} ({} columns)", cols.layout.name(), cols.count);
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
                    split_backtick_row(&text, line, &mut values)?;
                    check_value_count(values.len(), cols.count, line)?;
                    stats.add_row(line)?;
                    for (k, (i, spec)) in cols.summed.iter().enumerate() {
                        let v = values[*i];
                        // Some layouts leave amounts empty on rows they do not apply to.
                        if !v.is_empty() {
                            let d = parse_decimal(v, spec.decimals)
                                .map_err(|p| line_error(line, spec.column, p))?;
                            sums[k] += d;
                        }
                    }
                    let record = if no_refund(values[cols.refund_no]) {
                        payment_record(&values, cols, line)?
                    } else {
                        refund_record(&values, cols, line)?
                    };
                    stats.count(&record);
                    sink(record)?;
                }
                Stage::Summary { names, header_line } => {
                    let Some(cols) = columns.as_ref() else {
                        return Err(line_error(line, "header", "missing"));
                    };
                    split_backtick_row(&text, line, &mut values)?;
                    stats.summary =
                        check_summary(names, *header_line, &values, line, cols, &sums, stats.rows)?;
                    stage = Stage::Done;
                }
                Stage::Done => {
                    return Err(line_error(line, "row", "text after the summary row"));
                }
            }
        }
        stats.encoding = decoder.name();
        match stage {
            Stage::Done => Ok(stats),
            Stage::Header => Err(line_error(1, "header", "missing (the file is empty)")),
            Stage::Detail => Err(line_error(
                line + 1,
                "summary",
                "missing summary header (is the file cut short?)",
            )),
            Stage::Summary { .. } => Err(line_error(
                line + 1,
                "summary",
                "missing summary row (is the file cut short?)",
            )),
        }
    }
}

fn money(raw: &str, currency: Currency, field: &str, line: usize) -> Result<Money> {
    let d = parse_decimal(raw, 2).map_err(|p| line_error(line, field, p))?;
    let minor = decimal_to_minor(d).map_err(|p| line_error(line, field, p))?;
    Ok(Money::from_minor(minor, currency))
}

fn currency_of(values: &[&str], cols: &Columns, line: usize) -> Result<Currency> {
    let raw = values[cols.currency];
    let currency = Currency::parse(raw, "货币种类").map_err(|_| {
        line_error(
            line,
            "货币种类",
            format!("{raw:?} is not a supported currency"),
        )
    })?;
    if currency.decimals() != 2 {
        return Err(line_error(
            line,
            "货币种类",
            format!("{raw} is not billed in yuan-like units"),
        ));
    }
    Ok(currency)
}

pub(crate) fn china_time(raw: &str, field: &str, line: usize) -> Result<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| line_error(line, field, format!("{raw:?} is not YYYY-MM-DD hh:mm:ss")))?;
    china()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| line_error(line, field, "is not a valid instant"))
}

fn refund_record(values: &[&str], cols: &Columns, line: usize) -> Result<BankRecord> {
    let refund_no = values[cols.refund_no];
    check_reference(refund_no).map_err(|p| line_error(line, "商户退款单号", p))?;
    let wx_no = values[cols.wx_refund_no];
    check_reference(wx_no).map_err(|p| line_error(line, "微信退款单号", p))?;
    let currency = currency_of(values, cols, line)?;
    let amount = money(values[cols.refund_amount], currency, "退款金额", line)?;
    if !amount.is_positive() {
        return Err(line_error(line, "退款金额", "must be greater than zero"));
    }
    let (status, reason) = match values[cols.refund_status] {
        "SUCCESS" => (BankRecordStatus::Success, String::new()),
        "REFUNDCLOSE" => (
            BankRecordStatus::Failed,
            "REFUNDCLOSE: refund closed".to_string(),
        ),
        "FAIL" => (BankRecordStatus::Failed, "FAIL: refund failed".to_string()),
        "CHANGE" => (
            BankRecordStatus::Failed,
            "BANK_ABNORMAL: CHANGE, refund abnormal (退款异常): the payer's card refused it and \
             WeChat Pay holds the money until the merchant handles it"
                .to_string(),
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
    let completed_at = match cols.refund_success_time.map(|i| values[i]) {
        Some(t) if !t.is_empty() => china_time(t, "退款成功时间", line)?,
        _ => china_time(values[cols.time], "交易时间", line)?,
    };
    Ok(BankRecord {
        kind: RecordKind::Refund,
        id: refund_no.to_string(),
        bank_ref: wx_no.to_string(),
        original_ref: printable(values[cols.out_trade_no]),
        channel: String::new(),
        amount,
        status,
        completed_at,
        reason,
        line,
    })
}

fn payment_record(values: &[&str], cols: &Columns, line: usize) -> Result<BankRecord> {
    let currency = currency_of(values, cols, line)?;
    let amount_col = cols
        .order_amount
        .filter(|i| !values[*i].is_empty())
        .unwrap_or(cols.settle);
    let field = if Some(amount_col) == cols.order_amount {
        "订单金额"
    } else if cols.layout.legacy() {
        "总金额"
    } else {
        "应结订单金额"
    };
    let amount = money(values[amount_col], currency, field, line)?;
    if amount.to_minor() < 0 {
        return Err(line_error(
            line,
            field,
            "must not be negative on a payment row",
        ));
    }
    let state = values[cols.trade_state];
    let status = match state {
        "SUCCESS" => BankRecordStatus::Success,
        "REVOKED" | "CLOSED" | "PAYERROR" => BankRecordStatus::Failed,
        _ => BankRecordStatus::Processing,
    };
    Ok(BankRecord {
        kind: RecordKind::Payment,
        id: printable(values[cols.out_trade_no]),
        bank_ref: printable(values[cols.transaction_id]),
        original_ref: String::new(),
        channel: String::new(),
        amount,
        status,
        completed_at: china_time(values[cols.time], "交易时间", line)?,
        reason: if status == BankRecordStatus::Failed {
            state.to_string()
        } else {
            String::new()
        },
        line,
    })
}

/// A free-form reference from a payment row, bounded and without control characters (such
/// rows are shown, never matched).
fn printable(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(super::MAX_BANK_REF_CHARS)
        .collect()
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
    sums: &[Decimal],
    rows: usize,
) -> Result<Vec<String>> {
    if !names.iter().any(|n| n == COUNT_TOTAL) {
        return Err(line_error(
            header_line,
            "summary",
            format!("expected a summary header with {COUNT_TOTAL} (or a detail row starting with a backtick)"),
        ));
    }
    if values.len() != names.len() {
        return Err(line_error(
            line,
            "summary",
            format!("expected {} values, found {}", names.len(), values.len()),
        ));
    }
    let mut checks = Vec::new();
    for (name, value) in names.iter().zip(values) {
        if name == COUNT_TOTAL {
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
            checks.push(format!("{name} {count} = {rows} detail rows"));
            continue;
        }
        let Some(spec) = SUMS.iter().find(|s| s.totals.contains(&name.as_str())) else {
            continue;
        };
        let Some(k) = cols.summed.iter().position(|(_, s)| std::ptr::eq(*s, spec)) else {
            return Err(line_error(
                line,
                name,
                format!("cannot be checked: the bill has no {} column", spec.column),
            ));
        };
        let total = parse_decimal(value, spec.decimals).map_err(|p| line_error(line, name, p))?;
        if total != sums[k] {
            return Err(line_error(
                line,
                name,
                format!(
                    "says {total} but the detail rows ({}) add up to {}",
                    spec.column, sums[k]
                ),
            ));
        }
        checks.push(format!("{name} {total} = Σ {}", spec.column));
    }
    Ok(checks)
}

/// Writes a bill in `layout` from records (refund records become refund rows, payment records
/// payment rows), with its summary, in `encoding` (`Detect` means UTF-8). For fixtures, the
/// benchmark and the bank simulator.
pub fn write_bill(layout: WechatLayout, encoding: TextEncoding, records: &[BankRecord]) -> Vec<u8> {
    let columns = layout.columns();
    let mut text = columns.join(",");
    text.push('\n');
    let mut totals: HashMap<&str, Decimal> = HashMap::new();
    for r in records {
        let refund = r.kind != RecordKind::Payment;
        let yuan = r.amount.amount_string();
        let when = r
            .completed_at
            .with_timezone(&china())
            .format("%Y-%m-%d %H:%M:%S");
        let values: Vec<String> = columns
            .iter()
            .map(|c| {
                let v: String = match *c {
                    "交易时间" | "退款申请时间" | "退款成功时间" => {
                        when.to_string()
                    }
                    "公众账号ID" => "wx2421b1c4370ec43b".into(),
                    "商户号" => "10000100".into(),
                    "特约商户号" | "子商户号" => "0".into(),
                    "微信订单号" if refund => format!("42{:0>26}", r.line),
                    "微信订单号" => r.bank_ref.clone(),
                    "商户订单号" if refund => r.original_ref.clone(),
                    "商户订单号" => r.id.clone(),
                    "用户标识" => "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                    "交易类型" => "JSAPI".into(),
                    "交易状态" if refund => "REFUND".into(),
                    "交易状态" => "SUCCESS".into(),
                    "付款银行" => "CFT".into(),
                    "货币种类" => r.amount.currency().code().into(),
                    "应结订单金额" | "总金额" | "订单金额" if !refund => yuan.clone(),
                    "微信退款单号" if refund => r.bank_ref.clone(),
                    "商户退款单号" if refund => r.id.clone(),
                    "退款金额" | "申请退款金额" if refund => yuan.clone(),
                    "微信退款单号" | "商户退款单号" => "0".into(),
                    "退款类型" if refund => "ORIGINAL".into(),
                    "退款状态" if refund => match r.status {
                        BankRecordStatus::Success => "SUCCESS".into(),
                        BankRecordStatus::Failed => "REFUNDCLOSE".into(),
                        BankRecordStatus::Processing => "PROCESSING".into(),
                    },
                    "商品名称" => "tuikuan".into(),
                    "手续费" => "0.00000".into(),
                    "费率" => "0.60%".into(),
                    "应结订单金额"
                    | "总金额"
                    | "订单金额"
                    | "代金券金额"
                    | "企业红包金额"
                    | "退款金额"
                    | "申请退款金额"
                    | "充值券退款金额"
                    | "企业红包退款金额" => "0.00".into(),
                    _ => String::new(),
                };
                if let Some(spec) = SUMS.iter().find(|s| s.column == *c) {
                    if let Ok(d) = parse_decimal(&v, spec.decimals) {
                        *totals.entry(spec.column).or_insert(Decimal::ZERO) += d;
                    }
                }
                v
            })
            .collect();
        text.push('`');
        text.push_str(&values.join(",`"));
        text.push('\n');
    }
    let summary = layout.summary_columns();
    text.push_str(&summary.join(","));
    text.push('\n');
    let values: Vec<String> = summary
        .iter()
        .map(|name| {
            if *name == COUNT_TOTAL {
                return records.len().to_string();
            }
            let spec = SUMS.iter().find(|s| s.totals.contains(name));
            let total = spec
                .and_then(|s| totals.get(s.column))
                .copied()
                .unwrap_or(Decimal::ZERO);
            match spec {
                Some(s) if s.decimals > 2 => format!("{:.6}", total),
                _ => format!("{:.2}", total),
            }
        })
        .collect();
    text.push('`');
    text.push_str(&values.join(",`"));
    text.push('\n');
    super::text::encode_as(&text, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtick_rows_keep_commas_inside_values() {
        let mut out = Vec::new();
        split_backtick_row("`a,`Apple, red`,`c", 2, &mut out).unwrap();
        assert_eq!(out, vec!["a", "Apple, red`", "c"]);
        split_backtick_row("`a,`b,c,`", 2, &mut out).unwrap();
        assert_eq!(out, vec!["a", "b,c", ""]);
        assert!(split_backtick_row("a,`b", 3, &mut out).is_err());
    }

    #[test]
    fn layouts_have_their_published_column_counts() {
        let counts: Vec<(usize, usize)> = WechatLayout::ALL
            .iter()
            .map(|l| (l.columns().len(), l.summary_columns().len()))
            .collect();
        assert_eq!(counts, vec![(27, 7), (29, 7), (24, 5), (26, 5)]);
    }
}
