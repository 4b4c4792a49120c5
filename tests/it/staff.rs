//! Staff security on a running deployment: every staff RPC of every service needs an operator
//! token (signed with the deployment's key) in a role the permission table allows, headers that
//! merely claim an identity count for nothing, and staff actions land in the service's audit
//! trail with who, what, when, before → after and why.

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tuikuan::config::Service;
use tuikuan_auth::domain::{Guard, RPCS};
use tuikuan_auth::Role;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::staff::v1 as staff;
use tuikuan_proto::status::ERROR_CODE_KEY;
use tuikuan_proto::tls::Principal;

use crate::sandbox::{Sandbox, Store};

/// Calls `path` with an empty message and `authorization` when given; the stable error code of
/// the answer ("" for OK or no code).
async fn call(channel: Channel, path: &str, authorization: Option<&str>) -> (Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return (Code::Unavailable, format!("not ready: {e}"));
    }
    let mut request = Request::new(());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
        .metadata_mut()
        .insert("x-operator-id", "mallory".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-operator-role", "finance".parse().unwrap());
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(request, path.parse().unwrap(), codec).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), stable_code(&s)),
    }
}

fn stable_code(s: &Status) -> String {
    s.metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The services whose internal listener serves `path` (the staff desk is on every one).
fn listeners_of(path: &str) -> Vec<Service> {
    let package = path.trim_start_matches('/').split('.').nth(1).unwrap_or("");
    match package {
        "staff" if path.contains("OperatorService") => vec![Service::Business],
        "staff" => Service::ALL.to_vec(),
        other => Service::parse(other).into_iter().collect(),
    }
}

/// Every staff RPC of every service, called as `ctl` (mutual TLS verified), with the
/// `x-operator-*` headers claiming finance: without a token UNAUTHENTICATED; with a token of a
/// role the permission table does not allow PERMISSION_DENIED with its stable code; with an
/// allowed role the call reaches the handler (an empty request then fails validation, or
/// succeeds for the reads).
#[tokio::test]
async fn every_staff_rpc_needs_a_token_in_an_allowed_role() {
    let Some(sb) = Sandbox::start(Store::Sqlite, 0).await else {
        return;
    };
    let pki = tuikuan_proto::pki::testing();
    let ctl = pki.transport(Principal::Ctl);
    let mut walked = 0;
    for (path, guard) in RPCS {
        let actions = match guard {
            Guard::Staff(a) => *a,
            Guard::SignedIn => &[],
            _ => continue,
        };
        let allowed: Vec<Role> = Role::ALL
            .iter()
            .copied()
            .filter(|r| actions.is_empty() || actions.iter().any(|a| a.roles().contains(r)))
            .collect();
        let denied = Role::ALL.iter().copied().find(|r| !allowed.contains(r));
        for service in listeners_of(path) {
            let channel = ctl
                .channel(service.principal(), &sb.cluster.url(service))
                .unwrap();
            let (code, stable) = call(channel.clone(), path, None).await;
            assert_eq!(
                (code, stable.as_str()),
                (Code::Unauthenticated, "UNAUTHENTICATED"),
                "{path} on {} without a token",
                service.name()
            );
            let (code, _) = call(channel.clone(), path, Some("Bearer v4.public.forged")).await;
            assert_eq!(code, Code::Unauthenticated, "{path}: a forged token");
            if let Some(role) = denied {
                let token = sb.cluster.operator_token("walker", &[role]).unwrap();
                let (code, stable) =
                    call(channel.clone(), path, Some(&format!("Bearer {token}"))).await;
                assert_eq!(
                    (code, stable.as_str()),
                    (Code::PermissionDenied, "PERMISSION_DENIED"),
                    "{path} on {} as {role}",
                    service.name()
                );
            }
            let token = sb.cluster.operator_token("walker", &allowed).unwrap();
            let (code, stable) = call(channel, path, Some(&format!("Bearer {token}"))).await;
            assert!(
                !matches!(
                    stable.as_str(),
                    "UNAUTHENTICATED" | "PERMISSION_DENIED" | "CALLER_NOT_ALLOWED"
                ),
                "{path} on {} as {allowed:?}: {code:?} {stable}",
                service.name()
            );
            walked += 1;
        }
    }
    assert!(walked > 60, "walked {walked} staff RPCs");
    sb.shutdown().await;
}

/// The trail of `service`, newest first.
async fn trail(sb: &Sandbox, service: Service) -> Vec<staff::AuditEntry> {
    sb.c.staff_desk(service)
        .list_audit(staff::ListAuditRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("trail")
        .into_inner()
        .entries
}

/// Allowed staff actions succeed and are audited: who, what, when, on what, before → after, why;
/// a risk-rule change and a merchant's creation included. The operator is the token's, whatever
/// the headers claim.
#[tokio::test]
async fn staff_actions_are_audited_with_the_token_s_operator() {
    let Some(sb) = Sandbox::start(Store::Sqlite, 0).await else {
        return;
    };
    let token = sb.cluster.operator_token("rita", &[Role::Risk]).unwrap();
    let as_rita = sb.c.with_token(&token).unwrap();
    let mut request = Request::new(rfd::RiskRule {
        rule_id: "big-amount".into(),
        kind: rfd::RiskRuleKind::AmountAbove as i32,
        threshold_amount: "5000.00".into(),
        currency: "CNY".into(),
        enabled: true,
        description: "large refunds wait for risk".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-operator-id", "mallory".parse().unwrap());
    as_rita
        .control
        .clone()
        .upsert_risk_rule(request)
        .await
        .expect("risk rule saved");
    let entries = trail(&sb, Service::Refund).await;
    let e = entries
        .iter()
        .find(|e| e.action == "CHANGE_RISK_RULE")
        .expect("the risk-rule change is in the refund center's trail");
    assert_eq!(e.operator, "rita");
    assert_eq!(e.roles, vec!["risk".to_string()]);
    assert_eq!(e.subject, "big-amount");
    assert!(e.at_ms > 0);
    assert!(e.before.contains("5000.00"), "{}", e.before);
    assert!(e.after.contains("big-amount"), "{}", e.after);
    assert!(entries.iter().all(|e| e.operator != "mallory"));
    // The merchants the sandbox created are in the business layer's trail, as the local staff.
    let business = trail(&sb, Service::Business).await;
    assert!(
        business.iter().any(|e| e.action == "CREATE_MERCHANT"
            && e.operator == tuikuan::cluster::LOCAL_OPERATOR
            && !e.after.contains("test-key-merchant")),
        "{business:?}"
    );
    // A risk officer may not change a channel.
    let denied = as_rita
        .refund
        .clone()
        .upsert_channel(rfd::Channel {
            code: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    sb.shutdown().await;
}
