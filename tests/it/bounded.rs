//! Bad input stays bounded: a huge field is answered with its stable code and a short message
//! (the value quoted, capped and the cut marked), an undecodable request with MALFORMED_REQUEST,
//! an oversize one with REQUEST_TOO_LARGE.

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::status::ERROR_CODE_KEY;

use crate::sandbox::{Sandbox, Store, KEY_A};

fn stable_code(s: &Status) -> &str {
    s.metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn public(sb: &Sandbox) -> Channel {
    tuikuan_proto::tls::public_channel(
        &sb.cluster.public_url(),
        Some(&tuikuan_proto::pki::testing().ca.cert_pem),
    )
    .unwrap()
}

#[tokio::test]
async fn huge_undecodable_and_oversize_requests_get_stable_codes_and_short_messages() {
    let Some(sb) = Sandbox::start(Store::Sqlite, 0).await else {
        return;
    };
    let mut m = sb.c.merchant(KEY_A).unwrap();
    // A 1 MB currency: the answer names the field and quotes 64 characters of it.
    let big = "X".repeat(1_000_000);
    let e = m
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-big".into(),
            order_no: "O-1".into(),
            amount: "1.00".into(),
            currency: big.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(stable_code(&e), "UNSUPPORTED_CURRENCY");
    assert!(e.message().len() < 200, "{}", e.message());
    assert!(e.message().contains("(+999936 chars)"), "{}", e.message());
    // A huge amount too.
    let e = m
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-big".into(),
            order_no: "O-1".into(),
            amount: big,
            currency: "CNY".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stable_code(&e), "INVALID_AMOUNT");
    assert!(e.message().len() < 200, "{}", e.message());

    // Not a CreateRefundRequest: field 1 as a varint (a health answer's bytes).
    let mut grpc = tonic::client::Grpc::new(public(&sb));
    grpc.ready().await.unwrap();
    let mut request = Request::new(tonic_health::pb::HealthCheckResponse { status: 1 });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY_A}").parse().unwrap());
    let codec = tonic_prost::ProstCodec::<tonic_health::pb::HealthCheckResponse, ()>::default();
    let e = grpc
        .unary(
            request,
            "/tuikuan.business.v1.MerchantService/CreateRefund"
                .parse()
                .unwrap(),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(stable_code(&e), "MALFORMED_REQUEST");

    // Over the 4 MiB limit.
    let e = m
        .create_refund(biz::CreateRefundRequest {
            merchant_refund_no: "R-huge".into(),
            order_no: "O-1".into(),
            amount: "1.00".into(),
            currency: "CNY".into(),
            reason: "x".repeat(5 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(stable_code(&e), "REQUEST_TOO_LARGE");
    sb.shutdown().await;
}
