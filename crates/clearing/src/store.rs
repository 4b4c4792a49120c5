//! Clearing storage: merchant policies, settlements (with their running refund counters) and
//! refund debits.
//!
//! Concurrency: the counters on a settlement move only through conditional updates
//! (`WHERE debited_minor = <read> AND fee_refunded_minor = <read>`), together with the debit row
//! in one transaction; status changes are `WHERE status = <expected>`. Both work the same on
//! SQLite and PostgreSQL.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

use crate::domain::{
    parse_fee_rate, Adjustment, AdjustmentKind, Debit, DebitRequest, DebitStatus, FeeRefundPolicy,
    MerchantPolicy, Settlement, SettlementStatus,
};

diesel::table! {
    policies (merchant_id) {
        merchant_id -> Text,
        fee_rate -> Text,
        fee_refund -> Text,
        updated_at_ms -> BigInt,
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

diesel::allow_tables_to_appear_in_same_query!(policies, settlements, debits, adjustments);

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = policies)]
struct PolicyRow {
    merchant_id: String,
    fee_rate: String,
    fee_refund: String,
    updated_at_ms: i64,
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
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

fn currency_of(code: &str) -> Result<Currency, Error> {
    Currency::parse(code, "currency").map_err(|_| corrupt("currency", code))
}

impl PolicyRow {
    fn into_domain(self) -> Result<MerchantPolicy, Error> {
        Ok(MerchantPolicy {
            fee_rate: parse_fee_rate(&self.fee_rate, "fee_rate")
                .map_err(|_| corrupt("fee rate", &self.fee_rate))?,
            fee_refund: FeeRefundPolicy::parse(&self.fee_refund)
                .ok_or_else(|| corrupt("fee refund policy", &self.fee_refund))?,
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
        }
    }

    fn into_domain(self) -> Result<Settlement, Error> {
        let currency = currency_of(&self.currency)?;
        Ok(Settlement {
            amount: Money::from_minor(self.amount_minor, currency),
            fee: Money::from_minor(self.fee_minor, currency),
            fee_refund: FeeRefundPolicy::parse(&self.fee_refund)
                .ok_or_else(|| corrupt("fee refund policy", &self.fee_refund))?,
            debited_minor: self.debited_minor,
            fee_refunded_minor: self.fee_refunded_minor,
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
        }
    }

    fn into_domain(self) -> Result<Debit, Error> {
        let currency = currency_of(&self.currency)?;
        if self.merchant_minor + self.fee_minor != self.amount_minor {
            return Err(Error::internal(format!(
                "debit {}: merchant part and fee part do not add up to the amount",
                self.refund_id
            )));
        }
        Ok(Debit {
            amount: Money::from_minor(self.amount_minor, currency),
            merchant_amount: Money::from_minor(self.merchant_minor, currency),
            fee_amount: Money::from_minor(self.fee_minor, currency),
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
    };
    // Update first; insert when absent; a concurrent insert wins the race and we update over it.
    for _ in 0..3 {
        let updated =
            diesel::update(policies::table.filter(policies::merchant_id.eq(&row.merchant_id)))
                .set((
                    policies::fee_rate.eq(&row.fee_rate),
                    policies::fee_refund.eq(&row.fee_refund),
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

// ---------- settlements ----------

pub fn get_settlement(
    conn: &mut AnyConnection,
    trade_id: &str,
) -> Result<Option<Settlement>, Error> {
    settlements::table
        .filter(settlements::trade_id.eq(trade_id))
        .select(SettlementRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(SettlementRow::into_domain)
        .transpose()
}

/// Inserts a new pending settlement. `Ok(false)` when the trade was settled before (someone else
/// inserted it first): re-read it.
pub fn insert_settlement(
    conn: &mut AnyConnection,
    settlement: &Settlement,
    now_ms: i64,
) -> Result<bool, Error> {
    match diesel::insert_into(settlements::table)
        .values(&SettlementRow::from_domain(settlement, now_ms))
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// PENDING → POSTED with the posting id (no-op when already posted).
pub fn mark_settlement_posted(
    conn: &mut AnyConnection,
    trade_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<(), Error> {
    diesel::update(
        settlements::table
            .filter(settlements::trade_id.eq(trade_id))
            .filter(settlements::status.eq(SettlementStatus::Pending.as_str())),
    )
    .set((
        settlements::status.eq(SettlementStatus::Posted.as_str()),
        settlements::posting_id.eq(Some(posting_id)),
        settlements::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
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

// ---------- debits ----------

pub fn get_debit(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<Debit>, Error> {
    debits::table
        .filter(debits::refund_id.eq(refund_id))
        .select(DebitRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(DebitRow::into_domain)
        .transpose()
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

/// Reserves the refund amount on its settlement and inserts the pending debit, in one transaction.
/// Checks: the settlement exists and is posted, belongs to the merchant, is in the same currency,
/// and the trade's debits stay within what was paid.
pub fn reserve_debit(
    conn: &mut AnyConnection,
    request: &DebitRequest,
    now_ms: i64,
) -> Result<Reserved, Error> {
    for _ in 0..MAX_RESERVE_ATTEMPTS {
        if let Some(existing) = get_debit(conn, &request.refund_id)? {
            return Ok(Reserved::Existing(existing));
        }
        let result = conn.transaction::<Debit, TxError, _>(|conn| {
            let settlement = settlements::table
                .filter(settlements::trade_id.eq(&request.trade_id))
                .select(SettlementRow::as_select())
                .first(conn)
                .optional()?
                .map(SettlementRow::into_domain)
                .transpose()
                .map_err(TxError::Rule)?;
            let settlement = match settlement {
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
            let reservation = settlement.reserve(&request.amount).map_err(TxError::Rule)?;
            let updated = diesel::update(
                settlements::table
                    .filter(settlements::trade_id.eq(&settlement.trade_id))
                    .filter(settlements::debited_minor.eq(settlement.debited_minor))
                    .filter(settlements::fee_refunded_minor.eq(settlement.fee_refunded_minor))
                    .filter(settlements::amount_minor.ge(reservation.debited_minor)),
            )
            .set((
                settlements::debited_minor.eq(reservation.debited_minor),
                settlements::fee_refunded_minor.eq(reservation.fee_refunded_minor),
                settlements::updated_at_ms.eq(now_ms),
            ))
            .execute(conn)?;
            if updated != 1 {
                return Err(TxError::LostRace);
            }
            let debit = Debit::new(request, &settlement, reservation.fee_share_minor, now_ms);
            match diesel::insert_into(debits::table)
                .values(&DebitRow::from_domain(&debit))
                .execute(conn)
            {
                Ok(_) => Ok(debit),
                // Roll back the reservation: the other insert of this refund id decides.
                Err(e) if is_unique_violation(&e) => Err(TxError::Duplicate),
                Err(e) => Err(TxError::Diesel(e)),
            }
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

/// Records the debit posting: PENDING → DEBITED. `false` when the debit was not PENDING.
pub fn mark_debited(
    conn: &mut AnyConnection,
    refund_id: &str,
    posting_id: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    DebitStatus::Pending.transition(DebitStatus::Debited)?;
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
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Moves `refund_id` from `from` to `to` (checked against the state machine), setting the final
/// posting id and reason when given. When the move lands on a state in which the money is back
/// with the merchant (REJECTED, REVERSED, RETURNED), the trade's counters are given back in the same
/// transaction, so the amount can be refunded again. `false` when the debit was not in `from`.
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
    let give_back = to.gives_back();
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
        if give_back {
            let amount = debit.amount.to_minor();
            let fee = debit.fee_amount.to_minor();
            let given_back = diesel::update(
                settlements::table
                    .filter(settlements::trade_id.eq(&debit.trade_id))
                    .filter(settlements::debited_minor.ge(amount))
                    .filter(settlements::fee_refunded_minor.ge(fee)),
            )
            .set((
                settlements::debited_minor.eq(settlements::debited_minor - amount),
                settlements::fee_refunded_minor.eq(settlements::fee_refunded_minor - fee),
                settlements::updated_at_ms.eq(now_ms),
            ))
            .execute(conn)?;
            if given_back != 1 {
                // The counters cover every active debit; anything else is a bug: roll back.
                return Err(TxError::Rule(Error::internal(format!(
                    "trade {} counters do not cover debit {}",
                    debit.trade_id, debit.refund_id
                ))));
            }
        }
        Ok(true)
    });
    match result {
        Ok(moved) => Ok(moved),
        Err(TxError::Rule(e)) => Err(e),
        Err(TxError::Diesel(e)) => Err(db_err(e)),
        Err(TxError::LostRace) | Err(TxError::Duplicate) => {
            Err(Error::internal("unexpected race while moving a debit"))
        }
    }
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
