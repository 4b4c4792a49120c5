//! The tonic side: every service wraps each of its gRPC servers in [`Guarded`], which looks the
//! request's path up in the RPC table ([`crate::domain::rpcs`]) before the handler runs:
//!
//! - staff RPCs need `authorization: Bearer <operator token>`: the token's signature and expiry
//!   are verified with the service's own configured public keys, and the operator's roles are
//!   checked against the permission table. No or a bad token: `UNAUTHENTICATED`; a role the table
//!   does not allow: `PERMISSION_DENIED`. The verified operator goes into the request's extensions
//!   ([`staff`] reads it back in the handler, for the finer checks and the audit trail);
//! - service-to-service, merchant and login RPCs pass (mutual TLS, the API key and the password
//!   guard those); a staff tool calling a read that services call too is checked when it sends a
//!   token;
//! - a path the table does not know is refused (fail closed);
//! - headers that merely claim an identity (`x-operator-id`, `x-operator-role`) are dropped on
//!   every request: identity comes from the verified token only.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tuikuan_kernel::{Error, ErrorCode, Result};
use tuikuan_proto::status::to_status;
use tuikuan_proto::tls::Principal;

use crate::domain::{guard_of, Action, Guard, Operator};
use crate::token::TokenVerifier;

/// Headers older deployments used to claim an operator identity; always removed.
pub const LEGACY_IDENTITY_HEADERS: &[&str] = &["x-operator-id", "x-operator-role"];

/// The authenticated staff caller of a request, put there by [`Guarded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub operator: Operator,
    /// The RPC path, e.g. `/tuikuan.refund.v1.RefundControlService/ForceFail`.
    pub rpc: String,
}

impl Staff {
    /// `PERMISSION_DENIED` unless the operator may take `action` (a finer check than the
    /// guard's, when the request decides which action it is).
    pub fn authorize(&self, action: Action) -> Result<()> {
        self.operator.authorize(action)
    }
}

/// How a service checks operator tokens: the public keys from its configuration.
#[derive(Clone, Debug, Default)]
pub struct StaffAuth {
    verifier: Arc<TokenVerifier>,
    /// Tests of one service only: a staff call without a token acts as [`TESTER`].
    untokened_tester: bool,
}

/// The operator a service's own tests act as when they send no token ([`StaffAuth::for_tests`]);
/// not a name the registry accepts, so no login's token carries it.
pub const TESTER: &str = "<tester>";

impl StaffAuth {
    pub fn new(verifier: TokenVerifier) -> StaffAuth {
        StaffAuth {
            verifier: Arc::new(verifier),
            untokened_tester: false,
        }
    }

    /// For a service's own tests (feature `testing`, never in a deployment: no configuration
    /// reaches it): tokens are verified with `keys` when sent, and a staff call without one acts
    /// as the operator [`TESTER`] with every role, so that tests not about staff security need
    /// no token plumbing.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests<S: AsRef<str>>(keys: &[S]) -> Result<StaffAuth> {
        Ok(StaffAuth {
            verifier: Arc::new(TokenVerifier::new(keys)?),
            untokened_tester: true,
        })
    }

    /// Trusting these `k4.public.…` keys.
    pub fn from_public_keys<S: AsRef<str>>(keys: &[S]) -> Result<StaffAuth> {
        Ok(StaffAuth::new(TokenVerifier::new(keys)?))
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Wraps a gRPC server so that its staff RPCs need an operator token.
    pub fn guard<S>(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            auth: self.clone(),
            desk: None,
        }
    }

    /// [`StaffAuth::guard`], and every audited staff call that answers OK is written to `desk`'s
    /// audit trail ([`crate::recorder`]).
    pub fn guard_audited<S>(&self, inner: S, desk: &crate::staff::Desk) -> Guarded<S> {
        Guarded {
            inner,
            auth: self.clone(),
            desk: Some(desk.clone()),
        }
    }

    /// What the guard decides for a request to `path` with these headers, from a service:
    /// `Ok(Some)` for an authenticated staff caller, `Ok(None)` for a caller that needs no token.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Staff>> {
        self.check_from(path, headers, false)
    }

    /// [`StaffAuth::check`], where `staff_tool` says that mutual TLS verified the caller as a staff
    /// client (`ctl`, `console`): a staff tool needs an operator token for every RPC but the
    /// login, also for the reads that services make without one.
    pub fn check_from(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        staff_tool: bool,
    ) -> Result<Option<Staff>> {
        let guard = guard_of(path).ok_or_else(|| {
            Error::new(
                ErrorCode::PermissionDenied,
                "this RPC is not in the permission table; refused",
            )
        })?;
        let token = bearer(headers)?;
        let staff = |actions: &[Action], token: Option<&str>| -> Result<Option<Staff>> {
            if token.is_none() && self.untokened_tester {
                return Ok(Some(Staff {
                    operator: Operator {
                        name: TESTER.to_string(),
                        roles: crate::domain::Role::ALL.to_vec(),
                    },
                    rpc: path.to_string(),
                }));
            }
            let token = token.ok_or_else(|| {
                Error::new(
                    ErrorCode::Unauthenticated,
                    "an operator token is required: authorization: Bearer <token> \
                     (tuikuan ctl login)",
                )
            })?;
            let operator = self.verifier.verify(token, now_secs())?;
            if !actions.is_empty() {
                operator.authorize_any(actions)?;
            }
            Ok(Some(Staff {
                operator,
                rpc: path.to_string(),
            }))
        };
        match guard {
            Guard::Merchant | Guard::Login => Ok(None),
            Guard::Service if staff_tool => staff(&[], token),
            Guard::Service => Ok(None),
            Guard::SignedIn => staff(&[], token),
            Guard::Staff(actions) => staff(actions, token),
            Guard::ServiceOrStaff(actions) => match token {
                Some(t) => staff(actions, Some(t)),
                None if staff_tool => staff(actions, None),
                None => Ok(None),
            },
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The bearer token of the `authorization` header, if any.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Error::new(
            ErrorCode::Unauthenticated,
            "authorization header is not ASCII",
        )
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorCode::Unauthenticated,
                "authorization header must be \"Bearer <operator token>\"",
            )
        })?;
    Ok(Some(token))
}

/// A gRPC server behind the staff guard.
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    auth: StaffAuth,
    desk: Option<crate::staff::Desk>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower_service::Service<http::Request<Body>> for Guarded<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        for h in LEGACY_IDENTITY_HEADERS {
            req.headers_mut().remove(*h);
        }
        let path = req.uri().path().to_string();
        let staff_tool = req
            .extensions()
            .get::<tuikuan_proto::tls::Caller>()
            .is_some_and(|c| matches!(c.0, Principal::Ctl | Principal::Console));
        let mut audit = None;
        match self.auth.check_from(&path, req.headers(), staff_tool) {
            Ok(Some(staff)) => {
                let actions = guard_of(&path).map(Guard::actions).unwrap_or_default();
                if let (Some(desk), Some(action)) =
                    (&self.desk, crate::recorder::audited_action(&staff, actions))
                {
                    audit = Some((desk.clone(), staff.clone(), action));
                }
                req.extensions_mut().insert(staff);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(rpc = %path, code = %e.code, error = %e.message, "staff call refused");
                let response = to_status(&e).into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        // The clone that was polled ready serves this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        match audit {
            Some((desk, staff, action)) => Box::pin(crate::recorder::record(
                desk,
                staff,
                action,
                req,
                move |req| inner.call(req),
            )),
            None => Box::pin(inner.call(req)),
        }
    }
}

/// The staff caller the guard authenticated, for a handler; `UNAUTHENTICATED` when there is none
/// (a handler reached without the guard fails closed).
pub fn staff<T>(request: &tonic::Request<T>) -> Result<Staff, Status> {
    request.extensions().get::<Staff>().cloned().ok_or_else(|| {
        to_status(&Error::new(
            ErrorCode::Unauthenticated,
            "an operator token is required: authorization: Bearer <token> (tuikuan ctl login)",
        ))
    })
}

/// The name of the operator acting in `request` (from the verified token). A request field that
/// also names an operator (`field`, older clients set it) must be empty or the same name;
/// otherwise `INVALID_ARGUMENT`, so that nobody acts under another's name.
pub fn acting_name<T>(
    request: &tonic::Request<T>,
    claimed: &str,
    field: &str,
) -> Result<String, Status> {
    let staff = staff(request)?;
    let name = staff.operator.name;
    if name == TESTER && !claimed.trim().is_empty() {
        // A service's own tests without tokens ([`StaffAuth::for_tests`]) name the operator.
        return Ok(claimed.trim().to_string());
    }
    if !claimed.trim().is_empty() && claimed.trim() != name {
        return Err(to_status(&Error::field(
            field,
            "must be empty or the operator of the token (the identity that counts)",
        )));
    }
    Ok(name)
}

/// The staff caller if a staff tool made the call (reads services call too), else `None`.
pub fn staff_if_any<T>(request: &tonic::Request<T>) -> Option<Staff> {
    request.extensions().get::<Staff>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use crate::testing::TestKeys;

    fn headers(token: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_guard_decides_by_the_rpc_table() {
        let keys = TestKeys::new();
        let auth = keys.auth();
        let force_fail = "/tuikuan.refund.v1.RefundControlService/ForceFail";
        let e = auth.check(force_fail, &headers(None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        let ops = keys.token("olivia", &[Role::Ops]);
        let e = auth.check(force_fail, &headers(Some(&ops))).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        let fin = keys.token("fiona", &[Role::Finance]);
        let staff = auth
            .check(force_fail, &headers(Some(&fin)))
            .unwrap()
            .unwrap();
        assert_eq!(staff.operator.name, "fiona");
        assert_eq!(staff.rpc, force_fail);
        // Service-to-service and merchant calls need no operator token.
        let submit = "/tuikuan.bank.v1.BankService/SubmitRefund";
        assert_eq!(auth.check(submit, &headers(None)).unwrap(), None);
        // A read both use: a service without a token, a staff tool with a valid one.
        let get = "/tuikuan.refund.v1.RefundService/GetRefund";
        assert_eq!(auth.check(get, &headers(None)).unwrap(), None);
        assert!(auth.check(get, &headers(Some(&ops))).unwrap().is_some());
        assert_eq!(
            auth.check(get, &headers(Some("v4.public.junk")))
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );
        // Unknown paths are refused; tokens from another key are refused.
        assert_eq!(
            auth.check("/tuikuan.refund.v1.RefundService/Drop", &headers(None))
                .unwrap_err()
                .code,
            ErrorCode::PermissionDenied
        );
        let other = TestKeys::new().token("fiona", &[Role::Finance]);
        assert_eq!(
            auth.check(force_fail, &headers(Some(&other)))
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );
        let mut basic = http::HeaderMap::new();
        basic.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(
            auth.check(force_fail, &basic).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }
}

/// The operator-token table agrees with the caller allow-list (`tuikuan_proto::access`); kept out
/// of the pure domain module because it reads the RPC layer's table.
#[cfg(test)]
mod agrees_with_access {
    /// An RPC whose caller allow-list names a service is not staff-only: the service calls it
    /// without an operator token.
    #[test]
    fn what_services_call_needs_no_token() {
        use tuikuan_proto::access::{rule, Rule};
        use tuikuan_proto::tls::Principal;
        for (path, guard) in crate::domain::RPCS {
            if let Some(Rule::Callers(callers)) = rule(path) {
                let by_a_service = callers
                    .iter()
                    .any(|p| !matches!(p, Principal::Ctl | Principal::Console));
                if by_a_service {
                    assert!(
                        !matches!(
                            guard,
                            crate::domain::Guard::Staff(_) | crate::domain::Guard::SignedIn
                        ),
                        "{path}: a service calls it, but it needs an operator token"
                    );
                }
            }
        }
    }
}
