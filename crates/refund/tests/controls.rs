//! Issue 5 in the refund center, end to end over gRPC with real peers in-process (accounting,
//! clearing, the bank simulator, the payout center): error refunds (full amount only), risk holds
//! and their release or rejection (the debit reversed), the manual controls from allowed and
//! forbidden states, operator identity and roles, the audit trail, and card numbers encrypted at
//! rest (read straight from the database) yet whole in the payout and the bank's spreadsheet.
//! The business layer is unreachable on purpose (its notifications stay queued; the clearing
//! steps before them go through). Every scenario runs on SQLite and on PostgreSQL.

use std::io::Cursor;

use calamine::{open_workbook_from_rs, Data, Reader, Xlsx};
use chrono::{Duration, NaiveDate};
use diesel::prelude::*;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{ErrorCode, ManualClock};
use tuikuan_proto::bank::v1 as bankpb;
use tuikuan_proto::bank::v1::bank_service_client::BankServiceClient;
use tuikuan_proto::clearing::v1 as clpb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::payout::v1 as popb;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::refund::v1::batch_service_client::BatchServiceClient;
use tuikuan_proto::refund::v1::error_refund_service_client::ErrorRefundServiceClient;
use tuikuan_proto::refund::v1::refund_control_service_client::RefundControlServiceClient;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::from_status;
use tuikuan_proto::tls::Principal;
use tuikuan_refund::store::{refund_batch_rows, refund_batches, refund_cards, refunds};
use tuikuan_refund::vault::Sealer;
use tuikuan_refund::CardKey;

mod common;

use common::{client_channel, steady_bank, Setup, Stack, MERCHANT};

const CARD: &str = "6222000011112223";
const CARD2: &str = "6222020200112233446";
const CARD3: &str = "6222020200112230";
const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Tuesday.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("valid date")
}

fn test_key() -> CardKey {
    CardKey::from_hex(TEST_KEY).expect("test key")
}

struct Env {
    clock: ManualClock,
    url: String,
    refunds: RefundServiceClient<AnyCaller>,
    errors: ErrorRefundServiceClient<AnyCaller>,
    controls: RefundControlServiceClient<AnyCaller>,
    batches: BatchServiceClient<AnyCaller>,
    clearing: ClearingServiceClient<AnyCaller>,
    bank: BankServiceClient<AnyCaller>,
    payouts: PayoutServiceClient<AnyCaller>,
    stack: Stack,
}

/// A request carrying the operator token of `id` in `role` (no token when either is empty; see
/// `tuikuan_auth::testing::bearer_for`).
fn as_op<T>(message: T, id: &str, role: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let bearer = tuikuan_auth::testing::bearer_for(id, role);
    r.metadata_mut()
        .insert("authorization", bearer.parse().expect("ascii"));
    r
}

fn ctl(refund_id: &str, reason: &str) -> pb::ControlRequest {
    pb::ControlRequest {
        refund_id: refund_id.into(),
        reason: reason.into(),
    }
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> (ErrorCode, String) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(s) => {
            let e = from_status(&s);
            (e.code, e.message)
        }
    }
}

impl Env {
    async fn start(refund_db: &str) -> Env {
        let setup = Setup {
            today: today(),
            bank: Some(steady_bank()),
            payout: true,
        };
        let stack = Stack::start(refund_db, setup, |config| config.with_card_key(test_key())).await;
        let mut env = Env {
            clock: stack.clock.clone(),
            url: refund_db.to_string(),
            refunds: RefundServiceClient::new(client_channel(Principal::Refund, &stack.refund_url)),
            errors: ErrorRefundServiceClient::new(client_channel(
                Principal::Refund,
                &stack.refund_url,
            )),
            controls: RefundControlServiceClient::new(client_channel(
                Principal::Refund,
                &stack.refund_url,
            )),
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
        };
        for (code, kind, methods) in [
            ("NB1", pb::ChannelKind::NetBanking, vec![]),
            ("NB2", pb::ChannelKind::NetBanking, vec![]),
            ("QP1", pb::ChannelKind::QuickPay, vec![]),
            (
                "OF1",
                pb::ChannelKind::Unionpay,
                vec![pb::RefundMethod::Offline as i32],
            ),
        ] {
            env.refunds
                .upsert_channel(pb::Channel {
                    code: code.into(),
                    kind: kind as i32,
                    methods,
                    original_route_window_days: 0,
                    bank_code: "ICBC".into(),
                    ..Default::default()
                })
                .await
                .expect("upsert channel");
        }
        env
    }

    async fn stop(self) {
        self.stack.stop().await;
    }

    fn now_ms(&self) -> i64 {
        tuikuan_kernel::Clock::now_ms(&self.clock)
    }

    /// Settles a payment of `amount` and debits a refund of all of it.
    async fn debit(&mut self, refund_id: &str, channel: &str, amount: &str) {
        self.clearing
            .settle_payment(clpb::SettlePaymentRequest {
                trade_id: format!("t-{refund_id}"),
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
                trade_id: format!("t-{refund_id}"),
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

    /// A refund request paid an hour ago.
    fn req(
        &self,
        refund_id: &str,
        channel: &str,
        amount: &str,
        card: &str,
    ) -> pb::CreateRefundRequest {
        pb::CreateRefundRequest {
            refund_id: refund_id.into(),
            merchant_id: MERCHANT.into(),
            trade_id: format!("t-{refund_id}"),
            order_no: format!("o-{refund_id}"),
            channel: channel.into(),
            amount: amount.into(),
            currency: "CNY".into(),
            trade_paid_at_ms: self.now_ms() - 3_600_000,
            payer_card_no: card.into(),
            payer_name: "张三".into(),
            ..Default::default()
        }
    }

    /// Debits and creates `request`.
    async fn create(&mut self, request: pb::CreateRefundRequest) -> pb::RefundOrder {
        self.debit(&request.refund_id, &request.channel, &request.amount)
            .await;
        self.refunds
            .create_refund(request)
            .await
            .expect("create refund")
            .into_inner()
    }

    async fn refund(&mut self, refund_id: &str, channel: &str, amount: &str) -> pb::RefundOrder {
        let r = self.req(refund_id, channel, amount, CARD);
        self.create(r).await
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

    async fn cycle(&mut self) -> pb::CycleReport {
        self.refunds
            .run_interface_cycle(pb::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("cycle")
            .into_inner()
    }

    async fn outbox(&mut self) {
        self.refunds
            .run_outbox(pb::RunOutboxRequest {})
            .await
            .expect("outbox");
    }

    async fn rule(&mut self, rule: pb::RiskRule) -> pb::RiskRule {
        self.controls
            .upsert_risk_rule(as_op(rule, "rita", "risk"))
            .await
            .expect("upsert rule")
            .into_inner()
    }

    async fn held(&mut self) -> Vec<String> {
        self.controls
            .list_held(as_op(pb::ListHeldRequest::default(), "rita", "risk"))
            .await
            .expect("list held")
            .into_inner()
            .refunds
            .into_iter()
            .map(|o| o.refund_id)
            .collect()
    }

    async fn audit(&mut self, refund_id: &str) -> Vec<pb::AuditEntry> {
        self.controls
            .list_audit(as_op(
                pb::ListAuditRequest {
                    refund_id: refund_id.into(),
                    ..Default::default()
                },
                "olga",
                "ops",
            ))
            .await
            .expect("audit")
            .into_inner()
            .entries
    }

    /// A direct connection to the refund center's database, for reading raw rows.
    fn raw_db(&self) -> tuikuan_db::Db {
        tuikuan_db::Db::connect(&self.url, 1).expect("raw db")
    }
}

// -------------------------------------------------------------------------------------------------
// Error refunds (差错退款): full amount only, otherwise like any refund.

async fn error_refunds(url: &str) {
    let mut env = Env::start(url).await;
    let error_req = |env: &Env, id: &str, amount: &str, paid: &str| pb::CreateRefundRequest {
        kind: pb::RefundKind::ErrorDuplicate as i32,
        trade_amount: paid.into(),
        ..env.req(id, "NB1", amount, CARD)
    };

    // Partial: rejected with a clear error before anything else happens.
    let (c, m) = code(
        env.errors
            .create_error_refund(error_req(&env, "rf-e0", "10.00", "30.00"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidArgument);
    assert_eq!(m, "amount: error refunds are full-amount only");
    // The same through RefundService.CreateRefund with an error kind.
    let (c, m) = code(
        env.refunds
            .create_refund(error_req(&env, "rf-e0", "10.00", "30.00"))
            .await,
    );
    assert_eq!(
        (c, m.as_str()),
        (
            ErrorCode::InvalidArgument,
            "amount: error refunds are full-amount only"
        )
    );
    // No trade amount, or not an error kind.
    let (c, m) = code(
        env.errors
            .create_error_refund(error_req(&env, "rf-e0", "10.00", ""))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidArgument);
    assert!(m.starts_with("trade_amount"), "{m}");
    let normal = pb::CreateRefundRequest {
        kind: pb::RefundKind::Normal as i32,
        ..error_req(&env, "rf-e0", "30.00", "30.00")
    };
    let (c, m) = code(env.errors.create_error_refund(normal).await);
    assert_eq!(c, ErrorCode::InvalidArgument);
    assert!(m.starts_with("kind"), "{m}");
    // Full, but no debit: the clearing center must hold one.
    let (c, _) = code(
        env.errors
            .create_error_refund(error_req(&env, "rf-e0", "30.00", "30.00"))
            .await,
    );
    assert_ne!(c, ErrorCode::InvalidArgument);

    // Full: accepted, routed like any refund, audited.
    env.debit("rf-e1", "NB1", "30.00").await;
    let o = env
        .errors
        .create_error_refund(error_req(&env, "rf-e1", "30.00", "30.00"))
        .await
        .expect("error refund")
        .into_inner();
    assert_eq!(o.kind, pb::RefundKind::ErrorDuplicate as i32);
    assert_eq!(o.method, pb::RefundMethod::Interface as i32);
    assert_eq!(o.refund_status, pb::RefundStatus::Processing as i32);
    // Idempotent; another kind under the same id conflicts.
    let again = env
        .errors
        .create_error_refund(error_req(&env, "rf-e1", "30.00", "30.00"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again.created_at_ms, o.created_at_ms);
    let expired = pb::CreateRefundRequest {
        kind: pb::RefundKind::ErrorExpired as i32,
        ..error_req(&env, "rf-e1", "30.00", "30.00")
    };
    let (c, _) = code(env.errors.create_error_refund(expired).await);
    assert_eq!(c, ErrorCode::IdempotencyConflict);
    // An expired-order payment raised by an operator.
    env.debit("rf-e2", "NB1", "12.34").await;
    let o2 = env
        .errors
        .create_error_refund(pb::CreateRefundRequest {
            kind: pb::RefundKind::ErrorExpired as i32,
            operator: "olga".into(),
            ..error_req(&env, "rf-e2", "12.34", "12.34")
        })
        .await
        .expect("expired error refund")
        .into_inner();
    assert_eq!(o2.kind, pb::RefundKind::ErrorExpired as i32);

    let trail = env.audit("rf-e1").await;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].action, "CREATE_ERROR_REFUND");
    assert_eq!(
        (trail[0].operator.as_str(), trail[0].role.as_str()),
        ("business", "service")
    );
    assert!(
        trail[0].reason.contains("ERROR_DUPLICATE"),
        "{}",
        trail[0].reason
    );
    assert_eq!(env.audit("rf-e2").await[0].operator, "olga");

    // The rest of the chain as normal: the interface cycle sends both.
    let report = env.cycle().await;
    assert_eq!((report.sent, report.accepted), (2, 2));
    assert_eq!(
        env.get("rf-e1").await.submit_status,
        pb::SubmitStatus::Submitted as i32
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_refunds_sqlite() {
    let db = TestDb::sqlite("refund");
    error_refunds(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_refunds_postgres() {
    let Some(db) = TestDb::postgres("refund_error_refunds") else {
        return;
    };
    error_refunds(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// Risk holds: each rule kind; release continues dispatch; rejection reverses the debit.

fn amount_rule(id: &str, channel: &str, threshold: &str, enabled: bool) -> pb::RiskRule {
    pb::RiskRule {
        rule_id: id.into(),
        kind: pb::RiskRuleKind::AmountAbove as i32,
        channel: channel.into(),
        threshold_amount: threshold.into(),
        currency: "CNY".into(),
        enabled,
        description: "large refunds".into(),
        ..Default::default()
    }
}

async fn risk_holds(url: &str) {
    let mut env = Env::start(url).await;

    // Rules are risk's: identity and role are checked, the rule validated.
    let (c, _) = code(
        env.controls
            .upsert_risk_rule(as_op(amount_rule("amt", "NB1", "1000.00", true), "", ""))
            .await,
    );
    assert_eq!(c, ErrorCode::Unauthenticated);
    let (c, _) = code(
        env.controls
            .upsert_risk_rule(as_op(
                amount_rule("amt", "NB1", "1000.00", true),
                "olga",
                "ops",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    let (c, m) = code(
        env.controls
            .upsert_risk_rule(as_op(amount_rule("amt", "NB1", "", true), "rita", "risk"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidArgument);
    assert!(m.starts_with("threshold_amount"), "{m}");
    let saved = env.rule(amount_rule("amt", "NB1", "1000.00", true)).await;
    assert_eq!(
        (saved.threshold_amount.as_str(), saved.enabled),
        ("1000.00", true)
    );
    let created = env
        .rule(pb::RiskRule {
            rule_id: String::new(),
            ..amount_rule("", "", "50000.00", false)
        })
        .await;
    assert!(created.rule_id.starts_with("risk_"), "{}", created.rule_id);
    let rules = env
        .controls
        .list_risk_rules(as_op(pb::ListRiskRulesRequest {}, "fred", "finance"))
        .await
        .expect("rules")
        .into_inner()
        .rules;
    assert_eq!(rules.len(), 2);

    // Amount above the threshold, on its channel only.
    let big = env.refund("rf-big", "NB1", "1500.00").await;
    assert_eq!(big.hold_status, pb::HoldStatus::Held as i32);
    assert_eq!(big.hold_rule_id, "amt");
    assert!(
        big.hold_reason.contains("above the threshold 1000.00"),
        "{}",
        big.hold_reason
    );
    assert_eq!(big.refund_status, pb::RefundStatus::Processing as i32);
    assert_eq!(big.submit_status, pb::SubmitStatus::Pending as i32);
    let small = env.refund("rf-small", "NB1", "1000.00").await;
    assert_eq!(small.hold_status, pb::HoldStatus::Unspecified as i32);
    let other = env.refund("rf-other", "NB2", "1500.00").await;
    assert_eq!(other.hold_status, pb::HoldStatus::Unspecified as i32);
    // Nothing is sent while HELD.
    let report = env.cycle().await;
    assert_eq!((report.sent, report.accepted), (2, 2));
    assert!(env
        .bank
        .query_refund(bankpb::QueryRequest {
            id: "rf-big".into()
        })
        .await
        .is_err());
    assert_eq!(env.held().await, vec!["rf-big".to_string()]);
    let trail = env.audit("rf-big").await;
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (
            trail[0].action.as_str(),
            trail[0].operator.as_str(),
            trail[0].role.as_str()
        ),
        ("HOLD", "risk-engine", "system")
    );

    // Release: risk only, with a reason; dispatch continues.
    let (c, _) = code(
        env.controls
            .release_hold(as_op(ctl("rf-big", "ok"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    let (c, m) = code(
        env.controls
            .release_hold(as_op(ctl("rf-big", " "), "rita", "risk"))
            .await,
    );
    assert_eq!(
        (c, m.as_str()),
        (ErrorCode::InvalidArgument, "reason: is required")
    );
    let released = env
        .controls
        .release_hold(as_op(
            ctl("rf-big", "merchant confirmed by phone"),
            "rita",
            "risk",
        ))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.hold_status, pb::HoldStatus::HoldReleased as i32);
    let (c, m) = code(
        env.controls
            .release_hold(as_op(ctl("rf-big", "again"), "rita", "risk"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("hold RELEASED") && m.contains("not HELD"), "{m}");
    let report = env.cycle().await;
    assert_eq!((report.sent, report.accepted), (1, 1));
    assert_eq!(
        env.get("rf-big").await.submit_status,
        pb::SubmitStatus::Submitted as i32
    );

    // Reject: the refund fails and the debit is reversed through the outbox.
    let held = env.refund("rf-bad", "NB1", "2000.00").await;
    assert_eq!(held.hold_status, pb::HoldStatus::Held as i32);
    let rejected = env
        .controls
        .reject_hold(as_op(ctl("rf-bad", "card reported stolen"), "rita", "risk"))
        .await
        .expect("reject")
        .into_inner();
    assert_eq!(rejected.refund_status, pb::RefundStatus::Failed as i32);
    assert_eq!(rejected.hold_status, pb::HoldStatus::HoldRejected as i32);
    assert!(
        rejected.reason.contains("rejected by risk review"),
        "{}",
        rejected.reason
    );
    env.outbox().await;
    assert_eq!(
        env.debit_status("rf-bad").await,
        clpb::DebitStatus::Reversed
    );
    assert!(env.held().await.is_empty());
    let (c, _) = code(
        env.controls
            .reject_hold(as_op(ctl("rf-bad", "again"), "rita", "risk"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    env.rule(amount_rule("amt", "NB1", "1000.00", false)).await;

    // Merchant velocity: 4 refunds so far (all now); more than 5 in 60 minutes holds.
    env.rule(pb::RiskRule {
        rule_id: "mv".into(),
        kind: pb::RiskRuleKind::MerchantVelocity as i32,
        max_count: 5,
        window_minutes: 60,
        enabled: true,
        ..Default::default()
    })
    .await;
    let fifth = env.refund("rf-mv1", "NB2", "1.00").await;
    assert_eq!(fifth.hold_status, pb::HoldStatus::Unspecified as i32);
    let sixth = env.refund("rf-mv2", "NB2", "1.00").await;
    assert_eq!(sixth.hold_status, pb::HoldStatus::Held as i32);
    assert_eq!(sixth.hold_rule_id, "mv");
    assert!(
        sixth.hold_reason.contains("6 refunds of the merchant"),
        "{}",
        sixth.hold_reason
    );
    // An hour later the window is empty again.
    env.clock.advance(Duration::minutes(61));
    let later = env.refund("rf-mv3", "NB2", "1.00").await;
    assert_eq!(later.hold_status, pb::HoldStatus::Unspecified as i32);
    env.rule(pb::RiskRule {
        rule_id: "mv".into(),
        kind: pb::RiskRuleKind::MerchantVelocity as i32,
        max_count: 5,
        window_minutes: 60,
        enabled: false,
        ..Default::default()
    })
    .await;

    // Card velocity: more than one refund to a card in 60 minutes.
    env.rule(pb::RiskRule {
        rule_id: "cv".into(),
        kind: pb::RiskRuleKind::CardVelocity as i32,
        max_count: 1,
        window_minutes: 60,
        enabled: true,
        ..Default::default()
    })
    .await;
    let r = env.req("rf-cv1", "NB2", "2.00", CARD2);
    assert_eq!(
        env.create(r).await.hold_status,
        pb::HoldStatus::Unspecified as i32
    );
    let r = env.req("rf-cv2", "NB2", "2.00", CARD2);
    let second = env.create(r).await;
    assert_eq!(second.hold_status, pb::HoldStatus::Held as i32);
    assert_eq!(second.hold_rule_id, "cv");
    assert!(
        !second.hold_reason.contains(CARD2),
        "{}",
        second.hold_reason
    );
    let r = env.req("rf-cv3", "NB2", "2.00", CARD3);
    assert_eq!(
        env.create(r).await.hold_status,
        pb::HoldStatus::Unspecified as i32
    );
    let r = env.req("rf-cv4", "NB2", "2.00", "");
    assert_eq!(
        env.create(r).await.hold_status,
        pb::HoldStatus::Unspecified as i32
    );
    // The card is matched by a keyed hash, never stored in the clear.
    let hashes: Vec<String> = env
        .raw_db()
        .run(|c| {
            refund_cards::table
                .select(refund_cards::card_hash)
                .load::<String>(c)
                .map_err(tuikuan_db::db_err)
        })
        .await
        .expect("hashes");
    assert!(!hashes.is_empty());
    assert!(hashes
        .iter()
        .all(|h| h.len() == 64 && h != CARD2 && h != CARD));
    env.rule(pb::RiskRule {
        rule_id: "cv".into(),
        kind: pb::RiskRuleKind::CardVelocity as i32,
        max_count: 1,
        window_minutes: 60,
        enabled: false,
        ..Default::default()
    })
    .await;

    // Soon after payment: within 30 minutes of trade_paid_at.
    env.rule(pb::RiskRule {
        rule_id: "sp".into(),
        kind: pb::RiskRuleKind::SoonAfterPayment as i32,
        channel: "NB2".into(),
        window_minutes: 30,
        enabled: true,
        ..Default::default()
    })
    .await;
    let r = pb::CreateRefundRequest {
        trade_paid_at_ms: env.now_ms() - 10 * 60_000,
        ..env.req("rf-sp1", "NB2", "3.00", CARD)
    };
    let soon = env.create(r).await;
    assert_eq!(soon.hold_status, pb::HoldStatus::Held as i32);
    assert_eq!(soon.hold_rule_id, "sp");
    assert!(
        soon.hold_reason.contains("10 minutes after the payment"),
        "{}",
        soon.hold_reason
    );
    let r = env.req("rf-sp2", "NB2", "3.00", CARD);
    assert_eq!(
        env.create(r).await.hold_status,
        pb::HoldStatus::Unspecified as i32
    );

    let mut held = env.held().await;
    held.sort();
    assert_eq!(held, vec!["rf-cv2", "rf-mv2", "rf-sp1"]);

    // A held payout refund: no payout until released; suspended while held, released, then
    // resumed: the payout is created at once.
    env.rule(amount_rule("qp", "QP1", "100.00", true)).await;
    let qp = env.refund("rf-qp", "QP1", "150.00").await;
    assert_eq!(qp.hold_status, pb::HoldStatus::Held as i32);
    assert_eq!(qp.submit_status, pb::SubmitStatus::Pending as i32);
    let no_payout = env
        .payouts
        .get_payout(popb::GetPayoutRequest {
            payout_id: qp.bank_reference_id.clone(),
        })
        .await;
    assert!(no_payout.is_err(), "nothing is sent while HELD");
    let o = env
        .controls
        .suspend(as_op(
            ctl("rf-qp", "customer complaint open"),
            "olga",
            "ops",
        ))
        .await
        .expect("suspend while held")
        .into_inner();
    assert!(o.suspended);
    let o = env
        .controls
        .release_hold(as_op(ctl("rf-qp", "known customer"), "rita", "risk"))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(o.hold_status, pb::HoldStatus::HoldReleased as i32);
    assert_eq!(
        o.submit_status,
        pb::SubmitStatus::Pending as i32,
        "still suspended"
    );
    let report = env
        .refunds
        .run_payout_dispatch(pb::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("dispatch")
        .into_inner();
    assert_eq!(report.sent, 0);
    let o = env
        .controls
        .resume(as_op(ctl("rf-qp", "complaint closed"), "olga", "ops"))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(o.submit_status, pb::SubmitStatus::Submitted as i32);
    let payout = env
        .payouts
        .get_payout(popb::GetPayoutRequest {
            payout_id: o.bank_reference_id.clone(),
        })
        .await
        .expect("payout created on resume")
        .into_inner();
    assert_eq!(payout.amount, "150.00");
    let actions: Vec<String> = env
        .audit("rf-qp")
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, vec!["HOLD", "SUSPEND", "RELEASE_HOLD", "RESUME"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_holds_sqlite() {
    let db = TestDb::sqlite("refund");
    risk_holds(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_holds_postgres() {
    let Some(db) = TestDb::postgres("refund_risk_holds") else {
        return;
    };
    risk_holds(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// Manual controls from allowed and forbidden states; identity and roles; the audit trail.

async fn manual_controls(url: &str) {
    let mut env = Env::start(url).await;
    env.refund("rf-s", "NB1", "10.00").await;

    // Identity: missing → UNAUTHENTICATED; unknown or wrong role → PERMISSION_DENIED.
    let (c, _) = code(env.controls.suspend(as_op(ctl("rf-s", "x"), "", "")).await);
    assert_eq!(c, ErrorCode::Unauthenticated);
    let (c, _) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", "x"), "olga", ""))
            .await,
    );
    assert_eq!(c, ErrorCode::Unauthenticated);
    let (c, _) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", "x"), "olga", "boss"))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    let (c, m) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", "x"), "rita", "risk"))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    assert!(m.contains("needs role ops"), "{m}");
    let (c, _) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", ""), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidArgument);
    let (c, _) = code(
        env.controls
            .list_audit(as_op(pb::ListAuditRequest::default(), "", ""))
            .await,
    );
    assert_eq!(c, ErrorCode::Unauthenticated);

    // Suspend while PENDING: nothing is sent until Resume.
    let o = env
        .controls
        .suspend(as_op(
            ctl("rf-s", "merchant disputes the amount"),
            "olga",
            "ops",
        ))
        .await
        .expect("suspend")
        .into_inner();
    assert!(o.suspended);
    let (c, m) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", "again"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("already suspended"), "{m}");
    assert_eq!(env.cycle().await.sent, 0);
    let o = env
        .controls
        .resume(as_op(ctl("rf-s", "dispute settled"), "olga", "ops"))
        .await
        .expect("resume")
        .into_inner();
    assert!(!o.suspended);
    let (c, _) = code(
        env.controls
            .resume(as_op(ctl("rf-s", "again"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert_eq!(env.cycle().await.accepted, 1);

    // Submitted: no suspend, no terminate; finance may force-fail once the bank said it failed.
    let (c, m) = code(
        env.controls
            .suspend(as_op(ctl("rf-s", "late"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("submit status SUBMITTED"), "{m}");
    let (c, m) = code(
        env.controls
            .terminate(as_op(ctl("rf-s", "late"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("SUBMITTED"), "{m}");
    let (c, _) = code(
        env.controls
            .force_fail(as_op(ctl("rf-s", "bank says failed"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    // Submitted and no answer of the bank says it failed: the bank may still pay, so finance may
    // not give the money back yet.
    let (c, m) = code(
        env.controls
            .force_fail(as_op(ctl("rf-s", "merchant insists"), "fred", "finance"))
            .await,
    );
    assert_eq!(c, ErrorCode::BankMayHavePaid);
    assert!(m.contains("submitted"), "{m}");
    // The bank answers FAILED: now the refund may be force-failed.
    env.refunds
        .bank_callback(pb::BankCallbackRequest {
            refund_id: "rf-s".into(),
            bank_ref: "BREF-RF-S".into(),
            status: pb::BankStatus::BankFailed as i32,
            reason: "account closed".into(),
            sequence: 1_000_000,
        })
        .await
        .expect("bank callback");
    let o = env
        .controls
        .force_fail(as_op(
            ctl("rf-s", "bank confirmed the failure by phone"),
            "fred",
            "finance",
        ))
        .await
        .expect("force fail")
        .into_inner();
    assert_eq!(o.refund_status, pb::RefundStatus::Failed as i32);
    assert!(o.reason.contains("force-failed by finance"), "{}", o.reason);
    env.outbox().await;
    assert_eq!(env.debit_status("rf-s").await, clpb::DebitStatus::Reversed);
    let (c, m) = code(
        env.controls
            .force_fail(as_op(ctl("rf-s", "again"), "fred", "finance"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("refund status FAILED"), "{m}");

    // The bank says it paid: force-fail is refused, whatever finance is told; the money stays
    // where it is.
    env.refund("rf-p", "NB1", "15.00").await;
    assert_eq!(env.cycle().await.accepted, 1);
    env.refunds
        .bank_callback(pb::BankCallbackRequest {
            refund_id: "rf-p".into(),
            bank_ref: "BREF-RF-P".into(),
            status: pb::BankStatus::BankSucceeded as i32,
            reason: String::new(),
            sequence: 1_000_000,
        })
        .await
        .expect("bank callback");
    let (c, m) = code(
        env.controls
            .force_fail(as_op(
                ctl("rf-p", "merchant says unpaid"),
                "fred",
                "finance",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::BankMayHavePaid);
    assert!(m.contains("BANK_SUCCEEDED"), "{m}");
    assert_eq!(env.debit_status("rf-p").await, clpb::DebitStatus::Debited);

    // Terminate before submission: final FAILED, the money back, the bank never saw it.
    env.refund("rf-t", "NB1", "20.00").await;
    let o = env
        .controls
        .terminate(as_op(
            ctl("rf-t", "merchant withdrew the request"),
            "olga",
            "ops",
        ))
        .await
        .expect("terminate")
        .into_inner();
    assert_eq!(o.refund_status, pb::RefundStatus::Failed as i32);
    assert!(
        o.reason.contains("terminated by operations"),
        "{}",
        o.reason
    );
    assert_eq!(o.attempts[0].outcome, "FAILED");
    env.outbox().await;
    assert_eq!(env.debit_status("rf-t").await, clpb::DebitStatus::Reversed);
    assert_eq!(env.cycle().await.sent, 0);
    assert!(env
        .bank
        .query_refund(bankpb::QueryRequest { id: "rf-t".into() })
        .await
        .is_err());
    let (c, _) = code(
        env.controls
            .terminate(as_op(ctl("rf-t", "again"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);

    // Offline: confirmed by hand once submitted.
    env.refund("rf-o1", "OF1", "30.00").await;
    env.refund("rf-o2", "OF1", "40.00").await;
    env.refund("rf-o3", "OF1", "50.00").await;
    let confirm = |id: &str, status: pb::RefundStatus, reason: &str| pb::ConfirmOutcomeRequest {
        refund_id: id.into(),
        status: status as i32,
        reason: reason.into(),
        bank_reference_id: String::new(),
        evidence: "bank statement 2026-11-24 line 7".into(),
    };
    let (c, m) = code(
        env.controls
            .confirm_outcome(as_op(
                confirm("rf-o1", pb::RefundStatus::Succeeded, "phoned"),
                "fred",
                "finance",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("not SUBMITTED"), "{m}");
    // Not in a batch yet: terminable.
    env.controls
        .terminate(as_op(
            ctl("rf-o3", "customer paid back in cash"),
            "olga",
            "ops",
        ))
        .await
        .expect("terminate offline");
    let batches = env
        .batches
        .generate_batches(pb::GenerateBatchesRequest {
            date: "2026-11-24".into(),
        })
        .await
        .expect("generate")
        .into_inner()
        .batches;
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].row_count, 2,
        "the terminated order is not batched"
    );
    let batch_id = batches[0].batch_id.clone();
    // In a generated spreadsheet: handed over, so neither suspend nor terminate.
    let (c, m) = code(
        env.controls
            .suspend(as_op(ctl("rf-o1", "wait"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("in batch row"), "{m}");
    let (c, _) = code(
        env.controls
            .terminate(as_op(ctl("rf-o1", "stop"), "olga", "ops"))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    env.batches
        .mark_batch(pb::MarkBatchRequest {
            batch_id: batch_id.clone(),
            status: pb::BatchStatus::Sent as i32,
            operator: "olga".into(),
            note: String::new(),
        })
        .await
        .expect("mark sent");
    // Ops may confirm a success, not a failure.
    let (c, _) = code(
        env.controls
            .confirm_outcome(as_op(
                confirm("rf-o1", pb::RefundStatus::Failed, "fax"),
                "olga",
                "ops",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::PermissionDenied);
    let (c, _) = code(
        env.controls
            .confirm_outcome(as_op(
                confirm("rf-o1", pb::RefundStatus::Processing, "fax"),
                "olga",
                "ops",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidArgument);
    let o = env
        .controls
        .confirm_outcome(as_op(
            confirm("rf-o1", pb::RefundStatus::Succeeded, "bank phoned: paid"),
            "olga",
            "ops",
        ))
        .await
        .expect("confirm success")
        .into_inner();
    assert_eq!(o.refund_status, pb::RefundStatus::Succeeded as i32);
    assert!(
        o.final_source.contains("CONFIRM_SUCCEEDED by olga (ops)"),
        "{}",
        o.final_source
    );
    let o = env
        .controls
        .confirm_outcome(as_op(
            confirm(
                "rf-o2",
                pb::RefundStatus::Failed,
                "bank faxed: account closed",
            ),
            "fred",
            "finance",
        ))
        .await
        .expect("confirm failure")
        .into_inner();
    assert_eq!(o.refund_status, pb::RefundStatus::Failed as i32);
    env.outbox().await;
    assert_eq!(
        env.debit_status("rf-o1").await,
        clpb::DebitStatus::Completed
    );
    assert_eq!(env.debit_status("rf-o2").await, clpb::DebitStatus::Reversed);
    assert_eq!(env.debit_status("rf-o3").await, clpb::DebitStatus::Reversed);
    let batch = env
        .batches
        .get_batch(pb::GetBatchRequest {
            batch_id: batch_id.clone(),
        })
        .await
        .expect("batch")
        .into_inner();
    let failed_row = batch
        .rows
        .iter()
        .find(|r| r.refund_id == "rf-o2")
        .expect("row");
    assert_eq!(failed_row.status, pb::RowStatus::RowFailed as i32);
    let (c, _) = code(
        env.controls
            .confirm_outcome(as_op(
                confirm("rf-o1", pb::RefundStatus::Succeeded, "again"),
                "fred",
                "finance",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    // Only offline and file-upload attempts are confirmed by hand.
    env.refund("rf-i", "NB1", "5.00").await;
    env.cycle().await;
    let (c, m) = code(
        env.controls
            .confirm_outcome(as_op(
                confirm("rf-i", pb::RefundStatus::Succeeded, "phoned"),
                "fred",
                "finance",
            ))
            .await,
    );
    assert_eq!(c, ErrorCode::InvalidStateTransition);
    assert!(m.contains("method INTERFACE"), "{m}");

    // The audit trail: every manual action, nothing for refused ones.
    let trail = env.audit("rf-s").await;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["SUSPEND", "RESUME", "FORCE_FAIL"]);
    let first = &trail[0];
    assert_eq!(first.refund_id, "rf-s");
    assert_eq!(
        (first.operator.as_str(), first.role.as_str()),
        ("olga", "ops")
    );
    assert_eq!(first.reason, "merchant disputes the amount");
    assert_eq!(first.at_ms, env.now_ms());
    let before: serde_json::Value = serde_json::from_str(&first.state_before).expect("json");
    let after: serde_json::Value = serde_json::from_str(&first.state_after).expect("json");
    assert_eq!(before["suspended"], false);
    assert_eq!(after["suspended"], true);
    assert_eq!(after["submit_status"], "PENDING");
    let last: serde_json::Value = serde_json::from_str(&trail[2].state_after).expect("json");
    assert_eq!(last["refund_status"], "FAILED");
    assert_eq!(
        (trail[2].operator.as_str(), trail[2].role.as_str()),
        ("fred", "finance")
    );
    // All refunds, paged.
    let page = |after: String| pb::ListAuditRequest {
        refund_id: String::new(),
        limit: 4,
        after,
    };
    let first_page = env
        .controls
        .list_audit(as_op(page(String::new()), "fred", "finance"))
        .await
        .expect("page 1")
        .into_inner()
        .entries;
    assert_eq!(first_page.len(), 4);
    let second_page = env
        .controls
        .list_audit(as_op(
            page(first_page[3].audit_id.clone()),
            "fred",
            "finance",
        ))
        .await
        .expect("page 2")
        .into_inner()
        .entries;
    // SUSPEND, RESUME, FORCE_FAIL, TERMINATE x2, CONFIRM x2.
    assert_eq!(first_page.len() + second_page.len(), 7);
    assert!(second_page
        .iter()
        .all(|e| e.audit_id > first_page[3].audit_id));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_controls_sqlite() {
    let db = TestDb::sqlite("refund");
    manual_controls(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_controls_postgres() {
    let Some(db) = TestDb::postgres("refund_manual_controls") else {
        return;
    };
    manual_controls(db.url()).await;
}

// -------------------------------------------------------------------------------------------------
// Card numbers at rest: encrypted in every table, whole for the payout and the bank's file;
// plaintext rows from before are encrypted by the startup pass.

async fn cards_at_rest(url: &str) {
    let mut env = Env::start(url).await;

    // A payout refund: the payout center receives the whole number (it validates and masks it),
    // the bank pays it.
    let o = env.refund("rf-c1", "QP1", "88.00").await;
    assert_eq!(o.submit_status, pb::SubmitStatus::Submitted as i32);
    let payout = env
        .payouts
        .get_payout(popb::GetPayoutRequest {
            payout_id: o.bank_reference_id.clone(),
        })
        .await
        .expect("payout")
        .into_inner();
    assert_eq!(payout.card_no_masked, "**** 2223");
    env.payouts
        .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    env.clock.advance(Duration::minutes(2));
    env.bank.tick(bankpb::TickRequest {}).await.expect("tick");
    env.payouts
        .run_payout_cycle(popb::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    assert_eq!(
        env.get("rf-c1").await.bank_status,
        pb::BankStatus::BankSucceeded as i32
    );

    // An offline refund: its batch row and spreadsheet are encrypted at rest, whole in the file.
    env.refund("rf-c2", "OF1", "12.00").await;
    let batch = env
        .batches
        .generate_batches(pb::GenerateBatchesRequest {
            date: "2026-11-24".into(),
        })
        .await
        .expect("generate")
        .into_inner()
        .batches
        .remove(0);
    assert_eq!(batch.rows[0].card_masked, "**** 2223");
    let file = env
        .batches
        .download_batch(pb::GetBatchRequest {
            batch_id: batch.batch_id.clone(),
        })
        .await
        .expect("download")
        .into_inner();
    let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(file.content)).expect("xlsx");
    let sheet = wb
        .worksheet_range_at(0)
        .expect("a sheet")
        .expect("readable sheet");
    assert!(
        sheet
            .rows()
            .flatten()
            .any(|c| matches!(c, Data::String(s) if s == CARD)),
        "the bank's file carries the whole number"
    );

    // Raw rows: never the number.
    let db = env.raw_db();
    let (stored, row_card, file_hex) = db
        .run(|c| {
            let stored: String = refunds::table
                .find("rf-c1")
                .select(refunds::payer_card_no)
                .first(c)
                .map_err(tuikuan_db::db_err)?;
            let row_card: String = refund_batch_rows::table
                .filter(refund_batch_rows::refund_id.eq("rf-c2"))
                .select(refund_batch_rows::card_no)
                .first(c)
                .map_err(tuikuan_db::db_err)?;
            let file_hex: String = refund_batches::table
                .select(refund_batches::file_hex)
                .first(c)
                .map_err(tuikuan_db::db_err)?;
            Ok((stored, row_card, file_hex))
        })
        .await
        .expect("raw rows");
    for value in [&stored, &row_card, &file_hex] {
        assert!(value.starts_with("enc:v1:"), "{value}");
        assert!(!value.contains(CARD));
    }
    assert!(
        !file_hex.contains(&hex_of(CARD)),
        "the file is not stored in the clear"
    );
    let vault = Sealer::new(&test_key());
    assert_eq!(vault.open("rf-c1", &stored).expect("decrypts"), CARD);

    // A plaintext row from before encryption: still readable, then encrypted by the pass.
    env.refund("rf-c3", "NB1", "1.00").await;
    db.run(|c| {
        diesel::update(refunds::table.find("rf-c3"))
            .set(refunds::payer_card_no.eq(CARD))
            .execute(c)
            .map_err(tuikuan_db::db_err)?;
        diesel::delete(refund_cards::table.find("rf-c3"))
            .execute(c)
            .map_err(tuikuan_db::db_err)?;
        diesel::update(refund_batch_rows::table.filter(refund_batch_rows::refund_id.eq("rf-c2")))
            .set(refund_batch_rows::card_no.eq(CARD))
            .execute(c)
            .map_err(tuikuan_db::db_err)?;
        Ok(())
    })
    .await
    .expect("plant plaintext");
    assert_eq!(env.get("rf-c3").await.refund_id, "rf-c3");
    let pass_vault = vault.clone();
    let pass = db
        .run(move |c| tuikuan_refund::store::encrypt_legacy(c, &pass_vault))
        .await
        .expect("pass");
    assert_eq!((pass.refunds, pass.batch_rows, pass.batch_files), (1, 1, 0));
    let again_vault = vault.clone();
    let again = db
        .run(move |c| tuikuan_refund::store::encrypt_legacy(c, &again_vault))
        .await
        .expect("pass again");
    assert_eq!(again, Default::default());
    let (stored, indexed) = db
        .run(|c| {
            let stored: String = refunds::table
                .find("rf-c3")
                .select(refunds::payer_card_no)
                .first(c)
                .map_err(tuikuan_db::db_err)?;
            let indexed: i64 = refund_cards::table
                .find("rf-c3")
                .count()
                .get_result(c)
                .map_err(tuikuan_db::db_err)?;
            Ok((stored, indexed))
        })
        .await
        .expect("raw");
    assert!(stored.starts_with("enc:v1:"));
    assert_eq!(indexed, 1);
    assert_eq!(vault.open("rf-c3", &stored).expect("decrypts"), CARD);
    // The service still reads every row (the batch row's card included).
    let batch = env
        .batches
        .get_batch(pb::GetBatchRequest {
            batch_id: batch.batch_id.clone(),
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(batch.rows[0].card_masked, "**** 2223");
    env.stop().await;
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_at_rest_sqlite() {
    let db = TestDb::sqlite("refund");
    cards_at_rest(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_at_rest_postgres() {
    let Some(db) = TestDb::postgres("refund_cards_at_rest") else {
        return;
    };
    cards_at_rest(db.url()).await;
}
