//! The whole chain against the files banks really send. Refunds are made through the merchant API
//! on channels whose banks are WeChat Pay (current and legacy bills), UnionPay (ZM, GBK) and
//! Alipay (业务明细, GBK); the bank simulator reports them by the ids the platform gave it, within
//! each channel's rules, in its bank's layout; reconciliation reads those files and makes the
//! refunds final. Then the trouble cases: the same bill saved as GBK, or with a byte-order mark and
//! CRLF line endings; a row of another channel's refund; a duplicate a corrected file moves; a ZM
//! file of blank lines; refused uploads that leave a trace.

use chrono::Duration;
use tuikuan_kernel::bank_ref::IdScheme;
use tuikuan_kernel::{Clock, ManualClock};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_reconciliation::domain::inspect::parse_bytes;
use tuikuan_reconciliation::domain::{
    alipay, unionpay, wechat, BankRecord, BankRecordStatus, FileFormat, ParseOptions, RecordKind,
    TextEncoding, WechatLayout,
};

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};

/// (channel, its bank's layout, the id scheme it is configured with or gets by its kind).
const CHANNELS: [(&str, rfd::ChannelKind, &str, &str); 4] = [
    ("WXPAY", rfd::ChannelKind::Aggregated, "wechat", "wechat"),
    (
        "WXOLD",
        rfd::ChannelKind::Aggregated,
        "wechat-legacy",
        "wechat",
    ),
    ("ALIPAY", rfd::ChannelKind::Aggregated, "alipay", "alipay"),
    ("CUP", rfd::ChannelKind::Unionpay, "unionpay", ""),
];

async fn start(store: Store) -> Option<Sandbox> {
    let clock = ManualClock::at_business(tuikuan::demo::demo_start_date(), 10);
    let mut sb = Sandbox::start_with(store, 0, clock, |config, _| {
        for (code, _, layout, _) in CHANNELS {
            config
                .bank
                .clearing_formats
                .insert(code.to_string(), layout.to_string());
        }
    })
    .await?;
    for (code, kind, _, scheme) in CHANNELS {
        sb.c.refund
            .upsert_channel(rfd::Channel {
                code: code.into(),
                kind: kind as i32,
                methods: vec![rfd::RefundMethod::Interface as i32],
                original_route_window_days: 180,
                bank_code: code.into(),
                id_scheme: scheme.into(),
            })
            .await
            .expect("refund channel");
        sb.c.business
            .upsert_channel(biz::Channel {
                code: code.into(),
                refund_window_days: 30,
                enabled: true,
            })
            .await
            .expect("business channel");
    }
    Some(sb)
}

/// A paid order on `channel` and a merchant refund of it.
async fn paid_and_refunded(sb: &mut Sandbox, channel: &str, no: &str, amount: &str) -> String {
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: "MA".into(),
            order_no: format!("O-{no}"),
            channel: channel.into(),
            amount: amount.into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            ..Default::default()
        })
        .await
        .expect("payment");
    let r = sb
        .refund(KEY_A, &format!("R-{no}"), &format!("O-{no}"), amount)
        .await
        .expect("refund accepted");
    r.refund_id
}

/// The attempt's bank reference id, as `ctl refund show` prints it.
async fn reference_of(sb: &mut Sandbox, refund_id: &str) -> String {
    let order =
        sb.c.refund
            .get_refund(rfd::GetRefundRequest {
                refund_id: refund_id.into(),
                ..Default::default()
            })
            .await
            .expect("refund order")
            .into_inner();
    assert_eq!(order.attempts.len(), 1);
    assert_eq!(order.attempts[0].bank_reference_id, order.bank_reference_id);
    order.bank_reference_id
}

/// Sends the day's refunds to the bank and lets it finish them; returns the business date.
async fn bank_day(sb: &mut Sandbox) -> String {
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    let date = sb.clock.today().to_string();
    sb.clock.advance(Duration::hours(22));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    date
}

async fn reconcile(sb: &mut Sandbox, channel: &str, date: &str) -> rec::ReconciliationRun {
    sb.c.reconciliation
        .run_reconciliation(rec::RunReconciliationRequest {
            channel: channel.into(),
            date: date.into(),
            ..Default::default()
        })
        .await
        .expect("reconciliation")
        .into_inner()
}

async fn upload(
    sb: &mut Sandbox,
    channel: &str,
    date: &str,
    format: &str,
    content: Vec<u8>,
) -> Result<rec::ReconciliationRun, tonic::Status> {
    let request = rec::RunReconciliationFileRequest {
        channel: channel.into(),
        date: date.into(),
        format: format.into(),
        content,
        ..Default::default()
    };
    // Uploaded by the finance operator `finance-1`, whose signed token names who acted.
    let token = sb
        .cluster
        .operator_token("finance-1", &[tuikuan_auth::Role::Finance])
        .expect("token");
    sb.c.with_token(&token)
        .expect("clients")
        .reconciliation
        .run_reconciliation_file(request)
        .await
        .map(|r| r.into_inner())
}

/// A successful refund row reported by `id`, for files written by hand.
fn record(id: &str, bank_ref: &str, amount: &str, at: chrono::DateTime<chrono::Utc>) -> BankRecord {
    BankRecord {
        kind: RecordKind::Refund,
        id: id.into(),
        bank_ref: bank_ref.into(),
        original_ref: String::new(),
        channel: String::new(),
        amount: tuikuan_kernel::Money::parse(amount, "CNY", "amount").expect("amount"),
        status: BankRecordStatus::Success,
        completed_at: at,
        reason: String::new(),
        line: 1,
    }
}

/// The channel's discrepancies.
async fn discrepancies(sb: &mut Sandbox, channel: &str) -> Vec<rec::Discrepancy> {
    sb.c.reconciliation
        .list_discrepancies(rec::ListDiscrepanciesRequest {
            channel: channel.into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("discrepancies")
        .into_inner()
        .discrepancies
}

fn item<'a>(run: &'a rec::ReconciliationRun, reference: &str) -> &'a rec::Item {
    run.items
        .iter()
        .find(|i| i.bank_reference_id == reference)
        .unwrap_or_else(|| panic!("no item for {reference} in {:#?}", run.items))
}

async fn merchant_status(sb: &mut Sandbox, no: &str) -> biz::RefundStatus {
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    let r = sb
        .get_refund(KEY_A, &format!("R-{no}"))
        .await
        .expect("refund");
    biz::RefundStatus::try_from(r.status).expect("status")
}

async fn bank_file(sb: &mut Sandbox, channel: &str, date: &str) -> bank::ClearingFile {
    sb.c.bank
        .get_clearing_file(bank::GetClearingFileRequest {
            channel: channel.into(),
            date: date.into(),
        })
        .await
        .expect("clearing file")
        .into_inner()
}

/// Every channel's refunds reconcile from its bank's own layout, reported by ids within its rules.
async fn real_layouts_reconcile(store: Store) {
    let Some(mut sb) = start(store).await else {
        return;
    };
    let mut refunds = Vec::new();
    for (n, (channel, _, _, _)) in CHANNELS.iter().enumerate() {
        let ok = paid_and_refunded(&mut sb, channel, &format!("{channel}-1"), "12.50").await;
        // Cents .13: the bank fails the interface refund.
        let failed = paid_and_refunded(&mut sb, channel, &format!("{channel}-2"), "3.13").await;
        refunds.push((n, *channel, ok, failed));
    }
    let date = bank_day(&mut sb).await;
    for (_, channel, ok, failed) in &refunds {
        let (_, _, layout, scheme) = CHANNELS.iter().find(|c| c.0 == *channel).unwrap();
        let reference = reference_of(&mut sb, ok).await;
        let scheme = IdScheme::parse(scheme, "scheme")
            .unwrap()
            .unwrap_or(IdScheme::UnionPay);
        assert!(scheme.check(&reference).is_ok(), "{channel}: {reference}");
        if scheme == IdScheme::UnionPay {
            // The refund id does not fit orderId (underscore, 35 characters): a fitted id does.
            assert_ne!(&reference, ok);
            assert!(
                reference.len() <= 32 && reference.starts_with("TK"),
                "{reference}"
            );
        } else {
            assert_eq!(&reference, ok);
        }

        let file = bank_file(&mut sb, channel, &date).await;
        let format = FileFormat::parse(&file.format).expect("declared format");
        let (records, stats) = parse_bytes(
            &file.content,
            format,
            ParseOptions {
                encoding: TextEncoding::Detect,
                business_date: date.parse().unwrap(),
            },
        )
        .unwrap_or_else(|e| panic!("{channel} {layout}: {e}"));
        assert!(records.iter().any(|r| r.id == reference), "{channel}");
        if matches!(*layout, "unionpay" | "alipay") {
            assert_eq!(stats.encoding, "gbk", "{channel}");
        }

        let run = reconcile(&mut sb, channel, &date).await;
        assert_eq!(run.format, format.as_str(), "{channel}");
        let matched = item(&run, &reference);
        assert_eq!(matched.outcome, rec::Outcome::Matched as i32, "{matched:?}");
        assert!(matched.written_back);
        assert_eq!(matched.refund_id, *ok);
        let failed_ref = reference_of(&mut sb, failed).await;
        let f = item(&run, &failed_ref);
        if layout.starts_with("wechat") {
            // A WeChat bill lists the closed refund: the failure is final at once.
            assert_eq!(f.outcome, rec::Outcome::BankFailed as i32, "{f:?}");
        } else {
            // ZM and 业务明细 list cleared business only: the refund waits in suspense.
            assert_eq!(f.outcome, rec::Outcome::PlatformOnly as i32, "{f:?}");
            assert!(f.detail.contains("in suspense"), "{}", f.detail);
        }
        assert_eq!(run.discrepancies, 0, "{channel}: {run:#?}");
        assert_eq!(
            merchant_status(&mut sb, &format!("{channel}-1")).await,
            biz::RefundStatus::Succeeded
        );
    }

    // Re-running changes nothing.
    let again = reconcile(&mut sb, "CUP", &date).await;
    assert!(again.replayed);
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(real_layouts_reconcile);

/// The trouble cases, on real-layout files of refunds made through the merchant API.
async fn trouble_cases(store: Store) {
    let Some(mut sb) = start(store).await else {
        return;
    };
    let wx = paid_and_refunded(&mut sb, "WXOLD", "T-1", "8.00").await;
    let cup = paid_and_refunded(&mut sb, "CUP", "T-2", "6.60").await;
    let date = bank_day(&mut sb).await;
    let cup_ref = reference_of(&mut sb, &cup).await;
    let legacy = bank_file(&mut sb, "WXOLD", &date).await.content;

    // The legacy bill, saved as GBK with CRLF line endings (as Excel on a Chinese Windows does),
    // uploaded with its format named: it reconciles.
    let text = String::from_utf8(legacy.clone()).unwrap();
    let gbk = tuikuan_reconciliation::domain::text::encode_as(
        &text.replace('\n', "\r\n"),
        TextEncoding::Gbk,
    );
    let run = upload(&mut sb, "WXOLD", &date, "wechat", gbk)
        .await
        .unwrap();
    assert_eq!(item(&run, &wx).outcome, rec::Outcome::Matched as i32);
    assert!(item(&run, &wx).written_back);
    // The same content with a byte-order mark and CRLF line endings is the same file.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(text.replace('\n', "\r\n").bytes());
    let first = upload(&mut sb, "WXOLD", &date, "wechat", legacy.clone())
        .await
        .unwrap();
    let same = upload(&mut sb, "WXOLD", &date, "wechat", bom)
        .await
        .unwrap();
    assert!(same.replayed);
    assert_eq!(same.run_id, first.run_id);

    // The bank's ZM file reconciles.
    let zm = bank_file(&mut sb, "CUP", &date).await.content;
    assert!(zm
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .all(|l| l.len() == 607));
    let own = reconcile(&mut sb, "CUP", &date).await;
    assert!(item(&own, &cup_ref).written_back);

    let at = chrono::DateTime::from_timestamp_millis(sb.clock.now_ms() - 3_600_000).unwrap();
    // A row for the UnionPay channel's refund in the WeChat bill is never matched there: a
    // corrected bill that carries it has an OTHER_CHANNEL discrepancy for it.
    let mut rows = vec![record(&wx, "4200000001202611250000000001", "8.00", at)];
    rows.push(record(&cup_ref, "4200000001202611250000000002", "6.60", at));
    let with_other = wechat::write_bill(WechatLayout::LegacyRefund, TextEncoding::Utf8, &rows);
    let corrected = upload(&mut sb, "WXOLD", &date, "wechat", with_other)
        .await
        .unwrap();
    assert_eq!(corrected.supersedes, first.run_id);
    let other = item(&corrected, &cup_ref);
    assert_eq!(
        other.outcome,
        rec::Outcome::OtherChannel as i32,
        "{other:?}"
    );
    assert!(!other.discrepancy_id.is_empty());
    assert!(!other.written_back);

    // A duplicate row, then a corrected file that moves it to another line: one discrepancy.
    let lines: Vec<&[u8]> = zm
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut dup = Vec::new();
    for l in [lines[0], lines[0]] {
        dup.extend_from_slice(l);
        dup.push(b'\n');
    }
    let d1 = upload(&mut sb, "CUP", &date, "unionpay", dup.clone())
        .await
        .unwrap();
    let unknown = record(
        "TK00000000000000000000UNKNOWN1",
        "201125100000000099999",
        "1.00",
        at,
    );
    let mut moved = unionpay::write_zm(&[unknown], TextEncoding::Gbk);
    moved.extend(dup);
    let d2 = upload(&mut sb, "CUP", &date, "unionpay", moved)
        .await
        .unwrap();
    assert_ne!(d1.run_id, d2.run_id);
    assert_eq!(d2.supersedes, d1.run_id);
    let dups: Vec<rec::Discrepancy> = discrepancies(&mut sb, "CUP")
        .await
        .into_iter()
        .filter(|d| d.kind == rec::DiscrepancyKind::DuplicateRow as i32)
        .collect();
    assert_eq!(dups.len(), 1, "{dups:#?}");

    // Blank lines are not a ZM file; every refused upload leaves a trace.
    let e = upload(&mut sb, "CUP", &date, "unionpay", b"\n\n".to_vec())
        .await
        .unwrap_err();
    assert!(
        e.message().contains("line 1: row: blank line"),
        "{}",
        e.message()
    );
    let listed =
        sb.c.reconciliation
            .list_runs(rec::ListRunsRequest {
                channel: "CUP".into(),
                limit: 20,
                include_rejected: true,
            })
            .await
            .unwrap()
            .into_inner();
    let refused = &listed.rejected[0];
    assert_eq!(
        (
            refused.operator.as_str(),
            refused.error_line,
            refused.error_field.as_str(),
            refused.size_bytes
        ),
        ("finance-1", 1, "row", 2)
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(trouble_cases);

/// A bank's bill that disagrees, in Alipay's 业务明细 (GBK) and WeChat Pay's current bill: a wrong
/// amount and an unknown row are discrepancies, a missing refund waits in suspense, nothing is
/// written back for them, a re-upload changes nothing, and the export gives finance the amounts.
async fn disagreeing_bills(store: Store) {
    let Some(mut sb) = start(store).await else {
        return;
    };
    for (channel, format) in [("ALIPAY", "alipay"), ("WXPAY", "wechat")] {
        let short = paid_and_refunded(&mut sb, channel, &format!("{channel}-D1"), "20.00").await;
        let missing = paid_and_refunded(&mut sb, channel, &format!("{channel}-D2"), "5.00").await;
        let date = bank_day(&mut sb).await;
        let (short_ref, missing_ref) = (
            reference_of(&mut sb, &short).await,
            reference_of(&mut sb, &missing).await,
        );
        let at = chrono::DateTime::from_timestamp_millis(sb.clock.now_ms() - 3_600_000).unwrap();
        let mut rows = vec![record(
            &short_ref,
            "2026112522001400000000000001",
            "19.00",
            at,
        )];
        rows.push(record(
            "UNKNOWN-REQUEST-1",
            "2026112522001400000000000002",
            "2.00",
            at,
        ));
        let content = if format == "alipay" {
            alipay::write_detail(&rows, date.parse().unwrap(), TextEncoding::Gbk)
        } else {
            wechat::write_bill(WechatLayout::CurrentRefund, TextEncoding::Utf8, &rows)
        };
        let run = upload(&mut sb, channel, &date, format, content.clone())
            .await
            .unwrap_or_else(|e| panic!("{channel}: {e}"));
        let wrong = item(&run, &short_ref);
        assert_eq!(
            wrong.outcome,
            rec::Outcome::AmountMismatch as i32,
            "{wrong:?}"
        );
        assert_eq!(
            (wrong.platform_amount.as_str(), wrong.bank_amount.as_str()),
            ("20.00", "19.00")
        );
        assert!(!wrong.written_back && !wrong.discrepancy_id.is_empty());
        let absent = item(&run, &missing_ref);
        assert_eq!(
            absent.outcome,
            rec::Outcome::PlatformOnly as i32,
            "{absent:?}"
        );
        assert!(!absent.written_back);
        let unknown = item(&run, "UNKNOWN-REQUEST-1");
        assert_eq!(
            unknown.outcome,
            rec::Outcome::BankOnly as i32,
            "{unknown:?}"
        );
        assert!(!unknown.discrepancy_id.is_empty());
        assert_eq!(run.discrepancies, 2, "{channel}: {run:#?}");
        for no in ["D1", "D2"] {
            assert_eq!(
                merchant_status(&mut sb, &format!("{channel}-{no}")).await,
                biz::RefundStatus::Processing,
                "{channel}-{no} stays open"
            );
        }

        // The same bill again: the same run, no new discrepancy.
        let again = upload(&mut sb, channel, &date, format, content)
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.run_id, run.run_id);
        let open = discrepancies(&mut sb, channel).await;
        assert_eq!(open.len(), 2, "{open:#?}");

        // Finance's export of the run keeps the amounts with their two decimals.
        let csv =
            sb.c.reconciliation
                .export_report(rec::ExportReportRequest {
                    run_id: run.run_id.clone(),
                    format: "csv".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
        let text = String::from_utf8(csv.content).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&short_ref))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains(",20.00,19.00,"), "{line}");
    }
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(disagreeing_bills);
