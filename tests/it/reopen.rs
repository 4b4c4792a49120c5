//! Bank wins on a status conflict the bank failed (issue 18 item 1): the platform had made the
//! refund SUCCEEDED (a wrong file said the bank paid it), the bank's own file says it failed.
//! Resolved bank-wins and approved by a second finance operator, the refund is reopened: its
//! completion is undone, the merchant sees PROCESSING, and the next method delivers it — the
//! customer is paid once, by the bank's own records. With no method left it fails back to the
//! merchant. Either way `tuikuan audit` is clean.

use chrono::Duration;
use tuikuan::audit::{self, AuditOptions, AuditReport};
use tuikuan::config::Service;
use tuikuan_auth::answer::proposal_of;
use tuikuan_auth::Role;
use tuikuan_kernel::Clock;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::payout::v1 as pay;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::both_stores;
use crate::faults::{add_method_channels, pay_on};
use crate::sandbox::{Sandbox, Store, CHANNEL, KEY_A};

async fn audit_now(sb: &Sandbox) -> AuditReport {
    audit::run_with(
        &sb.c,
        &AuditOptions {
            now_ms: Some(sb.clock.now_ms()),
            ..AuditOptions::default()
        },
    )
    .await
    .expect("every service answers the auditor")
}

async fn order(sb: &Sandbox, refund_id: &str) -> rfd::RefundOrder {
    sb.c.refund
        .clone()
        .get_refund(rfd::GetRefundRequest {
            refund_id: refund_id.into(),
            ..Default::default()
        })
        .await
        .expect("refund order")
        .into_inner()
}

async fn debit_status(sb: &Sandbox, refund_id: &str) -> i32 {
    sb.c.clearing
        .clone()
        .get_debit(clr::GetDebitRequest {
            refund_id: refund_id.into(),
        })
        .await
        .expect("debit")
        .into_inner()
        .status
}

/// Reconciles `channel` for today with an uploaded file that says the bank paid `o`'s current
/// attempt (a wrong file), then delivers the outcome: the refund is SUCCEEDED and completed.
async fn wrongly_reconciled_paid(sb: &mut Sandbox, channel: &str, o: &rfd::RefundOrder) {
    let content = format!(
        "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n\
         REFUND,{},BKWRONG{},{channel},{},CNY,SUCCESS,{},\n",
        o.bank_reference_id,
        o.attempt,
        o.amount,
        chrono::DateTime::from_timestamp_millis(sb.clock.now_ms())
            .expect("time")
            .to_rfc3339()
    );
    sb.c.reconciliation
        .run_reconciliation_file(rec::RunReconciliationFileRequest {
            channel: channel.into(),
            date: sb.clock.today().to_string(),
            format: "csv".into(),
            content: content.into_bytes(),
            ..Default::default()
        })
        .await
        .expect("the wrong file reconciles");
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    let o = order(sb, &o.refund_id).await;
    assert_eq!(o.refund_status, rfd::RefundStatus::Succeeded as i32);
}

/// The bank does its work, then next morning its own file for `date` says the attempt failed: a
/// STATUS_CONFLICT, resolved bank-wins by one finance operator and approved by another.
async fn bank_wins_on_the_conflict(
    sb: &mut Sandbox,
    channel: &str,
    refund_id: &str,
) -> rec::Discrepancy {
    let date = sb.clock.today();
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    sb.clock.advance(Duration::hours(22));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    sb.c.reconciliation
        .run_reconciliation(rec::RunReconciliationRequest {
            channel: channel.into(),
            date: date.to_string(),
            ..Default::default()
        })
        .await
        .expect("the bank's file reconciles");
    let conflict = sb
        .c
        .reconciliation
        .list_discrepancies(rec::ListDiscrepanciesRequest {
            channel: channel.into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("discrepancies")
        .into_inner()
        .discrepancies
        .into_iter()
        .find(|d| d.refund_id == refund_id && d.kind == rec::DiscrepancyKind::StatusConflict as i32)
        .expect("a status conflict for the refund");
    let proposed =
        sb.c.reconciliation
            .resolve_discrepancy(rec::ResolveDiscrepancyRequest {
                discrepancy_id: conflict.discrepancy_id.clone(),
                resolution: rec::Resolution::BankWins as i32,
                reason: "the bank's file says it failed".into(),
                ..Default::default()
            })
            .await
            .expect("bank wins proposed");
    let (proposal_id, status) = proposal_of(proposed.metadata()).expect("a proposal");
    assert_eq!(status, "PENDING");
    // Nothing moved before the second operator approves.
    assert_eq!(
        order(sb, refund_id).await.refund_status,
        rfd::RefundStatus::Succeeded as i32
    );
    sb.approve_as(
        "felix",
        Role::Finance,
        Service::Reconciliation,
        proposal_id,
        "the bank's statement shows no payment",
    )
    .await;
    let resolved =
        sb.c.reconciliation
            .get_discrepancy(rec::GetDiscrepancyRequest {
                discrepancy_id: conflict.discrepancy_id,
            })
            .await
            .expect("discrepancy")
            .into_inner();
    assert_eq!(resolved.status, rec::DiscrepancyStatus::Resolved as i32);
    assert!(resolved.actions.contains("reopen"), "{resolved:?}");
    resolved
}

/// The bank's successful payments of a refund (refunds, payouts, spreadsheet rows).
async fn bank_payments(sb: &Sandbox, refund_id: &str) -> Vec<bank::BankTransaction> {
    sb.c.bank
        .clone()
        .list_transactions(bank::ListTransactionsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("bank transactions")
        .into_inner()
        .transactions
        .into_iter()
        .filter(|t| t.refund_id == refund_id && t.status == bank::TxStatus::TxSucceeded as i32)
        .collect()
}

/// Reopened, then delivered by payout: the customer is paid once.
async fn reopened_refund_is_delivered_by_the_next_method(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    add_method_channels(&mut sb).await;
    // .13: the bank fails the interface refund (CARD_CANCELLED) and pays the payout.
    pay_on(&mut sb, "MA", "O-RO-1", "NETBANK", "94.13", 1).await;
    let refund = sb
        .refund(KEY_A, "R-RO-1", "O-RO-1", "94.13")
        .await
        .expect("refund accepted");
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    let first = order(&sb, &refund.refund_id).await;
    assert_eq!(first.method, rfd::RefundMethod::Interface as i32);
    wrongly_reconciled_paid(&mut sb, "NETBANK", &first).await;
    assert_eq!(
        debit_status(&sb, &refund.refund_id).await,
        clr::DebitStatus::Completed as i32
    );
    bank_wins_on_the_conflict(&mut sb, "NETBANK", &refund.refund_id).await;

    // Reopened: the next method, the completion undone, the merchant sees PROCESSING.
    let o = order(&sb, &refund.refund_id).await;
    assert_eq!(o.refund_status, rfd::RefundStatus::Processing as i32);
    assert_eq!(o.method, rfd::RefundMethod::Payout as i32);
    assert_eq!(o.attempt, 2, "{o:?}");
    assert_eq!(
        debit_status(&sb, &refund.refund_id).await,
        clr::DebitStatus::Debited as i32
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "94.13"
    );
    let r = sb.get_refund(KEY_A, "R-RO-1").await.expect("refund");
    assert_eq!(r.status, biz::RefundStatus::Processing as i32);
    // A repeat of the reopen (a second resolution, a retry) changes nothing.
    let again = sb
        .as_service(tuikuan_proto::tls::Principal::Reconciliation)
        .refund
        .reopen_refund(rfd::ReopenRefundRequest {
            refund_id: refund.refund_id.clone(),
            bank_reference_id: first.bank_reference_id.clone(),
            reason: "again".into(),
            source: "dsc_again".into(),
        })
        .await
        .expect("a repeat is answered")
        .into_inner();
    assert_eq!(again.attempt, 2);

    // The payout pays the customer; next morning's file makes it final.
    let date = sb.clock.today();
    sb.c.refund
        .run_payout_dispatch(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("payout dispatch");
    sb.c.payout
        .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    sb.c.payout
        .run_payout_cycle(pay::RunPayoutCycleRequest { limit: 0 })
        .await
        .expect("payout cycle");
    sb.clock.advance(Duration::hours(22));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    sb.reconcile("NETBANK", &date.to_string()).await;
    let o = order(&sb, &refund.refund_id).await;
    assert_eq!(
        o.refund_status,
        rfd::RefundStatus::Succeeded as i32,
        "{o:?}"
    );
    assert_eq!(
        debit_status(&sb, &refund.refund_id).await,
        clr::DebitStatus::Completed as i32
    );
    let r = sb.get_refund(KEY_A, "R-RO-1").await.expect("refund");
    assert_eq!(r.status, biz::RefundStatus::Succeeded as i32);
    // Paid once, by the payout; the interface refund the bank failed paid nothing.
    let paid = bank_payments(&sb, &refund.refund_id).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].amount, "94.13");
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    let completions = sb.postings_with_prefix("refund-complete:").await;
    assert_eq!(completions.len(), 2);
    assert_eq!(sb.postings_with_prefix("refund-reopen:").await.len(), 1);
    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    sb.shutdown().await;
}
both_stores!(reopened_refund_is_delivered_by_the_next_method);

/// Reopened with no method left (an interface-only channel): FAILED, the money back with the
/// merchant.
async fn reopened_refund_with_no_method_left_fails_back(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-RO-2", "50.13").await;
    let before = sb.balance(acc::AccountType::MerchantSettlement, "MA").await;
    let refund = sb
        .refund(KEY_A, "R-RO-2", "O-RO-2", "50.13")
        .await
        .expect("refund accepted");
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    let first = order(&sb, &refund.refund_id).await;
    wrongly_reconciled_paid(&mut sb, CHANNEL, &first).await;
    bank_wins_on_the_conflict(&mut sb, CHANNEL, &refund.refund_id).await;
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    let o = order(&sb, &refund.refund_id).await;
    assert_eq!(o.refund_status, rfd::RefundStatus::Failed as i32, "{o:?}");
    assert_eq!(
        debit_status(&sb, &refund.refund_id).await,
        clr::DebitStatus::Reversed as i32
    );
    let r = sb.get_refund(KEY_A, "R-RO-2").await.expect("refund");
    assert_eq!(r.status, biz::RefundStatus::Failed as i32);
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        before
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    assert!(bank_payments(&sb, &refund.refund_id).await.is_empty());
    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    sb.shutdown().await;
}
both_stores!(reopened_refund_with_no_method_left_fails_back);
