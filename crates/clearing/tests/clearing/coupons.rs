//! A refund that the platform's coupon share covers entirely has no cash to pay back: it is
//! refused up front with COUPON_ONLY_REFUND, nothing debited (not a debit followed by a reversal).

use super::*;

pub(super) async fn coupon_only_refund(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0", pb::FeeRefundPolicy::Proportional)
        .await;
    // 0.05 paid, 0.04 of it by a platform coupon: a refund of 0.01 carries a coupon share of
    // round(4 × 1 / 5) = 0.01, all of it.
    env.settle_with("t1", "0.05", &[], "0.04")
        .await
        .expect("settle");
    let err = env
        .debit("rf1", "t1", "m1", "0.01")
        .await
        .expect_err("coupon only");
    assert_eq!(code_of(&err), "COUPON_ONLY_REFUND");
    assert!(!env.posting_exists("refund-debit:rf1").await);
    let err = env
        .client
        .get_debit(pb::GetDebitRequest {
            refund_id: "rf1".into(),
        })
        .await
        .expect_err("no debit was recorded");
    assert_eq!(code_of(&err), "DEBIT_NOT_FOUND");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.05");

    // The whole payment has cash in it: 0.01 to the customer, 0.04 back to the platform.
    let d = env.debit("rf2", "t1", "m1", "0.05").await.expect("full");
    assert_eq!(
        (d.subsidy_amount.as_str(), d.merchant_amount.as_str()),
        ("0.04", "0.05")
    );
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.01");
    env.assert_trial_balanced().await;
    env.stop().await;
}
