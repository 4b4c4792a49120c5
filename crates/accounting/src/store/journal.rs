//! Reading the journal by value date: balances and the trial balance summed from the entries
//! themselves (not from the accounts' running totals), as of a value date.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::Error;

use super::{corrupt, entries, parse_account_id, posting_date, postings};
use crate::domain::journal::{date_text, sum_lines};
use crate::domain::{AccountKey, Balance, DateRange, Side};

/// Dates the postings stored before value dates were kept by the business date they were posted
/// on. Runs at start; a no-op once every posting has a date.
pub fn backfill_value_dates(conn: &mut AnyConnection) -> Result<usize, Error> {
    let undated: Vec<(String, i64)> = postings::table
        .filter(postings::value_date.eq(""))
        .select((postings::posting_id, postings::posted_at_ms))
        .load(conn)
        .map_err(db_err)?;
    for (posting_id, posted_at_ms) in &undated {
        diesel::update(
            postings::table
                .filter(postings::posting_id.eq(posting_id))
                .filter(postings::value_date.eq("")),
        )
        .set(postings::value_date.eq(date_text(posting_date(*posted_at_ms))))
        .execute(conn)
        .map_err(db_err)?;
    }
    Ok(undated.len())
}

/// Per account, the sums of the journal's entries whose posting's value date is in `dates`;
/// only `account` when given. Accounts without entries in the range are left out.
pub fn journal_balances(
    conn: &mut AnyConnection,
    account: Option<&AccountKey>,
    dates: DateRange,
) -> Result<Vec<Balance>, Error> {
    let mut q = entries::table
        .inner_join(postings::table)
        .select((entries::account_id, entries::side, entries::amount_minor))
        .into_boxed();
    if let Some(key) = account {
        q = q.filter(entries::account_id.eq(key.account_id()));
    }
    if let Some(from) = dates.from {
        q = q.filter(postings::value_date.ge(date_text(from)));
    }
    if let Some(to) = dates.to {
        q = q.filter(postings::value_date.le(date_text(to)));
    }
    let rows: Vec<(String, String, i64)> = q.load(conn).map_err(db_err)?;
    let lines = rows
        .into_iter()
        .map(|(account_id, side, minor)| {
            let key = parse_account_id(&account_id)?;
            let side = Side::parse(&side).ok_or_else(|| corrupt("side", &side))?;
            Ok((key, side, minor))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(sum_lines(lines))
}
