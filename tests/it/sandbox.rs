//! A whole tuikuan deployment in this process, for tests.

use std::sync::Arc;

use chrono::Duration;
use tonic::{Code, Status};
use tuikuan::clients::Clients;
use tuikuan::cluster::Cluster;
use tuikuan::config::{DeploymentConfig, Service};
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Clock, ManualClock};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;
use tuikuan_proto::staff::v1 as staff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

pub const CHANNEL: &str = "ICBC_B2C";
pub const KEY_A: &str = "test-key-merchant-a-0001";
pub const KEY_B: &str = "test-key-merchant-b-0002";

pub struct Sandbox {
    pub cluster: Cluster,
    pub clock: ManualClock,
    pub c: Clients,
    _tmp: tempfile::TempDir,
    _pg: Vec<TestDb>,
}

/// Database settings for a deployment on `store`; `None` when PostgreSQL is unavailable outside CI.
pub fn store_config(store: Store) -> Option<(tempfile::TempDir, Option<String>, Vec<TestDb>)> {
    let tmp = tempfile::tempdir().expect("temporary directory");
    match store {
        Store::Sqlite => Some((tmp, None, Vec::new())),
        Store::Postgres => {
            let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
            let (template, dbs) = TestDb::postgres_set(&names)?;
            Some((tmp, Some(template), dbs))
        }
    }
}

/// A throw-away deployment under `dir` with the test certificates (mutual TLS everywhere, TLS on
/// the public listener).
pub fn deployment(dir: &std::path::Path) -> DeploymentConfig {
    tuikuan::local::throwaway_config(dir, tuikuan_proto::pki::testing()).expect("test deployment")
}

impl Sandbox {
    /// Starts all services with a bank that fails `fail_per_mille` of refunds.
    pub async fn start(store: Store, fail_per_mille: u32) -> Option<Sandbox> {
        let clock = ManualClock::at_business(tuikuan::demo::demo_start_date(), 10);
        Sandbox::start_with(store, fail_per_mille, clock, |_, _| {}).await
    }

    /// Starts all services on `clock`, after `configure` adjusted the deployment (it is given the
    /// deployment's data directory, e.g. for key files).
    pub async fn start_with(
        store: Store,
        fail_per_mille: u32,
        clock: ManualClock,
        configure: impl FnOnce(&mut DeploymentConfig, &std::path::Path),
    ) -> Option<Sandbox> {
        let (tmp, database_url, pg) = store_config(store)?;
        let mut config = deployment(tmp.path());
        config.database_url = database_url;
        config.bank.fail_per_mille = fail_per_mille;
        config.bank.delay_min_secs = 60;
        config.bank.delay_max_secs = 3600;
        config.bank.notify_port = 0;
        configure(&mut config, tmp.path());
        let cluster = Cluster::start(config, Arc::new(clock.clone()), &[])
            .await
            .expect("cluster starts");
        let c = cluster.clients().expect("clients");
        let mut sb = Sandbox {
            cluster,
            clock,
            c,
            _tmp: tmp,
            _pg: pg,
        };
        sb.seed().await;
        Some(sb)
    }

    /// Clients with the certificate of `identity`: a test standing in for that service (replaying
    /// its calls, planting faults) must present its identity, like the service itself.
    pub fn as_service(&self, identity: tuikuan_proto::tls::Principal) -> Clients {
        self.cluster.clients_as(identity).expect("clients")
    }

    async fn seed(&mut self) {
        self.c
            .refund
            .upsert_channel(rfd::Channel {
                code: CHANNEL.into(),
                kind: rfd::ChannelKind::NetBanking as i32,
                methods: vec![rfd::RefundMethod::Interface as i32],
                original_route_window_days: 180,
                bank_code: "ICBC".into(),
                ..Default::default()
            })
            .await
            .expect("refund channel");
        self.c
            .business
            .upsert_channel(biz::Channel {
                code: CHANNEL.into(),
                refund_window_days: 30,
                enabled: true,
            })
            .await
            .expect("business channel");
        for (id, key) in [("MA", KEY_A), ("MB", KEY_B)] {
            self.c
                .business
                .create_merchant(biz::CreateMerchantRequest {
                    merchant_id: id.into(),
                    name: format!("merchant {id}"),
                    api_key: key.into(),
                })
                .await
                .expect("merchant");
            self.c
                .clearing
                .upsert_merchant_policy(clr::MerchantPolicy {
                    merchant_id: id.into(),
                    fee_rate: "0.006".into(),
                    fee_refund: clr::FeeRefundPolicy::Proportional as i32,
                    ..Default::default()
                })
                .await
                .expect("policy");
        }
    }

    /// Records a succeeded payment for merchant `merchant`.
    pub async fn pay(&mut self, merchant: &str, order_no: &str, amount: &str) -> biz::Trade {
        self.c
            .business
            .record_payment(biz::RecordPaymentRequest {
                merchant_id: merchant.into(),
                order_no: order_no.into(),
                channel: CHANNEL.into(),
                amount: amount.into(),
                currency: "CNY".into(),
                paid_at_ms: self.clock.now_ms() - 60_000,
                payer_card_no: String::new(),
                payer_name: String::new(),
                ..Default::default()
            })
            .await
            .expect("payment recorded")
            .into_inner()
    }

    pub async fn refund(
        &self,
        key: &str,
        refund_no: &str,
        order_no: &str,
        amount: &str,
    ) -> Result<biz::Refund, Status> {
        let mut m = self.c.merchant(key).expect("merchant client");
        m.create_refund(biz::CreateRefundRequest {
            merchant_refund_no: refund_no.into(),
            order_no: order_no.into(),
            amount: amount.into(),
            currency: "CNY".into(),
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
    }

    pub async fn get_refund(&self, key: &str, refund_no: &str) -> Result<biz::Refund, Status> {
        let mut m = self.c.merchant(key).expect("merchant client");
        m.get_refund(biz::GetRefundRequest {
            merchant_refund_no: refund_no.into(),
        })
        .await
        .map(|r| r.into_inner())
    }

    /// One business day: send to the bank, let the bank finish, reconcile, deliver outcomes.
    pub async fn run_day(&mut self) -> rec::ReconciliationRun {
        self.c
            .refund
            .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
            .await
            .expect("interface cycle");
        self.clock.advance(Duration::hours(2));
        self.c.bank.tick(bank::TickRequest {}).await.expect("tick");
        let date = self.clock.today();
        self.clock.advance(Duration::hours(22));
        self.c.bank.tick(bank::TickRequest {}).await.expect("tick");
        self.reconcile(CHANNEL, &date.to_string()).await
    }

    /// Reconciles `channel`'s `date` from the bank's own file, then delivers the write-backs
    /// (the refund center's outbox).
    pub async fn reconcile(&self, channel: &str, date: &str) -> rec::ReconciliationRun {
        let run = self
            .c
            .reconciliation
            .clone()
            .run_reconciliation(rec::RunReconciliationRequest {
                channel: channel.into(),
                date: date.into(),
                ..Default::default()
            })
            .await
            .expect("reconciliation")
            .into_inner();
        self.c
            .refund
            .clone()
            .run_outbox(rfd::RunOutboxRequest {})
            .await
            .expect("outbox");
        run
    }

    /// Four eyes: a second operator `name` in `role` approves `proposal_id` at `service`'s desk,
    /// and the action runs (asserted).
    pub async fn approve_as(
        &self,
        name: &str,
        role: tuikuan_auth::Role,
        service: Service,
        proposal_id: String,
        reason: &str,
    ) -> staff::Proposal {
        let token = self.cluster.operator_token(name, &[role]).expect("token");
        let checker = self.c.with_token(&token).expect("clients");
        let approved = checker
            .staff_desk(service)
            .approve_proposal(staff::DecideProposalRequest {
                proposal_id,
                reason: reason.into(),
            })
            .await
            .expect("approved")
            .into_inner();
        assert_eq!(approved.status, staff::ProposalStatus::Executed as i32);
        approved
    }

    pub async fn balance(&mut self, kind: acc::AccountType, owner: &str) -> String {
        self.c
            .accounting
            .get_balance(acc::GetBalanceRequest {
                account: Some(acc::Account {
                    r#type: kind as i32,
                    owner: owner.into(),
                    currency: "CNY".into(),
                }),
                ..Default::default()
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
    }

    pub async fn assert_books_balanced(&mut self) {
        let tb = self
            .c
            .accounting
            .trial_balance(acc::TrialBalanceRequest::default())
            .await
            .expect("trial balance")
            .into_inner();
        assert!(tb.balanced, "trial balance not balanced: {tb:?}");
        for t in &tb.totals {
            assert_eq!(t.total_debits, t.total_credits, "{t:?}");
        }
    }

    /// Postings whose request id starts with `prefix`.
    pub async fn postings_with_prefix(&mut self, prefix: &str) -> Vec<acc::Posting> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .c
                .accounting
                .list_postings(acc::ListPostingsRequest {
                    account: None,
                    limit: 1000,
                    after: after.clone(),
                    ..Default::default()
                })
                .await
                .expect("postings")
                .into_inner()
                .postings;
            let Some(last) = page.last() else { break };
            after = last.posting_id.clone();
            let n = page.len();
            out.extend(
                page.into_iter()
                    .filter(|p| p.request_id.starts_with(prefix)),
            );
            if n < 1000 {
                break;
            }
        }
        out
    }

    pub async fn shutdown(self) {
        self.cluster.shutdown().await.expect("clean shutdown");
    }
}

/// The stable error code a status carries.
pub fn code_of(status: &Status) -> String {
    status
        .metadata()
        .get(tuikuan_proto::status::ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

pub fn assert_error(result: Result<biz::Refund, Status>, grpc: Code, code: &str) {
    match result {
        Ok(r) => panic!("expected {code}, got a refund {r:?}"),
        Err(status) => {
            assert_eq!(status.code(), grpc, "{status:?}");
            assert_eq!(code_of(&status), code, "{status:?}");
            assert!(!status.message().is_empty());
        }
    }
}

/// Declares a test for SQLite and one for PostgreSQL running the same scenario.
#[macro_export]
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::sandbox::Store::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::sandbox::Store::Postgres).await;
            }
        }
    };
}
