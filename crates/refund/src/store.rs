//! Storage of the refund center: channels, refund orders and the finalisation outbox, on SQLite or
//! PostgreSQL through [`tuikuan_db::AnyConnection`].
//!
//! Repository functions speak domain types; rows and their conversions stay here. Every state
//! change of an order is written by [`save_transition`], a conditional update guarded by the
//! order's state columns as they were read: when another writer moved the order first, it updates
//! nothing and the caller re-reads.

use std::collections::HashMap;

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::{
    BankStatus, Channel, ChannelKind, OutboxEntry, OutboxStep, RefundMethod, RefundOrder,
    RefundStatus, SubmitStatus,
};

diesel::table! {
    channels (code) {
        code -> Text,
        kind -> Text,
        methods -> Text,
        original_route_window_days -> Integer,
        bank_code -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    refunds (refund_id) {
        refund_id -> Text,
        merchant_id -> Text,
        trade_id -> Text,
        order_no -> Text,
        channel -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        trade_paid_at_ms -> BigInt,
        payer_card_no -> Text,
        payer_name -> Text,
        method -> Text,
        submit_status -> Text,
        refund_status -> Text,
        bank_status -> Text,
        bank_seq -> BigInt,
        bank_ref -> Text,
        reason -> Text,
        waiting_manual -> Integer,
        fingerprint -> Text,
        created_at_ms -> BigInt,
        submitted_at_ms -> Nullable<BigInt>,
        finalized_at_ms -> Nullable<BigInt>,
        final_source -> Text,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        refund_id -> Text,
        step -> Text,
        ordinal -> Integer,
        done -> Integer,
        attempts -> Integer,
        last_error -> Text,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = channels)]
struct ChannelRow {
    code: String,
    kind: String,
    methods: String,
    original_route_window_days: i32,
    bank_code: String,
    updated_at_ms: i64,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = refunds)]
struct RefundRow {
    refund_id: String,
    merchant_id: String,
    trade_id: String,
    order_no: String,
    channel: String,
    amount_minor: i64,
    currency: String,
    trade_paid_at_ms: i64,
    payer_card_no: String,
    payer_name: String,
    method: String,
    submit_status: String,
    refund_status: String,
    bank_status: String,
    bank_seq: i64,
    bank_ref: String,
    reason: String,
    waiting_manual: i32,
    fingerprint: String,
    created_at_ms: i64,
    submitted_at_ms: Option<i64>,
    finalized_at_ms: Option<i64>,
    final_source: String,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = outbox)]
struct OutboxRow {
    id: String,
    refund_id: String,
    step: String,
    ordinal: i32,
    done: i32,
    attempts: i32,
    last_error: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

fn parse_stored<T>(parse: fn(&str) -> Option<T>, what: &str, value: &str) -> Result<T> {
    parse(value).ok_or_else(|| corrupt(what, value))
}

fn methods_to_text(methods: &[RefundMethod]) -> String {
    methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn methods_from_text(text: &str) -> Result<Vec<RefundMethod>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|m| parse_stored(RefundMethod::parse, "refund method", m))
        .collect()
}

impl ChannelRow {
    fn from_domain(c: &Channel, now_ms: i64) -> Result<ChannelRow> {
        Ok(ChannelRow {
            code: c.code.clone(),
            kind: c.kind.as_str().to_string(),
            methods: methods_to_text(&c.methods),
            original_route_window_days: i32::try_from(c.original_route_window_days)
                .map_err(|_| Error::field("original_route_window_days", "is too large"))?,
            bank_code: c.bank_code.clone(),
            updated_at_ms: now_ms,
        })
    }

    fn into_domain(self) -> Result<Channel> {
        Ok(Channel {
            kind: parse_stored(ChannelKind::parse, "channel kind", &self.kind)?,
            methods: methods_from_text(&self.methods)?,
            original_route_window_days: u32::try_from(self.original_route_window_days)
                .map_err(|_| corrupt("window", &self.original_route_window_days.to_string()))?,
            code: self.code,
            bank_code: self.bank_code,
        })
    }
}

fn bank_seq_to_db(seq: Option<u64>) -> Result<i64> {
    match seq {
        None => Ok(-1),
        Some(s) => i64::try_from(s).map_err(|_| Error::field("sequence", "is too large")),
    }
}

impl RefundRow {
    fn from_domain(o: &RefundOrder) -> Result<RefundRow> {
        Ok(RefundRow {
            refund_id: o.refund_id.clone(),
            merchant_id: o.merchant_id.clone(),
            trade_id: o.trade_id.clone(),
            order_no: o.order_no.clone(),
            channel: o.channel.clone(),
            amount_minor: o.amount.to_minor(),
            currency: o.amount.currency().code().to_string(),
            trade_paid_at_ms: o.trade_paid_at_ms,
            payer_card_no: o.payer_card_no.clone(),
            payer_name: o.payer_name.clone(),
            method: o.method.as_str().to_string(),
            submit_status: o.submit_status.as_str().to_string(),
            refund_status: o.refund_status.as_str().to_string(),
            bank_status: o.bank_status.map_or("", BankStatus::as_str).to_string(),
            bank_seq: bank_seq_to_db(o.bank_seq)?,
            bank_ref: o.bank_ref.clone(),
            reason: o.reason.clone(),
            waiting_manual: i32::from(o.waiting_manual),
            fingerprint: o.fingerprint.clone(),
            created_at_ms: o.created_at_ms,
            submitted_at_ms: o.submitted_at_ms,
            finalized_at_ms: o.finalized_at_ms,
            final_source: o.final_source.clone(),
        })
    }

    fn into_domain(self, pending_steps: u32) -> Result<RefundOrder> {
        let currency = parse_stored(
            |c| Currency::parse(c, "currency").ok(),
            "currency",
            &self.currency,
        )?;
        let bank_status = if self.bank_status.is_empty() {
            None
        } else {
            Some(parse_stored(
                BankStatus::parse,
                "bank status",
                &self.bank_status,
            )?)
        };
        let bank_seq = if self.bank_seq < 0 {
            None
        } else {
            Some(self.bank_seq.unsigned_abs())
        };
        let amount = Money::from_minor(self.amount_minor, currency);
        if !amount.is_positive() {
            return Err(corrupt("amount", &self.amount_minor.to_string()));
        }
        Ok(RefundOrder {
            method: parse_stored(RefundMethod::parse, "refund method", &self.method)?,
            submit_status: parse_stored(SubmitStatus::parse, "submit status", &self.submit_status)?,
            refund_status: parse_stored(RefundStatus::parse, "refund status", &self.refund_status)?,
            refund_id: self.refund_id,
            merchant_id: self.merchant_id,
            trade_id: self.trade_id,
            order_no: self.order_no,
            channel: self.channel,
            amount,
            trade_paid_at_ms: self.trade_paid_at_ms,
            payer_card_no: self.payer_card_no,
            payer_name: self.payer_name,
            bank_status,
            bank_seq,
            bank_ref: self.bank_ref,
            reason: self.reason,
            waiting_manual: self.waiting_manual != 0,
            fingerprint: self.fingerprint,
            created_at_ms: self.created_at_ms,
            submitted_at_ms: self.submitted_at_ms,
            finalized_at_ms: self.finalized_at_ms,
            final_source: self.final_source,
            pending_steps,
        })
    }
}

impl OutboxRow {
    fn into_domain(self) -> Result<OutboxEntry> {
        Ok(OutboxEntry {
            step: parse_stored(OutboxStep::parse, "outbox step", &self.step)?,
            id: self.id,
            refund_id: self.refund_id,
            ordinal: self.ordinal,
            done: self.done != 0,
            attempts: self.attempts,
            last_error: self.last_error,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Channels

/// Inserts or replaces a channel. Runs outside a transaction (a unique violation is handled by
/// updating instead).
pub fn upsert_channel(conn: &mut AnyConnection, channel: &Channel, now_ms: i64) -> Result<Channel> {
    channel.validate()?;
    let row = ChannelRow::from_domain(channel, now_ms)?;
    let update = |conn: &mut AnyConnection| {
        diesel::update(channels::table.find(&row.code))
            .set((
                channels::kind.eq(&row.kind),
                channels::methods.eq(&row.methods),
                channels::original_route_window_days.eq(row.original_route_window_days),
                channels::bank_code.eq(&row.bank_code),
                channels::updated_at_ms.eq(row.updated_at_ms),
            ))
            .execute(conn)
            .map_err(db_err)
    };
    if update(conn)? == 0 {
        match diesel::insert_into(channels::table)
            .values(row.clone())
            .execute(conn)
        {
            Ok(_) => {}
            // Someone inserted it between our update and insert: theirs loses to ours.
            Err(e) if is_unique_violation(&e) => {
                update(conn)?;
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    get_channel(conn, &channel.code)?
        .ok_or_else(|| Error::internal(format!("channel {} vanished after upsert", channel.code)))
}

pub fn get_channel(conn: &mut AnyConnection, code: &str) -> Result<Option<Channel>> {
    channels::table
        .find(code)
        .first::<ChannelRow>(conn)
        .optional()
        .map_err(db_err)?
        .map(ChannelRow::into_domain)
        .transpose()
}

pub fn list_channels(conn: &mut AnyConnection) -> Result<Vec<Channel>> {
    channels::table
        .order(channels::code.asc())
        .load::<ChannelRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(ChannelRow::into_domain)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Refund orders

/// Counts undelivered outbox steps for each of `ids`.
fn pending_steps_for(conn: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, u32>> {
    let mut counts = HashMap::new();
    if ids.is_empty() {
        return Ok(counts);
    }
    let pending: Vec<String> = outbox::table
        .filter(outbox::done.eq(0))
        .filter(outbox::refund_id.eq_any(ids))
        .select(outbox::refund_id)
        .load(conn)
        .map_err(db_err)?;
    for id in pending {
        *counts.entry(id).or_insert(0u32) += 1;
    }
    Ok(counts)
}

fn into_orders(conn: &mut AnyConnection, rows: Vec<RefundRow>) -> Result<Vec<RefundOrder>> {
    let ids: Vec<String> = rows.iter().map(|r| r.refund_id.clone()).collect();
    let counts = pending_steps_for(conn, &ids)?;
    rows.into_iter()
        .map(|r| {
            let n = counts.get(&r.refund_id).copied().unwrap_or(0);
            r.into_domain(n)
        })
        .collect()
}

pub fn get_refund(conn: &mut AnyConnection, refund_id: &str) -> Result<Option<RefundOrder>> {
    let row = refunds::table
        .find(refund_id)
        .first::<RefundRow>(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        None => Ok(None),
        Some(row) => Ok(into_orders(conn, vec![row])?.pop()),
    }
}

/// What [`insert_refund`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The order was written.
    New,
    /// An order with this refund id already exists (a concurrent or earlier request).
    Exists(Box<RefundOrder>),
}

/// Inserts a new order. Must not run inside a larger PostgreSQL transaction: a duplicate key is
/// detected by the insert failing, and the existing order is then read back.
pub fn insert_refund(conn: &mut AnyConnection, order: &RefundOrder) -> Result<Inserted> {
    let row = RefundRow::from_domain(order)?;
    match diesel::insert_into(refunds::table)
        .values(row)
        .execute(conn)
    {
        Ok(_) => Ok(Inserted::New),
        Err(e) if is_unique_violation(&e) => {
            let existing = get_refund(conn, &order.refund_id)?.ok_or_else(|| {
                Error::internal(format!(
                    "refund {} conflicted on insert but cannot be read",
                    order.refund_id
                ))
            })?;
            Ok(Inserted::Exists(Box::new(existing)))
        }
        Err(e) => Err(db_err(e)),
    }
}

/// Filters of [`list_refunds`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundFilter {
    pub channel: Option<String>,
    pub refund_status: Option<RefundStatus>,
    /// Only refund ids after this one (ascending pagination).
    pub after: Option<String>,
    pub limit: i64,
}

pub fn list_refunds(conn: &mut AnyConnection, filter: &RefundFilter) -> Result<Vec<RefundOrder>> {
    let mut q = refunds::table.into_boxed();
    if let Some(c) = &filter.channel {
        q = q.filter(refunds::channel.eq(c.clone()));
    }
    if let Some(s) = filter.refund_status {
        q = q.filter(refunds::refund_status.eq(s.as_str()));
    }
    if let Some(a) = &filter.after {
        q = q.filter(refunds::refund_id.gt(a.clone()));
    }
    let rows = q
        .order(refunds::refund_id.asc())
        .limit(filter.limit)
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    into_orders(conn, rows)
}

/// Orders the interface cycle should send: PENDING, PROCESSING, method INTERFACE, not waiting for
/// people. Oldest first.
pub fn due_interface(conn: &mut AnyConnection, limit: i64) -> Result<Vec<RefundOrder>> {
    let rows = refunds::table
        .filter(refunds::submit_status.eq(SubmitStatus::Pending.as_str()))
        .filter(refunds::method.eq(RefundMethod::Interface.as_str()))
        .filter(refunds::refund_status.eq(RefundStatus::Processing.as_str()))
        .filter(refunds::waiting_manual.eq(0))
        .order((refunds::created_at_ms.asc(), refunds::refund_id.asc()))
        .limit(limit)
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    into_orders(conn, rows)
}

/// How many unfinished orders wait for people.
pub fn count_waiting(conn: &mut AnyConnection) -> Result<i64> {
    refunds::table
        .filter(refunds::refund_status.eq(RefundStatus::Processing.as_str()))
        .filter(refunds::waiting_manual.eq(1))
        .count()
        .get_result(conn)
        .map_err(db_err)
}

/// Writes `after` over the stored order if it still is in the state `before` was read in (submit
/// status, refund status, bank status and bank sequence). `false`: someone else moved it first.
pub fn save_transition(
    conn: &mut AnyConnection,
    before: &RefundOrder,
    after: &RefundOrder,
) -> Result<bool> {
    if before.refund_id != after.refund_id {
        return Err(Error::internal("a transition cannot change the refund id"));
    }
    let b = RefundRow::from_domain(before)?;
    let a = RefundRow::from_domain(after)?;
    let n = diesel::update(
        refunds::table
            .filter(refunds::refund_id.eq(&b.refund_id))
            .filter(refunds::submit_status.eq(&b.submit_status))
            .filter(refunds::refund_status.eq(&b.refund_status))
            .filter(refunds::bank_status.eq(&b.bank_status))
            .filter(refunds::bank_seq.eq(b.bank_seq)),
    )
    .set((
        refunds::method.eq(&a.method),
        refunds::submit_status.eq(&a.submit_status),
        refunds::refund_status.eq(&a.refund_status),
        refunds::bank_status.eq(&a.bank_status),
        refunds::bank_seq.eq(a.bank_seq),
        refunds::bank_ref.eq(&a.bank_ref),
        refunds::reason.eq(&a.reason),
        refunds::waiting_manual.eq(a.waiting_manual),
        refunds::submitted_at_ms.eq(a.submitted_at_ms),
        refunds::finalized_at_ms.eq(a.finalized_at_ms),
        refunds::final_source.eq(&a.final_source),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Records why the last submission attempt failed, without changing any status (only while the
/// order still is PENDING).
pub fn note_submit_error(conn: &mut AnyConnection, refund_id: &str, note: &str) -> Result<()> {
    diesel::update(
        refunds::table
            .filter(refunds::refund_id.eq(refund_id))
            .filter(refunds::submit_status.eq(SubmitStatus::Pending.as_str())),
    )
    .set(refunds::reason.eq(note))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

/// A channel's orders reconciliation takes part: SUBMITTED + PROCESSING, submitted before
/// `before_ms`, after `after` by refund id.
pub fn list_submitted(
    conn: &mut AnyConnection,
    channel: &str,
    before_ms: i64,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RefundOrder>> {
    let mut q = refunds::table
        .filter(refunds::channel.eq(channel.to_string()))
        .filter(refunds::submit_status.eq(SubmitStatus::Submitted.as_str()))
        .filter(refunds::refund_status.eq(RefundStatus::Processing.as_str()))
        .filter(refunds::submitted_at_ms.lt(before_ms))
        .into_boxed();
    if let Some(a) = after {
        q = q.filter(refunds::refund_id.gt(a.to_string()));
    }
    let rows = q
        .order(refunds::refund_id.asc())
        .limit(limit)
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    into_orders(conn, rows)
}

// ---------------------------------------------------------------------------------------------
// Outbox

/// Writes finalisation steps (inside the transaction that made the order final).
pub fn insert_outbox(conn: &mut AnyConnection, entries: &[OutboxEntry], now_ms: i64) -> Result<()> {
    let rows: Vec<OutboxRow> = entries
        .iter()
        .map(|e| OutboxRow {
            id: e.id.clone(),
            refund_id: e.refund_id.clone(),
            step: e.step.as_str().to_string(),
            ordinal: e.ordinal,
            done: i32::from(e.done),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        })
        .collect();
    for row in rows {
        diesel::insert_into(outbox::table)
            .values(row)
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(())
}

/// Refunds with undelivered steps, oldest step first.
pub fn refunds_with_pending_steps(conn: &mut AnyConnection, limit: i64) -> Result<Vec<String>> {
    let ids: Vec<String> = outbox::table
        .filter(outbox::done.eq(0))
        .select(outbox::refund_id)
        .distinct()
        .order(outbox::refund_id.asc())
        .limit(limit)
        .load(conn)
        .map_err(db_err)?;
    Ok(ids)
}

/// A refund's outbox steps (all of them), in order.
pub fn outbox_of(conn: &mut AnyConnection, refund_id: &str) -> Result<Vec<OutboxEntry>> {
    outbox::table
        .filter(outbox::refund_id.eq(refund_id))
        .order(outbox::ordinal.asc())
        .load::<OutboxRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(OutboxRow::into_domain)
        .collect()
}

/// Records an attempt of a step: delivered (`error` = None) or failed.
pub fn record_attempt(
    conn: &mut AnyConnection,
    id: &str,
    error: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    let target = outbox::table
        .filter(outbox::id.eq(id))
        .filter(outbox::done.eq(0));
    let n = match error {
        None => diesel::update(target)
            .set((
                outbox::done.eq(1),
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::last_error.eq(""),
                outbox::updated_at_ms.eq(now_ms),
            ))
            .execute(conn),
        Some(e) => diesel::update(target)
            .set((
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::last_error.eq(e),
                outbox::updated_at_ms.eq(now_ms),
            ))
            .execute(conn),
    }
    .map_err(db_err)?;
    // 0 rows: another runner delivered it meanwhile (deliveries are idempotent downstream).
    let _ = n;
    Ok(())
}

/// How many steps are not delivered yet.
pub fn count_pending_steps(conn: &mut AnyConnection) -> Result<i64> {
    outbox::table
        .filter(outbox::done.eq(0))
        .count()
        .get_result(conn)
        .map_err(db_err)
}
