//! Resolutions that leave the refund, the ledger and the trade consistent (issue 18 item 1, issue 9
//! item 6), on the whole chain through public gRPC.
//!
//! The bank pays a refund, but its first clearing file says the refund failed (a bank's error it
//! later corrects): reconciliation makes the refund FAILED and gives the money back to the
//! merchant — the customer has been paid and the merchant has the money too. The auditor says
//! so. Then either the corrected file comes and the status conflict is resolved bank-wins, or
//! finance reinstates the refund by hand with the bank's evidence. Either way the refund becomes
//! SUCCEEDED, the merchant gives the money again, the trade's refunded amount is back so no second
//! refund can pass, every repeat is a no-op, and `tuikuan audit` passes.

use chrono::Duration;
use tuikuan::audit::{self, AuditOptions, AuditReport};
use tuikuan_kernel::Clock;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::tls::Principal;

use crate::both_stores;
use crate::sandbox::{assert_error, code_of, Sandbox, Store, CHANNEL, KEY_A};

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

async fn refunded(sb: &mut Sandbox, order_no: &str) -> String {
    sb.c.business
        .get_trade(tuikuan_proto::business::v1::GetTradeRequest {
            merchant_id: "MA".into(),
            order_no: order_no.into(),
        })
        .await
        .expect("trade")
        .into_inner()
        .refunded
}

/// Pays 121.13, refunds all of it, lets the bank pay it, and reconciles the day with a file that
/// wrongly says the refund failed. Returns (refund id, business date, the bank's true file).
async fn paid_but_reported_failed(sb: &mut Sandbox) -> (String, String, Vec<u8>) {
    sb.pay("MA", "O-RS", "121.13").await;
    let refund = sb
        .refund(KEY_A, "R-RS-1", "O-RS", "121.13")
        .await
        .expect("refund accepted");
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    let date = sb.clock.today().to_string();
    sb.clock.advance(Duration::hours(22));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    let file = sb
        .as_service(Principal::Reconciliation)
        .bank
        .get_clearing_file(bank::GetClearingFileRequest {
            channel: CHANNEL.into(),
            date: date.clone(),
        })
        .await
        .expect("clearing file")
        .into_inner()
        .content;
    let text = String::from_utf8(file.clone()).expect("utf-8");
    let wrong: String = text
        .lines()
        .map(|l| {
            if l.contains(&refund.refund_id) {
                l.replace(",SUCCESS,", ",FAILED,") + "BANK_ERROR: reported failed by mistake"
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(wrong, text, "the bank's file has the refund's row");
    sb.c.reconciliation
        .run_reconciliation_file(rec::RunReconciliationFileRequest {
            channel: CHANNEL.into(),
            date: date.clone(),
            format: "csv".into(),
            content: wrong.into_bytes(),
            ..Default::default()
        })
        .await
        .expect("the wrong file reconciles");
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    let r = sb.get_refund(KEY_A, "R-RS-1").await.expect("refund");
    assert_eq!(
        r.status,
        tuikuan_proto::business::v1::RefundStatus::Failed as i32
    );
    assert_eq!(refunded(sb, "O-RS").await, "0.00");
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "120.40"
    );
    // The auditor sees the customer paid while the refund says FAILED.
    let report = audit_now(sb).await;
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("is FAILED but the bank paid it")),
        "{report}"
    );
    (refund.refund_id, date, file)
}

/// What every resolution must leave: SUCCEEDED everywhere, the merchant debited once more, the
/// trade's amount held, one reinstatement posting, no suspense, and a clean audit.
async fn assert_reinstated(sb: &mut Sandbox, refund_id: &str) {
    let o = order(sb, refund_id).await;
    assert_eq!(o.refund_status, rfd::RefundStatus::Succeeded as i32);
    assert_eq!(o.pending_steps, 0, "{o:?}");
    let d = debit(sb, refund_id).await;
    assert_eq!(d.status, clr::DebitStatus::Completed as i32);
    let r = sb.get_refund(KEY_A, "R-RS-1").await.expect("refund");
    assert_eq!(
        r.status,
        tuikuan_proto::business::v1::RefundStatus::Succeeded as i32
    );
    assert_eq!(refunded(sb, "O-RS").await, "121.13");
    // 121.13 − 0.73 fee, taken again by the refund: nothing left, nothing owed.
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "0.00"
    );
    assert_eq!(
        sb.balance(acc::AccountType::MerchantReceivable, "MA").await,
        "0.00"
    );
    assert_eq!(
        sb.postings_with_prefix(&format!("refund-reinstate:{refund_id}"))
            .await
            .len(),
        1
    );
    assert!(sb.postings_with_prefix("adjust:").await.is_empty());
    // No second refund of the same payment can pass the guard.
    assert_error(
        sb.refund(KEY_A, "R-RS-2", "O-RS", "121.13").await,
        tonic::Code::FailedPrecondition,
        "REFUND_EXCEEDS_PAID",
    );
    sb.assert_books_balanced().await;
    let report = audit_now(sb).await;
    assert!(report.ok(), "{report}");
}

/// The corrected file opens a status conflict; bank wins reinstates the refund. Repeats (the
/// same resolution again, reconciliation's call replayed) change nothing.
async fn bank_wins_reinstates_a_refund_the_bank_paid(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let (refund_id, date, file) = paid_but_reported_failed(&mut sb).await;
    let run =
        sb.c.reconciliation
            .run_reconciliation_file(rec::RunReconciliationFileRequest {
                channel: CHANNEL.into(),
                date: date.clone(),
                format: "csv".into(),
                content: file,
                ..Default::default()
            })
            .await
            .expect("the corrected file reconciles")
            .into_inner();
    assert!(run.discrepancies >= 1, "{run:?}");
    let conflict = sb
        .c
        .reconciliation
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
        .find(|d| d.refund_id == refund_id && d.kind == rec::DiscrepancyKind::StatusConflict as i32)
        .expect("a status conflict for the refund");
    let resolve = rec::ResolveDiscrepancyRequest {
        discrepancy_id: conflict.discrepancy_id.clone(),
        resolution: rec::Resolution::BankWins as i32,
        reason: "the bank's corrected file shows it paid".into(),
        ..Default::default()
    };
    let resolved =
        sb.c.reconciliation
            .resolve_discrepancy(resolve.clone())
            .await
            .expect("bank wins")
            .into_inner();
    assert_eq!(resolved.status, rec::DiscrepancyStatus::Resolved as i32);
    assert!(
        resolved.actions.contains("reinstate SUCCEEDED"),
        "{resolved:?}"
    );
    assert!(resolved.adjustment_id.is_empty());
    assert_reinstated(&mut sb, &refund_id).await;
    assert_eq!(
        order(&mut sb, &refund_id).await.final_source,
        conflict.discrepancy_id
    );

    // The same resolution again is refused; reconciliation's call replayed is the same answer.
    let again =
        sb.c.reconciliation
            .resolve_discrepancy(resolve)
            .await
            .unwrap_err();
    assert_eq!(code_of(&again), "INVALID_STATE_TRANSITION");
    let replay = sb
        .as_service(Principal::Reconciliation)
        .refund
        .reinstate_succeeded(rfd::ReinstateSucceededRequest {
            refund_id: refund_id.clone(),
            reason: "replayed".into(),
            source: conflict.discrepancy_id.clone(),
            ..Default::default()
        })
        .await
        .expect("a replay answers the order")
        .into_inner();
    assert_eq!(replay.refund_status, rfd::RefundStatus::Succeeded as i32);
    // Staff reinstating it too changes nothing either.
    sb.c.control
        .reinstate(rfd::ReinstateRequest {
            refund_id: refund_id.clone(),
            reason: "double check".into(),
            evidence: "STMT-1".into(),
            ..Default::default()
        })
        .await
        .expect("already succeeded");
    assert_reinstated(&mut sb, &refund_id).await;
    sb.shutdown().await;
}
both_stores!(bank_wins_reinstates_a_refund_the_bank_paid);

/// Finance reinstates by hand after the bank's late correction (no corrected file): evidence is
/// required; afterwards the bank's true file matches without a discrepancy.
async fn staff_reinstate_after_a_late_correction(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let (refund_id, date, file) = paid_but_reported_failed(&mut sb).await;
    let no_evidence =
        sb.c.control
            .reinstate(rfd::ReinstateRequest {
                refund_id: refund_id.clone(),
                reason: "bank called".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(code_of(&no_evidence), "INVALID_ARGUMENT");
    assert!(no_evidence.message().starts_with("evidence"));
    // Concurrent reinstatements: one of each kind, twice; the money moves once.
    let mut calls = Vec::new();
    for i in 0..2 {
        let mut staff = sb.c.control.clone();
        let id = refund_id.clone();
        calls.push(tokio::spawn(async move {
            staff
                .reinstate(rfd::ReinstateRequest {
                    refund_id: id,
                    reason: format!("bank's late correction {i}"),
                    evidence: "STMT-2026-11-26-0007".into(),
                    ..Default::default()
                })
                .await
        }));
    }
    let mut ok = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(o) => {
                ok += 1;
                assert_eq!(
                    o.into_inner().refund_status,
                    rfd::RefundStatus::Succeeded as i32
                );
            }
            // A loser of the race may be told to retry; it then finds it done.
            Err(e) => assert!(
                matches!(
                    code_of(&e).as_str(),
                    "UNAVAILABLE" | "INVALID_STATE_TRANSITION"
                ),
                "{e:?}"
            ),
        }
    }
    assert!(ok >= 1);
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    assert_reinstated(&mut sb, &refund_id).await;
    let trail =
        sb.c.control
            .list_audit(rfd::ListAuditRequest {
                refund_id: refund_id.clone(),
                ..Default::default()
            })
            .await
            .expect("audit trail")
            .into_inner()
            .entries;
    assert_eq!(
        trail.iter().filter(|e| e.action == "REINSTATE").count(),
        1,
        "{trail:?}"
    );
    // The bank's true file now agrees with the platform: nothing to resolve.
    sb.c.reconciliation
        .run_reconciliation_file(rec::RunReconciliationFileRequest {
            channel: CHANNEL.into(),
            date,
            format: "csv".into(),
            content: file,
            ..Default::default()
        })
        .await
        .expect("the corrected file reconciles");
    let open =
        sb.c.reconciliation
            .list_discrepancies(rec::ListDiscrepanciesRequest {
                channel: CHANNEL.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("discrepancies")
            .into_inner()
            .discrepancies;
    assert!(open.iter().all(|d| d.refund_id != refund_id), "{open:?}");
    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    sb.shutdown().await;
}
both_stores!(staff_reinstate_after_a_late_correction);

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
    let resolved =
        sb.c.reconciliation
            .resolve_discrepancy(resolve)
            .await
            .expect("platform wins")
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
