//! The reconciliation benchmark (`tuikuan bench recon --rows N`).
//!
//! [`run`] measures the whole path on SQLite: it writes a WeChat Pay trade bill of `rows` refunds
//! (every one SUCCESS, amounts 0.01–99.99 yuan, a product name with a comma in it) to `dir`, and
//! runs the real [`Engine`] on a fresh SQLite database in `dir` against in-process peers: a
//! refund center stand-in that lists the matching `rows` submitted refunds page by page (1000 per
//! page, like `ListSubmitted`) and records every write-back (counting them, and checking each
//! refund is written back exactly once). Measured: hashing and streaming the file, parsing,
//! matching, storing the run and its items, and writing back every refund with bounded
//! concurrency plus marking them in the database — everything but the gRPC hops.
//!
//! [`run_parse_match`] measures parse + match only (no storage, no write-back) with memory in
//! mind: the platform side lives in the [`Matcher`] (about 120 bytes per refund), the file is
//! streamed and each item is counted into totals and dropped.
//!
//! Peak memory is the process's `VmHWM` from `/proc/self/status` (0 where unavailable), so run each
//! mode in its own process.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::NaiveDate;
use tuikuan_db::Db;
use tuikuan_kernel::{Currency, Error, ManualClock, Money, Result, SharedClock};

use crate::domain::{
    ClearingFileParser, FinalStatus, KnownRefund, Matcher, Outcome, PlatformRefund, Totals,
    WechatBillParser,
};
use crate::engine::{
    AdjustmentRequest, ApplyRequest, ChannelSettings, Engine, FetchedFile, FileSource, Peers,
    ReinstateRequest, RunRequest, SubmittedPage,
};

const CHANNEL: &str = "wechat-bench";

/// What a benchmark measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// `end-to-end` or `parse+match`.
    pub mode: &'static str,
    pub rows: usize,
    /// Wall time of the measured part.
    pub seconds: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Items written back (end to end) or matched (parse+match).
    pub matched: usize,
    /// Seconds spent generating the input (not measured in `seconds`).
    pub setup_seconds: f64,
    pub file_bytes: u64,
    /// Phases of the end-to-end run.
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

impl BenchReport {
    #[allow(clippy::float_arithmetic)]
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for BenchReport {
    #[allow(clippy::float_arithmetic)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recon bench ({}): rows {}  seconds {:.2}  rows/s {:.0}  peak RSS {} bytes ({:.1} MiB)  matched {}  file {} bytes  (setup {:.2} s)",
            self.mode,
            self.rows,
            self.seconds,
            self.rows_per_second(),
            self.peak_rss_bytes,
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.matched,
            self.file_bytes,
            self.setup_seconds
        )?;
        for (name, d) in &self.phases {
            write!(f, "\n  {name}: {:.2} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// The peak resident set size of this process (`VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn refund_id(i: usize) -> String {
    format!("rf_bench_{i:010}")
}

fn amount_fen(i: usize) -> i64 {
    (i % 9999) as i64 + 1
}

fn io_err(e: std::io::Error) -> Error {
    Error::internal(format!("benchmark file: {e}"))
}

/// Writes a WeChat Pay trade bill (current 27-column ALL layout) of `rows` successful
/// refunds `rf_bench_0000000000…`, with the summary row. Returns the file size.
pub fn write_wechat_bill(path: &Path, rows: usize) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(io_err)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let header = crate::domain::WechatLayout::CurrentAll.columns();
    writeln!(w, "{}", header.join(",")).map_err(io_err)?;
    let mut total: i64 = 0;
    for i in 0..rows {
        let fen = amount_fen(i);
        total += fen;
        let yuan = format!("{}.{:02}", fen / 100, fen % 100);
        writeln!(
            w,
            "`2026-11-25 {:02}:{:02}:{:02},`wx2421b1c4370ec43b,`10000100,`0,`,`42000{i:013},`ord{i:010},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMC,`CNY,`0.00,`0.00,`50000{i:013},`{},`{yuan},`0.00,`ORIGINAL,`SUCCESS,`T-shirt, blue,`,`0.00,`0.60%,`0.00,`{yuan},`",
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            refund_id(i)
        )
        .map_err(io_err)?;
    }
    writeln!(w, "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额").map_err(io_err)?;
    let t = format!("{}.{:02}", total / 100, total % 100);
    writeln!(w, "`{rows},`0.00,`{t},`0.00,`0.00,`0.00,`{t}").map_err(io_err)?;
    w.flush().map_err(io_err)?;
    let meta = std::fs::metadata(path).map_err(io_err)?;
    Ok(meta.len())
}

/// The in-process peers of the benchmark: `rows` submitted refunds generated on demand, and a
/// refund-center stand-in that records write-backs.
#[derive(Clone)]
struct BenchPeers {
    rows: usize,
    applied: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<bool>>>,
}

impl Peers for BenchPeers {
    async fn fetch_file(&self, _: &str, _: NaiveDate) -> Result<FetchedFile> {
        Err(Error::internal("the benchmark reads its file from disk"))
    }

    async fn list_submitted(
        &self,
        _: &str,
        _: NaiveDate,
        after: &str,
        limit: u32,
    ) -> Result<SubmittedPage> {
        let start = if after.is_empty() {
            0
        } else {
            after
                .strip_prefix("rf_bench_")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| n + 1)
                .ok_or_else(|| Error::internal("bad page token"))?
        };
        let end = (start + limit as usize).min(self.rows);
        let refunds: Vec<PlatformRefund> = (start..end)
            .map(|i| PlatformRefund {
                refund_id: refund_id(i),
                bank_reference_id: String::new(),
                amount: Money::from_minor(amount_fen(i), Currency::Cny),
            })
            .collect();
        Ok(SubmittedPage {
            next_after: (end < self.rows && end > start).then(|| refund_id(end - 1)),
            refunds,
        })
    }

    async fn get_refund(&self, _: &str) -> Result<Option<KnownRefund>> {
        Ok(None)
    }

    async fn reinstate(&self, _: ReinstateRequest) -> Result<()> {
        Err(Error::internal("the benchmark resolves nothing"))
    }

    async fn reopen(&self, _: ReinstateRequest) -> Result<()> {
        Err(Error::internal("the benchmark resolves nothing"))
    }

    async fn apply(&self, request: ApplyRequest) -> Result<Option<FinalStatus>> {
        let i = request
            .refund_id
            .strip_prefix("rf_bench_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::internal("unknown refund"))?;
        let mut seen = self.seen.lock().map_err(|_| Error::internal("poisoned"))?;
        if seen.get(i).copied().unwrap_or(true) {
            return Err(Error::internal(format!(
                "refund {} written back twice",
                request.refund_id
            )));
        }
        seen[i] = true;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(Some(request.status))
    }

    async fn known_channel(&self, _: &str) -> Result<bool> {
        Ok(true)
    }

    async fn post_adjustment(&self, _: AdjustmentRequest) -> Result<String> {
        Err(Error::internal("no adjustments in the benchmark"))
    }
}

#[allow(clippy::float_arithmetic)]
fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// End to end on SQLite: parse + match + store + write-back of `rows` refunds. See the module
/// docs for what is measured.
pub async fn run(rows: usize, dir: &Path) -> Result<BenchReport> {
    let setup = Instant::now();
    let bill = dir.join("bench-wechat-bill.csv");
    let file_bytes = write_wechat_bill(&bill, rows)?;
    let db_path = dir.join("bench-recon.db");
    let _ = std::fs::remove_file(&db_path);
    let db = Db::connect(&db_path.to_string_lossy(), 2)?;
    db.migrate(crate::store::MIGRATIONS)?;
    let date = NaiveDate::from_ymd_opt(2026, 11, 25)
        .ok_or_else(|| Error::internal("bad benchmark date"))?;
    let clock: SharedClock = Arc::new(ManualClock::at_business(
        date.succ_opt().unwrap_or(date),
        10,
    ));
    let peers = BenchPeers {
        rows,
        applied: Arc::new(AtomicUsize::new(0)),
        seen: Arc::new(Mutex::new(vec![false; rows])),
    };
    let mut settings = ChannelSettings::default();
    settings
        .formats
        .insert(CHANNEL.to_string(), "wechat".to_string());
    let engine = Engine {
        db,
        clock,
        peers: peers.clone(),
        settings: Arc::new(settings),
    };
    let setup_seconds = secs(setup);

    let start = Instant::now();
    let result = engine
        .run(RunRequest {
            channel: CHANNEL.to_string(),
            date,
            format: String::new(),
            encoding: String::new(),
            source: FileSource::Path(bill.clone()),
            operator: String::new(),
        })
        .await?;
    let seconds = secs(start);
    let applied = peers.applied.load(Ordering::Relaxed);
    let matched = result
        .run
        .items
        .iter()
        .filter(|i| i.item.outcome == Outcome::Matched)
        .count();
    if applied != rows || matched != rows || result.run.pending_write_backs() != 0 {
        return Err(Error::internal(format!(
            "benchmark run incomplete: {matched} matched, {applied} written back of {rows}"
        )));
    }
    Ok(BenchReport {
        mode: "end-to-end",
        rows,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
        matched: applied,
        setup_seconds,
        file_bytes,
        phases: result.timings,
    })
}

/// Parse + match only, streaming, for memory (10 million rows in well under 2 GiB).
pub async fn run_parse_match(rows: usize, dir: &Path) -> Result<BenchReport> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || parse_match_blocking(rows, &dir))
        .await
        .map_err(|e| Error::internal(format!("benchmark task failed: {e}")))?
}

fn parse_match_blocking(rows: usize, dir: &Path) -> Result<BenchReport> {
    let setup = Instant::now();
    let bill = dir.join("bench-wechat-bill.csv");
    let file_bytes = write_wechat_bill(&bill, rows)?;
    let setup_seconds = secs(setup);

    let start = Instant::now();
    let mut matcher = Matcher::with_capacity(rows);
    for i in 0..rows {
        matcher.add_platform(PlatformRefund {
            refund_id: refund_id(i),
            bank_reference_id: String::new(),
            amount: Money::from_minor(amount_fen(i), Currency::Cny),
        })?;
    }
    let file = std::fs::File::open(&bill).map_err(io_err)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut totals = Totals::default();
    let mut matched = 0usize;
    WechatBillParser::default().parse(&mut reader, &mut |record| {
        if !record.kind.is_refund() {
            return Ok(());
        }
        let item = matcher.push(&record);
        if item.outcome == Outcome::Matched {
            matched += 1;
        }
        totals.add(&item)
    })?;
    for item in matcher.finish() {
        totals.add(&item)?;
    }
    let seconds = secs(start);
    if matched != rows {
        return Err(Error::internal(format!(
            "benchmark matched {matched} of {rows}"
        )));
    }
    Ok(BenchReport {
        mode: "parse+match",
        rows,
        seconds,
        peak_rss_bytes: peak_rss_bytes(),
        matched,
        setup_seconds,
        file_bytes,
        phases: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_benchmarks_run() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(2_000, dir.path()).await.unwrap();
        assert_eq!(report.matched, 2_000);
        assert!(report.to_string().contains("rows 2000"), "{report}");
        let report = run_parse_match(3_000, dir.path()).await.unwrap();
        assert_eq!(report.matched, 3_000);
        assert_eq!(report.mode, "parse+match");
    }
}
