//! The refund center (退款中心) of tuikuan.
//!
//! It accepts refunds whose merchant debit succeeded (checked with the clearing center) and
//! delivers each by the channel's refund methods in order — interface (the bank's refund API, on
//! a schedule), payout (a payout created in real time at the payout center), file-upload and
//! offline (daily spreadsheets per bank in the bank's template, marked uploaded or sent by staff)
//! — moving to the next method when one fails for a reason another can fix, with one debit and
//! never two payments. Reconciliation makes a refund final; the refund center then completes,
//! reverses or (for a returned payout) returns the debit through clearing and tells the business
//! layer, through a transactional outbox.
//!
//! Around that: error refunds (差错退款, full amount only), risk holds (风控拦截: configurable rules
//! put a new order on HELD until risk releases or rejects it), manual controls (suspend, resume,
//! terminate, force-fail, confirm an offline outcome) by operators with roles, an audit trail of
//! every manual action and hold decision, and card numbers encrypted at rest (AES-256-GCM).
//!
//! Layout:
//! - [`domain`]: pure types and rules: channels and their methods, method choice and refusals up
//!   front, refund orders with their attempts, submit and refund status, the explicit
//!   transitions and fallbacks, expected completion by working days, outbox steps;
//!   [`domain::batch`]: bank templates, numbered immutable batches, the spreadsheet's cell model;
//!   [`domain::control`]: roles and their permissions, risk rules, holds and manual controls,
//!   audit entries;
//! - [`vault`]: the card key and its resolution; card numbers and stored spreadsheets sealed with
//!   the kernel's AES-256-GCM ([`tuikuan_kernel::seal`]), the keyed card hash;
//! - [`sheet`]: writes a batch's cell model as .xlsx (and hashes it);
//! - [`store`]: diesel tables and repository functions (SQLite and PostgreSQL), speaking domain
//!   types;
//! - [`grpc`]: [`Config`], [`serve`], the `RefundService` handlers, wire conversions, the job loop
//!   (interface cycle, payout dispatch, outbox, batch deliveries) and the peers' clients;
//!   [`grpc::batch`]: batch generation, marking, failed rows and the `BatchService` handlers;
//!   [`grpc::control`]: operator identity from metadata, risk evaluation, the manual controls and
//!   the `RefundControlService` and `ErrorRefundService` handlers.

pub mod domain;
pub mod grpc;
pub mod sheet;
pub mod store;
pub mod vault;

pub use grpc::{serve, Config, RefundCenter};
pub use vault::CardKey;

#[cfg(test)]
mod tests {
    /// The domain stays pure: no storage or RPC crate appears in it (CI greps the same).
    #[test]
    fn domain_has_no_framework_imports() {
        let src = concat!(include_str!("domain.rs"), include_str!("domain/batch.rs"));
        // Spelled in pieces so that this file does not trip the same check.
        for needle in [
            concat!("dies", "el"),
            concat!("ton", "ic"),
            concat!("pro", "st"),
            concat!("tuikuan", "_db"),
            concat!("tuikuan", "_proto"),
        ] {
            assert!(!src.contains(needle), "domain.rs mentions {needle}");
        }
    }
}
