//! `tuikuan bench …`: benchmarks that print figures. Never timed assertions: they measure and
//! report, with the hardware they ran on, and `docs/performance.md` records the results.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tuikuan_kernel::{Clock, ManualClock};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::refund::v1 as rfd;

use crate::cluster::Cluster;
use crate::config::Service;

/// One line describing the machine: CPU model, cores, memory.
pub fn hardware() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {mem_gib} GiB")
}

/// Latency percentiles of a run.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub count: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latencies {
    fn from(mut samples: Vec<Duration>, elapsed: Duration) -> Latencies {
        samples.sort_unstable();
        let at = |q: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            // Index arithmetic on a count, not money.
            #[allow(clippy::float_arithmetic)]
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i.min(samples.len() - 1)]
        };
        Latencies {
            count: samples.len(),
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        #[allow(clippy::float_arithmetic)]
        let r = self.count as f64 / self.elapsed.as_secs_f64().max(1e-9);
        r
    }
}

/// Runs `total` calls of `op` from `concurrency` workers; returns the latencies.
async fn drive<F, Fut>(total: usize, concurrency: usize, op: F) -> anyhow::Result<Latencies>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                op(i).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.context("bench worker")??);
    }
    Ok(Latencies::from(all, started.elapsed()))
}

/// Options of `tuikuan bench chain`.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    pub refunds: usize,
    pub concurrency: usize,
    /// PostgreSQL URL template with `{service}`; SQLite in a temporary directory when `None`.
    pub database_url: Option<String>,
}

/// gRPC calls one accepted interface refund makes through the chain: merchant → business,
/// business → clearing (RefundDebit), clearing → accounting (Post), business → refund
/// (CreateRefund), refund → clearing (GetDebit).
pub const GRPC_CALLS_PER_REFUND: u32 = 5;

/// Merchant refunds accepted through the whole chain (all services in one process, real gRPC),
/// compared with bare tonic unary round trips on the same machine.
pub async fn chain(options: ChainOptions) -> anyhow::Result<String> {
    let tmp = tempfile::tempdir()?;
    let mut config = crate::local::throwaway_config(tmp.path(), &crate::local::fresh_pki()?)?;
    config.database_url = options.database_url.clone();
    let clock = ManualClock::at_business(crate::demo::demo_start_date(), 10);
    let cluster = Cluster::start(config, Arc::new(clock.clone()), &[]).await?;
    let result = chain_on(&cluster, &clock, &options).await;
    cluster.shutdown().await?;
    result
}

async fn chain_on(
    cluster: &Cluster,
    clock: &ManualClock,
    options: &ChainOptions,
) -> anyhow::Result<String> {
    let mut c = cluster.clients()?;
    c.refund
        .upsert_channel(rfd::Channel {
            code: "BENCH".into(),
            kind: rfd::ChannelKind::NetBanking as i32,
            methods: vec![rfd::RefundMethod::Interface as i32],
            original_route_window_days: 180,
            bank_code: "BENCH".into(),
            ..Default::default()
        })
        .await?;
    c.business
        .upsert_channel(biz::Channel {
            code: "BENCH".into(),
            refund_window_days: 365,
            enabled: true,
        })
        .await?;
    let key = "bench-merchant-key-0000000001";
    c.business
        .create_merchant(biz::CreateMerchantRequest {
            merchant_id: "MBENCH".into(),
            name: "bench".into(),
            api_key: key.into(),
        })
        .await?;
    c.clearing
        .upsert_merchant_policy(clr::MerchantPolicy {
            merchant_id: "MBENCH".into(),
            fee_rate: "0.006".into(),
            fee_refund: clr::FeeRefundPolicy::Proportional as i32,
            ..Default::default()
        })
        .await?;
    // Each trade takes 100 refunds of 1.00.
    let warmup = 200usize.min(options.refunds);
    let total = options.refunds + warmup;
    let trades = total.div_ceil(100).max(1);
    for t in 0..trades {
        c.business
            .record_payment(biz::RecordPaymentRequest {
                merchant_id: "MBENCH".into(),
                order_no: format!("BT-{t}"),
                channel: "BENCH".into(),
                amount: "100.00".into(),
                currency: "CNY".into(),
                paid_at_ms: clock.now_ms() - 60_000,
                ..Default::default()
            })
            .await?;
    }
    let merchant = c.merchant(key)?;
    let make = |offset: usize| {
        let merchant = merchant.clone();
        move |i: usize| {
            let mut m = merchant.clone();
            let i = i + offset;
            async move {
                let r = m
                    .create_refund(biz::CreateRefundRequest {
                        merchant_refund_no: format!("BR-{i}"),
                        order_no: format!("BT-{}", i % trades),
                        amount: "1.00".into(),
                        currency: "CNY".into(),
                        reason: String::new(),
                        ..Default::default()
                    })
                    .await
                    .context("create refund")?
                    .into_inner();
                anyhow::ensure!(
                    r.status == biz::RefundStatus::Processing as i32,
                    "refund {i} not accepted: {r:?}"
                );
                Ok(())
            }
        }
    };
    drive(warmup, options.concurrency, make(0)).await?;
    let refunds = drive(options.refunds, options.concurrency, make(warmup)).await?;

    // Bare unary round trips: the health check of the business service, same concurrency.
    let health = tonic_health::pb::health_client::HealthClient::new(
        cluster
            .config()
            .transport(tuikuan_proto::tls::Principal::Ctl)?
            .channel(
                tuikuan_proto::tls::Principal::Business,
                &cluster.url(Service::Business),
            )?,
    );
    let bare_total = (options.refunds * GRPC_CALLS_PER_REFUND as usize).clamp(5_000, 100_000);
    let bare = drive(bare_total, options.concurrency, move |_| {
        let mut h = health.clone();
        async move {
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let tb = c
        .accounting
        .trial_balance(acc::TrialBalanceRequest::default())
        .await?
        .into_inner();
    anyhow::ensure!(tb.balanced, "trial balance not balanced after the bench");
    #[allow(clippy::float_arithmetic)]
    let efficiency = refunds.rate() * f64::from(GRPC_CALLS_PER_REFUND) / bare.rate();
    let store = if options.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    Ok(format!(
        "bench chain: {} refunds through the whole chain ({store}, all services in one process, real gRPC), concurrency {}\n\
         hardware: {}\n\
         refunds:    {:>10.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({:.2} s)\n\
         bare gRPC:  {:>10.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} health checks)\n\
         chain efficiency = refunds/s x {} calls per refund / bare calls/s = {:.2}\n\
         trial balance: balanced",
        refunds.count,
        options.concurrency,
        hardware(),
        refunds.rate(),
        ms(refunds.p50),
        ms(refunds.p99),
        ms(refunds.max),
        refunds.elapsed.as_secs_f64(),
        bare.rate(),
        ms(bare.p50),
        ms(bare.p99),
        bare.count,
        GRPC_CALLS_PER_REFUND,
        efficiency
    ))
}

fn ms(d: Duration) -> f64 {
    #[allow(clippy::float_arithmetic)]
    let v = d.as_secs_f64() * 1000.0;
    v
}

/// Options of `tuikuan bench ledger`.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    pub postings: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub database_url: Option<String>,
}

/// Ledger postings per second through the accounting service's batch call.
pub async fn ledger(options: LedgerOptions) -> anyhow::Result<String> {
    let tmp = tempfile::tempdir()?;
    let mut config = crate::local::throwaway_config(tmp.path(), &crate::local::fresh_pki()?)?;
    config.database_url = options.database_url.clone();
    let clock = ManualClock::at_business(crate::demo::demo_start_date(), 10);
    let cluster = Cluster::start(config, Arc::new(clock), &[Service::Accounting]).await?;
    let client =
        tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient::new(
            // The benchmark stands in for the clearing center, the one caller of PostBatch.
            cluster
                .config()
                .transport(tuikuan_proto::tls::Principal::Clearing)?
                .channel(
                    tuikuan_proto::tls::Principal::Accounting,
                    &cluster.url(Service::Accounting),
                )?,
        );
    let account = |t: acc::AccountType, owner: &str| acc::Account {
        r#type: t as i32,
        owner: owner.into(),
        currency: "CNY".into(),
    };
    let entry = move |t, owner: &str, side: acc::Side| acc::Entry {
        account: Some(account(t, owner)),
        side: side as i32,
        amount: "1.00".into(),
        ..Default::default()
    };
    // Settlement-like postings across 100 merchants: reserve → merchant.
    let posting = move |i: usize| acc::PostRequest {
        request_id: format!("bench:{i}"),
        description: "bench".into(),
        entries: vec![
            entry(acc::AccountType::ChannelReserve, "BENCH", acc::Side::Debit),
            entry(
                acc::AccountType::MerchantSettlement,
                &format!("M{}", i % 100),
                acc::Side::Credit,
            ),
        ],
        ..Default::default()
    };
    let batches = options.postings.div_ceil(options.batch.max(1));
    let batch = options.batch.max(1);
    let total = options.postings;
    let batched = drive(batches, options.concurrency, move |b| {
        let mut c = client.clone();
        async move {
            let requests: Vec<acc::PostRequest> = (b * batch..((b + 1) * batch).min(total))
                .map(posting)
                .collect();
            let results = c
                .post_batch(acc::PostBatchRequest { requests })
                .await?
                .into_inner()
                .results;
            anyhow::ensure!(
                results.iter().all(|r| r.error_code.is_empty()),
                "a posting was refused"
            );
            Ok(())
        }
    })
    .await?;
    cluster.shutdown().await?;
    #[allow(clippy::float_arithmetic)]
    let per_sec = total as f64 / batched.elapsed.as_secs_f64().max(1e-9);
    Ok(format!(
        "bench ledger: {total} postings in batches of {batch}, concurrency {} ({})\n\
         hardware: {}\n\
         postings:   {per_sec:>10.0} /s   batch p50 {:.2} ms   p99 {:.2} ms   ({:.2} s)",
        options.concurrency,
        if options.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        hardware(),
        ms(batched.p50),
        ms(batched.p99),
        batched.elapsed.as_secs_f64()
    ))
}

/// Reconciliation end to end (parse a generated WeChat bill, match, store the run on SQLite,
/// write back every refund), or parse and match only (the memory figure for very large files).
pub async fn recon(rows: usize, parse_only: bool) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let report = if parse_only {
        tuikuan_reconciliation::bench::run_parse_match(rows, dir.path()).await
    } else {
        tuikuan_reconciliation::bench::run(rows, dir.path()).await
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("bench recon\nhardware: {}\n{report}", hardware()))
}

/// Daily spreadsheet generation: one batch of `rows` refunds rendered in ICBC's template and
/// written as .xlsx (the refund center's `GenerateBatches` does this per bank and method), then
/// read back with calamine to check the row count. Measures the rendering and the file, not the
/// selection of pending orders from the database.
pub async fn sheets(rows: usize) -> anyhow::Result<String> {
    use tuikuan_kernel::{Currency, Money};
    use tuikuan_refund::domain::batch::{
        batch_id, render, row_id, BankTemplate, Batch, BatchRow, BatchStatus, RowStatus,
    };
    use tuikuan_refund::domain::RefundMethod;
    let date = crate::demo::demo_start_date();
    let id = batch_id(date, "ICBC", RefundMethod::FileUpload, 1);
    let template = BankTemplate::builtin("ICBC")
        .ok_or_else(|| anyhow::anyhow!("no built-in ICBC template"))?;
    let started = Instant::now();
    let batch = Batch {
        batch_id: id.clone(),
        bank_code: "ICBC".into(),
        channel: "ICBC_B2C".into(),
        method: RefundMethod::FileUpload,
        date,
        sequence: 1,
        status: BatchStatus::Generated,
        currency: Currency::Cny,
        rows: (1..=rows as u32)
            .map(|line| BatchRow {
                row_id: row_id(&id, line),
                batch_id: id.clone(),
                refund_id: format!("rf_{line:032}"),
                attempt: 1,
                line,
                order_no: format!("2026061800000000{line:08}"),
                amount: Money::from_minor(1000 + i64::from(line % 100_000), Currency::Cny),
                card_no: "6222020200000000018".into(),
                holder_name: "张三".into(),
                status: RowStatus::Included,
                reason: String::new(),
            })
            .collect(),
        file_name: format!("{id}.xlsx"),
        file_sha256: String::new(),
        generated_at_ms: 0,
        marked_at_ms: None,
        marked_by: String::new(),
        note: String::new(),
        bank_delivered: false,
        bank_error: String::new(),
    };
    let built = started.elapsed();
    let model = render(&template, &batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rendered = started.elapsed();
    let bytes =
        tuikuan_refund::sheet::write_xlsx(&model, date).map_err(|e| anyhow::anyhow!("{e}"))?;
    let written = started.elapsed();
    // Read it back as an independent reader would.
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.clone()))?;
    use calamine::Reader;
    let sheet = book
        .worksheet_range_at(0)
        .ok_or_else(|| anyhow::anyhow!("no sheet"))??;
    let read_rows = sheet.rows().count();
    let read = started.elapsed();
    // Figures for display only, not money.
    #[allow(clippy::float_arithmetic)]
    let (per_sec, mib) = (
        rows as f64 / (written - rendered).as_secs_f64().max(1e-9),
        bytes.len() as f64 / 1_048_576.0,
    );
    Ok(format!(
        "bench sheets: one batch of {rows} refunds in ICBC's template\n\
         hardware: {}\n\
         render {:.2} s, write .xlsx {:.2} s ({per_sec:.0} rows/s), file {:.1} MiB; \
         calamine read back {} rows (header + rows + summary) in {:.2} s",
        hardware(),
        (rendered - built).as_secs_f64(),
        (written - rendered).as_secs_f64(),
        mib,
        read_rows,
        (read - written).as_secs_f64(),
    ))
}
