//! Every listener answers the standard gRPC health check and describes, through reflection,
//! exactly the services it serves, so generic clients (grpcurl, grpcio-reflection) work without
//! the project's proto files: each internal listener its service(s), to a caller holding a
//! certificate of the deployment's CA; the public listener the merchant API alone.

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tuikuan::config::Service;
use tuikuan_proto::tls::Principal;

/// The gRPC services that the listener behind `channel` lists through reflection.
pub async fn reflected_services(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    let mut names: Vec<String> = match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    names.sort();
    names
}

/// Asserts that the listener behind `channel` reports SERVING overall and for each of `services`,
/// and that reflection lists exactly `services` (besides health and reflection).
pub async fn assert_serves_exactly(channel: Channel, what: &str, services: &[&str]) {
    let mut health = HealthClient::new(channel.clone());
    for name in std::iter::once("").chain(services.iter().copied()) {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{what} health check for {name:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{what} {name:?}");
    }
    let listed = reflected_services(channel).await;
    let mut expected: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    expected.push("grpc.health.v1.Health".into());
    expected.push("grpc.reflection.v1.ServerReflection".into());
    expected.sort();
    assert_eq!(listed, expected, "{what} lists exactly what it serves");
}

/// The fully qualified gRPC services of each internal listener.
pub fn internal_services(service: Service) -> &'static [&'static str] {
    match service {
        Service::Accounting => &["tuikuan.accounting.v1.AccountingService"],
        Service::Clearing => &["tuikuan.clearing.v1.ClearingService"],
        Service::Business => &[
            "tuikuan.business.v1.BusinessAdminService",
            "tuikuan.staff.v1.OperatorService",
            "tuikuan.staff.v1.StaffService",
        ],
        Service::Refund => &[
            "tuikuan.refund.v1.BatchService",
            "tuikuan.refund.v1.ErrorRefundService",
            "tuikuan.refund.v1.RefundControlService",
            "tuikuan.refund.v1.RefundService",
        ],
        Service::Payout => &["tuikuan.payout.v1.PayoutService"],
        Service::Reconciliation => &["tuikuan.reconciliation.v1.ReconciliationService"],
        Service::Bank => &["tuikuan.bank.v1.BankService"],
    }
}

/// The merchant API, the one service of the public listener.
pub const PUBLIC_SERVICES: &[&str] = &["tuikuan.business.v1.MerchantService"];

#[tokio::test]
async fn every_listener_serves_health_and_reflects_exactly_its_services() {
    let Some(sb) = crate::sandbox::Sandbox::start(crate::sandbox::Store::Sqlite, 0).await else {
        return;
    };
    let ctl = tuikuan_proto::pki::testing().transport(Principal::Ctl);
    for s in Service::ALL {
        let channel = ctl.channel(s.principal(), &sb.cluster.url(s)).unwrap();
        assert_serves_exactly(channel, s.name(), internal_services(s)).await;
    }
    let public = tuikuan_proto::tls::public_channel(
        &sb.cluster.public_url(),
        Some(&tuikuan_proto::pki::testing().ca.cert_pem),
    )
    .unwrap();
    assert_serves_exactly(public.clone(), "public", PUBLIC_SERVICES).await;
    // The admin service is not known on the public listener.
    let status = HealthClient::new(public)
        .check(HealthCheckRequest {
            service: "tuikuan.business.v1.BusinessAdminService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    sb.shutdown().await;
}
