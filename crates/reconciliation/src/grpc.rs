//! The reconciliation center's gRPC service, its peers (bank subsystem, refund center) and the daily
//! job.
//!
//! `RunReconciliation(channel, date)`:
//! 1. fetch the bank's clearing file (`bank.GetClearingFile`) and check its SHA-256;
//! 2. if this exact file was reconciled before, return that run (`replayed = true`) after retrying
//!    its pending write-backs, and match nothing again;
//! 3. otherwise parse it strictly (a bad file is `INVALID_ARGUMENT` naming line and field; nothing
//!    is stored or written back), page through the refund center's submitted refunds
//!    (`refund.ListSubmitted`), match, and check bank-only rows with `refund.GetRefund` (a refund
//!    already final the same way is "already final", not bank-only);
//! 4. store the run and its items in one transaction (a concurrent run of the same file loses on the
//!    UNIQUE constraint and returns the winner's run, replayed);
//! 5. write back each MATCHED / BANK_FAILED item with `refund.ApplyReconciliation(source = run_id)`.
//!    An `INVALID_STATE_TRANSITION` answer (the refund was already final otherwise) turns the item
//!    into a recorded discrepancy. Transport trouble stops the pass: the rest stay pending
//!    (`pending_write_backs`) and are retried by the next run of the same file or by the daily job.

use std::time::Duration;

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::id::{new_id, validate_external_id};
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::bank::v1::GetClearingFileRequest;
use tuikuan_proto::reconciliation::v1 as pb;
use tuikuan_proto::reconciliation::v1::reconciliation_service_server::{
    ReconciliationService, ReconciliationServiceServer,
};
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::{grpc_err, peer_err};

use crate::domain::{
    check_channel, format_date, judge_write_back, match_refunds, number_items, parse_business_date,
    parser_for, resolve_bank_only, split_refunds, FinalStatus, KnownRefund, MatchItem, Outcome,
    PlatformRefund, Run, WriteBackVerdict,
};
use crate::store;

/// Page size for `ListSubmitted`.
const LIST_SUBMITTED_PAGE: u32 = 1000;
/// The most submitted refunds one run takes from the refund center.
const MAX_PLATFORM_REFUNDS: usize = 1_000_000;
/// `ListRuns` default and maximum page.
const DEFAULT_LIST_LIMIT: u32 = 20;
const MAX_LIST_LIMIT: u32 = 100;
/// The largest clearing file accepted from the bank subsystem, in bytes.
const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;

/// How the reconciliation center runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The bank subsystem (`http://host:port`).
    pub bank_addr: String,
    /// The refund center (`http://host:port`).
    pub refund_addr: String,
    /// How often the daily job looks for work; `None` runs no job (admin RPC only).
    pub job_interval: Option<Duration>,
    /// Channels the daily job reconciles: yesterday's business date for each.
    pub channels: Vec<String>,
}

/// Serves the reconciliation center on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    for channel in &config.channels {
        validate_external_id(channel, "channels")?;
    }
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(store::MIGRATIONS)?;
    let bank = BankServiceClient::new(tuikuan_proto::client::channel(&config.bank_addr)?)
        .max_decoding_message_size(MAX_FILE_BYTES + 64 * 1024);
    let refund = RefundServiceClient::new(tuikuan_proto::client::channel(&config.refund_addr)?);
    let reconciler = Reconciler {
        db,
        clock: config.clock.clone(),
        bank,
        refund,
    };
    let job = config
        .job_interval
        .map(|every| tokio::spawn(job_loop(reconciler.clone(), config.channels.clone(), every)));
    let svc = ReconciliationSvc { reconciler };
    let result = tuikuan_proto::server::serve(
        listener,
        tonic::service::Routes::new(ReconciliationServiceServer::new(svc)),
        &[<ReconciliationServiceServer<ReconciliationSvc> as tonic::server::NamedService>::NAME],
        shutdown,
    )
    .await;
    if let Some(job) = job {
        job.abort();
    }
    result
}

/// The daily job: every `every`, reconcile yesterday for each channel not yet reconciled, and
/// retry pending write-backs of runs already made.
async fn job_loop(reconciler: Reconciler, channels: Vec<String>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        reconciler.run_due(&channels).await;
    }
}

/// A run and whether it was made by an earlier call.
#[derive(Debug)]
struct RunResult {
    run: Run,
    replayed: bool,
}

/// A clearing file as fetched and checked.
struct FetchedFile {
    content: Vec<u8>,
    sha256: String,
    format: String,
}

#[derive(Clone)]
struct Reconciler {
    db: Db,
    clock: SharedClock,
    bank: BankServiceClient<Channel>,
    refund: RefundServiceClient<Channel>,
}

impl Reconciler {
    /// Reconciles one channel's business date. The admin RPC and the daily job both call this.
    async fn run(&self, channel: &str, date: NaiveDate) -> Result<RunResult> {
        validate_external_id(channel, "channel")?;
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
        let file = self.fetch_file(channel, date).await?;

        let (c, sha) = (channel.to_string(), file.sha256.clone());
        let existing = self
            .db
            .run(move |conn| store::find_run_by_file(conn, &c, date, &sha))
            .await?;
        if let Some(run) = existing {
            tracing::info!(run_id = %run.run_id, "clearing file reconciled before: replaying");
            let run = self.write_back_pending(run).await?;
            return Ok(RunResult {
                run,
                replayed: true,
            });
        }

        let parser = parser_for(&file.format)?;
        let records = parser.parse(&file.content)?;
        check_channel(&records, channel)?;
        let file_rows = u32::try_from(records.len())
            .map_err(|_| Error::field("clearing file", "too many rows"))?;
        let (refund_records, payout_rows) = split_refunds(records);
        let platform = self.list_submitted(channel, date).await?;
        let matched = match_refunds(&refund_records, &platform)?;
        let matched = self.resolve_bank_only(matched).await?;

        let run = Run {
            run_id: new_id("rcn"),
            channel: channel.to_string(),
            date,
            file_sha256: file.sha256.clone(),
            file_format: parser.format().to_string(),
            file_rows,
            payout_rows: u32::try_from(payout_rows).unwrap_or(u32::MAX),
            created_at_ms: self.clock.now_ms(),
            items: number_items(matched)?,
        };
        let to_store = run.clone();
        match self
            .db
            .transaction(move |conn| store::insert_run(conn, &to_store))
            .await
        {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::IdempotencyConflict => {
                let (c, sha) = (channel.to_string(), file.sha256.clone());
                let winner = self
                    .db
                    .run(move |conn| store::find_run_by_file(conn, &c, date, &sha))
                    .await?
                    .ok_or_else(|| Error::internal("concurrent run vanished"))?;
                tracing::info!(run_id = %winner.run_id, "a concurrent run of the same file won");
                return Ok(RunResult {
                    run: winner,
                    replayed: true,
                });
            }
            Err(e) => return Err(e),
        }
        tracing::info!(
            run_id = %run.run_id,
            items = run.items.len(),
            pending = run.pending_write_backs(),
            "reconciliation run stored"
        );
        let run = self.write_back_pending(run).await?;
        Ok(RunResult {
            run,
            replayed: false,
        })
    }

    /// The daily job's pass: yesterday's business date for each channel.
    async fn run_due(&self, channels: &[String]) {
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
            let result = self.run(channel, date).await?;
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

    async fn fetch_file(&self, channel: &str, date: NaiveDate) -> Result<FetchedFile> {
        let file = self
            .bank
            .clone()
            .get_clearing_file(GetClearingFileRequest {
                channel: channel.to_string(),
                date: format_date(date),
            })
            .await
            .map_err(peer_err)?
            .into_inner();
        if !file.channel.is_empty() && file.channel != channel {
            return Err(Error::field(
                "clearing file channel",
                format!("asked for {channel:?}, got {:?}", file.channel),
            ));
        }
        if !file.date.is_empty() && file.date != format_date(date) {
            return Err(Error::field(
                "clearing file date",
                format!("asked for {}, got {:?}", format_date(date), file.date),
            ));
        }
        if file.content.len() > MAX_FILE_BYTES {
            return Err(Error::field(
                "clearing file",
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let computed = hex::encode(Sha256::digest(&file.content));
        if !file.sha256.eq_ignore_ascii_case(&computed) {
            return Err(Error::field(
                "clearing file sha256",
                format!(
                    "{:?} does not match the content (sha256 {computed})",
                    file.sha256
                ),
            ));
        }
        Ok(FetchedFile {
            content: file.content,
            sha256: computed,
            format: file.format,
        })
    }

    /// Every refund the refund center has SUBMITTED and PROCESSING for the channel up to the end of
    /// the date, page by page.
    async fn list_submitted(&self, channel: &str, date: NaiveDate) -> Result<Vec<PlatformRefund>> {
        let mut out: Vec<PlatformRefund> = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .refund
                .clone()
                .list_submitted(refund_pb::ListSubmittedRequest {
                    channel: channel.to_string(),
                    date: format_date(date),
                    limit: LIST_SUBMITTED_PAGE,
                    after: after.clone(),
                })
                .await
                .map_err(peer_err)?
                .into_inner()
                .refunds;
            let full_page = page.len() >= LIST_SUBMITTED_PAGE as usize;
            let last = page.last().map(|o| o.refund_id.clone());
            for order in page {
                if let Some(refund) = platform_refund(channel, order)? {
                    out.push(refund);
                }
            }
            if out.len() > MAX_PLATFORM_REFUNDS {
                return Err(Error::internal(format!(
                    "refund center listed more than {MAX_PLATFORM_REFUNDS} submitted refunds"
                )));
            }
            match last {
                Some(last) if full_page => {
                    if last <= after {
                        return Err(Error::internal(format!(
                            "refund center pagination did not advance past {after:?}"
                        )));
                    }
                    after = last;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Checks bank-only items with the refund center: a refund it already finalised the same way
    /// becomes an "already final" match (see [`resolve_bank_only`]).
    async fn resolve_bank_only(&self, items: Vec<MatchItem>) -> Result<Vec<MatchItem>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.outcome != Outcome::BankOnly {
                out.push(item);
                continue;
            }
            let answer = self
                .refund
                .clone()
                .get_refund(refund_pb::GetRefundRequest {
                    refund_id: item.refund_id.clone(),
                })
                .await
                .map_err(peer_err);
            let known = match answer {
                Ok(order) => known_refund(order.into_inner()),
                Err(e) if matches!(e.code, ErrorCode::RefundNotFound | ErrorCode::NotFound) => None,
                Err(e) => return Err(e),
            };
            out.push(resolve_bank_only(item, known.as_ref()));
        }
        Ok(out)
    }

    /// Writes back the run's pending items in order, stopping at the first transport failure (the
    /// rest stay pending). Returns the run as stored afterwards.
    async fn write_back_pending(&self, run: Run) -> Result<Run> {
        for item in run.items.iter().filter(|i| i.state.is_pending()) {
            let Some(write_back) = item.item.write_back.clone() else {
                continue;
            };
            let status = match write_back.status {
                FinalStatus::Succeeded => refund_pb::RefundStatus::Succeeded,
                FinalStatus::Failed => refund_pb::RefundStatus::Failed,
            };
            let answer = self
                .refund
                .clone()
                .apply_reconciliation(refund_pb::ApplyReconciliationRequest {
                    refund_id: item.item.refund_id.clone(),
                    status: status as i32,
                    reason: write_back.reason.clone(),
                    source: run.run_id.clone(),
                    bank_reference_id: String::new(),
                })
                .await
                .map(|r| final_status_of(&r.into_inner()))
                .map_err(peer_err);
            let verdict = judge_write_back(write_back.status, answer.as_ref().map(|s| *s));
            let (id, seq) = (run.run_id.clone(), item.seq);
            match verdict {
                WriteBackVerdict::Done => {
                    item.state.complete()?;
                    self.db
                        .run(move |conn| store::mark_written_back(conn, &id, seq))
                        .await?;
                }
                WriteBackVerdict::Refused(why) => {
                    item.state.refuse()?;
                    tracing::warn!(
                        run_id = %run.run_id,
                        refund_id = %item.item.refund_id,
                        "{why}"
                    );
                    let detail = if item.item.detail.is_empty() {
                        why
                    } else {
                        format!("{}; {why}", item.item.detail)
                    };
                    self.db
                        .run(move |conn| store::mark_refused(conn, &id, seq, &detail))
                        .await?;
                }
                WriteBackVerdict::Retry => {
                    let why = match &answer {
                        Err(e) => format!("{}: {}", e.code, e.message),
                        Ok(_) => "refund center reports it still processing".to_string(),
                    };
                    tracing::warn!(
                        run_id = %run.run_id,
                        refund_id = %item.item.refund_id,
                        error = %why,
                        "write-back not accepted; remaining items stay pending"
                    );
                    break;
                }
            }
        }
        let id = run.run_id.clone();
        self.db
            .run(move |conn| store::get_run(conn, &id))
            .await?
            .ok_or_else(|| Error::internal(format!("run {} vanished", run.run_id)))
    }
}

fn final_status_of(order: &refund_pb::RefundOrder) -> Option<FinalStatus> {
    match refund_pb::RefundStatus::try_from(order.refund_status) {
        Ok(refund_pb::RefundStatus::Succeeded) => Some(FinalStatus::Succeeded),
        Ok(refund_pb::RefundStatus::Failed) => Some(FinalStatus::Failed),
        _ => None,
    }
}

/// A listed order as a platform refund to match; orders that are not (or no longer) submitted and
/// processing, or that belong to another channel, are left out.
fn platform_refund(channel: &str, order: refund_pb::RefundOrder) -> Result<Option<PlatformRefund>> {
    let submitted = matches!(
        refund_pb::SubmitStatus::try_from(order.submit_status),
        Ok(refund_pb::SubmitStatus::Submitted | refund_pb::SubmitStatus::Unspecified)
    );
    let processing = final_status_of(&order).is_none();
    let same_channel = order.channel.is_empty() || order.channel == channel;
    if !(submitted && processing && same_channel) {
        tracing::debug!(refund_id = %order.refund_id, "listed refund not reconcilable: skipped");
        return Ok(None);
    }
    validate_external_id(&order.refund_id, "refund_id")
        .map_err(|e| Error::internal(format!("refund center listed a bad refund id: {e}")))?;
    let amount = Money::parse(&order.amount, &order.currency, "amount").map_err(|e| {
        Error::internal(format!(
            "refund center listed refund {} with a bad amount: {}",
            order.refund_id, e.message
        ))
    })?;
    Ok(Some(PlatformRefund {
        refund_id: order.refund_id,
        amount,
    }))
}

fn known_refund(order: refund_pb::RefundOrder) -> Option<KnownRefund> {
    let final_status = final_status_of(&order);
    match Money::parse(&order.amount, &order.currency, "amount") {
        Ok(amount) => Some(KnownRefund {
            refund_id: order.refund_id,
            amount,
            final_status,
        }),
        Err(e) => {
            tracing::warn!(refund_id = %order.refund_id, error = %e, "refund center sent a bad amount");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire conversions
// ---------------------------------------------------------------------------------------------

fn outcome_to_wire(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Matched => pb::Outcome::Matched,
        Outcome::BankFailed => pb::Outcome::BankFailed,
        Outcome::PlatformOnly => pb::Outcome::PlatformOnly,
        Outcome::BankOnly => pb::Outcome::BankOnly,
        Outcome::AmountMismatch => pb::Outcome::AmountMismatch,
        Outcome::Duplicate => pb::Outcome::Duplicate,
    }
}

fn amount_to_wire(m: Option<Money>) -> String {
    m.map(|m| m.amount_string()).unwrap_or_default()
}

/// A run on the wire. `with_items = false` leaves the items out (counts and pending stay).
fn run_to_wire(run: &Run, replayed: bool, with_items: bool) -> Result<pb::ReconciliationRun> {
    let counts = run
        .totals()?
        .into_iter()
        .map(|t| pb::OutcomeCount {
            outcome: outcome_to_wire(t.outcome) as i32,
            count: t.count,
            amount: t.amount.amount_string(),
        })
        .collect();
    let items = if with_items {
        run.items
            .iter()
            .map(|i| pb::Item {
                refund_id: i.item.refund_id.clone(),
                bank_ref: i.item.bank_ref.clone(),
                outcome: outcome_to_wire(i.item.outcome) as i32,
                platform_amount: amount_to_wire(i.item.platform_amount),
                bank_amount: amount_to_wire(i.item.bank_amount),
                detail: i.item.detail.clone(),
                written_back: i.state == crate::domain::WriteBackState::Done,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(pb::ReconciliationRun {
        run_id: run.run_id.clone(),
        channel: run.channel.clone(),
        date: format_date(run.date),
        file_sha256: run.file_sha256.clone(),
        file_rows: run.file_rows,
        counts,
        items,
        replayed,
        created_at_ms: run.created_at_ms,
        pending_write_backs: run.pending_write_backs(),
    })
}

/// The tonic service.
#[derive(Clone)]
pub struct ReconciliationSvc {
    reconciler: Reconciler,
}

#[tonic::async_trait]
impl ReconciliationService for ReconciliationSvc {
    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel, date = %request.get_ref().date))]
    async fn run_reconciliation(
        &self,
        request: Request<pb::RunReconciliationRequest>,
    ) -> Result<Response<pb::ReconciliationRun>, Status> {
        let req = request.into_inner();
        validate_external_id(&req.channel, "channel").map_err(grpc_err)?;
        let date = parse_business_date(&req.date, "date").map_err(grpc_err)?;
        let result = self
            .reconciler
            .run(&req.channel, date)
            .await
            .map_err(grpc_err)?;
        let wire = run_to_wire(&result.run, result.replayed, true).map_err(grpc_err)?;
        Ok(Response::new(wire))
    }

    #[tracing::instrument(skip_all, fields(run_id = %request.get_ref().run_id))]
    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::ReconciliationRun>, Status> {
        let run_id = request.into_inner().run_id;
        validate_external_id(&run_id, "run_id").map_err(grpc_err)?;
        let id = run_id.clone();
        let run = self
            .reconciler
            .db
            .run(move |conn| store::get_run(conn, &id))
            .await
            .map_err(grpc_err)?
            .ok_or_else(|| {
                grpc_err(Error::new(
                    ErrorCode::NotFound,
                    format!("reconciliation run {run_id} not found"),
                ))
            })?;
        Ok(Response::new(
            run_to_wire(&run, false, true).map_err(grpc_err)?,
        ))
    }

    /// Newest first; items are left out (use GetRun), counts and pending write-backs are there.
    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel))]
    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let req = request.into_inner();
        let channel = if req.channel.is_empty() {
            None
        } else {
            validate_external_id(&req.channel, "channel").map_err(grpc_err)?;
            Some(req.channel)
        };
        let limit = match req.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let runs = self
            .reconciler
            .db
            .run(move |conn| store::list_runs(conn, channel.as_deref(), limit))
            .await
            .map_err(grpc_err)?;
        let runs = runs
            .iter()
            .map(|r| run_to_wire(r, false, false))
            .collect::<Result<Vec<_>>>()
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }
}
