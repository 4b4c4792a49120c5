//! Storage of reconciliation runs and their items (diesel, SQLite and PostgreSQL alike).
//!
//! A run is written once, with all its items, in one transaction; the UNIQUE
//! `(channel, business_date, content_sha256)` index makes a second run of the same file impossible
//! (a concurrent duplicate gets [`ErrorCode::IdempotencyConflict`] from [`insert_run`] and re-reads).
//! Afterwards only an item's write-back state changes, through conditional updates
//! ([`mark_written_back`], [`mark_refused`]) that succeed only from the pending state.

use chrono::NaiveDate;
use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

use crate::domain::{
    format_date, parse_business_date, BankRecordStatus, Discrepancy, DiscrepancyKind,
    DiscrepancyStatus, FinalStatus, MatchItem, Outcome, Resolution, Run, RunItem, Severity,
    SuspenseEntry, SuspenseStatus, WriteBack, WriteBackState,
};

/// The embedded migrations of the reconciliation center's database (run by [`crate::serve`]).
pub const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

pub mod rejected;

diesel::table! {
    runs (run_id) {
        run_id -> Text,
        channel -> Text,
        business_date -> Text,
        file_sha256 -> Text,
        file_format -> Text,
        file_rows -> BigInt,
        payout_rows -> BigInt,
        created_at_ms -> BigInt,
        skipped_rows -> BigInt,
        source -> Text,
        supersedes -> Nullable<Text>,
        superseded_by -> Nullable<Text>,
        discrepancies -> BigInt,
        content_sha256 -> Text,
    }
}

diesel::table! {
    items (run_id, seq) {
        run_id -> Text,
        seq -> Integer,
        refund_id -> Text,
        bank_ref -> Text,
        outcome -> Text,
        platform_amount_minor -> Nullable<BigInt>,
        bank_amount_minor -> Nullable<BigInt>,
        currency -> Text,
        bank_currency -> Nullable<Text>,
        bank_status -> Nullable<Text>,
        file_line -> Nullable<BigInt>,
        detail -> Text,
        write_back -> Nullable<Text>,
        write_back_reason -> Text,
        written_back -> Integer,
        write_back_refused -> Integer,
    }
}

diesel::table! {
    item_refs (run_id, seq) {
        run_id -> Text,
        seq -> Integer,
        bank_reference_id -> Text,
        discrepancy_id -> Nullable<Text>,
    }
}

diesel::table! {
    suspense (channel, bank_reference_id) {
        channel -> Text,
        bank_reference_id -> Text,
        refund_id -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        since_date -> Text,
        status -> Text,
        discrepancy_id -> Nullable<Text>,
        cleared_by_run -> Nullable<Text>,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    discrepancies (discrepancy_id) {
        discrepancy_id -> Text,
        channel -> Text,
        business_date -> Text,
        run_id -> Text,
        kind -> Text,
        status -> Text,
        refund_id -> Text,
        bank_reference_id -> Text,
        bank_ref -> Text,
        platform_amount_minor -> Nullable<BigInt>,
        bank_amount_minor -> Nullable<BigInt>,
        currency -> Text,
        bank_currency -> Nullable<Text>,
        bank_status -> Nullable<Text>,
        detail -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    resolutions (discrepancy_id) {
        discrepancy_id -> Text,
        resolution -> Text,
        operator -> Text,
        reason -> Text,
        started_at_ms -> BigInt,
        resolved_at_ms -> Nullable<BigInt>,
        actions -> Text,
        adjustment_id -> Text,
    }
}

diesel::table! {
    audit_log (audit_id) {
        audit_id -> Text,
        subject_kind -> Text,
        subject_id -> Text,
        action -> Text,
        operator -> Text,
        reason -> Text,
        before_state -> Text,
        after_state -> Text,
        at_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    runs,
    items,
    item_refs,
    suspense,
    discrepancies,
    resolutions,
    audit_log
);

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = runs)]
struct RunRow {
    run_id: String,
    channel: String,
    business_date: String,
    file_sha256: String,
    file_format: String,
    file_rows: i64,
    payout_rows: i64,
    created_at_ms: i64,
    skipped_rows: i64,
    source: String,
    supersedes: Option<String>,
    superseded_by: Option<String>,
    discrepancies: i64,
    content_sha256: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = items)]
struct ItemRow {
    run_id: String,
    seq: i32,
    refund_id: String,
    bank_ref: String,
    outcome: String,
    platform_amount_minor: Option<i64>,
    bank_amount_minor: Option<i64>,
    currency: String,
    bank_currency: Option<String>,
    bank_status: Option<String>,
    file_line: Option<i64>,
    detail: String,
    write_back: Option<String>,
    write_back_reason: String,
    written_back: i32,
    write_back_refused: i32,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = item_refs)]
struct ItemRefRow {
    run_id: String,
    seq: i32,
    bank_reference_id: String,
    discrepancy_id: Option<String>,
}

/// Rows per multi-row INSERT (19 columns: well under SQLite's 32766 bound parameters).
const INSERT_CHUNK: usize = 500;

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::storage(format!("corrupt reconciliation row: {what}"))
}

fn run_to_row(run: &Run) -> RunRow {
    RunRow {
        run_id: run.run_id.clone(),
        channel: run.channel.clone(),
        business_date: format_date(run.date),
        file_sha256: run.file_sha256.clone(),
        file_format: run.file_format.clone(),
        file_rows: i64::from(run.file_rows),
        payout_rows: 0,
        created_at_ms: run.created_at_ms,
        skipped_rows: i64::from(run.skipped_rows),
        source: run.source.clone(),
        supersedes: run.supersedes.clone(),
        superseded_by: run.superseded_by.clone(),
        discrepancies: i64::from(run.discrepancies),
        content_sha256: run.content_sha256.clone(),
    }
}

fn item_to_row(run_id: &str, item: &RunItem) -> Result<ItemRow> {
    let m = &item.item;
    let currency = m
        .platform_amount
        .or(m.bank_amount)
        .map(|a| a.currency())
        .ok_or_else(|| Error::internal(format!("item {} has no amount", m.refund_id)))?;
    let (written_back, refused) = match item.state {
        WriteBackState::NotNeeded | WriteBackState::Pending => (0, 0),
        WriteBackState::Done => (1, 0),
        WriteBackState::Refused => (0, 1),
    };
    Ok(ItemRow {
        run_id: run_id.to_string(),
        seq: i32::try_from(item.seq).map_err(|_| Error::internal("item sequence too large"))?,
        refund_id: m.refund_id.clone(),
        bank_ref: m.bank_ref.clone(),
        outcome: m.outcome.as_str().to_string(),
        platform_amount_minor: m.platform_amount.map(|a| a.to_minor()),
        bank_amount_minor: m.bank_amount.map(|a| a.to_minor()),
        currency: currency.code().to_string(),
        bank_currency: m.bank_amount.map(|a| a.currency().code().to_string()),
        bank_status: m.bank_status.map(|s| s.as_str().to_string()),
        file_line: m.line.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
        detail: m.detail.clone(),
        write_back: m.write_back.as_ref().map(|w| w.status.as_str().to_string()),
        write_back_reason: m
            .write_back
            .as_ref()
            .map(|w| w.reason.clone())
            .unwrap_or_default(),
        written_back,
        write_back_refused: refused,
    })
}

fn item_ref_row(run_id: &str, item: &RunItem) -> Result<Option<ItemRefRow>> {
    let m = &item.item;
    if m.bank_reference_id == m.refund_id && item.discrepancy_id.is_none() {
        return Ok(None);
    }
    Ok(Some(ItemRefRow {
        run_id: run_id.to_string(),
        seq: seq_i32(item.seq)?,
        bank_reference_id: m.bank_reference_id.clone(),
        discrepancy_id: item.discrepancy_id.clone(),
    }))
}

fn row_to_item(row: ItemRow, reference: Option<ItemRefRow>) -> Result<RunItem> {
    let currency = Currency::parse(&row.currency, "currency").map_err(corrupt)?;
    let bank_currency = match &row.bank_currency {
        Some(c) => Currency::parse(c, "bank_currency").map_err(corrupt)?,
        None => currency,
    };
    let outcome = Outcome::parse(&row.outcome)
        .ok_or_else(|| corrupt(format!("outcome {:?}", row.outcome)))?;
    let bank_status = row
        .bank_status
        .as_deref()
        .map(|s| BankRecordStatus::parse(s).ok_or_else(|| corrupt(format!("bank status {s:?}"))))
        .transpose()?;
    let write_back = row
        .write_back
        .as_deref()
        .map(|s| {
            FinalStatus::parse(s)
                .map(|status| WriteBack {
                    status,
                    reason: row.write_back_reason.clone(),
                })
                .ok_or_else(|| corrupt(format!("write_back {s:?}")))
        })
        .transpose()?;
    let state = match (&write_back, row.written_back, row.write_back_refused) {
        (None, _, _) => WriteBackState::NotNeeded,
        (Some(_), 1, _) => WriteBackState::Done,
        (Some(_), 0, 1) => WriteBackState::Refused,
        (Some(_), 0, 0) => WriteBackState::Pending,
        (Some(_), w, r) => {
            return Err(corrupt(format!(
                "written_back {w} / write_back_refused {r}"
            )))
        }
    };
    let (bank_reference_id, discrepancy_id) = match reference {
        Some(r) => (r.bank_reference_id, r.discrepancy_id),
        None => (row.refund_id.clone(), None),
    };
    Ok(RunItem {
        seq: u32::try_from(row.seq).map_err(|_| corrupt(format!("seq {}", row.seq)))?,
        discrepancy_id,
        item: MatchItem {
            bank_reference_id,
            platform_final: None,
            refund_id: row.refund_id,
            bank_ref: row.bank_ref,
            outcome,
            platform_amount: row
                .platform_amount_minor
                .map(|m| Money::from_minor(m, currency)),
            bank_amount: row
                .bank_amount_minor
                .map(|m| Money::from_minor(m, bank_currency)),
            bank_status,
            line: row.file_line.and_then(|l| usize::try_from(l).ok()),
            // Not stored: only a new run's items open discrepancies keyed by it.
            occurrence: 0,
            detail: row.detail,
            write_back,
        },
        state,
    })
}

fn row_to_run(row: RunRow, run_items: Vec<RunItem>) -> Result<Run> {
    Ok(Run {
        date: parse_business_date(&row.business_date, "business_date").map_err(corrupt)?,
        run_id: row.run_id,
        channel: row.channel,
        file_sha256: row.file_sha256,
        content_sha256: row.content_sha256,
        file_format: row.file_format,
        file_rows: u32::try_from(row.file_rows).map_err(|_| corrupt("file_rows"))?,
        skipped_rows: u32::try_from(row.skipped_rows).map_err(|_| corrupt("skipped_rows"))?,
        created_at_ms: row.created_at_ms,
        source: row.source,
        supersedes: row.supersedes,
        superseded_by: row.superseded_by,
        discrepancies: u32::try_from(row.discrepancies).map_err(|_| corrupt("discrepancies"))?,
        items: run_items,
    })
}

fn load_items(conn: &mut AnyConnection, id: &str) -> Result<Vec<RunItem>> {
    let rows: Vec<ItemRow> = items::table
        .filter(items::run_id.eq(id))
        .order(items::seq.asc())
        .select(ItemRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let refs: Vec<ItemRefRow> = item_refs::table
        .filter(item_refs::run_id.eq(id))
        .select(ItemRefRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let mut refs: std::collections::HashMap<i32, ItemRefRow> =
        refs.into_iter().map(|r| (r.seq, r)).collect();
    rows.into_iter()
        .map(|r| {
            let reference = refs.remove(&r.seq);
            row_to_item(r, reference)
        })
        .collect()
}

fn with_items(conn: &mut AnyConnection, row: RunRow) -> Result<Run> {
    let run_items = load_items(conn, &row.run_id)?;
    row_to_run(row, run_items)
}

/// Stores a new run with its items. Call inside a transaction. A run of the same
/// `(channel, date, content_sha256)` already stored → [`ErrorCode::IdempotencyConflict`] (the caller
/// rolls back and re-reads it with [`find_run_by_file`]).
pub fn insert_run(conn: &mut AnyConnection, run: &Run) -> Result<()> {
    let row = run_to_row(run);
    match diesel::insert_into(runs::table).values(&row).execute(conn) {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "a run of channel {} date {} file {} exists",
                    run.channel,
                    format_date(run.date),
                    run.file_sha256
                ),
            ))
        }
        Err(e) => return Err(db_err(e)),
    }
    let rows = run
        .items
        .iter()
        .map(|i| item_to_row(&run.run_id, i))
        .collect::<Result<Vec<_>>>()?;
    // Batches of rows per statement, on the concrete connection (batch inserts do not compile
    // for the MultiConnection itself). All rows are in the caller's transaction.
    for chunk in rows.chunks(INSERT_CHUNK) {
        match conn {
            AnyConnection::Sqlite(c) => diesel::insert_into(items::table)
                .values(chunk)
                .execute(c)
                .map_err(db_err)?,
            AnyConnection::Postgresql(c) => diesel::insert_into(items::table)
                .values(chunk)
                .execute(c)
                .map_err(db_err)?,
        };
    }
    let refs = run
        .items
        .iter()
        .map(|i| item_ref_row(&run.run_id, i))
        .filter_map(|r| r.transpose())
        .collect::<Result<Vec<_>>>()?;
    for chunk in refs.chunks(INSERT_CHUNK) {
        match conn {
            AnyConnection::Sqlite(c) => diesel::insert_into(item_refs::table)
                .values(chunk)
                .execute(c)
                .map_err(db_err)?,
            AnyConnection::Postgresql(c) => diesel::insert_into(item_refs::table)
                .values(chunk)
                .execute(c)
                .map_err(db_err)?,
        };
    }
    Ok(())
}

/// The run of this file (by its content digest), if one was stored.
pub fn find_run_by_file(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
    content_sha256: &str,
) -> Result<Option<Run>> {
    let row: Option<RunRow> = runs::table
        .filter(runs::channel.eq(channel))
        .filter(runs::business_date.eq(format_date(date)))
        .filter(runs::content_sha256.eq(content_sha256))
        .select(RunRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    row.map(|r| with_items(conn, r)).transpose()
}

/// A run by id.
pub fn get_run(conn: &mut AnyConnection, id: &str) -> Result<Option<Run>> {
    let row: Option<RunRow> = runs::table
        .filter(runs::run_id.eq(id))
        .select(RunRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    row.map(|r| with_items(conn, r)).transpose()
}

/// Every run of a channel and business date (one per distinct file), oldest first.
pub fn runs_for_date(conn: &mut AnyConnection, channel: &str, date: NaiveDate) -> Result<Vec<Run>> {
    let rows: Vec<RunRow> = runs::table
        .filter(runs::channel.eq(channel))
        .filter(runs::business_date.eq(format_date(date)))
        .order((runs::created_at_ms.asc(), runs::run_id.asc()))
        .select(RunRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(|r| with_items(conn, r)).collect()
}

/// The newest runs (of one channel, or of all), newest first, with their items.
pub fn list_runs(conn: &mut AnyConnection, channel: Option<&str>, limit: u32) -> Result<Vec<Run>> {
    let mut query = runs::table
        .select(RunRow::as_select())
        .order((runs::created_at_ms.desc(), runs::run_id.desc()))
        .limit(i64::from(limit))
        .into_boxed();
    if let Some(channel) = channel {
        query = query.filter(runs::channel.eq(channel.to_string()));
    }
    let rows: Vec<RunRow> = query.load(conn).map_err(db_err)?;
    rows.into_iter().map(|r| with_items(conn, r)).collect()
}

fn seq_i32(seq: u32) -> Result<i32> {
    i32::try_from(seq).map_err(|_| Error::internal("item sequence too large"))
}

/// Pending → written back. `true` if this call made the change (false: it was not pending).
pub fn mark_written_back(conn: &mut AnyConnection, id: &str, seq: u32) -> Result<bool> {
    let n = diesel::update(
        items::table
            .filter(items::run_id.eq(id.to_string()))
            .filter(items::seq.eq(seq_i32(seq)?))
            .filter(items::write_back.is_not_null())
            .filter(items::written_back.eq(0))
            .filter(items::write_back_refused.eq(0)),
    )
    .set(items::written_back.eq(1))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Pending → refused (a discrepancy), recording why in the item's detail.
pub fn mark_refused(conn: &mut AnyConnection, id: &str, seq: u32, detail: &str) -> Result<bool> {
    let n = diesel::update(
        items::table
            .filter(items::run_id.eq(id.to_string()))
            .filter(items::seq.eq(seq_i32(seq)?))
            .filter(items::write_back.is_not_null())
            .filter(items::written_back.eq(0))
            .filter(items::write_back_refused.eq(0)),
    )
    .set((
        items::write_back_refused.eq(1),
        items::detail.eq(detail.to_string()),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Pending → written back, for many items of a run at once. Returns how many changed.
pub fn mark_written_back_many(conn: &mut AnyConnection, id: &str, seqs: &[u32]) -> Result<usize> {
    let mut changed = 0;
    for chunk in seqs.chunks(INSERT_CHUNK) {
        let seqs: Vec<i32> = chunk.iter().map(|s| seq_i32(*s)).collect::<Result<_>>()?;
        changed += diesel::update(
            items::table
                .filter(items::run_id.eq(id.to_string()))
                .filter(items::seq.eq_any(seqs))
                .filter(items::write_back.is_not_null())
                .filter(items::written_back.eq(0))
                .filter(items::write_back_refused.eq(0)),
        )
        .set(items::written_back.eq(1))
        .execute(conn)
        .map_err(db_err)?;
    }
    Ok(changed)
}

/// Links an item to its discrepancy (the item's bank reference id is recorded with it).
pub fn set_item_discrepancy(
    conn: &mut AnyConnection,
    id: &str,
    seq: u32,
    bank_reference_id: &str,
    discrepancy_id: &str,
) -> Result<()> {
    let n = diesel::update(
        item_refs::table
            .filter(item_refs::run_id.eq(id.to_string()))
            .filter(item_refs::seq.eq(seq_i32(seq)?)),
    )
    .set(item_refs::discrepancy_id.eq(Some(discrepancy_id.to_string())))
    .execute(conn)
    .map_err(db_err)?;
    if n == 0 {
        diesel::insert_into(item_refs::table)
            .values(ItemRefRow {
                run_id: id.to_string(),
                seq: seq_i32(seq)?,
                bank_reference_id: bank_reference_id.to_string(),
                discrepancy_id: Some(discrepancy_id.to_string()),
            })
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(())
}

/// The run of a channel and date no later run replaced (the newest if several), without items.
pub fn current_run_id(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
) -> Result<Option<String>> {
    runs::table
        .filter(runs::channel.eq(channel))
        .filter(runs::business_date.eq(format_date(date)))
        .filter(runs::superseded_by.is_null())
        .order((runs::created_at_ms.desc(), runs::run_id.desc()))
        .select(runs::run_id)
        .first::<String>(conn)
        .optional()
        .map_err(db_err)
}

/// Marks `old` superseded by `new`. `false` if it already was (by another run).
pub fn mark_superseded(conn: &mut AnyConnection, old: &str, new: &str) -> Result<bool> {
    let n = diesel::update(
        runs::table
            .filter(runs::run_id.eq(old.to_string()))
            .filter(runs::superseded_by.is_null()),
    )
    .set(runs::superseded_by.eq(Some(new.to_string())))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Run ids of a channel and date, oldest first.
pub fn run_ids_for_date(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
) -> Result<Vec<String>> {
    runs::table
        .filter(runs::channel.eq(channel))
        .filter(runs::business_date.eq(format_date(date)))
        .order((runs::created_at_ms.asc(), runs::run_id.asc()))
        .select(runs::run_id)
        .load::<String>(conn)
        .map_err(db_err)
}

// ----- suspense -----

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = suspense)]
struct SuspenseRow {
    channel: String,
    bank_reference_id: String,
    refund_id: String,
    amount_minor: i64,
    currency: String,
    since_date: String,
    status: String,
    discrepancy_id: Option<String>,
    cleared_by_run: Option<String>,
    updated_at_ms: i64,
}

fn suspense_from_row(row: SuspenseRow) -> Result<SuspenseEntry> {
    let currency = Currency::parse(&row.currency, "currency").map_err(corrupt)?;
    Ok(SuspenseEntry {
        amount: Money::from_minor(row.amount_minor, currency),
        since: parse_business_date(&row.since_date, "since_date").map_err(corrupt)?,
        status: SuspenseStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("suspense status {:?}", row.status)))?,
        channel: row.channel,
        bank_reference_id: row.bank_reference_id,
        refund_id: row.refund_id,
        discrepancy_id: row.discrepancy_id,
        cleared_by_run: row.cleared_by_run,
        updated_at_ms: row.updated_at_ms,
    })
}

/// The channel's suspense entries that are not cleared (OPEN and EXPIRED).
pub fn uncleared_suspense(conn: &mut AnyConnection, channel: &str) -> Result<Vec<SuspenseEntry>> {
    let rows: Vec<SuspenseRow> = suspense::table
        .filter(suspense::channel.eq(channel))
        .filter(suspense::status.ne(SuspenseStatus::Cleared.as_str()))
        .select(SuspenseRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter().map(suspense_from_row).collect()
}

/// Suspense entries (of a channel, of a status), newest first.
pub fn list_suspense(
    conn: &mut AnyConnection,
    channel: Option<&str>,
    status: Option<SuspenseStatus>,
    limit: u32,
) -> Result<Vec<SuspenseEntry>> {
    let mut q = suspense::table
        .select(SuspenseRow::as_select())
        .order((
            suspense::updated_at_ms.desc(),
            suspense::bank_reference_id.asc(),
        ))
        .limit(i64::from(limit))
        .into_boxed();
    if let Some(c) = channel {
        q = q.filter(suspense::channel.eq(c.to_string()));
    }
    if let Some(s) = status {
        q = q.filter(suspense::status.eq(s.as_str()));
    }
    let rows: Vec<SuspenseRow> = q.load(conn).map_err(db_err)?;
    rows.into_iter().map(suspense_from_row).collect()
}

/// How many of a channel's entries are OPEN.
pub fn count_open_suspense(conn: &mut AnyConnection, channel: &str) -> Result<i64> {
    suspense::table
        .filter(suspense::channel.eq(channel))
        .filter(suspense::status.eq(SuspenseStatus::Open.as_str()))
        .count()
        .get_result(conn)
        .map_err(db_err)
}

/// Puts an entry in suspense (OPEN), re-opening a CLEARED one of the same reference.
pub fn enter_suspense(conn: &mut AnyConnection, e: &SuspenseEntry) -> Result<()> {
    let reopened = diesel::update(
        suspense::table
            .filter(suspense::channel.eq(e.channel.clone()))
            .filter(suspense::bank_reference_id.eq(e.bank_reference_id.clone()))
            .filter(suspense::status.eq(SuspenseStatus::Cleared.as_str())),
    )
    .set((
        suspense::status.eq(SuspenseStatus::Open.as_str()),
        suspense::since_date.eq(format_date(e.since)),
        suspense::refund_id.eq(e.refund_id.clone()),
        suspense::amount_minor.eq(e.amount.to_minor()),
        suspense::currency.eq(e.amount.currency().code()),
        suspense::cleared_by_run.eq(None::<String>),
        suspense::updated_at_ms.eq(e.updated_at_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if reopened == 1 {
        return Ok(());
    }
    diesel::insert_into(suspense::table)
        .values(SuspenseRow {
            channel: e.channel.clone(),
            bank_reference_id: e.bank_reference_id.clone(),
            refund_id: e.refund_id.clone(),
            amount_minor: e.amount.to_minor(),
            currency: e.amount.currency().code().to_string(),
            since_date: format_date(e.since),
            status: SuspenseStatus::Open.as_str().to_string(),
            discrepancy_id: None,
            cleared_by_run: None,
            updated_at_ms: e.updated_at_ms,
        })
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// OPEN → CLEARED (found by `run_id`) or EXPIRED (with its discrepancy). `false` if not OPEN.
pub fn close_suspense(
    conn: &mut AnyConnection,
    channel: &str,
    bank_reference_id: &str,
    to: SuspenseStatus,
    run_id: Option<&str>,
    discrepancy_id: Option<&str>,
    now_ms: i64,
) -> Result<bool> {
    let n = diesel::update(
        suspense::table
            .filter(suspense::channel.eq(channel.to_string()))
            .filter(suspense::bank_reference_id.eq(bank_reference_id.to_string()))
            .filter(suspense::status.eq(SuspenseStatus::Open.as_str())),
    )
    .set((
        suspense::status.eq(to.as_str()),
        suspense::cleared_by_run.eq(run_id.map(str::to_string)),
        suspense::discrepancy_id.eq(discrepancy_id.map(str::to_string)),
        suspense::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

// ----- discrepancies -----

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = discrepancies)]
struct DiscrepancyRow {
    discrepancy_id: String,
    channel: String,
    business_date: String,
    run_id: String,
    kind: String,
    status: String,
    refund_id: String,
    bank_reference_id: String,
    bank_ref: String,
    platform_amount_minor: Option<i64>,
    bank_amount_minor: Option<i64>,
    currency: String,
    bank_currency: Option<String>,
    bank_status: Option<String>,
    detail: String,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = resolutions)]
struct ResolutionRow {
    discrepancy_id: String,
    resolution: String,
    operator: String,
    reason: String,
    started_at_ms: i64,
    resolved_at_ms: Option<i64>,
    actions: String,
    adjustment_id: String,
}

fn discrepancy_to_row(d: &Discrepancy) -> Result<DiscrepancyRow> {
    let currency = d
        .platform_amount
        .or(d.bank_amount)
        .map(|a| a.currency())
        .ok_or_else(|| {
            Error::internal(format!("discrepancy {} has no amount", d.discrepancy_id))
        })?;
    Ok(DiscrepancyRow {
        discrepancy_id: d.discrepancy_id.clone(),
        channel: d.channel.clone(),
        business_date: format_date(d.date),
        run_id: d.run_id.clone(),
        kind: d.kind.as_str().to_string(),
        status: d.status.as_str().to_string(),
        refund_id: d.refund_id.clone(),
        bank_reference_id: d.bank_reference_id.clone(),
        bank_ref: d.bank_ref.clone(),
        platform_amount_minor: d.platform_amount.map(|a| a.to_minor()),
        bank_amount_minor: d.bank_amount.map(|a| a.to_minor()),
        currency: currency.code().to_string(),
        bank_currency: d.bank_amount.map(|a| a.currency().code().to_string()),
        bank_status: d.bank_status.map(|s| s.as_str().to_string()),
        detail: d.detail.clone(),
        created_at_ms: d.created_at_ms,
    })
}

fn discrepancy_from_row(row: DiscrepancyRow, res: Option<ResolutionRow>) -> Result<Discrepancy> {
    let currency = Currency::parse(&row.currency, "currency").map_err(corrupt)?;
    let bank_currency = match &row.bank_currency {
        Some(c) => Currency::parse(c, "bank_currency").map_err(corrupt)?,
        None => currency,
    };
    let kind =
        DiscrepancyKind::parse(&row.kind).ok_or_else(|| corrupt(format!("kind {:?}", row.kind)))?;
    let resolution = res
        .as_ref()
        .map(|r| {
            Resolution::parse(&r.resolution)
                .ok_or_else(|| corrupt(format!("resolution {:?}", r.resolution)))
        })
        .transpose()?;
    let key_item_date =
        parse_business_date(&row.business_date, "business_date").map_err(corrupt)?;
    Ok(Discrepancy {
        date: key_item_date,
        kind,
        severity: kind.severity(),
        status: DiscrepancyStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("status {:?}", row.status)))?,
        platform_amount: row
            .platform_amount_minor
            .map(|m| Money::from_minor(m, currency)),
        bank_amount: row
            .bank_amount_minor
            .map(|m| Money::from_minor(m, bank_currency)),
        bank_status: row
            .bank_status
            .as_deref()
            .map(|s| {
                BankRecordStatus::parse(s).ok_or_else(|| corrupt(format!("bank status {s:?}")))
            })
            .transpose()?,
        resolution,
        operator: res.as_ref().map(|r| r.operator.clone()).unwrap_or_default(),
        reason: res.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
        resolved_at_ms: res.as_ref().and_then(|r| r.resolved_at_ms),
        actions: res.as_ref().map(|r| r.actions.clone()).unwrap_or_default(),
        adjustment_id: res.map(|r| r.adjustment_id).unwrap_or_default(),
        dedupe_key: String::new(),
        discrepancy_id: row.discrepancy_id,
        channel: row.channel,
        run_id: row.run_id,
        refund_id: row.refund_id,
        bank_reference_id: row.bank_reference_id,
        bank_ref: row.bank_ref,
        detail: row.detail,
        created_at_ms: row.created_at_ms,
    })
}

fn with_resolutions(
    conn: &mut AnyConnection,
    rows: Vec<DiscrepancyRow>,
) -> Result<Vec<Discrepancy>> {
    let ids: Vec<String> = rows.iter().map(|r| r.discrepancy_id.clone()).collect();
    let mut res: std::collections::HashMap<String, ResolutionRow> =
        std::collections::HashMap::new();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let found: Vec<ResolutionRow> = resolutions::table
            .filter(resolutions::discrepancy_id.eq_any(chunk.to_vec()))
            .select(ResolutionRow::as_select())
            .load(conn)
            .map_err(db_err)?;
        res.extend(found.into_iter().map(|r| (r.discrepancy_id.clone(), r)));
    }
    rows.into_iter()
        .map(|r| {
            let resolution = res.remove(&r.discrepancy_id);
            discrepancy_from_row(r, resolution)
        })
        .collect()
}

/// Opens a discrepancy unless it exists (its id is derived from the fact). Returns whether this
/// call created it. Check-then-insert inside the caller's transaction.
pub fn open_discrepancy(conn: &mut AnyConnection, d: &Discrepancy) -> Result<bool> {
    let exists = discrepancies::table
        .filter(discrepancies::discrepancy_id.eq(d.discrepancy_id.clone()))
        .select(discrepancies::discrepancy_id)
        .first::<String>(conn)
        .optional()
        .map_err(db_err)?
        .is_some();
    if exists {
        return Ok(false);
    }
    diesel::insert_into(discrepancies::table)
        .values(discrepancy_to_row(d)?)
        .execute(conn)
        .map_err(db_err)?;
    Ok(true)
}

pub fn get_discrepancy(conn: &mut AnyConnection, id: &str) -> Result<Option<Discrepancy>> {
    let row: Option<DiscrepancyRow> = discrepancies::table
        .filter(discrepancies::discrepancy_id.eq(id))
        .select(DiscrepancyRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        Some(r) => Ok(with_resolutions(conn, vec![r])?.pop()),
        None => Ok(None),
    }
}

/// Filters of [`list_discrepancies`].
#[derive(Debug, Clone, Default)]
pub struct DiscrepancyFilter {
    pub status: Option<DiscrepancyStatus>,
    pub channel: Option<String>,
    pub severity: Option<Severity>,
    pub date: Option<NaiveDate>,
    /// Page after this discrepancy (creation order).
    pub after: Option<(i64, String)>,
}

/// Discrepancies in creation order, filtered, at most `limit`.
pub fn list_discrepancies(
    conn: &mut AnyConnection,
    filter: &DiscrepancyFilter,
    limit: u32,
) -> Result<Vec<Discrepancy>> {
    let mut q = discrepancies::table
        .select(DiscrepancyRow::as_select())
        .order((
            discrepancies::created_at_ms.asc(),
            discrepancies::discrepancy_id.asc(),
        ))
        .limit(i64::from(limit))
        .into_boxed();
    if let Some(s) = filter.status {
        q = q.filter(discrepancies::status.eq(s.as_str()));
    }
    if let Some(c) = &filter.channel {
        q = q.filter(discrepancies::channel.eq(c.clone()));
    }
    if let Some(sev) = filter.severity {
        let kinds: Vec<&str> = DiscrepancyKind::ALL
            .iter()
            .filter(|k| k.severity() == sev)
            .map(|k| k.as_str())
            .collect();
        q = q.filter(discrepancies::kind.eq_any(kinds));
    }
    if let Some(d) = filter.date {
        q = q.filter(discrepancies::business_date.eq(format_date(d)));
    }
    if let Some((at, id)) = &filter.after {
        q = q.filter(
            discrepancies::created_at_ms
                .gt(*at)
                .or(discrepancies::created_at_ms
                    .eq(*at)
                    .and(discrepancies::discrepancy_id.gt(id.clone()))),
        );
    }
    let rows: Vec<DiscrepancyRow> = q.load(conn).map_err(db_err)?;
    with_resolutions(conn, rows)
}

/// OPEN → RESOLVING, recording the resolution, operator and reason. `false` if it was not OPEN.
pub fn start_resolving(
    conn: &mut AnyConnection,
    id: &str,
    resolution: Resolution,
    operator: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool> {
    let n = diesel::update(
        discrepancies::table
            .filter(discrepancies::discrepancy_id.eq(id.to_string()))
            .filter(discrepancies::status.eq(DiscrepancyStatus::Open.as_str())),
    )
    .set(discrepancies::status.eq(DiscrepancyStatus::Resolving.as_str()))
    .execute(conn)
    .map_err(db_err)?;
    if n != 1 {
        return Ok(false);
    }
    diesel::delete(resolutions::table.filter(resolutions::discrepancy_id.eq(id.to_string())))
        .execute(conn)
        .map_err(db_err)?;
    diesel::insert_into(resolutions::table)
        .values(ResolutionRow {
            discrepancy_id: id.to_string(),
            resolution: resolution.as_str().to_string(),
            operator: operator.to_string(),
            reason: reason.to_string(),
            started_at_ms: now_ms,
            resolved_at_ms: None,
            actions: String::new(),
            adjustment_id: String::new(),
        })
        .execute(conn)
        .map_err(db_err)?;
    Ok(true)
}

/// RESOLVING → RESOLVED with what was done. `false` if it was not RESOLVING.
pub fn finish_resolving(
    conn: &mut AnyConnection,
    id: &str,
    actions: &str,
    adjustment_id: &str,
    now_ms: i64,
) -> Result<bool> {
    let n = diesel::update(
        discrepancies::table
            .filter(discrepancies::discrepancy_id.eq(id.to_string()))
            .filter(discrepancies::status.eq(DiscrepancyStatus::Resolving.as_str())),
    )
    .set(discrepancies::status.eq(DiscrepancyStatus::Resolved.as_str()))
    .execute(conn)
    .map_err(db_err)?;
    if n != 1 {
        return Ok(false);
    }
    diesel::update(resolutions::table.filter(resolutions::discrepancy_id.eq(id.to_string())))
        .set((
            resolutions::actions.eq(actions.to_string()),
            resolutions::adjustment_id.eq(adjustment_id.to_string()),
            resolutions::resolved_at_ms.eq(Some(now_ms)),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(true)
}

/// RESOLVING → OPEN (a peer definitely refused the correction). `false` if not RESOLVING.
pub fn abort_resolving(conn: &mut AnyConnection, id: &str) -> Result<bool> {
    let n = diesel::update(
        discrepancies::table
            .filter(discrepancies::discrepancy_id.eq(id.to_string()))
            .filter(discrepancies::status.eq(DiscrepancyStatus::Resolving.as_str())),
    )
    .set(discrepancies::status.eq(DiscrepancyStatus::Open.as_str()))
    .execute(conn)
    .map_err(db_err)?;
    if n == 1 {
        diesel::delete(resolutions::table.filter(resolutions::discrepancy_id.eq(id.to_string())))
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(n == 1)
}

/// Unresolved discrepancies of a channel and date.
pub fn count_unresolved_discrepancies(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
) -> Result<i64> {
    discrepancies::table
        .filter(discrepancies::channel.eq(channel))
        .filter(discrepancies::business_date.eq(format_date(date)))
        .filter(discrepancies::status.ne(DiscrepancyStatus::Resolved.as_str()))
        .count()
        .get_result(conn)
        .map_err(db_err)
}

// ----- audit -----

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub audit_id: String,
    /// `DISCREPANCY` or `RUN`.
    pub subject_kind: String,
    pub subject_id: String,
    pub action: String,
    pub operator: String,
    pub reason: String,
    pub before_state: String,
    pub after_state: String,
    pub at_ms: i64,
}

pub fn insert_audit(conn: &mut AnyConnection, e: &AuditEntry) -> Result<()> {
    diesel::insert_into(audit_log::table)
        .values(e)
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// Audit entries (of one subject), newest first.
pub fn list_audit(
    conn: &mut AnyConnection,
    subject_id: Option<&str>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let mut q = audit_log::table
        .select(AuditEntry::as_select())
        .order((audit_log::at_ms.desc(), audit_log::audit_id.desc()))
        .limit(i64::from(limit))
        .into_boxed();
    if let Some(s) = subject_id {
        q = q.filter(audit_log::subject_id.eq(s.to_string()));
    }
    q.load(conn).map_err(db_err)
}
