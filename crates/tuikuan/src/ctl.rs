//! `tuikuan ctl …`: the operations command line, for merchants' test calls and for staff.
//!
//! Every command is one or a few gRPC calls against a running deployment (addresses from the
//! configuration: `--config`, `TUIKUAN_<SERVICE>_ADDR`, or the default ports), printed as a table
//! or, with `--output json`, as proto3 JSON for scripts. Errors name the field or carry the stable
//! error code the service returned.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tuikuan_proto::accounting::v1 as acc;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::clients::Clients;
use crate::config::DeploymentConfig;
use crate::output::{print, Output};

#[derive(Debug, Args)]
pub struct Ctl {
    /// table for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Merchant refunds (the merchant API, with the merchant's API key).
    Refund {
        #[command(subcommand)]
        action: RefundAction,
    },
    /// Record a succeeded payment, as the forward payment system does.
    Payment {
        #[command(subcommand)]
        action: PaymentAction,
    },
    /// An account's balance.
    Balance {
        /// merchant_settlement, fee_income, refund_in_transit, channel_reserve, subsidy, advance, suspense.
        #[arg(long = "type")]
        account_type: String,
        /// Merchant id, channel code or "platform".
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
    },
    /// The trial balance: every account, and whether debits equal credits.
    TrialBalance,
    /// Reconciliation runs.
    Recon {
        #[command(subcommand)]
        action: ReconAction,
    },
    /// Scheduled jobs, run now.
    Run {
        #[command(subcommand)]
        job: JobAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum RefundAction {
    /// Ask for a refund (merchant API).
    Create {
        #[arg(long, env = "TUIKUAN_API_KEY")]
        api_key: String,
        #[arg(long)]
        refund_no: String,
        #[arg(long)]
        order_no: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A merchant's refund by its merchant refund number (merchant API).
    Get {
        #[arg(long, env = "TUIKUAN_API_KEY")]
        api_key: String,
        #[arg(long)]
        refund_no: String,
    },
    /// Merchant refunds (staff).
    List {
        #[arg(long, default_value = "")]
        merchant: String,
        /// received, rejected, processing, succeeded, failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The refund center's order: methods, attempts, bank status (staff).
    Show {
        #[arg(long)]
        refund_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PaymentAction {
    Record {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        order_no: String,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
        /// Milliseconds since the epoch; now when absent.
        #[arg(long)]
        paid_at_ms: Option<i64>,
        #[arg(long, default_value = "")]
        card_no: String,
        #[arg(long, default_value = "")]
        holder_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReconAction {
    /// Reconcile a channel's date against the bank's clearing file and print the report.
    Run {
        #[arg(long)]
        channel: String,
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// A run with its items.
    Show {
        #[arg(long)]
        run_id: String,
    },
    /// Recent runs.
    List {
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// The refund center's interface-refund cycle.
    InterfaceCycle,
    /// The refund center's finalisation outbox.
    Outbox,
    /// The business layer's recovery loop.
    Recovery,
    /// The bank simulator's clock tick (process due transactions, send callbacks).
    BankTick,
}

fn status_filter(s: Option<&str>) -> anyhow::Result<i32> {
    let Some(s) = s else { return Ok(0) };
    biz::RefundStatus::from_str_name(&s.to_uppercase())
        .map(|v| v as i32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--status: {s:?} is not one of received, rejected, processing, succeeded, failed"
            )
        })
}

fn account_type(s: &str) -> anyhow::Result<acc::AccountType> {
    acc::AccountType::from_str_name(&s.to_uppercase())
        .filter(|t| *t != acc::AccountType::Unspecified)
        .ok_or_else(|| anyhow::anyhow!("--type: {s:?} is not an account type"))
}

/// Turns a gRPC error into a message with its stable code.
fn rpc<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) -> anyhow::Result<T> {
    r.map(|r| r.into_inner()).map_err(|s| {
        let code = s
            .metadata()
            .get(tuikuan_proto::status::ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if code.is_empty() {
            anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
        } else {
            anyhow::anyhow!("{what}: {code}: {}", s.message())
        }
    })
}

/// Runs one `ctl` command.
pub async fn run(config: &DeploymentConfig, ctl: Ctl) -> anyhow::Result<()> {
    let mut c = Clients::connect(|s| config.peer_addr(s))?;
    let out = ctl.output;
    match ctl.command {
        CtlCommand::Refund { action } => match action {
            RefundAction::Create {
                api_key,
                refund_no,
                order_no,
                amount,
                currency,
                reason,
            } => {
                let r = rpc(
                    c.merchant(&api_key)?
                        .create_refund(biz::CreateRefundRequest {
                            merchant_refund_no: refund_no,
                            order_no,
                            amount,
                            currency,
                            reason,
                        })
                        .await,
                    "create refund",
                )?;
                print(&r, "tuikuan.business.v1.Refund", out)
            }
            RefundAction::Get { api_key, refund_no } => {
                let r = rpc(
                    c.merchant(&api_key)?
                        .get_refund(biz::GetRefundRequest {
                            merchant_refund_no: refund_no,
                        })
                        .await,
                    "get refund",
                )?;
                print(&r, "tuikuan.business.v1.Refund", out)
            }
            RefundAction::List {
                merchant,
                status,
                limit,
            } => {
                let r = rpc(
                    c.business
                        .list_refunds(biz::ListRefundsRequest {
                            merchant_id: merchant,
                            status: status_filter(status.as_deref())?,
                            limit,
                            after: String::new(),
                        })
                        .await,
                    "list refunds",
                )?;
                print(&r, "tuikuan.business.v1.ListRefundsResponse", out)
            }
            RefundAction::Show { refund_id } => {
                let r = rpc(
                    c.refund
                        .get_refund(rfd::GetRefundRequest {
                            refund_id,
                            ..Default::default()
                        })
                        .await,
                    "show refund",
                )?;
                print(&r, "tuikuan.refund.v1.RefundOrder", out)
            }
        },
        CtlCommand::Payment {
            action:
                PaymentAction::Record {
                    merchant,
                    order_no,
                    channel,
                    amount,
                    currency,
                    paid_at_ms,
                    card_no,
                    holder_name,
                },
        } => {
            let paid_at_ms = paid_at_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            let t = rpc(
                c.business
                    .record_payment(biz::RecordPaymentRequest {
                        merchant_id: merchant,
                        order_no,
                        channel,
                        amount,
                        currency,
                        paid_at_ms,
                        payer_card_no: card_no,
                        payer_name: holder_name,
                    })
                    .await,
                "record payment",
            )?;
            print(&t, "tuikuan.business.v1.Trade", out)
        }
        CtlCommand::Balance {
            account_type: t,
            owner,
            currency,
        } => {
            let b = rpc(
                c.accounting
                    .get_balance(acc::GetBalanceRequest {
                        account: Some(acc::Account {
                            r#type: account_type(&t)? as i32,
                            owner,
                            currency,
                        }),
                    })
                    .await,
                "balance",
            )?;
            print(&b, "tuikuan.accounting.v1.Balance", out)
        }
        CtlCommand::TrialBalance => {
            let tb = rpc(
                c.accounting
                    .trial_balance(acc::TrialBalanceRequest {})
                    .await,
                "trial balance",
            )?;
            print(&tb, "tuikuan.accounting.v1.TrialBalanceResponse", out)
        }
        CtlCommand::Recon { action } => match action {
            ReconAction::Run { channel, date } => {
                let spinner = spinner(out, format!("reconciling {channel} {date}"));
                let r = rpc(
                    c.reconciliation
                        .run_reconciliation(rec::RunReconciliationRequest {
                            channel,
                            date,
                            ..Default::default()
                        })
                        .await,
                    "reconciliation",
                );
                spinner.finish_and_clear();
                print(&r?, "tuikuan.reconciliation.v1.ReconciliationRun", out)
            }
            ReconAction::Show { run_id } => {
                let r = rpc(
                    c.reconciliation
                        .get_run(rec::GetRunRequest { run_id })
                        .await,
                    "show run",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ReconciliationRun", out)
            }
            ReconAction::List { channel, limit } => {
                let r = rpc(
                    c.reconciliation
                        .list_runs(rec::ListRunsRequest { channel, limit })
                        .await,
                    "list runs",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ListRunsResponse", out)
            }
        },
        CtlCommand::Run { job } => match job {
            JobAction::InterfaceCycle => {
                let r = rpc(
                    c.refund
                        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
                        .await,
                    "interface cycle",
                )?;
                print(&r, "tuikuan.refund.v1.CycleReport", out)
            }
            JobAction::Outbox => {
                let r = rpc(
                    c.refund.run_outbox(rfd::RunOutboxRequest {}).await,
                    "outbox",
                )?;
                print(&r, "tuikuan.refund.v1.OutboxReport", out)
            }
            JobAction::Recovery => {
                let r = rpc(
                    c.business.run_recovery(biz::RunRecoveryRequest {}).await,
                    "recovery",
                )?;
                print(&r, "tuikuan.business.v1.RecoveryReport", out)
            }
            JobAction::BankTick => {
                let r = rpc(
                    c.bank.tick(tuikuan_proto::bank::v1::TickRequest {}).await,
                    "bank tick",
                )?;
                print(&r, "tuikuan.bank.v1.TickResponse", out)
            }
        },
    }
}

/// A spinner on stderr for people; nothing for scripts.
fn spinner(out: Output, message: String) -> indicatif::ProgressBar {
    if out == Output::Json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(message);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Reads a file for upload, naming it in the error.
pub fn read_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--file: cannot read {}", path.display()))
}
