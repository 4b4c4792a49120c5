//! The bank-file parsers against hand-written fixtures of each published layout
//! (`tests/fixtures/`, see docs/reconciliation.md for the sources), and their writers.

use super::inspect::{inspect, parse_bytes};
use super::text::{encode_as, TextEncoding};
use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

fn opts(encoding: TextEncoding) -> ParseOptions {
    ParseOptions {
        encoding,
        business_date: day(),
    }
}

fn parse(format: FileFormat, bytes: &[u8]) -> Result<(Vec<BankRecord>, FileStats)> {
    parse_bytes(bytes, format, opts(TextEncoding::Detect))
}

fn refunds(records: &[BankRecord]) -> Vec<(&str, String, BankRecordStatus)> {
    records
        .iter()
        .filter(|r| r.kind.is_refund())
        .map(|r| (r.id.as_str(), r.amount.amount_string(), r.status))
        .collect()
}

fn err(format: FileFormat, bytes: &[u8]) -> (usize, String, String) {
    let e = parse(format, bytes).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    line_error_parts(&e).unwrap_or_else(|| panic!("no line and field: {e}"))
}

use BankRecordStatus::{Failed, Processing, Success};

#[test]
fn wechat_current_all_bill() {
    let (records, stats) =
        parse(FileFormat::WechatBill, &fixture("wechat_current_all.csv")).unwrap();
    assert_eq!(
        stats.layout,
        "WeChat Pay ALL bill, current layout (27 columns)"
    );
    assert_eq!(stats.encoding, "utf-8");
    assert_eq!((stats.rows, stats.records, stats.skipped), (6, 5, 1));
    assert_eq!(
        refunds(&records),
        vec![
            ("rf_w1", "12.50".into(), Success),
            ("rf_w2", "3.00".into(), Failed),
            ("rf_w3", "5.00".into(), Success),
            ("rf_w4", "7.00".into(), Success),
            ("rf_w6", "2.00".into(), Processing),
        ]
    );
    let w1 = &records[1];
    assert_eq!((w1.line, w1.bank_ref.as_str()), (3, "50000001"));
    assert_eq!(w1.original_ref, "ord-1002");
    assert_eq!(
        w1.completed_at,
        DateTime::parse_from_rfc3339("2026-11-25T10:01:00+08:00").unwrap()
    );
    let payment = &records[0];
    assert_eq!(payment.kind, RecordKind::Payment);
    assert_eq!(
        (payment.id.as_str(), payment.bank_ref.as_str()),
        ("ord-1001", "4200000001202611250001")
    );
    assert!(records[2].reason.starts_with("REFUNDCLOSE"));
    // Fees with six decimals are summed exactly.
    assert!(
        stats
            .summary
            .contains(&"手续费总金额 0.453000 = Σ 手续费".to_string()),
        "{:?}",
        stats.summary
    );
    assert_eq!(stats.summary[0], "总交易单数 6 = 6 detail rows");
}

#[test]
fn wechat_current_refund_bill_utf8_and_gbk() {
    let utf8 = fixture("wechat_current_refund.csv");
    let (records, stats) = parse(FileFormat::WechatBill, &utf8).unwrap();
    assert_eq!(
        stats.layout,
        "WeChat Pay REFUND bill, current layout (29 columns)"
    );
    assert_eq!(
        refunds(&records),
        vec![
            ("rf_r1", "1.00".into(), Success),
            ("rf_r2", "2.02".into(), Success)
        ]
    );
    // Completed when the refund succeeded, not when the order was paid.
    assert_eq!(
        records[0].completed_at,
        DateTime::parse_from_rfc3339("2026-11-25T14:33:24+08:00").unwrap()
    );
    let gbk = fixture("wechat_current_refund_gbk.csv");
    let (same, gbk_stats) = parse(FileFormat::WechatBill, &gbk).unwrap();
    assert_eq!(gbk_stats.encoding, "gbk");
    assert_eq!(same, records);
    let (declared, _) = parse_bytes(&gbk, FileFormat::WechatBill, opts(TextEncoding::Gbk)).unwrap();
    assert_eq!(declared, records);
    // Declared UTF-8, a GBK file is refused at its first line.
    let e = parse_bytes(&gbk, FileFormat::WechatBill, opts(TextEncoding::Utf8)).unwrap_err();
    assert!(
        e.message
            .starts_with("clearing file line 1: row: is not valid utf-8"),
        "{e}"
    );
    // The same content with CRLF line endings and a byte-order mark: the same file.
    assert_eq!(
        ContentDigest::of(&utf8),
        ContentDigest::of(&{
            let mut v = text::UTF8_BOM.to_vec();
            v.extend(
                String::from_utf8(utf8.clone())
                    .unwrap()
                    .replace('\n', "\r\n")
                    .bytes(),
            );
            v
        })
    );
}

#[test]
fn wechat_legacy_bills() {
    let (records, stats) =
        parse(FileFormat::WechatBill, &fixture("wechat_legacy_all.csv")).unwrap();
    assert_eq!(
        stats.layout,
        "WeChat Pay ALL bill, legacy layout (24 columns)"
    );
    assert_eq!((stats.rows, stats.records, stats.skipped), (4, 3, 1));
    assert_eq!(
        refunds(&records),
        vec![
            ("rf_l1", "1.00".into(), Success),
            ("rf_l1", "1.00".into(), Success),
            ("rf_l2", "2.00".into(), Failed)
        ]
    );
    assert!(stats
        .summary
        .contains(&"总交易额 20.00 = Σ 总金额".to_string()));
    assert!(stats
        .summary
        .contains(&"总退款金额 4.00 = Σ 退款金额".to_string()));
    let (records, stats) =
        parse(FileFormat::WechatBill, &fixture("wechat_legacy_refund.csv")).unwrap();
    assert_eq!(
        stats.layout,
        "WeChat Pay REFUND bill, legacy layout (26 columns)"
    );
    assert_eq!(
        refunds(&records),
        vec![
            ("rf_k1", "0.01".into(), Success),
            ("rf_k2", "0.50".into(), Failed)
        ]
    );
}

#[test]
fn wechat_oldest_column_names() {
    // The 2014 spelling of the legacy layout (as WxJava's bill tests carry it).
    let text = String::from_utf8(fixture("wechat_legacy_all.csv"))
        .unwrap()
        .replace(",企业红包金额,", ",代金券或立减优惠金额,")
        .replace(",企业红包退款金额,", ",代金券或立减优惠退款金额,")
        .replace("总企业红包退款金额", "总代金券或立减优惠退款金额");
    let (records, stats) = parse(FileFormat::WechatBill, text.as_bytes()).unwrap();
    assert_eq!(
        stats.layout,
        "WeChat Pay ALL bill, legacy layout (24 columns)"
    );
    assert_eq!(records.len(), 4);
}

#[test]
fn wechat_columns_are_read_by_name_in_any_order() {
    let text = String::from_utf8(fixture("wechat_legacy_refund.csv")).unwrap();
    let mut lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(",`").map(str::to_string).collect())
        .collect();
    // Reverse the detail columns (header and rows alike; the summary stays).
    let header: Vec<String> = lines[0][0].split(',').rev().map(str::to_string).collect();
    let mut out = header.join(",") + "\n";
    for row in &lines[1..3] {
        let values: Vec<String> = row
            .iter()
            .map(|v| v.trim_start_matches('`').to_string())
            .rev()
            .collect();
        out.push('`');
        out.push_str(&values.join(",`"));
        out.push('\n');
    }
    lines.drain(..3);
    for l in lines {
        out.push_str(&l.join(",`"));
        out.push('\n');
    }
    let (shuffled, _) = parse(FileFormat::WechatBill, out.as_bytes()).unwrap();
    let (original, _) = parse(FileFormat::WechatBill, text.as_bytes()).unwrap();
    assert_eq!(shuffled, original);
}

#[test]
fn wechat_refusals_name_line_and_field() {
    let (line, field, problem) = err(FileFormat::WechatBill, &fixture("wechat_bad_summary.csv"));
    assert_eq!((line, field.as_str()), (9, "退款总金额"));
    assert!(problem.contains("add up to 29.50"), "{problem}");
    let all = String::from_utf8(fixture("wechat_current_all.csv")).unwrap();
    // A fee with seven decimals.
    let seven = all.replacen("`0.60000,", "`0.6000000,", 1);
    assert_eq!(err(FileFormat::WechatBill, seven.as_bytes()).1, "手续费");
    // A money column with three decimals.
    let three = all.replacen("`12.50,`0.00,`ORIGINAL", "`12.505,`0.00,`ORIGINAL", 1);
    let (line, field, _) = err(FileFormat::WechatBill, three.as_bytes());
    assert_eq!((line, field.as_str()), (3, "退款金额"));
    // The count.
    let count = all.replace("`6,`100.00", "`7,`100.00");
    assert_eq!(
        err(FileFormat::WechatBill, count.as_bytes()).1,
        "总交易单数"
    );
    // Cut short: no summary.
    let cut: String = all.lines().take(5).map(|l| format!("{l}\n")).collect();
    let (line, field, _) = err(FileFormat::WechatBill, cut.as_bytes());
    assert_eq!((line, field.as_str()), (6, "summary"));
    // A SUCCESS bill (payments only) cannot confirm refunds.
    let success = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\n";
    let (_, field, problem) = err(FileFormat::WechatBill, success.as_bytes());
    assert_eq!(field, "header");
    assert!(problem.contains("SUCCESS bill"), "{problem}");
    // An unknown refund status.
    let status = all.replacen("`REFUNDCLOSE,", "`CLOSED,", 1);
    assert_eq!(err(FileFormat::WechatBill, status.as_bytes()).1, "退款状态");
    // Empty.
    assert_eq!(err(FileFormat::WechatBill, b"").1, "header");
}

#[test]
fn unionpay_zm_file() {
    let bytes = fixture("unionpay_zm_gbk.txt");
    assert!(bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .all(|l| l.len() == 607));
    let (records, stats) = parse(FileFormat::UnionpayZm, &bytes).unwrap();
    assert_eq!(stats.layout, "UnionPay ZM (42 fields, 607 bytes a line)");
    assert_eq!(stats.encoding, "gbk");
    assert_eq!((stats.rows, stats.records, stats.skipped), (4, 3, 1));
    assert_eq!(
        refunds(&records),
        vec![
            ("TKU10000000000000000000000000001", "8.88".into(), Success),
            ("TKU30000000000000000000000000003", "3.33".into(), Success),
            ("TKU50000000000000000000000000005", "12.34".into(), Success),
        ]
    );
    let u1 = &records[1];
    assert_eq!(u1.bank_ref, "201125100000000000001");
    assert_eq!(u1.original_ref, "ORD20261124001001");
    assert_eq!(
        u1.completed_at,
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00+08:00").unwrap()
    );
    assert_eq!(records[0].kind, RecordKind::Payment);
    assert_eq!(records[0].amount.amount_string(), "50.00");
    // A January file's December transaction belongs to the year before.
    let (r, _) = parse_bytes(
        &bytes,
        FileFormat::UnionpayZm,
        ParseOptions {
            encoding: TextEncoding::Detect,
            business_date: NaiveDate::from_ymd_opt(2027, 1, 2).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(r[1].completed_at, u1.completed_at);
    // The last field's trailing spaces cut, CRLF line endings: still the same records.
    let trimmed: Vec<u8> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .flat_map(|l| {
            // The last field (保留使用) is blank in the fixture.
            l[..607 - 98].iter().copied().chain([b'\r', b'\n'])
        })
        .collect();
    assert_eq!(parse(FileFormat::UnionpayZm, &trimmed).unwrap().0, records);
}

#[test]
fn unionpay_refusals_and_the_empty_day() {
    let (line, field, problem) = err(
        FileFormat::UnionpayZm,
        &fixture("unionpay_zm_bad_amount.txt"),
    );
    assert_eq!((line, field.as_str()), (2, "交易金额"));
    assert!(problem.contains("12 digits"), "{problem}");
    // A day without transactions is a file without bytes; blank lines are never valid.
    let (records, stats) = parse(FileFormat::UnionpayZm, b"").unwrap();
    assert!(records.is_empty() && stats.rows == 0);
    for blank in [&b"\n"[..], b"\n\n\n", b"\r\n"] {
        let (line, field, _) = err(FileFormat::UnionpayZm, blank);
        assert_eq!((line, field.as_str()), (1, "row"));
    }
    let bytes = fixture("unionpay_zm_gbk.txt");
    let first = &bytes[..608];
    let mut with_blank = first.to_vec();
    with_blank.extend_from_slice(b"\n");
    with_blank.extend_from_slice(first);
    assert_eq!(err(FileFormat::UnionpayZm, &with_blank).0, 2);
    // A line one byte short of the last field's start, and one too long.
    let (_, field, problem) = err(FileFormat::UnionpayZm, &bytes[..500]);
    assert_eq!(field, "row");
    assert!(
        problem.contains("expected 607 bytes, found 500"),
        "{problem}"
    );
    let mut long = first[..607].to_vec();
    long.push(b'x');
    assert_eq!(err(FileFormat::UnionpayZm, &long).1, "row");
    // A separator that is not a space names the next field.
    let mut sep = first.to_vec();
    sep[3] = b'|';
    assert_eq!(err(FileFormat::UnionpayZm, &sep).1, "代理机构标识码");
    // A direction letter other than C or D.
    let mut dir = first.to_vec();
    let at = 3
        + 1
        + 11
        + 1
        + 11
        + 1
        + 6
        + 1
        + 10
        + 1
        + 19
        + 1
        + 12
        + 1
        + 4
        + 1
        + 2
        + 1
        + 21
        + 1
        + 2
        + 1
        + 32
        + 1
        + 2
        + 1
        + 6
        + 1
        + 10
        + 1;
    dir[at] = b'X';
    assert_eq!(err(FileFormat::UnionpayZm, &dir).1, "商户手续费");
    // Declared UTF-8, the GBK text of 二级商户简称 is refused by name.
    let e = parse_bytes(&bytes, FileFormat::UnionpayZm, opts(TextEncoding::Utf8)).unwrap_err();
    assert!(e.message.contains(": 二级商户简称: "), "{e}");
}

#[test]
fn alipay_business_detail() {
    let (records, stats) =
        parse(FileFormat::AlipayDetail, &fixture("alipay_detail_gbk.csv")).unwrap();
    assert_eq!(stats.encoding, "gbk");
    assert_eq!(stats.layout, "Alipay 业务明细 (25 columns)");
    assert_eq!((stats.rows, stats.records, stats.skipped), (5, 3, 2));
    // The third refund has no request number: Alipay reports it by the trade's order number.
    assert_eq!(
        refunds(&records),
        vec![
            ("rf_a1", "12.50".into(), Success),
            ("rf_a2", "3.00".into(), Success),
            ("ORDA0903", "1.00".into(), Success),
        ]
    );
    let a1 = &records[1];
    assert_eq!(a1.bank_ref, "2026112422001419931441888001");
    assert_eq!(a1.original_ref, "ORDA0901");
    assert_eq!(a1.line, 7);
    assert_eq!(
        stats.summary,
        vec![
            "交易合计 2笔 = 2 rows",
            "交易合计 商家实收 109.90 = Σ 商家实收",
            "交易合计 商家优惠 0.00 = Σ 商家优惠",
            "退款合计 3笔 = 3 rows",
            "退款合计 商家实收退款 -16.50 = Σ 商家实收",
            "退款合计 商家优惠退款 0.00 = Σ 商家优惠",
        ]
    );
    let (line, field, problem) = err(FileFormat::AlipayDetail, &fixture("alipay_bad_total.csv"));
    assert_eq!((line, field.as_str()), (13, "退款合计"));
    assert!(
        problem.contains("says 2笔 but the list has 3 rows"),
        "{problem}"
    );
    let (line, field, problem) = err(FileFormat::AlipayDetail, &fixture("alipay_cut_short.csv"));
    assert_eq!((line, field.as_str()), (9, "footer"));
    assert!(problem.contains("cut short"), "{problem}");
    let (_, field, _) = err(FileFormat::AlipayDetail, b"#only comments\n");
    assert_eq!(field, "header");
}

fn sample_records() -> Vec<BankRecord> {
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let rec = |kind, id: &str, amount: &str, status, line| BankRecord {
        kind,
        id: id.into(),
        bank_ref: format!("BK{line:019}"),
        original_ref: if kind == RecordKind::Payment {
            String::new()
        } else {
            format!("ORD{line}")
        },
        channel: String::new(),
        amount: Money::parse(amount, "CNY", "amount").unwrap(),
        status,
        completed_at: at("2026-11-25T10:00:00+08:00"),
        reason: String::new(),
        line,
    };
    vec![
        rec(RecordKind::Payment, "ORD1", "100.00", Success, 2),
        rec(RecordKind::Refund, "TKW1", "12.50", Success, 3),
        rec(RecordKind::Refund, "TKW2", "3.00", Failed, 4),
        rec(RecordKind::Refund, "TKW3", "0.01", Success, 5),
    ]
}

fn same_facts(a: &[BankRecord], b: &[BankRecord]) {
    let key = |r: &BankRecord| {
        (
            r.kind.is_refund(),
            r.id.clone(),
            r.amount,
            r.status,
            r.completed_at,
        )
    };
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );
}

#[test]
fn writers_round_trip_through_the_parsers() {
    let records = sample_records();
    for layout in WechatLayout::ALL {
        for encoding in [TextEncoding::Utf8, TextEncoding::Gbk] {
            let bytes = wechat::write_bill(layout, encoding, &records);
            let (back, stats) = parse(FileFormat::WechatBill, &bytes)
                .unwrap_or_else(|e| panic!("{layout:?} {encoding:?}: {e}"));
            assert!(stats.layout.contains(layout.name()), "{}", stats.layout);
            same_facts(&back, &records);
        }
    }
    let cleared: Vec<BankRecord> = records
        .iter()
        .filter(|r| r.status == Success)
        .cloned()
        .collect();
    let zm = unionpay::write_zm(&records, TextEncoding::Detect);
    let (back, _) = parse(FileFormat::UnionpayZm, &zm).unwrap();
    same_facts(&back, &cleared);
    let ali = alipay::write_detail(&records, day(), TextEncoding::Detect);
    let (back, stats) = parse(FileFormat::AlipayDetail, &ali).unwrap();
    same_facts(&back, &cleared);
    assert_eq!(stats.encoding, "gbk");
    assert_eq!(back[1].original_ref, "ORD3");
}

#[test]
fn formats_are_detected_from_the_first_line() {
    let cases = [
        ("wechat_current_all.csv", FileFormat::WechatBill),
        ("wechat_current_refund_gbk.csv", FileFormat::WechatBill),
        ("wechat_legacy_all.csv", FileFormat::WechatBill),
        ("unionpay_zm_gbk.txt", FileFormat::UnionpayZm),
        ("alipay_detail_gbk.csv", FileFormat::AlipayDetail),
        ("clearing_csv_v1.csv", FileFormat::CsvV1),
    ];
    for (name, format) in cases {
        assert_eq!(FileFormat::detect(&fixture(name)), Some(format), "{name}");
    }
    assert_eq!(FileFormat::detect(b""), Some(FileFormat::UnionpayZm));
    assert_eq!(FileFormat::detect(b"hello,world\n"), None);
    assert_eq!(
        FileFormat::detect(&encode_as("支付宝交易号,商户订单号", TextEncoding::Gbk)),
        Some(FileFormat::AlipayDetail)
    );
    for f in FileFormat::ALL {
        assert_eq!(FileFormat::parse(f.short_name()).unwrap(), f);
        assert_eq!(FileFormat::parse(f.as_str()).unwrap(), f);
    }
}

#[test]
fn inspection_reports_rows_and_the_first_error() {
    let report = inspect(
        &fixture("alipay_detail_gbk.csv"),
        None,
        TextEncoding::Detect,
        day(),
    );
    assert!(!report.refused());
    assert!(report.detected);
    assert_eq!(report.format, Some(FileFormat::AlipayDetail));
    assert_eq!(report.rows.len(), 5);
    assert_eq!(report.stats.summary.len(), 6);
    let bad = inspect(
        &fixture("unionpay_zm_bad_amount.txt"),
        Some(FileFormat::UnionpayZm),
        TextEncoding::Detect,
        day(),
    );
    assert!(bad.refused());
    let e = bad.error.unwrap();
    assert_eq!((e.line, e.field.as_str()), (2, "交易金额"));
    assert_eq!(bad.rows.len(), 1, "the rows before the error are shown");
    let unknown = inspect(b"what is this\n", None, TextEncoding::Detect, day());
    assert_eq!(unknown.error.unwrap().field, "format");
}
