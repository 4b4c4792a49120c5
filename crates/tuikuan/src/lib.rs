//! The tuikuan binary's library: deployment configuration, running services in-process, typed
//! clients, the demo. `main.rs` is a thin command line over it.
//!
//! Layout:
//! - [`config`]: [`config::DeploymentConfig`] — ports, databases, peers, bank simulator settings;
//! - [`cluster`]: [`cluster::Cluster`] — starts any set of the seven services on real ports;
//! - [`clients`]: one typed gRPC client per service;
//! - [`local`]: throw-away deployments with certificates of their own (demo, bench, chaos, tests);
//! - [`demo`]: `tuikuan demo`, the whole chain with the bank simulator, days in seconds;
//! - [`audit`]: `tuikuan audit`, the invariant auditor over every service's records;
//! - [`chaos`]: `tuikuan chaos`, crash faults with real processes, then the auditor;
//! - [`keys`]: the operator-token keys of a deployment; [`session`]: `ctl`'s login session;
//!   [`ctl_staff`]: `ctl` for operators, proposals and audit trails.

pub mod audit;
pub mod bench;
pub mod chaos;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod ctl_staff;
pub mod demo;
pub mod inspect;
pub mod keys;
pub mod local;
pub mod output;
pub mod session;
