//! Integration tests of the business layer: the real service in-process on port 0, on SQLite and
//! PostgreSQL, talking gRPC to in-process peers.
//!
//! The peers here are small scripted stand-ins for the clearing and refund centers (so each test
//! can make a peer refuse, reject or go down at will, and count the calls it got); they keep the
//! real peers' contracts: idempotent by refund id, INSUFFICIENT_BALANCE / CHANNEL_NOT_FOUND as
//! FAILED_PRECONDITION / NOT_FOUND, UNAVAILABLE when down.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_business::Config;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Error, ErrorCode, ManualClock, SharedClock};
use tuikuan_proto::business::v1 as pb;
use tuikuan_proto::business::v1::business_admin_service_client::BusinessAdminServiceClient;
use tuikuan_proto::business::v1::merchant_service_client::MerchantServiceClient;
use tuikuan_proto::clearing::v1 as cpb;
use tuikuan_proto::clearing::v1::clearing_service_server::{
    ClearingService, ClearingServiceServer,
};
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::pki::test_transport;
use tuikuan_proto::refund::v1 as rpb;
use tuikuan_proto::refund::v1::error_refund_service_server::{
    ErrorRefundService, ErrorRefundServiceServer,
};
use tuikuan_proto::refund::v1::refund_service_server::{RefundService, RefundServiceServer};
use tuikuan_proto::server::{spawn, ServiceHandle};
use tuikuan_proto::status::{from_status, to_status};
use tuikuan_proto::tls::Principal;

mod support;
use support::{notify_settings, FakeDns, MerchantEndpoint};

// -------------------------------------------------------------------------------------------------
// Scripted peers
// -------------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PeerState {
    /// Settled trade ids.
    settled: HashSet<String>,
    /// Merchant balances (minor units) available for debits; absent = unlimited.
    balances: HashMap<String, i64>,
    /// refund_id -> debit.
    debits: HashMap<String, cpb::Debit>,
    /// How many debit postings were made (a replay makes none).
    debit_postings: u32,
    refund_debit_calls: u32,
    /// Channels the refund center knows.
    channels: HashSet<String>,
    /// refund_id -> accepted order.
    orders: HashMap<String, rpb::RefundOrder>,
    /// The expected completion the refund center answers at acceptance.
    expected_completion_ms: i64,
    /// trade_id -> the settlement request as received (splits, subsidy).
    settle_requests: HashMap<String, cpb::SettlePaymentRequest>,
    /// refund_id -> the debit request as received (splits, error flag).
    debit_requests: HashMap<String, cpb::RefundDebitRequest>,
    /// refund_id -> the refund-center request as received, and through which interface.
    refund_requests: HashMap<String, (rpb::CreateRefundRequest, &'static str)>,
}

#[derive(Debug, Clone, Default)]
struct Peers {
    state: Arc<Mutex<PeerState>>,
    clearing_down: Arc<AtomicBool>,
}

fn refuse(code: ErrorCode, message: &str) -> Status {
    to_status(&Error::new(code, message))
}

impl Peers {
    fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_up(&self) -> Result<(), Status> {
        if self.clearing_down.load(Ordering::SeqCst) {
            Err(Status::unavailable("clearing is down"))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl ClearingService for Peers {
    async fn upsert_merchant_policy(
        &self,
        r: Request<cpb::MerchantPolicy>,
    ) -> Result<Response<cpb::MerchantPolicy>, Status> {
        Ok(Response::new(r.into_inner()))
    }

    async fn get_merchant_policy(
        &self,
        _r: Request<cpb::GetMerchantPolicyRequest>,
    ) -> Result<Response<cpb::MerchantPolicy>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn settle_payment(
        &self,
        r: Request<cpb::SettlePaymentRequest>,
    ) -> Result<Response<cpb::Settlement>, Status> {
        self.check_up()?;
        let r = r.into_inner();
        let mut s = self.state();
        s.settled.insert(r.trade_id.clone());
        s.settle_requests.insert(r.trade_id.clone(), r.clone());
        Ok(Response::new(cpb::Settlement {
            trade_id: r.trade_id,
            merchant_id: r.merchant_id,
            channel: r.channel,
            amount: r.amount.clone(),
            fee: "0".into(),
            net: r.amount,
            currency: r.currency,
            posting_id: "pst_x".into(),
        }))
    }

    async fn refund_debit(
        &self,
        r: Request<cpb::RefundDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        self.check_up()?;
        let r = r.into_inner();
        let mut s = self.state();
        s.refund_debit_calls += 1;
        s.debit_requests.insert(r.refund_id.clone(), r.clone());
        if let Some(d) = s.debits.get(&r.refund_id) {
            if d.amount != r.amount || d.trade_id != r.trade_id {
                return Err(refuse(ErrorCode::IdempotencyConflict, "other content"));
            }
            return Ok(Response::new(d.clone()));
        }
        if !s.settled.contains(&r.trade_id) {
            return Err(refuse(ErrorCode::SettlementNotFound, "trade not settled"));
        }
        let minor: i64 = r.amount.replace('.', "").parse().unwrap_or(i64::MAX);
        if let Some(balance) = s.balances.get_mut(&r.merchant_id) {
            if *balance < minor {
                return Err(refuse(ErrorCode::InsufficientBalance, "balance too low"));
            }
            *balance -= minor;
        }
        let debit = cpb::Debit {
            refund_id: r.refund_id.clone(),
            trade_id: r.trade_id,
            merchant_id: r.merchant_id,
            amount: r.amount.clone(),
            merchant_amount: r.amount,
            currency: r.currency,
            status: cpb::DebitStatus::Debited as i32,
            ..Default::default()
        };
        s.debit_postings += 1;
        s.debits.insert(r.refund_id, debit.clone());
        Ok(Response::new(debit))
    }

    async fn reverse_debit(
        &self,
        r: Request<cpb::ReverseDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        self.check_up()?;
        let r = r.into_inner();
        let mut s = self.state();
        let d = s
            .debits
            .get_mut(&r.refund_id)
            .ok_or_else(|| refuse(ErrorCode::DebitNotFound, "no debit"))?;
        d.status = cpb::DebitStatus::Reversed as i32;
        Ok(Response::new(d.clone()))
    }

    async fn complete_debit(
        &self,
        _r: Request<cpb::CompleteDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn return_debit(
        &self,
        _r: Request<cpb::ReturnDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn reinstate_debit(
        &self,
        _r: Request<cpb::ReinstateDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn reopen_debit(
        &self,
        _r: Request<cpb::ReopenDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn post_adjustment(
        &self,
        _r: Request<cpb::AdjustmentRequest>,
    ) -> Result<Response<cpb::Adjustment>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn run_recovery(
        &self,
        _r: Request<cpb::RunRecoveryRequest>,
    ) -> Result<Response<cpb::RecoveryReport>, Status> {
        Ok(Response::new(cpb::RecoveryReport::default()))
    }

    async fn sweep_reserves(
        &self,
        _r: Request<cpb::SweepReservesRequest>,
    ) -> Result<Response<cpb::SweepReservesResponse>, Status> {
        Ok(Response::new(cpb::SweepReservesResponse::default()))
    }

    async fn get_debit(
        &self,
        r: Request<cpb::GetDebitRequest>,
    ) -> Result<Response<cpb::Debit>, Status> {
        let id = r.into_inner().refund_id;
        self.state()
            .debits
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| refuse(ErrorCode::DebitNotFound, "no debit"))
    }
}

impl Peers {
    /// The refund center's acceptance, through `CreateRefund` or `CreateErrorRefund`.
    fn accept_refund(
        &self,
        r: rpb::CreateRefundRequest,
        via: &'static str,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        let mut s = self.state();
        s.refund_requests
            .insert(r.refund_id.clone(), (r.clone(), via));
        if !s.channels.contains(&r.channel) {
            return Err(refuse(ErrorCode::ChannelNotFound, "channel not configured"));
        }
        let debited = s
            .debits
            .get(&r.refund_id)
            .is_some_and(|d| d.status == cpb::DebitStatus::Debited as i32);
        if !debited {
            return Err(refuse(ErrorCode::DebitNotActive, "no active debit"));
        }
        assert!(r.trade_paid_at_ms > 0 && !r.order_no.is_empty());
        let order = rpb::RefundOrder {
            refund_id: r.refund_id.clone(),
            merchant_id: r.merchant_id,
            trade_id: r.trade_id,
            order_no: r.order_no,
            channel: r.channel,
            amount: r.amount,
            currency: r.currency,
            expected_completion_ms: s.expected_completion_ms,
            ..Default::default()
        };
        s.orders.entry(r.refund_id).or_insert(order.clone());
        Ok(Response::new(order))
    }
}

#[tonic::async_trait]
impl ErrorRefundService for Peers {
    async fn create_error_refund(
        &self,
        r: Request<rpb::CreateRefundRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        let r = r.into_inner();
        let error_kind = matches!(
            rpb::RefundKind::try_from(r.kind),
            Ok(rpb::RefundKind::ErrorDuplicate | rpb::RefundKind::ErrorExpired)
        );
        if !error_kind {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                "kind: not an error refund",
            ));
        }
        if r.amount != r.trade_amount {
            return Err(refuse(ErrorCode::InvalidArgument, "amount: partial"));
        }
        self.accept_refund(r, "CreateErrorRefund")
    }
}

#[tonic::async_trait]
impl RefundService for Peers {
    async fn create_refund(
        &self,
        r: Request<rpb::CreateRefundRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        self.accept_refund(r.into_inner(), "CreateRefund")
    }

    async fn get_refund(
        &self,
        _r: Request<rpb::GetRefundRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn list_refunds(
        &self,
        _r: Request<rpb::ListRefundsRequest>,
    ) -> Result<Response<rpb::ListRefundsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn upsert_channel(
        &self,
        _r: Request<rpb::Channel>,
    ) -> Result<Response<rpb::Channel>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn list_channels(
        &self,
        _r: Request<rpb::ListChannelsRequest>,
    ) -> Result<Response<rpb::ListChannelsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn run_interface_cycle(
        &self,
        _r: Request<rpb::RunInterfaceCycleRequest>,
    ) -> Result<Response<rpb::CycleReport>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn bank_callback(
        &self,
        _r: Request<rpb::BankCallbackRequest>,
    ) -> Result<Response<rpb::BankCallbackResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn list_submitted(
        &self,
        _r: Request<rpb::ListSubmittedRequest>,
    ) -> Result<Response<rpb::ListSubmittedResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn apply_reconciliation(
        &self,
        _r: Request<rpb::ApplyReconciliationRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn run_outbox(
        &self,
        _r: Request<rpb::RunOutboxRequest>,
    ) -> Result<Response<rpb::OutboxReport>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn reinstate_succeeded(
        &self,
        _r: Request<rpb::ReinstateSucceededRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn reopen_refund(
        &self,
        _r: Request<rpb::ReopenRefundRequest>,
    ) -> Result<Response<rpb::RefundOrder>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn run_payout_dispatch(
        &self,
        _r: Request<rpb::RunInterfaceCycleRequest>,
    ) -> Result<Response<rpb::CycleReport>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    async fn payout_update(
        &self,
        _r: Request<rpb::PayoutUpdateRequest>,
    ) -> Result<Response<rpb::PayoutUpdateResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

async fn spawn_peers(peers: &Peers) -> (ServiceHandle, ServiceHandle) {
    let c = peers.clone();
    let clearing = spawn("127.0.0.1:0", move |listener, shutdown| {
        tuikuan_proto::server::serve(
            listener,
            test_transport(Principal::Clearing),
            tonic::service::Routes::new(ClearingServiceServer::new(c)),
            &[],
            shutdown,
        )
    })
    .await
    .unwrap();
    let r = peers.clone();
    let refund = spawn("127.0.0.1:0", move |listener, shutdown| {
        tuikuan_proto::server::serve(
            listener,
            test_transport(Principal::Refund),
            tonic::service::Routes::new(RefundServiceServer::new(r.clone()))
                .add_service(ErrorRefundServiceServer::new(r)),
            &[],
            shutdown,
        )
    })
    .await
    .unwrap();
    (clearing, refund)
}

/// An address nothing listens on.
async fn closed_addr() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

// -------------------------------------------------------------------------------------------------
// Harness
// -------------------------------------------------------------------------------------------------

const KEY_A: &str = "key-a-0123456789abcdef";
/// The card key of the tests (not the development default).
const TEST_CARD_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_B: &str = "key-b-0123456789abcdef";
const CHANNEL: &str = "NETBANK";

struct Env {
    clock: ManualClock,
    peers: Peers,
    clearing: ServiceHandle,
    refund: ServiceHandle,
    business: ServiceHandle,
    admin: BusinessAdminServiceClient<AnyCaller>,
    merchant: MerchantServiceClient<Channel>,
}

fn config(url: &str, clock: &ManualClock, clearing: String, refund: String) -> Config {
    let shared: SharedClock = Arc::new(clock.clone());
    Config {
        database_url: url.to_string(),
        clock: shared,
        clearing_addr: clearing,
        refund_addr: refund,
        job_interval: None,
        card_key: TEST_CARD_KEY.to_string(),
        staff: tuikuan_auth::StaffConfig::tester(),
        // Merchant endpoints here are HTTPS on 127.0.0.1 with the test PKI's certificate.
        notify: notify_settings(true, &[], None),
        ..Config::new(
            url,
            Arc::new(clock.clone()),
            "",
            "",
            test_transport(Principal::Business),
        )
    }
}

/// Public listeners of the business instances started here, by internal address (the merchant
/// API has a listener of its own).
static PUBLIC: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Serves the business layer on `internal` and on a public listener bound here, before the
/// server task starts, so that [`public_url`] knows it at once. The internal listener runs under
/// mutual TLS with the test PKI (the drivers play several callers through [`AnyCaller`]); the
/// merchant API is plaintext here (its TLS is tested by the integration tests).
fn serve(
    cfg: Config,
    internal: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
    let public = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the public listener");
    public.set_nonblocking(true).expect("non-blocking");
    PUBLIC.lock().unwrap().push((
        format!("http://{}", internal.local_addr().unwrap()),
        format!("http://{}", public.local_addr().unwrap()),
    ));
    async move {
        let public = tokio::net::TcpListener::from_std(public).expect("public listener");
        tuikuan_business::serve(cfg, internal, public, shutdown).await
    }
}

/// The public listener of the business instance whose internal listener is `internal_url`.
fn public_url(internal_url: &str) -> String {
    PUBLIC
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(i, _)| i == internal_url)
        .map(|(_, p)| p.clone())
        .expect("a business instance started here")
}

async fn start_business(cfg: Config) -> ServiceHandle {
    spawn("127.0.0.1:0", move |listener, shutdown| {
        serve(cfg, listener, shutdown)
    })
    .await
    .unwrap()
}

impl Env {
    /// Peers up, merchants A and B, the channel configured at both ends.
    async fn start(url: &str) -> Env {
        Env::start_with(url, notify_settings(true, &[], None)).await
    }

    /// [`Env::start`] with the notification sender's settings `notify`.
    async fn start_with(url: &str, notify: tuikuan_business::NotifySettings) -> Env {
        let clock =
            ManualClock::at_business(chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(), 10);
        let peers = Peers::default();
        peers.state().channels.insert(CHANNEL.to_string());
        let (clearing, refund) = spawn_peers(&peers).await;
        let business = start_business(Config {
            notify,
            ..config(url, &clock, clearing.url(), refund.url())
        })
        .await;
        let channel = AnyCaller::new(Principal::Business, &business.url());
        let public = tuikuan_proto::client::channel(&public_url(&business.url())).unwrap();
        let mut env = Env {
            clock,
            peers,
            clearing,
            refund,
            business,
            admin: BusinessAdminServiceClient::new(channel),
            merchant: MerchantServiceClient::new(public),
        };
        for (id, key) in [("mA", KEY_A), ("mB", KEY_B)] {
            env.admin
                .create_merchant(pb::CreateMerchantRequest {
                    merchant_id: id.into(),
                    name: format!("merchant {id}"),
                    api_key: key.into(),
                })
                .await
                .unwrap();
        }
        env.admin
            .upsert_channel(pb::Channel {
                code: CHANNEL.into(),
                refund_window_days: 0,
                enabled: true,
            })
            .await
            .unwrap();
        env
    }

    async fn stop(self) {
        self.business.stop().await.unwrap();
        self.clearing.stop().await.unwrap();
        self.refund.stop().await.unwrap();
    }

    /// Reconnects the clients to a new business instance.
    fn connect(&mut self, business: ServiceHandle) -> ServiceHandle {
        let channel = AnyCaller::new(Principal::Business, &business.url());
        self.admin = BusinessAdminServiceClient::new(channel);
        self.merchant = MerchantServiceClient::new(
            tuikuan_proto::client::channel(&public_url(&business.url())).unwrap(),
        );
        std::mem::replace(&mut self.business, business)
    }

    async fn pay(&mut self, merchant: &str, order_no: &str, amount: &str) -> pb::Trade {
        self.admin
            .record_payment(payment(merchant, order_no, amount, self.clock_ms() - 1000))
            .await
            .unwrap()
            .into_inner()
    }

    fn clock_ms(&self) -> i64 {
        use tuikuan_kernel::Clock;
        self.clock.now_ms()
    }

    async fn refund(
        &self,
        key: &str,
        no: &str,
        order_no: &str,
        amount: &str,
    ) -> Result<pb::Refund, Error> {
        create(&self.merchant, key, refund_req(no, order_no, amount, "CNY")).await
    }

    async fn trade(&mut self, merchant: &str, order_no: &str) -> pb::Trade {
        self.admin
            .get_trade(pb::GetTradeRequest {
                merchant_id: merchant.into(),
                order_no: order_no.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn get(&self, key: &str, no: &str) -> Result<pb::Refund, Error> {
        let mut req = Request::new(pb::GetRefundRequest {
            merchant_refund_no: no.into(),
        });
        authorize(&mut req, key);
        self.merchant
            .clone()
            .get_refund(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| from_status(&s))
    }

    async fn recover(&mut self) -> pb::RecoveryReport {
        self.admin
            .run_recovery(pb::RunRecoveryRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

fn payment(
    merchant: &str,
    order_no: &str,
    amount: &str,
    paid_at_ms: i64,
) -> pb::RecordPaymentRequest {
    pb::RecordPaymentRequest {
        merchant_id: merchant.into(),
        order_no: order_no.into(),
        channel: CHANNEL.into(),
        amount: amount.into(),
        currency: "CNY".into(),
        paid_at_ms,
        payer_card_no: "6222020200112233".into(),
        payer_name: "Li Lei".into(),
        ..Default::default()
    }
}

fn refund_req(no: &str, order_no: &str, amount: &str, currency: &str) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        merchant_refund_no: no.into(),
        order_no: order_no.into(),
        amount: amount.into(),
        currency: currency.into(),
        reason: "customer returned the goods".into(),
        ..Default::default()
    }
}

fn authorize<T>(req: &mut Request<T>, key: &str) {
    if !key.is_empty() {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
}

async fn create(
    client: &MerchantServiceClient<Channel>,
    key: &str,
    body: pb::CreateRefundRequest,
) -> Result<pb::Refund, Error> {
    let mut req = Request::new(body);
    authorize(&mut req, key);
    client
        .clone()
        .create_refund(req)
        .await
        .map(Response::into_inner)
        .map_err(|s| from_status(&s))
}

fn status(r: &pb::Refund) -> pb::RefundStatus {
    pb::RefundStatus::try_from(r.status).unwrap()
}

macro_rules! both_databases {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = tuikuan_db::testing::TestDb::sqlite(stringify!($scenario));
                super::$scenario(db.url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = tuikuan_db::testing::TestDb::postgres(stringify!($scenario)) else {
                    return;
                };
                super::$scenario(db.url()).await;
            }
        }
    };
}

// -------------------------------------------------------------------------------------------------
// Scenarios
// -------------------------------------------------------------------------------------------------

both_databases!(happy_path_idempotency_and_conflict);
async fn happy_path_idempotency_and_conflict(url: &str) {
    let mut env = Env::start(url).await;
    let trade = env.pay("mA", "order-1", "100.00").await;
    assert_eq!(trade.settle_status, pb::SettleStatus::Settled as i32);
    assert_eq!(trade.payer_card_masked, "************2233");
    assert_eq!(trade.refunded, "0.00");

    let first = env.refund(KEY_A, "rn-1", "order-1", "30.5").await.unwrap();
    assert_eq!(status(&first), pb::RefundStatus::Processing);
    assert!(first.refund_id.starts_with("rf_"));
    assert_eq!(first.amount, "30.50");
    assert_eq!(first.merchant_id, "mA");
    assert_eq!(first.error_code, "");

    // The same request again: the same refund, and no second debit.
    let again = env.refund(KEY_A, "rn-1", "order-1", "30.50").await.unwrap();
    assert_eq!(again.refund_id, first.refund_id);
    assert_eq!(status(&again), pb::RefundStatus::Processing);
    {
        let s = env.peers.state();
        assert_eq!(s.debit_postings, 1);
        assert_eq!(s.refund_debit_calls, 1);
        assert_eq!(s.orders.len(), 1);
        assert!(s.orders.contains_key(&first.refund_id));
    }
    assert_eq!(env.trade("mA", "order-1").await.refunded, "30.50");

    // The same number with other content is a conflict.
    let conflict = env
        .refund(KEY_A, "rn-1", "order-1", "30.51")
        .await
        .unwrap_err();
    assert_eq!(conflict.code, ErrorCode::IdempotencyConflict);

    // GetRefund sees own refunds only.
    assert_eq!(
        env.get(KEY_A, "rn-1").await.unwrap().refund_id,
        first.refund_id
    );
    assert_eq!(
        env.get(KEY_B, "rn-1").await.unwrap_err().code,
        ErrorCode::RefundNotFound
    );

    // Merchant B may use the same refund number for its own trade.
    env.pay("mB", "order-1", "10").await;
    let b = env.refund(KEY_B, "rn-1", "order-1", "10").await.unwrap();
    assert_ne!(b.refund_id, first.refund_id);
    assert_eq!(status(&b), pb::RefundStatus::Processing);

    // ListRefunds: filter and paging.
    let all = env
        .admin
        .list_refunds(pb::ListRefundsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .refunds;
    assert_eq!(all.len(), 2);
    let only_a = env
        .admin
        .list_refunds(pb::ListRefundsRequest {
            merchant_id: "mA".into(),
            status: pb::RefundStatus::Processing as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refunds;
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0].refund_id, first.refund_id);
    let page1 = env
        .admin
        .list_refunds(pb::ListRefundsRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refunds;
    let page2 = env
        .admin
        .list_refunds(pb::ListRefundsRequest {
            limit: 1,
            after: page1[0].refund_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refunds;
    assert_eq!(page1.len() + page2.len(), 2);
    assert!(page1[0].refund_id < page2[0].refund_id);
    let none_rejected = env
        .admin
        .list_refunds(pb::ListRefundsRequest {
            status: pb::RefundStatus::Rejected as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refunds;
    assert!(none_rejected.is_empty());

    // Admin idempotency: merchants and payments.
    let same = env
        .admin
        .create_merchant(pb::CreateMerchantRequest {
            merchant_id: "mA".into(),
            name: "merchant mA".into(),
            api_key: KEY_A.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.merchant_id, "mA");
    let err = env
        .admin
        .create_merchant(pb::CreateMerchantRequest {
            merchant_id: "mA".into(),
            name: "someone else".into(),
            api_key: KEY_A.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(from_status(&err).code, ErrorCode::IdempotencyConflict);
    let repeat = env.pay("mA", "order-1", "100.00").await;
    assert_eq!(repeat.trade_id, trade.trade_id);
    let err = env
        .admin
        .record_payment(payment("mA", "order-1", "99.00", 1))
        .await
        .unwrap_err();
    assert_eq!(from_status(&err).code, ErrorCode::IdempotencyConflict);
    env.stop().await;
}

both_databases!(bad_inputs_have_stable_codes);
async fn bad_inputs_have_stable_codes(url: &str) {
    let mut env = Env::start(url).await;
    env.pay("mA", "order-1", "100").await;
    env.pay("mB", "order-b", "100").await;
    let cases: Vec<(&str, pb::CreateRefundRequest, ErrorCode)> = vec![
        (
            "negative",
            refund_req("r1", "order-1", "-1", "CNY"),
            ErrorCode::InvalidAmount,
        ),
        (
            "zero",
            refund_req("r1", "order-1", "0", "CNY"),
            ErrorCode::InvalidAmount,
        ),
        (
            "3 decimals",
            refund_req("r1", "order-1", "1.001", "CNY"),
            ErrorCode::InvalidAmount,
        ),
        (
            "exponent",
            refund_req("r1", "order-1", "1e13", "CNY"),
            ErrorCode::InvalidAmount,
        ),
        (
            "too large",
            refund_req("r1", "order-1", "10000000000000", "CNY"),
            ErrorCode::InvalidAmount,
        ),
        (
            "unknown currency",
            refund_req("r1", "order-1", "1", "XYZ"),
            ErrorCode::UnsupportedCurrency,
        ),
        (
            "other currency",
            refund_req("r1", "order-1", "1", "USD"),
            ErrorCode::CurrencyMismatch,
        ),
        (
            "another merchant's trade",
            refund_req("r1", "order-b", "1", "CNY"),
            ErrorCode::TradeNotFound,
        ),
        (
            "no such trade",
            refund_req("r1", "order-x", "1", "CNY"),
            ErrorCode::TradeNotFound,
        ),
        (
            "space in refund no",
            refund_req("r 1", "order-1", "1", "CNY"),
            ErrorCode::MalformedId,
        ),
        (
            "space in order no",
            refund_req("r1", "order 1", "1", "CNY"),
            ErrorCode::MalformedId,
        ),
        (
            "refund no too long",
            refund_req(&"r".repeat(65), "order-1", "1", "CNY"),
            ErrorCode::MalformedId,
        ),
        (
            "empty refund no",
            refund_req("", "order-1", "1", "CNY"),
            ErrorCode::InvalidArgument,
        ),
        (
            "more than paid",
            refund_req("r1", "order-1", "100.01", "CNY"),
            ErrorCode::RefundExceedsPaid,
        ),
    ];
    for (name, req, code) in cases {
        let err = create(&env.merchant, KEY_A, req).await.unwrap_err();
        assert_eq!(err.code, code, "{name}: {err}");
    }
    let mut long_reason = refund_req("r1", "order-1", "1", "CNY");
    long_reason.reason = "x".repeat(257);
    assert_eq!(
        create(&env.merchant, KEY_A, long_reason)
            .await
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    // Authentication.
    let ok = refund_req("r1", "order-1", "1", "CNY");
    assert_eq!(
        create(&env.merchant, "", ok.clone())
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        create(&env.merchant, "not-a-known-key-at-all", ok.clone())
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    // Nothing was persisted by any of the failures.
    assert_eq!(
        env.get(KEY_A, "r1").await.unwrap_err().code,
        ErrorCode::RefundNotFound
    );
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");

    // The window: 365 days by default.
    env.clock.advance(chrono::Duration::days(366));
    assert_eq!(
        create(&env.merchant, KEY_A, ok).await.unwrap_err().code,
        ErrorCode::RefundWindowExpired
    );

    // Admin validation.
    let admin_err = |r: Result<Response<pb::Trade>, Status>| from_status(&r.unwrap_err()).code;
    let now = env.clock_ms();
    assert_eq!(
        admin_err(
            env.admin
                .record_payment(payment("nobody", "o", "1", now))
                .await
        ),
        ErrorCode::MerchantNotFound
    );
    let mut p = payment("mA", "o2", "1", now);
    p.channel = "NOPE".into();
    assert_eq!(
        admin_err(env.admin.record_payment(p).await),
        ErrorCode::ChannelNotFound
    );
    let mut p = payment("mA", "o2", "1", now);
    p.payer_card_no = "1234".into();
    assert_eq!(
        admin_err(env.admin.record_payment(p).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        admin_err(env.admin.record_payment(payment("mA", "o2", "1", 0)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        admin_err(
            env.admin
                .record_payment(payment("mA", "o2", "0.001", now))
                .await
        ),
        ErrorCode::InvalidAmount
    );
    let short_key = env
        .admin
        .create_merchant(pb::CreateMerchantRequest {
            merchant_id: "mC".into(),
            name: "c".into(),
            api_key: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(from_status(&short_key).code, ErrorCode::InvalidArgument);
    let unknown = env
        .admin
        .report_refund_outcome(pb::ReportRefundOutcomeRequest {
            refund_id: "rf_unknown".into(),
            status: pb::RefundStatus::Succeeded as i32,
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(from_status(&unknown).code, ErrorCode::RefundNotFound);
    env.stop().await;
}

both_databases!(concurrent_partial_refunds_never_exceed_paid);
async fn concurrent_partial_refunds_never_exceed_paid(url: &str) {
    let mut env = Env::start(url).await;
    env.pay("mA", "order-1", "100.00").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = env.merchant.clone();
        tasks.push(tokio::spawn(async move {
            create(
                &client,
                KEY_A,
                refund_req(&format!("rn-{i}"), "order-1", "3.00", "CNY"),
            )
            .await
        }));
    }
    // Plus duplicates of the same refund number racing each other.
    for _ in 0..5 {
        let client = env.merchant.clone();
        tasks.push(tokio::spawn(async move {
            create(
                &client,
                KEY_A,
                refund_req("rn-dup", "order-1", "1.00", "CNY"),
            )
            .await
        }));
    }
    let mut accepted = 0;
    let mut exceeded = 0;
    let mut dup_ids = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) if r.amount == "1.00" => {
                assert_eq!(status(&r), pb::RefundStatus::Processing);
                dup_ids.insert(r.refund_id);
            }
            Ok(r) => {
                assert_eq!(status(&r), pb::RefundStatus::Processing);
                accepted += 1;
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::RefundExceedsPaid, "{e}");
                exceeded += 1;
            }
        }
    }
    // 100.00 takes the 1.00 duplicate at most once, so 33 refunds of 3.00 fit (99 + 1 = 100).
    assert_eq!(dup_ids.len(), 1, "duplicates must share one refund");
    assert_eq!(accepted, 33);
    assert_eq!(exceeded, 17);
    let trade = env.trade("mA", "order-1").await;
    assert_eq!(trade.refunded, "100.00");
    assert_eq!(env.peers.state().debit_postings, 34);
    // The stored invariant: the trade's reservation equals the sum of its live refunds.
    let db = tuikuan_db::Db::connect(url, 2).unwrap();
    let live = db
        .run(move |c| tuikuan_business::store::live_refunds_minor(c, &trade.trade_id))
        .await
        .unwrap();
    assert_eq!(live, 10_000);
    env.stop().await;
}

both_databases!(peers_down_then_recovery);
async fn peers_down_then_recovery(url: &str) {
    let mut env = Env::start(url).await;
    env.pay("mA", "order-1", "50").await;

    // Clearing goes down: the refund is kept, RECEIVED, with its amount reserved.
    env.peers.clearing_down.store(true, Ordering::SeqCst);
    let r = env.refund(KEY_A, "rn-1", "order-1", "20").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Received);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "20.00");
    let again = env.refund(KEY_A, "rn-1", "order-1", "20").await.unwrap();
    assert_eq!(again.refund_id, r.refund_id);
    assert_eq!(status(&again), pb::RefundStatus::Received);
    assert_eq!(env.peers.state().debit_postings, 0);

    // A payment recorded while clearing is down stays unsettled and cannot be refunded yet.
    let t = env.pay("mA", "order-2", "10").await;
    assert_eq!(t.settle_status, pb::SettleStatus::Unsettled as i32);
    assert_eq!(
        env.refund(KEY_A, "rn-2", "order-2", "1")
            .await
            .unwrap_err()
            .code,
        ErrorCode::TradeNotRefundable
    );

    let report = env.recover().await;
    assert_eq!(
        (report.resumed, report.completed, report.still_pending),
        (1, 0, 1)
    );
    assert_eq!(report.payments_settled, 0);

    // Back up: the recovery loop finishes both.
    env.peers.clearing_down.store(false, Ordering::SeqCst);
    let report = env.recover().await;
    assert_eq!(
        (report.resumed, report.completed, report.still_pending),
        (1, 1, 0)
    );
    assert_eq!(report.payments_settled, 1);
    let done = env.get(KEY_A, "rn-1").await.unwrap();
    assert_eq!(done.refund_id, r.refund_id);
    assert_eq!(status(&done), pb::RefundStatus::Processing);
    assert_eq!(env.peers.state().debit_postings, 1);
    assert_eq!(
        status(&env.refund(KEY_A, "rn-2", "order-2", "1").await.unwrap()),
        pb::RefundStatus::Processing
    );
    let report = env.recover().await;
    assert_eq!((report.resumed, report.payments_settled), (0, 0));

    // Insufficient balance: rejected, nothing moved, the reservation released.
    env.peers.state().balances.insert("mA".into(), 100);
    let rejected = env.refund(KEY_A, "rn-3", "order-1", "5").await.unwrap();
    assert_eq!(status(&rejected), pb::RefundStatus::Rejected);
    assert_eq!(rejected.error_code, "INSUFFICIENT_BALANCE");
    assert_eq!(env.trade("mA", "order-1").await.refunded, "20.00");
    env.stop().await;
}

both_databases!(crash_between_debit_and_refund_center);
async fn crash_between_debit_and_refund_center(url: &str) {
    let mut env = Env::start(url).await;
    // A business instance whose refund center address is a closed port.
    let first = start_business(config(
        url,
        &env.clock,
        env.clearing.url(),
        closed_addr().await,
    ))
    .await;
    let old = env.connect(first);
    old.stop().await.unwrap();
    env.pay("mA", "order-1", "80").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "80").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Received);
    assert_eq!(env.peers.state().debit_postings, 1);
    // Crash: the instance goes away without a graceful stop.
    let fixed = start_business(config(
        url,
        &env.clock,
        env.clearing.url(),
        env.refund.url(),
    ))
    .await;
    env.connect(fixed).kill().await;

    let report = env.recover().await;
    assert_eq!(
        (report.resumed, report.completed, report.still_pending),
        (1, 1, 0)
    );
    let done = env.get(KEY_A, "rn-1").await.unwrap();
    assert_eq!(
        (done.refund_id.as_str(), status(&done)),
        (r.refund_id.as_str(), pb::RefundStatus::Processing)
    );
    {
        let s = env.peers.state();
        assert_eq!(s.debit_postings, 1, "the debit happened once");
        assert_eq!(
            s.refund_debit_calls, 1,
            "a DEBITED refund is not debited again"
        );
        assert!(s.orders.contains_key(&r.refund_id));
    }
    env.stop().await;
}

both_databases!(refund_center_rejection_reverses_the_debit);
async fn refund_center_rejection_reverses_the_debit(url: &str) {
    let mut env = Env::start(url).await;
    env.pay("mA", "order-1", "80").await;
    env.peers.state().channels.clear();
    let r = env.refund(KEY_A, "rn-1", "order-1", "80").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Rejected);
    assert_eq!(r.error_code, "CHANNEL_NOT_FOUND");
    assert_eq!(
        env.peers.state().debits[&r.refund_id].status,
        cpb::DebitStatus::Reversed as i32
    );
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    // A repeat returns the rejection as it was.
    let again = env.refund(KEY_A, "rn-1", "order-1", "80").await.unwrap();
    assert_eq!(
        (again.refund_id.as_str(), status(&again)),
        (r.refund_id.as_str(), pb::RefundStatus::Rejected)
    );
    // The amount is free again.
    env.peers.state().channels.insert(CHANNEL.into());
    let ok = env.refund(KEY_A, "rn-2", "order-1", "80").await.unwrap();
    assert_eq!(status(&ok), pb::RefundStatus::Processing);
    env.stop().await;
}

both_databases!(outcome_failed_releases_the_amount);
async fn outcome_failed_releases_the_amount(url: &str) {
    let mut env = Env::start(url).await;
    env.pay("mA", "order-1", "60").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "60").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Processing);
    assert_eq!(
        env.refund(KEY_A, "rn-2", "order-1", "0.01")
            .await
            .unwrap_err()
            .code,
        ErrorCode::RefundExceedsPaid
    );
    let report = |status: pb::RefundStatus| pb::ReportRefundOutcomeRequest {
        refund_id: r.refund_id.clone(),
        status: status as i32,
        reason: "card cancelled".into(),
        ..Default::default()
    };
    let failed = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Failed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&failed), pb::RefundStatus::Failed);
    assert_eq!(failed.error_code, ErrorCode::RefundFailed.as_str());
    assert_eq!(failed.error_message, "card cancelled");
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    // Idempotent and monotone.
    let again = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Failed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&again), pb::RefundStatus::Failed);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    let flip = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Succeeded))
        .await
        .unwrap_err();
    assert_eq!(from_status(&flip).code, ErrorCode::InvalidStateTransition);
    let bad = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Processing))
        .await
        .unwrap_err();
    assert_eq!(from_status(&bad).code, ErrorCode::InvalidArgument);
    assert_eq!(
        status(&env.get(KEY_A, "rn-1").await.unwrap()),
        pb::RefundStatus::Failed
    );

    // The released amount takes a new refund, which then succeeds.
    let second = env.refund(KEY_A, "rn-3", "order-1", "60").await.unwrap();
    assert_eq!(status(&second), pb::RefundStatus::Processing);
    let ok = env
        .admin
        .report_refund_outcome(pb::ReportRefundOutcomeRequest {
            refund_id: second.refund_id.clone(),
            status: pb::RefundStatus::Succeeded as i32,
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&ok), pb::RefundStatus::Succeeded);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "60.00");
    env.stop().await;
}

both_databases!(returned_payout_and_expected_completion);
async fn returned_payout_and_expected_completion(url: &str) {
    let mut env = Env::start(url).await;
    let accepted_eta = env.clock_ms() + 30 * 60 * 1000;
    env.peers.state().expected_completion_ms = accepted_eta;
    env.pay("mA", "order-1", "80").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "50").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Processing);
    // The refund center's estimate at acceptance is stored and shown.
    assert_eq!(r.expected_completion_ms, accepted_eta);
    assert_eq!(
        env.get(KEY_A, "rn-1").await.unwrap().expected_completion_ms,
        accepted_eta
    );
    assert_eq!((r.error_code.as_str(), r.error_message.as_str()), ("", ""));
    let report = |status: pb::RefundStatus, returned: bool, reason: &str, eta: i64| {
        pb::ReportRefundOutcomeRequest {
            refund_id: r.refund_id.clone(),
            status: status as i32,
            reason: reason.into(),
            returned,
            expected_completion_ms: eta,
            reinstated: false,
            reopened: false,
        }
    };

    // A fallback moves the estimate (PROCESSING with a new estimate); PROCESSING without one is
    // still a bad request.
    let later = accepted_eta + 24 * 60 * 60 * 1000;
    let moved = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Processing, false, "", later))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&moved), pb::RefundStatus::Processing);
    assert_eq!(moved.expected_completion_ms, later);

    // Bad combinations.
    for (bad, field) in [
        (report(pb::RefundStatus::Succeeded, true, "", 0), "returned"),
        (
            report(pb::RefundStatus::Failed, false, "", -1),
            "expected_completion_ms",
        ),
    ] {
        let e = from_status(&env.admin.report_refund_outcome(bad).await.unwrap_err());
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.starts_with(field), "{}", e.message);
    }
    // The refund succeeds, with a final estimate.
    let done = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Succeeded, false, "", later + 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&done), pb::RefundStatus::Succeeded);
    assert_eq!(done.expected_completion_ms, later + 1);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "50.00");
    // An ordinary FAILED never moves a SUCCEEDED refund.
    let flip = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Failed, false, "late", 0))
        .await
        .unwrap_err();
    assert_eq!(from_status(&flip).code, ErrorCode::InvalidStateTransition);
    // A late progress report after the final outcome changes nothing.
    let late = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Processing, false, "", 7))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&late), pb::RefundStatus::Succeeded);
    assert_eq!(late.expected_completion_ms, later + 1);

    // The bank returns the payout (退票): SUCCEEDED -> FAILED with the bank's reason, the
    // reservation released in the same transaction.
    let bank_reason = "ACCOUNT_CLOSED: account closed";
    let returned = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Failed, true, bank_reason, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&returned), pb::RefundStatus::Failed);
    assert_eq!(returned.error_code, ErrorCode::PayoutReturned.as_str());
    assert_eq!(returned.error_message, bank_reason);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    let seen = env.get(KEY_A, "rn-1").await.unwrap();
    assert_eq!(
        (
            status(&seen),
            seen.error_code.as_str(),
            seen.error_message.as_str()
        ),
        (pb::RefundStatus::Failed, "PAYOUT_RETURNED", bank_reason)
    );
    // Idempotent: a repeated return (or a later plain FAILED) changes nothing, releases nothing.
    for again in [
        report(pb::RefundStatus::Failed, true, bank_reason, 0),
        report(pb::RefundStatus::Failed, false, "other", 0),
    ] {
        let a = env
            .admin
            .report_refund_outcome(again)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (status(&a), a.error_code.as_str()),
            (pb::RefundStatus::Failed, "PAYOUT_RETURNED")
        );
    }
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    // And nothing moves it back.
    let back = env
        .admin
        .report_refund_outcome(report(pb::RefundStatus::Succeeded, false, "", 0))
        .await
        .unwrap_err();
    assert_eq!(from_status(&back).code, ErrorCode::InvalidStateTransition);

    // The released amount is refundable again (the whole 80).
    let again = env.refund(KEY_A, "rn-2", "order-1", "80").await.unwrap();
    assert_eq!(status(&again), pb::RefundStatus::Processing);
    assert_eq!(env.trade("mA", "order-1").await.refunded, "80.00");

    // A return reported while the refund is still PROCESSING fails it the same way.
    let early = env
        .admin
        .report_refund_outcome(pb::ReportRefundOutcomeRequest {
            refund_id: again.refund_id.clone(),
            status: pb::RefundStatus::Failed as i32,
            reason: String::new(),
            returned: true,
            expected_completion_ms: 0,
            reinstated: false,
            reopened: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&early), pb::RefundStatus::Failed);
    assert_eq!(early.error_code, "PAYOUT_RETURNED");
    assert_eq!(early.error_message, "the bank returned the payout");
    assert_eq!(env.trade("mA", "order-1").await.refunded, "0.00");
    env.stop().await;
}

#[tokio::test]
async fn job_loop_runs_recovery() {
    let db = TestDb::sqlite("job_loop");
    let mut env = Env::start(db.url()).await;
    env.pay("mA", "order-1", "10").await;
    env.peers.clearing_down.store(true, Ordering::SeqCst);
    let r = env.refund(KEY_A, "rn-1", "order-1", "10").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Received);
    env.peers.clearing_down.store(false, Ordering::SeqCst);
    let mut cfg = config(db.url(), &env.clock, env.clearing.url(), env.refund.url());
    cfg.job_interval = Some(Duration::from_millis(20));
    let with_job = start_business(cfg).await;
    env.connect(with_job).stop().await.unwrap();
    // Poll the observable state with a bounded number of round trips (no sleeps).
    let mut seen = pb::RefundStatus::Received;
    for _ in 0..5000 {
        seen = status(&env.get(KEY_A, "rn-1").await.unwrap());
        if seen == pb::RefundStatus::Processing {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(seen, pb::RefundStatus::Processing);
    env.stop().await;
}

// -------------------------------------------------------------------------------------------------
// Issue 5: error refunds, splits and subsidies, notifications, cards at rest, trades listing
// -------------------------------------------------------------------------------------------------

fn error_req(order_no: &str, amount: &str, kind: pb::RefundKind) -> pb::CreateErrorRefundRequest {
    pb::CreateErrorRefundRequest {
        merchant_id: "mA".into(),
        order_no: order_no.into(),
        kind: kind as i32,
        amount: amount.into(),
        currency: "CNY".into(),
        reason: "the payer paid twice".into(),
        operator: String::new(),
    }
}

/// CreateErrorRefund as operator `who` = (id, role); `None` sends no identity.
async fn error_refund(
    admin: &BusinessAdminServiceClient<AnyCaller>,
    who: Option<(&str, &str)>,
    body: pb::CreateErrorRefundRequest,
) -> Result<pb::Refund, Error> {
    let mut req = Request::new(body);
    let (id, role) = who.unwrap_or(("", ""));
    let bearer = tuikuan_auth::testing::bearer_for(id, role);
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    admin
        .clone()
        .create_error_refund(req)
        .await
        .map(Response::into_inner)
        .map_err(|s| from_status(&s))
}

fn kind(r: &pb::Refund) -> pb::RefundKind {
    pb::RefundKind::try_from(r.kind).unwrap()
}

both_databases!(error_refunds);
async fn error_refunds(url: &str) {
    let mut env = Env::start(url).await;
    let trade = env.pay("mA", "order-dup", "100.00").await;
    let full = || error_req("order-dup", "100", pb::RefundKind::DuplicatePayment);

    // Operator identity and role.
    let e = error_refund(&env.admin, None, full()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let e = error_refund(&env.admin, Some(("rick", "risk")), full())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let e = error_refund(&env.admin, Some(("eve", "root")), full())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let mut spoofed = full();
    spoofed.operator = "bob".into();
    let e = error_refund(&env.admin, Some(("alice", "ops")), spoofed)
        .await
        .unwrap_err();
    assert!(e.message.starts_with("operator"), "{}", e.message);

    // Partial: rejected with a clear error naming the amount; nothing reserved or debited.
    let e = error_refund(
        &env.admin,
        Some(("alice", "ops")),
        error_req("order-dup", "99.99", pb::RefundKind::DuplicatePayment),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.starts_with("amount: "), "{}", e.message);
    assert!(e.message.contains("partial"), "{}", e.message);
    let e = error_refund(
        &env.admin,
        Some(("alice", "ops")),
        error_req("order-dup", "100", pb::RefundKind::Normal),
    )
    .await
    .unwrap_err();
    assert!(e.message.starts_with("kind"), "{}", e.message);
    assert_eq!(env.trade("mA", "order-dup").await.refunded, "0.00");
    assert_eq!(env.peers.state().refund_debit_calls, 0);

    // Full: accepted through the error-refund interface.
    let r = error_refund(&env.admin, Some(("alice", "finance")), full())
        .await
        .unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Processing);
    assert_eq!(kind(&r), pb::RefundKind::DuplicatePayment);
    assert_eq!(r.merchant_refund_no, format!("ERR-{}", trade.trade_id));
    assert_eq!(
        (r.amount.as_str(), r.merchant_id.as_str()),
        ("100.00", "mA")
    );
    {
        let s = env.peers.state();
        let debit = &s.debit_requests[&r.refund_id];
        assert!(debit.error_refund);
        assert!(debit.splits.is_empty());
        let (order, via) = &s.refund_requests[&r.refund_id];
        assert_eq!(*via, "CreateErrorRefund");
        assert_eq!(order.kind, rpb::RefundKind::ErrorDuplicate as i32);
        assert_eq!(order.operator, "alice");
        assert_eq!(order.trade_amount, "100.00");
        assert_eq!(order.amount, "100.00");
    }
    // Idempotent: one per trade; the same request returns it, other content conflicts.
    let again = error_refund(&env.admin, Some(("bob", "ops")), full())
        .await
        .unwrap();
    assert_eq!(again.refund_id, r.refund_id);
    assert_eq!(env.peers.state().debit_postings, 1);
    let e = error_refund(
        &env.admin,
        Some(("alice", "ops")),
        error_req("order-dup", "100", pb::RefundKind::ExpiredOrder),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::IdempotencyConflict);

    // The merchant sees it, with its kind; the other merchant does not.
    let seen = env.get(KEY_A, &r.merchant_refund_no).await.unwrap();
    assert_eq!(seen.refund_id, r.refund_id);
    assert_eq!(kind(&seen), pb::RefundKind::DuplicatePayment);
    assert_eq!(
        env.get(KEY_B, &r.merchant_refund_no)
            .await
            .unwrap_err()
            .code,
        ErrorCode::RefundNotFound
    );
    // Nothing more can be refunded on that trade.
    let e = env
        .refund(KEY_A, "rn-after", "order-dup", "1")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RefundExceedsPaid);
    // Merchants cannot take the reserved prefix.
    let e = env
        .refund(KEY_A, "ERR-x", "order-dup", "1")
        .await
        .unwrap_err();
    assert!(e.message.contains("reserved"), "{}", e.message);

    // A trade with another live refund takes no error refund.
    env.pay("mA", "order-2", "50").await;
    let normal = env.refund(KEY_A, "rn-2", "order-2", "10").await.unwrap();
    assert_eq!(kind(&normal), pb::RefundKind::Normal);
    let e = error_refund(
        &env.admin,
        Some(("alice", "ops")),
        error_req("order-2", "50", pb::RefundKind::ExpiredOrder),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::TradeNotRefundable);
    assert_eq!(env.trade("mA", "order-2").await.refunded, "10.00");

    // An expired-order error refund; unknown trades are not found.
    env.pay("mA", "order-late", "20").await;
    let late = error_refund(
        &env.admin,
        Some(("carol", "ops")),
        error_req("order-late", "20.00", pb::RefundKind::ExpiredOrder),
    )
    .await
    .unwrap();
    assert_eq!(kind(&late), pb::RefundKind::ExpiredOrder);
    assert_eq!(
        env.peers.state().refund_requests[&late.refund_id].0.kind,
        rpb::RefundKind::ErrorExpired as i32
    );
    let e = error_refund(
        &env.admin,
        Some(("alice", "ops")),
        error_req("order-none", "1", pb::RefundKind::ExpiredOrder),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::TradeNotFound);

    // ListRefunds shows the kinds.
    let all = env
        .admin
        .list_refunds(pb::ListRefundsRequest {
            merchant_id: "mA".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refunds;
    let kinds: HashSet<i32> = all.iter().map(|r| r.kind).collect();
    assert_eq!(kinds.len(), 3);
    env.stop().await;
}

both_databases!(splits_and_subsidies_pass_through);
async fn splits_and_subsidies_pass_through(url: &str) {
    let mut env = Env::start(url).await;
    let split = |pairs: &[(&str, &str)]| -> Vec<pb::SplitReceiver> {
        pairs
            .iter()
            .map(|(r, a)| pb::SplitReceiver {
                receiver_id: r.to_string(),
                amount: a.to_string(),
            })
            .collect()
    };
    let paid_at = env.clock_ms() - 1000;
    let mut p = payment("mA", "order-s", "100", paid_at);
    p.receivers = split(&[("mB", "30"), ("mA", "70.00")]);
    p.platform_subsidy = "5".into();
    let trade = env
        .admin
        .record_payment(p.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trade.receivers, split(&[("mA", "70.00"), ("mB", "30.00")]));
    assert_eq!(trade.platform_subsidy, "5.00");
    {
        let s = env.peers.state();
        let settle = &s.settle_requests[&trade.trade_id];
        assert_eq!(settle.platform_subsidy, "5.00");
        let got: Vec<(&str, &str)> = settle
            .splits
            .iter()
            .map(|x| (x.receiver_id.as_str(), x.amount.as_str()))
            .collect();
        assert_eq!(got, [("mA", "70.00"), ("mB", "30.00")]);
    }
    // The same record again is the same trade; other shares are a conflict.
    assert_eq!(
        env.admin
            .record_payment(p.clone())
            .await
            .unwrap()
            .into_inner()
            .trade_id,
        trade.trade_id
    );
    let mut other = p.clone();
    other.receivers = split(&[("mA", "60"), ("mB", "40")]);
    let e = env.admin.record_payment(other).await.unwrap_err();
    assert_eq!(from_status(&e).code, ErrorCode::IdempotencyConflict);
    // Bad splits and subsidies.
    let bad = |order: &str, receivers: Vec<pb::SplitReceiver>, subsidy: &str| {
        let mut p = payment("mA", order, "100", paid_at);
        p.receivers = receivers;
        p.platform_subsidy = subsidy.into();
        p
    };
    for (req, code, prefix) in [
        (
            bad("o-x1", split(&[("mA", "70"), ("mB", "29.99")]), ""),
            ErrorCode::InvalidArgument,
            "receivers: ",
        ),
        (
            bad("o-x2", split(&[("mA", "70"), ("mZ", "30")]), ""),
            ErrorCode::MerchantNotFound,
            "receivers[1].receiver_id",
        ),
        (
            bad("o-x3", vec![], "100"),
            ErrorCode::InvalidAmount,
            "platform_subsidy",
        ),
    ] {
        let e = from_status(&env.admin.record_payment(req).await.unwrap_err());
        assert_eq!(e.code, code, "{}", e.message);
        assert!(e.message.starts_with(prefix), "{}", e.message);
    }

    // A refund with the merchant's amounts per receiver: passed to the debit as given.
    let mut req = refund_req("rn-s1", "order-s", "10", "CNY");
    req.split_amounts = split(&[("mA", "7"), ("mB", "3")]);
    let r = create(&env.merchant, KEY_A, req.clone()).await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Processing);
    assert_eq!(r.split_amounts, split(&[("mA", "7.00"), ("mB", "3.00")]));
    {
        let s = env.peers.state();
        let debit = &s.debit_requests[&r.refund_id];
        assert!(!debit.error_refund);
        let got: Vec<(&str, &str)> = debit
            .splits
            .iter()
            .map(|x| (x.receiver_id.as_str(), x.amount.as_str()))
            .collect();
        assert_eq!(got, [("mA", "7.00"), ("mB", "3.00")]);
    }
    assert_eq!(
        env.get(KEY_A, "rn-s1").await.unwrap().split_amounts,
        r.split_amounts
    );
    // A repeat with other amounts per receiver is a conflict.
    let mut changed = req.clone();
    changed.split_amounts = split(&[("mA", "6"), ("mB", "4")]);
    assert_eq!(
        create(&env.merchant, KEY_A, changed)
            .await
            .unwrap_err()
            .code,
        ErrorCode::IdempotencyConflict
    );
    // Without amounts: by share (the clearing center's rule), nothing passed.
    let plain = env.refund(KEY_A, "rn-s2", "order-s", "20").await.unwrap();
    assert!(env.peers.state().debit_requests[&plain.refund_id]
        .splits
        .is_empty());
    // Amounts that do not sum, an unknown receiver, more than a share.
    for (pairs, prefix) in [
        (vec![("mA", "5"), ("mB", "4")], "split_amounts: "),
        (
            vec![("mA", "5"), ("mC", "5")],
            "split_amounts[1].receiver_id",
        ),
        (vec![("mB", "31")], "split_amounts: "),
    ] {
        let mut req = refund_req("rn-bad", "order-s", "10", "CNY");
        req.split_amounts = split(&pairs);
        let e = create(&env.merchant, KEY_A, req).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
        assert!(e.message.starts_with(prefix), "{}", e.message);
    }
    let mut big = refund_req("rn-big", "order-s", "31", "CNY");
    big.split_amounts = split(&[("mB", "31")]);
    let e = create(&env.merchant, KEY_A, big).await.unwrap_err();
    assert!(
        e.message.starts_with("split_amounts[0].amount"),
        "{}",
        e.message
    );
    // A receiver is not the trade's owner: it cannot refund it (or even see it).
    assert_eq!(
        env.refund(KEY_B, "rn-b", "order-s", "1")
            .await
            .unwrap_err()
            .code,
        ErrorCode::TradeNotFound
    );
    // A trade without receivers takes no split amounts.
    env.pay("mA", "order-plain", "10").await;
    let mut req = refund_req("rn-p", "order-plain", "1", "CNY");
    req.split_amounts = split(&[("mA", "1")]);
    let e = create(&env.merchant, KEY_A, req).await.unwrap_err();
    assert!(e.message.contains("not a split payment"), "{}", e.message);
    env.stop().await;
}

const SECRET_A: &str = "notify-secret-of-merchant-a";

impl Env {
    async fn notify(&mut self) -> pb::NotificationReport {
        self.admin
            .run_notifications(pb::RunNotificationsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn notifications(&mut self, refund_id: &str) -> Vec<pb::Notification> {
        self.admin
            .list_notifications(pb::ListNotificationsRequest {
                refund_id: refund_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .notifications
    }

    async fn report(&mut self, refund_id: &str, st: pb::RefundStatus, returned: bool) {
        self.admin
            .report_refund_outcome(pb::ReportRefundOutcomeRequest {
                refund_id: refund_id.into(),
                status: st as i32,
                reason: if returned {
                    "ACCOUNT_CLOSED: account closed".into()
                } else {
                    String::new()
                },
                returned,
                expected_completion_ms: 0,
                reinstated: false,
                reopened: false,
            })
            .await
            .unwrap();
    }

    fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }
}

both_databases!(notifications_retry_until_2xx);
async fn notifications_retry_until_2xx(url: &str) {
    use tuikuan_business::domain::notify::verify_signature;
    let mut env = Env::start(url).await;
    let merchant = MerchantEndpoint::start(2).await;

    // Settings: validated; the secret is never returned.
    let bad = |url: &str, secret: &str, m: &str| pb::SetNotifyConfigRequest {
        merchant_id: m.into(),
        notify_url: url.into(),
        notify_secret: secret.into(),
    };
    for (req, code) in [
        (
            bad("ftp://shop.example/n", SECRET_A, "mA"),
            ErrorCode::InvalidArgument,
        ),
        // Plain http is not allowed here (only https).
        (
            bad(&merchant.url.replace("https://", "http://"), SECRET_A, "mA"),
            ErrorCode::NotifyUrlForbidden,
        ),
        (
            bad(&merchant.url, "short", "mA"),
            ErrorCode::InvalidArgument,
        ),
        (
            bad(&merchant.url, SECRET_A, "mZ"),
            ErrorCode::MerchantNotFound,
        ),
    ] {
        let e = env.admin.set_notify_config(req).await.unwrap_err();
        assert_eq!(from_status(&e).code, code);
    }
    let cfg = env
        .admin
        .set_notify_config(bad(&merchant.url, SECRET_A, "mA"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.notify_url, merchant.url);

    env.pay("mA", "order-1", "100").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "30").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Processing);
    // Not final: nothing to notify.
    assert!(env.notifications(&r.refund_id).await.is_empty());
    assert_eq!(env.notify().await.attempted, 0);

    env.report(&r.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    // A repeated report enqueues nothing more.
    env.report(&r.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    let t0 = env.clock_ms();

    // Attempt 1 at once: HTTP 500.
    let run = env.notify().await;
    assert_eq!((run.attempted, run.retrying, run.delivered), (1, 1, 0));
    // Not due again before the backoff.
    assert_eq!(env.notify().await.attempted, 0);
    env.advance(chrono::Duration::seconds(14));
    assert_eq!(env.notify().await.attempted, 0);
    // Attempt 2 after 15 s: HTTP 500.
    env.advance(chrono::Duration::seconds(1));
    assert_eq!(env.notify().await.retrying, 1);
    // Attempt 3 after one more minute: 200.
    env.advance(chrono::Duration::seconds(59));
    assert_eq!(env.notify().await.attempted, 0);
    env.advance(chrono::Duration::seconds(1));
    let run = env.notify().await;
    assert_eq!((run.attempted, run.delivered), (1, 1));
    // Delivered: never sent again.
    env.advance(chrono::Duration::hours(2));
    assert_eq!(env.notify().await.attempted, 0);

    let got = merchant.deliveries();
    assert_eq!(got.len(), 3);
    let expected_ts = [t0 / 1000, t0 / 1000 + 15, t0 / 1000 + 75];
    for (d, ts) in got.iter().zip(expected_ts) {
        assert_eq!(d.timestamp, ts.to_string());
        assert_eq!(d.content_type, "application/json");
        assert!(verify_signature(
            SECRET_A,
            &d.timestamp,
            &d.body,
            &d.signature
        ));
        assert!(!verify_signature(
            "another-secret-0123",
            &d.timestamp,
            &d.body,
            &d.signature
        ));
        // The same body every time.
        assert_eq!(d.body, got[0].body);
    }
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["refund_id"], r.refund_id.as_str());
    assert_eq!(body["merchant_refund_no"], "rn-1");
    assert_eq!(body["order_no"], "order-1");
    assert_eq!(body["amount"], "30.00");
    assert_eq!(body["currency"], "CNY");
    assert_eq!(body["status"], "SUCCEEDED");
    assert_eq!(body["error_code"], "");
    assert_eq!(body["finished_at_ms"], t0);
    assert!(body["finished_at"].as_str().unwrap().ends_with('Z'));

    // Every attempt recorded.
    let list = env.notifications(&r.refund_id).await;
    assert_eq!(list.len(), 1);
    let n = &list[0];
    assert_eq!(n.status, pb::NotificationStatus::Delivered as i32);
    assert_eq!(n.event, pb::RefundStatus::Succeeded as i32);
    assert_eq!(n.attempts, 3);
    assert_eq!(n.body.as_bytes(), got[0].body.as_slice());
    assert_eq!(n.delivered_at_ms, t0 + 75_000);
    let log: Vec<(u32, i64, u32)> = n
        .attempt_log
        .iter()
        .map(|a| (a.attempt_no, a.attempted_at_ms, a.http_status))
        .collect();
    assert_eq!(
        log,
        [(1, t0, 500), (2, t0 + 15_000, 500), (3, t0 + 75_000, 200)]
    );
    assert!(n.attempt_log[0].error.contains("500"));
    assert_eq!(n.attempt_log[2].error, "");

    // A returned payout later: a second notification, FAILED with PAYOUT_RETURNED.
    env.report(&r.refund_id, pb::RefundStatus::Failed, true)
        .await;
    assert_eq!(env.notify().await.delivered, 1);
    let got = merchant.deliveries();
    let last: serde_json::Value = serde_json::from_slice(&got[3].body).unwrap();
    assert_eq!(last["status"], "FAILED");
    assert_eq!(last["error_code"], "PAYOUT_RETURNED");
    assert_eq!(env.notifications(&r.refund_id).await.len(), 2);

    // A merchant without a URL gets none.
    env.pay("mB", "order-b", "10").await;
    let rb = env.refund(KEY_B, "rn-b", "order-b", "10").await.unwrap();
    env.report(&rb.refund_id, pb::RefundStatus::Failed, false)
        .await;
    assert!(env.notifications(&rb.refund_id).await.is_empty());

    // A merchant that never answers: retried by the schedule for at least 24 hours (by the
    // service's clock), every attempt recorded, then abandoned.
    env.admin
        .set_notify_config(bad(
            &closed_addr().await.replace("http://", "https://"),
            SECRET_A,
            "mB",
        ))
        .await
        .unwrap();
    env.pay("mB", "order-b2", "10").await;
    let rb2 = env.refund(KEY_B, "rn-b2", "order-b2", "10").await.unwrap();
    env.report(&rb2.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    let start = env.clock_ms();
    let mut runs = 0;
    loop {
        let run = env.notify().await;
        if run.abandoned == 1 {
            break;
        }
        runs += 1;
        assert!(runs < 400, "never abandoned");
        env.advance(chrono::Duration::minutes(20));
    }
    let n = &env.notifications(&rb2.refund_id).await[0];
    assert_eq!(n.status, pb::NotificationStatus::Abandoned as i32);
    assert_eq!(n.attempts as usize, n.attempt_log.len());
    let last = n.attempt_log.last().unwrap();
    assert!(last.attempted_at_ms - start >= 24 * 3_600_000);
    assert!(n
        .attempt_log
        .iter()
        .all(|a| a.http_status == 0 && !a.error.is_empty()));
    // Gaps follow the schedule: 15 s, 1 min, 5 min, 15 min, 1 h (rounded up to the 20-minute
    // runs of this test), then hourly.
    let gaps: Vec<i64> = n
        .attempt_log
        .windows(2)
        .map(|w| w[1].attempted_at_ms - w[0].attempted_at_ms)
        .collect();
    assert!(gaps.iter().all(|g| *g >= 15_000));
    assert!(gaps.iter().skip(4).all(|g| *g >= 3_600_000));
    env.stop().await;
}

/// The guard against server-side request forgery: a notification URL that is, or resolves to, a
/// loopback, private, link-local or other special-purpose address is refused when set
/// (`NOTIFY_URL_FORBIDDEN`), whatever form the address takes; a name that resolved to a public
/// address when set and to 127.0.0.1 at delivery (DNS rebinding) is refused at delivery without a
/// connection. With a range allowed, delivery goes over HTTPS to the resolved address with the
/// certificate verified against the name; an endpoint whose certificate no trusted CA signed gets
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_urls_are_guarded_against_request_forgery() {
    let set = |merchant: &str, url: &str| pb::SetNotifyConfigRequest {
        merchant_id: merchant.into(),
        notify_url: url.into(),
        notify_secret: SECRET_A.into(),
    };
    let db = TestDb::sqlite("notify_ssrf");
    let dns = FakeDns::default();
    dns.set("loopback.test", &["127.0.0.1"]);
    dns.set("mixed.test", &["93.184.216.34", "10.0.0.7"]);
    dns.set("metadata.test", &["169.254.169.254"]);
    dns.set("ula.test", &["fd12:3456::1"]);
    let mut env = Env::start_with(db.url(), notify_settings(false, &[], Some(dns.clone()))).await;
    for url in [
        "https://127.0.0.1/n",
        "https://127.1/n",
        "https://2130706433/n",
        "https://0x7f000001/n",
        "https://10.1.2.3/n",
        "https://172.16.0.1/n",
        "https://192.168.0.1/n",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/n",
        "https://0.0.0.0/n",
        "https://224.0.0.1/n",
        "https://[::1]/n",
        "https://[::]/n",
        "https://[fd00::1]/n",
        "https://[fe80::1]/n",
        "https://[::ffff:127.0.0.1]/n",
        "https://[::ffff:a00:1]/n",
        "https://loopback.test/n",
        "https://mixed.test/n",
        "https://metadata.test/n",
        "https://ula.test/n",
        // The system's resolver (the fake knows no localhost).
        "https://localhost:8443/n",
        // Plain http, even to a public address.
        "http://93.184.216.34/n",
    ] {
        let e = env
            .admin
            .set_notify_config(set("mA", url))
            .await
            .unwrap_err();
        assert_eq!(
            from_status(&e).code,
            ErrorCode::NotifyUrlForbidden,
            "{url}: {}",
            e.message()
        );
    }
    let e = env
        .admin
        .set_notify_config(set("mA", "https://nowhere.invalid/n"))
        .await
        .unwrap_err();
    assert_eq!(from_status(&e).code, ErrorCode::InvalidArgument);

    // Rebinding: public when set, loopback at delivery.
    let merchant = MerchantEndpoint::start(0).await;
    dns.set("shop.test", &["93.184.216.34"]);
    let url = format!("https://shop.test:{}/refund-notify", merchant.port);
    env.admin.set_notify_config(set("mA", &url)).await.unwrap();
    dns.set("shop.test", &["127.0.0.1"]);
    env.pay("mA", "order-1", "100").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "10").await.unwrap();
    env.report(&r.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    let run = env.notify().await;
    assert_eq!((run.attempted, run.delivered, run.retrying), (1, 0, 1));
    let error = env.notifications(&r.refund_id).await[0].attempt_log[0]
        .error
        .clone();
    assert!(
        error.starts_with("NOTIFY_URL_FORBIDDEN") && error.contains("127.0.0.1"),
        "{error}"
    );
    assert_eq!(
        merchant.connections(),
        0,
        "no connection to a refused address"
    );
    env.stop().await;

    // Loopback allowed: delivered over HTTPS by name, the certificate checked against the name.
    let shop = tuikuan_proto::pki::Pki::generate(&["shop.test".into()]).unwrap();
    let dns = FakeDns::default();
    dns.set("shop.test", &["127.0.0.1"]);
    let db = TestDb::sqlite("notify_ssrf_allowed");
    let settings = notify_settings(true, &[shop.ca.cert_pem.as_str()], Some(dns));
    let mut env = Env::start_with(db.url(), settings).await;
    let merchant = MerchantEndpoint::start_as(0, &shop.public, "shop.test").await;
    env.admin
        .set_notify_config(set("mA", &merchant.url))
        .await
        .unwrap();
    env.pay("mA", "order-1", "100").await;
    let r = env.refund(KEY_A, "rn-1", "order-1", "10").await.unwrap();
    env.report(&r.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    assert_eq!(env.notify().await.delivered, 1);
    assert_eq!(merchant.deliveries().len(), 1);
    // A certificate from a CA nobody trusts: the handshake fails, nothing is delivered.
    let forged = MerchantEndpoint::start_as(
        0,
        &tuikuan_proto::pki::testing_foreign().public,
        "127.0.0.1",
    )
    .await;
    env.admin
        .set_notify_config(set("mB", &forged.url))
        .await
        .unwrap();
    env.pay("mB", "order-b", "10").await;
    let rb = env.refund(KEY_B, "rn-b", "order-b", "10").await.unwrap();
    env.report(&rb.refund_id, pb::RefundStatus::Succeeded, false)
        .await;
    let run = env.notify().await;
    assert_eq!((run.attempted, run.delivered, run.retrying), (1, 0, 1));
    let error = env.notifications(&rb.refund_id).await[0].attempt_log[0]
        .error
        .clone();
    assert!(error.contains("certificate"), "{error}");
    assert!(forged.deliveries().is_empty());
    env.stop().await;
}

both_databases!(rejection_by_recovery_is_notified);
async fn rejection_by_recovery_is_notified(url: &str) {
    let mut env = Env::start(url).await;
    let merchant = MerchantEndpoint::start(0).await;
    env.admin
        .set_notify_config(pb::SetNotifyConfigRequest {
            merchant_id: "mA".into(),
            notify_url: merchant.url.clone(),
            notify_secret: SECRET_A.into(),
        })
        .await
        .unwrap();
    env.pay("mA", "order-1", "100").await;
    // Rejected in the answer itself: the merchant knows, no notification.
    env.peers.state().balances.insert("mA".into(), 500);
    let now = env.refund(KEY_A, "rn-0", "order-1", "50").await.unwrap();
    assert_eq!(status(&now), pb::RefundStatus::Rejected);
    assert!(env.notifications(&now.refund_id).await.is_empty());
    // Left RECEIVED by an outage, then rejected by the recovery loop: notified.
    env.peers.clearing_down.store(true, Ordering::SeqCst);
    let r = env.refund(KEY_A, "rn-1", "order-1", "50").await.unwrap();
    assert_eq!(status(&r), pb::RefundStatus::Received);
    env.peers.clearing_down.store(false, Ordering::SeqCst);
    env.recover().await;
    assert_eq!(
        status(&env.get(KEY_A, "rn-1").await.unwrap()),
        pb::RefundStatus::Rejected
    );
    assert_eq!(env.notify().await.delivered, 1);
    let got = merchant.deliveries();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["status"], "REJECTED");
    assert_eq!(body["error_code"], "INSUFFICIENT_BALANCE");
    assert_eq!(body["merchant_refund_no"], "rn-1");
    env.stop().await;
}

both_databases!(cards_encrypted_at_rest);
async fn cards_encrypted_at_rest(url: &str) {
    use diesel::prelude::*;
    use tuikuan_business::store::{raw_card_column, trades};
    let mut env = Env::start(url).await;
    let trade = env.pay("mA", "order-1", "100").await;
    assert_eq!(trade.payer_card_masked, "************2233");
    let db = tuikuan_db::Db::connect(url, 1).unwrap();
    let id = trade.trade_id.clone();
    let raw = db
        .run(move |c| raw_card_column(c, &id))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("enc:v1:"), "{raw}");
    assert!(!raw.contains("6222020200112233") && !raw.contains("2233"));

    // The full number still reaches the refund center (for payouts to the bank).
    let r = env.refund(KEY_A, "rn-1", "order-1", "1").await.unwrap();
    assert_eq!(
        env.peers.state().refund_requests[&r.refund_id]
            .0
            .payer_card_no,
        "6222020200112233"
    );

    // A row written in plaintext before encryption existed is sealed at the next start.
    let id = trade.trade_id.clone();
    db.run(move |c| {
        diesel::update(trades::table.find(&id))
            .set(trades::payer_card_no.eq(Some("6222020200115566")))
            .execute(c)
            .map_err(tuikuan_db::db_err)
    })
    .await
    .unwrap();
    let restarted = start_business(config(
        url,
        &env.clock,
        env.clearing.url(),
        env.refund.url(),
    ))
    .await;
    env.connect(restarted).stop().await.unwrap();
    // The new instance answers only once its start (sealing included) is done.
    assert_eq!(
        env.trade("mA", "order-1").await.payer_card_masked,
        "************5566"
    );
    let id = trade.trade_id.clone();
    let raw = db
        .run(move |c| raw_card_column(c, &id))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("enc:v1:") && !raw.contains("5566"), "{raw}");
    // ListTrades masks too.
    let listed = env
        .admin
        .list_trades(pb::ListTradesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .trades;
    assert_eq!(listed[0].payer_card_masked, "************5566");
    env.stop().await;
}

both_databases!(list_trades_pages);
async fn list_trades_pages(url: &str) {
    let mut env = Env::start(url).await;
    for i in 0..5 {
        env.pay("mA", &format!("order-{i}"), "10").await;
    }
    env.pay("mB", "order-b", "10").await;
    env.refund(KEY_A, "rn-1", "order-3", "4").await.unwrap();
    let page = |merchant: &str, after: &str, limit: u32| pb::ListTradesRequest {
        merchant_id: merchant.into(),
        limit,
        after: after.into(),
    };
    let all = env
        .admin
        .list_trades(page("", "", 0))
        .await
        .unwrap()
        .into_inner()
        .trades;
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].trade_id < w[1].trade_id));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let p = env
            .admin
            .list_trades(page("mA", &after, 2))
            .await
            .unwrap()
            .into_inner()
            .trades;
        if p.is_empty() {
            break;
        }
        assert!(p.len() <= 2);
        after = p.last().unwrap().trade_id.clone();
        seen.extend(p);
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|t| t.merchant_id == "mA"));
    let refunded: Vec<&str> = seen.iter().map(|t| t.refunded.as_str()).collect();
    assert_eq!(refunded.iter().filter(|r| **r == "4.00").count(), 1);
    let e = env.admin.list_trades(page("m a", "", 0)).await.unwrap_err();
    assert_eq!(from_status(&e).code, ErrorCode::MalformedId);
    env.stop().await;
}

// -------------------------------------------------------------------------------------------------
// The real chain: accounting, clearing and refund center services, each on its own database.
// -------------------------------------------------------------------------------------------------

mod real_chain {
    use super::*;
    use tuikuan_proto::accounting::v1 as apb;
    use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
    use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
    use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
    use tuikuan_proto::server::spawn_on;

    /// One database per service, all on the same backend.
    pub struct Dbs {
        pub accounting: TestDb,
        pub clearing: TestDb,
        pub refund: TestDb,
        pub business: TestDb,
    }

    impl Dbs {
        pub fn sqlite(name: &str) -> Dbs {
            Dbs {
                accounting: TestDb::sqlite(&format!("{name}_acc")),
                clearing: TestDb::sqlite(&format!("{name}_clr")),
                refund: TestDb::sqlite(&format!("{name}_ref")),
                business: TestDb::sqlite(&format!("{name}_biz")),
            }
        }

        pub fn postgres(name: &str) -> Option<Dbs> {
            Some(Dbs {
                accounting: TestDb::postgres(&format!("{name}_acc"))?,
                clearing: TestDb::postgres(&format!("{name}_clr"))?,
                refund: TestDb::postgres(&format!("{name}_ref"))?,
                business: TestDb::postgres(&format!("{name}_biz"))?,
            })
        }
    }

    pub struct Chain {
        pub clock: ManualClock,
        pub accounting: ServiceHandle,
        pub clearing: ServiceHandle,
        pub refund: ServiceHandle,
        pub business: Option<ServiceHandle>,
        pub business_addr: String,
        pub admin: BusinessAdminServiceClient<AnyCaller>,
        pub merchant: MerchantServiceClient<Channel>,
        pub clearing_client: ClearingServiceClient<AnyCaller>,
        pub refund_client: RefundServiceClient<AnyCaller>,
        pub ledger: AccountingServiceClient<AnyCaller>,
    }

    fn client_channel(peer: Principal, url: &str) -> AnyCaller {
        AnyCaller::new(peer, url)
    }

    impl Chain {
        /// Starts the chain; the business layer's refund-center address is `refund_addr_override`
        /// when given (a closed port, to stop refunds at DEBITED).
        pub async fn start(dbs: &Dbs, refund_addr_override: Option<String>) -> Chain {
            let clock =
                ManualClock::at_business(chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(), 10);
            let shared: SharedClock = Arc::new(clock.clone());
            let accounting = {
                let cfg = tuikuan_accounting::Config {
                    database_url: dbs.accounting.url().to_string(),
                    clock: shared.clone(),
                    job_interval: None,
                    transport: test_transport(Principal::Accounting),
                    staff: tuikuan_auth::StaffConfig::tester(),
                };
                spawn("127.0.0.1:0", move |l, s| {
                    tuikuan_accounting::serve(cfg, l, s)
                })
                .await
                .unwrap()
            };
            let clearing = {
                let cfg = tuikuan_clearing::Config {
                    database_url: dbs.clearing.url().to_string(),
                    clock: shared.clone(),
                    accounting_addr: accounting.url(),
                    job_interval: None,
                    transport: test_transport(Principal::Clearing),
                    staff: tuikuan_auth::StaffConfig::tester(),
                };
                spawn("127.0.0.1:0", move |l, s| {
                    tuikuan_clearing::serve(cfg, l, s)
                })
                .await
                .unwrap()
            };
            // The refund center and the business layer call each other: bind both first.
            let refund_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let business_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let refund_url = format!("http://{}", refund_listener.local_addr().unwrap());
            let business_url = format!("http://{}", business_listener.local_addr().unwrap());
            let refund = {
                let cfg = tuikuan_refund::Config::new(
                    dbs.refund.url(),
                    shared.clone(),
                    clearing.url(),
                    closed_addr().await,
                    business_url.clone(),
                    test_transport(Principal::Refund),
                )
                .with_staff(tuikuan_auth::StaffConfig::tester());
                spawn_on(refund_listener, move |l, s| {
                    tuikuan_refund::serve(cfg, l, s)
                })
                .unwrap()
            };
            let business = {
                let cfg = config(
                    dbs.business.url(),
                    &clock,
                    clearing.url(),
                    refund_addr_override.unwrap_or_else(|| refund_url.clone()),
                );
                spawn_on(business_listener, move |l, s| serve(cfg, l, s)).unwrap()
            };
            let biz = client_channel(Principal::Business, &business_url);
            let mut chain = Chain {
                clock,
                admin: BusinessAdminServiceClient::new(biz),
                merchant: MerchantServiceClient::new(
                    tuikuan_proto::client::channel(&public_url(&business_url)).unwrap(),
                ),
                clearing_client: ClearingServiceClient::new(client_channel(
                    Principal::Clearing,
                    &clearing.url(),
                )),
                refund_client: RefundServiceClient::new(client_channel(
                    Principal::Refund,
                    &refund_url,
                )),
                ledger: AccountingServiceClient::new(client_channel(
                    Principal::Accounting,
                    &accounting.url(),
                )),
                accounting,
                clearing,
                refund,
                business: Some(business),
                business_addr: business_url,
            };
            chain.configure().await;
            chain
        }

        async fn configure(&mut self) {
            for (id, key, policy) in [
                ("mA", KEY_A, cpb::FeeRefundPolicy::Proportional),
                ("mB", KEY_B, cpb::FeeRefundPolicy::None),
            ] {
                self.admin
                    .create_merchant(pb::CreateMerchantRequest {
                        merchant_id: id.into(),
                        name: format!("merchant {id}"),
                        api_key: key.into(),
                    })
                    .await
                    .unwrap();
                self.clearing_client
                    .upsert_merchant_policy(cpb::MerchantPolicy {
                        merchant_id: id.into(),
                        fee_rate: "0.006".into(),
                        fee_refund: policy as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            // NETBANK is known on both sides; QUICK only to the business layer.
            for code in [CHANNEL, "QUICK"] {
                self.admin
                    .upsert_channel(pb::Channel {
                        code: code.into(),
                        refund_window_days: 180,
                        enabled: true,
                    })
                    .await
                    .unwrap();
            }
            self.refund_client
                .upsert_channel(rpb::Channel {
                    code: CHANNEL.into(),
                    kind: rpb::ChannelKind::NetBanking as i32,
                    methods: vec![],
                    original_route_window_days: 0,
                    bank_code: "ICBC".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }

        /// Replaces the business layer with a new instance on the same database and the right
        /// refund-center address (after a crash of the old one).
        pub async fn restart_business(&mut self, dbs: &Dbs, refund_url: String) {
            if let Some(old) = self.business.take() {
                old.kill().await;
            }
            let cfg = config(
                dbs.business.url(),
                &self.clock,
                self.clearing.url(),
                refund_url,
            );
            let fresh = start_business(cfg).await;
            let biz = client_channel(Principal::Business, &fresh.url());
            self.admin = BusinessAdminServiceClient::new(biz);
            self.merchant = MerchantServiceClient::new(
                tuikuan_proto::client::channel(&public_url(&fresh.url())).unwrap(),
            );
            self.business_addr = fresh.url();
            self.business = Some(fresh);
        }

        pub async fn pay(
            &mut self,
            merchant: &str,
            order_no: &str,
            channel: &str,
            amount: &str,
        ) -> pb::Trade {
            use tuikuan_kernel::Clock;
            let mut p = payment(merchant, order_no, amount, self.clock.now_ms() - 60_000);
            p.channel = channel.into();
            self.admin.record_payment(p).await.unwrap().into_inner()
        }

        pub async fn debit(&mut self, refund_id: &str) -> cpb::Debit {
            self.clearing_client
                .get_debit(cpb::GetDebitRequest {
                    refund_id: refund_id.into(),
                })
                .await
                .unwrap()
                .into_inner()
        }

        /// How many postings carry this request id.
        pub async fn postings(&mut self, request_id: &str) -> usize {
            let all = self
                .ledger
                .list_postings(apb::ListPostingsRequest {
                    account: None,
                    limit: 1000,
                    after: String::new(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .postings;
            all.iter().filter(|p| p.request_id == request_id).count()
        }

        pub async fn balanced(&mut self) -> bool {
            self.ledger
                .trial_balance(apb::TrialBalanceRequest::default())
                .await
                .unwrap()
                .into_inner()
                .balanced
        }

        pub async fn stop(mut self) {
            if let Some(b) = self.business.take() {
                b.stop().await.unwrap();
            }
            self.refund.stop().await.unwrap();
            self.clearing.stop().await.unwrap();
            self.accounting.stop().await.unwrap();
        }
    }

    macro_rules! both_chains {
        ($scenario:ident) => {
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let dbs = super::Dbs::sqlite(stringify!($scenario));
                    super::$scenario(&dbs).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    let Some(dbs) = super::Dbs::postgres(stringify!($scenario)) else {
                        return;
                    };
                    super::$scenario(&dbs).await;
                }
            }
        };
    }

    both_chains!(end_to_end);
    async fn end_to_end(dbs: &Dbs) {
        let mut chain = Chain::start(dbs, None).await;
        let trade = chain.pay("mA", "order-1", CHANNEL, "100.00").await;
        assert_eq!(trade.settle_status, pb::SettleStatus::Settled as i32);
        assert_eq!(
            chain.postings(&format!("settle:{}", trade.trade_id)).await,
            1
        );

        // Happy path to PROCESSING; the debit posted once even when repeated.
        let r = create(
            &chain.merchant,
            KEY_A,
            refund_req("rn-1", "order-1", "30", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&r), pb::RefundStatus::Processing);
        let again = create(
            &chain.merchant,
            KEY_A,
            refund_req("rn-1", "order-1", "30", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(again.refund_id, r.refund_id);
        assert_eq!(
            chain.debit(&r.refund_id).await.status,
            cpb::DebitStatus::Debited as i32
        );
        assert_eq!(
            chain
                .postings(&format!("refund-debit:{}", r.refund_id))
                .await,
            1
        );
        let order = chain
            .refund_client
            .get_refund(rpb::GetRefundRequest {
                refund_id: r.refund_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (order.amount.as_str(), order.order_no.as_str()),
            ("30.00", "order-1")
        );

        // The refund center does not know QUICK: rejected, the debit reversed.
        chain.pay("mA", "order-q", "QUICK", "50").await;
        let rejected = create(
            &chain.merchant,
            KEY_A,
            refund_req("rn-q", "order-q", "50", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&rejected), pb::RefundStatus::Rejected);
        assert_eq!(rejected.error_code, "CHANNEL_NOT_FOUND");
        assert_eq!(
            chain.debit(&rejected.refund_id).await.status,
            cpb::DebitStatus::Reversed as i32
        );
        assert_eq!(
            chain
                .postings(&format!("refund-debit:{}", rejected.refund_id))
                .await,
            1
        );
        assert_eq!(
            chain
                .postings(&format!("refund-reverse:{}", rejected.refund_id))
                .await,
            1
        );
        let t = chain
            .admin
            .get_trade(pb::GetTradeRequest {
                merchant_id: "mA".into(),
                order_no: "order-q".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(t.refunded, "0.00");

        // Merchant B keeps no fee on refunds and holds 99.40 after fees: a full refund of 100
        // is more than its balance.
        chain.pay("mB", "order-b", CHANNEL, "100").await;
        let poor = create(
            &chain.merchant,
            KEY_B,
            refund_req("rn-b", "order-b", "100", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&poor), pb::RefundStatus::Rejected);
        assert_eq!(poor.error_code, "INSUFFICIENT_BALANCE");
        let partial = create(
            &chain.merchant,
            KEY_B,
            refund_req("rn-b2", "order-b", "99.40", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&partial), pb::RefundStatus::Processing);
        assert!(chain.balanced().await);
        chain.stop().await;
    }

    both_chains!(crash_recovery);
    async fn crash_recovery(dbs: &Dbs) {
        // The first business instance cannot reach the refund center.
        let mut chain = Chain::start(dbs, Some(closed_addr().await)).await;
        let refund_url = chain.refund.url();
        chain.pay("mA", "order-1", CHANNEL, "100").await;
        let r = create(
            &chain.merchant,
            KEY_A,
            refund_req("rn-1", "order-1", "40", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&r), pb::RefundStatus::Received);
        assert_eq!(
            chain.debit(&r.refund_id).await.status,
            cpb::DebitStatus::Debited as i32
        );

        // Crash, then a new instance on the same database with the right address.
        chain.restart_business(dbs, refund_url).await;
        assert_ne!(chain.business_addr, "");
        let report = chain
            .admin
            .run_recovery(pb::RunRecoveryRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (report.resumed, report.completed, report.still_pending),
            (1, 1, 0)
        );
        let mut get = Request::new(pb::GetRefundRequest {
            merchant_refund_no: "rn-1".into(),
        });
        authorize(&mut get, KEY_A);
        let done = chain.merchant.get_refund(get).await.unwrap().into_inner();
        assert_eq!(done.refund_id, r.refund_id);
        assert_eq!(status(&done), pb::RefundStatus::Processing);
        // The debit exists once.
        assert_eq!(
            chain.debit(&r.refund_id).await.status,
            cpb::DebitStatus::Debited as i32
        );
        assert_eq!(
            chain
                .postings(&format!("refund-debit:{}", r.refund_id))
                .await,
            1
        );
        assert!(chain.balanced().await);
        chain.stop().await;
    }

    both_chains!(error_refund_chain);
    async fn error_refund_chain(dbs: &Dbs) {
        let mut chain = Chain::start(dbs, None).await;
        let trade = chain.pay("mA", "order-dup", CHANNEL, "100.00").await;
        // Partial: refused before anything moves.
        let e = error_refund(
            &chain.admin,
            Some(("alice", "ops")),
            error_req("order-dup", "40", pb::RefundKind::DuplicatePayment),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.starts_with("amount: "), "{}", e.message);
        // Full: through the real clearing and refund centers.
        let r = error_refund(
            &chain.admin,
            Some(("alice", "ops")),
            error_req("order-dup", "100", pb::RefundKind::DuplicatePayment),
        )
        .await
        .unwrap();
        assert_eq!(status(&r), pb::RefundStatus::Processing, "{r:?}");
        assert_eq!(kind(&r), pb::RefundKind::DuplicatePayment);
        let debit = chain.debit(&r.refund_id).await;
        assert_eq!(debit.status, cpb::DebitStatus::Debited as i32);
        assert_eq!(debit.amount, "100.00");
        assert_eq!(
            chain
                .postings(&format!("refund-debit:{}", r.refund_id))
                .await,
            1
        );
        let order = chain
            .refund_client
            .get_refund(rpb::GetRefundRequest {
                refund_id: r.refund_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(order.kind, rpb::RefundKind::ErrorDuplicate as i32);
        assert_eq!(order.amount, "100.00");
        assert_eq!(order.trade_id, trade.trade_id);
        // A repeat is the same refund, debited once.
        let again = error_refund(
            &chain.admin,
            Some(("bob", "finance")),
            error_req("order-dup", "100", pb::RefundKind::DuplicatePayment),
        )
        .await
        .unwrap();
        assert_eq!(again.refund_id, r.refund_id);
        assert_eq!(
            chain
                .postings(&format!("refund-debit:{}", r.refund_id))
                .await,
            1
        );
        assert!(chain.balanced().await);
        chain.stop().await;
    }

    both_chains!(split_chain);
    async fn split_chain(dbs: &Dbs) {
        let mut chain = Chain::start(dbs, None).await;
        chain
            .admin
            .create_merchant(pb::CreateMerchantRequest {
                merchant_id: "mR".into(),
                name: "receiver".into(),
                api_key: "key-r-0123456789abcdef".into(),
            })
            .await
            .unwrap();
        chain
            .clearing_client
            .upsert_merchant_policy(cpb::MerchantPolicy {
                merchant_id: "mR".into(),
                fee_rate: "0.006".into(),
                fee_refund: cpb::FeeRefundPolicy::Proportional as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        use tuikuan_kernel::Clock;
        let mut p = payment("mA", "order-s", "100", chain.clock.now_ms() - 60_000);
        p.receivers = vec![
            pb::SplitReceiver {
                receiver_id: "mA".into(),
                amount: "60".into(),
            },
            pb::SplitReceiver {
                receiver_id: "mR".into(),
                amount: "40".into(),
            },
        ];
        p.platform_subsidy = "10".into();
        let trade = chain.admin.record_payment(p).await.unwrap().into_inner();
        assert_eq!(trade.settle_status, pb::SettleStatus::Settled as i32);
        assert_eq!(
            chain.postings(&format!("settle:{}", trade.trade_id)).await,
            1
        );
        // The merchant's amounts per receiver, as given.
        let mut req = refund_req("rn-s1", "order-s", "10", "CNY");
        req.split_amounts = vec![
            pb::SplitReceiver {
                receiver_id: "mA".into(),
                amount: "7".into(),
            },
            pb::SplitReceiver {
                receiver_id: "mR".into(),
                amount: "3".into(),
            },
        ];
        let r = create(&chain.merchant, KEY_A, req).await.unwrap();
        assert_eq!(status(&r), pb::RefundStatus::Processing, "{r:?}");
        let debit = chain.debit(&r.refund_id).await;
        let parts: Vec<(String, String)> = debit
            .splits
            .iter()
            .map(|s| (s.receiver_id.clone(), s.amount.clone()))
            .collect();
        assert_eq!(
            parts,
            [
                ("mA".to_string(), "7.00".to_string()),
                ("mR".to_string(), "3.00".to_string())
            ]
        );
        // By share: the parts sum exactly to the refund.
        let r2 = create(
            &chain.merchant,
            KEY_A,
            refund_req("rn-s2", "order-s", "3.33", "CNY"),
        )
        .await
        .unwrap();
        assert_eq!(status(&r2), pb::RefundStatus::Processing, "{r2:?}");
        let debit = chain.debit(&r2.refund_id).await;
        let cents: i64 = debit
            .splits
            .iter()
            .map(|s| s.amount.replace('.', "").parse::<i64>().unwrap())
            .sum();
        assert_eq!(cents, 333);
        assert_eq!(debit.splits.len(), 2);
        assert!(chain.balanced().await);
        chain.stop().await;
    }
}
