//! Every service answers the standard gRPC health check and lists itself through reflection, so
//! generic clients (grpcurl, grpcio-reflection) work without the project's proto files.

use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// The gRPC services that `url` lists through reflection.
pub async fn reflected_services(url: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(tuikuan_proto::client::channel(url).unwrap());
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
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Asserts that `url` serves `service` (a full name) and reports it SERVING.
pub async fn assert_serving(url: &str, service: &str) {
    let mut health = HealthClient::new(tuikuan_proto::client::channel(url).unwrap());
    for name in ["", service] {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{url} health check for {name:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{url} {name:?}");
    }
    let listed = reflected_services(url).await;
    assert!(listed.iter().any(|s| s == service), "{url}: {listed:?}");
    assert!(
        listed.iter().any(|s| s == "grpc.health.v1.Health"),
        "{listed:?}"
    );
}

/// The fully qualified gRPC service name of each tuikuan service.
pub fn grpc_name(service: tuikuan::config::Service) -> &'static str {
    use tuikuan::config::Service::*;
    match service {
        Accounting => "tuikuan.accounting.v1.AccountingService",
        Clearing => "tuikuan.clearing.v1.ClearingService",
        Business => "tuikuan.business.v1.MerchantService",
        Refund => "tuikuan.refund.v1.RefundService",
        Payout => "tuikuan.payout.v1.PayoutService",
        Reconciliation => "tuikuan.reconciliation.v1.ReconciliationService",
        Bank => "tuikuan.bank.v1.BankService",
    }
}

#[tokio::test]
async fn in_process_services_serve_health_and_reflection() {
    let Some(sb) = crate::sandbox::Sandbox::start(crate::sandbox::Store::Sqlite, 0).await else {
        return;
    };
    for s in tuikuan::config::Service::ALL {
        assert_serving(&sb.cluster.url(s), grpc_name(s)).await;
    }
    let business = reflected_services(&sb.cluster.url(tuikuan::config::Service::Business)).await;
    assert!(business.contains(&"tuikuan.business.v1.BusinessAdminService".to_string()));
    sb.shutdown().await;
}
