//! Storage of merchants, channels, trades and merchant refunds (diesel, SQLite and PostgreSQL alike).
//!
//! Repository functions take `&mut AnyConnection` and speak domain types; rows and conversions stay
//! here. The guards that keep money right are conditional updates whose affected-row count decides:
//! - [`reserve_refund`]: `refunded_minor + amount <= amount_minor` (never over-refund);
//! - [`advance_refund`] and [`return_refund`]: `chain_state = <from>` (one writer wins each
//!   transition);
//! - [`release_reservation`]: `refunded_minor >= amount` (never below zero).

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Error, ErrorCode, Result};

use crate::domain::{
    money_from_storage, ChainState, ChannelConfig, Merchant, MerchantRefund, SettleStatus, Trade,
};

diesel::table! {
    merchants (merchant_id) {
        merchant_id -> Text,
        name -> Text,
        api_key_hash -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    channels (code) {
        code -> Text,
        refund_window_days -> Integer,
        enabled -> Integer,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    trades (trade_id) {
        trade_id -> Text,
        merchant_id -> Text,
        order_no -> Text,
        channel -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        paid_at_ms -> BigInt,
        refunded_minor -> BigInt,
        settle_status -> Text,
        payer_card_no -> Nullable<Text>,
        payer_name -> Nullable<Text>,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    refunds (refund_id) {
        refund_id -> Text,
        merchant_id -> Text,
        merchant_refund_no -> Text,
        trade_id -> Text,
        order_no -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        reason -> Text,
        fingerprint -> Text,
        chain_state -> Text,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        expected_completion_ms -> BigInt,
    }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = merchants)]
struct MerchantRow {
    merchant_id: String,
    name: String,
    api_key_hash: String,
    created_at_ms: i64,
}

impl From<MerchantRow> for Merchant {
    fn from(r: MerchantRow) -> Merchant {
        Merchant {
            merchant_id: r.merchant_id,
            name: r.name,
            api_key_hash: r.api_key_hash,
            created_at_ms: r.created_at_ms,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = channels)]
struct ChannelRow {
    code: String,
    refund_window_days: i32,
    enabled: i32,
    updated_at_ms: i64,
}

impl ChannelRow {
    fn into_domain(self) -> Result<ChannelConfig> {
        let days = u32::try_from(self.refund_window_days)
            .map_err(|_| Error::internal(format!("stored window of channel {}", self.code)))?;
        Ok(ChannelConfig {
            code: self.code,
            refund_window_days: days,
            enabled: self.enabled != 0,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = trades)]
struct TradeRow {
    trade_id: String,
    merchant_id: String,
    order_no: String,
    channel: String,
    amount_minor: i64,
    currency: String,
    paid_at_ms: i64,
    refunded_minor: i64,
    settle_status: String,
    payer_card_no: Option<String>,
    payer_name: Option<String>,
    created_at_ms: i64,
}

impl TradeRow {
    fn from_domain(t: &Trade) -> TradeRow {
        TradeRow {
            trade_id: t.trade_id.clone(),
            merchant_id: t.merchant_id.clone(),
            order_no: t.order_no.clone(),
            channel: t.channel.clone(),
            amount_minor: t.amount.to_minor(),
            currency: t.amount.currency().code().to_string(),
            paid_at_ms: t.paid_at_ms,
            refunded_minor: t.refunded.to_minor(),
            settle_status: t.settle_status.as_str().to_string(),
            payer_card_no: t.payer_card_no.clone(),
            payer_name: t.payer_name.clone(),
            created_at_ms: t.created_at_ms,
        }
    }

    fn into_domain(self) -> Result<Trade> {
        Ok(Trade {
            amount: money_from_storage(self.amount_minor, &self.currency)?,
            refunded: money_from_storage(self.refunded_minor, &self.currency)?,
            settle_status: SettleStatus::parse(&self.settle_status)?,
            trade_id: self.trade_id,
            merchant_id: self.merchant_id,
            order_no: self.order_no,
            channel: self.channel,
            paid_at_ms: self.paid_at_ms,
            payer_card_no: self.payer_card_no,
            payer_name: self.payer_name,
            created_at_ms: self.created_at_ms,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds)]
struct RefundRow {
    refund_id: String,
    merchant_id: String,
    merchant_refund_no: String,
    trade_id: String,
    order_no: String,
    amount_minor: i64,
    currency: String,
    reason: String,
    fingerprint: String,
    chain_state: String,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    expected_completion_ms: i64,
}

impl RefundRow {
    fn from_domain(r: &MerchantRefund) -> RefundRow {
        RefundRow {
            refund_id: r.refund_id.clone(),
            merchant_id: r.merchant_id.clone(),
            merchant_refund_no: r.merchant_refund_no.clone(),
            trade_id: r.trade_id.clone(),
            order_no: r.order_no.clone(),
            amount_minor: r.amount.to_minor(),
            currency: r.amount.currency().code().to_string(),
            reason: r.reason.clone(),
            fingerprint: r.fingerprint.clone(),
            chain_state: r.chain_state.as_str().to_string(),
            error_code: r.error_code.clone(),
            error_message: r.error_message.clone(),
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            expected_completion_ms: r.expected_completion_ms,
        }
    }

    fn into_domain(self) -> Result<MerchantRefund> {
        Ok(MerchantRefund {
            amount: money_from_storage(self.amount_minor, &self.currency)?,
            chain_state: ChainState::parse(&self.chain_state)?,
            refund_id: self.refund_id,
            merchant_id: self.merchant_id,
            merchant_refund_no: self.merchant_refund_no,
            trade_id: self.trade_id,
            order_no: self.order_no,
            reason: self.reason,
            fingerprint: self.fingerprint,
            error_code: self.error_code,
            error_message: self.error_message,
            expected_completion_ms: self.expected_completion_ms,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// The result of inserting a record under a unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted<T> {
    /// This call created it.
    New(T),
    /// A record with that key existed already (returned as stored).
    Existing(T),
}

// ---------------------------------------------------------------------------------------------
// Merchants
// ---------------------------------------------------------------------------------------------

/// Inserts a merchant, or returns the one already stored under its id or key hash.
pub fn insert_merchant(conn: &mut AnyConnection, m: &Merchant) -> Result<Inserted<Merchant>> {
    if let Some(existing) = get_merchant(conn, &m.merchant_id)? {
        return Ok(Inserted::Existing(existing));
    }
    let row = MerchantRow {
        merchant_id: m.merchant_id.clone(),
        name: m.name.clone(),
        api_key_hash: m.api_key_hash.clone(),
        created_at_ms: m.created_at_ms,
    };
    // A savepoint, so that a unique violation does not abort an enclosing PostgreSQL transaction.
    let inserted = conn.transaction(|c| {
        diesel::insert_into(merchants::table)
            .values(&row)
            .execute(c)
    });
    match inserted {
        Ok(_) => Ok(Inserted::New(m.clone())),
        Err(e) if is_unique_violation(&e) => match get_merchant(conn, &m.merchant_id)? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(Error::new(
                ErrorCode::IdempotencyConflict,
                "api_key: already used by another merchant",
            )),
        },
        Err(e) => Err(db_err(e)),
    }
}

pub fn get_merchant(conn: &mut AnyConnection, merchant_id: &str) -> Result<Option<Merchant>> {
    merchants::table
        .find(merchant_id)
        .select(MerchantRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)
        .map(|r| r.map(Merchant::from))
}

pub fn merchant_by_key_hash(conn: &mut AnyConnection, hash: &str) -> Result<Option<Merchant>> {
    merchants::table
        .filter(merchants::api_key_hash.eq(hash))
        .select(MerchantRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)
        .map(|r| r.map(Merchant::from))
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

/// Creates or replaces a channel.
pub fn upsert_channel(conn: &mut AnyConnection, ch: &ChannelConfig, now_ms: i64) -> Result<()> {
    let days = i32::try_from(ch.refund_window_days)
        .map_err(|_| Error::field("refund_window_days", "too large"))?;
    let enabled = i32::from(ch.enabled);
    let update = || {
        diesel::update(channels::table.find(&ch.code)).set((
            channels::refund_window_days.eq(days),
            channels::enabled.eq(enabled),
            channels::updated_at_ms.eq(now_ms),
        ))
    };
    if update().execute(conn).map_err(db_err)? == 1 {
        return Ok(());
    }
    let row = ChannelRow {
        code: ch.code.clone(),
        refund_window_days: days,
        enabled,
        updated_at_ms: now_ms,
    };
    let inserted =
        conn.transaction(|c| diesel::insert_into(channels::table).values(&row).execute(c));
    match inserted {
        Ok(_) => Ok(()),
        // Someone inserted it concurrently: last writer wins, as for an update.
        Err(e) if is_unique_violation(&e) => update().execute(conn).map(|_| ()).map_err(db_err),
        Err(e) => Err(db_err(e)),
    }
}

pub fn get_channel(conn: &mut AnyConnection, code: &str) -> Result<Option<ChannelConfig>> {
    channels::table
        .find(code)
        .select(ChannelRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(ChannelRow::into_domain)
        .transpose()
}

// ---------------------------------------------------------------------------------------------
// Trades
// ---------------------------------------------------------------------------------------------

/// Inserts a trade, or returns the one already stored for its (merchant, order_no).
pub fn insert_trade(conn: &mut AnyConnection, t: &Trade) -> Result<Inserted<Trade>> {
    if let Some(existing) = trade_by_order(conn, &t.merchant_id, &t.order_no)? {
        return Ok(Inserted::Existing(existing));
    }
    let row = TradeRow::from_domain(t);
    let inserted = conn.transaction(|c| diesel::insert_into(trades::table).values(&row).execute(c));
    match inserted {
        Ok(_) => Ok(Inserted::New(t.clone())),
        Err(e) if is_unique_violation(&e) => trade_by_order(conn, &t.merchant_id, &t.order_no)?
            .map(Inserted::Existing)
            .ok_or_else(|| Error::internal(format!("trade {} vanished", t.order_no))),
        Err(e) => Err(db_err(e)),
    }
}

pub fn trade_by_order(
    conn: &mut AnyConnection,
    merchant_id: &str,
    order_no: &str,
) -> Result<Option<Trade>> {
    trades::table
        .filter(trades::merchant_id.eq(merchant_id))
        .filter(trades::order_no.eq(order_no))
        .select(TradeRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(TradeRow::into_domain)
        .transpose()
}

pub fn get_trade(conn: &mut AnyConnection, trade_id: &str) -> Result<Option<Trade>> {
    trades::table
        .find(trade_id)
        .select(TradeRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(TradeRow::into_domain)
        .transpose()
}

/// Marks a trade settled (idempotent).
pub fn mark_settled(conn: &mut AnyConnection, trade_id: &str) -> Result<()> {
    diesel::update(trades::table.find(trade_id))
        .set(trades::settle_status.eq(SettleStatus::Settled.as_str()))
        .execute(conn)
        .map(|_| ())
        .map_err(db_err)
}

/// Unsettled trades, oldest first.
pub fn unsettled_trades(conn: &mut AnyConnection, limit: i64) -> Result<Vec<Trade>> {
    trades::table
        .filter(trades::settle_status.eq(SettleStatus::Unsettled.as_str()))
        .order((trades::created_at_ms.asc(), trades::trade_id.asc()))
        .limit(limit)
        .select(TradeRow::as_select())
        .load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(TradeRow::into_domain)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------------

/// Why [`reserve_refund`] did not insert.
#[derive(Debug)]
pub enum ReserveError {
    /// A refund with the same (merchant, merchant_refund_no) exists (a concurrent duplicate); the
    /// transaction must roll back, and the caller re-reads it.
    Duplicate,
    Kernel(Error),
    Diesel(DieselError),
}

impl From<DieselError> for ReserveError {
    fn from(e: DieselError) -> Self {
        ReserveError::Diesel(e)
    }
}

impl From<Error> for ReserveError {
    fn from(e: Error) -> Self {
        ReserveError::Kernel(e)
    }
}

/// Reserves `refund.amount` on its trade with the over-refund guard and inserts the refund.
/// Call inside a transaction: on any error the caller rolls back, so the reservation and the
/// refund exist together or not at all.
pub fn reserve_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
) -> Result<(), ReserveError> {
    let amount = refund.amount.to_minor();
    let reserved = diesel::update(
        trades::table
            .find(&refund.trade_id)
            .filter((trades::refunded_minor + amount).le(trades::amount_minor)),
    )
    .set(trades::refunded_minor.eq(trades::refunded_minor + amount))
    .execute(conn)?;
    if reserved != 1 {
        return Err(ReserveError::Kernel(Error::new(
            ErrorCode::RefundExceedsPaid,
            format!(
                "refund {} would make the refunds of trade {} exceed the payment",
                refund.amount, refund.order_no
            ),
        )));
    }
    match diesel::insert_into(refunds::table)
        .values(RefundRow::from_domain(refund))
        .execute(conn)
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(ReserveError::Duplicate),
        Err(e) => Err(ReserveError::Diesel(e)),
    }
}

pub fn get_refund(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<MerchantRefund>> {
    refunds::table
        .find(refund_id)
        .select(RefundRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(RefundRow::into_domain)
        .transpose()
}

pub fn refund_by_no(
    conn: &mut AnyConnection,
    merchant_id: &str,
    merchant_refund_no: &str,
) -> Result<Option<MerchantRefund>> {
    refunds::table
        .filter(refunds::merchant_id.eq(merchant_id))
        .filter(refunds::merchant_refund_no.eq(merchant_refund_no))
        .select(RefundRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(RefundRow::into_domain)
        .transpose()
}

/// Moves a refund `from -> to` if it is still in `from` (checked against the state machine).
/// Returns whether this call made the move. When `to` releases the reservation (REJECTED,
/// FAILED), the trade's `refunded` goes down by the refund's amount in the same statement group:
/// call inside a transaction.
pub fn advance_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
    to: ChainState,
    error: (Option<String>, Option<String>),
    now_ms: i64,
) -> Result<bool> {
    refund.chain_state.transition(to)?;
    move_refund(conn, refund, to, error, now_ms)
}

/// Moves a SUCCEEDED refund to FAILED because the bank returned its payout (退票), if it is still
/// SUCCEEDED, and releases its reservation in the same statement group: call inside a
/// transaction. Returns whether this call made the move.
pub fn return_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
    error: (Option<String>, Option<String>),
    now_ms: i64,
) -> Result<bool> {
    let to = refund.chain_state.return_transition()?;
    move_refund(conn, refund, to, error, now_ms)
}

/// The conditional move behind [`advance_refund`] and [`return_refund`] (already checked).
fn move_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
    to: ChainState,
    error: (Option<String>, Option<String>),
    now_ms: i64,
) -> Result<bool> {
    let from = refund.chain_state;
    let (code, message) = error;
    let moved = diesel::update(
        refunds::table
            .find(&refund.refund_id)
            .filter(refunds::chain_state.eq(from.as_str())),
    )
    .set((
        refunds::chain_state.eq(to.as_str()),
        refunds::error_code.eq(code),
        refunds::error_message.eq(message),
        refunds::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if moved == 1 && from.holds_reservation() && !to.holds_reservation() {
        release_reservation(conn, &refund.trade_id, refund.amount.to_minor())?;
    }
    Ok(moved == 1)
}

/// Records the refund center's expected completion (epoch ms; ignored unless positive).
pub fn set_expected_completion(
    conn: &mut AnyConnection,
    refund_id: &str,
    expected_completion_ms: i64,
    now_ms: i64,
) -> Result<()> {
    if expected_completion_ms <= 0 {
        return Ok(());
    }
    diesel::update(refunds::table.find(refund_id))
        .set((
            refunds::expected_completion_ms.eq(expected_completion_ms),
            refunds::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)
        .map(|_| ())
        .map_err(db_err)
}

/// Gives a refund's amount back to its trade.
fn release_reservation(conn: &mut AnyConnection, trade_id: &str, amount_minor: i64) -> Result<()> {
    let released = diesel::update(
        trades::table
            .find(trade_id)
            .filter(trades::refunded_minor.ge(amount_minor)),
    )
    .set(trades::refunded_minor.eq(trades::refunded_minor - amount_minor))
    .execute(conn)
    .map_err(db_err)?;
    if released != 1 {
        return Err(Error::internal(format!(
            "trade {trade_id} holds less than the released {amount_minor}"
        )));
    }
    Ok(())
}

/// Refunds whose chain has a call left to make, oldest first.
pub fn in_flight_refunds(conn: &mut AnyConnection, limit: i64) -> Result<Vec<MerchantRefund>> {
    let states: Vec<&str> = ChainState::IN_FLIGHT.iter().map(|s| s.as_str()).collect();
    refunds::table
        .filter(refunds::chain_state.eq_any(states))
        .order((refunds::created_at_ms.asc(), refunds::refund_id.asc()))
        .limit(limit)
        .select(RefundRow::as_select())
        .load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(RefundRow::into_domain)
        .collect()
}

/// A page of refunds ordered by refund id.
#[derive(Debug, Clone, Default)]
pub struct RefundFilter {
    pub merchant_id: Option<String>,
    /// Empty: any state.
    pub states: Vec<ChainState>,
    pub after: Option<String>,
    pub limit: i64,
}

pub fn list_refunds(conn: &mut AnyConnection, f: &RefundFilter) -> Result<Vec<MerchantRefund>> {
    let mut q = refunds::table.select(RefundRow::as_select()).into_boxed();
    if let Some(m) = &f.merchant_id {
        q = q.filter(refunds::merchant_id.eq(m.clone()));
    }
    if !f.states.is_empty() {
        let states: Vec<String> = f.states.iter().map(|s| s.as_str().to_string()).collect();
        q = q.filter(refunds::chain_state.eq_any(states));
    }
    if let Some(after) = &f.after {
        q = q.filter(refunds::refund_id.gt(after.clone()));
    }
    q.order(refunds::refund_id.asc())
        .limit(f.limit)
        .load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(RefundRow::into_domain)
        .collect()
}

/// The sum of the amounts of a trade's refunds that hold a reservation (an audit of the
/// `refunded_minor` invariant).
pub fn live_refunds_minor(conn: &mut AnyConnection, trade_id: &str) -> Result<i64> {
    let rows: Vec<(i64, String)> = refunds::table
        .filter(refunds::trade_id.eq(trade_id))
        .select((refunds::amount_minor, refunds::chain_state))
        .load(conn)
        .map_err(db_err)?;
    let mut sum = 0i64;
    for (amount, state) in rows {
        if ChainState::parse(&state)?.holds_reservation() {
            sum = sum.saturating_add(amount);
        }
    }
    Ok(sum)
}
