//! The business layer (业务层) of tuikuan: merchant-facing; owns merchants, trades (original
//! payments) and merchant refund requests, and orchestrates the refund chain
//! debit (clearing center) -> refund (refund center).
//!
//! Layout:
//! - [`domain`]: pure types and rules: the refund chain state machine and what the merchant sees,
//!   request validation and fingerprints, refund windows, peer-error verdicts;
//! - [`store`]: diesel tables and repository functions (SQLite and PostgreSQL), including the
//!   over-refund guard (a conditional update on the trade) and conditional state moves;
//! - [`grpc`]: `MerchantService` and `BusinessAdminService`, the chain driver, the recovery loop,
//!   and [`serve`].
//!
//! Architecture invariants:
//! - a trade's `refunded` equals the sum of its refunds that hold a reservation, and never exceeds
//!   what was paid, however many requests race;
//! - each step of the chain is persisted before the next call, and every call carries the refund
//!   id as its idempotency key, so a crash or a retry never debits or refunds twice.

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, Config};
