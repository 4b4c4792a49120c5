//! The invariant auditor and crash faults.
//!
//! - the auditor passes after scenarios in this process (every refund method with fallbacks,
//!   returned payouts and bank failures; fifty concurrent partial refunds), on SQLite and
//!   PostgreSQL, and catches a payment twice, a payment of an unknown refund and an unexplained
//!   merchant posting when they are planted;
//! - the chaos harness (`tuikuan chaos`) at a small size: seven real `tuikuan serve` processes, a
//!   load of refunds across all methods, services killed with SIGKILL and restarted, then every
//!   refund final, none lost, none paid twice, and the auditor satisfied.

use std::time::Duration;
use tuikuan_proto::tls::Principal;

use chrono::Duration as Days;
use tuikuan::audit::{self, AuditOptions, AuditReport};
use tuikuan::chaos::{self, ChaosOptions};
use tuikuan::clients::Clients;
use tuikuan_kernel::{Clock, ManualClock};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::payout::v1 as pay;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, CHANNEL, KEY_A, KEY_B};

async fn audit_now(c: &Clients, clock: &ManualClock) -> AuditReport {
    audit::run_with(
        c,
        &AuditOptions {
            now_ms: Some(clock.now_ms()),
            ..AuditOptions::default()
        },
    )
    .await
    .expect("every service answers the auditor")
}

/// A test card number with a valid Luhn digit.
pub(crate) fn card(n: u32) -> String {
    let body = format!("622848{n:012}");
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Channels for every method besides the sandbox's interface channel.
const METHOD_CHANNELS: &[(&str, rfd::ChannelKind, &[rfd::RefundMethod], &str)] = &[
    (
        "QUICK",
        rfd::ChannelKind::QuickPay,
        &[rfd::RefundMethod::Payout, rfd::RefundMethod::Offline],
        "CMB",
    ),
    (
        "UNION",
        rfd::ChannelKind::Unionpay,
        &[rfd::RefundMethod::FileUpload, rfd::RefundMethod::Offline],
        "CCB",
    ),
    (
        "NETBANK",
        rfd::ChannelKind::NetBanking,
        &[
            rfd::RefundMethod::Interface,
            rfd::RefundMethod::Payout,
            rfd::RefundMethod::Offline,
        ],
        "ICBC",
    ),
];

pub(crate) async fn add_method_channels(sb: &mut Sandbox) {
    for (code, kind, methods, bank_code) in METHOD_CHANNELS {
        sb.c.refund
            .upsert_channel(rfd::Channel {
                code: (*code).into(),
                kind: *kind as i32,
                methods: methods.iter().map(|m| *m as i32).collect(),
                original_route_window_days: 180,
                bank_code: (*bank_code).into(),
                ..Default::default()
            })
            .await
            .expect("refund channel");
        sb.c.business
            .upsert_channel(biz::Channel {
                code: (*code).into(),
                refund_window_days: 365,
                enabled: true,
            })
            .await
            .expect("business channel");
    }
}

pub(crate) async fn pay_on(
    sb: &mut Sandbox,
    merchant: &str,
    order: &str,
    channel: &str,
    amount: &str,
    n: u32,
) {
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: merchant.into(),
            order_no: order.into(),
            channel: channel.into(),
            amount: amount.into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            payer_card_no: card(n),
            payer_name: format!("Payer {n}"),
            ..Default::default()
        })
        .await
        .expect("payment recorded");
}

/// One day of every method: send, pay out, spreadsheets, the bank, next morning's
/// reconciliation of every channel, outcomes delivered.
async fn every_method_day(sb: &mut Sandbox) {
    let c = &mut sb.c;
    c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    c.refund
        .run_payout_dispatch(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("payout dispatch");
    c.payout
        .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    let date = sb.clock.today();
    let batches = c
        .batch
        .generate_batches(rfd::GenerateBatchesRequest {
            date: date.to_string(),
        })
        .await
        .expect("batches")
        .into_inner()
        .batches;
    for b in batches
        .iter()
        .filter(|b| b.status == rfd::BatchStatus::Generated as i32)
    {
        let status = if b.method == rfd::RefundMethod::FileUpload as i32 {
            rfd::BatchStatus::Uploaded
        } else {
            rfd::BatchStatus::Sent
        };
        c.batch
            .mark_batch(rfd::MarkBatchRequest {
                batch_id: b.batch_id.clone(),
                status: status as i32,
                operator: String::new(),
                note: "faults test".into(),
            })
            .await
            .expect("mark batch");
    }
    for hours in [3, 3] {
        sb.clock.advance(Days::hours(hours));
        c.bank.tick(bank::TickRequest {}).await.expect("tick");
        c.refund
            .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("interface cycle");
        c.refund
            .run_payout_dispatch(rfd::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("payout dispatch");
        c.payout
            .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
            .await
            .expect("payout cycle");
    }
    sb.clock.advance(Days::hours(18));
    c.bank.tick(bank::TickRequest {}).await.expect("tick");
    c.payout
        .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    for channel in [CHANNEL, "QUICK", "UNION", "NETBANK"] {
        c.reconciliation
            .run_reconciliation(rec::RunReconciliationRequest {
                channel: channel.into(),
                date: date.to_string(),
                ..Default::default()
            })
            .await
            .expect("reconciliation");
    }
    c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
}

async fn all_final(sb: &Sandbox) -> bool {
    audit::list_business_refunds(&sb.c)
        .await
        .expect("refunds")
        .iter()
        .all(|r| {
            [
                biz::RefundStatus::Succeeded as i32,
                biz::RefundStatus::Failed as i32,
                biz::RefundStatus::Rejected as i32,
            ]
            .contains(&r.status)
        })
}

/// Every method, with bank failures (30%), scripted fallbacks (an interface refund the bank
/// refuses, a payout that fails, a spreadsheet row that fails) and a payout returned after it was
/// paid: once every refund is final, the auditor finds nothing — and it sees everything.
async fn auditor_passes_after_every_method(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 300).await else {
        return;
    };
    add_method_channels(&mut sb).await;
    let mut n = 0;
    let mut requested = 0;
    for (channel, amounts) in [
        (CHANNEL, &["100.00", "57.10", "12.30"][..]),
        ("QUICK", &["80.00", "66.23", "185.44", "41.00"][..]),
        ("UNION", &["300.00", "340.33", "29.90"][..]),
        ("NETBANK", &["94.13", "120.00", "75.50"][..]),
    ] {
        for amount in amounts {
            n += 1;
            let (merchant, key) = if n % 2 == 0 {
                ("MA", KEY_A)
            } else {
                ("MB", KEY_B)
            };
            let order = format!("O-{n}");
            pay_on(&mut sb, merchant, &order, channel, amount, n).await;
            let r = sb
                .refund(key, &format!("R-{n}"), &order, amount)
                .await
                .expect("refund accepted");
            assert_eq!(r.status, biz::RefundStatus::Processing as i32, "{r:?}");
            requested += 1;
        }
    }
    // One refused for going beyond the payment leaves no trace.
    sb.refund(KEY_B, "R-over", "O-1", "0.01").await.unwrap_err();

    // Mid-way, a snapshot: things are in progress with reasons, nothing is wrong.
    let early = audit_now(&sb.c, &sb.clock).await;
    assert!(early.ok(), "{early}");
    assert_eq!(early.checked.refunds, requested);
    assert_eq!(early.checked.refunds_final, 0, "{early}");

    for _ in 0..6 {
        every_method_day(&mut sb).await;
        if all_final(&sb).await {
            break;
        }
    }
    assert!(
        all_final(&sb).await,
        "{}",
        audit_now(&sb.c, &sb.clock).await
    );
    // A day more for the returned payout (退票) to come back.
    every_method_day(&mut sb).await;
    let report = audit_now(&sb.c, &sb.clock).await;
    assert!(report.ok(), "{report}");
    let c = &report.checked;
    assert_eq!(c.refunds, requested);
    assert_eq!(c.refunds_final, requested, "{report}");
    assert_eq!(c.paid_twice, 0);
    assert_eq!(c.in_flight, 0, "{report}");
    let succeeded = c.refunds_by_status.get("SUCCEEDED").copied().unwrap_or(0);
    assert!(succeeded > 0, "{report}");
    assert_eq!(
        c.bank_payments, succeeded,
        "one bank payment per successful refund: {report}"
    );
    assert!(c.payouts > 0 && c.bank_transactions > c.payouts, "{report}");
    assert!(c.postings > requested, "{report}");
    assert_eq!(c.merchants, 2, "{report}");
    sb.shutdown().await;
}
both_stores!(auditor_passes_after_every_method);

/// Fifty concurrent partial refunds of one payment (33 accepted), carried to the end: the
/// auditor agrees nothing was refunded beyond the payment and nothing paid twice.
async fn auditor_passes_after_concurrent_refunds(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "BIG", "1000.00").await;
    sb.pay("MA", "O-1", "100.00").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut m = sb.c.merchant(KEY_A).unwrap();
        tasks.push(tokio::spawn(async move {
            m.create_refund(biz::CreateRefundRequest {
                merchant_refund_no: format!("R-{i}"),
                order_no: "O-1".into(),
                amount: "3.00".into(),
                currency: "CNY".into(),
                reason: "partial".into(),
                ..Default::default()
            })
            .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 33);
    let during = audit_now(&sb.c, &sb.clock).await;
    assert!(during.ok(), "{during}");
    sb.run_day().await;
    let after = audit_now(&sb.c, &sb.clock).await;
    assert!(after.ok(), "{after}");
    assert_eq!(after.checked.refunds, 33);
    assert_eq!(after.checked.refunds_final, 33);
    assert_eq!(after.checked.bank_payments, 33);
    assert_eq!(after.checked.trades_source, "ListTrades");
    assert_eq!(after.checked.trades, 2, "both payments: {after}");
    sb.shutdown().await;
}
both_stores!(auditor_passes_after_concurrent_refunds);

/// Faults planted behind the platform's back are caught: the bank paying a refund a second
/// time, the bank paying a refund nobody asked for, a posting that moves a merchant's money for
/// no known reason, and a promised refund left without progress.
async fn auditor_catches_planted_faults(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    sb.pay("MA", "O-2", "50.00").await;
    let paid = sb.refund(KEY_A, "R-1", "O-1", "40.00").await.unwrap();
    sb.run_day().await;
    assert_eq!(
        sb.get_refund(KEY_A, "R-1").await.unwrap().status,
        biz::RefundStatus::Succeeded as i32
    );
    let stuck = sb.refund(KEY_A, "R-2", "O-2", "10.00").await.unwrap();
    let clean = audit_now(&sb.c, &sb.clock).await;
    assert!(clean.ok(), "{clean}");

    // The bank pays R-1 again (a payout outside the chain), and pays a refund nobody knows.
    sb.as_service(Principal::Payout)
        .bank
        .submit_payout(bank::SubmitPayoutRequest {
            channel: CHANNEL.into(),
            payout_id: "po-rogue-1".into(),
            card_no: card(1),
            holder_name: "Li Lei".into(),
            amount: "40.00".into(),
            currency: "CNY".into(),
            refund_id: paid.refund_id.clone(),
        })
        .await
        .unwrap();
    sb.as_service(Principal::Refund)
        .bank
        .submit_refund(bank::SubmitRefundRequest {
            channel: CHANNEL.into(),
            refund_id: "rf-ghost".into(),
            original_trade_id: "tr-ghost".into(),
            amount: "5.00".into(),
            currency: "CNY".into(),
        })
        .await
        .unwrap();
    // Someone with the clearing center's certificate posts to a merchant's account by hand.
    sb.as_service(Principal::Clearing)
        .accounting
        .post(acc::PostRequest {
            request_id: "manual:oops".into(),
            description: "not through clearing".into(),
            entries: vec![
                acc::Entry {
                    account: Some(acc::Account {
                        r#type: acc::AccountType::MerchantSettlement as i32,
                        owner: "MA".into(),
                        currency: "CNY".into(),
                    }),
                    side: acc::Side::Debit as i32,
                    amount: "1.00".into(),
                    ..Default::default()
                },
                acc::Entry {
                    account: Some(acc::Account {
                        r#type: acc::AccountType::FeeIncome as i32,
                        owner: "platform".into(),
                        currency: "CNY".into(),
                    }),
                    side: acc::Side::Credit as i32,
                    amount: "1.00".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    sb.clock.advance(Days::hours(3));
    sb.c.bank.tick(bank::TickRequest {}).await.unwrap();
    // And R-2 waits, promised, for more than the staleness bound (nothing sends it).
    sb.clock.advance(Days::days(8));

    let report = audit_now(&sb.c, &sb.clock).await;
    assert!(!report.ok());
    let has = |needle: &str| report.violations.iter().any(|v| v.contains(needle));
    assert!(
        has(&format!("refund {} was paid 2 times", paid.refund_id)),
        "{report}"
    );
    assert_eq!(report.checked.paid_twice, 1);
    assert!(has("rf-ghost"), "{report}");
    assert!(has("manual:oops"), "{report}");
    assert!(
        has("po-rogue-1"),
        "the payout center never made it: {report}"
    );
    assert!(
        has(&format!("refund {} has made no progress", stuck.refund_id)),
        "{report}"
    );
    sb.shutdown().await;
}
both_stores!(auditor_catches_planted_faults);

/// The chaos harness at a small size: seven `tuikuan serve` processes, 60 refunds across every
/// method, three services killed with SIGKILL and restarted; then every refund final, none lost,
/// none paid twice, and the auditor satisfied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_small_crash_faults() {
    let mut options = ChaosOptions::new(env!("CARGO_BIN_EXE_tuikuan").into());
    options.refunds = 60;
    options.kills = Some(3);
    options.kill_every_ms = 1500;
    options.seed = 6;
    options.settle_timeout = Duration::from_secs(40);
    let report = chaos::run(options).await.expect("chaos harness runs");
    assert!(report.ok(), "{report}");
    assert_eq!(report.requested, 60);
    assert_eq!(report.kills.len(), 3, "{report}");
    assert!(report.lost.is_empty(), "{report}");
    assert_eq!(report.paid_twice, 0, "{report}");
    assert_eq!(report.audit.checked.refunds_final, 60, "{report}");
    let methods: std::collections::BTreeSet<&str> =
        report.by_method.keys().map(|(m, _)| m.as_str()).collect();
    assert!(methods.len() >= 3, "several methods were used: {report}");
}

/// The same with network faults: every service reaches its peers through a seeded proxy that
/// delays traffic, drops connections and cuts answers after the far side acted (the unknown
/// outcome), bank callbacks included; two services killed besides. Same verdict: nothing lost,
/// nothing paid twice, the auditor satisfied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_small_network_faults() {
    let mut options = ChaosOptions::new(env!("CARGO_BIN_EXE_tuikuan").into());
    options.refunds = 60;
    options.kills = Some(2);
    options.kill_every_ms = 1500;
    options.seed = 11;
    options.settle_timeout = Duration::from_secs(40);
    options.network = Some(chaos::NetFaults::default());
    let report = chaos::run(options).await.expect("chaos harness runs");
    assert!(report.ok(), "{report}");
    assert!(report.lost.is_empty(), "{report}");
    assert_eq!(report.paid_twice, 0, "{report}");
    assert_eq!(report.audit.checked.refunds_final, 60, "{report}");
    assert!(report.network.connections > 0, "{report}");
    assert!(
        report.network.dropped + report.network.cut_after > 0,
        "faults were injected: {report}"
    );
}

/// `tuikuan audit` against a deployment it cannot reach fails (exit status 1) saying so, rather
/// than passing an audit it could not make.
#[test]
fn binary_audit_fails_when_it_cannot_read_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tuikuan.toml");
    // Ports nothing listens on: bound, read, released.
    let ports: Vec<u16> = (0..7)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let names = [
        "accounting",
        "clearing",
        "business",
        "refund",
        "payout",
        "reconciliation",
        "bank",
    ];
    let table: String = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| format!("{n} = {p}\n"))
        .collect();
    // The deployment's certificates exist; only the services are missing.
    let certs = dir.path().join("certs");
    tuikuan_proto::pki::testing().write(&certs, false).unwrap();
    std::fs::write(
        &config,
        format!(
            "[tls]\ndir = {:?}\n[ports]\n{table}",
            certs.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .arg("--config")
        .arg(&config)
        .arg("audit")
        .output()
        .expect("tuikuan audit runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audit could not read every service"),
        "{stderr}"
    );
}
