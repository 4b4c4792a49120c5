//! The auditor flags a posting whose reason it does not know, whatever accounts it moves — a
//! balanced posting between a channel reserve and fee income passes the trial balance, but not
//! the audit (issue 18 item 6).

use tuikuan::audit::{self, AuditOptions};
use tuikuan_kernel::Clock;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::tls::Principal;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, CHANNEL};

fn line(t: acc::AccountType, owner: &str, side: acc::Side, amount: &str) -> acc::Entry {
    acc::Entry {
        account: Some(acc::Account {
            r#type: t as i32,
            owner: owner.into(),
            currency: "CNY".into(),
        }),
        side: side as i32,
        amount: amount.into(),
        ..Default::default()
    }
}

async fn a_hand_made_posting_between_reserve_and_fee_income_is_flagged(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    let options = AuditOptions {
        now_ms: Some(sb.clock.now_ms()),
        ..AuditOptions::default()
    };
    let clean = audit::run_with(&sb.c, &options).await.expect("audit");
    assert!(clean.ok(), "{clean}");

    // Posted as the clearing center would post, balanced, touching no merchant account.
    let clearing = sb.as_service(Principal::Clearing);
    let mut ledger = clearing.accounting.clone();
    ledger
        .post(acc::PostRequest {
            request_id: "fee-correction:1".into(),
            description: "moves customer money to fee income".into(),
            entries: vec![
                line(
                    acc::AccountType::ChannelReserve,
                    CHANNEL,
                    acc::Side::Debit,
                    "5.00",
                ),
                line(
                    acc::AccountType::FeeIncome,
                    "platform",
                    acc::Side::Credit,
                    "5.00",
                ),
            ],
            ..Default::default()
        })
        .await
        .expect("the ledger takes a balanced posting");
    let trial =
        sb.c.accounting
            .trial_balance(acc::TrialBalanceRequest::default())
            .await
            .expect("trial balance")
            .into_inner();
    assert!(trial.balanced, "the trial balance cannot see it");

    let report = audit::run_with(&sb.c, &options).await.expect("audit");
    assert!(!report.ok(), "{report}");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("fee-correction:1")
                && v.contains("reason the auditor does not know")),
        "{report}"
    );
    sb.shutdown().await;
}
both_stores!(a_hand_made_posting_between_reserve_and_fee_income_is_flagged);
