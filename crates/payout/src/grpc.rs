//! The payout center as a gRPC service (`tuikuan.payout.v1.PayoutService`): configuration,
//! `serve`, the payout cycle (CREATED payouts to the bank), bank callbacks, and the delivery of
//! status updates to the refund center (`RefundService.PayoutUpdate`) from the outbox.
//!
//! # Reporting to the refund center
//! Every status change (SENT, PAID, FAILED — a synchronous refusal included — and RETURNED)
//! writes a row to the `payout_updates` outbox in the transaction that makes the change. Right
//! after the commit the payout's pending rows are delivered, in sequence order; a row the refund
//! center did not answer stays pending (and holds back the payout's later rows) until the job
//! loop or `RunPayoutCycle` delivers it. A deliverer claims a row with a short lease first, so two
//! deliverers never send the same row at once; the refund center applies updates idempotently
//! and monotonically by sequence, so a redelivery after a lost answer changes nothing there.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};
use tuikuan_proto::bank::v1 as bank_pb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::payout::v1 as pb;
use tuikuan_proto::payout::v1::payout_service_server::{PayoutService, PayoutServiceServer};
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::{grpc_err, peer_err};

use crate::domain::{
    callback_effect, BankCallback, CallbackEffect, NewPayout, Payout, PayoutStatus, PayoutUpdate,
};
use crate::store;

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// Payouts sent per cycle when the request does not say.
pub const DEFAULT_CYCLE_LIMIT: u32 = 100;
/// The most payouts one cycle sends.
pub const MAX_CYCLE_LIMIT: u32 = 1000;
/// Default and largest page of `ListPayouts`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Optimistic retries of a callback that lost a race with another update.
const CALLBACK_RETRIES: usize = 5;
/// Payouts whose pending updates one outbox run delivers at most.
pub const OUTBOX_BATCH: i64 = 500;
/// How long a deliverer holds its claim on an outbox row (clock milliseconds); a deliverer that
/// died mid-delivery is replaced after this.
const DELIVERY_LEASE_MS: i64 = 60_000;
/// The most updates of one payout delivered in one go (a payout has at most three changes).
const MAX_UPDATES_PER_PAYOUT: usize = 8;

/// The payout center's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The bank subsystem (`BankService`), e.g. `http://127.0.0.1:50070`.
    pub bank_addr: String,
    /// The refund center (`RefundService`) that status updates are reported to. `None`: updates
    /// are recorded in the outbox but not delivered (until an address is configured).
    pub refund_addr: Option<String>,
    /// Period of the payout cycle (which also retries undelivered updates); `None` runs it only
    /// through `RunPayoutCycle`.
    pub job_interval: Option<Duration>,
    /// Mutual TLS as `payout` (or plaintext, only when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows). Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
}

impl Config {
    pub fn new(
        database_url: impl Into<String>,
        clock: SharedClock,
        bank_addr: impl Into<String>,
        transport: tuikuan_proto::tls::Transport,
    ) -> Config {
        Config {
            database_url: database_url.into(),
            clock,
            bank_addr: bank_addr.into(),
            refund_addr: None,
            job_interval: None,
            transport,
            staff: tuikuan_auth::StaffConfig::default(),
        }
    }

    /// The same configuration with staff security.
    pub fn with_staff(mut self, staff: tuikuan_auth::StaffConfig) -> Config {
        self.staff = staff;
        self
    }

    /// The same configuration, reporting to the refund center at `refund_addr`.
    pub fn with_refund_addr(mut self, refund_addr: impl Into<String>) -> Config {
        self.refund_addr = Some(refund_addr.into());
        self
    }
}

/// Serves the payout center on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let desk = config.staff.desk("payout", &db, config.clock.clone())?;
    let auth = &config.staff.auth;
    let bank = BankServiceClient::new(
        config
            .transport
            .channel(tuikuan_proto::tls::Principal::Bank, &config.bank_addr)?,
    );
    let refund = match config.refund_addr.as_deref() {
        Some(addr) if !addr.is_empty() => Some(RefundServiceClient::new(
            config
                .transport
                .channel(tuikuan_proto::tls::Principal::Refund, addr)?,
        )),
        _ => None,
    };
    let center = Arc::new(PayoutCenter {
        db,
        clock: config.clock.clone(),
        bank,
        refund,
    });
    let job = config.job_interval.map(|every| {
        let center = center.clone();
        tuikuan_proto::jobs::every("payout cycle", every, move || {
            let center = center.clone();
            async move {
                match center.run_cycle(DEFAULT_CYCLE_LIMIT).await {
                    Ok(r) if r.sent + r.rejected + r.errors + r.updates_delivered > 0 => {
                        tracing::info!(
                            sent = r.sent,
                            rejected = r.rejected,
                            errors = r.errors,
                            updates_delivered = r.updates_delivered,
                            updates_pending = r.updates_pending,
                            "payout cycle"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(code = %e.code, error = %e.message, "payout cycle failed")
                    }
                }
            }
        })
    });
    let svc = PayoutSvc { center };
    let result = tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        tonic::service::Routes::new(auth.guard_audited(PayoutServiceServer::new(svc), &desk))
            .add_service(
                tuikuan_auth::StaffServer::new(desk, tuikuan_auth::NoProposals).guarded(auth),
            ),
        &[
            <PayoutServiceServer<PayoutSvc> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    )
    .await;
    tuikuan_proto::jobs::stop(job).await;
    result
}

/// What one payout cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Accepted by the bank: now SENT.
    pub sent: u32,
    /// Refused by the bank: now FAILED.
    pub rejected: u32,
    /// No answer (or an error) from the bank: still CREATED, retried next cycle with the same id.
    pub errors: u32,
    /// Status updates delivered to the refund center (this cycle's and earlier ones retried).
    pub updates_delivered: u32,
    /// Payouts whose updates are still undelivered after the cycle.
    pub updates_pending: u32,
}

/// What one outbox run delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxReport {
    pub delivered: u32,
    /// Payouts left with undelivered updates (refund center down, or another deliverer busy).
    pub pending: u32,
}

/// The payout center's logic over its database and the bank.
#[derive(Debug)]
pub struct PayoutCenter {
    db: Db,
    clock: SharedClock,
    bank: BankServiceClient<Channel>,
    refund: Option<RefundServiceClient<Channel>>,
}

impl PayoutCenter {
    /// Creates a payout, or returns the existing one for a repeat of the same request.
    pub async fn create(&self, new: NewPayout) -> Result<Payout> {
        let fingerprint = new.fingerprint();
        if let Some(existing) = self.get(&new.payout_id).await? {
            return same_request(existing, &fingerprint);
        }
        let now = self.clock.now_ms();
        let payout = Payout {
            payout_id: new.payout_id,
            refund_id: new.refund_id,
            channel: new.channel,
            card: new.card,
            holder_name: new.holder_name,
            amount: new.amount,
            status: PayoutStatus::Created,
            bank_ref: String::new(),
            reason: String::new(),
            callback_seq: 0,
            fingerprint: fingerprint.clone(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let row = payout.clone();
        if self.db.run(move |c| store::insert_payout(c, &row)).await? {
            tracing::info!(
                payout_id = %payout.payout_id,
                refund_id = %payout.refund_id,
                card = %payout.card.masked(),
                amount = %payout.amount,
                "payout created"
            );
            return Ok(payout);
        }
        let existing = self
            .get(&payout.payout_id)
            .await?
            .ok_or_else(|| Error::internal("payout vanished after a duplicate insert"))?;
        same_request(existing, &fingerprint)
    }

    /// Payouts in id order (see [`store::list_payouts`]); `limit` is clamped to 1..=1000.
    pub async fn list(
        &self,
        status: Option<PayoutStatus>,
        refund_id: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Payout>> {
        let limit = i64::from(match limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        });
        self.db
            .run(move |c| {
                store::list_payouts(c, status, refund_id.as_deref(), after.as_deref(), limit)
            })
            .await
    }

    pub async fn get(&self, payout_id: &str) -> Result<Option<Payout>> {
        let id = payout_id.to_string();
        self.db.run(move |c| store::get_payout(c, &id)).await
    }

    /// Sends CREATED payouts to the bank (idempotent there by payout_id, so a cycle that races
    /// another, or retries after a timeout, cannot pay twice).
    pub async fn run_cycle(&self, limit: u32) -> Result<CycleReport> {
        let limit = if limit == 0 {
            DEFAULT_CYCLE_LIMIT
        } else {
            limit.min(MAX_CYCLE_LIMIT)
        };
        let batch = self
            .db
            .run(move |c| store::created_payouts(c, i64::from(limit)))
            .await?;
        let mut report = CycleReport::default();
        for p in batch {
            let request = bank_pb::SubmitPayoutRequest {
                channel: p.channel.clone(),
                payout_id: p.payout_id.clone(),
                card_no: p.card.expose().to_string(),
                holder_name: p.holder_name.clone(),
                amount: p.amount.amount_string(),
                currency: p.amount.currency().code().to_string(),
                // The bank keeps the refund on its record (the payment's reference).
                refund_id: p.refund_id.clone(),
            };
            let answer = self
                .bank
                .clone()
                .submit_payout(request)
                .await
                .map_err(peer_err)
                .map(|r| r.into_inner());
            match answer {
                Ok(a) => {
                    let (to, reason) = if a.accepted {
                        (PayoutStatus::Sent, String::new())
                    } else {
                        (PayoutStatus::Failed, a.reason.clone())
                    };
                    let now = self.clock.now_ms();
                    let id = p.payout_id.clone();
                    let seq = p.callback_seq;
                    let bank_ref = a.bank_ref.clone();
                    let won = self
                        .db
                        .transaction(move |c| {
                            store::move_status(
                                c,
                                &id,
                                PayoutStatus::Created,
                                seq,
                                to,
                                &bank_ref,
                                &reason,
                                seq,
                                now,
                            )
                        })
                        .await?;
                    tracing::info!(
                        payout_id = %p.payout_id,
                        card = %p.card.masked(),
                        accepted = a.accepted,
                        bank_ref = %a.bank_ref,
                        reason = %a.reason,
                        won,
                        "payout sent to the bank"
                    );
                    if a.accepted {
                        report.sent += 1;
                    } else {
                        report.rejected += 1;
                    }
                    if won {
                        report.updates_delivered += self.deliver_payout(&p.payout_id).await.0;
                    }
                }
                Err(e) => {
                    if e.is_retryable() {
                        tracing::warn!(payout_id = %p.payout_id, code = %e.code, error = %e.message, "bank unavailable; payout stays CREATED");
                    } else {
                        tracing::error!(payout_id = %p.payout_id, code = %e.code, error = %e.message, "bank refused the request; payout stays CREATED");
                    }
                    report.errors += 1;
                }
            }
        }
        // Retry what earlier changes could not deliver.
        let outbox = self.deliver_updates(OUTBOX_BATCH).await?;
        report.updates_delivered += outbox.delivered;
        report.updates_pending = outbox.pending;
        Ok(report)
    }

    /// Delivers the undelivered status updates of up to `limit` payouts, in sequence order per
    /// payout (the job loop and `RunPayoutCycle` run it). Without a refund center configured,
    /// nothing is delivered.
    pub async fn deliver_updates(&self, limit: i64) -> Result<OutboxReport> {
        let mut report = OutboxReport::default();
        if self.refund.is_none() {
            return Ok(report);
        }
        let payouts = self
            .db
            .run(move |c| store::payouts_with_undelivered(c, limit))
            .await?;
        for payout_id in payouts {
            let (delivered, done) = self.deliver_payout(&payout_id).await;
            report.delivered += delivered;
            if !done {
                report.pending += 1;
            }
        }
        Ok(report)
    }

    /// Delivers one payout's undelivered updates in order, stopping at the first that fails (it
    /// holds back the later ones) or that another deliverer holds. Returns how many it delivered
    /// and whether none is left. Errors are logged, not returned: the change itself is committed
    /// and the next run retries the delivery.
    async fn deliver_payout(&self, payout_id: &str) -> (u32, bool) {
        let Some(refund) = self.refund.clone() else {
            return (0, false);
        };
        let mut delivered = 0;
        for _ in 0..MAX_UPDATES_PER_PAYOUT {
            match self.deliver_next(&refund, payout_id).await {
                Ok(Delivery::Delivered) => delivered += 1,
                Ok(Delivery::NothingLeft) => return (delivered, true),
                Ok(Delivery::Busy) => return (delivered, false),
                Err(e) => {
                    if e.is_retryable() {
                        tracing::warn!(%payout_id, code = %e.code, error = %e.message, "payout update not delivered; will retry");
                    } else {
                        tracing::error!(%payout_id, code = %e.code, error = %e.message, "refund center refused a payout update; will retry");
                    }
                    return (delivered, false);
                }
            }
        }
        (delivered, false)
    }

    async fn deliver_next(
        &self,
        refund: &RefundServiceClient<Channel>,
        payout_id: &str,
    ) -> Result<Delivery> {
        let id = payout_id.to_string();
        let Some(update) = self
            .db
            .run(move |c| store::next_undelivered(c, &id))
            .await?
        else {
            return Ok(Delivery::NothingLeft);
        };
        let now = self.clock.now_ms();
        let (id, seq) = (update.payout_id.clone(), update.sequence);
        let claimed = self
            .db
            .run(move |c| {
                store::claim_update(c, &id, seq, now, now.saturating_add(DELIVERY_LEASE_MS))
            })
            .await?;
        if !claimed {
            return Ok(Delivery::Busy);
        }
        let request = refund_pb::PayoutUpdateRequest {
            payout_id: update.payout_id.clone(),
            refund_id: update.refund_id.clone(),
            status: update.status.as_str().to_string(),
            reason: update.reason.clone(),
            sequence: u64::try_from(update.sequence).unwrap_or(0),
            bank_ref: update.bank_ref.clone(),
        };
        let answer = refund
            .clone()
            .payout_update(request)
            .await
            .map_err(peer_err);
        let (id, seq) = (update.payout_id.clone(), update.sequence);
        match answer {
            Ok(r) => {
                let now = self.clock.now_ms();
                self.db
                    .run(move |c| store::mark_delivered(c, &id, seq, now))
                    .await?;
                tracing::info!(
                    payout_id = %update.payout_id,
                    refund_id = %update.refund_id,
                    status = update.status.as_str(),
                    sequence = update.sequence,
                    applied = r.into_inner().applied,
                    "payout update delivered to the refund center"
                );
                Ok(Delivery::Delivered)
            }
            Err(e) => {
                let message = format!("{}: {}", e.code, e.message);
                self.db
                    .run(move |c| store::release_update(c, &id, seq, &message))
                    .await?;
                Err(e)
            }
        }
    }

    /// The outbox rows of a payout, in sequence order (for operators and tests).
    pub async fn updates(&self, payout_id: &str) -> Result<Vec<PayoutUpdate>> {
        let id = payout_id.to_string();
        self.db.run(move |c| store::updates_of(c, &id)).await
    }

    /// Applies a bank callback: monotone by sequence and along the state machine. Returns whether
    /// it changed the payout.
    pub async fn bank_callback(&self, cb: BankCallback) -> Result<bool> {
        for _ in 0..CALLBACK_RETRIES {
            let current = self.get(&cb.payout_id).await?.ok_or_else(|| {
                Error::new(
                    ErrorCode::PayoutNotFound,
                    format!("payout {} does not exist", cb.payout_id),
                )
            })?;
            let to = match callback_effect(&current, &cb)? {
                CallbackEffect::Ignore(why) => {
                    tracing::info!(payout_id = %cb.payout_id, status = cb.status.as_str(), sequence = cb.sequence, why, "bank callback ignored");
                    return Ok(false);
                }
                CallbackEffect::Apply { status } => status,
            };
            let bank_ref = if current.bank_ref.is_empty() {
                cb.bank_ref.clone()
            } else {
                current.bank_ref.clone()
            };
            let reason = match to {
                PayoutStatus::Failed | PayoutStatus::Returned => cb.reason.clone(),
                _ => current.reason.clone(),
            };
            let now = self.clock.now_ms();
            let id = cb.payout_id.clone();
            let (from, from_seq, seq) = (current.status, current.callback_seq, cb.sequence);
            let won = self
                .db
                .transaction(move |c| {
                    store::move_status(c, &id, from, from_seq, to, &bank_ref, &reason, seq, now)
                })
                .await?;
            if won {
                self.deliver_payout(&cb.payout_id).await;
                tracing::info!(
                    payout_id = %cb.payout_id,
                    card = %current.card.masked(),
                    from = from.as_str(),
                    to = to.as_str(),
                    sequence = seq,
                    "bank callback applied"
                );
                return Ok(true);
            }
        }
        Err(Error::unavailable(format!(
            "payout {} is changing concurrently; retry the callback",
            cb.payout_id
        )))
    }
}

/// What one delivery attempt found.
enum Delivery {
    Delivered,
    NothingLeft,
    /// Another deliverer holds the payout's next update.
    Busy,
}

fn same_request(existing: Payout, fingerprint: &str) -> Result<Payout> {
    if existing.fingerprint != fingerprint {
        return Err(Error::new(
            ErrorCode::IdempotencyConflict,
            format!(
                "payout_id: {} was used before with other content",
                existing.payout_id
            ),
        ));
    }
    Ok(existing)
}

/// Domain status -> wire.
pub fn status_to_wire(s: PayoutStatus) -> pb::PayoutStatus {
    match s {
        PayoutStatus::Created => pb::PayoutStatus::Created,
        PayoutStatus::Sent => pb::PayoutStatus::Sent,
        PayoutStatus::Paid => pb::PayoutStatus::Paid,
        PayoutStatus::Failed => pb::PayoutStatus::Failed,
        PayoutStatus::Returned => pb::PayoutStatus::Returned,
    }
}

/// Wire status -> domain (UNSPECIFIED and unknown values are invalid).
pub fn status_from_wire(v: i32, field: &str) -> Result<PayoutStatus> {
    match pb::PayoutStatus::try_from(v) {
        Ok(pb::PayoutStatus::Created) => Ok(PayoutStatus::Created),
        Ok(pb::PayoutStatus::Sent) => Ok(PayoutStatus::Sent),
        Ok(pb::PayoutStatus::Paid) => Ok(PayoutStatus::Paid),
        Ok(pb::PayoutStatus::Failed) => Ok(PayoutStatus::Failed),
        Ok(pb::PayoutStatus::Returned) => Ok(PayoutStatus::Returned),
        _ => Err(Error::field(field, format!("{v} is not a payout status"))),
    }
}

/// A payout on the wire: the card number masked, never in full.
pub fn payout_to_wire(p: &Payout) -> pb::Payout {
    pb::Payout {
        payout_id: p.payout_id.clone(),
        refund_id: p.refund_id.clone(),
        channel: p.channel.clone(),
        card_no_masked: p.card.masked(),
        holder_name: p.holder_name.clone(),
        amount: p.amount.amount_string(),
        currency: p.amount.currency().code().to_string(),
        status: status_to_wire(p.status) as i32,
        bank_ref: p.bank_ref.clone(),
        reason: p.reason.clone(),
        created_at_ms: p.created_at_ms,
        updated_at_ms: p.updated_at_ms,
    }
}

fn callback_from_wire(r: pb::PayoutCallbackRequest) -> Result<BankCallback> {
    validate_external_id(&r.payout_id, "payout_id")?;
    if !r.bank_ref.is_empty() {
        validate_external_id(&r.bank_ref, "bank_ref")?;
    }
    let status = status_from_wire(r.status, "status")?;
    if status == PayoutStatus::Created {
        return Err(Error::field(
            "status",
            "a bank callback cannot report CREATED",
        ));
    }
    if r.sequence == 0 {
        return Err(Error::field("sequence", "must be at least 1"));
    }
    let sequence = i64::try_from(r.sequence).map_err(|_| Error::field("sequence", "too large"))?;
    if r.reason.chars().count() > 1024 {
        return Err(Error::field("reason", "longer than 1024 characters"));
    }
    Ok(BankCallback {
        payout_id: r.payout_id,
        bank_ref: r.bank_ref,
        status,
        reason: r.reason,
        sequence,
    })
}

/// The gRPC face of a [`PayoutCenter`].
#[derive(Debug, Clone)]
pub struct PayoutSvc {
    center: Arc<PayoutCenter>,
}

#[tonic::async_trait]
impl PayoutService for PayoutSvc {
    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id, refund_id = %request.get_ref().refund_id))]
    async fn create_payout(
        &self,
        request: Request<pb::CreatePayoutRequest>,
    ) -> Result<Response<pb::Payout>, Status> {
        let r = request.into_inner();
        let amount = Money::parse(&r.amount, &r.currency, "amount").map_err(grpc_err)?;
        let new = NewPayout::new(
            &r.payout_id,
            &r.refund_id,
            &r.channel,
            &r.card_no,
            &r.holder_name,
            amount,
        )
        .map_err(grpc_err)?;
        let p = self.center.create(new).await.map_err(grpc_err)?;
        Ok(Response::new(payout_to_wire(&p)))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn get_payout(
        &self,
        request: Request<pb::GetPayoutRequest>,
    ) -> Result<Response<pb::Payout>, Status> {
        let id = request.into_inner().payout_id;
        validate_external_id(&id, "payout_id").map_err(grpc_err)?;
        let p = self
            .center
            .get(&id)
            .await
            .map_err(grpc_err)?
            .ok_or_else(|| {
                grpc_err(Error::new(
                    ErrorCode::PayoutNotFound,
                    format!("payout {id} does not exist"),
                ))
            })?;
        Ok(Response::new(payout_to_wire(&p)))
    }

    #[tracing::instrument(skip_all)]
    async fn run_payout_cycle(
        &self,
        request: Request<pb::RunPayoutCycleRequest>,
    ) -> Result<Response<pb::PayoutCycleReport>, Status> {
        let r = self
            .center
            .run_cycle(request.into_inner().limit)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::PayoutCycleReport {
            sent: r.sent,
            rejected: r.rejected,
            errors: r.errors,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        let r = request.into_inner();
        let optional_id = |v: String, field: &str| -> Result<Option<String>> {
            if v.is_empty() {
                return Ok(None);
            }
            validate_external_id(&v, field)?;
            Ok(Some(v))
        };
        let status = match r.status {
            0 => None,
            v => Some(status_from_wire(v, "status").map_err(grpc_err)?),
        };
        let refund_id = optional_id(r.refund_id, "refund_id").map_err(grpc_err)?;
        let after = optional_id(r.after, "after").map_err(grpc_err)?;
        let payouts = self
            .center
            .list(status, refund_id, after, r.limit)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: payouts.iter().map(payout_to_wire).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id, sequence = request.get_ref().sequence))]
    async fn bank_callback(
        &self,
        request: Request<pb::PayoutCallbackRequest>,
    ) -> Result<Response<pb::PayoutCallbackResponse>, Status> {
        let cb = callback_from_wire(request.into_inner()).map_err(grpc_err)?;
        let applied = self.center.bank_callback(cb).await.map_err(grpc_err)?;
        Ok(Response::new(pb::PayoutCallbackResponse { applied }))
    }
}
