//! Storage of a reopen ([`crate::domain::reopen`]): SUCCEEDED → ACCEPTED, guarded; the trade's
//! reservation is held in both states and does not move.

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::Result;

use super::refunds;
use crate::domain::{ChainState, MerchantRefund};

/// Moves a SUCCEEDED refund back to ACCEPTED (PROCESSING). `false` when it was no longer
/// SUCCEEDED.
pub fn reopen_refund(
    conn: &mut AnyConnection,
    refund: &MerchantRefund,
    now_ms: i64,
) -> Result<bool> {
    let moved = diesel::update(
        refunds::table
            .find(&refund.refund_id)
            .filter(refunds::chain_state.eq(ChainState::Succeeded.as_str())),
    )
    .set((
        refunds::chain_state.eq(ChainState::Accepted.as_str()),
        refunds::updated_at_ms.eq(now_ms),
    ))
    .execute(conn)
    .map_err(db_err)?;
    Ok(moved == 1)
}
