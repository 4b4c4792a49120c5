//! ReinstateDebit end to end: a reversed refund the bank paid is taken from the merchant again;
//! what its balance cannot cover becomes a receivable; the trade's counters are taken again;
//! repeats post nothing more.

use super::*;

fn reinstate_req(refund: &str) -> pb::ReinstateDebitRequest {
    pb::ReinstateDebitRequest {
        refund_id: refund.to_string(),
        reason: "the bank paid it".to_string(),
    }
}

fn entry(t: apb::AccountType, owner: &str, side: apb::Side, amount: &str) -> apb::Entry {
    apb::Entry {
        account: Some(account(t, owner)),
        side: side as i32,
        amount: amount.to_string(),
        ..Default::default()
    }
}

pub(super) async fn reinstated_debits(acc: &str, clr: &str) {
    let mut env = Env::start(acc, clr).await;
    env.policy("m1", "0.006", pb::FeeRefundPolicy::Proportional)
        .await;
    env.settle("t1", "m1", "100.00").await.expect("settle");
    env.debit("rf1", "t1", "m1", "50.00").await.expect("debit");
    let reversed = env.reverse("rf1").await.expect("reverse");
    assert_eq!(status(&reversed), pb::DebitStatus::Reversed);
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "99.40");
    // The merchant's money left meanwhile (a withdrawal): 30.00 is left.
    env.ledger
        .post(apb::PostRequest {
            request_id: "test-withdrawal:1".into(),
            description: "withdrawal".into(),
            entries: vec![
                entry(MerchantSettlement, "m1", apb::Side::Debit, "69.40"),
                entry(ChannelReserve, "netbank", apb::Side::Credit, "69.40"),
            ],
            ..Default::default()
        })
        .await
        .expect("withdrawal");

    let err = env
        .client
        .reinstate_debit(reinstate_req("nope"))
        .await
        .expect_err("unknown");
    assert_eq!(code_of(&err), "DEBIT_NOT_FOUND");
    let d = env
        .client
        .reinstate_debit(reinstate_req("rf1"))
        .await
        .expect("reinstate")
        .into_inner();
    assert_eq!(status(&d), pb::DebitStatus::Completed);
    assert_ne!(d.final_posting_id, reversed.final_posting_id);
    // 49.70 owed: 30.00 from the balance, 19.70 owed by the merchant; the fee share 0.30 and
    // the receivable paid into the reserve from own funds; the cash 50.00 left the reserve.
    assert_eq!(env.balance(MerchantSettlement, "m1").await, "0.00");
    assert_eq!(
        env.balance(apb::AccountType::MerchantReceivable, "m1")
            .await,
        "19.70"
    );
    assert_eq!(env.balance(ChannelReserve, "netbank").await, "0.00");
    assert_eq!(env.balance(RefundInTransit, "platform").await, "0.00");
    assert_eq!(env.balance(FeeIncome, "platform").await, "0.30");
    // Idempotent: the same answer, one posting.
    let again = env
        .client
        .reinstate_debit(reinstate_req("rf1"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, d);
    assert!(env.posting_exists("refund-reinstate:rf1").await);
    assert_eq!(
        env.postings_of(apb::AccountType::MerchantReceivable, "m1")
            .await
            .len(),
        1
    );
    // The trade counts the refund again: only 50.00 is left to refund.
    let err = env
        .debit("rf2", "t1", "m1", "50.01")
        .await
        .expect_err("over the payment");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    // A completed debit is not reversed any more.
    let err = env.reverse("rf1").await.expect_err("completed");
    assert_eq!(code_of(&err), "DEBIT_NOT_ACTIVE");

    // A debit whose reversal never happened is simply completed.
    env.settle("t2", "m1", "20.00").await.expect("settle");
    env.debit("rf3", "t2", "m1", "10.00").await.expect("debit");
    let d3 = env
        .client
        .reinstate_debit(reinstate_req("rf3"))
        .await
        .expect("reinstate a held debit")
        .into_inner();
    assert_eq!(status(&d3), pb::DebitStatus::Completed);
    assert!(env.posting_exists("refund-complete:rf3").await);
    assert!(!env.posting_exists("refund-reinstate:rf3").await);

    // Another refund took the money back meanwhile: the reinstatement is refused, nothing moves.
    env.settle("t3", "m1", "40.00").await.expect("settle");
    env.debit("rf4", "t3", "m1", "40.00").await.expect("debit");
    env.reverse("rf4").await.expect("reverse");
    env.debit("rf5", "t3", "m1", "40.00").await.expect("debit");
    let err = env
        .client
        .reinstate_debit(reinstate_req("rf4"))
        .await
        .expect_err("the payment is refunded by rf5");
    assert_eq!(code_of(&err), "REFUND_EXCEEDS_PAID");
    assert_eq!(
        status(&env.get_debit("rf4").await),
        pb::DebitStatus::Reversed
    );
    assert!(!env.posting_exists("refund-reinstate:rf4").await);
    env.assert_trial_balanced().await;
    env.stop().await;
}
