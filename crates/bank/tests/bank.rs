//! The bank simulator, served for real on port 0, on SQLite and on PostgreSQL: determinism,
//! idempotency, due-time completion, clearing files, and callbacks delivered to real receivers
//! (the payout center, and a recording refund-center stand-in served over gRPC in this file).

// Every service runs under mutual TLS with the test PKI; the drivers play several callers
// (refund, payout, staff) through `AnyCaller`, each request under the certificate of a caller the
// allow-list admits for it.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::pki::test_transport;
use tuikuan_proto::tls::Principal;

use chrono::{Duration, NaiveDate};
use tokio::net::TcpListener;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::{Request, Response, Status};
use tuikuan_bank::domain::{parse_clearing_csv, sha256_hex, ClearingStatus, RecordType};
use tuikuan_bank::Config;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::{Error, ManualClock, SharedClock};
use tuikuan_proto::bank::v1 as pb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::payout::v1 as payout_pb;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

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

/// A service running on a listener bound before it started (so peers can know each other's
/// addresses up front).
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

fn run<Fut>(
    listener: TcpListener,
    start: impl FnOnce(TcpListener, futures_shutdown::Shutdown) -> Fut,
) -> Running
where
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(start(listener, futures_shutdown::Shutdown(rx)));
    Running {
        stop: Some(tx),
        join,
    }
}

mod futures_shutdown {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Resolves when the test asks the service to stop.
    pub struct Shutdown(pub tokio::sync::oneshot::Receiver<()>);

    impl Future for Shutdown {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            Pin::new(&mut self.0).poll(cx).map(|_| ())
        }
    }
}

async fn start_bank(config: Config) -> (Running, BankServiceClient<AnyCaller>) {
    let (l, url) = bind().await;
    let running = run(l, |l, s| tuikuan_bank::serve(config, l, s));
    let client = BankServiceClient::new(AnyCaller::new(Principal::Bank, &url));
    (running, client)
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("date")
}

fn clock_at(hour: u32) -> (ManualClock, SharedClock) {
    let c = ManualClock::at_business(day(), hour);
    let shared: SharedClock = Arc::new(c.clone());
    (c, shared)
}

fn refund(channel: &str, id: &str, amount: &str) -> pb::SubmitRefundRequest {
    pb::SubmitRefundRequest {
        channel: channel.into(),
        refund_id: id.into(),
        original_trade_id: format!("tr-{id}"),
        amount: amount.into(),
        currency: "CNY".into(),
    }
}

const VISA: &str = "4111111111111111";

fn payout(channel: &str, id: &str, card: &str, amount: &str) -> pb::SubmitPayoutRequest {
    pb::SubmitPayoutRequest {
        channel: channel.into(),
        payout_id: id.into(),
        card_no: card.into(),
        holder_name: "Li Lei".into(),
        amount: amount.into(),
        currency: "CNY".into(),
        refund_id: String::new(),
    }
}

fn code_of(s: &Status) -> String {
    s.metadata()
        .get(tuikuan_proto::status::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn tick(c: &mut BankServiceClient<AnyCaller>) -> pb::TickResponse {
    c.tick(pb::TickRequest {}).await.expect("tick").into_inner()
}

async fn clearing(
    c: &mut BankServiceClient<AnyCaller>,
    channel: &str,
    date: &str,
) -> pb::ClearingFile {
    c.get_clearing_file(pb::GetClearingFileRequest {
        channel: channel.into(),
        date: date.into(),
    })
    .await
    .expect("clearing file")
    .into_inner()
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

// ------------------------------------------------------------------------------------------------
// Determinism
// ------------------------------------------------------------------------------------------------

/// Everything observable after a fixed script of submissions and clock steps.
#[derive(Debug, PartialEq)]
struct Observed {
    submits: Vec<(bool, String, String)>,
    txs: Vec<(String, i32, String, String, i64, i64)>,
    file: Vec<u8>,
    sha256: String,
}

async fn script(backend: Backend, seed: u64, name: &str) -> Option<Observed> {
    let db = test_db(backend, name)?;
    let (clock, shared) = clock_at(9);
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.seed = seed;
    config.fail_per_mille = 300;
    config.sync_reject_per_mille = 100;
    config.delay_max_secs = 3600;
    let (bank, mut c) = start_bank(config).await;
    let mut submits = Vec::new();
    let mut ids = Vec::new();
    for i in 0..24 {
        let id = format!("rf-{i:03}");
        let r = c
            .submit_refund(refund("netbank", &id, &format!("{}.{:02}", 10 + i, i)))
            .await
            .expect("submit")
            .into_inner();
        submits.push((r.accepted, r.bank_ref, r.reason));
        ids.push((false, id));
        if i % 3 == 0 {
            let id = format!("po-{i:03}");
            let r = c
                .submit_payout(payout("netbank", &id, VISA, "88.00"))
                .await
                .expect("submit")
                .into_inner();
            submits.push((r.accepted, r.bank_ref, r.reason));
            ids.push((true, id));
        }
        clock.advance(Duration::seconds(97));
    }
    for _ in 0..10 {
        clock.advance(Duration::minutes(20));
        tick(&mut c).await;
    }
    let mut txs = Vec::new();
    for (is_payout, id) in &ids {
        let q = pb::QueryRequest { id: id.clone() };
        let t = if *is_payout {
            c.query_payout(q).await
        } else {
            c.query_refund(q).await
        }
        .expect("query")
        .into_inner();
        txs.push((
            t.id,
            t.status,
            t.reason,
            t.bank_ref,
            t.submitted_at_ms,
            t.completed_at_ms,
        ));
    }
    let f = clearing(&mut c, "netbank", "2026-11-26").await;
    assert_eq!(f.format, "tuikuan-csv-v1");
    assert_eq!(f.sha256, sha256_hex(&f.content));
    // Every completed transaction is in the file, and the file parses back.
    let rows = parse_clearing_csv(&f.content).expect("parses");
    let completed = txs
        .iter()
        .filter(|t| {
            t.1 == pb::TxStatus::TxSucceeded as i32
                || (t.1 == pb::TxStatus::TxFailed as i32 && t.5 != 0)
        })
        .count();
    assert_eq!(rows.len(), completed);
    assert!(completed > 20, "most of the script completes: {completed}");
    bank.stop().await;
    Some(Observed {
        submits,
        txs,
        file: f.content,
        sha256: f.sha256,
    })
}

async fn determinism(backend: Backend) {
    let Some(a) = script(backend, 42, "bank_det_a").await else {
        return;
    };
    let Some(b) = script(backend, 42, "bank_det_b").await else {
        return;
    };
    assert_eq!(a, b, "same seed, same script: same results");
    assert_eq!(a.file, b.file, "byte for byte");
    let failed = a
        .txs
        .iter()
        .filter(|t| t.1 == pb::TxStatus::TxFailed as i32)
        .count();
    assert!(
        failed > 0 && failed < a.txs.len(),
        "some fail, some succeed"
    );
    assert!(
        a.submits.iter().any(|s| !s.0),
        "some are refused synchronously"
    );
    let Some(other) = script(backend, 43, "bank_det_c").await else {
        return;
    };
    assert_ne!(a.submits, other.submits, "another seed decides otherwise");
    assert_ne!(a.sha256, other.sha256);
}

both_backends!(determinism, determinism_sqlite, determinism_postgres);

// ------------------------------------------------------------------------------------------------
// Idempotency and validation
// ------------------------------------------------------------------------------------------------

async fn idempotency(backend: Backend) {
    let Some(db) = test_db(backend, "bank_idem") else {
        return;
    };
    let (_clock, shared) = clock_at(10);
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.seed = 7;
    let (bank, mut c) = start_bank(config).await;

    let first = c
        .submit_refund(refund("netbank", "rf-1", "12.50"))
        .await
        .expect("submit")
        .into_inner();
    assert!(first.accepted && first.bank_ref.starts_with("BK"));
    let again = c
        .submit_refund(refund("netbank", "rf-1", "12.5"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first, again);
    let err = c
        .submit_refund(refund("netbank", "rf-1", "12.51"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    // A payout under a refund's id is other content too.
    let err = c
        .submit_payout(payout("netbank", "rf-1", VISA, "12.50"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");

    // Bad input is an argument error naming the field; nothing is stored.
    let err = c
        .submit_refund(refund("netbank", "rf-2", "-1"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), code_of(&err).as_str()),
        (tonic::Code::InvalidArgument, "INVALID_AMOUNT")
    );
    let err = c
        .submit_refund(refund("net bank", "rf-2", "1"))
        .await
        .unwrap_err();
    assert!(err.message().starts_with("channel"));
    let err = c
        .query_refund(pb::QueryRequest { id: "rf-2".into() })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "REFUND_NOT_FOUND");
    let err = c
        .query_payout(pb::QueryRequest { id: "rf-1".into() })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "PAYOUT_NOT_FOUND");

    // A bad card is the bank's synchronous refusal, stored and repeated as such.
    let bad = c
        .submit_payout(payout("quick", "po-1", "4111111111111112", "5.00"))
        .await
        .expect("submit")
        .into_inner();
    assert!(!bad.accepted);
    assert!(bad.reason.starts_with("INVALID_CARD"), "{}", bad.reason);
    let q = c
        .query_payout(pb::QueryRequest { id: "po-1".into() })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(
        (q.status, q.completed_at_ms),
        (pb::TxStatus::TxRejected as i32, 0),
        "refused synchronously: REJECTED, not FAILED"
    );
    assert_eq!(q.reason, bad.reason);
    let again = c
        .submit_payout(payout("quick", "po-1", "4111111111111112", "5.00"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(bad, again);
    let mut nameless = payout("quick", "po-2", VISA, "5.00");
    nameless.holder_name = String::new();
    let r = c
        .submit_payout(nameless)
        .await
        .expect("submit")
        .into_inner();
    assert!(!r.accepted && r.reason.starts_with("NAME_MISMATCH"));
    let ok = c
        .submit_payout(payout("quick", "po-3", "4111 1111 1111 1111", "5.00"))
        .await
        .expect("submit")
        .into_inner();
    assert!(ok.accepted);
    bank.stop().await;

    // sync_reject_per_mille = 1000: everything is refused at once.
    let Some(db) = test_db(backend, "bank_reject") else {
        return;
    };
    let (_clock, shared) = clock_at(10);
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.sync_reject_per_mille = 1000;
    let (bank, mut c) = start_bank(config).await;
    let r = c
        .submit_refund(refund("netbank", "rf-9", "1.00"))
        .await
        .expect("submit")
        .into_inner();
    assert!(!r.accepted && r.reason.starts_with("BANK_REJECTED"));
    assert_eq!(
        tick(&mut c).await,
        pb::TickResponse {
            completed: 0,
            callbacks_sent: 0,
            callbacks_failed: 0
        }
    );
    bank.stop().await;
}

both_backends!(idempotency, idempotency_sqlite, idempotency_postgres);

// ------------------------------------------------------------------------------------------------
// Tick completes only what is due, at its due time
// ------------------------------------------------------------------------------------------------

async fn tick_only_due(backend: Backend) {
    let Some(db) = test_db(backend, "bank_due") else {
        return;
    };
    let (clock, shared) = clock_at(10);
    let t0 = shared.now_ms();
    let mut config = Config::default_for(db.url(), shared.clone(), test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.delay_min_secs = 600;
    config.delay_max_secs = 600;
    let (bank, mut c) = start_bank(config).await;
    c.submit_refund(refund("netbank", "rf-a", "1.00"))
        .await
        .expect("a");
    clock.advance(Duration::seconds(300));
    c.submit_payout(payout("netbank", "po-b", VISA, "2.00"))
        .await
        .expect("b");
    clock.advance(Duration::seconds(299));
    assert_eq!(tick(&mut c).await.completed, 0);
    clock.advance(Duration::seconds(1));
    // Let the clock run past the due time before ticking: completion is still at the due time.
    clock.advance(Duration::seconds(120));
    assert_eq!(tick(&mut c).await.completed, 1);
    let a = c
        .query_refund(pb::QueryRequest { id: "rf-a".into() })
        .await
        .expect("a")
        .into_inner();
    assert!(
        a.status == pb::TxStatus::TxSucceeded as i32 || a.status == pb::TxStatus::TxFailed as i32
    );
    assert_eq!(a.submitted_at_ms, t0);
    assert_eq!(a.completed_at_ms, t0 + 600_000);
    let b = c
        .query_payout(pb::QueryRequest { id: "po-b".into() })
        .await
        .expect("b")
        .into_inner();
    assert_eq!(
        (b.status, b.completed_at_ms),
        (pb::TxStatus::TxAccepted as i32, 0)
    );
    assert_eq!(tick(&mut c).await.completed, 0);
    clock.advance(Duration::seconds(180));
    assert_eq!(tick(&mut c).await.completed, 1);
    let b = c
        .query_payout(pb::QueryRequest { id: "po-b".into() })
        .await
        .expect("b")
        .into_inner();
    assert_eq!(b.completed_at_ms, t0 + 900_000);
    assert_eq!(tick(&mut c).await.completed, 0);
    bank.stop().await;
}

both_backends!(tick_only_due, tick_only_due_sqlite, tick_only_due_postgres);

// ------------------------------------------------------------------------------------------------
// Clearing files
// ------------------------------------------------------------------------------------------------

async fn clearing_file(backend: Backend) {
    let Some(db) = test_db(backend, "bank_clear") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // 23:50 business time on the 26th; everything completes 60 s after submission.
    let clock = ManualClock::new(start_of_business_date(day()) + Duration::minutes(23 * 60 + 50));
    let shared: SharedClock = Arc::new(clock.clone());
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.delay_min_secs = 60;
    config.delay_max_secs = 60;
    config.fail_per_mille = 500;
    config.clearing_dir = Some(dir.path().to_path_buf());
    let (bank, mut c) = start_bank(config).await;

    c.submit_refund(refund("netbank", "rf-late", "1000.00"))
        .await
        .expect("submit");
    c.submit_payout(payout("netbank", "po-late", VISA, "20.00"))
        .await
        .expect("submit");
    c.submit_refund(refund("quick", "rf-other", "3.00"))
        .await
        .expect("other channel");
    c.submit_payout(payout("netbank", "po-bad", "4111111111111112", "20.00"))
        .await
        .expect("refused");
    clock.advance(Duration::minutes(20)); // 00:10 on the 27th
    c.submit_refund(refund("netbank", "rf-next", "7.00"))
        .await
        .expect("next day");
    clock.advance(Duration::minutes(5));

    // No tick ran: building the file completes due work first, so it is already complete.
    let f = clearing(&mut c, "netbank", "2026-11-26").await;
    assert_eq!(f.sha256, sha256_hex(&f.content));
    let rows = parse_clearing_csv(&f.content).expect("parses");
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["po-late", "rf-late"],
        "ordered by completion time, then id"
    );
    for row in &rows {
        let q = pb::QueryRequest { id: row.id.clone() };
        let t = match row.record_type {
            RecordType::Refund => c.query_refund(q).await,
            RecordType::Payout => c.query_payout(q).await,
            RecordType::File => panic!("no file rows in this scenario"),
        }
        .expect("query")
        .into_inner();
        assert_eq!(row.bank_ref, t.bank_ref);
        assert_eq!(row.channel, "netbank");
        assert_eq!(row.amount.amount_string(), t.amount);
        assert_eq!(row.completed_at.timestamp_millis(), t.completed_at_ms);
        let want = if t.status == pb::TxStatus::TxSucceeded as i32 {
            ClearingStatus::Success
        } else {
            ClearingStatus::Failed
        };
        assert_eq!(row.status, want);
        assert_eq!(
            row.reason,
            if want == ClearingStatus::Failed {
                t.reason
            } else {
                String::new()
            }
        );
    }
    let text = String::from_utf8(f.content.clone()).expect("utf-8");
    assert!(text.starts_with(
        "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n"
    ));
    assert!(text.contains(",1000.00,CNY,") && text.contains("T23:51:00.000+08:00"));
    // Written to <dir>/<channel>/<date>.csv, the same bytes.
    let on_disk =
        std::fs::read(dir.path().join("netbank").join("2026-11-26.csv")).expect("written");
    assert_eq!(on_disk, f.content);
    // Asking again gives the same file.
    assert_eq!(clearing(&mut c, "netbank", "2026-11-26").await, f);

    let next = parse_clearing_csv(&clearing(&mut c, "netbank", "2026-11-27").await.content)
        .expect("parses");
    assert_eq!(
        next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["rf-next"]
    );
    let other =
        parse_clearing_csv(&clearing(&mut c, "quick", "2026-11-26").await.content).expect("parses");
    assert_eq!(
        other.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["rf-other"]
    );
    let empty = clearing(&mut c, "netbank", "2026-11-20").await;
    assert!(parse_clearing_csv(&empty.content)
        .expect("parses")
        .is_empty());

    // Bad requests.
    let err = c
        .get_clearing_file(pb::GetClearingFileRequest {
            channel: "netbank".into(),
            date: "26/11/2026".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("date"));
    let err = c
        .get_clearing_file(pb::GetClearingFileRequest {
            channel: "..".into(),
            date: "2026-11-26".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A damaged file is refused naming the line and field.
    let damaged = text.replacen(",CNY,", ",CNX,", 2);
    let e = parse_clearing_csv(damaged.as_bytes()).unwrap_err();
    assert_eq!(e.code, tuikuan_kernel::ErrorCode::InvalidArgument);
    assert!(e.message.contains("line 2: currency"), "{}", e.message);
    bank.stop().await;
}

both_backends!(clearing_file, clearing_file_sqlite, clearing_file_postgres);

// ------------------------------------------------------------------------------------------------
// Callbacks to real receivers
// ------------------------------------------------------------------------------------------------

/// A refund center stand-in that records bank callbacks; it refuses the first `fail_first`.
///
/// It answers only `RefundService/BankCallback` (routed by hand, like generated servers do), so
/// it does not depend on the rest of the refund center's API.
#[derive(Debug, Default, Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<refund_pb::BankCallbackRequest>>>,
    fail_first: Arc<AtomicU32>,
}

impl Recorder {
    fn bank_callback(
        &self,
        request: refund_pb::BankCallbackRequest,
    ) -> Result<refund_pb::BankCallbackResponse, Status> {
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err(Status::unavailable("refund center is restarting"));
        }
        self.calls.lock().expect("lock").push(request);
        Ok(refund_pb::BankCallbackResponse { applied: true })
    }

    /// Routes for serving the recorder as `tuikuan.refund.v1.RefundService`.
    fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(RecorderServer(self))
    }
}

#[derive(Clone)]
struct RecorderServer(Recorder);

impl tonic::server::NamedService for RecorderServer {
    const NAME: &'static str = "tuikuan.refund.v1.RefundService";
}

struct BankCallbackSvc(Recorder);

impl tonic::server::UnaryService<refund_pb::BankCallbackRequest> for BankCallbackSvc {
    type Response = refund_pb::BankCallbackResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;
    fn call(&mut self, request: Request<refund_pb::BankCallbackRequest>) -> Self::Future {
        let answer = self
            .0
            .bank_callback(request.into_inner())
            .map(Response::new);
        Box::pin(async move { answer })
    }
}

impl<B> Service<http::Request<B>> for RecorderServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == "/tuikuan.refund.v1.RefundService/BankCallback" {
            let svc = BankCallbackSvc(self.0.clone());
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(svc, req).await)
            });
        }
        Box::pin(async move { Ok(Status::unimplemented("test recorder").into_http()) })
    }
}

async fn callbacks(backend: Backend) {
    let Some(bank_db) = test_db(backend, "bank_cb") else {
        return;
    };
    let Some(payout_db) = test_db(backend, "bank_cb_payout") else {
        return;
    };
    let (clock, shared) = clock_at(10);
    let (bank_l, bank_url) = bind().await;
    let (payout_l, payout_url) = bind().await;
    let (refund_l, refund_url) = bind().await;

    let recorder = Recorder::default();
    recorder.fail_first.store(1, Ordering::SeqCst);
    let rec = recorder.clone();
    let refund_center = run(refund_l, |l, s| async move {
        tuikuan_proto::server::serve(l, test_transport(Principal::Refund), rec.routes(), &[], s)
            .await
    });

    let payout_config = tuikuan_payout::Config::new(
        payout_db.url(),
        shared.clone(),
        bank_url.clone(),
        test_transport(Principal::Payout),
    )
    .with_staff(tuikuan_auth::StaffConfig::tester());
    let payout_center = run(payout_l, |l, s| tuikuan_payout::serve(payout_config, l, s));

    let mut config = Config::default_for(
        bank_db.url(),
        shared.clone(),
        test_transport(Principal::Bank),
    )
    .with_staff(tuikuan_auth::StaffConfig::tester());
    config.seed = 2026;
    config.delay_min_secs = 60;
    config.delay_max_secs = 60;
    config.fail_per_mille = 500;
    config.duplicate_callback_per_mille = 1000;
    config.out_of_order_per_mille = 1000;
    config.refund_callback_addr = Some(refund_url.clone());
    config.payout_callback_addr = Some(payout_url.clone());
    let bank = run(bank_l, |l, s| tuikuan_bank::serve(config, l, s));
    let mut c = BankServiceClient::new(AnyCaller::new(Principal::Bank, &bank_url));
    let mut p = PayoutServiceClient::new(AnyCaller::new(Principal::Payout, &payout_url));

    let refund_ids = ["rf-1", "rf-2", "rf-3", "rf-4"];
    for id in refund_ids {
        assert!(
            c.submit_refund(refund("netbank", id, "9.99"))
                .await
                .expect("submit")
                .into_inner()
                .accepted
        );
    }
    let payout_ids = ["po-1", "po-2", "po-3", "po-4"];
    for id in payout_ids {
        p.create_payout(payout_pb::CreatePayoutRequest {
            payout_id: id.into(),
            refund_id: format!("rf-for-{id}"),
            channel: "quick".into(),
            card_no: "4111 1111 1111 1111".into(),
            holder_name: "Han Meimei".into(),
            amount: "50.00".into(),
            currency: "CNY".into(),
        })
        .await
        .expect("create payout");
    }
    let cycle = p
        .run_payout_cycle(payout_pb::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("cycle")
        .into_inner();
    assert_eq!((cycle.sent, cycle.rejected, cycle.errors), (4, 0, 0));

    // Nothing is due yet: the refunds' "processing" callbacks go out. The refund center refuses
    // the first one, so the rest for it wait for the next tick (order kept).
    let t = tick(&mut c).await;
    assert_eq!(
        (t.completed, t.callbacks_sent, t.callbacks_failed),
        (0, 0, 1)
    );
    let t = tick(&mut c).await;
    assert_eq!(
        (t.completed, t.callbacks_sent, t.callbacks_failed),
        (0, 4, 0)
    );

    clock.advance(Duration::seconds(60));
    let t = tick(&mut c).await;
    // 8 completions; each: final, duplicate final, stale processing.
    assert_eq!(
        (t.completed, t.callbacks_sent, t.callbacks_failed),
        (8, 24, 0)
    );
    assert_eq!(
        tick(&mut c).await,
        pb::TickResponse {
            completed: 0,
            callbacks_sent: 0,
            callbacks_failed: 0
        }
    );

    let calls = recorder.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 16);
    let mut statuses = std::collections::BTreeSet::new();
    for id in refund_ids {
        let mine: Vec<(u64, i32)> = calls
            .iter()
            .filter(|c| c.refund_id == id)
            .map(|c| (c.sequence, c.status))
            .collect();
        let tx = c
            .query_refund(pb::QueryRequest { id: id.into() })
            .await
            .expect("query")
            .into_inner();
        let (final_status, reason) = if tx.status == pb::TxStatus::TxSucceeded as i32 {
            (refund_pb::BankStatus::BankSucceeded as i32, String::new())
        } else {
            (refund_pb::BankStatus::BankFailed as i32, tx.reason.clone())
        };
        statuses.insert(final_status);
        let processing = refund_pb::BankStatus::BankProcessing as i32;
        assert_eq!(
            mine,
            vec![
                (1, processing),
                (2, final_status),
                (2, final_status),
                (1, processing)
            ],
            "{id}"
        );
        let finals: Vec<_> = calls
            .iter()
            .filter(|c| c.refund_id == id && c.sequence == 2)
            .collect();
        assert!(finals
            .iter()
            .all(|f| f.bank_ref == tx.bank_ref && f.reason == reason));
    }
    assert_eq!(
        statuses.len(),
        2,
        "with 500 per mille, both outcomes show up for this seed"
    );

    // The payout center applied the final callbacks once and ignored the duplicates and stale ones.
    for id in payout_ids {
        let got = p
            .get_payout(payout_pb::GetPayoutRequest {
                payout_id: id.into(),
            })
            .await
            .expect("get")
            .into_inner();
        let tx = c
            .query_payout(pb::QueryRequest { id: id.into() })
            .await
            .expect("query")
            .into_inner();
        assert_eq!(got.bank_ref, tx.bank_ref);
        if tx.status == pb::TxStatus::TxSucceeded as i32 {
            assert_eq!(got.status, payout_pb::PayoutStatus::Paid as i32, "{id}");
        } else {
            assert_eq!(got.status, payout_pb::PayoutStatus::Failed as i32, "{id}");
            assert_eq!(got.reason, tx.reason);
        }
        assert_eq!(got.card_no_masked, "**** 1111");
    }

    bank.stop().await;
    payout_center.stop().await;
    refund_center.stop().await;
}

both_backends!(callbacks, callbacks_sqlite, callbacks_postgres);

/// Without a receiver configured, callbacks wait (undelivered, not counted as failures).
async fn no_receiver(backend: Backend) {
    let Some(db) = test_db(backend, "bank_norecv") else {
        return;
    };
    let (clock, shared) = clock_at(10);
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.delay_min_secs = 60;
    config.delay_max_secs = 60;
    let (bank, mut c) = start_bank(config).await;
    c.submit_refund(refund("netbank", "rf-1", "1.00"))
        .await
        .expect("submit");
    clock.advance(Duration::seconds(60));
    assert_eq!(
        tick(&mut c).await,
        pb::TickResponse {
            completed: 1,
            callbacks_sent: 0,
            callbacks_failed: 0
        }
    );
    bank.stop().await;
}

both_backends!(no_receiver, no_receiver_sqlite, no_receiver_postgres);

// ------------------------------------------------------------------------------------------------
// File batches (file-upload and offline refunds)
// ------------------------------------------------------------------------------------------------

fn file_row(row_id: &str, amount: &str, card: &str) -> pb::FileRow {
    pb::FileRow {
        row_id: row_id.into(),
        refund_id: format!("rf-{row_id}"),
        amount: amount.into(),
        currency: "CNY".into(),
        card_no: card.into(),
        holder_name: "Han Meimei".into(),
    }
}

fn batch(batch_id: &str, method: &str, rows: Vec<pb::FileRow>) -> pb::SubmitFileBatchRequest {
    pb::SubmitFileBatchRequest {
        channel: "unionpay".into(),
        batch_id: batch_id.into(),
        method: method.into(),
        rows,
    }
}

/// A spreadsheet's rows become FILE transactions: idempotent by batch id, completed a day later
/// (the configured delay), outcomes seeded like refunds, no callbacks, and every row in the
/// clearing file of the day it completed.
async fn file_batches(backend: Backend) {
    let Some(db) = test_db(backend, "bank_files") else {
        return;
    };
    let Some(payout_db) = test_db(backend, "bank_files_payout") else {
        return;
    };
    let (clock, shared) = clock_at(16);
    // Receivers for both kinds of callback are configured: FILE rows must not use either.
    let (refund_l, refund_url) = bind().await;
    let recorder = Recorder::default();
    let rec = recorder.clone();
    let refund = run(refund_l, |l, s| {
        tuikuan_proto::server::serve(l, test_transport(Principal::Refund), rec.routes(), &[], s)
    });
    let (payout_l, payout_url) = bind().await;
    let payout_center = run(payout_l, |l, s| {
        tuikuan_payout::serve(
            tuikuan_payout::Config::new(
                payout_db.url(),
                shared.clone(),
                "http://127.0.0.1:9",
                test_transport(Principal::Payout),
            )
            .with_staff(tuikuan_auth::StaffConfig::tester()),
            l,
            s,
        )
    });
    let mut config = Config::default_for(db.url(), shared.clone(), test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.seed = 7;
    config.fail_per_mille = 400;
    config.sync_reject_per_mille = 1000; // never applies to file rows
    config.delay_min_secs = 24 * 3600;
    config.delay_max_secs = 24 * 3600;
    config.refund_callback_addr = Some(refund_url);
    config.payout_callback_addr = Some(payout_url);
    let (bank, mut c) = start_bank(config).await;

    let mut rows: Vec<pb::FileRow> = (1..=20)
        .map(|i| {
            file_row(
                &format!("fb1-{i:02}"),
                &format!("{i}.50"),
                if i % 2 == 0 { VISA } else { "" },
            )
        })
        .collect();
    rows.push(file_row("fb1-bad-card", "7.00", "4111111111111112"));
    let answer = c
        .submit_file_batch(batch("fb-1", "FILE_UPLOAD", rows.clone()))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!((answer.accepted, answer.rejected), (21, 0));
    // The same batch again: the same answer. Other rows under the same id: a conflict.
    let again = c
        .submit_file_batch(batch("fb-1", "FILE_UPLOAD", rows.clone()))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, answer);
    let mut other = rows.clone();
    other[0].amount = "1.51".into();
    for conflicting in [
        batch("fb-1", "FILE_UPLOAD", other),
        batch("fb-1", "OFFLINE", rows.clone()),
        batch("fb-1", "FILE_UPLOAD", rows[..20].to_vec()),
    ] {
        let err = c.submit_file_batch(conflicting).await.unwrap_err();
        assert_eq!(
            (err.code(), code_of(&err).as_str()),
            (tonic::Code::AlreadyExists, "IDEMPOTENCY_CONFLICT")
        );
    }
    // Another batch reusing a row id with other content: a conflict, and nothing of it stored.
    let err = c
        .submit_file_batch(batch(
            "fb-2",
            "OFFLINE",
            vec![
                file_row("fb2-01", "3.00", ""),
                file_row("fb1-01", "9.99", ""),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    assert!(err.message().contains("fb1-01"), "{}", err.message());
    let offline = c
        .submit_file_batch(batch(
            "fb-2",
            "OFFLINE",
            vec![file_row("fb2-01", "3.00", "")],
        ))
        .await
        .expect("fixed batch")
        .into_inner();
    assert_eq!((offline.accepted, offline.rejected), (1, 0));

    // Bad batches name the problem.
    for (bad, field) in [
        (
            batch("fb-3", "EMAIL", vec![file_row("fb3-01", "1", "")]),
            "method",
        ),
        (batch("fb-3", "OFFLINE", vec![]), "rows"),
        (
            batch(
                "fb-3",
                "OFFLINE",
                vec![file_row("fb3-01", "1", ""), file_row("fb3-01", "2", "")],
            ),
            "rows[1].row_id",
        ),
        (
            batch(
                "fb-3",
                "OFFLINE",
                vec![file_row("fb3-01", "1", ""), file_row("fb3-02", "-1", "")],
            ),
            "rows[1].amount",
        ),
        (
            batch("fb 3", "OFFLINE", vec![file_row("fb3-01", "1", "")]),
            "batch_id",
        ),
    ] {
        let err = c.submit_file_batch(bad).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }

    // Not due before the next day; no callbacks at any time.
    clock.advance(Duration::hours(23));
    let t = tick(&mut c).await;
    assert_eq!((t.completed, t.callbacks_sent), (0, 0));
    clock.advance(Duration::hours(1));
    let t = tick(&mut c).await;
    assert_eq!(
        (t.completed, t.callbacks_sent, t.callbacks_failed),
        (22, 0, 0)
    );
    assert!(recorder.calls.lock().expect("lock").is_empty());

    // The next day's clearing file lists every row as FILE, with its outcome.
    let f = clearing(&mut c, "unionpay", "2026-11-27").await;
    let file_rows = parse_clearing_csv(&f.content).expect("parses");
    assert_eq!(file_rows.len(), 22);
    assert!(file_rows.iter().all(|r| r.record_type == RecordType::File));
    let text = String::from_utf8(f.content.clone()).expect("utf-8");
    assert!(text.contains("\nFILE,fb1-01,"), "{text}");
    let bad_card = file_rows
        .iter()
        .find(|r| r.id == "fb1-bad-card")
        .expect("row");
    assert_eq!(
        (bad_card.status, bad_card.reason.as_str()),
        (
            ClearingStatus::Failed,
            "INVALID_CARD: card number is not valid"
        )
    );
    let failed: Vec<_> = file_rows
        .iter()
        .filter(|r| r.status == ClearingStatus::Failed && r.id != "fb1-bad-card")
        .collect();
    assert!(
        !failed.is_empty() && failed.len() < 21,
        "seeded: some fail, some succeed"
    );
    for r in &failed {
        assert!(
            r.reason == "CARD_CANCELLED: card cancelled"
                || r.reason == "ACCOUNT_CLOSED: account closed",
            "{}",
            r.reason
        );
    }
    let row = file_rows.iter().find(|r| r.id == "fb1-03").expect("row");
    assert_eq!(
        (row.amount.amount_string(), row.channel.as_str()),
        ("3.50".to_string(), "unionpay")
    );
    assert!(row.bank_ref.starts_with("BK"));
    // Nothing on the submission day.
    let day1 = clearing(&mut c, "unionpay", "2026-11-26").await;
    assert!(parse_clearing_csv(&day1.content)
        .expect("parses")
        .is_empty());
    // A repeat after completion still answers as the first time.
    let late = c
        .submit_file_batch(batch("fb-1", "FILE_UPLOAD", rows))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(late, answer);
    bank.stop().await;
    payout_center.stop().await;
    refund.stop().await;
}

both_backends!(file_batches, file_batches_sqlite, file_batches_postgres);

// ------------------------------------------------------------------------------------------------
// The bank's books for auditors
// ------------------------------------------------------------------------------------------------

async fn list_all(
    c: &mut BankServiceClient<AnyCaller>,
    kind: pb::TxKind,
    page: u32,
) -> Vec<pb::BankTransaction> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let txs = c
            .list_transactions(pb::ListTransactionsRequest {
                limit: page,
                after: after.clone(),
                kind: kind as i32,
            })
            .await
            .expect("list transactions")
            .into_inner()
            .transactions;
        let Some(last) = txs.last() else { break };
        after = last.id.clone();
        out.extend(txs);
    }
    out
}

/// `ListTransactions` pages through every transaction in id order, by kind, each naming the
/// refund it moves money for (refunds by their id, payouts by the reference the payout center
/// gave, file rows by their row's refund); a payout's reference is part of its content.
async fn transactions_name_their_refund(backend: Backend) {
    let Some(db) = test_db(backend, "bank_ledger") else {
        return;
    };
    let (clock, shared) = clock_at(10);
    let mut config = Config::default_for(db.url(), shared, test_transport(Principal::Bank))
        .with_staff(tuikuan_auth::StaffConfig::tester());
    config.delay_min_secs = 60;
    config.delay_max_secs = 60;
    config.fail_per_mille = 0;
    config.return_per_mille = 1000;
    config.return_delay_secs = 60;
    let (bank, mut c) = start_bank(config).await;

    for i in 0..3 {
        c.submit_refund(refund("netbank", &format!("rf-{i}"), "10.00"))
            .await
            .expect("refund");
    }
    let mut p = payout("quick", "po_rf-9_1", VISA, "20.00");
    p.refund_id = "rf-9".into();
    c.submit_payout(p.clone()).await.expect("payout");
    c.submit_payout(p.clone())
        .await
        .expect("the same payout again");
    let mut other = p.clone();
    other.refund_id = "rf-8".into();
    let err = c.submit_payout(other).await.unwrap_err();
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    let mut bad = payout("quick", "po-bad", VISA, "20.00");
    bad.refund_id = "not an id".into();
    let err = c.submit_payout(bad).await.unwrap_err();
    assert_eq!(code_of(&err), "MALFORMED_ID", "{err:?}");
    assert!(err.message().contains("refund_id"), "{}", err.message());
    // A payout without a reference is still taken.
    c.submit_payout(payout("quick", "po-anon", VISA, "5.00"))
        .await
        .expect("payout without a reference");
    c.submit_file_batch(batch(
        "fb-9",
        "OFFLINE",
        vec![
            file_row("fb9-01", "3.00", VISA),
            file_row("fb9-02", "4.00", VISA),
        ],
    ))
    .await
    .expect("batch");

    let all = list_all(&mut c, pb::TxKind::Unspecified, 2).await;
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "id order");
    assert_eq!(all.len(), 7, "{ids:?}");
    let by_id = |id: &str| all.iter().find(|t| t.id == id).expect(id).clone();
    let r = by_id("rf-1");
    assert_eq!(
        (r.kind, r.refund_id.as_str()),
        (pb::TxKind::Refund as i32, "rf-1")
    );
    let po = by_id("po_rf-9_1");
    assert_eq!(
        (po.kind, po.refund_id.as_str()),
        (pb::TxKind::Payout as i32, "rf-9")
    );
    assert_eq!(by_id("po-anon").refund_id, "");
    let row = by_id("fb9-02");
    assert_eq!(
        (row.kind, row.refund_id.as_str(), row.batch_id.as_str()),
        (pb::TxKind::File as i32, "rf-fb9-02", "fb-9")
    );
    assert_eq!(list_all(&mut c, pb::TxKind::Refund, 1000).await.len(), 3);
    assert_eq!(list_all(&mut c, pb::TxKind::Payout, 1).await.len(), 2);
    assert_eq!(list_all(&mut c, pb::TxKind::File, 0).await.len(), 2);

    // Paid, then returned: the listing shows it, with when.
    clock.advance(Duration::seconds(61));
    tick(&mut c).await;
    assert_eq!(
        by_id_now(&mut c, "po_rf-9_1").await.status,
        pb::TxStatus::TxSucceeded as i32
    );
    clock.advance(Duration::seconds(61));
    tick(&mut c).await;
    let returned = by_id_now(&mut c, "po_rf-9_1").await;
    assert_eq!(returned.status, pb::TxStatus::TxReturned as i32);
    assert!(
        returned.returned_at_ms > returned.completed_at_ms,
        "{returned:?}"
    );
    assert_eq!(returned.refund_id, "rf-9");

    let err = c
        .list_transactions(pb::ListTransactionsRequest {
            limit: 10,
            after: "bad id!".into(),
            kind: 0,
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("after"), "{}", err.message());
    let err = c
        .list_transactions(pb::ListTransactionsRequest {
            limit: 10,
            after: String::new(),
            kind: 42,
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("kind"), "{}", err.message());
    bank.stop().await;
}

async fn by_id_now(c: &mut BankServiceClient<AnyCaller>, id: &str) -> pb::BankTransaction {
    list_all(c, pb::TxKind::Unspecified, 1000)
        .await
        .into_iter()
        .find(|t| t.id == id)
        .expect("transaction listed")
}

both_backends!(
    transactions_name_their_refund,
    transactions_name_their_refund_sqlite,
    transactions_name_their_refund_postgres
);
