//! Alipay's business-detail bill (支付宝业务明细, the `…_业务明细.csv` of the daily bill download
//! `alipay.data.dataservice.bill.downloadurl.query`, bill type `trade`).
//!
//! A CSV file, GBK (UTF-8 is accepted too), in three parts:
//! 1. header comments, each starting with `#`: `#支付宝业务明细查询`, `#账号：[…]`,
//!    `#起始日期：[…]   终止日期：[…]`, `#-----…业务明细列表…-----`;
//! 2. the column header and one line per business event: 支付宝交易号, 商户订单号, 业务类型, 商品名称,
//!    创建时间, 完成时间, 门店编号, 门店名称, 操作员, 终端号, 对方账户, 订单金额（元）, 商家实收（元）,
//!    支付宝红包（元）, 集分宝（元）, 支付宝优惠（元）, 商家优惠（元）, 券核销金额（元）, 券名称,
//!    商家红包消费金额（元）, 卡消费金额（元）, 退款批次号/请求号, 服务费（元）, 分润（元）, 备注. Ids carry
//!    a trailing tab (so that Excel keeps them as text); values are trimmed. Columns are read by
//!    name;
//! 3. footer comments: `#-----…业务明细列表结束…-----`, `#交易合计：N笔，商家实收共X元，商家优惠共Y元`,
//!    `#退款合计：N笔，商家实收退款共-X元，商家优惠退款共-Y元`, `#导出时间：[…]`.
//!
//! Refund rows are the rows whose 业务类型 is `退款`; their amounts are negative. A refund row becomes a
//! refund [`BankRecord`] with `id` = 退款批次号/请求号 (the out_request_no of the platform's
//! `alipay.trade.refund`; when empty, Alipay reports the refund by the trade's 商户订单号, as its
//! refund query documents), `bank_ref` = 支付宝交易号, `original_ref` = 商户订单号, the amount =
//! |订单金额（元）| in CNY, completed at 完成时间 (China time). The bill lists completed business only:
//! every row is a success. Other rows (`交易`, …) are payment records.
//!
//! The footer is checked against the rows: 交易合计 counts the `交易` rows and carries the sums of
//! their 商家实收 and 商家优惠, 退款合计 the same for the `退款` rows. A file without its footer
//! (cut short) or with totals that differ is refused.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;
use tuikuan_kernel::{Currency, Money, Result};

use super::csv_v1::split_csv_line;
use super::text::{
    decimal_to_minor, encode_as, parse_decimal, read_line, LineDecoder, TextEncoding,
};
use super::wechat::{china, china_time};
use super::{
    check_reference, check_value_count, line_error, BankRecord, BankRecordStatus,
    ClearingFileParser, FileStats, RecordKind, RecordSink, MAX_BANK_REF_CHARS,
};

/// The format name of Alipay business-detail bills.
pub const ALIPAY_FORMAT: &str = "alipay-detail";

/// The columns of the business-detail list, in Alipay's order.
pub const ALIPAY_COLUMNS: [&str; 25] = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
];

const TRADE_NO: &str = "支付宝交易号";
const OUT_TRADE_NO: &str = "商户订单号";
const BIZ_TYPE: &str = "业务类型";
const FINISHED: &str = "完成时间";
const ORDER_AMOUNT: &str = "订单金额（元）";
const RECEIVED: &str = "商家实收（元）";
const DISCOUNT: &str = "商家优惠（元）";
const REQUEST_NO: &str = "退款批次号/请求号";

/// 业务类型 of refunds and of payments.
pub const BIZ_REFUND: &str = "退款";
pub const BIZ_TRADE: &str = "交易";

/// The marker line after the list.
const LIST_END: &str = "业务明细列表结束";
const TRADE_TOTAL: &str = "#交易合计";
const REFUND_TOTAL: &str = "#退款合计";

/// The Alipay business-detail parser.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlipayBillParser {
    pub encoding: TextEncoding,
}

struct Columns {
    count: usize,
    trade_no: usize,
    out_trade_no: usize,
    biz_type: usize,
    finished: usize,
    order_amount: usize,
    received: usize,
    discount: Option<usize>,
    request_no: usize,
}

/// A column name as written, normalised: whitespace trimmed, half-width `(元)` as full-width.
fn column_name(raw: &str) -> String {
    raw.trim().replace("(元)", "（元）")
}

fn header_columns(names: &[String], line: usize) -> Result<Columns> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if !name.is_empty() && index.insert(name.as_str(), i).is_some() {
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
                format!("missing column {name} (not an Alipay 业务明细 file)"),
            )
        })
    };
    Ok(Columns {
        count: names.len(),
        trade_no: find(TRADE_NO)?,
        out_trade_no: find(OUT_TRADE_NO)?,
        biz_type: find(BIZ_TYPE)?,
        finished: find(FINISHED)?,
        order_amount: find(ORDER_AMOUNT)?,
        received: find(RECEIVED)?,
        discount: index.get(DISCOUNT).copied(),
        request_no: find(REQUEST_NO)?,
    })
}

/// Running totals of one 业务类型.
#[derive(Debug, Default, Clone)]
struct Tally {
    count: usize,
    received: Decimal,
    discount: Decimal,
}

enum Stage {
    /// `#` comments before the column header.
    Head,
    Rows,
    Footer,
}

impl ClearingFileParser for AlipayBillParser {
    fn format(&self) -> &'static str {
        ALIPAY_FORMAT
    }

    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats> {
        let mut buf = Vec::with_capacity(512);
        let mut decoder = LineDecoder::new(self.encoding);
        let mut line = 0usize;
        let mut stage = Stage::Head;
        let mut columns: Option<Columns> = None;
        let mut values: Vec<String> = Vec::with_capacity(ALIPAY_COLUMNS.len());
        let mut trades = Tally::default();
        let mut refunds = Tally::default();
        let mut totals: Vec<(usize, &'static str, String)> = Vec::new();
        let mut stats = FileStats {
            layout: "Alipay 业务明细".to_string(),
            ..FileStats::default()
        };
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            let text = decoder.decode(&buf, line)?;
            let text = text.trim_end();
            if text.trim().is_empty() {
                continue;
            }
            let comment = text.starts_with('#');
            match stage {
                Stage::Head if comment => {}
                Stage::Head => {
                    split_csv_line(text, &mut values).map_err(|p| line_error(line, "header", p))?;
                    let names: Vec<String> = values.iter().map(|v| column_name(v)).collect();
                    columns = Some(header_columns(&names, line)?);
                    stats.layout = format!("Alipay 业务明细 ({} columns)", names.len());
                    stage = Stage::Rows;
                }
                Stage::Rows if comment => {
                    if !text.contains(LIST_END) {
                        return Err(line_error(
                            line,
                            "footer",
                            format!("expected the {LIST_END} line after the rows"),
                        ));
                    }
                    stage = Stage::Footer;
                }
                Stage::Rows => {
                    let Some(cols) = columns.as_ref() else {
                        return Err(line_error(line, "header", "missing"));
                    };
                    split_csv_line(text, &mut values).map_err(|p| line_error(line, "row", p))?;
                    check_value_count(values.len(), cols.count, line)?;
                    stats.add_row(line)?;
                    let record = row_record(&values, cols, line, &mut trades, &mut refunds)?;
                    stats.count(&record);
                    sink(record)?;
                }
                Stage::Footer if comment => {
                    for (prefix, name) in [(TRADE_TOTAL, "交易合计"), (REFUND_TOTAL, "退款合计")]
                    {
                        if text.starts_with(prefix) {
                            totals.push((line, name, text.to_string()));
                        }
                    }
                }
                Stage::Footer => {
                    return Err(line_error(line, "footer", "text after the footer"));
                }
            }
        }
        stats.encoding = decoder.name();
        match stage {
            Stage::Footer => {}
            Stage::Head => {
                return Err(line_error(
                    line.max(1),
                    "header",
                    "missing the column header (not an Alipay 业务明细 file, or empty)",
                ))
            }
            Stage::Rows => {
                return Err(line_error(
                    line + 1,
                    "footer",
                    format!("missing the {LIST_END} line (is the file cut short?)"),
                ))
            }
        }
        stats.summary = check_totals(&totals, &trades, &refunds, line)?;
        Ok(stats)
    }
}

fn row_record(
    values: &[String],
    cols: &Columns,
    line: usize,
    trades: &mut Tally,
    refunds: &mut Tally,
) -> Result<BankRecord> {
    let value = |i: usize| values[i].trim();
    let amount_of = |i: usize, name: &str| -> Result<Decimal> {
        let raw = value(i);
        if raw.is_empty() {
            return Ok(Decimal::ZERO);
        }
        parse_decimal(raw, 2).map_err(|p| line_error(line, name, p))
    };
    let biz = value(cols.biz_type);
    let order = amount_of(cols.order_amount, ORDER_AMOUNT)?;
    let received = amount_of(cols.received, RECEIVED)?;
    let discount = match cols.discount {
        Some(i) => amount_of(i, DISCOUNT)?,
        None => Decimal::ZERO,
    };
    let tally = match biz {
        BIZ_REFUND => Some(&mut *refunds),
        BIZ_TRADE => Some(&mut *trades),
        _ => None,
    };
    if let Some(t) = tally {
        t.count += 1;
        t.received += received;
        t.discount += discount;
    }
    let trade_no = value(cols.trade_no);
    check_reference(trade_no).map_err(|p| line_error(line, TRADE_NO, p))?;
    let out_trade_no = value(cols.out_trade_no);
    let minor = decimal_to_minor(order.abs()).map_err(|p| line_error(line, ORDER_AMOUNT, p))?;
    let completed_at = china_time(value(cols.finished), FINISHED, line)?;
    let refund = biz == BIZ_REFUND;
    let (id, original_ref) = if refund {
        let request = value(cols.request_no);
        let id = if request.is_empty() {
            out_trade_no
        } else {
            request
        };
        check_reference(id).map_err(|p| line_error(line, REQUEST_NO, p))?;
        if minor == 0 {
            return Err(line_error(
                line,
                ORDER_AMOUNT,
                "must not be zero on a refund row",
            ));
        }
        (id.to_string(), out_trade_no.to_string())
    } else {
        (
            out_trade_no.chars().take(MAX_BANK_REF_CHARS).collect(),
            String::new(),
        )
    };
    Ok(BankRecord {
        kind: if refund {
            RecordKind::Refund
        } else {
            RecordKind::Payment
        },
        id,
        bank_ref: trade_no.to_string(),
        original_ref,
        channel: String::new(),
        amount: Money::from_minor(minor, Currency::Cny),
        status: BankRecordStatus::Success,
        completed_at,
        reason: String::new(),
        line,
    })
}

/// Parses the parts of a total line after its colon: `6笔`, `商家实收共0.06元`, `商家优惠共0.00元`.
fn total_parts(text: &str) -> Option<(usize, Vec<(String, String)>)> {
    let (_, rest) = text.split_once('：').or_else(|| text.split_once(':'))?;
    let mut parts = rest.split(['，', ',']).map(str::trim);
    let count: usize = parts.next()?.strip_suffix('笔')?.trim().parse().ok()?;
    let mut amounts = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let body = part.strip_suffix('元').unwrap_or(part);
        let split = body
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '-')
            .map(|(i, _)| i)
            .unwrap_or(body.len());
        let label = body[..split]
            .trim_end_matches(['共', '：', ':', ' '])
            .to_string();
        amounts.push((label, body[split..].trim().to_string()));
    }
    Some((count, amounts))
}

fn check_totals(
    totals: &[(usize, &'static str, String)],
    trades: &Tally,
    refunds: &Tally,
    last_line: usize,
) -> Result<Vec<String>> {
    let mut checks = Vec::new();
    for (name, tally) in [("交易合计", trades), ("退款合计", refunds)] {
        let Some((line, _, text)) = totals.iter().find(|(_, n, _)| *n == name) else {
            return Err(line_error(
                last_line + 1,
                name,
                format!("missing the #{name} line of the footer"),
            ));
        };
        let (count, amounts) = total_parts(text)
            .ok_or_else(|| line_error(*line, name, "expected N笔，<label>X元, …"))?;
        if count != tally.count {
            return Err(line_error(
                *line,
                name,
                format!("says {count}笔 but the list has {} rows", tally.count),
            ));
        }
        checks.push(format!("{name} {count}笔 = {} rows", tally.count));
        for (label, raw) in amounts {
            let (column, sum) = if label.contains("商家实收") {
                ("商家实收", tally.received)
            } else if label.contains("商家优惠") {
                ("商家优惠", tally.discount)
            } else {
                continue;
            };
            let stated = parse_decimal(&raw, 2)
                .map_err(|p| line_error(*line, name, format!("{label}: {p}")))?;
            if stated != sum {
                return Err(line_error(
                    *line,
                    name,
                    format!("{label} says {stated} but the rows add up to {sum}"),
                ));
            }
            checks.push(format!("{name} {label} {stated} = Σ {column}"));
        }
    }
    Ok(checks)
}

/// Writes a business-detail bill for the business date from records (refund records as `退款`
/// rows, payment records as `交易` rows; only successful records, as Alipay lists completed
/// business only), in `encoding` (`Detect` means GBK). For fixtures and the bank simulator.
pub fn write_detail(records: &[BankRecord], date: NaiveDate, encoding: TextEncoding) -> Vec<u8> {
    let encoding = match encoding {
        TextEncoding::Detect => TextEncoding::Gbk,
        other => other,
    };
    let day = |d: NaiveDate| d.format("%Y年%m月%d日 00:00:00").to_string();
    let next = date + Duration::days(1);
    let mut text = String::new();
    text.push_str("#支付宝业务明细查询\n#账号：[20880000000000000156]\n");
    text.push_str(&format!(
        "#起始日期：[{}]   终止日期：[{}]\n",
        day(date),
        day(next)
    ));
    text.push_str("#-----------------------------------------业务明细列表----------------------------------------\n");
    text.push_str(&ALIPAY_COLUMNS.join(","));
    text.push('\n');
    let (mut trades, mut refunds) = (Tally::default(), Tally::default());
    for r in records
        .iter()
        .filter(|r| r.status == BankRecordStatus::Success)
    {
        let refund = r.kind != RecordKind::Payment;
        let yuan = if refund {
            format!("-{}", r.amount.amount_string())
        } else {
            r.amount.amount_string()
        };
        let tally = if refund { &mut refunds } else { &mut trades };
        tally.count += 1;
        tally.received += parse_decimal(&yuan, 2).unwrap_or_default();
        let when = r
            .completed_at
            .with_timezone(&china())
            .format("%Y-%m-%d %H:%M:%S");
        let (out_trade_no, request_no) = if refund {
            (r.original_ref.as_str(), r.id.as_str())
        } else {
            (r.id.as_str(), "")
        };
        let row = [
            format!("{}\t", r.bank_ref),
            format!("{out_trade_no}\t"),
            format!("{}\t", if refund { BIZ_REFUND } else { BIZ_TRADE }),
            "tuikuan".into(),
            when.to_string(),
            when.to_string(),
            "\t".into(),
            "\t".into(),
            "\t".into(),
            "\t".into(),
            "**付(138****0000)\t".into(),
            yuan.clone(),
            yuan,
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            String::new(),
            "0.00\t".into(),
            "0.00".into(),
            format!("{request_no}\t"),
            "0.00".into(),
            "0.00".into(),
            String::new(),
        ];
        text.push_str(&row.join(","));
        text.push('\n');
    }
    text.push_str("#-----------------------------------------业务明细列表结束------------------------------------\n");
    text.push_str(&format!(
        "#交易合计：{}笔，商家实收共{:.2}元，商家优惠共{:.2}元\n",
        trades.count, trades.received, trades.discount
    ));
    text.push_str(&format!(
        "#退款合计：{}笔，商家实收退款共{:.2}元，商家优惠退款共{:.2}元\n",
        refunds.count, refunds.received, refunds.discount
    ));
    text.push_str(&format!(
        "#导出时间：[{}]\n",
        next.format("%Y年%m月%d日 05:00:00")
    ));
    encode_as(&text, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_lines_in_both_spellings() {
        let (n, parts) = total_parts("#交易合计：6笔，商家实收共0.06元，商家优惠共0.00元").unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            parts,
            vec![
                ("商家实收".to_string(), "0.06".to_string()),
                ("商家优惠".to_string(), "0.00".to_string())
            ]
        );
        let (n, parts) = total_parts("#退款合计：4笔，商家实收退款：-0.04元").unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            parts,
            vec![("商家实收退款".to_string(), "-0.04".to_string())]
        );
        assert!(total_parts("#交易合计：六笔").is_none());
        assert_eq!(column_name(" 订单金额(元)\t"), "订单金额（元）");
    }
}
