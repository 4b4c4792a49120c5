//! A test driver's channel: one client of one service that plays every caller a test needs,
//! over mutual TLS with the test PKI ([`crate::pki::testing`]).
//!
//! A service's own integration tests stand in for its peers and its staff at once (the clearing
//! center's tests settle as the business layer, complete as the refund center and set policies as
//! `ctl`). [`AnyCaller`] sends each request under the certificate of a caller that the allow-list
//! ([`crate::access::TABLE`]) admits for its RPC ([`caller_for`]), so those tests run over the same
//! mutual TLS and caller checks as a deployment; which caller is refused what is the business of
//! the allow-list's own tests (tests/it/trust.rs) and of [`crate::pki::test_channel`], which calls
//! as one fixed identity.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

use crate::access::{rule, Rule};
use crate::tls::Principal;

/// Who plays the caller of the RPC at `path`: `ctl` when the request carries an operator token
/// (`authorization`) and staff may call the RPC, else the first caller of its allow-list entry;
/// `ctl` for what the table leaves open to any verified caller (health, reflection) and for
/// paths it does not know (refused whoever calls).
pub fn caller_for(path: &str, has_token: bool) -> Principal {
    match rule(path) {
        Some(Rule::Callers(callers)) => {
            if has_token && callers.contains(&Principal::Ctl) {
                Principal::Ctl
            } else {
                callers.first().copied().unwrap_or(Principal::Ctl)
            }
        }
        Some(Rule::Public) | None => Principal::Ctl,
    }
}

/// A lazily connecting channel to one service for each identity, picked per request by
/// [`caller_for`]. Use it wherever a `tonic` client takes a `Channel`.
#[derive(Clone)]
pub struct AnyCaller {
    channels: Arc<BTreeMap<Principal, Channel>>,
}

impl std::fmt::Debug for AnyCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyCaller")
    }
}

impl AnyCaller {
    /// Channels to `peer` at `addr` as every identity of the test PKI.
    pub fn new(peer: Principal, addr: &str) -> AnyCaller {
        let channels = Principal::ALL
            .into_iter()
            .map(|p| (p, crate::pki::test_channel(p, peer, addr)))
            .collect();
        AnyCaller {
            channels: Arc::new(channels),
        }
    }
}

impl Service<http::Request<Body>> for AnyCaller {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen channel's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let has_token = request.headers().contains_key(http::header::AUTHORIZATION);
        let caller = caller_for(request.uri().path(), has_token);
        let mut channel = self.channels[&caller].clone();
        Box::pin(async move {
            futures::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            channel.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rpc_is_called_by_a_caller_its_entry_admits() {
        assert_eq!(
            caller_for("/tuikuan.accounting.v1.AccountingService/Post", false),
            Principal::Clearing
        );
        assert_eq!(
            caller_for(
                "/tuikuan.clearing.v1.ClearingService/UpsertMerchantPolicy",
                false
            ),
            Principal::Ctl
        );
        // A read that services and staff both make: staff when the request carries a token.
        let get = "/tuikuan.clearing.v1.ClearingService/GetDebit";
        assert_eq!(caller_for(get, false), Principal::Business);
        assert_eq!(caller_for(get, true), Principal::Ctl);
        // A token changes nothing where staff may not call.
        assert_eq!(
            caller_for("/tuikuan.refund.v1.RefundService/BankCallback", true),
            Principal::Bank
        );
        assert_eq!(
            caller_for("/grpc.health.v1.Health/Check", false),
            Principal::Ctl
        );
        for (path, r) in crate::access::TABLE {
            if let Rule::Callers(callers) = r {
                for token in [false, true] {
                    assert!(callers.contains(&caller_for(path, token)), "{path}");
                }
            }
        }
    }
}
