//! 50 concurrent partial refunds on one trade never refund more than was paid.

use rust_decimal::Decimal;
use tuikuan_proto::business::v1 as biz;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};

async fn fifty_concurrent_partial_refunds(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    // A second trade gives the merchant balance enough to cover every refund of the first, so
    // only the over-refund guard can stop them.
    sb.pay("MA", "BIG", "1000.00").await;
    sb.pay("MA", "O-1", "100.00").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut m = sb.c.merchant(KEY_A).unwrap();
        tasks.push(tokio::spawn(async move {
            m.create_refund(biz::CreateRefundRequest {
                merchant_refund_no: format!("R-{i}"),
                order_no: "O-1".into(),
                amount: "3.00".into(),
                currency: "CNY".into(),
                reason: "partial".into(),
                ..Default::default()
            })
            .await
        }));
    }
    let mut accepted = Decimal::ZERO;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                let r = r.into_inner();
                assert_eq!(r.status, biz::RefundStatus::Processing as i32, "{r:?}");
                accepted += Decimal::from(3);
            }
            Err(status) => {
                assert_eq!(crate::sandbox::code_of(&status), "REFUND_EXCEEDS_PAID");
                refused += 1;
            }
        }
    }
    assert_eq!(
        accepted,
        Decimal::from(99),
        "33 refunds of 3.00 fit in 100.00"
    );
    assert_eq!(refused, 17);
    let trade =
        sb.c.business
            .get_trade(biz::GetTradeRequest {
                merchant_id: "MA".into(),
                order_no: "O-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        trade.refunded.parse::<Decimal>().unwrap(),
        Decimal::from(99)
    );
    assert_eq!(sb.postings_with_prefix("refund-debit:").await.len(), 33);
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(fifty_concurrent_partial_refunds);
