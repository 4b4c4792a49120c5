//! Clearing center (清算中心): settles succeeded payments and computes each refund debit (扣账) —
//! the refund amount, each receiver's part of it (分账), the fee share refunded by policy, the
//! platform's subsidy share, and what the platform advances (垫付) — and asks accounting to post
//! it.
//!
//! Layout:
//! - [`domain`]: merchant policies (fee rate, fee-refund policy, advance line), split settlements,
//!   the debit plan (receivers' parts, fee and subsidy shares), advance counters, the debit state
//!   machine (`PENDING → DEBITED | REJECTED`, `DEBITED → REVERSING → REVERSED`,
//!   `DEBITED → COMPLETING → COMPLETED`, and for a returned payout (退票)
//!   `COMPLETED → RETURNING → RETURNED`), reconciliation's suspense adjustments, and the postings
//!   of each step (pure);
//! - [`store`]: diesel tables and the reservation transactions (SQLite and PostgreSQL);
//! - [`grpc`]: the `ClearingService` server, wire conversions, and the recovery job
//!   ([`grpc::Clearing::run_recovery`]).
//!
//! # Counters and concurrency
//!
//! A refund debit is reserved against its trade before anything is posted: the trade's running
//! counters (debited, fee refunded, subsidy refunded) and each receiver's (refunded, fee refunded)
//! move only by conditional updates in one transaction with the debit row, so concurrent refunds
//! never debit more than was paid, nor more than a receiver's share. Going back (REJECTED,
//! REVERSED, RETURNED) gives the counters back in the transaction that moves the status.
//!
//! # Split payments (分账)
//!
//! `SettlePaymentRequest.splits` lists receivers (merchant ids, each with a policy) and their
//! shares, which must add up exactly to the amount (else INVALID_ARGUMENT naming `splits`); no
//! splits means one receiver, the merchant, with the whole amount. **Each receiver pays its own
//! fee, by its own rate, and its own fee-refund policy governs refunds of its share** (a receiver
//! is a merchant with its own contract; charging the primary merchant for everyone would make it
//! pay for shares it never received). Each receiver's net is credited to its own
//! MERCHANT_SETTLEMENT.
//!
//! A refund takes back from the receivers **by share**, unless `RefundDebitRequest.splits` names
//! the amounts (each receiver must be the trade's, the amounts must add up to the refund —
//! INVALID_ARGUMENT naming `splits` — and none may exceed what remains of that receiver's share —
//! REFUND_EXCEEDS_PAID, message starting `splits:`).
//!
//! **Rounding rule (largest remainder over what remains).** With `c_i` what remains of receiver
//! `i`'s share and `C = Σ c_i` (what remains of the payment), a refund of `R` cents gives receiver
//! `i` first `⌊R·c_i / C⌋`; the cents still missing (fewer than the number of receivers) go one each
//! to the largest remainders `R·c_i mod C` (ties: the larger `c_i`, then the earlier receiver).
//! The parts add up to exactly `R`; no part exceeds `c_i`, so over any number of partial refunds
//! no receiver gives back more than its share; and when `R = C` every receiver gives back exactly
//! what remains — a full refund, or the last of several partial ones, takes back exactly each
//! share. Because the weights are what *remains*, a receiver that gave a cent too much in one
//! refund weighs less in the next: the rounding corrects itself instead of drifting.
//!
//! Fee and subsidy shares are **cumulative**: after a refund, `round_half_even(fee_i × refunded_i /
//! share_i)` of receiver `i`'s fee has gone back in all (and `round_half_even(subsidy × debited /
//! amount)` of the subsidy), and this refund's share is that minus what went back before. Refunds
//! that add up to the payment therefore give back exactly the fee and exactly the subsidy.
//!
//! The parts are stored with the debit; a reversal or return gives back exactly those parts.
//!
//! # Subsidies
//!
//! `SettlePaymentRequest.platform_subsidy` is the platform-funded coupon part of the order amount
//! (`0 ≤ subsidy < amount`): the customer paid `amount − subsidy` in cash. The merchant sold goods
//! worth the whole amount and is credited for it (less its fee). A refund `R` (of the order amount)
//! has a subsidy share `s`; the customer gets `R − s` back in cash (`Debit.amount` stays `R`,
//! `Debit.subsidy_amount` is `s`; callers pay out `amount − subsidy_amount`), the platform's `s`
//! goes back to its SUBSIDY account, and the merchant gives back its part of `R` as always.
//!
//! # Advances (垫付)
//!
//! `MerchantPolicy.advance_limit` is the merchant's credit line (default 0), in one currency
//! (`advance_currency`, required with a line): it lends nothing in any other currency, and a
//! receiver short in another currency is refused with ADVANCE_CURRENCY_MISMATCH
//! ([`domain::shortfall`]). When a receiver with a line has less available than its part of a refund, its balance is read from the ledger and the
//! shortfall is advanced — Dr ADVANCE(receiver) instead of MERCHANT_SETTLEMENT — if the line has
//! room for all of it; otherwise nothing is advanced, the ledger refuses the debit and it is
//! REJECTED with INSUFFICIENT_BALANCE, as without a line. The line is never exceeded: clearing
//! keeps per-merchant counters (`posted` advances, `reserved` by unconfirmed debits, `repaying`
//! promised to unconfirmed credits) and takes an advance only by
//! `UPDATE … SET reserved = reserved + x WHERE posted + reserved + x <= line`, asserting the line
//! afterwards ([`domain::AdvanceLine::check`]); the ledger keeps MERCHANT_SETTLEMENT non-negative.
//! So the platform never pays out for a merchant more than the merchant received plus its line.
//!
//! Money coming back to a merchant **repays its advance first**: a settlement credits
//! ADVANCE(receiver) with `min(outstanding, net)` and MERCHANT_SETTLEMENT with the rest; a
//! reversal or a returned payout does the same with the receiver's part (`back_to_advance`, fixed
//! when the reversal or return starts so a retry posts the same content). Only the exact undo of a
//! debit posted after it was REJECTED gives the advance back as taken.
//!
//! Known limit: the balance is read before the debit is posted; two refunds of one merchant racing
//! for the same balance may see the later one REJECTED (the ledger refuses it) although the line
//! had room. Safe (nothing is over-lent or overdrawn); the merchant retries with a new refund.
//!
//! # Error refunds (差错退款)
//!
//! `RefundDebitRequest.error_refund` (a duplicate payment, or one that arrived after its order
//! expired): the money was settled to the receivers like any payment, so the debit comes from
//! there too. Full amount only (`amount` ≠ the payment → INVALID_ARGUMENT naming `amount`), and
//! **the whole fee is refunded whatever the policy**: the payment should never have happened, so
//! the platform keeps no fee on it. **Never refused for the balance**: every receiver's balance is
//! read and its shortfall advanced, within its line or beyond it — the money is the customer's own
//! payment, which the platform received, so it still never pays out more than it received; the
//! merchant's next credits repay the advance first ([`domain::shortfall`]).
//!
//! # Coupon-only refunds
//!
//! A refund whose subsidy share is its whole amount has no cash to pay back: refused before
//! anything is debited with COUPON_ONLY_REFUND (no debit record, no posting).
//!
//! # The postings
//!
//! `cash = R − s`; per receiver `i`: part `R_i`, fee share `φ_i`, merchant part `m_i = R_i − φ_i`,
//! advance `a_i ≤ m_i`, and on a reversal or return `b_i` (repays its advance). Zero lines are
//! omitted; every posting balances. Customer funds stay apart from the platform's own
//! ([`domain::funds`]): what the platform pays in (coupon, fee share given back, advance) is Cr
//! OWN_FUNDS and Dr CHANNEL_RESERVE; what comes back to it (fee, coupon share, advance repaid) is
//! Dr PLATFORM_IN_RESERVE and Cr CHANNEL_RESERVE; the CHANNEL_RESERVE lines of a posting are netted
//! into one. So CHANNEL_RESERVE always equals what the platform owes customers and merchants.
//!
//! | step (request id) | debit | credit | funding: paid in from OWN_FUNDS / back to PLATFORM_IN_RESERVE |
//! |---|---|---|---|
//! | settle (`settle:{trade}`) | CHANNEL_RESERVE(channel) amount − subsidy; SUBSIDY subsidy | per receiver MERCHANT_SETTLEMENT(i) share_i − fee_i − repaid_i and ADVANCE(i) repaid_i; FEE_INCOME Σ fee_i | subsidy / Σ fee_i + Σ repaid_i |
//! | debit (`refund-debit:{refund}`) | per receiver MERCHANT_SETTLEMENT(i) m_i − a_i and ADVANCE(i) a_i; FEE_INCOME Σ φ_i | REFUND_IN_TRANSIT cash; SUBSIDY s | Σ φ_i + Σ a_i / s |
//! | complete (`refund-complete:{refund}`) | REFUND_IN_TRANSIT cash | CHANNEL_RESERVE(channel) cash (nothing when cash = 0) | — |
//! | reverse (`refund-reverse:{refund}`) | REFUND_IN_TRANSIT cash; SUBSIDY s | per receiver MERCHANT_SETTLEMENT(i) m_i − b_i and ADVANCE(i) b_i; FEE_INCOME Σ φ_i | s / Σ φ_i + Σ b_i |
//! | return (`refund-return:{refund}`) | CHANNEL_RESERVE(channel) cash; SUBSIDY s | as reverse | as reverse |
//! | reinstate (`refund-reinstate:{refund}`, a reversed refund the bank paid) | per receiver MERCHANT_SETTLEMENT(i) c_i and MERCHANT_RECEIVABLE(i) m_i − c_i (c_i: what its balance covers); FEE_INCOME Σ φ_i | CHANNEL_RESERVE(channel) cash; SUBSIDY s | Σ φ_i + Σ (m_i − c_i) / s |
//! | reopen (`refund-reopen:{refund}:{attempt}`, a completed refund the bank failed; the next completion is `refund-complete:{refund}:{n}`) | CHANNEL_RESERVE(channel) cash | REFUND_IN_TRANSIT cash | — |
//!
//! After a full refund completed, every account is back where it started once the sweep has moved
//! PLATFORM_IN_RESERVE to OWN_FUNDS: the reserve paid back the cash it took, SUBSIDY got back the whole subsidy, REFUND_IN_TRANSIT is empty, and under
//! PROPORTIONAL each receiver gave back its share less its fee and FEE_INCOME the fees. (Under NONE
//! a receiver gives back its whole share and FEE_INCOME keeps its fee: the receiver ends that fee
//! lower, paid from its other balance.)
//!
//! # Worked example
//!
//! A 100.00 order with a 20.00 platform coupon, split m1 60.00 (fee 0.6%) / r2 40.00 (fee 1%),
//! both PROPORTIONAL. Settled: Dr CHANNEL_RESERVE 99.24 (80.00 cash + 20.00
//! coupon − 0.76 fees), Dr PLATFORM_IN_RESERVE 0.76, Dr SUBSIDY 20.00 → Cr OWN_FUNDS 20.00, Cr m1
//! 59.64, Cr r2 39.60, Cr FEE_INCOME 0.76. A refund of 33.33: m1 `⌊33.33 × 0.6⌋ = 19.99` (remainder .8), r2
//! `⌊33.33 × 0.4⌋ = 13.33` (remainder .2); the missing cent goes to m1 → 20.00 / 13.33. Fee
//! shares 0.36 × 20/60 = 0.12 and 0.40 × 13.33/40 = 0.1333 → 0.13; subsidy share 20 × 33.33/100 =
//! 6.666 → 6.67; cash 26.66. Posted: Dr m1 19.88, Dr r2 13.20, Dr FEE_INCOME 0.25 → Cr
//! REFUND_IN_TRANSIT 26.66, Cr SUBSIDY 6.67, with the funding Dr PLATFORM_IN_RESERVE 6.67 →
//! Cr OWN_FUNDS 0.25, Cr CHANNEL_RESERVE 6.42. Had r2 only 10.00 available and a line of 50.00, its
//! 13.20 would be Dr r2 10.00 and Dr ADVANCE(r2) 3.20.
//!
//! ```
//! use tuikuan_clearing::domain::*;
//! use tuikuan_kernel::Money;
//! let cny = |s: &str| Money::parse(s, "CNY", "amount").unwrap();
//! let policy = |id: &str, rate: &str| MerchantPolicy {
//!     merchant_id: id.into(),
//!     fee_rate: parse_fee_rate(rate, "fee_rate").unwrap(),
//!     fee_refund: FeeRefundPolicy::Proportional,
//!     advance_limit: parse_advance_limit("50", "advance_limit").unwrap(),
//!     advance_currency: Some(tuikuan_kernel::Currency::Cny),
//! };
//! let order = SettleRequest {
//!     trade_id: "t1".into(),
//!     merchant_id: "m1".into(),
//!     channel: "netbank".into(),
//!     amount: cny("100"),
//!     splits: vec![
//!         Split { receiver_id: "m1".into(), amount: cny("60") },
//!         Split { receiver_id: "r2".into(), amount: cny("40") },
//!     ],
//!     subsidy: cny("20"),
//! };
//! let settlement = Settlement::new(&order, |id| {
//!     Some(policy(id, if id == "m1" { "0.006" } else { "0.01" }))
//! })
//! .unwrap();
//! assert_eq!(settlement.fee, cny("0.76"));
//! let refund = DebitRequest {
//!     refund_id: "rf1".into(),
//!     trade_id: "t1".into(),
//!     merchant_id: "m1".into(),
//!     amount: cny("33.33"),
//!     splits: vec![],
//!     error_refund: false,
//! };
//! let plan = settlement.plan_debit(&refund).unwrap();
//! let parts: Vec<(i64, i64)> = plan.parts.iter().map(|p| (p.amount_minor, p.fee_minor)).collect();
//! assert_eq!(parts, vec![(2000, 12), (1333, 13)]);
//! assert_eq!(plan.subsidy_share_minor, 667);
//! // r2 has 10.00 available: 3.20 of its 13.20 is advanced from its line.
//! let advance = advance_needed(plan.parts[1].merchant_minor(), 1000, AdvanceLine::default().room(5000));
//! assert_eq!(advance, 320);
//! let debit = Debit::new(&refund, &settlement, &plan, &[0, advance], 0);
//! assert_eq!(debit.cash_amount(), cny("26.66"));
//! // Six lines of the merchant's side, and the funding: Cr OWN_FUNDS 0.25 + 3.20, Dr
//! // PLATFORM_IN_RESERVE 6.67, Cr CHANNEL_RESERVE the net 3.22.
//! assert_eq!(debit.debit_postings().len(), 9);
//! ```

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::{serve, Clearing, Config, RecoveryReport};
