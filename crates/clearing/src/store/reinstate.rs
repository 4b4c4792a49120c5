//! Storage of reinstatements ([`crate::domain::reinstate`]): the move REVERSED → REINSTATING takes
//! the trade's and receivers' counters again (guarded, like a new debit, by the payment) and stores
//! each receiver's covered and receivable parts, all in one transaction.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::{Error, ErrorCode, Money};

use super::{debits, load_debit, settlement_receivers, settlements, TxError};
use crate::domain::reinstate::ReinstatePart;
use crate::domain::{Debit, DebitStatus};

diesel::table! {
    debit_reinstatements (refund_id, receiver_id) {
        refund_id -> Text,
        receiver_id -> Text,
        covered_minor -> BigInt,
        receivable_minor -> BigInt,
    }
}

/// Starts a reinstatement: REVERSED → REINSTATING with `reason`, the counters taken again, the
/// parts stored. `Ok(false)` when the debit was not REVERSED (someone else moved it). When the
/// trade's counters no longer have room (another refund took the amount meanwhile) nothing changes
/// and the answer is REFUND_EXCEEDS_PAID.
pub fn begin_reinstate(
    conn: &mut AnyConnection,
    debit: &Debit,
    parts: &[ReinstatePart],
    reason: &str,
    now_ms: i64,
) -> Result<bool, Error> {
    DebitStatus::Reversed.transition(DebitStatus::Reinstating)?;
    let refund_id = debit.refund_id.clone();
    conn.transaction::<bool, TxError, _>(|conn| {
        let n = diesel::update(
            debits::table
                .filter(debits::refund_id.eq(&refund_id))
                .filter(debits::status.eq(DebitStatus::Reversed.as_str())),
        )
        .set((
            debits::status.eq(DebitStatus::Reinstating.as_str()),
            debits::reason.eq(reason),
            debits::updated_at_ms.eq(now_ms),
        ))
        .execute(conn)?;
        if n != 1 {
            return Ok(false);
        }
        let debit = load_debit(conn, &refund_id)?
            .ok_or_else(|| Error::internal(format!("debit {refund_id} vanished")))?;
        take_again(conn, &debit, now_ms)?;
        for p in parts {
            diesel::insert_into(debit_reinstatements::table)
                .values((
                    debit_reinstatements::refund_id.eq(&refund_id),
                    debit_reinstatements::receiver_id.eq(&p.receiver_id),
                    debit_reinstatements::covered_minor.eq(p.covered.to_minor()),
                    debit_reinstatements::receivable_minor.eq(p.receivable.to_minor()),
                ))
                .execute(conn)?;
        }
        Ok(true)
    })
    .map_err(|e| e.into_error("reinstatement"))
}

/// The trade's and receivers' counters take the debit again, each within the payment.
fn take_again(conn: &mut AnyConnection, debit: &Debit, now_ms: i64) -> Result<(), TxError> {
    let amount = debit.amount.to_minor();
    let fee = debit.fee_amount.to_minor();
    let subsidy = debit.subsidy_amount.to_minor();
    let taken = diesel::update(
        settlements::table
            .filter(settlements::trade_id.eq(&debit.trade_id))
            .filter((settlements::debited_minor + amount).le(settlements::amount_minor))
            .filter((settlements::subsidy_refunded_minor + subsidy).le(settlements::subsidy_minor)),
    )
    .set((
        settlements::debited_minor.eq(settlements::debited_minor + amount),
        settlements::fee_refunded_minor.eq(settlements::fee_refunded_minor + fee),
        settlements::subsidy_refunded_minor.eq(settlements::subsidy_refunded_minor + subsidy),
        settlements::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)?;
    let mut ok = taken == 1;
    for p in &debit.parts {
        let (a, f) = (p.amount.to_minor(), p.fee.to_minor());
        let n = diesel::update(
            settlement_receivers::table
                .filter(settlement_receivers::trade_id.eq(&debit.trade_id))
                .filter(settlement_receivers::receiver_id.eq(&p.receiver_id))
                .filter(
                    (settlement_receivers::refunded_minor + a)
                        .le(settlement_receivers::amount_minor),
                ),
        )
        .set((
            settlement_receivers::refunded_minor.eq(settlement_receivers::refunded_minor + a),
            settlement_receivers::fee_refunded_minor
                .eq(settlement_receivers::fee_refunded_minor + f),
        ))
        .execute(conn)?;
        ok &= n == 1;
    }
    if !ok {
        return Err(TxError::Rule(Error::new(
            ErrorCode::RefundExceedsPaid,
            format!(
                "refund {} cannot be reinstated: other refunds of trade {} hold what is left of \
                 the payment",
                debit.refund_id, debit.trade_id
            ),
        )));
    }
    Ok(())
}

/// The stored parts of a reinstatement (empty before it started).
pub fn reinstate_parts(
    conn: &mut AnyConnection,
    debit: &Debit,
) -> Result<Vec<ReinstatePart>, Error> {
    let c = debit.currency();
    let rows: Vec<(String, i64, i64)> = debit_reinstatements::table
        .filter(debit_reinstatements::refund_id.eq(&debit.refund_id))
        .select((
            debit_reinstatements::receiver_id,
            debit_reinstatements::covered_minor,
            debit_reinstatements::receivable_minor,
        ))
        .load(conn)
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(|(receiver_id, covered, receivable)| ReinstatePart {
            receiver_id,
            covered: Money::from_minor(covered, c),
            receivable: Money::from_minor(receivable, c),
        })
        .collect())
}

/// Replaces the parts of a reinstatement that is still REINSTATING (the ledger refused the posting
/// because a balance fell meanwhile, so nothing was posted under its key). `false` when it is no
/// longer REINSTATING.
pub fn replan_reinstate(
    conn: &mut AnyConnection,
    refund_id: &str,
    parts: &[ReinstatePart],
) -> Result<bool, Error> {
    conn.transaction::<bool, TxError, _>(|conn| {
        let status: Option<String> = debits::table
            .filter(debits::refund_id.eq(refund_id))
            .select(debits::status)
            .first(conn)
            .optional()?;
        if status.as_deref() != Some(DebitStatus::Reinstating.as_str()) {
            return Ok(false);
        }
        for p in parts {
            diesel::update(
                debit_reinstatements::table
                    .filter(debit_reinstatements::refund_id.eq(refund_id))
                    .filter(debit_reinstatements::receiver_id.eq(&p.receiver_id)),
            )
            .set((
                debit_reinstatements::covered_minor.eq(p.covered.to_minor()),
                debit_reinstatements::receivable_minor.eq(p.receivable.to_minor()),
            ))
            .execute(conn)?;
        }
        Ok(true)
    })
    .map_err(|e| e.into_error("reinstatement"))
}
