//! Running services in this process.
//!
//! [`Cluster::start`] binds every listener first (port 0 picks a free one), so that each service is
//! started knowing its peers' real addresses, then starts the services, each on its own port and
//! each talking to the others over real gRPC. `tuikuan up`, `tuikuan serve`, the demo and the
//! integration tests all start services through here.
//!
//! Every service has an internal listener (mutual TLS with its certificate from `tls.dir`, or
//! plaintext with `tls.insecure_internal`); the business layer also has the public listener of
//! the merchant API ([`Cluster::public_url`]).

use std::collections::BTreeMap;

use anyhow::Context;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tuikuan_kernel::seal::CardKey;
use tuikuan_kernel::SharedClock;
use tuikuan_proto::server::{spawn_on, ServiceHandle};
use tuikuan_proto::tls::{Principal, PublicTls, Transport};

use crate::config::{DeploymentConfig, Service};
use crate::keys::OperatorKeys;

/// The operator that [`Cluster::clients`] acts as.
pub const LOCAL_OPERATOR: &str = "local-staff";

/// The second operator of the demo, benchmarks and tests ([`Cluster::second_operator`]): approves
/// the four-eyes proposals [`LOCAL_OPERATOR`] makes.
pub const SECOND_OPERATOR: &str = "local-approver";

/// Services running in this process.
pub struct Cluster {
    config: DeploymentConfig,
    /// The deployment's `card_key`, parsed once (`None`: unset, the services' development key).
    card_key: Option<CardKey>,
    /// The operator-token keys (resolved once: the development pair is shared by every service).
    keys: OperatorKeys,
    /// What every service checks operator tokens with.
    staff: tuikuan_auth::StaffConfig,
    clock: SharedClock,
    addrs: BTreeMap<Service, String>,
    handles: BTreeMap<Service, ServiceHandle>,
    transports: BTreeMap<Service, Transport>,
    public_tls: Option<PublicTls>,
    /// The public listener's address (`host:port`), once bound.
    public_addr: Option<std::net::SocketAddr>,
    /// The public listener bound by `start`, until the business layer takes it.
    public_listener: Option<TcpListener>,
    /// The bank's notification listener: its address, and the listener bound at start (taken
    /// by the bank's first launch; a restart binds the address again).
    notify_addr: Option<std::net::SocketAddr>,
    notify_listener: Option<TcpListener>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addrs", &self.addrs)
            .field("public_addr", &self.public_addr)
            .finish()
    }
}

impl Cluster {
    /// Starts `services` (all seven when empty). Peers not started here are reached at the
    /// addresses the configuration gives.
    pub async fn start(
        config: DeploymentConfig,
        clock: SharedClock,
        services: &[Service],
    ) -> anyhow::Result<Cluster> {
        let card_key = card_key(&config)?;
        let keys = crate::keys::resolve(&config)?;
        let staff = tuikuan_auth::StaffConfig {
            auth: tuikuan_auth::StaffAuth::from_public_keys(&keys.public)
                .map_err(|e| anyhow::anyhow!("config: {}", e.message))?,
            four_eyes: config.staff_four_eyes()?,
        };
        let services: Vec<Service> = if services.is_empty() {
            Service::ALL.to_vec()
        } else {
            services.to_vec()
        };
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut transports = BTreeMap::new();
        for service in &services {
            transports.insert(*service, config.transport(service.principal())?);
        }
        if config.tls.insecure_internal {
            tracing::warn!(
                "tls.insecure_internal = true: INTERNAL LISTENERS ARE PLAINTEXT, with no client \
                 certificates and NO CALLER CHECKS; never where anything else reaches the ports"
            );
        }
        let public_tls = config.public_tls()?;
        let mut public_listener = None;
        let mut public_addr = None;
        if services.contains(&Service::Business) {
            let bind = config.public_bind_addr();
            let listener = TcpListener::bind(&bind)
                .await
                .with_context(|| format!("public listener: cannot bind {bind}"))?;
            public_addr = Some(listener.local_addr()?);
            public_listener = Some(listener);
        }
        for service in Service::ALL {
            if services.contains(&service) {
                let bind = config.bind_addr(service);
                let listener = TcpListener::bind(&bind)
                    .await
                    .with_context(|| format!("{}: cannot bind {bind}", service.name()))?;
                let addr = listener.local_addr()?;
                addrs.insert(service, format!("http://{addr}"));
                listeners.insert(service, listener);
            } else {
                addrs.insert(service, config.peer_addr(service));
            }
        }
        // The notification listener only serves real channels; without one, nothing is bound.
        let real_channels = config
            .bank
            .channels
            .values()
            .any(|c| c.connector() != "simulator");
        let (notify_addr, notify_listener) = if services.contains(&Service::Bank) && real_channels {
            let bind = format!("{}:{}", config.host, config.bank.notify_port);
            let listener = TcpListener::bind(&bind)
                .await
                .with_context(|| format!("bank notification listener: cannot bind {bind}"))?;
            (Some(listener.local_addr()?), Some(listener))
        } else {
            (None, None)
        };
        // Explicit peer overrides win over local addresses only for services not run here.
        let mut cluster = Cluster {
            config,
            card_key,
            keys,
            staff,
            clock,
            addrs,
            handles: BTreeMap::new(),
            transports,
            public_tls,
            public_addr,
            public_listener,
            notify_addr,
            notify_listener,
        };
        for (service, listener) in listeners {
            cluster.launch(service, listener)?;
        }
        Ok(cluster)
    }

    fn launch(&mut self, service: Service, listener: TcpListener) -> anyhow::Result<()> {
        let public = if service == Service::Business {
            Some(match self.public_listener.take() {
                Some(l) => l,
                None => rebind(self.public_addr, "public listener")?,
            })
        } else {
            None
        };
        let notify = match (service, self.notify_listener.take()) {
            (Service::Bank, Some(listener)) => Some(listener),
            (Service::Bank, None) if self.notify_addr.is_some() => {
                Some(rebind(self.notify_addr, "bank notification listener")?)
            }
            _ => None,
        };
        let env = ServiceEnv {
            config: self.config.clone(),
            card_key: self.card_key.clone(),
            clock: self.clock.clone(),
            addrs: self.addrs.clone(),
            transport: self.transports[&service].clone(),
            public_tls: self.public_tls.clone(),
            public,
            staffing: Staffing {
                staff: self.staff.clone(),
                signing_key: self.keys.signing.clone(),
            },
            notify,
            notify_url: self.bank_notify_url(),
        };
        let handle = spawn_on(listener, move |listener, shutdown| {
            run_service(service, env, listener, shutdown)
        })
        .with_context(|| format!("{}: cannot start", service.name()))?;
        tracing::info!(service = service.name(), addr = %handle.addr, "started");
        self.handles.insert(service, handle);
        Ok(())
    }

    /// The base URL of the bank's notification listener as channels reach it
    /// (`notify_public_url`, else `http://<listener address>`); `None` when the bank does not run
    /// here or has no real channel.
    pub fn bank_notify_url(&self) -> Option<String> {
        let addr = self.notify_addr?;
        Some(
            self.config
                .bank
                .notify_public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
        )
    }

    /// The address (`http://host:port`) of a service's internal listener.
    pub fn url(&self, service: Service) -> String {
        self.addrs.get(&service).cloned().unwrap_or_default()
    }

    /// The public listener (the merchant API): `https://…` when it has a certificate.
    pub fn public_url(&self) -> String {
        match self.public_addr {
            Some(addr) => {
                let scheme = if self.public_tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            }
            None => self.config.public_url(),
        }
    }

    /// Clients of every service as the staff client `ctl`, with its certificate, acting as the
    /// operator [`LOCAL_OPERATOR`] with every role (a token signed with the deployment's key):
    /// for the demo, benchmarks and tests, which run staff steps of every kind.
    pub fn clients(&self) -> anyhow::Result<crate::clients::Clients> {
        let token = self.operator_token(LOCAL_OPERATOR, tuikuan_auth::Role::ALL)?;
        self.clients_as(Principal::Ctl)?.with_token(&token)
    }

    /// [`Cluster::clients`] acting as [`SECOND_OPERATOR`] (every role): the second pair of eyes.
    pub fn second_operator(&self) -> anyhow::Result<crate::clients::Clients> {
        let token = self.operator_token(SECOND_OPERATOR, tuikuan_auth::Role::ALL)?;
        self.clients_as(Principal::Ctl)?.with_token(&token)
    }

    /// A token for operator `name` with `roles`, signed with the deployment's signing key.
    pub fn operator_token(
        &self,
        name: &str,
        roles: &[tuikuan_auth::Role],
    ) -> anyhow::Result<String> {
        self.keys.token(name, roles)
    }

    /// Clients of every service as `identity` (tests and tools that stand in for a service).
    pub fn clients_as(&self, identity: Principal) -> anyhow::Result<crate::clients::Clients> {
        let transport = self.config.transport(identity)?;
        let public_ca = match &self.public_tls {
            Some(_) => self.config.public_ca()?,
            None => None,
        };
        crate::clients::Clients::connect(
            &transport,
            |s| self.url(s),
            &self.public_url(),
            public_ca.as_deref(),
        )
    }

    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// The deployment's operator-token keys (tests, the demo and chaos mint tokens with them).
    pub fn operator_keys(&self) -> &OperatorKeys {
        &self.keys
    }

    pub fn config(&self) -> &DeploymentConfig {
        &self.config
    }

    pub fn running(&self) -> Vec<Service> {
        self.handles.keys().copied().collect()
    }

    /// Stops one service gracefully.
    pub async fn stop_service(&mut self, service: Service) -> anyhow::Result<()> {
        if let Some(handle) = self.handles.remove(&service) {
            handle
                .stop()
                .await
                .with_context(|| format!("{} stopped with an error", service.name()))?;
        }
        Ok(())
    }

    /// Starts a stopped service again on the same address and database.
    pub async fn restart_service(&mut self, service: Service) -> anyhow::Result<()> {
        self.stop_service(service).await?;
        let addr = self.url(service);
        let bind = addr.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind(&bind)
            .await
            .with_context(|| format!("{}: cannot bind {bind} again", service.name()))?;
        self.launch(service, listener)
    }

    /// Kills a service without a graceful shutdown (as a crash would) and starts it again on the
    /// same address and database.
    pub async fn crash_and_restart(&mut self, service: Service) -> anyhow::Result<()> {
        if let Some(handle) = self.handles.remove(&service) {
            handle.kill().await;
        }
        let addr = self.url(service);
        let bind = addr.trim_start_matches("http://").to_string();
        // The killed task releases its listener when it is dropped; retry the bind briefly.
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(&bind).await {
                Ok(listener) => return self.launch(service, listener),
                Err(e) => {
                    last = Some(e);
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(anyhow::anyhow!(
            "{}: cannot bind {bind} again: {last:?}",
            service.name()
        ))
    }

    /// Runs until `shutdown` completes, then stops every service gracefully ([`Self::shutdown`]).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        shutdown.await;
        self.shutdown().await
    }

    /// Stops every service at once: each turns NOT_SERVING, drains its requests in flight and
    /// lets its job finish the current step (bounded by `tuikuan_proto::server::DRAIN_TIME`).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let stops =
            std::mem::take(&mut self.handles)
                .into_iter()
                .map(|(service, handle)| async move {
                    handle
                        .stop()
                        .await
                        .with_context(|| format!("{} stopped with an error", service.name()))
                });
        let results = futures::future::join_all(stops).await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(())
    }
}

/// The listeners of a running cluster, one line each, public first: what `tuikuan up` and
/// `tuikuan serve` print.
pub fn listener_table(cluster: &Cluster) -> String {
    let mut out = String::new();
    let running = cluster.running();
    if running.contains(&Service::Business) {
        out.push_str(&format!(
            "{:<9} {:<15} {:<28} {}\n",
            "public",
            "business",
            cluster.public_url(),
            "tuikuan.business.v1.MerchantService (merchants, API key)"
        ));
    }
    if let (Some(addr), true) = (cluster.notify_addr, running.contains(&Service::Bank)) {
        out.push_str(&format!(
            "{:<9} {:<15} {:<28} {}\n",
            "public",
            "bank-notify",
            format!("http://{addr}"),
            "POST /notify/<CHANNEL> (payment channels, channel signatures)"
        ));
    }
    let internal = if cluster.config().tls.insecure_internal {
        "PLAINTEXT, no caller checks (insecure_internal)"
    } else {
        "mutual TLS, caller allow-list"
    };
    for s in running {
        out.push_str(&format!(
            "{:<9} {:<15} {:<28} {internal}\n",
            "internal",
            s.name(),
            cluster.url(s).trim_start_matches("http://")
        ));
    }
    out
}

/// The deployment's card key, shared by the business layer and the refund center: unset or blank
/// is `None` (each service then falls back to the public development key, loudly); anything else
/// must be 64 hex digits — an invalid key stops startup rather than silently using the
/// development key.
fn card_key(config: &DeploymentConfig) -> anyhow::Result<Option<CardKey>> {
    match config.card_key.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => CardKey::from_hex(text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("config: {} (or TUIKUAN_CARD_KEY)", e.message)),
    }
}

/// Staff security handed to each service.
#[derive(Clone)]
struct Staffing {
    staff: tuikuan_auth::StaffConfig,
    /// Only the business layer receives it.
    signing_key: Option<String>,
}

/// Binds `addr` again (a restarted service keeps its public or notification address). The port
/// was released with the stopped service; a crash releases it when its task is dropped, so retry
/// briefly.
fn rebind(addr: Option<std::net::SocketAddr>, what: &str) -> anyhow::Result<TcpListener> {
    let addr = addr.with_context(|| format!("{what}: never bound"))?;
    let mut last = None;
    for _ in 0..100 {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(TcpListener::from_std(l)?);
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Err(anyhow::anyhow!(
        "{what}: cannot bind {addr} again: {last:?}"
    ))
}

/// What a service needs from the deployment to start.
struct ServiceEnv {
    config: DeploymentConfig,
    card_key: Option<CardKey>,
    staffing: Staffing,
    clock: SharedClock,
    addrs: BTreeMap<Service, String>,
    transport: Transport,
    public_tls: Option<PublicTls>,
    /// The business layer's public listener.
    public: Option<TcpListener>,
    /// The bank's notification listener (real channels only), and its URL as channels reach it.
    notify: Option<TcpListener>,
    notify_url: Option<String>,
}

fn run_service(
    service: Service,
    env: ServiceEnv,
    listener: TcpListener,
    shutdown: BoxFuture<'static, ()>,
) -> BoxFuture<'static, Result<(), tuikuan_kernel::Error>> {
    let ServiceEnv {
        config,
        card_key,
        clock,
        addrs,
        transport,
        public_tls,
        public,
        staffing,
        notify,
        notify_url,
    } = env;
    let db = config.database_url(service);
    let jobs = config.job_interval();
    // Validated when the configuration was loaded; an unreadable calendar falls back to weekends.
    let calendar = config.calendar().unwrap_or_default();
    let peer = |s: Service| addrs.get(&s).cloned().unwrap_or_default();
    match service {
        Service::Accounting => {
            let cfg = tuikuan_accounting::Config {
                database_url: db,
                clock,
                job_interval: jobs,
                transport,
                staff: staffing.staff,
            };
            Box::pin(tuikuan_accounting::serve(cfg, listener, shutdown))
        }
        Service::Clearing => {
            let cfg = tuikuan_clearing::Config {
                database_url: db,
                clock,
                accounting_addr: peer(Service::Accounting),
                job_interval: jobs,
                transport,
                staff: staffing.staff,
            };
            Box::pin(tuikuan_clearing::serve(cfg, listener, shutdown))
        }
        Service::Business => {
            let merchant_notify = match config.notify_settings() {
                Ok(n) => n,
                Err(e) => {
                    let e = tuikuan_kernel::Error::field("notify", format!("{e:#}"));
                    return Box::pin(async move { Err(e) });
                }
            };
            let cfg = tuikuan_business::Config {
                database_url: db,
                clock,
                clearing_addr: peer(Service::Clearing),
                refund_addr: peer(Service::Refund),
                job_interval: jobs,
                // The same key as the refund center's, already validated by `Cluster::start`.
                card_key: config
                    .card_key
                    .as_deref()
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string(),
                transport,
                public_tls,
                staff: staffing.staff,
                operators: tuikuan_business::OperatorsConfig {
                    signing_key: staffing.signing_key,
                    token_ttl_secs: config.operator_token_ttl_secs,
                    bootstrap_admin: config
                        .bootstrap_admin
                        .clone()
                        .zip(config.bootstrap_admin_password_hash.clone()),
                },
                notify: merchant_notify,
            };
            let Some(public) = public else {
                return Box::pin(async {
                    Err(tuikuan_kernel::Error::internal(
                        "business: no public listener",
                    ))
                });
            };
            Box::pin(tuikuan_business::serve(cfg, listener, public, shutdown))
        }
        Service::Refund => {
            let cfg = tuikuan_refund::Config {
                database_url: db,
                clock,
                clearing_addr: peer(Service::Clearing),
                bank_addr: peer(Service::Bank),
                business_addr: peer(Service::Business),
                payout_addr: peer(Service::Payout),
                job_interval: jobs,
                batch_size: 200,
                calendar,
                card_key,
                transport,
                staff: staffing.staff,
            };
            Box::pin(tuikuan_refund::serve(cfg, listener, shutdown))
        }
        Service::Payout => {
            let cfg = tuikuan_payout::Config {
                database_url: db,
                clock,
                bank_addr: peer(Service::Bank),
                refund_addr: Some(peer(Service::Refund)),
                job_interval: jobs,
                transport,
                staff: staffing.staff,
            };
            Box::pin(tuikuan_payout::serve(cfg, listener, shutdown))
        }
        Service::Reconciliation => {
            let cfg = tuikuan_reconciliation::Config {
                database_url: db,
                clock,
                bank_addr: peer(Service::Bank),
                refund_addr: peer(Service::Refund),
                clearing_addr: peer(Service::Clearing),
                job_interval: jobs,
                channels: config.reconciliation_channels.clone(),
                channel_formats: config
                    .reconciliation_formats
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                suspense_days: config
                    .suspense_days
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
                transport,
                staff: staffing.staff,
            };
            Box::pin(tuikuan_reconciliation::serve(cfg, listener, shutdown))
        }
        Service::Bank => {
            let sim = &config.bank;
            let mut cfg = tuikuan_bank::Config::default_for(db, clock, transport);
            cfg.staff = staffing.staff;
            cfg.seed = sim.seed;
            cfg.delay_min_secs = sim.delay_min_secs;
            cfg.delay_max_secs = sim.delay_max_secs;
            cfg.fail_per_mille = sim.fail_per_mille;
            cfg.duplicate_callback_per_mille = sim.duplicate_callback_per_mille;
            cfg.out_of_order_per_mille = sim.out_of_order_per_mille;
            cfg.return_per_mille = sim.return_per_mille;
            cfg.return_delay_secs = sim.return_delay_secs;
            cfg.refund_callback_addr = Some(peer(Service::Refund));
            cfg.payout_callback_addr = Some(peer(Service::Payout));
            cfg.clearing_dir = Some(config.data_dir.join("clearing"));
            cfg.clearing_formats = sim.clearing_formats.clone().into_iter().collect();
            cfg.job_interval = jobs;
            cfg.channels = sim.channels.clone();
            cfg.notify_base_url = notify_url;
            cfg.channel_query_interval_secs = sim.channel_query_interval_secs;
            Box::pin(tuikuan_bank::serve_with_notifications(
                cfg, listener, notify, shutdown,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(key: Option<&str>) -> DeploymentConfig {
        DeploymentConfig {
            card_key: key.map(str::to_string),
            ..DeploymentConfig::default()
        }
    }

    #[test]
    fn the_card_key_is_shared_and_an_invalid_one_stops_startup() {
        assert_eq!(card_key(&with_key(None)).unwrap(), None);
        assert_eq!(card_key(&with_key(Some("  "))).unwrap(), None);
        let hex = "ab".repeat(32);
        assert_eq!(
            card_key(&with_key(Some(&format!(" {hex}\n")))).unwrap(),
            Some(CardKey::from_bytes([0xab; 32]))
        );
        for bad in ["abc", "zz", &"ab".repeat(31)] {
            let e = card_key(&with_key(Some(bad))).unwrap_err().to_string();
            assert!(e.contains("card_key"), "{e}");
        }
    }
}
