//! The business layer (业务层) of tuikuan: merchant-facing; owns merchants, trades (original
//! payments) and merchant refund requests, and orchestrates the refund chain
//! debit (clearing center) -> refund (refund center).
//!
//! Layout:
//! - [`domain`]: pure types and rules: the refund chain state machine and what the merchant sees,
//!   request validation and fingerprints, refund windows, peer-error verdicts, error refunds
//!   (差错退款), split receivers and subsidies; and its submodules [`domain::notify`] (merchant
//!   notifications: message, HMAC signature with [`domain::notify::verify_signature`], retry
//!   schedule), [`domain::egress`] (where notifications may go: the SSRF guard's rules),
//!   [`domain::crypto`] (AES-256-GCM sealing of card numbers and secrets at rest) and
//!   [`domain::operator`] (staff identity and roles);
//! - [`store`]: diesel tables and repository functions (SQLite and PostgreSQL), including the
//!   over-refund guard (a conditional update on the trade), conditional state moves, the
//!   notification outbox and its claim;
//! - [`grpc`]: `MerchantService` and `BusinessAdminService`, the chain driver, the recovery loop,
//!   the notification runs, and [`serve`];
//! - [`egress`]: the notification sender's HTTPS client and its guard against server-side request
//!   forgery (at set time and, after resolution, at every delivery).
//!
//! Security: merchants authenticate with `authorization: Bearer <api key>` (stored as its SHA-256
//! only) and see and refund only their own trades; every admin RPC needs an operator token in a
//! role the permission table allows (`tuikuan-auth`'s guard; `x-operator-*` headers are ignored); payer card numbers are stored sealed (`enc:v1:`) and shown masked.
//!
//! Architecture invariants:
//! - a trade's `refunded` equals the sum of its refunds that hold a reservation, and never exceeds
//!   what was paid, however many requests race;
//! - each step of the chain is persisted before the next call, and every call carries the refund
//!   id as its idempotency key, so a crash or a retry never debits or refunds twice;
//! - a refund's final outcome and its merchant notification are written in one transaction, and
//!   a notification is retried until a 2xx (or its 48-hour window ends).

pub mod domain;
pub mod egress;
pub mod grpc;
pub mod staff;
pub mod store;

pub use egress::NotifySettings;
pub use grpc::{serve, Config, OperatorsConfig};
