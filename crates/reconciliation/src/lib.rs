//! Reconciliation center (对账中心) of tuikuan.
//!
//! The next day, it takes the refund center's refunds whose submit status is SUBMITTED and refund
//! status PROCESSING, matches them against the bank's clearing file for the channel and business
//! date, and writes back the final status (SUCCEEDED or FAILED) through the refund center's
//! `ApplyReconciliation`. A run is idempotent per (channel, date, file checksum): running the same
//! file again returns the first run and only retries its pending write-backs.
//!
//! Outcomes per item: MATCHED and BANK_FAILED write back; AMOUNT_MISMATCH, DUPLICATE, BANK_ONLY
//! (长款) and PLATFORM_ONLY (短款, stays PROCESSING) do not. A bank-only row whose refund the refund
//! center already finalised the same way (same status, same amount: a re-delivered or superseding
//! file) is recorded as MATCHED / BANK_FAILED "already final", without write-back.
//!
//! Layout:
//! - [`domain`]: pure — clearing-file records and the [`domain::ClearingFileParser`] trait with the
//!   strict `tuikuan-csv-v1` parser, the matcher, outcome totals, the write-back state machine;
//! - [`store`]: diesel tables `runs` and `items`, repository functions returning domain types;
//! - [`grpc`]: [`Config`], [`serve`], the `ReconciliationService` implementation, the peers (bank
//!   subsystem, refund center) and the daily job (yesterday's business date for each configured
//!   channel; the same function as the `RunReconciliation` admin RPC).

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, Config};
