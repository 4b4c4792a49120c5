//! The bank subsystem (银行子系统) of tuikuan: the interface the refund and payout centers use to
//! reach banks ([`domain::BankConnector`]), and a deterministic, seeded bank simulator served as
//! its own gRPC service (`tuikuan.bank.v1.BankService`).
//!
//! # Layout
//! - [`domain`]: pure — the connector trait, transactions and their state machine, the simulator's
//!   seeded decisions, and the clearing file format ([`domain::write_clearing_csv`],
//!   [`domain::parse_clearing_csv`], which the reconciliation center reuses);
//! - [`clearing_file`]: the documented clearing file format and its API in one place;
//! - [`layouts`]: the clearing file in a channel's real bank layout (WeChat Pay bill, UnionPay ZM,
//!   Alipay 业务明细), per `Config.clearing_formats`;
//! - [`store`]: diesel tables (`transactions`, `callbacks`) and repository functions;
//! - [`simulator`]: the [`simulator::Simulator`], which implements [`domain::BankConnector`] and
//!   runs the bank's tick (complete due transactions at their due time, return paid payouts,
//!   deliver callbacks to the refund and payout centers);
//! - [`connector`]: the channel connector interface ([`connector::Connector`]: submit a refund,
//!   query it, verify a notification, download the bill) with the simulator, WeChat Pay API v3
//!   and Alipay as implementations, and the channel settings of the configuration;
//! - [`live`]: the books of refunds sent to real channels, their polling, the notification
//!   listener, and the callbacks that carry their changes to the refund center;
//! - [`grpc`]: [`Config`], [`serve`] and the tonic service, which routes each channel to the
//!   simulator or to its real connector.
//!
//! # Invariants
//! - One transaction per id (refund_id, payout_id, or the row id of a file-upload / offline
//!   spreadsheet row, kind FILE): a repeat submission returns the first answer; other content under
//!   the same id is `IDEMPOTENCY_CONFLICT`. A file batch is idempotent by its batch_id as a whole. The bank never pays an id
//!   twice (primary key plus a conditional `ACCEPTED -> final` update).
//! - Outcomes depend only on `sha256(seed, kind, id)`; instants only on the submission time and
//!   that hash. A transaction completes at its due time, not at the tick's time, so clearing files
//!   are byte-for-byte reproducible.
//! - The bank never stores or logs a card number: only a fingerprint and the masked form (card
//!   validation and masking are the kernel's `tuikuan_kernel::card`).
//! - FILE rows get no callbacks: the bank's answer to a spreadsheet is its clearing file, where
//!   every row appears (record type `FILE`) on the day it completed.
//! - Every transaction records the refund it moves money for (`refund_id`: the id itself for
//!   refunds, the payout center's reference for payouts, the row's refund for FILE rows), and
//!   `ListTransactions` serves the whole book in id order, so an auditor can count from the bank's
//!   own record how often each refund was paid (`tuikuan audit`).
//! - A synchronous refusal is `TX_REJECTED` on the wire (nothing happened at the bank), distinct
//!   from `TX_FAILED` (accepted, then failed).

pub mod connector;
pub mod domain;
pub mod grpc;
pub mod layouts;
pub mod live;
pub mod simulator;
pub mod store;

pub use grpc::{serve, serve_with_notifications, Config};

/// The clearing file (清算文件) format `tuikuan-csv-v1`, and the functions that write and read it.
///
#[doc = include_str!("../../../docs/clearing-file.md")]
pub mod clearing_file {
    pub use crate::domain::{
        format_completed_at, parse_clearing_csv, sha256_hex, write_clearing_csv, ClearingFile,
        ClearingRow, ClearingStatus, RecordType, CLEARING_FILE_FORMAT, CLEARING_FILE_FORMAT_DOC,
        CLEARING_HEADER,
    };
}
