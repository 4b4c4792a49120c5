//! Serving a tuikuan service on a listener the caller bound (port 0 in tests) until `shutdown`
//! resolves: its routes, the standard gRPC health service (SERVING for each service of the
//! listener and for the server as a whole) and gRPC reflection describing exactly the services of
//! the listener.
//!
//! Two kinds of listener (see `docs/security.md`):
//! - [`serve`]: an **internal** listener, under mutual TLS with the caller allow-list
//!   ([`crate::access`]) unless the deployment chose plaintext ([`Transport::Insecure`]);
//! - [`serve_public`]: the **public** listener of the merchant API, TLS when a server certificate
//!   is configured, no client certificates.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tuikuan_kernel::Error;

use crate::access::{AccessLayer, Policy};
use crate::tls::{PublicTls, Transport};

/// How long a stopping service waits for requests in flight and for its job's current step
/// (see [`crate::jobs`]) before it closes them.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest request a listener decodes (a reconciliation upload raises it for its service).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Serves `routes` on an internal listener until `shutdown` completes: mutual TLS as the
/// transport's identity with the caller allow-list, or plaintext (loudly) for
/// [`Transport::Insecure`].
///
/// `names` are the fully qualified gRPC service names in `routes` (`XServer::<T>::NAME`); each is
/// reported SERVING on the health service and listed by reflection.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    routes: Routes,
    names: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tls, policy) = match transport.server_tls() {
        Some(tls) => (Some(tls), Policy::Internal),
        None => {
            tracing::warn!(
                addr = ?listener.local_addr().ok(),
                services = ?names,
                "INSECURE INTERNAL LISTENER: plaintext, no client certificates, NO CALLER CHECKS \
                 (insecure_internal = true); anyone who reaches this port can call every RPC"
            );
            (None, Policy::Open)
        }
    };
    serve_with(listener, tls, policy, routes, names, shutdown).await
}

/// Serves `routes` (the merchant API) on the public listener: TLS with `tls` when given, else
/// plaintext (for a TLS-terminating proxy in front; logged at start).
pub async fn serve_public(
    listener: TcpListener,
    tls: Option<&PublicTls>,
    routes: Routes,
    names: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if tls.is_none() {
        tracing::warn!(
            addr = ?listener.local_addr().ok(),
            "public listener without TLS: put a TLS-terminating proxy in front, or set \
             tls.public_cert and tls.public_key"
        );
    }
    let tls = tls.map(PublicTls::server_tls);
    serve_with(listener, tls, Policy::Open, routes, names, shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    policy: Policy,
    routes: Routes,
    names: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let descriptors = crate::reflection::descriptor_set_of(names)?;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::internal(format!("reflection: {e}")))?;
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, services = ?names, tls = tls.is_some(), ?policy, "serving");
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::field("tls", format!("server certificate: {e}")))?;
    }
    // A stop turns health NOT_SERVING first (load balancers take the listener out), then stops
    // accepting and lets requests in flight finish, for at most DRAIN_TIME.
    let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let services = names.join(",");
    let stop = async move {
        shutdown.await;
        for name in names.iter().map(String::as_str).chain([""]) {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        tracing::info!(?addr, "stopping: draining requests in flight");
        let _ = draining_tx.send(());
    };
    let server = builder
        .layer(AccessLayer { policy })
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    tokio::pin!(server);
    let overrun = async move {
        if draining.await.is_ok() {
            tokio::time::sleep(DRAIN_TIME).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = &mut server => served.map_err(|e| Error::internal(format!("server failed: {e}"))),
        () = overrun => {
            tracing::warn!(?addr, %services, drain = ?DRAIN_TIME, "requests still in flight after the drain time; closed");
            Ok(())
        }
    }
}

/// A service running in this process, started by [`spawn`].
#[derive(Debug)]
pub struct ServiceHandle {
    pub addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), Error>>,
}

impl ServiceHandle {
    /// `http://127.0.0.1:port`, for clients and peers.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.join)
            .await
            .map_err(|e| Error::internal(format!("service task failed: {e}")))?
    }

    /// Stops the task at once, without a graceful shutdown (a crash, for tests), and waits until
    /// it is gone (its listener closed).
    pub async fn kill(self) {
        self.join.abort();
        let _ = self.join.await;
    }
}

/// Binds `bind` (`127.0.0.1:0` for a free port) and runs `start(listener, shutdown)` on a task.
pub async fn spawn<F, Fut>(bind: &str, start: F) -> Result<ServiceHandle, Error>
where
    F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| Error::internal(format!("cannot bind {bind}: {e}")))?;
    spawn_on(listener, start)
}

/// Runs `start(listener, shutdown)` on a task, on a listener the caller bound already (so that
/// peers' addresses are known before any service starts).
pub fn spawn_on<F, Fut>(listener: TcpListener, start: F) -> Result<ServiceHandle, Error>
where
    F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("no local address: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
        let _ = rx.await;
    });
    let join = tokio::spawn(start(listener, shutdown));
    Ok(ServiceHandle {
        addr,
        shutdown: Some(tx),
        join,
    })
}
