//! The refund center's gRPC face: [`serve`], the `RefundService` implementation, wire ↔ domain
//! conversions (validated on receipt) and the typed clients of its peers (clearing, bank,
//! business).
//!
//! The work itself lives in [`RefundCenter`]'s methods; the RPC handlers and the periodic job loop
//! call the same functions.

use std::time::Duration;

use chrono::NaiveDate;
use tonic::transport::Channel as Transport;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as business;
use tuikuan_proto::clearing::v1 as clearing;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use bank::bank_service_client::BankServiceClient;
use business::business_admin_service_client::BusinessAdminServiceClient;
use clearing::clearing_service_client::ClearingServiceClient;
use pb::refund_service_server::{RefundService, RefundServiceServer};

use crate::domain::{
    self, plan_method, validate_text, BankEvent, BankStatus, Channel, ChannelKind, CycleCounts,
    FinalStatus, NewRefund, OutboxCounts, OutboxStep, Outcome, RefundMethod, RefundOrder,
    RefundStatus, SubmitStatus, DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
};
use crate::store::{self, Inserted, RefundFilter};

/// The refund center's embedded migrations ([`serve`] runs them).
pub const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// The interface cycle's and outbox run's batch when the caller gives none.
pub const DEFAULT_BATCH_SIZE: u32 = 200;
/// The page size of list RPCs when the caller gives none.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// The largest page of list RPCs and the largest cycle batch.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// How often a transition is retried when concurrent writers keep moving the order.
const TRANSITION_ATTEMPTS: usize = 8;

/// How to run the refund center.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The clearing center (`http://host:port`).
    pub clearing_addr: String,
    /// The bank subsystem.
    pub bank_addr: String,
    /// The business layer (BusinessAdminService).
    pub business_addr: String,
    /// Run the interface cycle and the outbox every this often; `None`: only by admin RPC.
    pub job_interval: Option<Duration>,
    /// Orders per interface cycle and refunds per outbox run.
    pub batch_size: u32,
}

impl Config {
    /// A configuration with no job loop and the default batch size.
    pub fn new(
        database_url: impl Into<String>,
        clock: SharedClock,
        clearing_addr: impl Into<String>,
        bank_addr: impl Into<String>,
        business_addr: impl Into<String>,
    ) -> Config {
        Config {
            database_url: database_url.into(),
            clock,
            clearing_addr: clearing_addr.into(),
            bank_addr: bank_addr.into(),
            business_addr: business_addr.into(),
            job_interval: None,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// Runs the refund center on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let center = RefundCenter::new(db, &config)?;
    let job = config.job_interval.map(|every| {
        let center = center.clone();
        tokio::spawn(async move { center.job_loop(every).await })
    });
    let result = tuikuan_proto::server::serve(
        listener,
        tonic::service::Routes::new(RefundServiceServer::new(center)),
        &[<RefundServiceServer<RefundCenter> as tonic::server::NamedService>::NAME],
        shutdown,
    )
    .await;
    if let Some(job) = job {
        job.abort();
    }
    result
}

/// The refund center: storage, clock and peers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RefundCenter {
    db: Db,
    clock: SharedClock,
    clearing: ClearingServiceClient<Transport>,
    bank: BankServiceClient<Transport>,
    business: BusinessAdminServiceClient<Transport>,
    batch_size: u32,
}

impl RefundCenter {
    /// Builds the center on an open, migrated database. Peers are connected lazily.
    pub fn new(db: Db, config: &Config) -> Result<RefundCenter> {
        Ok(RefundCenter {
            db,
            clock: config.clock.clone(),
            clearing: ClearingServiceClient::new(tuikuan_proto::client::channel(
                &config.clearing_addr,
            )?),
            bank: BankServiceClient::new(tuikuan_proto::client::channel(&config.bank_addr)?),
            business: BusinessAdminServiceClient::new(tuikuan_proto::client::channel(
                &config.business_addr,
            )?),
            batch_size: config.batch_size.clamp(1, MAX_LIST_LIMIT),
        })
    }

    async fn job_loop(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.run_interface_cycle(0).await {
                tracing::warn!(code = %e.code, error = %e.message, "interface cycle failed");
            }
            if let Err(e) = self.run_outbox().await {
                tracing::warn!(code = %e.code, error = %e.message, "outbox run failed");
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Acceptance

    /// Accepts a refund whose debit succeeded. Idempotent by refund id.
    pub async fn create_refund(&self, request: NewRefund) -> Result<RefundOrder> {
        request.validate()?;
        let fingerprint = request.fingerprint();
        let id = request.refund_id.clone();
        if let Some(existing) = self.db.run(move |c| store::get_refund(c, &id)).await? {
            return same_request(existing, &fingerprint);
        }
        let code = request.channel.clone();
        let channel = self
            .db
            .run(move |c| store::get_channel(c, &code))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ChannelNotFound,
                    format!("channel {} is not configured", request.channel),
                )
            })?;
        self.verify_debit(&request).await?;
        let now_ms = self.clock.now_ms();
        let plan = plan_method(&channel, request.trade_paid_at_ms, now_ms)?;
        let order = RefundOrder::accept(request, plan, now_ms);
        let to_insert = order.clone();
        match self
            .db
            .run(move |c| store::insert_refund(c, &to_insert))
            .await?
        {
            Inserted::New => {
                tracing::info!(
                    refund_id = %order.refund_id,
                    method = %order.method,
                    waiting = order.waiting_manual,
                    "refund accepted"
                );
                Ok(order)
            }
            // A concurrent request with the same refund id won the insert.
            Inserted::Exists(existing) => same_request(*existing, &fingerprint),
        }
    }

    /// The clearing center must hold an active (DEBITED) debit of exactly this refund.
    async fn verify_debit(&self, request: &NewRefund) -> Result<()> {
        let debit = self
            .clearing
            .clone()
            .get_debit(clearing::GetDebitRequest {
                refund_id: request.refund_id.clone(),
            })
            .await
            .map_err(peer_err)?
            .into_inner();
        let not_active = |why: String| {
            Error::new(
                ErrorCode::DebitNotActive,
                format!("debit of refund {}: {why}", request.refund_id),
            )
        };
        let status = clearing::DebitStatus::try_from(debit.status)
            .unwrap_or(clearing::DebitStatus::Unspecified);
        if status != clearing::DebitStatus::Debited {
            return Err(not_active(format!(
                "status is {}, not DEBITED",
                status.as_str_name()
            )));
        }
        let amount = Money::parse(&debit.amount, &debit.currency, "debit.amount")
            .map_err(|e| not_active(format!("unreadable amount: {}", e.message)))?;
        if amount != request.amount {
            return Err(not_active(format!(
                "debited {amount}, but the refund is {}",
                request.amount
            )));
        }
        if debit.trade_id != request.trade_id || debit.merchant_id != request.merchant_id {
            return Err(not_active(format!(
                "it belongs to trade {} of merchant {}, not trade {} of merchant {}",
                debit.trade_id, debit.merchant_id, request.trade_id, request.merchant_id
            )));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Transitions

    /// Reads an order, applies `change` (which says whether it changed anything) and writes it
    /// back with a guard on the state it was read in; re-reads and retries when a concurrent
    /// writer moved it first. Returns the order as stored afterwards and whether it changed.
    async fn transition<F>(&self, refund_id: &str, change: F) -> Result<(RefundOrder, bool)>
    where
        F: Fn(&mut RefundOrder) -> Result<bool> + Send + 'static,
    {
        let id = refund_id.to_string();
        self.db
            .run(move |conn| {
                for _ in 0..TRANSITION_ATTEMPTS {
                    let before = store::get_refund(conn, &id)?.ok_or_else(|| not_found(&id))?;
                    let mut after = before.clone();
                    if !change(&mut after)? {
                        return Ok((before, false));
                    }
                    if store::save_transition(conn, &before, &after)? {
                        return Ok((after, true));
                    }
                }
                Err(Error::unavailable(format!(
                    "refund {id} keeps changing concurrently; retry"
                )))
            })
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Interface cycle

    /// Sends due interface orders to the bank (at most `limit`, 0 = the configured batch).
    pub async fn run_interface_cycle(&self, limit: u32) -> Result<CycleCounts> {
        let limit = if limit == 0 {
            self.batch_size
        } else {
            limit.min(MAX_LIST_LIMIT)
        };
        let due = self
            .db
            .run(move |c| store::due_interface(c, i64::from(limit)))
            .await?;
        let mut counts = CycleCounts::default();
        for order in due {
            if !order.is_due_for_interface() {
                continue;
            }
            counts.sent += 1;
            self.submit_one(&order, &mut counts).await?;
        }
        let waiting = self.db.run(store::count_waiting).await?;
        counts.waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        tracing::info!(
            sent = counts.sent,
            accepted = counts.accepted,
            rejected = counts.rejected,
            errors = counts.errors,
            waiting = counts.waiting,
            "interface cycle"
        );
        Ok(counts)
    }

    #[tracing::instrument(skip_all, fields(refund_id = %order.refund_id))]
    async fn submit_one(&self, order: &RefundOrder, counts: &mut CycleCounts) -> Result<()> {
        // The bank is idempotent by refund id: a repeat after a timeout returns the first answer.
        let answer = self
            .bank
            .clone()
            .submit_refund(bank::SubmitRefundRequest {
                channel: order.channel.clone(),
                refund_id: order.refund_id.clone(),
                original_trade_id: order.trade_id.clone(),
                amount: order.amount.amount_string(),
                currency: order.amount.currency().code().to_string(),
            })
            .await
            .map_err(peer_err);
        let answer = match answer {
            Ok(a) => a.into_inner(),
            Err(e) => {
                counts.errors += 1;
                tracing::warn!(code = %e.code, error = %e.message, "bank submission failed; stays pending");
                let note = format!(
                    "last submission to the bank failed ({}: {}); retried next cycle",
                    e.code, e.message
                );
                let id = order.refund_id.clone();
                self.db
                    .run(move |c| store::note_submit_error(c, &id, &note))
                    .await?;
                return Ok(());
            }
        };
        let now_ms = self.clock.now_ms();
        let result = if answer.accepted {
            counts.accepted += 1;
            let bank_ref = answer.bank_ref.clone();
            self.transition(&order.refund_id, move |o| {
                o.submit_accepted(&bank_ref, now_ms).map(|()| true)
            })
            .await
        } else {
            counts.rejected += 1;
            let reason = answer.reason.clone();
            self.transition(&order.refund_id, move |o| {
                o.submit_refused(&reason).map(|()| true)
            })
            .await
        };
        match result {
            Ok((after, _)) => {
                tracing::info!(
                    submit_status = %after.submit_status,
                    bank_ref = %after.bank_ref,
                    "bank answered"
                );
                Ok(())
            }
            // Another runner recorded the bank's (idempotent) answer first.
            Err(e) if e.code == ErrorCode::InvalidStateTransition => {
                tracing::info!(error = %e.message, "order already moved on");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Bank callbacks

    /// Applies a bank callback; `false` when it changed nothing (late, duplicated, out of order,
    /// or the order is final).
    pub async fn bank_callback(&self, refund_id: &str, event: BankEvent) -> Result<bool> {
        let (_, applied) = self
            .transition(refund_id, move |o| Ok(o.apply_bank_event(&event)))
            .await?;
        Ok(applied)
    }

    // -----------------------------------------------------------------------------------------
    // Reconciliation

    /// A channel's orders that reconciliation takes part for `date`: SUBMITTED + PROCESSING and
    /// submitted before the start of the next business date.
    pub async fn list_submitted(
        &self,
        channel: &str,
        date: NaiveDate,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<RefundOrder>> {
        let next = date
            .succ_opt()
            .ok_or_else(|| Error::field("date", "is out of range"))?;
        let before_ms = start_of_business_date(next).timestamp_millis();
        let channel = channel.to_string();
        self.db
            .run(move |c| {
                store::list_submitted(c, &channel, before_ms, after.as_deref(), i64::from(limit))
            })
            .await
    }

    /// Makes an order final and queues its finalisation steps in the same transaction; then tries
    /// to deliver them at once. Idempotent: the same final status again returns the order.
    pub async fn apply_reconciliation(
        &self,
        refund_id: &str,
        status: FinalStatus,
        reason: &str,
        source: &str,
    ) -> Result<RefundOrder> {
        let id = refund_id.to_string();
        let reason = reason.to_string();
        let source = source.to_string();
        let now_ms = self.clock.now_ms();
        let (order, changed) = self
            .db
            .transaction(move |conn| {
                for _ in 0..TRANSITION_ATTEMPTS {
                    let before = store::get_refund(conn, &id)?.ok_or_else(|| not_found(&id))?;
                    let mut after = before.clone();
                    if after.finalize(status, &reason, &source, now_ms)? == Outcome::Unchanged {
                        return Ok((before, false));
                    }
                    // The guard is the state read above: SUBMITTED + PROCESSING.
                    if store::save_transition(conn, &before, &after)? {
                        let steps = domain::OutboxEntry::for_final(&id, status);
                        store::insert_outbox(conn, &steps, now_ms)?;
                        return Ok((after, true));
                    }
                }
                Err(Error::unavailable(format!(
                    "refund {id} keeps changing concurrently; retry"
                )))
            })
            .await?;
        if !changed {
            return Ok(order);
        }
        tracing::info!(refund_id = %order.refund_id, status = %order.refund_status, "refund final");
        // Best effort: whatever fails now stays queued for RunOutbox.
        if let Err(e) = self.deliver(refund_id).await {
            tracing::warn!(refund_id, code = %e.code, error = %e.message, "finalisation steps stay queued");
        }
        let id = refund_id.to_string();
        self.db
            .run(move |c| store::get_refund(c, &id))
            .await?
            .ok_or_else(|| not_found(refund_id))
    }

    // -----------------------------------------------------------------------------------------
    // Outbox

    /// Delivers undelivered finalisation steps of up to one batch of refunds.
    pub async fn run_outbox(&self) -> Result<OutboxCounts> {
        let limit = i64::from(self.batch_size);
        let ids = self
            .db
            .run(move |c| store::refunds_with_pending_steps(c, limit))
            .await?;
        let mut counts = OutboxCounts::default();
        for id in ids {
            match self.deliver(&id).await {
                Ok((delivered, failed)) => {
                    counts.delivered += delivered;
                    counts.failed += failed;
                }
                // One refund's trouble (storage, a broken row) does not hold up the others.
                Err(e) => {
                    counts.failed += 1;
                    tracing::error!(refund_id = %id, code = %e.code, error = %e.message, "outbox delivery failed");
                }
            }
        }
        let remaining = self.db.run(store::count_pending_steps).await?;
        counts.remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
        Ok(counts)
    }

    /// Runs one refund's undelivered steps in order, stopping at the first failure. Returns
    /// (delivered, failed).
    #[tracing::instrument(skip(self))]
    async fn deliver(&self, refund_id: &str) -> Result<(u32, u32)> {
        let id = refund_id.to_string();
        let (order, steps) = self
            .db
            .run(move |c| {
                let order = store::get_refund(c, &id)?.ok_or_else(|| not_found(&id))?;
                let steps = store::outbox_of(c, &id)?;
                Ok((order, steps))
            })
            .await?;
        let Some(final_status) = FinalStatus::from_refund_status(order.refund_status) else {
            return Err(Error::internal(format!(
                "refund {refund_id} has finalisation steps but is not final"
            )));
        };
        let (mut delivered, mut failed) = (0, 0);
        for step in steps.into_iter().filter(|s| !s.done) {
            let result = self.run_step(&order, final_status, step.step).await;
            let now_ms = self.clock.now_ms();
            let error = result
                .as_ref()
                .err()
                .map(|e| format!("{}: {}", e.code, e.message));
            let step_id = step.id.clone();
            let recorded = error.clone();
            self.db
                .run(move |c| store::record_attempt(c, &step_id, recorded.as_deref(), now_ms))
                .await?;
            match error {
                None => {
                    delivered += 1;
                    tracing::info!(step = %step.step, "finalisation step delivered");
                }
                Some(error) => {
                    failed += 1;
                    tracing::warn!(step = %step.step, %error, "finalisation step failed; retried later");
                    break;
                }
            }
        }
        Ok((delivered, failed))
    }

    async fn run_step(
        &self,
        order: &RefundOrder,
        status: FinalStatus,
        step: OutboxStep,
    ) -> Result<()> {
        let refund_id = order.refund_id.clone();
        match step {
            OutboxStep::ClearingComplete => {
                self.clearing
                    .clone()
                    .complete_debit(clearing::CompleteDebitRequest { refund_id })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::ClearingReverse => {
                let reason = if order.reason.is_empty() {
                    "refund failed".to_string()
                } else {
                    order.reason.clone()
                };
                self.clearing
                    .clone()
                    .reverse_debit(clearing::ReverseDebitRequest { refund_id, reason })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::NotifyBusiness => {
                let status = match status {
                    FinalStatus::Succeeded => business::RefundStatus::Succeeded,
                    FinalStatus::Failed => business::RefundStatus::Failed,
                };
                self.business
                    .clone()
                    .report_refund_outcome(business::ReportRefundOutcomeRequest {
                        refund_id,
                        status: status as i32,
                        reason: order.reason.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(peer_err)?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Queries and configuration

    pub async fn get_refund(&self, refund_id: &str) -> Result<RefundOrder> {
        let id = refund_id.to_string();
        self.db
            .run(move |c| store::get_refund(c, &id))
            .await?
            .ok_or_else(|| not_found(refund_id))
    }

    pub async fn list_refunds(&self, filter: RefundFilter) -> Result<Vec<RefundOrder>> {
        self.db.run(move |c| store::list_refunds(c, &filter)).await
    }

    pub async fn upsert_channel(&self, channel: Channel) -> Result<Channel> {
        let now_ms = self.clock.now_ms();
        self.db
            .run(move |c| store::upsert_channel(c, &channel, now_ms))
            .await
    }

    pub async fn list_channels(&self) -> Result<Vec<Channel>> {
        self.db.run(store::list_channels).await
    }
}

fn not_found(refund_id: &str) -> Error {
    Error::new(
        ErrorCode::RefundNotFound,
        format!("refund {refund_id} does not exist"),
    )
}

/// An existing order answers a repeated request only when the content is the same.
fn same_request(existing: RefundOrder, fingerprint: &str) -> Result<RefundOrder> {
    if existing.fingerprint == fingerprint {
        Ok(existing)
    } else {
        Err(Error::new(
            ErrorCode::IdempotencyConflict,
            format!(
                "refund {} was already requested with different content",
                existing.refund_id
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Wire conversions

fn kind_from_wire(v: i32) -> Result<ChannelKind> {
    match pb::ChannelKind::try_from(v) {
        Ok(pb::ChannelKind::NetBanking) => Ok(ChannelKind::NetBanking),
        Ok(pb::ChannelKind::Aggregated) => Ok(ChannelKind::Aggregated),
        Ok(pb::ChannelKind::QuickPay) => Ok(ChannelKind::QuickPay),
        Ok(pb::ChannelKind::Withholding) => Ok(ChannelKind::Withholding),
        Ok(pb::ChannelKind::Unionpay) => Ok(ChannelKind::UnionPay),
        Ok(pb::ChannelKind::Unspecified) => Err(Error::field("kind", "is required")),
        Err(_) => Err(Error::field("kind", format!("unknown value {v}"))),
    }
}

fn kind_to_wire(k: ChannelKind) -> pb::ChannelKind {
    match k {
        ChannelKind::NetBanking => pb::ChannelKind::NetBanking,
        ChannelKind::Aggregated => pb::ChannelKind::Aggregated,
        ChannelKind::QuickPay => pb::ChannelKind::QuickPay,
        ChannelKind::Withholding => pb::ChannelKind::Withholding,
        ChannelKind::UnionPay => pb::ChannelKind::Unionpay,
    }
}

fn method_from_wire(v: i32) -> Result<RefundMethod> {
    match pb::RefundMethod::try_from(v) {
        Ok(pb::RefundMethod::Interface) => Ok(RefundMethod::Interface),
        Ok(pb::RefundMethod::Payout) => Ok(RefundMethod::Payout),
        Ok(pb::RefundMethod::FileUpload) => Ok(RefundMethod::FileUpload),
        Ok(pb::RefundMethod::Offline) => Ok(RefundMethod::Offline),
        Ok(pb::RefundMethod::Unspecified) => Err(Error::field(
            "methods",
            "REFUND_METHOD_UNSPECIFIED is not a method",
        )),
        Err(_) => Err(Error::field("methods", format!("unknown value {v}"))),
    }
}

fn method_to_wire(m: RefundMethod) -> pb::RefundMethod {
    match m {
        RefundMethod::Interface => pb::RefundMethod::Interface,
        RefundMethod::Payout => pb::RefundMethod::Payout,
        RefundMethod::FileUpload => pb::RefundMethod::FileUpload,
        RefundMethod::Offline => pb::RefundMethod::Offline,
    }
}

fn submit_to_wire(s: SubmitStatus) -> pb::SubmitStatus {
    match s {
        SubmitStatus::Pending => pb::SubmitStatus::Pending,
        SubmitStatus::Submitted => pb::SubmitStatus::Submitted,
        SubmitStatus::SubmitFailed => pb::SubmitStatus::SubmitFailed,
    }
}

fn refund_status_to_wire(s: RefundStatus) -> pb::RefundStatus {
    match s {
        RefundStatus::Processing => pb::RefundStatus::Processing,
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    }
}

fn refund_status_from_wire(v: i32, field: &str) -> Result<Option<RefundStatus>> {
    match pb::RefundStatus::try_from(v) {
        Ok(pb::RefundStatus::Unspecified) => Ok(None),
        Ok(pb::RefundStatus::Processing) => Ok(Some(RefundStatus::Processing)),
        Ok(pb::RefundStatus::Succeeded) => Ok(Some(RefundStatus::Succeeded)),
        Ok(pb::RefundStatus::Failed) => Ok(Some(RefundStatus::Failed)),
        Ok(pb::RefundStatus::Returned) | Err(_) => Err(Error::field(field, format!("unknown value {v}"))),
    }
}

fn bank_status_from_wire(v: i32) -> Result<BankStatus> {
    match pb::BankStatus::try_from(v) {
        Ok(pb::BankStatus::BankAccepted) => Ok(BankStatus::Accepted),
        Ok(pb::BankStatus::BankProcessing) => Ok(BankStatus::Processing),
        Ok(pb::BankStatus::BankSucceeded) => Ok(BankStatus::Succeeded),
        Ok(pb::BankStatus::BankFailed) => Ok(BankStatus::Failed),
        Ok(pb::BankStatus::Unspecified) => Err(Error::field("status", "is required")),
        Err(_) => Err(Error::field("status", format!("unknown value {v}"))),
    }
}

fn bank_status_to_wire(s: Option<BankStatus>) -> pb::BankStatus {
    match s {
        None => pb::BankStatus::Unspecified,
        Some(BankStatus::Accepted) => pb::BankStatus::BankAccepted,
        Some(BankStatus::Processing) => pb::BankStatus::BankProcessing,
        Some(BankStatus::Succeeded) => pb::BankStatus::BankSucceeded,
        Some(BankStatus::Failed) => pb::BankStatus::BankFailed,
    }
}

/// Validates a configured channel received on the wire; a zero window means the default.
fn channel_from_wire(c: pb::Channel) -> Result<Channel> {
    let channel = Channel {
        kind: kind_from_wire(c.kind)?,
        methods: c
            .methods
            .iter()
            .map(|m| method_from_wire(*m))
            .collect::<Result<_>>()?,
        original_route_window_days: if c.original_route_window_days == 0 {
            DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS
        } else {
            c.original_route_window_days
        },
        code: c.code,
        bank_code: c.bank_code,
    };
    channel.validate()?;
    Ok(channel)
}

fn channel_to_wire(c: &Channel) -> pb::Channel {
    pb::Channel {
        code: c.code.clone(),
        kind: kind_to_wire(c.kind) as i32,
        methods: c
            .methods
            .iter()
            .map(|m| method_to_wire(*m) as i32)
            .collect(),
        original_route_window_days: c.original_route_window_days,
        bank_code: c.bank_code.clone(),
    }
}

fn new_refund_from_wire(r: pb::CreateRefundRequest) -> Result<NewRefund> {
    validate_external_id(&r.refund_id, "refund_id")?;
    let request = NewRefund {
        amount: Money::parse(&r.amount, &r.currency, "amount")?,
        refund_id: r.refund_id,
        merchant_id: r.merchant_id,
        trade_id: r.trade_id,
        order_no: r.order_no,
        channel: r.channel,
        trade_paid_at_ms: r.trade_paid_at_ms,
        payer_card_no: r.payer_card_no,
        payer_name: r.payer_name,
    };
    request.validate()?;
    Ok(request)
}

fn order_to_wire(o: &RefundOrder) -> pb::RefundOrder {
    pb::RefundOrder {
        refund_id: o.refund_id.clone(),
        merchant_id: o.merchant_id.clone(),
        trade_id: o.trade_id.clone(),
        order_no: o.order_no.clone(),
        channel: o.channel.clone(),
        amount: o.amount.amount_string(),
        currency: o.amount.currency().code().to_string(),
        method: method_to_wire(o.method) as i32,
        submit_status: submit_to_wire(o.submit_status) as i32,
        refund_status: refund_status_to_wire(o.refund_status) as i32,
        bank_status: bank_status_to_wire(o.bank_status) as i32,
        bank_ref: o.bank_ref.clone(),
        reason: o.reason.clone(),
        created_at_ms: o.created_at_ms,
        submitted_at_ms: o.submitted_at_ms.unwrap_or(0),
        finalized_at_ms: o.finalized_at_ms.unwrap_or(0),
        final_source: o.final_source.clone(),
        pending_steps: o.pending_steps,
        ..Default::default()
    }
}

fn list_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_LIST_LIMIT
    } else {
        limit.min(MAX_LIST_LIMIT)
    }
}

fn optional_id(value: String, field: &str) -> Result<Option<String>> {
    if value.is_empty() {
        Ok(None)
    } else {
        validate_external_id(&value, field)?;
        Ok(Some(value))
    }
}

fn required_text(value: &str, field: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::field(field, "is required"));
    }
    validate_text(value, field)
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[tonic::async_trait]
impl RefundService for RefundCenter {
    async fn run_payout_dispatch(
        &self,
        _request: Request<pb::RunInterfaceCycleRequest>,
    ) -> Result<Response<pb::CycleReport>, Status> {
        Err(Status::unimplemented("payout refunds are not built yet"))
    }

    async fn payout_update(
        &self,
        _request: Request<pb::PayoutUpdateRequest>,
    ) -> Result<Response<pb::PayoutUpdateResponse>, Status> {
        Err(Status::unimplemented("payout refunds are not built yet"))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn create_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let req = new_refund_from_wire(request.into_inner()).map_err(grpc_err)?;
        let order = RefundCenter::create_refund(self, req)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let id = request.into_inner().refund_id;
        validate_external_id(&id, "refund_id").map_err(grpc_err)?;
        let order = RefundCenter::get_refund(self, &id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }

    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let r = request.into_inner();
        let filter = (|| {
            Ok::<_, Error>(RefundFilter {
                channel: optional_id(r.channel, "channel")?,
                refund_status: refund_status_from_wire(r.refund_status, "refund_status")?,
                after: optional_id(r.after, "after")?,
                limit: i64::from(list_limit(r.limit)),
            })
        })()
        .map_err(grpc_err)?;
        let orders = RefundCenter::list_refunds(self, filter)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: orders.iter().map(order_to_wire).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().code))]
    async fn upsert_channel(
        &self,
        request: Request<pb::Channel>,
    ) -> Result<Response<pb::Channel>, Status> {
        let channel = channel_from_wire(request.into_inner()).map_err(grpc_err)?;
        let saved = RefundCenter::upsert_channel(self, channel)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(channel_to_wire(&saved)))
    }

    async fn list_channels(
        &self,
        _request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        let channels = RefundCenter::list_channels(self).await.map_err(grpc_err)?;
        Ok(Response::new(pb::ListChannelsResponse {
            channels: channels.iter().map(channel_to_wire).collect(),
        }))
    }

    async fn run_interface_cycle(
        &self,
        request: Request<pb::RunInterfaceCycleRequest>,
    ) -> Result<Response<pb::CycleReport>, Status> {
        let c = RefundCenter::run_interface_cycle(self, request.into_inner().limit)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::CycleReport {
            sent: c.sent,
            accepted: c.accepted,
            rejected: c.rejected,
            errors: c.errors,
            waiting: c.waiting,
        }))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn bank_callback(
        &self,
        request: Request<pb::BankCallbackRequest>,
    ) -> Result<Response<pb::BankCallbackResponse>, Status> {
        let r = request.into_inner();
        let event = (|| {
            validate_external_id(&r.refund_id, "refund_id")?;
            validate_text(&r.bank_ref, "bank_ref")?;
            validate_text(&r.reason, "reason")?;
            if i64::try_from(r.sequence).is_err() {
                return Err(Error::field("sequence", "is too large"));
            }
            Ok(BankEvent {
                status: bank_status_from_wire(r.status)?,
                sequence: r.sequence,
                bank_ref: r.bank_ref.clone(),
                reason: r.reason.clone(),
            })
        })()
        .map_err(grpc_err)?;
        let applied = RefundCenter::bank_callback(self, &r.refund_id, event)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::BankCallbackResponse { applied }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel, date = %request.get_ref().date))]
    async fn list_submitted(
        &self,
        request: Request<pb::ListSubmittedRequest>,
    ) -> Result<Response<pb::ListSubmittedResponse>, Status> {
        let r = request.into_inner();
        validate_external_id(&r.channel, "channel").map_err(grpc_err)?;
        let date = NaiveDate::parse_from_str(&r.date, "%Y-%m-%d")
            .map_err(|_| grpc_err(Error::field("date", "must be a date written YYYY-MM-DD")))?;
        let after = optional_id(r.after, "after").map_err(grpc_err)?;
        let orders =
            RefundCenter::list_submitted(self, &r.channel, date, after, list_limit(r.limit))
                .await
                .map_err(grpc_err)?;
        Ok(Response::new(pb::ListSubmittedResponse {
            refunds: orders.iter().map(order_to_wire).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn apply_reconciliation(
        &self,
        request: Request<pb::ApplyReconciliationRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let r = request.into_inner();
        let status = (|| {
            validate_external_id(&r.refund_id, "refund_id")?;
            validate_text(&r.reason, "reason")?;
            required_text(&r.source, "source")?;
            refund_status_from_wire(r.status, "status")?
                .and_then(FinalStatus::from_refund_status)
                .ok_or_else(|| Error::field("status", "must be SUCCEEDED or FAILED"))
        })()
        .map_err(grpc_err)?;
        let order =
            RefundCenter::apply_reconciliation(self, &r.refund_id, status, &r.reason, &r.source)
                .await
                .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }

    async fn run_outbox(
        &self,
        _request: Request<pb::RunOutboxRequest>,
    ) -> Result<Response<pb::OutboxReport>, Status> {
        let c = RefundCenter::run_outbox(self).await.map_err(grpc_err)?;
        Ok(Response::new(pb::OutboxReport {
            delivered: c.delivered,
            failed: c.failed,
            remaining: c.remaining,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_convert_and_default_the_window() {
        let wire = pb::Channel {
            code: "NB1".into(),
            kind: pb::ChannelKind::NetBanking as i32,
            methods: vec![],
            original_route_window_days: 0,
            bank_code: "ICBC".into(),
        };
        let c = channel_from_wire(wire).unwrap();
        assert_eq!(
            c.original_route_window_days,
            DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS
        );
        let back = channel_to_wire(&c);
        assert_eq!(back.original_route_window_days, 180);
        let bad = pb::Channel {
            kind: 0,
            ..back.clone()
        };
        assert!(channel_from_wire(bad)
            .unwrap_err()
            .message
            .starts_with("kind"));
        let bad = pb::Channel {
            methods: vec![0],
            ..back
        };
        assert!(channel_from_wire(bad)
            .unwrap_err()
            .message
            .starts_with("methods"));
    }

    #[test]
    fn requests_are_validated_on_receipt() {
        let ok = pb::CreateRefundRequest {
            refund_id: "rf1".into(),
            merchant_id: "m1".into(),
            trade_id: "t1".into(),
            order_no: "o1".into(),
            channel: "NB1".into(),
            amount: "10.00".into(),
            currency: "CNY".into(),
            trade_paid_at_ms: 1,
            payer_card_no: String::new(),
            payer_name: String::new(),
        };
        assert!(new_refund_from_wire(ok.clone()).is_ok());
        let e = new_refund_from_wire(pb::CreateRefundRequest {
            amount: "10.001".into(),
            ..ok.clone()
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAmount);
        let e = new_refund_from_wire(pb::CreateRefundRequest {
            refund_id: "a b".into(),
            ..ok.clone()
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedId);
        let e = new_refund_from_wire(pb::CreateRefundRequest {
            currency: "XYZ".into(),
            ..ok
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedCurrency);
    }
}
