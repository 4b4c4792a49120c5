//! Staff security on a running deployment: every staff RPC of every service needs an operator
//! token (signed with the deployment's key) in a role the permission table allows, headers that
//! merely claim an identity count for nothing, and staff actions land in the service's audit
//! trail with who, what, when, before → after and why.

use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tuikuan::clients::Clients;
use tuikuan::config::Service;
use tuikuan_auth::answer::proposal_of;
use tuikuan_auth::domain::{Guard, RPCS};
use tuikuan_auth::Role;
use tuikuan_kernel::Clock;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::staff::v1 as staff;
use tuikuan_proto::status::ERROR_CODE_KEY;
use tuikuan_proto::tls::Principal;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};

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

// ---------------------------------------------------------------------------------------------
// Four eyes (双人复核): every action that moves money by hand is a proposal a second operator
// decides.

/// Clients acting as operator `name` with `roles` (a token signed with the deployment's key).
pub(crate) fn operator(sb: &Sandbox, name: &str, roles: &[Role]) -> Clients {
    let token = sb.cluster.operator_token(name, roles).expect("token");
    sb.c.with_token(&token).expect("clients")
}

/// The proposal an answer names (asserted `status`) and the answer's body.
pub(crate) fn proposed<T>(
    answer: Result<Response<T>, Status>,
    status: &str,
    what: &str,
) -> (String, T) {
    let answer = answer.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let (id, got) =
        proposal_of(answer.metadata()).unwrap_or_else(|| panic!("{what}: no proposal named"));
    assert_eq!(got, status, "{what}");
    (id, answer.into_inner())
}

pub(crate) async fn decide(
    c: &Clients,
    service: Service,
    id: &str,
    approve: bool,
) -> Result<staff::Proposal, Status> {
    let request = staff::DecideProposalRequest {
        proposal_id: id.into(),
        reason: "checked against the bank's statement".into(),
    };
    let mut desk = c.staff_desk(service);
    let answer = if approve {
        desk.approve_proposal(request).await
    } else {
        desk.reject_proposal(request).await
    };
    answer.map(Response::into_inner)
}

/// A pending proposal takes a second operator: its proposer may neither approve nor reject it
/// (SELF_APPROVAL), an operator in no role its action allows may not approve it
/// (PERMISSION_DENIED).
async fn only_a_second_operator(
    service: Service,
    id: &str,
    proposer: &Clients,
    outsider: &Clients,
) {
    for approve in [true, false] {
        let own = decide(proposer, service, id, approve).await.unwrap_err();
        assert_eq!(
            (own.code(), stable_code(&own).as_str()),
            (Code::PermissionDenied, "SELF_APPROVAL"),
            "{id}"
        );
    }
    let other = decide(outsider, service, id, true).await.unwrap_err();
    assert_eq!(
        (other.code(), stable_code(&other).as_str()),
        (Code::PermissionDenied, "PERMISSION_DENIED"),
        "{id}"
    );
}

/// `checker` rejects `id`: nothing ran.
async fn rejected(service: Service, id: &str, checker: &Clients) {
    let p = decide(checker, service, id, false).await.expect("rejected");
    assert_eq!(p.status, staff::ProposalStatus::Rejected as i32, "{p:?}");
    assert!(p.executed_at_ms == 0 && p.result.is_empty(), "{p:?}");
}

/// Two second operators approve `id` at once, then one again: exactly one approval runs the
/// action, the others are refused (INVALID_STATE_TRANSITION).
async fn approved_once(service: Service, id: &str, a: &Clients, b: &Clients) -> staff::Proposal {
    let (ra, rb) = tokio::join!(decide(a, service, id, true), decide(b, service, id, true));
    assert_eq!(
        usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
        1,
        "{ra:?} {rb:?}"
    );
    let refused = ra
        .as_ref()
        .err()
        .or(rb.as_ref().err())
        .expect("one refused");
    assert_eq!(
        stable_code(refused),
        "INVALID_STATE_TRANSITION",
        "{refused:?}"
    );
    let p = ra.or(rb).expect("one approved");
    assert_eq!(p.status, staff::ProposalStatus::Executed as i32, "{p:?}");
    for c in [a, b] {
        let again = decide(c, service, id, true).await.unwrap_err();
        assert_eq!(stable_code(&again), "INVALID_STATE_TRANSITION", "{again:?}");
    }
    p
}

/// The service's trail tells the proposal's story: proposed (by whom, why), approved (by whom,
/// PENDING → APPROVED), and the action itself by its approver, naming the proposer, before →
/// after. The RPC that proposed it left no entry of the action by its proposer.
async fn assert_story(sb: &Sandbox, service: Service, p: &staff::Proposal) {
    let entries =
        sb.c.staff_desk(service)
            .list_audit(staff::ListAuditRequest {
                subject: p.subject.clone(),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("trail")
            .into_inner()
            .entries;
    let of = |action: &str| {
        entries
            .iter()
            .find(|e| e.proposal_id == p.proposal_id && e.action == action)
            .unwrap_or_else(|| panic!("no {action} of {} in {entries:#?}", p.proposal_id))
    };
    let proposed = of("PROPOSE");
    assert_eq!(
        (proposed.operator.as_str(), proposed.reason.as_str()),
        (p.proposer.as_str(), p.reason.as_str())
    );
    assert!(proposed.after.contains(&p.action), "{proposed:?}");
    let approved = of("APPROVE");
    assert_eq!(approved.operator, p.approver);
    assert_eq!(
        (approved.before.as_str(), approved.after.as_str()),
        ("PENDING", "APPROVED")
    );
    let done = of(&p.action);
    assert_eq!(done.operator, p.approver);
    assert!(
        done.reason.contains(&format!("proposed by {}", p.proposer)),
        "{done:?}"
    );
    assert!(
        !done.before.is_empty() && !done.after.is_empty() && done.before != done.after,
        "{done:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.action == p.action && e.proposal_id.is_empty()),
        "{entries:#?}"
    );
}

pub(crate) async fn order(sb: &Sandbox, refund_id: &str) -> rfd::RefundOrder {
    sb.c.refund
        .clone()
        .get_refund(rfd::GetRefundRequest {
            refund_id: refund_id.into(),
            ..Default::default()
        })
        .await
        .expect("order")
        .into_inner()
}

/// A file-upload channel (its refunds go into the day's spreadsheet for the bank CCB).
pub(crate) const SHEET_CHANNEL: &str = "UNION_4E";

/// Pays and refunds `order_no` on the file-upload channel; the refund's id.
async fn sheet_refund(sb: &mut Sandbox, order_no: &str, card: &str) -> String {
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: "MA".into(),
            order_no: order_no.into(),
            channel: SHEET_CHANNEL.into(),
            amount: "40.00".into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            payer_card_no: card.into(),
            payer_name: "Payer Four".into(),
            ..Default::default()
        })
        .await
        .expect("payment");
    sb.refund(KEY_A, &format!("R-{order_no}"), order_no, "40.00")
        .await
        .expect("refund accepted")
        .refund_id
}

/// Three refunds in a spreadsheet marked uploaded: their attempts are SUBMITTED.
pub(crate) async fn submitted_sheet(sb: &mut Sandbox) -> (Vec<String>, rfd::Batch) {
    sb.c.refund
        .upsert_channel(rfd::Channel {
            code: SHEET_CHANNEL.into(),
            kind: rfd::ChannelKind::Unionpay as i32,
            methods: vec![rfd::RefundMethod::FileUpload as i32],
            original_route_window_days: 180,
            bank_code: "CCB".into(),
            ..Default::default()
        })
        .await
        .expect("refund channel");
    sb.c.business
        .upsert_channel(biz::Channel {
            code: SHEET_CHANNEL.into(),
            refund_window_days: 365,
            enabled: true,
        })
        .await
        .expect("business channel");
    let mut ids = Vec::new();
    for (no, card) in [
        ("O-4E-U1", "6228480000000000414"),
        ("O-4E-U2", "6228480000000000422"),
        ("O-4E-U3", "6228480000000000430"),
    ] {
        ids.push(sheet_refund(sb, no, card).await);
    }
    let batches =
        sb.c.batch
            .generate_batches(rfd::GenerateBatchesRequest {
                date: sb.clock.today().to_string(),
            })
            .await
            .expect("batches")
            .into_inner()
            .batches;
    let batch = batches
        .into_iter()
        .find(|b| b.channel == SHEET_CHANNEL)
        .expect("the channel's batch");
    let batch =
        sb.c.batch
            .mark_batch(rfd::MarkBatchRequest {
                batch_id: batch.batch_id,
                status: rfd::BatchStatus::Uploaded as i32,
                operator: String::new(),
                note: "uploaded to the bank's site".into(),
            })
            .await
            .expect("marked")
            .into_inner();
    assert_eq!(batch.rows.len(), 3, "{batch:?}");
    (ids, batch)
}

/// Force-fail, confirm succeeded, confirm failed, reinstate, failing a spreadsheet row, a
/// discrepancy's resolution and an error refund, each through real gRPC: the request only proposes (nothing
/// moves); the proposer may not approve, an operator without an allowed role may not either;
/// a rejection leaves everything as it was; approvals raced and repeated act exactly once; the
/// service's trail holds who proposed, who approved, before → after and why.
async fn money_moved_by_hand_needs_a_second_operator(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let fiona = operator(&sb, "fiona", &[Role::Finance]);
    let frank = operator(&sb, "frank", &[Role::Finance]);
    let fred = operator(&sb, "fred", &[Role::Finance]);
    let olivia = operator(&sb, "olivia", &[Role::Ops]);
    let otto = operator(&sb, "otto", &[Role::Ops]);
    let rita = operator(&sb, "rita", &[Role::Risk]);

    // Force-fail a refund not yet sent to the bank.
    sb.pay("MA", "O-4E-FF", "100.00").await;
    let id = sb
        .refund(KEY_A, "R-4E-FF", "O-4E-FF", "30.00")
        .await
        .expect("refund")
        .refund_id;
    let force_fail = |c: &Clients| {
        let (mut control, refund_id) = (c.control.clone(), id.clone());
        async move {
            control
                .force_fail(rfd::ControlRequest {
                    refund_id,
                    reason: "the customer's card was cancelled".into(),
                })
                .await
        }
    };
    let (first, body) = proposed(force_fail(&fiona).await, "PENDING", "force-fail");
    assert_eq!(body.refund_status, rfd::RefundStatus::Processing as i32);
    assert!(first.starts_with("refund-"), "{first}");
    only_a_second_operator(Service::Refund, &first, &fiona, &olivia).await;
    rejected(Service::Refund, &first, &frank).await;
    assert_eq!(
        order(&sb, &id).await.refund_status,
        rfd::RefundStatus::Processing as i32,
        "a rejected force-fail moves nothing"
    );
    let (second, _) = proposed(force_fail(&fiona).await, "PENDING", "force-fail again");
    assert_ne!(first, second);
    let done = approved_once(Service::Refund, &second, &frank, &fred).await;
    assert_eq!(
        order(&sb, &id).await.refund_status,
        rfd::RefundStatus::Failed as i32
    );
    let fine =
        sb.c.control
            .list_audit(rfd::ListAuditRequest {
                refund_id: id.clone(),
                limit: 100,
                after: String::new(),
            })
            .await
            .expect("the order's trail")
            .into_inner()
            .entries;
    assert_eq!(
        fine.iter().filter(|e| e.action == "FORCE_FAIL").count(),
        1,
        "{fine:#?}"
    );
    assert_story(&sb, Service::Refund, &done).await;

    // Confirm succeeded (needs the bank's evidence; ops may), confirm failed (finance only) and
    // fail a row of a spreadsheet with the bank.
    let (ids, batch) = submitted_sheet(&mut sb).await;
    let confirm = |c: &Clients, refund_id: &str, status: rfd::RefundStatus, evidence: &str| {
        let mut control = c.control.clone();
        let request = rfd::ConfirmOutcomeRequest {
            refund_id: refund_id.into(),
            status: status as i32,
            reason: "the bank's branch confirmed by phone".into(),
            bank_reference_id: String::new(),
            evidence: evidence.into(),
        };
        async move { control.confirm_outcome(request).await }
    };
    let no_evidence = confirm(&olivia, &ids[0], rfd::RefundStatus::Succeeded, "")
        .await
        .unwrap_err();
    assert_eq!(
        (no_evidence.code(), stable_code(&no_evidence).as_str()),
        (Code::InvalidArgument, "INVALID_ARGUMENT")
    );
    let evidence = "CCB statement 2026-11-24 line 17";
    let (p, _) = proposed(
        confirm(&olivia, &ids[0], rfd::RefundStatus::Succeeded, evidence).await,
        "PENDING",
        "confirm succeeded",
    );
    only_a_second_operator(Service::Refund, &p, &olivia, &rita).await;
    assert_eq!(
        order(&sb, &ids[0]).await.refund_status,
        rfd::RefundStatus::Processing as i32
    );
    let done = approved_once(Service::Refund, &p, &otto, &frank).await;
    let confirmed = order(&sb, &ids[0]).await;
    assert_eq!(confirmed.refund_status, rfd::RefundStatus::Succeeded as i32);
    assert!(done.summary.contains(evidence), "{done:?}");
    assert_story(&sb, Service::Refund, &done).await;

    let (p, _) = proposed(
        confirm(&fiona, &ids[1], rfd::RefundStatus::Failed, "").await,
        "PENDING",
        "confirm failed",
    );
    only_a_second_operator(Service::Refund, &p, &fiona, &olivia).await;
    rejected(Service::Refund, &p, &frank).await;
    assert_eq!(
        order(&sb, &ids[1]).await.submit_status,
        rfd::SubmitStatus::Submitted as i32
    );
    let (p, _) = proposed(
        confirm(&fiona, &ids[1], rfd::RefundStatus::Failed, "").await,
        "PENDING",
        "confirm failed again",
    );
    let done = approved_once(Service::Refund, &p, &frank, &fred).await;
    assert_eq!(
        order(&sb, &ids[1]).await.refund_status,
        rfd::RefundStatus::Failed as i32
    );
    assert_story(&sb, Service::Refund, &done).await;

    // Reinstate the failed one as succeeded (the bank's statement shows it paid after all).
    let reinstate = |c: &Clients| {
        let mut control = c.control.clone();
        let request = rfd::ReinstateRequest {
            refund_id: ids[1].clone(),
            reason: "the bank's corrected statement shows it paid".into(),
            evidence: "CCB statement 2026-11-25 line 3".into(),
            bank_reference_id: String::new(),
        };
        async move { control.reinstate(request).await }
    };
    let (p, _) = proposed(reinstate(&fiona).await, "PENDING", "reinstate");
    only_a_second_operator(Service::Refund, &p, &fiona, &olivia).await;
    rejected(Service::Refund, &p, &frank).await;
    let (p, _) = proposed(reinstate(&fiona).await, "PENDING", "reinstate again");
    let done = approved_once(Service::Refund, &p, &frank, &fred).await;
    assert_eq!(
        order(&sb, &ids[1]).await.refund_status,
        rfd::RefundStatus::Succeeded as i32
    );
    assert_story(&sb, Service::Refund, &done).await;

    let row = batch
        .rows
        .iter()
        .find(|r| r.refund_id == ids[2])
        .expect("the third refund's row")
        .row_id
        .clone();
    let fail_row = |c: &Clients| {
        let mut sheets = c.batch.clone();
        let request = rfd::MarkRowsRequest {
            batch_id: batch.batch_id.clone(),
            failed: vec![rfd::RowResult {
                row_id: row.clone(),
                reason: "account closed".into(),
            }],
            operator: String::new(),
            source: "the bank's result file".into(),
        };
        async move { sheets.mark_rows(request).await }
    };
    let row_status = |b: &rfd::Batch| b.rows.iter().find(|r| r.row_id == row).map(|r| r.status);
    let (p, body) = proposed(fail_row(&fiona).await, "PENDING", "fail rows");
    assert_eq!(row_status(&body), Some(rfd::RowStatus::RowSubmitted as i32));
    only_a_second_operator(Service::Refund, &p, &fiona, &olivia).await;
    rejected(Service::Refund, &p, &fred).await;
    let (p, _) = proposed(fail_row(&fiona).await, "PENDING", "fail rows again");
    let done = approved_once(Service::Refund, &p, &fred, &frank).await;
    let after =
        sb.c.batch
            .get_batch(rfd::GetBatchRequest {
                batch_id: batch.batch_id.clone(),
            })
            .await
            .expect("batch")
            .into_inner();
    assert_eq!(row_status(&after), Some(rfd::RowStatus::RowFailed as i32));
    assert_story(&sb, Service::Refund, &done).await;

    // A discrepancy (a row only the bank has) resolved.
    let date = sb.clock.today().to_string();
    let file = format!(
        "record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason\n\
         REFUND,UNKNOWN-4E-1,BK4E1,{},2.00,CNY,SUCCESS,{date}T09:00:00.000+08:00,\n",
        crate::sandbox::CHANNEL
    );
    fiona
        .reconciliation
        .clone()
        .run_reconciliation_file(rec::RunReconciliationFileRequest {
            channel: crate::sandbox::CHANNEL.into(),
            date: date.clone(),
            format: "tuikuan-csv-v1".into(),
            content: file.into_bytes(),
            ..Default::default()
        })
        .await
        .expect("the bank's file");
    let open =
        sb.c.reconciliation
            .list_discrepancies(rec::ListDiscrepanciesRequest {
                channel: crate::sandbox::CHANNEL.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("discrepancies")
            .into_inner()
            .discrepancies;
    let discrepancy = open
        .iter()
        .find(|d| d.bank_reference_id == "UNKNOWN-4E-1")
        .unwrap_or_else(|| panic!("{open:#?}"))
        .discrepancy_id
        .clone();
    let resolve = |c: &Clients| {
        let mut recon = c.reconciliation.clone();
        let request = rec::ResolveDiscrepancyRequest {
            discrepancy_id: discrepancy.clone(),
            resolution: rec::Resolution::PlatformWins as i32,
            operator: String::new(),
            reason: "the bank's row belongs to another merchant".into(),
            evidence: String::new(),
        };
        async move { recon.resolve_discrepancy(request).await }
    };
    let discrepancy_status = |sb: &Sandbox| {
        let mut recon = sb.c.reconciliation.clone();
        let id = discrepancy.clone();
        async move {
            recon
                .get_discrepancy(rec::GetDiscrepancyRequest { discrepancy_id: id })
                .await
                .expect("discrepancy")
                .into_inner()
                .status
        }
    };
    let before = discrepancy_status(&sb).await;
    let (p, _) = proposed(resolve(&fiona).await, "PENDING", "resolve");
    assert!(p.starts_with("reconciliation-"), "{p}");
    only_a_second_operator(Service::Reconciliation, &p, &fiona, &olivia).await;
    rejected(Service::Reconciliation, &p, &frank).await;
    assert_eq!(
        discrepancy_status(&sb).await,
        before,
        "a rejection resolves nothing"
    );
    let (p, _) = proposed(resolve(&fiona).await, "PENDING", "resolve again");
    let done = approved_once(Service::Reconciliation, &p, &frank, &fred).await;
    assert_ne!(discrepancy_status(&sb).await, before);
    assert_story(&sb, Service::Reconciliation, &done).await;

    // An error refund of a duplicate payment (ops or finance).
    let trade = sb.pay("MA", "O-4E-DUP", "66.00").await;
    let error_refund = |c: &Clients| {
        let mut business = c.business.clone();
        async move {
            business
                .create_error_refund(biz::CreateErrorRefundRequest {
                    merchant_id: "MA".into(),
                    order_no: "O-4E-DUP".into(),
                    kind: biz::RefundKind::DuplicatePayment as i32,
                    amount: "66.00".into(),
                    currency: "CNY".into(),
                    reason: "the customer paid twice".into(),
                    operator: String::new(),
                })
                .await
        }
    };
    let refund_no = format!("ERR-{}", trade.trade_id);
    let (p, body) = proposed(error_refund(&olivia).await, "PENDING", "error refund");
    assert!(
        p.starts_with("business-") && body.refund_id.is_empty(),
        "{p} {body:?}"
    );
    only_a_second_operator(Service::Business, &p, &olivia, &rita).await;
    rejected(Service::Business, &p, &otto).await;
    let none = sb.get_refund(KEY_A, &refund_no).await.unwrap_err();
    assert_eq!(
        none.code(),
        Code::NotFound,
        "a rejected error refund refunds nothing"
    );
    let (p, _) = proposed(error_refund(&olivia).await, "PENDING", "error refund again");
    let done = approved_once(Service::Business, &p, &otto, &fiona).await;
    let refund = sb
        .get_refund(KEY_A, &refund_no)
        .await
        .expect("the error refund");
    assert_eq!(refund.amount, "66.00");
    assert_story(&sb, Service::Business, &done).await;

    // Every proposal of every service, as `ctl proposals list` gathers them.
    let mut executed = 0;
    for service in [Service::Refund, Service::Reconciliation, Service::Business] {
        let list = fiona
            .staff_desk(service)
            .list_proposals(staff::ListProposalsRequest {
                status: staff::ProposalStatus::Executed as i32,
                ..Default::default()
            })
            .await
            .expect("proposals")
            .into_inner()
            .proposals;
        executed += list.len();
    }
    assert_eq!(executed, 7);
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}

both_stores!(money_moved_by_hand_needs_a_second_operator);

/// Below an action's configured threshold one operator suffices: the action runs when proposed
/// (the answer says EXECUTED); at or above it, a second operator is needed.
#[tokio::test]
async fn below_the_threshold_one_operator_acts() {
    let clock = tuikuan_kernel::ManualClock::at_business(tuikuan::demo::demo_start_date(), 10);
    let Some(mut sb) = Sandbox::start_with(Store::Sqlite, 0, clock, |config, _| {
        config
            .four_eyes
            .insert("force_fail".into(), "50.00 CNY".into());
    })
    .await
    else {
        return;
    };
    let fiona = operator(&sb, "fiona", &[Role::Finance]);
    sb.pay("MA", "O-4E-T", "200.00").await;
    let small = sb.refund(KEY_A, "R-4E-S", "O-4E-T", "49.99").await.unwrap();
    let large = sb.refund(KEY_A, "R-4E-L", "O-4E-T", "50.00").await.unwrap();
    let force_fail = |refund_id: &str| {
        let mut control = fiona.control.clone();
        let request = rfd::ControlRequest {
            refund_id: refund_id.into(),
            reason: "the customer's card was cancelled".into(),
        };
        async move { control.force_fail(request).await }
    };
    let (p, body) = proposed(force_fail(&small.refund_id).await, "EXECUTED", "small");
    assert_eq!(body.refund_status, rfd::RefundStatus::Failed as i32);
    let p = fiona
        .staff_desk(Service::Refund)
        .get_proposal(staff::GetProposalRequest { proposal_id: p })
        .await
        .expect("proposal")
        .into_inner();
    assert_eq!((p.approver.as_str(), p.needs_second), ("fiona", false));
    let trail =
        sb.c.staff_desk(Service::Refund)
            .list_audit(staff::ListAuditRequest {
                subject: small.refund_id.clone(),
                action: "FORCE_FAIL".into(),
                ..Default::default()
            })
            .await
            .expect("trail")
            .into_inner()
            .entries;
    assert!(
        trail.iter().any(|e| e.operator == "fiona"
            && e.proposal_id == p.proposal_id
            && e.reason.contains("one operator sufficed")),
        "{trail:#?}"
    );
    let (_, body) = proposed(force_fail(&large.refund_id).await, "PENDING", "large");
    assert_eq!(body.refund_status, rfd::RefundStatus::Processing as i32);
    sb.shutdown().await;
}
