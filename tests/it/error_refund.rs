//! An error refund (差错退款) of a duplicate payment goes through, by four eyes, when the merchant's
//! balance is short: the clearing center advances the shortfall (docs/ledger.md, "Advances and
//! error refunds"); an ordinary refund in the same position is refused.

use tuikuan::config::Service;
use tuikuan_auth::answer::proposal_of;
use tuikuan_auth::Role;
use tuikuan_kernel::Currency;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::staff::v1 as staff;
use tuikuan_proto::tls::Principal;

use crate::both_stores;
use crate::sandbox::{code_of, Sandbox, Store, CHANNEL, KEY_A};

fn line(t: acc::AccountType, owner: &str, side: acc::Side, amount: &str) -> acc::Entry {
    acc::Entry {
        account: Some(acc::Account {
            r#type: t as i32,
            owner: owner.into(),
            currency: Currency::Cny.code().into(),
        }),
        side: side as i32,
        amount: amount.into(),
        ..Default::default()
    }
}

async fn an_error_refund_goes_through_when_the_merchant_is_short(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let trade = sb.pay("MA", "O-DUP", "50.00").await;
    // The merchant's money left (as a withdrawal would take it): 10.00 of its 49.70 remain.
    let mut ledger = sb.as_service(Principal::Clearing).accounting.clone();
    ledger
        .post(acc::PostRequest {
            request_id: "withdrawal:MA-1".into(),
            description: "the merchant's money leaves".into(),
            entries: vec![
                line(
                    acc::AccountType::MerchantSettlement,
                    "MA",
                    acc::Side::Debit,
                    "39.70",
                ),
                line(
                    acc::AccountType::Suspense,
                    CHANNEL,
                    acc::Side::Credit,
                    "39.70",
                ),
            ],
            ..Default::default()
        })
        .await
        .expect("withdrawal");
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "10.00"
    );
    match sb.refund(KEY_A, "R-SHORT", "O-DUP", "50.00").await {
        Ok(r) => assert_eq!(
            (r.status, r.error_code.as_str()),
            (biz::RefundStatus::Rejected as i32, "INSUFFICIENT_BALANCE"),
            "{r:?}"
        ),
        Err(e) => assert_eq!(code_of(&e), "INSUFFICIENT_BALANCE", "{e:?}"),
    }

    let token = |name: &str, role: Role| {
        let token = sb.cluster.operator_token(name, &[role]).expect("token");
        sb.c.with_token(&token).expect("clients")
    };
    let (olivia, fiona) = (token("olivia", Role::Ops), token("fiona", Role::Finance));
    let answer = olivia
        .business
        .clone()
        .create_error_refund(biz::CreateErrorRefundRequest {
            merchant_id: "MA".into(),
            order_no: "O-DUP".into(),
            kind: biz::RefundKind::DuplicatePayment as i32,
            amount: "50.00".into(),
            currency: "CNY".into(),
            reason: "the customer paid twice".into(),
            operator: String::new(),
        })
        .await
        .expect("proposed");
    let (proposal, status) = proposal_of(answer.metadata()).expect("a proposal");
    assert_eq!(status, "PENDING");
    let approved = fiona
        .staff_desk(Service::Business)
        .approve_proposal(staff::DecideProposalRequest {
            proposal_id: proposal,
            reason: "duplicate confirmed on the bank statement".into(),
        })
        .await
        .expect("approved")
        .into_inner();
    assert_eq!(approved.status, staff::ProposalStatus::Executed as i32);

    let refund = sb
        .get_refund(KEY_A, &format!("ERR-{}", trade.trade_id))
        .await
        .expect("the error refund");
    assert_eq!(
        refund.status,
        biz::RefundStatus::Processing as i32,
        "{refund:?}"
    );
    // The whole fee 0.30 goes back: the merchant part is 49.70, 10.00 of it from the balance.
    let debit =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: refund.refund_id.clone(),
            })
            .await
            .expect("debit")
            .into_inner();
    assert_eq!(
        (
            debit.merchant_amount.as_str(),
            debit.advance_amount.as_str()
        ),
        ("49.70", "39.70")
    );
    assert_eq!(sb.balance(acc::AccountType::Advance, "MA").await, "39.70");
    assert_eq!(
        sb.balance(acc::AccountType::MerchantSettlement, "MA").await,
        "0.00"
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(an_error_refund_goes_through_when_the_merchant_is_short);
