//! The sweep (资金归集): each channel's PLATFORM_IN_RESERVE — fees, coupon shares and advance
//! repayments that came back into the reserve bank account — is transferred to the platform's own
//! account, Dr OWN_FUNDS / Cr PLATFORM_IN_RESERVE ([`crate::domain::funds::sweep_lines`]).
//!
//! One sweep per channel, currency and value date, keyed `sweep:{channel}:{currency}:{date}` in
//! the ledger: a repeat of the same date moves nothing (money that came back after it waits for
//! the next date). The clearing job runs it with today's date after each recovery pass; staff run
//! it with `SweepReserves` (`tuikuan ctl ledger sweep`). The ledger refuses a sweep that would take
//! PLATFORM_IN_RESERVE below zero, so a sweep can never take customer money.

use chrono::NaiveDate;
use tuikuan_kernel::{Currency, Error, Money};
use tuikuan_proto::clearing::v1 as pb;

use super::Clearing;
use crate::domain::funds::{platform_in_reserve, sweep_lines};
use crate::store;

/// What the sweep did for one channel and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepOutcome {
    pub channel: String,
    pub currency: Currency,
    /// What moved now; `None` when this date's sweep was posted before.
    pub amount: Option<Money>,
    pub posting_id: String,
}

/// The ledger key of `channel`'s sweep in `currency` on `date`.
pub fn sweep_request_id(channel: &str, currency: Currency, date: NaiveDate) -> String {
    format!("sweep:{channel}:{}:{date}", currency.code())
}

impl Clearing {
    /// Sweeps every channel and currency the clearing center has settled payments in, for value
    /// date `date`. Channels with nothing to sweep are left out of the answer.
    pub async fn sweep_reserves(&self, date: NaiveDate) -> Result<Vec<SweepOutcome>, Error> {
        let accounts = self.db.run(store::reserve_accounts).await?;
        let mut out = Vec::new();
        for (channel, currency) in accounts {
            let request_id = sweep_request_id(&channel, currency, date);
            if let Some(posting_id) = self.accounting.posting_id(&request_id).await? {
                out.push(SweepOutcome {
                    channel,
                    currency,
                    amount: None,
                    posting_id,
                });
                continue;
            }
            let balance = self
                .accounting
                .balance(&platform_in_reserve(&channel, currency))
                .await?;
            if !balance.is_positive() {
                continue;
            }
            let description = format!("sweep of {channel}'s reserve to own funds, value {date}");
            let posted = self
                .accounting
                .post(&request_id, &description, sweep_lines(&channel, balance))
                .await?;
            out.push(SweepOutcome {
                channel,
                currency,
                amount: (!posted.replayed).then_some(balance),
                posting_id: posted.posting_id,
            });
        }
        Ok(out)
    }
}

/// The wire form of a sweep's answer.
pub fn sweeps_to_wire(sweeps: &[SweepOutcome]) -> pb::SweepReservesResponse {
    pb::SweepReservesResponse {
        sweeps: sweeps
            .iter()
            .map(|s| pb::ReserveSweep {
                channel: s.channel.clone(),
                currency: s.currency.code().to_string(),
                amount: s.amount.map(|m| m.amount_string()).unwrap_or_default(),
                posting_id: s.posting_id.clone(),
                already_swept: s.amount.is_none(),
            })
            .collect(),
    }
}

/// The sweep's value date from the wire: `YYYY-MM-DD`, or today when empty.
pub fn sweep_date_from_wire(value: &str, today: NaiveDate) -> Result<NaiveDate, Error> {
    if value.is_empty() {
        return Ok(today);
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| Error::field("date", "must be a date YYYY-MM-DD"))
}
