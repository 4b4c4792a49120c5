//! The payout center's storage: the `payouts` table and repository functions over domain types.
//!
//! Every status change is a conditional update on the status (and, for callbacks, the applied
//! sequence) the caller read, so concurrent cycles and callbacks never move a payout twice or
//! backwards.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use crate::domain::{CardNumber, Payout, PayoutStatus};

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
/// sequence, if it is still in `from` with sequence `from_seq`. Returns whether this call won.
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
    Ok(n == 1)
}
