//! Storage of reconciliation runs and their items (diesel, SQLite and PostgreSQL alike).
//!
//! A run is written once, with all its items, in one transaction; the UNIQUE
//! `(channel, business_date, file_sha256)` constraint makes a second run of the same file impossible
//! (a concurrent duplicate gets [`ErrorCode::IdempotencyConflict`] from [`insert_run`] and re-reads).
//! Afterwards only an item's write-back state changes, through conditional updates
//! ([`mark_written_back`], [`mark_refused`]) that succeed only from the pending state.

use chrono::NaiveDate;
use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

use crate::domain::{
    format_date, parse_business_date, BankRecordStatus, FinalStatus, MatchItem, Outcome, Run,
    RunItem, WriteBack, WriteBackState,
};

/// The embedded migrations of the reconciliation center's database (run by [`crate::serve`]).
pub const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

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

diesel::allow_tables_to_appear_in_same_query!(runs, items);

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
        payout_rows: i64::from(run.payout_rows),
        created_at_ms: run.created_at_ms,
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

fn row_to_item(row: ItemRow) -> Result<RunItem> {
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
    Ok(RunItem {
        seq: u32::try_from(row.seq).map_err(|_| corrupt(format!("seq {}", row.seq)))?,
        item: MatchItem {
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
        file_format: row.file_format,
        file_rows: u32::try_from(row.file_rows).map_err(|_| corrupt("file_rows"))?,
        payout_rows: u32::try_from(row.payout_rows).map_err(|_| corrupt("payout_rows"))?,
        created_at_ms: row.created_at_ms,
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
    rows.into_iter().map(row_to_item).collect()
}

fn with_items(conn: &mut AnyConnection, row: RunRow) -> Result<Run> {
    let run_items = load_items(conn, &row.run_id)?;
    row_to_run(row, run_items)
}

/// Stores a new run with its items. Call inside a transaction. A run of the same
/// `(channel, date, file_sha256)` already stored → [`ErrorCode::IdempotencyConflict`] (the caller
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
    // One row per statement: batch inserts do not compile for the SQLite side of a
    // MultiConnection. All rows are in the caller's transaction.
    for r in &rows {
        diesel::insert_into(items::table)
            .values(r)
            .execute(conn)
            .map_err(db_err)?;
    }
    Ok(())
}

/// The run of this exact file, if one was stored.
pub fn find_run_by_file(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
    sha256: &str,
) -> Result<Option<Run>> {
    let row: Option<RunRow> = runs::table
        .filter(runs::channel.eq(channel))
        .filter(runs::business_date.eq(format_date(date)))
        .filter(runs::file_sha256.eq(sha256))
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
