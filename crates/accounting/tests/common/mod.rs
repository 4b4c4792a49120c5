//! Helpers shared by the accounting service's integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use tonic::transport::Channel;
use tuikuan_accounting::{serve, Config};
use tuikuan_kernel::{ManualClock, SharedClock};
use tuikuan_proto::accounting::v1 as pb;
use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
use tuikuan_proto::server::ServiceHandle;
use tuikuan_proto::tls::Principal;

pub type Client = AccountingServiceClient<Channel>;

pub async fn start(url: &str) -> (ServiceHandle, Client) {
    let clock = ManualClock::new(chrono_start());
    let clock: SharedClock = Arc::new(clock);
    let cfg = Config {
        database_url: url.to_string(),
        clock,
        job_interval: None,
        transport: tuikuan_proto::pki::test_transport(Principal::Accounting),
        // The suspense tests check the second operator: always two, unlike `tester()`.
        staff: tuikuan_auth::StaffConfig {
            four_eyes: tuikuan_auth::domain::FourEyes::always_two(),
            ..tuikuan_auth::StaffConfig::tester()
        },
    };
    let handle = tuikuan_proto::server::spawn("127.0.0.1:0", move |listener, shutdown| {
        serve(cfg, listener, shutdown)
    })
    .await
    .expect("spawn accounting");
    // The test posts as the clearing center, the one caller allowed to post.
    let channel =
        tuikuan_proto::pki::test_channel(Principal::Clearing, Principal::Accounting, &handle.url());
    (handle, AccountingServiceClient::new(channel))
}

/// A client as the staff tool `ctl`: listings and the trial balance are staff RPCs.
pub fn staff(handle: &ServiceHandle) -> Client {
    AccountingServiceClient::new(tuikuan_proto::pki::test_channel(
        Principal::Ctl,
        Principal::Accounting,
        &handle.url(),
    ))
}

pub fn chrono_start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(1_795_000_000_000).expect("valid instant")
}

pub fn account(t: pb::AccountType, owner: &str) -> pb::Account {
    pb::Account {
        r#type: t as i32,
        owner: owner.to_string(),
        currency: "CNY".to_string(),
    }
}

pub fn entry(t: pb::AccountType, owner: &str, side: pb::Side, amount: &str) -> pb::Entry {
    pb::Entry {
        account: Some(account(t, owner)),
        side: side as i32,
        amount: amount.to_string(),
        ..Default::default()
    }
}

pub fn code_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("tk-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An account's balance (owner in CNY).
pub async fn balance(client: &mut Client, t: pb::AccountType, owner: &str) -> pb::Balance {
    client
        .get_balance(pb::GetBalanceRequest {
            account: Some(account(t, owner)),
            ..Default::default()
        })
        .await
        .expect("balance")
        .into_inner()
}
