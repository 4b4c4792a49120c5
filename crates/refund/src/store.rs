//! Storage of the refund center: channels, refund orders and the finalisation outbox, on SQLite or
//! PostgreSQL through [`tuikuan_db::AnyConnection`].
//!
//! Repository functions speak domain types; rows and their conversions stay here. Every state
//! change of an order is written by [`save_transition`], a conditional update guarded by the
//! order's state columns as they were read: when another writer moved the order first, it updates
//! nothing and the caller re-reads.

use std::collections::HashMap;

use chrono::NaiveDate;
use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::batch::{
    AmountFormat, BankTemplate, Batch, BatchRow, BatchStatus, RowStatus, TemplateColumn,
    TemplateField,
};
use crate::domain::control::{AuditEntry, ControlAction, RiskRule, RiskRuleKind};
use crate::domain::{
    Attempt, AttemptOutcome, BankStatus, Channel, ChannelKind, HoldStatus, OutboxEntry, OutboxStep,
    RefundKind, RefundMethod, RefundOrder, RefundStatus, SubmitStatus,
};
use crate::vault::Sealer;
use tuikuan_kernel::bank_ref::IdScheme;

diesel::table! {
    channels (code) {
        code -> Text,
        kind -> Text,
        methods -> Text,
        original_route_window_days -> Integer,
        bank_code -> Text,
        updated_at_ms -> BigInt,
        id_scheme -> Text,
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
        attempt -> Integer,
        bank_reference_id -> Text,
        expected_completion_ms -> Nullable<BigInt>,
        kind -> Text,
        hold_status -> Text,
        hold_rule_id -> Text,
        hold_reason -> Text,
        suspended -> Integer,
    }
}

diesel::table! {
    refund_cards (refund_id) {
        refund_id -> Text,
        card_hash -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    risk_rules (rule_id) {
        rule_id -> Text,
        kind -> Text,
        channel -> Text,
        threshold_minor -> BigInt,
        currency -> Text,
        max_count -> Integer,
        window_minutes -> Integer,
        enabled -> Integer,
        description -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    refund_audit (audit_id) {
        audit_id -> Text,
        refund_id -> Text,
        action -> Text,
        operator -> Text,
        role -> Text,
        reason -> Text,
        at_ms -> BigInt,
        state_before -> Text,
        state_after -> Text,
    }
}

diesel::table! {
    refund_attempts (refund_id, number) {
        refund_id -> Text,
        number -> Integer,
        method -> Text,
        bank_reference_id -> Text,
        outcome -> Text,
        reason -> Text,
        started_at_ms -> BigInt,
        ended_at_ms -> Nullable<BigInt>,
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
    id_scheme: String,
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
    attempt: i32,
    bank_reference_id: String,
    expected_completion_ms: Option<i64>,
    kind: String,
    hold_status: String,
    hold_rule_id: String,
    hold_reason: String,
    suspended: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable)]
#[diesel(table_name = refund_attempts)]
struct AttemptRow {
    refund_id: String,
    number: i32,
    method: String,
    bank_reference_id: String,
    outcome: String,
    reason: String,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
}

impl AttemptRow {
    fn from_domain(refund_id: &str, a: &Attempt) -> Result<AttemptRow> {
        Ok(AttemptRow {
            refund_id: refund_id.to_string(),
            number: i32::try_from(a.number)
                .map_err(|_| Error::internal("attempt number too large"))?,
            method: a.method.as_str().to_string(),
            bank_reference_id: a.bank_reference_id.clone(),
            outcome: a.outcome.as_str().to_string(),
            reason: a.reason.clone(),
            started_at_ms: a.started_at_ms,
            ended_at_ms: a.ended_at_ms,
        })
    }

    fn into_domain(self) -> Result<Attempt> {
        Ok(Attempt {
            number: u32::try_from(self.number)
                .map_err(|_| corrupt("attempt number", &self.number.to_string()))?,
            method: parse_stored(RefundMethod::parse, "refund method", &self.method)?,
            outcome: parse_stored(AttemptOutcome::parse, "attempt outcome", &self.outcome)?,
            bank_reference_id: self.bank_reference_id,
            reason: self.reason,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
        })
    }
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
            id_scheme: c.id_scheme.map(|s| s.as_str()).unwrap_or("").to_string(),
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
            id_scheme: IdScheme::parse(&self.id_scheme, "id_scheme")
                .map_err(|_| corrupt("id scheme", &self.id_scheme))?,
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
    /// The row of `o`; its card number as it is in `o` (see [`RefundRow::encrypted`]).
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
            attempt: i32::try_from(o.attempt)
                .map_err(|_| Error::internal("attempt number too large"))?,
            bank_reference_id: o.bank_reference_id.clone(),
            expected_completion_ms: o.expected_completion_ms,
            kind: o.kind.as_str().to_string(),
            hold_status: o.hold_status.map_or("", HoldStatus::as_str).to_string(),
            hold_rule_id: o.hold_rule_id.clone(),
            hold_reason: o.hold_reason.clone(),
            suspended: i32::from(o.suspended),
        })
    }

    /// The row to write: its card number encrypted (bound to the refund id).
    fn encrypted(mut self, vault: &Sealer) -> Result<RefundRow> {
        if !Sealer::is_sealed(&self.payer_card_no) {
            self.payer_card_no = vault.seal(&self.refund_id, &self.payer_card_no)?;
        }
        Ok(self)
    }

    fn into_domain(
        self,
        vault: &Sealer,
        pending_steps: u32,
        attempts: Vec<Attempt>,
    ) -> Result<RefundOrder> {
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
        let hold_status = if self.hold_status.is_empty() {
            None
        } else {
            Some(parse_stored(
                HoldStatus::parse,
                "hold status",
                &self.hold_status,
            )?)
        };
        let payer_card_no = vault.open(&self.refund_id, &self.payer_card_no)?;
        Ok(RefundOrder {
            kind: parse_stored(RefundKind::parse, "refund kind", &self.kind)?,
            hold_status,
            hold_rule_id: self.hold_rule_id,
            hold_reason: self.hold_reason,
            suspended: self.suspended != 0,
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
            payer_card_no,
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
            attempt: u32::try_from(self.attempt)
                .map_err(|_| corrupt("attempt", &self.attempt.to_string()))?,
            bank_reference_id: self.bank_reference_id,
            expected_completion_ms: self.expected_completion_ms,
            attempts,
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
                channels::id_scheme.eq(&row.id_scheme),
            ))
            .execute(conn)
    };
    tuikuan_db::update_or_insert(conn, update, |conn| {
        diesel::insert_into(channels::table)
            .values(row.clone())
            .execute(conn)
    })?;
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

/// The attempts of each of `ids`, in order.
fn attempts_for(conn: &mut AnyConnection, ids: &[String]) -> Result<HashMap<String, Vec<Attempt>>> {
    let mut out: HashMap<String, Vec<Attempt>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<AttemptRow> = refund_attempts::table
        .filter(refund_attempts::refund_id.eq_any(ids))
        .order((
            refund_attempts::refund_id.asc(),
            refund_attempts::number.asc(),
        ))
        .load(conn)
        .map_err(db_err)?;
    for row in rows {
        let id = row.refund_id.clone();
        out.entry(id).or_default().push(row.into_domain()?);
    }
    Ok(out)
}

fn into_orders(
    conn: &mut AnyConnection,
    vault: &Sealer,
    rows: Vec<RefundRow>,
) -> Result<Vec<RefundOrder>> {
    let ids: Vec<String> = rows.iter().map(|r| r.refund_id.clone()).collect();
    let counts = pending_steps_for(conn, &ids)?;
    let mut attempts = attempts_for(conn, &ids)?;
    rows.into_iter()
        .map(|r| {
            let n = counts.get(&r.refund_id).copied().unwrap_or(0);
            let a = attempts.remove(&r.refund_id).unwrap_or_default();
            r.into_domain(vault, n, a)
        })
        .collect()
}

/// The refund whose attempt the bank knows by `bank_reference_id`.
pub fn refund_id_by_reference(
    conn: &mut AnyConnection,
    bank_reference_id: &str,
) -> Result<Option<String>> {
    refund_attempts::table
        .filter(refund_attempts::bank_reference_id.eq(bank_reference_id))
        .select(refund_attempts::refund_id)
        .first::<String>(conn)
        .optional()
        .map_err(db_err)
}

pub fn get_refund(
    conn: &mut AnyConnection,
    vault: &Sealer,
    refund_id: &str,
) -> Result<Option<RefundOrder>> {
    let row = refunds::table
        .find(refund_id)
        .first::<RefundRow>(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        None => Ok(None),
        Some(row) => Ok(into_orders(conn, vault, vec![row])?.pop()),
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

/// Inserts a new order (its card number encrypted, its card hash indexed) with its audit entries.
/// Must not run inside a larger PostgreSQL transaction: a duplicate key is detected by the insert
/// failing, and the existing order is then read back.
pub fn insert_refund(
    conn: &mut AnyConnection,
    vault: &Sealer,
    order: &RefundOrder,
    audits: &[AuditEntry],
) -> Result<Inserted> {
    let row = RefundRow::from_domain(order)?.encrypted(vault)?;
    let card = CardRow {
        refund_id: order.refund_id.clone(),
        card_hash: vault.keyed_hash(&order.payer_card_no),
        created_at_ms: order.created_at_ms,
    };
    let audits = audits.iter().map(AuditRow::from_domain).collect::<Vec<_>>();
    let attempts = order
        .attempts
        .iter()
        .map(|a| AttemptRow::from_domain(&order.refund_id, a))
        .collect::<Result<Vec<_>>>()?;
    let written = conn.transaction::<_, diesel::result::Error, _>(|c| {
        diesel::insert_into(refunds::table).values(row).execute(c)?;
        for a in attempts {
            diesel::insert_into(refund_attempts::table)
                .values(a)
                .execute(c)?;
        }
        if !card.card_hash.is_empty() {
            diesel::insert_into(refund_cards::table)
                .values(card)
                .execute(c)?;
        }
        for a in audits {
            diesel::insert_into(refund_audit::table)
                .values(a)
                .execute(c)?;
        }
        Ok(())
    });
    match written {
        Ok(()) => Ok(Inserted::New),
        Err(e) if is_unique_violation(&e) => {
            let existing = get_refund(conn, vault, &order.refund_id)?.ok_or_else(|| {
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
    pub hold_status: Option<HoldStatus>,
    /// Only refund ids after this one (ascending pagination).
    pub after: Option<String>,
    pub limit: i64,
}

pub fn list_refunds(
    conn: &mut AnyConnection,
    vault: &Sealer,
    filter: &RefundFilter,
) -> Result<Vec<RefundOrder>> {
    let mut q = refunds::table.into_boxed();
    if let Some(c) = &filter.channel {
        q = q.filter(refunds::channel.eq(c.clone()));
    }
    if let Some(s) = filter.refund_status {
        q = q.filter(refunds::refund_status.eq(s.as_str()));
    }
    if let Some(h) = filter.hold_status {
        q = q.filter(refunds::hold_status.eq(h.as_str()));
    }
    if let Some(a) = &filter.after {
        q = q.filter(refunds::refund_id.gt(a.clone()));
    }
    let rows = q
        .order(refunds::refund_id.asc())
        .limit(filter.limit)
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    into_orders(conn, vault, rows)
}

/// Orders the interface cycle should send: PENDING, PROCESSING, method INTERFACE, not waiting for
/// people. Oldest first.
pub fn due_interface(
    conn: &mut AnyConnection,
    vault: &Sealer,
    limit: i64,
) -> Result<Vec<RefundOrder>> {
    due_for(conn, vault, RefundMethod::Interface, limit)
}

/// Orders whose payout the dispatch should (re)create: PENDING, PROCESSING, method PAYOUT.
pub fn due_payout(
    conn: &mut AnyConnection,
    vault: &Sealer,
    limit: i64,
) -> Result<Vec<RefundOrder>> {
    due_for(conn, vault, RefundMethod::Payout, limit)
}

/// Orders waiting for a file-upload or offline batch: PENDING, PROCESSING, no row yet, accepted
/// (their current attempt started) before `before_ms`, neither HELD nor suspended. Oldest first.
pub fn batch_candidates(
    conn: &mut AnyConnection,
    vault: &Sealer,
    before_ms: i64,
) -> Result<Vec<RefundOrder>> {
    let rows = refunds::table
        .filter(refunds::submit_status.eq(SubmitStatus::Pending.as_str()))
        .filter(refunds::method.eq_any([
            RefundMethod::FileUpload.as_str(),
            RefundMethod::Offline.as_str(),
        ]))
        .filter(refunds::refund_status.eq(RefundStatus::Processing.as_str()))
        .filter(refunds::bank_reference_id.eq(""))
        .filter(refunds::suspended.eq(0))
        .filter(refunds::hold_status.ne(HoldStatus::Held.as_str()))
        .order((refunds::created_at_ms.asc(), refunds::refund_id.asc()))
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    let orders = into_orders(conn, vault, rows)?;
    Ok(orders
        .into_iter()
        .filter(|o| {
            !o.is_blocked()
                && o.current_attempt()
                    .is_some_and(|a| a.started_at_ms < before_ms)
        })
        .collect())
}

fn due_for(
    conn: &mut AnyConnection,
    vault: &Sealer,
    method: RefundMethod,
    limit: i64,
) -> Result<Vec<RefundOrder>> {
    let rows = refunds::table
        .filter(refunds::submit_status.eq(SubmitStatus::Pending.as_str()))
        .filter(refunds::method.eq(method.as_str()))
        .filter(refunds::refund_status.eq(RefundStatus::Processing.as_str()))
        .filter(refunds::waiting_manual.eq(0))
        .filter(refunds::suspended.eq(0))
        .filter(refunds::hold_status.ne(HoldStatus::Held.as_str()))
        .order((refunds::created_at_ms.asc(), refunds::refund_id.asc()))
        .limit(limit)
        .load::<RefundRow>(conn)
        .map_err(db_err)?;
    into_orders(conn, vault, rows)
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
            .filter(refunds::bank_seq.eq(b.bank_seq))
            .filter(refunds::attempt.eq(b.attempt))
            .filter(refunds::bank_reference_id.eq(&b.bank_reference_id))
            .filter(refunds::hold_status.eq(&b.hold_status))
            .filter(refunds::suspended.eq(b.suspended)),
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
        refunds::attempt.eq(a.attempt),
        refunds::bank_reference_id.eq(&a.bank_reference_id),
        refunds::expected_completion_ms.eq(a.expected_completion_ms),
        refunds::hold_status.eq(&a.hold_status),
        refunds::hold_rule_id.eq(&a.hold_rule_id),
        refunds::hold_reason.eq(&a.hold_reason),
        refunds::suspended.eq(a.suspended),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if n != 1 {
        return Ok(false);
    }
    // The attempts that are new or changed (the guard above makes this writer the only one).
    for attempt in &after.attempts {
        let row = AttemptRow::from_domain(&after.refund_id, attempt)?;
        match before.attempts.iter().find(|x| x.number == attempt.number) {
            Some(old) if old == attempt => {}
            Some(_) => {
                diesel::update(
                    refund_attempts::table
                        .filter(refund_attempts::refund_id.eq(&row.refund_id))
                        .filter(refund_attempts::number.eq(row.number)),
                )
                .set((
                    refund_attempts::bank_reference_id.eq(&row.bank_reference_id),
                    refund_attempts::outcome.eq(&row.outcome),
                    refund_attempts::reason.eq(&row.reason),
                    refund_attempts::ended_at_ms.eq(row.ended_at_ms),
                ))
                .execute(conn)
                .map_err(db_err)?;
            }
            None => {
                diesel::insert_into(refund_attempts::table)
                    .values(row)
                    .execute(conn)
                    .map_err(db_err)?;
            }
        }
    }
    Ok(true)
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
    vault: &Sealer,
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
    into_orders(conn, vault, rows)
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

// ---------------------------------------------------------------------------------------------
// Batches and templates

diesel::table! {
    refund_batches (batch_id) {
        batch_id -> Text,
        bank_code -> Text,
        channel -> Text,
        method -> Text,
        batch_date -> Text,
        sequence -> Integer,
        status -> Text,
        currency -> Text,
        row_count -> Integer,
        total_minor -> BigInt,
        file_name -> Text,
        file_sha256 -> Text,
        file_hex -> Text,
        generated_at_ms -> BigInt,
        marked_at_ms -> Nullable<BigInt>,
        marked_by -> Text,
        note -> Text,
        bank_delivered -> Integer,
        bank_error -> Text,
    }
}

diesel::table! {
    refund_batch_rows (row_id) {
        row_id -> Text,
        batch_id -> Text,
        refund_id -> Text,
        attempt -> Integer,
        line -> Integer,
        order_no -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        card_no -> Text,
        holder_name -> Text,
        status -> Text,
        reason -> Text,
    }
}

diesel::table! {
    bank_templates (bank_code) {
        bank_code -> Text,
        sheet_name -> Text,
        column_spec -> Text,
        date_format -> Text,
        amount_format -> Text,
        updated_at_ms -> BigInt,
    }
}

/// Batch columns without the file (lists and state reads do not need the bytes).
type BatchColumns = (
    refund_batches::batch_id,
    refund_batches::bank_code,
    refund_batches::channel,
    refund_batches::method,
    refund_batches::batch_date,
    refund_batches::sequence,
    refund_batches::status,
    refund_batches::currency,
    refund_batches::row_count,
    refund_batches::total_minor,
    refund_batches::file_name,
    refund_batches::file_sha256,
    refund_batches::generated_at_ms,
    refund_batches::marked_at_ms,
    refund_batches::marked_by,
    refund_batches::note,
    refund_batches::bank_delivered,
    refund_batches::bank_error,
);

const BATCH_COLUMNS: BatchColumns = (
    refund_batches::batch_id,
    refund_batches::bank_code,
    refund_batches::channel,
    refund_batches::method,
    refund_batches::batch_date,
    refund_batches::sequence,
    refund_batches::status,
    refund_batches::currency,
    refund_batches::row_count,
    refund_batches::total_minor,
    refund_batches::file_name,
    refund_batches::file_sha256,
    refund_batches::generated_at_ms,
    refund_batches::marked_at_ms,
    refund_batches::marked_by,
    refund_batches::note,
    refund_batches::bank_delivered,
    refund_batches::bank_error,
);

#[derive(Debug, Clone, Queryable)]
struct BatchHead {
    batch_id: String,
    bank_code: String,
    channel: String,
    method: String,
    batch_date: String,
    sequence: i32,
    status: String,
    currency: String,
    row_count: i32,
    total_minor: i64,
    file_name: String,
    file_sha256: String,
    generated_at_ms: i64,
    marked_at_ms: Option<i64>,
    marked_by: String,
    note: String,
    bank_delivered: i32,
    bank_error: String,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = refund_batches)]
struct NewBatchRow {
    batch_id: String,
    bank_code: String,
    channel: String,
    method: String,
    batch_date: String,
    sequence: i32,
    status: String,
    currency: String,
    row_count: i32,
    total_minor: i64,
    file_name: String,
    file_sha256: String,
    file_hex: String,
    generated_at_ms: i64,
    marked_at_ms: Option<i64>,
    marked_by: String,
    note: String,
    bank_delivered: i32,
    bank_error: String,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = refund_batch_rows)]
struct BatchRowRow {
    row_id: String,
    batch_id: String,
    refund_id: String,
    attempt: i32,
    line: i32,
    order_no: String,
    amount_minor: i64,
    currency: String,
    card_no: String,
    holder_name: String,
    status: String,
    reason: String,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = bank_templates)]
struct TemplateRow {
    bank_code: String,
    sheet_name: String,
    column_spec: String,
    date_format: String,
    amount_format: String,
    updated_at_ms: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredColumn {
    header: String,
    field: String,
}

fn to_i32(v: u32, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::internal(format!("{what} is too large")))
}

fn stored_u32(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
}

fn currency_of(code: &str) -> Result<Currency> {
    parse_stored(|c| Currency::parse(c, "currency").ok(), "currency", code)
}

impl BatchRowRow {
    /// The row to write, its card number encrypted (bound to the refund id, like the order's).
    fn from_domain(r: &BatchRow, vault: &Sealer) -> Result<BatchRowRow> {
        Ok(BatchRowRow {
            row_id: r.row_id.clone(),
            batch_id: r.batch_id.clone(),
            refund_id: r.refund_id.clone(),
            attempt: to_i32(r.attempt, "attempt")?,
            line: to_i32(r.line, "line")?,
            order_no: r.order_no.clone(),
            amount_minor: r.amount.to_minor(),
            currency: r.amount.currency().code().to_string(),
            card_no: vault.seal(&r.refund_id, &r.card_no)?,
            holder_name: r.holder_name.clone(),
            status: r.status.as_str().to_string(),
            reason: r.reason.clone(),
        })
    }

    fn into_domain(self, vault: &Sealer) -> Result<BatchRow> {
        Ok(BatchRow {
            card_no: vault.open(&self.refund_id, &self.card_no)?,
            amount: Money::from_minor(self.amount_minor, currency_of(&self.currency)?),
            status: parse_stored(RowStatus::parse, "row status", &self.status)?,
            attempt: stored_u32(self.attempt, "attempt")?,
            line: stored_u32(self.line, "line")?,
            row_id: self.row_id,
            batch_id: self.batch_id,
            refund_id: self.refund_id,
            order_no: self.order_no,
            holder_name: self.holder_name,
            reason: self.reason,
        })
    }
}

impl BatchHead {
    fn into_domain(self, rows: Vec<BatchRow>) -> Result<Batch> {
        let total: i64 = rows.iter().map(|r| r.amount.to_minor()).sum();
        if usize::try_from(self.row_count).ok() != Some(rows.len()) || total != self.total_minor {
            return Err(corrupt("batch rows", &self.batch_id));
        }
        Ok(Batch {
            method: parse_stored(RefundMethod::parse, "refund method", &self.method)?,
            date: NaiveDate::parse_from_str(&self.batch_date, "%Y-%m-%d")
                .map_err(|_| corrupt("batch date", &self.batch_date))?,
            sequence: stored_u32(self.sequence, "sequence")?,
            status: parse_stored(BatchStatus::parse, "batch status", &self.status)?,
            currency: currency_of(&self.currency)?,
            rows,
            batch_id: self.batch_id,
            bank_code: self.bank_code,
            channel: self.channel,
            file_name: self.file_name,
            file_sha256: self.file_sha256,
            generated_at_ms: self.generated_at_ms,
            marked_at_ms: self.marked_at_ms,
            marked_by: self.marked_by,
            note: self.note,
            bank_delivered: self.bank_delivered != 0,
            bank_error: self.bank_error,
        })
    }
}

/// The next free sequence number of a bank's batches of a method on a date.
pub fn next_batch_sequence(
    conn: &mut AnyConnection,
    bank_code: &str,
    method: RefundMethod,
    date: NaiveDate,
) -> Result<u32> {
    let used: Vec<i32> = refund_batches::table
        .filter(refund_batches::bank_code.eq(bank_code))
        .filter(refund_batches::method.eq(method.as_str()))
        .filter(refund_batches::batch_date.eq(date.format("%Y-%m-%d").to_string()))
        .select(refund_batches::sequence)
        .load(conn)
        .map_err(db_err)?;
    let max = used.into_iter().max().unwrap_or(0);
    stored_u32(max, "sequence").map(|m| m + 1)
}

/// Writes a new batch, its rows and its file (inside the generating transaction); card numbers
/// and the file (which carries them) are encrypted.
pub fn insert_batch(
    conn: &mut AnyConnection,
    vault: &Sealer,
    batch: &Batch,
    file: &[u8],
) -> Result<()> {
    let row = NewBatchRow {
        batch_id: batch.batch_id.clone(),
        bank_code: batch.bank_code.clone(),
        channel: batch.channel.clone(),
        method: batch.method.as_str().to_string(),
        batch_date: batch.date.format("%Y-%m-%d").to_string(),
        sequence: to_i32(batch.sequence, "sequence")?,
        status: batch.status.as_str().to_string(),
        currency: batch.currency.code().to_string(),
        row_count: i32::try_from(batch.rows.len()).map_err(|_| Error::internal("too many rows"))?,
        total_minor: batch.total()?.to_minor(),
        file_name: batch.file_name.clone(),
        file_sha256: batch.file_sha256.clone(),
        file_hex: vault.seal_bytes(&batch.batch_id, file)?,
        generated_at_ms: batch.generated_at_ms,
        marked_at_ms: batch.marked_at_ms,
        marked_by: batch.marked_by.clone(),
        note: batch.note.clone(),
        bank_delivered: i32::from(batch.bank_delivered),
        bank_error: batch.bank_error.clone(),
    };
    diesel::insert_into(refund_batches::table)
        .values(row)
        .execute(conn)
        .map_err(db_err)?;
    for r in &batch.rows {
        diesel::insert_into(refund_batch_rows::table)
            .values(BatchRowRow::from_domain(r, vault)?)
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(())
}

fn rows_of(conn: &mut AnyConnection, vault: &Sealer, batch_id: &str) -> Result<Vec<BatchRow>> {
    refund_batch_rows::table
        .filter(refund_batch_rows::batch_id.eq(batch_id))
        .order(refund_batch_rows::line.asc())
        .load::<BatchRowRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(|r| r.into_domain(vault))
        .collect()
}

pub fn get_batch(
    conn: &mut AnyConnection,
    vault: &Sealer,
    batch_id: &str,
) -> Result<Option<Batch>> {
    let head = refund_batches::table
        .find(batch_id)
        .select(BATCH_COLUMNS)
        .first::<BatchHead>(conn)
        .optional()
        .map_err(db_err)?;
    match head {
        None => Ok(None),
        Some(h) => {
            let rows = rows_of(conn, vault, &h.batch_id)?;
            h.into_domain(rows).map(Some)
        }
    }
}

/// Batches, oldest first, optionally of one date and status, with their rows.
pub fn list_batches(
    conn: &mut AnyConnection,
    vault: &Sealer,
    date: Option<NaiveDate>,
    status: Option<BatchStatus>,
    limit: i64,
) -> Result<Vec<Batch>> {
    let mut q = refund_batches::table.select(BATCH_COLUMNS).into_boxed();
    if let Some(d) = date {
        q = q.filter(refund_batches::batch_date.eq(d.format("%Y-%m-%d").to_string()));
    }
    if let Some(s) = status {
        q = q.filter(refund_batches::status.eq(s.as_str()));
    }
    let heads = q
        .order((
            refund_batches::batch_date.asc(),
            refund_batches::batch_id.asc(),
        ))
        .limit(limit)
        .load::<BatchHead>(conn)
        .map_err(db_err)?;
    heads
        .into_iter()
        .map(|h| {
            let rows = rows_of(conn, vault, &h.batch_id)?;
            h.into_domain(rows)
        })
        .collect()
}

/// A batch's file: (file name, bytes, stored sha256).
pub fn batch_file(
    conn: &mut AnyConnection,
    vault: &Sealer,
    batch_id: &str,
) -> Result<Option<(String, Vec<u8>, String)>> {
    let row = refund_batches::table
        .find(batch_id)
        .select((
            refund_batches::file_name,
            refund_batches::file_hex,
            refund_batches::file_sha256,
        ))
        .first::<(String, String, String)>(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        None => Ok(None),
        Some((name, hex_text, sha)) => {
            let bytes = if Sealer::is_sealed(&hex_text) {
                vault.open_bytes(batch_id, &hex_text)?
            } else {
                hex::decode(&hex_text).map_err(|_| corrupt("batch file", batch_id))?
            };
            Ok(Some((name, bytes, sha)))
        }
    }
}

/// Records the marking of a batch, guarded by its status being GENERATED; `false`: someone
/// marked it first.
pub fn save_batch_mark(conn: &mut AnyConnection, batch: &Batch) -> Result<bool> {
    let n = diesel::update(
        refund_batches::table
            .filter(refund_batches::batch_id.eq(&batch.batch_id))
            .filter(refund_batches::status.eq(BatchStatus::Generated.as_str())),
    )
    .set((
        refund_batches::status.eq(batch.status.as_str()),
        refund_batches::marked_at_ms.eq(batch.marked_at_ms),
        refund_batches::marked_by.eq(&batch.marked_by),
        refund_batches::note.eq(&batch.note),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if n != 1 {
        return Ok(false);
    }
    diesel::update(
        refund_batch_rows::table
            .filter(refund_batch_rows::batch_id.eq(&batch.batch_id))
            .filter(refund_batch_rows::status.eq(RowStatus::Included.as_str())),
    )
    .set(refund_batch_rows::status.eq(RowStatus::Submitted.as_str()))
    .execute(conn)
    .map_err(db_err)?;
    Ok(true)
}

/// Marks a row failed, guarded by its status being ROW_SUBMITTED; `false`: it was not.
pub fn fail_row(conn: &mut AnyConnection, row_id: &str, reason: &str) -> Result<bool> {
    let n = diesel::update(
        refund_batch_rows::table
            .filter(refund_batch_rows::row_id.eq(row_id))
            .filter(refund_batch_rows::status.eq(RowStatus::Submitted.as_str())),
    )
    .set((
        refund_batch_rows::status.eq(RowStatus::Failed.as_str()),
        refund_batch_rows::reason.eq(reason),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Records whether the bank received a batch's rows.
pub fn set_bank_delivery(
    conn: &mut AnyConnection,
    batch_id: &str,
    error: Option<&str>,
) -> Result<()> {
    diesel::update(refund_batches::table.find(batch_id))
        .set((
            refund_batches::bank_delivered.eq(i32::from(error.is_none())),
            refund_batches::bank_error.eq(error.unwrap_or("")),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// Marked batches the bank has not received yet.
pub fn undelivered_batches(conn: &mut AnyConnection, limit: i64) -> Result<Vec<String>> {
    refund_batches::table
        .filter(refund_batches::status.ne(BatchStatus::Generated.as_str()))
        .filter(refund_batches::bank_delivered.eq(0))
        .select(refund_batches::batch_id)
        .order(refund_batches::batch_id.asc())
        .limit(limit)
        .load(conn)
        .map_err(db_err)
}

impl TemplateRow {
    fn into_domain(self) -> Result<BankTemplate> {
        let columns: Vec<StoredColumn> = serde_json::from_str(&self.column_spec)
            .map_err(|_| corrupt("template columns", &self.bank_code))?;
        Ok(BankTemplate {
            columns: columns
                .into_iter()
                .map(|c| {
                    Ok(TemplateColumn {
                        field: parse_stored(TemplateField::parse, "template field", &c.field)?,
                        header: c.header,
                    })
                })
                .collect::<Result<_>>()?,
            amount_format: parse_stored(AmountFormat::parse, "amount format", &self.amount_format)?,
            bank_code: self.bank_code,
            sheet_name: self.sheet_name,
            date_format: self.date_format,
        })
    }
}

/// Inserts or replaces a bank's template (outside a transaction, like channels).
pub fn upsert_template(
    conn: &mut AnyConnection,
    template: &BankTemplate,
    now_ms: i64,
) -> Result<BankTemplate> {
    template.validate()?;
    let column_spec = serde_json::to_string(
        &template
            .columns
            .iter()
            .map(|c| StoredColumn {
                header: c.header.clone(),
                field: c.field.as_str().to_string(),
            })
            .collect::<Vec<_>>(),
    )
    .map_err(|e| Error::internal(format!("cannot encode template columns: {e}")))?;
    let row = TemplateRow {
        bank_code: template.bank_code.clone(),
        sheet_name: template.sheet_name.clone(),
        column_spec,
        date_format: template.date_format.clone(),
        amount_format: template.amount_format.as_str().to_string(),
        updated_at_ms: now_ms,
    };
    let update = |conn: &mut AnyConnection| {
        diesel::update(bank_templates::table.find(&row.bank_code))
            .set((
                bank_templates::sheet_name.eq(&row.sheet_name),
                bank_templates::column_spec.eq(&row.column_spec),
                bank_templates::date_format.eq(&row.date_format),
                bank_templates::amount_format.eq(&row.amount_format),
                bank_templates::updated_at_ms.eq(row.updated_at_ms),
            ))
            .execute(conn)
    };
    tuikuan_db::update_or_insert(conn, update, |conn| {
        diesel::insert_into(bank_templates::table)
            .values(row.clone())
            .execute(conn)
    })?;
    get_template(conn, &template.bank_code)?
        .ok_or_else(|| Error::internal("template vanished after upsert"))
}

/// A bank's configured template (not the built-in default).
pub fn get_template(conn: &mut AnyConnection, bank_code: &str) -> Result<Option<BankTemplate>> {
    bank_templates::table
        .find(bank_code)
        .first::<TemplateRow>(conn)
        .optional()
        .map_err(db_err)?
        .map(TemplateRow::into_domain)
        .transpose()
}

pub fn list_templates(conn: &mut AnyConnection) -> Result<Vec<BankTemplate>> {
    bank_templates::table
        .order(bank_templates::bank_code.asc())
        .load::<TemplateRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(TemplateRow::into_domain)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Card hashes, risk rules and the audit trail

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = refund_cards)]
struct CardRow {
    refund_id: String,
    card_hash: String,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = refund_audit)]
struct AuditRow {
    audit_id: String,
    refund_id: String,
    action: String,
    operator: String,
    role: String,
    reason: String,
    at_ms: i64,
    state_before: String,
    state_after: String,
}

impl AuditRow {
    fn from_domain(a: &AuditEntry) -> AuditRow {
        AuditRow {
            audit_id: a.audit_id.clone(),
            refund_id: a.refund_id.clone(),
            action: a.action.as_str().to_string(),
            operator: a.operator.clone(),
            role: a.role.clone(),
            reason: a.reason.clone(),
            at_ms: a.at_ms,
            state_before: a.state_before.clone(),
            state_after: a.state_after.clone(),
        }
    }

    fn into_domain(self) -> Result<AuditEntry> {
        Ok(AuditEntry {
            action: parse_stored(ControlAction::parse, "audit action", &self.action)?,
            audit_id: self.audit_id,
            refund_id: self.refund_id,
            operator: self.operator,
            role: self.role,
            reason: self.reason,
            at_ms: self.at_ms,
            state_before: self.state_before,
            state_after: self.state_after,
        })
    }
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = risk_rules)]
struct RiskRuleRow {
    rule_id: String,
    kind: String,
    channel: String,
    threshold_minor: i64,
    currency: String,
    max_count: i32,
    window_minutes: i32,
    enabled: i32,
    description: String,
    updated_at_ms: i64,
}

impl RiskRuleRow {
    fn from_domain(r: &RiskRule, now_ms: i64) -> Result<RiskRuleRow> {
        Ok(RiskRuleRow {
            rule_id: r.rule_id.clone(),
            kind: r.kind.as_str().to_string(),
            channel: r.channel.clone().unwrap_or_default(),
            threshold_minor: r.threshold.as_ref().map_or(0, Money::to_minor),
            currency: r
                .threshold
                .as_ref()
                .map_or(String::new(), |t| t.currency().code().to_string()),
            max_count: i32::try_from(r.max_count)
                .map_err(|_| Error::field("max_count", "is too large"))?,
            window_minutes: i32::try_from(r.window_minutes)
                .map_err(|_| Error::field("window_minutes", "is too large"))?,
            enabled: i32::from(r.enabled),
            description: r.description.clone(),
            updated_at_ms: now_ms,
        })
    }

    fn into_domain(self) -> Result<RiskRule> {
        let threshold = if self.currency.is_empty() {
            None
        } else {
            Some(Money::from_minor(
                self.threshold_minor,
                currency_of(&self.currency)?,
            ))
        };
        Ok(RiskRule {
            kind: parse_stored(RiskRuleKind::parse, "risk rule kind", &self.kind)?,
            channel: if self.channel.is_empty() {
                None
            } else {
                Some(self.channel)
            },
            threshold,
            max_count: stored_u32(self.max_count, "max_count")?,
            window_minutes: stored_u32(self.window_minutes, "window_minutes")?,
            enabled: self.enabled != 0,
            rule_id: self.rule_id,
            description: self.description,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

/// How many refunds of `merchant_id` were accepted at or after `since_ms`.
pub fn count_merchant_since(
    conn: &mut AnyConnection,
    merchant_id: &str,
    since_ms: i64,
) -> Result<u64> {
    let n: i64 = refunds::table
        .filter(refunds::merchant_id.eq(merchant_id))
        .filter(refunds::created_at_ms.ge(since_ms))
        .count()
        .get_result(conn)
        .map_err(db_err)?;
    Ok(n.unsigned_abs())
}

/// How many refunds to the card with `card_hash` were accepted at or after `since_ms`.
pub fn count_card_since(conn: &mut AnyConnection, card_hash: &str, since_ms: i64) -> Result<u64> {
    let n: i64 = refund_cards::table
        .filter(refund_cards::card_hash.eq(card_hash))
        .filter(refund_cards::created_at_ms.ge(since_ms))
        .count()
        .get_result(conn)
        .map_err(db_err)?;
    Ok(n.unsigned_abs())
}

/// Inserts or replaces a risk rule (outside a transaction, like channels).
pub fn upsert_risk_rule(
    conn: &mut AnyConnection,
    rule: &RiskRule,
    now_ms: i64,
) -> Result<RiskRule> {
    rule.validate()?;
    let row = RiskRuleRow::from_domain(rule, now_ms)?;
    let update = |conn: &mut AnyConnection| {
        diesel::update(risk_rules::table.find(&row.rule_id))
            .set((
                risk_rules::kind.eq(&row.kind),
                risk_rules::channel.eq(&row.channel),
                risk_rules::threshold_minor.eq(row.threshold_minor),
                risk_rules::currency.eq(&row.currency),
                risk_rules::max_count.eq(row.max_count),
                risk_rules::window_minutes.eq(row.window_minutes),
                risk_rules::enabled.eq(row.enabled),
                risk_rules::description.eq(&row.description),
                risk_rules::updated_at_ms.eq(row.updated_at_ms),
            ))
            .execute(conn)
    };
    tuikuan_db::update_or_insert(conn, update, |conn| {
        diesel::insert_into(risk_rules::table)
            .values(row.clone())
            .execute(conn)
    })?;
    risk_rules::table
        .find(&rule.rule_id)
        .first::<RiskRuleRow>(conn)
        .map_err(db_err)?
        .into_domain()
}

/// Every risk rule (enabled or not), by rule id.
pub fn list_risk_rules(conn: &mut AnyConnection) -> Result<Vec<RiskRule>> {
    risk_rules::table
        .order(risk_rules::rule_id.asc())
        .load::<RiskRuleRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(RiskRuleRow::into_domain)
        .collect()
}

/// Records an audit entry (inside the transaction of the action it records).
pub fn insert_audit(conn: &mut AnyConnection, entry: &AuditEntry) -> Result<()> {
    diesel::insert_into(refund_audit::table)
        .values(AuditRow::from_domain(entry))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// The audit trail, oldest first (ids are time-ordered), of one refund or all.
pub fn list_audit(
    conn: &mut AnyConnection,
    refund_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let mut q = refund_audit::table.into_boxed();
    if let Some(r) = refund_id {
        q = q.filter(refund_audit::refund_id.eq(r.to_string()));
    }
    if let Some(a) = after {
        q = q.filter(refund_audit::audit_id.gt(a.to_string()));
    }
    q.order(refund_audit::audit_id.asc())
        .limit(limit)
        .load::<AuditRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(AuditRow::into_domain)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Card numbers at rest

/// What [`encrypt_legacy`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacyPass {
    pub refunds: u32,
    pub batch_rows: u32,
    pub batch_files: u32,
}

/// The startup pass: encrypts every card number (orders, batch rows) and batch file still stored
/// in plaintext (written before encryption), and indexes the orders' card hashes. Each row is
/// rewritten guarded by its old value, so concurrent passes (several instances starting) are
/// harmless. Idempotent.
pub fn encrypt_legacy(conn: &mut AnyConnection, vault: &Sealer) -> Result<LegacyPass> {
    let mut pass = LegacyPass::default();
    let plain_refunds: Vec<(String, String, i64)> = refunds::table
        .filter(refunds::payer_card_no.ne(""))
        .filter(refunds::payer_card_no.not_like(format!("{}%", crate::vault::SEALED_PREFIX)))
        .select((
            refunds::refund_id,
            refunds::payer_card_no,
            refunds::created_at_ms,
        ))
        .load(conn)
        .map_err(db_err)?;
    for (refund_id, plain, created_at_ms) in plain_refunds {
        let sealed = vault.seal(&refund_id, &plain)?;
        let hash = vault.keyed_hash(&plain);
        let done = conn.transaction::<_, diesel::result::Error, _>(|c| {
            let n = diesel::update(
                refunds::table
                    .filter(refunds::refund_id.eq(&refund_id))
                    .filter(refunds::payer_card_no.eq(&plain)),
            )
            .set(refunds::payer_card_no.eq(&sealed))
            .execute(c)?;
            if n == 1 {
                let known: i64 = refund_cards::table
                    .filter(refund_cards::refund_id.eq(&refund_id))
                    .count()
                    .get_result(c)?;
                if known == 0 {
                    diesel::insert_into(refund_cards::table)
                        .values(CardRow {
                            refund_id: refund_id.clone(),
                            card_hash: hash.clone(),
                            created_at_ms,
                        })
                        .execute(c)?;
                }
            }
            Ok(n == 1)
        });
        match done {
            Ok(true) => pass.refunds += 1,
            Ok(false) => {}
            // Another instance indexed it at the same moment.
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(db_err(e)),
        }
    }
    let plain_rows: Vec<(String, String, String)> = refund_batch_rows::table
        .filter(refund_batch_rows::card_no.ne(""))
        .filter(refund_batch_rows::card_no.not_like(format!("{}%", crate::vault::SEALED_PREFIX)))
        .select((
            refund_batch_rows::row_id,
            refund_batch_rows::refund_id,
            refund_batch_rows::card_no,
        ))
        .load(conn)
        .map_err(db_err)?;
    for (row_id, refund_id, plain) in plain_rows {
        let sealed = vault.seal(&refund_id, &plain)?;
        let n = diesel::update(
            refund_batch_rows::table
                .filter(refund_batch_rows::row_id.eq(&row_id))
                .filter(refund_batch_rows::card_no.eq(&plain)),
        )
        .set(refund_batch_rows::card_no.eq(&sealed))
        .execute(conn)
        .map_err(db_err)?;
        pass.batch_rows += u32::from(n == 1);
    }
    let plain_files: Vec<String> = refund_batches::table
        .filter(refund_batches::file_hex.not_like(format!("{}%", crate::vault::SEALED_PREFIX)))
        .select(refund_batches::batch_id)
        .load(conn)
        .map_err(db_err)?;
    for batch_id in plain_files {
        let hex_text: String = refund_batches::table
            .find(&batch_id)
            .select(refund_batches::file_hex)
            .first(conn)
            .map_err(db_err)?;
        if Sealer::is_sealed(&hex_text) {
            continue;
        }
        let bytes = hex::decode(&hex_text).map_err(|_| corrupt("batch file", &batch_id))?;
        let sealed = vault.seal_bytes(&batch_id, &bytes)?;
        let n = diesel::update(
            refund_batches::table
                .filter(refund_batches::batch_id.eq(&batch_id))
                .filter(refund_batches::file_hex.eq(&hex_text)),
        )
        .set(refund_batches::file_hex.eq(&sealed))
        .execute(conn)
        .map_err(db_err)?;
        pass.batch_files += u32::from(n == 1);
    }
    Ok(pass)
}
