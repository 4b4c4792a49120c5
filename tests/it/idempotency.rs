//! Idempotency at the merchant API and at every hop of the chain: a repeat returns the first
//! result and moves no money twice; the same key with other content is a conflict.

use tonic::Code;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::tls::Principal;

use crate::both_stores;
use crate::sandbox::{assert_error, code_of, Sandbox, Store, CHANNEL, KEY_A};

async fn every_hop_is_idempotent(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let trade = sb.pay("MA", "O-1", "100.00").await;
    // The forward payment system repeats itself: one trade, one settlement posting.
    let again = sb.pay("MA", "O-1", "100.00").await;
    assert_eq!(again.trade_id, trade.trade_id);
    assert_eq!(sb.postings_with_prefix("settle:").await.len(), 1);

    // Merchant API.
    let first = sb.refund(KEY_A, "R-1", "O-1", "30.00").await.unwrap();
    let repeat = sb.refund(KEY_A, "R-1", "O-1", "30.00").await.unwrap();
    assert_eq!(first.refund_id, repeat.refund_id);
    assert_error(
        sb.refund(KEY_A, "R-1", "O-1", "31.00").await,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
    );
    assert_eq!(sb.postings_with_prefix("refund-debit:").await.len(), 1);
    let refund_id = first.refund_id.clone();

    // Clearing: the same debit again returns the same debit and posts nothing new.
    let d1 = sb
        .as_service(Principal::Business)
        .clearing
        .refund_debit(clr::RefundDebitRequest {
            refund_id: refund_id.clone(),
            trade_id: trade.trade_id.clone(),
            merchant_id: "MA".into(),
            amount: "30.00".into(),
            currency: "CNY".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d1.status, clr::DebitStatus::Debited as i32);
    let conflict = sb
        .as_service(Principal::Business)
        .clearing
        .refund_debit(clr::RefundDebitRequest {
            refund_id: refund_id.clone(),
            trade_id: trade.trade_id.clone(),
            merchant_id: "MA".into(),
            amount: "31.00".into(),
            currency: "CNY".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&conflict), "IDEMPOTENCY_CONFLICT");
    assert_eq!(sb.postings_with_prefix("refund-debit:").await.len(), 1);

    // Accounting: replaying the debit posting's request returns it, marked replayed.
    let posting =
        sb.c.accounting
            .get_posting(acc::GetPostingRequest {
                request_id: format!("refund-debit:{refund_id}"),
            })
            .await
            .unwrap()
            .into_inner();
    let replay = sb
        .as_service(Principal::Clearing)
        .accounting
        .post(acc::PostRequest {
            request_id: posting.request_id.clone(),
            description: posting.description.clone(),
            entries: posting.entries.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.posting.unwrap().posting_id, posting.posting_id);

    // Refund center: the same order again is the same order.
    let order =
        sb.c.refund
            .get_refund(rfd::GetRefundRequest {
                refund_id: refund_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    let repeat = sb
        .as_service(Principal::Business)
        .refund
        .create_refund(rfd::CreateRefundRequest {
            refund_id: refund_id.clone(),
            merchant_id: "MA".into(),
            trade_id: trade.trade_id.clone(),
            order_no: "O-1".into(),
            channel: CHANNEL.into(),
            amount: "30.00".into(),
            currency: "CNY".into(),
            trade_paid_at_ms: trade.paid_at_ms,
            payer_card_no: String::new(),
            payer_name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat.refund_id, order.refund_id);
    assert_eq!(repeat.created_at_ms, order.created_at_ms);

    // Bank: the interface cycle submits once; a resubmission returns the first answer.
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .unwrap();
    let cycle_again =
        sb.c.refund
            .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(cycle_again.sent, 0, "nothing left to send");
    let order =
        sb.c.refund
            .get_refund(rfd::GetRefundRequest {
                refund_id: refund_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(order.submit_status, rfd::SubmitStatus::Submitted as i32);
    let resubmit = sb
        .as_service(Principal::Refund)
        .bank
        .submit_refund(bank::SubmitRefundRequest {
            channel: CHANNEL.into(),
            refund_id: refund_id.clone(),
            original_trade_id: trade.trade_id.clone(),
            amount: "30.00".into(),
            currency: "CNY".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resubmit.accepted);
    assert_eq!(resubmit.bank_ref, order.bank_ref);

    // Reconciliation and the outcome: final once; a repeated outcome report changes nothing.
    sb.run_day().await;
    let done = sb.get_refund(KEY_A, "R-1").await.unwrap();
    assert_eq!(done.status, biz::RefundStatus::Succeeded as i32);
    let report = sb
        .as_service(Principal::Refund)
        .business
        .report_refund_outcome(biz::ReportRefundOutcomeRequest {
            refund_id: refund_id.clone(),
            status: biz::RefundStatus::Succeeded as i32,
            reason: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.status, biz::RefundStatus::Succeeded as i32);
    assert_eq!(sb.postings_with_prefix("refund-complete:").await.len(), 1);
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(every_hop_is_idempotent);
