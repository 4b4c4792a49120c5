//! Accounting (账务): tuikuan's double-entry ledger, the only place money is counted.
//!
//! Every posting is balanced (debits equal credits, asserted before it is written), immutable, and
//! idempotent by its `request_id`: a repeat with the same content returns the first posting, other
//! content under the same key is `IDEMPOTENCY_CONFLICT`. Two kinds of account never go below zero
//! on their normal side, each guarded by a conditional update so that concurrent postings cannot
//! break the rule (`INSUFFICIENT_BALANCE`, nothing posted):
//! - a merchant's MERCHANT_SETTLEMENT (its available balance): money the platform lends a merchant
//!   is booked on its ADVANCE account, never as a negative settlement balance;
//! - a merchant's ADVANCE (debit-normal: what it owes the platform): a repayment never exceeds what
//!   was advanced. That an advance stays within the merchant's credit line is the clearing
//!   center's rule (it owns the line).
//!
//! Layout:
//! - [`domain`]: account types and normal sides, account keys, entries, posting validation, the
//!   content fingerprint, balances and the trial balance (pure);
//! - [`store`]: diesel tables and the posting transaction (SQLite and PostgreSQL);
//! - [`grpc`]: the `AccountingService` server, wire conversions, and [`grpc::AccountingClient`],
//!   the typed client other services post through.

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, AccountingClient, Config, PostingOutcome};
