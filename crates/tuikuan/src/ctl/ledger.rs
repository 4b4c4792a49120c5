//! `tuikuan ctl ledger …`: the books' staff commands.

use clap::Subcommand;
use tuikuan_proto::clearing::v1 as clr;

use super::rpc;
use crate::clients::Clients;
use crate::output::{print, Output};

#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Move each channel's PLATFORM_IN_RESERVE (fees, coupon shares, advance repayments) to the
    /// platform's own funds; once per channel, currency and value date.
    Sweep {
        /// Value date YYYY-MM-DD (default: today).
        #[arg(long, default_value = "")]
        date: String,
    },
}

pub async fn run(c: &mut Clients, action: LedgerAction, out: Output) -> anyhow::Result<()> {
    match action {
        LedgerAction::Sweep { date } => {
            let r = rpc(
                c.clearing
                    .sweep_reserves(clr::SweepReservesRequest { date })
                    .await,
                "sweep",
            )?;
            print(&r, "tuikuan.clearing.v1.SweepReservesResponse", out)
        }
    }
}
