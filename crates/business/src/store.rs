//! Storage of merchants, channels, trades and merchant refunds (diesel, SQLite and PostgreSQL alike).
//!
//! Repository functions take `&mut AnyConnection` and speak domain types; rows and conversions stay
//! here. The guards that keep money right are conditional updates whose affected-row count decides:
//! - [`reserve_refund`]: `refunded_minor + amount <= amount_minor` (never over-refund);
//! - [`advance_refund`] and [`return_refund`]: `chain_state = <from>` (one writer wins each
//!   transition);
//! - [`release_reservation`]: `refunded_minor >= amount` (never below zero);
//! - [`claim_notification`]: `status = 'PENDING' AND next_attempt_at_ms = <seen>` (one sender per
//!   attempt, across replicas).
//!
//! Payer card numbers and notification secrets are stored sealed ([`Sealer`], `enc:v1:`);
//! the functions that read or write them take the cipher. [`seal_plaintext_cards`] seals rows
//! written before encryption existed (run at start).

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

pub mod reinstate;
pub mod reopen;

use crate::domain::crypto::{Sealer, PURPOSE_CARD, PURPOSE_NOTIFY_SECRET};
use crate::domain::notify::{
    AttemptOutcome, Notification, NotificationAttempt, NotificationStatus, NotifyTarget,
};
use crate::domain::{
    money_from_storage, ChainState, ChannelConfig, Merchant, MerchantRefund, RefundKind,
    RefundStatus, SettleStatus, Split, Trade,
};

diesel::table! {
    merchants (merchant_id) {
        merchant_id -> Text,
        name -> Text,
        api_key_hash -> Text,
        created_at_ms -> BigInt,
        notify_url -> Nullable<Text>,
        notify_secret -> Nullable<Text>,
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
        platform_subsidy_minor -> BigInt,
    }
}

diesel::table! {
    trade_receivers (trade_id, receiver_id) {
        trade_id -> Text,
        receiver_id -> Text,
        amount_minor -> BigInt,
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
        kind -> Text,
        operator -> Nullable<Text>,
        error_trade_id -> Nullable<Text>,
    }
}

diesel::table! {
    refund_splits (refund_id, receiver_id) {
        refund_id -> Text,
        receiver_id -> Text,
        amount_minor -> BigInt,
    }
}

diesel::table! {
    notifications (notification_id) {
        notification_id -> Text,
        refund_id -> Text,
        merchant_id -> Text,
        event -> Text,
        status -> Text,
        body -> Text,
        attempts -> Integer,
        next_attempt_at_ms -> BigInt,
        created_at_ms -> BigInt,
        delivered_at_ms -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    notification_attempts (notification_id, attempt_no) {
        notification_id -> Text,
        attempt_no -> Integer,
        attempted_at_ms -> BigInt,
        http_status -> Nullable<Integer>,
        error -> Nullable<Text>,
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
    platform_subsidy_minor: i64,
}

impl TradeRow {
    /// The row of a trade, its card sealed.
    fn from_domain(t: &Trade, cipher: &Sealer) -> Result<TradeRow> {
        let payer_card_no = t
            .payer_card_no
            .as_deref()
            .map(|card| cipher.seal(PURPOSE_CARD, card))
            .transpose()?;
        Ok(TradeRow {
            trade_id: t.trade_id.clone(),
            merchant_id: t.merchant_id.clone(),
            order_no: t.order_no.clone(),
            channel: t.channel.clone(),
            amount_minor: t.amount.to_minor(),
            currency: t.amount.currency().code().to_string(),
            paid_at_ms: t.paid_at_ms,
            refunded_minor: t.refunded.to_minor(),
            settle_status: t.settle_status.as_str().to_string(),
            payer_card_no,
            payer_name: t.payer_name.clone(),
            created_at_ms: t.created_at_ms,
            platform_subsidy_minor: t.platform_subsidy.to_minor(),
        })
    }

    /// The trade of a row, its card opened, with its receivers.
    fn into_domain(self, cipher: &Sealer, receivers: Vec<Split>) -> Result<Trade> {
        let payer_card_no = self
            .payer_card_no
            .as_deref()
            .map(|stored| cipher.open(PURPOSE_CARD, stored))
            .transpose()?;
        Ok(Trade {
            amount: money_from_storage(self.amount_minor, &self.currency)?,
            platform_subsidy: money_from_storage(self.platform_subsidy_minor, &self.currency)?,
            receivers,
            refunded: money_from_storage(self.refunded_minor, &self.currency)?,
            settle_status: SettleStatus::parse(&self.settle_status)?,
            trade_id: self.trade_id,
            merchant_id: self.merchant_id,
            order_no: self.order_no,
            channel: self.channel,
            paid_at_ms: self.paid_at_ms,
            payer_card_no,
            payer_name: self.payer_name,
            created_at_ms: self.created_at_ms,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = trade_receivers)]
struct ReceiverRow {
    trade_id: String,
    receiver_id: String,
    amount_minor: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refund_splits)]
struct RefundSplitRow {
    refund_id: String,
    receiver_id: String,
    amount_minor: i64,
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
    kind: String,
    operator: Option<String>,
    error_trade_id: Option<String>,
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
            kind: r.kind.as_str().to_string(),
            operator: r.operator.clone(),
            error_trade_id: r.kind.is_error_refund().then(|| r.trade_id.clone()),
        }
    }

    fn into_domain(self, split_amounts: Vec<Split>) -> Result<MerchantRefund> {
        Ok(MerchantRefund {
            amount: money_from_storage(self.amount_minor, &self.currency)?,
            kind: RefundKind::parse(&self.kind)?,
            operator: self.operator,
            split_amounts,
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

/// Inserts a trade with its receivers (card sealed), or returns the one already stored for its
/// (merchant, order_no).
pub fn insert_trade(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    t: &Trade,
) -> Result<Inserted<Trade>> {
    if let Some(existing) = trade_by_order(conn, cipher, &t.merchant_id, &t.order_no)? {
        return Ok(Inserted::Existing(existing));
    }
    let row = TradeRow::from_domain(t, cipher)?;
    let receivers: Vec<ReceiverRow> = t
        .receivers
        .iter()
        .map(|r| ReceiverRow {
            trade_id: t.trade_id.clone(),
            receiver_id: r.receiver_id.clone(),
            amount_minor: r.amount.to_minor(),
        })
        .collect();
    // A savepoint: the trade and its receivers together, and a unique violation does not abort an
    // enclosing PostgreSQL transaction.
    let inserted = conn.transaction(|c| {
        diesel::insert_into(trades::table).values(&row).execute(c)?;
        for r in &receivers {
            diesel::insert_into(trade_receivers::table)
                .values(r)
                .execute(c)?;
        }
        Ok::<_, DieselError>(())
    });
    match inserted {
        Ok(()) => Ok(Inserted::New(t.clone())),
        Err(e) if is_unique_violation(&e) => {
            trade_by_order(conn, cipher, &t.merchant_id, &t.order_no)?
                .map(Inserted::Existing)
                .ok_or_else(|| Error::internal(format!("trade {} vanished", t.order_no)))
        }
        Err(e) => Err(db_err(e)),
    }
}

/// Trades of rows, with their receivers (one query for all).
fn trades_of(conn: &mut AnyConnection, cipher: &Sealer, rows: Vec<TradeRow>) -> Result<Vec<Trade>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.trade_id.clone()).collect();
    let receiver_rows: Vec<ReceiverRow> = trade_receivers::table
        .filter(trade_receivers::trade_id.eq_any(ids))
        .order((
            trade_receivers::trade_id.asc(),
            trade_receivers::receiver_id.asc(),
        ))
        .select(ReceiverRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let currencies: HashMap<String, String> = rows
        .iter()
        .map(|r| (r.trade_id.clone(), r.currency.clone()))
        .collect();
    let mut by_trade: HashMap<String, Vec<Split>> = HashMap::new();
    for r in receiver_rows {
        let currency = currencies
            .get(&r.trade_id)
            .ok_or_else(|| Error::internal("receiver of an unknown trade"))?;
        by_trade.entry(r.trade_id).or_default().push(Split {
            receiver_id: r.receiver_id,
            amount: money_from_storage(r.amount_minor, currency)?,
        });
    }
    rows.into_iter()
        .map(|row| {
            let receivers = by_trade.remove(&row.trade_id).unwrap_or_default();
            row.into_domain(cipher, receivers)
        })
        .collect()
}

fn one_trade(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    row: Option<TradeRow>,
) -> Result<Option<Trade>> {
    Ok(trades_of(conn, cipher, row.into_iter().collect())?.pop())
}

pub fn trade_by_order(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    merchant_id: &str,
    order_no: &str,
) -> Result<Option<Trade>> {
    let row = trades::table
        .filter(trades::merchant_id.eq(merchant_id))
        .filter(trades::order_no.eq(order_no))
        .select(TradeRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    one_trade(conn, cipher, row)
}

pub fn get_trade(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    trade_id: &str,
) -> Result<Option<Trade>> {
    let row = trades::table
        .find(trade_id)
        .select(TradeRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    one_trade(conn, cipher, row)
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
pub fn unsettled_trades(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    limit: i64,
) -> Result<Vec<Trade>> {
    let rows = trades::table
        .filter(trades::settle_status.eq(SettleStatus::Unsettled.as_str()))
        .order((trades::created_at_ms.asc(), trades::trade_id.asc()))
        .limit(limit)
        .select(TradeRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    trades_of(conn, cipher, rows)
}

/// A page of trades in trade_id order, optionally of one merchant.
pub fn list_trades(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    merchant_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Trade>> {
    let mut q = trades::table.select(TradeRow::as_select()).into_boxed();
    if let Some(m) = merchant_id {
        q = q.filter(trades::merchant_id.eq(m.to_string()));
    }
    if let Some(a) = after {
        q = q.filter(trades::trade_id.gt(a.to_string()));
    }
    let rows = q
        .order(trades::trade_id.asc())
        .limit(limit)
        .load(conn)
        .map_err(db_err)?;
    trades_of(conn, cipher, rows)
}

/// Seals every payer card still stored in plaintext (rows from before encryption); returns how
/// many. Each row is rewritten only if it still holds the plaintext it was read with.
pub fn seal_plaintext_cards(conn: &mut AnyConnection, cipher: &Sealer) -> Result<u32> {
    let rows: Vec<(String, Option<String>)> = trades::table
        .filter(trades::payer_card_no.is_not_null())
        .filter(
            trades::payer_card_no.not_like(format!("{}%", crate::domain::crypto::SEALED_PREFIX)),
        )
        .select((trades::trade_id, trades::payer_card_no))
        .load(conn)
        .map_err(db_err)?;
    let mut sealed = 0u32;
    for (trade_id, card) in rows {
        let Some(card) = card else { continue };
        if Sealer::is_sealed(&card) {
            continue;
        }
        let value = cipher.seal(PURPOSE_CARD, &card)?;
        sealed += diesel::update(
            trades::table
                .find(&trade_id)
                .filter(trades::payer_card_no.eq(&card)),
        )
        .set(trades::payer_card_no.eq(value))
        .execute(conn)
        .map_err(db_err)? as u32;
    }
    Ok(sealed)
}

/// The raw stored card column of a trade (tests and audits of encryption at rest).
pub fn raw_card_column(conn: &mut AnyConnection, trade_id: &str) -> Result<Option<String>> {
    trades::table
        .find(trade_id)
        .select(trades::payer_card_no)
        .first::<Option<String>>(conn)
        .optional()
        .map_err(db_err)
        .map(Option::flatten)
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
        Ok(_) => {}
        // The same merchant refund number, or a second error refund of the trade.
        Err(e) if is_unique_violation(&e) => return Err(ReserveError::Duplicate),
        Err(e) => return Err(ReserveError::Diesel(e)),
    }
    for split in &refund.split_amounts {
        diesel::insert_into(refund_splits::table)
            .values(RefundSplitRow {
                refund_id: refund.refund_id.clone(),
                receiver_id: split.receiver_id.clone(),
                amount_minor: split.amount.to_minor(),
            })
            .execute(conn)?;
    }
    Ok(())
}

/// Refunds of rows, with their split amounts (one query for all).
fn refunds_of(conn: &mut AnyConnection, rows: Vec<RefundRow>) -> Result<Vec<MerchantRefund>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.refund_id.clone()).collect();
    let split_rows: Vec<RefundSplitRow> = refund_splits::table
        .filter(refund_splits::refund_id.eq_any(ids))
        .order((
            refund_splits::refund_id.asc(),
            refund_splits::receiver_id.asc(),
        ))
        .select(RefundSplitRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let mut by_refund: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for r in split_rows {
        by_refund
            .entry(r.refund_id)
            .or_default()
            .push((r.receiver_id, r.amount_minor));
    }
    rows.into_iter()
        .map(|row| {
            let currency = Currency::parse(&row.currency, "currency")
                .map_err(|e| Error::internal(format!("stored {}", e.message)))?;
            let splits = by_refund
                .remove(&row.refund_id)
                .unwrap_or_default()
                .into_iter()
                .map(|(receiver_id, minor)| Split {
                    receiver_id,
                    amount: Money::from_minor(minor, currency),
                })
                .collect();
            row.into_domain(splits)
        })
        .collect()
}

fn one_refund(conn: &mut AnyConnection, row: Option<RefundRow>) -> Result<Option<MerchantRefund>> {
    Ok(refunds_of(conn, row.into_iter().collect())?.pop())
}

pub fn get_refund(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<MerchantRefund>> {
    let row = refunds::table
        .find(refund_id)
        .select(RefundRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    one_refund(conn, row)
}

pub fn refund_by_no(
    conn: &mut AnyConnection,
    merchant_id: &str,
    merchant_refund_no: &str,
) -> Result<Option<MerchantRefund>> {
    let row = refunds::table
        .filter(refunds::merchant_id.eq(merchant_id))
        .filter(refunds::merchant_refund_no.eq(merchant_refund_no))
        .select(RefundRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    one_refund(conn, row)
}

/// A trade's error refund, if it has one.
pub fn error_refund_of(conn: &mut AnyConnection, trade_id: &str) -> Result<Option<MerchantRefund>> {
    let row = refunds::table
        .filter(refunds::error_trade_id.eq(trade_id))
        .select(RefundRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    one_refund(conn, row)
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
    let rows = refunds::table
        .filter(refunds::chain_state.eq_any(states))
        .order((refunds::created_at_ms.asc(), refunds::refund_id.asc()))
        .limit(limit)
        .select(RefundRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    refunds_of(conn, rows)
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
    let rows = q
        .order(refunds::refund_id.asc())
        .limit(f.limit)
        .load(conn)
        .map_err(db_err)?;
    refunds_of(conn, rows)
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

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

/// Sets (or with `None` clears) a merchant's notification URL and sealed secret. Returns whether
/// the merchant exists.
pub fn set_notify_config(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    merchant_id: &str,
    target: Option<&NotifyTarget>,
) -> Result<bool> {
    let (url, secret) = match target {
        Some(t) => (
            Some(t.url.clone()),
            Some(cipher.seal(PURPOSE_NOTIFY_SECRET, &t.secret)?),
        ),
        None => (None, None),
    };
    let n = diesel::update(merchants::table.find(merchant_id))
        .set((
            merchants::notify_url.eq(url),
            merchants::notify_secret.eq(secret),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(n == 1)
}

/// A merchant's notification URL and (opened) secret, when it has set them.
pub fn notify_config(
    conn: &mut AnyConnection,
    cipher: &Sealer,
    merchant_id: &str,
) -> Result<Option<NotifyTarget>> {
    let row: Option<(Option<String>, Option<String>)> = merchants::table
        .find(merchant_id)
        .select((merchants::notify_url, merchants::notify_secret))
        .first(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        Some((Some(url), Some(secret))) => Ok(Some(NotifyTarget {
            url,
            secret: cipher.open(PURPOSE_NOTIFY_SECRET, &secret)?,
        })),
        _ => Ok(None),
    }
}

/// Whether a merchant has a notification URL (no decryption).
pub fn has_notify_url(conn: &mut AnyConnection, merchant_id: &str) -> Result<bool> {
    let url: Option<Option<String>> = merchants::table
        .find(merchant_id)
        .select(merchants::notify_url)
        .first(conn)
        .optional()
        .map_err(db_err)?;
    Ok(url.flatten().is_some_and(|u| !u.is_empty()))
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications)]
struct NotificationRow {
    notification_id: String,
    refund_id: String,
    merchant_id: String,
    event: String,
    status: String,
    body: String,
    attempts: i32,
    next_attempt_at_ms: i64,
    created_at_ms: i64,
    delivered_at_ms: Option<i64>,
    last_error: Option<String>,
}

impl NotificationRow {
    fn from_domain(n: &Notification) -> NotificationRow {
        NotificationRow {
            notification_id: n.notification_id.clone(),
            refund_id: n.refund_id.clone(),
            merchant_id: n.merchant_id.clone(),
            event: n.event.as_str().to_string(),
            status: n.status.as_str().to_string(),
            body: n.body.clone(),
            attempts: i32::try_from(n.attempts).unwrap_or(i32::MAX),
            next_attempt_at_ms: n.next_attempt_at_ms,
            created_at_ms: n.created_at_ms,
            delivered_at_ms: n.delivered_at_ms,
            last_error: n.last_error.clone(),
        }
    }

    fn into_domain(self) -> Result<Notification> {
        Ok(Notification {
            event: RefundStatus::parse(&self.event)?,
            status: NotificationStatus::parse(&self.status)?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| Error::internal("negative attempt count"))?,
            notification_id: self.notification_id,
            refund_id: self.refund_id,
            merchant_id: self.merchant_id,
            body: self.body,
            next_attempt_at_ms: self.next_attempt_at_ms,
            created_at_ms: self.created_at_ms,
            delivered_at_ms: self.delivered_at_ms,
            last_error: self.last_error,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notification_attempts)]
struct AttemptRow {
    notification_id: String,
    attempt_no: i32,
    attempted_at_ms: i64,
    http_status: Option<i32>,
    error: Option<String>,
}

/// Enqueues a notification unless the refund already has one for the same event (idempotent;
/// call inside the transaction that moved the refund). Returns whether this call inserted it.
pub fn enqueue_notification(conn: &mut AnyConnection, n: &Notification) -> Result<bool> {
    let exists = notifications::table
        .filter(notifications::refund_id.eq(&n.refund_id))
        .filter(notifications::event.eq(n.event.as_str()))
        .count()
        .get_result::<i64>(conn)
        .map_err(db_err)?;
    if exists > 0 {
        return Ok(false);
    }
    let row = NotificationRow::from_domain(n);
    // A savepoint: a concurrent insert's unique violation must not abort the enclosing
    // PostgreSQL transaction.
    match conn.transaction(|c| {
        diesel::insert_into(notifications::table)
            .values(&row)
            .execute(c)
    }) {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// PENDING notifications due at `now_ms`, earliest first.
pub fn due_notifications(
    conn: &mut AnyConnection,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<Notification>> {
    notifications::table
        .filter(notifications::status.eq(NotificationStatus::Pending.as_str()))
        .filter(notifications::next_attempt_at_ms.le(now_ms))
        .order((
            notifications::next_attempt_at_ms.asc(),
            notifications::notification_id.asc(),
        ))
        .limit(limit)
        .select(NotificationRow::as_select())
        .load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(NotificationRow::into_domain)
        .collect()
}

/// Claims a due notification for one attempt by pushing its next attempt to `lease_until_ms`,
/// if nobody moved it since it was read: the affected-row count decides (one sender wins, and a
/// sender that dies mid-attempt leaves it due again after the lease).
pub fn claim_notification(
    conn: &mut AnyConnection,
    n: &Notification,
    lease_until_ms: i64,
) -> Result<bool> {
    let claimed = diesel::update(
        notifications::table
            .find(&n.notification_id)
            .filter(notifications::status.eq(NotificationStatus::Pending.as_str()))
            .filter(notifications::next_attempt_at_ms.eq(n.next_attempt_at_ms))
            .filter(notifications::attempts.eq(i32::try_from(n.attempts).unwrap_or(i32::MAX))),
    )
    .set(notifications::next_attempt_at_ms.eq(lease_until_ms))
    .execute(conn)
    .map_err(db_err)?;
    Ok(claimed == 1)
}

/// Records an attempt and its outcome (call inside a transaction). The attempt row's key
/// (notification, attempt number) makes a duplicate record fail rather than count twice.
pub fn record_attempt(conn: &mut AnyConnection, outcome: &AttemptOutcome) -> Result<()> {
    let a = &outcome.attempt;
    diesel::insert_into(notification_attempts::table)
        .values(AttemptRow {
            notification_id: a.notification_id.clone(),
            attempt_no: i32::try_from(a.attempt_no).unwrap_or(i32::MAX),
            attempted_at_ms: a.attempted_at_ms,
            http_status: a.http_status.map(i32::from),
            error: a.error.clone(),
        })
        .execute(conn)
        .map_err(db_err)?;
    diesel::update(
        notifications::table
            .find(&a.notification_id)
            .filter(notifications::status.eq(NotificationStatus::Pending.as_str())),
    )
    .set((
        notifications::status.eq(outcome.status.as_str()),
        notifications::attempts.eq(i32::try_from(outcome.attempts).unwrap_or(i32::MAX)),
        notifications::next_attempt_at_ms.eq(outcome.next_attempt_at_ms),
        notifications::delivered_at_ms.eq(outcome.delivered_at_ms),
        notifications::last_error.eq(a.error.clone()),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

/// A refund's notifications (oldest first) with their attempts.
pub fn notifications_of(
    conn: &mut AnyConnection,
    refund_id: &str,
) -> Result<Vec<(Notification, Vec<NotificationAttempt>)>> {
    let rows: Vec<NotificationRow> = notifications::table
        .filter(notifications::refund_id.eq(refund_id))
        .order((
            notifications::created_at_ms.asc(),
            notifications::notification_id.asc(),
        ))
        .select(NotificationRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let attempts: Vec<AttemptRow> = notification_attempts::table
            .filter(notification_attempts::notification_id.eq(&row.notification_id))
            .order(notification_attempts::attempt_no.asc())
            .select(AttemptRow::as_select())
            .load(conn)
            .map_err(db_err)?;
        let attempts = attempts
            .into_iter()
            .map(|a| NotificationAttempt {
                notification_id: a.notification_id,
                attempt_no: u32::try_from(a.attempt_no).unwrap_or(0),
                attempted_at_ms: a.attempted_at_ms,
                http_status: a.http_status.and_then(|s| u16::try_from(s).ok()),
                error: a.error,
            })
            .collect();
        out.push((row.into_domain()?, attempts));
    }
    Ok(out)
}
