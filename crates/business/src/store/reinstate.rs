//! Storage of a reinstatement ([`crate::domain::reinstate`]): FAILED → SUCCEEDED and the trade's
//! reservation taken again, under the same over-refund guard as a new refund.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{refunds, trades};
use crate::domain::{ChainState, MerchantRefund};

/// Moves a FAILED refund to SUCCEEDED (clearing its error) and takes its amount on the trade
/// again. Call inside a transaction: when the trade has no room left (other refunds hold the rest
/// of the payment) the answer is REFUND_EXCEEDS_PAID and the caller rolls back. `false` when the
/// refund was no longer FAILED.
pub fn reinstate_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
    now_ms: i64,
) -> Result<bool> {
    let moved = diesel::update(
        refunds::table
            .find(&refund.refund_id)
            .filter(refunds::chain_state.eq(ChainState::Failed.as_str())),
    )
    .set((
        refunds::chain_state.eq(ChainState::Succeeded.as_str()),
        refunds::error_code.eq(None::<String>),
        refunds::error_message.eq(None::<String>),
        refunds::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    if moved != 1 {
        return Ok(false);
    }
    let amount = refund.amount.to_minor();
    let taken = diesel::update(
        trades::table
            .find(&refund.trade_id)
            .filter((trades::refunded_minor + amount).le(trades::amount_minor)),
    )
    .set(trades::refunded_minor.eq(trades::refunded_minor + amount))
    .execute(conn)
    .map_err(db_err)?;
    if taken != 1 {
        return Err(Error::new(
            ErrorCode::RefundExceedsPaid,
            format!(
                "refund {} cannot be reinstated: other refunds of order {} hold what is left of the payment",
                refund.refund_id, refund.order_no
            ),
        ));
    }
    Ok(true)
}
