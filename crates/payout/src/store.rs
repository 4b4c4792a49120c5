//! The payout center's storage: the `payouts` table, the `payout_updates` outbox, and repository
//! functions over domain types.
//!
//! Every status change is a conditional update on the status (and, for callbacks, the applied
//! sequence) the caller read, so concurrent cycles and callbacks never move a payout twice or
//! backwards. The change that wins writes its outbox row in the same transaction.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::{is_reported, CardNumber, Payout, PayoutStatus, PayoutUpdate};

diesel::table! {
    payouts (payout_id) {
        payout_id -> Text,
        refund_id -> Text,
        channel -> Text,
        card_no -> Text,
        card_masked -> Text,
        holder_name -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        status -> Text,
        bank_ref -> Text,
        reason -> Text,
        callback_seq -> BigInt,
        fingerprint -> Text,
        created_at_ms -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    payout_updates (payout_id, sequence) {
        payout_id -> Text,
        sequence -> BigInt,
        refund_id -> Text,
        status -> Text,
        reason -> Text,
        bank_ref -> Text,
        created_at_ms -> BigInt,
        delivered_at_ms -> Nullable<BigInt>,
        lease_until_ms -> BigInt,
        attempts -> Integer,
        last_error -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(payouts, payout_updates);

#[derive(Clone, Queryable, Insertable)]
#[diesel(table_name = payouts)]
struct PayoutRow {
    payout_id: String,
    refund_id: String,
    channel: String,
    card_no: String,
    card_masked: String,
    holder_name: String,
    amount_minor: i64,
    currency: String,
    status: String,
    bank_ref: String,
    reason: String,
    callback_seq: i64,
    fingerprint: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn corrupt(what: &str, id: &str) -> Error {
    Error::internal(format!("stored payout {id} has an invalid {what}"))
}

impl TryFrom<PayoutRow> for Payout {
    type Error = Error;
    fn try_from(r: PayoutRow) -> Result<Payout> {
        let currency = Currency::parse(&r.currency, "currency")
            .map_err(|_| corrupt("currency", &r.payout_id))?;
        Ok(Payout {
            card: CardNumber::parse(&r.card_no)
                .map_err(|_| corrupt("card number", &r.payout_id))?,
            status: PayoutStatus::parse(&r.status)
                .ok_or_else(|| corrupt("status", &r.payout_id))?,
            amount: Money::from_minor(r.amount_minor, currency),
            payout_id: r.payout_id,
            refund_id: r.refund_id,
            channel: r.channel,
            holder_name: r.holder_name,
            bank_ref: r.bank_ref,
            reason: r.reason,
            callback_seq: r.callback_seq,
            fingerprint: r.fingerprint,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

impl From<&Payout> for PayoutRow {
    fn from(p: &Payout) -> PayoutRow {
        PayoutRow {
            payout_id: p.payout_id.clone(),
            refund_id: p.refund_id.clone(),
            channel: p.channel.clone(),
            card_no: p.card.expose().to_string(),
            card_masked: p.card.masked(),
            holder_name: p.holder_name.clone(),
            amount_minor: p.amount.to_minor(),
            currency: p.amount.currency().code().to_string(),
            status: p.status.as_str().to_string(),
            bank_ref: p.bank_ref.clone(),
            reason: p.reason.clone(),
            callback_seq: p.callback_seq,
            fingerprint: p.fingerprint.clone(),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        }
    }
}

pub fn get_payout(conn: &mut AnyConnection, payout_id: &str) -> Result<Option<Payout>> {
    payouts::table
        .find(payout_id)
        .first::<PayoutRow>(conn)
        .optional()
        .map_err(db_err)?
        .map(Payout::try_from)
        .transpose()
}

/// Inserts a new payout in a transaction of its own. `Ok(false)`: the id exists already.
pub fn insert_payout(conn: &mut AnyConnection, payout: &Payout) -> Result<bool> {
    let row = PayoutRow::from(payout);
    let result = conn.transaction::<_, diesel::result::Error, _>(|c| {
        diesel::insert_into(payouts::table).values(&row).execute(c)
    });
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// Payouts in id order: up to `limit` after `after`, optionally of one status or one refund.
pub fn list_payouts(
    conn: &mut AnyConnection,
    status: Option<PayoutStatus>,
    refund_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Payout>> {
    let mut q = payouts::table.into_boxed();
    if let Some(status) = status {
        q = q.filter(payouts::status.eq(status.as_str()));
    }
    if let Some(refund_id) = refund_id {
        q = q.filter(payouts::refund_id.eq(refund_id.to_string()));
    }
    if let Some(after) = after {
        q = q.filter(payouts::payout_id.gt(after.to_string()));
    }
    q.order(payouts::payout_id.asc())
        .limit(limit)
        .load::<PayoutRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(Payout::try_from)
        .collect()
}

/// CREATED payouts, oldest first.
pub fn created_payouts(conn: &mut AnyConnection, limit: i64) -> Result<Vec<Payout>> {
    payouts::table
        .filter(payouts::status.eq(PayoutStatus::Created.as_str()))
        .order((payouts::created_at_ms.asc(), payouts::payout_id.asc()))
        .limit(limit)
        .load::<PayoutRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(Payout::try_from)
        .collect()
}

/// Moves a payout from `from` to `to` with the given bank reference, reason and applied callback
/// sequence, if it is still in `from` with sequence `from_seq`, and writes the change to the
/// outbox. Returns whether this call won. Call inside a transaction, so that the change and its
/// outbox row commit together.
#[allow(clippy::too_many_arguments)]
pub fn move_status(
    conn: &mut AnyConnection,
    payout_id: &str,
    from: PayoutStatus,
    from_seq: i64,
    to: PayoutStatus,
    bank_ref: &str,
    reason: &str,
    seq: i64,
    now_ms: i64,
) -> Result<bool> {
    from.transition(to).or_else(|e| {
        // A callback that overtook the send result goes CREATED -> SENT -> final at once.
        if from == PayoutStatus::Created {
            PayoutStatus::Sent.transition(to)
        } else {
            Err(e)
        }
    })?;
    let n = diesel::update(
        payouts::table
            .filter(payouts::payout_id.eq(payout_id))
            .filter(payouts::status.eq(from.as_str()))
            .filter(payouts::callback_seq.eq(from_seq)),
    )
    .set((
        payouts::status.eq(to.as_str()),
        payouts::bank_ref.eq(bank_ref),
        payouts::reason.eq(reason),
        payouts::callback_seq.eq(seq),
        payouts::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if n != 1 {
        return Ok(false);
    }
    if is_reported(to) {
        let refund_id: String = payouts::table
            .find(payout_id)
            .select(payouts::refund_id)
            .first(conn)
            .map_err(db_err)?;
        record_update(conn, payout_id, &refund_id, to, reason, bank_ref, now_ms)?;
    }
    Ok(true)
}

#[derive(Clone, Queryable, Insertable)]
#[diesel(table_name = payout_updates)]
struct UpdateRow {
    payout_id: String,
    sequence: i64,
    refund_id: String,
    status: String,
    reason: String,
    bank_ref: String,
    created_at_ms: i64,
    delivered_at_ms: Option<i64>,
    lease_until_ms: i64,
    attempts: i32,
    last_error: String,
}

impl TryFrom<UpdateRow> for PayoutUpdate {
    type Error = Error;
    fn try_from(r: UpdateRow) -> Result<PayoutUpdate> {
        Ok(PayoutUpdate {
            status: PayoutStatus::parse(&r.status)
                .ok_or_else(|| corrupt("update status", &r.payout_id))?,
            payout_id: r.payout_id,
            refund_id: r.refund_id,
            sequence: r.sequence,
            reason: r.reason,
            bank_ref: r.bank_ref,
            created_at_ms: r.created_at_ms,
            delivered_at_ms: r.delivered_at_ms,
            attempts: r.attempts,
            last_error: r.last_error,
        })
    }
}

/// Appends a status change to the outbox with the payout's next sequence. Call in the transaction
/// of the change (whose conditional update serializes the writers of one payout).
pub fn record_update(
    conn: &mut AnyConnection,
    payout_id: &str,
    refund_id: &str,
    status: PayoutStatus,
    reason: &str,
    bank_ref: &str,
    now_ms: i64,
) -> Result<i64> {
    let last: Option<i64> = payout_updates::table
        .filter(payout_updates::payout_id.eq(payout_id))
        .select(diesel::dsl::max(payout_updates::sequence))
        .first(conn)
        .map_err(db_err)?;
    let sequence = last.unwrap_or(0) + 1;
    diesel::insert_into(payout_updates::table)
        .values(UpdateRow {
            payout_id: payout_id.to_string(),
            sequence,
            refund_id: refund_id.to_string(),
            status: status.as_str().to_string(),
            reason: reason.to_string(),
            bank_ref: bank_ref.to_string(),
            created_at_ms: now_ms,
            delivered_at_ms: None,
            lease_until_ms: 0,
            attempts: 0,
            last_error: String::new(),
        })
        .execute(conn)
        .map_err(db_err)?;
    Ok(sequence)
}

/// Every outbox row of a payout, in sequence order (delivered or not).
pub fn updates_of(conn: &mut AnyConnection, payout_id: &str) -> Result<Vec<PayoutUpdate>> {
    payout_updates::table
        .filter(payout_updates::payout_id.eq(payout_id))
        .order(payout_updates::sequence.asc())
        .load::<UpdateRow>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(PayoutUpdate::try_from)
        .collect()
}

/// The first undelivered outbox row of a payout: the only one that may be delivered next.
pub fn next_undelivered(conn: &mut AnyConnection, payout_id: &str) -> Result<Option<PayoutUpdate>> {
    payout_updates::table
        .filter(payout_updates::payout_id.eq(payout_id))
        .filter(payout_updates::delivered_at_ms.is_null())
        .order(payout_updates::sequence.asc())
        .first::<UpdateRow>(conn)
        .optional()
        .map_err(db_err)?
        .map(PayoutUpdate::try_from)
        .transpose()
}

/// Payouts with undelivered outbox rows, those waiting longest first (at most `limit`).
pub fn payouts_with_undelivered(conn: &mut AnyConnection, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<String> = payout_updates::table
        .filter(payout_updates::delivered_at_ms.is_null())
        .order((
            payout_updates::created_at_ms.asc(),
            payout_updates::payout_id.asc(),
        ))
        .select(payout_updates::payout_id)
        .limit(limit.saturating_mul(4))
        .load(conn)
        .map_err(db_err)?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .take(usize::try_from(limit).unwrap_or(0))
        .collect())
}

/// Claims an undelivered row for delivery until `lease_until_ms`, if no other deliverer holds an
/// unexpired lease on it. Returns whether this call claimed it.
pub fn claim_update(
    conn: &mut AnyConnection,
    payout_id: &str,
    sequence: i64,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<bool> {
    let n = diesel::update(
        payout_updates::table
            .filter(payout_updates::payout_id.eq(payout_id))
            .filter(payout_updates::sequence.eq(sequence))
            .filter(payout_updates::delivered_at_ms.is_null())
            .filter(payout_updates::lease_until_ms.le(now_ms)),
    )
    .set(payout_updates::lease_until_ms.eq(lease_until_ms))
    .execute(conn)
    .map_err(db_err)?;
    Ok(n == 1)
}

/// Records that the refund center answered.
pub fn mark_delivered(
    conn: &mut AnyConnection,
    payout_id: &str,
    sequence: i64,
    now_ms: i64,
) -> Result<()> {
    diesel::update(
        payout_updates::table
            .filter(payout_updates::payout_id.eq(payout_id))
            .filter(payout_updates::sequence.eq(sequence))
            .filter(payout_updates::delivered_at_ms.is_null()),
    )
    .set((
        payout_updates::delivered_at_ms.eq(Some(now_ms)),
        payout_updates::lease_until_ms.eq(0),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}

/// Gives up a claim after a failed delivery (retried by the next run).
pub fn release_update(
    conn: &mut AnyConnection,
    payout_id: &str,
    sequence: i64,
    error: &str,
) -> Result<()> {
    let error: String = error.chars().take(1024).collect();
    diesel::update(
        payout_updates::table
            .filter(payout_updates::payout_id.eq(payout_id))
            .filter(payout_updates::sequence.eq(sequence))
            .filter(payout_updates::delivered_at_ms.is_null()),
    )
    .set((
        payout_updates::lease_until_ms.eq(0),
        payout_updates::attempts.eq(payout_updates::attempts + 1),
        payout_updates::last_error.eq(error),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(())
}
