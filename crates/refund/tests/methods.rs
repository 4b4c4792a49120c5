//! The four refund methods, their fallbacks and the daily spreadsheets, end to end over gRPC with
//! real peers in-process: accounting and clearing (one debit, completed, reversed or returned),
//! the bank simulator (interface refunds, payouts, file batches) and the payout center. The bank's
//! seed is chosen per scenario from the simulator's own deterministic decisions, so a refund fails
//! with CARD_CANCELLED or a payout comes back exactly where the scenario needs it. The business
//! layer is unreachable on purpose (its notifications stay queued). Every scenario runs on SQLite
//! and on PostgreSQL (the refund center's database; the peers run on SQLite).

use std::io::Cursor;
use std::process::Command;

use calamine::{open_workbook_from_rs, Data, Reader, Xlsx};
use chrono::{Duration, NaiveDate};
use tuikuan_bank::domain::{Decision, SimParams, TxKind};
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::{ErrorCode, ManualClock, WorkingCalendar};
use tuikuan_proto::bank::v1 as bankpb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::clearing::v1 as clpb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::payout::v1 as popb;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::refund::v1::batch_service_client::BatchServiceClient;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::from_status;
use tuikuan_proto::tls::Principal;

mod common;

use common::{client_channel, steady_bank, Setup, Stack, MERCHANT};

const CARD: &str = "6222000011112223";
const CARD2: &str = "6222020200112233446";

/// Tuesday.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("valid date")
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
}

/// How the bank behaves: failures and returns at the given rates, the seed chosen by `want`.
struct BankPlan {
    fail_per_mille: u32,
    return_per_mille: u32,
    want: fn(&SimParams) -> bool,
}

impl BankPlan {
    fn clean() -> BankPlan {
        BankPlan {
            fail_per_mille: 0,
            return_per_mille: 0,
            want: |_| true,
        }
    }

    fn params(&self) -> SimParams {
        let base = SimParams {
            fail_per_mille: self.fail_per_mille,
            return_per_mille: self.return_per_mille,
            return_delay_secs: 600,
            ..steady_bank()
        };
        (0..100_000)
            .map(|seed| SimParams {
                seed,
                ..base.clone()
            })
            .find(|p| (self.want)(p))
            .expect("a seed that fits the scenario")
    }
}

struct Env {
    clock: ManualClock,
    refunds: RefundServiceClient<AnyCaller>,
    batches: BatchServiceClient<AnyCaller>,
    clearing: ClearingServiceClient<AnyCaller>,
    bank: BankServiceClient<AnyCaller>,
    payouts: PayoutServiceClient<AnyCaller>,
    stack: Stack,
}

impl Env {
    async fn start(refund_db: &str, plan: BankPlan, calendar: WorkingCalendar) -> Env {
        let setup = Setup {
            today: today(),
            bank: Some(plan.params()),
            payout: true,
        };
        let stack = Stack::start(refund_db, setup, |config| config.with_calendar(calendar)).await;
        Env {
            clock: stack.clock.clone(),
            refunds: RefundServiceClient::new(client_channel(Principal::Refund, &stack.refund_url)),
            batches: BatchServiceClient::new(client_channel(Principal::Refund, &stack.refund_url)),
            clearing: ClearingServiceClient::new(client_channel(
                Principal::Clearing,
                &stack.clearing_url,
            )),
            bank: BankServiceClient::new(client_channel(Principal::Bank, &stack.bank_url)),
            payouts: PayoutServiceClient::new(client_channel(
                Principal::Payout,
                stack.payout_url(),
            )),
            stack,
        }
    }

    async fn stop(self) {
        self.stack.stop().await;
    }

    async fn channel(
        &mut self,
        code: &str,
        kind: pb::ChannelKind,
        methods: &[pb::RefundMethod],
        bank: &str,
    ) {
        self.refunds
            .upsert_channel(pb::Channel {
                code: code.into(),
                kind: kind as i32,
                methods: methods.iter().map(|m| *m as i32).collect(),
                original_route_window_days: 0,
                bank_code: bank.into(),
                ..Default::default()
            })
            .await
            .expect("upsert channel");
    }

    /// Settles a payment and debits a refund of all of it.
    async fn debit(&mut self, refund_id: &str, channel: &str, amount: &str) {
        let trade_id = format!("t-{refund_id}");
        self.clearing
            .settle_payment(clpb::SettlePaymentRequest {
                trade_id: trade_id.clone(),
                merchant_id: MERCHANT.into(),
                channel: channel.into(),
                amount: amount.into(),
                currency: "CNY".into(),
                ..Default::default()
            })
            .await
            .expect("settle");
        let d = self
            .clearing
            .refund_debit(clpb::RefundDebitRequest {
                refund_id: refund_id.into(),
                trade_id,
                merchant_id: MERCHANT.into(),
                amount: amount.into(),
                currency: "CNY".into(),
                ..Default::default()
            })
            .await
            .expect("refund debit")
            .into_inner();
        assert_eq!(d.status, clpb::DebitStatus::Debited as i32);
    }

    /// Debits and creates a refund.
    async fn refund(
        &mut self,
        refund_id: &str,
        channel: &str,
        amount: &str,
        card: &str,
    ) -> pb::RefundOrder {
        self.debit(refund_id, channel, amount).await;
        self.refunds
            .create_refund(pb::CreateRefundRequest {
                refund_id: refund_id.into(),
                merchant_id: MERCHANT.into(),
                trade_id: format!("t-{refund_id}"),
                order_no: format!("00{refund_id}-20261124000000000001"),
                channel: channel.into(),
                amount: amount.into(),
                currency: "CNY".into(),
                trade_paid_at_ms: self.clock_ms() - 3_600_000,
                payer_card_no: card.into(),
                payer_name: "张三".into(),
                ..Default::default()
            })
            .await
            .expect("create refund")
            .into_inner()
    }

    fn clock_ms(&self) -> i64 {
        tuikuan_kernel::Clock::now_ms(&self.clock)
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

    async fn reconcile(
        &mut self,
        refund_id: &str,
        status: pb::RefundStatus,
        reason: &str,
        reference: &str,
    ) -> Result<pb::RefundOrder, ErrorCode> {
        self.refunds
            .apply_reconciliation(pb::ApplyReconciliationRequest {
                refund_id: refund_id.into(),
                status: status as i32,
                reason: reason.into(),
                source: "recon-run".into(),
                bank_reference_id: reference.into(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| from_status(&s).code)
    }

    /// Runs the interface cycle once.
    async fn interface_cycle(&mut self) -> pb::CycleReport {
        self.refunds
            .run_interface_cycle(pb::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("cycle")
            .into_inner()
    }

    /// Runs the payout center's cycle, lets the bank's delays pass and ticks the bank.
    async fn payout_cycle_and_bank(&mut self) {
        self.payouts
            .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
            .await
            .expect("payout cycle");
        self.clock.advance(Duration::minutes(2));
        self.bank.tick(bankpb::TickRequest {}).await.expect("tick");
        // Redeliver whatever the payout center could not deliver at once.
        self.payouts
            .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
            .await
            .expect("payout cycle");
    }

    async fn bank_tx(&mut self, payout: bool, id: &str) -> Option<bankpb::BankTransaction> {
        let req = bankpb::QueryRequest { id: id.into() };
        let r = if payout {
            self.bank.query_payout(req).await
        } else {
            self.bank.query_refund(req).await
        };
        r.ok().map(|r| r.into_inner())
    }
}

fn outcomes(o: &pb::RefundOrder) -> Vec<(i32, String)> {
    o.attempts
        .iter()
        .map(|a| (a.method, a.outcome.clone()))
        .collect()
}

// -------------------------------------------------------------------------------------------------
// Payout refunds through the payout center and the bank; a payout refused up front.

async fn payout_end_to_end(url: &str) {
    let mut env = Env::start(url, BankPlan::clean(), WorkingCalendar::default()).await;
    env.channel("QP1", pb::ChannelKind::QuickPay, &[], "ICBC")
        .await;
    env.channel(
        "QP2",
        pb::ChannelKind::QuickPay,
        &[pb::RefundMethod::Payout, pb::RefundMethod::Offline],
        "ICBC",
    )
    .await;

    // Created in real time: the payout center took it at once.
    let o = env.refund("rf-p", "QP1", "88.00", CARD).await;
    let accepted_at = env.clock_ms();
    assert_eq!(o.method, pb::RefundMethod::Payout as i32);
    assert_eq!(o.bank_reference_id, "po_rf-p_1");
    assert_eq!(o.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(o.expected_completion_ms, accepted_at + 30 * 60_000);
    assert_eq!(
        outcomes(&o),
        vec![(pb::RefundMethod::Payout as i32, "SUBMITTED".into())]
    );
    let payout = env
        .payouts
        .get_payout(popb::GetPayoutRequest {
            payout_id: "po_rf-p_1".into(),
        })
        .await
        .expect("payout")
        .into_inner();
    assert_eq!(payout.refund_id, "rf-p");
    assert_eq!(payout.card_no_masked, "**** 2223");
    assert_eq!(payout.amount, "88.00");
    // The dispatch has nothing left to do.
    let report = env
        .refunds
        .run_payout_dispatch(pb::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("dispatch")
        .into_inner();
    assert_eq!(report.sent, 0);

    // The payout center sends it; the bank pays; PAID arrives: not final.
    env.payout_cycle_and_bank().await;
    let o = env.get("rf-p").await;
    assert_eq!(o.bank_status, pb::BankStatus::BankSucceeded as i32);
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    let listed = env
        .refunds
        .list_submitted(pb::ListSubmittedRequest {
            channel: "QP1".into(),
            date: "2026-11-24".into(),
            limit: 0,
            after: String::new(),
        })
        .await
        .expect("list submitted")
        .into_inner()
        .refunds;
    assert_eq!(
        listed
            .iter()
            .map(|r| r.bank_reference_id.as_str())
            .collect::<Vec<_>>(),
        vec!["po_rf-p_1"]
    );
    // Reconciliation matched the payout id: final.
    let o = env
        .reconcile("rf-p", pb::RefundStatus::Succeeded, "matched", "po_rf-p_1")
        .await
        .expect("reconcile");
    assert_eq!(o.refund_status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(
        outcomes(&o),
        vec![(pb::RefundMethod::Payout as i32, "SUCCEEDED".into())]
    );
    assert_eq!(env.debit_status("rf-p").await, clpb::DebitStatus::Completed);
    let paid = env.bank_tx(true, "po_rf-p_1").await.expect("bank payout");
    assert_eq!(paid.status, bankpb::TxStatus::TxSucceeded as i32);
    assert!(
        env.bank_tx(false, "rf-p").await.is_none(),
        "no interface refund"
    );

    // No card: the payout is refused up front and never sent; offline takes over.
    let o = env.refund("rf-nocard", "QP2", "10.00", "").await;
    assert_eq!(o.method, pb::RefundMethod::Offline as i32);
    assert_eq!(o.attempt, 2);
    assert_eq!(o.submit_status, pb::SubmitStatus::Pending as i32);
    assert_eq!(o.attempts[0].outcome, "FAILED");
    assert!(
        o.attempts[0]
            .reason
            .starts_with("refused up front: NO_CARD"),
        "{}",
        o.attempts[0].reason
    );
    assert!(o.reason.contains("PAYOUT refused up front"), "{}", o.reason);
    let e = env
        .payouts
        .get_payout(popb::GetPayoutRequest {
            payout_id: "po_rf-nocard_1".into(),
        })
        .await
        .expect_err("never created");
    assert_eq!(from_status(&e).code, ErrorCode::PayoutNotFound);

    // Unknown refund, unknown payout, bad status.
    let update = |refund_id: &str, payout_id: &str, status: &str| pb::PayoutUpdateRequest {
        payout_id: payout_id.into(),
        refund_id: refund_id.into(),
        status: status.into(),
        reason: String::new(),
        sequence: 9,
        bank_ref: String::new(),
    };
    for (req, code) in [
        (
            update("nope", "po_nope_1", "PAID"),
            ErrorCode::RefundNotFound,
        ),
        (
            update("rf-p", "po_rf-p_7", "PAID"),
            ErrorCode::PayoutNotFound,
        ),
        (
            update("rf-p", "po_rf-p_1", "LOST"),
            ErrorCode::InvalidArgument,
        ),
    ] {
        let e = env.refunds.payout_update(req).await.expect_err("refused");
        assert_eq!(from_status(&e).code, code);
        assert_eq!(
            e.code(),
            if code == ErrorCode::InvalidArgument {
                tonic::Code::InvalidArgument
            } else {
                tonic::Code::NotFound
            }
        );
    }
    // A stale update changes nothing.
    let stale = env
        .refunds
        .payout_update(update("rf-p", "po_rf-p_1", "SENT"))
        .await
        .expect("stale")
        .into_inner();
    assert!(!stale.applied);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_end_to_end_sqlite() {
    let db = TestDb::sqlite("refund");
    payout_end_to_end(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_end_to_end_postgres() {
    let Some(db) = TestDb::postgres("refund_payout") else {
        return;
    };
    payout_end_to_end(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// Interface refund fails with CARD_CANCELLED: the payout takes over, one debit, one payment.

fn cny(amount: &str) -> tuikuan_kernel::Money {
    tuikuan_kernel::Money::parse(amount, "CNY", "amount").expect("test amount")
}

async fn card_cancelled_falls_back(url: &str) {
    let plan = BankPlan {
        fail_per_mille: 500,
        return_per_mille: 0,
        want: |p| {
            Decision::decide(p, TxKind::Refund, "rf-i", &cny("66.60"))
                .fail_reason
                .as_deref()
                == Some("CARD_CANCELLED: card cancelled")
                && Decision::decide(p, TxKind::Payout, "po_rf-i_2", &cny("66.60"))
                    .fail_reason
                    .is_none()
        },
    };
    let mut env = Env::start(url, plan, WorkingCalendar::default()).await;
    env.channel(
        "NB1",
        pb::ChannelKind::NetBanking,
        &[pb::RefundMethod::Interface, pb::RefundMethod::Payout],
        "ICBC",
    )
    .await;
    let o = env.refund("rf-i", "NB1", "66.60", CARD2).await;
    assert_eq!(o.bank_reference_id, "rf-i");
    let cycle = env
        .refunds
        .run_interface_cycle(pb::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("cycle")
        .into_inner();
    assert_eq!(cycle.accepted, 1);
    // The bank fails it (non-final callback), then reconciliation reports the failure.
    env.clock.advance(Duration::minutes(2));
    env.bank.tick(bankpb::TickRequest {}).await.expect("tick");
    let o = env.get("rf-i").await;
    assert_eq!(o.bank_status, pb::BankStatus::BankFailed as i32);
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    let bank_refund = env.bank_tx(false, "rf-i").await.expect("bank refund");
    assert_eq!(bank_refund.status, bankpb::TxStatus::TxFailed as i32);
    let o = env
        .reconcile(
            "rf-i",
            pb::RefundStatus::Failed,
            &bank_refund.reason,
            "rf-i",
        )
        .await
        .expect("fallback");
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(o.method, pb::RefundMethod::Payout as i32);
    assert_eq!((o.attempt, o.bank_reference_id.as_str()), (2, "po_rf-i_2"));
    // The payout was created at once.
    assert_eq!(o.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(
        outcomes(&o),
        vec![
            (pb::RefundMethod::Interface as i32, "FAILED".into()),
            (pb::RefundMethod::Payout as i32, "SUBMITTED".into()),
        ]
    );
    assert!(o.attempts[0].reason.starts_with("CARD_CANCELLED"));
    // No money moved: the one debit stays in transit.
    assert_eq!(env.debit_status("rf-i").await, clpb::DebitStatus::Debited);
    // The same result again (reconciliation retrying) changes nothing; a contradicting one for
    // the earlier attempt is refused, and never touches the current one.
    let again = env
        .reconcile(
            "rf-i",
            pb::RefundStatus::Failed,
            &bank_refund.reason,
            "rf-i",
        )
        .await
        .expect("repeat");
    assert_eq!(again, o);
    assert_eq!(
        env.reconcile("rf-i", pb::RefundStatus::Succeeded, "late", "rf-i")
            .await,
        Err(ErrorCode::InvalidStateTransition)
    );
    assert_eq!(
        env.reconcile("rf-i", pb::RefundStatus::Succeeded, "?", "po_rf-i_9")
            .await,
        Err(ErrorCode::NotFound)
    );

    env.payout_cycle_and_bank().await;
    let o = env
        .reconcile("rf-i", pb::RefundStatus::Succeeded, "matched", "po_rf-i_2")
        .await
        .expect("final");
    assert_eq!(o.refund_status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(env.debit_status("rf-i").await, clpb::DebitStatus::Completed);
    // Exactly one payment reached the customer.
    let refund_tx = env.bank_tx(false, "rf-i").await.expect("refund");
    let payout_tx = env.bank_tx(true, "po_rf-i_2").await.expect("payout");
    assert_eq!(refund_tx.status, bankpb::TxStatus::TxFailed as i32);
    assert_eq!(payout_tx.status, bankpb::TxStatus::TxSucceeded as i32);
    assert!(env.bank_tx(false, "rf-i-2").await.is_none());
    assert!(env.bank_tx(true, "po_rf-i_1").await.is_none());

    // A failure no other method can fix fails for good and reverses the debit.
    let o = env.refund("rf-j", "NB1", "5.00", CARD2).await;
    assert_eq!(o.method, pb::RefundMethod::Interface as i32);
    env.refunds
        .run_interface_cycle(pb::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("cycle");
    let o = env
        .reconcile("rf-j", pb::RefundStatus::Failed, "INSUFFICIENT: no", "")
        .await
        .expect("final failure");
    assert_eq!(o.refund_status, pb::RefundStatus::Failed as i32);
    assert_eq!(o.attempts.len(), 1);
    assert_eq!(env.debit_status("rf-j").await, clpb::DebitStatus::Reversed);

    env.stop().await;
}

// -------------------------------------------------------------------------------------------------
// A channel holds the refund as abnormal (WeChat Pay ABNORMAL, bill CHANGE): it waits for people,
// no payout is started and nothing is failed back; the channel's later success finishes it.

async fn abnormal_waits_for_people(url: &str) {
    let mut env = Env::start(url, BankPlan::clean(), WorkingCalendar::default()).await;
    env.channel(
        "WX1",
        pb::ChannelKind::Aggregated,
        &[pb::RefundMethod::Interface, pb::RefundMethod::Payout],
        "WECHAT",
    )
    .await;
    env.refund("rf-a", "WX1", "66.60", CARD2).await;
    assert_eq!(env.interface_cycle().await.accepted, 1);
    // The bank reports the channel's ABNORMAL (as the WeChat Pay connector words it).
    let abnormal = "BANK_ABNORMAL: WeChat Pay ABNORMAL (退款异常): the payer's card refused the \
                    refund (closed or frozen) and WeChat Pay holds the money";
    let callback = |status: pb::BankStatus, reason: &str, sequence: u64| pb::BankCallbackRequest {
        refund_id: "rf-a".into(),
        bank_ref: "wx-5030".into(),
        status: status as i32,
        reason: reason.into(),
        sequence,
    };
    env.refunds
        .bank_callback(callback(pb::BankStatus::BankFailed, abnormal, 1_000))
        .await
        .expect("callback");
    let o = env.get("rf-a").await;
    assert_eq!(o.bank_status, pb::BankStatus::BankFailed as i32);
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    assert!(o.waiting_manual, "handed to people");
    // Reconciliation's failure (bill 退款状态 CHANGE) changes nothing: no fallback, no failure.
    let o = env
        .reconcile(
            "rf-a",
            pb::RefundStatus::Failed,
            "BANK_ABNORMAL: CHANGE, refund abnormal (退款异常)",
            "rf-a",
        )
        .await
        .expect("parked");
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(o.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(
        (o.attempt, o.method),
        (1, pb::RefundMethod::Interface as i32)
    );
    assert!(o.waiting_manual);
    assert_eq!(
        outcomes(&o),
        vec![(pb::RefundMethod::Interface as i32, "SUBMITTED".into())]
    );
    let cycle = env.interface_cycle().await;
    assert_eq!((cycle.sent, cycle.waiting), (0, 1));
    env.payouts
        .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    assert!(env.bank_tx(true, "po_rf-a_2").await.is_none(), "no payout");
    assert_eq!(env.debit_status("rf-a").await, clpb::DebitStatus::Debited);

    // People handled it at the channel (发起异常退款 to another card): it reports success, and
    // reconciliation finishes the refund as usual.
    env.refunds
        .bank_callback(callback(pb::BankStatus::BankSucceeded, "", 1_001))
        .await
        .expect("callback");
    assert!(!env.get("rf-a").await.waiting_manual);
    let o = env
        .reconcile("rf-a", pb::RefundStatus::Succeeded, "matched", "rf-a")
        .await
        .expect("final");
    assert_eq!(o.refund_status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(env.debit_status("rf-a").await, clpb::DebitStatus::Completed);
    assert!(env.bank_tx(true, "po_rf-a_2").await.is_none());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_waits_for_people_sqlite() {
    let db = TestDb::sqlite("refund");
    abnormal_waits_for_people(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_waits_for_people_postgres() {
    let Some(db) = TestDb::postgres("refund_abnormal") else {
        return;
    };
    abnormal_waits_for_people(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_cancelled_falls_back_sqlite() {
    let db = TestDb::sqlite("refund");
    card_cancelled_falls_back(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_cancelled_falls_back_postgres() {
    let Some(db) = TestDb::postgres("refund_fallback") else {
        return;
    };
    card_cancelled_falls_back(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// A payout returned after the refund succeeded.

async fn returned_payout(url: &str) {
    let plan = BankPlan {
        fail_per_mille: 0,
        return_per_mille: 500,
        want: |p| {
            Decision::decide(p, TxKind::Payout, "po_rf-r_1", &cny("30.00"))
                .return_after_secs
                .is_some()
        },
    };
    let mut env = Env::start(url, plan, WorkingCalendar::default()).await;
    env.channel("QP1", pb::ChannelKind::QuickPay, &[], "ICBC")
        .await;
    env.refund("rf-r", "QP1", "30.00", CARD).await;
    env.payout_cycle_and_bank().await;
    let o = env
        .reconcile("rf-r", pb::RefundStatus::Succeeded, "matched", "po_rf-r_1")
        .await
        .expect("final");
    assert_eq!(o.refund_status, pb::RefundStatus::Succeeded as i32);
    assert_eq!(env.debit_status("rf-r").await, clpb::DebitStatus::Completed);

    // Ten minutes later the receiving bank returns it.
    env.clock.advance(Duration::minutes(11));
    env.bank.tick(bankpb::TickRequest {}).await.expect("tick");
    env.payouts
        .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    let o = env.get("rf-r").await;
    assert_eq!(o.refund_status, pb::RefundStatus::Returned as i32);
    assert!(o.reason.starts_with("RETURNED: "), "{}", o.reason);
    assert_eq!(o.attempts[0].outcome, "FAILED");
    // The money went back to the merchant through clearing; the business notifications (the
    // success, then the return) stay queued because the business layer is unreachable.
    assert_eq!(env.debit_status("rf-r").await, clpb::DebitStatus::Returned);
    assert_eq!(o.pending_steps, 2);
    let report = env
        .refunds
        .run_outbox(pb::RunOutboxRequest {})
        .await
        .expect("outbox")
        .into_inner();
    assert_eq!(
        (report.delivered, report.failed, report.remaining),
        (0, 1, 2)
    );
    // Reconciliation repeating its success is no error, and changes nothing.
    let again = env
        .reconcile("rf-r", pb::RefundStatus::Succeeded, "matched", "po_rf-r_1")
        .await
        .expect("repeat");
    assert_eq!(again.refund_status, pb::RefundStatus::Returned as i32);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_payout_sqlite() {
    let db = TestDb::sqlite("refund");
    returned_payout(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_payout_postgres() {
    let Some(db) = TestDb::postgres("refund_returned") else {
        return;
    };
    returned_payout(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// File-upload and offline batches.

fn cell_text(range: &calamine::Range<Data>, row: usize, col: usize) -> String {
    match range.get_value((row as u32, col as u32)) {
        Some(Data::String(s)) => s.clone(),
        other => panic!("cell ({row}, {col}) is not text: {other:?}"),
    }
}

fn cell_number(range: &calamine::Range<Data>, row: usize, col: usize) -> String {
    match range.get_value((row as u32, col as u32)) {
        Some(Data::Float(f)) => format!("{f:.2}"),
        Some(Data::Int(i)) => format!("{i}.00"),
        other => panic!("cell ({row}, {col}) is not a number: {other:?}"),
    }
}

async fn batches(url: &str) {
    // Christmas Friday 2026-12-25 is a holiday in this calendar; Saturday 2026-11-28 is worked.
    let calendar = WorkingCalendar {
        holidays: [d(2026, 12, 25)].into_iter().collect(),
        makeup_workdays: [d(2026, 11, 28)].into_iter().collect(),
    };
    let mut env = Env::start(url, BankPlan::clean(), calendar).await;
    env.channel("UP1", pb::ChannelKind::Unionpay, &[], "ICBC")
        .await;
    env.channel(
        "UP2",
        pb::ChannelKind::Unionpay,
        &[pb::RefundMethod::Offline, pb::RefundMethod::Payout],
        "CCB",
    )
    .await;

    let a = env.refund("rf-a", "UP1", "12.50", CARD).await;
    assert_eq!(a.method, pb::RefundMethod::FileUpload as i32);
    assert_eq!(a.bank_reference_id, "");
    env.refund("rf-b", "UP1", "1000000.05", CARD2).await;
    env.refund("rf-c", "UP2", "7.00", CARD).await;

    // Generate Tuesday's batches: one per bank and method.
    let gen = |date: &str| pb::GenerateBatchesRequest { date: date.into() };
    let r = env
        .batches
        .generate_batches(gen("2026-11-24"))
        .await
        .expect("generate")
        .into_inner();
    assert!(r.working_day);
    let ids: Vec<&str> = r.batches.iter().map(|b| b.batch_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["B20261124-CCB-OFFLINE-01", "B20261124-ICBC-FILE_UPLOAD-01"]
    );
    let icbc = r.batches[1].clone();
    assert_eq!(
        (icbc.row_count, icbc.total_amount.as_str()),
        (2, "1000012.55")
    );
    assert_eq!(icbc.channel, "UP1");
    assert_eq!(icbc.rows[0].row_id, "B20261124-ICBC-FILE_UPLOAD-01-0001");
    assert_eq!(icbc.rows[0].card_masked, "**** 2223");
    assert_eq!(icbc.status, pb::BatchStatus::Generated as i32);
    let a = env.get("rf-a").await;
    assert_eq!(a.bank_reference_id, "B20261124-ICBC-FILE_UPLOAD-01-0001");
    // Expected: the batch's working day + 1 working day.
    let end_of_25th = start_of_business_date(d(2026, 11, 26)).timestamp_millis() - 1;
    assert_eq!(a.expected_completion_ms, end_of_25th);

    // The file, read by an independent reader: the same rows and totals, numbers stay text.
    let file = env
        .batches
        .download_batch(pb::GetBatchRequest {
            batch_id: icbc.batch_id.clone(),
        })
        .await
        .expect("download")
        .into_inner();
    assert_eq!(file.file_name, "B20261124-ICBC-FILE_UPLOAD-01.xlsx");
    assert_eq!(file.sha256, icbc.file_sha256);
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(file.content.clone())).expect("xlsx");
    let sheet = wb.worksheet_range("退款明细").expect("sheet");
    assert_eq!(cell_text(&sheet, 0, 0), "序号");
    assert_eq!(cell_text(&sheet, 0, 6), "金额(元)");
    for (i, row) in icbc.rows.iter().enumerate() {
        let r = i + 1;
        assert_eq!(cell_text(&sheet, r, 1), row.row_id);
        assert_eq!(cell_text(&sheet, r, 2), row.refund_id);
        assert_eq!(cell_text(&sheet, r, 3), row.order_no);
        assert_eq!(cell_text(&sheet, r, 4), if i == 0 { CARD } else { CARD2 });
        assert_eq!(cell_text(&sheet, r, 5), row.holder_name);
        assert_eq!(cell_number(&sheet, r, 6), row.amount);
        assert_eq!(cell_text(&sheet, r, 8), "2026-11-24");
    }
    // After an empty row: the count and the total.
    assert!(sheet.get_value((3, 0)).is_none_or(|v| *v == Data::Empty));
    assert_eq!(cell_text(&sheet, 4, 0), "笔数 COUNT");
    assert_eq!(cell_number(&sheet, 4, 1), "2.00");
    assert_eq!(cell_text(&sheet, 5, 0), "总金额 TOTAL");
    assert_eq!(cell_number(&sheet, 5, 1), icbc.total_amount);
    // CCB's template: another order, %Y%m%d and fen.
    let ccb_file = env
        .batches
        .download_batch(pb::GetBatchRequest {
            batch_id: "B20261124-CCB-OFFLINE-01".into(),
        })
        .await
        .expect("download")
        .into_inner();
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(ccb_file.content)).expect("xlsx");
    let sheet = wb.worksheet_range("REFUNDS").expect("sheet");
    assert_eq!(cell_text(&sheet, 0, 0), "Value Date");
    assert_eq!(cell_text(&sheet, 1, 0), "20261124");
    assert_eq!(cell_number(&sheet, 1, 4), "700.00");
    libreoffice_row_count(&file.content, icbc.rows.len() + 4);

    // Immutable: generating the same day again changes nothing; a later refund gets a new batch.
    let again = env
        .batches
        .generate_batches(gen("2026-11-24"))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.batches, r.batches);
    env.clock.advance(Duration::hours(1));
    env.refund("rf-d", "UP1", "3.00", CARD).await;
    let more = env
        .batches
        .generate_batches(gen("2026-11-24"))
        .await
        .expect("more")
        .into_inner();
    assert_eq!(more.batches.len(), 3);
    assert_eq!(more.batches[2].batch_id, "B20261124-ICBC-FILE_UPLOAD-02");
    assert_eq!(more.batches[2].rows[0].line, 1);
    assert_eq!(more.batches[1], icbc);

    // Marking: the wrong status for the method, an operator is required.
    let mark = |id: &str, status: pb::BatchStatus, op: &str| pb::MarkBatchRequest {
        batch_id: id.into(),
        status: status as i32,
        operator: op.into(),
        note: String::new(),
    };
    let e = env
        .batches
        .mark_batch(mark(&icbc.batch_id, pb::BatchStatus::Sent, "alice"))
        .await
        .expect_err("wrong status");
    assert_eq!(from_status(&e).code, ErrorCode::InvalidArgument);
    // The operator is the token's: another name in the request is refused.
    let mut other = tonic::Request::new(mark(&icbc.batch_id, pb::BatchStatus::Uploaded, "mallory"));
    other.metadata_mut().insert(
        "authorization",
        tuikuan_auth::testing::bearer_for("alice", "ops")
            .parse()
            .unwrap(),
    );
    let e = env
        .batches
        .mark_batch(other)
        .await
        .expect_err("not the token's operator");
    assert_eq!(from_status(&e).code, ErrorCode::InvalidArgument);
    // Rows cannot fail before the batch is with the bank.
    let fail = |id: &str, row: &str| pb::MarkRowsRequest {
        batch_id: id.into(),
        failed: vec![pb::RowResult {
            row_id: row.into(),
            reason: "ACCOUNT_CLOSED: closed".into(),
        }],
        operator: "bob".into(),
        source: "bank result file".into(),
    };
    let e = env
        .batches
        .mark_rows(fail(
            "B20261124-CCB-OFFLINE-01",
            "B20261124-CCB-OFFLINE-01-0001",
        ))
        .await
        .expect_err("not marked");
    assert_eq!(from_status(&e).code, ErrorCode::InvalidStateTransition);

    let marked = env
        .batches
        .mark_batch(mark(&icbc.batch_id, pb::BatchStatus::Uploaded, "alice"))
        .await
        .expect("mark")
        .into_inner();
    assert_eq!(marked.status, pb::BatchStatus::Uploaded as i32);
    assert_eq!(marked.marked_by, "alice");
    assert!(marked
        .rows
        .iter()
        .all(|r| r.status == pb::RowStatus::RowSubmitted as i32));
    let a = env.get("rf-a").await;
    assert_eq!(a.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(a.attempts[0].outcome, "SUBMITTED");
    // Idempotent.
    let again = env
        .batches
        .mark_batch(mark(&icbc.batch_id, pb::BatchStatus::Uploaded, "carol"))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.marked_by, "alice");
    // The bank received the rows and reports them by row id in its clearing file.
    assert!(again.bank_delivered);
    env.clock.advance(Duration::minutes(2));
    env.bank.tick(bankpb::TickRequest {}).await.expect("tick");
    let clearing_file = env
        .bank
        .get_clearing_file(bankpb::GetClearingFileRequest {
            channel: "UP1".into(),
            date: "2026-11-24".into(),
        })
        .await
        .expect("clearing file")
        .into_inner();
    let text = String::from_utf8(clearing_file.content).expect("utf-8");
    for row in &icbc.rows {
        assert!(text.contains(&row.row_id), "{text}");
    }

    // The offline batch: sent; its row fails at the bank -> the next method (payout) takes over.
    env.batches
        .mark_batch(mark(
            "B20261124-CCB-OFFLINE-01",
            pb::BatchStatus::Sent,
            "alice",
        ))
        .await
        .expect("mark offline");
    let after = env
        .batches
        .mark_rows(fail(
            "B20261124-CCB-OFFLINE-01",
            "B20261124-CCB-OFFLINE-01-0001",
        ))
        .await
        .expect("mark rows")
        .into_inner();
    assert_eq!(after.rows[0].status, pb::RowStatus::RowFailed as i32);
    let c = env.get("rf-c").await;
    assert_eq!(c.method, pb::RefundMethod::Payout as i32);
    assert_eq!(c.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(c.bank_reference_id, "po_rf-c_2");
    assert_eq!(c.submit_status, pb::SubmitStatus::Submitted as i32);
    assert_eq!(env.debit_status("rf-c").await, clpb::DebitStatus::Debited);
    // A file row failing with no method left: final FAILED, the debit goes back.
    env.batches
        .mark_rows(fail(&icbc.batch_id, "B20261124-ICBC-FILE_UPLOAD-01-0002"))
        .await
        .expect("mark rows");
    let b = env.get("rf-b").await;
    assert_eq!(b.refund_status, pb::RefundStatus::Failed as i32);
    assert_eq!(env.debit_status("rf-b").await, clpb::DebitStatus::Reversed);
    // Repeating changes nothing.
    env.batches
        .mark_rows(fail(&icbc.batch_id, "B20261124-ICBC-FILE_UPLOAD-01-0002"))
        .await
        .expect("repeat");
    assert_eq!(env.get("rf-b").await, b);
    // Reconciliation of the remaining file row by its row id.
    let a = env
        .reconcile(
            "rf-a",
            pb::RefundStatus::Succeeded,
            "matched",
            "B20261124-ICBC-FILE_UPLOAD-01-0001",
        )
        .await
        .expect("reconcile file row");
    assert_eq!(a.refund_status, pb::RefundStatus::Succeeded as i32);

    // A holiday: nothing is generated; a refund accepted on it joins the next working day.
    env.clock
        .set(start_of_business_date(d(2026, 12, 25)) + Duration::hours(10));
    env.refund("rf-h", "UP1", "9.99", CARD).await;
    let holiday = env
        .batches
        .generate_batches(gen("2026-12-25"))
        .await
        .expect("holiday")
        .into_inner();
    assert!(!holiday.working_day);
    assert!(holiday.batches.is_empty());
    // Saturday 26th and Sunday 27th are weekend days; Monday the 28th is the next working day.
    let weekend = env
        .batches
        .generate_batches(gen("2026-12-26"))
        .await
        .expect("weekend")
        .into_inner();
    assert!(!weekend.working_day);
    let monday = env
        .batches
        .generate_batches(gen("2026-12-28"))
        .await
        .expect("monday")
        .into_inner();
    assert!(monday.working_day);
    assert_eq!(monday.batches.len(), 1);
    assert_eq!(monday.batches[0].rows[0].refund_id, "rf-h");
    // The make-up Saturday of November is a working day.
    let makeup = env
        .batches
        .generate_batches(gen("2026-11-28"))
        .await
        .expect("makeup")
        .into_inner();
    assert!(makeup.working_day);

    // Templates: the built-ins are listed; a configured one overrides.
    let list = env
        .batches
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .expect("templates")
        .into_inner()
        .templates;
    assert_eq!(
        list.iter()
            .map(|t| t.bank_code.as_str())
            .collect::<Vec<_>>(),
        vec!["CCB", "ICBC"]
    );
    let mut custom = list[1].clone();
    custom.sheet_name = "Sheet1".into();
    custom.amount_format = "FEN".into();
    let saved = env
        .batches
        .upsert_template(custom.clone())
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(saved, custom);
    custom.date_format = "%Q".into();
    let e = env
        .batches
        .upsert_template(custom)
        .await
        .expect_err("bad format");
    assert_eq!(from_status(&e).code, ErrorCode::InvalidArgument);

    env.stop().await;
}

/// Converts the file to CSV with LibreOffice, where installed, and checks the line count.
fn libreoffice_row_count(xlsx: &[u8], expected_lines: usize) {
    let office = ["soffice", "libreoffice"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(office) = office else {
        eprintln!("LibreOffice is not installed; skipping the LibreOffice conversion check");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("batch.xlsx");
    std::fs::write(&path, xlsx).expect("write");
    let out = Command::new(office)
        .arg("--headless")
        .arg("--convert-to")
        .arg("csv")
        .arg("--outdir")
        .arg(dir.path())
        .arg(&path)
        .output()
        .expect("run libreoffice");
    assert!(out.status.success(), "libreoffice failed: {out:?}");
    let csv = std::fs::read_to_string(dir.path().join("batch.csv")).expect("csv");
    assert_eq!(csv.lines().count(), expected_lines, "{csv}");
    assert!(csv.contains(CARD), "the card number stays text: {csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sqlite() {
    let db = TestDb::sqlite("refund");
    batches(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_postgres() {
    let Some(db) = TestDb::postgres("refund_batches") else {
        return;
    };
    batches(db.url()).await;
}
