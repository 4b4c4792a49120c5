//! The clearing center end to end: a real accounting service and a real clearing service over
//! gRPC, on SQLite and on PostgreSQL.

// Both services run under mutual TLS with the test PKI; the driver plays several callers
// (business, refund, reconciliation, staff) through `AnyCaller`, each request under the
// certificate of a caller the allow-list admits for it.
use std::sync::Arc;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::pki::test_transport;
use tuikuan_proto::tls::Principal;

use tonic::Code;
use tuikuan_accounting::domain::{AccountKey, AccountType, Side};
use tuikuan_accounting::AccountingClient;
use tuikuan_clearing::{Clearing, Config};
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Currency, ManualClock, Money, SharedClock};
use tuikuan_proto::accounting::v1 as apb;
use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
use tuikuan_proto::clearing::v1 as pb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::server::ServiceHandle;

#[path = "clearing/reinstate.rs"]
mod reinstate;
use reinstate::reinstated_debits;
#[path = "clearing/coupons.rs"]
mod coupons;
use coupons::coupon_only_refund;
#[path = "clearing/shortfall.rs"]
mod shortfall;
use shortfall::{advance_line_currency, error_refund_when_short};

type Ledger = AccountingServiceClient<AnyCaller>;
type Client = ClearingServiceClient<AnyCaller>;

fn clock() -> SharedClock {
    let start = chrono::DateTime::from_timestamp_millis(1_795_000_000_000).expect("instant");
    Arc::new(ManualClock::new(start))
}

async fn start_accounting(bind: &str, url: &str) -> ServiceHandle {
    let cfg = tuikuan_accounting::Config {
        database_url: url.to_string(),
        clock: clock(),
        job_interval: None,
        transport: test_transport(Principal::Accounting),
        staff: tuikuan_auth::StaffConfig::tester(),
    };
    tuikuan_proto::server::spawn(bind, move |l, s| tuikuan_accounting::serve(cfg, l, s))
        .await
        .expect("spawn accounting")
}

fn clearing_config(url: &str, accounting_addr: &str) -> Config {
    Config {
        database_url: url.to_string(),
        clock: clock(),
        accounting_addr: accounting_addr.to_string(),
        job_interval: None,
        transport: test_transport(Principal::Clearing),
        staff: tuikuan_auth::StaffConfig::tester(),
    }
}

async fn start_clearing(url: &str, accounting_addr: &str) -> ServiceHandle {
    let cfg = clearing_config(url, accounting_addr);
    tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
        tuikuan_clearing::serve(cfg, l, s)
    })
    .await
    .expect("spawn clearing")
}

struct Env {
    accounting: ServiceHandle,
    clearing: ServiceHandle,
    ledger: Ledger,
    client: Client,
}

impl Env {
    async fn start(accounting_url: &str, clearing_url: &str) -> Env {
        let accounting = start_accounting("127.0.0.1:0", accounting_url).await;
        let clearing = start_clearing(clearing_url, &accounting.url()).await;
        let ledger =
            AccountingServiceClient::new(AnyCaller::new(Principal::Accounting, &accounting.url()));
        let client =
            ClearingServiceClient::new(AnyCaller::new(Principal::Clearing, &clearing.url()));
        Env {
            accounting,
            clearing,
            ledger,
            client,
        }
    }

    async fn stop(self) {
        self.clearing.stop().await.expect("stop clearing");
        self.accounting.stop().await.expect("stop accounting");
    }

    async fn policy(&mut self, merchant: &str, rate: &str, fee_refund: pb::FeeRefundPolicy) {
        let p = self
            .client
            .upsert_merchant_policy(pb::MerchantPolicy {
                merchant_id: merchant.to_string(),
                fee_rate: rate.to_string(),
                fee_refund: fee_refund as i32,
                ..Default::default()
            })
            .await
            .expect("policy")
            .into_inner();
        assert_eq!(p.merchant_id, merchant);
    }

    async fn settle(
        &mut self,
        trade: &str,
        merchant: &str,
        amount: &str,
    ) -> Result<pb::Settlement, tonic::Status> {
        self.client
            .settle_payment(settle_req(trade, merchant, amount))
            .await
            .map(|r| r.into_inner())
    }

    async fn debit(
        &mut self,
        refund: &str,
        trade: &str,
        merchant: &str,
        amount: &str,
    ) -> Result<pb::Debit, tonic::Status> {
        self.client
            .refund_debit(debit_req(refund, trade, merchant, amount))
            .await
            .map(|r| r.into_inner())
    }

    async fn reverse(&mut self, refund: &str) -> Result<pb::Debit, tonic::Status> {
        self.client
            .reverse_debit(pb::ReverseDebitRequest {
                refund_id: refund.to_string(),
                reason: "refund center rejected it".to_string(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn complete(&mut self, refund: &str) -> Result<pb::Debit, tonic::Status> {
        self.client
            .complete_debit(pb::CompleteDebitRequest {
                refund_id: refund.to_string(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn get_debit(&mut self, refund: &str) -> pb::Debit {
        self.client
            .get_debit(pb::GetDebitRequest {
                refund_id: refund.to_string(),
            })
            .await
            .expect("get debit")
            .into_inner()
    }

    async fn balance(&mut self, t: apb::AccountType, owner: &str) -> String {
        self.ledger
            .get_balance(apb::GetBalanceRequest {
                account: Some(account(t, owner)),
                ..Default::default()
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
    }

    async fn posting_exists(&mut self, request_id: &str) -> bool {
        match self
            .ledger
            .get_posting(apb::GetPostingRequest {
                request_id: request_id.to_string(),
            })
            .await
        {
            Ok(_) => true,
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => panic!("get posting {request_id}: {s:?}"),
        }
    }

    async fn postings_of(&mut self, t: apb::AccountType, owner: &str) -> Vec<apb::Posting> {
        self.ledger
            .list_postings(apb::ListPostingsRequest {
                account: Some(account(t, owner)),
                limit: 1000,
                after: String::new(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .postings
    }

    async fn assert_trial_balanced(&mut self) {
        let tb = self
            .ledger
            .trial_balance(apb::TrialBalanceRequest::default())
            .await
            .expect("trial balance")
            .into_inner();
        assert!(tb.balanced, "{tb:?}");
    }
}

fn account(t: apb::AccountType, owner: &str) -> apb::Account {
    apb::Account {
        r#type: t as i32,
        owner: owner.to_string(),
        currency: "CNY".to_string(),
    }
}

fn settle_req(trade: &str, merchant: &str, amount: &str) -> pb::SettlePaymentRequest {
    pb::SettlePaymentRequest {
        trade_id: trade.to_string(),
        merchant_id: merchant.to_string(),
        channel: "netbank".to_string(),
        amount: amount.to_string(),
        currency: "CNY".to_string(),
        ..Default::default()
    }
}

fn debit_req(refund: &str, trade: &str, merchant: &str, amount: &str) -> pb::RefundDebitRequest {
    pb::RefundDebitRequest {
        refund_id: refund.to_string(),
        trade_id: trade.to_string(),
        merchant_id: merchant.to_string(),
        amount: amount.to_string(),
        currency: "CNY".to_string(),
        ..Default::default()
    }
}

fn code_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("tk-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn status(d: &pb::Debit) -> pb::DebitStatus {
    pb::DebitStatus::try_from(d.status).expect("known status")
}

use apb::AccountType::{
    Advance, ChannelReserve, FeeIncome, MerchantSettlement, OwnFunds, PlatformInReserve,
    RefundInTransit, Subsidy, SuspenseBankClaim, SuspenseOwedCustomer,
};

fn adjustment_req(
    id: &str,
    kind: pb::AdjustmentKind,
    amount: &str,
    memo: &str,
) -> pb::AdjustmentRequest {
    pb::AdjustmentRequest {
        adjustment_id: id.to_string(),
        kind: kind as i32,
        channel: "netbank".to_string(),
        amount: amount.to_string(),
        currency: "CNY".to_string(),
        memo: memo.to_string(),
        ..Default::default()
    }
}

fn return_req(refund: &str, reason: &str) -> pb::ReturnDebitRequest {
    pb::ReturnDebitRequest {
        refund_id: refund.to_string(),
        reason: reason.to_string(),
        ..Default::default()
    }
}

// ---------- scenarios ----------

async fn settle_debit_complete(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;

    // Unknown merchant.
    let err = env
        .settle("t0", "nobody", "1.00")
        .await
        .expect_err("no policy");
    assert_eq!(code_of(&err), "MERCHANT_NOT_FOUND");

    // Settle: fee 0.60, net 99.40; repeats return the same settlement, one posting.
    let s = env.settle("t1", "m1", "100.00").await.expect("settle");
    assert_eq!((s.fee.as_str(), s.net.as_str()), ("0.60", "99.40"));
    assert!(s.posting_id.starts_with("pst_"));
    let again = env.settle("t1", "m1", "100").await.expect("repeat");
    assert_eq!(again, s);
    let err = env
        .settle("t1", "m1", "100.01")
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "99.40");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.60");
    // The customers' part of the reserve is what the merchant holds; the fee is the platform's.
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "99.40");
    assert_eq!(env.balance(PlatformInReserve, "netbank").await, "0.60");

    // Full refund debit: the merchant part is 99.40, the fee share 0.60.
    let d = env.debit("rf1", "t1", "m1", "100.00").await.expect("debit");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    assert_eq!(
        (d.merchant_amount.as_str(), d.fee_amount.as_str()),
        ("99.40", "0.60")
    );
    assert_eq!(d.channel, "netbank");
    assert!(d.debit_posting_id.starts_with("pst_"));
    let again = env
        .debit("rf1", "t1", "m1", "100.00")
        .await
        .expect("repeat debit");
    assert_eq!(again, d);
    let err = env
        .debit("rf1", "t1", "m1", "99.00")
        .await
        .expect_err("conflict");
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "100.00");
    // The fee share given back came from the platform's own funds into the reserve.
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "100.00");
    assert_eq!(env.balance(OwnFunds, "platform").await, "-0.60");

    // Complete: the money leaves through the channel reserve.
    let c = env.complete("rf1").await.expect("complete");
    assert_eq!(status(&c), pb::DebitStatus::Completed);
    assert!(c.final_posting_id.starts_with("pst_"));
    let again = env.complete("rf1").await.expect("repeat complete");
    assert_eq!(again, c);
    let err = env.reverse("rf1").await.expect_err("completed");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");

    // merchant settlement = amount − fee − merchant part = 100 − 0.60 − 99.40.
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.00");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "0.00");

    // Each step posted exactly once.
    let postings = env.postings_of(MerchantSettlement, "m1").await;
    let ids: Vec<&str> = postings.iter().map(|p| p.request_id.as_str()).collect();
    assert_eq!(ids, vec!["settle:t1", "refund-debit:rf1"]);
    let reserve = env.postings_of(ChannelReserve, "netbank").await;
    assert_eq!(reserve.len(), 3);
    assert_eq!(reserve[2].request_id, "refund-complete:rf1");
    env.assert_trial_balanced().await;

    // Bad input.
    let err = env
        .debit("rf 2", "t1", "m1", "1.00")
        .await
        .expect_err("bad id");
    assert_eq!(code_of(&err), "MALFORMED_ID");
    let err = env.debit("rf2", "t1", "m1", "0").await.expect_err("zero");
    assert_eq!(code_of(&err), "INVALID_AMOUNT");
    let err = env
        .client
        .upsert_merchant_policy(pb::MerchantPolicy {
            merchant_id: "m9".into(),
            fee_rate: "0.25".into(),
            fee_refund: pb::FeeRefundPolicy::None as i32,
            ..Default::default()
        })
        .await
        .expect_err("rate too high");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    let p = env
        .client
        .get_merchant_policy(pb::GetMerchantPolicyRequest {
            merchant_id: "m1".into(),
        })
        .await
        .expect("get policy")
        .into_inner();
    assert_eq!(
        (p.fee_rate.as_str(), p.fee_refund),
        ("0.006", pb::FeeRefundPolicy::Proportional as i32)
    );
    env.stop().await;
}

async fn partial_refunds_and_rules(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.policy("m2", "0.01", pb::FeeRefundPolicy::None).await;
    env.settle("t1", "m1", "100.00").await.expect("settle t1");

    // Three partial refunds: the fee shares add up to exactly the fee.
    let mut fee_total = 0i64;
    for (i, amount) in ["33.33", "33.33", "33.34"].iter().enumerate() {
        let d = env
            .debit(&format!("rf{i}"), "t1", "m1", amount)
            .await
            .expect("partial");
        assert_eq!(status(&d), pb::DebitStatus::Debited);
        fee_total += Money::parse(&d.fee_amount, "CNY", "fee")
            .map(|m| m.to_minor())
            .unwrap_or(0);
    }
    assert_eq!(fee_total, 60);
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.00");

    // Nothing is left to refund.
    let err = env
        .debit("rf9", "t1", "m1", "0.01")
        .await
        .expect_err("exceeds");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    assert!(!env.posting_exists("refund-debit:rf9").await);

    // NONE: the merchant bears the whole refund, the fee is kept.
    let s = env.settle("t2", "m2", "50.00").await.expect("settle t2");
    assert_eq!((s.fee.as_str(), s.net.as_str()), ("0.50", "49.50"));
    let d = env.debit("rf20", "t2", "m2", "10.00").await.expect("debit");
    assert_eq!(
        (d.merchant_amount.as_str(), d.fee_amount.as_str()),
        ("10.00", "0.00")
    );
    assert_eq!(env.balance(MerchantSettlement, "m2").await, "39.50");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.50");

    // Another merchant's trade is not found; an unknown trade was never settled.
    let err = env
        .debit("rf21", "t2", "m1", "1.00")
        .await
        .expect_err("other merchant");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(code_of(&err), "TRADE_NOT_FOUND");
    let err = env
        .debit("rf22", "nope", "m1", "1.00")
        .await
        .expect_err("unknown trade");
    assert_eq!(code_of(&err), "SETTLEMENT_NOT_FOUND");
    let err = env
        .client
        .refund_debit(pb::RefundDebitRequest {
            currency: "USD".into(),
            ..debit_req("rf23", "t2", "m2", "1.00")
        })
        .await
        .expect_err("currency");
    assert_eq!(code_of(&err), "CURRENCY_MISMATCH");
    env.assert_trial_balanced().await;
    env.stop().await;
}

async fn reverse_gives_back(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");

    let err = env.reverse("nope").await.expect_err("unknown");
    assert_eq!(code_of(&err), "DEBIT_NOT_FOUND");

    env.debit("rf1", "t1", "m1", "50.00").await.expect("debit");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "49.70");
    let r = env.reverse("rf1").await.expect("reverse");
    assert_eq!(status(&r), pb::DebitStatus::Reversed);
    assert!(r.final_posting_id.starts_with("pst_"));
    let again = env.reverse("rf1").await.expect("repeat");
    assert_eq!(again, r);
    let err = env.complete("rf1").await.expect_err("reversed");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "99.40");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.60");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");
    let ids: Vec<String> = env
        .postings_of(RefundInTransit, "platform")
        .await
        .into_iter()
        .map(|p| p.request_id)
        .collect();
    assert_eq!(ids, vec!["refund-debit:rf1", "refund-reverse:rf1"]);

    // The trade's counters were given back: the whole amount can be refunded again.
    let d = env
        .debit("rf2", "t1", "m1", "100.00")
        .await
        .expect("full refund");
    assert_eq!(d.fee_amount, "0.60");
    env.assert_trial_balanced().await;
    env.stop().await;
}

async fn insufficient_balance(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    // The merchant's balance left (a withdrawal posted straight to the ledger).
    let ledger =
        AccountingClient::connect(&test_transport(Principal::Clearing), &env.accounting.url())
            .expect("client");
    let out = Money::parse("90.00", "CNY", "a").expect("amount");
    ledger
        .post(
            "withdrawal:w1",
            "merchant withdrawal",
            vec![
                (
                    AccountKey::merchant_settlement("m1", Currency::Cny),
                    Side::Debit,
                    out,
                ),
                (
                    AccountKey::platform(AccountType::Suspense, Currency::Cny),
                    Side::Credit,
                    out,
                ),
            ],
        )
        .await
        .expect("withdraw");

    let err = env
        .debit("rf1", "t1", "m1", "50.00")
        .await
        .expect_err("insufficient");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");
    assert!(!env.posting_exists("refund-debit:rf1").await);
    let d = env.get_debit("rf1").await;
    assert_eq!(status(&d), pb::DebitStatus::Rejected);
    // A retry says the same; reversing a rejected debit returns it; completing is not allowed.
    let err = env
        .debit("rf1", "t1", "m1", "50.00")
        .await
        .expect_err("again");
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");
    let r = env.reverse("rf1").await.expect("reverse rejected");
    assert_eq!(status(&r), pb::DebitStatus::Rejected);
    assert!(r.final_posting_id.is_empty());
    let err = env.complete("rf1").await.expect_err("complete rejected");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "9.40");

    // The rejected amount went back to the trade: a refund that fits succeeds, then the rest of
    // the trade is still refundable in principle (only the balance limits it).
    let d = env.debit("rf2", "t1", "m1", "9.00").await.expect("fits");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    let err = env
        .debit("rf3", "t1", "m1", "91.01")
        .await
        .expect_err("exceeds");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    env.assert_trial_balanced().await;
    env.stop().await;
}

async fn concurrent_partial_debits(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut c = env.client.clone();
        tasks.push(tokio::spawn(async move {
            c.refund_debit(debit_req(&format!("rf{i}"), "t1", "m1", "5.00"))
                .await
        }));
    }
    let (mut ok, mut amount, mut fee) = (0, 0i64, 0i64);
    for t in futures::future::join_all(tasks).await {
        match t.expect("task") {
            Ok(d) => {
                let d = d.into_inner();
                assert_eq!(status(&d), pb::DebitStatus::Debited);
                ok += 1;
                amount += Money::parse(&d.amount, "CNY", "a")
                    .map(|m| m.to_minor())
                    .unwrap_or(0);
                fee += Money::parse(&d.fee_amount, "CNY", "f")
                    .map(|m| m.to_minor())
                    .unwrap_or(0);
            }
            Err(e) => assert_eq!(code_of(&e), "REFUND_EXCEEDS_PAID", "{e:?}"),
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(amount, 10_000);
    assert_eq!(fee, 60);
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "100.00");
    assert_eq!(env.postings_of(RefundInTransit, "platform").await.len(), 20);
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Accounting goes away: the settlement and the debit stay PENDING and say UNAVAILABLE; when it
/// is back, the recovery job finishes them with the same keys.
async fn recovery_after_outage(acc: &str, clr: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let accounting_addr = format!("http://{port}");
    let clearing = start_clearing(clr, &accounting_addr).await;
    let mut client =
        ClearingServiceClient::new(AnyCaller::new(Principal::Clearing, &clearing.url()));
    client
        .upsert_merchant_policy(pb::MerchantPolicy {
            merchant_id: "m1".into(),
            fee_rate: "0.006".into(),
            fee_refund: pb::FeeRefundPolicy::Proportional as i32,
            ..Default::default()
        })
        .await
        .expect("policy");

    // Accounting is down.
    let err = client
        .settle_payment(settle_req("t1", "m1", "100.00"))
        .await
        .expect_err("unavailable");
    assert_eq!(code_of(&err), "UNAVAILABLE");
    // Not posted yet, so no refund may be debited against it.
    let err = client
        .refund_debit(debit_req("rf1", "t1", "m1", "10.00"))
        .await
        .expect_err("not settled");
    assert_eq!(code_of(&err), "SETTLEMENT_NOT_FOUND");

    // Accounting comes up; the recovery job posts the settlement.
    let accounting = start_accounting(&port.to_string(), acc).await;
    let recovery = Clearing::open(&clearing_config(clr, &accounting_addr)).expect("open");
    let report = recovery.run_recovery().await.expect("recovery");
    assert_eq!(report.settlements_posted, 1);
    let mut ledger =
        AccountingServiceClient::new(AnyCaller::new(Principal::Accounting, &accounting_addr));
    let settled = ledger
        .get_posting(apb::GetPostingRequest {
            request_id: "settle:t1".into(),
        })
        .await
        .expect("settled")
        .into_inner();
    let s = client
        .settle_payment(settle_req("t1", "m1", "100.00"))
        .await
        .expect("settle replay")
        .into_inner();
    assert_eq!(s.posting_id, settled.posting_id);

    // Accounting goes down again during a refund debit.
    accounting.stop().await.expect("stop accounting");
    let err = client
        .refund_debit(debit_req("rf1", "t1", "m1", "10.00"))
        .await
        .expect_err("unavailable");
    assert_eq!(code_of(&err), "UNAVAILABLE");
    let d = client
        .get_debit(pb::GetDebitRequest {
            refund_id: "rf1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&d), pb::DebitStatus::Pending);
    let err = client
        .complete_debit(pb::CompleteDebitRequest {
            refund_id: "rf1".into(),
            ..Default::default()
        })
        .await
        .expect_err("still down");
    assert_eq!(code_of(&err), "UNAVAILABLE");

    let accounting = start_accounting(&port.to_string(), acc).await;
    let report = recovery.run_recovery().await.expect("recovery");
    assert_eq!(report.debits_finished, 1);
    let d = client
        .get_debit(pb::GetDebitRequest {
            refund_id: "rf1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    let report = recovery.run_recovery().await.expect("nothing left");
    assert!(report.is_empty(), "{report:?}");
    let rit = ledger
        .get_balance(apb::GetBalanceRequest {
            account: Some(account(RefundInTransit, "platform")),
            ..Default::default()
        })
        .await
        .expect("balance")
        .into_inner();
    assert_eq!(rit.balance, "10.00");
    clearing.stop().await.expect("stop clearing");
    accounting.stop().await.expect("stop accounting");
}

/// A completed refund's payout comes back (退票): the money goes from the channel reserve back to
/// the merchant and the fee income, once, and the amount is refundable again.
async fn returned_payout(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    let d = env.debit("rf1", "t1", "m1", "50.00").await.expect("debit");
    assert_eq!(
        (d.merchant_amount.as_str(), d.fee_amount.as_str()),
        ("49.70", "0.30")
    );

    // Only a COMPLETED debit can be returned.
    let err = env
        .client
        .return_debit(return_req("rf1", "x"))
        .await
        .expect_err("debited");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");
    let err = env
        .client
        .return_debit(return_req("nope", "x"))
        .await
        .expect_err("unknown");
    assert_eq!(code_of(&err), "DEBIT_NOT_FOUND");
    let err = env
        .client
        .return_debit(return_req("rf 1", "x"))
        .await
        .expect_err("bad id");
    assert_eq!(code_of(&err), "MALFORMED_ID");
    let err = env
        .client
        .return_debit(return_req("rf1", &"r".repeat(513)))
        .await
        .expect_err("long reason");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");

    let completed = env.complete("rf1").await.expect("complete");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "49.70");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "49.70");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.30");

    let reason = "ACCOUNT_CLOSED: account closed";
    let r = env
        .client
        .return_debit(return_req("rf1", reason))
        .await
        .expect("return")
        .into_inner();
    assert_eq!(status(&r), pb::DebitStatus::Returned);
    assert!(r.final_posting_id.starts_with("pst_"));
    assert_ne!(r.final_posting_id, completed.final_posting_id);
    assert_eq!(r.debit_posting_id, completed.debit_posting_id);
    // Idempotent: the same answer, one posting.
    let again = env
        .client
        .return_debit(return_req("rf1", "another reason"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, r);
    assert!(env.posting_exists("refund-return:rf1").await);
    let reserve = env.postings_of(ChannelReserve, "netbank").await;
    let ids: Vec<&str> = reserve.iter().map(|p| p.request_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "settle:t1",
            "refund-debit:rf1",
            "refund-complete:rf1",
            "refund-return:rf1"
        ]
    );

    // 50.00 back in the reserve bank account: Cr MERCHANT_SETTLEMENT 49.70, Cr FEE_INCOME 0.30;
    // the customers' part is the merchant's 49.70, the fee share stays with the platform.
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "99.40");
    assert_eq!(env.balance(PlatformInReserve, "netbank").await, "0.90");
    assert_eq!(env.balance(OwnFunds, "platform").await, "-0.30");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "99.40");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.60");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");

    // A returned debit is neither reversed nor completed again (a late CompleteDebit retry
    // answers with the debit as it is).
    let err = env.reverse("rf1").await.expect_err("returned");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");
    let late = env.complete("rf1").await.expect("late complete");
    assert_eq!(status(&late), pb::DebitStatus::Returned);

    // The trade's counters were given back: the whole payment is refundable again, fee included.
    let full = env
        .debit("rf2", "t1", "m1", "100.00")
        .await
        .expect("full refund");
    assert_eq!(
        (full.merchant_amount.as_str(), full.fee_amount.as_str()),
        ("99.40", "0.60")
    );
    let err = env
        .debit("rf3", "t1", "m1", "0.01")
        .await
        .expect_err("exhausted");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Reconciliation's corrections move money between a channel's reserve and its suspense account,
/// idempotently.
async fn adjustments(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0", pb::FeeRefundPolicy::None).await;
    env.settle("t1", "m1", "100.00").await.expect("settle");

    let a = env
        .client
        .post_adjustment(adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "5",
            "bank-only row BK9; ops: li",
        ))
        .await
        .expect("adjust")
        .into_inner();
    assert_eq!(a.adjustment_id, "adj1");
    assert_eq!(a.kind, pb::AdjustmentKind::BankToSuspense as i32);
    assert_eq!(
        (a.amount.as_str(), a.currency.as_str(), a.channel.as_str()),
        ("5.00", "CNY", "netbank")
    );
    assert!(a.posting_id.starts_with("pst_"));
    // A claim on the bank, an asset: item adj1 of 5.00; the reserve lost 5.
    assert_eq!(env.balance(SuspenseBankClaim, "netbank").await, "5.00");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "95.00");

    // The same request again (5 and 5.00 are the same amount): the first answer, one posting.
    let again = env
        .client
        .post_adjustment(adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "5.00",
            "bank-only row BK9; ops: li",
        ))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, a);
    assert_eq!(env.postings_of(SuspenseBankClaim, "netbank").await.len(), 1);
    assert!(env.posting_exists("adjust:adj1").await);
    // Other content under the same id.
    for other in [
        adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "6",
            "bank-only row BK9; ops: li",
        ),
        adjustment_req(
            "adj1",
            pb::AdjustmentKind::SuspenseToBank,
            "5",
            "bank-only row BK9; ops: li",
        ),
        adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "5",
            "another memo",
        ),
    ] {
        let err = env
            .client
            .post_adjustment(other)
            .await
            .expect_err("conflict");
        assert_eq!(err.code(), Code::AlreadyExists);
        assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    }

    // The reverse direction.
    let b = env
        .client
        .post_adjustment(adjustment_req(
            "adj2",
            pb::AdjustmentKind::SuspenseToBank,
            "5",
            "resolved",
        ))
        .await
        .expect("adjust back")
        .into_inner();
    assert_ne!(b.posting_id, a.posting_id);
    // Opposite items never net: the claim stays, 5.00 is owed to a customer beside it.
    assert_eq!(env.balance(SuspenseBankClaim, "netbank").await, "5.00");
    assert_eq!(env.balance(SuspenseOwedCustomer, "netbank").await, "5.00");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "100.00");

    // Bad input.
    let mut bad = adjustment_req("adj3", pb::AdjustmentKind::Unspecified, "1", "");
    let err = env
        .client
        .post_adjustment(bad.clone())
        .await
        .expect_err("no kind");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    bad.kind = 99;
    let err = env
        .client
        .post_adjustment(bad.clone())
        .await
        .expect_err("bad kind");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    bad.kind = pb::AdjustmentKind::BankToSuspense as i32;
    bad.amount = "0".into();
    let err = env
        .client
        .post_adjustment(bad.clone())
        .await
        .expect_err("zero");
    assert_eq!(code_of(&err), "INVALID_AMOUNT");
    bad.amount = "1".into();
    bad.channel = "net bank".into();
    let err = env
        .client
        .post_adjustment(bad.clone())
        .await
        .expect_err("bad channel");
    assert_eq!(code_of(&err), "MALFORMED_ID");
    bad.channel = "netbank".into();
    bad.memo = "m".repeat(513);
    let err = env
        .client
        .post_adjustment(bad)
        .await
        .expect_err("long memo");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(!env.posting_exists("adjust:adj3").await);
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Accounting is down while a payout is returned and an adjustment is posted: both are stored
/// (RETURNING, unposted) and answer UNAVAILABLE; the recovery job finishes them with the same
/// keys once accounting is back.
async fn returns_and_adjustments_recover(acc: &str, clr: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let accounting_addr = format!("http://{port}");
    let accounting = start_accounting(&port.to_string(), acc).await;
    let clearing = start_clearing(clr, &accounting_addr).await;
    let mut client =
        ClearingServiceClient::new(AnyCaller::new(Principal::Clearing, &clearing.url()));
    client
        .upsert_merchant_policy(pb::MerchantPolicy {
            merchant_id: "m1".into(),
            fee_rate: "0.006".into(),
            fee_refund: pb::FeeRefundPolicy::Proportional as i32,
            ..Default::default()
        })
        .await
        .expect("policy");
    client
        .settle_payment(settle_req("t1", "m1", "100.00"))
        .await
        .expect("settle");
    client
        .refund_debit(debit_req("rf1", "t1", "m1", "100.00"))
        .await
        .expect("debit");
    client
        .complete_debit(pb::CompleteDebitRequest {
            refund_id: "rf1".into(),
            ..Default::default()
        })
        .await
        .expect("complete");

    accounting.stop().await.expect("stop accounting");
    let err = client
        .return_debit(return_req("rf1", "returned"))
        .await
        .expect_err("down");
    assert_eq!(code_of(&err), "UNAVAILABLE");
    let d = client
        .get_debit(pb::GetDebitRequest {
            refund_id: "rf1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&d), pb::DebitStatus::Returning);
    // RETURNING holds the counters: nothing more can be debited yet.
    let err = client
        .refund_debit(debit_req("rf2", "t1", "m1", "1.00"))
        .await
        .expect_err("still held");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    let err = client
        .post_adjustment(adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "3",
            "m",
        ))
        .await
        .expect_err("down");
    assert_eq!(code_of(&err), "UNAVAILABLE");

    let accounting = start_accounting(&port.to_string(), acc).await;
    let recovery = Clearing::open(&clearing_config(clr, &accounting_addr)).expect("open");
    let report = recovery.run_recovery().await.expect("recovery");
    assert_eq!(
        (
            report.debits_finished,
            report.adjustments_posted,
            report.still_pending
        ),
        (1, 1, 0)
    );
    let d = client
        .get_debit(pb::GetDebitRequest {
            refund_id: "rf1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(status(&d), pb::DebitStatus::Returned);
    let a = client
        .post_adjustment(adjustment_req(
            "adj1",
            pb::AdjustmentKind::BankToSuspense,
            "3",
            "m",
        ))
        .await
        .expect("replay")
        .into_inner();
    assert!(a.posting_id.starts_with("pst_"));
    assert!(recovery
        .run_recovery()
        .await
        .expect("nothing left")
        .is_empty());

    let mut ledger =
        AccountingServiceClient::new(AnyCaller::new(Principal::Accounting, &accounting_addr));
    let balance = |t: apb::AccountType, owner: &str| apb::GetBalanceRequest {
        account: Some(account(t, owner)),
        ..Default::default()
    };
    let reserve = ledger
        .get_balance(balance(ChannelReserve, "netbank"))
        .await
        .expect("b")
        .into_inner();
    // The merchant's 99.40 back (the fee share is the platform's again), less 3.00 to suspense.
    assert_eq!(reserve.balance, "96.40");
    let merchant = ledger
        .get_balance(balance(MerchantSettlement, "m1"))
        .await
        .expect("b")
        .into_inner();
    assert_eq!(merchant.balance, "99.40");
    let tb = ledger
        .trial_balance(apb::TrialBalanceRequest::default())
        .await
        .expect("tb")
        .into_inner();
    assert!(tb.balanced, "{tb:?}");
    // The counters are back: the whole payment is refundable again.
    client
        .refund_debit(debit_req("rf2", "t1", "m1", "100.00"))
        .await
        .expect("again");
    clearing.stop().await.expect("stop clearing");
    accounting.stop().await.expect("stop accounting");
}

// ---------- splits, subsidies, advances, error refunds ----------

fn splits(parts: &[(&str, &str)]) -> Vec<pb::Split> {
    parts
        .iter()
        .map(|(id, amount)| pb::Split {
            receiver_id: id.to_string(),
            amount: amount.to_string(),
        })
        .collect()
}

fn minor(amount: &str) -> i64 {
    Money::parse(amount, "CNY", "amount")
        .map(|m| m.to_minor())
        .unwrap_or(0)
}

fn split_map(d: &pb::Debit) -> std::collections::BTreeMap<String, i64> {
    d.splits
        .iter()
        .map(|s| (s.receiver_id.clone(), minor(&s.amount)))
        .collect()
}

impl Env {
    async fn policy_with_line(&mut self, merchant: &str, rate: &str, line: &str) {
        let p = self
            .client
            .upsert_merchant_policy(pb::MerchantPolicy {
                merchant_id: merchant.to_string(),
                fee_rate: rate.to_string(),
                fee_refund: pb::FeeRefundPolicy::Proportional as i32,
                advance_limit: line.to_string(),
                advance_currency: "CNY".into(),
            })
            .await
            .expect("policy")
            .into_inner();
        assert_eq!(p.advance_limit, line);
    }

    async fn settle_with(
        &mut self,
        trade: &str,
        amount: &str,
        parts: &[(&str, &str)],
        subsidy: &str,
    ) -> Result<pb::Settlement, tonic::Status> {
        self.client
            .settle_payment(pb::SettlePaymentRequest {
                splits: splits(parts),
                platform_subsidy: subsidy.to_string(),
                ..settle_req(trade, "m1", amount)
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn debit_with(
        &mut self,
        refund: &str,
        trade: &str,
        amount: &str,
        parts: &[(&str, &str)],
        error_refund: bool,
    ) -> Result<pb::Debit, tonic::Status> {
        self.client
            .refund_debit(pb::RefundDebitRequest {
                splits: splits(parts),
                error_refund,
                ..debit_req(refund, trade, "m1", amount)
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The merchant's money leaves outside the refund flow (a withdrawal posted to the ledger).
    async fn withdraw(&mut self, id: &str, merchant: &str, amount: &str) {
        self.withdraw_in(id, merchant, amount, Currency::Cny).await
    }

    async fn withdraw_in(&mut self, id: &str, merchant: &str, amount: &str, c: Currency) {
        let ledger =
            AccountingClient::connect(&test_transport(Principal::Clearing), &self.accounting.url())
                .expect("client");
        let out = Money::parse(amount, c.code(), "a").expect("amount");
        ledger
            .post(
                &format!("withdrawal:{id}"),
                "merchant withdrawal",
                vec![
                    (
                        AccountKey::merchant_settlement(merchant, c),
                        Side::Debit,
                        out,
                    ),
                    (
                        AccountKey::platform(AccountType::Suspense, c),
                        Side::Credit,
                        out,
                    ),
                ],
            )
            .await
            .expect("withdraw");
    }
}

/// A payment split over three receivers (分账): refunds by share sum exactly to each refund, never
/// take more than a share, and a full refund takes back exactly each share; explicit amounts are
/// checked; a reversal gives back exactly the parts.
async fn split_refunds(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.policy("r2", "0.01", pb::FeeRefundPolicy::Proportional)
        .await;
    env.policy("r3", "0", pb::FeeRefundPolicy::Proportional)
        .await;
    let shares = [("m1", "33.33"), ("r2", "33.33"), ("r3", "33.34")];

    // Bad splits.
    let err = env
        .settle_with("t1", "100.00", &[("m1", "50.00"), ("r2", "49.99")], "")
        .await
        .expect_err("sum");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(err.message().starts_with("splits:"), "{}", err.message());
    let err = env
        .settle_with("t1", "100.00", &[("m1", "50.00"), ("ghost", "50.00")], "")
        .await
        .expect_err("no policy");
    assert_eq!(code_of(&err), "MERCHANT_NOT_FOUND");
    let err = env
        .settle_with("t1", "100.00", &[("m1", "50.00"), ("m1", "50.00")], "")
        .await
        .expect_err("twice");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");

    // Each receiver is credited its share less its own fee: 0.20, 0.33, 0.
    let s = env
        .settle_with("t1", "100.00", &shares, "")
        .await
        .expect("settle");
    assert_eq!((s.fee.as_str(), s.net.as_str()), ("0.53", "99.47"));
    let again = env
        .settle_with(
            "t1",
            "100.00",
            &[("r3", "33.34"), ("m1", "33.33"), ("r2", "33.33")],
            "",
        )
        .await
        .expect("repeat in another order");
    assert_eq!(again, s);
    let err = env
        .settle_with("t1", "100.00", &[("m1", "50.00"), ("r2", "50.00")], "")
        .await
        .expect_err("other splits");
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "33.13");
    assert_eq!(env.balance(MerchantSettlement, "r2").await, "33.00");
    assert_eq!(env.balance(MerchantSettlement, "r3").await, "33.34");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.53");

    // Nine partial refunds of 10.01, then the rest (9.91).
    let mut taken: std::collections::BTreeMap<String, i64> = Default::default();
    for i in 0..9 {
        let d = env
            .debit(&format!("rf{i}"), "t1", "m1", "10.01")
            .await
            .expect("partial");
        assert_eq!(status(&d), pb::DebitStatus::Debited);
        let parts = split_map(&d);
        assert_eq!(parts.values().sum::<i64>(), 1001, "{parts:?}");
        for (id, amount) in parts {
            *taken.entry(id).or_default() += amount;
        }
        for (id, share) in shares {
            assert!(taken.get(id).copied().unwrap_or(0) <= minor(share));
        }
        env.complete(&format!("rf{i}")).await.expect("complete");
    }
    // The first: 10.01 × (33.33, 33.33, 33.34) / 100 = 3.3363, 3.3363, 3.3373 → 3.33 each and
    // two cents by largest remainder: 3.34, 3.33, 3.34.
    let first = env.get_debit("rf0").await;
    assert_eq!(
        split_map(&first),
        [("m1", 334), ("r2", 333), ("r3", 334)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    );
    let last = env
        .debit("rf-last", "t1", "m1", "9.91")
        .await
        .expect("rest");
    for (id, amount) in split_map(&last) {
        *taken.entry(id).or_default() += amount;
    }
    for (id, share) in shares {
        assert_eq!(taken[id], minor(share), "{id} got back exactly its share");
    }
    env.complete("rf-last").await.expect("complete");
    let err = env
        .debit("rf-more", "t1", "m1", "0.01")
        .await
        .expect_err("nothing left");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    for owner in ["m1", "r2", "r3"] {
        assert_eq!(
            env.balance(MerchantSettlement, owner).await,
            "0.00",
            "{owner}"
        );
    }
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.00");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "0.00");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");

    // Explicit amounts.
    env.settle_with("t2", "60.00", &[("m1", "40.00"), ("r2", "20.00")], "")
        .await
        .expect("settle t2");
    let explicit = [("r2", "20.00"), ("m1", "10.00")];
    let d = env
        .debit_with("rx1", "t2", "30.00", &explicit, false)
        .await
        .expect("explicit");
    assert_eq!(split_map(&d)["r2"], 2000);
    assert_eq!(split_map(&d)["m1"], 1000);
    // r2's fee share 0.20, m1's 0.06.
    assert_eq!(d.fee_amount, "0.26");
    assert_eq!(env.balance(MerchantSettlement, "r2").await, "0.00");
    let again = env
        .debit_with(
            "rx1",
            "t2",
            "30.00",
            &[("m1", "10.00"), ("r2", "20.00")],
            false,
        )
        .await
        .expect("repeat");
    assert_eq!(again, d);
    let err = env
        .debit_with(
            "rx1",
            "t2",
            "30.00",
            &[("m1", "15.00"), ("r2", "15.00")],
            false,
        )
        .await
        .expect_err("other amounts");
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    let err = env
        .debit_with("rx2", "t2", "5.00", &[("r2", "5.00")], false)
        .await
        .expect_err("over share");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    assert!(err.message().starts_with("splits:"), "{}", err.message());
    let err = env
        .debit_with("rx2", "t2", "5.00", &[("m1", "4.00")], false)
        .await
        .expect_err("sum");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(err.message().starts_with("splits:"), "{}", err.message());
    let err = env
        .debit_with("rx2", "t2", "5.00", &[("r3", "5.00")], false)
        .await
        .expect_err("not a receiver");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(!env.posting_exists("refund-debit:rx2").await);
    // By share now comes only from m1 (r2's share is used up).
    let d = env
        .debit("rx3", "t2", "m1", "5.00")
        .await
        .expect("by share");
    assert_eq!(split_map(&d).len(), 1);
    assert_eq!(split_map(&d)["m1"], 500);

    // A reversal gives back exactly the parts; r2's share is refundable again.
    let r = env.reverse("rx1").await.expect("reverse");
    assert_eq!(status(&r), pb::DebitStatus::Reversed);
    assert_eq!(env.balance(MerchantSettlement, "r2").await, "19.80");
    let d = env
        .debit_with("rx4", "t2", "20.00", &[("r2", "20.00")], false)
        .await
        .expect("r2 again");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// A platform subsidy (coupon) part: settled from the reserve and the subsidy account, refunded
/// with its prorated share back to the subsidy account; every account back to zero at the end.
async fn subsidies(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    let err = env
        .settle_with("t0", "10.00", &[], "10.00")
        .await
        .expect_err("all subsidy");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(
        err.message().starts_with("platform_subsidy:"),
        "{}",
        err.message()
    );
    let err = env
        .settle_with("t0", "10.00", &[], "-1")
        .await
        .expect_err("negative");
    assert_eq!(code_of(&err), "INVALID_AMOUNT");

    // 100.00 order: the customer paid 80.00 in cash, the platform's coupon 20.00.
    let s = env
        .settle_with("t1", "100.00", &[], "20.00")
        .await
        .expect("settle");
    assert_eq!((s.fee.as_str(), s.net.as_str()), ("0.60", "99.40"));
    let err = env
        .settle_with("t1", "100.00", &[], "10.00")
        .await
        .expect_err("other subsidy");
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    // The coupon was paid into the reserve from the platform's own funds; the fee is the
    // platform's part of the reserve: the customers' part is what the merchant holds.
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "99.40");
    assert_eq!(env.balance(PlatformInReserve, "netbank").await, "0.60");
    assert_eq!(env.balance(OwnFunds, "platform").await, "-20.00");
    assert_eq!(env.balance(Subsidy, "platform").await, "20.00");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "99.40");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.60");

    // 33.33 refunded: subsidy share round(20 × 33.33 / 100) = 6.67, cash 26.66, fee share 0.20.
    let d = env.debit("rf1", "t1", "m1", "33.33").await.expect("debit");
    assert_eq!(
        (
            d.amount.as_str(),
            d.subsidy_amount.as_str(),
            d.fee_amount.as_str(),
            d.merchant_amount.as_str()
        ),
        ("33.33", "6.67", "0.20", "33.13")
    );
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "66.27");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.40");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "26.66");
    assert_eq!(env.balance(Subsidy, "platform").await, "13.33");
    env.complete("rf1").await.expect("complete");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "66.27");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");

    // A reversed one puts everything back, the subsidy share included.
    env.debit("rf2", "t1", "m1", "33.33").await.expect("debit");
    env.reverse("rf2").await.expect("reverse");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "66.27");
    assert_eq!(env.balance(Subsidy, "platform").await, "13.33");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.40");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");

    // A returned payout too.
    env.debit("rf3", "t1", "m1", "10.00").await.expect("debit");
    env.complete("rf3").await.expect("complete");
    env.client
        .return_debit(return_req("rf3", "returned"))
        .await
        .expect("return");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "66.27");
    assert_eq!(env.balance(Subsidy, "platform").await, "13.33");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "66.27");

    // The rest: the subsidy share is what is left of it (13.33), and every account is back at 0.
    let d = env.debit("rf4", "t1", "m1", "66.67").await.expect("rest");
    assert_eq!(d.subsidy_amount, "13.33");
    env.complete("rf4").await.expect("complete");
    for (t, owner) in [
        (ChannelReserve, "netbank"),
        (Subsidy, "platform"),
        (MerchantSettlement, "m1"),
        (FeeIncome, "platform"),
        (RefundInTransit, "platform"),
    ] {
        assert_eq!(env.balance(t, owner).await, "0.00", "{t:?}");
    }
    // What the platform paid in and what came back to it cancel out once swept.
    let platform_part: rust_decimal::Decimal = env
        .balance(PlatformInReserve, "netbank")
        .await
        .parse()
        .unwrap();
    let own: rust_decimal::Decimal = env.balance(OwnFunds, "platform").await.parse().unwrap();
    assert!((platform_part + own).is_zero(), "{platform_part} {own}");
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Advances (垫付): a refund beyond the balance uses the line up to its limit, never beyond; the
/// next settlement repays it first; a reversal gives back repaying the advance first.
async fn advances(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy_with_line("m1", "0.006", "50").await;
    let err = env
        .client
        .upsert_merchant_policy(pb::MerchantPolicy {
            merchant_id: "m9".into(),
            fee_rate: "0".into(),
            fee_refund: pb::FeeRefundPolicy::None as i32,
            advance_limit: "-5".into(),
            advance_currency: "CNY".into(),
        })
        .await
        .expect_err("negative line");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    env.settle("t1", "m1", "100.00").await.expect("settle");
    env.withdraw("w1", "m1", "90.00").await;
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "9.40");

    // 40.00: the merchant gives back 39.76 (fee share 0.24); 9.40 from its balance, 30.36 advanced.
    let d = env
        .debit("rf1", "t1", "m1", "40.00")
        .await
        .expect("advanced");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    assert_eq!(
        (d.merchant_amount.as_str(), d.advance_amount.as_str()),
        ("39.76", "30.36")
    );
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(Advance, "m1").await, "30.36");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "40.00");

    // 30.00 more needs 29.82 of the 19.64 left on the line: refused, nothing posted.
    let err = env
        .debit("rf2", "t1", "m1", "30.00")
        .await
        .expect_err("over the line");
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");
    assert!(!env.posting_exists("refund-debit:rf2").await);
    assert_eq!(
        status(&env.get_debit("rf2").await),
        pb::DebitStatus::Rejected
    );
    assert_eq!(env.balance(Advance, "m1").await, "30.36");

    // 10.00 fits (9.94 advanced); reversing it repays the advance first.
    let d = env.debit("rf3", "t1", "m1", "10.00").await.expect("fits");
    assert_eq!(d.advance_amount, "9.94");
    assert_eq!(env.balance(Advance, "m1").await, "40.30");
    env.reverse("rf3").await.expect("reverse");
    assert_eq!(env.balance(Advance, "m1").await, "30.36");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");

    // The line is at 30.36 of 50: a refund needing exactly the remaining 19.64 fits.
    let d = env
        .debit("rf4", "t1", "m1", "19.76")
        .await
        .expect("exactly the line");
    assert_eq!(d.advance_amount, "19.64");
    assert_eq!(env.balance(Advance, "m1").await, "50.00");
    let err = env
        .debit("rf5", "t1", "m1", "0.01")
        .await
        .expect_err("line used up");
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");

    // The next settlement repays first: 49.70 net, all of it to the advance (50.00 owed).
    let s = env.settle("t2", "m1", "50.00").await.expect("settle t2");
    assert_eq!(s.net, "49.70");
    assert_eq!(env.balance(Advance, "m1").await, "0.30");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    env.settle("t3", "m1", "10.00").await.expect("settle t3");
    assert_eq!(env.balance(Advance, "m1").await, "0.00");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "9.64");
    let settle_t3 = env
        .ledger
        .get_posting(apb::GetPostingRequest {
            request_id: "settle:t3".into(),
        })
        .await
        .expect("posting")
        .into_inner();
    assert!(settle_t3
        .entries
        .iter()
        .any(
            |e| e.account.as_ref().map(|a| a.r#type) == Some(Advance as i32) && e.amount == "0.30"
        ));

    // rf1 reversed after its advance was repaid: nothing is owed, all goes to the balance.
    env.reverse("rf1").await.expect("reverse rf1");
    assert_eq!(env.balance(Advance, "m1").await, "0.00");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "49.40");

    // A returned payout of an advanced refund repays the advance first.
    env.withdraw("w2", "m1", "49.40").await;
    let d = env
        .debit("rf6", "t2", "m1", "20.00")
        .await
        .expect("advanced");
    assert_eq!(d.advance_amount, "19.88");
    env.complete("rf6").await.expect("complete");
    assert_eq!(env.balance(Advance, "m1").await, "19.88");
    env.client
        .return_debit(return_req("rf6", "returned"))
        .await
        .expect("return");
    assert_eq!(env.balance(Advance, "m1").await, "0.00");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    env.complete("rf4").await.expect("complete rf4");
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Concurrent refunds of a merchant with no balance: the advances never exceed the line.
async fn concurrent_advances(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy_with_line("m1", "0", "30").await;
    for t in 0..4 {
        env.settle(&format!("t{t}"), "m1", "25.00")
            .await
            .expect("settle");
    }
    env.withdraw("w1", "m1", "100.00").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut c = env.client.clone();
        let trade = format!("t{}", i % 4);
        tasks.push(tokio::spawn(async move {
            c.refund_debit(debit_req(&format!("rf{i}"), &trade, "m1", "4.00"))
                .await
        }));
    }
    let (mut ok, mut advanced) = (0, 0i64);
    for t in futures::future::join_all(tasks).await {
        match t.expect("task") {
            Ok(d) => {
                let d = d.into_inner();
                assert_eq!(status(&d), pb::DebitStatus::Debited);
                assert_eq!(d.advance_amount, "4.00");
                ok += 1;
                advanced += minor(&d.advance_amount);
            }
            Err(e) => assert_eq!(code_of(&e), "INSUFFICIENT_BALANCE", "{e:?}"),
        }
    }
    // 30.00 of line, 4.00 each: exactly 7 (28.00) fit, whatever the interleaving.
    assert_eq!(ok, 7, "{ok} debits");
    assert_eq!(advanced, 2800);
    let ledger_advance = minor(&env.balance(Advance, "m1").await);
    assert_eq!(ledger_advance, advanced);
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(
        minor(&env.balance(RefundInTransit, "platform").await),
        advanced
    );
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// Error refunds (差错退款): the full amount only, the whole fee back whatever the policy.
async fn error_refunds(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::None).await;
    env.policy("r2", "0.01", pb::FeeRefundPolicy::None).await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    let err = env
        .debit_with("rf1", "t1", "50.00", &[], true)
        .await
        .expect_err("partial");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(err.message().starts_with("amount:"), "{}", err.message());
    assert!(!env.posting_exists("refund-debit:rf1").await);

    let d = env
        .debit_with("rf2", "t1", "100.00", &[], true)
        .await
        .expect("full");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    assert_eq!(
        (d.merchant_amount.as_str(), d.fee_amount.as_str()),
        ("99.40", "0.60")
    );
    let err = env
        .debit("rf2", "t1", "m1", "100.00")
        .await
        .expect_err("not an error refund");
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");
    env.complete("rf2").await.expect("complete");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.00");

    // A split payment: each receiver gives back its whole share, fees refunded.
    env.settle_with("t2", "50.00", &[("m1", "30.00"), ("r2", "20.00")], "")
        .await
        .expect("settle t2");
    env.debit("rf3", "t2", "m1", "1.00").await.expect("partial");
    let err = env
        .debit_with("rf4", "t2", "50.00", &[], true)
        .await
        .expect_err("already partly refunded");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    env.reverse("rf3").await.expect("reverse");
    let d = env
        .debit_with("rf4", "t2", "50.00", &[], true)
        .await
        .expect("full split");
    assert_eq!(split_map(&d)["m1"], 3000);
    assert_eq!(split_map(&d)["r2"], 2000);
    assert_eq!(d.fee_amount, "0.38");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(MerchantSettlement, "r2").await, "0.00");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.00");
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// The sweep (资金归集): the platform's part of the reserve moves to its own funds once per
/// channel, currency and value date; a repeat moves nothing; the customers' part stays.
async fn sweep(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    let client = env.client.clone();
    let sweep = |date: &str| {
        let mut client = client.clone();
        let date = date.to_string();
        async move {
            client
                .sweep_reserves(pb::SweepReservesRequest { date })
                .await
                .map(|r| r.into_inner().sweeps)
        }
    };
    let first = sweep("2026-12-01").await.expect("sweep");
    assert_eq!(first.len(), 1, "{first:?}");
    let s = &first[0];
    assert_eq!(
        (
            s.channel.as_str(),
            s.currency.as_str(),
            s.amount.as_str(),
            s.already_swept
        ),
        ("netbank", "CNY", "0.60", false)
    );
    // The same date again, after another fee came in: nothing moves, the first sweep is named.
    env.settle("t2", "m1", "50.00").await.expect("settle");
    let again = sweep("2026-12-01").await.expect("repeat");
    assert!(again[0].already_swept, "{again:?}");
    assert_eq!(again[0].posting_id, s.posting_id);
    assert_eq!(again[0].amount, "");
    let next = sweep("2026-12-02").await.expect("next day");
    assert_eq!(next[0].amount, "0.30");
    let err = sweep("tomorrow").await.expect_err("bad date");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(err.message().starts_with("date:"), "{}", err.message());

    assert_eq!(env.balance(PlatformInReserve, "netbank").await, "0.00");
    assert_eq!(env.balance(OwnFunds, "platform").await, "0.90");
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "149.10");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "149.10");
    env.assert_trial_balanced().await;
    env.stop().await;
}

// ---------- both databases ----------

macro_rules! on_both_databases {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            let acc = TestDb::sqlite("accounting");
            let clr = TestDb::sqlite("clearing");
            $scenario(acc.url(), clr.url()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let (Some(acc), Some(clr)) = (TestDb::postgres("accounting"), TestDb::postgres("clearing")) else {
                return;
            };
            $scenario(acc.url(), clr.url()).await;
        }
    )*};
}

on_both_databases! {
    settle_debit_complete => settle_debit_complete_sqlite, settle_debit_complete_postgres;
    partial_refunds_and_rules => partial_refunds_and_rules_sqlite, partial_refunds_and_rules_postgres;
    reverse_gives_back => reverse_gives_back_sqlite, reverse_gives_back_postgres;
    insufficient_balance => insufficient_balance_sqlite, insufficient_balance_postgres;
    concurrent_partial_debits => concurrent_partial_debits_sqlite, concurrent_partial_debits_postgres;
    recovery_after_outage => recovery_after_outage_sqlite, recovery_after_outage_postgres;
    returned_payout => returned_payout_sqlite, returned_payout_postgres;
    adjustments => adjustments_sqlite, adjustments_postgres;
    returns_and_adjustments_recover => returns_and_adjustments_recover_sqlite, returns_and_adjustments_recover_postgres;
    split_refunds => split_refunds_sqlite, split_refunds_postgres;
    subsidies => subsidies_sqlite, subsidies_postgres;
    advances => advances_sqlite, advances_postgres;
    concurrent_advances => concurrent_advances_sqlite, concurrent_advances_postgres;
    error_refunds => error_refunds_sqlite, error_refunds_postgres;
    sweep => sweep_sqlite, sweep_postgres;
    reinstated_debits => reinstated_debits_sqlite, reinstated_debits_postgres;
    error_refund_when_short => error_refund_when_short_sqlite, error_refund_when_short_postgres;
    advance_line_currency => advance_line_currency_sqlite, advance_line_currency_postgres;
    coupon_only_refund => coupon_only_refund_sqlite, coupon_only_refund_postgres;
}

/// The domain module is pure: no storage, no RPC framework (CI greps for the same).
#[test]
fn domain_is_pure() {
    let src = include_str!("../src/domain.rs");
    for word in ["diesel", "tonic", "prost", "tuikuan_db", "tuikuan_proto"] {
        assert!(!src.contains(word), "domain.rs mentions {word}");
    }
}
