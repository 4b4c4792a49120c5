//! The simulator's storage: diesel tables, rows, and repository functions that speak domain types.
//!
//! Guards are conditional updates (`... WHERE id = ? AND status = 'ACCEPTED'`): the affected-row
//! count decides who completes a transaction, so a transaction is completed (and paid) once only,
//! whichever ticks race.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::{BankTx, Callback, CallbackStatus, FileBatchOutcome, TxKind, TxStatus};

diesel::table! {
    transactions (id) {
        id -> Text,
        kind -> Text,
        channel -> Text,
        bank_ref -> Text,
        original_trade_id -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        status -> Text,
        reason -> Text,
        fingerprint -> Text,
        submitted_at_ms -> BigInt,
        due_at_ms -> BigInt,
        completed_at_ms -> Nullable<BigInt>,
        return_due_at_ms -> Nullable<BigInt>,
        returned_at_ms -> Nullable<BigInt>,
        batch_id -> Text,
    }
}

diesel::table! {
    /// The `refund_id` column of `transactions` (migration 3). Diesel's `table!` takes at most 16
    /// columns without a slower-compiling feature, and `transactions` has 16 others; so the column
    /// is declared here, over the same SQL table.
    #[sql_name = "transactions"]
    tx_refund_ids (id) {
        id -> Text,
        refund_id -> Text,
    }
}

diesel::table! {
    file_batches (batch_id) {
        batch_id -> Text,
        channel -> Text,
        method -> Text,
        fingerprint -> Text,
        row_count -> Integer,
        accepted -> Integer,
        rejected -> Integer,
        submitted_at_ms -> BigInt,
    }
}

diesel::table! {
    callbacks (id) {
        id -> Text,
        tx_id -> Text,
        kind -> Text,
        idx -> Integer,
        sequence -> Integer,
        status -> Text,
        reason -> Text,
        bank_ref -> Text,
        delivered -> Integer,
        attempts -> Integer,
        created_at_ms -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = transactions)]
struct TxRow {
    id: String,
    kind: String,
    channel: String,
    bank_ref: String,
    original_trade_id: String,
    amount_minor: i64,
    currency: String,
    status: String,
    reason: String,
    fingerprint: String,
    submitted_at_ms: i64,
    due_at_ms: i64,
    completed_at_ms: Option<i64>,
    return_due_at_ms: Option<i64>,
    returned_at_ms: Option<i64>,
    batch_id: String,
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = callbacks)]
struct CallbackRow {
    id: String,
    tx_id: String,
    kind: String,
    idx: i32,
    sequence: i32,
    status: String,
    reason: String,
    bank_ref: String,
    delivered: i32,
    attempts: i32,
    created_at_ms: i64,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

impl TryFrom<TxRow> for BankTx {
    type Error = Error;
    fn try_from(r: TxRow) -> Result<BankTx> {
        let currency = Currency::parse(&r.currency, "currency")
            .map_err(|_| corrupt("currency", &r.currency))?;
        Ok(BankTx {
            kind: TxKind::parse(&r.kind).ok_or_else(|| corrupt("kind", &r.kind))?,
            status: TxStatus::parse(&r.status).ok_or_else(|| corrupt("status", &r.status))?,
            amount: Money::from_minor(r.amount_minor, currency),
            id: r.id,
            channel: r.channel,
            bank_ref: r.bank_ref,
            original_trade_id: r.original_trade_id,
            reason: r.reason,
            fingerprint: r.fingerprint,
            submitted_at_ms: r.submitted_at_ms,
            due_at_ms: r.due_at_ms,
            completed_at_ms: r.completed_at_ms,
            return_due_at_ms: r.return_due_at_ms,
            returned_at_ms: r.returned_at_ms,
            batch_id: r.batch_id,
            // Filled in by `attach_refund_ids` (the column is outside `transactions!`).
            refund_id: String::new(),
        })
    }
}

impl From<&BankTx> for TxRow {
    fn from(t: &BankTx) -> TxRow {
        TxRow {
            id: t.id.clone(),
            kind: t.kind.as_str().to_string(),
            channel: t.channel.clone(),
            bank_ref: t.bank_ref.clone(),
            original_trade_id: t.original_trade_id.clone(),
            amount_minor: t.amount.to_minor(),
            currency: t.amount.currency().code().to_string(),
            status: t.status.as_str().to_string(),
            reason: t.reason.clone(),
            fingerprint: t.fingerprint.clone(),
            submitted_at_ms: t.submitted_at_ms,
            due_at_ms: t.due_at_ms,
            completed_at_ms: t.completed_at_ms,
            return_due_at_ms: t.return_due_at_ms,
            returned_at_ms: t.returned_at_ms,
            batch_id: t.batch_id.clone(),
        }
    }
}

impl TryFrom<CallbackRow> for Callback {
    type Error = Error;
    fn try_from(r: CallbackRow) -> Result<Callback> {
        Ok(Callback {
            kind: TxKind::parse(&r.kind).ok_or_else(|| corrupt("kind", &r.kind))?,
            status: CallbackStatus::parse(&r.status)
                .ok_or_else(|| corrupt("callback status", &r.status))?,
            id: r.id,
            tx_id: r.tx_id,
            idx: r.idx,
            sequence: r.sequence,
            reason: r.reason,
            bank_ref: r.bank_ref,
            delivered: r.delivered != 0,
            attempts: r.attempts,
            created_at_ms: r.created_at_ms,
        })
    }
}

impl From<&Callback> for CallbackRow {
    fn from(c: &Callback) -> CallbackRow {
        CallbackRow {
            id: c.id.clone(),
            tx_id: c.tx_id.clone(),
            kind: c.kind.as_str().to_string(),
            idx: c.idx,
            sequence: c.sequence,
            status: c.status.as_str().to_string(),
            reason: c.reason.clone(),
            bank_ref: c.bank_ref.clone(),
            delivered: i32::from(c.delivered),
            attempts: c.attempts,
            created_at_ms: c.created_at_ms,
        }
    }
}

/// A new callback for `tx`, undelivered. Its id is `<tx_id>#<idx>`, unique per transaction.
pub fn new_callback(
    tx: &BankTx,
    idx: i32,
    sequence: i32,
    status: CallbackStatus,
    reason: &str,
    created_at_ms: i64,
) -> Callback {
    Callback {
        id: format!("{}#{idx:02}", tx.id),
        tx_id: tx.id.clone(),
        kind: tx.kind,
        idx,
        sequence,
        status,
        reason: reason.to_string(),
        bank_ref: tx.bank_ref.clone(),
        delivered: false,
        attempts: 0,
        created_at_ms,
    }
}

/// Converts loaded rows and fills in their refund ids (one more query for the page).
fn to_txs(conn: &mut AnyConnection, rows: Vec<TxRow>) -> Result<Vec<BankTx>> {
    let mut txs = rows
        .into_iter()
        .map(BankTx::try_from)
        .collect::<Result<Vec<_>>>()?;
    if txs.is_empty() {
        return Ok(txs);
    }
    let ids: Vec<&str> = txs.iter().map(|t| t.id.as_str()).collect();
    let refs: std::collections::HashMap<String, String> = tx_refund_ids::table
        .filter(tx_refund_ids::id.eq_any(&ids))
        .load::<(String, String)>(conn)
        .map_err(db_err)?
        .into_iter()
        .collect();
    for t in &mut txs {
        if let Some(r) = refs.get(&t.id) {
            t.refund_id = r.clone();
        }
    }
    Ok(txs)
}

/// Records which refund a stored transaction is for (nothing to do when it has none).
fn set_refund_id(
    c: &mut AnyConnection,
    tx: &BankTx,
) -> std::result::Result<(), diesel::result::Error> {
    if !tx.refund_id.is_empty() {
        diesel::update(tx_refund_ids::table.find(&tx.id))
            .set(tx_refund_ids::refund_id.eq(&tx.refund_id))
            .execute(c)?;
    }
    Ok(())
}

pub fn get_tx(conn: &mut AnyConnection, id: &str) -> Result<Option<BankTx>> {
    let row = transactions::table
        .find(id)
        .first::<TxRow>(conn)
        .optional()
        .map_err(db_err)?;
    Ok(to_txs(conn, row.into_iter().collect())?.pop())
}

/// What [`insert_tx`] found.
#[derive(Debug)]
pub enum Inserted {
    /// The transaction is new and now stored.
    New,
    /// Another submission with this id was stored first (read it back).
    Exists,
}

/// Stores a new transaction with its first callbacks, in one transaction of its own (so that a
/// unique violation on PostgreSQL aborts only this attempt).
pub fn insert_tx(conn: &mut AnyConnection, tx: &BankTx, first: &[Callback]) -> Result<Inserted> {
    let row = TxRow::from(tx);
    let cbs: Vec<CallbackRow> = first.iter().map(CallbackRow::from).collect();
    let result = conn.transaction::<_, diesel::result::Error, _>(|c| {
        diesel::insert_into(transactions::table)
            .values(&row)
            .execute(c)?;
        set_refund_id(c, tx)?;
        for cb in &cbs {
            diesel::insert_into(callbacks::table)
                .values(cb)
                .execute(c)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(Inserted::New),
        Err(e) if is_unique_violation(&e) => Ok(Inserted::Exists),
        Err(e) => Err(db_err(e)),
    }
}

/// Accepted transactions due at or before `now_ms`, oldest first.
pub fn due_accepted(conn: &mut AnyConnection, now_ms: i64, limit: i64) -> Result<Vec<BankTx>> {
    transactions::table
        .filter(transactions::status.eq(TxStatus::Accepted.as_str()))
        .filter(transactions::due_at_ms.le(now_ms))
        .order((transactions::due_at_ms.asc(), transactions::id.asc()))
        .limit(limit)
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}

/// Completes `tx` (already moved to its final status in memory) if it is still ACCEPTED, and
/// enqueues its callbacks. Returns whether this call won.
pub fn complete_tx(conn: &mut AnyConnection, tx: &BankTx, cbs: &[Callback]) -> Result<bool> {
    let rows: Vec<CallbackRow> = cbs.iter().map(CallbackRow::from).collect();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        let n = diesel::update(
            transactions::table
                .filter(transactions::id.eq(&tx.id))
                .filter(transactions::status.eq(TxStatus::Accepted.as_str())),
        )
        .set((
            transactions::status.eq(tx.status.as_str()),
            transactions::reason.eq(&tx.reason),
            transactions::completed_at_ms.eq(tx.completed_at_ms),
            transactions::return_due_at_ms.eq(tx.return_due_at_ms),
        ))
        .execute(c)?;
        if n != 1 {
            return Ok(false);
        }
        for r in &rows {
            diesel::insert_into(callbacks::table).values(r).execute(c)?;
        }
        Ok(true)
    })
    .map_err(db_err)
}

/// Paid payouts whose return is due at or before `now_ms`.
pub fn due_returns(conn: &mut AnyConnection, now_ms: i64, limit: i64) -> Result<Vec<BankTx>> {
    transactions::table
        .filter(transactions::status.eq(TxStatus::Succeeded.as_str()))
        .filter(transactions::return_due_at_ms.le(now_ms))
        .order((transactions::return_due_at_ms.asc(), transactions::id.asc()))
        .limit(limit)
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}

/// Moves a paid payout to RETURNED if it is still SUCCEEDED, with its callback.
pub fn return_tx(conn: &mut AnyConnection, tx: &BankTx, cb: &Callback) -> Result<bool> {
    let row = CallbackRow::from(cb);
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        let n = diesel::update(
            transactions::table
                .filter(transactions::id.eq(&tx.id))
                .filter(transactions::status.eq(TxStatus::Succeeded.as_str())),
        )
        .set((
            transactions::status.eq(TxStatus::Returned.as_str()),
            transactions::reason.eq(&tx.reason),
            transactions::returned_at_ms.eq(tx.returned_at_ms),
        ))
        .execute(c)?;
        if n != 1 {
            return Ok(false);
        }
        diesel::insert_into(callbacks::table)
            .values(&row)
            .execute(c)?;
        Ok(true)
    })
    .map_err(db_err)
}

/// Undelivered callbacks with fewer than `max_attempts` attempts, in creation order.
/// Enqueues one callback (inside the caller's transaction).
pub fn insert_callback(
    conn: &mut AnyConnection,
    cb: &Callback,
) -> std::result::Result<(), diesel::result::Error> {
    diesel::insert_into(callbacks::table)
        .values(CallbackRow::from(cb))
        .execute(conn)
        .map(|_| ())
}

pub fn pending_callbacks(
    conn: &mut AnyConnection,
    max_attempts: i32,
    limit: i64,
) -> Result<Vec<Callback>> {
    callbacks::table
        .filter(callbacks::delivered.eq(0))
        .filter(callbacks::attempts.lt(max_attempts))
        .order((
            callbacks::created_at_ms.asc(),
            callbacks::tx_id.asc(),
            callbacks::idx.asc(),
        ))
        .limit(limit)
        .load::<CallbackRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(Callback::try_from)
        .collect()
}

/// Every callback of a transaction, in creation order (for inspection and tests).
pub fn callbacks_of(conn: &mut AnyConnection, tx_id: &str) -> Result<Vec<Callback>> {
    callbacks::table
        .filter(callbacks::tx_id.eq(tx_id))
        .order((callbacks::created_at_ms.asc(), callbacks::idx.asc()))
        .load::<CallbackRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(Callback::try_from)
        .collect()
}

pub fn mark_delivered(conn: &mut AnyConnection, id: &str) -> Result<()> {
    diesel::update(callbacks::table.find(id))
        .set((
            callbacks::delivered.eq(1),
            callbacks::attempts.eq(callbacks::attempts + 1),
        ))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

pub fn mark_attempt_failed(conn: &mut AnyConnection, id: &str) -> Result<()> {
    diesel::update(callbacks::table.find(id))
        .set(callbacks::attempts.eq(callbacks::attempts + 1))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// Payouts of `channel` the receiving bank returned in `[start_ms, end_ms)`, in return order.
pub fn returned_between(
    conn: &mut AnyConnection,
    channel: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<BankTx>> {
    transactions::table
        .filter(transactions::channel.eq(channel))
        .filter(transactions::status.eq(TxStatus::Returned.as_str()))
        .filter(transactions::returned_at_ms.ge(start_ms))
        .filter(transactions::returned_at_ms.lt(end_ms))
        .order((transactions::returned_at_ms.asc(), transactions::id.asc()))
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}

/// Transactions of `channel` completed in `[start_ms, end_ms)` that belong in a clearing file
/// (SUCCEEDED, FAILED, or RETURNED after success), ordered by completion time then id.
pub fn completed_between(
    conn: &mut AnyConnection,
    channel: &str,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<BankTx>> {
    transactions::table
        .filter(transactions::channel.eq(channel))
        .filter(transactions::completed_at_ms.ge(start_ms))
        .filter(transactions::completed_at_ms.lt(end_ms))
        .filter(transactions::status.eq_any([
            TxStatus::Succeeded.as_str(),
            TxStatus::Failed.as_str(),
            TxStatus::Returned.as_str(),
        ]))
        .order((transactions::completed_at_ms.asc(), transactions::id.asc()))
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}

// ---------- file batches ----------

/// A stored file batch: its fingerprint and the answer given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub batch_id: String,
    pub fingerprint: String,
    pub outcome: FileBatchOutcome,
}

pub fn get_batch(conn: &mut AnyConnection, batch_id: &str) -> Result<Option<StoredBatch>> {
    let row: Option<(String, String, i32, i32)> = file_batches::table
        .find(batch_id)
        .select((
            file_batches::batch_id,
            file_batches::fingerprint,
            file_batches::accepted,
            file_batches::rejected,
        ))
        .first(conn)
        .optional()
        .map_err(db_err)?;
    row.map(|(batch_id, fingerprint, accepted, rejected)| {
        Ok(StoredBatch {
            outcome: FileBatchOutcome {
                accepted: u32::try_from(accepted).map_err(|_| corrupt("accepted", &batch_id))?,
                rejected: u32::try_from(rejected).map_err(|_| corrupt("rejected", &batch_id))?,
            },
            batch_id,
            fingerprint,
        })
    })
    .transpose()
}

/// What [`insert_batch`] did.
#[derive(Debug)]
pub enum BatchInserted {
    New,
    /// The batch id was taken first (read it back and compare).
    Exists,
    /// A row id is already a transaction with other content (nothing was stored).
    RowConflict(String),
}

/// Stores a batch and its rows (FILE transactions) in one transaction of its own: the batch row
/// first (so a concurrent submission of the same batch waits, then sees a unique violation), then
/// each row; a row id already stored with the same fingerprint is kept as it is, one stored with
/// other content rolls everything back.
#[allow(clippy::too_many_arguments)]
pub fn insert_batch(
    conn: &mut AnyConnection,
    batch_id: &str,
    channel: &str,
    method: &str,
    fingerprint: &str,
    outcome: FileBatchOutcome,
    txs: &[BankTx],
    now_ms: i64,
) -> Result<BatchInserted> {
    enum Abort {
        Diesel(diesel::result::Error),
        Row(String),
    }
    impl From<diesel::result::Error> for Abort {
        fn from(e: diesel::result::Error) -> Self {
            Abort::Diesel(e)
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let result = conn.transaction::<_, Abort, _>(|c| {
        diesel::insert_into(file_batches::table)
            .values((
                file_batches::batch_id.eq(batch_id),
                file_batches::channel.eq(channel),
                file_batches::method.eq(method),
                file_batches::fingerprint.eq(fingerprint),
                file_batches::row_count.eq(count(txs.len())),
                file_batches::accepted.eq(i32::try_from(outcome.accepted).unwrap_or(i32::MAX)),
                file_batches::rejected.eq(i32::try_from(outcome.rejected).unwrap_or(i32::MAX)),
                file_batches::submitted_at_ms.eq(now_ms),
            ))
            .execute(c)?;
        for tx in txs {
            let existing: Option<(String, String)> = transactions::table
                .find(&tx.id)
                .select((transactions::kind, transactions::fingerprint))
                .first(c)
                .optional()?;
            match existing {
                Some((kind, fp)) if kind == TxKind::File.as_str() && fp == tx.fingerprint => {}
                Some(_) => return Err(Abort::Row(tx.id.clone())),
                None => {
                    diesel::insert_into(transactions::table)
                        .values(TxRow::from(tx))
                        .execute(c)?;
                    set_refund_id(c, tx)?;
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(BatchInserted::New),
        Err(Abort::Row(id)) => Ok(BatchInserted::RowConflict(id)),
        Err(Abort::Diesel(e)) if is_unique_violation(&e) => Ok(BatchInserted::Exists),
        Err(Abort::Diesel(e)) => Err(db_err(e)),
    }
}

/// The FILE transactions of a batch, by row id.
pub fn batch_rows(conn: &mut AnyConnection, batch_id: &str) -> Result<Vec<BankTx>> {
    transactions::table
        .filter(transactions::batch_id.eq(batch_id))
        .filter(transactions::kind.eq(TxKind::File.as_str()))
        .order(transactions::id.asc())
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}

/// The bank's books in id order: up to `limit` transactions with an id greater than `after`,
/// optionally of one kind (for auditors).
pub fn list_txs(
    conn: &mut AnyConnection,
    kind: Option<TxKind>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<BankTx>> {
    let mut q = transactions::table.into_boxed();
    if let Some(kind) = kind {
        q = q.filter(transactions::kind.eq(kind.as_str()));
    }
    if let Some(after) = after {
        q = q.filter(transactions::id.gt(after.to_string()));
    }
    q.order(transactions::id.asc())
        .limit(limit)
        .load::<TxRow>(conn)
        .map_err(db_err)
        .and_then(|rows| to_txs(conn, rows))
}
