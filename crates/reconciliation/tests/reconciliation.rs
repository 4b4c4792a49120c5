//! The reconciliation center end to end, on SQLite and on PostgreSQL.
//!
//! The real service runs in-process on port 0, with the real accounting and clearing services
//! (suspense adjustments are real ledger postings). The bank and the refund center are small real
//! gRPC servers written here: a bank that serves clearing files built by the test or read from
//! `tests/fixtures/` (only `GetClearingFile`), and a refund center over an in-memory map
//! (`ListSubmitted`, `GetRefund`, `ApplyReconciliation`; the first final status wins, a different
//! one is `INVALID_STATE_TRANSITION`, and it can be told to answer `UNAVAILABLE`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tuikuan_proto::pki::{test_channel, test_transport};
use tuikuan_proto::tls::Principal;

use chrono::NaiveDate;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Error, ErrorCode, ManualClock, SharedClock};
use tuikuan_proto::accounting::v1 as acc_pb;
use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
use tuikuan_proto::bank::v1 as bank_pb;
use tuikuan_proto::bank::v1::bank_service_server::{BankService, BankServiceServer};
use tuikuan_proto::reconciliation::v1 as pb;
use tuikuan_proto::reconciliation::v1::reconciliation_service_client::ReconciliationServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_server::{RefundService, RefundServiceServer};
use tuikuan_proto::server::ServiceHandle;
use tuikuan_proto::status::{from_status, to_status};
use tuikuan_reconciliation::{serve, Config};

const CHANNEL: &str = "netbank";
const HEADER: &str = "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// One entry of a zip archive (an .xlsx).
fn zip_entry(bytes: &[u8], name: &str) -> std::io::Cursor<Vec<u8>> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    archive
        .by_name(name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    std::io::Cursor::new(out)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Fake bank: serves clearing files
// ---------------------------------------------------------------------------------------------

/// (channel, date) → (content, sha256 as announced).
type Files = HashMap<(String, String), (Vec<u8>, String, String)>;

#[derive(Clone, Default)]
struct FakeBank {
    files: Arc<Mutex<Files>>,
    fetches: Arc<Mutex<u32>>,
}

impl FakeBank {
    fn put(&self, channel: &str, date: &str, content: Vec<u8>, format: &str) {
        let sha = hex::encode(Sha256::digest(&content));
        self.files.lock().unwrap().insert(
            (channel.to_string(), date.to_string()),
            (content, sha, format.to_string()),
        );
    }
}

/// One row of a `tuikuan-csv-v1` fixture: (record_type, id, amount, status, reason).
type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn csv(channel: &str, rows: &[Row]) -> Vec<u8> {
    let mut out = HEADER.to_string();
    for (i, (kind, id, amount, status, reason)) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{kind},{id},BK{i:04},{channel},{amount},CNY,{status},2026-11-25T15:00:00+08:00,{reason}\n"
        ));
    }
    out.into_bytes()
}

#[tonic::async_trait]
impl BankService for FakeBank {
    async fn get_statement(
        &self,
        _: Request<bank_pb::GetStatementRequest>,
    ) -> Result<Response<bank_pb::Statement>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

    async fn list_transactions(
        &self,
        _: Request<bank_pb::ListTransactionsRequest>,
    ) -> Result<Response<bank_pb::ListTransactionsResponse>, Status> {
        Err(Status::unimplemented("not part of this fake"))
    }

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
        let Some((content, sha, format)) = files.get(&(req.channel.clone(), req.date.clone()))
        else {
            return Err(to_status(&Error::new(
                ErrorCode::NotFound,
                format!("no clearing file for {} {}", req.channel, req.date),
            )));
        };
        Ok(Response::new(bank_pb::ClearingFile {
            channel: req.channel,
            date: req.date,
            format: format.clone(),
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
    reference: String,
    amount: String,
    submitted_on: NaiveDate,
    status: refund_pb::RefundStatus,
    reason: String,
    final_source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ApplyCall {
    refund_id: String,
    bank_reference_id: String,
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
    fn add(&self, channel: &str, id: &str, amount: &str, submitted_on: &str) {
        self.add_full(
            channel,
            id,
            "",
            amount,
            submitted_on,
            refund_pb::RefundStatus::Processing,
        );
    }

    fn add_ref(&self, channel: &str, id: &str, reference: &str, amount: &str, submitted_on: &str) {
        self.add_full(
            channel,
            id,
            reference,
            amount,
            submitted_on,
            refund_pb::RefundStatus::Processing,
        );
    }

    fn add_full(
        &self,
        channel: &str,
        id: &str,
        reference: &str,
        amount: &str,
        submitted_on: &str,
        status: refund_pb::RefundStatus,
    ) {
        self.state.lock().unwrap().orders.insert(
            id.to_string(),
            FakeOrder {
                channel: channel.into(),
                reference: reference.into(),
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

    fn wire(id: &str, o: &FakeOrder) -> refund_pb::RefundOrder {
        refund_pb::RefundOrder {
            refund_id: id.to_string(),
            channel: o.channel.clone(),
            bank_reference_id: o.reference.clone(),
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
        let req = request.into_inner();
        let state = self.state.lock().unwrap();
        let found = if req.refund_id.is_empty() {
            state.orders.iter().find(|(id, o)| {
                o.reference == req.bank_reference_id
                    || (o.reference.is_empty() && **id == req.bank_reference_id)
            })
        } else {
            state.orders.get_key_value(&req.refund_id)
        };
        match found {
            Some((id, o)) => Ok(Response::new(FakeRefund::wire(id, o))),
            None => Err(to_status(&Error::new(
                ErrorCode::RefundNotFound,
                format!("refund {} not found", req.bank_reference_id),
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
    /// The channels of the orders, and the ones every scenario uses.
    async fn list_channels(
        &self,
        _: Request<refund_pb::ListChannelsRequest>,
    ) -> Result<Response<refund_pb::ListChannelsResponse>, Status> {
        let state = self.state.lock().unwrap();
        let mut codes: std::collections::BTreeSet<String> =
            [CHANNEL, "wechat", "unionpay", "alipay", "quickpay"]
                .iter()
                .map(|c| c.to_string())
                .collect();
        codes.extend(state.orders.values().map(|o| o.channel.clone()));
        let channels = codes
            .into_iter()
            .map(|code| refund_pb::Channel {
                code,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(refund_pb::ListChannelsResponse { channels }))
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
            bank_reference_id: req.bank_reference_id.clone(),
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
    async fn reinstate_succeeded(
        &self,
        _: Request<refund_pb::ReinstateSucceededRequest>,
    ) -> Result<Response<refund_pb::RefundOrder>, Status> {
        unimplemented()
    }
    /// A SUCCEEDED order goes back to PROCESSING (its next method); a PROCESSING one is answered
    /// as it is (a repeat).
    async fn reopen_refund(
        &self,
        request: Request<refund_pb::ReopenRefundRequest>,
    ) -> Result<Response<refund_pb::RefundOrder>, Status> {
        let req = request.into_inner();
        let mut state = self.state.lock().unwrap();
        let Some(order) = state.orders.get_mut(&req.refund_id) else {
            return Err(to_status(&Error::new(
                ErrorCode::RefundNotFound,
                format!("refund {} not found", req.refund_id),
            )));
        };
        match order.status {
            refund_pb::RefundStatus::Succeeded => {
                order.status = refund_pb::RefundStatus::Processing;
                order.reason = req.reason.clone();
                order.final_source = req.source.clone();
            }
            refund_pb::RefundStatus::Processing => {}
            _ => {
                return Err(to_status(&Error::new(
                    ErrorCode::InvalidStateTransition,
                    "only a SUCCEEDED refund can be reopened",
                )))
            }
        }
        Ok(Response::new(FakeRefund::wire(&req.refund_id, order)))
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

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

struct Harness {
    bank: FakeBank,
    refund: FakeRefund,
    client: ReconciliationServiceClient<Channel>,
    accounting: AccountingServiceClient<Channel>,
    handles: Vec<ServiceHandle>,
    _dbs: Vec<TestDb>,
}

impl Harness {
    /// Everything at 10:00 on 2026-11-26 (business time). `None` when PostgreSQL is unavailable
    /// (outside CI).
    async fn start(backend: Backend, name: &str) -> Option<Harness> {
        let recon_db = test_db(backend, &format!("{name}_recon"))?;
        let acc_db = test_db(backend, &format!("{name}_acc"))?;
        let clr_db = test_db(backend, &format!("{name}_clr"))?;
        let clock = ManualClock::at_business(date("2026-11-26"), 10);
        let shared: SharedClock = Arc::new(clock.clone());
        let bank = FakeBank::default();
        let (applied_tx, _applied_rx) = tokio::sync::mpsc::unbounded_channel();
        let refund = FakeRefund {
            state: Arc::new(Mutex::new(RefundState::default())),
            applied_tx,
        };
        let bank_svc = bank.clone();
        let bank_handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
            tuikuan_proto::server::serve(
                listener,
                test_transport(Principal::Bank),
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
                    test_transport(Principal::Refund),
                    tonic::service::Routes::new(RefundServiceServer::new(refund_svc)),
                    &[],
                    shutdown,
                )
            })
            .await
            .unwrap();
        let acc_cfg = tuikuan_accounting::Config {
            database_url: acc_db.url().to_string(),
            clock: shared.clone(),
            job_interval: None,
            transport: test_transport(Principal::Accounting),
            staff: tuikuan_auth::StaffConfig::tester(),
        };
        let acc_handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
            tuikuan_accounting::serve(acc_cfg, l, s)
        })
        .await
        .unwrap();
        let clr_cfg = tuikuan_clearing::Config {
            database_url: clr_db.url().to_string(),
            clock: shared.clone(),
            accounting_addr: acc_handle.url(),
            job_interval: None,
            transport: test_transport(Principal::Clearing),
            staff: tuikuan_auth::StaffConfig::tester(),
        };
        let clr_handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
            tuikuan_clearing::serve(clr_cfg, l, s)
        })
        .await
        .unwrap();
        let config = Config {
            database_url: recon_db.url().to_string(),
            clock: shared,
            bank_addr: bank_handle.url(),
            refund_addr: refund_handle.url(),
            clearing_addr: clr_handle.url(),
            job_interval: None,
            channels: vec![CHANNEL.to_string()],
            channel_formats: HashMap::from([
                ("unionpay".to_string(), "unionpay".to_string()),
                ("wechat".to_string(), "wechat".to_string()),
            ]),
            suspense_days: HashMap::from([("slowbank".to_string(), 2)]),
            transport: test_transport(Principal::Reconciliation),
            staff: tuikuan_auth::StaffConfig::tester(),
        };
        let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
            serve(config, listener, shutdown)
        })
        .await
        .unwrap();
        let client = ReconciliationServiceClient::new(test_channel(
            Principal::Ctl,
            Principal::Reconciliation,
            &handle.url(),
        ));
        let accounting = AccountingServiceClient::new(test_channel(
            Principal::Ctl,
            Principal::Accounting,
            &acc_handle.url(),
        ));
        // Customer money in the channel's reserve (a settled payment): the ledger never lets a
        // correction take a reserve below zero.
        let line = |t: acc_pb::AccountType, owner: &str, side: acc_pb::Side| acc_pb::Entry {
            account: Some(acc_pb::Account {
                r#type: t as i32,
                owner: owner.into(),
                currency: "CNY".into(),
            }),
            side: side as i32,
            amount: "1000.00".into(),
            ..Default::default()
        };
        AccountingServiceClient::new(test_channel(
            Principal::Clearing,
            Principal::Accounting,
            &acc_handle.url(),
        ))
        .post(acc_pb::PostRequest {
            request_id: "settle:seed".into(),
            description: "payments collected before the test".into(),
            entries: vec![
                line(
                    acc_pb::AccountType::ChannelReserve,
                    CHANNEL,
                    acc_pb::Side::Debit,
                ),
                line(
                    acc_pb::AccountType::MerchantSettlement,
                    "seed",
                    acc_pb::Side::Credit,
                ),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
        Some(Harness {
            bank,
            refund,
            client,
            accounting,
            handles: vec![handle, clr_handle, acc_handle, bank_handle, refund_handle],
            _dbs: vec![recon_db, acc_db, clr_db],
        })
    }

    fn c(&self) -> ReconciliationServiceClient<Channel> {
        self.client.clone()
    }

    async fn run(&self, channel: &str, date: &str) -> Result<pb::ReconciliationRun, Status> {
        self.c()
            .run_reconciliation(pb::RunReconciliationRequest {
                channel: channel.into(),
                date: date.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn upload(
        &self,
        channel: &str,
        date: &str,
        format: &str,
        content: Vec<u8>,
    ) -> Result<pb::ReconciliationRun, Status> {
        self.c()
            .run_reconciliation_file(pb::RunReconciliationFileRequest {
                channel: channel.into(),
                date: date.into(),
                format: format.into(),
                content,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn discrepancies(&self, channel: &str) -> Vec<pb::Discrepancy> {
        self.c()
            .list_discrepancies(pb::ListDiscrepanciesRequest {
                channel: channel.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .discrepancies
    }

    async fn resolve(
        &self,
        id: &str,
        resolution: pb::Resolution,
        operator: &str,
        reason: &str,
    ) -> Result<pb::Discrepancy, Status> {
        self.c()
            .resolve_discrepancy(pb::ResolveDiscrepancyRequest {
                discrepancy_id: id.into(),
                resolution: resolution as i32,
                operator: operator.into(),
                reason: reason.into(),
                evidence: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The audit trail of one subject, newest first.
    async fn audit(&self, subject: &str) -> Vec<pb::AuditEntry> {
        self.c()
            .list_audit(pb::ListAuditRequest {
                subject_id: subject.into(),
                limit: 10,
            })
            .await
            .unwrap()
            .into_inner()
            .entries
    }

    /// (debits, credits) of an account.
    async fn balance(&self, kind: acc_pb::AccountType, owner: &str) -> (String, String) {
        let b = self
            .accounting
            .clone()
            .get_balance(acc_pb::GetBalanceRequest {
                account: Some(acc_pb::Account {
                    r#type: kind as i32,
                    owner: owner.into(),
                    currency: "CNY".into(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (b.debits, b.credits)
    }

    async fn stop(self) {
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

fn find<'a>(
    list: &'a [pb::Discrepancy],
    reference: &str,
    kind: pb::DiscrepancyKind,
) -> &'a pb::Discrepancy {
    list.iter()
        .find(|d| d.bank_reference_id == reference && d.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} discrepancy for {reference} in {list:#?}"))
}

fn money(s: &str) -> rust_decimal_free::Amount {
    rust_decimal_free::Amount::parse(s)
}

/// Decimal strings compared by value without a decimal crate ("0.5" == "0.50").
mod rust_decimal_free {
    #[derive(Debug, PartialEq, Eq)]
    pub struct Amount(i64);
    impl Amount {
        pub fn parse(s: &str) -> Amount {
            let (w, f) = s.split_once('.').unwrap_or((s, ""));
            let f = format!("{f:0<2}");
            Amount(w.parse::<i64>().unwrap() * 100 + f[..2].parse::<i64>().unwrap())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Every format (WeChat current and legacy, UnionPay ZM in GBK, Alipay 业务明细, CSV with payout and file rows),
/// every outcome through write-back, a re-run that changes nothing, and the reports.
async fn formats_and_outcomes(backend: Backend) {
    let Some(h) = Harness::start(backend, "formats").await else {
        return;
    };
    let r = &h.refund;
    for (id, amount) in [
        ("rf_w1", "12.50"),
        ("rf_w2", "3.00"),
        ("rf_w3", "5.50"),
        ("rf_w5", "4.00"),
        ("rf_w6", "2.00"),
    ] {
        r.add("wechat", id, amount, "2026-11-25");
    }
    let run = h
        .upload(
            "wechat",
            "2026-11-25",
            "wechat",
            fixture("wechat_current_all.csv"),
        )
        .await
        .unwrap();
    assert_eq!(run.format, "wechat-bill");
    assert_eq!(run.source, "upload");
    assert_eq!((run.file_rows, run.skipped_rows), (6, 1));
    assert!(!run.replayed);
    let w1 = item(&run, "rf_w1", pb::Outcome::Matched);
    assert!(w1.written_back);
    assert_eq!(w1.bank_ref, "50000001");
    assert_eq!(w1.line, 3);
    let w2 = item(&run, "rf_w2", pb::Outcome::BankFailed);
    assert!(
        w2.written_back && w2.detail.contains("REFUNDCLOSE"),
        "{w2:?}"
    );
    let w3 = item(&run, "rf_w3", pb::Outcome::AmountMismatch);
    assert!(!w3.written_back && !w3.discrepancy_id.is_empty());
    let w4 = item(&run, "rf_w4", pb::Outcome::BankOnly);
    assert!(!w4.discrepancy_id.is_empty());
    assert!(item(&run, "rf_w5", pb::Outcome::PlatformOnly)
        .detail
        .contains("in suspense"));
    assert!(item(&run, "rf_w6", pb::Outcome::PlatformOnly)
        .detail
        .contains("processing"));
    assert_eq!(count(&run, pb::Outcome::Matched), (1, "12.50".into()));
    assert_eq!(count(&run, pb::Outcome::PlatformOnly), (2, "6.00".into()));
    assert_eq!(run.discrepancies, 2);
    assert_eq!(r.status("rf_w1"), refund_pb::RefundStatus::Succeeded);
    assert_eq!(r.status("rf_w2"), refund_pb::RefundStatus::Failed);
    assert_eq!(r.status("rf_w3"), refund_pb::RefundStatus::Processing);
    let list = h.discrepancies("wechat").await;
    assert_eq!(list.len(), 2);
    let platform_missed = find(&list, "rf_w4", pb::DiscrepancyKind::PlatformMissed);
    assert_eq!(platform_missed.severity, pb::Severity::High as i32);
    assert!(platform_missed.detail.starts_with("平台漏单"));

    // The same file again: the first run, nothing written again.
    let applies = r.applies().len();
    let again = h
        .upload(
            "wechat",
            "2026-11-25",
            "wechat",
            fixture("wechat_current_all.csv"),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, run.run_id);
    assert_eq!(r.applies().len(), applies);
    assert_eq!(h.discrepancies("wechat").await.len(), 2);

    // The legacy 24-column layout, format from the channel's configuration.
    r.add("wechat", "rf_l1", "1.00", "2026-11-24");
    r.add("wechat", "rf_l2", "2.00", "2026-11-24");
    let legacy = h
        .upload("wechat", "2026-11-24", "", fixture("wechat_legacy_all.csv"))
        .await
        .unwrap();
    assert_eq!(legacy.format, "wechat-bill");
    assert_eq!((legacy.file_rows, legacy.skipped_rows), (4, 1));
    assert!(item(&legacy, "rf_l1", pb::Outcome::Matched).written_back);
    assert!(item(&legacy, "rf_l1", pb::Outcome::Duplicate)
        .detail
        .starts_with("duplicate of line 2"));
    assert!(item(&legacy, "rf_l2", pb::Outcome::BankFailed)
        .detail
        .contains("CHANGE"));
    assert_eq!(legacy.discrepancies, 1);

    // UnionPay's ZM file, GBK, from the bank: refunds (退货 and 消费撤销) matched on the orderId
    // the refund request carried; the payment row is skipped; a refund missing from the file
    // waits in suspense (a ZM file lists cleared transactions only).
    r.add_ref(
        "unionpay",
        "rf_u1",
        "TKU10000000000000000000000000001",
        "8.88",
        "2026-11-25",
    );
    r.add("unionpay", "rf_u2", "1.00", "2026-11-25");
    r.add_ref(
        "unionpay",
        "rf_u3",
        "TKU30000000000000000000000000003",
        "3.33",
        "2026-11-25",
    );
    r.add_ref(
        "unionpay",
        "rf_u5",
        "TKU50000000000000000000000000005",
        "12.34",
        "2026-11-25",
    );
    h.bank
        .put("unionpay", "2026-11-25", fixture("unionpay_zm_gbk.txt"), "");
    let up = h.run("unionpay", "2026-11-25").await.unwrap();
    assert_eq!(up.format, "unionpay-zm");
    assert_eq!((up.file_rows, up.skipped_rows), (4, 1));
    let u1 = item(&up, "rf_u1", pb::Outcome::Matched);
    assert!(u1.written_back);
    assert_eq!(u1.bank_reference_id, "TKU10000000000000000000000000001");
    assert_eq!(u1.bank_ref, "201125100000000000001");
    assert!(item(&up, "rf_u3", pb::Outcome::Matched).written_back);
    assert!(item(&up, "rf_u5", pb::Outcome::Matched).written_back);
    assert!(item(&up, "rf_u2", pb::Outcome::PlatformOnly)
        .detail
        .contains("in suspense"));
    assert!(r.applies().iter().any(
        |a| a.refund_id == "rf_u3" && a.bank_reference_id == "TKU30000000000000000000000000003"
    ));

    // Alipay's 业务明细, GBK, uploaded: refunds by their request number; one without a request
    // number is reported by the trade's order number, unknown here: 平台漏单.
    r.add("alipay", "rf_a1", "12.50", "2026-11-25");
    r.add("alipay", "rf_a2", "3.00", "2026-11-25");
    let ali = h
        .upload(
            "alipay",
            "2026-11-25",
            "alipay",
            fixture("alipay_detail_gbk.csv"),
        )
        .await
        .unwrap();
    assert_eq!(ali.format, "alipay-detail");
    assert_eq!((ali.file_rows, ali.skipped_rows), (5, 2));
    assert!(item(&ali, "rf_a1", pb::Outcome::Matched).written_back);
    assert!(item(&ali, "rf_a2", pb::Outcome::Matched).written_back);
    assert!(!item(&ali, "ORDA0903", pb::Outcome::BankOnly)
        .discrepancy_id
        .is_empty());

    // The platform CSV: REFUND, PAYOUT and FILE rows all take part.
    r.add("netbank", "rf_c1", "10.00", "2026-11-25");
    r.add_ref("netbank", "rf_c2", "po_c2", "20.00", "2026-11-25");
    r.add_ref("netbank", "rf_c3", "row_c3", "30.00", "2026-11-25");
    h.bank.put(
        "netbank",
        "2026-11-25",
        fixture("clearing_csv_v1.csv"),
        "tuikuan-csv-v1",
    );
    let c = h.run("netbank", "2026-11-25").await.unwrap();
    assert_eq!(c.format, "tuikuan-csv-v1");
    assert!(item(&c, "rf_c1", pb::Outcome::Matched).written_back);
    assert!(item(&c, "rf_c2", pb::Outcome::Matched).written_back);
    let c3 = item(&c, "rf_c3", pb::Outcome::BankFailed);
    assert!(c3.written_back && c3.detail.contains("account closed, returned"));
    assert_eq!(
        r.order("rf_c3").reason,
        "ACCOUNT_CLOSED: account closed, returned"
    );

    // Reports: the day per channel, CSV and xlsx exports.
    let day = h
        .c()
        .daily_summary(pb::DailySummaryRequest {
            channel: "wechat".into(),
            date: "2026-11-25".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(day.run_id, run.run_id);
    assert_eq!(day.written_back, 2);
    assert_eq!(day.open_discrepancies, 2);
    assert_eq!(day.in_suspense, 2);
    assert_eq!(day.run_ids, vec![run.run_id.clone()]);
    assert_eq!(day.counts.len(), run.counts.len());
    let csv_report = h
        .c()
        .export_report(pb::ExportReportRequest {
            run_id: run.run_id.clone(),
            format: "csv".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(csv_report.content).unwrap();
    assert!(
        text.starts_with("seq,refund_id,bank_reference_id,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), run.items.len() + 1);
    assert!(
        text.contains("rf_w3,rf_w3,50000003,AMOUNT_MISMATCH,5.50,5.00,CNY,SUCCESS"),
        "{text}"
    );
    let xlsx = h
        .c()
        .export_report(pb::ExportReportRequest {
            channel: "wechat".into(),
            date: "2026-11-25".into(),
            format: "xlsx".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(xlsx.file_name.ends_with(".xlsx"));
    // The money format is in the workbook's styles.
    let styles = {
        use std::io::Read;
        let mut zip = zip_entry(&xlsx.content, "xl/styles.xml");
        let mut text = String::new();
        zip.read_to_string(&mut text).unwrap();
        text
    };
    assert!(styles.contains("#,##0.00"), "{styles}");
    use calamine::{Data, Reader};
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx.content)).unwrap();
    let items = book.worksheet_range("items").unwrap();
    assert_eq!(items.height(), run.items.len() + 1);
    let cells: Vec<String> = items.rows().map(|r| r[1].to_string()).collect();
    assert!(cells.contains(&"rf_w4".to_string()), "{cells:?}");
    // Ids and references are text, amounts numbers finance can sum.
    let w1 = items
        .rows()
        .find(|r| r[1] == Data::String("rf_w1".into()))
        .unwrap();
    assert_eq!(w1[3], Data::String("50000001".into()));
    assert_eq!(w1[5], Data::Float(12.5));
    assert_eq!(w1[6], Data::Float(12.5));
    let summary = book.worksheet_range("summary").unwrap();
    assert!(summary
        .rows()
        .any(|r| r[0] == "MATCHED" && r[2] == Data::Float(12.5)));
    h.stop().await;
}

/// Discrepancies resolved both ways, with ledger entries through the real clearing and
/// accounting services, and the audit trail.
async fn discrepancies_resolved_both_ways(backend: Backend) {
    let Some(h) = Harness::start(backend, "resolve").await else {
        return;
    };
    let r = &h.refund;
    r.add(CHANNEL, "rf_mis", "10.00", "2026-11-25");
    r.add(CHANNEL, "rf_dup", "5.00", "2026-11-25");
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(
            CHANNEL,
            &[
                ("REFUND", "rf_mis", "12.50", "SUCCESS", ""),
                ("REFUND", "rf_bank", "7.00", "SUCCESS", ""),
                ("REFUND", "rf_dup", "5.00", "SUCCESS", ""),
                ("REFUND", "rf_dup", "5.00", "SUCCESS", ""),
                ("REFUND", "rf_bankf", "4.00", "FAILED", "no such card"),
            ],
        ),
        "",
    );
    let run = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert_eq!(run.discrepancies, 4);
    let list = h.discrepancies(CHANNEL).await;
    let mis = find(
        &list,
        "rf_mis",
        pb::DiscrepancyKind::DiscrepancyAmountMismatch,
    )
    .clone();
    let bank_only = find(&list, "rf_bank", pb::DiscrepancyKind::PlatformMissed).clone();
    let dup = find(&list, "rf_dup", pb::DiscrepancyKind::DuplicateRow).clone();
    assert_eq!(mis.status, pb::DiscrepancyStatus::Open as i32);
    assert_eq!(dup.severity, pb::Severity::Medium as i32);

    // A reason is required (the operator is the token's).
    let e = h
        .resolve(&mis.discrepancy_id, pb::Resolution::BankWins, "alice", "")
        .await
        .unwrap_err();
    assert!(e.message().starts_with("reason"), "{}", e.message());

    // Bank wins on an amount mismatch: the refund succeeds at the bank's word, the extra 2.50
    // the bank paid goes to suspense.
    let resolved = h
        .resolve(
            &mis.discrepancy_id,
            pb::Resolution::BankWins,
            "alice",
            "bank statement checked",
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, pb::DiscrepancyStatus::Resolved as i32);
    assert_eq!(resolved.operator, "alice");
    assert_eq!(
        resolved.adjustment_id,
        format!("adj-{}", mis.discrepancy_id)
    );
    assert!(resolved.resolved_at_ms > 0);
    assert_eq!(r.status("rf_mis"), refund_pb::RefundStatus::Succeeded);
    let apply = r
        .applies()
        .into_iter()
        .find(|a| a.refund_id == "rf_mis")
        .unwrap();
    assert_eq!(apply.source, mis.discrepancy_id);
    let (debits, _) = h
        .balance(acc_pb::AccountType::SuspenseBankClaim, CHANNEL)
        .await;
    assert_eq!(money(&debits), money("2.50"));
    let (_, credits) = h
        .balance(acc_pb::AccountType::ChannelReserve, CHANNEL)
        .await;
    assert_eq!(money(&credits), money("2.50"));

    // Resolving twice is an error.
    let e = h
        .resolve(
            &mis.discrepancy_id,
            pb::Resolution::PlatformWins,
            "bob",
            "again",
        )
        .await
        .unwrap_err();
    assert_eq!(tk_code(&e), ErrorCode::InvalidStateTransition);

    // Bank wins on a 平台漏单 the bank paid: the 7.00 is booked to suspense.
    h.resolve(
        &bank_only.discrepancy_id,
        pb::Resolution::BankWins,
        "alice",
        "bank paid without a refund",
    )
    .await
    .unwrap();
    let (debits, _) = h
        .balance(acc_pb::AccountType::SuspenseBankClaim, CHANNEL)
        .await;
    assert_eq!(money(&debits), money("9.50"));

    // Platform wins: recorded only.
    let d = h
        .resolve(
            &dup.discrepancy_id,
            pb::Resolution::PlatformWins,
            "carol",
            "bank confirmed a display duplicate",
        )
        .await
        .unwrap();
    assert_eq!(d.resolution, pb::Resolution::PlatformWins as i32);
    assert_eq!(d.actions, "recorded only");
    assert!(d.adjustment_id.is_empty());
    let (debits, _) = h
        .balance(acc_pb::AccountType::SuspenseBankClaim, CHANNEL)
        .await;
    assert_eq!(money(&debits), money("9.50"));

    // Filters: what is still open.
    let open = h
        .c()
        .list_discrepancies(pb::ListDiscrepanciesRequest {
            status: pb::DiscrepancyStatus::Open as i32,
            severity: pb::Severity::High as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .discrepancies;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].bank_reference_id, "rf_bankf");

    // The audit trail.
    let audit = h.audit(&mis.discrepancy_id).await;
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["RESOLVED", "RESOLVE_STARTED"]);
    assert!(audit
        .iter()
        .all(|a| a.operator == "alice" && a.reason == "bank statement checked"));
    assert!(
        audit[0].before.starts_with("OPEN AMOUNT_MISMATCH"),
        "{}",
        audit[0].before
    );
    assert!(audit[0].after.contains("SUSPENSE"), "{}", audit[0].after);
    h.stop().await;
}

/// Platform-only refunds wait in suspense for the window, are cleared by a later file, or expire
/// into a 银行漏单 discrepancy that "bank wins" turns into a failure.
async fn suspense_window(backend: Backend) {
    let Some(h) = Harness::start(backend, "suspense").await else {
        return;
    };
    let r = &h.refund;
    r.add(CHANNEL, "rf_s1", "1.00", "2026-11-24");
    r.add(CHANNEL, "rf_s2", "2.00", "2026-11-24");
    r.add(CHANNEL, "rf_x", "3.00", "2026-11-24");
    r.add("slowbank", "rf_t1", "4.00", "2026-11-24");
    h.bank.put(
        CHANNEL,
        "2026-11-24",
        csv(CHANNEL, &[("REFUND", "rf_x", "3.00", "SUCCESS", "")]),
        "",
    );
    let day1 = h.run(CHANNEL, "2026-11-24").await.unwrap();
    assert!(item(&day1, "rf_s1", pb::Outcome::PlatformOnly)
        .detail
        .contains("in suspense (1-day window)"));
    let suspense = |status: &'static str| {
        let c = h.c();
        async move {
            c.clone()
                .list_suspense(pb::ListSuspenseRequest {
                    channel: CHANNEL.into(),
                    status: status.into(),
                    limit: 10,
                })
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    assert_eq!(suspense("OPEN").await.len(), 2);

    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(CHANNEL, &[("REFUND", "rf_s2", "2.00", "SUCCESS", "")]),
        "",
    );
    let day2 = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert!(item(&day2, "rf_s2", pb::Outcome::Matched).written_back);
    let s1 = item(&day2, "rf_s1", pb::Outcome::PlatformOnly);
    assert!(s1.detail.contains("银行漏单"), "{}", s1.detail);
    assert_eq!(day2.discrepancies, 1);
    let cleared = suspense("CLEARED").await;
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].refund_id, "rf_s2");
    assert_eq!(cleared[0].cleared_by_run, day2.run_id);
    let expired = suspense("EXPIRED").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].since_date, "2026-11-24");
    let list = h.discrepancies(CHANNEL).await;
    let missed = find(&list, "rf_s1", pb::DiscrepancyKind::BankMissed);
    assert_eq!(missed.discrepancy_id, expired[0].discrepancy_id);
    assert_eq!(missed.severity, pb::Severity::Medium as i32);
    assert_eq!(r.status("rf_s1"), refund_pb::RefundStatus::Processing);

    // A channel with a 2-day window still waits.
    for d in ["2026-11-24", "2026-11-25"] {
        h.bank.put("slowbank", d, csv("slowbank", &[]), "");
        let run = h.run("slowbank", d).await.unwrap();
        assert_eq!(run.discrepancies, 0);
        assert!(item(&run, "rf_t1", pb::Outcome::PlatformOnly)
            .detail
            .contains("in suspense"));
    }

    // Bank wins: the bank never paid it.
    let d = h
        .resolve(
            &missed.discrepancy_id,
            pb::Resolution::BankWins,
            "dave",
            "bank confirms no such refund",
        )
        .await
        .unwrap();
    assert_eq!(d.status, pb::DiscrepancyStatus::Resolved as i32);
    assert_eq!(r.status("rf_s1"), refund_pb::RefundStatus::Failed);
    let apply = r
        .applies()
        .into_iter()
        .find(|a| a.refund_id == "rf_s1")
        .unwrap();
    assert_eq!(apply.status, refund_pb::RefundStatus::Failed);
    assert_eq!(apply.source, missed.discrepancy_id);
    assert!(apply.reason.contains("dave"), "{}", apply.reason);
    h.stop().await;
}

/// A corrected file supersedes the day's run: what was final stays final (written once), the new
/// facts are written back, contradictions become discrepancies, all audited.
async fn corrected_file_supersedes(backend: Backend) {
    let Some(h) = Harness::start(backend, "corrected").await else {
        return;
    };
    let r = &h.refund;
    r.add(CHANNEL, "rf_a", "1.00", "2026-11-25");
    r.add(CHANNEL, "rf_b", "2.00", "2026-11-25");
    r.add(CHANNEL, "rf_c", "3.00", "2026-11-25");
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(
            CHANNEL,
            &[
                ("REFUND", "rf_a", "1.00", "SUCCESS", ""),
                ("REFUND", "rf_c", "3.00", "SUCCESS", ""),
            ],
        ),
        "",
    );
    let first = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert_eq!(count(&first, pb::Outcome::Matched).0, 2);
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(
            CHANNEL,
            &[
                ("REFUND", "rf_a", "1.00", "FAILED", "reversed by bank"),
                ("REFUND", "rf_b", "2.00", "SUCCESS", ""),
                ("REFUND", "rf_c", "3.00", "SUCCESS", ""),
            ],
        ),
        "",
    );
    let second = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert!(!second.replayed);
    assert_eq!(second.supersedes, first.run_id);
    assert!(item(&second, "rf_b", pb::Outcome::Matched).written_back);
    let c = item(&second, "rf_c", pb::Outcome::Matched);
    assert!(
        !c.written_back && c.detail.starts_with("already final"),
        "{c:?}"
    );
    let a = item(&second, "rf_a", pb::Outcome::BankOnly);
    assert!(!a.discrepancy_id.is_empty());
    // Write-backs run concurrently: compare as a set; each refund finalised exactly once.
    let mut finalized = r.finalized();
    finalized.sort();
    assert_eq!(finalized, vec!["rf_a", "rf_b", "rf_c"]);
    assert_eq!(
        r.applies().iter().filter(|x| x.refund_id == "rf_a").count(),
        1
    );
    assert_eq!(r.status("rf_a"), refund_pb::RefundStatus::Succeeded);

    let old = h
        .c()
        .get_run(pb::GetRunRequest {
            run_id: first.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.superseded_by, second.run_id);
    assert_eq!(old.pending_write_backs, 0);
    let audit = h.audit(&first.run_id).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "SUPERSEDED");
    assert!(audit[0].after.contains(&second.run_id));
    let day = h
        .c()
        .daily_summary(pb::DailySummaryRequest {
            channel: CHANNEL.into(),
            date: "2026-11-25".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(day.run_id, second.run_id);
    assert_eq!(
        day.run_ids,
        vec![first.run_id.clone(), second.run_id.clone()]
    );

    // The corrected file again changes nothing.
    let applies = r.applies().len();
    let again = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert!(again.replayed && again.run_id == second.run_id);
    assert_eq!(r.applies().len(), applies);

    // The conflict: the bank now says it failed, but the refund succeeded. Bank wins: the refund
    // is reopened for its next method (the customer is still owed it); nothing goes to suspense.
    let list = h.discrepancies(CHANNEL).await;
    let conflict = find(&list, "rf_a", pb::DiscrepancyKind::StatusConflict);
    assert_eq!(conflict.severity, pb::Severity::High as i32);
    let resolved = h
        .resolve(
            &conflict.discrepancy_id,
            pb::Resolution::BankWins,
            "erin",
            "bank reversed the refund",
        )
        .await
        .unwrap();
    assert!(
        resolved.actions.contains("reopen PROCESSING"),
        "{resolved:?}"
    );
    assert_eq!(r.status("rf_a"), refund_pb::RefundStatus::Processing);
    assert_eq!(r.order("rf_a").final_source, conflict.discrepancy_id);
    let (_, credits) = h
        .balance(acc_pb::AccountType::SuspenseOwedCustomer, CHANNEL)
        .await;
    assert_eq!(money(&credits), money("0"));
    h.stop().await;
}

/// Malformed files are rejected with line and field; nothing is stored or written back.
async fn malformed_files_rejected(backend: Backend) {
    let Some(h) = Harness::start(backend, "malformed").await else {
        return;
    };
    h.refund.add("wechat", "rf_w1", "12.50", "2026-11-25");
    h.refund.add("unionpay", "rf_u2", "1.00", "2026-11-25");
    h.refund.add(CHANNEL, "rf_ok", "1.00", "2026-11-25");
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "wechat",
            "wechat",
            fixture("wechat_bad_summary.csv"),
            "clearing file line 9: 退款总金额: says 29.51",
        ),
        (
            "unionpay",
            "",
            fixture("unionpay_zm_bad_amount.txt"),
            "clearing file line 2: 交易金额: ",
        ),
        (
            "alipay",
            "alipay",
            fixture("alipay_cut_short.csv"),
            "clearing file line 9: footer: missing",
        ),
        (
            CHANNEL,
            "csv",
            format!(
                "{HEADER}REFUND,rf_ok,BK1,{CHANNEL},1.00,CNY,SUCCESS,2026-11-25T10:00:00Z,\n\
                 REFUND,rf_x,BK2,{CHANNEL},1.00,CNY,DONE,2026-11-25T10:00:00Z,\n"
            )
            .into_bytes(),
            "clearing file line 3: status: ",
        ),
        (
            "wechat",
            "wechat",
            "交易时间,商户号\n`2026-11-25 10:00:00,`1\n"
                .as_bytes()
                .to_vec(),
            "clearing file line 1: header: ",
        ),
    ];
    for (channel, format, content, expected) in cases {
        let e = h
            .upload(channel, "2026-11-25", format, content)
            .await
            .unwrap_err();
        assert_eq!(tk_code(&e), ErrorCode::InvalidArgument, "{}", e.message());
        assert!(e.message().starts_with(expected), "{}", e.message());
    }
    let e = h
        .upload(CHANNEL, "2026-11-25", "excel", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(e.message().starts_with("format: "), "{}", e.message());
    assert!(r_applies_empty(&h.refund));
    let runs = h
        .c()
        .list_runs(pb::ListRunsRequest {
            channel: String::new(),
            limit: 0,
            include_rejected: false,
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty());
    h.stop().await;
}

fn r_applies_empty(r: &FakeRefund) -> bool {
    r.applies().is_empty()
}

/// Write-backs the refund center could not take stay pending and are finished by a re-run of the
/// same file.
async fn pending_write_backs_are_retried(backend: Backend) {
    let Some(h) = Harness::start(backend, "pending").await else {
        return;
    };
    h.refund.add(CHANNEL, "rf_1", "1.00", "2026-11-25");
    h.refund.add(CHANNEL, "rf_2", "2.00", "2026-11-25");
    h.bank.put(
        CHANNEL,
        "2026-11-25",
        csv(
            CHANNEL,
            &[
                ("REFUND", "rf_1", "1.00", "SUCCESS", ""),
                ("REFUND", "rf_2", "2.00", "FAILED", "closed"),
            ],
        ),
        "",
    );
    h.refund.state.lock().unwrap().unavailable_applies = 100;
    let run = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert_eq!(run.pending_write_backs, 2);
    h.refund.state.lock().unwrap().unavailable_applies = 0;
    let again = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.pending_write_backs, 0);
    assert!(again.items.iter().all(|i| i.written_back));
    assert_eq!(h.refund.finalized().len(), 2);
    let third = h.run(CHANNEL, "2026-11-25").await.unwrap();
    assert_eq!(third.pending_write_backs, 0);
    assert_eq!(h.refund.applies().len(), 2);
    h.stop().await;
}

#[path = "reconciliation/bank_files.rs"]
mod bank_files;
use bank_files::matching_cannot_be_fooled;

// ---------------------------------------------------------------------------------------------
// Both databases
// ---------------------------------------------------------------------------------------------

macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_databases!(
    formats_and_outcomes,
    discrepancies_resolved_both_ways,
    suspense_window,
    corrected_file_supersedes,
    malformed_files_rejected,
    pending_write_backs_are_retried,
    matching_cannot_be_fooled,
);
