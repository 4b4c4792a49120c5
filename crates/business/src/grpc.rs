//! The gRPC face of the business layer: `MerchantService` (merchants, API-key auth) and
//! `BusinessAdminService` (forward payment system, refund center, operators), the refund chain's
//! driver, the recovery loop, and typed clients for the clearing and refund centers.
//!
//! # Answers of `CreateRefund`
//!
//! Validation and refundability errors (bad input, unknown trade, window, currency, over-refund,
//! idempotency conflict) are gRPC errors and leave nothing behind. Once the refund is persisted,
//! `CreateRefund` always answers with the refund itself:
//! - PROCESSING: debited and accepted by the refund center (promised);
//! - REJECTED with `error_code`: the debit was refused (e.g. INSUFFICIENT_BALANCE), or the refund
//!   center rejected it and the debit was reversed;
//! - RECEIVED: a peer did not answer; the refund is kept and the recovery loop finishes the chain
//!   with the same keys. The merchant queries it later with `GetRefund` (or repeats the request,
//!   which also drives it).

use std::time::Duration;

use diesel::Connection;

use tonic::metadata::MetadataMap;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tuikuan_db::{db_err, Db};
use tuikuan_kernel::id::{new_id, validate_external_id};
use tuikuan_kernel::{Error, ErrorCode, Result, SharedClock};
use tuikuan_proto::business::v1 as pb;
use tuikuan_proto::business::v1::business_admin_service_server::{
    BusinessAdminService, BusinessAdminServiceServer,
};
use tuikuan_proto::business::v1::merchant_service_server::{
    MerchantService, MerchantServiceServer,
};
use tuikuan_proto::clearing::v1 as clearing_pb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::{grpc_err, peer_err};

use crate::domain::{
    apply_outcome, apply_progress, check_refundable, hash_api_key, outcome_error, ChainState,
    ChannelConfig, Merchant, MerchantRefund, NewPayment, Outcome, OutcomeAction, PaymentFields,
    PeerVerdict, ProgressAction, RefundRequest, RefundStatus, SettleStatus, Trade,
    MAX_REASON_CHARS,
};
use crate::store::{self, Inserted, RefundFilter, ReserveError};

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// Refunds and trades one recovery run handles at most (oldest first); the rest wait for the next.
pub const RECOVERY_BATCH: i64 = 500;
/// Default and largest page of `ListRefunds`.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// A refund moves at most this many steps per drive (the longest path has three).
const MAX_DRIVE_STEPS: usize = 6;

/// How the business layer runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `postgres://…` or an SQLite path.
    pub database_url: String,
    pub clock: SharedClock,
    /// The clearing center (`http://host:port`).
    pub clearing_addr: String,
    /// The refund center (`http://host:port`).
    pub refund_addr: String,
    /// How often the recovery loop runs; `None` runs it only through `RunRecovery`.
    pub job_interval: Option<Duration>,
}

/// Serves `MerchantService` and `BusinessAdminService` on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let svc = Business {
        db,
        clock: config.clock.clone(),
        clearing: ClearingServiceClient::new(tuikuan_proto::client::channel(
            &config.clearing_addr,
        )?),
        refund: RefundServiceClient::new(tuikuan_proto::client::channel(&config.refund_addr)?),
    };
    let job = config.job_interval.map(|every| {
        let svc = svc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = svc.recover().await {
                    tracing::error!(code = %e.code, error = %e.message, "recovery run failed");
                }
            }
        })
    });
    let routes = tonic::service::Routes::new(MerchantServiceServer::new(svc.clone()))
        .add_service(BusinessAdminServiceServer::new(svc));
    let result = tuikuan_proto::server::serve(
        listener,
        routes,
        &[
            <MerchantServiceServer<Business> as tonic::server::NamedService>::NAME,
            <BusinessAdminServiceServer<Business> as tonic::server::NamedService>::NAME,
        ],
        shutdown,
    )
    .await;
    if let Some(job) = job {
        job.abort();
    }
    result
}

/// The service: storage, clock and the two peers it calls.
#[derive(Clone, Debug)]
pub struct Business {
    db: Db,
    clock: SharedClock,
    clearing: ClearingServiceClient<GrpcChannel>,
    refund: RefundServiceClient<GrpcChannel>,
}

/// What one recovery run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryCounts {
    /// In-flight refunds driven.
    pub resumed: u32,
    /// Of those, how many reached ACCEPTED or a final state.
    pub completed: u32,
    /// Of those, how many still wait for a peer.
    pub still_pending: u32,
    /// Unsettled trades the clearing center settled.
    pub payments_settled: u32,
}

impl Business {
    // -----------------------------------------------------------------------------------------
    // Merchant refunds
    // -----------------------------------------------------------------------------------------

    /// Authenticates `authorization: Bearer <api key>`.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Merchant> {
        let key = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::new(ErrorCode::Unauthenticated, "missing bearer api key"))?;
        let hash = hash_api_key(key);
        self.db
            .run(move |c| store::merchant_by_key_hash(c, &hash))
            .await?
            .ok_or_else(|| Error::new(ErrorCode::Unauthenticated, "unknown api key"))
    }

    /// Steps 1 and 2 of the chain: idempotency, then the reservation; then drives the refund.
    async fn create_refund(
        &self,
        merchant_id: &str,
        request: RefundRequest,
    ) -> Result<MerchantRefund> {
        // Two rounds suffice: a lost insert race means the winner's refund is there to re-read.
        for _ in 0..3 {
            let (m, no) = (merchant_id.to_string(), request.merchant_refund_no.clone());
            if let Some(existing) = self
                .db
                .run(move |c| store::refund_by_no(c, &m, &no))
                .await?
            {
                existing.check_repeat(&request)?;
                return self.drive(existing).await;
            }
            let now_ms = self.clock.now_ms();
            let (m, req) = (merchant_id.to_string(), request.clone());
            let reserved = self
                .db
                .run(move |conn| {
                    let result = conn.transaction::<_, ReserveError, _>(|c| {
                        // Another merchant's order is indistinguishable from a missing one.
                        let trade =
                            store::trade_by_order(c, &m, &req.order_no)?.ok_or_else(|| {
                                Error::new(
                                    ErrorCode::TradeNotFound,
                                    format!("no trade with order_no {}", req.order_no),
                                )
                            })?;
                        let channel = store::get_channel(c, &trade.channel)?;
                        check_refundable(&trade, channel.as_ref(), &req, now_ms)?;
                        let refund =
                            MerchantRefund::reserve(new_id("rf"), &m, &trade, &req, now_ms);
                        store::reserve_refund(c, &refund)?;
                        Ok(refund)
                    });
                    match result {
                        Ok(refund) => Ok(Some(refund)),
                        // Rolled back, reservation included; the caller re-reads the winner.
                        Err(ReserveError::Duplicate) => Ok(None),
                        Err(ReserveError::Kernel(e)) => Err(e),
                        Err(ReserveError::Diesel(e)) => Err(db_err(e)),
                    }
                })
                .await;
            match reserved {
                Ok(Some(refund)) => {
                    tracing::info!(refund_id = %refund.refund_id, amount = %refund.amount, "refund reserved");
                    return self.drive(refund).await;
                }
                // A concurrent duplicate won the insert: re-read it (step 1).
                Ok(None) => continue,
                Err(e) => {
                    // A concurrent duplicate may have taken the amount first (its reservation
                    // makes ours exceed the payment): that is a repeat, not a refusal.
                    let (m, no) = (merchant_id.to_string(), request.merchant_refund_no.clone());
                    let existing = self
                        .db
                        .run(move |c| store::refund_by_no(c, &m, &no))
                        .await?;
                    if existing.is_none() {
                        return Err(e);
                    }
                }
            }
        }
        Err(Error::internal(
            "refund number kept changing between insert and read",
        ))
    }

    /// Step 3: moves a refund along the chain as far as the peers allow, persisting each step
    /// before the next call. Every call carries the refund id as its idempotency key, so driving
    /// the same refund again (a repeat, the recovery loop, a second replica) never debits twice.
    #[tracing::instrument(skip_all, fields(refund_id = %refund.refund_id))]
    async fn drive(&self, mut refund: MerchantRefund) -> Result<MerchantRefund> {
        for _ in 0..MAX_DRIVE_STEPS {
            let before = refund.chain_state;
            refund = match before {
                ChainState::Reserved => self.step_debit(refund).await?,
                ChainState::Debited => self.step_hand_over(refund).await?,
                ChainState::Reversing => self.step_reverse(refund).await?,
                ChainState::Accepted
                | ChainState::Succeeded
                | ChainState::Failed
                | ChainState::Rejected => return Ok(refund),
            };
            if refund.chain_state == before {
                // A peer did not answer: the recovery loop carries on later.
                return Ok(refund);
            }
        }
        Ok(refund)
    }

    /// RESERVED: ask the clearing center to debit the merchant.
    async fn step_debit(&self, refund: MerchantRefund) -> Result<MerchantRefund> {
        let request = clearing_pb::RefundDebitRequest {
            refund_id: refund.refund_id.clone(),
            trade_id: refund.trade_id.clone(),
            merchant_id: refund.merchant_id.clone(),
            amount: refund.amount.amount_string(),
            currency: refund.amount.currency().code().to_string(),
        };
        match self.clearing.clone().refund_debit(request).await {
            Ok(answer) => {
                use clearing_pb::DebitStatus as D;
                let debit = answer.into_inner();
                match D::try_from(debit.status).unwrap_or(D::Unspecified) {
                    // The debit posting exists (later states imply it did).
                    D::Debited
                    | D::Completing
                    | D::Completed
                    | D::Reversing
                    | D::Reversed
                    | D::Returning
                    | D::Returned => {
                        self.advance(refund, ChainState::Debited, (None, None))
                            .await
                    }
                    D::Rejected => {
                        tracing::info!("clearing center refused the debit");
                        self.advance(
                            refund,
                            ChainState::Rejected,
                            (
                                Some(ErrorCode::InsufficientBalance.as_str().to_string()),
                                Some("the clearing center refused the debit".to_string()),
                            ),
                        )
                        .await
                    }
                    D::Pending | D::Unspecified => {
                        tracing::warn!(
                            status = debit.status,
                            "debit not confirmed yet; will retry"
                        );
                        Ok(refund)
                    }
                }
            }
            Err(status) => {
                let e = peer_err(status);
                match PeerVerdict::of(e.code) {
                    PeerVerdict::Refused => {
                        tracing::info!(code = %e.code, error = %e.message, "debit refused; refund rejected");
                        self.advance(refund, ChainState::Rejected, error_pair(&e))
                            .await
                    }
                    PeerVerdict::Retry => {
                        log_retry("clearing.RefundDebit", &e);
                        Ok(refund)
                    }
                }
            }
        }
    }

    /// DEBITED: hand the refund to the refund center.
    async fn step_hand_over(&self, refund: MerchantRefund) -> Result<MerchantRefund> {
        let trade_id = refund.trade_id.clone();
        let trade = self
            .db
            .run(move |c| store::get_trade(c, &trade_id))
            .await?
            .ok_or_else(|| {
                Error::internal(format!("trade {} of a refund vanished", refund.trade_id))
            })?;
        let request = refund_pb::CreateRefundRequest {
            refund_id: refund.refund_id.clone(),
            merchant_id: refund.merchant_id.clone(),
            trade_id: trade.trade_id.clone(),
            order_no: trade.order_no.clone(),
            channel: trade.channel.clone(),
            amount: refund.amount.amount_string(),
            currency: refund.amount.currency().code().to_string(),
            trade_paid_at_ms: trade.paid_at_ms,
            payer_card_no: trade.payer_card_no.clone().unwrap_or_default(),
            payer_name: trade.payer_name.clone().unwrap_or_default(),
        };
        match self.refund.clone().create_refund(request).await {
            Ok(order) => {
                let expected_ms = order.into_inner().expected_completion_ms;
                tracing::info!(expected_ms, "refund center accepted the refund");
                self.accept(refund, expected_ms).await
            }
            Err(status) => {
                let e = peer_err(status);
                match PeerVerdict::of(e.code) {
                    PeerVerdict::Refused => {
                        tracing::info!(code = %e.code, error = %e.message, "refund center rejected the refund; reversing the debit");
                        self.advance(refund, ChainState::Reversing, error_pair(&e))
                            .await
                    }
                    PeerVerdict::Retry => {
                        log_retry("refund.CreateRefund", &e);
                        Ok(refund)
                    }
                }
            }
        }
    }

    /// REVERSING: give the merchant its money back, then reject.
    async fn step_reverse(&self, refund: MerchantRefund) -> Result<MerchantRefund> {
        let reason = refund
            .error_message
            .clone()
            .or_else(|| refund.error_code.clone())
            .unwrap_or_else(|| "rejected by the refund center".to_string());
        let request = clearing_pb::ReverseDebitRequest {
            refund_id: refund.refund_id.clone(),
            reason,
        };
        match self.clearing.clone().reverse_debit(request).await {
            Ok(_) => {
                let error = (refund.error_code.clone(), refund.error_message.clone());
                self.advance(refund, ChainState::Rejected, error).await
            }
            Err(status) => {
                let e = peer_err(status);
                if PeerVerdict::of(e.code) == PeerVerdict::Refused {
                    // The debit cannot be reversed (e.g. it completed): money may be at stake, so
                    // the refund stays REVERSING for an operator and is retried each run.
                    tracing::error!(code = %e.code, error = %e.message, "clearing center refused to reverse the debit");
                } else {
                    log_retry("clearing.ReverseDebit", &e);
                }
                Ok(refund)
            }
        }
    }

    /// Persists `refund -> to` (releasing the reservation for REJECTED and FAILED) and returns the
    /// refund as stored, whoever won the move.
    async fn advance(
        &self,
        refund: MerchantRefund,
        to: ChainState,
        error: (Option<String>, Option<String>),
    ) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        self.db
            .transaction(move |c| {
                if !store::advance_refund(c, &refund, to, error, now_ms)? {
                    tracing::debug!(to = %to, "another driver moved the refund first");
                }
                store::get_refund(c, &refund.refund_id)?
                    .ok_or_else(|| Error::internal(format!("refund {} vanished", refund.refund_id)))
            })
            .await
    }

    /// Persists `refund -> ACCEPTED` with the refund center's expected completion, in one
    /// transaction, and returns the refund as stored.
    async fn accept(&self, refund: MerchantRefund, expected_ms: i64) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        self.db
            .transaction(move |c| {
                if !store::advance_refund(c, &refund, ChainState::Accepted, (None, None), now_ms)? {
                    tracing::debug!("another driver moved the refund first");
                }
                store::set_expected_completion(c, &refund.refund_id, expected_ms, now_ms)?;
                store::get_refund(c, &refund.refund_id)?
                    .ok_or_else(|| Error::internal(format!("refund {} vanished", refund.refund_id)))
            })
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Payments, outcomes, recovery
    // -----------------------------------------------------------------------------------------

    async fn record_payment(&self, payment: NewPayment) -> Result<Trade> {
        let now_ms = self.clock.now_ms();
        let trade = self
            .db
            .run(move |c| {
                if store::get_merchant(c, &payment.merchant_id)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::MerchantNotFound,
                        format!("no merchant {}", payment.merchant_id),
                    ));
                }
                if store::get_channel(c, &payment.channel)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::ChannelNotFound,
                        format!("channel {} is not configured", payment.channel),
                    ));
                }
                let trade = payment.clone().into_trade(new_id("tr"), now_ms);
                match store::insert_trade(c, &trade)? {
                    Inserted::New(t) => Ok(t),
                    Inserted::Existing(t) if payment.matches(&t) => Ok(t),
                    Inserted::Existing(_) => Err(Error::new(
                        ErrorCode::IdempotencyConflict,
                        format!(
                            "order_no {} was recorded with different content",
                            payment.order_no
                        ),
                    )),
                }
            })
            .await?;
        match trade.settle_status {
            SettleStatus::Settled => Ok(trade),
            SettleStatus::Unsettled => Ok(self.settle(trade).await?.0),
        }
    }

    /// Asks the clearing center to settle a trade (idempotent by trade id); a trade it cannot
    /// settle now stays UNSETTLED for the recovery loop. Returns the trade and whether it settled.
    #[tracing::instrument(skip_all, fields(trade_id = %trade.trade_id))]
    async fn settle(&self, mut trade: Trade) -> Result<(Trade, bool)> {
        let request = clearing_pb::SettlePaymentRequest {
            trade_id: trade.trade_id.clone(),
            merchant_id: trade.merchant_id.clone(),
            channel: trade.channel.clone(),
            amount: trade.amount.amount_string(),
            currency: trade.amount.currency().code().to_string(),
        };
        match self.clearing.clone().settle_payment(request).await {
            Ok(_) => {
                let id = trade.trade_id.clone();
                self.db.run(move |c| store::mark_settled(c, &id)).await?;
                trade.settle_status = SettleStatus::Settled;
                Ok((trade, true))
            }
            Err(status) => {
                let e = peer_err(status);
                if e.is_retryable() {
                    log_retry("clearing.SettlePayment", &e);
                } else {
                    tracing::error!(code = %e.code, error = %e.message, "clearing center refused to settle the payment");
                }
                Ok((trade, false))
            }
        }
    }

    /// Applies an outcome the refund center reported (and its expected completion when positive)
    /// in one transaction: monotone and idempotent; a FAILED outcome and a returned payout release
    /// the reservation in the same transaction.
    async fn report_outcome(
        &self,
        refund_id: String,
        outcome: Outcome,
        reason: String,
        expected_ms: i64,
    ) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        self.db
            .transaction(move |c| {
                // A lost conditional update means someone moved it: re-read and decide again.
                for _ in 0..3 {
                    let refund = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                        Error::new(ErrorCode::RefundNotFound, format!("no refund {refund_id}"))
                    })?;
                    let moved = match apply_outcome(refund.chain_state, outcome)? {
                        OutcomeAction::AlreadyApplied => true,
                        OutcomeAction::Apply(to) => {
                            let error = outcome_error(outcome, &reason);
                            store::advance_refund(c, &refund, to, error, now_ms)?
                        }
                        OutcomeAction::Return => {
                            let error = outcome_error(outcome, &reason);
                            let moved = store::return_refund(c, &refund, error, now_ms)?;
                            if moved {
                                tracing::warn!(refund_id = %refund_id, reason = %reason, "payout returned: SUCCEEDED refund now FAILED");
                            }
                            moved
                        }
                    };
                    if moved {
                        store::set_expected_completion(c, &refund_id, expected_ms, now_ms)?;
                        return store::get_refund(c, &refund_id)?.ok_or_else(|| {
                            Error::internal(format!("refund {refund_id} vanished"))
                        });
                    }
                }
                Err(Error::internal(format!("refund {refund_id} kept changing")))
            })
            .await
    }

    /// Applies a progress report (PROCESSING with a new expected completion, e.g. after a
    /// fallback to another method): accepts a DEBITED refund, updates an ACCEPTED one, ignores a
    /// final one.
    async fn report_progress(&self, refund_id: String, expected_ms: i64) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        self.db
            .transaction(move |c| {
                let refund = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                    Error::new(ErrorCode::RefundNotFound, format!("no refund {refund_id}"))
                })?;
                match apply_progress(refund.chain_state)? {
                    ProgressAction::Ignore => return Ok(refund),
                    ProgressAction::Accept => {
                        store::advance_refund(
                            c,
                            &refund,
                            ChainState::Accepted,
                            (None, None),
                            now_ms,
                        )?;
                    }
                    ProgressAction::Update => {}
                }
                store::set_expected_completion(c, &refund_id, expected_ms, now_ms)?;
                store::get_refund(c, &refund_id)?
                    .ok_or_else(|| Error::internal(format!("refund {refund_id} vanished")))
            })
            .await
    }

    /// Step 4: drives every unfinished chain (oldest first) and settles unsettled trades. The job
    /// loop and `RunRecovery` both call this.
    #[tracing::instrument(skip_all)]
    pub async fn recover(&self) -> Result<RecoveryCounts> {
        let mut counts = RecoveryCounts::default();
        let batch = self
            .db
            .run(|c| store::in_flight_refunds(c, RECOVERY_BATCH))
            .await?;
        for refund in batch {
            counts.resumed += 1;
            let id = refund.refund_id.clone();
            match self.drive(refund).await {
                Ok(r) if r.chain_state.is_in_flight() => counts.still_pending += 1,
                Ok(_) => counts.completed += 1,
                Err(e) => {
                    tracing::error!(refund_id = %id, code = %e.code, error = %e.message, "recovery could not drive refund");
                    counts.still_pending += 1;
                }
            }
        }
        let trades = self
            .db
            .run(|c| store::unsettled_trades(c, RECOVERY_BATCH))
            .await?;
        for trade in trades {
            if self.settle(trade).await?.1 {
                counts.payments_settled += 1;
            }
        }
        if counts != RecoveryCounts::default() {
            tracing::info!(?counts, "recovery run");
        }
        Ok(counts)
    }
}

fn error_pair(e: &Error) -> (Option<String>, Option<String>) {
    (
        Some(e.code.as_str().to_string()),
        Some(e.message.chars().take(MAX_REASON_CHARS).collect()),
    )
}

fn log_retry(call: &str, e: &Error) {
    if e.code == ErrorCode::Unavailable || e.code == ErrorCode::InProgress {
        tracing::warn!(call, code = %e.code, error = %e.message, "peer unavailable; will retry with the same key");
    } else {
        tracing::error!(call, code = %e.code, error = %e.message, "peer failed; will retry with the same key");
    }
}

// ---------------------------------------------------------------------------------------------
// Wire conversions
// ---------------------------------------------------------------------------------------------

fn status_to_wire(s: RefundStatus) -> pb::RefundStatus {
    match s {
        RefundStatus::Received => pb::RefundStatus::Received,
        RefundStatus::Rejected => pb::RefundStatus::Rejected,
        RefundStatus::Processing => pb::RefundStatus::Processing,
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    }
}

fn status_from_wire(s: i32, field: &str) -> Result<Option<RefundStatus>> {
    match pb::RefundStatus::try_from(s) {
        Ok(pb::RefundStatus::Unspecified) => Ok(None),
        Ok(pb::RefundStatus::Received) => Ok(Some(RefundStatus::Received)),
        Ok(pb::RefundStatus::Rejected) => Ok(Some(RefundStatus::Rejected)),
        Ok(pb::RefundStatus::Processing) => Ok(Some(RefundStatus::Processing)),
        Ok(pb::RefundStatus::Succeeded) => Ok(Some(RefundStatus::Succeeded)),
        Ok(pb::RefundStatus::Failed) => Ok(Some(RefundStatus::Failed)),
        Err(_) => Err(Error::field(field, format!("unknown status {s}"))),
    }
}

fn refund_to_wire(r: &MerchantRefund) -> pb::Refund {
    // Only the final failures carry a code for the merchant; REVERSING's reason stays internal
    // until the reversal is done.
    let (error_code, error_message) = match r.chain_state {
        ChainState::Rejected | ChainState::Failed => (
            r.error_code.clone().unwrap_or_default(),
            r.error_message.clone().unwrap_or_default(),
        ),
        _ => (String::new(), String::new()),
    };
    pb::Refund {
        refund_id: r.refund_id.clone(),
        merchant_id: r.merchant_id.clone(),
        merchant_refund_no: r.merchant_refund_no.clone(),
        order_no: r.order_no.clone(),
        amount: r.amount.amount_string(),
        currency: r.amount.currency().code().to_string(),
        status: status_to_wire(r.status()) as i32,
        error_code,
        error_message,
        reason: r.reason.clone(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        expected_completion_ms: r.expected_completion_ms,
    }
}

fn trade_to_wire(t: &Trade) -> pb::Trade {
    pb::Trade {
        trade_id: t.trade_id.clone(),
        merchant_id: t.merchant_id.clone(),
        order_no: t.order_no.clone(),
        channel: t.channel.clone(),
        amount: t.amount.amount_string(),
        currency: t.amount.currency().code().to_string(),
        paid_at_ms: t.paid_at_ms,
        refunded: t.refunded.amount_string(),
        settle_status: match t.settle_status {
            SettleStatus::Unsettled => pb::SettleStatus::Unsettled,
            SettleStatus::Settled => pb::SettleStatus::Settled,
        } as i32,
        payer_card_masked: t.masked_card(),
    }
}

fn channel_to_wire(c: &ChannelConfig) -> pb::Channel {
    pb::Channel {
        code: c.code.clone(),
        refund_window_days: c.refund_window_days,
        enabled: c.enabled,
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

#[tonic::async_trait]
impl MerchantService for Business {
    #[tracing::instrument(skip_all, fields(merchant_id = tracing::field::Empty, refund_id = tracing::field::Empty))]
    async fn create_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let merchant = self
            .authenticate(request.metadata())
            .await
            .map_err(grpc_err)?;
        let span = tracing::Span::current();
        span.record("merchant_id", merchant.merchant_id.as_str());
        let r = request.into_inner();
        let req = RefundRequest::validate(
            &r.merchant_refund_no,
            &r.order_no,
            &r.amount,
            &r.currency,
            &r.reason,
        )
        .map_err(grpc_err)?;
        let refund = self
            .create_refund(&merchant.merchant_id, req)
            .await
            .map_err(grpc_err)?;
        span.record("refund_id", refund.refund_id.as_str());
        Ok(Response::new(refund_to_wire(&refund)))
    }

    #[tracing::instrument(skip_all, fields(merchant_id = tracing::field::Empty))]
    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let merchant = self
            .authenticate(request.metadata())
            .await
            .map_err(grpc_err)?;
        tracing::Span::current().record("merchant_id", merchant.merchant_id.as_str());
        let no = request.into_inner().merchant_refund_no;
        validate_external_id(&no, "merchant_refund_no").map_err(grpc_err)?;
        let m = merchant.merchant_id.clone();
        let refund = self
            .db
            .run(move |c| {
                store::refund_by_no(c, &m, &no)?
                    .ok_or_else(|| Error::new(ErrorCode::RefundNotFound, format!("no refund {no}")))
            })
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(refund_to_wire(&refund)))
    }
}

#[tonic::async_trait]
impl BusinessAdminService for Business {
    #[tracing::instrument(skip_all)]
    async fn create_merchant(
        &self,
        request: Request<pb::CreateMerchantRequest>,
    ) -> Result<Response<pb::Merchant>, Status> {
        let r = request.into_inner();
        let merchant = Merchant::new(&r.merchant_id, &r.name, &r.api_key, self.clock.now_ms())
            .map_err(grpc_err)?;
        let stored = self
            .db
            .run(move |c| match store::insert_merchant(c, &merchant)? {
                Inserted::New(m) => Ok(m),
                Inserted::Existing(m) if m.same_content(&merchant) => Ok(m),
                Inserted::Existing(m) => Err(Error::new(
                    ErrorCode::IdempotencyConflict,
                    format!("merchant {} exists with different content", m.merchant_id),
                )),
            })
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::Merchant {
            merchant_id: stored.merchant_id,
            name: stored.name,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_channel(
        &self,
        request: Request<pb::Channel>,
    ) -> Result<Response<pb::Channel>, Status> {
        let r = request.into_inner();
        let channel =
            ChannelConfig::new(&r.code, r.refund_window_days, r.enabled).map_err(grpc_err)?;
        let now_ms = self.clock.now_ms();
        let stored = channel.clone();
        self.db
            .run(move |c| store::upsert_channel(c, &stored, now_ms))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(channel_to_wire(&channel)))
    }

    #[tracing::instrument(skip_all, fields(trade_id = tracing::field::Empty))]
    async fn record_payment(
        &self,
        request: Request<pb::RecordPaymentRequest>,
    ) -> Result<Response<pb::Trade>, Status> {
        let r = request.into_inner();
        let payment = NewPayment::validate(PaymentFields {
            merchant_id: &r.merchant_id,
            order_no: &r.order_no,
            channel: &r.channel,
            amount: &r.amount,
            currency: &r.currency,
            paid_at_ms: r.paid_at_ms,
            payer_card_no: &r.payer_card_no,
            payer_name: &r.payer_name,
        })
        .map_err(grpc_err)?;
        let trade = self.record_payment(payment).await.map_err(grpc_err)?;
        tracing::Span::current().record("trade_id", trade.trade_id.as_str());
        Ok(Response::new(trade_to_wire(&trade)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_trade(
        &self,
        request: Request<pb::GetTradeRequest>,
    ) -> Result<Response<pb::Trade>, Status> {
        let r = request.into_inner();
        validate_external_id(&r.merchant_id, "merchant_id").map_err(grpc_err)?;
        validate_external_id(&r.order_no, "order_no").map_err(grpc_err)?;
        let trade = self
            .db
            .run(move |c| {
                store::trade_by_order(c, &r.merchant_id, &r.order_no)?.ok_or_else(|| {
                    Error::new(
                        ErrorCode::TradeNotFound,
                        format!("no trade with order_no {}", r.order_no),
                    )
                })
            })
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(trade_to_wire(&trade)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id.chars().take(64).collect::<String>()))]
    async fn report_refund_outcome(
        &self,
        request: Request<pb::ReportRefundOutcomeRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let r = request.into_inner();
        validate_external_id(&r.refund_id, "refund_id").map_err(grpc_err)?;
        if r.reason.chars().count() > MAX_REASON_CHARS {
            return Err(grpc_err(Error::field(
                "reason",
                format!("longer than {MAX_REASON_CHARS} characters"),
            )));
        }
        if r.expected_completion_ms < 0 {
            return Err(grpc_err(Error::field(
                "expected_completion_ms",
                "must not be negative",
            )));
        }
        let status = status_from_wire(r.status, "status").map_err(grpc_err)?;
        let outcome = match (status, r.returned) {
            (Some(RefundStatus::Succeeded), false) => Outcome::Succeeded,
            (Some(RefundStatus::Failed), false) => Outcome::Failed,
            (Some(RefundStatus::Failed), true) => Outcome::Returned,
            (_, true) => {
                return Err(grpc_err(Error::field(
                    "returned",
                    "a returned payout is reported with status FAILED",
                )))
            }
            // Progress: only the expected completion changes.
            (Some(RefundStatus::Processing), false) if r.expected_completion_ms > 0 => {
                let refund = self
                    .report_progress(r.refund_id, r.expected_completion_ms)
                    .await
                    .map_err(grpc_err)?;
                tracing::info!(state = %refund.chain_state, expected_ms = r.expected_completion_ms, "refund progress reported");
                return Ok(Response::new(refund_to_wire(&refund)));
            }
            _ => {
                return Err(grpc_err(Error::field(
                    "status",
                    "must be SUCCEEDED or FAILED (or PROCESSING with expected_completion_ms)",
                )))
            }
        };
        let refund = self
            .report_outcome(r.refund_id, outcome, r.reason, r.expected_completion_ms)
            .await
            .map_err(grpc_err)?;
        tracing::info!(state = %refund.chain_state, "refund outcome reported");
        Ok(Response::new(refund_to_wire(&refund)))
    }

    async fn run_recovery(
        &self,
        _request: Request<pb::RunRecoveryRequest>,
    ) -> Result<Response<pb::RecoveryReport>, Status> {
        let counts = self
            .recover()
            .instrument(tracing::info_span!("run_recovery"))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::RecoveryReport {
            resumed: counts.resumed,
            completed: counts.completed,
            still_pending: counts.still_pending,
            payments_settled: counts.payments_settled,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let r = request.into_inner();
        let merchant_id = match r.merchant_id.as_str() {
            "" => None,
            m => {
                validate_external_id(m, "merchant_id").map_err(grpc_err)?;
                Some(m.to_string())
            }
        };
        let after = match r.after.as_str() {
            "" => None,
            a => {
                validate_external_id(a, "after").map_err(grpc_err)?;
                Some(a.to_string())
            }
        };
        let states = status_from_wire(r.status, "status")
            .map_err(grpc_err)?
            .map(|s| s.chain_states().to_vec())
            .unwrap_or_default();
        let limit = match i64::from(r.limit) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let filter = RefundFilter {
            merchant_id,
            states,
            after,
            limit,
        };
        let refunds = self
            .db
            .run(move |c| store::list_refunds(c, &filter))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: refunds.iter().map(refund_to_wire).collect(),
        }))
    }
}
