//! `tuikuan demo`: the whole chain, end to end, with the bank simulator, on a manual clock.
//!
//! It starts all seven services in this process (real gRPC, SQLite under a temporary directory
//! unless told otherwise), seeds channels, merchants and payments, makes refunds — including ones
//! the bank fails and one rejected for insufficient balance — then moves the clock through the next
//! days' bank processing and reconciliation until every refund is final, and checks the books:
//! every refund final, the trial balance balanced, each merchant's balance equal to its payments
//! minus fees minus its part of the successful refunds, nothing left in transit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;
use tuikuan_kernel::{Clock, Currency, ManualClock, Money};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::clients::Clients;
use crate::cluster::Cluster;
use crate::config::DeploymentConfig;

/// Options of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep the databases here (a temporary directory when `None`).
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
];

const CHANNELS: &[(&str, rfd::ChannelKind, &str)] = &[
    ("ICBC_B2C", rfd::ChannelKind::NetBanking, "ICBC"),
    ("WECHAT_AGG", rfd::ChannelKind::Aggregated, "WECHAT"),
];

/// The first demo day: a Monday.
pub fn demo_start_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap_or_default()
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

/// Runs the demo and returns its summary (the caller decides the exit status from `ok()`).
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoSummary> {
    let v = options.verbose;
    let temp = tempfile::tempdir().context("temporary directory")?;
    let data_dir = options
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut config = DeploymentConfig {
        data_dir: data_dir.clone(),
        database_url: options.database_url.clone(),
        job_interval_ms: 0,
        ..DeploymentConfig::default()
    };
    for s in crate::config::Service::ALL {
        config.ports.insert(s.name().to_string(), 0);
    }
    config.bank.seed = options.seed;
    config.bank.fail_per_mille = 150;
    config.bank.delay_min_secs = 60;
    config.bank.delay_max_secs = 4 * 3600;

    let start = demo_start_date();
    let clock = ManualClock::at_business(start, 10);
    let cluster = Cluster::start(config, Arc::new(clock.clone()), &[]).await?;
    say(
        v,
        format!(
            "tuikuan demo — all services up on a manual clock at {} (UTC+8 business date {start})",
            clock.now()
        ),
    );
    for s in cluster.running() {
        say(v, format!("  {:<15} {}", s.name(), cluster.url(s)));
    }
    let result = drive(&cluster, &clock, v).await;
    cluster.shutdown().await?;
    drop(temp);
    result
}

async fn drive(cluster: &Cluster, clock: &ManualClock, v: bool) -> anyhow::Result<DemoSummary> {
    let mut c = Clients::connect(|s| cluster.url(s))?;

    // --- seed configuration
    for (code, kind, bank_code) in CHANNELS {
        c.refund
            .upsert_channel(rfd::Channel {
                code: code.to_string(),
                kind: *kind as i32,
                methods: vec![rfd::RefundMethod::Interface as i32],
                original_route_window_days: 180,
                bank_code: bank_code.to_string(),
            })
            .await
            .context("refund center: upsert channel")?;
        c.business
            .upsert_channel(biz::Channel {
                code: code.to_string(),
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
            })
            .await
            .context("clearing: merchant policy")?;
    }
    say(
        v,
        "seeded 2 channels (interface refunds) and 3 merchants with fee policies",
    );

    // --- payments
    let paid_at = clock.now_ms() - 3_600_000;
    let mut payments: Vec<(&MerchantSeed, String, String, &str)> = Vec::new();
    for i in 0..12 {
        let amount = format!("{}.{:02}", 60 + i * 17, (i * 37) % 100);
        payments.push((
            &MERCHANTS[0],
            format!("T1001-{i:03}"),
            amount,
            CHANNELS[i % 2].0,
        ));
    }
    for i in 0..8 {
        let amount = format!("{}.00", 120 + i * 45);
        payments.push((
            &MERCHANTS[1],
            format!("T1002-{i:03}"),
            amount,
            CHANNELS[(i + 1) % 2].0,
        ));
    }
    payments.push((
        &MERCHANTS[2],
        "T1003-000".to_string(),
        "100.00".to_string(),
        CHANNELS[0].0,
    ));
    let mut expected: BTreeMap<&str, Money> = BTreeMap::new();
    for (m, order_no, amount, channel) in &payments {
        c.business
            .record_payment(biz::RecordPaymentRequest {
                merchant_id: m.id.into(),
                order_no: order_no.clone(),
                channel: channel.to_string(),
                amount: amount.clone(),
                currency: "CNY".into(),
                paid_at_ms: paid_at,
                payer_card_no: String::new(),
                payer_name: String::new(),
            })
            .await
            .with_context(|| format!("business: record payment {order_no}"))?;
        let gross = money(amount)?;
        let rate: Decimal = m.fee_rate.parse()?;
        let net = gross
            .checked_sub(&gross.times_rate(rate))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let entry = expected.entry(m.id).or_insert(Money::zero(Currency::Cny));
        *entry = entry
            .checked_add(&net)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    say(
        v,
        format!("recorded and settled {} payments", payments.len()),
    );

    // --- refunds
    let mut refund_ids: Vec<(String, String)> = Vec::new(); // (merchant, refund_id)
    let mut requests: Vec<(&MerchantSeed, String, String, String)> = Vec::new();
    for (i, (m, order_no, amount, _)) in payments.iter().enumerate() {
        match m.id {
            "M1001" if i < 4 => {
                requests.push((m, format!("R-{order_no}"), order_no.clone(), amount.clone()))
            }
            "M1001" if i < 8 => {
                requests.push((
                    m,
                    format!("R-{order_no}-a"),
                    order_no.clone(),
                    "10.00".into(),
                ));
                requests.push((
                    m,
                    format!("R-{order_no}-b"),
                    order_no.clone(),
                    "20.50".into(),
                ));
            }
            "M1002" if i < 18 => {
                requests.push((m, format!("R-{order_no}"), order_no.clone(), amount.clone()))
            }
            "M1003" => {
                requests.push((m, format!("R-{order_no}"), order_no.clone(), amount.clone()))
            }
            _ => {}
        }
    }
    let mut rejected_at_request = 0usize;
    for (m, refund_no, order_no, amount) in &requests {
        let mut merchant = c.merchant(m.api_key)?;
        let r = merchant
            .create_refund(biz::CreateRefundRequest {
                merchant_refund_no: refund_no.clone(),
                order_no: order_no.clone(),
                amount: amount.clone(),
                currency: "CNY".into(),
                reason: "customer returned the goods".into(),
            })
            .await
            .with_context(|| format!("merchant {}: create refund {refund_no}", m.id))?
            .into_inner();
        let status = biz::RefundStatus::try_from(r.status).unwrap_or_default();
        if status == biz::RefundStatus::Rejected {
            rejected_at_request += 1;
            say(
                v,
                format!("  {refund_no}: REJECTED — {} {}", r.error_code, r.reason),
            );
        }
        refund_ids.push((m.id.to_string(), r.refund_id));
    }
    // One request that validation refuses outright: more than was paid.
    let mut m1 = c.merchant(MERCHANTS[0].api_key)?;
    let over = m1
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-over".into(),
            order_no: payments[4].1.clone(),
            amount: "9999.00".into(),
            currency: "CNY".into(),
            reason: "too much".into(),
        })
        .await;
    match over {
        Err(status) => say(
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
        ),
        Ok(_) => bail!("a refund above the paid amount was accepted"),
    }
    say(
        v,
        format!(
            "requested {} refunds ({} rejected at request)",
            requests.len(),
            rejected_at_request
        ),
    );

    // --- days pass: the refund center sends, the bank processes, reconciliation decides
    let mut days = 0u32;
    loop {
        let cycle = c
            .refund
            .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
            .await?
            .into_inner();
        clock.advance(Duration::hours(5));
        let tick = c.bank.tick(bank::TickRequest {}).await?.into_inner();
        // Next morning: yesterday's clearing files.
        let date = clock.today();
        clock.advance(Duration::hours(18));
        days += 1;
        c.bank.tick(bank::TickRequest {}).await?;
        let mut recon_line = String::new();
        for (code, _, _) in CHANNELS {
            let run = c
                .reconciliation
                .run_reconciliation(rec::RunReconciliationRequest {
                    channel: code.to_string(),
                    date: date.to_string(),
                })
                .await
                .with_context(|| format!("reconciliation {code} {date}"))?
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
            recon_line.push_str(&format!(" {code}[{}]", counts.join(" ")));
        }
        c.refund.run_outbox(rfd::RunOutboxRequest {}).await?;
        say(
            v,
            format!(
                "day {days} ({date}): sent {} to banks, bank completed {} (callbacks {}), reconciled:{recon_line}",
                cycle.accepted, tick.completed, tick.callbacks_sent
            ),
        );
        let open = list_all(&mut c)
            .await?
            .iter()
            .filter(|r| !is_final(r.status))
            .count();
        if open == 0 || days >= 6 {
            break;
        }
    }

    // --- the books
    let refunds = list_all(&mut c).await?;
    let mut summary = DemoSummary {
        days_simulated: days,
        ..Default::default()
    };
    for r in &refunds {
        let status = biz::RefundStatus::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| "UNKNOWN".into());
        *summary.refunds_by_status.entry(status).or_default() += 1;
        if !is_final(r.status) {
            summary
                .violations
                .push(format!("refund {} is not final", r.refund_id));
        }
        if r.status == biz::RefundStatus::Succeeded as i32 {
            let debit = c
                .clearing
                .get_debit(clr::GetDebitRequest {
                    refund_id: r.refund_id.clone(),
                })
                .await?
                .into_inner();
            let part = wire_money(&debit.merchant_amount, &debit.currency)?;
            let entry = expected
                .entry(
                    MERCHANTS
                        .iter()
                        .find(|m| m.id == r.merchant_id)
                        .map(|m| m.id)
                        .unwrap_or("?"),
                )
                .or_insert(Money::zero(Currency::Cny));
            *entry = entry
                .checked_sub(&part)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    if refunds.len() != refund_ids.len() {
        summary.violations.push(format!(
            "{} refunds requested but {} listed",
            refund_ids.len(),
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
    let tb = c
        .accounting
        .trial_balance(acc::TrialBalanceRequest {})
        .await?
        .into_inner();
    summary.trial_balance_balanced = tb.balanced;
    if !tb.balanced {
        summary
            .violations
            .push("trial balance is not balanced".into());
    }

    if v {
        println!();
        println!("== Summary after {days} simulated day(s) ==");
        println!("refunds by final status:");
        for (status, n) in &summary.refunds_by_status {
            println!("  {status:<10} {n}");
        }
        println!("merchant settlement balances (expected = payments - fees - merchant part of successful refunds):");
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
    Ok(summary)
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
        })
        .await?
        .into_inner();
    let value: Decimal = b.balance.parse().context("balance from accounting")?;
    Money::new(value, Currency::Cny).map_err(|e| anyhow::anyhow!("{e}"))
}
