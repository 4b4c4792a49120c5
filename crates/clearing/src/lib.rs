//! Clearing center (清算中心): settles succeeded payments and computes each refund debit (扣账) —
//! the refund amount, the merchant's part and the fee share refunded by policy — and asks
//! accounting to post it.
//!
//! A refund debit is reserved against its trade before anything is posted: the trade's running
//! `debited` counter moves only by a conditional update, so concurrent refunds never debit more
//! than was paid. Fee shares are cumulative (`round_half_even(fee × debited / paid)` minus what was
//! refunded before), so partial refunds that add up to the payment refund exactly the fee.
//!
//! Layout:
//! - [`domain`]: merchant policies, settlements and the fee, the fee share, the debit state machine
//!   (`PENDING → DEBITED | REJECTED`, `DEBITED → REVERSING → REVERSED`,
//!   `DEBITED → COMPLETING → COMPLETED`, and for a returned payout (退票)
//!   `COMPLETED → RETURNING → RETURNED`), reconciliation's suspense adjustments, and the postings
//!   of each step (pure);
//! - [`store`]: diesel tables and the reservation transaction (SQLite and PostgreSQL);
//! - [`grpc`]: the `ClearingService` server, wire conversions, and the recovery job
//!   ([`grpc::Clearing::run_recovery`]).

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, Clearing, Config, RecoveryReport};
