//! The payout center end to end with a real bank simulator, both served on port 0, on SQLite and
//! on PostgreSQL.

// Every service runs under mutual TLS with the test PKI; the drivers play several callers
// (refund, payout, staff) through `AnyCaller`, each request under the certificate of a caller the
// allow-list admits for it.
use std::sync::Arc;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::pki::test_transport;
use tuikuan_proto::tls::Principal;

use chrono::{Duration, NaiveDate};
use tokio::net::TcpListener;
use tonic::Status;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Error, ManualClock, SharedClock};
use tuikuan_proto::bank::v1 as bank_pb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::payout::v1 as pb;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_server::{RefundService, RefundServiceServer};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

fn test_db(backend: Backend, name: &str) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb::sqlite(name)),
        Backend::Postgres => TestDb::postgres(name),
    }
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = (&mut self.join).await.expect("service task");
        assert!(result.is_ok(), "service ended with {result:?}");
    }
}

async fn bind() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    (l, url)
}

fn run<Fut>(listener: TcpListener, start: impl FnOnce(TcpListener, Shutdown) -> Fut) -> Running
where
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(start(listener, Shutdown(rx)));
    Running {
        stop: Some(tx),
        join,
    }
}

/// Resolves when the test asks the service to stop.
struct Shutdown(tokio::sync::oneshot::Receiver<()>);

impl std::future::Future for Shutdown {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// A recording refund center: real gRPC, records every PayoutUpdate, can be "down".
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Recorder {
    updates: Arc<std::sync::Mutex<Vec<refund_pb::PayoutUpdateRequest>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// Calls refused while down.
    refused: Arc<std::sync::atomic::AtomicU32>,
    /// Rings on every recorded or refused update.
    notify: Arc<tokio::sync::Notify>,
}

impl Recorder {
    fn updates(&self) -> Vec<refund_pb::PayoutUpdateRequest> {
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// (payout_id, sequence, status) of every update received, in arrival order.
    fn seen(&self) -> Vec<(String, u64, String)> {
        self.updates()
            .into_iter()
            .map(|u| (u.payout_id, u.sequence, u.status))
            .collect()
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (bounded) until `done` holds for the recorded updates and the refused count.
    async fn wait_for(&self, done: impl Fn(&[refund_pb::PayoutUpdateRequest], u32) -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let notified = self.notify.notified();
            let refused = self.refused.load(std::sync::atomic::Ordering::SeqCst);
            if done(&self.updates(), refused) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("updates never arrived: {:?}", self.seen());
            }
        }
    }
}

fn not_here<T>() -> Result<tonic::Response<T>, Status> {
    Err(Status::unimplemented("not part of this recorder"))
}

#[tonic::async_trait]
impl RefundService for Recorder {
    async fn payout_update(
        &self,
        r: tonic::Request<refund_pb::PayoutUpdateRequest>,
    ) -> Result<tonic::Response<refund_pb::PayoutUpdateResponse>, Status> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.notify.notify_waiters();
            return Err(Status::unavailable("refund center is down"));
        }
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r.into_inner());
        self.notify.notify_waiters();
        Ok(tonic::Response::new(refund_pb::PayoutUpdateResponse {
            applied: true,
        }))
    }
    async fn create_refund(
        &self,
        _: tonic::Request<refund_pb::CreateRefundRequest>,
    ) -> Result<tonic::Response<refund_pb::RefundOrder>, Status> {
        not_here()
    }
    async fn get_refund(
        &self,
        _: tonic::Request<refund_pb::GetRefundRequest>,
    ) -> Result<tonic::Response<refund_pb::RefundOrder>, Status> {
        not_here()
    }
    async fn list_refunds(
        &self,
        _: tonic::Request<refund_pb::ListRefundsRequest>,
    ) -> Result<tonic::Response<refund_pb::ListRefundsResponse>, Status> {
        not_here()
    }
    async fn upsert_channel(
        &self,
        _: tonic::Request<refund_pb::Channel>,
    ) -> Result<tonic::Response<refund_pb::Channel>, Status> {
        not_here()
    }
    async fn list_channels(
        &self,
        _: tonic::Request<refund_pb::ListChannelsRequest>,
    ) -> Result<tonic::Response<refund_pb::ListChannelsResponse>, Status> {
        not_here()
    }
    async fn run_interface_cycle(
        &self,
        _: tonic::Request<refund_pb::RunInterfaceCycleRequest>,
    ) -> Result<tonic::Response<refund_pb::CycleReport>, Status> {
        not_here()
    }
    async fn bank_callback(
        &self,
        _: tonic::Request<refund_pb::BankCallbackRequest>,
    ) -> Result<tonic::Response<refund_pb::BankCallbackResponse>, Status> {
        not_here()
    }
    async fn list_submitted(
        &self,
        _: tonic::Request<refund_pb::ListSubmittedRequest>,
    ) -> Result<tonic::Response<refund_pb::ListSubmittedResponse>, Status> {
        not_here()
    }
    async fn apply_reconciliation(
        &self,
        _: tonic::Request<refund_pb::ApplyReconciliationRequest>,
    ) -> Result<tonic::Response<refund_pb::RefundOrder>, Status> {
        not_here()
    }
    async fn run_outbox(
        &self,
        _: tonic::Request<refund_pb::RunOutboxRequest>,
    ) -> Result<tonic::Response<refund_pb::OutboxReport>, Status> {
        not_here()
    }
    async fn reinstate_succeeded(
        &self,
        _: tonic::Request<refund_pb::ReinstateSucceededRequest>,
    ) -> Result<tonic::Response<refund_pb::RefundOrder>, Status> {
        not_here()
    }
    async fn reopen_refund(
        &self,
        _: tonic::Request<refund_pb::ReopenRefundRequest>,
    ) -> Result<tonic::Response<refund_pb::RefundOrder>, Status> {
        not_here()
    }
    async fn run_payout_dispatch(
        &self,
        _: tonic::Request<refund_pb::RunInterfaceCycleRequest>,
    ) -> Result<tonic::Response<refund_pb::CycleReport>, Status> {
        not_here()
    }
}

/// Serves a recorder on port 0.
async fn start_recorder() -> (Recorder, tuikuan_proto::server::ServiceHandle) {
    let recorder = Recorder::default();
    let svc = recorder.clone();
    let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
        tuikuan_proto::server::serve(
            l,
            test_transport(Principal::Refund),
            tonic::service::Routes::new(RefundServiceServer::new(svc)),
            &[],
            s,
        )
    })
    .await
    .expect("spawn recorder");
    (recorder, handle)
}

/// A payout center and a bank simulator that call each other.
struct Pair {
    clock: ManualClock,
    payout: PayoutServiceClient<AnyCaller>,
    bank: BankServiceClient<AnyCaller>,
    running: Vec<Running>,
    _dbs: (TestDb, TestDb),
}

impl Pair {
    async fn start(
        backend: Backend,
        name: &str,
        tune: impl FnOnce(&mut tuikuan_bank::Config),
    ) -> Option<Pair> {
        Pair::start_with(backend, name, tune, |_| {}).await
    }

    async fn start_with(
        backend: Backend,
        name: &str,
        tune: impl FnOnce(&mut tuikuan_bank::Config),
        tune_payout: impl FnOnce(&mut tuikuan_payout::Config),
    ) -> Option<Pair> {
        let payout_db = test_db(backend, name)?;
        let bank_db = test_db(backend, &format!("{name}_bank"))?;
        let clock =
            ManualClock::at_business(NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"), 10);
        let shared: SharedClock = Arc::new(clock.clone());
        let (payout_l, payout_url) = bind().await;
        let (bank_l, bank_url) = bind().await;
        let mut bank_config = tuikuan_bank::Config::default_for(
            bank_db.url(),
            shared.clone(),
            test_transport(Principal::Bank),
        )
        .with_staff(tuikuan_auth::StaffConfig::tester());
        bank_config.delay_min_secs = 60;
        bank_config.delay_max_secs = 60;
        bank_config.fail_per_mille = 0;
        bank_config.duplicate_callback_per_mille = 1000;
        bank_config.out_of_order_per_mille = 1000;
        bank_config.payout_callback_addr = Some(payout_url.clone());
        tune(&mut bank_config);
        let mut payout_config = tuikuan_payout::Config::new(
            payout_db.url(),
            shared,
            bank_url.clone(),
            test_transport(Principal::Payout),
        )
        .with_staff(tuikuan_auth::StaffConfig::tester());
        tune_payout(&mut payout_config);
        let running = vec![
            run(bank_l, |l, s| tuikuan_bank::serve(bank_config, l, s)),
            run(payout_l, |l, s| tuikuan_payout::serve(payout_config, l, s)),
        ];
        Some(Pair {
            clock,
            payout: PayoutServiceClient::new(AnyCaller::new(Principal::Payout, &payout_url)),
            bank: BankServiceClient::new(AnyCaller::new(Principal::Bank, &bank_url)),
            running,
            _dbs: (payout_db, bank_db),
        })
    }

    async fn stop(self) {
        for r in self.running {
            r.stop().await;
        }
    }

    async fn create(&mut self, req: pb::CreatePayoutRequest) -> Result<pb::Payout, Status> {
        self.payout.create_payout(req).await.map(|r| r.into_inner())
    }

    async fn get(&mut self, id: &str) -> pb::Payout {
        self.payout
            .get_payout(pb::GetPayoutRequest {
                payout_id: id.into(),
            })
            .await
            .expect("get payout")
            .into_inner()
    }

    async fn cycle(&mut self) -> pb::PayoutCycleReport {
        self.payout
            .run_payout_cycle(pb::RunPayoutCycleRequest { limit: 0 })
            .await
            .expect("cycle")
            .into_inner()
    }

    async fn tick(&mut self) -> bank_pb::TickResponse {
        self.bank
            .tick(bank_pb::TickRequest {})
            .await
            .expect("tick")
            .into_inner()
    }
}

const CARD: &str = "6011 0009 9013 9424";

fn request(id: &str) -> pb::CreatePayoutRequest {
    pb::CreatePayoutRequest {
        payout_id: id.into(),
        refund_id: format!("rf-{id}"),
        channel: "quick".into(),
        card_no: CARD.into(),
        holder_name: "Li Lei".into(),
        amount: "128.80".into(),
        currency: "CNY".into(),
    }
}

fn code_of(s: &Status) -> String {
    s.metadata()
        .get(tuikuan_proto::status::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

macro_rules! both_backends {
    ($scenario:ident, $sqlite:ident, $pg:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(Backend::Sqlite).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $pg() {
            $scenario(Backend::Postgres).await;
        }
    };
}

async fn paid_end_to_end(backend: Backend) {
    let Some(mut t) = Pair::start(backend, "payout_paid", |_| {}).await else {
        return;
    };
    let created = t.create(request("po-1")).await.expect("create");
    assert_eq!(created.status, pb::PayoutStatus::Created as i32);
    assert_eq!(created.card_no_masked, "**** 9424");
    assert_eq!(
        (created.amount.as_str(), created.currency.as_str()),
        ("128.80", "CNY")
    );
    assert!(
        !format!("{created:?}").contains("6011000990139424"),
        "never the full card number"
    );

    let report = t.cycle().await;
    assert_eq!((report.sent, report.rejected, report.errors), (1, 0, 0));
    let sent = t.get("po-1").await;
    assert_eq!(sent.status, pb::PayoutStatus::Sent as i32);
    assert!(sent.bank_ref.starts_with("BK"));
    // A second cycle has nothing to send.
    assert_eq!(t.cycle().await.sent, 0);

    // Not due yet.
    assert_eq!(t.tick().await.completed, 0);
    assert_eq!(t.get("po-1").await.status, pb::PayoutStatus::Sent as i32);

    t.clock.advance(Duration::seconds(60));
    let tick = t.tick().await;
    // Final, duplicate final, stale "processing": all delivered; only the first applied.
    assert_eq!(
        (tick.completed, tick.callbacks_sent, tick.callbacks_failed),
        (1, 3, 0)
    );
    let paid = t.get("po-1").await;
    assert_eq!(paid.status, pb::PayoutStatus::Paid as i32);
    assert_eq!(paid.bank_ref, sent.bank_ref);
    assert_eq!(paid.card_no_masked, "**** 9424");
    let bank_side = t
        .bank
        .query_payout(bank_pb::QueryRequest { id: "po-1".into() })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(bank_side.status, bank_pb::TxStatus::TxSucceeded as i32);
    assert_eq!(bank_side.amount, "128.80");

    // Callbacks replayed by hand: duplicates and stale ones change nothing.
    for (status, seq) in [
        (pb::PayoutStatus::Paid, 2),
        (pb::PayoutStatus::Sent, 1),
        (pb::PayoutStatus::Failed, 2),
    ] {
        let r = t
            .payout
            .bank_callback(pb::PayoutCallbackRequest {
                payout_id: "po-1".into(),
                bank_ref: sent.bank_ref.clone(),
                status: status as i32,
                reason: String::new(),
                sequence: seq,
            })
            .await
            .expect("callback")
            .into_inner();
        assert!(!r.applied);
    }
    // A failure reported later (higher sequence) cannot move a PAID payout backwards either.
    let r = t
        .payout
        .bank_callback(pb::PayoutCallbackRequest {
            payout_id: "po-1".into(),
            bank_ref: sent.bank_ref.clone(),
            status: pb::PayoutStatus::Failed as i32,
            reason: "late".into(),
            sequence: 9,
        })
        .await
        .expect("callback")
        .into_inner();
    assert!(!r.applied);
    assert_eq!(t.get("po-1").await.status, pb::PayoutStatus::Paid as i32);
    // Callbacks for unknown payouts or with a wrong reference are refused.
    let e = t
        .payout
        .bank_callback(pb::PayoutCallbackRequest {
            payout_id: "po-404".into(),
            bank_ref: String::new(),
            status: pb::PayoutStatus::Paid as i32,
            reason: String::new(),
            sequence: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "PAYOUT_NOT_FOUND");
    let e = t
        .payout
        .bank_callback(pb::PayoutCallbackRequest {
            payout_id: "po-1".into(),
            bank_ref: "BKOTHER".into(),
            status: pb::PayoutStatus::Returned as i32,
            reason: String::new(),
            sequence: 3,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("bank_ref"));
    t.stop().await;
}

both_backends!(
    paid_end_to_end,
    paid_end_to_end_sqlite,
    paid_end_to_end_postgres
);

async fn validation_and_idempotency(backend: Backend) {
    let Some(mut t) = Pair::start(backend, "payout_idem", |_| {}).await else {
        return;
    };
    for (card, why) in [
        ("6011000990139425", "Luhn"),
        ("1234", "12 to 19"),
        ("6011-0009-9013-9424", "digits"),
        ("", "required"),
    ] {
        let mut r = request("po-bad");
        r.card_no = card.into();
        let e = t.create(r).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().starts_with("card_no: ") && e.message().contains(why),
            "{}",
            e.message()
        );
        assert!(
            !e.message().contains("6011"),
            "the card number is not echoed"
        );
    }
    let mut r = request("po-bad");
    r.holder_name = "  ".into();
    assert!(t
        .create(r)
        .await
        .unwrap_err()
        .message()
        .starts_with("holder_name"));
    let mut r = request("po-bad");
    r.holder_name = "x".repeat(65);
    assert!(t
        .create(r)
        .await
        .unwrap_err()
        .message()
        .starts_with("holder_name"));
    let mut r = request("po-bad");
    r.amount = "0".into();
    assert_eq!(code_of(&t.create(r).await.unwrap_err()), "INVALID_AMOUNT");
    let e = t
        .payout
        .get_payout(pb::GetPayoutRequest {
            payout_id: "po-bad".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "PAYOUT_NOT_FOUND", "nothing was stored");

    let first = t.create(request("po-1")).await.expect("create");
    let mut same = request("po-1");
    same.card_no = "6011000990139424".into(); // same card, written without spaces
    same.amount = "128.8".into();
    assert_eq!(t.create(same).await.expect("repeat"), first);
    let mut other = request("po-1");
    other.amount = "128.81".into();
    let e = t.create(other).await.unwrap_err();
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (tonic::Code::AlreadyExists, "IDEMPOTENCY_CONFLICT")
    );
    // After it was sent, a repeat still answers with the payout as it is now.
    assert_eq!(t.cycle().await.sent, 1);
    let again = t.create(request("po-1")).await.expect("repeat");
    assert_eq!(again.status, pb::PayoutStatus::Sent as i32);
    t.stop().await;
}

both_backends!(
    validation_and_idempotency,
    validation_and_idempotency_sqlite,
    validation_and_idempotency_postgres
);

async fn failed_by_the_bank(backend: Backend) {
    let Some(mut t) = Pair::start(backend, "payout_failed", |c| c.fail_per_mille = 1000).await
    else {
        return;
    };
    t.create(request("po-1")).await.expect("create");
    assert_eq!(t.cycle().await.sent, 1);
    t.clock.advance(Duration::seconds(60));
    assert_eq!(t.tick().await.completed, 1);
    let p = t.get("po-1").await;
    assert_eq!(p.status, pb::PayoutStatus::Failed as i32);
    assert!(
        p.reason == "INVALID_CARD" || p.reason == "NAME_MISMATCH",
        "{}",
        p.reason
    );
    t.stop().await;

    // Refused synchronously: FAILED at once with the bank's reason.
    let Some(mut t) = Pair::start(backend, "payout_refused", |c| {
        c.sync_reject_per_mille = 1000
    })
    .await
    else {
        return;
    };
    t.create(request("po-2")).await.expect("create");
    let report = t.cycle().await;
    assert_eq!((report.sent, report.rejected, report.errors), (0, 1, 0));
    let p = t.get("po-2").await;
    assert_eq!(p.status, pb::PayoutStatus::Failed as i32);
    assert!(p.reason.starts_with("BANK_REJECTED"), "{}", p.reason);
    t.stop().await;
}

both_backends!(
    failed_by_the_bank,
    failed_by_the_bank_sqlite,
    failed_by_the_bank_postgres
);

async fn bank_down_then_up(backend: Backend) {
    let Some(db) = test_db(backend, "payout_down") else {
        return;
    };
    let Some(bank_db) = test_db(backend, "payout_down_bank") else {
        return;
    };
    let clock = ManualClock::at_business(NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"), 10);
    let shared: SharedClock = Arc::new(clock.clone());
    // Reserve an address for the bank but do not serve it yet.
    let (bank_l, bank_url) = bind().await;
    let (payout_l, payout_url) = bind().await;
    let bank_addr = bank_l.local_addr().expect("addr");
    drop(bank_l);
    let payout = run(payout_l, |l, s| {
        tuikuan_payout::serve(
            tuikuan_payout::Config::new(
                db.url(),
                shared.clone(),
                bank_url.clone(),
                test_transport(Principal::Payout),
            )
            .with_staff(tuikuan_auth::StaffConfig::tester()),
            l,
            s,
        )
    });
    let mut client = PayoutServiceClient::new(AnyCaller::new(Principal::Payout, &payout_url));
    client.create_payout(request("po-1")).await.expect("create");
    let r = client
        .run_payout_cycle(pb::RunPayoutCycleRequest { limit: 10 })
        .await
        .expect("cycle")
        .into_inner();
    assert_eq!((r.sent, r.rejected, r.errors), (0, 0, 1));
    let p = client
        .get_payout(pb::GetPayoutRequest {
            payout_id: "po-1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        p.status,
        pb::PayoutStatus::Created as i32,
        "no answer: stays CREATED for the next cycle"
    );

    // The bank comes up on that address; the next cycle sends it, under the same id.
    let bank_l = TcpListener::bind(bank_addr).await.expect("rebind");
    let mut config =
        tuikuan_bank::Config::default_for(bank_db.url(), shared, test_transport(Principal::Bank))
            .with_staff(tuikuan_auth::StaffConfig::tester());
    config.payout_callback_addr = Some(payout_url.clone());
    let bank = run(bank_l, |l, s| tuikuan_bank::serve(config, l, s));
    let r = client
        .run_payout_cycle(pb::RunPayoutCycleRequest { limit: 10 })
        .await
        .expect("cycle")
        .into_inner();
    assert_eq!((r.sent, r.errors), (1, 0));
    let p = client
        .get_payout(pb::GetPayoutRequest {
            payout_id: "po-1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(p.status, pb::PayoutStatus::Sent as i32);
    bank.stop().await;
    payout.stop().await;
}

both_backends!(
    bank_down_then_up,
    bank_down_then_up_sqlite,
    bank_down_then_up_postgres
);

async fn returned_after_paid(backend: Backend) {
    let Some(mut t) = Pair::start(backend, "payout_returned", |c| {
        c.return_per_mille = 1000;
        c.return_delay_secs = 3600;
    })
    .await
    else {
        return;
    };
    t.create(request("po-1")).await.expect("create");
    assert_eq!(t.cycle().await.sent, 1);
    t.clock.advance(Duration::seconds(60));
    t.tick().await;
    assert_eq!(t.get("po-1").await.status, pb::PayoutStatus::Paid as i32);
    t.clock.advance(Duration::seconds(3600));
    let tick = t.tick().await;
    assert_eq!(tick.callbacks_sent, 1);
    let p = t.get("po-1").await;
    assert_eq!(p.status, pb::PayoutStatus::Returned as i32);
    assert!(p.reason.starts_with("RETURNED"));
    let bank_side = t
        .bank
        .query_payout(bank_pb::QueryRequest { id: "po-1".into() })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(bank_side.status, bank_pb::TxStatus::TxReturned as i32);
    // The clearing file of the day still shows it paid that day.
    let f = t
        .bank
        .get_clearing_file(bank_pb::GetClearingFileRequest {
            channel: "quick".into(),
            date: "2026-11-26".into(),
        })
        .await
        .expect("file")
        .into_inner();
    let rows = tuikuan_bank::domain::parse_clearing_csv(&f.content).expect("parses");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].status,
        tuikuan_bank::domain::ClearingStatus::Success
    );
    t.stop().await;
}

both_backends!(
    returned_after_paid,
    returned_after_paid_sqlite,
    returned_after_paid_postgres
);

fn seen(list: &[(&str, u64, &str)]) -> Vec<(String, u64, String)> {
    list.iter()
        .map(|(p, s, st)| (p.to_string(), *s, st.to_string()))
        .collect()
}

/// Every status change reaches the refund center once, in order, with increasing sequences:
/// SENT and PAID then RETURNED for one payout (despite duplicate and out-of-order bank callbacks),
/// and a synchronous refusal as FAILED.
async fn updates_reach_the_refund_center(backend: Backend) {
    let (recorder, refund) = start_recorder().await;
    let refund_url = refund.url();
    let Some(mut t) = Pair::start_with(
        backend,
        "payout_updates",
        |c| {
            c.return_per_mille = 1000;
            c.return_delay_secs = 3600;
        },
        |p| p.refund_addr = Some(refund_url),
    )
    .await
    else {
        return;
    };
    t.create(request("po-1")).await.expect("create");
    assert!(recorder.seen().is_empty(), "CREATED is not a change");
    let report = t.cycle().await;
    assert_eq!(report.sent, 1);
    let sent = t.get("po-1").await;
    assert_eq!(recorder.seen(), seen(&[("po-1", 1, "SENT")]));
    let first = &recorder.updates()[0];
    assert_eq!(
        (first.refund_id.as_str(), first.bank_ref.as_str()),
        ("rf-po-1", sent.bank_ref.as_str())
    );
    // Nothing new: another cycle delivers nothing again.
    t.cycle().await;
    assert_eq!(recorder.seen().len(), 1);

    // The bank's callbacks come three times (final, duplicate final, stale): one PAID update.
    t.clock.advance(Duration::seconds(60));
    assert_eq!(t.tick().await.callbacks_sent, 3);
    assert_eq!(
        recorder.seen(),
        seen(&[("po-1", 1, "SENT"), ("po-1", 2, "PAID")])
    );
    // The return (退票) an hour later, with the bank's reason.
    t.clock.advance(Duration::seconds(3600));
    t.tick().await;
    assert_eq!(
        recorder.seen(),
        seen(&[
            ("po-1", 1, "SENT"),
            ("po-1", 2, "PAID"),
            ("po-1", 3, "RETURNED")
        ])
    );
    let returned = recorder.updates()[2].clone();
    assert!(
        returned.reason.starts_with("RETURNED"),
        "{}",
        returned.reason
    );
    assert_eq!(returned.bank_ref, sent.bank_ref);
    t.cycle().await;
    assert_eq!(recorder.seen().len(), 3, "duplicate-free");
    t.stop().await;

    // A synchronous refusal is a change too: CREATED -> FAILED, reported with the reason.
    let refund_url = refund.url();
    let Some(mut t) = Pair::start_with(
        backend,
        "payout_updates_refused",
        |c| c.sync_reject_per_mille = 1000,
        |p| p.refund_addr = Some(refund_url),
    )
    .await
    else {
        return;
    };
    t.create(request("po-2")).await.expect("create");
    assert_eq!(t.cycle().await.rejected, 1);
    let failed = recorder
        .updates()
        .into_iter()
        .find(|u| u.payout_id == "po-2")
        .expect("reported");
    assert_eq!((failed.sequence, failed.status.as_str()), (1, "FAILED"));
    assert!(
        failed.reason.starts_with("BANK_REJECTED"),
        "{}",
        failed.reason
    );
    t.stop().await;
    refund.stop().await.expect("stop recorder");
}

both_backends!(
    updates_reach_the_refund_center,
    updates_reach_the_refund_center_sqlite,
    updates_reach_the_refund_center_postgres
);

/// The refund center is down while the payout is sent and paid: the changes are kept in the
/// outbox; RunPayoutCycle delivers them afterwards, in order, once each.
async fn updates_wait_for_the_refund_center(backend: Backend) {
    let (recorder, refund) = start_recorder().await;
    recorder.set_down(true);
    let refund_url = refund.url();
    let Some(mut t) = Pair::start_with(
        backend,
        "payout_updates_down",
        |_| {},
        |p| p.refund_addr = Some(refund_url),
    )
    .await
    else {
        return;
    };
    t.create(request("po-1")).await.expect("create");
    let report = t.cycle().await;
    assert_eq!(report.sent, 1);
    t.clock.advance(Duration::seconds(60));
    t.tick().await;
    assert_eq!(t.get("po-1").await.status, pb::PayoutStatus::Paid as i32);
    assert!(recorder.seen().is_empty());
    // Still down: a cycle retries and fails again, nothing lost.
    t.cycle().await;
    assert!(recorder.seen().is_empty());

    recorder.set_down(false);
    t.cycle().await;
    assert_eq!(
        recorder.seen(),
        seen(&[("po-1", 1, "SENT"), ("po-1", 2, "PAID")])
    );
    t.cycle().await;
    assert_eq!(recorder.seen().len(), 2, "delivered once");
    t.stop().await;
    refund.stop().await.expect("stop recorder");
}

both_backends!(
    updates_wait_for_the_refund_center,
    updates_wait_for_the_refund_center_sqlite,
    updates_wait_for_the_refund_center_postgres
);

/// The job loop retries undelivered updates on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_loop_delivers_updates() {
    let (recorder, refund) = start_recorder().await;
    recorder.set_down(true);
    let refund_url = refund.url();
    let Some(mut t) = Pair::start_with(
        Backend::Sqlite,
        "payout_updates_job",
        |c| c.sync_reject_per_mille = 1000,
        |p| {
            p.refund_addr = Some(refund_url);
            p.job_interval = Some(std::time::Duration::from_millis(20));
        },
    )
    .await
    else {
        return;
    };
    t.create(request("po-1")).await.expect("create");
    // The job loop sends the payout (refused at once: FAILED) while the refund center is down,
    // and fails to report it at least twice (once after the change, once retrying).
    recorder.wait_for(|_, refused| refused >= 2).await;
    assert!(recorder.seen().is_empty());
    recorder.set_down(false);
    recorder
        .wait_for(|u, _| u.iter().any(|u| u.payout_id == "po-1"))
        .await;
    assert_eq!(recorder.seen(), seen(&[("po-1", 1, "FAILED")]));
    t.stop().await;
    refund.stop().await.expect("stop recorder");
}

/// `ListPayouts` pages by payout id and filters by status and refund; the bank's record of each
/// payout names the refund it pays for.
async fn listed_and_known_to_the_bank_by_refund(backend: Backend) {
    let Some(mut t) = Pair::start(backend, "payout_list", |_| {}).await else {
        return;
    };
    for id in ["po-3", "po-1", "po-2"] {
        t.create(request(id)).await.expect("create");
    }
    let mut second = request("po-1b");
    second.refund_id = "rf-po-1".into();
    t.create(second).await.expect("a second payout of rf-po-1");
    t.cycle().await;
    t.clock.advance(Duration::seconds(60));
    t.tick().await;

    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = t
            .payout
            .list_payouts(pb::ListPayoutsRequest {
                limit: 2,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .payouts;
        let Some(last) = page.last() else { break };
        after = last.payout_id.clone();
        all.extend(page);
    }
    let ids: Vec<&str> = all.iter().map(|p| p.payout_id.as_str()).collect();
    assert_eq!(ids, ["po-1", "po-1b", "po-2", "po-3"]);
    assert!(all.iter().all(|p| p.card_no_masked == "**** 9424"));
    let of_refund = t
        .payout
        .list_payouts(pb::ListPayoutsRequest {
            refund_id: "rf-po-1".into(),
            ..Default::default()
        })
        .await
        .expect("by refund")
        .into_inner()
        .payouts;
    assert_eq!(of_refund.len(), 2);
    let paid = t
        .payout
        .list_payouts(pb::ListPayoutsRequest {
            status: pb::PayoutStatus::Paid as i32,
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("by status")
        .into_inner()
        .payouts;
    assert_eq!(paid.len(), 4, "{paid:?}");
    let none = t
        .payout
        .list_payouts(pb::ListPayoutsRequest {
            status: pb::PayoutStatus::Returned as i32,
            ..Default::default()
        })
        .await
        .expect("none returned")
        .into_inner()
        .payouts;
    assert!(none.is_empty());
    for (bad, field) in [
        (
            pb::ListPayoutsRequest {
                status: 99,
                ..Default::default()
            },
            "status",
        ),
        (
            pb::ListPayoutsRequest {
                after: "no spaces".into(),
                ..Default::default()
            },
            "after",
        ),
    ] {
        let err = t.payout.list_payouts(bad).await.unwrap_err();
        assert!(err.message().contains(field), "{}", err.message());
    }

    // The bank knows which refund each payout paid.
    let bank_side = t
        .bank
        .list_transactions(bank_pb::ListTransactionsRequest {
            kind: bank_pb::TxKind::Payout as i32,
            ..Default::default()
        })
        .await
        .expect("bank books")
        .into_inner()
        .transactions;
    let refs: Vec<(&str, &str)> = bank_side
        .iter()
        .map(|t| (t.id.as_str(), t.refund_id.as_str()))
        .collect();
    assert_eq!(
        refs,
        [
            ("po-1", "rf-po-1"),
            ("po-1b", "rf-po-1"),
            ("po-2", "rf-po-2"),
            ("po-3", "rf-po-3")
        ]
    );
    t.stop().await;
}
both_backends!(
    listed_and_known_to_the_bank_by_refund,
    listed_and_known_to_the_bank_by_refund_sqlite,
    listed_and_known_to_the_bank_by_refund_postgres
);
