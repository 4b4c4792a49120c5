//! The operator registry and a service's staff desk over real gRPC, behind the guard, on SQLite
//! and PostgreSQL: login and lockout, operator management, the audit trail, and four-eyes
//! proposals from proposal to execution.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::Code;
use tuikuan_auth::client::with_token;
use tuikuan_auth::domain::{FourEyes, Proposal, ProposalStatus};
use tuikuan_auth::registry::Registry;
use tuikuan_auth::testing::TestKeys;
use tuikuan_auth::{Action, Desk, Draft, Executed, Executor, Operator, Role, Staff, StaffServer};
use tuikuan_db::testing::TestDb;
use tuikuan_db::Db;
use tuikuan_kernel::{Currency, Error, ErrorCode, ManualClock, Money, SharedClock};
use tuikuan_proto::server::ServiceHandle;
use tuikuan_proto::staff::v1 as pb;
use tuikuan_proto::staff::v1::operator_service_client::OperatorServiceClient;
use tuikuan_proto::staff::v1::operator_service_server::OperatorServiceServer;
use tuikuan_proto::staff::v1::staff_service_client::StaffServiceClient;
use tuikuan_proto::status::from_status;

/// Runs approved proposals by counting them; fails as told.
#[derive(Clone, Debug, Default)]
struct Counter {
    runs: Arc<AtomicUsize>,
    fail: Arc<Mutex<Option<ErrorCode>>>,
}

impl Executor for Counter {
    fn execute(
        &self,
        p: Proposal,
        approver: Staff,
    ) -> BoxFuture<'static, tuikuan_kernel::Result<Executed>> {
        let this = self.clone();
        Box::pin(async move {
            if let Some(code) = *this.fail.lock().expect("lock") {
                return Err(Error::new(code, "the subject moved"));
            }
            this.runs.fetch_add(1, Ordering::SeqCst);
            Ok(Executed::new(
                "undone",
                format!("{} done, approved by {}", p.action, approver.operator.name),
            ))
        })
    }
}

struct Env {
    keys: TestKeys,
    desk: Desk,
    exec: Counter,
    ops: OperatorServiceClient<Channel>,
    staff: StaffServiceClient<Channel>,
    _handle: ServiceHandle,
    _db: TestDb,
}

async fn start(db: TestDb, four_eyes: FourEyes) -> Env {
    let keys = TestKeys::new();
    let clock: SharedClock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp_millis(1_795_000_000_000).expect("instant"),
    ));
    let pool = Db::connect(db.url(), 4).expect("db");
    pool.migrate(tuikuan_auth::store::MIGRATIONS)
        .expect("staff migrations");
    pool.migrate(tuikuan_auth::store::REGISTRY_MIGRATIONS)
        .expect("registry migrations");
    let registry = Registry::new(pool.clone(), clock.clone(), Some(keys.signer()));
    let hash = tuikuan_auth::password::hash_password("admin-password-1").expect("hash");
    assert!(registry.bootstrap("admin", &hash).await.expect("bootstrap"));
    assert!(!registry
        .bootstrap("admin2", &hash)
        .await
        .expect("second bootstrap"));
    let desk = Desk::new("refund", pool, clock, four_eyes);
    let exec = Counter::default();
    let auth = keys.auth();
    let (d, e) = (desk.clone(), exec.clone());
    let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
        let routes = tonic::service::Routes::new(auth.guard(OperatorServiceServer::new(registry)))
            .add_service(StaffServer::new(d, e).guarded(&auth));
        tuikuan_proto::server::serve(
            listener,
            tuikuan_proto::pki::test_transport(tuikuan_proto::tls::Principal::Refund),
            routes,
            &[],
            shutdown,
        )
    })
    .await
    .expect("serve");
    // As the staff tool `ctl`, to the refund center's internal listener (the desk's service).
    let channel = tuikuan_proto::pki::test_channel(
        tuikuan_proto::tls::Principal::Ctl,
        tuikuan_proto::tls::Principal::Refund,
        &handle.url(),
    );
    Env {
        keys,
        desk,
        exec,
        ops: OperatorServiceClient::new(channel.clone()),
        staff: StaffServiceClient::new(channel),
        _handle: handle,
        _db: db,
    }
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => from_status(&s).code,
    }
}

async fn login(env: &mut Env, name: &str, password: &str) -> Result<String, tonic::Status> {
    env.ops
        .login(pb::LoginRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner().token)
}

async fn registry_scenario(db: TestDb) {
    let mut env = start(db, FourEyes::always_two()).await;
    // Wrong password, unknown name, malformed name: one answer.
    for (name, pw) in [
        ("admin", "wrong-password"),
        ("nobody", "whatever-pass"),
        ("Bad Name", "x"),
    ] {
        let e = login(&mut env, name, pw).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(from_status(&e).code, ErrorCode::InvalidCredentials);
    }
    let admin = login(&mut env, "admin", "admin-password-1")
        .await
        .expect("admin login");
    let me = env
        .ops
        .who_am_i(with_token(pb::WhoAmIRequest {}, &admin).unwrap())
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.roles.clone()),
        ("admin", vec!["admin".to_string()])
    );
    // Operator management: admin only, audited, never the password.
    let create = |name: &str, roles: &[&str], token: &str| {
        with_token(
            pb::CreateOperatorRequest {
                name: name.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                password: format!("{name}-password-1"),
            },
            token,
        )
        .unwrap()
    };
    env.ops
        .create_operator(create("fiona", &["finance"], &admin))
        .await
        .expect("create fiona");
    let fiona = login(&mut env, "fiona", "fiona-password-1")
        .await
        .expect("fiona");
    assert_eq!(
        code(
            env.ops
                .create_operator(create("mallory", &["admin"], &fiona))
                .await
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(
            env.ops
                .create_operator(create("fiona", &["ops"], &admin))
                .await
        ),
        ErrorCode::IdempotencyConflict
    );
    let mut short = create("shorty", &["ops"], &admin);
    short.get_mut().password = "too-short".into();
    assert_eq!(
        code(env.ops.create_operator(short).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            env.ops
                .create_operator(tonic::Request::new(pb::CreateOperatorRequest::default()))
                .await
        ),
        ErrorCode::Unauthenticated
    );
    // The last admin keeps the role; nobody disables themselves.
    assert_eq!(
        code(
            env.ops
                .set_operator_roles(
                    with_token(
                        pb::SetOperatorRolesRequest {
                            name: "admin".into(),
                            roles: vec!["ops".into()],
                        },
                        &admin
                    )
                    .unwrap()
                )
                .await
        ),
        ErrorCode::InvalidStateTransition
    );
    assert_eq!(
        code(
            env.ops
                .set_operator_enabled(
                    with_token(
                        pb::SetOperatorEnabledRequest {
                            name: "admin".into(),
                            enabled: false,
                        },
                        &admin
                    )
                    .unwrap()
                )
                .await
        ),
        ErrorCode::InvalidStateTransition
    );
    // Five failures lock fiona; even the right password is refused then.
    for _ in 0..5 {
        login(&mut env, "fiona", "not-her-password")
            .await
            .unwrap_err();
    }
    let e = login(&mut env, "fiona", "fiona-password-1")
        .await
        .unwrap_err();
    assert_eq!(from_status(&e).code, ErrorCode::InvalidCredentials);
    // The admin resets her password, which unlocks her; she changes it herself.
    env.ops
        .reset_password(
            with_token(
                pb::ResetPasswordRequest {
                    name: "fiona".into(),
                    password: "fiona-new-password".into(),
                },
                &admin,
            )
            .unwrap(),
        )
        .await
        .expect("reset");
    let fiona = login(&mut env, "fiona", "fiona-new-password")
        .await
        .expect("unlocked");
    assert_eq!(
        code(
            env.ops
                .change_password(
                    with_token(
                        pb::ChangePasswordRequest {
                            current_password: "wrong-current-pw".into(),
                            new_password: "fiona-third-password".into(),
                        },
                        &fiona
                    )
                    .unwrap()
                )
                .await
        ),
        ErrorCode::InvalidCredentials
    );
    env.ops
        .change_password(
            with_token(
                pb::ChangePasswordRequest {
                    current_password: "fiona-new-password".into(),
                    new_password: "fiona-third-password".into(),
                },
                &fiona,
            )
            .unwrap(),
        )
        .await
        .expect("change own password");
    // Disabled operators cannot log in.
    env.ops
        .set_operator_enabled(
            with_token(
                pb::SetOperatorEnabledRequest {
                    name: "fiona".into(),
                    enabled: false,
                },
                &admin,
            )
            .unwrap(),
        )
        .await
        .expect("disable");
    assert!(login(&mut env, "fiona", "fiona-third-password")
        .await
        .is_err());
    // Everything is in the audit trail, and no password or hash is.
    let trail = env
        .staff
        .list_audit(with_token(pb::ListAuditRequest::default(), &admin).unwrap())
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"LOGIN") && actions.contains(&"LOGIN_FAILED"),
        "{actions:?}"
    );
    assert!(trail.iter().any(|e| e.action == "MANAGE_OPERATORS"
        && e.subject == "fiona"
        && e.after.contains("disabled")));
    for e in &trail {
        let text = format!("{e:?}");
        assert!(
            !text.contains("password-1") && !text.contains("$argon2"),
            "{text}"
        );
    }
    // A token from a key the service does not trust, and an expired one, are refused.
    let foreign = TestKeys::new().token("admin", &[Role::Admin]);
    let expired = env.keys.expired_token("admin", &[Role::Admin]);
    for (token, expected) in [
        (foreign, ErrorCode::Unauthenticated),
        (expired, ErrorCode::TokenExpired),
    ] {
        let r = env
            .ops
            .list_operators(with_token(pb::ListOperatorsRequest {}, &token).unwrap())
            .await;
        assert_eq!(code(r), expected);
    }
}

fn staff_of(keys: &TestKeys, name: &str, role: Role) -> (Staff, String) {
    let token = keys.token(name, &[role]);
    (
        Staff {
            operator: Operator {
                name: name.into(),
                roles: vec![role],
            },
            rpc: "/tuikuan.refund.v1.RefundControlService/ForceFail".into(),
        },
        token,
    )
}

fn draft(subject: &str, minor: i64) -> Draft {
    Draft {
        action: Action::ForceFail,
        subject: subject.into(),
        amount: Some(Money::from_minor(minor, Currency::Cny)),
        summary: format!("force-fail {subject}"),
        payload: format!("{{\"refund_id\":\"{subject}\"}}"),
        reason: "the bank confirmed the failure".into(),
    }
}

async fn decide(
    env: &mut Env,
    token: &str,
    id: &str,
    approve: bool,
) -> Result<pb::Proposal, tonic::Status> {
    let req = with_token(
        pb::DecideProposalRequest {
            proposal_id: id.into(),
            reason: "checked the bank statement".into(),
        },
        token,
    )
    .unwrap();
    let r = if approve {
        env.staff.approve_proposal(req).await
    } else {
        env.staff.reject_proposal(req).await
    };
    r.map(|r| r.into_inner())
}

async fn proposals_scenario(db: TestDb) {
    let mut env = start(db, FourEyes::always_two()).await;
    let (fiona, fiona_t) = staff_of(&env.keys, "fiona", Role::Finance);
    let (_, frank_t) = staff_of(&env.keys, "frank", Role::Finance);
    let (_, olivia_t) = staff_of(&env.keys, "olivia", Role::Ops);
    let exec = env.exec.clone();
    let p = env
        .desk
        .propose(&fiona, draft("rf_1", 12_113), &exec)
        .await
        .unwrap();
    assert_eq!((p.status, p.needs_second), (ProposalStatus::Pending, true));
    assert!(p.proposal_id.starts_with("refund-"));
    // The same proposal again is the same proposal; another one for the subject is a conflict.
    let again = env
        .desk
        .propose(&fiona, draft("rf_1", 12_113), &exec)
        .await
        .unwrap();
    assert_eq!(again.proposal_id, p.proposal_id);
    let (frank, _) = staff_of(&env.keys, "frank", Role::Finance);
    let e = env
        .desk
        .propose(&frank, draft("rf_1", 12_113), &exec)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::IdempotencyConflict);
    // Not the proposer, not ops: only a second finance operator.
    let own = decide(&mut env, &fiona_t, &p.proposal_id, true)
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    assert_eq!(from_status(&own).code, ErrorCode::SelfApproval);
    let ops = decide(&mut env, &olivia_t, &p.proposal_id, true)
        .await
        .unwrap_err();
    assert_eq!(from_status(&ops).code, ErrorCode::PermissionDenied);
    assert_eq!(
        exec.runs.load(Ordering::SeqCst),
        0,
        "nothing ran before approval"
    );
    let done = decide(&mut env, &frank_t, &p.proposal_id, true)
        .await
        .unwrap();
    assert_eq!(done.status, pb::ProposalStatus::Executed as i32);
    assert_eq!(done.approver, "frank");
    assert_eq!(done.result, "undone → FORCE_FAIL done, approved by frank");
    assert_eq!(exec.runs.load(Ordering::SeqCst), 1);
    let twice = decide(&mut env, &frank_t, &p.proposal_id, true)
        .await
        .unwrap_err();
    assert_eq!(from_status(&twice).code, ErrorCode::InvalidStateTransition);
    assert_eq!(exec.runs.load(Ordering::SeqCst), 1, "never twice");

    // Rejected: nothing runs.
    let r = env
        .desk
        .propose(&fiona, draft("rf_2", 500), &exec)
        .await
        .unwrap();
    let rejected = decide(&mut env, &frank_t, &r.proposal_id, false)
        .await
        .unwrap();
    assert_eq!(rejected.status, pb::ProposalStatus::Rejected as i32);
    assert_eq!(exec.runs.load(Ordering::SeqCst), 1);

    // A refused action fails the proposal; an outage leaves it approved until approved again.
    let f = env
        .desk
        .propose(&fiona, draft("rf_3", 500), &exec)
        .await
        .unwrap();
    *exec.fail.lock().unwrap() = Some(ErrorCode::BankMayHavePaid);
    let e = decide(&mut env, &frank_t, &f.proposal_id, true)
        .await
        .unwrap_err();
    assert_eq!(from_status(&e).code, ErrorCode::BankMayHavePaid);
    assert_eq!(
        env.desk.get(&f.proposal_id).await.unwrap().status,
        ProposalStatus::Failed
    );
    let u = env
        .desk
        .propose(&fiona, draft("rf_4", 500), &exec)
        .await
        .unwrap();
    *exec.fail.lock().unwrap() = Some(ErrorCode::Unavailable);
    let e = decide(&mut env, &frank_t, &u.proposal_id, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        env.desk.get(&u.proposal_id).await.unwrap().status,
        ProposalStatus::Approved
    );
    *exec.fail.lock().unwrap() = None;
    let finished = decide(&mut env, &frank_t, &u.proposal_id, true)
        .await
        .unwrap();
    assert_eq!(finished.status, pb::ProposalStatus::Executed as i32);
    assert_eq!(exec.runs.load(Ordering::SeqCst), 2);

    // The proposer cancels; nobody else can.
    let c = env
        .desk
        .propose(&fiona, draft("rf_5", 500), &exec)
        .await
        .unwrap();
    let not_yours = env
        .staff
        .cancel_proposal(
            with_token(
                pb::DecideProposalRequest {
                    proposal_id: c.proposal_id.clone(),
                    reason: "no".into(),
                },
                &frank_t,
            )
            .unwrap(),
        )
        .await;
    assert_eq!(code(not_yours), ErrorCode::PermissionDenied);
    let cancelled = env
        .staff
        .cancel_proposal(
            with_token(
                pb::DecideProposalRequest {
                    proposal_id: c.proposal_id.clone(),
                    reason: "wrong refund".into(),
                },
                &fiona_t,
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::ProposalStatus::Cancelled as i32);

    // Listing: every proposal, filterable by status; the trail names each step.
    let pending = env
        .staff
        .list_proposals(
            with_token(
                pb::ListProposalsRequest {
                    status: pb::ProposalStatus::Executed as i32,
                    ..Default::default()
                },
                &olivia_t,
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .proposals;
    assert_eq!(pending.len(), 2);
    let trail = env
        .staff
        .list_audit(
            with_token(
                pb::ListAuditRequest {
                    subject: "rf_1".into(),
                    ..Default::default()
                },
                &olivia_t,
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .into_inner()
        .entries;
    let steps: Vec<(&str, &str)> = trail
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.operator.as_str()))
        .collect();
    // Proposed, approved, then the execution itself (the desk writes it, as the approver).
    assert_eq!(
        steps,
        vec![
            ("PROPOSE", "fiona"),
            ("APPROVE", "frank"),
            ("FORCE_FAIL", "frank")
        ]
    );
}

async fn threshold_scenario(db: TestDb) {
    let config = [("force_fail".to_string(), "100.00 CNY".to_string())].into();
    let mut env = start(db, FourEyes::parse(&config).unwrap()).await;
    let (fiona, _) = staff_of(&env.keys, "fiona", Role::Finance);
    let exec = env.exec.clone();
    let small = env
        .desk
        .propose(&fiona, draft("rf_s", 9_999), &exec)
        .await
        .unwrap();
    assert_eq!(
        (small.status, small.needs_second),
        (ProposalStatus::Executed, false)
    );
    assert_eq!(small.approver, "fiona");
    let big = env
        .desk
        .propose(&fiona, draft("rf_b", 10_000), &exec)
        .await
        .unwrap();
    assert_eq!(big.status, ProposalStatus::Pending);
    assert_eq!(exec.runs.load(Ordering::SeqCst), 1);
    // Two approvers at once: one executes, the other is told it was decided.
    let (_, frank_t) = staff_of(&env.keys, "frank", Role::Finance);
    let (_, fred_t) = staff_of(&env.keys, "fred", Role::Finance);
    let id = big.proposal_id.clone();
    let mut a = env.staff.clone();
    let mut b = env.staff.clone();
    let req = |t: &str| {
        with_token(
            pb::DecideProposalRequest {
                proposal_id: id.clone(),
                reason: "ok".into(),
            },
            t,
        )
        .unwrap()
    };
    let (ra, rb) = tokio::join!(
        a.approve_proposal(req(&frank_t)),
        b.approve_proposal(req(&fred_t))
    );
    assert_eq!(
        usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
        1,
        "{ra:?} {rb:?}"
    );
    assert_eq!(exec.runs.load(Ordering::SeqCst), 2);
    let _ = &mut env;
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(tuikuan_db::testing::TestDb::sqlite(stringify!($name))).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = tuikuan_db::testing::TestDb::postgres(stringify!($name)) {
                    super::$name(db).await;
                }
            }
        }
    };
}

both!(registry_scenario);
both!(proposals_scenario);
both!(threshold_scenario);
