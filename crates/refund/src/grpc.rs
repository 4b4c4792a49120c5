//! The refund center's gRPC face: [`serve`], the `RefundService`, `BatchService`,
//! `ErrorRefundService` and `RefundControlService` implementations, wire ↔ domain conversions (validated on receipt) and the typed clients of its
//! peers (clearing, bank, business, payout center).
//!
//! The work itself lives in [`RefundCenter`]'s methods; the RPC handlers and the periodic job loop
//! call the same functions. Batches (file-upload and offline spreadsheets) are in [`batch`]; risk
//! holds, manual controls, the audit trail and error refunds in [`control`].

pub mod batch;
pub mod control;
pub mod proposals;
mod reinstate;
mod reopen;

use std::sync::Arc;
use std::time::Duration;
use tuikuan_proto::tls::Principal;

use chrono::NaiveDate;
use tonic::transport::Channel as Transport;
use tonic::{Request, Response, Status};
use tuikuan_db::{AnyConnection, Db};
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock, WorkingCalendar};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as business;
use tuikuan_proto::clearing::v1 as clearing;
use tuikuan_proto::payout::v1 as payout;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use bank::bank_service_client::BankServiceClient;
use business::business_admin_service_client::BusinessAdminServiceClient;
use clearing::clearing_service_client::ClearingServiceClient;
use payout::payout_service_client::PayoutServiceClient;
use pb::batch_service_server::BatchServiceServer;
use pb::error_refund_service_server::ErrorRefundServiceServer;
use pb::refund_control_service_server::RefundControlServiceServer;
use pb::refund_service_server::{RefundService, RefundServiceServer};

use crate::domain::{
    self, expected_completion, is_fallback_reason, people, validate_text, AttemptOutcome,
    BankEvent, BankStatus, Channel, ChannelKind, CycleCounts, FinalStatus, NewRefund, OutboxCounts,
    OutboxStep, Outcome, PayoutState, PayoutUpdate, RefundMethod, RefundOrder, RefundStatus,
    SubmitStatus, DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS, PAYOUT_EXPECTED_MS,
};
use crate::store::{self, Inserted, RefundFilter};
use crate::vault::{resolve_key, CardKey, Sealer};

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
    /// The payout center (PayoutService). Empty: no payout center; payout attempts stay PENDING
    /// (with a note) until one is configured.
    pub payout_addr: String,
    /// Working days (weekends, holidays, make-up days): batches are generated only on working
    /// days, and expected completion counts working days. Default: weekends only.
    pub calendar: WorkingCalendar,
    /// Run the interface cycle, the payout dispatch, the outbox and the retry of batch deliveries
    /// every this often; `None`: only by admin RPC.
    pub job_interval: Option<Duration>,
    /// Orders per interface cycle and refunds per outbox run.
    pub batch_size: u32,
    /// The AES-256 key of card numbers at rest (the kernel's [`tuikuan_kernel::seal::CardKey`],
    /// re-exported as [`crate::CardKey`]). `None`: the `TUIKUAN_CARD_KEY` environment
    /// variable (64 hex digits; an invalid value stops startup), else the public development key
    /// with a loud warning (never in production). Its `Debug` is redacted.
    pub card_key: Option<CardKey>,
    /// Mutual TLS as `refund` (or plaintext, only when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows) and the four-eyes thresholds. Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
}

impl Config {
    /// A configuration with no payout center, the weekends-only calendar, no job loop and the
    /// default batch size.
    pub fn new(
        database_url: impl Into<String>,
        clock: SharedClock,
        clearing_addr: impl Into<String>,
        bank_addr: impl Into<String>,
        business_addr: impl Into<String>,
        transport: tuikuan_proto::tls::Transport,
    ) -> Config {
        Config {
            database_url: database_url.into(),
            clock,
            clearing_addr: clearing_addr.into(),
            bank_addr: bank_addr.into(),
            business_addr: business_addr.into(),
            payout_addr: String::new(),
            calendar: WorkingCalendar::default(),
            job_interval: None,
            batch_size: DEFAULT_BATCH_SIZE,
            card_key: None,
            transport,
            staff: tuikuan_auth::StaffConfig::default(),
        }
    }

    /// The same configuration with staff security.
    pub fn with_staff(mut self, staff: tuikuan_auth::StaffConfig) -> Config {
        self.staff = staff;
        self
    }

    /// The same configuration with a card key.
    pub fn with_card_key(mut self, key: CardKey) -> Config {
        self.card_key = Some(key);
        self
    }

    /// The same configuration with a payout center.
    pub fn with_payout_addr(mut self, payout_addr: impl Into<String>) -> Config {
        self.payout_addr = payout_addr.into();
        self
    }

    /// The same configuration with a working-day calendar.
    pub fn with_calendar(mut self, calendar: WorkingCalendar) -> Config {
        self.calendar = calendar;
        self
    }
}

/// Runs the refund center (RefundService, BatchService, ErrorRefundService and
/// RefundControlService) on `listener` until `shutdown` resolves. At startup it encrypts any card
/// number still stored in plaintext (see [`store::encrypt_legacy`]).
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let center = RefundCenter::new(db, &config)?;
    let vault = center.vault.clone();
    let pass = center
        .db
        .run(move |c| store::encrypt_legacy(c, &vault))
        .await?;
    if pass != store::LegacyPass::default() {
        tracing::info!(
            refunds = pass.refunds,
            batch_rows = pass.batch_rows,
            batch_files = pass.batch_files,
            "encrypted card numbers stored in plaintext"
        );
    }
    let job = config.job_interval.map(|every| {
        let center = center.clone();
        tuikuan_proto::jobs::every("refund center cycle", every, move || {
            let center = center.clone();
            async move { center.job_step().await }
        })
    });
    let desk = center.desk.clone();
    let executor = center.executor();
    let auth = &config.staff.auth;
    let routes = tonic::service::Routes::new(
        auth.guard_audited(RefundServiceServer::new(center.clone()), &desk),
    )
    .add_service(auth.guard_audited(BatchServiceServer::new(center.clone()), &desk))
    .add_service(auth.guard_audited(ErrorRefundServiceServer::new(center.clone()), &desk))
    .add_service(auth.guard_audited(RefundControlServiceServer::new(center), &desk))
    .add_service(tuikuan_auth::StaffServer::new(desk, executor).guarded(auth));
    let result = tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        routes,
        &[
            <RefundServiceServer<RefundCenter> as tonic::server::NamedService>::NAME,
            <BatchServiceServer<RefundCenter> as tonic::server::NamedService>::NAME,
            <ErrorRefundServiceServer<RefundCenter> as tonic::server::NamedService>::NAME,
            <RefundControlServiceServer<RefundCenter> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    )
    .await;
    tuikuan_proto::jobs::stop(job).await;
    result
}

/// The refund center: storage, clock, calendar and peers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RefundCenter {
    db: Db,
    clock: SharedClock,
    calendar: Arc<WorkingCalendar>,
    clearing: ClearingServiceClient<Transport>,
    bank: BankServiceClient<Transport>,
    business: BusinessAdminServiceClient<Transport>,
    payout: Option<PayoutServiceClient<Transport>>,
    batch_size: u32,
    vault: Arc<Sealer>,
    /// The staff desk: audit trail and four-eyes proposals ([`proposals`]).
    desk: tuikuan_auth::Desk,
}

/// An order before and after a transition.
#[derive(Debug, Clone)]
pub(crate) struct Moved {
    pub before: RefundOrder,
    pub after: RefundOrder,
    pub changed: bool,
}

/// Reads an order and its channel, applies `change` (which says whether it changed anything) and
/// writes it back guarded by the state it was read in; re-reads and retries when a concurrent
/// writer moved it first. An order that became final gets its finalisation steps, one that was
/// returned its return steps, in the same transaction (the caller runs this inside one).
pub(crate) fn transition_in<F>(
    conn: &mut AnyConnection,
    vault: &Sealer,
    refund_id: &str,
    now_ms: i64,
    change: &F,
) -> Result<Moved>
where
    F: Fn(&mut RefundOrder, &Channel) -> Result<bool>,
{
    for _ in 0..TRANSITION_ATTEMPTS {
        let before =
            store::get_refund(conn, vault, refund_id)?.ok_or_else(|| not_found(refund_id))?;
        let channel = store::get_channel(conn, &before.channel)?.ok_or_else(|| {
            Error::new(
                ErrorCode::ChannelNotFound,
                format!("channel {} is not configured", before.channel),
            )
        })?;
        let mut after = before.clone();
        if !change(&mut after, &channel)? {
            return Ok(Moved {
                after: before.clone(),
                before,
                changed: false,
            });
        }
        if store::save_transition(conn, &before, &after)? {
            if after.refund_status.is_final() && !before.refund_status.is_final() {
                let status =
                    FinalStatus::from_refund_status(after.refund_status).ok_or_else(|| {
                        Error::internal(format!(
                            "refund {refund_id} became {}",
                            after.refund_status
                        ))
                    })?;
                reopen::insert_final_steps(conn, &after, status, now_ms)?;
            }
            reopen::insert_reopen_steps(conn, &before, &after, now_ms)?;
            if before.refund_status == RefundStatus::Failed
                && after.refund_status == RefundStatus::Succeeded
            {
                store::insert_outbox(conn, &domain::OutboxEntry::for_reinstate(refund_id), now_ms)?;
            }
            if after.refund_status == RefundStatus::Returned
                && before.refund_status != RefundStatus::Returned
            {
                store::insert_outbox(conn, &domain::OutboxEntry::for_return(refund_id), now_ms)?;
            }
            let after =
                store::get_refund(conn, vault, refund_id)?.ok_or_else(|| not_found(refund_id))?;
            return Ok(Moved {
                before,
                after,
                changed: true,
            });
        }
    }
    Err(Error::unavailable(format!(
        "refund {refund_id} keeps changing concurrently; retry"
    )))
}

/// Peer errors that mean the payout center refused the payout for good (it was not created).
fn is_definitive_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidArgument
            | ErrorCode::InvalidAmount
            | ErrorCode::MalformedId
            | ErrorCode::UnsupportedCurrency
    )
}

impl RefundCenter {
    /// Builds the center on an open, migrated database. Peers are connected lazily.
    pub fn new(db: Db, config: &Config) -> Result<RefundCenter> {
        let payout = if config.payout_addr.is_empty() {
            None
        } else {
            Some(PayoutServiceClient::new(
                config
                    .transport
                    .channel(Principal::Payout, &config.payout_addr)?,
            ))
        };
        let desk = config.staff.desk("refund", &db, config.clock.clone())?;
        Ok(RefundCenter {
            desk,
            db,
            clock: config.clock.clone(),
            calendar: Arc::new(config.calendar.clone()),
            clearing: ClearingServiceClient::new(
                config
                    .transport
                    .channel(Principal::Clearing, &config.clearing_addr)?,
            ),
            bank: BankServiceClient::new(
                config
                    .transport
                    .channel(Principal::Bank, &config.bank_addr)?,
            ),
            business: BusinessAdminServiceClient::new(
                config
                    .transport
                    .channel(Principal::Business, &config.business_addr)?,
            ),
            payout,
            batch_size: config.batch_size.clamp(1, MAX_LIST_LIMIT),
            vault: Arc::new(Sealer::new(&resolve_key(config.card_key.as_ref())?)),
        })
    }

    /// One step of the scheduled job: interface cycle, payout dispatch, outbox, batch deliveries.
    async fn job_step(&self) {
        if let Err(e) = self.run_interface_cycle(0).await {
            tracing::warn!(code = %e.code, error = %e.message, "interface cycle failed");
        }
        if let Err(e) = self.run_payout_dispatch(0).await {
            tracing::warn!(code = %e.code, error = %e.message, "payout dispatch failed");
        }
        if let Err(e) = self.run_outbox().await {
            tracing::warn!(code = %e.code, error = %e.message, "outbox run failed");
        }
        if let Err(e) = self.retry_batch_deliveries().await {
            tracing::warn!(code = %e.code, error = %e.message, "batch deliveries failed");
        }
    }

    /// Runs a transition in its own transaction.
    async fn transition<F>(&self, refund_id: &str, change: F) -> Result<Moved>
    where
        F: Fn(&mut RefundOrder, &Channel) -> Result<bool> + Send + 'static,
    {
        let id = refund_id.to_string();
        let now_ms = self.clock.now_ms();
        let vault = self.vault.clone();
        self.db
            .transaction(move |conn| transition_in(conn, &vault, &id, now_ms, &change))
            .await
    }

    /// What follows a committed transition: an order that became final delivers its steps at
    /// once (best effort; RunOutbox retries), a new payout attempt creates its payout at once
    /// (best effort; RunPayoutDispatch retries).
    async fn follow_up(&self, moved: &Moved) {
        if !moved.changed {
            return;
        }
        self.deliver_if_final(moved).await;
        if moved.after.is_due_for_payout() && moved.after.attempt != moved.before.attempt {
            let mut counts = CycleCounts::default();
            if let Err(e) = self.dispatch_payout(&moved.after, &mut counts).await {
                tracing::warn!(refund_id = %moved.after.refund_id, code = %e.code, error = %e.message, "payout dispatch failed; retried later");
            }
        }
    }

    async fn deliver_if_final(&self, moved: &Moved) {
        if moved.changed && moved.after.refund_status != moved.before.refund_status {
            tracing::info!(refund_id = %moved.after.refund_id, status = %moved.after.refund_status, "refund final");
            if let Err(e) = self.deliver(&moved.after.refund_id).await {
                tracing::warn!(refund_id = %moved.after.refund_id, code = %e.code, error = %e.message, "finalisation steps stay queued");
            }
        }
    }

    async fn reread(&self, refund_id: &str) -> Result<RefundOrder> {
        let id = refund_id.to_string();
        let vault = self.vault.clone();
        self.db
            .run(move |c| store::get_refund(c, &vault, &id))
            .await?
            .ok_or_else(|| not_found(refund_id))
    }

    // -----------------------------------------------------------------------------------------
    // Acceptance

    /// Accepts a refund whose debit succeeded. Idempotent by refund id. The first method that can
    /// work starts at once (a payout is created in real time); none: `NO_REFUND_METHOD`. The risk
    /// rules are evaluated before anything is sent: a matching order is accepted HELD.
    pub async fn create_refund(&self, request: NewRefund) -> Result<RefundOrder> {
        self.create_refund_by(request, "").await
    }

    /// [`RefundCenter::create_refund`], naming who raised it (an operator raising an error
    /// refund; empty: the calling service). Error refunds are recorded in the audit trail.
    pub async fn create_refund_by(
        &self,
        request: NewRefund,
        raised_by: &str,
    ) -> Result<RefundOrder> {
        request.validate()?;
        let fingerprint = request.fingerprint();
        let id = request.refund_id.clone();
        let vault = self.vault.clone();
        if let Some(existing) = self
            .db
            .run(move |c| store::get_refund(c, &vault, &id))
            .await?
        {
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
        // The customer gets back the cash part: a platform-funded subsidy share of the refund
        // goes back to the subsidy account, not to the customer (see the clearing center).
        let cash = self.verify_debit(&request).await?;
        let now_ms = self.clock.now_ms();
        let paying = NewRefund {
            amount: cash,
            ..request
        };
        let mut order = RefundOrder::accept(paying, &channel, &self.calendar, now_ms)?;
        // Idempotency is about what the caller asked for, not what is paid.
        order.fingerprint = fingerprint.clone();
        let mut audits = Vec::new();
        if order.kind.is_error() {
            audits.push(domain::control::AuditEntry {
                audit_id: tuikuan_kernel::id::new_id("aud"),
                refund_id: order.refund_id.clone(),
                action: domain::control::ControlAction::CreateErrorRefund,
                operator: if raised_by.is_empty() {
                    "business".to_string()
                } else {
                    raised_by.to_string()
                },
                role: "service".to_string(),
                reason: format!(
                    "error refund ({}) of the full {} of trade {}",
                    order.kind, order.amount, order.trade_id
                ),
                at_ms: now_ms,
                state_before: String::new(),
                state_after: order.control_snapshot(),
            });
        }
        if let Some((rule_id, why)) = self.evaluate_risk(&order, now_ms).await? {
            let before = order.control_snapshot();
            order.hold(&rule_id, &why)?;
            tracing::warn!(refund_id = %order.refund_id, rule_id = %rule_id, reason = %why, "refund held for risk review");
            audits.push(domain::control::AuditEntry {
                audit_id: tuikuan_kernel::id::new_id("aud"),
                refund_id: order.refund_id.clone(),
                action: domain::control::ControlAction::Hold,
                operator: "risk-engine".to_string(),
                role: "system".to_string(),
                reason: why,
                at_ms: now_ms,
                state_before: before,
                state_after: order.control_snapshot(),
            });
        }
        let to_insert = order.clone();
        let vault = self.vault.clone();
        match self
            .db
            .run(move |c| store::insert_refund(c, &vault, &to_insert, &audits))
            .await?
        {
            Inserted::New => {
                tracing::info!(
                    refund_id = %order.refund_id,
                    method = %order.method,
                    attempt = order.attempt,
                    "refund accepted"
                );
                if order.is_due_for_payout() {
                    let mut counts = CycleCounts::default();
                    if let Err(e) = self.dispatch_payout(&order, &mut counts).await {
                        tracing::warn!(refund_id = %order.refund_id, code = %e.code, error = %e.message, "payout dispatch failed; retried later");
                    }
                    return self.reread(&order.refund_id).await;
                }
                Ok(order)
            }
            // A concurrent request with the same refund id won the insert.
            Inserted::Exists(existing) => same_request(*existing, &fingerprint),
        }
    }

    /// The clearing center must hold an active (DEBITED) debit of exactly this refund.
    /// Checks that the clearing center debited this refund, and returns the cash to pay: the
    /// refund amount less the platform-funded subsidy share, which goes back to the subsidy
    /// account instead of to the customer.
    async fn verify_debit(&self, request: &NewRefund) -> Result<Money> {
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
        if debit.subsidy_amount.is_empty() {
            return Ok(amount);
        }
        let subsidy = Money::new(
            debit.subsidy_amount.parse().map_err(|_| {
                not_active(format!("unreadable subsidy {:?}", debit.subsidy_amount))
            })?,
            amount.currency(),
        )
        .map_err(|e| not_active(format!("unreadable subsidy: {}", e.message)))?;
        let cash = amount
            .checked_sub(&subsidy)
            .map_err(|e| not_active(e.message))?;
        if !cash.is_positive() {
            return Err(not_active(format!(
                "the platform subsidy {subsidy} covers the whole refund: there is no cash to pay back"
            )));
        }
        Ok(cash)
    }

    // -----------------------------------------------------------------------------------------
    // Interface cycle

    /// Sends due interface orders to the bank (at most `limit`, 0 = the configured batch).
    pub async fn run_interface_cycle(&self, limit: u32) -> Result<CycleCounts> {
        let limit = self.cycle_limit(limit);
        let vault = self.vault.clone();
        let due = self
            .db
            .run(move |c| store::due_interface(c, &vault, i64::from(limit)))
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
            fell_back = counts.fell_back,
            errors = counts.errors,
            waiting = counts.waiting,
            "interface cycle"
        );
        Ok(counts)
    }

    fn cycle_limit(&self, limit: u32) -> u32 {
        if limit == 0 {
            self.batch_size
        } else {
            limit.min(MAX_LIST_LIMIT)
        }
    }

    #[tracing::instrument(skip_all, fields(refund_id = %order.refund_id, attempt = order.attempt))]
    async fn submit_one(&self, order: &RefundOrder, counts: &mut CycleCounts) -> Result<()> {
        // The bank is idempotent by the attempt's reference: a repeat after a timeout returns the
        // first answer.
        let reference = order.bank_reference_id.clone();
        let answer = self
            .bank
            .clone()
            .submit_refund(bank::SubmitRefundRequest {
                channel: order.channel.clone(),
                refund_id: reference.clone(),
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
        let calendar = self.calendar.clone();
        let is_this_attempt = move |o: &RefundOrder| {
            o.bank_reference_id == reference && o.method == RefundMethod::Interface
        };
        let result = if answer.accepted {
            counts.accepted += 1;
            let bank_ref = answer.bank_ref.clone();
            let expected = expected_completion(RefundMethod::Interface, now_ms, &calendar);
            self.transition(&order.refund_id, move |o, _| {
                if !is_this_attempt(o) {
                    return Ok(false);
                }
                o.submit_accepted(&bank_ref, now_ms, expected)
                    .map(|()| true)
            })
            .await
        } else {
            counts.rejected += 1;
            let reason = answer.reason.clone();
            self.transition(&order.refund_id, move |o, channel| {
                if !is_this_attempt(o) {
                    return Ok(false);
                }
                o.submit_refused(&reason, channel, &calendar, now_ms)
                    .map(|_| true)
            })
            .await
        };
        match result {
            Ok(moved) => {
                if moved.after.attempt != moved.before.attempt {
                    counts.fell_back += 1;
                }
                tracing::info!(
                    submit_status = %moved.after.submit_status,
                    refund_status = %moved.after.refund_status,
                    method = %moved.after.method,
                    "bank answered"
                );
                self.follow_up(&moved).await;
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
    // Payouts

    /// Creates the payouts of PAYOUT orders whose payout the payout center has not taken yet
    /// (at most `limit`, 0 = the configured batch).
    pub async fn run_payout_dispatch(&self, limit: u32) -> Result<CycleCounts> {
        let limit = self.cycle_limit(limit);
        let vault = self.vault.clone();
        let due = self
            .db
            .run(move |c| store::due_payout(c, &vault, i64::from(limit)))
            .await?;
        let mut counts = CycleCounts::default();
        for order in due {
            if !order.is_due_for_payout() {
                continue;
            }
            counts.sent += 1;
            self.dispatch_payout(&order, &mut counts).await?;
        }
        let waiting = self.db.run(store::count_waiting).await?;
        counts.waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        tracing::info!(
            sent = counts.sent,
            accepted = counts.accepted,
            rejected = counts.rejected,
            errors = counts.errors,
            "payout dispatch"
        );
        Ok(counts)
    }

    /// Creates the payout of the order's current (PAYOUT) attempt at the payout center, with the
    /// attempt's payout id: a retry after a timeout reuses it, so it can never pay twice.
    #[tracing::instrument(skip_all, fields(refund_id = %order.refund_id, payout_id = %order.bank_reference_id))]
    async fn dispatch_payout(&self, order: &RefundOrder, counts: &mut CycleCounts) -> Result<()> {
        let payout_id = order.bank_reference_id.clone();
        let Some(client) = &self.payout else {
            counts.errors += 1;
            let id = order.refund_id.clone();
            self.db
                .run(move |c| {
                    store::note_submit_error(
                        c,
                        &id,
                        "no payout center is configured; the payout waits for one",
                    )
                })
                .await?;
            return Ok(());
        };
        let answer = client
            .clone()
            .create_payout(payout::CreatePayoutRequest {
                payout_id: payout_id.clone(),
                refund_id: order.refund_id.clone(),
                channel: order.channel.clone(),
                card_no: order.payer_card_no.clone(),
                holder_name: order.payer_name.clone(),
                amount: order.amount.amount_string(),
                currency: order.amount.currency().code().to_string(),
            })
            .await
            .map_err(peer_err);
        let now_ms = self.clock.now_ms();
        let this_attempt = payout_id.clone();
        let result = match answer {
            Ok(p) => {
                counts.accepted += 1;
                let bank_ref = p.into_inner().bank_ref;
                self.transition(&order.refund_id, move |o, _| {
                    if o.bank_reference_id != this_attempt || !o.is_due_for_payout() {
                        return Ok(false);
                    }
                    o.submit_accepted(&bank_ref, now_ms, now_ms + PAYOUT_EXPECTED_MS)
                        .map(|()| true)
                })
                .await
            }
            Err(e) if is_definitive_refusal(e.code) => {
                counts.rejected += 1;
                tracing::warn!(code = %e.code, error = %e.message, "the payout center refused the payout");
                let why = format!("PAYOUT_REFUSED: {}: {}", e.code, e.message);
                let calendar = self.calendar.clone();
                self.transition(&order.refund_id, move |o, channel| {
                    if o.bank_reference_id != this_attempt || !o.is_due_for_payout() {
                        return Ok(false);
                    }
                    o.fail_attempt(&why, channel, &calendar, "payout center", now_ms)
                        .map(|_| true)
                })
                .await
            }
            Err(e) => {
                counts.errors += 1;
                tracing::warn!(code = %e.code, error = %e.message, "payout creation failed; retried with the same payout id");
                let note = format!(
                    "last payout creation failed ({}: {}); retried with payout id {payout_id}",
                    e.code, e.message
                );
                let id = order.refund_id.clone();
                self.db
                    .run(move |c| store::note_submit_error(c, &id, &note))
                    .await?;
                return Ok(());
            }
        };
        match result {
            Ok(moved) => {
                // A refusal never falls back to another payout (methods are tried once), so only
                // finalisation can follow here.
                self.deliver_if_final(&moved).await;
                Ok(())
            }
            Err(e) if e.code == ErrorCode::InvalidStateTransition => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Applies a payout center update. `false` when it changed nothing.
    pub async fn payout_update(&self, refund_id: &str, update: PayoutUpdate) -> Result<bool> {
        let order = self.reread(refund_id).await?;
        let known = order
            .attempt_by_reference(&update.payout_id)
            .is_some_and(|a| a.method == RefundMethod::Payout);
        if !known {
            return Err(Error::new(
                ErrorCode::PayoutNotFound,
                format!("refund {refund_id} has no payout {}", update.payout_id),
            ));
        }
        let calendar = self.calendar.clone();
        let now_ms = self.clock.now_ms();
        let moved = self
            .transition(refund_id, move |o, channel| {
                let effect = o.apply_payout_update(&update, channel, &calendar, now_ms)?;
                Ok(effect != domain::PayoutEffect::Ignored)
            })
            .await?;
        if moved.changed {
            tracing::info!(
                refund_id,
                refund_status = %moved.after.refund_status,
                bank_status = %moved.after.bank_status.map_or("-", BankStatus::as_str),
                attempt = moved.after.attempt,
                "payout update applied"
            );
        }
        self.follow_up(&moved).await;
        Ok(moved.changed)
    }

    // -----------------------------------------------------------------------------------------
    // Bank callbacks

    /// Applies a bank callback about the interface attempt the bank knows by `reference` (the
    /// refund id, or `{refund_id}-{n}` for a later attempt); `false` when it changed nothing
    /// (late, duplicated, out of order, an earlier attempt, or the order is final).
    pub async fn bank_callback(&self, reference: &str, event: BankEvent) -> Result<bool> {
        let r = reference.to_string();
        let vault = self.vault.clone();
        let refund_id = self
            .db
            .run(move |c| match store::refund_id_by_reference(c, &r)? {
                Some(id) => Ok(Some(id)),
                None => Ok(store::get_refund(c, &vault, &r)?.map(|o| o.refund_id)),
            })
            .await?
            .ok_or_else(|| not_found(reference))?;
        let reference = reference.to_string();
        let moved = self
            .transition(&refund_id, move |o, _| {
                if o.bank_reference_id != reference || o.method != RefundMethod::Interface {
                    return Ok(false);
                }
                Ok(o.apply_bank_event(&event))
            })
            .await?;
        Ok(moved.changed)
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
        let vault = self.vault.clone();
        self.db
            .run(move |c| {
                store::list_submitted(
                    c,
                    &vault,
                    &channel,
                    before_ms,
                    after.as_deref(),
                    i64::from(limit),
                )
            })
            .await
    }

    /// Reconciliation's result for the attempt the bank knows by `reference` (empty: the current
    /// one). SUCCEEDED makes the order final. FAILED with a reason another method can fix
    /// (CARD_CANCELLED, ACCOUNT_CLOSED, BEYOND_WINDOW) fails the attempt and starts the next method
    /// (the order stays PROCESSING); a failure the channel holds for people (BANK_ABNORMAL,
    /// [`people`]) leaves the order PROCESSING and waiting for people; other failures, or no
    /// method left, make it final FAILED. A result
    /// for an earlier attempt never touches the current one: the same outcome it already has
    /// answers the order unchanged, another is `INVALID_STATE_TRANSITION`. Idempotent.
    pub async fn apply_reconciliation(
        &self,
        refund_id: &str,
        status: FinalStatus,
        reason: &str,
        source: &str,
        reference: &str,
    ) -> Result<RefundOrder> {
        let reason = reason.to_string();
        let source = source.to_string();
        let reference = reference.to_string();
        let now_ms = self.clock.now_ms();
        let calendar = self.calendar.clone();
        let moved = self
            .transition(refund_id, move |o, channel| {
                if !reference.is_empty() && reference != o.bank_reference_id {
                    let Some(a) = o.attempt_by_reference(&reference) else {
                        return Err(Error::new(
                            ErrorCode::NotFound,
                            format!(
                                "refund {} has no attempt with bank reference id {reference}",
                                o.refund_id
                            ),
                        ));
                    };
                    let same = match status {
                        FinalStatus::Succeeded => a.outcome == AttemptOutcome::Succeeded,
                        FinalStatus::Failed => a.outcome == AttemptOutcome::Failed,
                    };
                    if same {
                        return Ok(false);
                    }
                    return Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        format!(
                            "bank reference id {reference} is attempt {} ({}) of refund {}, which \
                             ended {}; the current attempt is {} ({} {}); reconciliation's {} for \
                             the earlier attempt needs finance",
                            a.number,
                            a.method,
                            o.refund_id,
                            a.outcome,
                            o.attempt,
                            o.method,
                            o.bank_reference_id,
                            status.refund_status()
                        ),
                    ));
                }
                // The channel holds the money (WeChat Pay ABNORMAL): people decide, nothing moves.
                if status == FinalStatus::Failed
                    && people::needs_people(&reason)
                    && o.refund_status == RefundStatus::Processing
                    && o.submit_status == SubmitStatus::Submitted
                {
                    return Ok(o.hand_to_people(&reason));
                }
                if status == FinalStatus::Failed
                    && is_fallback_reason(&reason)
                    && o.refund_status == RefundStatus::Processing
                    && o.submit_status == SubmitStatus::Submitted
                {
                    o.fail_attempt(&reason, channel, &calendar, &source, now_ms)?;
                    return Ok(true);
                }
                Ok(o.finalize(status, &reason, &source, now_ms)? == Outcome::Changed)
            })
            .await?;
        self.follow_up(&moved).await;
        if !moved.changed {
            return Ok(moved.after);
        }
        self.reread(refund_id).await
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

    /// Runs one refund's undelivered steps in order. Returns (delivered, failed).
    #[tracing::instrument(skip(self))]
    async fn deliver(&self, refund_id: &str) -> Result<(u32, u32)> {
        let id = refund_id.to_string();
        let vault = self.vault.clone();
        let (order, steps) = self
            .db
            .run(move |c| {
                let order = store::get_refund(c, &vault, &id)?.ok_or_else(|| not_found(&id))?;
                let steps = store::outbox_of(c, &id)?;
                Ok((order, steps))
            })
            .await?;
        if !order.refund_status.is_final() && !reopen::reopen_pending(&steps) {
            return Err(Error::internal(format!(
                "refund {refund_id} has finalisation steps but is not final"
            )));
        }
        // Money steps run in order and hold back everything after them; a notification that
        // fails holds back later notifications only (a returned payout's money must not wait for
        // the business layer to hear of the earlier success).
        let (mut delivered, mut failed) = (0, 0);
        let (mut money_blocked, mut notify_blocked) = (false, false);
        for step in steps.into_iter().filter(|s| !s.done) {
            let is_notify = matches!(
                step.step,
                OutboxStep::NotifyBusiness
                    | OutboxStep::NotifyReturned
                    | OutboxStep::NotifyReopened
            );
            if money_blocked || (is_notify && notify_blocked) {
                continue;
            }
            let result = match step.attempt_of() {
                Some(attempt)
                    if matches!(
                        step.step,
                        OutboxStep::ClearingReopen | OutboxStep::NotifyReopened
                    ) =>
                {
                    self.run_reopen_step(&order, step.step, attempt).await
                }
                _ => self.run_step(&order, step.step).await,
            };
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
                    if is_notify {
                        notify_blocked = true;
                    } else {
                        money_blocked = true;
                    }
                }
            }
        }
        Ok((delivered, failed))
    }

    async fn run_step(&self, order: &RefundOrder, step: OutboxStep) -> Result<()> {
        // The ledger's value date of the payment: the business date the refund became final.
        let value_date = |at_ms: Option<i64>| {
            at_ms
                .map(|ms| {
                    tuikuan_kernel::clock::business_date(tuikuan_kernel::clock::from_ms(ms))
                        .format("%Y-%m-%d")
                        .to_string()
                })
                .unwrap_or_default()
        };
        let refund_id = order.refund_id.clone();
        let reason = if order.reason.is_empty() {
            "refund failed".to_string()
        } else {
            order.reason.clone()
        };
        match step {
            OutboxStep::ClearingComplete => {
                self.clearing
                    .clone()
                    .complete_debit(clearing::CompleteDebitRequest {
                        refund_id,
                        bank_reference: order.bank_ref.clone(),
                        value_date: value_date(order.finalized_at_ms),
                        attempt: order.attempt,
                    })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::ClearingReverse => {
                self.clearing
                    .clone()
                    .reverse_debit(clearing::ReverseDebitRequest { refund_id, reason })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::ClearingReturn => {
                self.clearing
                    .clone()
                    .return_debit(clearing::ReturnDebitRequest {
                        refund_id,
                        reason,
                        bank_reference: order.bank_ref.clone(),
                        value_date: String::new(),
                    })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::NotifyBusiness => {
                // The outcome this step was queued for: FAILED for a failed order; SUCCEEDED for
                // a succeeded one, even if it was returned since (its own step follows).
                let status = if order.refund_status == RefundStatus::Failed {
                    business::RefundStatus::Failed
                } else {
                    business::RefundStatus::Succeeded
                };
                self.business
                    .clone()
                    .report_refund_outcome(business::ReportRefundOutcomeRequest {
                        refund_id,
                        status: status as i32,
                        reason: reopen::for_business(&order.reason),
                        returned: false,
                        expected_completion_ms: 0,
                        reinstated: false,
                        reopened: false,
                    })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::ClearingReinstate => {
                self.clearing
                    .clone()
                    .reinstate_debit(clearing::ReinstateDebitRequest { refund_id, reason })
                    .await
                    .map_err(peer_err)?;
            }
            OutboxStep::ClearingReopen | OutboxStep::NotifyReopened => {
                return Err(Error::internal(format!(
                    "refund {}: a reopen step without its attempt",
                    order.refund_id
                )));
            }
            OutboxStep::NotifyReturned => {
                self.business
                    .clone()
                    .report_refund_outcome(business::ReportRefundOutcomeRequest {
                        refund_id,
                        status: business::RefundStatus::Failed as i32,
                        reason,
                        returned: true,
                        expected_completion_ms: 0,
                        reinstated: false,
                        reopened: false,
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
        self.reread(refund_id).await
    }

    /// The refund one of whose attempts the bank knows by `bank_reference_id`.
    pub async fn get_refund_by_reference(&self, bank_reference_id: &str) -> Result<RefundOrder> {
        let reference = bank_reference_id.to_string();
        let refund_id = self
            .db
            .run(move |c| store::refund_id_by_reference(c, &reference))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::RefundNotFound,
                    format!(
                        "no refund attempt with bank reference {}",
                        tuikuan_kernel::echo(bank_reference_id)
                    ),
                )
            })?;
        self.reread(&refund_id).await
    }

    pub async fn list_refunds(&self, filter: RefundFilter) -> Result<Vec<RefundOrder>> {
        let vault = self.vault.clone();
        self.db
            .run(move |c| store::list_refunds(c, &vault, &filter))
            .await
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
        RefundStatus::Returned => pb::RefundStatus::Returned,
    }
}

fn refund_status_from_wire(v: i32, field: &str) -> Result<Option<RefundStatus>> {
    match pb::RefundStatus::try_from(v) {
        Ok(pb::RefundStatus::Unspecified) => Ok(None),
        Ok(pb::RefundStatus::Processing) => Ok(Some(RefundStatus::Processing)),
        Ok(pb::RefundStatus::Succeeded) => Ok(Some(RefundStatus::Succeeded)),
        Ok(pb::RefundStatus::Failed) => Ok(Some(RefundStatus::Failed)),
        Ok(pb::RefundStatus::Returned) => Ok(Some(RefundStatus::Returned)),
        Err(_) => Err(Error::field(field, format!("unknown value {v}"))),
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
        id_scheme: tuikuan_kernel::bank_ref::IdScheme::parse(&c.id_scheme, "id_scheme")?,
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
        id_scheme: c.id_scheme().as_str().to_string(),
    }
}

fn refund_kind_from_wire(v: i32) -> Result<domain::RefundKind> {
    match pb::RefundKind::try_from(v) {
        Ok(pb::RefundKind::Unspecified | pb::RefundKind::Normal) => Ok(domain::RefundKind::Normal),
        Ok(pb::RefundKind::ErrorDuplicate) => Ok(domain::RefundKind::ErrorDuplicate),
        Ok(pb::RefundKind::ErrorExpired) => Ok(domain::RefundKind::ErrorExpired),
        Err(_) => Err(Error::field("kind", format!("unknown value {v}"))),
    }
}

fn refund_kind_to_wire(k: domain::RefundKind) -> pb::RefundKind {
    match k {
        domain::RefundKind::Normal => pb::RefundKind::Normal,
        domain::RefundKind::ErrorDuplicate => pb::RefundKind::ErrorDuplicate,
        domain::RefundKind::ErrorExpired => pb::RefundKind::ErrorExpired,
    }
}

fn hold_status_to_wire(h: Option<domain::HoldStatus>) -> pb::HoldStatus {
    match h {
        None => pb::HoldStatus::Unspecified,
        Some(domain::HoldStatus::Held) => pb::HoldStatus::Held,
        Some(domain::HoldStatus::Released) => pb::HoldStatus::HoldReleased,
        Some(domain::HoldStatus::Rejected) => pb::HoldStatus::HoldRejected,
    }
}

fn new_refund_from_wire(r: pb::CreateRefundRequest) -> Result<NewRefund> {
    validate_external_id(&r.refund_id, "refund_id")?;
    let trade_amount = if r.trade_amount.is_empty() {
        None
    } else {
        Some(Money::parse(&r.trade_amount, &r.currency, "trade_amount")?)
    };
    let request = NewRefund {
        kind: refund_kind_from_wire(r.kind)?,
        trade_amount,
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
        bank_reference_id: o.bank_reference_id.clone(),
        attempt: o.attempt,
        expected_completion_ms: o.expected_completion_ms.unwrap_or(0),
        attempts: o
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                number: a.number,
                method: method_to_wire(a.method) as i32,
                bank_reference_id: a.bank_reference_id.clone(),
                outcome: a.outcome.as_str().to_string(),
                reason: a.reason.clone(),
                started_at_ms: a.started_at_ms,
                ended_at_ms: a.ended_at_ms.unwrap_or(0),
            })
            .collect(),
        waiting_manual: o.waiting_manual,
        kind: refund_kind_to_wire(o.kind) as i32,
        hold_status: hold_status_to_wire(o.hold_status) as i32,
        hold_rule_id: o.hold_rule_id.clone(),
        hold_reason: o.hold_reason.clone(),
        suspended: o.suspended,
    }
}

fn cycle_to_wire(c: CycleCounts) -> pb::CycleReport {
    pb::CycleReport {
        sent: c.sent,
        accepted: c.accepted,
        rejected: c.rejected,
        errors: c.errors,
        waiting: c.waiting,
    }
}

fn payout_update_from_wire(r: &pb::PayoutUpdateRequest) -> Result<PayoutUpdate> {
    validate_external_id(&r.payout_id, "payout_id")?;
    validate_external_id(&r.refund_id, "refund_id")?;
    validate_text(&r.reason, "reason")?;
    validate_text(&r.bank_ref, "bank_ref")?;
    if i64::try_from(r.sequence).is_err() {
        return Err(Error::field("sequence", "is too large"));
    }
    let state = PayoutState::parse(&r.status).ok_or_else(|| {
        Error::field(
            "status",
            format!("must be SENT, PAID, FAILED or RETURNED, not {:?}", r.status),
        )
    })?;
    Ok(PayoutUpdate {
        payout_id: r.payout_id.clone(),
        state,
        sequence: r.sequence,
        reason: r.reason.clone(),
        bank_ref: r.bank_ref.clone(),
    })
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
        request: Request<pb::RunInterfaceCycleRequest>,
    ) -> Result<Response<pb::CycleReport>, Status> {
        let c = RefundCenter::run_payout_dispatch(self, request.into_inner().limit)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(cycle_to_wire(c)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id, payout_id = %request.get_ref().payout_id))]
    async fn payout_update(
        &self,
        request: Request<pb::PayoutUpdateRequest>,
    ) -> Result<Response<pb::PayoutUpdateResponse>, Status> {
        let r = request.into_inner();
        let update = payout_update_from_wire(&r).map_err(grpc_err)?;
        let applied = RefundCenter::payout_update(self, &r.refund_id, update)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::PayoutUpdateResponse { applied }))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn create_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let r = request.into_inner();
        let operator = r.operator.clone();
        validate_text(&operator, "operator").map_err(grpc_err)?;
        let req = new_refund_from_wire(r).map_err(grpc_err)?;
        let order = RefundCenter::create_refund_by(self, req, &operator)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let request = request.into_inner();
        let order = if request.refund_id.is_empty() && !request.bank_reference_id.is_empty() {
            validate_external_id(&request.bank_reference_id, "bank_reference_id")
                .map_err(grpc_err)?;
            RefundCenter::get_refund_by_reference(self, &request.bank_reference_id)
                .await
                .map_err(grpc_err)?
        } else {
            validate_external_id(&request.refund_id, "refund_id").map_err(grpc_err)?;
            RefundCenter::get_refund(self, &request.refund_id)
                .await
                .map_err(grpc_err)?
        };
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
                hold_status: None,
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
        Ok(Response::new(cycle_to_wire(c)))
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
            if !r.bank_reference_id.is_empty() {
                validate_external_id(&r.bank_reference_id, "bank_reference_id")?;
            }
            refund_status_from_wire(r.status, "status")?
                .and_then(FinalStatus::from_refund_status)
                .ok_or_else(|| Error::field("status", "must be SUCCEEDED or FAILED"))
        })()
        .map_err(grpc_err)?;
        let order = RefundCenter::apply_reconciliation(
            self,
            &r.refund_id,
            status,
            &r.reason,
            &r.source,
            &r.bank_reference_id,
        )
        .await
        .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reinstate_succeeded(
        &self,
        request: Request<pb::ReinstateSucceededRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        reinstate::reinstate_succeeded_rpc(self, request).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reopen_refund(
        &self,
        request: Request<pb::ReopenRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        reopen::reopen_refund_rpc(self, request).await
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
            id_scheme: String::new(),
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
            ..Default::default()
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
