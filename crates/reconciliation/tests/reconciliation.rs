//! The reconciliation center end to end, on SQLite and on PostgreSQL.
//!
//! The real service runs in-process on port 0. Its peers are small real gRPC servers written here,
//! at the process edge: a bank that serves a clearing file built by the test (only
//! `GetClearingFile`), and a refund center over an in-memory map (`ListSubmitted`, `GetRefund`,
//! `ApplyReconciliation`; the first final status wins, a different one is
//! `INVALID_STATE_TRANSITION`, and it can be told to answer `UNAVAILABLE` for a number of calls).
//! The whole real chain is exercised by the workspace's integration tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tuikuan_kernel::{Clock, Error, ErrorCode, ManualClock, Money, SharedClock};
use tuikuan_proto::bank::v1 as bank_pb;
use tuikuan_proto::bank::v1::bank_service_server::{BankService, BankServiceServer};
use tuikuan_proto::reconciliation::v1 as pb;
use tuikuan_proto::reconciliation::v1::reconciliation_service_client::ReconciliationServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_server::{RefundService, RefundServiceServer};
use tuikuan_proto::server::ServiceHandle;
use tuikuan_proto::status::{from_status, to_status};
use tuikuan_reconciliation::{domain, serve, store, Config};

const CHANNEL: &str = "netbank";
const HEADER: &str = "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fake bank: serves clearing files
// ---------------------------------------------------------------------------------------------

/// (channel, date) → (content, sha256 as announced).
type Files = HashMap<(String, String), (Vec<u8>, String)>;

#[derive(Clone, Default)]
struct FakeBank {
    files: Arc<Mutex<Files>>,
    fetches: Arc<Mutex<u32>>,
}

impl FakeBank {
    fn put(&self, channel: &str, date: &str, content: Vec<u8>) {
        let sha = hex::encode(Sha256::digest(&content));
        self.put_with_sha(channel, date, content, sha);
    }

    fn put_with_sha(&self, channel: &str, date: &str, content: Vec<u8>, sha: String) {
        self.files
            .lock()
            .unwrap()
            .insert((channel.to_string(), date.to_string()), (content, sha));
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().unwrap()
    }
}

/// One row of a `tuikuan-csv-v1` fixture: (record_type, id, amount, status, reason).
type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn csv(rows: &[Row]) -> Vec<u8> {
    let mut out = HEADER.to_string();
    for (i, (kind, id, amount, status, reason)) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{kind},{id},BK{i:04},{CHANNEL},{amount},CNY,{status},2026-11-25T15:00:00+08:00,{reason}\n"
        ));
    }
    out.into_bytes()
}

#[tonic::async_trait]
impl BankService for FakeBank {
    async fn submit_file_batch(
        &self,
        _: Request<bank_pb::SubmitFileBatchRequest>,
    ) -> Result<Response<bank_pb::SubmitFileBatchResponse>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

    async fn submit_refund(
        &self,
        _: Request<bank_pb::SubmitRefundRequest>,
    ) -> Result<Response<bank_pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("fake bank"))
    }
    async fn query_refund(
        &self,
        _: Request<bank_pb::QueryRequest>,
    ) -> Result<Response<bank_pb::BankTransaction>, Status> {
        Err(Status::unimplemented("fake bank"))
    }
    async fn submit_payout(
        &self,
        _: Request<bank_pb::SubmitPayoutRequest>,
    ) -> Result<Response<bank_pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("fake bank"))
    }
    async fn query_payout(
        &self,
        _: Request<bank_pb::QueryRequest>,
    ) -> Result<Response<bank_pb::BankTransaction>, Status> {
        Err(Status::unimplemented("fake bank"))
    }
    async fn tick(
        &self,
        _: Request<bank_pb::TickRequest>,
    ) -> Result<Response<bank_pb::TickResponse>, Status> {
        Err(Status::unimplemented("fake bank"))
    }
    async fn get_clearing_file(
        &self,
        request: Request<bank_pb::GetClearingFileRequest>,
    ) -> Result<Response<bank_pb::ClearingFile>, Status> {
        let req = request.into_inner();
        *self.fetches.lock().unwrap() += 1;
        let files = self.files.lock().unwrap();
        let Some((content, sha)) = files.get(&(req.channel.clone(), req.date.clone())) else {
            return Err(to_status(&Error::new(
                ErrorCode::NotFound,
                format!("no clearing file for {} {}", req.channel, req.date),
            )));
        };
        Ok(Response::new(bank_pb::ClearingFile {
            channel: req.channel,
            date: req.date,
            format: "tuikuan-csv-v1".into(),
            content: content.clone(),
            sha256: sha.clone(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Fake refund center: an in-memory map of orders
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FakeOrder {
    channel: String,
    amount: String,
    submitted_on: NaiveDate,
    status: refund_pb::RefundStatus,
    reason: String,
    final_source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ApplyCall {
    refund_id: String,
    status: refund_pb::RefundStatus,
    reason: String,
    source: String,
}

#[derive(Default)]
struct RefundState {
    orders: BTreeMap<String, FakeOrder>,
    /// Every ApplyReconciliation that reached the map (not the UNAVAILABLE ones).
    applies: Vec<ApplyCall>,
    /// Refunds that changed status because of an ApplyReconciliation (the effective write-backs).
    finalized: Vec<String>,
    /// ApplyReconciliation answers UNAVAILABLE while this is above zero.
    unavailable_applies: u32,
    /// Refunds someone else finalises (with this status) right after they were listed.
    finalize_after_listing: HashMap<String, refund_pb::RefundStatus>,
    list_calls: u32,
}

#[derive(Clone)]
struct FakeRefund {
    state: Arc<Mutex<RefundState>>,
    applied_tx: tokio::sync::mpsc::UnboundedSender<String>,
}

impl FakeRefund {
    fn add(&self, id: &str, amount: &str, submitted_on: &str) {
        self.add_with_status(
            id,
            amount,
            submitted_on,
            refund_pb::RefundStatus::Processing,
        );
    }

    fn add_with_status(
        &self,
        id: &str,
        amount: &str,
        submitted_on: &str,
        status: refund_pb::RefundStatus,
    ) {
        self.state.lock().unwrap().orders.insert(
            id.to_string(),
            FakeOrder {
                channel: CHANNEL.into(),
                amount: amount.into(),
                submitted_on: date(submitted_on),
                status,
                reason: String::new(),
                final_source: if status == refund_pb::RefundStatus::Processing {
                    String::new()
                } else {
                    "rcn_earlier".into()
                },
            },
        );
    }

    fn status(&self, id: &str) -> refund_pb::RefundStatus {
        self.state.lock().unwrap().orders[id].status
    }

    fn order(&self, id: &str) -> FakeOrder {
        self.state.lock().unwrap().orders[id].clone()
    }

    fn applies(&self) -> Vec<ApplyCall> {
        self.state.lock().unwrap().applies.clone()
    }

    fn finalized(&self) -> Vec<String> {
        self.state.lock().unwrap().finalized.clone()
    }

    fn list_calls(&self) -> u32 {
        self.state.lock().unwrap().list_calls
    }

    fn wire(id: &str, o: &FakeOrder) -> refund_pb::RefundOrder {
        refund_pb::RefundOrder {
            refund_id: id.to_string(),
            channel: o.channel.clone(),
            amount: o.amount.clone(),
            currency: "CNY".into(),
            method: refund_pb::RefundMethod::Interface as i32,
            submit_status: refund_pb::SubmitStatus::Submitted as i32,
            refund_status: o.status as i32,
            reason: o.reason.clone(),
            final_source: o.final_source.clone(),
            ..Default::default()
        }
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake refund center"))
}

#[tonic::async_trait]
impl RefundService for FakeRefund {
    async fn run_payout_dispatch(
        &self,
        _: Request<refund_pb::RunInterfaceCycleRequest>,
    ) -> Result<Response<refund_pb::CycleReport>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

    async fn payout_update(
        &self,
        _: Request<refund_pb::PayoutUpdateRequest>,
    ) -> Result<Response<refund_pb::PayoutUpdateResponse>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

    async fn create_refund(
        &self,
        _: Request<refund_pb::CreateRefundRequest>,
    ) -> Result<Response<refund_pb::RefundOrder>, Status> {
        unimplemented()
    }
    async fn get_refund(
        &self,
        request: Request<refund_pb::GetRefundRequest>,
    ) -> Result<Response<refund_pb::RefundOrder>, Status> {
        let id = request.into_inner().refund_id;
        let state = self.state.lock().unwrap();
        match state.orders.get(&id) {
            Some(o) => Ok(Response::new(FakeRefund::wire(&id, o))),
            None => Err(to_status(&Error::new(
                ErrorCode::RefundNotFound,
                format!("refund {id} not found"),
            ))),
        }
    }
    async fn list_refunds(
        &self,
        _: Request<refund_pb::ListRefundsRequest>,
    ) -> Result<Response<refund_pb::ListRefundsResponse>, Status> {
        unimplemented()
    }
    async fn upsert_channel(
        &self,
        _: Request<refund_pb::Channel>,
    ) -> Result<Response<refund_pb::Channel>, Status> {
        unimplemented()
    }
    async fn list_channels(
        &self,
        _: Request<refund_pb::ListChannelsRequest>,
    ) -> Result<Response<refund_pb::ListChannelsResponse>, Status> {
        unimplemented()
    }
    async fn run_interface_cycle(
        &self,
        _: Request<refund_pb::RunInterfaceCycleRequest>,
    ) -> Result<Response<refund_pb::CycleReport>, Status> {
        unimplemented()
    }
    async fn bank_callback(
        &self,
        _: Request<refund_pb::BankCallbackRequest>,
    ) -> Result<Response<refund_pb::BankCallbackResponse>, Status> {
        unimplemented()
    }
    async fn list_submitted(
        &self,
        request: Request<refund_pb::ListSubmittedRequest>,
    ) -> Result<Response<refund_pb::ListSubmittedResponse>, Status> {
        let req = request.into_inner();
        let until = NaiveDate::parse_from_str(&req.date, "%Y-%m-%d")
            .map_err(|_| Status::invalid_argument("date"))?;
        let limit = if req.limit == 0 { 100 } else { req.limit } as usize;
        let mut state = self.state.lock().unwrap();
        state.list_calls += 1;
        let refunds: Vec<refund_pb::RefundOrder> = state
            .orders
            .iter()
            .filter(|(id, o)| {
                o.channel == req.channel
                    && o.status == refund_pb::RefundStatus::Processing
                    && o.submitted_on <= until
                    && id.as_str() > req.after.as_str()
            })
            .take(limit)
            .map(|(id, o)| FakeRefund::wire(id, o))
            .collect();
        let racing: Vec<(String, refund_pb::RefundStatus)> = state
            .finalize_after_listing
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (id, status) in racing {
            if refunds.iter().any(|r| r.refund_id == id) {
                if let Some(o) = state.orders.get_mut(&id) {
                    o.status = status;
                    o.final_source = "manual".into();
                }
            }
        }
        Ok(Response::new(refund_pb::ListSubmittedResponse { refunds }))
    }
    async fn apply_reconciliation(
        &self,
        request: Request<refund_pb::ApplyReconciliationRequest>,
    ) -> Result<Response<refund_pb::RefundOrder>, Status> {
        let req = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if state.unavailable_applies > 0 {
            state.unavailable_applies -= 1;
            return Err(Status::unavailable("refund center is restarting"));
        }
        let status = refund_pb::RefundStatus::try_from(req.status)
            .map_err(|_| Status::invalid_argument("status"))?;
        if !matches!(
            status,
            refund_pb::RefundStatus::Succeeded | refund_pb::RefundStatus::Failed
        ) {
            return Err(to_status(&Error::field(
                "status",
                "must be SUCCEEDED or FAILED",
            )));
        }
        state.applies.push(ApplyCall {
            refund_id: req.refund_id.clone(),
            status,
            reason: req.reason.clone(),
            source: req.source.clone(),
        });
        let Some(order) = state.orders.get_mut(&req.refund_id) else {
            return Err(to_status(&Error::new(
                ErrorCode::RefundNotFound,
                format!("refund {} not found", req.refund_id),
            )));
        };
        let changed = if order.status == refund_pb::RefundStatus::Processing {
            order.status = status;
            order.reason = req.reason.clone();
            order.final_source = req.source.clone();
            true
        } else if order.status == status {
            false
        } else {
            return Err(to_status(&Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "refund {} is already final as {}",
                    req.refund_id,
                    order.status.as_str_name()
                ),
            )));
        };
        let wire = FakeRefund::wire(&req.refund_id, order);
        if changed {
            state.finalized.push(req.refund_id.clone());
        }
        let _ = self.applied_tx.send(req.refund_id);
        Ok(Response::new(wire))
    }
    async fn run_outbox(
        &self,
        _: Request<refund_pb::RunOutboxRequest>,
    ) -> Result<Response<refund_pb::OutboxReport>, Status> {
        unimplemented()
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Harness {
    clock: ManualClock,
    bank: FakeBank,
    refund: FakeRefund,
    applied_rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    client: ReconciliationServiceClient<Channel>,
    handles: Vec<ServiceHandle>,
    url: String,
    bank_url: String,
    refund_url: String,
}

impl Harness {
    /// The fakes and the reconciliation center on `db_url`, at 10:00 on 2026-11-26 (business time).
    async fn start(db_url: &str, job_interval: Option<Duration>) -> Harness {
        let clock = ManualClock::at_business(date("2026-11-26"), 10);
        let bank = FakeBank::default();
        let (applied_tx, applied_rx) = tokio::sync::mpsc::unbounded_channel();
        let refund = FakeRefund {
            state: Arc::new(Mutex::new(RefundState::default())),
            applied_tx,
        };
        let bank_svc = bank.clone();
        let bank_handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
            tuikuan_proto::server::serve(
                listener,
                tonic::service::Routes::new(BankServiceServer::new(bank_svc)),
                &[],
                shutdown,
            )
        })
        .await
        .unwrap();
        let refund_svc = refund.clone();
        let refund_handle =
            tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
                tuikuan_proto::server::serve(
                    listener,
                    tonic::service::Routes::new(RefundServiceServer::new(refund_svc)),
                    &[],
                    shutdown,
                )
            })
            .await
            .unwrap();
        let shared: SharedClock = Arc::new(clock.clone());
        let config = Config {
            database_url: db_url.to_string(),
            clock: shared,
            bank_addr: bank_handle.url(),
            refund_addr: refund_handle.url(),
            job_interval,
            channels: vec![CHANNEL.to_string()],
        };
        let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
            serve(config, listener, shutdown)
        })
        .await
        .unwrap();
        let client = ReconciliationServiceClient::new(
            tuikuan_proto::client::channel(&handle.url()).unwrap(),
        );
        Harness {
            clock,
            bank,
            refund,
            applied_rx,
            client,
            url: handle.url(),
            bank_url: bank_handle.url(),
            refund_url: refund_handle.url(),
            handles: vec![handle, bank_handle, refund_handle],
        }
    }

    async fn run(&self, date: &str) -> Result<pb::ReconciliationRun, Status> {
        self.client
            .clone()
            .run_reconciliation(pb::RunReconciliationRequest {
                channel: CHANNEL.into(),
                date: date.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn list(&self) -> Vec<pb::ReconciliationRun> {
        self.client
            .clone()
            .list_runs(pb::ListRunsRequest {
                channel: CHANNEL.into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    async fn stop(self) {
        assert!(!self.url.is_empty() && !self.bank_url.is_empty() && !self.refund_url.is_empty());
        for h in self.handles {
            h.stop().await.unwrap();
        }
    }
}

fn item<'a>(run: &'a pb::ReconciliationRun, refund_id: &str, outcome: pb::Outcome) -> &'a pb::Item {
    run.items
        .iter()
        .find(|i| i.refund_id == refund_id && i.outcome == outcome as i32)
        .unwrap_or_else(|| panic!("no {outcome:?} item for {refund_id} in {:#?}", run.items))
}

fn count(run: &pb::ReconciliationRun, outcome: pb::Outcome) -> (u32, String) {
    run.counts
        .iter()
        .find(|c| c.outcome == outcome as i32)
        .map(|c| (c.count, c.amount.clone()))
        .unwrap_or((0, String::new()))
}

fn tk_code(status: &Status) -> ErrorCode {
    from_status(status).code
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Every outcome, through write-back; amounts to the cent; a re-run writes nothing new.
async fn every_outcome_through_write_back(db_url: &str) {
    let h = Harness::start(db_url, None).await;
    let r = &h.refund;
    r.add("rf_ok", "100.00", "2026-11-25");
    r.add("rf_fail", "20.05", "2026-11-24");
    r.add("rf_mis", "10.00", "2026-11-25");
    r.add("rf_dup", "5.00", "2026-11-25");
    r.add("rf_plat", "7.77", "2026-11-25");
    r.add("rf_race", "8.00", "2026-11-25");
    r.add("rf_later", "1.00", "2026-11-26"); // submitted after the business date: not listed
    r.add_with_status(
        "rf_final",
        "3.00",
        "2026-11-20",
        refund_pb::RefundStatus::Succeeded,
    );
    r.state
        .lock()
        .unwrap()
        .finalize_after_listing
        .insert("rf_race".into(), refund_pb::RefundStatus::Failed);
    let content = csv(&[
        ("REFUND", "rf_ok", "100.00", "SUCCESS", ""),
        ("REFUND", "rf_fail", "20.05", "FAILED", "card cancelled"),
        ("PAYOUT", "po_1", "50.00", "SUCCESS", ""),
        ("REFUND", "rf_mis", "9.99", "SUCCESS", ""),
        ("REFUND", "rf_dup", "5.00", "SUCCESS", ""),
        ("REFUND", "rf_bank", "4.44", "SUCCESS", ""),
        ("REFUND", "rf_dup", "5.00", "SUCCESS", ""),
        ("REFUND", "rf_final", "3.00", "SUCCESS", ""),
        ("REFUND", "rf_race", "8.00", "SUCCESS", ""),
    ]);
    let sha = hex::encode(Sha256::digest(&content));
    h.bank.put(CHANNEL, "2026-11-25", content);

    let run = h.run("2026-11-25").await.unwrap();
    assert!(!run.replayed);
    assert!(run.run_id.starts_with("rcn_"), "{}", run.run_id);
    assert_eq!(run.channel, CHANNEL);
    assert_eq!(run.date, "2026-11-25");
    assert_eq!(run.file_sha256, sha);
    assert_eq!(run.file_rows, 9);
    assert_eq!(run.created_at_ms, h.clock.now_ms());
    assert_eq!(run.pending_write_backs, 0);

    // Deterministic order: by refund id, then file line.
    let order: Vec<(&str, i32)> = run
        .items
        .iter()
        .map(|i| (i.refund_id.as_str(), i.outcome))
        .collect();
    use pb::Outcome as O;
    assert_eq!(
        order,
        vec![
            ("rf_bank", O::BankOnly as i32),
            ("rf_dup", O::Matched as i32),
            ("rf_dup", O::Duplicate as i32),
            ("rf_fail", O::BankFailed as i32),
            ("rf_final", O::Matched as i32),
            ("rf_mis", O::AmountMismatch as i32),
            ("rf_ok", O::Matched as i32),
            ("rf_plat", O::PlatformOnly as i32),
            ("rf_race", O::Matched as i32),
        ]
    );

    let ok = item(&run, "rf_ok", O::Matched);
    assert_eq!(
        (ok.platform_amount.as_str(), ok.bank_amount.as_str()),
        ("100.00", "100.00")
    );
    assert_eq!(ok.bank_ref, "BK0000");
    assert!(ok.written_back);

    let fail = item(&run, "rf_fail", O::BankFailed);
    assert_eq!(fail.bank_amount, "20.05");
    assert!(fail.written_back);
    assert!(fail.detail.contains("card cancelled"));

    let mis = item(&run, "rf_mis", O::AmountMismatch);
    assert_eq!(
        (mis.platform_amount.as_str(), mis.bank_amount.as_str()),
        ("10.00", "9.99")
    );
    assert!(!mis.written_back);
    assert!(
        mis.detail.contains("10.00") && mis.detail.contains("9.99"),
        "{}",
        mis.detail
    );

    let dup = item(&run, "rf_dup", O::Duplicate);
    assert!(!dup.written_back);
    assert!(dup.detail.contains("duplicate of line 6"), "{}", dup.detail);
    assert!(item(&run, "rf_dup", O::Matched).written_back);

    let bank_only = item(&run, "rf_bank", O::BankOnly);
    assert_eq!(
        (
            bank_only.platform_amount.as_str(),
            bank_only.bank_amount.as_str()
        ),
        ("", "4.44")
    );
    assert!(!bank_only.written_back);

    let plat = item(&run, "rf_plat", O::PlatformOnly);
    assert_eq!(
        (
            plat.platform_amount.as_str(),
            plat.bank_amount.as_str(),
            plat.bank_ref.as_str()
        ),
        ("7.77", "", "")
    );
    assert!(!plat.written_back);

    let final_ = item(&run, "rf_final", O::Matched);
    assert!(!final_.written_back);
    assert!(
        final_.detail.starts_with("already final"),
        "{}",
        final_.detail
    );
    assert_eq!(final_.platform_amount, "3.00");

    let race = item(&run, "rf_race", O::Matched);
    assert!(!race.written_back);
    assert!(race.detail.contains("discrepancy"), "{}", race.detail);
    assert!(
        race.detail.contains("already final as FAILED"),
        "{}",
        race.detail
    );

    // Counts and amounts per outcome, to the cent.
    assert_eq!(count(&run, O::Matched), (4, "116.00".into()));
    assert_eq!(count(&run, O::BankFailed), (1, "20.05".into()));
    assert_eq!(count(&run, O::AmountMismatch), (1, "10.00".into()));
    assert_eq!(count(&run, O::Duplicate), (1, "5.00".into()));
    assert_eq!(count(&run, O::BankOnly), (1, "4.44".into()));
    assert_eq!(count(&run, O::PlatformOnly), (1, "7.77".into()));
    assert_eq!(run.counts.len(), 6);

    // The refund center saw exactly the write-backs it should, with the run as their source.
    let applies = h.refund.applies();
    let mut seen: Vec<(&str, refund_pb::RefundStatus, &str)> = applies
        .iter()
        .map(|a| (a.refund_id.as_str(), a.status, a.reason.as_str()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("rf_dup", refund_pb::RefundStatus::Succeeded, ""),
            ("rf_fail", refund_pb::RefundStatus::Failed, "card cancelled"),
            ("rf_ok", refund_pb::RefundStatus::Succeeded, ""),
            ("rf_race", refund_pb::RefundStatus::Succeeded, ""),
        ]
    );
    assert!(applies.iter().all(|a| a.source == run.run_id));
    assert_eq!(h.refund.status("rf_ok"), refund_pb::RefundStatus::Succeeded);
    assert_eq!(h.refund.status("rf_fail"), refund_pb::RefundStatus::Failed);
    assert_eq!(h.refund.order("rf_fail").reason, "card cancelled");
    assert_eq!(h.refund.order("rf_ok").final_source, run.run_id);
    assert_eq!(
        h.refund.status("rf_mis"),
        refund_pb::RefundStatus::Processing
    );
    assert_eq!(
        h.refund.status("rf_plat"),
        refund_pb::RefundStatus::Processing
    );
    assert_eq!(
        h.refund.status("rf_later"),
        refund_pb::RefundStatus::Processing
    );
    assert_eq!(h.refund.status("rf_race"), refund_pb::RefundStatus::Failed);
    assert_eq!(h.refund.order("rf_final").final_source, "rcn_earlier");

    // Re-running the same file returns the first run and writes nothing new.
    let lists_before = h.refund.list_calls();
    let again = h.run("2026-11-25").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, run.run_id);
    assert_eq!(again.items, run.items);
    assert_eq!(again.counts, run.counts);
    assert_eq!(h.refund.applies().len(), 4);
    assert_eq!(
        h.refund.list_calls(),
        lists_before,
        "a replay matches nothing again"
    );
    let mut finalized = h.refund.finalized();
    finalized.sort();
    assert_eq!(finalized, vec!["rf_dup", "rf_fail", "rf_ok"]);

    // GetRun and ListRuns.
    let got = h
        .client
        .clone()
        .get_run(pb::GetRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.replayed);
    assert_eq!(got.items, run.items);
    let listed = h.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, run.run_id);
    assert_eq!(listed[0].counts, run.counts);
    assert!(
        listed[0].items.is_empty(),
        "ListRuns leaves items to GetRun"
    );
    let e = h
        .client
        .clone()
        .get_run(pb::GetRunRequest {
            run_id: "rcn_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(tk_code(&e), ErrorCode::NotFound);
    h.stop().await;
}

/// A malformed file is rejected whole, naming line and field; nothing is stored or written.
async fn malformed_file_is_rejected(db_url: &str) {
    let h = Harness::start(db_url, None).await;
    h.refund.add("rf_1", "1.00", "2026-11-25");
    h.refund.add("rf_2", "2.00", "2026-11-25");
    let mut content = csv(&[("REFUND", "rf_1", "1.00", "SUCCESS", "")]);
    content.extend_from_slice(
        format!("REFUND,rf_2,BK9,{CHANNEL},2.001,CNY,SUCCESS,2026-11-25T15:00:00+08:00,\n")
            .as_bytes(),
    );
    h.bank.put(CHANNEL, "2026-11-25", content);
    let e = h.run("2026-11-25").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(tk_code(&e), ErrorCode::InvalidArgument);
    assert!(
        e.message().starts_with("clearing file line 3: amount: "),
        "{}",
        e.message()
    );
    assert!(h.refund.applies().is_empty());
    assert_eq!(h.refund.list_calls(), 0);
    assert!(h.list().await.is_empty());
    assert_eq!(h.refund.status("rf_1"), refund_pb::RefundStatus::Processing);

    // A row of another channel.
    let content =
        format!("{HEADER}REFUND,rf_1,BK1,quickpay,1.00,CNY,SUCCESS,2026-11-25T15:00:00+08:00,\n");
    h.bank.put(CHANNEL, "2026-11-25", content.into_bytes());
    let e = h.run("2026-11-25").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("clearing file line 2: channel: "),
        "{}",
        e.message()
    );

    // A checksum that does not match the content.
    h.bank.put_with_sha(
        CHANNEL,
        "2026-11-25",
        csv(&[("REFUND", "rf_1", "1.00", "SUCCESS", "")]),
        "00".repeat(32),
    );
    let e = h.run("2026-11-25").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("sha256"), "{}", e.message());

    // Bad requests never reach the bank.
    let fetches = h.bank.fetches();
    for (channel, d, field) in [
        ("", "2026-11-25", "channel"),
        ("net bank", "2026-11-25", "channel"),
        (CHANNEL, "", "date"),
        (CHANNEL, "2026-13-01", "date"),
        (CHANNEL, "25/11/2026", "date"),
        (CHANNEL, "2026-11-27", "date"),
    ] {
        let e = h
            .client
            .clone()
            .run_reconciliation(pb::RunReconciliationRequest {
                channel: channel.into(),
                date: d.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{channel:?} {d:?}: {e:?}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(h.bank.fetches(), fetches);

    // No file at the bank: its NOT_FOUND comes back.
    let e = h.run("2026-11-24").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    assert!(h.list().await.is_empty());
    assert!(h.refund.applies().is_empty());
    h.stop().await;
}

/// Write-backs that hit an unavailable refund center stay pending and a re-run of the same file
/// finishes them, each refund applied exactly once.
async fn pending_write_backs_are_retried(db_url: &str) {
    let h = Harness::start(db_url, None).await;
    h.refund.add("rf_a", "0.01", "2026-11-25");
    h.refund.add("rf_b", "999999.99", "2026-11-25");
    h.refund.add("rf_c", "12.34", "2026-11-25");
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(&[
            ("REFUND", "rf_a", "0.01", "SUCCESS", ""),
            ("REFUND", "rf_b", "999999.99", "SUCCESS", ""),
            ("REFUND", "rf_c", "12.34", "FAILED", "account closed"),
        ]),
    );
    h.refund.state.lock().unwrap().unavailable_applies = 1;
    let run = h.run("2026-11-25").await.unwrap();
    assert!(!run.replayed);
    assert_eq!(run.pending_write_backs, 3);
    assert!(run.items.iter().all(|i| !i.written_back));
    assert!(h.refund.applies().is_empty());
    assert_eq!(count(&run, pb::Outcome::Matched), (2, "1000000.00".into()));
    assert_eq!(count(&run, pb::Outcome::BankFailed), (1, "12.34".into()));

    // Still down for one more call: the second pass stops again after it.
    h.refund.state.lock().unwrap().unavailable_applies = 1;
    let again = h.run("2026-11-25").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.pending_write_backs, 3);

    // Back: the next run of the same file finishes them.
    let done = h.run("2026-11-25").await.unwrap();
    assert!(done.replayed);
    assert_eq!(done.run_id, run.run_id);
    assert_eq!(done.pending_write_backs, 0);
    assert!(done.items.iter().all(|i| i.written_back));
    let again = h.run("2026-11-25").await.unwrap();
    assert_eq!(again.pending_write_backs, 0);

    let mut applied: Vec<String> = h
        .refund
        .applies()
        .into_iter()
        .map(|a| a.refund_id)
        .collect();
    applied.sort();
    assert_eq!(
        applied,
        vec!["rf_a", "rf_b", "rf_c"],
        "each applied exactly once"
    );
    assert_eq!(h.refund.status("rf_c"), refund_pb::RefundStatus::Failed);
    assert_eq!(h.refund.order("rf_c").reason, "account closed");
    assert_eq!(h.list().await.len(), 1);
    h.stop().await;
}

/// A superseding file for the same date: refunds finalised by the first run are "already final",
/// new rows are matched, nothing is written twice.
async fn superseding_file_does_not_rewrite(db_url: &str) {
    let h = Harness::start(db_url, None).await;
    h.refund.add("rf_a", "5.00", "2026-11-25");
    h.refund.add("rf_b", "6.00", "2026-11-25");
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(&[("REFUND", "rf_a", "5.00", "SUCCESS", "")]),
    );
    let first = h.run("2026-11-25").await.unwrap();
    assert_eq!(count(&first, pb::Outcome::Matched), (1, "5.00".into()));
    assert_eq!(count(&first, pb::Outcome::PlatformOnly), (1, "6.00".into()));

    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(&[
            ("REFUND", "rf_a", "5.00", "SUCCESS", ""),
            ("REFUND", "rf_b", "6.00", "FAILED", "closed"),
        ]),
    );
    let second = h.run("2026-11-25").await.unwrap();
    assert!(!second.replayed);
    assert_ne!(second.run_id, first.run_id);
    let a = item(&second, "rf_a", pb::Outcome::Matched);
    assert!(!a.written_back);
    assert!(a.detail.starts_with("already final"), "{}", a.detail);
    assert!(item(&second, "rf_b", pb::Outcome::BankFailed).written_back);
    assert_eq!(second.pending_write_backs, 0);
    let applied: Vec<(String, String)> = h
        .refund
        .applies()
        .into_iter()
        .map(|a| (a.refund_id, a.source))
        .collect();
    assert_eq!(
        applied,
        vec![
            ("rf_a".to_string(), first.run_id.clone()),
            ("rf_b".to_string(), second.run_id.clone())
        ]
    );
    let listed = h.list().await;
    assert_eq!(
        listed
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    h.stop().await;
}

/// Two runs of the same file at once: one run is stored, each refund is finalised once.
async fn concurrent_runs_of_the_same_file(db_url: &str) {
    let h = Harness::start(db_url, None).await;
    let mut rows = Vec::new();
    let ids: Vec<String> = (0..20).map(|i| format!("rf_{i:02}")).collect();
    for id in &ids {
        h.refund.add(id, "1.50", "2026-11-25");
        rows.push(("REFUND", id.as_str(), "1.50", "SUCCESS", ""));
    }
    h.bank.put(CHANNEL, "2026-11-25", csv(&rows));
    let (a, b) = tokio::join!(h.run("2026-11-25"), h.run("2026-11-25"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.run_id, b.run_id);
    assert_ne!(a.replayed, b.replayed, "exactly one of them made the run");
    assert_eq!(h.list().await.len(), 1);
    let done = h.run("2026-11-25").await.unwrap();
    assert_eq!(done.pending_write_backs, 0);
    assert_eq!(count(&done, pb::Outcome::Matched), (20, "30.00".into()));
    let mut finalized = h.refund.finalized();
    finalized.sort();
    assert_eq!(finalized, ids, "each refund finalised exactly once");
    h.stop().await;
}

/// The daily job reconciles yesterday's business date for each configured channel, once.
async fn daily_job_reconciles_yesterday(db_url: &str) {
    let mut h = Harness::start_with_job(db_url).await;
    let applied = tokio::time::timeout(Duration::from_secs(20), h.applied_rx.recv())
        .await
        .expect("the job wrote back within 20 s")
        .expect("fake refund center alive");
    assert_eq!(applied, "rf_job");
    let runs = h.list().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].date, "2026-11-25");
    assert_eq!(
        h.refund.status("rf_job"),
        refund_pb::RefundStatus::Succeeded
    );
    // The admin RPC is the same function: it replays the job's run.
    let again = h.run("2026-11-25").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, runs[0].run_id);
    assert_eq!(h.refund.finalized(), vec!["rf_job"]);
    h.stop().await;
}

impl Harness {
    async fn start_with_job(db_url: &str) -> Harness {
        // The file and the refund must be there before the job's first tick: start the fakes
        // through a harness without a job, seed them, then start a second reconciliation center
        // with the job on the same peers.
        let mut h = Harness::start(db_url, None).await;
        h.refund.add("rf_job", "42.00", "2026-11-25");
        h.bank.put(
            CHANNEL,
            "2026-11-25",
            csv(&[("REFUND", "rf_job", "42.00", "SUCCESS", "")]),
        );
        let shared: SharedClock = Arc::new(h.clock.clone());
        let config = Config {
            database_url: db_url.to_string(),
            clock: shared,
            bank_addr: h.bank_url.clone(),
            refund_addr: h.refund_url.clone(),
            job_interval: Some(Duration::from_millis(20)),
            channels: vec![CHANNEL.to_string()],
        };
        let first = h.handles.remove(0);
        first.stop().await.unwrap();
        let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
            serve(config, listener, shutdown)
        })
        .await
        .unwrap();
        h.client = ReconciliationServiceClient::new(
            tuikuan_proto::client::channel(&handle.url()).unwrap(),
        );
        h.url = handle.url();
        h.handles.insert(0, handle);
        h
    }
}

// ---------------------------------------------------------------------------------------------
// The store, directly
// ---------------------------------------------------------------------------------------------

fn sample_run(run_id: &str, created_at_ms: i64, sha: &str) -> domain::Run {
    let cny = |s: &str| Money::parse(s, "CNY", "amount").unwrap();
    let record = |line: usize, id: &str, amount: &str, status| domain::BankRecord {
        kind: domain::RecordKind::Refund,
        id: id.into(),
        bank_ref: format!("BK{line}"),
        channel: CHANNEL.into(),
        amount: cny(amount),
        status,
        completed_at: chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
        reason: "closed".into(),
        line,
    };
    let items = domain::match_refunds(
        &[
            record(2, "rf_a", "1.23", domain::BankRecordStatus::Success),
            record(3, "rf_b", "4.56", domain::BankRecordStatus::Failed),
            record(4, "rf_c", "7.89", domain::BankRecordStatus::Success),
            record(5, "rf_a", "1.23", domain::BankRecordStatus::Success),
        ],
        &[
            domain::PlatformRefund {
                refund_id: "rf_a".into(),
                amount: cny("1.23"),
            },
            domain::PlatformRefund {
                refund_id: "rf_b".into(),
                amount: cny("4.56"),
            },
            domain::PlatformRefund {
                refund_id: "rf_d".into(),
                amount: cny("0.10"),
            },
        ],
    )
    .unwrap();
    domain::Run {
        run_id: run_id.into(),
        channel: CHANNEL.into(),
        date: date("2026-11-25"),
        file_sha256: sha.into(),
        file_format: domain::CSV_V1_FORMAT.into(),
        file_rows: 5,
        payout_rows: 1,
        created_at_ms,
        items: domain::number_items(items).unwrap(),
    }
}

/// Runs round-trip through the store; the file key is unique; write-back marks are guarded.
async fn store_round_trip(db_url: &str) {
    let db = tuikuan_db::Db::connect(db_url, 4).unwrap();
    db.migrate(store::MIGRATIONS).unwrap();
    db.migrate(store::MIGRATIONS).unwrap();
    let run = sample_run("rcn_1", 1_000, "aa");
    let r = run.clone();
    db.transaction(move |c| store::insert_run(c, &r))
        .await
        .unwrap();

    let r = run.clone();
    let e = db
        .transaction(move |c| {
            let mut dup = r.clone();
            dup.run_id = "rcn_dup".into();
            store::insert_run(c, &dup)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::IdempotencyConflict);
    let found = db
        .run(|c| store::find_run_by_file(c, CHANNEL, date("2026-11-25"), "aa"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, run, "a run reads back exactly as written");
    assert!(db
        .run(|c| store::get_run(c, "rcn_dup"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(found.pending_write_backs(), 2);

    // rf_a (seq 0) matched, rf_b (seq 2) bank-failed: both pending.
    let pending: Vec<u32> = found
        .items
        .iter()
        .filter(|i| i.state.is_pending())
        .map(|i| i.seq)
        .collect();
    assert_eq!(pending, vec![0, 2]);
    assert!(db
        .run(|c| store::mark_written_back(c, "rcn_1", 0))
        .await
        .unwrap());
    assert!(!db
        .run(|c| store::mark_written_back(c, "rcn_1", 0))
        .await
        .unwrap());
    assert!(!db
        .run(|c| store::mark_refused(c, "rcn_1", 0, "x"))
        .await
        .unwrap());
    assert!(
        !db.run(|c| store::mark_written_back(c, "rcn_1", 1))
            .await
            .unwrap(),
        "a duplicate writes nothing back"
    );
    assert!(db
        .run(|c| store::mark_refused(c, "rcn_1", 2, "discrepancy: x"))
        .await
        .unwrap());
    assert!(!db
        .run(|c| store::mark_written_back(c, "rcn_1", 2))
        .await
        .unwrap());
    let after = db
        .run(|c| store::get_run(c, "rcn_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.pending_write_backs(), 0);
    assert_eq!(after.items[0].state, domain::WriteBackState::Done);
    assert_eq!(after.items[2].state, domain::WriteBackState::Refused);
    assert_eq!(after.items[2].item.detail, "discrepancy: x");
    assert_eq!(
        after.items[2].item.write_back.as_ref().unwrap().reason,
        "closed"
    );

    // Newest first, limited, by channel.
    for (id, at, sha) in [("rcn_2", 3_000, "bb"), ("rcn_3", 2_000, "cc")] {
        let r = sample_run(id, at, sha);
        db.transaction(move |c| store::insert_run(c, &r))
            .await
            .unwrap();
    }
    let listed = db
        .run(|c| store::list_runs(c, Some(CHANNEL), 2))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        vec!["rcn_2", "rcn_3"]
    );
    assert!(db
        .run(|c| store::list_runs(c, Some("other"), 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.run(|c| store::list_runs(c, None, 10))
            .await
            .unwrap()
            .len(),
        3
    );
    let for_date = db
        .run(|c| store::runs_for_date(c, CHANNEL, date("2026-11-25")))
        .await
        .unwrap();
    assert_eq!(
        for_date
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>(),
        vec!["rcn_1", "rcn_3", "rcn_2"]
    );
    assert!(db
        .run(|c| store::runs_for_date(c, CHANNEL, date("2026-11-24")))
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Both databases
// ---------------------------------------------------------------------------------------------

macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = tuikuan_db::testing::TestDb::sqlite(stringify!($scenario));
                    super::$scenario(db.url()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = tuikuan_db::testing::TestDb::postgres(stringify!($scenario)) else {
                        return;
                    };
                    super::$scenario(db.url()).await;
                }
            )*
        }
    };
}

on_both_databases!(
    every_outcome_through_write_back,
    malformed_file_is_rejected,
    pending_write_backs_are_retried,
    superseding_file_does_not_rewrite,
    concurrent_runs_of_the_same_file,
    daily_job_reconciles_yesterday,
    store_round_trip,
);
