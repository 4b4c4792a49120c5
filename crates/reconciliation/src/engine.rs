//! The reconciliation engine: runs, write-back, suspense, discrepancy resolution and reports,
//! over a [`Peers`] abstraction (the gRPC peers in production, in-process stand-ins in the
//! benchmark) and the service's database.
//!
//! A run (`Engine::run`):
//! 1. takes the file (from the bank subsystem or uploaded) and its SHA-256;
//! 2. if this exact file was reconciled before, returns that run (`replayed`) after retrying its
//!    pending write-backs (unless a corrected file superseded it), and matches nothing again;
//! 3. otherwise lists the refund center's submitted refunds into a [`Matcher`], then streams the
//!    file through the format's parser, matching record by record (a malformed file is rejected
//!    with line and field; nothing is stored or written back);
//! 4. checks bank-only rows with the refund center (bounded concurrency): a refund already final
//!    the same way is "already final", one final otherwise is a status conflict;
//! 5. in one transaction: stores the run and its items, marks the day's previous run superseded
//!    (with an audit entry), moves platform-only refunds through suspense (enter, wait, expire into
//!    a 银行漏单 discrepancy), clears suspense entries found now, and opens discrepancies;
//! 6. writes back MATCHED / BANK_FAILED items with `ApplyReconciliation` (bounded concurrency, the
//!    refund center is idempotent per refund), marking them in batches. A refusal becomes a status
//!    conflict discrepancy; transport trouble leaves items pending for the next pass.

use std::collections::HashMap;
use std::future::Future;
use std::io::BufRead;
use std::sync::Arc;

use chrono::NaiveDate;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tuikuan_db::Db;
use tuikuan_kernel::id::{new_id, validate_external_id};
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};

use crate::domain::rejection::FileFacts;
use crate::domain::{
    check_record_channel, check_resolve, discrepancy_kind_of, format_date, judge_write_back,
    new_discrepancy, parser_for, plan_resolution, resolve_bank_only, suspense_decision,
    AdjustmentKind, Discrepancy, DiscrepancyKind, FileFormat, FinalStatus, KnownRefund, MatchItem,
    Matcher, Outcome, ParseOptions, PlatformRefund, Resolution, ResolutionAction, ResolveStep, Run,
    RunItem, SuspenseDecision, SuspenseEntry, SuspenseStatus, TextEncoding, WriteBackState,
    WriteBackVerdict, DEFAULT_SUSPENSE_DAYS,
};
use crate::store::{self, AuditEntry};

pub mod intake;
mod resolution;

use intake::Digests;

/// Page size for listing submitted refunds.
pub const LIST_SUBMITTED_PAGE: u32 = 1000;
/// The most submitted refunds one run takes from the refund center.
pub const MAX_PLATFORM_REFUNDS: usize = 20_000_000;
/// Concurrent write-backs (and bank-only look-ups) in flight.
pub const WRITE_BACK_CONCURRENCY: usize = 32;
/// Written-back items are marked in the database in batches of this size.
const MARK_BATCH: usize = 5000;

/// A clearing file as fetched from the bank subsystem.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    pub content: Vec<u8>,
    /// Lowercase hex SHA-256 as the sender announced it (checked).
    pub sha256: String,
    /// The format the sender declared (may be empty).
    pub format: String,
}

/// A page of submitted refunds.
#[derive(Debug, Clone, Default)]
pub struct SubmittedPage {
    /// The reconcilable refunds of the page (SUBMITTED, PROCESSING, this channel).
    pub refunds: Vec<PlatformRefund>,
    /// Where the next page starts, if there is one.
    pub next_after: Option<String>,
}

/// A write-back to the refund center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    pub refund_id: String,
    pub bank_reference_id: String,
    pub status: FinalStatus,
    pub reason: String,
    /// The run or discrepancy that decided it.
    pub source: String,
}

/// A reinstatement (or a reopen) asked of the refund center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReinstateRequest {
    pub refund_id: String,
    /// The attempt the bank paid (the reference of its row).
    pub bank_reference_id: String,
    pub reason: String,
    /// The discrepancy that decided it.
    pub source: String,
}

/// A clearing adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentRequest {
    pub adjustment_id: String,
    pub kind: AdjustmentKind,
    pub channel: String,
    pub amount: Money,
    pub memo: String,
    /// The bank row's reference and the value date (the reconciled business date), for the ledger.
    pub bank_reference: String,
    pub value_date: NaiveDate,
}

/// The reconciliation center's peers: the bank subsystem (clearing files), the refund center
/// (submitted refunds, write-back) and the clearing center (suspense adjustments).
pub trait Peers: Clone + Send + Sync + 'static {
    fn fetch_file(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> impl Future<Output = Result<FetchedFile>> + Send;

    fn list_submitted(
        &self,
        channel: &str,
        date: NaiveDate,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = Result<SubmittedPage>> + Send;

    /// What the refund center knows about the refund whose attempt the bank knows by this
    /// reference; `None` if it does not know it.
    fn get_refund(
        &self,
        bank_reference_id: &str,
    ) -> impl Future<Output = Result<Option<KnownRefund>>> + Send;

    /// Records a final status; `Ok(status)` is the refund's final status afterwards (`None`: still
    /// processing).
    fn apply(
        &self,
        request: ApplyRequest,
    ) -> impl Future<Output = Result<Option<FinalStatus>>> + Send;

    /// Reinstates a FAILED refund the bank paid as SUCCEEDED (idempotent per refund; see
    /// [`crate::domain::resolution`]).
    fn reinstate(&self, request: ReinstateRequest) -> impl Future<Output = Result<()>> + Send;

    /// Reopens a SUCCEEDED refund the bank failed for its next method (idempotent per refund and
    /// attempt; see [`crate::domain::resolution`]).
    fn reopen(&self, request: ReinstateRequest) -> impl Future<Output = Result<()>> + Send;

    /// Posts an adjustment (idempotent by id); returns the posting id.
    fn post_adjustment(
        &self,
        request: AdjustmentRequest,
    ) -> impl Future<Output = Result<String>> + Send;

    /// Whether the platform has this channel (the refund center's channels).
    fn known_channel(&self, channel: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// Where a run's file comes from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// Fetch it from the bank subsystem.
    Bank,
    /// Uploaded by an operator; `sha256` is checked when not empty.
    Upload { content: Vec<u8>, sha256: String },
    /// A file on local disk, read as a stream (the benchmark; local tooling).
    Path(std::path::PathBuf),
}

/// Where the bytes to parse are.
enum Content {
    Memory(Vec<u8>),
    Path(std::path::PathBuf),
}

/// A run request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub channel: String,
    pub date: NaiveDate,
    /// Explicit format ("" = configured / declared / csv).
    pub format: String,
    /// Text encoding ("" = detect).
    pub encoding: String,
    pub source: FileSource,
    /// Who asked (uploads; recorded with a refused file). Empty when unknown.
    pub operator: String,
}

/// A run and whether it was made by an earlier call.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run: Run,
    pub replayed: bool,
    /// Where the time went (empty for replays).
    pub timings: Vec<(&'static str, std::time::Duration)>,
}

/// Per-channel settings.
#[derive(Debug, Clone, Default)]
pub struct ChannelSettings {
    /// channel → format name (csv, wechat, unionpay).
    pub formats: HashMap<String, String>,
    /// channel → cross-day window in days (default [`DEFAULT_SUSPENSE_DAYS`]).
    pub suspense_days: HashMap<String, u32>,
}

impl ChannelSettings {
    pub fn window(&self, channel: &str) -> u32 {
        self.suspense_days
            .get(channel)
            .copied()
            .unwrap_or(DEFAULT_SUSPENSE_DAYS)
    }
}

/// The engine.
#[derive(Clone)]
pub struct Engine<P: Peers> {
    pub db: Db,
    pub clock: SharedClock,
    pub peers: P,
    pub settings: Arc<ChannelSettings>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl<P: Peers> Engine<P> {
    /// Reconciles one channel's business date. The admin RPCs and the daily job call this. A
    /// refused file (uploaded, or fetched from the bank) is recorded with its error.
    pub async fn run(&self, req: RunRequest) -> Result<RunResult> {
        let mut facts = intake::facts_of(&req);
        let mut have_file = !matches!(req.source, FileSource::Bank);
        let result = self.run_file(req, &mut facts, &mut have_file).await;
        if let Err(e) = &result {
            if have_file {
                self.reject(&facts, e).await;
            }
        }
        result
    }

    async fn run_file(
        &self,
        req: RunRequest,
        facts: &mut FileFacts,
        have_file: &mut bool,
    ) -> Result<RunResult> {
        let mut timings = Vec::new();
        let mut phase = std::time::Instant::now();
        let mut lap =
            |name: &'static str, timings: &mut Vec<(&'static str, std::time::Duration)>| {
                timings.push((name, phase.elapsed()));
                phase = std::time::Instant::now();
            };
        let channel = req.channel.clone();
        validate_external_id(&channel, "channel")?;
        let date = req.date;
        let today = self.clock.today();
        if date > today {
            return Err(Error::field(
                "date",
                format!(
                    "{} is in the future (today is {})",
                    format_date(date),
                    format_date(today)
                ),
            ));
        }
        let encoding = TextEncoding::parse(&req.encoding)?;
        // Validate an explicit format before fetching anything.
        if !req.format.is_empty() {
            FileFormat::parse(&req.format)?;
        }
        self.check_channel(&channel).await?;
        let (content, sha256, declared, source) = match req.source {
            FileSource::Bank => {
                let file = self.peers.fetch_file(&channel, date).await?;
                *have_file = true;
                Digests::of(&file.content).fill(facts);
                let computed = sha256_hex(&file.content);
                if !file.sha256.eq_ignore_ascii_case(&computed) {
                    return Err(Error::field(
                        "clearing file sha256",
                        format!(
                            "{:?} does not match the content (sha256 {computed})",
                            file.sha256
                        ),
                    ));
                }
                (Content::Memory(file.content), computed, file.format, "bank")
            }
            FileSource::Upload { content, sha256 } => {
                let computed = sha256_hex(&content);
                if !sha256.is_empty() && !sha256.eq_ignore_ascii_case(&computed) {
                    return Err(Error::field(
                        "sha256",
                        format!("{sha256:?} does not match the content (sha256 {computed})"),
                    ));
                }
                (Content::Memory(content), computed, String::new(), "upload")
            }
            FileSource::Path(path) => {
                let p = path.clone();
                let digests = tokio::task::spawn_blocking(move || Digests::of_path(&p))
                    .await
                    .map_err(|e| Error::internal(format!("hashing task failed: {e}")))??;
                digests.fill(facts);
                (Content::Path(path), digests.sha256, String::new(), "upload")
            }
        };
        let content_sha256 = facts.content_sha256.clone();
        let format = FileFormat::choose(
            &req.format,
            self.settings.formats.get(&channel).map(String::as_str),
            &declared,
        )?;
        facts.file_format = format.as_str().to_string();

        if let Some(existing) = self.find_by_file(&channel, date, &content_sha256).await? {
            tracing::info!(run_id = %existing.run_id, "clearing file reconciled before: replaying");
            let run = self.write_back_pending(existing).await?;
            return Ok(RunResult {
                run,
                replayed: true,
                timings,
            });
        }

        lap("fetch and hash the file", &mut timings);
        let matcher = self.load_platform(&channel, date).await?;
        lap("list submitted refunds", &mut timings);
        let parser = parser_for(
            format,
            ParseOptions {
                encoding,
                business_date: date,
            },
        );
        let c = channel.clone();
        let (items, stats) = tokio::task::spawn_blocking(move || match content {
            Content::Memory(bytes) => {
                match_file(parser.as_ref(), &mut bytes.as_slice(), &c, matcher)
            }
            Content::Path(path) => {
                let file = std::fs::File::open(&path).map_err(|e| {
                    Error::field("file", format!("cannot open {}: {e}", path.display()))
                })?;
                let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
                match_file(parser.as_ref(), &mut reader, &c, matcher)
            }
        })
        .await
        .map_err(|e| Error::internal(format!("matching task failed: {e}")))??;
        lap("parse and match", &mut timings);
        let items = self.resolve_bank_only(items, &channel).await?;

        let run = Run {
            run_id: new_id("rcn"),
            channel: channel.clone(),
            date,
            file_sha256: sha256.clone(),
            content_sha256: content_sha256.clone(),
            file_format: format.as_str().to_string(),
            file_rows: u32::try_from(stats.rows).unwrap_or(u32::MAX),
            skipped_rows: u32::try_from(stats.skipped).unwrap_or(u32::MAX),
            created_at_ms: self.clock.now_ms(),
            source: source.to_string(),
            supersedes: None,
            superseded_by: None,
            discrepancies: 0,
            items: crate::domain::number_items(items)?,
        };
        match self.store_new_run(run).await {
            Ok(run) => {
                lap("store the run", &mut timings);
                tracing::info!(
                    run_id = %run.run_id,
                    items = run.items.len(),
                    pending = run.pending_write_backs(),
                    discrepancies = run.discrepancies,
                    "reconciliation run stored"
                );
                let run = self.write_back_pending(run).await?;
                lap("write back", &mut timings);
                Ok(RunResult {
                    run,
                    replayed: false,
                    timings,
                })
            }
            Err(e) if e.code == ErrorCode::IdempotencyConflict => {
                let winner = self
                    .find_by_file(&channel, date, &content_sha256)
                    .await?
                    .ok_or_else(|| Error::internal("concurrent run vanished"))?;
                tracing::info!(run_id = %winner.run_id, "a concurrent run of the same file won");
                Ok(RunResult {
                    run: winner,
                    replayed: true,
                    timings,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn find_by_file(&self, channel: &str, date: NaiveDate, sha: &str) -> Result<Option<Run>> {
        let (c, s) = (channel.to_string(), sha.to_string());
        self.db
            .run(move |conn| store::find_run_by_file(conn, &c, date, &s))
            .await
    }

    /// Every refund the refund center has SUBMITTED and PROCESSING for the channel up to the end
    /// of the date, page by page, into a matcher.
    pub async fn load_platform(&self, channel: &str, date: NaiveDate) -> Result<Matcher> {
        let mut matcher = Matcher::default();
        let mut after = String::new();
        loop {
            let page = self
                .peers
                .list_submitted(channel, date, &after, LIST_SUBMITTED_PAGE)
                .await?;
            for refund in page.refunds {
                matcher.add_platform(refund)?;
            }
            if matcher.platform_len() > MAX_PLATFORM_REFUNDS {
                return Err(Error::internal(format!(
                    "refund center listed more than {MAX_PLATFORM_REFUNDS} submitted refunds"
                )));
            }
            match page.next_after {
                Some(next) => {
                    if next <= after {
                        return Err(Error::internal(format!(
                            "refund center pagination did not advance past {after:?}"
                        )));
                    }
                    after = next;
                }
                None => break,
            }
        }
        Ok(matcher)
    }

    /// Checks bank-only items with the refund center (see [`resolve_bank_only`]).
    async fn resolve_bank_only(
        &self,
        items: Vec<MatchItem>,
        channel: &str,
    ) -> Result<Vec<MatchItem>> {
        let lookups: Vec<(usize, String)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.outcome == Outcome::BankOnly)
            .map(|(n, i)| (n, i.bank_reference_id.clone()))
            .collect();
        if lookups.is_empty() {
            return Ok(items);
        }
        let peers = self.peers.clone();
        let answers: Vec<(usize, Result<Option<KnownRefund>>)> = stream::iter(lookups)
            .map(|(n, id)| {
                let peers = peers.clone();
                async move { (n, peers.get_refund(&id).await) }
            })
            .buffer_unordered(WRITE_BACK_CONCURRENCY)
            .collect()
            .await;
        let mut known: HashMap<usize, Option<KnownRefund>> = HashMap::new();
        for (n, answer) in answers {
            known.insert(n, answer?);
        }
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(n, item)| match known.remove(&n) {
                Some(k) => resolve_bank_only(item, k.as_ref(), channel),
                None => item,
            })
            .collect())
    }

    /// Stores a new run: supersedes the day's previous run, suspense, discrepancies. One
    /// transaction.
    async fn store_new_run(&self, mut run: Run) -> Result<Run> {
        let window = self.settings.window(&run.channel);
        let now = self.clock.now_ms();
        self.db
            .transaction(move |conn| {
                let previous = store::current_run_id(conn, &run.channel, run.date)?;
                run.supersedes = previous.clone();
                // Suspense: platform-only items enter, wait or expire; found ones clear.
                let uncleared: HashMap<String, SuspenseEntry> =
                    store::uncleared_suspense(conn, &run.channel)?
                        .into_iter()
                        .map(|e| (e.bank_reference_id.clone(), e))
                        .collect();
                let mut discrepancies: Vec<(usize, Discrepancy)> = Vec::new();
                let mut clears: Vec<String> = Vec::new();
                let mut enters: Vec<SuspenseEntry> = Vec::new();
                let mut expires: Vec<(String, String)> = Vec::new();
                for (n, ri) in run.items.iter_mut().enumerate() {
                    let item = &mut ri.item;
                    let entry = uncleared.get(&item.bank_reference_id);
                    if item.outcome == Outcome::PlatformOnly {
                        if let Some(e) = entry.filter(|e| e.status == SuspenseStatus::Expired) {
                            item.detail = format!(
                                "{}; 银行漏单 since {}, discrepancy {}",
                                item.detail,
                                format_date(e.since),
                                e.discrepancy_id.as_deref().unwrap_or("?")
                            );
                            ri.discrepancy_id = e.discrepancy_id.clone();
                            continue;
                        }
                        match suspense_decision(entry.map(|e| e.since), run.date, window) {
                            SuspenseDecision::Enter => {
                                item.detail =
                                    format!("{}; in suspense ({window}-day window)", item.detail);
                                let amount = item.platform_amount.ok_or_else(|| {
                                    Error::internal("platform-only item without amount")
                                })?;
                                enters.push(SuspenseEntry {
                                    channel: run.channel.clone(),
                                    refund_id: item.refund_id.clone(),
                                    bank_reference_id: item.bank_reference_id.clone(),
                                    amount,
                                    since: run.date,
                                    status: SuspenseStatus::Open,
                                    discrepancy_id: None,
                                    cleared_by_run: None,
                                    updated_at_ms: now,
                                });
                            }
                            SuspenseDecision::Wait { since, days_left } => {
                                item.detail = format!(
                                    "{}; in suspense since {} ({days_left} day(s) left)",
                                    item.detail,
                                    format_date(since)
                                );
                            }
                            SuspenseDecision::Expire { since } => {
                                let d = new_discrepancy(
                                    DiscrepancyKind::BankMissed,
                                    &run.channel,
                                    run.date,
                                    &run.run_id,
                                    item,
                                    format!(
                                        "missing from the bank's files since {} ({window}-day window passed)",
                                        format_date(since)
                                    ),
                                    now,
                                );
                                item.detail = format!(
                                    "{}; suspense window passed: 银行漏单",
                                    item.detail
                                );
                                if entry.is_some() {
                                    expires.push((
                                        item.bank_reference_id.clone(),
                                        d.discrepancy_id.clone(),
                                    ));
                                }
                                discrepancies.push((n, d));
                            }
                        }
                        continue;
                    }
                    if entry.is_some_and(|e| e.status == SuspenseStatus::Open)
                        && item.line.is_some()
                        && item.outcome != Outcome::Duplicate
                    {
                        clears.push(item.bank_reference_id.clone());
                    }
                    if let Some(kind) = discrepancy_kind_of(item) {
                        let d = new_discrepancy(
                            kind,
                            &run.channel,
                            run.date,
                            &run.run_id,
                            item,
                            item.detail.clone(),
                            now,
                        );
                        discrepancies.push((n, d));
                    }
                }
                let mut opened = 0u32;
                for (n, d) in &discrepancies {
                    if store::open_discrepancy(conn, d)? {
                        opened += 1;
                    }
                    run.items[*n].discrepancy_id = Some(d.discrepancy_id.clone());
                }
                run.discrepancies = opened;
                store::insert_run(conn, &run)?;
                if let Some(previous) = &previous {
                    if store::mark_superseded(conn, previous, &run.run_id)? {
                        store::insert_audit(
                            conn,
                            &AuditEntry {
                                audit_id: new_id("aud"),
                                subject_kind: "RUN".into(),
                                subject_id: previous.clone(),
                                action: "SUPERSEDED".into(),
                                operator: "system".into(),
                                reason: format!(
                                    "corrected file {} for {} {}",
                                    run.file_sha256,
                                    run.channel,
                                    format_date(run.date)
                                ),
                                before_state: "CURRENT".into(),
                                after_state: format!("SUPERSEDED_BY {}", run.run_id),
                                at_ms: now,
                            },
                        )?;
                    }
                }
                for e in &enters {
                    store::enter_suspense(conn, e)?;
                }
                for (reference, discrepancy_id) in &expires {
                    store::close_suspense(
                        conn,
                        &run.channel,
                        reference,
                        SuspenseStatus::Expired,
                        None,
                        Some(discrepancy_id),
                        now,
                    )?;
                }
                for reference in &clears {
                    store::close_suspense(
                        conn,
                        &run.channel,
                        reference,
                        SuspenseStatus::Cleared,
                        Some(&run.run_id),
                        None,
                        now,
                    )?;
                }
                Ok(run)
            })
            .await
    }

    /// Writes back the run's pending items with bounded concurrency and marks them in batches.
    /// Items of a superseded run are left alone (the later run decides). Returns the run with
    /// its items' states updated.
    pub async fn write_back_pending(&self, mut run: Run) -> Result<Run> {
        if run.superseded_by.is_some() {
            return Ok(run);
        }
        let pending: Vec<(usize, ApplyRequest)> = run
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.state.is_pending())
            .filter_map(|(n, i)| {
                i.item.write_back.as_ref().map(|wb| {
                    (
                        n,
                        ApplyRequest {
                            refund_id: i.item.refund_id.clone(),
                            bank_reference_id: i.item.bank_reference_id.clone(),
                            status: wb.status,
                            reason: wb.reason.clone(),
                            source: run.run_id.clone(),
                        },
                    )
                })
            })
            .collect();
        if pending.is_empty() {
            return Ok(run);
        }
        let peers = self.peers.clone();
        let mut answers = stream::iter(pending)
            .map(|(n, req)| {
                let peers = peers.clone();
                async move {
                    let wanted = req.status;
                    let answer = peers.apply(req).await;
                    (n, wanted, answer)
                }
            })
            .buffer_unordered(WRITE_BACK_CONCURRENCY);
        let mut done: Vec<u32> = Vec::new();
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut retry = 0usize;
        let mut unreachable = false;
        while let Some((n, wanted, answer)) = answers.next().await {
            match judge_write_back(wanted, answer.as_ref().map(|s| *s)) {
                WriteBackVerdict::Done => {
                    run.items[n].state = run.items[n].state.complete()?;
                    done.push(run.items[n].seq);
                    if done.len() >= MARK_BATCH {
                        self.mark_done(&run.run_id, std::mem::take(&mut done))
                            .await?;
                    }
                }
                WriteBackVerdict::Refused(why) => refused.push((n, why)),
                WriteBackVerdict::Retry => {
                    retry += 1;
                    // A refund still processing at the refund center (waiting for people, say)
                    // is expected to stay pending for days: every run retries it, so only the
                    // first failure to reach the refund center is worth a warning.
                    match &answer {
                        Err(e) if !unreachable => {
                            unreachable = true;
                            tracing::warn!(run_id = %run.run_id, code = %e.code, error = %e.message, "write-back not accepted; the item stays pending");
                        }
                        _ => {}
                    }
                }
            }
        }
        drop(answers);
        if !done.is_empty() {
            self.mark_done(&run.run_id, done).await?;
        }
        for (n, why) in refused {
            self.refuse(&mut run, n, why).await?;
        }
        if unreachable {
            tracing::warn!(run_id = %run.run_id, pending = retry, "write-backs left pending");
        } else if retry > 0 {
            tracing::debug!(run_id = %run.run_id, pending = retry, "write-backs pending: refunds still processing");
        }
        Ok(run)
    }

    async fn mark_done(&self, run_id: &str, seqs: Vec<u32>) -> Result<()> {
        let id = run_id.to_string();
        self.db
            .transaction(move |conn| store::mark_written_back_many(conn, &id, &seqs))
            .await?;
        Ok(())
    }

    /// A refused write-back: the item becomes a status-conflict discrepancy.
    async fn refuse(&self, run: &mut Run, n: usize, why: String) -> Result<()> {
        let ri = &mut run.items[n];
        ri.state = ri.state.refuse()?;
        tracing::warn!(run_id = %run.run_id, refund_id = %ri.item.refund_id, "{why}");
        ri.item.detail = if ri.item.detail.is_empty() {
            why.clone()
        } else {
            format!("{}; {why}", ri.item.detail)
        };
        let d = new_discrepancy(
            DiscrepancyKind::StatusConflict,
            &run.channel,
            run.date,
            &run.run_id,
            &ri.item,
            why,
            self.clock.now_ms(),
        );
        ri.discrepancy_id = Some(d.discrepancy_id.clone());
        let (id, seq, detail, reference) = (
            run.run_id.clone(),
            ri.seq,
            ri.item.detail.clone(),
            ri.item.bank_reference_id.clone(),
        );
        let opened = self
            .db
            .transaction(move |conn| {
                store::mark_refused(conn, &id, seq, &detail)?;
                let opened = store::open_discrepancy(conn, &d)?;
                store::set_item_discrepancy(conn, &id, seq, &reference, &d.discrepancy_id)?;
                Ok(opened)
            })
            .await?;
        if opened {
            run.discrepancies += 1;
        }
        Ok(())
    }

    /// The daily job's pass: yesterday's business date for each channel (not yet reconciled),
    /// and pending write-backs of runs already made.
    pub async fn run_due(&self, channels: &[String]) {
        let Some(date) = self.clock.today().pred_opt() else {
            return;
        };
        for channel in channels {
            if let Err(e) = self.run_due_channel(channel, date).await {
                tracing::warn!(
                    channel = %channel,
                    date = %format_date(date),
                    code = %e.code,
                    error = %e.message,
                    "daily reconciliation failed"
                );
            }
        }
    }

    async fn run_due_channel(&self, channel: &str, date: NaiveDate) -> Result<()> {
        let c = channel.to_string();
        let existing = self
            .db
            .run(move |conn| store::runs_for_date(conn, &c, date))
            .await?;
        if existing.is_empty() {
            let result = self
                .run(RunRequest {
                    channel: channel.to_string(),
                    date,
                    format: String::new(),
                    encoding: String::new(),
                    source: FileSource::Bank,
                    operator: String::new(),
                })
                .await?;
            tracing::info!(
                run_id = %result.run.run_id,
                pending = result.run.pending_write_backs(),
                "daily reconciliation done"
            );
            return Ok(());
        }
        for run in existing {
            if run.pending_write_backs() > 0 {
                self.write_back_pending(run).await?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Discrepancy resolution
    // -----------------------------------------------------------------------------------------

    /// Resolves a discrepancy without evidence (see [`Engine::resolve_with_evidence`]).
    pub async fn resolve(
        &self,
        discrepancy_id: &str,
        resolution: Resolution,
        operator: &str,
        reason: &str,
    ) -> Result<Discrepancy> {
        self.resolve_with_evidence(discrepancy_id, resolution, operator, reason, "")
            .await
    }

    /// Resolves a discrepancy (see [`plan_resolution`]); `evidence` is the bank's statement
    /// reference (required for platform-wins on a refund the bank never reported). Audited: a
    /// RESOLVE_STARTED entry when it starts, a RESOLVED entry with before/after when it finishes.
    /// Idempotent: repeating an interrupted resolution (same resolution and operator) finishes it.
    pub async fn resolve_with_evidence(
        &self,
        discrepancy_id: &str,
        resolution: Resolution,
        operator: &str,
        reason: &str,
        evidence: &str,
    ) -> Result<Discrepancy> {
        let d = self.get_discrepancy(discrepancy_id).await?;
        let step = check_resolve(&d, resolution, operator, reason)?;
        let actions = plan_resolution(&d, resolution, evidence)?;
        let now = self.clock.now_ms();
        if step == ResolveStep::Start {
            let (id, op, why) = (
                d.discrepancy_id.clone(),
                operator.to_string(),
                reason.to_string(),
            );
            let before = describe(&d);
            let started = self
                .db
                .transaction(move |conn| {
                    if !store::start_resolving(conn, &id, resolution, &op, &why, now)? {
                        return Ok(false);
                    }
                    store::insert_audit(
                        conn,
                        &AuditEntry {
                            audit_id: new_id("aud"),
                            subject_kind: "DISCREPANCY".into(),
                            subject_id: id.clone(),
                            action: "RESOLVE_STARTED".into(),
                            operator: op.clone(),
                            reason: why.clone(),
                            before_state: before,
                            after_state: format!("RESOLVING {}", resolution.as_str()),
                            at_ms: now,
                        },
                    )?;
                    Ok(true)
                })
                .await?;
            if !started {
                // Someone else moved it meanwhile: judge again against the new state.
                let fresh = self.get_discrepancy(discrepancy_id).await?;
                if check_resolve(&fresh, resolution, operator, reason)? != ResolveStep::Resume {
                    return Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        format!("discrepancy {discrepancy_id} changed concurrently"),
                    ));
                }
            }
        }
        let mut done: Vec<String> = Vec::new();
        let mut adjustment_id = String::new();
        for action in &actions {
            match action {
                ResolutionAction::WriteBack {
                    status,
                    reason: why,
                } => {
                    let answer = self
                        .peers
                        .apply(ApplyRequest {
                            refund_id: d.refund_id.clone(),
                            bank_reference_id: d.bank_reference_id.clone(),
                            status: *status,
                            reason: format!("{why}: {operator}: {reason}"),
                            source: d.discrepancy_id.clone(),
                        })
                        .await;
                    match judge_write_back(*status, answer.as_ref().map(|s| *s)) {
                        WriteBackVerdict::Done => done.push(action.to_string()),
                        WriteBackVerdict::Refused(why) => {
                            return Err(self.reopen_refused(&d, operator, reason, &why, now).await);
                        }
                        WriteBackVerdict::Retry => {
                            return Err(match answer {
                                Err(e) => Error::new(
                                    ErrorCode::Unavailable,
                                    format!(
                                        "write-back not accepted yet ({}); repeat the request to finish",
                                        e.message
                                    ),
                                ),
                                Ok(_) => Error::new(
                                    ErrorCode::Unavailable,
                                    "refund center reports it still processing; repeat the request to finish",
                                ),
                            });
                        }
                    }
                }
                ResolutionAction::Reinstate { reason: why } => {
                    self.reinstate_for(&d, why, operator, reason, now).await?;
                    done.push(action.to_string());
                }
                ResolutionAction::Reopen { reason: why } => {
                    self.reopen_for(&d, why, operator, reason, now).await?;
                    done.push(action.to_string());
                }
                ResolutionAction::Adjust { kind, amount } => {
                    let id = crate::domain::adjustment_id_for(&d.discrepancy_id);
                    let posting = self
                        .peers
                        .post_adjustment(AdjustmentRequest {
                            adjustment_id: id.clone(),
                            kind: *kind,
                            channel: d.channel.clone(),
                            amount: *amount,
                            bank_reference: d.bank_ref.clone(),
                            value_date: d.date,
                            memo: format!(
                                "{} {} {}: bank wins by {operator}: {reason}",
                                d.kind.label(),
                                d.kind.as_str(),
                                d.bank_reference_id
                            ),
                        })
                        .await?;
                    done.push(format!("{action} (adjustment {id}, posting {posting})"));
                    adjustment_id = id;
                }
            }
        }
        let actions_text = if done.is_empty() {
            "recorded only".to_string()
        } else {
            done.join("; ")
        };
        let id = d.discrepancy_id.clone();
        let (op, r) = (operator.to_string(), reason.to_string());
        let before = describe(&d);
        let a = actions_text.clone();
        let adj = adjustment_id.clone();
        self.db
            .transaction(move |conn| {
                if store::finish_resolving(conn, &id, &a, &adj, now)? {
                    store::insert_audit(
                        conn,
                        &AuditEntry {
                            audit_id: new_id("aud"),
                            subject_kind: "DISCREPANCY".into(),
                            subject_id: id.clone(),
                            action: "RESOLVED".into(),
                            operator: op,
                            reason: r,
                            before_state: before,
                            after_state: format!("RESOLVED {}: {a}", resolution.as_str()),
                            at_ms: now,
                        },
                    )?;
                }
                Ok(())
            })
            .await?;
        self.get_discrepancy(discrepancy_id).await
    }

    pub async fn get_discrepancy(&self, id: &str) -> Result<Discrepancy> {
        validate_external_id(id, "discrepancy_id")?;
        let key = id.to_string();
        self.db
            .run(move |conn| store::get_discrepancy(conn, &key))
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("discrepancy {id} not found")))
    }
}

/// One line for people about a discrepancy (audit entries, proposals).
pub(crate) fn describe(d: &Discrepancy) -> String {
    let amount = |m: Option<Money>| m.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "{} {} refund {} ref {}: platform {}, bank {} {}",
        d.status.as_str(),
        d.kind.as_str(),
        d.refund_id,
        d.bank_reference_id,
        amount(d.platform_amount),
        d.bank_status.map(|s| s.as_str()).unwrap_or("-"),
        amount(d.bank_amount)
    )
}

/// Parses and matches a whole file through a matcher (blocking; streaming). Records are
/// checked against the channel; the items come in file order, then the platform-only ones.
pub fn match_file(
    parser: &dyn crate::domain::ClearingFileParser,
    input: &mut dyn BufRead,
    channel: &str,
    mut matcher: Matcher,
) -> Result<(Vec<MatchItem>, crate::domain::FileStats)> {
    let mut items = Vec::new();
    let stats = parser.parse(input, &mut |record| {
        if !record.kind.is_refund() {
            return Ok(());
        }
        check_record_channel(&record, channel)?;
        items.push(matcher.push(&record));
        Ok(())
    })?;
    items.extend(matcher.finish());
    Ok((items, stats))
}

/// Items written back (for reports).
pub fn written_back(items: &[RunItem]) -> u32 {
    let n = items
        .iter()
        .filter(|i| i.state == WriteBackState::Done)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}
