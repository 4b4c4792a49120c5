//! Who may call what: the caller allow-list of every RPC, and the tower layer that enforces it.
//!
//! [`TABLE`] is the one table, keyed by full gRPC method (`/package.Service/Method`). Each RPC is
//! either [`Rule::Public`] (the merchant API: served on the public listener only, authenticated by
//! the merchant's API key in the handler) or [`Rule::Callers`], the services (by their verified
//! certificate identity, [`Principal`]) that may call it on an internal listener. Default deny:
//! a method not in the table is refused, and a test checks that every RPC of every tuikuan proto
//! has an entry. `docs/security.md` shows the same table; a test checks the two agree.
//!
//! On an internal listener under mutual TLS, [`AccessLayer`] reads the caller from the client
//! certificate the TLS handshake verified (its `spiffe://tuikuan/<name>` URI SAN), refuses a
//! caller outside the RPC's list with `PERMISSION_DENIED` and stable code `CALLER_NOT_ALLOWED`,
//! and otherwise hands the request on with a [`Caller`] extension, so that handlers need not
//! check it. The standard health and reflection services answer any verified caller.

use std::task::{Context, Poll};

use futures::future::{ready, Either, FutureExt, Map, Ready};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tuikuan_kernel::{echo, Error, ErrorCode};

use crate::tls::{principal_of, Caller, Principal};

/// Who may call one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The merchant API: public listener only, API-key authentication in the handler.
    Public,
    /// These services, on an internal listener.
    Callers(&'static [Principal]),
}

use Principal::*;

/// Staff clients: `tuikuan ctl` (and `tuikuan audit`) and the console.
const STAFF: &[Principal] = &[Ctl, Console];

macro_rules! callers {
    ($($p:ident),* $(,)?) => { Rule::Callers(&[$($p),*]) };
}

/// Every RPC and who may call it. Staff RPCs (configuration, reports, job triggers, manual
/// controls) are also subject to the operator permission checks of the service itself.
pub const TABLE: &[(&str, Rule)] = &[
    // accounting: only the clearing center posts; staff read the books.
    (
        "/tuikuan.accounting.v1.AccountingService/Post",
        callers!(Clearing),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/PostBatch",
        callers!(Clearing),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/GetPosting",
        callers!(Clearing, Ctl, Console),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/GetBalance",
        callers!(Clearing, Ctl, Console),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ListPostings",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/TrialBalance",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ListSuspenseItems",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ReserveReport",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ClearSuspenseItem",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/WriteOffSuspenseItem",
        Rule::Callers(STAFF),
    ),
    // clearing: business settles and debits; the refund center completes, reverses and returns
    // (reconciliation-driven final statuses); reconciliation posts suspense adjustments.
    (
        "/tuikuan.clearing.v1.ClearingService/UpsertMerchantPolicy",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/GetMerchantPolicy",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/SettlePayment",
        callers!(Business),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/RefundDebit",
        callers!(Business),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/ReverseDebit",
        callers!(Business, Refund),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/CompleteDebit",
        callers!(Refund),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/GetDebit",
        callers!(Business, Refund, Reconciliation, Ctl, Console),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/ReturnDebit",
        callers!(Refund),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/ReinstateDebit",
        callers!(Refund),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/ReopenDebit",
        callers!(Refund),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/PostAdjustment",
        callers!(Reconciliation),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/RunRecovery",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/SweepReserves",
        Rule::Callers(STAFF),
    ),
    // business: the merchant API is public; everything else is staff, except the refund
    // center's outcome report.
    (
        "/tuikuan.business.v1.MerchantService/CreateRefund",
        Rule::Public,
    ),
    (
        "/tuikuan.business.v1.MerchantService/GetRefund",
        Rule::Public,
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/CreateMerchant",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/UpsertChannel",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RecordPayment",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/GetTrade",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ReportRefundOutcome",
        callers!(Refund),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RunRecovery",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListRefunds",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/CreateErrorRefund",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/SetNotifyConfig",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RunNotifications",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListNotifications",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListTrades",
        Rule::Callers(STAFF),
    ),
    // refund center: business hands refunds over; the bank calls back; the payout center
    // reports payouts; reconciliation reads what was submitted and writes final statuses back.
    (
        "/tuikuan.refund.v1.RefundService/CreateRefund",
        callers!(Business),
    ),
    (
        "/tuikuan.refund.v1.RefundService/GetRefund",
        callers!(Business, Reconciliation, Ctl, Console),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ListRefunds",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundService/UpsertChannel",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ListChannels",
        callers!(Reconciliation, Ctl, Console),
    ),
    (
        "/tuikuan.refund.v1.RefundService/RunInterfaceCycle",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundService/BankCallback",
        callers!(Bank),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ListSubmitted",
        callers!(Reconciliation, Ctl, Console),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ApplyReconciliation",
        callers!(Reconciliation),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ReinstateSucceeded",
        callers!(Reconciliation),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ReopenRefund",
        callers!(Reconciliation),
    ),
    (
        "/tuikuan.refund.v1.RefundService/RunOutbox",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundService/RunPayoutDispatch",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundService/PayoutUpdate",
        callers!(Payout),
    ),
    (
        "/tuikuan.refund.v1.ErrorRefundService/CreateErrorRefund",
        callers!(Business),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/UpsertRiskRule",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListRiskRules",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListHeld",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ReleaseHold",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/RejectHold",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Suspend",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Resume",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Terminate",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ForceFail",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ConfirmOutcome",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Reinstate",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListAudit",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/GenerateBatches",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/ListBatches",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/GetBatch",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/DownloadBatch",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/MarkBatch",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/MarkRows",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/UpsertTemplate",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.refund.v1.BatchService/ListTemplates",
        Rule::Callers(STAFF),
    ),
    // payout center: the refund center creates payouts; the bank calls back.
    (
        "/tuikuan.payout.v1.PayoutService/CreatePayout",
        callers!(Refund),
    ),
    (
        "/tuikuan.payout.v1.PayoutService/GetPayout",
        callers!(Refund, Ctl, Console),
    ),
    (
        "/tuikuan.payout.v1.PayoutService/RunPayoutCycle",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.payout.v1.PayoutService/BankCallback",
        callers!(Bank),
    ),
    (
        "/tuikuan.payout.v1.PayoutService/ListPayouts",
        Rule::Callers(STAFF),
    ),
    // reconciliation: staff only (runs, uploads, discrepancies, reports).
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/RunReconciliation",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/RunReconciliationFile",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/GetRun",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListRuns",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListDiscrepancies",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/GetDiscrepancy",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ResolveDiscrepancy",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListAudit",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListSuspense",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/DailySummary",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ExportReport",
        Rule::Callers(STAFF),
    ),
    // bank subsystem: the refund center submits refunds and spreadsheets, the payout center
    // payouts; reconciliation fetches clearing files; staff read the books and tick the simulator.
    (
        "/tuikuan.bank.v1.BankService/SubmitRefund",
        callers!(Refund),
    ),
    (
        "/tuikuan.bank.v1.BankService/QueryRefund",
        callers!(Refund, Ctl, Console),
    ),
    (
        "/tuikuan.bank.v1.BankService/SubmitPayout",
        callers!(Payout),
    ),
    (
        "/tuikuan.bank.v1.BankService/QueryPayout",
        callers!(Payout, Ctl, Console),
    ),
    (
        "/tuikuan.bank.v1.BankService/SubmitFileBatch",
        callers!(Refund),
    ),
    ("/tuikuan.bank.v1.BankService/Tick", Rule::Callers(STAFF)),
    (
        "/tuikuan.bank.v1.BankService/GetClearingFile",
        callers!(Reconciliation, Ctl, Console),
    ),
    (
        "/tuikuan.bank.v1.BankService/ListTransactions",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.bank.v1.BankService/GetStatement",
        Rule::Callers(STAFF),
    ),
    // staff: the operator registry (business layer) and each service's staff desk (audit
    // trail, four-eyes proposals); the operator token decides what an operator may do.
    (
        "/tuikuan.staff.v1.OperatorService/Login",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/WhoAmI",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/CreateOperator",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ListOperators",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/SetOperatorRoles",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/SetOperatorEnabled",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ResetPassword",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ChangePassword",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ListAudit",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ListProposals",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/GetProposal",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ApproveProposal",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/RejectProposal",
        Rule::Callers(STAFF),
    ),
    (
        "/tuikuan.staff.v1.StaffService/CancelProposal",
        Rule::Callers(STAFF),
    ),
];

/// Services every listener serves to any caller it accepts (mutual TLS already verified the
/// caller's certificate on an internal listener).
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The rule of a full method path.
pub fn rule(path: &str) -> Option<Rule> {
    TABLE.iter().find(|(m, _)| *m == path).map(|(_, r)| *r)
}

fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map(|(s, _)| s)
        .unwrap_or("")
}

/// Whether `caller` may call `path` on an internal listener.
pub fn check(path: &str, caller: Option<Principal>) -> Result<Option<Caller>, Error> {
    let denied = |why: String| Error::new(ErrorCode::CallerNotAllowed, why);
    let Some(caller) = caller else {
        return Err(denied(
            "the client certificate names no tuikuan identity (spiffe://tuikuan/<name>)".into(),
        ));
    };
    if OPEN_SERVICES.contains(&service_of(path)) {
        return Ok(Some(Caller(caller)));
    }
    match rule(path) {
        Some(Rule::Callers(allowed)) if allowed.contains(&caller) => Ok(Some(Caller(caller))),
        Some(Rule::Callers(_)) => Err(denied(format!("{caller} may not call {path}"))),
        Some(Rule::Public) => Err(denied(format!(
            "{path} is served on the public listener only"
        ))),
        None => Err(denied(format!("{} is on no caller allow-list", echo(path)))),
    }
}

/// What a listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// An internal listener under mutual TLS: the caller allow-list.
    Internal,
    /// The public listener, or a plaintext internal listener (`insecure_internal = true`):
    /// nothing at this layer.
    Open,
}

/// The tower layer enforcing [`Policy`].
#[derive(Debug, Clone, Copy)]
pub struct AccessLayer {
    pub policy: Policy,
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            policy: self.policy,
        }
    }
}

/// The service [`AccessLayer`] wraps around a listener's routes.
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    policy: Policy,
}

/// The caller named by the verified client certificate of the connection, if any.
fn peer_principal<B>(request: &http::Request<B>) -> Option<Principal> {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    principal_of(certs.first()?.as_ref())
}

impl<S, B> tower::Service<http::Request<B>> for Access<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, Map<S::Future, Rewrite<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if self.policy == Policy::Open {
            return Either::Right(self.inner.call(request).map(stable_codes::<S::Error>));
        }
        let path = request.uri().path().to_string();
        match check(&path, peer_principal(&request)) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Either::Right(self.inner.call(request).map(stable_codes::<S::Error>))
            }
            Err(e) => {
                tracing::warn!(rpc = %echo(&path), error = %e.message, "call refused");
                Either::Left(ready(Ok(crate::status::to_status(&e).into_http())))
            }
        }
    }
}

/// The response rewrite of [`stable_codes`].
type Rewrite<E> = fn(
    Result<http::Response<tonic::body::Body>, E>,
) -> Result<http::Response<tonic::body::Body>, E>;

/// Gives the framework's own errors stable codes: an undecodable request (tonic answers
/// INTERNAL "failed to decode Protobuf message") becomes INVALID_ARGUMENT / `MALFORMED_REQUEST`,
/// and a request over the size limit (tonic answers OUT_OF_RANGE "… message length too large")
/// RESOURCE_EXHAUSTED / `REQUEST_TOO_LARGE`, as the gRPC status-code table prescribes. Both are
/// answered before any message, so the status is in the response headers.
fn stable_codes<E>(
    result: Result<http::Response<tonic::body::Body>, E>,
) -> Result<http::Response<tonic::body::Body>, E> {
    result.map(|mut response| {
        let headers = response.headers_mut();
        let status = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .replace("%20", " ");
        let code = match status {
            Some(13) if message.starts_with("failed to decode") => {
                Some(ErrorCode::MalformedRequest)
            }
            Some(11) if message.contains("message length too large") => {
                Some(ErrorCode::RequestTooLarge)
            }
            _ => None,
        };
        if let Some(code) = code {
            if headers.get(crate::status::ERROR_CODE_KEY).is_none() {
                headers.insert("grpc-status", http::HeaderValue::from(code.grpc_code()));
                headers.insert(
                    crate::status::ERROR_CODE_KEY,
                    http::HeaderValue::from_static(code.as_str()),
                );
            }
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC of every tuikuan proto, from the descriptor set the services are built from.
    pub(crate) fn every_rpc() -> Vec<String> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    out.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_rpc_has_exactly_one_entry_and_every_entry_is_an_rpc() {
        let rpcs = every_rpc();
        for rpc in &rpcs {
            let n = TABLE.iter().filter(|(m, _)| m == rpc).count();
            assert_eq!(
                n, 1,
                "{rpc} has {n} allow-list entries (must be exactly one)"
            );
        }
        for (m, _) in TABLE {
            assert!(rpcs.iter().any(|r| r == m), "{m} is not an RPC");
        }
    }

    #[test]
    fn money_moves_only_from_the_service_that_owns_the_step() {
        let only = |m: &str| match rule(m) {
            Some(Rule::Callers(c)) => c.to_vec(),
            other => panic!("{m}: {other:?}"),
        };
        assert_eq!(
            only("/tuikuan.accounting.v1.AccountingService/Post"),
            [Clearing]
        );
        assert_eq!(
            only("/tuikuan.clearing.v1.ClearingService/RefundDebit"),
            [Business]
        );
        assert_eq!(
            only("/tuikuan.refund.v1.RefundService/BankCallback"),
            [Bank]
        );
        assert_eq!(
            only("/tuikuan.payout.v1.PayoutService/BankCallback"),
            [Bank]
        );
        // No staff client may post, debit or deliver a callback.
        for (m, r) in TABLE {
            if let Rule::Callers(c) = r {
                let moves = [
                    "/Post",
                    "/PostBatch",
                    "Debit",
                    "BankCallback",
                    "SettlePayment",
                ]
                .iter()
                .any(|k| m.ends_with(k) && !m.ends_with("GetDebit"));
                if moves {
                    assert!(!c.contains(&Ctl) && !c.contains(&Console), "{m}");
                }
            }
        }
    }

    /// docs/security.md shows the same table, row for row.
    #[test]
    fn the_security_page_shows_this_table() {
        let page = include_str!("../../../docs/security.md");
        let rows: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("| `tuikuan."))
            .collect();
        let mut expected = Vec::new();
        for (method, rule) in TABLE {
            let who = match rule {
                Rule::Public => "public listener only (merchant API key)".to_string(),
                Rule::Callers(c) => c.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
            };
            expected.push(format!("| `{}` | {who} |", &method[1..]));
        }
        assert_eq!(
            rows, expected,
            "docs/security.md's allow-list differs from the code's"
        );
    }

    #[test]
    fn a_caller_outside_the_list_is_refused_with_a_stable_code() {
        let e = check(
            "/tuikuan.accounting.v1.AccountingService/Post",
            Some(Business),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::CallerNotAllowed);
        assert_eq!(
            e.code.grpc_code(),
            tuikuan_kernel::error::grpc::PERMISSION_DENIED
        );
        assert!(e.message.contains("business may not call"), "{}", e.message);
        assert_eq!(
            check("/tuikuan.accounting.v1.AccountingService/Post", None)
                .unwrap_err()
                .code,
            ErrorCode::CallerNotAllowed
        );
        let unknown = format!("/x.Y/{}", "Z".repeat(10_000));
        let e = check(&unknown, Some(Ctl)).unwrap_err();
        assert!(e.message.len() < 200, "bounded: {}", e.message);
        assert_eq!(
            check(
                "/tuikuan.accounting.v1.AccountingService/Post",
                Some(Clearing)
            )
            .unwrap(),
            Some(Caller(Clearing))
        );
        assert!(check("/grpc.health.v1.Health/Check", Some(Bank)).is_ok());
        assert!(check(
            "/tuikuan.business.v1.MerchantService/CreateRefund",
            Some(Ctl)
        )
        .is_err());
    }
}
