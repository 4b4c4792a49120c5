//! Reconciliation center (对账中心) of tuikuan.
//!
//! The next day, it takes the refund center's refunds whose submit status is SUBMITTED and refund
//! status PROCESSING, matches them against the bank's clearing file for the channel and business
//! date — by the refund's bank reference id (refund id, payout id or batch row id), amount and
//! status — and writes back the final status (SUCCEEDED or FAILED) through the refund center's
//! `ApplyReconciliation`, exactly once per refund however often a file is re-run. A run is
//! idempotent per (channel, date, file checksum); a corrected file for the same channel and date
//! supersedes the earlier run, with an audit entry.
//!
//! Files come from the bank subsystem (`RunReconciliation`) or are uploaded
//! (`RunReconciliationFile`), in one of four formats read as streams: the platform's
//! `tuikuan-csv-v1`, the WeChat Pay trade bill (every layout, UTF-8 or GBK), UnionPay's ZM file and
//! Alipay's 业务明细. Platform-only refunds wait in suspense for the channel's cross-day window, then become a
//! 银行漏单 discrepancy; bank-only rows (平台漏单), amount mismatches, duplicates and status
//! conflicts are discrepancies too, resolved by people ("bank wins" corrects the platform through
//! the refund center and clearing adjustments, "platform wins" is recorded), every resolution
//! audited. Reports per run (CSV, .xlsx) and per channel and day.
//!
//! Layout:
//! - [`domain`]: pure — records, the parsers ([`domain::csv_v1`], [`domain::wechat`],
//!   [`domain::unionpay`], [`domain::alipay`]) and their writers, [`domain::inspect`], the streaming [`domain::Matcher`], suspense and discrepancy rules, the
//!   write-back state machine;
//! - [`store`]: diesel tables `runs`, `items`, `item_refs`, `suspense`, `discrepancies`,
//!   `resolutions`, `audit_log`; repository functions returning domain types;
//! - [`engine`]: runs, write-back, resolution, over the [`engine::Peers`] trait;
//! - [`grpc`]: [`Config`], [`serve`], the `ReconciliationService`, the gRPC peers and the daily job;
//! - [`report`]: CSV and .xlsx exports;
//! - [`bench`]: the benchmark behind `tuikuan bench recon`.

pub mod bench;
pub mod domain;
pub mod engine;
pub mod grpc;
pub mod report;
pub mod store;

pub use grpc::{serve, Config};
