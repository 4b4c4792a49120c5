use super::*;

const HEADER: &str = "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";

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
        original_ref: String::new(),
        line,
    }
}

fn csv_parse(bytes: &[u8]) -> Result<Vec<BankRecord>> {
    parse_all(&CsvV1Parser, bytes).map(|(r, _)| r)
}

fn plat(id: &str, amount: &str) -> PlatformRefund {
    PlatformRefund {
        bank_reference_id: String::new(),
        refund_id: id.into(),
        amount: cny(amount),
    }
}

use BankRecordStatus::{Failed, Success};

fn parse(body: &str) -> Result<Vec<BankRecord>> {
    csv_parse(format!("{HEADER}{body}").as_bytes())
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
}

#[test]
fn csv_header_only_bom_and_blank_lines() {
    assert!(parse("").unwrap().is_empty());
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(HEADER.as_bytes());
    bytes
        .extend_from_slice(b"\nREFUND,rf_1,BK1,netbank,0.01,CNY,SUCCESS,2026-11-25T10:00:00Z,\n\n");
    let records = csv_parse(&bytes).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].amount.to_minor(), 1);
    assert_eq!(records[0].line, 3);
    let records = csv_parse(
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
    let e = csv_parse(format!("{HEADER}\n\nREFUND,rf_1\n").as_bytes()).unwrap_err();
    assert!(
        e.message.starts_with("clearing file line 4: row: "),
        "{}",
        e.message
    );
}

#[test]
fn csv_rejects_bad_headers() {
    let e = csv_parse(b"").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("line 1: header"), "{}", e.message);
    let e = csv_parse(b"record_type,id,bank_ref,channel,amount,currency,status,completed_at\n")
        .unwrap_err();
    assert!(e.message.contains("line 1: header"), "{}", e.message);
    let e =
        csv_parse(b"id,record_type,bank_ref,channel,amount,currency,status,completed_at,reason\n")
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
    bytes
        .extend_from_slice(b"REFUND,rf_1,BK1,netbank,1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,\xFF\n");
    let e = csv_parse(&bytes).unwrap_err();
    assert!(
        e.message.starts_with("clearing file line 2: reason: "),
        "{}",
        e.message
    );
}

#[test]
fn parser_registry_and_channel_check() {
    let pick = |explicit: &str, configured: Option<&str>, declared: &str| {
        FileFormat::choose(explicit, configured, declared).map(|f| {
            parser_for(
                f,
                ParseOptions {
                    encoding: TextEncoding::Detect,
                    business_date: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
                },
            )
            .format()
        })
    };
    assert_eq!(pick("", None, "").unwrap(), CSV_V1_FORMAT);
    assert_eq!(pick("", None, CSV_V1_FORMAT).unwrap(), CSV_V1_FORMAT);
    assert_eq!(
        pick("wechat", Some("unionpay"), "csv").unwrap(),
        WECHAT_FORMAT
    );
    assert_eq!(pick("", Some("unionpay"), "csv").unwrap(), UNIONPAY_FORMAT);
    assert_eq!(pick("", None, "wechat-bill").unwrap(), WECHAT_FORMAT);
    let e = pick("excel", None, "").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.starts_with("format: "), "{}", e.message);
    let ok = rec(2, "rf_1", "1.00", Success);
    let mut other = rec(3, "rf_2", "1.00", Success);
    other.channel = "quickpay".into();
    let e = check_record_channel(&other, "netbank").unwrap_err();
    assert!(
        e.message.starts_with("clearing file line 3: channel: "),
        "{}",
        e.message
    );
    assert!(check_record_channel(&ok, "netbank").is_ok());
    other.channel.clear();
    assert!(check_record_channel(&other, "netbank").is_ok());
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
    // File order: lines 2, 3, 4, 5, 7.
    assert_eq!(
        outcomes(&items),
        vec![
            ("rf_a", Outcome::Matched),
            ("rf_x", Outcome::BankOnly),
            ("rf_x", Outcome::Duplicate),
            ("rf_a", Outcome::Duplicate),
            ("rf_a", Outcome::Duplicate),
        ]
    );
    assert_eq!(items[0].line, Some(2));
    assert_eq!(items[3].line, Some(5));
    assert_eq!(items[4].line, Some(7));
    assert!(items[3].detail.starts_with("duplicate of line 2"));
    assert!(items[4].detail.starts_with("duplicate of line 2"));
    assert!(items[2].detail.starts_with("duplicate of line 3"));
    assert!(items[1..].iter().all(|i| i.write_back.is_none()));
    assert_eq!(items[3].platform_amount.unwrap().to_minor(), 100);
    assert_eq!(items[2].platform_amount, None);
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
fn payout_and_file_rows_match_through_the_bank_reference_id() {
    let mut payout = rec(2, "po_1", "1.00", Success);
    payout.kind = RecordKind::Payout;
    let mut file = rec(3, "row_7", "2.00", Failed);
    file.kind = RecordKind::File;
    let interface = rec(4, "rf_c", "3.00", Success);
    let mut a = plat("rf_a", "1.00");
    a.bank_reference_id = "po_1".into();
    let mut b = plat("rf_b", "2.00");
    b.bank_reference_id = "row_7".into();
    let c = plat("rf_c", "3.00");
    // A late row for rf_b's earlier attempt (its refund id) is unknown now.
    let old_attempt = rec(5, "rf_b", "2.00", Success);
    let items = match_refunds(&[payout, file, interface, old_attempt], &[a, b, c]).unwrap();
    assert_eq!(
        outcomes(&items),
        vec![
            ("rf_a", Outcome::Matched),
            ("rf_b", Outcome::BankFailed),
            ("rf_c", Outcome::Matched),
            ("rf_b", Outcome::BankOnly),
        ]
    );
    assert_eq!(items[0].bank_reference_id, "po_1");
    assert_eq!(items[1].bank_reference_id, "row_7");
    assert_eq!(items[2].bank_reference_id, "rf_c");
}

#[test]
fn processing_rows_keep_the_refund_platform_only() {
    let items = match_refunds(
        &[rec(2, "rf_a", "1.00", BankRecordStatus::Processing)],
        &[plat("rf_a", "1.00")],
    )
    .unwrap();
    assert_eq!(outcomes(&items), vec![("rf_a", Outcome::PlatformOnly)]);
    assert_eq!(items[0].write_back, None);
    assert!(items[0].detail.contains("processing"));
}

#[test]
fn suspense_window() {
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    assert_eq!(
        suspense_decision(None, d("2026-11-25"), 1),
        SuspenseDecision::Enter
    );
    assert_eq!(
        suspense_decision(Some(d("2026-11-25")), d("2026-11-25"), 1),
        SuspenseDecision::Wait {
            since: d("2026-11-25"),
            days_left: 1
        }
    );
    assert_eq!(
        suspense_decision(Some(d("2026-11-25")), d("2026-11-26"), 1),
        SuspenseDecision::Expire {
            since: d("2026-11-25")
        }
    );
    assert!(matches!(
        suspense_decision(Some(d("2026-11-25")), d("2026-11-26"), 3),
        SuspenseDecision::Wait { days_left: 2, .. }
    ));
    assert!(matches!(
        suspense_decision(None, d("2026-11-26"), 0),
        SuspenseDecision::Expire { .. }
    ));
}

fn discrepancy(
    kind: DiscrepancyKind,
    status: BankRecordStatus,
    platform: &str,
    bank: &str,
) -> Discrepancy {
    let mut item = match_refunds(&[rec(2, "rf_a", bank, status)], &[plat("rf_a", platform)])
        .unwrap()
        .remove(0);
    item.platform_final = None;
    new_discrepancy(
        kind,
        "netbank",
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        "rcn_1",
        &item,
        "x".into(),
        0,
    )
}

#[test]
fn bank_wins_plans() {
    use AdjustmentKind::*;
    use ResolutionAction::*;
    let plan = |d: &Discrepancy| plan_resolution(d, Resolution::BankWins, "").unwrap();
    let d = discrepancy(DiscrepancyKind::AmountMismatch, Success, "10.00", "12.50");
    assert_eq!(
        plan(&d),
        vec![
            WriteBack {
                status: FinalStatus::Succeeded,
                reason: "bank paid 12.50 CNY (platform 10.00 CNY), bank wins".into()
            },
            Adjust {
                kind: BankToSuspense,
                amount: cny("2.50")
            }
        ]
    );
    let d = discrepancy(DiscrepancyKind::AmountMismatch, Success, "10.00", "9.00");
    assert_eq!(
        plan(&d)[1],
        Adjust {
            kind: SuspenseToBank,
            amount: cny("1.00")
        }
    );
    let d = discrepancy(DiscrepancyKind::AmountMismatch, Failed, "10.00", "9.00");
    assert_eq!(plan(&d).len(), 1);
    let d = discrepancy(DiscrepancyKind::PlatformMissed, Success, "1.00", "1.00");
    assert_eq!(
        plan(&d),
        vec![Adjust {
            kind: BankToSuspense,
            amount: cny("1.00")
        }]
    );
    let d = discrepancy(DiscrepancyKind::PlatformMissed, Failed, "1.00", "1.00");
    assert!(plan(&d).is_empty());
    let d = discrepancy(DiscrepancyKind::BankMissed, Success, "1.00", "1.00");
    assert!(matches!(
        plan(&d)[0],
        WriteBack {
            status: FinalStatus::Failed,
            ..
        }
    ));
    // The bank failed a refund the platform had made SUCCEEDED: reopened, nothing to suspense.
    let d = discrepancy(DiscrepancyKind::StatusConflict, Failed, "1.00", "1.00");
    let actions = plan(&d);
    assert_eq!(actions.len(), 1);
    assert!(matches!(actions[0], Reopen { .. }));
    assert_eq!(actions[0].to_string(), "reopen PROCESSING");
    assert!(plan_resolution(&d, Resolution::PlatformWins, "")
        .unwrap()
        .is_empty());
    // The bank paid a refund the platform had failed: reinstated, nothing to suspense.
    let d = discrepancy(DiscrepancyKind::StatusConflict, Success, "1.00", "1.00");
    let actions = plan(&d);
    assert_eq!(actions.len(), 1);
    assert!(matches!(actions[0], Reinstate { .. }));
    assert_eq!(actions[0].to_string(), "reinstate SUCCEEDED");
    // Platform wins on a refund the bank never reported: completed with the bank's evidence,
    // refused without it.
    let d = discrepancy(DiscrepancyKind::BankMissed, Success, "1.00", "1.00");
    let e = plan_resolution(&d, Resolution::PlatformWins, " ").unwrap_err();
    assert!(e.message.starts_with("evidence"), "{}", e.message);
    let actions = plan_resolution(&d, Resolution::PlatformWins, "STMT-2026-11-25-0042").unwrap();
    assert!(matches!(
        &actions[0],
        WriteBack { status: FinalStatus::Succeeded, reason } if reason.contains("STMT-2026-11-25-0042")
    ));
    let long = "x".repeat(129);
    assert!(plan_resolution(&d, Resolution::BankWins, &long).is_err());
    // Platform wins on other kinds records the decision only, evidence or not.
    let d = discrepancy(DiscrepancyKind::AmountMismatch, Success, "1.00", "2.00");
    assert!(plan_resolution(&d, Resolution::PlatformWins, "STMT-1")
        .unwrap()
        .is_empty());
    let d = discrepancy(DiscrepancyKind::StatusConflict, Failed, "1.00", "1.00");
    // The same fact, the same id.
    let again = discrepancy(DiscrepancyKind::StatusConflict, Failed, "1.00", "1.00");
    assert_eq!(again.discrepancy_id, d.discrepancy_id);
    assert_eq!(d.severity, Severity::High);
}

#[test]
fn resolve_state_machine() {
    let mut d = discrepancy(DiscrepancyKind::BankMissed, Success, "1.00", "1.00");
    let bw = Resolution::BankWins;
    assert_eq!(
        check_resolve(&d, bw, "", "r").unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert!(check_resolve(&d, bw, "ops", " ")
        .unwrap_err()
        .message
        .starts_with("reason"));
    assert_eq!(
        check_resolve(&d, bw, "ops", "r").unwrap(),
        ResolveStep::Start
    );
    d.status = DiscrepancyStatus::Resolving;
    d.resolution = Some(bw);
    d.operator = "ops".into();
    assert_eq!(
        check_resolve(&d, bw, "ops", "r").unwrap(),
        ResolveStep::Resume
    );
    assert_eq!(
        check_resolve(&d, Resolution::PlatformWins, "ops", "r")
            .unwrap_err()
            .code,
        ErrorCode::InvalidStateTransition
    );
    d.status = DiscrepancyStatus::Resolved;
    assert_eq!(
        check_resolve(&d, bw, "ops", "r").unwrap_err().code,
        ErrorCode::InvalidStateTransition
    );
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
    // File-line order, then the platform-only ones by refund id.
    assert_eq!(
        outcomes(&expected),
        vec![
            ("rf_c", Outcome::Matched),
            ("rf_a", Outcome::BankFailed),
            ("rf_e", Outcome::BankOnly),
            ("rf_c", Outcome::Duplicate),
            ("rf_b", Outcome::PlatformOnly),
            ("rf_d", Outcome::PlatformOnly),
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
        channel: "netbank".into(),
        amount: cny(amount),
        final_status: status,
    }
}

#[test]
fn bank_only_already_final_the_same_way_is_matched_without_write_back() {
    let item = resolve_bank_only(
        bank_only(Success, "3.00"),
        Some(&known(Some(FinalStatus::Succeeded), "3.00")),
        "netbank",
    );
    assert_eq!(item.outcome, Outcome::Matched);
    assert_eq!(item.write_back, None);
    assert_eq!(item.platform_amount.unwrap().to_minor(), 300);
    assert!(item.detail.starts_with("already final"), "{}", item.detail);
    assert_eq!(WriteBackState::initial(&item), WriteBackState::NotNeeded);

    let item = resolve_bank_only(
        bank_only(Failed, "3.00"),
        Some(&known(Some(FinalStatus::Failed), "3.00")),
        "netbank",
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
        let item = resolve_bank_only(bank_only(Success, "3.00"), k.as_ref(), "netbank");
        assert_eq!(item.outcome, Outcome::BankOnly, "{k:?}");
        assert_eq!(item.write_back, None);
        assert_eq!(item.platform_amount, k.as_ref().map(|k| k.amount));
        assert_eq!(
            discrepancy_kind_of(&item),
            Some(match k.as_ref().and_then(|k| k.final_status) {
                Some(_) => DiscrepancyKind::StatusConflict,
                None => DiscrepancyKind::PlatformMissed,
            })
        );
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
            Some(&known(Some(FinalStatus::Failed), "1.00")),
            "netbank"
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
        content_sha256: String::new(),
        file_format: CSV_V1_FORMAT.into(),
        file_rows: 3,
        skipped_rows: 0,
        source: "bank".into(),
        supersedes: None,
        superseded_by: None,
        discrepancies: 0,
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

#[test]
fn a_row_of_another_channels_refund_is_never_matched() {
    // Final the same way, same amount: on its own channel this would be "already final".
    let mut other = known(Some(FinalStatus::Succeeded), "3.00");
    other.channel = "quickpay".into();
    for k in [
        other.clone(),
        KnownRefund {
            final_status: None,
            ..other.clone()
        },
    ] {
        let item = resolve_bank_only(bank_only(Success, "3.00"), Some(&k), "netbank");
        assert_eq!(item.outcome, Outcome::OtherChannel);
        assert_eq!(item.write_back, None);
        assert!(
            item.detail.contains("belongs to channel quickpay"),
            "{}",
            item.detail
        );
        assert_eq!(
            discrepancy_kind_of(&item),
            Some(DiscrepancyKind::OtherChannel)
        );
        assert_eq!(item.counted_amount(), Some(cny("3.00")));
    }
}

#[test]
fn a_duplicate_is_keyed_by_its_occurrence_not_its_line() {
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let key_of = |records: &[BankRecord]| -> Vec<String> {
        match_refunds(records, &[plat("rf_1", "1.00")])
            .unwrap()
            .iter()
            .filter(|i| i.outcome == Outcome::Duplicate)
            .map(|i| dedupe_key(DiscrepancyKind::Duplicate, "netbank", day, i))
            .collect()
    };
    let first = key_of(&[
        rec(2, "rf_1", "1.00", Success),
        rec(3, "rf_1", "1.00", Success),
    ]);
    // A corrected file with the same duplicate on other lines: the same fact.
    let moved = key_of(&[
        rec(2, "rf_x", "9.00", Success),
        rec(5, "rf_1", "1.00", Success),
        rec(9, "rf_1", "1.00", Success),
    ]);
    assert_eq!(first, moved);
    // A third row is another fact.
    let third = key_of(&[
        rec(2, "rf_1", "1.00", Success),
        rec(3, "rf_1", "1.00", Success),
        rec(4, "rf_1", "1.00", Success),
    ]);
    assert_eq!(third.len(), 2);
    assert_eq!(third[0], first[0]);
    assert_ne!(third[1], first[0]);
    // Bank-only references count their repeats the same way.
    let unknown = match_refunds(
        &[
            rec(2, "rf_u", "1.00", Success),
            rec(7, "rf_u", "1.00", Success),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        (
            unknown[0].outcome,
            unknown[1].outcome,
            unknown[1].occurrence
        ),
        (Outcome::BankOnly, Outcome::Duplicate, 2)
    );
}
