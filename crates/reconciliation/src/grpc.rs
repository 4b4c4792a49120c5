//! The reconciliation center's gRPC service, its gRPC peers (bank subsystem, refund center,
//! clearing center) and the daily job. The work itself is in [`crate::engine`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tuikuan_proto::tls::Principal;

use chrono::NaiveDate;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::bank::v1::GetClearingFileRequest;
use tuikuan_proto::clearing::v1 as clearing_pb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::reconciliation::v1 as pb;
use tuikuan_proto::reconciliation::v1::reconciliation_service_server::{
    ReconciliationService, ReconciliationServiceServer,
};
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::{grpc_err, peer_err};

use crate::domain::{
    format_date, parse_business_date, AdjustmentKind, BankRecordStatus, Discrepancy,
    DiscrepancyKind, DiscrepancyStatus, FileFormat, FinalStatus, KnownRefund, Outcome,
    PlatformRefund, Resolution, Run, Severity, SuspenseEntry, SuspenseStatus, WriteBackState,
};
use crate::engine::{
    AdjustmentRequest, ApplyRequest, ChannelSettings, Engine, FetchedFile, FileSource, Peers,
    ReinstateRequest, RunRequest, SubmittedPage,
};
use crate::report::{self, ReportFormat};
use crate::store;

pub mod files;
pub mod proposals;

/// `ListRuns` / `ListDiscrepancies` default and maximum page.
const DEFAULT_LIST_LIMIT: u32 = 20;
const MAX_LIST_LIMIT: u32 = 500;
/// The largest clearing file accepted over gRPC, in bytes.
pub const MAX_FILE_BYTES: usize = 512 * 1024 * 1024;
/// Items included in a run on the wire; bigger runs list exceptions first (use ExportReport for
/// everything).
pub const MAX_WIRE_ITEMS: usize = 10_000;

/// How the reconciliation center runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The bank subsystem (`http://host:port`).
    pub bank_addr: String,
    /// The refund center (`http://host:port`).
    pub refund_addr: String,
    /// The clearing center (`http://host:port`), for suspense adjustments.
    pub clearing_addr: String,
    /// How often the daily job looks for work; `None` runs no job (admin RPC only).
    pub job_interval: Option<Duration>,
    /// Channels the daily job reconciles: yesterday's business date for each.
    pub channels: Vec<String>,
    /// channel → file format of its clearing files (`csv`, `wechat`, `unionpay`); channels not
    /// listed use the format the bank declares, else csv.
    pub channel_formats: HashMap<String, String>,
    /// channel → cross-day window in days for platform-only refunds (default 1).
    pub suspense_days: HashMap<String, u32>,
    /// Mutual TLS as `reconciliation` (or plaintext, only when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows). Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
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
    for (channel, format) in &config.channel_formats {
        validate_external_id(channel, "channel_formats")?;
        FileFormat::parse(format)?;
    }
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(store::MIGRATIONS)?;
    let desk = config
        .staff
        .desk("reconciliation", &db, config.clock.clone())?;
    let auth = &config.staff.auth;
    let peers = GrpcPeers::connect(&config)?;
    let engine = Engine {
        db,
        clock: config.clock.clone(),
        peers,
        settings: Arc::new(ChannelSettings {
            formats: config.channel_formats.clone(),
            suspense_days: config.suspense_days.clone(),
        }),
    };
    let job = config.job_interval.map(|every| {
        let (engine, channels) = (engine.clone(), config.channels.clone());
        // The daily job: reconcile yesterday for each channel not yet reconciled, and retry
        // pending write-backs of runs already made.
        tuikuan_proto::jobs::every("scheduled reconciliation", every, move || {
            let (engine, channels) = (engine.clone(), channels.clone());
            async move { engine.run_due(&channels).await }
        })
    });
    let executor = proposals::ReconExecutor::new(engine.clone());
    let svc = ReconciliationSvc {
        engine,
        desk: desk.clone(),
    };
    let result = tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        tonic::service::Routes::new(
            auth.guard_audited(
                ReconciliationServiceServer::new(svc)
                    .max_decoding_message_size(MAX_FILE_BYTES + 64 * 1024)
                    .max_encoding_message_size(MAX_FILE_BYTES + 64 * 1024),
                &desk,
            ),
        )
        .add_service(tuikuan_auth::StaffServer::new(desk, executor).guarded(auth)),
        &[
            <ReconciliationServiceServer<ReconciliationSvc> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    )
    .await;
    tuikuan_proto::jobs::stop(job).await;
    result
}

// ---------------------------------------------------------------------------------------------
// gRPC peers
// ---------------------------------------------------------------------------------------------

/// The peers over gRPC.
#[derive(Clone)]
pub struct GrpcPeers {
    bank: BankServiceClient<Channel>,
    refund: RefundServiceClient<Channel>,
    clearing: ClearingServiceClient<Channel>,
}

impl GrpcPeers {
    pub fn connect(config: &Config) -> Result<GrpcPeers> {
        Ok(GrpcPeers {
            bank: BankServiceClient::new(
                config
                    .transport
                    .channel(Principal::Bank, &config.bank_addr)?,
            )
            .max_decoding_message_size(MAX_FILE_BYTES + 64 * 1024),
            refund: RefundServiceClient::new(
                config
                    .transport
                    .channel(Principal::Refund, &config.refund_addr)?,
            ),
            clearing: ClearingServiceClient::new(
                config
                    .transport
                    .channel(Principal::Clearing, &config.clearing_addr)?,
            ),
        })
    }
}

fn final_status_of(order: &refund_pb::RefundOrder) -> Option<FinalStatus> {
    match refund_pb::RefundStatus::try_from(order.refund_status) {
        Ok(refund_pb::RefundStatus::Succeeded) => Some(FinalStatus::Succeeded),
        Ok(refund_pb::RefundStatus::Failed) => Some(FinalStatus::Failed),
        _ => None,
    }
}

/// How the attempt the bank knows by `reference` ended, if it did: a refund that fell back to
/// another method is still processing, but the attempt the bank reported on is over.
fn attempt_status_of(order: &refund_pb::RefundOrder, reference: &str) -> Option<FinalStatus> {
    let reference = if reference.is_empty() {
        order.refund_id.as_str()
    } else {
        reference
    };
    order
        .attempts
        .iter()
        .find(|a| a.bank_reference_id == reference)
        .and_then(|a| match a.outcome.as_str() {
            "FAILED" => Some(FinalStatus::Failed),
            "SUCCEEDED" => Some(FinalStatus::Succeeded),
            _ => None,
        })
}

/// What reconciliation learns from the refund center about one bank row: the outcome of the
/// attempt the row belongs to, else the refund's final status.
fn known_status_of(order: &refund_pb::RefundOrder, reference: &str) -> Option<FinalStatus> {
    attempt_status_of(order, reference).or_else(|| final_status_of(order))
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
    if !order.bank_reference_id.is_empty() {
        validate_external_id(&order.bank_reference_id, "bank_reference_id").map_err(|e| {
            Error::internal(format!("refund center listed a bad bank reference id: {e}"))
        })?;
    }
    let amount = Money::parse(&order.amount, &order.currency, "amount").map_err(|e| {
        Error::internal(format!(
            "refund center listed refund {} with a bad amount: {}",
            order.refund_id, e.message
        ))
    })?;
    Ok(Some(PlatformRefund {
        refund_id: order.refund_id,
        bank_reference_id: order.bank_reference_id,
        amount,
    }))
}

/// The attempt reference the refund center is given for a bank row: empty (the current attempt)
/// when the row carries the refund id itself.
fn attempt_reference(bank_reference_id: String, refund_id: &str) -> String {
    if bank_reference_id == refund_id {
        String::new()
    } else {
        bank_reference_id
    }
}

impl Peers for GrpcPeers {
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
        Ok(FetchedFile {
            content: file.content,
            sha256: file.sha256,
            format: file.format,
        })
    }

    async fn list_submitted(
        &self,
        channel: &str,
        date: NaiveDate,
        after: &str,
        limit: u32,
    ) -> Result<SubmittedPage> {
        let page = self
            .refund
            .clone()
            .list_submitted(refund_pb::ListSubmittedRequest {
                channel: channel.to_string(),
                date: format_date(date),
                limit,
                after: after.to_string(),
            })
            .await
            .map_err(peer_err)?
            .into_inner()
            .refunds;
        let full = page.len() >= limit as usize;
        let last = page.last().map(|o| o.refund_id.clone());
        let mut refunds = Vec::with_capacity(page.len());
        for order in page {
            if let Some(r) = platform_refund(channel, order)? {
                refunds.push(r);
            }
        }
        Ok(SubmittedPage {
            refunds,
            next_after: if full { last } else { None },
        })
    }

    async fn get_refund(&self, bank_reference_id: &str) -> Result<Option<KnownRefund>> {
        if validate_external_id(bank_reference_id, "bank_reference_id").is_err() {
            return Ok(None);
        }
        let answer = self
            .refund
            .clone()
            .get_refund(refund_pb::GetRefundRequest {
                refund_id: String::new(),
                bank_reference_id: bank_reference_id.to_string(),
            })
            .await
            .map_err(peer_err);
        let order = match answer {
            Ok(o) => o.into_inner(),
            Err(e) if matches!(e.code, ErrorCode::RefundNotFound | ErrorCode::NotFound) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let final_status = known_status_of(&order, bank_reference_id);
        match Money::parse(&order.amount, &order.currency, "amount") {
            Ok(amount) => Ok(Some(KnownRefund {
                channel: order.channel,
                refund_id: order.refund_id,
                amount,
                final_status,
            })),
            Err(e) => {
                tracing::warn!(refund_id = %order.refund_id, error = %e, "refund center sent a bad amount");
                Ok(None)
            }
        }
    }

    async fn apply(&self, request: ApplyRequest) -> Result<Option<FinalStatus>> {
        let status = match request.status {
            FinalStatus::Succeeded => refund_pb::RefundStatus::Succeeded,
            FinalStatus::Failed => refund_pb::RefundStatus::Failed,
        };
        let reference = attempt_reference(request.bank_reference_id, &request.refund_id);
        self.refund
            .clone()
            .apply_reconciliation(refund_pb::ApplyReconciliationRequest {
                refund_id: request.refund_id,
                status: status as i32,
                reason: request.reason,
                source: request.source,
                bank_reference_id: reference.clone(),
            })
            .await
            // A failure another method can fix ends the attempt, not the refund: the answer is
            // still PROCESSING, with the attempt FAILED — the write-back is done.
            .map(|r| known_status_of(&r.into_inner(), &reference))
            .map_err(peer_err)
    }

    async fn reinstate(&self, request: ReinstateRequest) -> Result<()> {
        let reference = attempt_reference(request.bank_reference_id, &request.refund_id);
        self.refund
            .clone()
            .reinstate_succeeded(refund_pb::ReinstateSucceededRequest {
                refund_id: request.refund_id,
                bank_reference_id: reference,
                reason: request.reason,
                source: request.source,
            })
            .await
            .map(|_| ())
            .map_err(peer_err)
    }

    async fn reopen(&self, request: ReinstateRequest) -> Result<()> {
        self.refund
            .clone()
            .reopen_refund(refund_pb::ReopenRefundRequest {
                bank_reference_id: attempt_reference(request.bank_reference_id, &request.refund_id),
                refund_id: request.refund_id,
                reason: request.reason,
                source: request.source,
            })
            .await
            .map(|_| ())
            .map_err(peer_err)
    }

    async fn known_channel(&self, channel: &str) -> Result<bool> {
        let channels = self
            .refund
            .clone()
            .list_channels(refund_pb::ListChannelsRequest {})
            .await
            .map_err(peer_err)?
            .into_inner()
            .channels;
        Ok(channels.iter().any(|c| c.code == channel))
    }

    async fn post_adjustment(&self, request: AdjustmentRequest) -> Result<String> {
        let kind = match request.kind {
            AdjustmentKind::BankToSuspense => clearing_pb::AdjustmentKind::BankToSuspense,
            AdjustmentKind::SuspenseToBank => clearing_pb::AdjustmentKind::SuspenseToBank,
        };
        let answer = self
            .clearing
            .clone()
            .post_adjustment(clearing_pb::AdjustmentRequest {
                adjustment_id: request.adjustment_id,
                kind: kind as i32,
                channel: request.channel,
                amount: request.amount.amount_string(),
                currency: request.amount.currency().code().to_string(),
                memo: request.memo,
                bank_reference: request.bank_reference,
                value_date: request.value_date.format("%Y-%m-%d").to_string(),
            })
            .await
            .map_err(peer_err)?
            .into_inner();
        Ok(answer.posting_id)
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
        Outcome::OtherChannel => pb::Outcome::OtherChannel,
    }
}

fn amount_to_wire(m: Option<Money>) -> String {
    m.map(|m| m.amount_string()).unwrap_or_default()
}

fn counts_to_wire(run: &Run) -> Result<Vec<pb::OutcomeCount>> {
    Ok(run
        .totals()?
        .into_iter()
        .map(|t| pb::OutcomeCount {
            outcome: outcome_to_wire(t.outcome) as i32,
            count: t.count,
            amount: t.amount.amount_string(),
            currency: t.amount.currency().code().to_string(),
        })
        .collect())
}

/// A run on the wire. `with_items = false` leaves the items out (counts and pending stay). At
/// most [`MAX_WIRE_ITEMS`] items, exceptions (anything but MATCHED) first when there are more.
fn run_to_wire(run: &Run, replayed: bool, with_items: bool) -> Result<pb::ReconciliationRun> {
    let items = if with_items {
        let mut chosen: Vec<&crate::domain::RunItem> = if run.items.len() > MAX_WIRE_ITEMS {
            let mut v: Vec<_> = run
                .items
                .iter()
                .filter(|i| i.item.outcome != Outcome::Matched)
                .take(MAX_WIRE_ITEMS)
                .collect();
            let room = MAX_WIRE_ITEMS - v.len();
            v.extend(
                run.items
                    .iter()
                    .filter(|i| i.item.outcome == Outcome::Matched)
                    .take(room),
            );
            v
        } else {
            run.items.iter().collect()
        };
        chosen.sort_by_key(|i| i.seq);
        chosen
            .into_iter()
            .map(|i| pb::Item {
                refund_id: i.item.refund_id.clone(),
                bank_ref: i.item.bank_ref.clone(),
                outcome: outcome_to_wire(i.item.outcome) as i32,
                platform_amount: amount_to_wire(i.item.platform_amount),
                bank_amount: amount_to_wire(i.item.bank_amount),
                detail: i.item.detail.clone(),
                written_back: i.state == WriteBackState::Done,
                bank_reference_id: i.item.bank_reference_id.clone(),
                line: i
                    .item
                    .line
                    .map(|l| u32::try_from(l).unwrap_or(u32::MAX))
                    .unwrap_or(0),
                discrepancy_id: i.discrepancy_id.clone().unwrap_or_default(),
                currency: i
                    .item
                    .platform_amount
                    .or(i.item.bank_amount)
                    .map(|a| a.currency().code().to_string())
                    .unwrap_or_default(),
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
        counts: counts_to_wire(run)?,
        items,
        replayed,
        created_at_ms: run.created_at_ms,
        pending_write_backs: run.pending_write_backs(),
        format: run.file_format.clone(),
        supersedes: run.supersedes.clone().unwrap_or_default(),
        superseded_by: run.superseded_by.clone().unwrap_or_default(),
        discrepancies: run.discrepancies,
        skipped_rows: run.skipped_rows,
        source: run.source.clone(),
        content_sha256: run.content_sha256.clone(),
    })
}

fn kind_to_wire(k: DiscrepancyKind) -> pb::DiscrepancyKind {
    match k {
        DiscrepancyKind::BankMissed => pb::DiscrepancyKind::BankMissed,
        DiscrepancyKind::PlatformMissed => pb::DiscrepancyKind::PlatformMissed,
        DiscrepancyKind::AmountMismatch => pb::DiscrepancyKind::DiscrepancyAmountMismatch,
        DiscrepancyKind::Duplicate => pb::DiscrepancyKind::DuplicateRow,
        DiscrepancyKind::StatusConflict => pb::DiscrepancyKind::StatusConflict,
        DiscrepancyKind::OtherChannel => pb::DiscrepancyKind::OtherChannelRow,
    }
}

fn severity_to_wire(s: Severity) -> pb::Severity {
    match s {
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
    }
}

fn status_to_wire(s: DiscrepancyStatus) -> pb::DiscrepancyStatus {
    match s {
        DiscrepancyStatus::Open => pb::DiscrepancyStatus::Open,
        DiscrepancyStatus::Resolving => pb::DiscrepancyStatus::Resolving,
        DiscrepancyStatus::Resolved => pb::DiscrepancyStatus::Resolved,
    }
}

fn resolution_to_wire(r: Option<Resolution>) -> pb::Resolution {
    match r {
        Some(Resolution::BankWins) => pb::Resolution::BankWins,
        Some(Resolution::PlatformWins) => pb::Resolution::PlatformWins,
        None => pb::Resolution::Unspecified,
    }
}

fn discrepancy_to_wire(d: &Discrepancy) -> pb::Discrepancy {
    pb::Discrepancy {
        discrepancy_id: d.discrepancy_id.clone(),
        channel: d.channel.clone(),
        date: format_date(d.date),
        run_id: d.run_id.clone(),
        kind: kind_to_wire(d.kind) as i32,
        severity: severity_to_wire(d.severity) as i32,
        status: status_to_wire(d.status) as i32,
        refund_id: d.refund_id.clone(),
        bank_reference_id: d.bank_reference_id.clone(),
        bank_ref: d.bank_ref.clone(),
        platform_amount: amount_to_wire(d.platform_amount),
        bank_amount: amount_to_wire(d.bank_amount),
        currency: d
            .platform_amount
            .or(d.bank_amount)
            .map(|a| a.currency().code().to_string())
            .unwrap_or_default(),
        bank_status: d
            .bank_status
            .map(|s: BankRecordStatus| s.as_str().to_string())
            .unwrap_or_default(),
        detail: d.detail.clone(),
        created_at_ms: d.created_at_ms,
        resolution: resolution_to_wire(d.resolution) as i32,
        operator: d.operator.clone(),
        reason: d.reason.clone(),
        resolved_at_ms: d.resolved_at_ms.unwrap_or(0),
        actions: d.actions.clone(),
        adjustment_id: d.adjustment_id.clone(),
    }
}

fn suspense_to_wire(e: &SuspenseEntry) -> pb::SuspenseEntry {
    pb::SuspenseEntry {
        channel: e.channel.clone(),
        refund_id: e.refund_id.clone(),
        bank_reference_id: e.bank_reference_id.clone(),
        amount: e.amount.amount_string(),
        currency: e.amount.currency().code().to_string(),
        since_date: format_date(e.since),
        status: e.status.as_str().to_string(),
        discrepancy_id: e.discrepancy_id.clone().unwrap_or_default(),
        cleared_by_run: e.cleared_by_run.clone().unwrap_or_default(),
    }
}

fn optional_channel(channel: String) -> Result<Option<String>> {
    if channel.is_empty() {
        Ok(None)
    } else {
        validate_external_id(&channel, "channel")?;
        Ok(Some(channel))
    }
}

fn limit_of(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    }
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// The tonic service.
#[derive(Clone)]
pub struct ReconciliationSvc {
    engine: Engine<GrpcPeers>,
    /// The staff desk: audit trail and four-eyes proposals ([`proposals`]).
    desk: tuikuan_auth::Desk,
}

impl ReconciliationSvc {
    async fn load_run(&self, run_id: &str) -> Result<Run> {
        validate_external_id(run_id, "run_id")?;
        let id = run_id.to_string();
        self.engine
            .db
            .run(move |conn| store::get_run(conn, &id))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NotFound,
                    format!("reconciliation run {run_id} not found"),
                )
            })
    }

    async fn current_run(&self, channel: &str, date: NaiveDate) -> Result<Option<Run>> {
        let c = channel.to_string();
        let id = self
            .engine
            .db
            .run(move |conn| store::current_run_id(conn, &c, date))
            .await?;
        match id {
            Some(id) => Ok(Some(self.load_run(&id).await?)),
            None => Ok(None),
        }
    }
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
            .engine
            .run(RunRequest {
                channel: req.channel,
                date,
                format: req.format,
                encoding: req.encoding,
                source: FileSource::Bank,
                operator: String::new(),
            })
            .await
            .map_err(grpc_err)?;
        let wire = run_to_wire(&result.run, result.replayed, true).map_err(grpc_err)?;
        Ok(Response::new(wire))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel, date = %request.get_ref().date))]
    async fn run_reconciliation_file(
        &self,
        request: Request<pb::RunReconciliationFileRequest>,
    ) -> Result<Response<pb::ReconciliationRun>, Status> {
        let operator = files::operator_of(&request);
        let result = files::upload(&self.engine, operator, request.into_inner())
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
        let run = self
            .load_run(&request.into_inner().run_id)
            .await
            .map_err(grpc_err)?;
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
        let channel = optional_channel(req.channel).map_err(grpc_err)?;
        let limit = limit_of(req.limit).min(100);
        let with_rejected = req.include_rejected;
        let (runs, rejected) = self
            .engine
            .db
            .run(move |conn| {
                let runs = store::list_runs(conn, channel.as_deref(), limit)?;
                let rejected = if with_rejected {
                    store::rejected::list(conn, channel.as_deref(), limit)?
                } else {
                    Vec::new()
                };
                Ok((runs, rejected))
            })
            .await
            .map_err(grpc_err)?;
        let runs = runs
            .iter()
            .map(|r| run_to_wire(r, false, false))
            .collect::<Result<Vec<_>>>()
            .map_err(grpc_err)?;
        let rejected = rejected.iter().map(files::rejected_to_wire).collect();
        Ok(Response::new(pb::ListRunsResponse { runs, rejected }))
    }

    async fn list_discrepancies(
        &self,
        request: Request<pb::ListDiscrepanciesRequest>,
    ) -> Result<Response<pb::ListDiscrepanciesResponse>, Status> {
        let req = request.into_inner();
        let status = match pb::DiscrepancyStatus::try_from(req.status) {
            Ok(pb::DiscrepancyStatus::Unspecified) => None,
            Ok(pb::DiscrepancyStatus::Open) => Some(DiscrepancyStatus::Open),
            Ok(pb::DiscrepancyStatus::Resolving) => Some(DiscrepancyStatus::Resolving),
            Ok(pb::DiscrepancyStatus::Resolved) => Some(DiscrepancyStatus::Resolved),
            Err(_) => return Err(grpc_err(Error::field("status", "unknown status"))),
        };
        let severity = match pb::Severity::try_from(req.severity) {
            Ok(pb::Severity::Unspecified) => None,
            Ok(pb::Severity::Low) => Some(Severity::Low),
            Ok(pb::Severity::Medium) => Some(Severity::Medium),
            Ok(pb::Severity::High) => Some(Severity::High),
            Err(_) => return Err(grpc_err(Error::field("severity", "unknown severity"))),
        };
        let channel = optional_channel(req.channel).map_err(grpc_err)?;
        let after = if req.after.is_empty() {
            None
        } else {
            let d = self
                .engine
                .get_discrepancy(&req.after)
                .await
                .map_err(grpc_err)?;
            Some((d.created_at_ms, d.discrepancy_id))
        };
        let filter = store::DiscrepancyFilter {
            status,
            channel,
            severity,
            date: None,
            after,
        };
        let limit = limit_of(req.limit);
        let list = self
            .engine
            .db
            .run(move |conn| store::list_discrepancies(conn, &filter, limit))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListDiscrepanciesResponse {
            discrepancies: list.iter().map(discrepancy_to_wire).collect(),
        }))
    }

    async fn get_discrepancy(
        &self,
        request: Request<pb::GetDiscrepancyRequest>,
    ) -> Result<Response<pb::Discrepancy>, Status> {
        let d = self
            .engine
            .get_discrepancy(&request.into_inner().discrepancy_id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(discrepancy_to_wire(&d)))
    }

    #[tracing::instrument(skip_all, fields(discrepancy_id = %request.get_ref().discrepancy_id))]
    async fn resolve_discrepancy(
        &self,
        request: Request<pb::ResolveDiscrepancyRequest>,
    ) -> Result<Response<pb::Discrepancy>, Status> {
        proposals::propose(&self.engine, &self.desk, request).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = request.into_inner();
        let subject = optional_channel(req.subject_id).map_err(grpc_err)?;
        let limit = limit_of(req.limit);
        let entries = self
            .engine
            .db
            .run(move |conn| store::list_audit(conn, subject.as_deref(), limit))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    audit_id: e.audit_id,
                    subject_kind: e.subject_kind,
                    subject_id: e.subject_id,
                    action: e.action,
                    operator: e.operator,
                    reason: e.reason,
                    before: e.before_state,
                    after: e.after_state,
                    at_ms: e.at_ms,
                })
                .collect(),
        }))
    }

    async fn list_suspense(
        &self,
        request: Request<pb::ListSuspenseRequest>,
    ) -> Result<Response<pb::ListSuspenseResponse>, Status> {
        let req = request.into_inner();
        let channel = optional_channel(req.channel).map_err(grpc_err)?;
        let status = if req.status.is_empty() {
            None
        } else {
            Some(SuspenseStatus::parse(&req.status).ok_or_else(|| {
                grpc_err(Error::field("status", "expected OPEN, CLEARED or EXPIRED"))
            })?)
        };
        let limit = limit_of(req.limit);
        let entries = self
            .engine
            .db
            .run(move |conn| store::list_suspense(conn, channel.as_deref(), status, limit))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListSuspenseResponse {
            entries: entries.iter().map(suspense_to_wire).collect(),
        }))
    }

    async fn daily_summary(
        &self,
        request: Request<pb::DailySummaryRequest>,
    ) -> Result<Response<pb::DailySummaryResponse>, Status> {
        let req = request.into_inner();
        validate_external_id(&req.channel, "channel").map_err(grpc_err)?;
        let date = parse_business_date(&req.date, "date").map_err(grpc_err)?;
        let run = self
            .current_run(&req.channel, date)
            .await
            .map_err(grpc_err)?;
        let c = req.channel.clone();
        let (run_ids, open, suspense) = self
            .engine
            .db
            .run(move |conn| {
                Ok((
                    store::run_ids_for_date(conn, &c, date)?,
                    store::count_unresolved_discrepancies(conn, &c, date)?,
                    store::count_open_suspense(conn, &c)?,
                ))
            })
            .await
            .map_err(grpc_err)?;
        let mut out = pb::DailySummaryResponse {
            channel: req.channel,
            date: req.date,
            open_discrepancies: u32::try_from(open).unwrap_or(u32::MAX),
            in_suspense: u32::try_from(suspense).unwrap_or(u32::MAX),
            run_ids,
            ..Default::default()
        };
        if let Some(run) = run {
            out.run_id = run.run_id.clone();
            out.counts = counts_to_wire(&run).map_err(grpc_err)?;
            out.file_rows = run.file_rows;
            out.written_back = crate::engine::written_back(&run.items);
            out.pending_write_backs = run.pending_write_backs();
        }
        Ok(Response::new(out))
    }

    async fn export_report(
        &self,
        request: Request<pb::ExportReportRequest>,
    ) -> Result<Response<pb::ExportReportResponse>, Status> {
        let req = request.into_inner();
        let format = ReportFormat::parse(&req.format).map_err(grpc_err)?;
        let run = if !req.run_id.is_empty() {
            self.load_run(&req.run_id).await.map_err(grpc_err)?
        } else {
            validate_external_id(&req.channel, "channel").map_err(grpc_err)?;
            let date = parse_business_date(&req.date, "date").map_err(grpc_err)?;
            self.current_run(&req.channel, date)
                .await
                .map_err(grpc_err)?
                .ok_or_else(|| {
                    grpc_err(Error::new(
                        ErrorCode::NotFound,
                        format!("no reconciliation run for {} {}", req.channel, req.date),
                    ))
                })?
        };
        let content = tokio::task::spawn_blocking(move || {
            let bytes = match format {
                ReportFormat::Csv => report::to_csv(&run),
                ReportFormat::Xlsx => report::to_xlsx(&run),
            }?;
            Ok::<_, Error>((report::file_name(&run, format), bytes))
        })
        .await
        .map_err(|e| grpc_err(Error::internal(format!("report task failed: {e}"))))?
        .map_err(grpc_err)?;
        Ok(Response::new(pb::ExportReportResponse {
            file_name: content.0,
            content_type: format.content_type().to_string(),
            content: content.1,
        }))
    }
}
