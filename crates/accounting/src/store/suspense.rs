//! Suspense items in storage: opened and reduced by the item lines of a posting inside the
//! posting's own transaction (a conditional update keeps an item from going below zero under
//! concurrency), and read by id or by channel and status.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

use super::{corrupt, TxError};
use crate::domain::suspense::{closing_status, opens, ItemStatus, SuspenseItem};
use crate::domain::{AccountKey, AccountType, PostingRequest};

diesel::table! {
    suspense_items (item_id) {
        item_id -> Text,
        account_id -> Text,
        account_type -> Text,
        channel -> Text,
        currency -> Text,
        amount_minor -> BigInt,
        remaining_minor -> BigInt,
        status -> Text,
        source -> Text,
        description -> Text,
        value_date -> Text,
        bank_reference -> Text,
        opened_at_ms -> BigInt,
        closed_by -> Text,
        closed_at_ms -> Nullable<BigInt>,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = suspense_items)]
struct ItemRow {
    item_id: String,
    account_id: String,
    account_type: String,
    channel: String,
    currency: String,
    amount_minor: i64,
    remaining_minor: i64,
    status: String,
    source: String,
    description: String,
    value_date: String,
    bank_reference: String,
    opened_at_ms: i64,
    closed_by: String,
    closed_at_ms: Option<i64>,
}

impl ItemRow {
    fn into_item(self) -> Result<SuspenseItem, Error> {
        let account_type = AccountType::parse(&self.account_type)
            .ok_or_else(|| corrupt("account type", &self.account_type))?;
        let currency = Currency::parse(&self.currency, "currency")
            .map_err(|_| corrupt("currency", &self.currency))?;
        let status =
            ItemStatus::parse(&self.status).ok_or_else(|| corrupt("item status", &self.status))?;
        let value_date = chrono::NaiveDate::parse_from_str(&self.value_date, "%Y-%m-%d")
            .map_err(|_| corrupt("value date", &self.value_date))?;
        Ok(SuspenseItem {
            item_id: self.item_id,
            account: AccountKey {
                account_type,
                owner: self.channel,
                currency,
            },
            amount: Money::from_minor(self.amount_minor, currency),
            remaining: Money::from_minor(self.remaining_minor, currency),
            status,
            source: self.source,
            description: self.description,
            value_date,
            bank_reference: self.bank_reference,
            opened_at_ms: self.opened_at_ms,
            closed_by: self.closed_by,
            closed_at_ms: self.closed_at_ms,
        })
    }
}

/// Opens or reduces the items the posting's lines name. Called inside the posting transaction
/// after the account totals moved; any refusal rolls the whole posting back.
pub(super) fn apply_items(
    conn: &mut AnyConnection,
    request: &PostingRequest,
    value_date: &str,
    now_ms: i64,
) -> Result<(), TxError> {
    for e in request.entries().iter().filter(|e| !e.item.is_empty()) {
        let minor = e.amount.to_minor();
        if opens(e) {
            let row = ItemRow {
                item_id: e.item.clone(),
                account_id: e.account.account_id(),
                account_type: e.account.account_type.as_str().to_string(),
                channel: e.account.owner.clone(),
                currency: e.account.currency.code().to_string(),
                amount_minor: minor,
                remaining_minor: minor,
                status: ItemStatus::Open.as_str().to_string(),
                source: request.request_id().to_string(),
                description: request.description().to_string(),
                value_date: value_date.to_string(),
                bank_reference: request.meta().bank_reference.clone(),
                opened_at_ms: now_ms,
                closed_by: String::new(),
                closed_at_ms: None,
            };
            match diesel::insert_into(suspense_items::table)
                .values(&row)
                .execute(conn)
            {
                Ok(_) => {}
                Err(err) if tuikuan_db::is_unique_violation(&err) => {
                    return Err(TxError::Rule(Error::new(
                        ErrorCode::IdempotencyConflict,
                        format!("suspense item {} was opened by another posting", e.item),
                    )))
                }
                Err(err) => return Err(TxError::Diesel(err)),
            }
            continue;
        }
        // A reduction: the item must be open on this very account and hold at least `minor`.
        let target = suspense_items::table
            .filter(suspense_items::item_id.eq(&e.item))
            .filter(suspense_items::account_id.eq(e.account.account_id()))
            .filter(suspense_items::status.eq(ItemStatus::Open.as_str()))
            .filter(suspense_items::remaining_minor.ge(minor));
        let updated = diesel::update(target)
            .set(suspense_items::remaining_minor.eq(suspense_items::remaining_minor - minor))
            .execute(conn)?;
        if updated != 1 {
            let current = suspense_items::table
                .filter(suspense_items::item_id.eq(&e.item))
                .select(ItemRow::as_select())
                .first(conn)
                .optional()?;
            return Err(TxError::Rule(match current {
                None => Error::new(ErrorCode::NotFound, format!("no suspense item {}", e.item)),
                Some(r) if r.account_id != e.account.account_id() => Error::field(
                    "entries",
                    format!(
                        "suspense item {} is on {}, not {}",
                        e.item, r.account_id, e.account
                    ),
                ),
                Some(r) if r.status != ItemStatus::Open.as_str() => Error::new(
                    ErrorCode::InvalidStateTransition,
                    format!("suspense item {} is {}", e.item, r.status),
                ),
                Some(r) => Error::new(
                    ErrorCode::InsufficientFunds,
                    format!(
                        "suspense item {} holds {}, the posting takes {}",
                        e.item,
                        Money::from_minor(r.remaining_minor, e.account.currency),
                        e.amount
                    ),
                ),
            }));
        }
        diesel::update(
            suspense_items::table
                .filter(suspense_items::item_id.eq(&e.item))
                .filter(suspense_items::remaining_minor.eq(0)),
        )
        .set((
            suspense_items::status.eq(closing_status(request.request_id()).as_str()),
            suspense_items::closed_by.eq(request.request_id()),
            suspense_items::closed_at_ms.eq(Some(now_ms)),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// One item by id.
pub fn get_item(conn: &mut AnyConnection, item_id: &str) -> Result<Option<SuspenseItem>, Error> {
    suspense_items::table
        .filter(suspense_items::item_id.eq(item_id))
        .select(ItemRow::as_select())
        .first(conn)
        .optional()
        .map_err(db_err)?
        .map(ItemRow::into_item)
        .transpose()
}

/// Items in id order after `after`, optionally of one channel and status; at most `limit`.
pub fn list_items(
    conn: &mut AnyConnection,
    channel: Option<&str>,
    status: Option<ItemStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<SuspenseItem>, Error> {
    let mut q = suspense_items::table
        .select(ItemRow::as_select())
        .order(suspense_items::item_id.asc())
        .limit(limit as i64)
        .into_boxed();
    if let Some(channel) = channel {
        q = q.filter(suspense_items::channel.eq(channel.to_string()));
    }
    if let Some(status) = status {
        q = q.filter(suspense_items::status.eq(status.as_str()));
    }
    if let Some(after) = after {
        q = q.filter(suspense_items::item_id.gt(after.to_string()));
    }
    q.load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(ItemRow::into_item)
        .collect()
}
