//! The simulator's statement of a channel's reserve account for one business date (UTC+8), in the
//! ledger's statement format (`tuikuan_kernel::statement`, `docs/ledger.md`): every movement the
//! bank booked on the account that day.
//!
//! - OUT: each refund, payout and spreadsheet row paid (SUCCEEDED, or RETURNED later) that
//!   completed on the date, for its amount, under its bank reference;
//! - IN: each payout the receiving bank returned (退票) on the date, under the same reference.
//!
//! Failed transactions moved no money and are not on it. Payments collected from customers are
//! not either: they reach the reserve through the payment channel's settlement, which the
//! simulator does not model (the reserve report explains them by their posting's reason).

use chrono::NaiveDate;
use tuikuan_kernel::statement::{self, Direction, StatementRow};
use tuikuan_kernel::Result;

use super::Simulator;
use crate::domain::{BankTx, TxStatus};
use crate::store;

/// The statement rows of `completed` (transactions completed on `date`) and `returned`
/// (transactions returned on `date`), in that order.
pub fn statement_rows(
    completed: &[BankTx],
    returned: &[BankTx],
    date: NaiveDate,
) -> Vec<StatementRow> {
    let paid = completed
        .iter()
        .filter(|t| matches!(t.status, TxStatus::Succeeded | TxStatus::Returned))
        .map(|t| (t, Direction::Out));
    let back = returned.iter().map(|t| (t, Direction::In));
    paid.chain(back)
        .map(|(t, direction)| StatementRow {
            date,
            reference: t.bank_ref.clone(),
            direction,
            amount: t.amount,
        })
        .collect()
}

impl Simulator {
    /// The statement (CSV `tuikuan-statement-v1`) of `channel`'s reserve account for `date`,
    /// completing due work first so that it does not depend on whether a tick ran.
    pub async fn build_statement(&self, channel: &str, date: NaiveDate) -> Result<String> {
        let (start, end) = self.settled_day(channel, date).await?;
        let ch = channel.to_string();
        let (completed, returned) = self
            .db
            .run(move |c| {
                Ok((
                    store::completed_between(c, &ch, start, end)?,
                    store::returned_between(c, &ch, start, end)?,
                ))
            })
            .await?;
        statement::render(&statement_rows(&completed, &returned, date))
    }
}
