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
//!
//! # Error refunds
//!
//! `BusinessAdminService.CreateErrorRefund` (an operator token with role ops or finance)
//! reserves the full amount on a trade without other live
//! refunds and drives the same chain, with `error_refund = true` on the clearing debit and the
//! refund center's `ErrorRefundService.CreateErrorRefund` instead of `CreateRefund`.
//!
//! # Notifications
//!
//! Final outcomes enqueue a merchant notification in the same transaction; [`Business::run_notifications`]
//! (the job loop and `RunNotifications`) sends the due ones over HTTPS (see
//! [`crate::domain::notify`] for the message, signature and retry schedule, and [`crate::egress`]
//! for the client and its guard against server-side request forgery, which `SetNotifyConfig`
//! applies too).
//!
//! # Cards at rest
//!
//! Payer card numbers (and notification secrets) are sealed with AES-256-GCM under
//! [`Config::card_key`] (the kernel's [`tuikuan_kernel::seal`], shared with the refund center);
//! rows from before are sealed at start. Answers and logs show the last four digits only; the full
//! number goes only to the refund center (for payouts to the bank).

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
use tuikuan_proto::refund::v1::error_refund_service_client::ErrorRefundServiceClient;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::staff::v1::operator_service_server::OperatorServiceServer;
use tuikuan_proto::status::{grpc_err, peer_err};
use tuikuan_proto::tls::Principal;

use crate::domain::crypto::{CardKey, Sealer};
use crate::domain::notify::{Notification, NotificationAttempt, NotificationStatus, NotifyTarget};
use crate::domain::operator::Operator;
use crate::domain::{
    apply_outcome, apply_progress, check_error_refundable, check_refundable, error_refund_no,
    hash_api_key, outcome_error, ChainState, ChannelConfig, ErrorRefundRequest, Merchant,
    MerchantRefund, NewPayment, Outcome, OutcomeAction, PaymentFields, PeerVerdict, ProgressAction,
    RefundKind, RefundRequest, RefundStatus, SettleStatus, Split, Trade, MAX_REASON_CHARS,
};
use crate::store::{self, Inserted, RefundFilter, ReserveError};

pub mod proposals;
mod reinstate;
mod reopen;

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// Refunds and trades one recovery run handles at most (oldest first); the rest wait for the next.
pub const RECOVERY_BATCH: i64 = 500;
/// Default and largest page of `ListRefunds`.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// A refund moves at most this many steps per drive (the longest path has three).
const MAX_DRIVE_STEPS: usize = 6;
/// Notifications one sender run attempts at most (earliest due first).
pub const NOTIFY_BATCH: i64 = 200;
/// Attempts in flight at once within a run.
const NOTIFY_PARALLEL: usize = 16;
/// How long a claimed notification stays invisible to other senders (covers the attempt's
/// timeout with margin; by the service's clock).
const NOTIFY_LEASE_MS: i64 = 60_000;

/// How the business layer runs.
#[derive(Clone)]
pub struct Config {
    /// `postgres://…` or an SQLite path.
    pub database_url: String,
    pub clock: SharedClock,
    /// The clearing center (`http://host:port`).
    pub clearing_addr: String,
    /// The refund center (`http://host:port`; serves RefundService and ErrorRefundService).
    pub refund_addr: String,
    /// How often the recovery loop and the notification sender run; `None` runs them only
    /// through `RunRecovery` and `RunNotifications`.
    pub job_interval: Option<Duration>,
    /// The AES-256 key sealing payer card numbers and notification secrets at rest: 64 hex digits.
    /// Empty = the public development key ([`crate::domain::crypto::DEV_CARD_KEY`]) with a loud
    /// warning at start; never in production.
    pub card_key: String,
    /// Mutual TLS as `business` on the internal listener and towards peers (or plaintext, only
    /// when the deployment says so).
    pub transport: tuikuan_proto::tls::Transport,
    /// The public listener's server certificate; `None` serves the merchant API in plaintext (for
    /// a TLS-terminating proxy in front).
    pub public_tls: Option<tuikuan_proto::tls::PublicTls>,
    /// Staff security: the operator-token verifier and the four-eyes thresholds.
    pub staff: tuikuan_auth::StaffConfig,
    /// The operator registry: the signing key and token lifetime, and the first administrator.
    pub operators: OperatorsConfig,
    /// Where merchant notifications may go and which CAs their endpoints may use
    /// ([`crate::egress`]); the default allows public HTTPS endpoints only.
    pub notify: crate::egress::NotifySettings,
}

/// The business layer hosts the operator registry (`OperatorService`).
#[derive(Clone, Default)]
pub struct OperatorsConfig {
    /// The PASERK `k4.secret.…` key that signs operator tokens; `None`: nobody can log in here.
    pub signing_key: Option<String>,
    /// Token lifetime in seconds (0: one hour).
    pub token_ttl_secs: i64,
    /// The first administrator (name, argon2id hash), created when the registry is empty.
    pub bootstrap_admin: Option<(String, String)>,
}

impl std::fmt::Debug for OperatorsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorsConfig")
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<set>"))
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field(
                "bootstrap_admin",
                &self.bootstrap_admin.as_ref().map(|(n, _)| n),
            )
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url)
            .field("clock", &self.clock)
            .field("clearing_addr", &self.clearing_addr)
            .field("refund_addr", &self.refund_addr)
            .field("job_interval", &self.job_interval)
            .field("transport", &self.transport)
            .field("public_tls", &self.public_tls.is_some())
            .field("notify", &self.notify)
            .field(
                "card_key",
                &if self.card_key.is_empty() {
                    "<dev default>"
                } else {
                    "<set>"
                },
            )
            .finish()
    }
}

impl Config {
    /// A config without a job loop and with the development card key.
    pub fn new(
        database_url: impl Into<String>,
        clock: SharedClock,
        clearing_addr: impl Into<String>,
        refund_addr: impl Into<String>,
        transport: tuikuan_proto::tls::Transport,
    ) -> Config {
        Config {
            database_url: database_url.into(),
            clock,
            clearing_addr: clearing_addr.into(),
            refund_addr: refund_addr.into(),
            job_interval: None,
            card_key: String::new(),
            transport,
            public_tls: None,
            staff: tuikuan_auth::StaffConfig::default(),
            operators: OperatorsConfig::default(),
            notify: crate::egress::NotifySettings::default(),
        }
    }

    /// The cipher for `card_key` (the development key, loudly, when empty).
    pub fn cipher(&self) -> Result<Sealer> {
        if self.card_key.trim().is_empty() {
            tracing::warn!(
                "BUSINESS card_key IS NOT SET: payer card numbers and notification secrets are \
                 encrypted with the PUBLIC DEVELOPMENT KEY. Set card_key (64 hex digits) in \
                 production."
            );
            return Ok(Sealer::development());
        }
        let cipher = Sealer::new(&CardKey::from_hex(&self.card_key)?);
        if cipher.is_development() {
            tracing::warn!("business card_key is the PUBLIC DEVELOPMENT KEY; never in production");
        }
        Ok(cipher)
    }
}

/// Serves `MerchantService` on the `public` listener and `BusinessAdminService` on the
/// `internal` one until `shutdown` resolves.
pub async fn serve(
    config: Config,
    internal: tokio::net::TcpListener,
    public: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let cipher = config.cipher()?;
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let sealing = cipher.clone();
    let sealed = db
        .run(move |c| store::seal_plaintext_cards(c, &sealing))
        .await?;
    if sealed > 0 {
        tracing::info!(sealed, "sealed payer card numbers stored in plaintext");
    }
    let refund_channel = config
        .transport
        .channel(Principal::Refund, &config.refund_addr)?;
    let (registry, desk) = crate::staff::open(&config, &db).await?;
    let svc = Business {
        desk: desk.clone(),
        db,
        clock: config.clock.clone(),
        clearing: ClearingServiceClient::new(
            config
                .transport
                .channel(Principal::Clearing, &config.clearing_addr)?,
        ),
        refund: RefundServiceClient::new(refund_channel.clone()),
        error_refund: ErrorRefundServiceClient::new(refund_channel),
        cipher,
        sender: crate::egress::Sender::new(&config.notify)?,
    };
    let job = config.job_interval.map(|every| {
        let svc = svc.clone();
        tuikuan_proto::jobs::every("business recovery", every, move || {
            let svc = svc.clone();
            async move {
                if let Err(e) = svc.recover().await {
                    tracing::error!(code = %e.code, error = %e.message, "recovery run failed");
                }
                if let Err(e) = svc.run_notifications().await {
                    tracing::error!(code = %e.code, error = %e.message, "notification run failed");
                }
            }
        })
    });
    let executor = svc.executor();
    let auth = config.staff.auth.clone();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let public = tuikuan_proto::server::serve_public(
        public,
        config.public_tls.as_ref(),
        tonic::service::Routes::new(MerchantServiceServer::new(svc.clone())),
        &[<MerchantServiceServer<Business> as tonic::server::NamedService>::NAME],
        shutdown.clone(),
    );
    let internal = tuikuan_proto::server::serve(
        internal,
        config.transport.clone(),
        tonic::service::Routes::new(auth.guard_audited(BusinessAdminServiceServer::new(svc), &desk))
            .add_service(auth.guard(OperatorServiceServer::new(registry)))
            .add_service(
                tuikuan_auth::StaffServer::new(desk, executor).guarded(&auth),
            ),
        &[
            <BusinessAdminServiceServer<Business> as tonic::server::NamedService>::NAME,
            <OperatorServiceServer<tuikuan_auth::registry::Registry> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    );
    let result = futures::future::try_join(public, internal)
        .await
        .map(|_| ());
    tuikuan_proto::jobs::stop(job).await;
    result
}

/// The service: storage, clock, the peers it calls and the merchants' notification endpoints.
#[derive(Clone)]
pub struct Business {
    pub(crate) db: Db,
    /// The staff desk: audit trail and four-eyes proposals ([`proposals`]).
    desk: tuikuan_auth::Desk,
    clock: SharedClock,
    clearing: ClearingServiceClient<GrpcChannel>,
    refund: RefundServiceClient<GrpcChannel>,
    error_refund: ErrorRefundServiceClient<GrpcChannel>,
    cipher: Sealer,
    sender: crate::egress::Sender,
}

impl std::fmt::Debug for Business {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Business")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Who drives a refund: the caller waiting for the answer (it learns a rejection from the answer),
/// or the recovery loop (a rejection is notified to the merchant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriveOrigin {
    Caller,
    Recovery,
}

/// What to create: a merchant's refund or an operator's error refund (on a trade already found).
#[derive(Debug, Clone)]
enum NewRefund {
    Merchant(RefundRequest),
    Error {
        request: ErrorRefundRequest,
        operator: Operator,
        trade_id: String,
    },
}

impl NewRefund {
    /// The idempotency key within the merchant.
    fn refund_no(&self) -> String {
        match self {
            NewRefund::Merchant(r) => r.merchant_refund_no.clone(),
            NewRefund::Error { trade_id, .. } => error_refund_no(trade_id),
        }
    }

    fn check_repeat(&self, existing: &MerchantRefund) -> Result<()> {
        match self {
            NewRefund::Merchant(r) => existing.check_repeat(r),
            NewRefund::Error { request, .. } => existing.check_error_repeat(request),
        }
    }

    /// Checks the trade and reserves the refund (inside the caller's transaction).
    fn reserve(
        &self,
        c: &mut tuikuan_db::AnyConnection,
        cipher: &Sealer,
        merchant_id: &str,
        now_ms: i64,
    ) -> std::result::Result<MerchantRefund, ReserveError> {
        let refund = match self {
            NewRefund::Merchant(req) => {
                // Another merchant's order is indistinguishable from a missing one.
                let trade = store::trade_by_order(c, cipher, merchant_id, &req.order_no)?
                    .ok_or_else(|| trade_not_found(&req.order_no))?;
                let channel = store::get_channel(c, &trade.channel)?;
                check_refundable(&trade, channel.as_ref(), req, now_ms)?;
                MerchantRefund::reserve(new_id("rf"), merchant_id, &trade, req, now_ms)
            }
            NewRefund::Error {
                request,
                operator,
                trade_id,
            } => {
                let trade = store::get_trade(c, cipher, trade_id)?
                    .ok_or_else(|| trade_not_found(&request.order_no))?;
                check_error_refundable(&trade, request)?;
                MerchantRefund::reserve_error(new_id("rf"), &trade, request, &operator.id, now_ms)
            }
        };
        store::reserve_refund(c, &refund)?;
        Ok(refund)
    }
}

fn trade_not_found(order_no: &str) -> Error {
    Error::new(
        ErrorCode::TradeNotFound,
        format!("no trade with order_no {order_no}"),
    )
}

/// What one notification run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    pub attempted: u32,
    pub delivered: u32,
    pub retrying: u32,
    pub abandoned: u32,
}

/// Enqueues the merchant's notification of a refund that just became final (call in the
/// transaction that moved it): SUCCEEDED and FAILED always, REJECTED only when the recovery loop
/// rejected a merchant's refund (the caller otherwise got it as the answer). Nothing when the
/// merchant has no notify URL.
fn enqueue_final(
    c: &mut tuikuan_db::AnyConnection,
    refund: &MerchantRefund,
    origin: DriveOrigin,
    now_ms: i64,
) -> Result<()> {
    let notify = match refund.chain_state {
        ChainState::Succeeded | ChainState::Failed => true,
        ChainState::Rejected => origin == DriveOrigin::Recovery && !refund.kind.is_error_refund(),
        _ => false,
    };
    if !notify || !store::has_notify_url(c, &refund.merchant_id)? {
        return Ok(());
    }
    let n = Notification::for_refund(new_id("ntf"), refund, now_ms)?;
    if store::enqueue_notification(c, &n)? {
        tracing::info!(refund_id = %refund.refund_id, notification_id = %n.notification_id, event = n.event.as_str(), "merchant notification enqueued");
    }
    Ok(())
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
    async fn create_refund(&self, merchant_id: &str, request: NewRefund) -> Result<MerchantRefund> {
        let refund_no = request.refund_no();
        // Two rounds suffice: a lost insert race means the winner's refund is there to re-read.
        for _ in 0..3 {
            let (m, no) = (merchant_id.to_string(), refund_no.clone());
            if let Some(existing) = self
                .db
                .run(move |c| store::refund_by_no(c, &m, &no))
                .await?
            {
                request.check_repeat(&existing)?;
                return self.drive(existing, DriveOrigin::Caller).await;
            }
            let now_ms = self.clock.now_ms();
            let (m, req, cipher) = (
                merchant_id.to_string(),
                request.clone(),
                self.cipher.clone(),
            );
            let reserved = self
                .db
                .run(move |conn| {
                    let result = conn
                        .transaction::<_, ReserveError, _>(|c| req.reserve(c, &cipher, &m, now_ms));
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
                    tracing::info!(refund_id = %refund.refund_id, amount = %refund.amount, kind = refund.kind.as_str(), "refund reserved");
                    return self.drive(refund, DriveOrigin::Caller).await;
                }
                // A concurrent duplicate won the insert: re-read it (step 1).
                Ok(None) => continue,
                Err(e) => {
                    // A concurrent duplicate may have taken the amount first (its reservation
                    // makes ours exceed the payment): that is a repeat, not a refusal.
                    let (m, no) = (merchant_id.to_string(), refund_no.clone());
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

    /// An operator's error refund (差错退款) of `request.order_no` of `request.merchant_id`.
    #[tracing::instrument(skip_all, fields(merchant_id = %request.merchant_id, order_no = %request.order_no, operator = %operator.id))]
    async fn create_error_refund(
        &self,
        request: ErrorRefundRequest,
        operator: Operator,
    ) -> Result<MerchantRefund> {
        let (m, o, cipher) = (
            request.merchant_id.clone(),
            request.order_no.clone(),
            self.cipher.clone(),
        );
        let trade = self
            .db
            .run(move |c| store::trade_by_order(c, &cipher, &m, &o))
            .await?
            .ok_or_else(|| trade_not_found(&request.order_no))?;
        let merchant_id = trade.merchant_id.clone();
        let refund = self
            .create_refund(
                &merchant_id,
                NewRefund::Error {
                    request: request.clone(),
                    operator: operator.clone(),
                    trade_id: trade.trade_id,
                },
            )
            .await?;
        tracing::info!(
            target: "audit",
            action = "CREATE_ERROR_REFUND",
            operator = %operator.id,
            role = %operator.role,
            refund_id = %refund.refund_id,
            kind = refund.kind.as_str(),
            amount = %refund.amount,
            state = %refund.chain_state,
            reason = %request.reason,
            "error refund raised"
        );
        Ok(refund)
    }

    /// Step 3: moves a refund along the chain as far as the peers allow, persisting each step
    /// before the next call. Every call carries the refund id as its idempotency key, so driving
    /// the same refund again (a repeat, the recovery loop, a second replica) never debits twice.
    #[tracing::instrument(skip_all, fields(refund_id = %refund.refund_id))]
    async fn drive(
        &self,
        mut refund: MerchantRefund,
        origin: DriveOrigin,
    ) -> Result<MerchantRefund> {
        for _ in 0..MAX_DRIVE_STEPS {
            let before = refund.chain_state;
            refund = match before {
                ChainState::Reserved => self.step_debit(refund, origin).await?,
                ChainState::Debited => self.step_hand_over(refund, origin).await?,
                ChainState::Reversing => self.step_reverse(refund, origin).await?,
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
    async fn step_debit(
        &self,
        refund: MerchantRefund,
        origin: DriveOrigin,
    ) -> Result<MerchantRefund> {
        let request = clearing_pb::RefundDebitRequest {
            refund_id: refund.refund_id.clone(),
            trade_id: refund.trade_id.clone(),
            merchant_id: refund.merchant_id.clone(),
            amount: refund.amount.amount_string(),
            currency: refund.amount.currency().code().to_string(),
            splits: refund.split_amounts.iter().map(clearing_split).collect(),
            error_refund: refund.kind.is_error_refund(),
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
                    | D::Returned
                    | D::Reinstating
                    | D::Reopening => {
                        self.advance(refund, ChainState::Debited, (None, None), origin)
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
                            origin,
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
                        self.advance(refund, ChainState::Rejected, error_pair(&e), origin)
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
    async fn step_hand_over(
        &self,
        refund: MerchantRefund,
        origin: DriveOrigin,
    ) -> Result<MerchantRefund> {
        let (trade_id, cipher) = (refund.trade_id.clone(), self.cipher.clone());
        let trade = self
            .db
            .run(move |c| store::get_trade(c, &cipher, &trade_id))
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
            kind: kind_to_refund_center(refund.kind) as i32,
            operator: refund.operator.clone().unwrap_or_default(),
            trade_amount: trade.amount.amount_string(),
        };
        let (call, answer) = if refund.kind.is_error_refund() {
            (
                "refund.CreateErrorRefund",
                self.error_refund.clone().create_error_refund(request).await,
            )
        } else {
            (
                "refund.CreateRefund",
                self.refund.clone().create_refund(request).await,
            )
        };
        match answer {
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
                        self.advance(refund, ChainState::Reversing, error_pair(&e), origin)
                            .await
                    }
                    PeerVerdict::Retry => {
                        log_retry(call, &e);
                        Ok(refund)
                    }
                }
            }
        }
    }

    /// REVERSING: give the merchant its money back, then reject.
    async fn step_reverse(
        &self,
        refund: MerchantRefund,
        origin: DriveOrigin,
    ) -> Result<MerchantRefund> {
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
                self.advance(refund, ChainState::Rejected, error, origin)
                    .await
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

    /// Persists `refund -> to` (releasing the reservation for REJECTED and FAILED, enqueueing the
    /// merchant's notification when due) and returns the refund as stored, whoever won the move.
    async fn advance(
        &self,
        refund: MerchantRefund,
        to: ChainState,
        error: (Option<String>, Option<String>),
        origin: DriveOrigin,
    ) -> Result<MerchantRefund> {
        let now_ms = self.clock.now_ms();
        self.db
            .transaction(move |c| {
                let moved = store::advance_refund(c, &refund, to, error, now_ms)?;
                if !moved {
                    tracing::debug!(to = %to, "another driver moved the refund first");
                }
                let stored = store::get_refund(c, &refund.refund_id)?.ok_or_else(|| {
                    Error::internal(format!("refund {} vanished", refund.refund_id))
                })?;
                if moved {
                    enqueue_final(c, &stored, origin, now_ms)?;
                }
                Ok(stored)
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
        let cipher = self.cipher.clone();
        let trade = self
            .db
            .run(move |c| {
                if store::get_merchant(c, &payment.merchant_id)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::MerchantNotFound,
                        format!("no merchant {}", payment.merchant_id),
                    ));
                }
                for (i, r) in payment.receivers.iter().enumerate() {
                    if store::get_merchant(c, &r.receiver_id)?.is_none() {
                        return Err(Error::new(
                            ErrorCode::MerchantNotFound,
                            format!("receivers[{i}].receiver_id: no merchant {}", r.receiver_id),
                        ));
                    }
                }
                if store::get_channel(c, &payment.channel)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::ChannelNotFound,
                        format!("channel {} is not configured", payment.channel),
                    ));
                }
                let trade = payment.clone().into_trade(new_id("tr"), now_ms);
                match store::insert_trade(c, &cipher, &trade)? {
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
            splits: trade.receivers.iter().map(clearing_split).collect(),
            platform_subsidy: if trade.platform_subsidy.is_zero() {
                String::new()
            } else {
                trade.platform_subsidy.amount_string()
            },
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
                        let stored = store::get_refund(c, &refund_id)?.ok_or_else(|| {
                            Error::internal(format!("refund {refund_id} vanished"))
                        })?;
                        if stored.chain_state != refund.chain_state {
                            enqueue_final(c, &stored, DriveOrigin::Recovery, now_ms)?;
                        }
                        return Ok(stored);
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
            match self.drive(refund, DriveOrigin::Recovery).await {
                Ok(r) if r.chain_state.is_in_flight() => counts.still_pending += 1,
                Ok(_) => counts.completed += 1,
                Err(e) => {
                    tracing::error!(refund_id = %id, code = %e.code, error = %e.message, "recovery could not drive refund");
                    counts.still_pending += 1;
                }
            }
        }
        let cipher = self.cipher.clone();
        let trades = self
            .db
            .run(move |c| store::unsettled_trades(c, &cipher, RECOVERY_BATCH))
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

    // -----------------------------------------------------------------------------------------
    // Notifications
    // -----------------------------------------------------------------------------------------

    /// Sends every due notification once (at most [`NOTIFY_BATCH`], [`NOTIFY_PARALLEL`] at a
    /// time): claims it, POSTs it signed, records the attempt and the next step. The job loop and
    /// `RunNotifications` both call this.
    #[tracing::instrument(skip_all)]
    pub async fn run_notifications(&self) -> Result<NotifyCounts> {
        let now_ms = self.clock.now_ms();
        let due = self
            .db
            .run(move |c| store::due_notifications(c, now_ms, NOTIFY_BATCH))
            .await?;
        let mut counts = NotifyCounts::default();
        let mut running = tokio::task::JoinSet::new();
        let mut results = Vec::with_capacity(due.len());
        for n in due {
            if running.len() >= NOTIFY_PARALLEL {
                if let Some(done) = running.join_next().await {
                    results.push(done);
                }
            }
            let svc = self.clone();
            running.spawn(async move { svc.attempt_notification(n).await });
        }
        while let Some(done) = running.join_next().await {
            results.push(done);
        }
        for done in results {
            match done {
                Ok(Ok(Some(status))) => {
                    counts.attempted += 1;
                    match status {
                        NotificationStatus::Delivered => counts.delivered += 1,
                        NotificationStatus::Pending => counts.retrying += 1,
                        NotificationStatus::Abandoned => counts.abandoned += 1,
                    }
                }
                // Another sender claimed it first.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::error!(code = %e.code, error = %e.message, "notification attempt not recorded");
                }
                Err(e) => tracing::error!(error = %e, "notification task failed"),
            }
        }
        if counts != NotifyCounts::default() {
            tracing::info!(?counts, "notification run");
        }
        Ok(counts)
    }

    /// One attempt of one notification; `None` when another sender claimed it.
    #[tracing::instrument(skip_all, fields(notification_id = %n.notification_id, refund_id = %n.refund_id))]
    async fn attempt_notification(&self, n: Notification) -> Result<Option<NotificationStatus>> {
        let lease_until = self.clock.now_ms().saturating_add(NOTIFY_LEASE_MS);
        let seen = n.clone();
        if !self
            .db
            .run(move |c| store::claim_notification(c, &seen, lease_until))
            .await?
        {
            return Ok(None);
        }
        let (m, cipher) = (n.merchant_id.clone(), self.cipher.clone());
        let target = self
            .db
            .run(move |c| store::notify_config(c, &cipher, &m))
            .await;
        let at_ms = self.clock.now_ms();
        let result = match target {
            Ok(Some(t)) => self.sender.post(&t, &n.body, at_ms.div_euclid(1000)).await,
            Ok(None) => Err((None, "the merchant has no notify_url".to_string())),
            Err(e) => Err((None, format!("notify settings unreadable: {}", e.message))),
        };
        let outcome = n.after_attempt(at_ms, result)?;
        let status = outcome.status;
        match (&status, &outcome.attempt.error) {
            (NotificationStatus::Delivered, _) => {
                tracing::info!(attempt = outcome.attempts, "merchant notified")
            }
            (_, Some(error)) => {
                tracing::warn!(attempt = outcome.attempts, status = status.as_str(), next_ms = outcome.next_attempt_at_ms, error = %error, "merchant notification failed")
            }
            _ => {}
        }
        self.db
            .transaction(move |c| store::record_attempt(c, &outcome))
            .await?;
        Ok(Some(status))
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

fn clearing_split(s: &Split) -> clearing_pb::Split {
    clearing_pb::Split {
        receiver_id: s.receiver_id.clone(),
        amount: s.amount.amount_string(),
    }
}

fn split_to_wire(s: &Split) -> pb::SplitReceiver {
    pb::SplitReceiver {
        receiver_id: s.receiver_id.clone(),
        amount: s.amount.amount_string(),
    }
}

fn split_pairs(splits: &[pb::SplitReceiver]) -> Vec<(&str, &str)> {
    splits
        .iter()
        .map(|s| (s.receiver_id.as_str(), s.amount.as_str()))
        .collect()
}

fn kind_to_wire(k: RefundKind) -> pb::RefundKind {
    match k {
        RefundKind::Normal => pb::RefundKind::Normal,
        RefundKind::DuplicatePayment => pb::RefundKind::DuplicatePayment,
        RefundKind::ExpiredOrder => pb::RefundKind::ExpiredOrder,
    }
}

fn kind_from_wire(k: i32) -> Option<RefundKind> {
    match pb::RefundKind::try_from(k) {
        Ok(pb::RefundKind::Normal) => Some(RefundKind::Normal),
        Ok(pb::RefundKind::DuplicatePayment) => Some(RefundKind::DuplicatePayment),
        Ok(pb::RefundKind::ExpiredOrder) => Some(RefundKind::ExpiredOrder),
        Ok(pb::RefundKind::Unspecified) | Err(_) => None,
    }
}

fn kind_to_refund_center(k: RefundKind) -> refund_pb::RefundKind {
    match k {
        RefundKind::Normal => refund_pb::RefundKind::Normal,
        RefundKind::DuplicatePayment => refund_pb::RefundKind::ErrorDuplicate,
        RefundKind::ExpiredOrder => refund_pb::RefundKind::ErrorExpired,
    }
}

fn notification_to_wire(n: &Notification, attempts: &[NotificationAttempt]) -> pb::Notification {
    pb::Notification {
        notification_id: n.notification_id.clone(),
        refund_id: n.refund_id.clone(),
        merchant_id: n.merchant_id.clone(),
        event: status_to_wire(n.event) as i32,
        status: match n.status {
            NotificationStatus::Pending => pb::NotificationStatus::Pending,
            NotificationStatus::Delivered => pb::NotificationStatus::Delivered,
            NotificationStatus::Abandoned => pb::NotificationStatus::Abandoned,
        } as i32,
        body: n.body.clone(),
        attempts: n.attempts,
        next_attempt_at_ms: if n.status == NotificationStatus::Pending {
            n.next_attempt_at_ms
        } else {
            0
        },
        created_at_ms: n.created_at_ms,
        delivered_at_ms: n.delivered_at_ms.unwrap_or(0),
        attempt_log: attempts
            .iter()
            .map(|a| pb::NotificationAttempt {
                attempt_no: a.attempt_no,
                attempted_at_ms: a.attempted_at_ms,
                http_status: a.http_status.map(u32::from).unwrap_or(0),
                error: a.error.clone().unwrap_or_default(),
            })
            .collect(),
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
        kind: kind_to_wire(r.kind) as i32,
        split_amounts: r.split_amounts.iter().map(split_to_wire).collect(),
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
        receivers: t.receivers.iter().map(split_to_wire).collect(),
        platform_subsidy: t.platform_subsidy.amount_string(),
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
        .and_then(|req| req.with_split_amounts(&split_pairs(&r.split_amounts)))
        .map_err(grpc_err)?;
        let refund = self
            .create_refund(&merchant.merchant_id, NewRefund::Merchant(req))
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
        let receivers = split_pairs(&r.receivers);
        let payment = NewPayment::validate(PaymentFields {
            merchant_id: &r.merchant_id,
            order_no: &r.order_no,
            channel: &r.channel,
            amount: &r.amount,
            currency: &r.currency,
            paid_at_ms: r.paid_at_ms,
            payer_card_no: &r.payer_card_no,
            payer_name: &r.payer_name,
            receivers: &receivers,
            platform_subsidy: &r.platform_subsidy,
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
        let cipher = self.cipher.clone();
        let trade = self
            .db
            .run(move |c| {
                store::trade_by_order(c, &cipher, &r.merchant_id, &r.order_no)?.ok_or_else(|| {
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
        if r.reinstated {
            if status != Some(RefundStatus::Succeeded) || r.returned {
                return Err(grpc_err(Error::field(
                    "reinstated",
                    "a reinstatement is reported with status SUCCEEDED",
                )));
            }
            let refund = self
                .report_reinstated(r.refund_id, r.reason)
                .await
                .map_err(grpc_err)?;
            return Ok(Response::new(refund_to_wire(&refund)));
        }
        if r.reopened {
            if status != Some(RefundStatus::Processing) || r.returned || r.reinstated {
                return Err(grpc_err(Error::field(
                    "reopened",
                    "a reopen is reported with status PROCESSING",
                )));
            }
            let refund = self
                .report_reopened(r.refund_id, r.reason, r.expected_completion_ms)
                .await
                .map_err(grpc_err)?;
            return Ok(Response::new(refund_to_wire(&refund)));
        }
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

    #[tracing::instrument(skip_all)]
    async fn create_error_refund(
        &self,
        request: Request<pb::CreateErrorRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        // The guard checked the operator token and the permission table (ERROR_REFUND).
        self.propose_error_refund(request).await
    }

    #[tracing::instrument(skip_all)]
    async fn set_notify_config(
        &self,
        request: Request<pb::SetNotifyConfigRequest>,
    ) -> Result<Response<pb::NotifyConfig>, Status> {
        let r = request.into_inner();
        validate_external_id(&r.merchant_id, "merchant_id").map_err(grpc_err)?;
        let target = NotifyTarget::validate(&r.notify_url, &r.notify_secret).map_err(grpc_err)?;
        if let Some(t) = &target {
            self.sender.check(&t.url).await.map_err(grpc_err)?;
        }
        let (m, t, cipher) = (r.merchant_id.clone(), target.clone(), self.cipher.clone());
        let found = self
            .db
            .run(move |c| store::set_notify_config(c, &cipher, &m, t.as_ref()))
            .await
            .map_err(grpc_err)?;
        if !found {
            return Err(grpc_err(Error::new(
                ErrorCode::MerchantNotFound,
                format!("no merchant {}", r.merchant_id),
            )));
        }
        tracing::info!(merchant_id = %r.merchant_id, enabled = target.is_some(), "notify settings changed");
        Ok(Response::new(pb::NotifyConfig {
            merchant_id: r.merchant_id,
            notify_url: target.map(|t| t.url).unwrap_or_default(),
        }))
    }

    async fn run_notifications(
        &self,
        _request: Request<pb::RunNotificationsRequest>,
    ) -> Result<Response<pb::NotificationReport>, Status> {
        let counts = self.run_notifications().await.map_err(grpc_err)?;
        Ok(Response::new(pb::NotificationReport {
            attempted: counts.attempted,
            delivered: counts.delivered,
            retrying: counts.retrying,
            abandoned: counts.abandoned,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let refund_id = request.into_inner().refund_id;
        validate_external_id(&refund_id, "refund_id").map_err(grpc_err)?;
        let list = self
            .db
            .run(move |c| {
                if store::get_refund(c, &refund_id)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::RefundNotFound,
                        format!("no refund {refund_id}"),
                    ));
                }
                store::notifications_of(c, &refund_id)
            })
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: list
                .iter()
                .map(|(n, attempts)| notification_to_wire(n, attempts))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_trades(
        &self,
        request: Request<pb::ListTradesRequest>,
    ) -> Result<Response<pb::ListTradesResponse>, Status> {
        let r = request.into_inner();
        let merchant_id = optional_id(&r.merchant_id, "merchant_id").map_err(grpc_err)?;
        let after = optional_id(&r.after, "after").map_err(grpc_err)?;
        let limit = match i64::from(r.limit) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let cipher = self.cipher.clone();
        let trades = self
            .db
            .run(move |c| {
                store::list_trades(c, &cipher, merchant_id.as_deref(), after.as_deref(), limit)
            })
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListTradesResponse {
            trades: trades.iter().map(trade_to_wire).collect(),
        }))
    }
}

/// An optional external id: empty = `None`.
fn optional_id(value: &str, field: &str) -> Result<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    validate_external_id(value, field)?;
    Ok(Some(value.to_string()))
}
