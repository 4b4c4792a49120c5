//! The environment every refund-center integration test starts (`mod common;` in each file):
//! accounting and clearing (the debit the refund center checks, completes and reverses), the bank
//! simulator (or nothing at the bank's address), the payout center when the scenario needs it,
//! and the refund center itself, all in-process over real gRPC on one manual clock. The peers run
//! on SQLite; the refund center on the database the scenario gives (SQLite or PostgreSQL). The
//! business layer's address is left unreachable on purpose: its notifications stay queued.

// Each test file is its own crate and uses a different part of this module.
#![allow(dead_code)]

// Every service runs under mutual TLS with the test PKI; the drivers play several callers
// (business, bank, staff) through `AnyCaller`, each request under the certificate of a caller the
// allow-list admits for it.
use std::sync::Arc;
use tuikuan_proto::driver::AnyCaller;
use tuikuan_proto::pki::test_transport;
use tuikuan_proto::tls::Principal;

use chrono::NaiveDate;
use tokio::net::TcpListener;
use tuikuan_bank::domain::SimParams;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{ManualClock, SharedClock};
use tuikuan_proto::clearing::v1 as clpb;
use tuikuan_proto::clearing::v1::clearing_service_client::ClearingServiceClient;
use tuikuan_proto::server::ServiceHandle;
use tuikuan_refund::{serve, Config};

/// The merchant every scenario refunds for (its clearing policy: 0.6 % fee, refunded
/// proportionally).
pub const MERCHANT: &str = "m1";

/// An address where nothing listens (bound, then released).
pub async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// A lazy client channel to the service `peer` at `url`, playing every caller it needs.
pub fn client_channel(peer: Principal, url: &str) -> AnyCaller {
    AnyCaller::new(peer, url)
}

/// A bank that answers every submission after exactly 60 s, fails nothing, sends each callback
/// once and in order, refuses nothing synchronously and returns no payout.
pub fn steady_bank() -> SimParams {
    SimParams {
        delay_min_secs: 60,
        delay_max_secs: 60,
        fail_per_mille: 0,
        duplicate_callback_per_mille: 0,
        out_of_order_per_mille: 0,
        sync_reject_per_mille: 0,
        return_per_mille: 0,
        ..SimParams::default()
    }
}

/// What to run around the refund center.
pub struct Setup {
    /// The business date the manual clock starts on (at 10:00).
    pub today: NaiveDate,
    /// The bank simulator's behaviour; `None`: nothing listens at the bank's address.
    pub bank: Option<SimParams>,
    /// Whether the payout center runs (the refund center is then configured with it).
    pub payout: bool,
}

/// The running services. [`Stack::stop`] stops them all, checking each stopped cleanly.
pub struct Stack {
    pub clock: ManualClock,
    pub refund_url: String,
    pub clearing_url: String,
    /// The bank simulator's address (nothing listens there when the setup left it out).
    pub bank_url: String,
    /// The payout center's address, when it runs.
    pub payout_url: Option<String>,
    handles: Vec<ServiceHandle>,
    refund_stop: tokio::sync::oneshot::Sender<()>,
    refund_task: tokio::task::JoinHandle<Result<(), tuikuan_kernel::Error>>,
    _dbs: Vec<TestDb>,
}

impl Stack {
    /// Starts the peers of `setup` and the refund center on `refund_db`, its configuration
    /// adjusted by `configure` (the peers' addresses are already in it), and gives [`MERCHANT`]
    /// its clearing policy.
    pub async fn start(
        refund_db: &str,
        setup: Setup,
        configure: impl FnOnce(Config) -> Config,
    ) -> Stack {
        let clock = ManualClock::at_business(setup.today, 10);
        let shared: SharedClock = Arc::new(clock.clone());
        let mut dbs = Vec::new();
        let mut handles = Vec::new();

        let db = TestDb::sqlite("accounting");
        let cfg = tuikuan_accounting::Config {
            database_url: db.url().to_string(),
            clock: shared.clone(),
            job_interval: None,
            transport: test_transport(Principal::Accounting),
            staff: tuikuan_auth::StaffConfig::tester(),
        };
        dbs.push(db);
        let accounting = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
            tuikuan_accounting::serve(cfg, l, s)
        })
        .await
        .expect("accounting");
        let db = TestDb::sqlite("clearing");
        let cfg = tuikuan_clearing::Config {
            database_url: db.url().to_string(),
            clock: shared.clone(),
            accounting_addr: accounting.url(),
            job_interval: None,
            transport: test_transport(Principal::Clearing),
            staff: tuikuan_auth::StaffConfig::tester(),
        };
        dbs.push(db);
        handles.push(accounting);
        let clearing = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
            tuikuan_clearing::serve(cfg, l, s)
        })
        .await
        .expect("clearing");
        let clearing_url = clearing.url();
        handles.push(clearing);

        // The refund center's and the payout center's listeners first: the bank calls them back.
        let refund_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind refund");
        let refund_url = format!("http://{}", refund_listener.local_addr().expect("addr"));
        let payout_listener = if setup.payout {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind payout");
            let url = format!("http://{}", l.local_addr().expect("addr"));
            Some((l, url))
        } else {
            None
        };
        let payout_url = payout_listener.as_ref().map(|(_, url)| url.clone());

        let bank_url = match setup.bank {
            None => dead_addr().await,
            Some(p) => {
                let db = TestDb::sqlite("bank");
                let mut cfg = tuikuan_bank::Config::default_for(
                    db.url(),
                    shared.clone(),
                    test_transport(Principal::Bank),
                )
                .with_staff(tuikuan_auth::StaffConfig::tester());
                dbs.push(db);
                cfg.seed = p.seed;
                cfg.delay_min_secs = p.delay_min_secs;
                cfg.delay_max_secs = p.delay_max_secs;
                cfg.fail_per_mille = p.fail_per_mille;
                cfg.duplicate_callback_per_mille = p.duplicate_callback_per_mille;
                cfg.out_of_order_per_mille = p.out_of_order_per_mille;
                cfg.sync_reject_per_mille = p.sync_reject_per_mille;
                cfg.return_per_mille = p.return_per_mille;
                cfg.return_delay_secs = p.return_delay_secs;
                cfg.refund_callback_addr = Some(refund_url.clone());
                cfg.payout_callback_addr = payout_url.clone();
                let bank = tuikuan_proto::server::spawn("127.0.0.1:0", move |l, s| {
                    tuikuan_bank::serve(cfg, l, s)
                })
                .await
                .expect("bank");
                let url = bank.url();
                handles.push(bank);
                url
            }
        };

        if let Some((listener, _)) = payout_listener {
            let db = TestDb::sqlite("payout");
            let cfg = tuikuan_payout::Config::new(
                db.url(),
                shared.clone(),
                bank_url.clone(),
                test_transport(Principal::Payout),
            )
            .with_staff(tuikuan_auth::StaffConfig::tester())
            .with_refund_addr(refund_url.clone());
            dbs.push(db);
            let payout = tuikuan_proto::server::spawn_on(listener, move |l, s| {
                tuikuan_payout::serve(cfg, l, s)
            })
            .expect("payout");
            handles.push(payout);
        }

        let mut cfg = Config::new(
            refund_db,
            shared.clone(),
            clearing_url.clone(),
            bank_url.clone(),
            dead_addr().await,
            test_transport(Principal::Refund),
        )
        .with_staff(tuikuan_auth::StaffConfig::tester());
        if let Some(url) = &payout_url {
            cfg = cfg.with_payout_addr(url.clone());
        }
        let cfg = configure(cfg);
        let (refund_stop, rx) = tokio::sync::oneshot::channel::<()>();
        let refund_task = tokio::spawn(serve(cfg, refund_listener, async move {
            let _ = rx.await;
        }));

        ClearingServiceClient::new(client_channel(Principal::Clearing, &clearing_url))
            .upsert_merchant_policy(clpb::MerchantPolicy {
                merchant_id: MERCHANT.into(),
                fee_rate: "0.006".into(),
                fee_refund: clpb::FeeRefundPolicy::Proportional as i32,
                ..Default::default()
            })
            .await
            .expect("policy");

        Stack {
            clock,
            refund_url,
            clearing_url,
            bank_url,
            payout_url,
            handles,
            refund_stop,
            refund_task,
            _dbs: dbs,
        }
    }

    /// The payout center's address (the setup must have started it).
    pub fn payout_url(&self) -> &str {
        self.payout_url.as_deref().expect("the payout center runs")
    }

    /// Stops the refund center, then the peers in reverse order of start; each must stop cleanly.
    pub async fn stop(self) {
        let _ = self.refund_stop.send(());
        self.refund_task
            .await
            .expect("refund task")
            .expect("refund center stopped cleanly");
        for h in self.handles.into_iter().rev() {
            h.stop().await.expect("peer stopped cleanly");
        }
    }
}
