//! Storage of reopens ([`crate::domain::reopen`]): one row per refund and attempt, moved together
//! with the debit's status in one transaction, each move guarded by the status it starts from.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::Error;

use super::{debits, TxError};
use crate::domain::reopen::ReopenState;
use crate::domain::DebitStatus;

diesel::table! {
    debit_reopens (refund_id, attempt) {
        refund_id -> Text,
        attempt -> Integer,
        status -> Text,
        reason -> Text,
        posting_id -> Nullable<Text>,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
    }
}

/// The refund's reopens: (attempt, state), by attempt.
pub fn reopens_of(
    conn: &mut AnyConnection,
    refund_id: &str,
) -> Result<Vec<(u32, ReopenState)>, Error> {
    let rows: Vec<(i32, String)> = debit_reopens::table
        .filter(debit_reopens::refund_id.eq(refund_id))
        .order(debit_reopens::attempt.asc())
        .select((debit_reopens::attempt, debit_reopens::status))
        .load(conn)
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(attempt, status)| {
            let state = ReopenState::parse(&status).ok_or_else(|| {
                Error::internal(format!("stored reopen status {status:?} is unknown"))
            })?;
            Ok((u32::try_from(attempt).unwrap_or(0), state))
        })
        .collect()
}

fn attempt_column(attempt: u32) -> Result<i32, Error> {
    i32::try_from(attempt).map_err(|_| Error::field("attempt", "is too large"))
}

/// COMPLETED → REOPENING for `attempt`, its row recorded. `false` when the debit was no longer
/// COMPLETED (someone else moved it).
pub fn begin_reopen(
    conn: &mut AnyConnection,
    refund_id: &str,
    attempt: u32,
    reason: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    DebitStatus::Completed.transition(DebitStatus::Reopening)?;
    let n = attempt_column(attempt)?;
    conn.transaction::<bool, TxError, _>(|conn| {
        let moved = diesel::update(
            debits::table
                .filter(debits::refund_id.eq(refund_id))
                .filter(debits::status.eq(DebitStatus::Completed.as_str())),
        )
        .set((
            debits::status.eq(DebitStatus::Reopening.as_str()),
            debits::reason.eq(reason),
            debits::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if moved != 1 {
            return Ok(false);
        }
        diesel::insert_into(debit_reopens::table)
            .values((
                debit_reopens::refund_id.eq(refund_id),
                debit_reopens::attempt.eq(n),
                debit_reopens::status.eq(ReopenState::Reopening.as_str()),
                debit_reopens::reason.eq(reason),
                debit_reopens::created_at_ms.eq(now_ms),
                debit_reopens::updated_at_ms.eq(now_ms),
            ))
            .execute(conn)?;
        Ok(true)
    })
    .map_err(|e| e.into_error("reopen"))
}

/// REOPENING → DEBITED, the attempt's row REOPENED with the undoing posting. `false` when the
/// debit was no longer REOPENING.
pub fn finish_reopen(
    conn: &mut AnyConnection,
    refund_id: &str,
    attempt: u32,
    posting_id: Option<&str>,
    now_ms: i64,
) -> Result<bool, Error> {
    DebitStatus::Reopening.transition(DebitStatus::Debited)?;
    let n = attempt_column(attempt)?;
    conn.transaction::<bool, TxError, _>(|conn| {
        let moved = diesel::update(
            debits::table
                .filter(debits::refund_id.eq(refund_id))
                .filter(debits::status.eq(DebitStatus::Reopening.as_str())),
        )
        .set((
            debits::status.eq(DebitStatus::Debited.as_str()),
            debits::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if moved != 1 {
            return Ok(false);
        }
        let row = diesel::update(
            debit_reopens::table
                .filter(debit_reopens::refund_id.eq(refund_id))
                .filter(debit_reopens::attempt.eq(n))
                .filter(debit_reopens::status.eq(ReopenState::Reopening.as_str())),
        )
        .set((
            debit_reopens::status.eq(ReopenState::Reopened.as_str()),
            debit_reopens::posting_id.eq(posting_id),
            debit_reopens::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if row != 1 {
            return Err(TxError::Rule(Error::internal(format!(
                "debit of refund {refund_id} is REOPENING without a reopen of attempt {attempt}"
            ))));
        }
        Ok(true)
    })
    .map_err(|e| e.into_error("reopen"))
}
