//! What covers a merchant's shortfall on a refund debit: an error refund (差错退款) goes through
//! on an advance whatever the line; an advance line has a currency and lends in no other.

use super::*;

/// An error refund of a merchant with no balance and no line goes through: the shortfall is
/// advanced and repaid first by the merchant's next settlement. An ordinary refund in the same
/// position is refused.
pub(super) async fn error_refund_when_short(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::None).await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    env.settle("t2", "m1", "20.00").await.expect("settle");
    env.withdraw("w1", "m1", "100.00").await;
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "19.28");

    let err = env
        .debit("rf0", "t1", "m1", "50.00")
        .await
        .expect_err("an ordinary refund with no line");
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");

    // The duplicate payment t1 goes back whole: 99.40 from the merchant (the fee 0.60 is given
    // back), 19.28 from its balance and 80.12 advanced.
    let d = env
        .debit_with("rf1", "t1", "100.00", &[], true)
        .await
        .expect("error refund when short");
    assert_eq!(status(&d), pb::DebitStatus::Debited);
    assert_eq!(
        (
            d.merchant_amount.as_str(),
            d.fee_amount.as_str(),
            d.advance_amount.as_str()
        ),
        ("99.40", "0.60", "80.12")
    );
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(env.balance(Advance, "m1").await, "80.12");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "100.00");
    let again = env
        .debit_with("rf1", "t1", "100.00", &[], true)
        .await
        .expect("repeat");
    assert_eq!(again.advance_amount, "80.12");
    env.complete("rf1").await.expect("complete");

    // The next settlement repays the advance first.
    let s = env.settle("t3", "m1", "100.00").await.expect("settle t3");
    assert_eq!(s.net, "99.40");
    assert_eq!(env.balance(Advance, "m1").await, "0.00");
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "19.28");
    env.assert_trial_balanced().await;
    env.stop().await;
}

/// An advance line names its currency; a refund in another currency gets no advance and says so.
pub(super) async fn advance_line_currency(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    let line = |currency: &str| pb::MerchantPolicy {
        merchant_id: "m1".into(),
        fee_rate: "0".into(),
        fee_refund: pb::FeeRefundPolicy::None as i32,
        advance_limit: "10.00".into(),
        advance_currency: currency.into(),
    };
    let err = env
        .client
        .upsert_merchant_policy(line(""))
        .await
        .expect_err("a line without a currency");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    assert!(
        err.message().starts_with("advance_currency:"),
        "{}",
        err.message()
    );
    let p = env
        .client
        .upsert_merchant_policy(line("USD"))
        .await
        .expect("a USD line")
        .into_inner();
    assert_eq!(
        (p.advance_limit.as_str(), p.advance_currency.as_str()),
        ("10", "USD")
    );

    // A CNY trade and a USD trade, the merchant holding nothing of either.
    env.settle("t1", "m1", "5.00").await.expect("settle CNY");
    env.client
        .settle_payment(pb::SettlePaymentRequest {
            currency: "USD".into(),
            ..settle_req("t2", "m1", "5.00")
        })
        .await
        .expect("settle USD");
    env.withdraw("w1", "m1", "5.00").await;
    env.withdraw_in("w2", "m1", "5.00", Currency::Usd).await;

    // CNY: the line is in USD, so nothing is advanced, and the answer says why.
    let err = env
        .debit("rf1", "t1", "m1", "3.00")
        .await
        .expect_err("no CNY line");
    assert_eq!(code_of(&err), "ADVANCE_CURRENCY_MISMATCH");
    assert!(err.message().contains("USD"), "{}", err.message());
    assert!(!env.posting_exists("refund-debit:rf1").await);

    // USD: advanced within the 10.00 line.
    let d = env
        .client
        .refund_debit(pb::RefundDebitRequest {
            currency: "USD".into(),
            ..debit_req("rf2", "t2", "m1", "3.00")
        })
        .await
        .expect("USD advanced")
        .into_inner();
    assert_eq!(d.advance_amount, "3.00");
    let usd_advance = env
        .ledger
        .get_balance(apb::GetBalanceRequest {
            account: Some(apb::Account {
                currency: "USD".into(),
                ..account(Advance, "m1")
            }),
            ..Default::default()
        })
        .await
        .expect("balance")
        .into_inner();
    assert_eq!(usd_advance.balance, "3.00");
    assert_eq!(env.balance(Advance, "m1").await, "0.00", "nothing in CNY");
    env.stop().await;
}
