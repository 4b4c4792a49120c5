//! The payout center (打款中心) of tuikuan: pays money to a card (card number and holder name)
//! through the bank subsystem, for payout refunds (打款退款).
//!
//! # Layout
//! - [`domain`]: pure — holder names, the [`domain::PayoutStatus`] state machine, how bank
//!   callbacks apply, and [`domain::PayoutUpdate`] (a status change reported to the refund
//!   center). Card numbers are the kernel's [`domain::CardNumber`] (digits, 12–19 long, Luhn;
//!   masked as `**** 1234` in `Debug`, `Display` and every answer);
//! - [`store`]: the `payouts` table, the `payout_updates` outbox and repository functions;
//! - [`grpc`]: [`Config`], [`serve`], the [`grpc::PayoutCenter`] logic (create, payout cycle, bank
//!   callbacks, outbox delivery to `RefundService.PayoutUpdate`) and the tonic service.
//!
//! # Invariants
//! - `CREATED -> SENT -> PAID | FAILED`, `CREATED -> FAILED` (bank refusal), `PAID -> RETURNED`;
//!   monotone: a duplicate, stale (lower sequence) or backwards callback changes nothing.
//! - A payout is submitted to the bank under its own payout_id, so retries after a timeout and
//!   racing cycles cannot pay twice; a bank that does not answer leaves the payout CREATED. The
//!   submission carries the refund it pays for, so the bank's books name it too;
//!   `ListPayouts` pages through every payout for operators and the auditor.
//! - The full card number is stored (the bank needs it) but never returned and never logged.
//! - Every status change (SENT, PAID, FAILED, RETURNED) is written to the outbox in the same
//!   transaction and reported to the refund center after commit, in order per payout, with a
//!   sequence that increases per payout; undelivered rows are retried by the job loop and by
//!   `RunPayoutCycle`.

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, Config};
