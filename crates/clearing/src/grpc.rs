//! The clearing gRPC service, its wire conversions (validated on receipt), and the recovery job.
//!
//! Every step that asks accounting to post is recorded first (a PENDING settlement, a PENDING /
//! REVERSING / COMPLETING debit) and posted under a key derived from the trade or refund
//! (`settle:`, `refund-debit:`, `refund-reverse:`, `refund-complete:`, `refund-return:`,
//! `refund-reinstate:`, `adjust:`), so a retry after an
//! unknown outcome (UNAVAILABLE) posts at most once: accounting replays the first posting.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tuikuan_accounting::domain::{AccountKey, PostingMeta, Side};
use tuikuan_accounting::AccountingClient;
use tuikuan_db::Db;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, SharedClock};
use tuikuan_proto::clearing::v1 as pb;
use tuikuan_proto::clearing::v1::clearing_service_server::{
    ClearingService, ClearingServiceServer,
};
use tuikuan_proto::status::grpc_err;

use crate::domain::{
    next_step, parse_advance_limit, parse_fee_rate, Adjustment, AdjustmentKind, Debit,
    DebitRequest, DebitStatus, FeeRefundPolicy, Goal, MerchantPolicy, SettleRequest, Settlement,
    SettlementStatus, Split, Step, MAX_REASON_LEN, MAX_SPLITS,
};
use crate::store::{self, Reserved};

mod reinstate;
mod reopen;
pub mod sweep;

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// How many unfinished records one recovery pass picks up per kind.
pub const RECOVERY_BATCH: i64 = 100;
/// How many steps one call may take on a debit before giving up (a debit needs at most four).
const MAX_STEPS: usize = 8;

/// How the clearing service runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// The accounting service, e.g. `http://127.0.0.1:50051`.
    pub accounting_addr: String,
    /// How often the recovery job runs ([`Clearing::run_recovery`]); `None` disables it.
    pub job_interval: Option<Duration>,
    /// Mutual TLS as `clearing` (or plaintext, only when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows). Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
}

/// Opens the database, runs migrations and serves `ClearingService` on `listener` until
/// `shutdown` resolves, running the recovery job every `job_interval`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let svc = Clearing::open(&config)?;
    let desk = config
        .staff
        .desk("clearing", &svc.db, config.clock.clone())?;
    let auth = &config.staff.auth;
    let job = config.job_interval.map(|every| {
        let svc = svc.clone();
        tuikuan_proto::jobs::every("clearing recovery", every, move || {
            let svc = svc.clone();
            async move {
                match svc.run_recovery().await {
                    Ok(report) if report.is_empty() => {}
                    Ok(report) => tracing::info!(?report, "clearing recovery"),
                    Err(e) => tracing::warn!(error = %e, "clearing recovery failed"),
                }
                if let Err(e) = svc.sweep_reserves(svc.clock.today()).await {
                    tracing::warn!(error = %e, "sweep failed");
                }
            }
        })
    });
    let result = tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        tonic::service::Routes::new(auth.guard_audited(ClearingServiceServer::new(svc), &desk))
            .add_service(
                tuikuan_auth::StaffServer::new(desk, tuikuan_auth::NoProposals).guarded(auth),
            ),
        &[
            <ClearingServiceServer<Clearing> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    )
    .await;
    tuikuan_proto::jobs::stop(job).await;
    result
}

/// What one recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Pending settlements now posted.
    pub settlements_posted: usize,
    /// Debits brought to a resting state (DEBITED, REJECTED, REVERSED, COMPLETED, RETURNED).
    pub debits_finished: usize,
    /// Adjustments whose posting is now confirmed.
    pub adjustments_posted: usize,
    /// Records still unfinished (accounting unavailable, ...); the next pass retries them.
    pub still_pending: usize,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.settlements_posted == 0
            && self.debits_finished == 0
            && self.adjustments_posted == 0
            && self.still_pending == 0
    }
}

/// The clearing center over its database and the accounting service.
#[derive(Clone, Debug)]
pub struct Clearing {
    db: Db,
    clock: SharedClock,
    accounting: AccountingClient,
}

impl Clearing {
    /// Connects to the database (running migrations) and, lazily, to accounting.
    pub fn open(config: &Config) -> Result<Clearing, Error> {
        let db = Db::connect(&config.database_url, 8)?;
        db.migrate(MIGRATIONS)?;
        let accounting = AccountingClient::connect(&config.transport, &config.accounting_addr)?;
        Ok(Clearing::new(db, config.clock.clone(), accounting))
    }

    pub fn new(db: Db, clock: SharedClock, accounting: AccountingClient) -> Clearing {
        Clearing {
            db,
            clock,
            accounting,
        }
    }

    pub async fn upsert_policy(&self, policy: MerchantPolicy) -> Result<MerchantPolicy, Error> {
        let now_ms = self.clock.now_ms();
        let p = policy.clone();
        self.db
            .run(move |conn| store::upsert_policy(conn, &p, now_ms))
            .await?;
        Ok(policy)
    }

    pub async fn policy(&self, merchant_id: &str) -> Result<MerchantPolicy, Error> {
        let id = merchant_id.to_string();
        self.db
            .run(move |conn| store::get_policy(conn, &id))
            .await?
            .ok_or_else(|| merchant_not_found(merchant_id))
    }

    /// Settles a succeeded payment (idempotent by trade id).
    pub async fn settle(&self, request: SettleRequest) -> Result<Settlement, Error> {
        let now_ms = self.clock.now_ms();
        let settlement = self
            .db
            .run(move |conn| {
                let check = |s: Settlement| {
                    if s.matches(&request) {
                        Ok(s)
                    } else {
                        Err(Error::new(
                            ErrorCode::IdempotencyConflict,
                            format!(
                                "trade {} was settled before with different content",
                                request.trade_id
                            ),
                        ))
                    }
                };
                if let Some(s) = store::get_settlement(conn, &request.trade_id)? {
                    return check(s);
                }
                let mut policies = BTreeMap::new();
                let ids = std::iter::once(request.merchant_id.clone())
                    .chain(request.splits.iter().map(|s| s.receiver_id.clone()));
                for id in ids {
                    if let Some(p) = store::get_policy(conn, &id)? {
                        policies.insert(id, p);
                    }
                }
                let settlement = Settlement::new(&request, |id| policies.get(id).cloned())?;
                if let Some(inserted) = store::insert_settlement(conn, &settlement, now_ms)? {
                    return Ok(inserted);
                }
                let s = store::get_settlement(conn, &request.trade_id)?.ok_or_else(|| {
                    Error::internal(format!("settlement {} vanished", request.trade_id))
                })?;
                check(s)
            })
            .await?;
        if settlement.status == SettlementStatus::Posted {
            return Ok(settlement);
        }
        self.post_settlement(settlement).await
    }

    async fn post_settlement(&self, mut settlement: Settlement) -> Result<Settlement, Error> {
        let outcome = self
            .accounting
            .post(
                &settlement.request_id(),
                &format!("payment {} settled", settlement.trade_id),
                settlement.postings(),
            )
            .await?;
        let now_ms = self.clock.now_ms();
        let (trade_id, posting_id) = (settlement.trade_id.clone(), outcome.posting_id.clone());
        self.db
            .run(move |conn| store::mark_settlement_posted(conn, &trade_id, &posting_id, now_ms))
            .await?;
        settlement.status = SettlementStatus::Posted;
        settlement.posting_id = Some(outcome.posting_id);
        Ok(settlement)
    }

    /// Debits the merchant for a refund (idempotent by refund id).
    ///
    /// Receivers with an advance line (every receiver, for an error refund) get their available
    /// balance read from the ledger first: a shortfall is advanced as
    /// [`crate::domain::shortfall`] decides. Receivers without a line are simply debited and the
    /// ledger refuses what their balance cannot cover (INSUFFICIENT_BALANCE → REJECTED).
    pub async fn refund_debit(&self, request: DebitRequest) -> Result<Debit, Error> {
        let existing = self.find_debit(&request.refund_id).await?;
        let balances = match existing {
            Some(_) => BTreeMap::new(),
            None => self.balances_of_lined_receivers(&request).await?,
        };
        let now_ms = self.clock.now_ms();
        let req = request.clone();
        let reserved = self
            .db
            .run(move |conn| store::reserve_debit(conn, &req, &balances, now_ms))
            .await?;
        let debit = match reserved {
            Reserved::New(d) => {
                tracing::info!(
                    fee_share = %d.fee_amount,
                    subsidy_share = %d.subsidy_amount,
                    advance = %d.advance_amount(),
                    receivers = d.parts.len(),
                    error_refund = d.error_refund,
                    "debit reserved"
                );
                d
            }
            Reserved::Existing(d) if d.matches(&request) => d,
            Reserved::Existing(_) => {
                return Err(Error::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "refund {} was debited before with different content",
                        request.refund_id
                    ),
                ))
            }
        };
        self.drive(debit, Goal::Debit, "", &PostingMeta::default())
            .await
    }

    async fn find_debit(&self, refund_id: &str) -> Result<Option<Debit>, Error> {
        let id = refund_id.to_string();
        self.db.run(move |conn| store::get_debit(conn, &id)).await
    }

    /// The available balances (minor units) of the trade's receivers that have an advance line
    /// (all of them for an error refund).
    async fn balances_of_lined_receivers(
        &self,
        request: &DebitRequest,
    ) -> Result<BTreeMap<String, i64>, Error> {
        let trade_id = request.trade_id.clone();
        let all = request.error_refund;
        let lined = self
            .db
            .run(move |conn| store::receivers_with_line(conn, &trade_id, all))
            .await?;
        let c = request.amount.currency();
        let mut balances = BTreeMap::new();
        for receiver_id in lined {
            let balance = self
                .accounting
                .balance(&AccountKey::merchant_settlement(&receiver_id, c))
                .await?;
            balances.insert(receiver_id, balance.to_minor());
        }
        Ok(balances)
    }

    /// The merchant's advance counters in `currency` (see [`crate::domain::AdvanceLine`]).
    pub async fn advance_line(
        &self,
        merchant_id: &str,
        currency: tuikuan_kernel::Currency,
    ) -> Result<crate::domain::AdvanceLine, Error> {
        let id = merchant_id.to_string();
        self.db
            .run(move |conn| store::advance_line(conn, &id, currency))
            .await
    }

    /// Posts `entries` under `request_id`; `None` when there is nothing to post (a refund whose
    /// cash part is zero because the subsidy share is all of it has no completion to post).
    async fn post_entries(
        &self,
        request_id: &str,
        description: &str,
        entries: Vec<(AccountKey, Side, Money)>,
        meta: &PostingMeta,
    ) -> Result<Option<String>, Error> {
        if entries.is_empty() {
            return Ok(None);
        }
        let outcome = self
            .accounting
            .post_dated(request_id, description, entries, meta.clone())
            .await?;
        Ok(Some(outcome.posting_id))
    }

    /// Reverses a refund debit (idempotent by refund id).
    pub async fn reverse_debit(&self, refund_id: &str, reason: &str) -> Result<Debit, Error> {
        let debit = self.debit(refund_id).await?;
        self.drive(debit, Goal::Reverse, reason, &PostingMeta::default())
            .await
    }

    /// Completes a refund debit after the refund succeeded (idempotent by refund id).
    /// `meta` is the bank's value date and reference of the payment to the customer.
    pub async fn complete_debit(
        &self,
        refund_id: &str,
        meta: &PostingMeta,
    ) -> Result<Debit, Error> {
        self.complete_attempt(refund_id, 0, meta).await
    }

    /// [`Clearing::complete_debit`] naming the refund center's attempt that paid (0: not named);
    /// an attempt reopened before is refused ([`crate::domain::reopen`]).
    pub async fn complete_attempt(
        &self,
        refund_id: &str,
        attempt: u32,
        meta: &PostingMeta,
    ) -> Result<Debit, Error> {
        let debit = self.debit(refund_id).await?;
        self.check_completion(&debit, attempt).await?;
        self.drive(debit, Goal::Complete, "", meta).await
    }

    /// A completed refund's payout was returned by the bank (退票): posts the money back from the
    /// channel reserve to where it was debited from and gives the trade's counters back, so the
    /// amount is refundable again. Only from COMPLETED (else DEBIT_NOT_ACTIVE); idempotent by
    /// refund id (a RETURNED debit is answered as it is).
    pub async fn return_debit(
        &self,
        refund_id: &str,
        reason: &str,
        meta: &PostingMeta,
    ) -> Result<Debit, Error> {
        let debit = self.debit(refund_id).await?;
        self.drive(debit, Goal::Return, reason, meta).await
    }

    /// Posts a reconciliation correction between a channel's reserve and its suspense account
    /// (idempotent by adjustment id; other content under the same id is IDEMPOTENCY_CONFLICT).
    /// The adjustment is stored before it is posted under `adjust:{adjustment_id}`, so an
    /// unanswered post (UNAVAILABLE) is finished by a retry or the recovery job.
    /// `meta` is the bank's value date and reference of the row the adjustment corrects.
    pub async fn post_adjustment(
        &self,
        adjustment: Adjustment,
        meta: &PostingMeta,
    ) -> Result<Adjustment, Error> {
        let wanted = adjustment.clone();
        let stored = self
            .db
            .run(move |conn| store::insert_adjustment(conn, &wanted))
            .await?;
        if !stored.same_content(&adjustment) {
            return Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "adjustment {} was posted before with different content",
                    adjustment.adjustment_id
                ),
            ));
        }
        if stored.posting_id.is_some() {
            return Ok(stored);
        }
        self.post_stored_adjustment(stored, meta).await
    }

    async fn post_stored_adjustment(
        &self,
        mut adjustment: Adjustment,
        meta: &PostingMeta,
    ) -> Result<Adjustment, Error> {
        let outcome = self
            .accounting
            .post_entries(
                &adjustment.request_id(),
                &format!(
                    "adjustment {} {}: {}",
                    adjustment.adjustment_id,
                    adjustment.kind.as_str(),
                    adjustment.memo
                ),
                adjustment.postings(),
                meta.clone(),
            )
            .await?;
        let now_ms = self.clock.now_ms();
        let (id, posting_id) = (adjustment.adjustment_id.clone(), outcome.posting_id.clone());
        self.db
            .run(move |conn| store::mark_adjustment_posted(conn, &id, &posting_id, now_ms))
            .await?;
        tracing::info!(
            adjustment_id = %adjustment.adjustment_id,
            kind = adjustment.kind.as_str(),
            channel = %adjustment.channel,
            amount = %adjustment.amount,
            "adjustment posted"
        );
        adjustment.posting_id = Some(outcome.posting_id);
        adjustment.updated_at_ms = now_ms;
        Ok(adjustment)
    }

    pub async fn adjustment(&self, adjustment_id: &str) -> Result<Option<Adjustment>, Error> {
        let id = adjustment_id.to_string();
        self.db
            .run(move |conn| store::get_adjustment(conn, &id))
            .await
    }

    pub async fn debit(&self, refund_id: &str) -> Result<Debit, Error> {
        let id = refund_id.to_string();
        self.db
            .run(move |conn| store::get_debit(conn, &id))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::DebitNotFound,
                    format!("no debit for refund {refund_id}"),
                )
            })
    }

    /// Takes `debit` step by step towards `goal` (see [`next_step`]), re-reading after each step so
    /// that concurrent callers converge on the same state.
    async fn drive(
        &self,
        mut debit: Debit,
        goal: Goal,
        reason: &str,
        meta: &PostingMeta,
    ) -> Result<Debit, Error> {
        for _ in 0..MAX_STEPS {
            match next_step(&debit, goal) {
                Step::Done => return Ok(debit),
                Step::Fail(e) => return Err(e),
                Step::PostDebit => self.post_debit(&debit).await?,
                Step::BeginReverse => {
                    self.move_debit(
                        &debit,
                        DebitStatus::Debited,
                        DebitStatus::Reversing,
                        None,
                        Some(reason),
                    )
                    .await?
                }
                Step::PostReverse => {
                    let posting_id = self
                        .post_entries(
                            &debit.reverse_request_id(),
                            &format!("refund {} debit reversed", debit.refund_id),
                            debit.reverse_postings(),
                            &PostingMeta::default(),
                        )
                        .await?;
                    self.move_debit(
                        &debit,
                        DebitStatus::Reversing,
                        DebitStatus::Reversed,
                        posting_id,
                        None,
                    )
                    .await?
                }
                Step::BeginComplete => {
                    self.move_debit(
                        &debit,
                        DebitStatus::Debited,
                        DebitStatus::Completing,
                        None,
                        None,
                    )
                    .await?
                }
                Step::BeginReturn => {
                    self.move_debit(
                        &debit,
                        DebitStatus::Completed,
                        DebitStatus::Returning,
                        None,
                        Some(reason),
                    )
                    .await?
                }
                Step::PostReturn => {
                    let posting_id = self
                        .post_entries(
                            &debit.return_request_id(),
                            &format!("refund {} payout returned by the bank", debit.refund_id),
                            debit.return_postings(),
                            meta,
                        )
                        .await?;
                    self.move_debit(
                        &debit,
                        DebitStatus::Returning,
                        DebitStatus::Returned,
                        posting_id,
                        None,
                    )
                    .await?
                }
                Step::BeginReinstate => self.begin_reinstate(&debit, reason).await?,
                Step::PostReinstate => self.post_reinstate(&debit, meta).await?,
                Step::PostComplete => {
                    let posting_id = self
                        .post_entries(
                            &self.complete_key(&debit).await?,
                            &format!("refund {} completed", debit.refund_id),
                            debit.complete_postings(),
                            meta,
                        )
                        .await?;
                    self.move_debit(
                        &debit,
                        DebitStatus::Completing,
                        DebitStatus::Completed,
                        posting_id,
                        None,
                    )
                    .await?
                }
            }
            debit = self.debit(&debit.refund_id).await?;
        }
        Err(Error::internal(format!(
            "debit of refund {} did not settle after {MAX_STEPS} steps",
            debit.refund_id
        )))
    }

    async fn move_debit(
        &self,
        debit: &Debit,
        from: DebitStatus,
        to: DebitStatus,
        final_posting_id: Option<String>,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        let now_ms = self.clock.now_ms();
        let d = debit.clone();
        let reason = reason.map(str::to_string);
        let moved = self
            .db
            .run(move |conn| {
                store::move_debit(
                    conn,
                    &d,
                    from,
                    to,
                    final_posting_id.as_deref(),
                    reason.as_deref(),
                    now_ms,
                )
            })
            .await?;
        if moved {
            tracing::info!(refund_id = %debit.refund_id, %from, %to, "debit moved");
        }
        // Not moved: someone else moved it first; the caller re-reads and continues from there.
        Ok(())
    }

    /// Posts (or re-posts) the debit. Success → DEBITED; the merchant cannot cover it → REJECTED
    /// with the trade's counters given back; anything else leaves it PENDING and is returned.
    async fn post_debit(&self, debit: &Debit) -> Result<(), Error> {
        let posted = self
            .accounting
            .post(
                &debit.debit_request_id(),
                &format!("refund {} debit", debit.refund_id),
                debit.debit_postings(),
            )
            .await;
        let now_ms = self.clock.now_ms();
        match posted {
            Ok(outcome) => {
                let (id, posting_id) = (debit.refund_id.clone(), outcome.posting_id.clone());
                let moved = self
                    .db
                    .run(move |conn| store::mark_debited(conn, &id, &posting_id, now_ms))
                    .await?;
                if !moved {
                    let current = self.debit(&debit.refund_id).await?;
                    if current.status == DebitStatus::Rejected {
                        self.compensate(&current).await?;
                    }
                }
                Ok(())
            }
            Err(e) if e.code == ErrorCode::InsufficientBalance => {
                tracing::info!(refund_id = %debit.refund_id, error = %e.message, "debit rejected");
                self.move_debit(
                    debit,
                    DebitStatus::Pending,
                    DebitStatus::Rejected,
                    None,
                    Some(&e.message),
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    /// A retry posted the debit after a concurrent attempt had rejected it (the merchant's balance
    /// grew in between). The rejection stands: undo the posting under the reversal key.
    async fn compensate(&self, debit: &Debit) -> Result<(), Error> {
        tracing::warn!(refund_id = %debit.refund_id, "debit posted after rejection; reversing it");
        let outcome = self
            .accounting
            .post(
                &debit.reverse_request_id(),
                &format!("refund {} debit undone after rejection", debit.refund_id),
                debit.undo_postings(),
            )
            .await?;
        let now_ms = self.clock.now_ms();
        let id = debit.refund_id.clone();
        self.db
            .run(move |conn| store::record_compensation(conn, &id, &outcome.posting_id, now_ms))
            .await
    }

    /// The recovery job: posts pending settlements and finishes PENDING, REVERSING and COMPLETING
    /// debits, each with its original idempotency key. Also run every `job_interval`.
    pub async fn run_recovery(&self) -> Result<RecoveryReport, Error> {
        let mut report = RecoveryReport::default();
        let trades = self
            .db
            .run(|conn| store::pending_settlements(conn, RECOVERY_BATCH))
            .await?;
        for trade_id in trades {
            let id = trade_id.clone();
            let Some(settlement) = self
                .db
                .run(move |conn| store::get_settlement(conn, &id))
                .await?
            else {
                continue;
            };
            if settlement.status == SettlementStatus::Posted {
                continue;
            }
            match self.post_settlement(settlement).await {
                Ok(_) => report.settlements_posted += 1,
                Err(e) => {
                    tracing::warn!(%trade_id, error = %e, "settlement still pending");
                    report.still_pending += 1;
                }
            }
        }
        for (status, goal) in [
            (DebitStatus::Pending, Goal::Debit),
            (DebitStatus::Reversing, Goal::Reverse),
            (DebitStatus::Completing, Goal::Complete),
            (DebitStatus::Returning, Goal::Return),
            (DebitStatus::Reinstating, Goal::Reinstate),
        ] {
            let ids = self
                .db
                .run(move |conn| store::debits_in(conn, status, RECOVERY_BATCH))
                .await?;
            for refund_id in ids {
                let debit = self.debit(&refund_id).await?;
                match self.drive(debit, goal, "", &PostingMeta::default()).await {
                    Ok(_) => report.debits_finished += 1,
                    Err(e) if e.code == ErrorCode::InsufficientBalance => {
                        report.debits_finished += 1
                    }
                    Err(e) => {
                        tracing::warn!(%refund_id, error = %e, "debit still unfinished");
                        report.still_pending += 1;
                    }
                }
            }
        }
        // Adjustments last: a correction may need money a returned payout brings back first.
        let unposted = self
            .db
            .run(|conn| store::unposted_adjustments(conn, RECOVERY_BATCH))
            .await?;
        for adjustment_id in unposted {
            let Some(adjustment) = self.adjustment(&adjustment_id).await? else {
                continue;
            };
            if adjustment.posting_id.is_some() {
                continue;
            }
            match self
                .post_stored_adjustment(adjustment, &PostingMeta::default())
                .await
            {
                Ok(_) => report.adjustments_posted += 1,
                Err(e) => {
                    tracing::warn!(%adjustment_id, error = %e, "adjustment still unposted");
                    report.still_pending += 1;
                }
            }
        }
        Ok(report)
    }
}

fn merchant_not_found(merchant_id: &str) -> Error {
    Error::new(
        ErrorCode::MerchantNotFound,
        format!("merchant {merchant_id} has no clearing policy"),
    )
}

// ---------- wire <-> domain ----------

fn fee_refund_from_wire(value: i32) -> Result<FeeRefundPolicy, Error> {
    match pb::FeeRefundPolicy::try_from(value) {
        Ok(pb::FeeRefundPolicy::Proportional) => Ok(FeeRefundPolicy::Proportional),
        Ok(pb::FeeRefundPolicy::None) => Ok(FeeRefundPolicy::None),
        Ok(pb::FeeRefundPolicy::Unspecified) => Err(Error::field("fee_refund", "is required")),
        Err(_) => Err(Error::field(
            "fee_refund",
            format!("unknown policy {value}"),
        )),
    }
}

fn policy_from_wire(p: &pb::MerchantPolicy) -> Result<MerchantPolicy, Error> {
    validate_external_id(&p.merchant_id, "merchant_id")?;
    let advance_limit = parse_advance_limit(&p.advance_limit, "advance_limit")?;
    let advance_currency = match (advance_limit.is_zero(), p.advance_currency.as_str()) {
        (true, _) => None,
        (false, "") => {
            return Err(Error::field(
                "advance_currency",
                "an advance line names its currency",
            ))
        }
        (false, code) => Some(Currency::parse(code, "advance_currency")?),
    };
    Ok(MerchantPolicy {
        merchant_id: p.merchant_id.clone(),
        fee_rate: parse_fee_rate(&p.fee_rate, "fee_rate")?,
        fee_refund: fee_refund_from_wire(p.fee_refund)?,
        advance_limit,
        advance_currency,
    })
}

fn policy_to_wire(p: &MerchantPolicy) -> pb::MerchantPolicy {
    pb::MerchantPolicy {
        merchant_id: p.merchant_id.clone(),
        fee_rate: p.fee_rate.normalize().to_string(),
        fee_refund: match p.fee_refund {
            FeeRefundPolicy::Proportional => pb::FeeRefundPolicy::Proportional,
            FeeRefundPolicy::None => pb::FeeRefundPolicy::None,
        } as i32,
        advance_limit: p.advance_limit.normalize().to_string(),
        advance_currency: p
            .advance_currency
            .map(|c| c.code().to_string())
            .unwrap_or_default(),
    }
}

fn settle_from_wire(r: &pb::SettlePaymentRequest) -> Result<SettleRequest, Error> {
    validate_external_id(&r.trade_id, "trade_id")?;
    validate_external_id(&r.merchant_id, "merchant_id")?;
    validate_external_id(&r.channel, "channel")?;
    let amount = Money::parse(&r.amount, &r.currency, "amount")?;
    let subsidy = match r.platform_subsidy.as_str() {
        "" => Money::zero(amount.currency()),
        s => {
            let value = rust_decimal::Decimal::from_str_exact(s).map_err(|_| {
                Error::field(
                    "platform_subsidy",
                    format!("{} is not a decimal amount", tuikuan_kernel::echo(s)),
                )
            })?;
            if value.is_zero() {
                Money::zero(amount.currency())
            } else {
                Money::parse(s, &r.currency, "platform_subsidy")?
            }
        }
    };
    let request = SettleRequest {
        trade_id: r.trade_id.clone(),
        merchant_id: r.merchant_id.clone(),
        channel: r.channel.clone(),
        amount,
        splits: splits_from_wire(&r.splits, &r.currency)?,
        subsidy,
    };
    request.validate()?;
    Ok(request)
}

/// Receivers' amounts from the wire: ids checked, amounts parsed in `currency`.
fn splits_from_wire(splits: &[pb::Split], currency: &str) -> Result<Vec<Split>, Error> {
    if splits.len() > MAX_SPLITS {
        return Err(Error::field(
            "splits",
            format!("at most {MAX_SPLITS} receivers, got {}", splits.len()),
        ));
    }
    splits
        .iter()
        .enumerate()
        .map(|(i, s)| {
            validate_external_id(&s.receiver_id, &format!("splits[{i}].receiver_id"))?;
            Ok(Split {
                receiver_id: s.receiver_id.clone(),
                amount: Money::parse(&s.amount, currency, &format!("splits[{i}].amount"))?,
            })
        })
        .collect()
}

fn splits_to_wire(splits: &[Split]) -> Vec<pb::Split> {
    splits
        .iter()
        .map(|s| pb::Split {
            receiver_id: s.receiver_id.clone(),
            amount: s.amount.amount_string(),
        })
        .collect()
}

fn settlement_to_wire(s: &Settlement) -> pb::Settlement {
    pb::Settlement {
        trade_id: s.trade_id.clone(),
        merchant_id: s.merchant_id.clone(),
        channel: s.channel.clone(),
        amount: s.amount.amount_string(),
        fee: s.fee.amount_string(),
        net: s.net().amount_string(),
        currency: s.currency().code().to_string(),
        posting_id: s.posting_id.clone().unwrap_or_default(),
    }
}

fn debit_request_from_wire(r: &pb::RefundDebitRequest) -> Result<DebitRequest, Error> {
    validate_external_id(&r.refund_id, "refund_id")?;
    validate_external_id(&r.trade_id, "trade_id")?;
    validate_external_id(&r.merchant_id, "merchant_id")?;
    Ok(DebitRequest {
        refund_id: r.refund_id.clone(),
        trade_id: r.trade_id.clone(),
        merchant_id: r.merchant_id.clone(),
        amount: Money::parse(&r.amount, &r.currency, "amount")?,
        splits: splits_from_wire(&r.splits, &r.currency)?,
        error_refund: r.error_refund,
    })
}

fn status_to_wire(s: DebitStatus) -> pb::DebitStatus {
    match s {
        DebitStatus::Pending => pb::DebitStatus::Pending,
        DebitStatus::Debited => pb::DebitStatus::Debited,
        DebitStatus::Rejected => pb::DebitStatus::Rejected,
        DebitStatus::Reversing => pb::DebitStatus::Reversing,
        DebitStatus::Reversed => pb::DebitStatus::Reversed,
        DebitStatus::Completing => pb::DebitStatus::Completing,
        DebitStatus::Completed => pb::DebitStatus::Completed,
        DebitStatus::Returning => pb::DebitStatus::Returning,
        DebitStatus::Returned => pb::DebitStatus::Returned,
        DebitStatus::Reinstating => pb::DebitStatus::Reinstating,
        DebitStatus::Reopening => pb::DebitStatus::Reopening,
    }
}

fn debit_to_wire(d: &Debit) -> pb::Debit {
    pb::Debit {
        refund_id: d.refund_id.clone(),
        trade_id: d.trade_id.clone(),
        merchant_id: d.merchant_id.clone(),
        channel: d.channel.clone(),
        amount: d.amount.amount_string(),
        merchant_amount: d.merchant_amount.amount_string(),
        fee_amount: d.fee_amount.amount_string(),
        currency: d.currency().code().to_string(),
        status: status_to_wire(d.status) as i32,
        debit_posting_id: d.debit_posting_id.clone().unwrap_or_default(),
        final_posting_id: d.final_posting_id.clone().unwrap_or_default(),
        splits: splits_to_wire(&d.splits()),
        subsidy_amount: d.subsidy_amount.amount_string(),
        advance_amount: d.advance_amount().amount_string(),
    }
}

fn refund_id_from_wire(refund_id: &str) -> Result<(), Error> {
    validate_external_id(refund_id, "refund_id")
}

/// A refund id and a reason of at most [`MAX_REASON_LEN`] characters (reverse, return, reinstate).
fn refund_and_reason_from_wire(refund_id: &str, reason: &str) -> Result<(), Error> {
    refund_id_from_wire(refund_id)?;
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(Error::field(
            "reason",
            format!("longer than {MAX_REASON_LEN} characters"),
        ));
    }
    Ok(())
}

fn adjustment_kind_from_wire(value: i32) -> Result<AdjustmentKind, Error> {
    match pb::AdjustmentKind::try_from(value) {
        Ok(pb::AdjustmentKind::BankToSuspense) => Ok(AdjustmentKind::BankToSuspense),
        Ok(pb::AdjustmentKind::SuspenseToBank) => Ok(AdjustmentKind::SuspenseToBank),
        Ok(pb::AdjustmentKind::Unspecified) => Err(Error::field("kind", "is required")),
        Err(_) => Err(Error::field("kind", format!("unknown kind {value}"))),
    }
}

fn adjustment_from_wire(r: &pb::AdjustmentRequest, now_ms: i64) -> Result<Adjustment, Error> {
    validate_external_id(&r.adjustment_id, "adjustment_id")?;
    let kind = adjustment_kind_from_wire(r.kind)?;
    validate_external_id(&r.channel, "channel")?;
    let amount = Money::parse(&r.amount, &r.currency, "amount")?;
    Adjustment::new(&r.adjustment_id, kind, &r.channel, amount, &r.memo, now_ms)
}

fn adjustment_to_wire(a: &Adjustment) -> pb::Adjustment {
    pb::Adjustment {
        adjustment_id: a.adjustment_id.clone(),
        kind: match a.kind {
            AdjustmentKind::BankToSuspense => pb::AdjustmentKind::BankToSuspense,
            AdjustmentKind::SuspenseToBank => pb::AdjustmentKind::SuspenseToBank,
        } as i32,
        channel: a.channel.clone(),
        amount: a.amount.amount_string(),
        currency: a.amount.currency().code().to_string(),
        memo: a.memo.clone(),
        posting_id: a.posting_id.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ClearingService for Clearing {
    #[tracing::instrument(skip_all, fields(adjustment_id = %request.get_ref().adjustment_id))]
    async fn post_adjustment(
        &self,
        request: Request<pb::AdjustmentRequest>,
    ) -> Result<Response<pb::Adjustment>, Status> {
        let adjustment =
            adjustment_from_wire(request.get_ref(), self.clock.now_ms()).map_err(grpc_err)?;
        let r = request.get_ref();
        let meta = PostingMeta::parse(&r.value_date, &r.bank_reference).map_err(grpc_err)?;
        let adjustment = Clearing::post_adjustment(self, adjustment, &meta)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(adjustment_to_wire(&adjustment)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn return_debit(
        &self,
        request: Request<pb::ReturnDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let r = request.get_ref();
        refund_and_reason_from_wire(&r.refund_id, &r.reason).map_err(grpc_err)?;
        let meta = PostingMeta::parse(&r.value_date, &r.bank_reference).map_err(grpc_err)?;
        let debit = Clearing::return_debit(self, &r.refund_id, &r.reason, &meta)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reopen_debit(
        &self,
        request: Request<pb::ReopenDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let r = request.get_ref();
        refund_and_reason_from_wire(&r.refund_id, &r.reason).map_err(grpc_err)?;
        let debit = Clearing::reopen_debit(self, &r.refund_id, r.attempt, &r.reason)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    async fn reinstate_debit(
        &self,
        request: Request<pb::ReinstateDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let r = request.get_ref();
        refund_and_reason_from_wire(&r.refund_id, &r.reason).map_err(grpc_err)?;
        let debit = Clearing::reinstate_debit(self, &r.refund_id, &r.reason)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %request.get_ref().merchant_id))]
    async fn upsert_merchant_policy(
        &self,
        request: Request<pb::MerchantPolicy>,
    ) -> Result<Response<pb::MerchantPolicy>, Status> {
        let policy = policy_from_wire(request.get_ref()).map_err(grpc_err)?;
        let policy = self.upsert_policy(policy).await.map_err(grpc_err)?;
        Ok(Response::new(policy_to_wire(&policy)))
    }

    async fn get_merchant_policy(
        &self,
        request: Request<pb::GetMerchantPolicyRequest>,
    ) -> Result<Response<pb::MerchantPolicy>, Status> {
        let merchant_id = &request.get_ref().merchant_id;
        validate_external_id(merchant_id, "merchant_id").map_err(grpc_err)?;
        let policy = self.policy(merchant_id).await.map_err(grpc_err)?;
        Ok(Response::new(policy_to_wire(&policy)))
    }

    #[tracing::instrument(skip_all, fields(trade_id = %request.get_ref().trade_id))]
    async fn settle_payment(
        &self,
        request: Request<pb::SettlePaymentRequest>,
    ) -> Result<Response<pb::Settlement>, Status> {
        let req = settle_from_wire(request.get_ref()).map_err(grpc_err)?;
        let settlement = self.settle(req).await.map_err(grpc_err)?;
        Ok(Response::new(settlement_to_wire(&settlement)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn refund_debit(
        &self,
        request: Request<pb::RefundDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let req = debit_request_from_wire(request.get_ref()).map_err(grpc_err)?;
        let debit = Clearing::refund_debit(self, req).await.map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reverse_debit(
        &self,
        request: Request<pb::ReverseDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let r = request.get_ref();
        refund_and_reason_from_wire(&r.refund_id, &r.reason).map_err(grpc_err)?;
        let debit = Clearing::reverse_debit(self, &r.refund_id, &r.reason)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn complete_debit(
        &self,
        request: Request<pb::CompleteDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let r = request.get_ref();
        refund_id_from_wire(&r.refund_id).map_err(grpc_err)?;
        let meta = PostingMeta::parse(&r.value_date, &r.bank_reference).map_err(grpc_err)?;
        let debit = Clearing::complete_attempt(self, &r.refund_id, r.attempt, &meta)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    async fn get_debit(
        &self,
        request: Request<pb::GetDebitRequest>,
    ) -> Result<Response<pb::Debit>, Status> {
        let refund_id = &request.get_ref().refund_id;
        refund_id_from_wire(refund_id).map_err(grpc_err)?;
        let debit = self.debit(refund_id).await.map_err(grpc_err)?;
        Ok(Response::new(debit_to_wire(&debit)))
    }

    async fn sweep_reserves(
        &self,
        request: Request<pb::SweepReservesRequest>,
    ) -> Result<Response<pb::SweepReservesResponse>, Status> {
        let date = sweep::sweep_date_from_wire(&request.get_ref().date, self.clock.today())
            .map_err(grpc_err)?;
        let sweeps = Clearing::sweep_reserves(self, date)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(sweep::sweeps_to_wire(&sweeps)))
    }

    async fn run_recovery(
        &self,
        _request: Request<pb::RunRecoveryRequest>,
    ) -> Result<Response<pb::RecoveryReport>, Status> {
        let report = Clearing::run_recovery(self).await.map_err(grpc_err)?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::RecoveryReport {
            settlements_posted: count(report.settlements_posted),
            debits_finished: count(report.debits_finished),
            still_pending: count(report.still_pending),
        }))
    }
}
