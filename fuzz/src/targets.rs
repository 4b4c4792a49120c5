//! The fuzz targets, shared by cargo-fuzz (`fuzz_targets/*.rs`) and the stable smoke harness
//! (`tests/it/fuzz_smoke.rs` includes this file). Each takes arbitrary bytes and panics only when
//! an invariant breaks:
//!
//! - parsers never panic; a file they accept yields records that are well formed (positive
//!   amounts within the currency's decimals, valid ids, 1-based lines in file order), and a file
//!   they refuse is refused with `INVALID_ARGUMENT` naming the line and the field
//!   (`clearing file line N: field: problem`);
//! - the merchant API's validation never panics; what it accepts is canonical (the amount
//!   re-parses to itself), what it refuses is refused with a stable code naming the field.
//!
//! Only the crates' pure domain code is exercised: no database, no network.

use tuikuan_bank::domain::parse_clearing_csv;
use tuikuan_business::domain::RefundRequest;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{ErrorCode, Money};
use tuikuan_reconciliation::domain::{
    parse_all, ClearingFileParser, CsvV1Parser, TextEncoding, UnionpayZmParser, WechatBillParser,
};

/// A fuzz target: arbitrary bytes in, a panic only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name, for harnesses.
pub const TARGETS: &[(&str, Target)] = &[
    ("recon_csv", recon_csv),
    ("recon_wechat", recon_wechat),
    ("recon_unionpay", recon_unionpay),
    ("bank_clearing_csv", bank_clearing_csv),
    ("merchant_create_refund", merchant_create_refund),
    ("money_parse", money_parse),
    ("external_id", external_id),
];

/// Reconciliation's `tuikuan-csv-v1` parser.
pub fn recon_csv(data: &[u8]) {
    check_recon(&CsvV1Parser, data);
}

/// Reconciliation's WeChat Pay trade bill parser.
pub fn recon_wechat(data: &[u8]) {
    check_recon(&WechatBillParser, data);
}

/// Reconciliation's UnionPay ZM fixed-width parser, in each encoding mode.
pub fn recon_unionpay(data: &[u8]) {
    for encoding in [TextEncoding::Detect, TextEncoding::Utf8, TextEncoding::Gbk] {
        check_recon(&UnionpayZmParser { encoding }, data);
    }
}

/// The bank subsystem's strict reader of its own clearing files.
pub fn bank_clearing_csv(data: &[u8]) {
    match parse_clearing_csv(data) {
        Ok(rows) => {
            for r in rows {
                assert!(
                    r.amount.is_positive(),
                    "accepted a non-positive amount: {r:?}"
                );
                assert!(validate_external_id(&r.id, "id").is_ok(), "{r:?}");
                assert!(validate_external_id(&r.channel, "channel").is_ok(), "{r:?}");
                assert_canonical(&r.amount);
            }
        }
        Err(e) => assert_names_line_and_field(&e.code, &e.message),
    }
}

/// The merchant API's `CreateRefund` validation: five fields from the bytes (split at `\n`).
pub fn merchant_create_refund(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (refund_no, order_no, amount, currency, reason) = (next(), next(), next(), next(), next());
    match RefundRequest::validate(refund_no, order_no, amount, currency, reason) {
        Ok(r) => {
            assert_eq!(r.merchant_refund_no, refund_no);
            assert_eq!(r.order_no, order_no);
            assert!(validate_external_id(&r.merchant_refund_no, "x").is_ok());
            assert!(validate_external_id(&r.order_no, "x").is_ok());
            assert!(r.amount.is_positive(), "accepted {amount:?}");
            assert_canonical(&r.amount);
            // The idempotency fingerprint is a pure function of the content.
            assert_eq!(r.fingerprint(), r.clone().fingerprint());
        }
        Err(e) => assert_names_field(
            &e.code,
            &e.message,
            &[
                "merchant_refund_no",
                "order_no",
                "amount",
                "currency",
                "reason",
            ],
        ),
    }
}

/// `Money::parse` of an amount and a currency (split at the first `\n`).
pub fn money_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (amount, currency) = text.split_once('\n').unwrap_or((&text, "CNY"));
    match Money::parse(amount, currency, "amount") {
        Ok(m) => {
            assert!(m.is_positive(), "accepted {amount:?}");
            assert_canonical(&m);
            assert_eq!(Money::from_minor(m.to_minor(), m.currency()), m);
        }
        Err(e) => assert_names_field(&e.code, &e.message, &["amount"]),
    }
}

/// `validate_external_id`: accepts exactly 1..=64 of `A-Z a-z 0-9 _ - .`.
pub fn external_id(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let want = !text.is_empty()
        && text.len() <= tuikuan_kernel::id::MAX_ID_LEN
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    match validate_external_id(&text, "order_no") {
        Ok(()) => assert!(want, "accepted {text:?}"),
        Err(e) => {
            assert!(!want, "refused {text:?}");
            assert_names_field(&e.code, &e.message, &["order_no"]);
        }
    }
}

fn check_recon(parser: &dyn ClearingFileParser, data: &[u8]) {
    match parse_all(parser, data) {
        Ok((records, stats)) => {
            assert_eq!(records.len(), stats.records, "{stats:?}");
            assert!(stats.records + stats.skipped <= stats.rows, "{stats:?}");
            let mut last_line = 0;
            for r in &records {
                assert!(r.line > last_line, "lines in file order: {r:?}");
                last_line = r.line;
                assert!(
                    r.amount.is_positive(),
                    "accepted a non-positive amount: {r:?}"
                );
                assert!(validate_external_id(&r.id, "id").is_ok(), "{r:?}");
                assert!(!r.bank_ref.is_empty(), "{r:?}");
                assert_canonical(&r.amount);
            }
        }
        Err(e) => assert_names_line_and_field(&e.code, &e.message),
    }
}

/// An accepted amount is written back exactly as it parses.
fn assert_canonical(m: &Money) {
    let again = Money::parse(&m.amount_string(), m.currency().code(), "amount")
        .unwrap_or_else(|e| panic!("{m:?} does not re-parse: {e:?}"));
    assert_eq!(&again, m);
}

/// `clearing file line N: field: problem`, with INVALID_ARGUMENT.
fn assert_names_line_and_field(code: &ErrorCode, message: &str) {
    assert_eq!(*code, ErrorCode::InvalidArgument, "{message}");
    let rest = message
        .strip_prefix("clearing file line ")
        .unwrap_or_else(|| panic!("error without a line: {message:?}"));
    let (line, rest) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("error without a field: {message:?}"));
    assert!(
        line.parse::<u64>().is_ok_and(|n| n >= 1),
        "bad line number in {message:?}"
    );
    let (field, problem) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("error without a field: {message:?}"));
    assert!(!field.is_empty() && !problem.is_empty(), "{message:?}");
}

/// A refusal with a bad-input code whose message starts with one of `fields`.
fn assert_names_field(code: &ErrorCode, message: &str, fields: &[&str]) {
    assert!(
        matches!(
            code,
            ErrorCode::InvalidArgument
                | ErrorCode::InvalidAmount
                | ErrorCode::MalformedId
                | ErrorCode::UnsupportedCurrency
        ),
        "{code:?}: {message}"
    );
    assert!(
        fields.iter().any(|f| message.starts_with(f)),
        "the message names none of {fields:?}: {message:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Seeds: valid inputs of every target, the start of each corpus
// ------------------------------------------------------------------------------------------------

/// Valid inputs for `target` (the corpus under `fuzz/corpus/<target>/` starts from these).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "recon_csv" | "bank_clearing_csv" => csv_seeds(),
        "recon_wechat" => wechat_seeds(),
        "recon_unionpay" => unionpay_seeds(),
        "merchant_create_refund" => vec![
            b"R-1\nO-1\n12.50\nCNY\ncustomer returned the goods".to_vec(),
            b"R-2\nORDER.2026_11\n1\nJPY\n".to_vec(),
            b"R-3\nO-3\n0.01\nUSD\n\xe9\x80\x80\xe6\xac\xbe".to_vec(),
        ],
        "money_parse" => vec![
            b"12.50\nCNY".to_vec(),
            b"1000000000000\nCNY".to_vec(),
            b"0.01\nHKD".to_vec(),
            b"100\nJPY".to_vec(),
        ],
        "external_id" => vec![
            b"ORDER-2026.11_26".to_vec(),
            b"rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60".to_vec(),
        ],
        _ => Vec::new(),
    }
}

fn csv_seeds() -> Vec<Vec<u8>> {
    let header = "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";
    let rows = [
        "REFUND,rf_1,BK0001,ICBC_B2C,12.50,CNY,SUCCESS,2026-11-25T10:00:00.000+08:00,\n",
        "PAYOUT,po_rf_2_1,BK0002,CMB_QUICK,100.00,CNY,FAILED,2026-11-25T11:30:00.000+08:00,NAME_MISMATCH: name does not match\n",
        "FILE,B20261125-CCB-FILE_UPLOAD-1-0001,BK0003,UNIONPAY_B2C,3.00,CNY,SUCCESS,2026-11-25T23:59:59.999+08:00,\n",
        "REFUND,rf_4,BK0004,WECHAT_AGG,5,JPY,FAILED,2026-11-25T00:00:00.000+08:00,\"CARD_CANCELLED: card, cancelled\"\n",
    ];
    vec![
        header.as_bytes().to_vec(),
        format!("{header}{}", rows[0]).into_bytes(),
        format!("{header}{}{}{}", rows[0], rows[1], rows[2]).into_bytes(),
        format!("{header}{}", rows[3]).into_bytes(),
    ]
}

fn wechat_seeds() -> Vec<Vec<u8>> {
    let mut header: Vec<&str> =
        tuikuan_reconciliation::domain::wechat::WECHAT_LEGACY_COLUMNS.to_vec();
    header.extend(tuikuan_reconciliation::domain::wechat::WECHAT_NEW_EXTRA_COLUMNS);
    let row = |i: u32, amount: &str, status: &str| {
        format!(
            "`2026-11-25 10:00:{i:02},`wx2421b1c4370ec43b,`10000100,`0,`,`42000{i:013},`ord{i:010},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMC,`CNY,`0.00,`0.00,`50000{i:013},`rf_{i},`{amount},`0.00,`ORIGINAL,`{status},`T-shirt, blue,`,`0.00,`0.60%,`0.00,`{amount},`\n"
        )
    };
    let summary = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n";
    let one = format!(
        "{}\n{}{summary}`1,`0.00,`12.50,`0.00,`0.00,`0.00,`12.50\n",
        header.join(","),
        row(1, "12.50", "SUCCESS")
    );
    let two = format!(
        "{}\n{}{}{summary}`2,`0.00,`13.50,`0.00,`0.00,`0.00,`13.50\n",
        header.join(","),
        row(1, "12.50", "SUCCESS"),
        row(2, "1.00", "CHANGE")
    );
    vec![one.into_bytes(), two.into_bytes()]
}

fn unionpay_seeds() -> Vec<Vec<u8>> {
    use tuikuan_reconciliation::domain::unionpay::unionpay_line;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap_or_default();
    let cny = |minor| Money::from_minor(minor, tuikuan_kernel::Currency::Cny);
    let mut file = Vec::new();
    file.extend(unionpay_line(
        1,
        "1125100000",
        &cny(1250),
        "04",
        "RRN000000001",
        "00",
        "B20261125-CCB-FILE_UPLOAD-1-0001",
        date,
        "",
        TextEncoding::Utf8,
    ));
    file.extend(unionpay_line(
        2,
        "1125100500",
        &cny(300),
        "04",
        "RRN000000002",
        "05",
        "rf_2",
        date,
        "账户已销户",
        TextEncoding::Gbk,
    ));
    file.extend(unionpay_line(
        3,
        "1125110000",
        &cny(9900),
        "01",
        "RRN000000003",
        "00",
        "pay_3",
        date,
        "",
        TextEncoding::Utf8,
    ));
    vec![file]
}
