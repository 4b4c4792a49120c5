//! The refund center end to end over gRPC, with real peers in-process: accounting and clearing
//! (the debit the refund center checks, completes and reverses) and the bank simulator. The
//! business layer is left unreachable on purpose: its notification step must stay queued with an
//! error while the clearing steps complete. Every scenario runs on SQLite and on PostgreSQL (the
//! refund center's database; the peers run on SQLite).

use chrono::{Duration, NaiveDate};
use tuikuan_bank::domain::SimParams;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::{Clock, ErrorCode, ManualClock};
use tuikuan_proto::bank::v1 as bankpb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::clearing::v1 as clpb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::from_status;
use tuikuan_proto::tls::Principal;

mod common;

use common::{client_channel, steady_bank, Setup, Stack, MERCHANT};

type Refunds = RefundServiceClient<AnyCaller>;
type Clearing = ClearingServiceClient<AnyCaller>;

const NB: &str = "NB1";
const QP: &str = "QP1";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("valid date")
}

/// How the bank behaves in a scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BankMode {
    /// The simulator, accepting everything, succeeding everything after 60 s, clean callbacks.
    Accepting,
    /// The simulator refusing every submission synchronously.
    Refusing,
    /// Nobody listens at the bank's address.
    Unreachable,
}

/// A running refund center with its peers.
struct Env {
    clock: ManualClock,
    refunds: Refunds,
    clearing: Clearing,
    bank: Option<BankServiceClient<AnyCaller>>,
    stack: Stack,
}

impl Env {
    async fn start(refund_db: &str, mode: BankMode) -> Env {
        let bank = match mode {
            BankMode::Unreachable => None,
            BankMode::Accepting => Some(steady_bank()),
            BankMode::Refusing => Some(SimParams {
                sync_reject_per_mille: 1000,
                ..steady_bank()
            }),
        };
        let setup = Setup {
            today: today(),
            bank,
            payout: false,
        };
        let stack = Stack::start(refund_db, setup, |config| config).await;
        let mut env = Env {
            clock: stack.clock.clone(),
            refunds: RefundServiceClient::new(client_channel(Principal::Refund, &stack.refund_url)),
            clearing: ClearingServiceClient::new(client_channel(
                Principal::Clearing,
                &stack.clearing_url,
            )),
            bank: (mode != BankMode::Unreachable)
                .then(|| BankServiceClient::new(client_channel(Principal::Bank, &stack.bank_url))),
            stack,
        };
        env.channel(NB, pb::ChannelKind::NetBanking).await;
        env.channel(QP, pb::ChannelKind::QuickPay).await;
        env
    }

    async fn stop(self) {
        self.stack.stop().await;
    }

    async fn channel(&mut self, code: &str, kind: pb::ChannelKind) -> pb::Channel {
        self.refunds
            .upsert_channel(pb::Channel {
                code: code.into(),
                kind: kind as i32,
                methods: vec![],
                original_route_window_days: 0,
                bank_code: "ICBC".into(),
                ..Default::default()
            })
            .await
            .expect("upsert channel")
            .into_inner()
    }

    /// Settles a payment of `paid` and debits `refund` of it in the clearing center.
    async fn debit(
        &mut self,
        refund_id: &str,
        trade_id: &str,
        channel: &str,
        paid: &str,
        refund: &str,
    ) {
        self.clearing
            .settle_payment(clpb::SettlePaymentRequest {
                trade_id: trade_id.into(),
                merchant_id: MERCHANT.into(),
                channel: channel.into(),
                amount: paid.into(),
                currency: "CNY".into(),
                ..Default::default()
            })
            .await
            .expect("settle");
        let d = self
            .clearing
            .refund_debit(clpb::RefundDebitRequest {
                refund_id: refund_id.into(),
                trade_id: trade_id.into(),
                merchant_id: MERCHANT.into(),
                amount: refund.into(),
                currency: "CNY".into(),
                ..Default::default()
            })
            .await
            .expect("refund debit")
            .into_inner();
        assert_eq!(d.status, clpb::DebitStatus::Debited as i32);
    }

    async fn debit_status(&mut self, refund_id: &str) -> clpb::DebitStatus {
        let d = self
            .clearing
            .get_debit(clpb::GetDebitRequest {
                refund_id: refund_id.into(),
            })
            .await
            .expect("get debit")
            .into_inner();
        clpb::DebitStatus::try_from(d.status).expect("known status")
    }

    async fn create(&mut self, req: pb::CreateRefundRequest) -> Result<pb::RefundOrder, ErrorCode> {
        self.refunds
            .create_refund(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| from_status(&s).code)
    }

    async fn get(&mut self, refund_id: &str) -> pb::RefundOrder {
        self.refunds
            .get_refund(pb::GetRefundRequest {
                refund_id: refund_id.into(),
                ..Default::default()
            })
            .await
            .expect("get refund")
            .into_inner()
    }

    async fn cycle(&mut self) -> pb::CycleReport {
        self.refunds
            .run_interface_cycle(pb::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("cycle")
            .into_inner()
    }

    async fn callback(&mut self, refund_id: &str, status: pb::BankStatus, sequence: u64) -> bool {
        self.refunds
            .bank_callback(pb::BankCallbackRequest {
                refund_id: refund_id.into(),
                bank_ref: String::new(),
                status: status as i32,
                reason: String::new(),
                sequence,
            })
            .await
            .expect("callback")
            .into_inner()
            .applied
    }

    async fn reconcile(
        &mut self,
        refund_id: &str,
        status: pb::RefundStatus,
    ) -> Result<pb::RefundOrder, ErrorCode> {
        self.refunds
            .apply_reconciliation(pb::ApplyReconciliationRequest {
                refund_id: refund_id.into(),
                status: status as i32,
                reason: format!("reconciliation says {}", status.as_str_name()),
                source: "recon-run-1".into(),
                bank_reference_id: String::new(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| from_status(&s).code)
    }

    async fn submitted(&mut self, date: NaiveDate) -> Vec<String> {
        self.refunds
            .list_submitted(pb::ListSubmittedRequest {
                channel: NB.into(),
                date: date.format("%Y-%m-%d").to_string(),
                limit: 0,
                after: String::new(),
            })
            .await
            .expect("list submitted")
            .into_inner()
            .refunds
            .into_iter()
            .map(|r| r.refund_id)
            .collect()
    }
}

fn request(
    env: &Env,
    refund_id: &str,
    trade_id: &str,
    channel: &str,
    amount: &str,
) -> pb::CreateRefundRequest {
    pb::CreateRefundRequest {
        refund_id: refund_id.into(),
        merchant_id: MERCHANT.into(),
        trade_id: trade_id.into(),
        order_no: format!("order-{trade_id}"),
        channel: channel.into(),
        amount: amount.into(),
        currency: "CNY".into(),
        trade_paid_at_ms: env.clock.now_ms() - 3_600_000,
        payer_card_no: "6222000011112223".into(),
        payer_name: "Zhang San".into(),
        ..Default::default()
    }
}

// -------------------------------------------------------------------------------------------------
// Acceptance: validation, idempotency, the debit check, method selection, queries.

async fn acceptance(url: &str) {
    let mut env = Env::start(url, BankMode::Unreachable).await;

    let channels = env
        .refunds
        .list_channels(pb::ListChannelsRequest {})
        .await
        .expect("list channels")
        .into_inner()
        .channels;
    assert_eq!(
        channels
            .iter()
            .map(|c| (c.code.as_str(), c.original_route_window_days))
            .collect::<Vec<_>>(),
        vec![(NB, 180), (QP, 180)]
    );

    env.debit("rf-1", "t-1", NB, "100.00", "30.00").await;
    let req = request(&env, "rf-1", "t-1", NB, "30.00");
    let first = env.create(req.clone()).await.expect("create");
    assert_eq!(first.method, pb::RefundMethod::Interface as i32);
    assert_eq!(first.submit_status, pb::SubmitStatus::Pending as i32);
    assert_eq!(first.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(first.bank_status, pb::BankStatus::Unspecified as i32);
    assert_eq!(first.amount, "30.00");
    assert_eq!(first.reason, "");
    assert_eq!(first.created_at_ms, env.clock.now_ms());

    // Idempotent: the same request later returns the first order unchanged.
    env.clock.advance(Duration::minutes(5));
    assert_eq!(env.create(req.clone()).await.expect("repeat"), first);
    // Same refund id, other content: conflict.
    let mut other = req.clone();
    other.amount = "29.99".into();
    assert_eq!(env.create(other).await, Err(ErrorCode::IdempotencyConflict));

    // Concurrent duplicates: every one gets the same order, whoever wins the insert.
    env.debit("rf-c", "t-c", NB, "100.00", "5.00").await;
    let req_c = request(&env, "rf-c", "t-c", NB, "5.00");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut client = env.refunds.clone();
            let req = req_c.clone();
            tokio::spawn(async move { client.create_refund(req).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut created = Vec::new();
    for t in tasks {
        created.push(t.await.expect("task").expect("concurrent create"));
    }
    assert!(created.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(created[0].refund_id, "rf-c");

    // Validation on receipt, before anything else.
    let mut bad = request(&env, "rf-bad", "t-1", NB, "1.001");
    assert_eq!(env.create(bad.clone()).await, Err(ErrorCode::InvalidAmount));
    bad.amount = "1.00".into();
    bad.refund_id = "rf bad".into();
    assert_eq!(env.create(bad.clone()).await, Err(ErrorCode::MalformedId));
    bad.refund_id = String::new();
    assert_eq!(env.create(bad).await, Err(ErrorCode::InvalidArgument));

    // Unknown channel.
    let r = request(&env, "rf-x", "t-1", "NOPE", "1.00");
    assert_eq!(env.create(r).await, Err(ErrorCode::ChannelNotFound));
    // No debit at all.
    let r = request(&env, "rf-2", "t-1", NB, "1.00");
    assert_eq!(env.create(r).await, Err(ErrorCode::DebitNotFound));
    // A debit of another amount.
    env.debit("rf-3", "t-3", NB, "100.00", "10.00").await;
    let r = request(&env, "rf-3", "t-3", NB, "11.00");
    assert_eq!(env.create(r).await, Err(ErrorCode::DebitNotActive));
    // A debit that is no longer DEBITED.
    env.debit("rf-4", "t-4", NB, "100.00", "10.00").await;
    env.clearing
        .reverse_debit(clpb::ReverseDebitRequest {
            refund_id: "rf-4".into(),
            reason: "rejected for the test".into(),
        })
        .await
        .expect("reverse");
    let r = request(&env, "rf-4", "t-4", NB, "10.00");
    assert_eq!(env.create(r).await, Err(ErrorCode::DebitNotActive));
    // None of the rejected ones exist.
    for id in ["rf-2", "rf-3", "rf-4", "rf-x"] {
        let e = env
            .refunds
            .get_refund(pb::GetRefundRequest {
                refund_id: id.into(),
                ..Default::default()
            })
            .await
            .expect_err("no order");
        assert_eq!(from_status(&e).code, ErrorCode::RefundNotFound);
    }

    // Quick-pay: payout is its method; with no payout center configured the payout waits
    // (PENDING, with a note) for RunPayoutDispatch.
    env.debit("rf-5", "t-5", QP, "50.00", "50.00").await;
    let qp = env
        .create(request(&env, "rf-5", "t-5", QP, "50.00"))
        .await
        .expect("qp");
    assert_eq!(qp.method, pb::RefundMethod::Payout as i32);
    assert_eq!(qp.submit_status, pb::SubmitStatus::Pending as i32);
    assert_eq!(qp.bank_reference_id, "po_rf-5_1");
    assert_eq!(qp.attempt, 1);
    assert_eq!(
        qp.reason,
        "no payout center is configured; the payout waits for one"
    );
    assert_eq!(qp.expected_completion_ms, env.clock.now_ms() + 30 * 60_000);
    // The interface order: 7 working days from Thursday 2026-11-26 is Monday 2026-12-07.
    let end_of_dec_7 = start_of_business_date(NaiveDate::from_ymd_opt(2026, 12, 8).expect("date"))
        .timestamp_millis()
        - 1;
    assert_eq!(first.expected_completion_ms, end_of_dec_7);
    assert_eq!(first.bank_reference_id, "rf-1");
    assert_eq!(first.attempts.len(), 1);
    assert_eq!(first.attempts[0].outcome, "PENDING");

    // A payment older than the original-route window cannot go back by interface, and a
    // net-banking channel has no other method by default: rejected up front, nothing promised.
    env.debit("rf-6", "t-6", NB, "20.00", "20.00").await;
    let mut old = request(&env, "rf-6", "t-6", NB, "20.00");
    old.trade_paid_at_ms = env.clock.now_ms() - 200 * 86_400_000;
    let e = env
        .refunds
        .create_refund(old)
        .await
        .expect_err("no method left");
    let e = from_status(&e);
    assert_eq!(e.code, ErrorCode::NoRefundMethod);
    assert!(e.message.contains("window of 180 days"), "{}", e.message);

    // The cycle sends only the interface order (and the bank is unreachable: it stays PENDING).
    let report = env.cycle().await;
    assert_eq!(
        (
            report.sent,
            report.accepted,
            report.rejected,
            report.errors,
            report.waiting
        ),
        (2, 0, 0, 2, 0)
    );
    let after = env.get("rf-1").await;
    assert_eq!(after.submit_status, pb::SubmitStatus::Pending as i32);
    assert!(
        after.reason.contains("retried next cycle"),
        "{}",
        after.reason
    );
    assert_eq!(
        env.get("rf-5").await.submit_status,
        pb::SubmitStatus::Pending as i32
    );

    // Not submitted: reconciliation cannot finalise it, and it is not listed for reconciliation.
    assert_eq!(
        env.reconcile("rf-1", pb::RefundStatus::Succeeded).await,
        Err(ErrorCode::InvalidStateTransition)
    );
    assert!(env.submitted(today()).await.is_empty());
    // A callback for an unknown refund.
    let e = env
        .refunds
        .bank_callback(pb::BankCallbackRequest {
            refund_id: "nope".into(),
            bank_ref: String::new(),
            status: pb::BankStatus::BankProcessing as i32,
            reason: String::new(),
            sequence: 1,
        })
        .await
        .expect_err("unknown");
    assert_eq!(from_status(&e).code, ErrorCode::RefundNotFound);

    // Listing: filters and ascending pagination by refund id.
    let page = |after: &str, limit: u32, channel: &str| pb::ListRefundsRequest {
        channel: channel.into(),
        refund_status: 0,
        limit,
        after: after.into(),
    };
    let ids = |r: pb::ListRefundsResponse| {
        r.refunds
            .into_iter()
            .map(|o| o.refund_id)
            .collect::<Vec<_>>()
    };
    let all = ids(env
        .refunds
        .list_refunds(page("", 0, ""))
        .await
        .expect("list")
        .into_inner());
    assert_eq!(all, vec!["rf-1", "rf-5", "rf-c"]);
    let p1 = ids(env
        .refunds
        .list_refunds(page("", 2, ""))
        .await
        .expect("list")
        .into_inner());
    assert_eq!(p1, vec!["rf-1", "rf-5"]);
    let p2 = ids(env
        .refunds
        .list_refunds(page("rf-5", 2, ""))
        .await
        .expect("list")
        .into_inner());
    assert_eq!(p2, vec!["rf-c"]);
    let nb = ids(env
        .refunds
        .list_refunds(page("", 0, NB))
        .await
        .expect("list")
        .into_inner());
    assert_eq!(nb, vec!["rf-1", "rf-c"]);
    let done = env
        .refunds
        .list_refunds(pb::ListRefundsRequest {
            refund_status: pb::RefundStatus::Succeeded as i32,
            ..page("", 0, "")
        })
        .await
        .expect("list")
        .into_inner();
    assert!(done.refunds.is_empty());

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_sqlite() {
    let db = TestDb::sqlite("refund");
    acceptance(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_postgres() {
    let Some(db) = TestDb::postgres("refund_accept") else {
        return;
    };
    acceptance(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// The interface cycle against the bank simulator, callbacks, reconciliation and the outbox.

async fn lifecycle(url: &str) {
    let mut env = Env::start(url, BankMode::Accepting).await;
    env.debit("rf-a", "t-a", NB, "100.00", "40.00").await;
    env.debit("rf-b", "t-b", NB, "100.00", "25.50").await;
    env.create(request(&env, "rf-a", "t-a", NB, "40.00"))
        .await
        .expect("a");
    env.create(request(&env, "rf-b", "t-b", NB, "25.50"))
        .await
        .expect("b");

    let submitted_at = env.clock.now_ms();
    let report = env.cycle().await;
    assert_eq!(
        (
            report.sent,
            report.accepted,
            report.rejected,
            report.errors,
            report.waiting
        ),
        (2, 2, 0, 0, 0)
    );
    let a = env.get("rf-a").await;
    assert_eq!(a.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(a.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(a.bank_status, pb::BankStatus::BankAccepted as i32);
    assert!(!a.bank_ref.is_empty());
    assert_eq!(a.submitted_at_ms, submitted_at);
    // Nothing left to send.
    assert_eq!(env.cycle().await.sent, 0);

    // Callbacks out of order and duplicated never move the bank status back.
    assert!(
        env.callback("rf-b", pb::BankStatus::BankProcessing, 10)
            .await
    );
    assert!(
        !env.callback("rf-b", pb::BankStatus::BankProcessing, 10)
            .await
    );
    assert!(!env.callback("rf-b", pb::BankStatus::BankSucceeded, 9).await);
    assert!(
        env.callback("rf-b", pb::BankStatus::BankSucceeded, 12)
            .await
    );
    assert!(!env.callback("rf-b", pb::BankStatus::BankAccepted, 13).await);
    let b = env.get("rf-b").await;
    assert_eq!(b.bank_status, pb::BankStatus::BankSucceeded as i32);
    // The bank never makes a refund final.
    assert_eq!(b.refund_status, pb::RefundStatus::Processing as i32);

    // The bank completes both and calls back; rf-b's callbacks are stale by now.
    env.clock.advance(Duration::minutes(2));
    let bank = env.bank.as_mut().expect("bank");
    let tick = bank
        .tick(bankpb::TickRequest {})
        .await
        .expect("tick")
        .into_inner();
    assert_eq!(tick.completed, 2);
    assert_eq!(tick.callbacks_failed, 0);
    let a = env.get("rf-a").await;
    assert_eq!(a.bank_status, pb::BankStatus::BankSucceeded as i32);
    assert_eq!(a.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(env.get("rf-b").await, b);

    // Reconciliation takes SUBMITTED refunds submitted before the end of the business date.
    let yesterday = today().pred_opt().expect("date");
    assert!(env.submitted(yesterday).await.is_empty());
    assert_eq!(env.submitted(today()).await, vec!["rf-a", "rf-b"]);
    // Paginated by refund id.
    let page = env
        .refunds
        .list_submitted(pb::ListSubmittedRequest {
            channel: NB.into(),
            date: "2026-11-26".into(),
            limit: 1,
            after: "rf-a".into(),
        })
        .await
        .expect("page")
        .into_inner()
        .refunds;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].refund_id, "rf-b");
    let bad = env
        .refunds
        .list_submitted(pb::ListSubmittedRequest {
            channel: NB.into(),
            date: "26/11/2026".into(),
            limit: 0,
            after: String::new(),
        })
        .await
        .expect_err("bad date");
    assert_eq!(from_status(&bad).code, ErrorCode::InvalidArgument);

    // Final success: the debit completes at once; the business layer is unreachable, so its
    // notification stays queued.
    let a = env
        .reconcile("rf-a", pb::RefundStatus::Succeeded)
        .await
        .expect("final a");
    assert_eq!(a.refund_status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(a.final_source, "recon-run-1");
    assert_eq!(a.finalized_at_ms, env.clock.now_ms());
    assert_eq!(a.reason, "reconciliation says SUCCEEDED");
    assert_eq!(a.pending_steps, 1);
    assert_eq!(env.debit_status("rf-a").await, clpb::DebitStatus::Completed);
    // Idempotent: the same final status returns the order and queues nothing new.
    env.clock.advance(Duration::minutes(1));
    let again = env
        .reconcile("rf-a", pb::RefundStatus::Succeeded)
        .await
        .expect("again");
    assert_eq!(again, a);
    // The other final status is refused.
    assert_eq!(
        env.reconcile("rf-a", pb::RefundStatus::Failed).await,
        Err(ErrorCode::InvalidStateTransition)
    );
    // Late callbacks change nothing on a final order.
    assert!(!env.callback("rf-a", pb::BankStatus::BankFailed, 99).await);

    // Final failure: the debit is reversed.
    let b = env
        .reconcile("rf-b", pb::RefundStatus::Failed)
        .await
        .expect("final b");
    assert_eq!(b.refund_status, pb::RefundStatus::Failed as i32);
    assert_eq!(b.pending_steps, 1);
    assert_eq!(env.debit_status("rf-b").await, clpb::DebitStatus::Reversed);
    assert_eq!(
        env.reconcile("rf-b", pb::RefundStatus::Succeeded).await,
        Err(ErrorCode::InvalidStateTransition)
    );
    // Bad reconciliation input.
    let e = env
        .refunds
        .apply_reconciliation(pb::ApplyReconciliationRequest {
            refund_id: "rf-b".into(),
            status: pb::RefundStatus::Processing as i32,
            reason: String::new(),
            source: "run".into(),
            bank_reference_id: String::new(),
        })
        .await
        .expect_err("processing is not final");
    assert_eq!(from_status(&e).code, ErrorCode::InvalidArgument);

    // Final orders leave the reconciliation list.
    assert!(env.submitted(today()).await.is_empty());

    // The outbox keeps retrying the notifications and counts the attempts.
    let report = env
        .refunds
        .run_outbox(pb::RunOutboxRequest {})
        .await
        .expect("outbox")
        .into_inner();
    assert_eq!(
        (report.delivered, report.failed, report.remaining),
        (0, 2, 2)
    );
    assert_eq!(env.get("rf-a").await.pending_steps, 1);
    let succeeded = env
        .refunds
        .list_refunds(pb::ListRefundsRequest {
            channel: String::new(),
            refund_status: pb::RefundStatus::Succeeded as i32,
            limit: 0,
            after: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .refunds;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].pending_steps, 1);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_sqlite() {
    let db = TestDb::sqlite("refund");
    lifecycle(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_postgres() {
    let Some(db) = TestDb::postgres("refund_life") else {
        return;
    };
    lifecycle(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// A bank that refuses: SUBMIT_FAILED, waiting for people; the date bound at a day's edge.

async fn refused_and_date_bound(url: &str) {
    let mut env = Env::start(url, BankMode::Refusing).await;
    env.debit("rf-r", "t-r", NB, "10.00", "10.00").await;
    env.create(request(&env, "rf-r", "t-r", NB, "10.00"))
        .await
        .expect("r");
    let report = env.cycle().await;
    assert_eq!(
        (
            report.sent,
            report.accepted,
            report.rejected,
            report.errors,
            report.waiting
        ),
        (1, 0, 1, 0, 0)
    );
    // Refused synchronously and no other method: final FAILED, the debit goes back.
    let r = env.get("rf-r").await;
    assert_eq!(r.submit_status, pb::SubmitStatus::SubmitFailed as i32);
    assert_eq!(r.refund_status, pb::RefundStatus::Failed as i32);
    assert!(
        r.reason.starts_with("every refund method is exhausted"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("the bank refused the INTERFACE refund"),
        "{}",
        r.reason
    );
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].outcome, "FAILED");
    assert_eq!(r.final_source, "bank refusal");
    // Never sent again, never listed for reconciliation, callbacks ignored.
    assert_eq!(env.cycle().await.sent, 0);
    assert!(env.submitted(today()).await.is_empty());
    assert!(!env.callback("rf-r", pb::BankStatus::BankSucceeded, 5).await);
    assert_eq!(
        env.reconcile("rf-r", pb::RefundStatus::Succeeded).await,
        Err(ErrorCode::InvalidStateTransition)
    );
    assert_eq!(env.debit_status("rf-r").await, clpb::DebitStatus::Reversed);

    env.stop().await;

    // The date bound, with an accepting bank: a refund submitted one millisecond before the next
    // business date belongs to this date; reconciliation of the day before does not see it. The
    // refund center restarts on the same database (migrations are idempotent; old orders stay).
    let mut env = Env::start(url, BankMode::Accepting).await;
    let next = today().succ_opt().expect("date");
    env.clock
        .set(start_of_business_date(next) - Duration::milliseconds(1));
    env.debit("rf-edge", "t-edge", NB, "10.00", "10.00").await;
    env.create(request(&env, "rf-edge", "t-edge", NB, "10.00"))
        .await
        .expect("edge");
    assert_eq!(env.cycle().await.accepted, 1);
    assert_eq!(env.submitted(today()).await, vec!["rf-edge"]);
    assert!(env
        .submitted(today().pred_opt().expect("date"))
        .await
        .is_empty());
    env.clock.advance(Duration::milliseconds(1));
    env.debit("rf-late", "t-late", NB, "10.00", "10.00").await;
    env.create(request(&env, "rf-late", "t-late", NB, "10.00"))
        .await
        .expect("late");
    assert_eq!(env.cycle().await.accepted, 1);
    assert_eq!(env.submitted(today()).await, vec!["rf-edge"]);
    assert_eq!(env.submitted(next).await, vec!["rf-edge", "rf-late"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_date_bound_sqlite() {
    let db = TestDb::sqlite("refund");
    refused_and_date_bound(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_date_bound_postgres() {
    let Some(db) = TestDb::postgres("refund_refused") else {
        return;
    };
    refused_and_date_bound(db.url()).await;
}
