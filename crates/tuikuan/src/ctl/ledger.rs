//! `tuikuan ctl ledger …`: the books' staff commands.

use clap::Subcommand;
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::clearing::v1 as clr;

use super::{account_type, rpc};
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
    /// Postings touching an account, optionally within a range of value dates.
    Postings {
        /// The account as TYPE:owner:CURRENCY (e.g. CHANNEL_RESERVE:wx:CNY); all postings when
        /// left out.
        #[arg(long, default_value = "")]
        account: String,
        /// First value date YYYY-MM-DD (inclusive).
        #[arg(long, default_value = "")]
        from: String,
        /// Last value date YYYY-MM-DD (inclusive).
        #[arg(long, default_value = "")]
        to: String,
        /// Page size (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after this posting id.
        #[arg(long, default_value = "")]
        after: String,
    },
    /// An account's balance on its normal side, now or as of a value date (from the journal).
    Balance {
        /// TYPE:owner:CURRENCY.
        #[arg(long)]
        account: String,
        /// YYYY-MM-DD: postings with value dates up to and including it.
        #[arg(long, default_value = "")]
        as_of: String,
    },
    /// The trial balance summed from the journal, each account on its normal side; as of a value
    /// date, or now (then also compared with the running totals).
    TrialBalance {
        #[arg(long, default_value = "")]
        as_of: String,
    },
    /// The reserve report (备付金对账): the ledger's movements of a channel's reserve account on a
    /// value date beside the bank's statement, with every difference.
    ReserveReport {
        #[arg(long)]
        channel: String,
        /// Value date YYYY-MM-DD.
        #[arg(long)]
        date: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
        /// The bank's statement (CSV tuikuan-statement-v1); default: ask the bank simulator.
        #[arg(long)]
        statement: Option<std::path::PathBuf>,
    },
    /// Suspense items (挂账明细): list, clear against a bank row, write off (four eyes).
    Suspense {
        #[command(subcommand)]
        action: SuspenseAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuspenseAction {
    /// Items with direction, amount, what remains, source and age.
    List {
        #[arg(long, default_value = "")]
        channel: String,
        /// OPEN, CLEARED or WRITTEN_OFF.
        #[arg(long, default_value = "")]
        status: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "")]
        after: String,
    },
    /// Clear what remains of an open item against the bank row that settled it (finance).
    Clear {
        #[arg(long)]
        item: String,
        /// The bank row's reference.
        #[arg(long)]
        bank_reference: String,
        /// The bank row's value date YYYY-MM-DD (default: today).
        #[arg(long, default_value = "")]
        value_date: String,
        /// Items owed to a merchant: the merchant credited.
        #[arg(long, default_value = "")]
        merchant: String,
        #[arg(long)]
        reason: String,
    },
    /// Propose writing off what remains of an open item; a second finance operator approves it
    /// (`tuikuan ctl proposals approve --id accounting-…`).
    WriteOff {
        #[arg(long)]
        item: String,
        #[arg(long)]
        reason: String,
    },
}

/// Parses `TYPE:owner:CURRENCY`.
fn account(value: &str) -> anyhow::Result<acc::Account> {
    let mut parts = value.splitn(3, ':');
    let (Some(t), Some(owner), Some(currency)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("--account: {value:?} is not TYPE:owner:CURRENCY");
    };
    Ok(acc::Account {
        r#type: account_type(t)? as i32,
        owner: owner.to_string(),
        currency: currency.to_string(),
    })
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
        LedgerAction::Postings {
            account: a,
            from,
            to,
            limit,
            after,
        } => {
            let account = if a.is_empty() {
                None
            } else {
                Some(account(&a)?)
            };
            let r = rpc(
                c.accounting
                    .list_postings(acc::ListPostingsRequest {
                        account,
                        limit,
                        after,
                        from_date: from,
                        to_date: to,
                    })
                    .await,
                "postings",
            )?;
            print(&r, "tuikuan.accounting.v1.ListPostingsResponse", out)
        }
        LedgerAction::Balance { account: a, as_of } => {
            let r = rpc(
                c.accounting
                    .get_balance(acc::GetBalanceRequest {
                        account: Some(account(&a)?),
                        as_of,
                    })
                    .await,
                "balance",
            )?;
            print(&r, "tuikuan.accounting.v1.Balance", out)
        }
        LedgerAction::TrialBalance { as_of } => {
            let r = rpc(
                c.accounting
                    .trial_balance(acc::TrialBalanceRequest { as_of })
                    .await,
                "trial balance",
            )?;
            print(&r, "tuikuan.accounting.v1.TrialBalanceResponse", out)
        }
        LedgerAction::Suspense { action } => suspense(c, action, out).await,
        LedgerAction::ReserveReport {
            channel,
            date,
            currency,
            statement,
        } => {
            let statement = match statement {
                Some(path) => super::read_file(&path)?,
                None => {
                    rpc(
                        c.bank
                            .get_statement(bank::GetStatementRequest {
                                channel: channel.clone(),
                                date: date.clone(),
                            })
                            .await,
                        "bank statement",
                    )?
                    .content
                }
            };
            let r = rpc(
                c.accounting
                    .reserve_report(acc::ReserveReportRequest {
                        channel,
                        currency,
                        date,
                        statement,
                    })
                    .await,
                "reserve report",
            )?;
            print(&r, "tuikuan.accounting.v1.ReserveReportResponse", out)
        }
    }
}

async fn suspense(c: &mut Clients, action: SuspenseAction, out: Output) -> anyhow::Result<()> {
    match action {
        SuspenseAction::List {
            channel,
            status,
            limit,
            after,
        } => {
            let r = rpc(
                c.accounting
                    .list_suspense_items(acc::ListSuspenseItemsRequest {
                        channel,
                        status,
                        limit,
                        after,
                    })
                    .await,
                "suspense items",
            )?;
            print(&r, "tuikuan.accounting.v1.ListSuspenseItemsResponse", out)
        }
        SuspenseAction::Clear {
            item,
            bank_reference,
            value_date,
            merchant,
            reason,
        } => {
            let r = rpc(
                c.accounting
                    .clear_suspense_item(acc::ClearSuspenseItemRequest {
                        item_id: item,
                        bank_reference,
                        value_date,
                        merchant_id: merchant,
                        reason,
                    })
                    .await,
                "clear suspense item",
            )?;
            print(&r, "tuikuan.accounting.v1.SuspenseItem", out)
        }
        SuspenseAction::WriteOff { item, reason } => {
            let r = rpc(
                c.accounting
                    .write_off_suspense_item(acc::WriteOffSuspenseItemRequest {
                        item_id: item,
                        reason,
                    })
                    .await,
                "write off suspense item",
            )?;
            print(&r, "tuikuan.staff.v1.Proposal", out)
        }
    }
}
