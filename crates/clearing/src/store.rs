//! Clearing storage: merchant policies, settlements with their receivers (and running refund
//! counters), refund debits with their per-receiver parts, merchants' advance counters, and
//! reconciliation's adjustments.
//!
//! Concurrency: the counters on a settlement move only through conditional updates
//! (`WHERE debited_minor = <read> AND …`), together with its receivers' counters and the debit row
//! in one transaction; an advance is reserved by
//! `UPDATE advances SET reserved = reserved + x WHERE posted + reserved + x <= <line>` and a
//! repayment by `… SET repaying = repaying + r WHERE posted - repaying >= r`; status changes are
//! `WHERE status = <expected>`, and the counters that go with a status change move in the same
//! transaction, so they move exactly once. All of it works the same on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

pub mod reinstate;
pub mod reopen;

use crate::domain::shortfall::cover_shortfall;
use crate::domain::{
    parse_advance_limit, parse_fee_rate, Adjustment, AdjustmentKind, AdvanceLine, Debit, DebitPart,
    DebitRequest, DebitStatus, FeeRefundPolicy, MerchantPolicy, Receiver, Settlement,
    SettlementStatus,
};

diesel::table! {
    policies (merchant_id) {
        merchant_id -> Text,
        fee_rate -> Text,
        fee_refund -> Text,
        updated_at_ms -> BigInt,
        advance_limit -> Text,
        advance_currency -> Text,
    }
}

diesel::table! {
    settlements (trade_id) {
        trade_id -> Text,
        merchant_id -> Text,
        channel -> Text,
        amount_minor -> BigInt,
        fee_minor -> BigInt,
        currency -> Text,
        fee_refund -> Text,
        debited_minor -> BigInt,
        fee_refunded_minor -> BigInt,
        posting_id -> Nullable<Text>,
        status -> Text,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        subsidy_minor -> BigInt,
        subsidy_refunded_minor -> BigInt,
    }
}

diesel::table! {
    settlement_receivers (trade_id, receiver_id) {
        trade_id -> Text,
        receiver_id -> Text,
        seq -> Integer,
        amount_minor -> BigInt,
        fee_minor -> BigInt,
        fee_refund -> Text,
        refunded_minor -> BigInt,
        fee_refunded_minor -> BigInt,
        advance_repaid_minor -> BigInt,
    }
}

diesel::table! {
    debits (refund_id) {
        refund_id -> Text,
        trade_id -> Text,
        merchant_id -> Text,
        channel -> Text,
        amount_minor -> BigInt,
        merchant_minor -> BigInt,
        fee_minor -> BigInt,
        currency -> Text,
        status -> Text,
        debit_posting_id -> Nullable<Text>,
        final_posting_id -> Nullable<Text>,
        reason -> Text,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        subsidy_minor -> BigInt,
        flags -> Integer,
    }
}

diesel::table! {
    debit_parts (refund_id, receiver_id) {
        refund_id -> Text,
        receiver_id -> Text,
        seq -> Integer,
        amount_minor -> BigInt,
        fee_minor -> BigInt,
        advance_minor -> BigInt,
        back_to_advance_minor -> BigInt,
    }
}

diesel::table! {
    advances (merchant_id, currency) {
        merchant_id -> Text,
        currency -> Text,
        posted_minor -> BigInt,
        reserved_minor -> BigInt,
        repaying_minor -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    adjustments (adjustment_id) {
        adjustment_id -> Text,
        kind -> Text,
        channel -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        memo -> Text,
        posting_id -> Nullable<Text>,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    policies,
    settlements,
    settlement_receivers,
    debits,
    debit_parts,
    advances,
    adjustments
);

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = policies)]
struct PolicyRow {
    merchant_id: String,
    fee_rate: String,
    fee_refund: String,
    updated_at_ms: i64,
    advance_limit: String,
    /// '' when there is no line.
    advance_currency: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = settlements)]
struct SettlementRow {
    trade_id: String,
    merchant_id: String,
    channel: String,
    amount_minor: i64,
    fee_minor: i64,
    currency: String,
    fee_refund: String,
    debited_minor: i64,
    fee_refunded_minor: i64,
    posting_id: Option<String>,
    status: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    subsidy_minor: i64,
    subsidy_refunded_minor: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = settlement_receivers)]
struct ReceiverRow {
    trade_id: String,
    receiver_id: String,
    seq: i32,
    amount_minor: i64,
    fee_minor: i64,
    fee_refund: String,
    refunded_minor: i64,
    fee_refunded_minor: i64,
    advance_repaid_minor: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = debits)]
struct DebitRow {
    refund_id: String,
    trade_id: String,
    merchant_id: String,
    channel: String,
    amount_minor: i64,
    merchant_minor: i64,
    fee_minor: i64,
    currency: String,
    status: String,
    debit_posting_id: Option<String>,
    final_posting_id: Option<String>,
    reason: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    subsidy_minor: i64,
    /// [`FLAG_ERROR_REFUND`] | [`FLAG_EXPLICIT_SPLITS`].
    flags: i32,
}

/// `debits.flags`: an error refund (差错退款).
const FLAG_ERROR_REFUND: i32 = 1;
/// `debits.flags`: the caller named the receivers' amounts.
const FLAG_EXPLICIT_SPLITS: i32 = 2;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = debit_parts)]
struct PartRow {
    refund_id: String,
    receiver_id: String,
    seq: i32,
    amount_minor: i64,
    fee_minor: i64,
    advance_minor: i64,
    back_to_advance_minor: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = advances)]
struct AdvanceRow {
    merchant_id: String,
    currency: String,
    posted_minor: i64,
    reserved_minor: i64,
    repaying_minor: i64,
    updated_at_ms: i64,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

fn currency_of(code: &str) -> Result<Currency, Error> {
    Currency::parse(code, "currency").map_err(|_| corrupt("currency", code))
}

fn fee_refund_of(value: &str) -> Result<FeeRefundPolicy, Error> {
    FeeRefundPolicy::parse(value).ok_or_else(|| corrupt("fee refund policy", value))
}

impl PolicyRow {
    fn into_domain(self) -> Result<MerchantPolicy, Error> {
        Ok(MerchantPolicy {
            fee_rate: parse_fee_rate(&self.fee_rate, "fee_rate")
                .map_err(|_| corrupt("fee rate", &self.fee_rate))?,
            fee_refund: fee_refund_of(&self.fee_refund)?,
            advance_limit: parse_advance_limit(&self.advance_limit, "advance_limit")
                .map_err(|_| corrupt("advance limit", &self.advance_limit))?,
            advance_currency: match self.advance_currency.as_str() {
                "" => None,
                code => Some(
                    Currency::parse(code, "advance_currency")
                        .map_err(|_| corrupt("advance currency", code))?,
                ),
            },
            merchant_id: self.merchant_id,
        })
    }
}

impl SettlementRow {
    fn from_domain(s: &Settlement, now_ms: i64) -> SettlementRow {
        SettlementRow {
            trade_id: s.trade_id.clone(),
            merchant_id: s.merchant_id.clone(),
            channel: s.channel.clone(),
            amount_minor: s.amount.to_minor(),
            fee_minor: s.fee.to_minor(),
            currency: s.currency().code().to_string(),
            fee_refund: s.fee_refund.as_str().to_string(),
            debited_minor: s.debited_minor,
            fee_refunded_minor: s.fee_refunded_minor,
            posting_id: s.posting_id.clone(),
            status: s.status.as_str().to_string(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            subsidy_minor: s.subsidy.to_minor(),
            subsidy_refunded_minor: s.subsidy_refunded_minor,
        }
    }

    fn into_domain(self, receivers: Vec<ReceiverRow>) -> Result<Settlement, Error> {
        let currency = currency_of(&self.currency)?;
        let receivers = receivers
            .into_iter()
            .map(|r| {
                Ok(Receiver {
                    share: Money::from_minor(r.amount_minor, currency),
                    fee: Money::from_minor(r.fee_minor, currency),
                    fee_refund: fee_refund_of(&r.fee_refund)?,
                    refunded_minor: r.refunded_minor,
                    fee_refunded_minor: r.fee_refunded_minor,
                    advance_repaid_minor: r.advance_repaid_minor,
                    receiver_id: r.receiver_id,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let shares: i64 = receivers.iter().map(|r| r.share.to_minor()).sum();
        if receivers.is_empty() || shares != self.amount_minor {
            return Err(Error::internal(format!(
                "settlement {}: the receivers' shares do not add up to the amount",
                self.trade_id
            )));
        }
        Ok(Settlement {
            amount: Money::from_minor(self.amount_minor, currency),
            fee: Money::from_minor(self.fee_minor, currency),
            fee_refund: fee_refund_of(&self.fee_refund)?,
            subsidy: Money::from_minor(self.subsidy_minor, currency),
            debited_minor: self.debited_minor,
            fee_refunded_minor: self.fee_refunded_minor,
            subsidy_refunded_minor: self.subsidy_refunded_minor,
            receivers,
            status: SettlementStatus::parse(&self.status)
                .ok_or_else(|| corrupt("settlement status", &self.status))?,
            posting_id: self.posting_id,
            trade_id: self.trade_id,
            merchant_id: self.merchant_id,
            channel: self.channel,
        })
    }
}

impl DebitRow {
    fn from_domain(d: &Debit) -> DebitRow {
        DebitRow {
            refund_id: d.refund_id.clone(),
            trade_id: d.trade_id.clone(),
            merchant_id: d.merchant_id.clone(),
            channel: d.channel.clone(),
            amount_minor: d.amount.to_minor(),
            merchant_minor: d.merchant_amount.to_minor(),
            fee_minor: d.fee_amount.to_minor(),
            currency: d.currency().code().to_string(),
            status: d.status.as_str().to_string(),
            debit_posting_id: d.debit_posting_id.clone(),
            final_posting_id: d.final_posting_id.clone(),
            reason: d.reason.clone(),
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            subsidy_minor: d.subsidy_amount.to_minor(),
            flags: if d.error_refund { FLAG_ERROR_REFUND } else { 0 }
                | if d.explicit_splits {
                    FLAG_EXPLICIT_SPLITS
                } else {
                    0
                },
        }
    }

    fn into_domain(self, parts: Vec<PartRow>) -> Result<Debit, Error> {
        let currency = currency_of(&self.currency)?;
        if self.merchant_minor + self.fee_minor != self.amount_minor {
            return Err(Error::internal(format!(
                "debit {}: merchant part and fee part do not add up to the amount",
                self.refund_id
            )));
        }
        let parts: Vec<DebitPart> = parts
            .into_iter()
            .map(|p| DebitPart {
                receiver_id: p.receiver_id,
                amount: Money::from_minor(p.amount_minor, currency),
                fee: Money::from_minor(p.fee_minor, currency),
                advance: Money::from_minor(p.advance_minor, currency),
                back_to_advance: Money::from_minor(p.back_to_advance_minor, currency),
            })
            .collect();
        let parts_sum: i64 = parts.iter().map(|p| p.amount.to_minor()).sum();
        let parts_fee: i64 = parts.iter().map(|p| p.fee.to_minor()).sum();
        let parts_ok = parts.iter().all(|p| {
            let merchant = p.merchant().to_minor();
            merchant >= 0
                && (0..=merchant).contains(&p.advance.to_minor())
                && (0..=merchant).contains(&p.back_to_advance.to_minor())
        });
        if parts.is_empty()
            || parts_sum != self.amount_minor
            || parts_fee != self.fee_minor
            || !parts_ok
            || !(0..=self.amount_minor).contains(&self.subsidy_minor)
        {
            return Err(Error::internal(format!(
                "debit {}: the receivers' parts do not add up",
                self.refund_id
            )));
        }
        Ok(Debit {
            amount: Money::from_minor(self.amount_minor, currency),
            merchant_amount: Money::from_minor(self.merchant_minor, currency),
            fee_amount: Money::from_minor(self.fee_minor, currency),
            subsidy_amount: Money::from_minor(self.subsidy_minor, currency),
            error_refund: self.flags & FLAG_ERROR_REFUND != 0,
            explicit_splits: self.flags & FLAG_EXPLICIT_SPLITS != 0,
            parts,
            status: DebitStatus::parse(&self.status)
                .ok_or_else(|| corrupt("debit status", &self.status))?,
            refund_id: self.refund_id,
            trade_id: self.trade_id,
            merchant_id: self.merchant_id,
            channel: self.channel,
            debit_posting_id: self.debit_posting_id,
            final_posting_id: self.final_posting_id,
            reason: self.reason,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

fn part_rows(d: &Debit) -> Vec<PartRow> {
    d.parts
        .iter()
        .enumerate()
        .map(|(seq, p)| PartRow {
            refund_id: d.refund_id.clone(),
            receiver_id: p.receiver_id.clone(),
            seq: seq as i32,
            amount_minor: p.amount.to_minor(),
            fee_minor: p.fee.to_minor(),
            advance_minor: p.advance.to_minor(),
            back_to_advance_minor: p.back_to_advance.to_minor(),
        })
        .collect()
}

/// Errors inside a transaction: diesel's (rolls back), a rule (rolls back, surfaces as is), a lost
/// optimistic race (rolls back, the caller re-reads and tries again), a duplicate key.
enum TxError {
    Diesel(diesel::result::Error),
    Rule(Error),
    LostRace,
    Duplicate,
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Diesel(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Rule(e)
    }
}

impl TxError {
    /// For transactions that retry nothing: every error surfaces.
    fn into_error(self, what: &str) -> Error {
        match self {
            TxError::Rule(e) => e,
            TxError::Diesel(e) => db_err(e),
            TxError::LostRace | TxError::Duplicate => {
                Error::unavailable(format!("{what} raced with another writer; retry"))
            }
        }
    }
}

// ---------- policies ----------

/// Creates or replaces a merchant's policy.
pub fn upsert_policy(
    conn: &mut AnyConnection,
    policy: &MerchantPolicy,
    now_ms: i64,
) -> Result<(), Error> {
    let row = PolicyRow {
        merchant_id: policy.merchant_id.clone(),
        fee_rate: policy.fee_rate.normalize().to_string(),
        fee_refund: policy.fee_refund.as_str().to_string(),
        updated_at_ms: now_ms,
        advance_limit: policy.advance_limit.normalize().to_string(),
        advance_currency: policy
            .advance_currency
            .map(|c| c.code().to_string())
            .unwrap_or_default(),
    };
    // Update first; insert when absent; a concurrent insert wins the race and we update over it.
    for _ in 0..3 {
        let updated =
            diesel::update(policies::table.filter(policies::merchant_id.eq(&row.merchant_id)))
                .set((
                    policies::fee_rate.eq(&row.fee_rate),
                    policies::fee_refund.eq(&row.fee_refund),
                    policies::advance_limit.eq(&row.advance_limit),
                    policies::advance_currency.eq(&row.advance_currency),
                    policies::updated_at_ms.eq(row.updated_at_ms),
                ))
                .execute(conn)
                .map_err(db_err)?;
        if updated == 1 {
            return Ok(());
        }
        match diesel::insert_into(policies::table)
            .values(&row)
            .execute(conn)
        {
            Ok(_) => return Ok(()),
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(db_err(e)),
        }
    }
    Err(Error::storage("policy upsert kept racing"))
}

pub fn get_policy(
    conn: &mut AnyConnection,
    merchant_id: &str,
) -> Result<Option<MerchantPolicy>, Error> {
    policies::table
        .filter(policies::merchant_id.eq(merchant_id))
        .select(PolicyRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(PolicyRow::into_domain)
        .transpose()
}

// ---------- advances ----------

/// A merchant's advance counters in `currency` (all zero when it never had an advance).
pub fn advance_line(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
) -> Result<AdvanceLine, Error> {
    Ok(read_line(conn, merchant_id, currency)
        .map_err(db_err)?
        .unwrap_or_default())
}

fn read_line(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
) -> QueryResult<Option<AdvanceLine>> {
    Ok(advances::table
        .filter(advances::merchant_id.eq(merchant_id))
        .filter(advances::currency.eq(currency.code()))
        .select(AdvanceRow::as_select())
        .first(conn)
        .optional()?
        .map(|r| AdvanceLine {
            posted_minor: r.posted_minor,
            reserved_minor: r.reserved_minor,
            repaying_minor: r.repaying_minor,
        }))
}

/// Creates the merchant's counters (all zero) unless they exist. The insert runs in a savepoint:
/// a concurrent creator's unique violation must not abort an enclosing PostgreSQL transaction.
fn ensure_line(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
    now_ms: i64,
) -> QueryResult<()> {
    if read_line(conn, merchant_id, currency)?.is_some() {
        return Ok(());
    }
    let row = AdvanceRow {
        merchant_id: merchant_id.to_string(),
        currency: currency.code().to_string(),
        posted_minor: 0,
        reserved_minor: 0,
        repaying_minor: 0,
        updated_at_ms: now_ms,
    };
    match conn.transaction(|c| diesel::insert_into(advances::table).values(&row).execute(c)) {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reserves `amount` of the merchant's line (under `limit`) for a debit whose posting is not
/// confirmed. `false` when the line has no room for it. Asserts the line afterwards.
fn reserve_advance(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
    amount: i64,
    limit: i64,
    now_ms: i64,
) -> Result<bool, TxError> {
    ensure_line(conn, merchant_id, currency, now_ms)?;
    let n = diesel::update(
        advances::table
            .filter(advances::merchant_id.eq(merchant_id))
            .filter(advances::currency.eq(currency.code()))
            .filter((advances::posted_minor + advances::reserved_minor + amount).le(limit)),
    )
    .set((
        advances::reserved_minor.eq(advances::reserved_minor + amount),
        advances::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)?;
    if n != 1 {
        return Ok(false);
    }
    let line = read_line(conn, merchant_id, currency)?.unwrap_or_default();
    line.check(merchant_id, Some(limit))?;
    Ok(true)
}

/// Moves counters by the given deltas, guarded so that none goes negative and repayments never
/// exceed posted advances; a miss is a bug (the counters cover every pending step): roll back.
fn shift_line(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
    posted: i64,
    reserved: i64,
    repaying: i64,
    now_ms: i64,
) -> Result<(), TxError> {
    if posted == 0 && reserved == 0 && repaying == 0 {
        return Ok(());
    }
    let n = diesel::update(
        advances::table
            .filter(advances::merchant_id.eq(merchant_id))
            .filter(advances::currency.eq(currency.code()))
            .filter((advances::posted_minor + posted).ge(0))
            .filter((advances::reserved_minor + reserved).ge(0))
            .filter((advances::repaying_minor + repaying).ge(0))
            .filter((advances::posted_minor + posted).ge(advances::repaying_minor + repaying)),
    )
    .set((
        advances::posted_minor.eq(advances::posted_minor + posted),
        advances::reserved_minor.eq(advances::reserved_minor + reserved),
        advances::repaying_minor.eq(advances::repaying_minor + repaying),
        advances::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)?;
    if n != 1 {
        return Err(TxError::Rule(Error::internal(format!(
            "advance counters of merchant {merchant_id} do not cover the step"
        ))));
    }
    Ok(())
}

/// Promises up to `max` of the merchant's posted advances to a credit whose posting is not
/// confirmed yet (repay first). Returns what was promised (0 when nothing is outstanding).
fn reserve_repayment(
    conn: &mut AnyConnection,
    merchant_id: &str,
    currency: Currency,
    max: i64,
    now_ms: i64,
) -> Result<i64, TxError> {
    for _ in 0..16 {
        let Some(line) = read_line(conn, merchant_id, currency)? else {
            return Ok(0);
        };
        let r = line.repayable().min(max);
        if r <= 0 {
            return Ok(0);
        }
        let n = diesel::update(
            advances::table
                .filter(advances::merchant_id.eq(merchant_id))
                .filter(advances::currency.eq(currency.code()))
                .filter((advances::posted_minor - advances::repaying_minor).ge(r)),
        )
        .set((
            advances::repaying_minor.eq(advances::repaying_minor + r),
            advances::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if n == 1 {
            return Ok(r);
        }
    }
    Err(TxError::LostRace)
}

// ---------- settlements ----------

fn load_settlement(conn: &mut AnyConnection, trade_id: &str) -> Result<Option<Settlement>, Error> {
    let Some(row) = settlements::table
        .filter(settlements::trade_id.eq(trade_id))
        .select(SettlementRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let receivers = settlement_receivers::table
        .filter(settlement_receivers::trade_id.eq(trade_id))
        .order(settlement_receivers::seq.asc())
        .select(ReceiverRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    row.into_domain(receivers).map(Some)
}

pub fn get_settlement(
    conn: &mut AnyConnection,
    trade_id: &str,
) -> Result<Option<Settlement>, Error> {
    load_settlement(conn, trade_id)
}

/// Inserts a new pending settlement with its receivers, deciding each receiver's advance
/// repayment (repay first: up to its net credit, out of its posted advances not already promised)
/// in the same transaction. `Ok(None)` when the trade was settled before (someone else inserted
/// it first): re-read it.
pub fn insert_settlement(
    conn: &mut AnyConnection,
    settlement: &Settlement,
    now_ms: i64,
) -> Result<Option<Settlement>, Error> {
    for _ in 0..MAX_RESERVE_ATTEMPTS {
        let result = conn.transaction::<Settlement, TxError, _>(|conn| {
            let mut s = settlement.clone();
            let c = s.currency();
            for r in s.receivers.iter_mut() {
                r.advance_repaid_minor =
                    reserve_repayment(conn, &r.receiver_id, c, r.net_minor().max(0), now_ms)?;
            }
            match diesel::insert_into(settlements::table)
                .values(&SettlementRow::from_domain(&s, now_ms))
                .execute(conn)
            {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => return Err(TxError::Duplicate),
                Err(e) => return Err(TxError::Diesel(e)),
            }
            for (seq, r) in s.receivers.iter().enumerate() {
                diesel::insert_into(settlement_receivers::table)
                    .values(&ReceiverRow {
                        trade_id: s.trade_id.clone(),
                        receiver_id: r.receiver_id.clone(),
                        seq: seq as i32,
                        amount_minor: r.share.to_minor(),
                        fee_minor: r.fee.to_minor(),
                        fee_refund: r.fee_refund.as_str().to_string(),
                        refunded_minor: 0,
                        fee_refunded_minor: 0,
                        advance_repaid_minor: r.advance_repaid_minor,
                    })
                    .execute(conn)?;
            }
            Ok(s)
        });
        match result {
            Ok(s) => return Ok(Some(s)),
            Err(TxError::Duplicate) => return Ok(None),
            Err(TxError::LostRace) => continue,
            Err(e) => return Err(e.into_error("settlement")),
        }
    }
    Err(Error::unavailable(format!(
        "the receivers of trade {} are busy; retry",
        settlement.trade_id
    )))
}

/// PENDING → POSTED with the posting id (no-op when already posted). The receivers' advance
/// repayments become posted in the same transaction.
pub fn mark_settlement_posted(
    conn: &mut AnyConnection,
    trade_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    conn.transaction::<(), TxError, _>(|conn| {
        let n = diesel::update(
            settlements::table
                .filter(settlements::trade_id.eq(trade_id))
                .filter(settlements::status.eq(SettlementStatus::Pending.as_str())),
        )
        .set((
            settlements::status.eq(SettlementStatus::Posted.as_str()),
            settlements::posting_id.eq(Some(posting_id)),
            settlements::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if n != 1 {
            return Ok(());
        }
        let s = load_settlement(conn, trade_id)?
            .ok_or_else(|| Error::internal(format!("settlement {trade_id} vanished")))?;
        for r in &s.receivers {
            let repaid = r.advance_repaid_minor;
            shift_line(
                conn,
                &r.receiver_id,
                s.currency(),
                -repaid,
                0,
                -repaid,
                now_ms,
            )?;
        }
        Ok(())
    })
    .map_err(|e| e.into_error("settlement"))
}

/// Trade ids of settlements whose posting is not confirmed, oldest first.
pub fn pending_settlements(conn: &mut AnyConnection, limit: i64) -> Result<Vec<String>, Error> {
    settlements::table
        .filter(settlements::status.eq(SettlementStatus::Pending.as_str()))
        .order(settlements::created_at_ms.asc())
        .select(settlements::trade_id)
        .limit(limit)
        .load(conn)
        .map_err(db_err)
}

/// The channels and currencies of settled payments: the reserves whose platform part the sweep
/// moves ([`crate::grpc::Clearing::sweep_reserves`]).
pub fn reserve_accounts(conn: &mut AnyConnection) -> Result<Vec<(String, Currency)>, Error> {
    let rows: Vec<(String, String)> = settlements::table
        .select((settlements::channel, settlements::currency))
        .distinct()
        .order((settlements::channel.asc(), settlements::currency.asc()))
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(channel, c)| Ok((channel, Currency::parse(&c, "currency")?)))
        .collect()
}

/// The receivers of a trade whose shortfall must be decided before the debit
/// ([`cover_shortfall`]): those whose policy has a line (in any currency: a line in another
/// currency is refused by name), or with `all` (an error refund) every receiver. Empty for an
/// unknown trade.
pub fn receivers_with_line(
    conn: &mut AnyConnection,
    trade_id: &str,
    all: bool,
) -> Result<Vec<String>, Error> {
    let Some(s) = load_settlement(conn, trade_id)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for r in &s.receivers {
        if let Some(p) = get_policy(conn, &r.receiver_id)? {
            if all || !p.advance_limit.is_zero() {
                out.push(r.receiver_id.clone());
            }
        }
    }
    Ok(out)
}

// ---------- debits ----------

fn load_debit(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<Debit>, Error> {
    let Some(row) = debits::table
        .filter(debits::refund_id.eq(refund_id))
        .select(DebitRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let parts = debit_parts::table
        .filter(debit_parts::refund_id.eq(refund_id))
        .order(debit_parts::seq.asc())
        .select(PartRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    row.into_domain(parts).map(Some)
}

pub fn get_debit(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<Debit>, Error> {
    load_debit(conn, refund_id)
}

/// How many times a reservation re-reads after losing a race before giving up with a retryable
/// error. Every lost race is another debit's success (or give-back) on the same trade.
pub const MAX_RESERVE_ATTEMPTS: usize = 64;

/// What [`reserve_debit`] did.
#[derive(Debug)]
pub enum Reserved {
    /// A new pending debit, reserved against its trade.
    New(Debit),
    /// A debit with this refund id already exists (maybe inserted concurrently).
    Existing(Debit),
}

/// Reserves the refund on its settlement and inserts the pending debit with its parts, in one
/// transaction. Checks: the settlement exists and is posted, belongs to the merchant, the plan's
/// rules ([`Settlement::plan_debit`]). `balances` holds the available balance (minor units) of the
/// receivers that have an advance line, read from the ledger just before: a receiver whose balance
/// falls short gets the shortfall advanced when its line has room (reserved here, under the line,
/// by a conditional update).
pub fn reserve_debit(
    conn: &mut AnyConnection,
    request: &DebitRequest,
    balances: &BTreeMap<String, i64>,
    now_ms: i64,
) -> Result<Reserved, Error> {
    for _ in 0..MAX_RESERVE_ATTEMPTS {
        if let Some(existing) = load_debit(conn, &request.refund_id)? {
            return Ok(Reserved::Existing(existing));
        }
        let result = conn.transaction::<Debit, TxError, _>(|conn| {
            let settlement = match load_settlement(conn, &request.trade_id)? {
                Some(s) if s.status == SettlementStatus::Posted => s,
                _ => {
                    return Err(TxError::Rule(Error::new(
                        ErrorCode::SettlementNotFound,
                        format!("trade {} was not settled", request.trade_id),
                    )))
                }
            };
            if settlement.merchant_id != request.merchant_id {
                // Never reveal that another merchant's trade exists.
                return Err(TxError::Rule(Error::new(
                    ErrorCode::TradeNotFound,
                    format!("trade {} not found", request.trade_id),
                )));
            }
            let plan = settlement.plan_debit(request)?;
            let updated = diesel::update(
                settlements::table
                    .filter(settlements::trade_id.eq(&settlement.trade_id))
                    .filter(settlements::debited_minor.eq(settlement.debited_minor))
                    .filter(settlements::fee_refunded_minor.eq(settlement.fee_refunded_minor))
                    .filter(
                        settlements::subsidy_refunded_minor.eq(settlement.subsidy_refunded_minor),
                    )
                    .filter(settlements::amount_minor.ge(plan.debited_minor)),
            )
            .set((
                settlements::debited_minor.eq(plan.debited_minor),
                settlements::fee_refunded_minor.eq(plan.fee_refunded_minor),
                settlements::subsidy_refunded_minor.eq(plan.subsidy_refunded_minor),
                settlements::updated_at_ms.eq(now_ms),
            ))
            .execute(conn)?;
            if updated != 1 {
                return Err(TxError::LostRace);
            }
            for p in &plan.parts {
                let n = diesel::update(
                    settlement_receivers::table
                        .filter(settlement_receivers::trade_id.eq(&settlement.trade_id))
                        .filter(settlement_receivers::receiver_id.eq(&p.receiver_id))
                        .filter(settlement_receivers::refunded_minor.eq(p.refunded_before_minor))
                        .filter(
                            settlement_receivers::fee_refunded_minor
                                .eq(p.fee_refunded_before_minor),
                        )
                        .filter(
                            settlement_receivers::amount_minor
                                .ge(p.refunded_before_minor + p.amount_minor),
                        ),
                )
                .set((
                    settlement_receivers::refunded_minor
                        .eq(p.refunded_before_minor + p.amount_minor),
                    settlement_receivers::fee_refunded_minor
                        .eq(p.fee_refunded_before_minor + p.fee_minor),
                ))
                .execute(conn)?;
                if n != 1 {
                    return Err(TxError::LostRace);
                }
            }
            let c = settlement.currency();
            let mut advances = vec![0; plan.parts.len()];
            for (i, p) in plan.parts.iter().enumerate() {
                let Some(balance) = balances.get(&p.receiver_id) else {
                    continue;
                };
                let Some(policy) = get_policy(conn, &p.receiver_id)? else {
                    continue;
                };
                let line = read_line(conn, &p.receiver_id, c)?.unwrap_or_default();
                let cover = cover_shortfall(
                    &policy,
                    &line,
                    c,
                    p.merchant_minor(),
                    *balance,
                    request.error_refund,
                )
                .map_err(TxError::Rule)?;
                let (need, limit) = (cover.advance_minor, cover.limit_minor);
                if need > 0 && reserve_advance(conn, &p.receiver_id, c, need, limit, now_ms)? {
                    advances[i] = need;
                }
            }
            let debit = Debit::new(request, &settlement, &plan, &advances, now_ms);
            match diesel::insert_into(debits::table)
                .values(&DebitRow::from_domain(&debit))
                .execute(conn)
            {
                Ok(_) => {}
                // Roll back the reservation: the other insert of this refund id decides.
                Err(e) if is_unique_violation(&e) => return Err(TxError::Duplicate),
                Err(e) => return Err(TxError::Diesel(e)),
            }
            for row in part_rows(&debit) {
                diesel::insert_into(debit_parts::table)
                    .values(&row)
                    .execute(conn)?;
            }
            Ok(debit)
        });
        match result {
            Ok(debit) => return Ok(Reserved::New(debit)),
            Err(TxError::Rule(e)) => return Err(e),
            Err(TxError::Diesel(e)) => return Err(db_err(e)),
            Err(TxError::LostRace) | Err(TxError::Duplicate) => continue,
        }
    }
    Err(Error::unavailable(format!(
        "trade {} is busy with other refunds; retry refund {}",
        request.trade_id, request.refund_id
    )))
}

/// Records the debit posting: PENDING → DEBITED; the advances it reserved become posted in the
/// same transaction. `false` when the debit was not PENDING.
pub fn mark_debited(
    conn: &mut AnyConnection,
    refund_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    DebitStatus::Pending.transition(DebitStatus::Debited)?;
    conn.transaction::<bool, TxError, _>(|conn| {
        let n = diesel::update(
            debits::table
                .filter(debits::refund_id.eq(refund_id))
                .filter(debits::status.eq(DebitStatus::Pending.as_str())),
        )
        .set((
            debits::status.eq(DebitStatus::Debited.as_str()),
            debits::debit_posting_id.eq(Some(posting_id)),
            debits::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if n != 1 {
            return Ok(false);
        }
        let debit = load_debit(conn, refund_id)?
            .ok_or_else(|| Error::internal(format!("debit {refund_id} vanished")))?;
        for p in &debit.parts {
            let a = p.advance.to_minor();
            shift_line(conn, &p.receiver_id, debit.currency(), a, -a, 0, now_ms)?;
        }
        Ok(true)
    })
    .map_err(|e| e.into_error("debit"))
}

/// Moves `debit` from `from` to `to` (checked against the state machine), setting the final
/// posting id and reason when given, and moving in the same transaction what goes with it:
/// - starting a reversal or return (DEBITED → REVERSING, COMPLETED → RETURNING): each receiver's
///   part repays its outstanding advance first — the repayment is promised on its counters and
///   recorded on the part (`back_to_advance`), so the posting's content is fixed before it is sent;
/// - landing where the money is back with the merchant (REJECTED, REVERSED, RETURNED): the trade's
///   and receivers' counters are given back (the amount can be refunded again); a rejection
///   releases the advances the debit had reserved, a reversal or return makes its repayments
///   posted.
///
/// `false` when the debit was not in `from`.
pub fn move_debit(
    conn: &mut AnyConnection,
    debit: &Debit,
    from: DebitStatus,
    to: DebitStatus,
    final_posting_id: Option<&str>,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<bool, Error> {
    from.transition(to)?;
    let refund_id = debit.refund_id.clone();
    let result = conn.transaction::<bool, TxError, _>(|conn| {
        let target = debits::table
            .filter(debits::refund_id.eq(&refund_id))
            .filter(debits::status.eq(from.as_str()));
        let n = match (final_posting_id, reason) {
            (Some(p), Some(r)) => diesel::update(target)
                .set((
                    debits::status.eq(to.as_str()),
                    debits::final_posting_id.eq(Some(p)),
                    debits::reason.eq(r),
                    debits::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)?,
            (Some(p), None) => diesel::update(target)
                .set((
                    debits::status.eq(to.as_str()),
                    debits::final_posting_id.eq(Some(p)),
                    debits::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)?,
            (None, Some(r)) => diesel::update(target)
                .set((
                    debits::status.eq(to.as_str()),
                    debits::reason.eq(r),
                    debits::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)?,
            (None, None) => diesel::update(target)
                .set((
                    debits::status.eq(to.as_str()),
                    debits::updated_at_ms.eq(now_ms),
                ))
                .execute(conn)?,
        };
        if n != 1 {
            return Ok(false);
        }
        // The stored debit decides (the caller's copy may predate a repayment decision).
        let debit = load_debit(conn, &refund_id)?
            .ok_or_else(|| Error::internal(format!("debit {refund_id} vanished")))?;
        let c = debit.currency();
        if matches!(to, DebitStatus::Reversing | DebitStatus::Returning) {
            for p in &debit.parts {
                let back =
                    reserve_repayment(conn, &p.receiver_id, c, p.merchant().to_minor(), now_ms)?;
                if back > 0 {
                    diesel::update(
                        debit_parts::table
                            .filter(debit_parts::refund_id.eq(&refund_id))
                            .filter(debit_parts::receiver_id.eq(&p.receiver_id)),
                    )
                    .set(debit_parts::back_to_advance_minor.eq(back))
                    .execute(conn)?;
                }
            }
        }
        if to.gives_back() {
            give_back(conn, &debit, now_ms)?;
            for p in &debit.parts {
                if to == DebitStatus::Rejected {
                    let a = p.advance.to_minor();
                    shift_line(conn, &p.receiver_id, c, 0, -a, 0, now_ms)?;
                } else {
                    let b = p.back_to_advance.to_minor();
                    shift_line(conn, &p.receiver_id, c, -b, 0, -b, now_ms)?;
                }
            }
        }
        Ok(true)
    });
    result.map_err(|e| e.into_error("debit"))
}

/// Gives a debit's amounts back to its trade's and receivers' counters.
fn give_back(conn: &mut AnyConnection, debit: &Debit, now_ms: i64) -> Result<(), TxError> {
    let amount = debit.amount.to_minor();
    let fee = debit.fee_amount.to_minor();
    let subsidy = debit.subsidy_amount.to_minor();
    let given_back = diesel::update(
        settlements::table
            .filter(settlements::trade_id.eq(&debit.trade_id))
            .filter(settlements::debited_minor.ge(amount))
            .filter(settlements::fee_refunded_minor.ge(fee))
            .filter(settlements::subsidy_refunded_minor.ge(subsidy)),
    )
    .set((
        settlements::debited_minor.eq(settlements::debited_minor - amount),
        settlements::fee_refunded_minor.eq(settlements::fee_refunded_minor - fee),
        settlements::subsidy_refunded_minor.eq(settlements::subsidy_refunded_minor - subsidy),
        settlements::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)?;
    let mut ok = given_back == 1;
    for p in &debit.parts {
        let (a, f) = (p.amount.to_minor(), p.fee.to_minor());
        let n = diesel::update(
            settlement_receivers::table
                .filter(settlement_receivers::trade_id.eq(&debit.trade_id))
                .filter(settlement_receivers::receiver_id.eq(&p.receiver_id))
                .filter(settlement_receivers::refunded_minor.ge(a))
                .filter(settlement_receivers::fee_refunded_minor.ge(f)),
        )
        .set((
            settlement_receivers::refunded_minor.eq(settlement_receivers::refunded_minor - a),
            settlement_receivers::fee_refunded_minor
                .eq(settlement_receivers::fee_refunded_minor - f),
        ))
        .execute(conn)?;
        ok &= n == 1;
    }
    if !ok {
        // The counters cover every active debit; anything else is a bug: roll back.
        return Err(TxError::Rule(Error::internal(format!(
            "trade {} counters do not cover debit {}",
            debit.trade_id, debit.refund_id
        ))));
    }
    Ok(())
}

/// Refund ids of debits in `status`, oldest first.
pub fn debits_in(
    conn: &mut AnyConnection,
    status: DebitStatus,
    limit: i64,
) -> Result<Vec<String>, Error> {
    debits::table
        .filter(debits::status.eq(status.as_str()))
        .order(debits::created_at_ms.asc())
        .select(debits::refund_id)
        .limit(limit)
        .load(conn)
        .map_err(db_err)
}

/// Records the posting that undid a debit posted after the debit was already REJECTED (a retry
/// racing a rejection): the row stays REJECTED and the ledger nets to zero.
pub fn record_compensation(
    conn: &mut AnyConnection,
    refund_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    diesel::update(
        debits::table
            .filter(debits::refund_id.eq(refund_id))
            .filter(debits::status.eq(DebitStatus::Rejected.as_str()))
            .filter(debits::final_posting_id.is_null()),
    )
    .set((
        debits::final_posting_id.eq(Some(posting_id)),
        debits::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

// ---------- adjustments ----------

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = adjustments)]
struct AdjustmentRow {
    adjustment_id: String,
    kind: String,
    channel: String,
    amount_minor: i64,
    currency: String,
    memo: String,
    posting_id: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl AdjustmentRow {
    fn from_domain(a: &Adjustment) -> AdjustmentRow {
        AdjustmentRow {
            adjustment_id: a.adjustment_id.clone(),
            kind: a.kind.as_str().to_string(),
            channel: a.channel.clone(),
            amount_minor: a.amount.to_minor(),
            currency: a.amount.currency().code().to_string(),
            memo: a.memo.clone(),
            posting_id: a.posting_id.clone(),
            created_at_ms: a.created_at_ms,
            updated_at_ms: a.updated_at_ms,
        }
    }

    fn into_domain(self) -> Result<Adjustment, Error> {
        let currency = currency_of(&self.currency)?;
        Ok(Adjustment {
            kind: AdjustmentKind::parse(&self.kind)
                .ok_or_else(|| corrupt("adjustment kind", &self.kind))?,
            amount: Money::from_minor(self.amount_minor, currency),
            adjustment_id: self.adjustment_id,
            channel: self.channel,
            memo: self.memo,
            posting_id: self.posting_id,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

pub fn get_adjustment(
    conn: &mut AnyConnection,
    adjustment_id: &str,
) -> Result<Option<Adjustment>, Error> {
    adjustments::table
        .filter(adjustments::adjustment_id.eq(adjustment_id))
        .select(AdjustmentRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(AdjustmentRow::into_domain)
        .transpose()
}

/// Inserts a new (unposted) adjustment, or returns the one stored under its id (maybe inserted
/// concurrently: the insert runs in a savepoint so that a unique violation does not abort an
/// enclosing PostgreSQL transaction).
pub fn insert_adjustment(
    conn: &mut AnyConnection,
    adjustment: &Adjustment,
) -> Result<Adjustment, Error> {
    if let Some(existing) = get_adjustment(conn, &adjustment.adjustment_id)? {
        return Ok(existing);
    }
    let row = AdjustmentRow::from_domain(adjustment);
    let inserted = conn.transaction(|c| {
        diesel::insert_into(adjustments::table)
            .values(&row)
            .execute(c)
    });
    match inserted {
        Ok(_) => Ok(adjustment.clone()),
        Err(e) if is_unique_violation(&e) => get_adjustment(conn, &adjustment.adjustment_id)?
            .ok_or_else(|| {
                Error::internal(format!("adjustment {} vanished", adjustment.adjustment_id))
            }),
        Err(e) => Err(db_err(e)),
    }
}

/// Records the confirmed posting of an adjustment (no-op when it was recorded before).
pub fn mark_adjustment_posted(
    conn: &mut AnyConnection,
    adjustment_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    diesel::update(
        adjustments::table
            .filter(adjustments::adjustment_id.eq(adjustment_id))
            .filter(adjustments::posting_id.is_null()),
    )
    .set((
        adjustments::posting_id.eq(Some(posting_id)),
        adjustments::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

/// Ids of adjustments whose posting is not confirmed, oldest first.
pub fn unposted_adjustments(conn: &mut AnyConnection, limit: i64) -> Result<Vec<String>, Error> {
    adjustments::table
        .filter(adjustments::posting_id.is_null())
        .order(adjustments::created_at_ms.asc())
        .select(adjustments::adjustment_id)
        .limit(limit)
        .load(conn)
        .map_err(db_err)
}
