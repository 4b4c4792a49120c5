//! Ledger storage: accounts with running totals, immutable postings and their entries.
//!
//! Posting is one transaction that inserts the posting (its unique `request_id` is the idempotency
//! guard), its entries, and adds to the account totals. A posting that reduces a guarded account
//! (a merchant settlement account, `credits + c >= debits + d`; an advance account,
//! `debits + d >= credits + c`) is a conditional update, so concurrent postings can never take it
//! below zero on either database.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

use crate::domain::journal::date_text;
use crate::domain::{
    AccountKey, AccountType, Balance, DateRange, Entry, PostOutcome, Posting, PostingRequest, Side,
};

diesel::table! {
    accounts (account_id) {
        account_id -> Text,
        account_type -> Text,
        owner -> Text,
        currency -> Text,
        debits_minor -> BigInt,
        credits_minor -> BigInt,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    postings (posting_id) {
        posting_id -> Text,
        request_id -> Text,
        description -> Text,
        fingerprint -> Text,
        posted_at_ms -> BigInt,
        value_date -> Text,
        bank_reference -> Text,
    }
}

diesel::table! {
    entries (posting_id, seq) {
        posting_id -> Text,
        seq -> Integer,
        account_id -> Text,
        side -> Text,
        amount_minor -> BigInt,
        item_id -> Text,
    }
}

diesel::joinable!(entries -> postings (posting_id));
diesel::allow_tables_to_appear_in_same_query!(accounts, postings, entries);

mod journal;
pub mod suspense;
pub use journal::{backfill_value_dates, journal_balances};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
struct AccountRow {
    account_id: String,
    account_type: String,
    owner: String,
    currency: String,
    debits_minor: i64,
    credits_minor: i64,
    created_at_ms: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = postings)]
struct PostingRow {
    posting_id: String,
    request_id: String,
    description: String,
    fingerprint: String,
    posted_at_ms: i64,
    value_date: String,
    bank_reference: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = entries)]
struct EntryRow {
    posting_id: String,
    seq: i32,
    account_id: String,
    side: String,
    amount_minor: i64,
    item_id: String,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::internal(format!("stored {what} {value:?} is not valid"))
}

/// Parses a stored account id `TYPE:owner:CUR` back into its key.
fn parse_account_id(account_id: &str) -> Result<AccountKey, Error> {
    let mut parts = account_id.splitn(3, ':');
    let (Some(t), Some(owner), Some(cur)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt("account id", account_id));
    };
    let account_type = AccountType::parse(t).ok_or_else(|| corrupt("account id", account_id))?;
    let currency =
        Currency::parse(cur, "currency").map_err(|_| corrupt("account id", account_id))?;
    Ok(AccountKey {
        account_type,
        owner: owner.to_string(),
        currency,
    })
}

impl AccountRow {
    fn into_balance(self) -> Result<Balance, Error> {
        let account_type = AccountType::parse(&self.account_type)
            .ok_or_else(|| corrupt("account type", &self.account_type))?;
        let currency = Currency::parse(&self.currency, "currency")
            .map_err(|_| corrupt("currency", &self.currency))?;
        Ok(Balance {
            account: AccountKey {
                account_type,
                owner: self.owner,
                currency,
            },
            debits_minor: self.debits_minor,
            credits_minor: self.credits_minor,
        })
    }
}

impl EntryRow {
    fn into_entry(self) -> Result<Entry, Error> {
        let account = parse_account_id(&self.account_id)?;
        let side = Side::parse(&self.side).ok_or_else(|| corrupt("side", &self.side))?;
        let amount = Money::from_minor(self.amount_minor, account.currency);
        Ok(Entry {
            account,
            side,
            amount,
            item: self.item_id,
        })
    }
}

fn assemble(row: PostingRow, rows: Vec<EntryRow>) -> Result<Posting, Error> {
    let entries = rows
        .into_iter()
        .map(EntryRow::into_entry)
        .collect::<Result<Vec<_>, _>>()?;
    // Invariant asserted after reading, too: a stored posting is balanced.
    crate::domain::check_balanced(&entries)
        .map_err(|e| Error::internal(format!("posting {}: {}", row.posting_id, e.message)))?;
    // Postings from before value dates were kept are dated by the day they were posted.
    let value_date = if row.value_date.is_empty() {
        posting_date(row.posted_at_ms)
    } else {
        chrono::NaiveDate::parse_from_str(&row.value_date, "%Y-%m-%d")
            .map_err(|_| corrupt("value date", &row.value_date))?
    };
    Ok(Posting {
        posting_id: row.posting_id,
        request_id: row.request_id,
        description: row.description,
        entries,
        posted_at_ms: row.posted_at_ms,
        value_date,
        bank_reference: row.bank_reference,
    })
}

/// The business date (UTC+8) of an instant in milliseconds: the value date of a posting whose
/// caller named none.
fn posting_date(ms: i64) -> chrono::NaiveDate {
    tuikuan_kernel::clock::business_date(tuikuan_kernel::clock::from_ms(ms))
}

fn load_entries(conn: &mut AnyConnection, posting_id: &str) -> Result<Vec<EntryRow>, Error> {
    entries::table
        .filter(entries::posting_id.eq(posting_id))
        .order(entries::seq.asc())
        .select(EntryRow::as_select())
        .load(conn)
        .map_err(db_err)
}

/// The posting with this idempotency key, if any.
pub fn find_posting(conn: &mut AnyConnection, request_id: &str) -> Result<Option<Posting>, Error> {
    let row = postings::table
        .filter(postings::request_id.eq(request_id))
        .select(PostingRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        None => Ok(None),
        Some(row) => {
            let rows = load_entries(conn, &row.posting_id)?;
            assemble(row, rows).map(Some)
        }
    }
}

/// Decides a repeat of `request_id`: the same content replays, other content conflicts.
fn replay_or_conflict(
    existing: Posting,
    stored_fingerprint: &str,
    request: &PostingRequest,
) -> Result<PostOutcome, Error> {
    if stored_fingerprint == request.fingerprint() {
        Ok(PostOutcome {
            posting: existing,
            replayed: true,
        })
    } else {
        Err(Error::new(
            ErrorCode::IdempotencyConflict,
            format!(
                "request_id {:?} was posted before with different content",
                request.request_id()
            ),
        ))
    }
}

fn existing_outcome(
    conn: &mut AnyConnection,
    request: &PostingRequest,
) -> Result<Option<PostOutcome>, Error> {
    let row = postings::table
        .filter(postings::request_id.eq(request.request_id()))
        .select(PostingRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let fingerprint = row.fingerprint.clone();
    let rows = load_entries(conn, &row.posting_id)?;
    let posting = assemble(row, rows)?;
    replay_or_conflict(posting, &fingerprint, request).map(Some)
}

/// Creates the account with zero totals unless it exists. Concurrent creators may race: a unique
/// violation means someone else created it, which is just as good.
fn ensure_account(conn: &mut AnyConnection, key: &AccountKey, now_ms: i64) -> Result<(), Error> {
    let id = key.account_id();
    let exists = accounts::table
        .filter(accounts::account_id.eq(&id))
        .select(accounts::account_id)
        .first::<String>(conn)
        .optional()
        .map_err(db_err)?
        .is_some();
    if exists {
        return Ok(());
    }
    let row = AccountRow {
        account_id: id,
        account_type: key.account_type.as_str().to_string(),
        owner: key.owner.clone(),
        currency: key.currency.code().to_string(),
        debits_minor: 0,
        credits_minor: 0,
        created_at_ms: now_ms,
    };
    match diesel::insert_into(accounts::table)
        .values(&row)
        .execute(conn)
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(db_err(e)),
    }
}

/// Errors inside the posting transaction: diesel's (rolls back, surfaces as storage or as a
/// duplicate key) or a ledger rule (rolls back, surfaces as is).
enum TxError {
    Diesel(diesel::result::Error),
    Rule(Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Diesel(e)
    }
}

/// The refusal of a posting that would take `key` below zero: INSUFFICIENT_BALANCE for a
/// merchant's money (the merchant cannot cover it), INSUFFICIENT_FUNDS for a platform account (a
/// reserve, own funds, an in-transit or a suspense account).
fn shortfall_error(key: &AccountKey, have: Money, need: Money) -> Error {
    match key.account_type {
        AccountType::Advance | AccountType::MerchantReceivable => Error::new(
            ErrorCode::InsufficientBalance,
            format!(
                "merchant {} owes {have} on {}, the posting repays {need}",
                key.owner, key.account_type
            ),
        ),
        t if t.is_merchant_balance() => Error::new(
            ErrorCode::InsufficientBalance,
            format!(
                "merchant {} has {have} on {}, the posting needs {need}",
                key.owner, key.account_type
            ),
        ),
        t => Error::new(
            ErrorCode::InsufficientFunds,
            format!(
                "{t} of {} holds {have}, the posting needs {need}",
                key.owner
            ),
        ),
    }
}

/// Posts a validated request: replays a repeat, otherwise writes posting, entries and totals in
/// one transaction. `posting_id` and `now_ms` come from the caller (ids and clock live there).
pub fn post(
    conn: &mut AnyConnection,
    request: &PostingRequest,
    posting_id: &str,
    now_ms: i64,
) -> Result<PostOutcome, Error> {
    // Assert the invariant before writing, whatever the caller did.
    request.check_balanced()?;
    if let Some(outcome) = existing_outcome(conn, request)? {
        return Ok(outcome);
    }
    let totals = request.totals_by_account();
    for (key, _, _) in totals.values() {
        ensure_account(conn, key, now_ms)?;
    }
    let fingerprint = request.fingerprint();
    let value_date = date_text(request.meta().value_date_or(posting_date(now_ms)));
    let result = conn.transaction::<(), TxError, _>(|conn| {
        diesel::insert_into(postings::table)
            .values(&PostingRow {
                posting_id: posting_id.to_string(),
                request_id: request.request_id().to_string(),
                description: request.description().to_string(),
                fingerprint: fingerprint.clone(),
                posted_at_ms: now_ms,
                value_date: value_date.clone(),
                bank_reference: request.meta().bank_reference.clone(),
            })
            .execute(conn)?;
        let rows: Vec<EntryRow> = request
            .entries()
            .iter()
            .enumerate()
            .map(|(seq, e)| EntryRow {
                posting_id: posting_id.to_string(),
                seq: seq as i32,
                account_id: e.account.account_id(),
                side: e.side.as_str().to_string(),
                amount_minor: e.amount.to_minor(),
                item_id: e.item.clone(),
            })
            .collect();
        // One statement per entry: batch inserts do not compile for the multi-backend connection.
        for row in &rows {
            diesel::insert_into(entries::table)
                .values(row)
                .execute(conn)?;
        }
        // Account order is fixed (BTreeMap by id), so concurrent postings lock rows in the same
        // order and cannot deadlock.
        for (id, (key, debit, credit)) in &totals {
            let (debit, credit) = (*debit, *credit);
            let target = accounts::table.filter(accounts::account_id.eq(id));
            let guarded =
                key.account_type.must_not_go_negative() && key.account_type.reduces(debit, credit);
            let set = (
                accounts::debits_minor.eq(accounts::debits_minor + debit),
                accounts::credits_minor.eq(accounts::credits_minor + credit),
            );
            // When guarded, the balance after this posting must stay >= 0 on the normal side.
            let updated =
                match (guarded, key.account_type.normal_side()) {
                    // credits + credit - (debits + debit) >= 0
                    (true, Side::Credit) => diesel::update(target.filter(
                        (accounts::credits_minor + credit).ge(accounts::debits_minor + debit),
                    ))
                    .set(set)
                    .execute(conn)?,
                    // debits + debit - (credits + credit) >= 0
                    (true, Side::Debit) => diesel::update(target.filter(
                        (accounts::debits_minor + debit).ge(accounts::credits_minor + credit),
                    ))
                    .set(set)
                    .execute(conn)?,
                    (false, _) => diesel::update(target).set(set).execute(conn)?,
                };
            if updated != 1 {
                if guarded {
                    let balance = accounts::table
                        .filter(accounts::account_id.eq(id))
                        .select(AccountRow::as_select())
                        .first(conn)
                        .optional()?
                        .map(|r| match key.account_type.normal_side() {
                            Side::Credit => r.credits_minor - r.debits_minor,
                            Side::Debit => r.debits_minor - r.credits_minor,
                        })
                        .unwrap_or(0);
                    let (have, need) = (
                        Money::from_minor(balance, key.currency),
                        Money::from_minor((debit - credit).abs(), key.currency),
                    );
                    return Err(TxError::Rule(shortfall_error(key, have, need)));
                }
                return Err(TxError::Rule(Error::internal(format!(
                    "account {id} vanished while posting"
                ))));
            }
        }
        suspense::apply_items(conn, request, &value_date, now_ms)
    });
    match result {
        Ok(()) => {
            let posting = find_posting(conn, request.request_id())?.ok_or_else(|| {
                Error::internal(format!("posting {posting_id} not found after commit"))
            })?;
            Ok(PostOutcome {
                posting,
                replayed: false,
            })
        }
        Err(TxError::Rule(e)) => Err(e),
        Err(TxError::Diesel(e)) if is_unique_violation(&e) => {
            // Someone posted the same request_id concurrently: their posting decides.
            existing_outcome(conn, request)?.ok_or_else(|| {
                Error::internal(format!(
                    "request_id {:?} collided but no posting exists",
                    request.request_id()
                ))
            })
        }
        Err(TxError::Diesel(e)) => Err(db_err(e)),
    }
}

/// Posts many validated requests in one transaction. Each is posted as by [`post`] inside its own
/// savepoint, so a refused one rolls back alone and is reported in its slot.
pub fn post_batch(
    conn: &mut AnyConnection,
    requests: &[(PostingRequest, String)],
    now_ms: i64,
) -> Result<Vec<Result<PostOutcome, Error>>, Error> {
    // Accounts first, outside the transaction: creating one may race with another writer, and
    // on PostgreSQL a failed insert would abort the whole batch.
    for (request, _) in requests {
        for (key, _, _) in request.totals_by_account().values() {
            ensure_account(conn, key, now_ms)?;
        }
    }
    conn.transaction::<_, TxError, _>(|conn| {
        Ok(requests
            .iter()
            .map(|(request, posting_id)| post(conn, request, posting_id, now_ms))
            .collect())
    })
    .map_err(|e| match e {
        TxError::Rule(e) => e,
        TxError::Diesel(e) => db_err(e),
    })
}

/// An account's totals; an account never posted to has zero totals.
pub fn balance(conn: &mut AnyConnection, key: &AccountKey) -> Result<Balance, Error> {
    let row = accounts::table
        .filter(accounts::account_id.eq(key.account_id()))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?;
    match row {
        None => Ok(Balance::zero(key.clone())),
        Some(row) => row.into_balance(),
    }
}

/// Postings in posting id order (time order), after `after`, optionally only those touching
/// `account` and only those whose value date is in `dates`; at most `limit`.
pub fn list_postings(
    conn: &mut AnyConnection,
    account: Option<&AccountKey>,
    dates: DateRange,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Posting>, Error> {
    let limit = limit as i64;
    let rows: Vec<PostingRow> = match account {
        None => {
            let mut q = postings::table
                .select(PostingRow::as_select())
                .order(postings::posting_id.asc())
                .limit(limit)
                .into_boxed();
            if let Some(after) = after {
                q = q.filter(postings::posting_id.gt(after.to_string()));
            }
            if let Some(from) = dates.from {
                q = q.filter(postings::value_date.ge(date_text(from)));
            }
            if let Some(to) = dates.to {
                q = q.filter(postings::value_date.le(date_text(to)));
            }
            q.load(conn).map_err(db_err)?
        }
        Some(key) => {
            let mut q = entries::table
                .inner_join(postings::table)
                .filter(entries::account_id.eq(key.account_id()))
                .select(entries::posting_id)
                .distinct()
                .order(entries::posting_id.asc())
                .limit(limit)
                .into_boxed();
            if let Some(after) = after {
                q = q.filter(entries::posting_id.gt(after.to_string()));
            }
            if let Some(from) = dates.from {
                q = q.filter(postings::value_date.ge(date_text(from)));
            }
            if let Some(to) = dates.to {
                q = q.filter(postings::value_date.le(date_text(to)));
            }
            let ids: Vec<String> = q.load(conn).map_err(db_err)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            postings::table
                .filter(postings::posting_id.eq_any(&ids))
                .select(PostingRow::as_select())
                .order(postings::posting_id.asc())
                .load(conn)
                .map_err(db_err)?
        }
    };
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.posting_id.as_str()).collect();
    let all_entries: Vec<EntryRow> = entries::table
        .filter(entries::posting_id.eq_any(&ids))
        .order((entries::posting_id.asc(), entries::seq.asc()))
        .select(EntryRow::as_select())
        .load(conn)
        .map_err(db_err)?;
    let mut by_posting: std::collections::HashMap<String, Vec<EntryRow>> =
        std::collections::HashMap::new();
    for e in all_entries {
        by_posting.entry(e.posting_id.clone()).or_default().push(e);
    }
    rows.into_iter()
        .map(|row| {
            let es = by_posting.remove(&row.posting_id).unwrap_or_default();
            assemble(row, es)
        })
        .collect()
}

/// Every account's totals.
pub fn all_balances(conn: &mut AnyConnection) -> Result<Vec<Balance>, Error> {
    accounts::table
        .select(AccountRow::as_select())
        .order(accounts::account_id.asc())
        .load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(AccountRow::into_balance)
        .collect()
}
