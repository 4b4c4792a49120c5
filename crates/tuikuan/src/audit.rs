//! `tuikuan audit`: the invariant auditor. One checker, run against a live deployment through the
//! services' public gRPC interfaces only, that reads every service's own records and cross-checks
//! them:
//!
//! 1. **Trial balance**: the ledger is balanced (debits equal credits, per currency).
//! 2. **Never refunded beyond what was paid**: per trade, the live merchant refunds (received,
//!    processing, succeeded) sum to at most the payment, and the business layer's own `refunded`
//!    counter says the same; the clearing center's held debits per trade too.
//! 3. **Never paid twice**: the bank simulator's own books (`ListTransactions`) count, per refund,
//!    the money movements that succeeded and were not returned — interface refunds, payouts and
//!    spreadsheet rows together. More than one is a violation; a SUCCEEDED merchant refund must
//!    have exactly one, a FAILED or REJECTED one none; the bank may not pay a refund nobody asked
//!    for.
//! 4. **Every accepted refund is final or visibly in progress**: a PROCESSING refund has a refund
//!    center order that is not final and says why it waits (a reason, an expected completion or
//!    "waiting for people"); nothing sits without progress for longer than
//!    [`AuditOptions::stale_after_ms`] (RECEIVED ones included).
//! 5. **Merchant balances**: per merchant, the ledger balance equals the settlements of its
//!    payments, minus the merchant part of every refund whose debit holds (debited, completed),
//!    with reversed and returned refunds contributing nothing — each term checked against the
//!    service that owns it (settlements against the business layer's trades, refund terms against
//!    the clearing center's debits); a posting that moves a merchant's money for no reason the
//!    auditor knows is a violation itself. The same for the refund-in-transit account.
//! 6. **Ledger, refund center, payout center and bank agree**: a SUCCEEDED refund's debit is
//!    COMPLETED, a FAILED one's REVERSED (or never taken), a RETURNED one's RETURNED; the
//!    business layer's status matches the refund center's once its steps are delivered; every
//!    PAID payout belongs to an attempt of its refund; the payout center and the bank agree on
//!    whether a payout paid.
//! 7. **The books themselves** ([`books`]): every posting has a reason the auditor knows, the
//!    journal sums to the balances the ledger reports, the reserve identity of `docs/ledger.md`
//!    holds per currency and no part of a reserve is negative.
//!
//! States that are legitimately half-way (a debit PENDING, REVERSING, COMPLETING; an outcome not
//! yet delivered) are counted as in flight, not as violations: an audit of a running system is a
//! snapshot. Run it on a quiet system for a verdict on everything.
//!
//! Use it from code with [`run`] or [`run_with`]; `tuikuan audit` prints the report and exits
//! non-zero on any violation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use anyhow::Context;
use futures::StreamExt;
use rust_decimal::Decimal;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;
use tuikuan_proto::payout::v1 as pay;
use tuikuan_proto::refund::v1 as rfd;

use crate::clients::Clients;

mod advances;
mod books;
mod reopen;

/// Page size of every listing.
const PAGE: u32 = 1000;
/// Violations printed by `Display` before "... and N more".
const SHOWN: usize = 100;

/// Posting request-id prefixes the auditor can explain.
const SETTLE: &str = "settle:";
const DEBIT: &str = "refund-debit:";
const COMPLETE: &str = "refund-complete:";
const REVERSE: &str = "refund-reverse:";
const RETURN: &str = "refund-return:";
/// A FAILED refund the bank paid, taken from the merchant again (debit and completion in one).
const REINSTATE: &str = "refund-reinstate:";

/// How to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// "Now" for staleness, in clock milliseconds; the system clock when `None` (pass the
    /// deployment's clock when it runs on a manual one).
    pub now_ms: Option<i64>,
    /// An unfinished refund without progress for longer than this is a violation (default 7 days).
    pub stale_after_ms: i64,
    /// Concurrent per-refund calls (`GetDebit`, `GetTrade`).
    pub concurrency: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            now_ms: None,
            stale_after_ms: 7 * 24 * 3600 * 1000,
            concurrency: 16,
        }
    }
}

/// What the audit looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCounts {
    /// Merchant refunds, by business-layer status name.
    pub refunds_by_status: BTreeMap<String, usize>,
    pub refunds: usize,
    /// Refunds in a final status (SUCCEEDED, FAILED, REJECTED).
    pub refunds_final: usize,
    pub refund_orders: usize,
    pub trades: usize,
    /// Where trades came from: `ListTrades`, or the trades of refunded orders (`GetTrade`) when
    /// the business layer does not serve `ListTrades`.
    pub trades_source: String,
    pub debits: usize,
    pub postings: usize,
    pub merchants: usize,
    pub payouts: usize,
    pub bank_transactions: usize,
    /// Bank money movements that succeeded and were not returned.
    pub bank_payments: usize,
    /// Refunds the bank paid more than once (a violation each).
    pub paid_twice: usize,
    /// Half-way states seen (a snapshot of a running system has some).
    pub in_flight: usize,
}

/// The auditor's verdict.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Every broken invariant, in words. Empty means the deployment passed.
    pub violations: Vec<String>,
    pub checked: AuditCounts,
    /// Things worth knowing that are not violations (in-flight states, skipped checks).
    pub notes: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, v: String) {
        self.violations.push(v);
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.checked;
        writeln!(f, "audit of {} merchant refunds:", c.refunds)?;
        for (status, n) in &c.refunds_by_status {
            writeln!(f, "  {status:<10} {n}")?;
        }
        writeln!(
            f,
            "checked: {} refund orders, {} trades (from {}), {} debits, {} postings, {} merchants, {} payouts, {} bank transactions ({} payments)",
            c.refund_orders,
            c.trades,
            c.trades_source,
            c.debits,
            c.postings,
            c.merchants,
            c.payouts,
            c.bank_transactions,
            c.bank_payments
        )?;
        writeln!(
            f,
            "final: {}   not final: {}   paid twice: {}   in flight: {}",
            c.refunds_final,
            c.refunds - c.refunds_final,
            c.paid_twice,
            c.in_flight
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if self.violations.is_empty() {
            writeln!(f, "no violations")
        } else {
            writeln!(f, "{} VIOLATIONS:", self.violations.len())?;
            for v in self.violations.iter().take(SHOWN) {
                writeln!(f, "  - {v}")?;
            }
            if self.violations.len() > SHOWN {
                writeln!(f, "  ... and {} more", self.violations.len() - SHOWN)?;
            }
            Ok(())
        }
    }
}

/// Audits the deployment behind `clients` with the default options.
pub async fn run(clients: &Clients) -> anyhow::Result<AuditReport> {
    run_with(clients, &AuditOptions::default()).await
}

/// Audits the deployment behind `clients`. An error means a service could not be read (the audit
/// is then incomplete); broken invariants are in the report.
pub async fn run_with(clients: &Clients, options: &AuditOptions) -> anyhow::Result<AuditReport> {
    let now_ms = options
        .now_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let concurrency = options.concurrency.max(1);
    let snapshot = Snapshot::load(clients, concurrency).await?;
    let mut report = AuditReport::default();
    snapshot.count(&mut report);
    snapshot.trial_balance(&mut report);
    books::check(snapshot.postings.values(), &snapshot.trial, &mut report)?;
    snapshot.refunds_within_payments(&mut report)?;
    snapshot.paid_at_most_once(&mut report);
    snapshot.final_or_in_progress(&mut report, now_ms, options.stale_after_ms);
    snapshot.ledger_agrees(&mut report)?;
    snapshot.payouts_agree(&mut report);
    Ok(report)
}

// ------------------------------------------------------------------------------------------------
// Reading every service
// ------------------------------------------------------------------------------------------------

/// Everything the auditor read, indexed.
struct Snapshot {
    refunds: Vec<biz::Refund>,
    orders: HashMap<String, rfd::RefundOrder>,
    /// refund_id -> debit (absent: the clearing center has none).
    debits: HashMap<String, clr::Debit>,
    trades: Vec<biz::Trade>,
    trades_source: &'static str,
    /// request_id -> posting.
    postings: HashMap<String, acc::Posting>,
    posting_count: usize,
    trial: acc::TrialBalanceResponse,
    payouts: Vec<pay::Payout>,
    bank_txs: Vec<bank::BankTransaction>,
}

impl Snapshot {
    async fn load(c: &Clients, concurrency: usize) -> anyhow::Result<Snapshot> {
        let refunds = list_business_refunds(c).await?;
        let orders = list_refund_orders(c)
            .await?
            .into_iter()
            .map(|o| (o.refund_id.clone(), o))
            .collect();
        let debits = get_debits(c, &refunds, concurrency).await?;
        let (trades, trades_source) = list_trades(c, &refunds, concurrency).await?;
        let all_postings = list_postings(c).await?;
        let posting_count = all_postings.len();
        let postings = all_postings
            .into_iter()
            .map(|p| (p.request_id.clone(), p))
            .collect();
        let trial = c
            .accounting
            .clone()
            .trial_balance(acc::TrialBalanceRequest::default())
            .await
            .context("accounting: trial balance")?
            .into_inner();
        let payouts = list_payouts(c).await?;
        let bank_txs = list_bank_transactions(c).await?;
        Ok(Snapshot {
            refunds,
            orders,
            debits,
            trades,
            trades_source,
            postings,
            posting_count,
            trial,
            payouts,
            bank_txs,
        })
    }

    fn count(&self, report: &mut AuditReport) {
        let c = &mut report.checked;
        c.refunds = self.refunds.len();
        for r in &self.refunds {
            *c.refunds_by_status.entry(biz_status(r.status)).or_default() += 1;
            if is_final(r.status) {
                c.refunds_final += 1;
            }
        }
        c.refund_orders = self.orders.len();
        c.trades = self.trades.len();
        c.trades_source = self.trades_source.to_string();
        c.debits = self.debits.len();
        c.postings = self.posting_count;
        c.payouts = self.payouts.len();
        c.bank_transactions = self.bank_txs.len();
        if self.trades_source != "ListTrades" {
            report.notes.push(
                "the business layer does not serve ListTrades: trades come from refunded orders, so settlements of unrefunded payments are not matched to trades"
                    .into(),
            );
        }
    }

    fn refund_by_id(&self) -> HashMap<&str, &biz::Refund> {
        self.refunds
            .iter()
            .map(|r| (r.refund_id.as_str(), r))
            .collect()
    }

    // --------------------------------------------------------------------------------------------
    // 1. trial balance

    fn trial_balance(&self, report: &mut AuditReport) {
        if !self.trial.balanced {
            report.violation("the trial balance is not balanced".into());
        }
        for t in &self.trial.totals {
            if t.total_debits != t.total_credits {
                report.violation(format!(
                    "trial balance {}: debits {} but credits {}",
                    t.currency, t.total_debits, t.total_credits
                ));
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // 2. never refunded beyond what was paid

    fn refunds_within_payments(&self, report: &mut AuditReport) -> anyhow::Result<()> {
        let mut live: HashMap<(&str, &str), Decimal> = HashMap::new();
        for r in &self.refunds {
            if is_live(r.status) {
                *live
                    .entry((r.merchant_id.as_str(), r.order_no.as_str()))
                    .or_default() += dec(&r.amount, "business refund amount")?;
            }
        }
        let mut known = BTreeSet::new();
        for t in &self.trades {
            let key = (t.merchant_id.as_str(), t.order_no.as_str());
            known.insert(key);
            let paid = dec(&t.amount, "trade amount")?;
            let refunded = dec(&t.refunded, "trade refunded")?;
            let sum = live.get(&key).copied().unwrap_or_default();
            if sum > paid {
                report.violation(format!(
                    "trade {} ({} {}): refunds {} exceed the payment {}",
                    t.trade_id, t.merchant_id, t.order_no, sum, paid
                ));
            }
            if refunded > paid {
                report.violation(format!(
                    "trade {}: refunded counter {} exceeds the payment {}",
                    t.trade_id, refunded, paid
                ));
            }
            if refunded != sum {
                report.violation(format!(
                    "trade {}: refunded counter {} but its live refunds sum to {}",
                    t.trade_id, refunded, sum
                ));
            }
        }
        for ((merchant, order), sum) in &live {
            if !known.contains(&(*merchant, *order)) {
                report.violation(format!(
                    "refunds of {sum} on {merchant} {order}, a trade the business layer does not know"
                ));
            }
        }
        // The clearing center's own guard: debits that hold, per trade, within the payment.
        let paid_by_trade: HashMap<&str, Decimal> = self
            .trades
            .iter()
            .filter_map(|t| Some((t.trade_id.as_str(), t.amount.parse::<Decimal>().ok()?)))
            .collect();
        let mut held: HashMap<&str, Decimal> = HashMap::new();
        for d in self.debits.values() {
            if holds(d.status) {
                *held.entry(d.trade_id.as_str()).or_default() += dec(&d.amount, "debit amount")?;
            }
        }
        for (trade, sum) in held {
            if let Some(paid) = paid_by_trade.get(trade) {
                if sum > *paid {
                    report.violation(format!(
                        "trade {trade}: clearing debits {sum} exceed the payment {paid}"
                    ));
                }
            }
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------------------
    // 3. never paid twice (the bank's own books)

    fn paid_at_most_once(&self, report: &mut AuditReport) {
        // Payouts the bank books without a reference: the payout center knows their refund.
        let payout_refund: HashMap<&str, &str> = self
            .payouts
            .iter()
            .map(|p| (p.payout_id.as_str(), p.refund_id.as_str()))
            .collect();
        let mut paid: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &self.bank_txs {
            if t.status != bank::TxStatus::TxSucceeded as i32 {
                continue;
            }
            report.checked.bank_payments += 1;
            let refund_id = match (t.refund_id.as_str(), payout_refund.get(t.id.as_str())) {
                ("", Some(r)) => (*r).to_string(),
                ("", None) => {
                    report.violation(format!(
                        "bank {} {} paid {} {} for no known refund",
                        kind_name(t.kind),
                        t.id,
                        t.amount,
                        t.currency
                    ));
                    continue;
                }
                (r, _) => r.to_string(),
            };
            paid.entry(refund_id)
                .or_default()
                .push(format!("{} {}", kind_name(t.kind), t.id));
        }
        let by_id = self.refund_by_id();
        for (refund_id, movements) in &paid {
            if movements.len() > 1 {
                report.checked.paid_twice += 1;
                report.violation(format!(
                    "refund {refund_id} was paid {} times by the bank: {}",
                    movements.len(),
                    movements.join(", ")
                ));
            }
            match by_id.get(refund_id.as_str()) {
                None => report.violation(format!(
                    "the bank paid refund {refund_id} ({}), which the business layer does not know",
                    movements.join(", ")
                )),
                Some(r)
                    if r.status == biz::RefundStatus::Failed as i32
                        || r.status == biz::RefundStatus::Rejected as i32 =>
                {
                    report.violation(format!(
                        "refund {refund_id} is {} but the bank paid it ({})",
                        biz_status(r.status),
                        movements.join(", ")
                    ))
                }
                Some(_) => {}
            }
        }
        for r in &self.refunds {
            if r.status == biz::RefundStatus::Succeeded as i32
                && !paid.contains_key(r.refund_id.as_str())
            {
                report.violation(format!(
                    "refund {} is SUCCEEDED but the bank has no payment for it",
                    r.refund_id
                ));
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // 4. every accepted refund final or visibly in progress

    fn final_or_in_progress(&self, report: &mut AuditReport, now_ms: i64, stale_after_ms: i64) {
        for r in &self.refunds {
            let status = biz::RefundStatus::try_from(r.status);
            match status {
                Ok(biz::RefundStatus::Received) => {
                    if now_ms - r.updated_at_ms.max(r.created_at_ms) > stale_after_ms {
                        report.violation(format!(
                            "refund {} is RECEIVED (not yet promised) without progress since {}",
                            r.refund_id,
                            at(r.updated_at_ms.max(r.created_at_ms))
                        ));
                    } else {
                        report.checked.in_flight += 1;
                    }
                }
                Ok(biz::RefundStatus::Processing) => {
                    let Some(o) = self.orders.get(&r.refund_id) else {
                        report.violation(format!(
                            "refund {} is PROCESSING (promised) but the refund center has no order",
                            r.refund_id
                        ));
                        continue;
                    };
                    if o.refund_status != rfd::RefundStatus::Processing as i32 {
                        if o.pending_steps > 0 {
                            report.checked.in_flight += 1;
                        } else {
                            report.violation(format!(
                                "refund {} is PROCESSING at the business layer but {} at the refund center with nothing left to deliver",
                                r.refund_id,
                                rfd_status(o.refund_status)
                            ));
                        }
                        continue;
                    }
                    if o.reason.trim().is_empty()
                        && o.expected_completion_ms == 0
                        && !o.waiting_manual
                    {
                        report.violation(format!(
                            "refund {} is PROCESSING with no reason, no expected completion and not waiting for people",
                            r.refund_id
                        ));
                    }
                    let progress = last_progress(o).max(r.updated_at_ms);
                    if now_ms - progress > stale_after_ms {
                        report.violation(format!(
                            "refund {} has made no progress since {} (method {}, attempt {}, reason {:?})",
                            r.refund_id,
                            at(progress),
                            method_name(o.method),
                            o.attempt,
                            o.reason
                        ));
                    }
                }
                Ok(
                    biz::RefundStatus::Succeeded
                    | biz::RefundStatus::Failed
                    | biz::RefundStatus::Rejected,
                ) => {}
                _ => report.violation(format!(
                    "refund {} has an unknown status {}",
                    r.refund_id, r.status
                )),
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // 5 and 6: the ledger against the clearing center, the refund center and the business layer

    fn ledger_agrees(&self, report: &mut AuditReport) -> anyhow::Result<()> {
        let by_id = self.refund_by_id();
        // The merchant-settlement and refund-in-transit effect of every posting, by account.
        let mut explained: BTreeMap<AccountKey, Decimal> = BTreeMap::new();
        let mut add = |key: AccountKey, v: Decimal| *explained.entry(key).or_default() += v;

        // Settlements: each belongs to a settled trade and moves exactly the payment.
        let trades: HashMap<&str, &biz::Trade> = self
            .trades
            .iter()
            .map(|t| (t.trade_id.as_str(), t))
            .collect();
        for t in &self.trades {
            let posted = self.postings.get(&format!("{SETTLE}{}", t.trade_id));
            match (t.settle_status == biz::SettleStatus::Settled as i32, posted) {
                (true, None) => report.violation(format!(
                    "trade {} is SETTLED but the ledger has no settlement posting",
                    t.trade_id
                )),
                (false, Some(_)) => report.checked.in_flight += 1,
                _ => {}
            }
            if let Some(p) = posted {
                // What the payment is split into: the receivers' credits, advances repaid, fees
                // (the funding lines between own funds and the reserve are not the payment).
                let mut moved = Decimal::ZERO;
                for kind in [
                    acc::AccountType::MerchantSettlement,
                    acc::AccountType::Advance,
                    acc::AccountType::FeeIncome,
                ] {
                    moved += account_total(p, kind, acc::Side::Credit)?;
                }
                let paid = dec(&t.amount, "trade amount")?;
                if moved != paid {
                    report.violation(format!(
                        "trade {}: settlement posting credits {moved}, the payment is {paid}",
                        t.trade_id
                    ));
                }
            }
        }

        // Refund debits against the clearing center's debits and the refund center's orders.
        let mut refund_ids: BTreeSet<&str> = self.debits.keys().map(|k| k.as_str()).collect();
        for p in self.postings.values() {
            if let Some(id) = refund_of(&p.request_id) {
                refund_ids.insert(id);
            }
        }
        for refund_id in refund_ids {
            let debit = self.debits.get(refund_id);
            let get = |prefix: &str| self.postings.get(&format!("{prefix}{refund_id}"));
            let (d, c, v, r) = (get(DEBIT), get(COMPLETE), get(REVERSE), get(RETURN));
            let c = reopen::standing_completion(&self.postings, refund_id, c, report);
            // A reinstated refund was reversed and then taken again: its reversal and its
            // reinstatement stand where a completion would.
            let ri = get(REINSTATE);
            let done = c.is_some() != (v.is_some() && ri.is_some());
            let Some(debit) = debit else {
                if d.is_some() || c.is_some() || v.is_some() || r.is_some() || ri.is_some() {
                    report.violation(format!(
                        "the ledger has postings for refund {refund_id}, which the clearing center has no debit for"
                    ));
                }
                continue;
            };
            if !by_id.contains_key(refund_id) {
                report.violation(format!(
                    "the clearing center has a debit for refund {refund_id}, which the business layer does not know"
                ));
            }
            let status = clr::DebitStatus::try_from(debit.status).ok();
            use clr::DebitStatus as S;
            let not_reinstated = ri.is_none();
            let ok = match status {
                // A reopen under way: its completion still stands until the reopen is posted.
                Some(S::Reopening) => {
                    report.checked.in_flight += 1;
                    d.is_some() && v.is_none() && r.is_none()
                }
                Some(S::Reinstating) => {
                    report.checked.in_flight += 1;
                    d.is_some() && v.is_some() && c.is_none() && r.is_none()
                }
                Some(S::Completed) => d.is_some() && done && r.is_none(),
                Some(S::Returning) => {
                    report.checked.in_flight += 1;
                    d.is_some() && done
                }
                Some(S::Returned) => d.is_some() && done && r.is_some(),
                _ if !not_reinstated => false,
                Some(S::Pending) => {
                    report.checked.in_flight += 1;
                    c.is_none() && v.is_none() && r.is_none()
                }
                Some(S::Debited) => d.is_some() && c.is_none() && v.is_none() && r.is_none(),
                Some(S::Rejected) => d.is_none() && c.is_none() && v.is_none() && r.is_none(),
                Some(S::Reversing) => {
                    report.checked.in_flight += 1;
                    c.is_none() && r.is_none()
                }
                Some(S::Reversed) => c.is_none() && r.is_none() && d.is_some() == v.is_some(),
                Some(S::Completing) => {
                    report.checked.in_flight += 1;
                    d.is_some() && v.is_none() && r.is_none()
                }
                Some(S::Unspecified) | None => false,
            };
            if !ok {
                let has = |p: Option<&acc::Posting>, name: &str| {
                    p.map(|_| name.to_string()).unwrap_or_default()
                };
                let present: Vec<String> = [
                    has(d, "debit"),
                    has(c, "complete"),
                    has(v, "reverse"),
                    has(r, "return"),
                    has(ri, "reinstate"),
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
                report.violation(format!(
                    "refund {refund_id}: clearing says {} but the ledger has postings [{}]",
                    debit_status(debit.status),
                    present.join(", ")
                ));
            }
            // The merchant part the clearing center computed is what the debit posting took.
            if let Some(d) = d {
                let taken =
                    account_total(d, acc::AccountType::MerchantSettlement, acc::Side::Debit)?;
                let part = dec(&debit.merchant_amount, "debit merchant_amount")?;
                // Where the platform advanced part of it (垫付), the settlement account gave less.
                let advanced = account_total(d, acc::AccountType::Advance, acc::Side::Debit)?;
                if advanced.is_zero() && taken != part {
                    report.violation(format!(
                        "refund {refund_id}: the debit posting takes {taken} from merchant settlement, clearing says the merchant part is {part}"
                    ));
                } else if taken > part {
                    report.violation(format!(
                        "refund {refund_id}: the debit posting takes {taken} from merchant settlement, more than the merchant part {part}"
                    ));
                }
            }
            // A reinstatement takes the whole merchant part again: from the balance, and what the
            // balance could not cover as a receivable from the merchant (never a second refund).
            if let Some(ri) = ri {
                let taken =
                    account_total(ri, acc::AccountType::MerchantSettlement, acc::Side::Debit)?
                        + account_total(
                            ri,
                            acc::AccountType::MerchantReceivable,
                            acc::Side::Debit,
                        )?;
                let part = dec(&debit.merchant_amount, "debit merchant_amount")?;
                if taken != part {
                    report.violation(format!(
                        "refund {refund_id}: the reinstatement takes {taken} from the merchant, clearing says the merchant part is {part}"
                    ));
                }
            }
            // Reversed and returned refunds leave every merchant account as it was.
            let mut net: BTreeMap<AccountKey, Decimal> = BTreeMap::new();
            for p in [d, v, r, ri].into_iter().flatten() {
                for (key, value) in credit_normal_effects(p)? {
                    *net.entry(key).or_default() += value;
                }
            }
            for p in [c].into_iter().flatten() {
                for (key, value) in credit_normal_effects(p)? {
                    *net.entry(key).or_default() += value;
                }
            }
            if matches!(status, Some(S::Reversed) | Some(S::Returned)) {
                // Less what its advance was repaid from elsewhere meanwhile (audit/advances.rs).
                let advanced = advances::net_advanced([d, v, r, ri].into_iter().flatten())?;
                for (key, value) in &net {
                    let repaid = advanced.get(&(key.1.clone(), key.2.clone()));
                    if key.0 == acc::AccountType::MerchantSettlement as i32
                        && *value != repaid.copied().unwrap_or_default()
                    {
                        report.violation(format!(
                            "refund {refund_id} is {} but leaves {value} on merchant {}'s settlement account",
                            debit_status(debit.status),
                            key.1
                        ));
                    }
                }
            }
            if matches!(
                status,
                Some(S::Completed) | Some(S::Reversed) | Some(S::Returned) | Some(S::Rejected)
            ) {
                let in_transit: Decimal = net
                    .iter()
                    .filter(|(k, _)| k.0 == acc::AccountType::RefundInTransit as i32)
                    .map(|(_, v)| *v)
                    .sum();
                if !in_transit.is_zero() {
                    report.violation(format!(
                        "refund {refund_id} is {} but leaves {in_transit} in refund-in-transit",
                        debit_status(debit.status)
                    ));
                }
            }
            for (key, value) in net {
                add(key, value);
            }
            self.order_agrees(report, refund_id, debit, by_id.get(refund_id).copied());
        }

        // Every other posting: settlements of known trades are explained; anything else that
        // moves merchant or in-transit money is not.
        for p in self.postings.values() {
            let effects = credit_normal_effects(p)?;
            if let Some(trade_id) = p.request_id.strip_prefix(SETTLE) {
                if self.trades_source == "ListTrades" && !trades.contains_key(trade_id) {
                    report.violation(format!(
                        "settlement posting {} is for a trade the business layer does not know",
                        p.request_id
                    ));
                }
                for (key, value) in effects {
                    add(key, value);
                }
                continue;
            }
            if refund_of(&p.request_id).is_some() {
                continue;
            }
            for (key, value) in effects {
                if !value.is_zero() {
                    report.violation(format!(
                        "posting {} ({:?}) moves {value} on {} {} for a reason the auditor does not know",
                        p.posting_id,
                        p.request_id,
                        account_type_name(key.0),
                        key.1
                    ));
                    add(key, value);
                }
            }
        }

        // And the balances the ledger reports are what those explained movements add up to.
        let mut merchants = BTreeSet::new();
        for b in &self.trial.accounts {
            let Some(a) = &b.account else { continue };
            let watched = a.r#type == acc::AccountType::MerchantSettlement as i32
                || a.r#type == acc::AccountType::RefundInTransit as i32;
            if !watched {
                continue;
            }
            if a.r#type == acc::AccountType::MerchantSettlement as i32 {
                merchants.insert(a.owner.clone());
            }
            let key = AccountKey(a.r#type, a.owner.clone(), a.currency.clone());
            let balance = dec(&b.balance, "account balance")?;
            let want = explained.remove(&key).unwrap_or_default();
            if balance != want {
                report.violation(format!(
                    "{} {} {}: the ledger says {balance}, settlements and refunds explain {want}",
                    account_type_name(a.r#type),
                    a.owner,
                    a.currency
                ));
            }
        }
        for (key, want) in explained {
            if !want.is_zero() {
                report.violation(format!(
                    "{} {} {}: {want} explained by postings but the trial balance has no such account",
                    account_type_name(key.0),
                    key.1,
                    key.2
                ));
            }
        }
        report.checked.merchants = merchants.len();
        Ok(())
    }

    /// The refund center's order and the business layer's refund agree with the debit.
    fn order_agrees(
        &self,
        report: &mut AuditReport,
        refund_id: &str,
        debit: &clr::Debit,
        refund: Option<&biz::Refund>,
    ) {
        use clr::DebitStatus as S;
        let status = clr::DebitStatus::try_from(debit.status).ok();
        let Some(order) = self.orders.get(refund_id) else {
            // Never handed over: the debit must not have completed.
            if matches!(
                status,
                Some(S::Completed | S::Completing | S::Returned | S::Returning)
            ) {
                report.violation(format!(
                    "refund {refund_id}: debit {} but the refund center has no order",
                    debit_status(debit.status)
                ));
            }
            return;
        };
        let settled = order.pending_steps == 0;
        let want: &[S] = match rfd::RefundStatus::try_from(order.refund_status) {
            // A reopened refund's completion is being undone.
            Ok(rfd::RefundStatus::Processing) => &[S::Debited, S::Completed, S::Reopening],
            Ok(rfd::RefundStatus::Succeeded) if settled => {
                &[S::Completed, S::Returning, S::Returned]
            }
            // A reinstated refund's debit was reversed and is taken again by its last step.
            Ok(rfd::RefundStatus::Succeeded) => &[
                S::Debited,
                S::Completing,
                S::Completed,
                S::Reversing,
                S::Reversed,
                S::Reinstating,
            ],
            Ok(rfd::RefundStatus::Failed) if settled => &[S::Reversed, S::Rejected],
            Ok(rfd::RefundStatus::Failed) => &[
                S::Debited,
                S::Reversing,
                S::Reversed,
                S::Completed,
                S::Reopening,
            ],
            Ok(rfd::RefundStatus::Returned) if settled => &[S::Returned],
            Ok(rfd::RefundStatus::Returned) => &[S::Completed, S::Returning, S::Returned],
            _ => &[],
        };
        if !status.is_some_and(|s| want.contains(&s)) {
            report.violation(format!(
                "refund {refund_id}: the refund center says {} ({} steps pending) but the debit is {}",
                rfd_status(order.refund_status),
                order.pending_steps,
                debit_status(debit.status)
            ));
        }
        if !settled {
            report.checked.in_flight += 1;
            return;
        }
        let Some(refund) = refund else { return };
        let business = biz::RefundStatus::try_from(refund.status).ok();
        let agrees = match rfd::RefundStatus::try_from(order.refund_status) {
            Ok(rfd::RefundStatus::Processing) => matches!(
                business,
                Some(biz::RefundStatus::Processing | biz::RefundStatus::Received)
            ),
            Ok(rfd::RefundStatus::Succeeded) => business == Some(biz::RefundStatus::Succeeded),
            Ok(rfd::RefundStatus::Failed) => matches!(
                business,
                Some(biz::RefundStatus::Failed | biz::RefundStatus::Rejected)
            ),
            Ok(rfd::RefundStatus::Returned) => business == Some(biz::RefundStatus::Failed),
            _ => false,
        };
        if !agrees {
            report.violation(format!(
                "refund {refund_id}: the refund center says {} with every step delivered, the business layer says {}",
                rfd_status(order.refund_status),
                biz_status(refund.status)
            ));
        }
    }

    // --------------------------------------------------------------------------------------------
    // 6 (continued): payouts

    fn payouts_agree(&self, report: &mut AuditReport) {
        let bank_by_id: HashMap<&str, &bank::BankTransaction> = self
            .bank_txs
            .iter()
            .filter(|t| t.kind == bank::TxKind::Payout as i32)
            .map(|t| (t.id.as_str(), t))
            .collect();
        for p in &self.payouts {
            let status = pay::PayoutStatus::try_from(p.status).ok();
            if status == Some(pay::PayoutStatus::Paid)
                || status == Some(pay::PayoutStatus::Returned)
            {
                match self.orders.get(&p.refund_id) {
                    None => report.violation(format!(
                        "payout {} is {} for refund {}, which the refund center does not know",
                        p.payout_id,
                        payout_status(p.status),
                        p.refund_id
                    )),
                    Some(o) => {
                        let used = o.bank_reference_id == p.payout_id
                            || o.attempts
                                .iter()
                                .any(|a| a.bank_reference_id == p.payout_id);
                        if !used {
                            report.violation(format!(
                                "payout {} is {} but no attempt of refund {} used it",
                                p.payout_id,
                                payout_status(p.status),
                                p.refund_id
                            ));
                        }
                    }
                }
            }
            let bank_tx = bank_by_id.get(p.payout_id.as_str());
            let bank_status = bank_tx.and_then(|t| bank::TxStatus::try_from(t.status).ok());
            use bank::TxStatus as B;
            use pay::PayoutStatus as P;
            let ok = match (status, bank_status) {
                (Some(P::Created), None | Some(B::TxAccepted)) => true,
                // The bank's answer to the submission may not be recorded yet.
                (Some(P::Created), Some(_)) => {
                    report.checked.in_flight += 1;
                    true
                }
                (Some(P::Sent), Some(B::TxAccepted)) => true,
                (Some(P::Sent), Some(B::TxSucceeded | B::TxFailed | B::TxReturned)) => {
                    report.checked.in_flight += 1;
                    true
                }
                (Some(P::Paid), Some(B::TxSucceeded)) => true,
                (Some(P::Paid), Some(B::TxReturned)) => {
                    report.checked.in_flight += 1;
                    true
                }
                (Some(P::Failed), None | Some(B::TxFailed | B::TxRejected)) => true,
                (Some(P::Returned), Some(B::TxReturned)) => true,
                _ => false,
            };
            if !ok {
                report.violation(format!(
                    "payout {} of refund {}: the payout center says {}, the bank says {}",
                    p.payout_id,
                    p.refund_id,
                    payout_status(p.status),
                    bank_status
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|| "nothing (unknown payout)".into())
                ));
            }
        }
        let known: BTreeSet<&str> = self.payouts.iter().map(|p| p.payout_id.as_str()).collect();
        for t in bank_by_id.values() {
            if !known.contains(t.id.as_str()) {
                report.violation(format!(
                    "the bank has payout {} ({}), which the payout center does not know",
                    t.id,
                    bank::TxStatus::try_from(t.status)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?")
                ));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Listings
// ------------------------------------------------------------------------------------------------

/// Every merchant refund, all merchants.
pub async fn list_business_refunds(c: &Clients) -> anyhow::Result<Vec<biz::Refund>> {
    let mut client = c.business.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_refunds(biz::ListRefundsRequest {
                merchant_id: String::new(),
                status: 0,
                limit: PAGE,
                after: after.clone(),
            })
            .await
            .context("business: list refunds")?
            .into_inner()
            .refunds;
        let Some(last) = page.last() else { break };
        after = last.refund_id.clone();
        all.extend(page);
    }
    Ok(all)
}

async fn list_refund_orders(c: &Clients) -> anyhow::Result<Vec<rfd::RefundOrder>> {
    let mut client = c.refund.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_refunds(rfd::ListRefundsRequest {
                limit: PAGE,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .context("refund center: list refunds")?
            .into_inner()
            .refunds;
        let Some(last) = page.last() else { break };
        after = last.refund_id.clone();
        all.extend(page);
    }
    Ok(all)
}

async fn get_debits(
    c: &Clients,
    refunds: &[biz::Refund],
    concurrency: usize,
) -> anyhow::Result<HashMap<String, clr::Debit>> {
    let results: Vec<anyhow::Result<Option<clr::Debit>>> =
        futures::stream::iter(refunds.iter().map(|r| {
            let mut client = c.clearing.clone();
            let refund_id = r.refund_id.clone();
            async move {
                match client
                    .get_debit(clr::GetDebitRequest {
                        refund_id: refund_id.clone(),
                    })
                    .await
                {
                    Ok(d) => Ok(Some(d.into_inner())),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(anyhow::anyhow!("clearing: get debit {refund_id}: {s}")),
                }
            }
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut debits = HashMap::new();
    for r in results {
        if let Some(d) = r? {
            debits.insert(d.refund_id.clone(), d);
        }
    }
    Ok(debits)
}

/// Every trade: `ListTrades` when the business layer serves it, else the trades of refunded
/// orders one by one.
async fn list_trades(
    c: &Clients,
    refunds: &[biz::Refund],
    concurrency: usize,
) -> anyhow::Result<(Vec<biz::Trade>, &'static str)> {
    let mut client = c.business.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = match client
            .list_trades(biz::ListTradesRequest {
                merchant_id: String::new(),
                limit: PAGE,
                after: after.clone(),
            })
            .await
        {
            Ok(p) => p.into_inner().trades,
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Ok((
                    trades_of_refunds(c, refunds, concurrency).await?,
                    "GetTrade",
                ))
            }
            Err(s) => return Err(anyhow::anyhow!("business: list trades: {s}")),
        };
        let Some(last) = page.last() else { break };
        after = last.trade_id.clone();
        all.extend(page);
    }
    Ok((all, "ListTrades"))
}

async fn trades_of_refunds(
    c: &Clients,
    refunds: &[biz::Refund],
    concurrency: usize,
) -> anyhow::Result<Vec<biz::Trade>> {
    let keys: BTreeSet<(String, String)> = refunds
        .iter()
        .map(|r| (r.merchant_id.clone(), r.order_no.clone()))
        .collect();
    let results: Vec<anyhow::Result<Option<biz::Trade>>> =
        futures::stream::iter(keys.into_iter().map(|(merchant_id, order_no)| {
            let mut client = c.business.clone();
            async move {
                match client
                    .get_trade(biz::GetTradeRequest {
                        merchant_id: merchant_id.clone(),
                        order_no: order_no.clone(),
                    })
                    .await
                {
                    Ok(t) => Ok(Some(t.into_inner())),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(anyhow::anyhow!(
                        "business: get trade {merchant_id} {order_no}: {s}"
                    )),
                }
            }
        }))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut trades = Vec::new();
    for r in results {
        trades.extend(r?);
    }
    trades.sort_by(|a, b| a.trade_id.cmp(&b.trade_id));
    Ok(trades)
}

async fn list_postings(c: &Clients) -> anyhow::Result<Vec<acc::Posting>> {
    let mut client = c.accounting.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_postings(acc::ListPostingsRequest {
                account: None,
                limit: PAGE,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .context("accounting: list postings")?
            .into_inner()
            .postings;
        let Some(last) = page.last() else { break };
        after = last.posting_id.clone();
        all.extend(page);
    }
    Ok(all)
}

async fn list_payouts(c: &Clients) -> anyhow::Result<Vec<pay::Payout>> {
    let mut client = c.payout.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_payouts(pay::ListPayoutsRequest {
                limit: PAGE,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .context("payout center: list payouts")?
            .into_inner()
            .payouts;
        let Some(last) = page.last() else { break };
        after = last.payout_id.clone();
        all.extend(page);
    }
    Ok(all)
}

/// The bank simulator's own books.
pub async fn list_bank_transactions(c: &Clients) -> anyhow::Result<Vec<bank::BankTransaction>> {
    let mut client = c.bank.clone();
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .list_transactions(bank::ListTransactionsRequest {
                limit: PAGE,
                after: after.clone(),
                kind: 0,
            })
            .await
            .context("bank: list transactions")?
            .into_inner()
            .transactions;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        all.extend(page);
    }
    Ok(all)
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// (account type, owner, currency).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AccountKey(i32, String, String);

fn dec(s: &str, what: &str) -> anyhow::Result<Decimal> {
    s.parse::<Decimal>()
        .with_context(|| format!("{what} {s:?} from a service is not a decimal"))
}

/// The refund a posting is about, from its request id.
fn refund_of(request_id: &str) -> Option<&str> {
    [DEBIT, COMPLETE, REVERSE, RETURN, REINSTATE, reopen::REOPEN]
        .iter()
        .find_map(|p| request_id.strip_prefix(p))
        .map(reopen::refund_part)
}

fn account_total(
    p: &acc::Posting,
    kind: acc::AccountType,
    side: acc::Side,
) -> anyhow::Result<Decimal> {
    let mut sum = Decimal::ZERO;
    for e in &p.entries {
        let is = e.account.as_ref().is_some_and(|a| a.r#type == kind as i32);
        if is && e.side == side as i32 {
            sum += dec(&e.amount, "entry amount")?;
        }
    }
    Ok(sum)
}

/// The posting's effect on merchant-settlement and refund-in-transit accounts (both
/// credit-normal: credits add, debits subtract).
fn credit_normal_effects(p: &acc::Posting) -> anyhow::Result<Vec<(AccountKey, Decimal)>> {
    let mut out = Vec::new();
    for e in &p.entries {
        let Some(a) = &e.account else { continue };
        if a.r#type != acc::AccountType::MerchantSettlement as i32
            && a.r#type != acc::AccountType::RefundInTransit as i32
        {
            continue;
        }
        let v = dec(&e.amount, "entry amount")?;
        let signed = if e.side == acc::Side::Credit as i32 {
            v
        } else {
            -v
        };
        out.push((
            AccountKey(a.r#type, a.owner.clone(), a.currency.clone()),
            signed,
        ));
    }
    Ok(out)
}

/// The latest instant the refund center's order shows activity.
fn last_progress(o: &rfd::RefundOrder) -> i64 {
    o.attempts
        .iter()
        .flat_map(|a| [a.started_at_ms, a.ended_at_ms])
        .chain([o.created_at_ms, o.submitted_at_ms, o.finalized_at_ms])
        .max()
        .unwrap_or(0)
}

fn is_final(status: i32) -> bool {
    status == biz::RefundStatus::Succeeded as i32
        || status == biz::RefundStatus::Failed as i32
        || status == biz::RefundStatus::Rejected as i32
}

/// Statuses that reserve part of the trade.
fn is_live(status: i32) -> bool {
    status == biz::RefundStatus::Received as i32
        || status == biz::RefundStatus::Processing as i32
        || status == biz::RefundStatus::Succeeded as i32
}

/// Debit statuses whose money is taken from the merchant (or on its way there).
fn holds(status: i32) -> bool {
    use clr::DebitStatus as S;
    matches!(
        clr::DebitStatus::try_from(status),
        Ok(S::Pending
            | S::Debited
            | S::Completing
            | S::Completed
            | S::Reversing
            | S::Returning
            | S::Reinstating
            | S::Reopening)
    )
}

fn at(ms: i64) -> String {
    tuikuan_kernel::clock::from_ms(ms).to_rfc3339()
}

fn biz_status(v: i32) -> String {
    biz::RefundStatus::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {v}"))
}

fn rfd_status(v: i32) -> String {
    rfd::RefundStatus::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {v}"))
}

fn debit_status(v: i32) -> String {
    clr::DebitStatus::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {v}"))
}

fn payout_status(v: i32) -> String {
    pay::PayoutStatus::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {v}"))
}

fn method_name(v: i32) -> String {
    rfd::RefundMethod::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("method {v}"))
}

fn kind_name(v: i32) -> &'static str {
    match bank::TxKind::try_from(v) {
        Ok(bank::TxKind::Refund) => "REFUND",
        Ok(bank::TxKind::Payout) => "PAYOUT",
        Ok(bank::TxKind::File) => "FILE",
        _ => "?",
    }
}

fn account_type_name(v: i32) -> &'static str {
    acc::AccountType::try_from(v)
        .map(|t| t.as_str_name())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn entry(
        kind: acc::AccountType,
        owner: &str,
        side: acc::Side,
        amount: &str,
    ) -> acc::Entry {
        acc::Entry {
            account: Some(acc::Account {
                r#type: kind as i32,
                owner: owner.into(),
                currency: "CNY".into(),
            }),
            side: side as i32,
            amount: amount.into(),
            ..Default::default()
        }
    }

    #[test]
    fn effects_and_totals_of_a_refund_debit() {
        let p = acc::Posting {
            request_id: "refund-debit:rf1".into(),
            entries: vec![
                entry(
                    acc::AccountType::MerchantSettlement,
                    "M1",
                    acc::Side::Debit,
                    "9.94",
                ),
                entry(
                    acc::AccountType::FeeIncome,
                    "platform",
                    acc::Side::Debit,
                    "0.06",
                ),
                entry(
                    acc::AccountType::RefundInTransit,
                    "platform",
                    acc::Side::Credit,
                    "10.00",
                ),
            ],
            ..Default::default()
        };
        assert_eq!(refund_of(&p.request_id), Some("rf1"));
        assert_eq!(refund_of("settle:tr1"), None);
        assert_eq!(
            account_total(&p, acc::AccountType::MerchantSettlement, acc::Side::Debit).unwrap(),
            "9.94".parse::<Decimal>().unwrap()
        );
        let effects = credit_normal_effects(&p).unwrap();
        assert_eq!(effects.len(), 2, "fee income is not watched");
        assert_eq!(effects[0].1, "-9.94".parse::<Decimal>().unwrap());
        assert_eq!(effects[1].1, Decimal::from(10));
    }

    #[test]
    fn progress_is_the_latest_instant_of_the_order() {
        let o = rfd::RefundOrder {
            created_at_ms: 10,
            submitted_at_ms: 20,
            attempts: vec![rfd::Attempt {
                started_at_ms: 15,
                ended_at_ms: 30,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(last_progress(&o), 30);
    }

    #[test]
    fn a_report_prints_its_violations() {
        let mut r = AuditReport::default();
        assert!(r.ok());
        assert!(r.to_string().contains("no violations"));
        for i in 0..(SHOWN + 3) {
            r.violation(format!("v{i}"));
        }
        let text = r.to_string();
        assert!(!r.ok());
        assert!(text.contains("VIOLATIONS"), "{text}");
        assert!(text.contains("... and 3 more"), "{text}");
    }

    #[test]
    fn malformed_amounts_are_errors_not_panics() {
        assert!(dec("1.2.3", "x").is_err());
        assert_eq!(dec("1.20", "x").unwrap(), "1.2".parse::<Decimal>().unwrap());
    }
}
