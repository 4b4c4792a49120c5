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
use tuikuan_kernel::bank_ref::IdScheme;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{ErrorCode, Money};
use tuikuan_reconciliation::domain::inspect::inspect;
use tuikuan_reconciliation::domain::{
    parse_all, AlipayBillParser, BankRecord, BankRecordStatus, ClearingFileParser, CsvV1Parser,
    RecordKind, TextEncoding, UnionpayZmParser, WechatBillParser, WechatLayout,
};

/// A fuzz target: arbitrary bytes in, a panic only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name, for harnesses.
pub const TARGETS: &[(&str, Target)] = &[
    ("recon_csv", recon_csv),
    ("recon_wechat", recon_wechat),
    ("recon_unionpay", recon_unionpay),
    ("recon_alipay", recon_alipay),
    ("recon_detect", recon_detect),
    ("bank_clearing_csv", bank_clearing_csv),
    ("merchant_create_refund", merchant_create_refund),
    ("money_parse", money_parse),
    ("external_id", external_id),
    ("bank_reference_id", bank_reference_id),
];

/// Reconciliation's `tuikuan-csv-v1` parser.
pub fn recon_csv(data: &[u8]) {
    check_recon(&CsvV1Parser, data);
}

const ENCODINGS: [TextEncoding; 3] = [TextEncoding::Detect, TextEncoding::Utf8, TextEncoding::Gbk];

fn business_date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap_or_default()
}

/// Reconciliation's WeChat Pay trade bill parser (every layout), in each encoding mode.
pub fn recon_wechat(data: &[u8]) {
    for encoding in ENCODINGS {
        check_recon(&WechatBillParser { encoding }, data);
    }
}

/// Reconciliation's UnionPay ZM parser (42 fields, 607 bytes), in each encoding mode.
pub fn recon_unionpay(data: &[u8]) {
    for encoding in ENCODINGS {
        check_recon(
            &UnionpayZmParser {
                encoding,
                business_date: business_date(),
            },
            data,
        );
    }
}

/// Reconciliation's Alipay 业务明细 parser, in each encoding mode.
pub fn recon_alipay(data: &[u8]) {
    for encoding in ENCODINGS {
        check_recon(&AlipayBillParser { encoding }, data);
    }
}

/// Format detection and `ctl recon inspect`'s reading of any bytes: never a panic; a refusal
/// names a field; an accepted file's rows are well formed.
pub fn recon_detect(data: &[u8]) {
    let report = inspect(data, None, TextEncoding::Detect, business_date());
    match &report.error {
        Some(e) => assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}"),
        None => {
            assert!(report.format.is_some());
            check_records(&report.rows, &report.stats);
        }
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

/// Bank reference ids (`tuikuan_kernel::bank_ref`): for every channel's scheme, `check` accepts
/// exactly the ids within its length and alphabet, and `fit` always gives an id the scheme accepts,
/// the same one every time, and the input itself when it already fits.
pub fn bank_reference_id(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for scheme in IdScheme::ALL {
        let rules = scheme.rules();
        let len = text.chars().count();
        let want = (rules.min_len..=rules.max_len).contains(&len)
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || rules.extra.contains(c));
        assert_eq!(scheme.check(&text).is_ok(), want, "{scheme} check {text:?}");
        let fitted = scheme.fit(&text);
        assert!(
            scheme.check(&fitted).is_ok(),
            "{scheme} fit {text:?} -> {fitted:?}"
        );
        assert_eq!(scheme.fit(&text), fitted, "{scheme} fit is deterministic");
        if want {
            assert_eq!(fitted, text, "{scheme} keeps an id that fits");
        }
    }
}

fn check_recon(parser: &dyn ClearingFileParser, data: &[u8]) {
    match parse_all(parser, data) {
        Ok((records, stats)) => check_records(&records, &stats),
        Err(e) => assert_names_line_and_field(&e.code, &e.message),
    }
}

/// An accepted file: refund records are what matching can trust (positive amounts, printable ids
/// of at most 64 characters, a bank reference), payment records are counted apart, lines ascend.
fn check_records(records: &[BankRecord], stats: &tuikuan_reconciliation::domain::FileStats) {
    let refunds = records.iter().filter(|r| r.kind.is_refund()).count();
    assert_eq!(refunds, stats.records, "{stats:?}");
    assert_eq!(records.len() - refunds, stats.skipped, "{stats:?}");
    assert!(stats.records + stats.skipped <= stats.rows, "{stats:?}");
    let mut last_line = 0;
    for r in records {
        assert!(r.line > last_line, "lines in file order: {r:?}");
        last_line = r.line;
        assert_canonical_or_zero(&r.amount);
        if r.kind == RecordKind::Payment {
            assert!(r.amount.to_minor() >= 0, "a negative payment: {r:?}");
            continue;
        }
        assert!(
            r.amount.is_positive(),
            "accepted a non-positive amount: {r:?}"
        );
        assert!(
            !r.id.is_empty() && r.id.len() <= 64 && r.id.bytes().all(|b| b.is_ascii_graphic()),
            "{r:?}"
        );
        assert!(!r.bank_ref.is_empty(), "{r:?}");
    }
}

fn assert_canonical_or_zero(m: &Money) {
    if m.is_positive() {
        assert_canonical(m);
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
        "recon_alipay" => alipay_seeds(),
        "recon_detect" => {
            let mut all = csv_seeds();
            all.extend(wechat_seeds());
            all.extend(unionpay_seeds());
            all.extend(alipay_seeds());
            all
        }
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
        "bank_reference_id" => vec![
            b"rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60".to_vec(),
            b"rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60-2".to_vec(),
            b"TK0YH2NOHIZ9PFOXJ6I3EYO2H6KRVA1I".to_vec(),
            b"a|b*c@d".to_vec(),
            b"ORD.2026".to_vec(),
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

/// Hand-written fixtures of every published layout (crates/reconciliation/tests/fixtures).
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../crates/reconciliation/tests/fixtures/",
            $name
        ))
        .to_vec()
    };
}

fn seed_records() -> Vec<BankRecord> {
    let at = |h: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .and_then(|d| d.and_hms_opt(h, 0, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    let cny = |minor| Money::from_minor(minor, tuikuan_kernel::Currency::Cny);
    let rec = |kind, id: &str, minor, status, line| BankRecord {
        kind,
        id: id.into(),
        bank_ref: format!("4200{line:016}"),
        original_ref: format!("ORD{line}"),
        channel: String::new(),
        amount: cny(minor),
        status,
        completed_at: at(2 + line as u32),
        reason: String::new(),
        line,
    };
    vec![
        rec(
            RecordKind::Payment,
            "ORD1",
            10_000,
            BankRecordStatus::Success,
            2,
        ),
        rec(
            RecordKind::Refund,
            "TKW1000000000000000001",
            1250,
            BankRecordStatus::Success,
            3,
        ),
        rec(RecordKind::Refund, "rf_2", 300, BankRecordStatus::Failed, 4),
    ]
}

fn wechat_seeds() -> Vec<Vec<u8>> {
    use tuikuan_reconciliation::domain::wechat::write_bill;
    let mut seeds = vec![
        fixture!("wechat_current_all.csv"),
        fixture!("wechat_current_refund.csv"),
        fixture!("wechat_current_refund_gbk.csv"),
        fixture!("wechat_legacy_all.csv"),
        fixture!("wechat_legacy_refund.csv"),
    ];
    for layout in WechatLayout::ALL {
        seeds.push(write_bill(layout, TextEncoding::Utf8, &seed_records()));
    }
    seeds
}

fn unionpay_seeds() -> Vec<Vec<u8>> {
    use tuikuan_reconciliation::domain::unionpay::write_zm;
    vec![
        fixture!("unionpay_zm_gbk.txt"),
        write_zm(&seed_records(), TextEncoding::Gbk),
    ]
}

fn alipay_seeds() -> Vec<Vec<u8>> {
    use tuikuan_reconciliation::domain::alipay::write_detail;
    vec![
        fixture!("alipay_detail_gbk.csv"),
        write_detail(&seed_records(), business_date(), TextEncoding::Gbk),
    ]
}
