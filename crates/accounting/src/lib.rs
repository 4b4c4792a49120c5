//! Accounting (账务): tuikuan's double-entry ledger, the only place money is counted.
//!
//! Every posting is balanced (debits equal credits, asserted before it is written), immutable, and
//! idempotent by its `request_id`: a repeat with the same content returns the first posting, other
//! content under the same key is `IDEMPOTENCY_CONFLICT`. A merchant settlement account never goes
//! negative: the debit is a conditional update, so concurrent debits cannot overdraw it.
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
