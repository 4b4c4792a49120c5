//! A bank's late correction repaired by reinstatement, on the whole chain (issue 9 item 6): a
//! spreadsheet row the bank's result file said failed is failed by hand (four eyes), the money
//! goes back to the merchant; the bank paid it after all. Its clearing file shows the payment,
//! reconciliation flags the conflict and `tuikuan audit` reports the refund FAILED although the
//! bank paid it. Finance proposes *reinstate as succeeded*, a second finance operator approves:
//! the refund is SUCCEEDED, the merchant gives the money again, the trade holds the refunded
//! amount again, and the auditor finds nothing. A second reinstatement moves nothing.
//!
//! The auditor checks "paid exactly once" against the bank simulator's own books
//! (`BankService/ListTransactions`), so the bank's payment must happen in the simulator: a file
//! row it received and paid, not a clearing file or callback written by the test (which the
//! simulator's books never see; the auditor would count no payment at all).

use chrono::Duration;
use rust_decimal::Decimal;
use tuikuan::audit::{self, AuditOptions, AuditReport};
use tuikuan::clients::Clients;
use tuikuan::config::Service;
use tuikuan_auth::answer::proposal_of;
use tuikuan_auth::Role;
use tuikuan_kernel::Clock;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::staff::v1 as staff;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};
use crate::staff::{decide, operator, order, proposed, submitted_sheet, SHEET_CHANNEL};

/// The next morning: the bank finishes, `date`'s files of `channels` are reconciled, outcomes are
/// delivered.
pub(crate) async fn next_morning(sb: &mut Sandbox, date: &str, channels: &[&str]) {
    sb.clock.advance(Duration::hours(22));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    for channel in channels {
        sb.reconcile(channel, date).await;
    }
}

/// `c` asks to fail the row of `refund_id` in `batch` ("account closed", from the bank's result
/// file).
pub(crate) async fn fail_row(
    c: &Clients,
    batch: &rfd::Batch,
    refund_id: &str,
) -> Result<tonic::Response<rfd::Batch>, tonic::Status> {
    let row = batch
        .rows
        .iter()
        .find(|r| r.refund_id == refund_id)
        .expect("the refund's row");
    c.batch
        .clone()
        .mark_rows(rfd::MarkRowsRequest {
            batch_id: batch.batch_id.clone(),
            failed: vec![rfd::RowResult {
                row_id: row.row_id.clone(),
                reason: "account closed".into(),
            }],
            operator: String::new(),
            source: "the bank's result file".into(),
        })
        .await
}

pub(crate) async fn audit_now(sb: &Sandbox) -> AuditReport {
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

async fn status_of(sb: &Sandbox, refund_id: &str) -> i32 {
    order(sb, refund_id).await.refund_status
}

/// What merchant MA has with the platform: its balances (available and T+N) less what it owes
/// (advances, receivables).
async fn merchant_position(sb: &mut Sandbox) -> Decimal {
    let mut total = Decimal::ZERO;
    for (kind, sign) in [
        (acc::AccountType::MerchantSettlement, Decimal::ONE),
        (acc::AccountType::MerchantPending, Decimal::ONE),
        (acc::AccountType::Advance, Decimal::NEGATIVE_ONE),
        (acc::AccountType::MerchantReceivable, Decimal::NEGATIVE_ONE),
    ] {
        let b: Decimal = sb.balance(kind, "MA").await.parse().expect("decimal");
        total += sign * b;
    }
    total
}

async fn reinstate(
    c: &Clients,
    refund_id: &str,
) -> Result<tonic::Response<rfd::RefundOrder>, tonic::Status> {
    c.control
        .clone()
        .reinstate(rfd::ReinstateRequest {
            refund_id: refund_id.into(),
            reason: "the bank's clearing file shows it paid".into(),
            evidence: "CCB clearing file, row of the refund".into(),
            bank_reference_id: String::new(),
        })
        .await
}

async fn late_correction_is_repaired_by_reinstate(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let fiona = operator(&sb, "fiona", &[Role::Finance]);
    let frank = operator(&sb, "frank", &[Role::Finance]);
    let date = sb.clock.today().to_string();
    let (ids, batch) = submitted_sheet(&mut sb).await;
    let id = ids[0].clone();
    let before_refund = merchant_position(&mut sb).await;

    // The bank's result file (wrongly) says the row failed: failed by hand, on four eyes.
    let (p, _) = proposed(
        fail_row(&fiona, &batch, &id).await,
        "PENDING",
        "fail the row",
    );
    decide(&frank, Service::Refund, &p, true)
        .await
        .expect("approved");
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    assert_eq!(status_of(&sb, &id).await, rfd::RefundStatus::Failed as i32);
    // The merchant part comes back: 40.00 less the fee refunded with it (0.6%, proportional).
    let failed_back = merchant_position(&mut sb).await;
    assert_eq!(failed_back - before_refund, Decimal::new(3976, 2));

    // The bank paid every row after all; its clearing file says so, reconciliation flags it.
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    next_morning(&mut sb, &date, &[SHEET_CHANNEL]).await;
    let conflicts: Vec<_> =
        sb.c.reconciliation
            .list_discrepancies(rec::ListDiscrepanciesRequest {
                channel: SHEET_CHANNEL.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("discrepancies")
            .into_inner()
            .discrepancies
            .into_iter()
            .filter(|d| d.refund_id == id)
            .collect();
    assert!(
        conflicts
            .iter()
            .any(|d| d.kind == rec::DiscrepancyKind::StatusConflict as i32),
        "{conflicts:#?}"
    );
    for other in &ids[1..] {
        assert_eq!(
            status_of(&sb, other).await,
            rfd::RefundStatus::Succeeded as i32
        );
    }
    let report = audit_now(&sb).await;
    assert_eq!(report.checked.bank_payments, 3, "{report}");
    let paid_but_failed = format!("refund {id} is FAILED but the bank paid it");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.starts_with(&paid_but_failed)),
        "{report}"
    );

    // Reinstate as succeeded: proposed by one finance operator, approved by another.
    let (p, body) = proposed(reinstate(&fiona, &id).await, "PENDING", "reinstate");
    assert_eq!(body.refund_status, rfd::RefundStatus::Failed as i32);
    let done = decide(&frank, Service::Refund, &p, true)
        .await
        .expect("approved");
    assert_eq!(
        done.status,
        staff::ProposalStatus::Executed as i32,
        "{done:?}"
    );
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    assert_eq!(
        status_of(&sb, &id).await,
        rfd::RefundStatus::Succeeded as i32
    );
    let taken_again = merchant_position(&mut sb).await;
    assert_eq!(
        taken_again, before_refund,
        "the merchant part is taken again"
    );
    let refund = sb.get_refund(KEY_A, "R-O-4E-U1").await.expect("refund");
    assert_eq!(refund.status, biz::RefundStatus::Succeeded as i32);
    let trade =
        sb.c.business
            .get_trade(biz::GetTradeRequest {
                merchant_id: "MA".into(),
                order_no: "O-4E-U1".into(),
            })
            .await
            .expect("trade")
            .into_inner();
    assert_eq!(trade.refunded, "40.00");

    // Again: nothing to propose, nothing moves.
    let again = reinstate(&fiona, &id).await.expect("answered as it is");
    assert!(proposal_of(again.metadata()).is_none());
    assert_eq!(
        again.into_inner().refund_status,
        rfd::RefundStatus::Succeeded as i32
    );
    assert_eq!(merchant_position(&mut sb).await, taken_again);

    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    assert_eq!(report.checked.bank_payments, 3, "{report}");
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(late_correction_is_repaired_by_reinstate);
