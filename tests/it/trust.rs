//! Trust boundaries, from the outside: a client holding a merchant's API key, or nothing, or a
//! certificate that is not this deployment's, or this deployment's certificate of the wrong
//! service, calls every RPC on every listener and gets nothing done.
//!
//! The walk uses raw gRPC calls (any method path, an empty message), so it covers every RPC of
//! the caller allow-list table, including ones a typed client would never send to that address.

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tuikuan::config::Service;
use tuikuan_proto::access::{Rule, TABLE};
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::pki;
use tuikuan_proto::status::ERROR_CODE_KEY;
use tuikuan_proto::tls::{public_channel, Principal, Transport};

use crate::sandbox::{Sandbox, Store, KEY_B};

/// Calls `path` with an empty message (and `authorization: Bearer <key>` when given).
async fn call(channel: Channel, path: &str, api_key: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let mut request = Request::new(());
    if let Some(key) = api_key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(request, path.parse().unwrap(), codec)
        .await
        .map(|_| ())
}

fn stable_code(s: &Status) -> &str {
    s.metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The service whose internal listener serves `path`; `None` for the merchant API.
fn listener_of(path: &str) -> Option<Service> {
    if matches!(tuikuan_proto::access::rule(path), Some(Rule::Public)) {
        return None;
    }
    let package = path.trim_start_matches('/').split('.').nth(1)?;
    Service::parse(package).ok()
}

/// Refused before any handler ran: the connection (TLS) was refused, or the caller allow-list
/// said no.
fn assert_refused_at_the_gate(result: Result<(), Status>, what: &str) {
    let status = match result {
        Ok(()) => panic!("{what}: answered OK"),
        Err(s) => s,
    };
    let at_gate = match status.code() {
        // No TLS session, no client certificate, an untrusted one: the connection is refused.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
            stable_code(&status).is_empty()
        }
        Code::PermissionDenied => stable_code(&status) == "CALLER_NOT_ALLOWED",
        _ => false,
    };
    assert!(at_gate, "{what}: reached a handler: {status:?}");
}

/// Walks every RPC on every listener with every credential an outsider may hold: nothing, a
/// merchant's API key, TLS without a client certificate, a certificate from another CA. Panics
/// on any call that got past the gate.
pub async fn walk_every_listener(public_url: &str, internal: &[(String, String)], ca_pem: &str) {
    let foreign = pki::testing_foreign().transport(Principal::Ctl);
    let keys: [Option<&str>; 2] = [None, Some(KEY_B)];
    for (name, addr) in internal {
        let service = Service::parse(name).unwrap();
        let plain = tuikuan_proto::client::channel(addr).unwrap();
        let no_cert = public_channel(addr, Some(ca_pem)).unwrap();
        let wrong_ca = foreign.channel(service.principal(), addr).unwrap();
        // The connection is refused whatever the method: walk the listener's own RPCs.
        for (path, _) in TABLE
            .iter()
            .filter(|(p, _)| listener_of(p) == Some(service))
        {
            for key in keys {
                for (how, channel) in [
                    ("plaintext", &plain),
                    ("TLS without a client certificate", &no_cert),
                    ("a certificate of another CA", &wrong_ca),
                ] {
                    let what = format!("{path} on {name} ({addr}), {how}, key {key:?}");
                    assert_refused_at_the_gate(call(channel.clone(), path, key).await, &what);
                }
            }
        }
    }
    // The public listener serves the merchant API and nothing else, and no certificate is needed
    // there; everything else is UNIMPLEMENTED, with or without a merchant's key.
    let public = public_channel(public_url, Some(ca_pem)).unwrap();
    let plain = tuikuan_proto::client::channel(public_url).unwrap();
    for (path, rule) in TABLE {
        for key in keys {
            let what = format!("{path} on the public listener, key {key:?}");
            let result = call(public.clone(), path, key).await;
            match (rule, key) {
                (Rule::Public, None) => {
                    assert_eq!(result.unwrap_err().code(), Code::Unauthenticated, "{what}")
                }
                // The merchant's own API with its own key: not a boundary crossing.
                (Rule::Public, Some(_)) => {}
                (Rule::Callers(_), _) => {
                    assert_eq!(result.unwrap_err().code(), Code::Unimplemented, "{what}")
                }
            }
            if public_url.starts_with("https://") {
                let what = format!("{path} on the public listener in plaintext, key {key:?}");
                assert_refused_at_the_gate(call(plain.clone(), path, key).await, &what);
            }
        }
    }
}

/// Every RPC, called on its listener with this deployment's certificate of every identity:
/// PERMISSION_DENIED with CALLER_NOT_ALLOWED exactly for the identities outside its allow-list.
async fn walk_every_identity(sb: &Sandbox) {
    let pki = pki::testing();
    for identity in Principal::ALL {
        let transport: Transport = pki.transport(identity);
        for (path, rule) in TABLE {
            let Some(service) = listener_of(path) else {
                continue;
            };
            let Rule::Callers(allowed) = rule else {
                continue;
            };
            let channel = transport
                .channel(service.principal(), &sb.cluster.url(service))
                .unwrap();
            let result = call(channel, path, None).await;
            let refused = matches!(&result, Err(s) if s.code() == Code::PermissionDenied
                && stable_code(s) == "CALLER_NOT_ALLOWED");
            assert_eq!(
                refused,
                !allowed.contains(&identity),
                "{identity} calling {path}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn nobody_outside_gets_past_any_listener() {
    let Some(mut sb) = Sandbox::start(Store::Sqlite, 0).await else {
        return;
    };
    sb.pay("MB", "B-PAID-1", "100.00").await;
    let balance_before = sb
        .balance(
            tuikuan_proto::accounting::v1::AccountType::MerchantSettlement,
            "MB",
        )
        .await;
    let internal: Vec<(String, String)> = Service::ALL
        .iter()
        .map(|s| (s.name().to_string(), sb.cluster.url(*s)))
        .collect();
    let ca = pki::testing().ca.cert_pem.clone();
    walk_every_listener(&sb.cluster.public_url(), &internal, &ca).await;
    walk_every_identity(&sb).await;

    // The forged payment of merchant B, tried the ways an outsider could.
    let forged = biz::RecordPaymentRequest {
        merchant_id: "MB".into(),
        order_no: "B-FORGED-1".into(),
        channel: crate::sandbox::CHANNEL.into(),
        amount: "500.00".into(),
        currency: "CNY".into(),
        paid_at_ms: 1,
        ..Default::default()
    };
    let business = sb.cluster.url(Service::Business);
    let as_b = |channel: Channel| {
        let key: tonic::metadata::MetadataValue<_> = format!("Bearer {KEY_B}").parse().unwrap();
        biz::business_admin_service_client::BusinessAdminServiceClient::with_interceptor(
            channel,
            move |mut r: Request<()>| {
                r.metadata_mut().insert("authorization", key.clone());
                Ok(r)
            },
        )
    };
    let public = public_channel(&sb.cluster.public_url(), Some(&ca)).unwrap();
    let status = as_b(public)
        .record_payment(forged.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let plain = tuikuan_proto::client::channel(&business).unwrap();
    assert!(as_b(plain).record_payment(forged.clone()).await.is_err());
    let refund_cert = pki::testing()
        .transport(Principal::Refund)
        .channel(Principal::Business, &business)
        .unwrap();
    let status = as_b(refund_cert)
        .record_payment(forged.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(stable_code(&status), "CALLER_NOT_ALLOWED");

    // Nothing happened: no forged trade, B's balance unchanged.
    let missing =
        sb.c.business
            .get_trade(biz::GetTradeRequest {
                merchant_id: "MB".into(),
                order_no: "B-FORGED-1".into(),
            })
            .await
            .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let balance_after = sb
        .balance(
            tuikuan_proto::accounting::v1::AccountType::MerchantSettlement,
            "MB",
        )
        .await;
    assert_eq!(balance_before, balance_after);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_handler_sees_the_verified_caller() {
    // The refund center's outcome report reaches the business layer as `refund`; the same RPC
    // from `ctl` is refused at the gate. (Handlers get `tuikuan_proto::tls::Caller` in the
    // request extensions; the gate is what makes the identity trustworthy.)
    let Some(sb) = Sandbox::start(Store::Sqlite, 0).await else {
        return;
    };
    let path = "/tuikuan.business.v1.BusinessAdminService/ReportRefundOutcome";
    let business = sb.cluster.url(Service::Business);
    let as_refund = pki::testing()
        .transport(Principal::Refund)
        .channel(Principal::Business, &business)
        .unwrap();
    let passed = call(as_refund, path, None).await.unwrap_err();
    assert_ne!(stable_code(&passed), "CALLER_NOT_ALLOWED", "{passed:?}");
    let as_ctl = pki::testing()
        .transport(Principal::Ctl)
        .channel(Principal::Business, &business)
        .unwrap();
    let refused = call(as_ctl, path, None).await.unwrap_err();
    assert_eq!(stable_code(&refused), "CALLER_NOT_ALLOWED");
    sb.shutdown().await;
}
