//! The full chain, merchant request to reconciled final status, with a balanced ledger.

use tuikuan::demo::{self, DemoOptions};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;

use crate::both_stores;
use crate::sandbox::{store_config, Sandbox, Store, KEY_A};

/// The demo's whole scenario — all four methods, a fallback, a returned payout, a holiday, bank
/// failures and an insufficient balance — reaches final states with every invariant holding.
async fn demo_scenario(store: Store) {
    let Some((tmp, database_url, _pg)) = store_config(store) else {
        return;
    };
    let summary = demo::run(DemoOptions {
        data_dir: Some(tmp.path().to_path_buf()),
        database_url,
        verbose: false,
        ..DemoOptions::default()
    })
    .await
    .expect("demo runs");
    assert!(summary.ok(), "violations: {:?}", summary.violations);
    assert!(summary.trial_balance_balanced);
    let n = |s: &str| summary.refunds_by_status.get(s).copied().unwrap_or(0);
    for method in ["INTERFACE", "PAYOUT", "FILE_UPLOAD", "OFFLINE"] {
        assert!(
            summary.succeeded_by(method) > 0,
            "no {method} refund succeeded: {:?}",
            summary.by_method
        );
    }
    assert!(summary.fallbacks > 0, "{summary:?}");
    assert!(summary.returned > 0, "{summary:?}");
    assert!(summary.holiday_refunds_batched > 0, "{summary:?}");
    assert!(summary.spreadsheets.iter().all(|p| p.exists()));
    // The talk's Q&A cases: error refund, split, subsidy, advance, risk hold, suspend/terminate.
    assert_eq!(summary.cases.len(), 6, "{:?}", summary.cases);
    assert!(summary.notifications_received > 0);
    assert_eq!(
        summary.notifications_verified,
        summary.notifications_received
    );
    assert_eq!(
        n("REJECTED"),
        1,
        "the insufficient balance: {:?}",
        summary.refunds_by_status
    );
    assert_eq!(n("PROCESSING") + n("RECEIVED"), 0);
    assert_eq!(summary.balances.len(), 4);
}
both_stores!(demo_scenario);

/// One refund the bank pays and one it fails: final statuses, postings and balances to the cent.
async fn success_and_failure_reach_final_states(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    let r = sb
        .refund(KEY_A, "R-1", "O-1", "40.00")
        .await
        .expect("accepted");
    assert_eq!(r.status, biz::RefundStatus::Processing as i32);
    // Debited at once: 40.00 refund, fee share 0.24 back from the platform.
    let debit =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: r.refund_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(debit.fee_amount, "0.24");
    assert_eq!(debit.merchant_amount, "39.76");
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "40.00"
    );

    let run = sb.run_day().await;
    let matched = run
        .counts
        .iter()
        .find(|c| c.outcome == rec::Outcome::Matched as i32)
        .map(|c| c.count)
        .unwrap_or(0);
    assert_eq!(matched, 1, "{run:?}");
    let r = sb.get_refund(KEY_A, "R-1").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Succeeded as i32, "{r:?}");
    // 100.00 - 0.60 fee - 39.76 merchant part
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "59.64"
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    assert_eq!(
        sb.balance(acc::AccountType::FeeIncome, "platform").await,
        "0.36"
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;

    // Now a bank that fails everything: the refund fails, the money goes back to the merchant.
    let Some(mut sb) = Sandbox::start(store, 1000).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    sb.refund(KEY_A, "R-1", "O-1", "40.00")
        .await
        .expect("accepted");
    let run = sb.run_day().await;
    assert!(
        run.counts
            .iter()
            .any(|c| c.outcome == rec::Outcome::BankFailed as i32 && c.count == 1),
        "{run:?}"
    );
    let r = sb.get_refund(KEY_A, "R-1").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Failed as i32, "{r:?}");
    assert!(!r.reason.is_empty());
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "99.40"
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    // The failed amount is refundable again.
    let again = sb
        .refund(KEY_A, "R-2", "O-1", "100.00")
        .await
        .expect("accepted");
    assert_eq!(again.status, biz::RefundStatus::Processing as i32);
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(success_and_failure_reach_final_states);

/// Re-running the same clearing file changes nothing.
async fn reconciliation_rerun_changes_nothing(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 300).await else {
        return;
    };
    for i in 0..6 {
        sb.pay("MA", &format!("O-{i}"), "50.00").await;
        sb.refund(KEY_A, &format!("R-{i}"), &format!("O-{i}"), "50.00")
            .await
            .expect("accepted");
    }
    let first = sb.run_day().await;
    let postings_before = sb.postings_with_prefix("refund-").await.len();
    let balance_before = sb.balance(acc::AccountType::MerchantSettlement, "MA").await;
    let again =
        sb.c.reconciliation
            .run_reconciliation(rec::RunReconciliationRequest {
                channel: first.channel.clone(),
                date: first.date.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    assert!(again.replayed);
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(
        sb.postings_with_prefix("refund-").await.len(),
        postings_before
    );
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        balance_before
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(reconciliation_rerun_changes_nothing);

/// A platform-subsidised payment: the customer gets back only the cash part, the subsidy share
/// goes back to the platform's subsidy account, and the bank pays exactly the cash.
async fn subsidised_refund_pays_back_cash(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    use tuikuan_kernel::Clock;
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: "MA".into(),
            order_no: "O-S".into(),
            channel: crate::sandbox::CHANNEL.into(),
            amount: "100.00".into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            platform_subsidy: "20.00".into(),
            ..Default::default()
        })
        .await
        .expect("payment");
    let r = sb
        .refund(KEY_A, "R-S", "O-S", "50.00")
        .await
        .expect("accepted");
    let debit =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: r.refund_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(debit.subsidy_amount, "10.00");
    let order =
        sb.c.refund
            .get_refund(tuikuan_proto::refund::v1::GetRefundRequest {
                refund_id: r.refund_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(order.amount, "40.00", "the bank pays the cash part only");
    sb.run_day().await;
    let r = sb.get_refund(KEY_A, "R-S").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Succeeded as i32, "{r:?}");
    // The customers' part of the reserve is what the merchant holds; the coupon went in from the
    // platform's own funds (20.00 + the 0.30 fee share), its share of the refund back to the
    // platform's part (0.60 fee + 10.00).
    assert_eq!(
        sb.balance(acc::AccountType::ChannelReserve, crate::sandbox::CHANNEL)
            .await,
        "49.70"
    );
    assert_eq!(
        sb.balance(acc::AccountType::PlatformInReserve, crate::sandbox::CHANNEL)
            .await,
        "10.60"
    );
    assert_eq!(
        sb.balance(acc::AccountType::OwnFunds, "platform").await,
        "-20.30"
    );
    assert_eq!(
        sb.balance(acc::AccountType::Subsidy, "platform").await,
        "10.00"
    );
    // 100.00 - 0.60 fee - (50.00 - 0.30 fee share)
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "49.70"
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    sb.assert_books_balanced().await;
    // The auditor's books checks: the reserve identity holds, no part of a reserve is negative.
    let report = tuikuan::audit::run_with(
        &sb.c,
        &tuikuan::audit::AuditOptions {
            now_ms: Some(tuikuan_kernel::Clock::now_ms(&sb.clock)),
            ..Default::default()
        },
    )
    .await
    .expect("audit");
    assert!(report.ok(), "{report}");
    sb.shutdown().await;
}
both_stores!(subsidised_refund_pays_back_cash);

/// A split payment (分账): a partial refund takes back from each receiver by its share.
async fn split_refund_takes_back_by_share(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    use tuikuan_kernel::Clock;
    let split = |id: &str, amount: &str| biz::SplitReceiver {
        receiver_id: id.into(),
        amount: amount.into(),
    };
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: "MA".into(),
            order_no: "O-SPLIT".into(),
            channel: crate::sandbox::CHANNEL.into(),
            amount: "300.00".into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            receivers: vec![split("MA", "200.00"), split("MB", "100.00")],
            ..Default::default()
        })
        .await
        .expect("payment");
    // Settled by share, each receiver paying its own fee (0.6%).
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "198.80"
    );
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MB").await,
        "99.40"
    );
    let r = sb
        .refund(KEY_A, "R-SPLIT", "O-SPLIT", "90.00")
        .await
        .expect("accepted");
    let debit =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: r.refund_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    let parts: Vec<(String, String)> = debit
        .splits
        .iter()
        .map(|p| (p.receiver_id.clone(), p.amount.clone()))
        .collect();
    assert!(parts.contains(&("MA".into(), "60.00".into())), "{parts:?}");
    assert!(parts.contains(&("MB".into(), "30.00".into())), "{parts:?}");
    sb.run_day().await;
    let r = sb.get_refund(KEY_A, "R-SPLIT").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Succeeded as i32, "{r:?}");
    let completed =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: r.refund_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(completed.status, clr::DebitStatus::Completed as i32);
    assert_eq!(
        completed.splits, debit.splits,
        "the parts survive completion"
    );
    // 198.80 - (60.00 - 0.36 fee share); 99.40 - (30.00 - 0.18)
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "139.16"
    );
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MB").await,
        "69.58"
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(split_refund_takes_back_by_share);
