//! `tuikuan chaos`: crash faults with real processes, then the auditor.
//!
//! The harness starts each of the seven services as its own `tuikuan serve <service>` child
//! process (fixed free ports picked up front, SQLite under a data directory, scheduled jobs every
//! 200 ms on the system clock, a bank simulator that answers in 0–2 s, fails some refunds and
//! payouts and returns some paid payouts). It seeds channels of every refund method (interface,
//! payout, file-upload, offline, with fallbacks), merchants and a float payment each, then drives a
//! load of refunds — a payment and a merchant refund each, retried like a merchant would — while a
//! killer sends SIGKILL to a service chosen by the seed every `kill_every_ms` and starts it again.
//! A staff task does what people do: generates the day's spreadsheets and marks them uploaded or
//! sent, and reconciles today's clearing files, over and over. When the load is done and the
//! killer has had its turns, the harness waits (bounded) until every refund is final and the
//! auditor passes, and reports: refunds lost (requested, but missing or not final), refunds paid
//! twice, and the auditor's verdict.
//!
//! Everything random comes from `--seed`: the load (channels, amounts, partial refunds), the bank
//! simulator's decisions, the order in which services are killed (each round of seven kills hits
//! every service once, in a seeded order) and their downtimes, so a failing run can be replayed
//! with the same seed (the instants differ, the choices do not).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Datelike, Weekday};
use futures::StreamExt;
use tokio::sync::Mutex;
use tonic::{Code, Status};
use tuikuan_kernel::{Clock, SystemClock};
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::audit::{self, AuditOptions, AuditReport};
use crate::clients::Clients;
use crate::config::Service;

/// Options of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `tuikuan` binary to run the services with.
    pub binary: PathBuf,
    /// Merchant refunds to request (one payment each).
    pub refunds: usize,
    /// How often a service is killed (SIGKILL) and restarted.
    pub kill_every_ms: u64,
    /// Kill this many times; `None` keeps killing until the load is done.
    pub kills: Option<usize>,
    /// How long a killed service stays down at most (a seeded share of it).
    pub max_downtime_ms: u64,
    /// Seed of the load, the bank simulator and the killer.
    pub seed: u64,
    /// Concurrent merchants' requests.
    pub concurrency: usize,
    /// Keep the databases and logs here (a temporary directory when `None`).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL template with `{service}` instead of SQLite.
    pub database_url: Option<String>,
    /// How long to wait, after the load and the kills, for every refund to be final.
    pub settle_timeout: Duration,
    /// Network faults between the services (a seeded TCP proxy in front of each); `None` for
    /// direct connections.
    pub network: Option<NetFaults>,
    /// Print progress.
    pub verbose: bool,
}

impl ChaosOptions {
    /// Defaults for `binary`: 60 refunds, a kill every 1.5 s, 3 kills, seed 1.
    pub fn new(binary: PathBuf) -> ChaosOptions {
        ChaosOptions {
            binary,
            refunds: 60,
            kill_every_ms: 1500,
            kills: Some(3),
            max_downtime_ms: 500,
            seed: 1,
            concurrency: 16,
            data_dir: None,
            database_url: None,
            settle_timeout: Duration::from_secs(120),
            network: None,
            verbose: false,
        }
    }
}

/// One kill.
#[derive(Debug, Clone)]
pub struct Kill {
    /// Milliseconds after the load started.
    pub at_ms: u128,
    pub service: Service,
    /// How long the service was down (kill to healthy again).
    pub down_ms: u128,
}

/// What a chaos run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub requested: usize,
    /// Merchant refunds by final business-layer status (and any that are not final).
    pub by_status: BTreeMap<String, usize>,
    /// (method of the final attempt, refund-center status) -> count.
    pub by_method: BTreeMap<(String, String), usize>,
    /// Refunds that fell back to another method at least once.
    pub fallbacks: usize,
    /// Requests that did not get through: no answer before the deadline, or refused although
    /// valid.
    pub unanswered: Vec<String>,
    /// Requested refunds the business layer does not have, or that are not final.
    pub lost: Vec<String>,
    /// Refunds the bank paid more than once (from the auditor).
    pub paid_twice: usize,
    pub kills: Vec<Kill>,
    /// What the fault-injecting proxies did (all zero without network faults).
    pub network: NetStats,
    /// Retries the merchants and staff needed because a service was down.
    pub retries: usize,
    pub load: Duration,
    pub settle: Duration,
    pub total: Duration,
    pub audit: AuditReport,
    pub data_dir: PathBuf,
}

impl ChaosReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.unanswered.is_empty() && self.audit.ok()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "chaos run, seed {}: {} refunds requested; load {:.1} s, settle {:.1} s, total {:.1} s",
            self.seed,
            self.requested,
            self.load.as_secs_f32(),
            self.settle.as_secs_f32(),
            self.total.as_secs_f32()
        )?;
        let kills: Vec<String> = self
            .kills
            .iter()
            .map(|k| format!("{}@{}ms({}ms down)", k.service.name(), k.at_ms, k.down_ms))
            .collect();
        writeln!(f, "kills ({}): {}", self.kills.len(), kills.join(" "))?;
        writeln!(f, "retries after faults: {}", self.retries)?;
        let n = &self.network;
        if n.connections > 0 {
            writeln!(
                f,
                "network faults: {} proxied connections, {} delayed, {} dropped before the far side, {} cut after it answered (unknown outcome)",
                n.connections, n.delayed, n.dropped, n.cut_after
            )?;
        }
        writeln!(f, "merchant refunds by status:")?;
        for (s, n) in &self.by_status {
            writeln!(f, "  {s:<10} {n}")?;
        }
        writeln!(f, "by method of the last attempt and refund-center status:")?;
        for ((m, s), n) in &self.by_method {
            writeln!(f, "  {m:<12} {s:<10} {n}")?;
        }
        writeln!(f, "fell back to another method: {}", self.fallbacks)?;
        writeln!(
            f,
            "lost: {}   unanswered or refused: {}   paid twice: {}",
            self.lost.len(),
            self.unanswered.len(),
            self.paid_twice
        )?;
        for l in self.lost.iter().take(20) {
            writeln!(f, "  lost: {l}")?;
        }
        for u in self.unanswered.iter().take(20) {
            writeln!(f, "  unanswered: {u}")?;
        }
        write!(f, "{}", self.audit)?;
        writeln!(f, "data and logs: {}", self.data_dir.display())?;
        writeln!(f, "{}", if self.ok() { "PASS" } else { "FAIL" })
    }
}

// ------------------------------------------------------------------------------------------------
// The scenario's configuration
// ------------------------------------------------------------------------------------------------

struct MerchantSeed {
    id: &'static str,
    key: &'static str,
    fee_rate: &'static str,
    fee_refund: clr::FeeRefundPolicy,
}

const MERCHANTS: &[MerchantSeed] = &[
    MerchantSeed {
        id: "CM1",
        key: "chaos-key-cm1-7d3f9a1b2c",
        fee_rate: "0.006",
        fee_refund: clr::FeeRefundPolicy::Proportional,
    },
    MerchantSeed {
        id: "CM2",
        key: "chaos-key-cm2-4e8b2d6f1a",
        fee_rate: "0.0038",
        fee_refund: clr::FeeRefundPolicy::None,
    },
    MerchantSeed {
        id: "CM3",
        key: "chaos-key-cm3-9c1e5a7b3d",
        fee_rate: "0.006",
        fee_refund: clr::FeeRefundPolicy::None,
    },
];

struct ChannelSeed {
    code: &'static str,
    kind: rfd::ChannelKind,
    methods: &'static [rfd::RefundMethod],
    bank: &'static str,
    card: bool,
}

/// The demo's channels: every method, with fallbacks.
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
        card: true,
    },
    ChannelSeed {
        code: "WECHAT_AGG",
        kind: rfd::ChannelKind::Aggregated,
        methods: &[rfd::RefundMethod::Interface],
        bank: "WECHAT",
        card: false,
    },
    ChannelSeed {
        code: "CMB_QUICK",
        kind: rfd::ChannelKind::QuickPay,
        methods: &[rfd::RefundMethod::Payout, rfd::RefundMethod::Offline],
        bank: "CMB",
        card: true,
    },
    ChannelSeed {
        code: "UNIONPAY_B2C",
        kind: rfd::ChannelKind::Unionpay,
        methods: &[rfd::RefundMethod::FileUpload, rfd::RefundMethod::Offline],
        bank: "CCB",
        card: true,
    },
    ChannelSeed {
        code: "BOC_COUNTER",
        kind: rfd::ChannelKind::Unionpay,
        methods: &[rfd::RefundMethod::Offline],
        bank: "BOC",
        card: true,
    },
];

/// A small, seeded PRNG (SplitMix64): the harness needs reproducible choices, not cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// One planned payment and refund.
#[derive(Debug, Clone)]
struct Planned {
    merchant: usize,
    channel: usize,
    order_no: String,
    refund_no: String,
    paid_minor: i64,
    refund_minor: i64,
    card: String,
}

fn plan(seed: u64, n: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let channel = rng.below(CHANNELS.len() as u64) as usize;
            let merchant = rng.below(MERCHANTS.len() as u64) as usize;
            // Yuan 10..2000 and cents avoiding the simulator's scripted ones, except for a few
            // that ask for a scripted failure or return on purpose.
            let yuan = 10 + rng.below(1990) as i64;
            let cents = match rng.below(100) {
                0..=2 => 13,  // interface refund fails -> fallback
                3..=5 => 23,  // payout fails -> fallback
                6..=8 => 33,  // spreadsheet row fails -> fallback or money back
                9..=10 => 44, // payout paid, then returned
                _ => loop {
                    let c = rng.below(100) as i64;
                    if ![13, 23, 33, 44, 88].contains(&c) {
                        break c;
                    }
                },
            };
            let paid_minor = yuan * 100 + cents;
            // Most refunds are full, some partial (keeping the scripted cents).
            let refund_minor = if rng.chance(250) {
                (paid_minor / 200) * 100 + cents
            } else {
                paid_minor
            };
            Planned {
                merchant,
                channel,
                order_no: format!("CO-{seed}-{i:06}"),
                refund_no: format!("CR-{seed}-{i:06}"),
                paid_minor,
                refund_minor: refund_minor.max(1),
                card: luhn_card(i),
            }
        })
        .collect()
}

fn minor_str(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// A test card number (19 digits) with a valid Luhn check digit.
fn luhn_card(n: usize) -> String {
    let body = format!("621700{:012}", n);
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

// ------------------------------------------------------------------------------------------------
// The processes
// ------------------------------------------------------------------------------------------------

/// The seven child processes and how to start them again.
struct Procs {
    binary: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    ports: BTreeMap<Service, u16>,
    children: BTreeMap<Service, Child>,
    /// The staff client's transport (mutual TLS as `ctl`), for health checks and staff calls.
    ctl: tuikuan_proto::tls::Transport,
}

impl Procs {
    fn url(&self, s: Service) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.ports.get(&s).copied().unwrap_or(0)
        )
    }

    fn spawn(&mut self, s: Service) -> anyhow::Result<()> {
        let log_path = self.logs.join(format!("{}.log", s.name()));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let err = log.try_clone().context("log file")?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .arg(s.name())
            .env(
                "RUST_LOG",
                std::env::var("TUIKUAN_CHAOS_LOG").unwrap_or("warn".into()),
            )
            .env_remove("TUIKUAN_CONFIG")
            .env_remove("TUIKUAN_DATA_DIR")
            .env_remove("TUIKUAN_DATABASE_URL")
            .env_remove("TUIKUAN_JOB_INTERVAL_MS")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        for other in Service::ALL {
            cmd.env_remove(format!("TUIKUAN_{}_ADDR", other.name().to_uppercase()));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} serve {}", self.binary.display(), s.name()))?;
        self.children.insert(s, child);
        Ok(())
    }

    /// SIGKILL (`Child::kill` on Unix), then reap.
    fn kill(&mut self, s: Service) {
        if let Some(mut child) = self.children.remove(&s) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        let all: Vec<Service> = self.children.keys().copied().collect();
        for s in all {
            self.kill(s);
        }
    }

    /// Fails if the service's process has exited.
    fn check_alive(&mut self, s: Service) -> anyhow::Result<()> {
        if let Some(child) = self.children.get_mut(&s) {
            if let Some(status) = child.try_wait().context("wait")? {
                let log = std::fs::read_to_string(self.logs.join(format!("{}.log", s.name())))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "{} exited with {status}; its log ends with:\n{}",
                    s.name(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Polls the gRPC health service of `s` until it answers SERVING (bounded).
async fn wait_healthy(procs: &Mutex<Procs>, s: Service, within: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let url = procs.lock().await.url(s);
    let deadline = Instant::now() + within;
    loop {
        procs.lock().await.check_alive(s)?;
        let channel = procs.lock().await.ctl.channel(s.principal(), &url);
        if let Ok(channel) = channel {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(a) = answer {
                if a.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not become healthy within {within:?}", s.name());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("pick free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A calendar where every day around today is a working day (weekends as make-up working days),
/// so that spreadsheets are generated whatever day the run happens on.
fn calendar_text(today: chrono::NaiveDate) -> String {
    let mut makeup = Vec::new();
    for d in -10..=10 {
        if let Some(date) = today.checked_add_signed(chrono::Duration::days(d)) {
            if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                makeup.push(format!("\"{date}\""));
            }
        }
    }
    format!(
        "name = \"chaos: every day a working day\"\nholidays = []\nmakeup_workdays = [{}]\n",
        makeup.join(", ")
    )
}

fn config_text(
    data_dir: &Path,
    calendar: &Path,
    ports: &BTreeMap<Service, u16>,
    proxies: &BTreeMap<Service, u16>,
    seed: u64,
    database_url: Option<&str>,
    public_port: u16,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("public_port = {public_port}\n"));
    s.push_str(&format!(
        "data_dir = {:?}\n",
        data_dir.display().to_string()
    ));
    s.push_str(&format!(
        "calendar_file = {:?}\n",
        calendar.display().to_string()
    ));
    if let Some(url) = database_url {
        s.push_str(&format!("database_url = {url:?}\n"));
    }
    s.push_str("job_interval_ms = 200\n");
    s.push_str("[ports]\n");
    for (svc, port) in ports {
        s.push_str(&format!("{} = {port}\n", svc.name()));
    }
    if !proxies.is_empty() {
        // Services reach each other through the fault-injecting proxies.
        s.push_str("[peers]\n");
        for (svc, port) in proxies {
            s.push_str(&format!("{} = \"http://127.0.0.1:{port}\"\n", svc.name()));
        }
    }
    // Certificates next to the data directory (written by `run`); the proxies are plain TCP, and
    // clients verify each service by its identity's server name, not by the address dialled.
    let certs = data_dir.with_file_name("certs");
    s.push_str(&format!(
        "[tls]\ndir = {:?}\npublic_cert = {:?}\npublic_key = {:?}\n",
        certs.display().to_string(),
        certs.join("merchant-api.pem").display().to_string(),
        certs.join("merchant-api-key.pem").display().to_string()
    ));
    s.push_str(&format!(
        "[bank]\nseed = {seed}\ndelay_min_secs = 0\ndelay_max_secs = 2\nfail_per_mille = 100\nduplicate_callback_per_mille = 100\nout_of_order_per_mille = 100\nreturn_per_mille = 30\nreturn_delay_secs = 2\n"
    ));
    s
}

// ------------------------------------------------------------------------------------------------
// Retrying like a client would
// ------------------------------------------------------------------------------------------------

fn error_code(s: &Status) -> &str {
    s.metadata()
        .get(tuikuan_proto::status::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Whether a call failed because something was down (retry with the same content), rather than
/// because the request itself was refused.
fn transient(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => true,
        Code::Aborted | Code::ResourceExhausted => true,
        Code::Internal => matches!(error_code(s), "" | "STORAGE"),
        _ => false,
    }
}

/// One unary call on a clone of `client`, as a future that owns everything it needs.
macro_rules! rpc {
    ($client:expr, $method:ident, $request:expr) => {{
        let mut client = $client.clone();
        let request = $request;
        async move { client.$method(request).await }
    }};
}

/// Calls `f` until it succeeds, fails for good, or `deadline` passes; counts retries.
async fn retry<T, F, Fut>(deadline: Instant, retries: &AtomicUsize, f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    retry_if(deadline, retries, transient, f).await
}

/// A payment whose settlement is still pending (the clearing center was down when it was
/// recorded; the business layer's recovery settles it) cannot be refunded yet: a merchant tries
/// again later.
fn not_settled_yet(s: &Status) -> bool {
    transient(s) || (error_code(s) == "TRADE_NOT_REFUNDABLE" && s.message().contains("not settled"))
}

/// [`retry`] with the caller's idea of which failures are worth another attempt.
async fn retry_if<T, F, Fut>(
    deadline: Instant,
    retries: &AtomicUsize,
    again: fn(&Status) -> bool,
    mut f: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut backoff = Duration::from_millis(20);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(s) if again(&s) && Instant::now() < deadline => {
                retries.fetch_add(1, Ordering::Relaxed);
                // Backing off before the next attempt: a client's pacing, not synchronisation.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(s) => return Err(s),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------------

/// Runs the chaos scenario and returns its report (the caller decides the exit status).
pub async fn run(options: ChaosOptions) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let temp = tempfile::tempdir().context("temporary directory")?;
    let root = options
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let data_dir = root.join("data");
    let logs = root.join("logs");
    std::fs::create_dir_all(&data_dir).context("data directory")?;
    std::fs::create_dir_all(&logs).context("log directory")?;
    let clock = SystemClock;
    let calendar = root.join("calendar.toml");
    std::fs::write(&calendar, calendar_text(clock.today())).context("write calendar")?;
    let mut free = free_ports(Service::ALL.len() + 1)?;
    let public_port = free.pop().context("a free port")?;
    let ports: BTreeMap<Service, u16> = Service::ALL.into_iter().zip(free).collect();
    let pki = crate::local::fresh_pki()?;
    let certs = root.join("certs");
    pki.write(&certs, true)
        .map_err(|e| anyhow::anyhow!(e.message))
        .context("certificates")?;
    let net_stats = Arc::new(NetCounters::default());
    let mut proxy_ports = BTreeMap::new();
    let mut proxy_tasks = Vec::new();
    if let Some(faults) = options.network {
        for (i, s) in Service::ALL.into_iter().enumerate() {
            let target = format!("127.0.0.1:{}", ports.get(&s).copied().unwrap_or(0));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("bind a proxy")?;
            proxy_ports.insert(s, listener.local_addr()?.port());
            let seed = options.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            proxy_tasks.push(tokio::spawn(proxy(
                listener,
                target,
                faults,
                seed,
                net_stats.clone(),
            )));
        }
    }
    let config = root.join("tuikuan.toml");
    std::fs::write(
        &config,
        config_text(
            &data_dir,
            &calendar,
            &ports,
            &proxy_ports,
            options.seed,
            options.database_url.as_deref(),
            public_port,
        ),
    )
    .context("write config")?;
    let say = |line: String| {
        if options.verbose {
            println!("[{:>7.1}s] {line}", started.elapsed().as_secs_f32());
        }
    };

    let procs = Arc::new(Mutex::new(Procs {
        binary: options.binary.clone(),
        config,
        logs,
        ports,
        children: BTreeMap::new(),
        ctl: pki.transport(tuikuan_proto::tls::Principal::Ctl),
    }));
    {
        let mut p = procs.lock().await;
        for s in Service::ALL {
            p.spawn(s)?;
        }
    }
    for s in Service::ALL {
        wait_healthy(&procs, s, Duration::from_secs(60)).await?;
    }
    say(format!(
        "seven services up, one process each, under {}",
        root.display()
    ));
    let clients = {
        let p = procs.lock().await;
        // The staff steps act as one operator with every role, with a token signed by the
        // deployment's (development) key that the services made in the data directory.
        let deployment = crate::config::DeploymentConfig::load(Some(p.config.as_path()))?;
        let token = crate::keys::resolve(&deployment)?
            .token(crate::cluster::LOCAL_OPERATOR, tuikuan_auth::Role::ALL)?;
        Clients::connect(
            &p.ctl,
            |s| p.url(s),
            &format!("https://127.0.0.1:{public_port}"),
            Some(&pki.ca.cert_pem),
        )?
        .with_token(&token)?
    };
    let retries = Arc::new(AtomicUsize::new(0));
    seed(&clients).await?;
    say("seeded channels, merchants and float payments".into());

    // --- the killer, the staff and the load, together
    let load_done = Arc::new(AtomicBool::new(false));
    let stop_staff = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let killer = tokio::spawn(killer(
        procs.clone(),
        options.clone(),
        load_done.clone(),
        load_started,
    ));
    let staff = tokio::spawn(staff(
        clients.clone(),
        stop_staff.clone(),
        retries.clone(),
        options.verbose,
    ));
    let planned = plan(options.seed, options.refunds);
    // With a fixed number of kills, the load is spread over the kill schedule so that requests
    // meet the faults; otherwise it goes as fast as it can and the killer follows it.
    let span = options
        .kills
        .map(|k| Duration::from_millis(options.kill_every_ms.saturating_mul(k as u64)))
        .unwrap_or_default();
    let unanswered = load(&clients, &planned, options.concurrency, span, &retries).await;
    load_done.store(true, Ordering::SeqCst);
    let load_elapsed = load_started.elapsed();
    say(format!(
        "load done: {} refunds requested in {:.1} s ({} unanswered)",
        planned.len(),
        load_elapsed.as_secs_f32(),
        unanswered.len()
    ));
    let kills = killer.await.context("killer task")??;
    say(format!("killer done after {} kills", kills.len()));

    // --- quiet period: every refund final and the auditor satisfied, or the deadline
    let settle_started = Instant::now();
    let deadline = settle_started + options.settle_timeout;
    // Waiting for refunds that never got through would only wait out the deadline; they are
    // reported as unanswered (a failure of the run) and still checked for traces by the auditor.
    let wanted: BTreeSet<(String, String)> = planned
        .iter()
        .filter(|p| {
            let tag = format!(" {} ", p.refund_no);
            !unanswered.iter().any(|u| u.contains(&tag))
        })
        .map(|p| (MERCHANTS[p.merchant].id.to_string(), p.refund_no.clone()))
        .collect();
    let audit_options = AuditOptions::default();
    let mut last_note = Instant::now();
    let (refunds, audit) = loop {
        let refunds = audit::list_business_refunds(&clients).await;
        let open = match &refunds {
            Ok(all) => open_refunds(all, &wanted),
            Err(_) => usize::MAX,
        };
        if open == 0 {
            match audit::run_with(&clients, &audit_options).await {
                Ok(a) if a.ok() || Instant::now() > deadline => break (refunds?, a),
                Ok(_) => {}
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
        } else if Instant::now() > deadline {
            let a = audit::run_with(&clients, &audit_options).await?;
            break (refunds?, a);
        }
        if last_note.elapsed() > Duration::from_secs(5) {
            say(format!(
                "waiting for the system to settle: {} refunds not final",
                if open == usize::MAX {
                    "?".to_string()
                } else {
                    open.to_string()
                }
            ));
            last_note = Instant::now();
        }
        // Polling the system under test with a bounded deadline.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settle = settle_started.elapsed();
    stop_staff.store(true, Ordering::SeqCst);
    let _ = staff.await;
    say(format!("settled in {:.1} s; audited", settle.as_secs_f32()));

    let mut report = ChaosReport {
        seed: options.seed,
        requested: planned.len(),
        unanswered,
        kills,
        retries: retries.load(Ordering::Relaxed),
        load: load_elapsed,
        settle,
        data_dir: root.clone(),
        paid_twice: audit.checked.paid_twice,
        ..ChaosReport::default()
    };
    let by_key: BTreeMap<(String, String), &biz::Refund> = refunds
        .iter()
        .map(|r| ((r.merchant_id.clone(), r.merchant_refund_no.clone()), r))
        .collect();
    for key in &wanted {
        match by_key.get(key) {
            None => report.lost.push(format!(
                "{} {}: the business layer does not have it",
                key.0, key.1
            )),
            Some(r) => {
                let status = biz::RefundStatus::try_from(r.status)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| "?".into());
                *report.by_status.entry(status.clone()).or_default() += 1;
                if !is_final(r.status) {
                    report.lost.push(format!(
                        "{} {} ({}): still {status}",
                        key.0, key.1, r.refund_id
                    ));
                }
            }
        }
    }
    method_figures(&clients, &mut report).await?;
    report.audit = audit;
    procs.lock().await.kill_all();
    for t in proxy_tasks {
        t.abort();
    }
    report.network = net_stats.snapshot();
    report.total = started.elapsed();
    if options.data_dir.is_none() && !report.ok() {
        // Keep the evidence of a failed run.
        report.data_dir = temp.keep();
    } else {
        drop(temp);
    }
    Ok(report)
}

fn is_final(status: i32) -> bool {
    status == biz::RefundStatus::Succeeded as i32
        || status == biz::RefundStatus::Failed as i32
        || status == biz::RefundStatus::Rejected as i32
}

fn open_refunds(all: &[biz::Refund], wanted: &BTreeSet<(String, String)>) -> usize {
    let done: BTreeSet<(String, String)> = all
        .iter()
        .filter(|r| is_final(r.status))
        .map(|r| (r.merchant_id.clone(), r.merchant_refund_no.clone()))
        .collect();
    wanted.iter().filter(|k| !done.contains(*k)).count()
}

/// Channels, merchants, policies and a float payment per merchant (so refund debits never lack
/// balance), before any fault.
async fn seed(c: &Clients) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let retries = AtomicUsize::new(0);
    for ch in CHANNELS {
        retry(deadline, &retries, || {
            rpc!(
                c.refund,
                upsert_channel,
                rfd::Channel {
                    code: ch.code.into(),
                    kind: ch.kind as i32,
                    methods: ch.methods.iter().map(|m| *m as i32).collect(),
                    original_route_window_days: 180,
                    bank_code: ch.bank.into(),
                    ..Default::default()
                }
            )
        })
        .await
        .context("refund center: upsert channel")?;
        retry(deadline, &retries, || {
            rpc!(
                c.business,
                upsert_channel,
                biz::Channel {
                    code: ch.code.into(),
                    refund_window_days: 365,
                    enabled: true,
                }
            )
        })
        .await
        .context("business: upsert channel")?;
    }
    let now_ms = SystemClock.now_ms();
    for m in MERCHANTS {
        let created = retry(deadline, &retries, || {
            rpc!(
                c.business,
                create_merchant,
                biz::CreateMerchantRequest {
                    merchant_id: m.id.into(),
                    name: format!("chaos merchant {}", m.id),
                    api_key: m.key.into(),
                }
            )
        })
        .await;
        if let Err(s) = created {
            // A kept data directory already has them.
            if s.code() != Code::AlreadyExists {
                return Err(anyhow::anyhow!("business: create merchant {}: {s}", m.id));
            }
        }
        retry(deadline, &retries, || {
            rpc!(
                c.clearing,
                upsert_merchant_policy,
                clr::MerchantPolicy {
                    merchant_id: m.id.into(),
                    fee_rate: m.fee_rate.into(),
                    fee_refund: m.fee_refund as i32,
                    ..Default::default()
                }
            )
        })
        .await
        .context("clearing: merchant policy")?;
        retry(deadline, &retries, || {
            rpc!(
                c.business,
                record_payment,
                biz::RecordPaymentRequest {
                    merchant_id: m.id.into(),
                    order_no: format!("FLOAT-{}", m.id),
                    channel: CHANNELS[0].code.into(),
                    amount: "50000000.00".into(),
                    currency: "CNY".into(),
                    paid_at_ms: now_ms - 3_600_000,
                    payer_card_no: String::new(),
                    payer_name: String::new(),
                    ..Default::default()
                }
            )
        })
        .await
        .context("business: float payment")?;
    }
    Ok(())
}

/// Every planned payment and refund, retried through the faults (a refund of a payment not
/// settled yet too). Returns the requests that did not get through: no answer before the
/// deadline, or refused (every planned request is valid, so a refusal is a finding).
async fn load(
    c: &Clients,
    planned: &[Planned],
    concurrency: usize,
    span: Duration,
    retries: &AtomicUsize,
) -> Vec<String> {
    let paid_at = SystemClock.now_ms() - 3_600_000;
    let start = tokio::time::Instant::now();
    let step = span / u32::try_from(planned.len().max(1)).unwrap_or(u32::MAX);
    let results: Vec<Option<String>> =
        futures::stream::iter(planned.iter().enumerate().map(|(i, p)| {
            let c = c.clone();
            async move {
                // The load's schedule: request i starts no earlier than i steps in.
                tokio::time::sleep_until(start + step * u32::try_from(i).unwrap_or(u32::MAX)).await;
                let deadline = Instant::now() + Duration::from_secs(120);
                let m = &MERCHANTS[p.merchant];
                let ch = &CHANNELS[p.channel];
                let paid = retry(deadline, retries, || {
                    rpc!(
                        c.business,
                        record_payment,
                        biz::RecordPaymentRequest {
                            merchant_id: m.id.into(),
                            order_no: p.order_no.clone(),
                            channel: ch.code.into(),
                            amount: minor_str(p.paid_minor),
                            currency: "CNY".into(),
                            paid_at_ms: paid_at,
                            payer_card_no: if ch.card {
                                p.card.clone()
                            } else {
                                String::new()
                            },
                            payer_name: if ch.card {
                                format!("Payer {}", p.order_no)
                            } else {
                                String::new()
                            },
                            ..Default::default()
                        }
                    )
                })
                .await;
                if let Err(s) = paid {
                    return Some(format!(
                        "payment {} {} (refund {} ) : {}: {}",
                        m.id,
                        p.order_no,
                        p.refund_no,
                        error_code(&s),
                        s.message()
                    ));
                }
                let merchant = match c.merchant(m.key) {
                    Ok(x) => x,
                    Err(e) => return Some(format!("{} {}: {e}", m.id, p.refund_no)),
                };
                let answer = retry_if(deadline, retries, not_settled_yet, || {
                    rpc!(
                        merchant,
                        create_refund,
                        biz::CreateRefundRequest {
                            merchant_refund_no: p.refund_no.clone(),
                            order_no: p.order_no.clone(),
                            amount: minor_str(p.refund_minor),
                            currency: "CNY".into(),
                            reason: "chaos".into(),
                            ..Default::default()
                        }
                    )
                })
                .await;
                match answer {
                    Ok(_) => None,
                    Err(s) => Some(format!(
                        "refund {} {} : {} {}: {}",
                        m.id,
                        p.refund_no,
                        if transient(&s) {
                            "no answer"
                        } else {
                            "refused"
                        },
                        error_code(&s),
                        s.message()
                    )),
                }
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// Kills a seeded choice of service every `kill_every_ms` and starts it again.
async fn killer(
    procs: Arc<Mutex<Procs>>,
    options: ChaosOptions,
    load_done: Arc<AtomicBool>,
    load_started: Instant,
) -> anyhow::Result<Vec<Kill>> {
    let mut rng = Rng::new(options.seed.wrapping_mul(31).wrapping_add(7));
    let mut kills = Vec::new();
    let mut order: Vec<Service> = Vec::new();
    loop {
        let enough = match options.kills {
            Some(n) => kills.len() >= n,
            None => load_done.load(Ordering::SeqCst),
        };
        if enough || options.kill_every_ms == 0 {
            return Ok(kills);
        }
        // The fault schedule: wait for the next kill.
        tokio::time::sleep(Duration::from_millis(options.kill_every_ms)).await;
        // Every service in turn, in a seeded order that changes each round, so that a few kills
        // hit different services and seven hit them all.
        if order.is_empty() {
            order = Service::ALL.to_vec();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let service = order.remove(0);
        let downtime = rng.below(options.max_downtime_ms + 1);
        let at_ms = load_started.elapsed().as_millis();
        let t = Instant::now();
        procs.lock().await.kill(service);
        if options.verbose {
            println!(
                "[killer] SIGKILL {} at {at_ms} ms; down for {downtime} ms",
                service.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(downtime)).await;
        procs.lock().await.spawn(service)?;
        wait_healthy(&procs, service, Duration::from_secs(60)).await?;
        kills.push(Kill {
            at_ms,
            service,
            down_ms: t.elapsed().as_millis(),
        });
    }
}

/// What staff do all day: the day's spreadsheets, marked uploaded or sent, and reconciliation of
/// today's clearing files (yesterday's too, should the run cross midnight).
async fn staff(c: Clients, stop: Arc<AtomicBool>, retries: Arc<AtomicUsize>, verbose: bool) {
    let first_day = SystemClock.today();
    while !stop.load(Ordering::SeqCst) {
        let today = SystemClock.today();
        let mut dates = vec![today];
        if today > first_day {
            if let Some(y) = today.pred_opt() {
                dates.insert(0, y);
            }
        }
        for date in &dates {
            if let Err(e) = spreadsheets(&c, *date).await {
                retries.fetch_add(1, Ordering::Relaxed);
                if verbose {
                    println!("[staff] spreadsheets {date}: {e}");
                }
            }
            for ch in CHANNELS {
                let run = c
                    .reconciliation
                    .clone()
                    .run_reconciliation(rec::RunReconciliationRequest {
                        channel: ch.code.into(),
                        date: date.to_string(),
                        ..Default::default()
                    })
                    .await;
                if let Err(s) = run {
                    retries.fetch_add(1, Ordering::Relaxed);
                    if verbose && !transient(&s) {
                        println!("[staff] reconcile {} {date}: {s}", ch.code);
                    }
                }
            }
        }
        // Staff come back to it a little later.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn spreadsheets(c: &Clients, date: chrono::NaiveDate) -> Result<(), Status> {
    let batches = c
        .batch
        .clone()
        .generate_batches(rfd::GenerateBatchesRequest {
            date: date.to_string(),
        })
        .await?
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
            .clone()
            .mark_batch(rfd::MarkBatchRequest {
                batch_id: b.batch_id.clone(),
                status: status as i32,
                operator: String::new(),
                note: "chaos harness".into(),
            })
            .await?;
    }
    Ok(())
}

/// Figures by method from the refund center.
async fn method_figures(c: &Clients, report: &mut ChaosReport) -> anyhow::Result<()> {
    let mut client = c.refund.clone();
    let mut after = String::new();
    loop {
        let page = client
            .list_refunds(rfd::ListRefundsRequest {
                limit: 1000,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .context("refund center: list refunds")?
            .into_inner()
            .refunds;
        let Some(last) = page.last() else { break };
        after = last.refund_id.clone();
        for o in page {
            let method = rfd::RefundMethod::try_from(o.method)
                .map(|m| m.as_str_name().to_string())
                .unwrap_or_default();
            let status = rfd::RefundStatus::try_from(o.refund_status)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_default();
            *report.by_method.entry((method, status)).or_default() += 1;
            if o.attempts.len() > 1 {
                report.fallbacks += 1;
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Network faults: a seeded, fault-injecting TCP proxy in front of each service
// ------------------------------------------------------------------------------------------------

/// How often the proxies misbehave, per connection (per mille). Every service reaches its peers
/// through them (bank callbacks included); the harness's own calls go direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFaults {
    /// Connections whose every chunk is delayed by up to `max_delay_ms`.
    pub delay_per_mille: u32,
    pub max_delay_ms: u64,
    /// Connections cut after a seeded number of request bytes: the far side may have seen part
    /// of the traffic, the rest never arrives (a dropped connection).
    pub drop_per_mille: u32,
    /// Connections whose answers are cut after a seeded number of response bytes: the far side
    /// acted, the caller never hears it (the "unknown outcome" case; callers must retry with the
    /// same idempotency key).
    pub cut_after_per_mille: u32,
}

impl Default for NetFaults {
    fn default() -> Self {
        NetFaults {
            delay_per_mille: 300,
            max_delay_ms: 100,
            drop_per_mille: 300,
            cut_after_per_mille: 300,
        }
    }
}

/// What the proxies did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub connections: u64,
    pub delayed: u64,
    pub dropped: u64,
    pub cut_after: u64,
}

#[derive(Debug, Default)]
struct NetCounters {
    connections: std::sync::atomic::AtomicU64,
    delayed: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
    cut_after: std::sync::atomic::AtomicU64,
}

impl NetCounters {
    fn snapshot(&self) -> NetStats {
        NetStats {
            connections: self.connections.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            cut_after: self.cut_after.load(Ordering::Relaxed),
        }
    }
}

/// One connection's fate, drawn from the proxy's seed and the connection's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnPlan {
    delay_ms: Option<u64>,
    /// Cut the request direction after this many bytes.
    drop_after: Option<u64>,
    /// Cut the answer direction after this many bytes.
    cut_after: Option<u64>,
}

impl ConnPlan {
    fn draw(faults: &NetFaults, seed: u64, n: u64) -> ConnPlan {
        let mut rng = Rng::new(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
        let delay = rng.chance(u64::from(faults.delay_per_mille));
        let drop = rng.chance(u64::from(faults.drop_per_mille));
        let cut = rng.chance(u64::from(faults.cut_after_per_mille));
        // Past the HTTP/2 preface and settings, somewhere in the first requests.
        let drop_at = 200 + rng.below(4_000);
        let cut_at = 100 + rng.below(4_000);
        ConnPlan {
            delay_ms: delay.then_some(faults.max_delay_ms),
            drop_after: drop.then_some(drop_at),
            cut_after: (cut && !drop).then_some(cut_at),
        }
    }
}

/// Accepts connections for `target` and forwards them with the faults of their plan.
async fn proxy(
    listener: tokio::net::TcpListener,
    target: String,
    faults: NetFaults,
    seed: u64,
    stats: Arc<NetCounters>,
) {
    let mut n = 0u64;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        n += 1;
        let plan = ConnPlan::draw(&faults, seed, n);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let target = target.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            // The service may be down (killed): the caller sees a refused or closed connection.
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            if plan.delay_ms.is_some() {
                stats.delayed.fetch_add(1, Ordering::Relaxed);
            }
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let mut delay_rng = Rng::new(seed ^ n);
            let mut answer_rng = Rng::new(seed ^ n ^ 0x5555);
            let up = pump(cr, sw, plan.drop_after, plan.delay_ms, &mut delay_rng);
            let down = pump(sr, cw, plan.cut_after, plan.delay_ms, &mut answer_rng);
            // Whichever direction ends (closed, or cut by the plan) ends the connection.
            tokio::select! {
                cut = up => if cut { stats.dropped.fetch_add(1, Ordering::Relaxed); },
                cut = down => if cut { stats.cut_after.fetch_add(1, Ordering::Relaxed); },
            }
        });
    }
}

/// Copies `from` to `to`; with a limit, stops after that many bytes (returns true: cut). Each
/// chunk waits up to `delay_ms` first.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    limit: Option<u64>,
    delay_ms: Option<u64>,
    rng: &mut Rng,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if let Some(max) = delay_ms {
            // The injected latency.
            tokio::time::sleep(Duration::from_millis(rng.below(max + 1))).await;
        }
        let n64 = n as u64;
        if let Some(limit) = limit {
            if sent + n64 >= limit {
                let keep = usize::try_from(limit - sent).unwrap_or(0).min(n);
                let _ = to.write_all(&buf[..keep]).await;
                return true;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        sent += n64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_seeded() {
        let a = plan(7, 200);
        let b = plan(7, 200);
        let c = plan(8, 200);
        let key = |p: &[Planned]| -> Vec<(usize, usize, i64, i64)> {
            p.iter()
                .map(|x| (x.merchant, x.channel, x.paid_minor, x.refund_minor))
                .collect()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        for p in &a {
            assert!(
                p.refund_minor >= 1 && p.refund_minor <= p.paid_minor,
                "{p:?}"
            );
            assert!(tuikuan_kernel::card::CardNumber::is_valid(&p.card), "{p:?}");
        }
        let channels: BTreeSet<usize> = a.iter().map(|p| p.channel).collect();
        assert_eq!(channels.len(), CHANNELS.len(), "every method is exercised");
    }

    #[test]
    fn transient_errors_are_retried_and_refusals_are_not() {
        assert!(transient(&Status::unavailable("down")));
        assert!(transient(&Status::unknown("connection reset")));
        assert!(!transient(&Status::invalid_argument("amount: bad")));
        assert!(!transient(&Status::failed_precondition("insufficient")));
    }

    #[test]
    fn the_calendar_makes_weekends_working_days() {
        let sat = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default();
        let text = calendar_text(sat);
        let cal = tuikuan_kernel::WorkingCalendar::from_toml_str(&text).expect("valid calendar");
        for d in -3..=3 {
            let date = sat + chrono::Duration::days(d);
            assert!(cal.is_working_day(date), "{date}");
        }
    }

    #[test]
    fn connection_plans_are_seeded_and_follow_the_rates() {
        let f = NetFaults::default();
        let a: Vec<ConnPlan> = (0..2000).map(|n| ConnPlan::draw(&f, 5, n)).collect();
        let b: Vec<ConnPlan> = (0..2000).map(|n| ConnPlan::draw(&f, 5, n)).collect();
        assert_eq!(a, b);
        let dropped = a.iter().filter(|p| p.drop_after.is_some()).count();
        let cut = a.iter().filter(|p| p.cut_after.is_some()).count();
        let delayed = a.iter().filter(|p| p.delay_ms.is_some()).count();
        assert!((500..=700).contains(&dropped), "{dropped}");
        assert!((320..=520).contains(&cut), "{cut}");
        assert!((500..=700).contains(&delayed), "{delayed}");
        assert!(a
            .iter()
            .all(|p| !(p.drop_after.is_some() && p.cut_after.is_some())));
        let none = NetFaults {
            delay_per_mille: 0,
            max_delay_ms: 0,
            drop_per_mille: 0,
            cut_after_per_mille: 0,
        };
        assert!((0..100).all(|n| ConnPlan::draw(&none, 1, n)
            == ConnPlan {
                delay_ms: None,
                drop_after: None,
                cut_after: None
            }));
    }

    #[test]
    fn the_rng_is_deterministic() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).all(|_| a.below(7) < 7));
    }
}
