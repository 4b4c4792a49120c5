//! The bank simulator as a gRPC service (`tuikuan.bank.v1.BankService`): configuration, `serve`,
//! and wire <-> domain conversions (validated on receipt).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tuikuan_kernel::{Error, Money, SharedClock};
use tuikuan_proto::bank::v1 as pb;
use tuikuan_proto::bank::v1::bank_service_server::{BankService, BankServiceServer};
use tuikuan_proto::status::grpc_err;

use crate::connector::settings::ChannelSettings;
use crate::domain::{
    parse_date, BankConnector, BankTx, FileBatchSubmission, FileRowSubmission, PayoutSubmission,
    RefundSubmission, SimParams, SubmitOutcome, TxKind, TxStatus, MAX_FILE_ROWS,
};
use crate::live::state::{LiveRefund, LiveStatus};
use crate::live::{LiveChannel, LiveChannels};
use crate::simulator::Simulator;

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// The bank simulator's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The seed of every decision: same seed, same ids, same clock steps => same results.
    pub seed: u64,
    /// Delay between acceptance and completion, drawn per transaction in `[min, max]` (default 60).
    pub delay_min_secs: u64,
    /// Default 7200.
    pub delay_max_secs: u64,
    /// Accepted transactions that fail (default 100 per mille).
    pub fail_per_mille: u32,
    /// Final callbacks sent twice (default 100).
    pub duplicate_callback_per_mille: u32,
    /// Final callbacks followed by a stale sequence-1 "processing" one (default 100).
    pub out_of_order_per_mille: u32,
    /// Submissions refused synchronously at random (default 0).
    pub sync_reject_per_mille: u32,
    /// Paid payouts the bank returns later (退票, default 0).
    pub return_per_mille: u32,
    /// How long after payment a return happens (default 3600).
    pub return_delay_secs: u64,
    /// The refund center (`RefundService.BankCallback`); `None` keeps refund callbacks waiting.
    pub refund_callback_addr: Option<String>,
    /// The payout center (`PayoutService.BankCallback`); `None` keeps payout callbacks waiting.
    pub payout_callback_addr: Option<String>,
    /// If set, every clearing file served is also written to `<dir>/<channel>/<YYYY-MM-DD>.<ext>`.
    pub clearing_dir: Option<PathBuf>,
    /// channel → the layout of its clearing files (`csv`, `wechat`, `wechat-legacy`, `unionpay`,
    /// `alipay`; see [`crate::layouts`]); channels not listed get `csv`.
    pub clearing_formats: std::collections::HashMap<String, String>,
    /// Period of the tick loop; `None` runs ticks only through the `Tick` RPC.
    pub job_interval: Option<Duration>,
    /// Channels served by a real connector (WeChat Pay, Alipay); every other channel is the
    /// simulator's.
    pub channels: BTreeMap<String, ChannelSettings>,
    /// The public base URL of the notification listener (`https://host/bank`): a channel without
    /// its own `notify_url` is notified at `<base>/notify/<CHANNEL>`.
    pub notify_base_url: Option<String>,
    /// How soon an open refund at a real channel is first queried (then less often as it ages).
    pub channel_query_interval_secs: u64,
    /// Mutual TLS as `bank` (or plaintext, only when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows). Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
}

impl Config {
    /// The defaults: seed 0, delays 60..=7200 s, 10% failures, 10% duplicate and 10% out-of-order
    /// callbacks, no synchronous rejections, no returns, no callback receivers, no clearing
    /// directory, no job loop.
    pub fn default_for(
        database_url: impl Into<String>,
        clock: SharedClock,
        transport: tuikuan_proto::tls::Transport,
    ) -> Config {
        let p = SimParams::default();
        Config {
            database_url: database_url.into(),
            clock,
            seed: p.seed,
            delay_min_secs: p.delay_min_secs,
            delay_max_secs: p.delay_max_secs,
            fail_per_mille: p.fail_per_mille,
            duplicate_callback_per_mille: p.duplicate_callback_per_mille,
            out_of_order_per_mille: p.out_of_order_per_mille,
            sync_reject_per_mille: p.sync_reject_per_mille,
            return_per_mille: p.return_per_mille,
            return_delay_secs: p.return_delay_secs,
            refund_callback_addr: None,
            payout_callback_addr: None,
            clearing_dir: None,
            clearing_formats: Default::default(),
            job_interval: None,
            channels: BTreeMap::new(),
            notify_base_url: None,
            channel_query_interval_secs: 60,
            transport,
            staff: tuikuan_auth::StaffConfig::default(),
        }
    }

    /// The same configuration with staff security.
    pub fn with_staff(mut self, staff: tuikuan_auth::StaffConfig) -> Config {
        self.staff = staff;
        self
    }

    pub fn sim_params(&self) -> SimParams {
        SimParams {
            seed: self.seed,
            delay_min_secs: self.delay_min_secs,
            delay_max_secs: self.delay_max_secs,
            fail_per_mille: self.fail_per_mille,
            duplicate_callback_per_mille: self.duplicate_callback_per_mille,
            out_of_order_per_mille: self.out_of_order_per_mille,
            sync_reject_per_mille: self.sync_reject_per_mille,
            return_per_mille: self.return_per_mille,
            return_delay_secs: self.return_delay_secs,
        }
    }

    /// Opens (and migrates) the database and builds the simulator.
    pub fn open(&self) -> Result<Simulator, tuikuan_kernel::Error> {
        Ok(self.open_bank()?.0)
    }

    /// The simulator and the real channels, over one migrated database. Loads every channel's
    /// keys: a missing or malformed key stops startup, naming the channel and the setting.
    pub fn open_bank(&self) -> Result<(Simulator, LiveChannels), tuikuan_kernel::Error> {
        let mut layouts = std::collections::HashMap::new();
        for (channel, layout) in &self.clearing_formats {
            crate::domain::validate_channel(channel)?;
            layouts.insert(channel.clone(), crate::layouts::Layout::parse(layout)?);
        }
        let db = tuikuan_db::Db::connect(&self.database_url, 8)?;
        db.migrate(MIGRATIONS)?;
        let mut live = BTreeMap::new();
        for (code, settings) in &self.channels {
            crate::domain::validate_channel(code)?;
            let Some(connector) = settings.build(code, self.clock.clone())? else {
                continue;
            };
            let notify_url = match (settings.notify_url(), &self.notify_base_url) {
                (Some(url), _) => url.to_string(),
                (None, Some(base)) => format!("{}/notify/{code}", base.trim_end_matches('/')),
                (None, None) => String::new(),
            };
            tracing::info!(channel = %code, connector = connector.kind(), %notify_url, "real channel configured");
            live.insert(
                code.clone(),
                LiveChannel {
                    connector,
                    notify_url,
                },
            );
        }
        let live = LiveChannels::new(
            db.clone(),
            self.clock.clone(),
            live,
            i64::try_from(self.channel_query_interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            self.clearing_dir.clone(),
        );
        let sim = Simulator::new(
            db,
            self.clock.clone(),
            self.sim_params(),
            self.refund_callback_addr.as_deref(),
            self.payout_callback_addr.as_deref(),
            self.clearing_dir.clone(),
            &self.transport,
        )?
        .with_layouts(layouts);
        Ok((sim, live))
    }
}

/// Serves the bank subsystem on `listener` until `shutdown` resolves, with its tick loop if
/// `config.job_interval` is set. Real channels take no notifications without a listener: see
/// [`serve_with_notifications`].
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tuikuan_kernel::Error> {
    serve_with_notifications(config, listener, None, shutdown).await
}

/// Serves the bank subsystem (gRPC on `listener`) and, on `notify_listener`, the HTTP listener
/// where real channels post their notifications (`POST /notify/<CHANNEL>`).
pub async fn serve_with_notifications(
    config: Config,
    listener: TcpListener,
    notify_listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tuikuan_kernel::Error> {
    use futures::FutureExt;
    let (sim, live) = config.open_bank()?;
    let desk = config.staff.desk("bank", sim.db(), config.clock.clone())?;
    let auth = &config.staff.auth;
    let svc = BankSvc {
        sim: Arc::new(sim),
        live: Arc::new(live),
    };
    let shutdown = shutdown.boxed().shared();
    // Runs inside this future (not spawned), so that a killed bank takes its listener with it.
    let notify = {
        let (live, stop) = (svc.live.clone(), shutdown.clone());
        async move {
            if let Some(l) = notify_listener {
                if let Err(e) = crate::live::notify::serve(live, l, stop).await {
                    tracing::error!(error = %e, "notification listener stopped");
                }
            }
        }
    };
    let job = config.job_interval.map(|every| {
        let svc = svc.clone();
        tuikuan_proto::jobs::every("bank tick", every, move || {
            let svc = svc.clone();
            async move {
                if let Err(e) = svc.run_tick().await {
                    tracing::error!(code = %e.code, error = %e.message, "bank tick failed")
                }
            }
        })
    });
    let grpc = tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        tonic::service::Routes::new(auth.guard_audited(BankServiceServer::new(svc), &desk))
            .add_service(
                tuikuan_auth::StaffServer::new(desk, tuikuan_auth::NoProposals).guarded(auth),
            ),
        &[
            <BankServiceServer<BankSvc> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    );
    let (result, ()) = tokio::join!(grpc, notify);
    tuikuan_proto::jobs::stop(job).await;
    result
}

/// The gRPC face of the bank subsystem: the simulator, and the real channels' books.
#[derive(Debug, Clone)]
pub struct BankSvc {
    sim: Arc<Simulator>,
    live: Arc<LiveChannels>,
}

impl BankSvc {
    pub fn new(sim: Arc<Simulator>, live: Arc<LiveChannels>) -> BankSvc {
        BankSvc { sim, live }
    }

    /// One tick: ask the real channels about open refunds, then the simulator's work loop, which
    /// also delivers every pending callback (the simulator's and the real channels').
    pub async fn run_tick(&self) -> Result<crate::simulator::TickReport, Error> {
        let polled = self.live.poll().await?;
        let r = self.sim.tick().await?;
        if r.completed + r.returned + r.callbacks_sent + r.callbacks_failed + polled.asked > 0 {
            tracing::info!(?r, ?polled, "bank tick");
        }
        Ok(r)
    }
}

/// A real channel's refund on the wire.
fn live_to_wire(r: LiveRefund) -> pb::BankTransaction {
    let status = match r.status {
        // Sent; the outcome is not known or not final: the bank has (or may have) it.
        LiveStatus::Pending | LiveStatus::Accepted => pb::TxStatus::TxAccepted,
        LiveStatus::Succeeded => pb::TxStatus::TxSucceeded,
        LiveStatus::Failed => pb::TxStatus::TxFailed,
        LiveStatus::Rejected => pb::TxStatus::TxRejected,
    };
    pb::BankTransaction {
        id: r.reference.clone(),
        bank_ref: r.channel_ref,
        channel: r.channel,
        amount: r.amount.amount_string(),
        currency: r.amount.currency().code().to_string(),
        status: status as i32,
        reason: r.reason,
        submitted_at_ms: r.submitted_at_ms,
        completed_at_ms: r.completed_at_ms.unwrap_or(0),
        kind: pb::TxKind::Refund as i32,
        refund_id: r.reference,
        batch_id: String::new(),
        returned_at_ms: 0,
    }
}

fn submit_response(o: SubmitOutcome) -> pb::SubmitResponse {
    pb::SubmitResponse {
        accepted: o.accepted,
        bank_ref: o.bank_ref,
        reason: o.reason,
    }
}

fn tx_to_wire(t: BankTx) -> pb::BankTransaction {
    let status = match t.status {
        TxStatus::Accepted => pb::TxStatus::TxAccepted,
        TxStatus::Succeeded => pb::TxStatus::TxSucceeded,
        TxStatus::Failed => pb::TxStatus::TxFailed,
        // Refused synchronously: nothing happened at the bank.
        TxStatus::Rejected => pb::TxStatus::TxRejected,
        TxStatus::Returned => pb::TxStatus::TxReturned,
    };
    pb::BankTransaction {
        id: t.id,
        bank_ref: t.bank_ref,
        channel: t.channel,
        amount: t.amount.amount_string(),
        currency: t.amount.currency().code().to_string(),
        status: status as i32,
        reason: t.reason,
        submitted_at_ms: t.submitted_at_ms,
        completed_at_ms: t.completed_at_ms.unwrap_or(0),
        kind: kind_to_wire(t.kind) as i32,
        refund_id: t.refund_id,
        batch_id: t.batch_id,
        returned_at_ms: t.returned_at_ms.unwrap_or(0),
    }
}

fn kind_to_wire(k: TxKind) -> pb::TxKind {
    match k {
        TxKind::Refund => pb::TxKind::Refund,
        TxKind::Payout => pb::TxKind::Payout,
        TxKind::File => pb::TxKind::File,
    }
}

/// Wire kind -> domain; UNSPECIFIED is "any kind".
fn kind_from_wire(v: i32) -> Result<Option<TxKind>, Error> {
    match pb::TxKind::try_from(v) {
        Ok(pb::TxKind::Unspecified) => Ok(None),
        Ok(pb::TxKind::Refund) => Ok(Some(TxKind::Refund)),
        Ok(pb::TxKind::Payout) => Ok(Some(TxKind::Payout)),
        Ok(pb::TxKind::File) => Ok(Some(TxKind::File)),
        Err(_) => Err(Error::field(
            "kind",
            format!("{v} is not a transaction kind"),
        )),
    }
}

/// Default and largest page of `ListTransactions`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

fn file_batch_from_wire(r: pb::SubmitFileBatchRequest) -> Result<FileBatchSubmission, Error> {
    if r.rows.len() > MAX_FILE_ROWS {
        return Err(Error::field(
            "rows",
            format!("at most {MAX_FILE_ROWS} rows per batch"),
        ));
    }
    let rows = r
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let amount = Money::parse(&row.amount, &row.currency, &format!("rows[{i}].amount"))?;
            FileRowSubmission::new(
                i,
                &row.row_id,
                &row.refund_id,
                amount,
                &row.card_no,
                &row.holder_name,
            )
        })
        .collect::<Result<Vec<_>, Error>>()?;
    FileBatchSubmission::new(&r.channel, &r.batch_id, &r.method, rows)
}

#[tonic::async_trait]
impl BankService for BankSvc {
    #[tracing::instrument(skip_all, fields(batch_id = %request.get_ref().batch_id, rows = request.get_ref().rows.len()))]
    async fn submit_file_batch(
        &self,
        request: Request<pb::SubmitFileBatchRequest>,
    ) -> Result<Response<pb::SubmitFileBatchResponse>, Status> {
        let r = request.into_inner();
        let batch = file_batch_from_wire(r).map_err(grpc_err)?;
        let out = self.sim.submit_file_batch(batch).await.map_err(grpc_err)?;
        Ok(Response::new(pb::SubmitFileBatchResponse {
            accepted: out.accepted,
            rejected: out.rejected,
        }))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn submit_refund(
        &self,
        request: Request<pb::SubmitRefundRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let r = request.into_inner();
        let amount = Money::parse(&r.amount, &r.currency, "amount").map_err(grpc_err)?;
        let s = RefundSubmission::new(&r.channel, &r.refund_id, &r.original_trade_id, amount)
            .map_err(grpc_err)?;
        let out = if self.live.has(&s.channel) {
            self.live.submit_refund(s).await
        } else {
            self.sim.submit_refund(s).await
        }
        .map_err(grpc_err)?;
        Ok(Response::new(submit_response(out)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().id))]
    async fn query_refund(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::BankTransaction>, Status> {
        let id = request.into_inner().id;
        tuikuan_kernel::id::validate_external_id(&id, "id").map_err(grpc_err)?;
        if let Some(r) = self.live.query(&id).await.map_err(grpc_err)? {
            return Ok(Response::new(live_to_wire(r)));
        }
        let tx = self
            .sim
            .query(TxKind::Refund, &id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(tx_to_wire(tx)))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn submit_payout(
        &self,
        request: Request<pb::SubmitPayoutRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let r = request.into_inner();
        let amount = Money::parse(&r.amount, &r.currency, "amount").map_err(grpc_err)?;
        let s = PayoutSubmission::new(&r.channel, &r.payout_id, &r.card_no, &r.holder_name, amount)
            .and_then(|s| s.with_refund_id(&r.refund_id))
            .map_err(grpc_err)?;
        let out = self.sim.submit_payout(s).await.map_err(grpc_err)?;
        Ok(Response::new(submit_response(out)))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().id))]
    async fn query_payout(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::BankTransaction>, Status> {
        let id = request.into_inner().id;
        tuikuan_kernel::id::validate_external_id(&id, "id").map_err(grpc_err)?;
        let tx = self
            .sim
            .query(TxKind::Payout, &id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(tx_to_wire(tx)))
    }

    #[tracing::instrument(skip_all)]
    async fn tick(
        &self,
        _request: Request<pb::TickRequest>,
    ) -> Result<Response<pb::TickResponse>, Status> {
        let r = self.run_tick().await.map_err(grpc_err)?;
        Ok(Response::new(pb::TickResponse {
            completed: r.completed,
            callbacks_sent: r.callbacks_sent,
            callbacks_failed: r.callbacks_failed,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let r = request.into_inner();
        let kind = kind_from_wire(r.kind).map_err(grpc_err)?;
        let after = match r.after.as_str() {
            "" => None,
            a => {
                tuikuan_kernel::id::validate_external_id(a, "after").map_err(grpc_err)?;
                Some(a.to_string())
            }
        };
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let txs = self
            .sim
            .list(kind, after.clone(), i64::from(limit))
            .await
            .map_err(grpc_err)?;
        let mut all: Vec<pb::BankTransaction> = txs.into_iter().map(tx_to_wire).collect();
        if matches!(kind, None | Some(TxKind::Refund)) {
            let live = self
                .live
                .list(after, i64::from(limit))
                .await
                .map_err(grpc_err)?;
            all.extend(live.into_iter().map(live_to_wire));
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all.truncate(limit as usize);
        }
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: all,
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel, date = %request.get_ref().date))]
    async fn get_statement(
        &self,
        request: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::Statement>, Status> {
        let r = request.into_inner();
        let date = parse_date(&r.date, "date").map_err(grpc_err)?;
        if self.live.has(&r.channel) {
            return Err(grpc_err(tuikuan_kernel::Error::field(
                "channel",
                "a live channel's statement comes from its bank; give the report the bank's file",
            )));
        }
        let content = self
            .sim
            .build_statement(&r.channel, date)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::Statement {
            channel: r.channel,
            date: r.date,
            format: tuikuan_kernel::statement::FORMAT.to_string(),
            content: content.into_bytes(),
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel, date = %request.get_ref().date))]
    async fn get_clearing_file(
        &self,
        request: Request<pb::GetClearingFileRequest>,
    ) -> Result<Response<pb::ClearingFile>, Status> {
        let r = request.into_inner();
        let date = parse_date(&r.date, "date").map_err(grpc_err)?;
        let f = if self.live.has(&r.channel) {
            self.live.clearing_file(&r.channel, date).await
        } else {
            self.sim.clearing_file(&r.channel, date).await
        }
        .map_err(grpc_err)?;
        Ok(Response::new(pb::ClearingFile {
            channel: f.channel,
            date: f.date.format("%Y-%m-%d").to_string(),
            format: f.format,
            content: f.content,
            sha256: f.sha256,
        }))
    }
}
