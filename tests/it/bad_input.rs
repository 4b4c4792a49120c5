//! Bad input gets a clear error with a stable code, never a panic, and loses nothing accepted.

use tonic::Code;
use tuikuan_proto::business::v1 as biz;

use crate::both_stores;
use crate::sandbox::{assert_error, Sandbox, Store, KEY_A, KEY_B};

async fn bad_refund_requests_get_stable_codes(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    sb.pay("MB", "O-B", "100.00").await;
    let accepted = sb.refund(KEY_A, "R-ok", "O-1", "10.00").await.unwrap();

    let cases: &[(&str, &str, &str, &str, Code, &str)] = &[
        // (refund no, order no, amount, currency, grpc code, stable code)
        (
            "R-neg",
            "O-1",
            "-1.00",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-zero",
            "O-1",
            "0",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-dec",
            "O-1",
            "1.001",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-huge",
            "O-1",
            "10000000000000",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-nan",
            "O-1",
            "ten",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-empty",
            "O-1",
            "",
            "CNY",
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "R-cur",
            "O-1",
            "1.00",
            "XYZ",
            Code::InvalidArgument,
            "UNSUPPORTED_CURRENCY",
        ),
        (
            "R-usd",
            "O-1",
            "1.00",
            "USD",
            Code::FailedPrecondition,
            "CURRENCY_MISMATCH",
        ),
        (
            "R-other",
            "O-B",
            "1.00",
            "CNY",
            Code::NotFound,
            "TRADE_NOT_FOUND",
        ),
        (
            "R-none",
            "O-404",
            "1.00",
            "CNY",
            Code::NotFound,
            "TRADE_NOT_FOUND",
        ),
        (
            "R-over",
            "O-1",
            "90.01",
            "CNY",
            Code::FailedPrecondition,
            "REFUND_EXCEEDS_PAID",
        ),
        (
            "R sp",
            "O-1",
            "1.00",
            "CNY",
            Code::InvalidArgument,
            "MALFORMED_ID",
        ),
        (
            "R-id",
            "O 1;--",
            "1.00",
            "CNY",
            Code::InvalidArgument,
            "MALFORMED_ID",
        ),
        (
            "",
            "O-1",
            "1.00",
            "CNY",
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ];
    let long = "R".repeat(65);
    for (no, order, amount, currency, grpc, code) in cases.iter().copied().chain(std::iter::once((
        long.as_str(),
        "O-1",
        "1.00",
        "CNY",
        Code::InvalidArgument,
        "MALFORMED_ID",
    ))) {
        let mut m = sb.c.merchant(KEY_A).unwrap();
        let result = m
            .create_refund(biz::CreateRefundRequest {
                merchant_refund_no: no.into(),
                order_no: order.into(),
                amount: amount.into(),
                currency: currency.into(),
                reason: String::new(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner());
        assert_error(result, grpc, code);
    }

    // Authentication: none, or an unknown key.
    let mut anonymous =
        tuikuan_proto::business::v1::merchant_service_client::MerchantServiceClient::new(
            tuikuan_proto::tls::public_channel(
                &sb.cluster.public_url(),
                Some(&tuikuan_proto::pki::testing().ca.cert_pem),
            )
            .unwrap(),
        );
    let status = anonymous
        .get_refund(biz::GetRefundRequest {
            merchant_refund_no: "R-ok".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_error(
        sb.refund("not-a-real-key-000000", "R-x", "O-1", "1.00")
            .await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    // Another merchant cannot see the refund either.
    assert_error(
        sb.get_refund(KEY_B, "R-ok").await,
        Code::NotFound,
        "REFUND_NOT_FOUND",
    );

    // Nothing already accepted was lost or changed.
    let still = sb.get_refund(KEY_A, "R-ok").await.unwrap();
    assert_eq!(still.refund_id, accepted.refund_id);
    assert_eq!(still.status, biz::RefundStatus::Processing as i32);
    let trade =
        sb.c.business
            .get_trade(biz::GetTradeRequest {
                merchant_id: "MA".into(),
                order_no: "O-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(trade.refunded, "10.00");
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(bad_refund_requests_get_stable_codes);
