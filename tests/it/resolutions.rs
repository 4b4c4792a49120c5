//! Resolutions that leave the refund, the ledger and the trade consistent (issue 18 item 1, issue 9
//! item 6), on the whole chain through public gRPC.
//!
//! Platform wins with the bank's evidence completes a refund the bank never reported. The
//! reinstatement of a FAILED refund the bank paid is in `reinstate.rs`, bank-wins on a refund the
//! bank failed (reopened for the next method) in `reopen.rs`.

use chrono::Duration;
use tuikuan::audit::{self, AuditOptions, AuditReport};
use tuikuan::config::Service;
use tuikuan_auth::answer::proposal_of;
use tuikuan_auth::Role;
use tuikuan_kernel::Clock;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::both_stores;
use crate::sandbox::{code_of, Sandbox, Store, CHANNEL, KEY_A};

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

async fn order(sb: &mut Sandbox, refund_id: &str) -> rfd::RefundOrder {
    sb.c.refund
        .get_refund(rfd::GetRefundRequest {
            refund_id: refund_id.into(),
            ..Default::default()
        })
        .await
        .expect("refund order")
        .into_inner()
}

async fn debit(sb: &mut Sandbox, refund_id: &str) -> clr::Debit {
    sb.c.clearing
        .get_debit(clr::GetDebitRequest {
            refund_id: refund_id.into(),
        })
        .await
        .expect("debit")
        .into_inner()
}

/// A refund the bank never reported (two days of files without it) becomes a 银行漏单; platform
/// wins with the bank's statement reference completes it — an interface refund, which `confirm`
/// does not take — and without evidence platform wins is refused.
async fn platform_wins_with_evidence_completes_a_refund(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-PW", "88.00").await;
    let refund = sb
        .refund(KEY_A, "R-PW-1", "O-PW", "88.00")
        .await
        .expect("refund accepted");
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    let header = "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n";
    for _ in 0..2 {
        let date = sb.clock.today().to_string();
        sb.c.reconciliation
            .run_reconciliation_file(rec::RunReconciliationFileRequest {
                channel: CHANNEL.into(),
                date,
                format: "csv".into(),
                content: header.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .expect("a file without the refund reconciles");
        sb.clock.advance(Duration::hours(24));
    }
    let missed =
        sb.c.reconciliation
            .list_discrepancies(rec::ListDiscrepanciesRequest {
                channel: CHANNEL.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("discrepancies")
            .into_inner()
            .discrepancies
            .into_iter()
            .find(|d| {
                d.refund_id == refund.refund_id && d.kind == rec::DiscrepancyKind::BankMissed as i32
            })
            .expect("a 银行漏单 for the refund");
    let mut resolve = rec::ResolveDiscrepancyRequest {
        discrepancy_id: missed.discrepancy_id.clone(),
        resolution: rec::Resolution::PlatformWins as i32,
        reason: "the bank's statement shows it paid".into(),
        ..Default::default()
    };
    let e =
        sb.c.reconciliation
            .resolve_discrepancy(resolve.clone())
            .await
            .unwrap_err();
    assert_eq!(code_of(&e), "INVALID_ARGUMENT");
    assert!(e.message().starts_with("evidence"), "{}", e.message());
    resolve.evidence = "STMT-ICBC-20261126-0042".into();
    let proposed =
        sb.c.reconciliation
            .resolve_discrepancy(resolve)
            .await
            .expect("platform wins proposed");
    let (proposal_id, status) = proposal_of(proposed.metadata()).expect("a proposal");
    assert_eq!(status, "PENDING");
    assert_eq!(
        proposed.into_inner().status,
        rec::DiscrepancyStatus::Open as i32
    );
    // Four eyes: a second finance operator approves, then the resolution runs.
    sb.approve_as(
        "felix",
        Role::Finance,
        Service::Reconciliation,
        proposal_id,
        "the ICBC statement shows it paid",
    )
    .await;
    let resolved =
        sb.c.reconciliation
            .get_discrepancy(rec::GetDiscrepancyRequest {
                discrepancy_id: missed.discrepancy_id.clone(),
            })
            .await
            .expect("discrepancy")
            .into_inner();
    assert_eq!(resolved.status, rec::DiscrepancyStatus::Resolved as i32);
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    let o = order(&mut sb, &refund.refund_id).await;
    assert_eq!(o.refund_status, rfd::RefundStatus::Succeeded as i32);
    assert_eq!(o.method, rfd::RefundMethod::Interface as i32);
    assert!(o.reason.contains("STMT-ICBC-20261126-0042"), "{o:?}");
    assert_eq!(
        debit(&mut sb, &refund.refund_id).await.status,
        clr::DebitStatus::Completed as i32
    );
    let r = sb.get_refund(KEY_A, "R-PW-1").await.expect("refund");
    assert_eq!(
        r.status,
        tuikuan_proto::business::v1::RefundStatus::Succeeded as i32
    );
    assert_eq!(
        sb.balance(acc::AccountType::RefundInTransit, "platform")
            .await,
        "0.00"
    );
    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    sb.shutdown().await;
}
both_stores!(platform_wins_with_evidence_completes_a_refund);
