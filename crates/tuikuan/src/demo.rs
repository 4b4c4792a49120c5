//! `tuikuan demo`: the whole chain, end to end, with the bank simulator, on a manual clock.
//!
//! It starts all seven services in this process (real gRPC, SQLite under a temporary directory
//! unless told otherwise), seeds channels of every kind, merchants and payments, and makes
//! refunds by all four methods: interface refunds (net banking, WeChat), payouts to the card
//! (quick pay), a file-upload spreadsheet (UnionPay) and an offline spreadsheet. The bank fails
//! some refunds (the refund center falls back to the next method), returns a payout after
//! reporting it paid (退票), and one refund is rejected for insufficient balance. The demo starts
//! the day before the Dragon Boat holiday, so a refund accepted on the holiday waits for the next
//! working day's spreadsheet. Day by day it runs the jobs, the bank and the next morning's
//! reconciliation until every refund is final, then checks the books: every refund final, the
//! trial balance balanced, each merchant's balance equal to its payments minus fees minus its part
//! of the successful refunds, nothing left in transit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;
use tuikuan_kernel::{Clock, Currency, ManualClock, Money, WorkingCalendar};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::payout::v1 as pay;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::clients::Clients;
use crate::cluster::Cluster;
use crate::config::Service;

/// Options of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep the databases and spreadsheets here (a temporary directory when `None`).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL template with `{service}` instead of SQLite.
    pub database_url: Option<String>,
    /// The bank simulator's seed.
    pub seed: u64,
    /// Print progress and the summary.
    pub verbose: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            data_dir: None,
            database_url: None,
            seed: 2018,
            verbose: true,
        }
    }
}

/// What the demo found.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// Merchant refunds by final status (REJECTED, SUCCEEDED, FAILED, ...).
    pub refunds_by_status: BTreeMap<String, usize>,
    /// (method of the final attempt, final status) → count.
    pub by_method: BTreeMap<(String, String), usize>,
    /// Refunds that fell back to another method at least once.
    pub fallbacks: usize,
    /// Refunds whose payout the bank returned after reporting it paid.
    pub returned: usize,
    /// Refunds accepted on a non-working day that went into a later working day's spreadsheet.
    pub holiday_refunds_batched: usize,
    /// Spreadsheets generated, marked and written under the data directory.
    pub spreadsheets: Vec<PathBuf>,
    /// The talk's Q&A cases the demo went through, in words (error refund, split, subsidy,
    /// advance, risk hold, suspend/resume, terminate).
    pub cases: Vec<String>,
    /// Signed notifications the demo merchant's endpoint received, and how many verified.
    pub notifications_received: usize,
    pub notifications_verified: usize,
    /// Per merchant: (expected, actual) settlement balance.
    pub balances: BTreeMap<String, (Money, Money)>,
    pub trial_balance_balanced: bool,
    pub days_simulated: u32,
    /// Every invariant that failed, in words. Empty means the demo passed.
    pub violations: Vec<String>,
}

impl DemoSummary {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Successful refunds paid by `method` (INTERFACE, PAYOUT, FILE_UPLOAD, OFFLINE).
    pub fn succeeded_by(&self, method: &str) -> usize {
        self.by_method
            .get(&(method.to_string(), "SUCCEEDED".to_string()))
            .copied()
            .unwrap_or(0)
    }
}

struct MerchantSeed {
    id: &'static str,
    name: &'static str,
    api_key: &'static str,
    fee_rate: &'static str,
    fee_refund: clr::FeeRefundPolicy,
}

const MERCHANTS: &[MerchantSeed] = &[
    MerchantSeed {
        id: "M1001",
        name: "Shanghai Tea House",
        api_key: "demo-key-m1001-3f9a7c1e2b",
        fee_rate: "0.006",
        fee_refund: clr::FeeRefundPolicy::Proportional,
    },
    MerchantSeed {
        id: "M1002",
        name: "Hangzhou Books",
        api_key: "demo-key-m1002-8d2e4b6a1c",
        fee_rate: "0.0038",
        fee_refund: clr::FeeRefundPolicy::None,
    },
    MerchantSeed {
        id: "M1003",
        name: "Suzhou Silk",
        api_key: "demo-key-m1003-5c7b9d3f0e",
        fee_rate: "0.006",
        fee_refund: clr::FeeRefundPolicy::None,
    },
    MerchantSeed {
        id: "M1004",
        name: "Ningbo Toys",
        api_key: "demo-key-m1004-1a2b3c4d5e",
        fee_rate: "0.0038",
        fee_refund: clr::FeeRefundPolicy::None,
    },
];

/// The advance credit line (垫付) of Ningbo Toys.
const M1004_ADVANCE_LIMIT: &str = "50.00";
/// The demo's notification secret for Shanghai Tea House.
const NOTIFY_SECRET: &str = "demo-notify-secret-5f1e2d3c4b5a";

struct ChannelSeed {
    code: &'static str,
    kind: rfd::ChannelKind,
    methods: &'static [rfd::RefundMethod],
    bank: &'static str,
}

const CHANNELS: &[ChannelSeed] = &[
    ChannelSeed {
        code: "ICBC_B2C",
        kind: rfd::ChannelKind::NetBanking,
        methods: &[
            rfd::RefundMethod::Interface,
            rfd::RefundMethod::Payout,
            rfd::RefundMethod::Offline,
        ],
        bank: "ICBC",
    },
    ChannelSeed {
        code: "WECHAT_AGG",
        kind: rfd::ChannelKind::Aggregated,
        methods: &[rfd::RefundMethod::Interface],
        bank: "WECHAT",
    },
    ChannelSeed {
        code: "CMB_QUICK",
        kind: rfd::ChannelKind::QuickPay,
        methods: &[rfd::RefundMethod::Payout, rfd::RefundMethod::Offline],
        bank: "CMB",
    },
    ChannelSeed {
        code: "UNIONPAY_B2C",
        kind: rfd::ChannelKind::Unionpay,
        methods: &[rfd::RefundMethod::FileUpload, rfd::RefundMethod::Offline],
        bank: "CCB",
    },
    ChannelSeed {
        code: "BOC_COUNTER",
        kind: rfd::ChannelKind::Unionpay,
        methods: &[rfd::RefundMethod::Offline],
        bank: "BOC",
    },
];

/// A payment of the demo: merchant, order, channel, amount, whether the payer's card is known.
struct PaymentSeed {
    merchant: &'static MerchantSeed,
    order_no: String,
    channel: &'static str,
    amount: String,
    card: bool,
}

/// A refund of the demo: on which day (0 = first), merchant refund number, order, amount.
struct RefundSeed {
    day: u32,
    merchant: &'static MerchantSeed,
    refund_no: String,
    order_no: String,
    amount: String,
}

/// The first demo day: Thursday 18 June 2026, the day before the Dragon Boat holiday
/// (Friday 19 June to Sunday 21 June).
pub fn demo_start_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 18).unwrap_or_default()
}

fn say(verbose: bool, line: impl AsRef<str>) {
    if verbose {
        println!("{}", line.as_ref());
    }
}

fn money(s: &str) -> anyhow::Result<Money> {
    Money::parse(s, "CNY", "amount").map_err(|e| anyhow::anyhow!("{e}"))
}

fn wire_money(amount: &str, currency: &str) -> anyhow::Result<Money> {
    let currency = Currency::parse(currency, "currency").map_err(|e| anyhow::anyhow!("{e}"))?;
    let value: Decimal = amount
        .parse()
        .with_context(|| format!("amount {amount:?} from a service is not a decimal"))?;
    Money::new(value, currency).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A test card number (UnionPay-style 19 digits) with a valid Luhn check digit.
fn demo_card(n: usize) -> String {
    let body = format!("622202020{n:09}");
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap_or(0);
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

/// The payments. Amounts with the simulator's scripted cents make the bank misbehave on purpose
/// (see the bank crate's `scripted`): `.13` fails an interface refund (`CARD_CANCELLED`), `.23`
/// fails a payout, `.33` fails a spreadsheet row, `.44` gets a payout returned after it was paid.
fn payments() -> Vec<PaymentSeed> {
    let mut p = Vec::new();
    let mut add = |m: usize, order: String, channel: &'static str, amount: String, card: bool| {
        p.push(PaymentSeed {
            merchant: &MERCHANTS[m],
            order_no: order,
            channel,
            amount,
            card,
        })
    };
    for i in 0..8 {
        let amount = match i {
            // The bank refuses the interface refund: card cancelled → payout to the card.
            2 => "94.13".to_string(),
            _ => format!("{}.{:02}", 60 + i * 17, (i * 37) % 100),
        };
        add(0, format!("T1001-{i:03}"), "ICBC_B2C", amount, true);
    }
    for i in 8..12 {
        // WeChat refunds have no other method: a failure there goes back to the merchant.
        let amount = if i == 9 {
            "121.13".to_string()
        } else {
            format!("{}.50", 40 + i * 9)
        };
        add(0, format!("T1001-{i:03}"), "WECHAT_AGG", amount, false);
    }
    for i in 0..5 {
        let amount = match i {
            // Paid, then returned by the receiving bank the next day (退票).
            1 => "185.44".to_string(),
            // The payout fails (name mismatch) → offline spreadsheet.
            2 => "220.23".to_string(),
            _ => format!("{}.00", 150 + i * 35),
        };
        // The last quick-pay payment came without the payer's card: no payout is possible.
        add(1, format!("T1002-{i:03}"), "CMB_QUICK", amount, i < 4);
    }
    for i in 5..10 {
        // A spreadsheet row the bank fails; the offline fallback fails too → money back.
        let amount = if i == 7 {
            "340.33".to_string()
        } else {
            format!("{}.00", 300 + i * 20)
        };
        add(1, format!("T1002-{i:03}"), "UNIONPAY_B2C", amount, true);
    }
    for i in 10..12 {
        add(
            1,
            format!("T1002-{i:03}"),
            "BOC_COUNTER",
            format!("{}.80", 90 + i * 3),
            true,
        );
    }
    add(2, "T1003-000".into(), "ICBC_B2C", "100.00".into(), true);
    p
}

fn refunds(payments: &[PaymentSeed]) -> Vec<RefundSeed> {
    let mut r = Vec::new();
    for (i, p) in payments.iter().enumerate() {
        let full = |day| RefundSeed {
            day,
            merchant: p.merchant,
            refund_no: format!("R-{}", p.order_no),
            order_no: p.order_no.clone(),
            amount: p.amount.clone(),
        };
        match (p.merchant.id, p.channel) {
            ("M1001", "ICBC_B2C") if i % 2 == 1 => {
                // Two partial refunds of one payment.
                for (suffix, amount) in [("a", "10.00"), ("b", "20.50")] {
                    r.push(RefundSeed {
                        day: 0,
                        merchant: p.merchant,
                        refund_no: format!("R-{}-{suffix}", p.order_no),
                        order_no: p.order_no.clone(),
                        amount: amount.into(),
                    });
                }
            }
            // Two partial UnionPay refunds and a net-banking refund come in on the holiday.
            ("M1002", "UNIONPAY_B2C") if i % 2 == 0 => r.push(RefundSeed {
                amount: "100.00".into(),
                ..full(1)
            }),
            ("M1001", "ICBC_B2C") if i == 6 => r.push(full(1)),
            _ => r.push(full(0)),
        }
    }
    r
}

/// Runs the demo and returns its summary (the caller decides the exit status from `ok()`).
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoSummary> {
    let v = options.verbose;
    let temp = tempfile::tempdir().context("temporary directory")?;
    let data_dir = options
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut config = crate::local::throwaway_config(&data_dir, &crate::local::fresh_pki()?)?;
    config.database_url = options.database_url.clone();
    config.bank.seed = options.seed;
    // Outcomes come from the scripted amounts only, so every run tells the same story; the
    // seed still decides delays and duplicated or reordered callbacks.
    config.bank.fail_per_mille = 0;
    config.bank.delay_min_secs = 60;
    config.bank.delay_max_secs = 4 * 3600;
    config.bank.return_per_mille = 0;
    config.bank.return_delay_secs = 30 * 3600;
    // The merchant's notification endpoint runs on this machine, over HTTPS with a certificate of
    // the demo's CA: the sender is allowed loopback and trusts that CA, nothing else changes.
    config.notify.allow_private = vec!["127.0.0.0/8".into()];
    config.notify.ca_file = Some(config.tls.dir.join("ca.pem"));
    let calendar = config.calendar()?;

    let start = demo_start_date();
    let clock = ManualClock::at_business(start, 10);
    let cluster = Cluster::start(config, Arc::new(clock.clone()), &[]).await?;
    say(
        v,
        format!("tuikuan demo — all services up on a manual clock at {start} 10:00 (UTC+8)"),
    );
    for line in crate::cluster::listener_table(&cluster).lines() {
        say(v, format!("  {line}"));
    }
    let result = drive(&cluster, &clock, &calendar, &data_dir, v).await;
    cluster.shutdown().await?;
    drop(temp);
    result
}

async fn drive(
    cluster: &Cluster,
    clock: &ManualClock,
    calendar: &WorkingCalendar,
    data_dir: &std::path::Path,
    v: bool,
) -> anyhow::Result<DemoSummary> {
    let mut c = cluster.clients()?;
    let mut summary = DemoSummary::default();

    // --- seed configuration
    for ch in CHANNELS {
        c.refund
            .upsert_channel(rfd::Channel {
                code: ch.code.into(),
                kind: ch.kind as i32,
                methods: ch.methods.iter().map(|m| *m as i32).collect(),
                original_route_window_days: 180,
                bank_code: ch.bank.into(),
                ..Default::default()
            })
            .await
            .context("refund center: upsert channel")?;
        c.business
            .upsert_channel(biz::Channel {
                code: ch.code.into(),
                refund_window_days: 365,
                enabled: true,
            })
            .await
            .context("business: upsert channel")?;
    }
    for m in MERCHANTS {
        c.business
            .create_merchant(biz::CreateMerchantRequest {
                merchant_id: m.id.into(),
                name: m.name.into(),
                api_key: m.api_key.into(),
            })
            .await
            .context("business: create merchant")?;
        c.clearing
            .upsert_merchant_policy(clr::MerchantPolicy {
                merchant_id: m.id.into(),
                fee_rate: m.fee_rate.into(),
                fee_refund: m.fee_refund as i32,
                advance_limit: if m.id == "M1004" {
                    M1004_ADVANCE_LIMIT.into()
                } else {
                    String::new()
                },
                advance_currency: if m.id == "M1004" {
                    "CNY".into()
                } else {
                    String::new()
                },
            })
            .await
            .context("clearing: merchant policy")?;
    }
    let (notify_url, notifications, notify_task) =
        notification_endpoint(&cluster.config().tls.dir).await?;
    let notify_task = AbortOnDrop(notify_task);
    c.business
        .set_notify_config(biz::SetNotifyConfigRequest {
            merchant_id: MERCHANTS[0].id.into(),
            notify_url,
            notify_secret: NOTIFY_SECRET.into(),
        })
        .await
        .context("notify config")?;
    c.control
        .upsert_risk_rule(rfd::RiskRule {
            rule_id: "big-refund".into(),
            kind: rfd::RiskRuleKind::AmountAbove as i32,
            threshold_amount: "450.00".into(),
            currency: "CNY".into(),
            enabled: true,
            ..Default::default()
        })
        .await
        .context("risk rule")?;
    say(
        v,
        format!(
            "seeded {} channels (interface, payout, file-upload, offline and a fallback chain) and {} merchants",
            CHANNELS.len(),
            MERCHANTS.len()
        ),
    );

    // --- payments
    let paid_at = clock.now_ms() - 3_600_000;
    let payments = payments();
    let mut expected: BTreeMap<&'static str, Money> = BTreeMap::new();
    for (n, p) in payments.iter().enumerate() {
        c.business
            .record_payment(biz::RecordPaymentRequest {
                merchant_id: p.merchant.id.into(),
                order_no: p.order_no.clone(),
                channel: p.channel.into(),
                amount: p.amount.clone(),
                currency: "CNY".into(),
                paid_at_ms: paid_at,
                payer_card_no: if p.card { demo_card(n) } else { String::new() },
                payer_name: if p.card {
                    format!("Payer {n}")
                } else {
                    String::new()
                },
                ..Default::default()
            })
            .await
            .with_context(|| format!("business: record payment {}", p.order_no))?;
        let gross = money(&p.amount)?;
        let rate: Decimal = p.merchant.fee_rate.parse()?;
        let net = gross
            .checked_sub(&gross.times_rate(rate))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let entry = expected
            .entry(p.merchant.id)
            .or_insert(Money::zero(Currency::Cny));
        *entry = entry
            .checked_add(&net)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    say(
        v,
        format!("recorded and settled {} payments", payments.len()),
    );

    let plan = refunds(&payments);
    let mut requested = 0usize;
    let mut holiday_refund_ids = Vec::new();
    let mut days = 0u32;
    loop {
        let date = clock.today();
        let working = calendar.is_working_day(date);
        // --- the day's refund requests
        for r in plan.iter().filter(|r| r.day == days) {
            let mut merchant = c.merchant(r.merchant.api_key)?;
            let answer = merchant
                .create_refund(biz::CreateRefundRequest {
                    merchant_refund_no: r.refund_no.clone(),
                    order_no: r.order_no.clone(),
                    amount: r.amount.clone(),
                    currency: "CNY".into(),
                    reason: "customer returned the goods".into(),
                    ..Default::default()
                })
                .await
                .with_context(|| {
                    format!("merchant {}: create refund {}", r.merchant.id, r.refund_no)
                })?
                .into_inner();
            requested += 1;
            if answer.status == biz::RefundStatus::Rejected as i32 {
                say(
                    v,
                    format!(
                        "  {}: REJECTED — {}: {}",
                        r.refund_no, answer.error_code, answer.error_message
                    ),
                );
            }
            if !working {
                holiday_refund_ids.push(answer.refund_id.clone());
            }
        }
        if days == 0 {
            refuse_over_refund(&c, &payments, v).await?;
            let second = cluster.second_operator()?;
            requested += qa_cases(&mut c, &second, clock, v, &mut summary, &mut expected).await?;
        }

        // --- the refund center sends, the payout center pays, staff handle the spreadsheets
        dispatch(&mut c).await?;
        let mut sheets = 0;
        if working {
            sheets = spreadsheets(&mut c, date, data_dir, &mut summary).await?;
        }
        clock.advance(Duration::hours(5));
        let tick = c.bank.tick(bank::TickRequest {}).await?.into_inner();
        // Fallbacks started by the bank's answers go out the same afternoon.
        dispatch(&mut c).await?;
        clock.advance(Duration::hours(2));
        c.bank.tick(bank::TickRequest {}).await?;
        c.payout
            .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
            .await?;

        // --- next morning: yesterday's clearing files
        clock.advance(Duration::hours(16));
        c.bank.tick(bank::TickRequest {}).await?;
        c.payout
            .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
            .await?;
        let mut recon_line = String::new();
        for ch in CHANNELS {
            let run = c
                .reconciliation
                .run_reconciliation(rec::RunReconciliationRequest {
                    channel: ch.code.into(),
                    date: date.to_string(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("reconciliation {} {date}", ch.code))?
                .into_inner();
            let counts: Vec<String> = run
                .counts
                .iter()
                .filter(|x| x.count > 0)
                .map(|x| {
                    format!(
                        "{}={}",
                        rec::Outcome::try_from(x.outcome)
                            .map(|o| o.as_str_name())
                            .unwrap_or("?"),
                        x.count
                    )
                })
                .collect();
            if !counts.is_empty() {
                recon_line.push_str(&format!(" {}[{}]", ch.code, counts.join(" ")));
            }
        }
        c.refund.run_outbox(rfd::RunOutboxRequest {}).await?;
        c.business
            .run_notifications(biz::RunNotificationsRequest {})
            .await?;
        days += 1;
        say(
            v,
            format!(
                "day {days} {date} ({}): bank completed {} ({} callbacks), {sheets} spreadsheet(s); reconciled:{}",
                if working { "working day" } else { "holiday" },
                tick.completed,
                tick.callbacks_sent,
                if recon_line.is_empty() { " nothing".into() } else { recon_line }
            ),
        );
        let open = list_all(&mut c)
            .await?
            .iter()
            .filter(|r| !is_final(r.status))
            .count();
        let all_requested = plan.iter().all(|r| r.day < days);
        // Keep going a few days so late returns (退票) show up.
        if (open == 0 && all_requested && days >= 6) || days >= 12 {
            break;
        }
    }

    // --- the books
    let refunds = list_all(&mut c).await?;
    summary.days_simulated = days;
    for r in &refunds {
        let status = biz::RefundStatus::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| "UNKNOWN".into());
        *summary.refunds_by_status.entry(status.clone()).or_default() += 1;
        if !is_final(r.status) {
            summary
                .violations
                .push(format!("refund {} is not final", r.refund_id));
        }
        if r.error_code == "PAYOUT_RETURNED" {
            summary.returned += 1;
        }
        match c
            .refund
            .get_refund(rfd::GetRefundRequest {
                refund_id: r.refund_id.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(order) => {
                let order = order.into_inner();
                let method = rfd::RefundMethod::try_from(order.method)
                    .map(|m| m.as_str_name().to_string())
                    .unwrap_or_default();
                *summary.by_method.entry((method, status)).or_default() += 1;
                if order.attempts.len() > 1 {
                    summary.fallbacks += 1;
                }
                if holiday_refund_ids.contains(&r.refund_id)
                    && order.attempts.iter().any(|a| {
                        a.method == rfd::RefundMethod::FileUpload as i32
                            || a.method == rfd::RefundMethod::Offline as i32
                    })
                {
                    summary.holiday_refunds_batched += 1;
                }
            }
            Err(_) => {
                *summary
                    .by_method
                    .entry(("(none)".into(), status))
                    .or_default() += 1;
            }
        }
        if r.status == biz::RefundStatus::Succeeded as i32 {
            let debit = c
                .clearing
                .get_debit(clr::GetDebitRequest {
                    refund_id: r.refund_id.clone(),
                })
                .await?
                .into_inner();
            // A split refund takes back from each receiver (the split receivers' policies
            // refund no fee, so each part is what the receiver pays).
            let parts: Vec<(String, Money)> = if debit.splits.len() > 1 {
                debit
                    .splits
                    .iter()
                    .map(|p| {
                        Ok((
                            p.receiver_id.clone(),
                            wire_money(&p.amount, &debit.currency)?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            } else {
                vec![(
                    r.merchant_id.clone(),
                    wire_money(&debit.merchant_amount, &debit.currency)?,
                )]
            };
            for (merchant, part) in parts {
                if let Some(entry) = MERCHANTS
                    .iter()
                    .find(|m| m.id == merchant)
                    .and_then(|m| expected.get_mut(m.id))
                {
                    *entry = entry
                        .checked_sub(&part)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
    }
    if refunds.len() != requested {
        summary.violations.push(format!(
            "{requested} refunds requested but {} listed",
            refunds.len()
        ));
    }
    for (merchant, want) in &expected {
        let got = balance(&mut c, acc::AccountType::MerchantSettlement, merchant).await?;
        if got != *want {
            summary.violations.push(format!(
                "merchant {merchant}: balance {got} but payments - fees - successful refunds = {want}"
            ));
        }
        summary.balances.insert(merchant.to_string(), (*want, got));
    }
    let in_transit = balance(&mut c, acc::AccountType::RefundInTransit, "platform").await?;
    if !in_transit.is_zero() {
        summary
            .violations
            .push(format!("{in_transit} still in refund-in-transit"));
    }
    // The day's sweep (资金归集): the platform's fees and coupon shares leave the reserves.
    c.clearing
        .sweep_reserves(clr::SweepReservesRequest::default())
        .await
        .context("clearing: sweep")?;
    let tb = c
        .accounting
        .trial_balance(acc::TrialBalanceRequest::default())
        .await?
        .into_inner();
    summary.trial_balance_balanced = tb.balanced;
    if !tb.balanced {
        summary
            .violations
            .push("trial balance is not balanced".into());
    }
    c.business
        .run_notifications(biz::RunNotificationsRequest {})
        .await?;
    drop(notify_task);
    if let Ok(seen) = notifications.lock() {
        summary.notifications_received = seen.len();
        summary.notifications_verified = seen.iter().filter(|ok| **ok).count();
    }
    if summary.notifications_received == 0 {
        summary
            .violations
            .push("the merchant's endpoint received no notification".into());
    }
    if summary.notifications_verified != summary.notifications_received {
        summary
            .violations
            .push("a merchant notification failed signature verification".into());
    }
    if v {
        print_summary(&summary, &tb);
    }
    Ok(summary)
}

/// Sends what is pending: interface refunds to the bank, payouts to the payout center and from
/// there to the bank.
async fn dispatch(c: &mut Clients) -> anyhow::Result<()> {
    c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await?;
    c.refund
        .run_payout_dispatch(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await?;
    c.payout
        .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
        .await?;
    Ok(())
}

/// Staff's part on a working day: generate the day's spreadsheets, save them, mark them
/// uploaded (file-upload) or sent (offline).
async fn spreadsheets(
    c: &mut Clients,
    date: NaiveDate,
    data_dir: &std::path::Path,
    summary: &mut DemoSummary,
) -> anyhow::Result<usize> {
    let batches = c
        .batch
        .generate_batches(rfd::GenerateBatchesRequest {
            date: date.to_string(),
        })
        .await
        .context("generate batches")?
        .into_inner()
        .batches;
    let dir = data_dir.join("spreadsheets");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut n = 0;
    for b in batches
        .iter()
        .filter(|b| b.status == rfd::BatchStatus::Generated as i32)
    {
        let file = c
            .batch
            .download_batch(rfd::GetBatchRequest {
                batch_id: b.batch_id.clone(),
            })
            .await?
            .into_inner();
        let path = dir.join(&file.file_name);
        std::fs::write(&path, &file.content)
            .with_context(|| format!("write {}", path.display()))?;
        summary.spreadsheets.push(path);
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
                note: "demo".into(),
            })
            .await
            .with_context(|| format!("mark batch {}", b.batch_id))?;
        n += 1;
    }
    Ok(n)
}

/// A request above what was paid is refused outright with a stable code.
async fn refuse_over_refund(c: &Clients, payments: &[PaymentSeed], v: bool) -> anyhow::Result<()> {
    let p = &payments[4];
    let mut m = c.merchant(p.merchant.api_key)?;
    let over = m
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-over".into(),
            order_no: p.order_no.clone(),
            amount: "9999.00".into(),
            currency: "CNY".into(),
            reason: "too much".into(),
            ..Default::default()
        })
        .await;
    match over {
        Err(status) => {
            say(
                v,
                format!(
                    "  R-over: refused with {} ({})",
                    status
                        .metadata()
                        .get(tuikuan_proto::status::ERROR_CODE_KEY)
                        .and_then(|x| x.to_str().ok())
                        .unwrap_or("?"),
                    status.message()
                ),
            );
            Ok(())
        }
        Ok(_) => bail!("a refund above the paid amount was accepted"),
    }
}

/// A merchant's notification endpoint over HTTPS (the certificate `certs` holds for the public
/// listener, from the demo's CA): answers 200 to every POST and checks its signature.
async fn notification_endpoint(
    certs: &std::path::Path,
) -> anyhow::Result<(
    String,
    Arc<std::sync::Mutex<Vec<bool>>>,
    tokio::task::JoinHandle<()>,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = |file: String| {
        std::fs::read_to_string(certs.join(&file))
            .with_context(|| format!("{file} in the demo's certificates"))
    };
    let name = tuikuan_proto::pki::PUBLIC_CERT_NAME;
    let acceptor = tuikuan_proto::pki::https_acceptor(&tuikuan_proto::pki::CertKey {
        cert_pem: read(format!("{name}.pem"))?,
        key_pem: read(format!("{name}-key.pem"))?,
    })
    .map_err(|e| anyhow::anyhow!(e.message))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/refund-notify", listener.local_addr()?);
    let seen: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (record, acceptor) = (record.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(mut socket) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says (bounded).
                let (head, body) = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 || buf.len() > 1 << 20 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break (head, buf[end + 4..end + 4 + length].to_vec());
                    }
                };
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let ok = tuikuan_business::domain::notify::verify_signature(
                    NOTIFY_SECRET,
                    &header("x-tuikuan-timestamp"),
                    &body,
                    &header("x-tuikuan-signature"),
                );
                if let Ok(mut seen) = record.lock() {
                    seen.push(ok);
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok((url, seen, task))
}

/// Stops the notification endpoint when the demo ends, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn net_of_fee(amount: &str, rate: &str) -> anyhow::Result<Money> {
    let gross = money(amount)?;
    let rate: Decimal = rate.parse()?;
    gross
        .checked_sub(&gross.times_rate(rate))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn add_expected(
    expected: &mut BTreeMap<&'static str, Money>,
    merchant: &'static str,
    delta: Money,
) -> anyhow::Result<()> {
    let entry = expected
        .entry(merchant)
        .or_insert(Money::zero(Currency::Cny));
    *entry = entry
        .checked_add(&delta)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Approves a four-eyes proposal as the second operator; it must have run.
pub async fn approve(
    second: &Clients,
    service: Service,
    proposal_id: &str,
    reason: &str,
) -> anyhow::Result<tuikuan_proto::staff::v1::Proposal> {
    let p = second
        .staff_desk(service)
        .approve_proposal(tuikuan_proto::staff::v1::DecideProposalRequest {
            proposal_id: proposal_id.to_string(),
            reason: reason.to_string(),
        })
        .await
        .with_context(|| format!("approve {proposal_id}"))?
        .into_inner();
    anyhow::ensure!(
        p.status == tuikuan_proto::staff::v1::ProposalStatus::Executed as i32,
        "proposal {proposal_id} did not run: {}",
        p.result
    );
    Ok(p)
}

/// The talk's Q&A cases, on the first day: an error refund, a split payment, a platform
/// subsidy, an advance, suspend/resume and terminate (the risk hold comes from the rule set
/// before the day's requests).
async fn qa_cases(
    c: &mut Clients,
    second: &Clients,
    clock: &ManualClock,
    v: bool,
    summary: &mut DemoSummary,
    expected: &mut BTreeMap<&'static str, Money>,
) -> anyhow::Result<usize> {
    let paid_at = clock.now_ms() - 3_600_000;
    let mut requested = 0;
    let payments_client = c.business.clone();
    let pay = |merchant: &'static MerchantSeed,
               order_no: &'static str,
               channel: &'static str,
               amount: &'static str,
               extra: biz::RecordPaymentRequest| {
        let mut business = payments_client.clone();
        async move {
            business
                .record_payment(biz::RecordPaymentRequest {
                    merchant_id: merchant.id.into(),
                    order_no: order_no.into(),
                    channel: channel.into(),
                    amount: amount.into(),
                    currency: "CNY".into(),
                    paid_at_ms: paid_at,
                    ..extra
                })
                .await
                .with_context(|| format!("record payment {order_no}"))
        }
    };
    let books = &MERCHANTS[1];
    let silk = &MERCHANTS[2];
    let tea = &MERCHANTS[0];
    let toys = &MERCHANTS[3];

    // 差错退款: Hangzhou Books was paid twice; operations refunds the duplicate in full.
    pay(books, "T1002-DUP", "ICBC_B2C", "66.00", Default::default()).await?;
    add_expected(expected, books.id, net_of_fee("66.00", books.fee_rate)?)?;
    let request = biz::CreateErrorRefundRequest {
        merchant_id: books.id.into(),
        order_no: "T1002-DUP".into(),
        kind: biz::RefundKind::DuplicatePayment as i32,
        amount: "66.00".into(),
        currency: "CNY".into(),
        reason: "the customer paid twice".into(),
        operator: String::new(),
    };
    // Four eyes: operations proposes it, a second operator approves; only then it runs.
    let proposed = c
        .business
        .create_error_refund(request)
        .await
        .context("error refund")?;
    let (proposal_id, _) = tuikuan_auth::answer::proposal_of(proposed.metadata())
        .context("the error refund answered no proposal")?;
    let approved = approve(
        second,
        Service::Business,
        &proposal_id,
        "duplicate seen in the bank file",
    )
    .await?;
    requested += 1;
    summary.cases.push(format!(
        "error refund (差错退款) of a duplicate payment, full amount, proposed by {} and approved \
         by {} (four eyes): {}",
        approved.proposer, approved.approver, approved.result
    ));

    // 分账: one payment split between Hangzhou Books (200.00) and Suzhou Silk (100.00); a
    // partial refund takes back from each by share.
    let split = |id: &str, amount: &str| biz::SplitReceiver {
        receiver_id: id.into(),
        amount: amount.into(),
    };
    pay(
        books,
        "T1002-SPLIT",
        "WECHAT_AGG",
        "300.00",
        biz::RecordPaymentRequest {
            receivers: vec![split(books.id, "200.00"), split(silk.id, "100.00")],
            ..Default::default()
        },
    )
    .await?;
    add_expected(expected, books.id, net_of_fee("200.00", books.fee_rate)?)?;
    add_expected(expected, silk.id, net_of_fee("100.00", silk.fee_rate)?)?;
    c.merchant(books.api_key)?
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-T1002-SPLIT".into(),
            order_no: "T1002-SPLIT".into(),
            amount: "90.00".into(),
            currency: "CNY".into(),
            reason: "two of three items returned".into(),
            ..Default::default()
        })
        .await
        .context("split refund")?;
    requested += 1;
    summary.cases.push(
        "split payment (分账) 200.00 + 100.00, partial refund 90.00 taken back by share".into(),
    );

    // Platform subsidy: 30.00 of a 200.00 order was a platform coupon; the customer gets back
    // only the cash part, the coupon part returns to the platform's subsidy account.
    pay(
        tea,
        "T1001-SUB",
        "ICBC_B2C",
        "200.00",
        biz::RecordPaymentRequest {
            platform_subsidy: "30.00".into(),
            ..Default::default()
        },
    )
    .await?;
    add_expected(expected, tea.id, net_of_fee("200.00", tea.fee_rate)?)?;
    let r = c
        .merchant(tea.api_key)?
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-T1001-SUB".into(),
            order_no: "T1001-SUB".into(),
            amount: "100.00".into(),
            currency: "CNY".into(),
            reason: "half returned".into(),
            ..Default::default()
        })
        .await
        .context("subsidised refund")?
        .into_inner();
    requested += 1;
    let debit = c
        .clearing
        .get_debit(clr::GetDebitRequest {
            refund_id: r.refund_id.clone(),
        })
        .await?
        .into_inner();
    summary.cases.push(format!(
        "platform subsidy: refund 100.00 of a subsidised order, {} back to the subsidy account, the rest to the customer",
        debit.subsidy_amount
    ));

    // 垫付: Ningbo Toys refunds more than its balance; the shortfall is advanced within its
    // 50.00 credit line, and its next settlement repays the advance first.
    pay(
        toys,
        "T1004-000",
        "WECHAT_AGG",
        "100.00",
        Default::default(),
    )
    .await?;
    add_expected(expected, toys.id, net_of_fee("100.00", toys.fee_rate)?)?;
    let r = c
        .merchant(toys.api_key)?
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-T1004-000".into(),
            order_no: "T1004-000".into(),
            amount: "100.00".into(),
            currency: "CNY".into(),
            reason: "whole order returned".into(),
            ..Default::default()
        })
        .await
        .context("advance refund")?
        .into_inner();
    requested += 1;
    let debit = c
        .clearing
        .get_debit(clr::GetDebitRequest {
            refund_id: r.refund_id.clone(),
        })
        .await?
        .into_inner();
    pay(toys, "T1004-001", "WECHAT_AGG", "50.00", Default::default()).await?;
    add_expected(expected, toys.id, net_of_fee("50.00", toys.fee_rate)?)?;
    summary.cases.push(format!(
        "advance (垫付): {} advanced within a {M1004_ADVANCE_LIMIT} line, repaid by the next settlement",
        debit.advance_amount
    ));

    // 风控拦截: the big refund was held by the amount rule; risk review releases it.
    let held = c
        .control
        .list_held(rfd::ListHeldRequest {
            limit: 100,
            after: String::new(),
        })
        .await
        .context("list held")?
        .into_inner()
        .refunds;
    for order in &held {
        c.control
            .release_hold(rfd::ControlRequest {
                refund_id: order.refund_id.clone(),
                reason: "customer verified by phone".into(),
            })
            .await
            .context("release hold")?;
        summary.cases.push(format!(
            "risk hold (风控拦截) on {} {}: released after review",
            order.order_no, order.amount
        ));
    }

    // 挂起 and 终止: a spreadsheet refund is suspended and resumed before its batch; another is
    // terminated before submission and the money goes back to the merchant.
    pay(
        books,
        "T1002-TERM",
        "BOC_COUNTER",
        "55.00",
        biz::RecordPaymentRequest {
            payer_card_no: demo_card(900),
            payer_name: "Payer 900".into(),
            ..Default::default()
        },
    )
    .await?;
    add_expected(expected, books.id, net_of_fee("55.00", books.fee_rate)?)?;
    let r = c
        .merchant(books.api_key)?
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-T1002-TERM".into(),
            order_no: "T1002-TERM".into(),
            amount: "55.00".into(),
            currency: "CNY".into(),
            reason: "customer cancelled".into(),
            ..Default::default()
        })
        .await
        .context("refund to terminate")?
        .into_inner();
    requested += 1;
    let ops = |refund_id: &str, reason: &str| rfd::ControlRequest {
        refund_id: refund_id.into(),
        reason: reason.into(),
    };
    c.control
        .suspend(ops(&r.refund_id, "merchant asked to wait"))
        .await
        .context("suspend")?;
    c.control
        .resume(ops(&r.refund_id, "merchant confirmed"))
        .await
        .context("resume")?;
    c.control
        .terminate(ops(&r.refund_id, "customer and merchant settled offline"))
        .await
        .context("terminate")?;
    summary.cases.push(
        "suspend (挂起), resume, then terminate (终止) before submission: money back to the merchant"
            .into(),
    );
    if v {
        for case in &summary.cases {
            println!("  {case}");
        }
    }
    Ok(requested)
}

fn print_summary(summary: &DemoSummary, tb: &acc::TrialBalanceResponse) {
    println!();
    println!(
        "== Summary after {} simulated day(s) ==",
        summary.days_simulated
    );
    println!("refunds by final status:");
    for (status, n) in &summary.refunds_by_status {
        println!("  {status:<10} {n}");
    }
    println!("refunds by method (of the last attempt) and final status:");
    for ((method, status), n) in &summary.by_method {
        println!("  {method:<12} {status:<10} {n}");
    }
    println!(
        "fell back to another method: {}   payouts returned by the bank (退票): {}   holiday refunds batched on the next working day: {}",
        summary.fallbacks, summary.returned, summary.holiday_refunds_batched
    );
    println!("the talk's Q&A cases:");
    for case in &summary.cases {
        println!("  {case}");
    }
    println!(
        "signed notifications received by Shanghai Tea House's endpoint: {} ({} verified)",
        summary.notifications_received, summary.notifications_verified
    );
    println!("spreadsheets generated and marked:");
    for p in &summary.spreadsheets {
        println!("  {}", p.display());
    }
    println!(
        "merchant settlement balances (expected = payments - fees - merchant part of successful refunds):"
    );
    for (m, (want, got)) in &summary.balances {
        let mark = if want == got { "ok" } else { "MISMATCH" };
        println!("  {m}  expected {want:>14}  actual {got:>14}  {mark}");
    }
    println!("trial balance:");
    for t in &tb.totals {
        println!(
            "  {}  debits {:>14}  credits {:>14}",
            t.currency, t.total_debits, t.total_credits
        );
    }
    for b in &tb.accounts {
        if let Some(a) = &b.account {
            println!(
                "    {:<20} {:<12} {:>14}",
                acc::AccountType::try_from(a.r#type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("?"),
                a.owner,
                b.balance
            );
        }
    }
    println!(
        "  {}",
        if tb.balanced {
            "balanced"
        } else {
            "NOT BALANCED"
        }
    );
    if summary.ok() {
        println!("all invariants hold");
    } else {
        println!("INVARIANT VIOLATIONS:");
        for x in &summary.violations {
            println!("  - {x}");
        }
    }
}

fn is_final(status: i32) -> bool {
    status == biz::RefundStatus::Succeeded as i32
        || status == biz::RefundStatus::Failed as i32
        || status == biz::RefundStatus::Rejected as i32
}

async fn list_all(c: &mut Clients) -> anyhow::Result<Vec<biz::Refund>> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = c
            .business
            .list_refunds(biz::ListRefundsRequest {
                merchant_id: String::new(),
                status: 0,
                limit: 500,
                after: after.clone(),
            })
            .await?
            .into_inner()
            .refunds;
        let Some(last) = page.last() else { break };
        after = last.refund_id.clone();
        let n = page.len();
        all.extend(page);
        if n < 500 {
            break;
        }
    }
    Ok(all)
}

async fn balance(c: &mut Clients, kind: acc::AccountType, owner: &str) -> anyhow::Result<Money> {
    let b = c
        .accounting
        .get_balance(acc::GetBalanceRequest {
            account: Some(acc::Account {
                r#type: kind as i32,
                owner: owner.to_string(),
                currency: "CNY".into(),
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let value: Decimal = b.balance.parse().context("balance from accounting")?;
    Money::new(value, Currency::Cny).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_cards_pass_luhn() {
        for n in 0..50 {
            assert!(
                tuikuan_kernel::card::CardNumber::is_valid(&demo_card(n)),
                "{}",
                demo_card(n)
            );
        }
    }
}
