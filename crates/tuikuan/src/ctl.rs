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

mod ledger;

#[derive(Debug, Args)]
pub struct Ctl {
    /// table for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Where `ctl login` keeps the operator's session (default ~/.config/tuikuan/session;
    /// `TUIKUAN_TOKEN` overrides the session with a token).
    #[arg(long, env = "TUIKUAN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
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
    /// The books' staff commands (the sweep of the platform's money out of the reserves).
    Ledger {
        #[command(subcommand)]
        action: ledger::LedgerAction,
    },
    /// Reconciliation runs.
    Recon {
        #[command(subcommand)]
        action: ReconAction,
    },
    /// Risk holds (风控拦截): list, release, reject; risk rules.
    Hold {
        #[command(subcommand)]
        action: HoldAction,
    },
    /// Manual controls on a refund: suspend, resume, terminate, force-fail, confirm; the audit trail.
    Control {
        #[command(subcommand)]
        action: ControlAction,
    },
    /// Raise an error refund (差错退款) of a duplicate payment or a payment past its order's
    /// validity: full amount only. Four eyes: proposes it; a second operator approves.
    ErrorRefund {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        order_no: String,
        /// duplicate or expired.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
        #[arg(long)]
        reason: String,
    },
    /// Merchant notifications: set a merchant's URL and secret, list a refund's deliveries.
    Notify {
        #[command(subcommand)]
        action: NotifyAction,
    },
    /// The daily spreadsheets of file-upload and offline refunds.
    Batch {
        #[command(subcommand)]
        action: BatchAction,
    },
    /// Scheduled jobs, run now.
    Run {
        #[command(subcommand)]
        job: JobAction,
    },
    /// Log in as an operator; the token is kept for later commands (see docs/security.md).
    Login {
        #[arg(long)]
        name: String,
        /// Read the password from standard input instead of asking at the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Print the token instead of keeping it (`export TUIKUAN_TOKEN=$(…)`).
        #[arg(long)]
        print: bool,
    },
    /// Forget the kept session.
    Logout,
    /// The operator the session belongs to.
    Whoami,
    /// Operators and their roles (admin); your own password.
    Operator {
        #[command(subcommand)]
        action: crate::ctl_staff::OperatorAction,
    },
    /// Four-eyes proposals of every service: list, show, approve, reject, cancel.
    Proposals {
        #[command(subcommand)]
        action: crate::ctl_staff::ProposalAction,
    },
    /// A service's audit trail of staff actions (who, what, when, before -> after, why).
    Trail {
        /// accounting, clearing, business, refund, payout, reconciliation or bank.
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "")]
        subject: String,
        #[arg(long = "by", default_value = "")]
        by: String,
        #[arg(long, default_value = "")]
        action: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
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
    /// Reconcile a channel's date against the bank's clearing file (fetched from the bank, or
    /// the file given with --file) and print the report.
    Run {
        #[arg(long)]
        channel: String,
        /// Business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// A clearing file to upload instead of fetching the bank's.
        #[arg(long)]
        file: Option<PathBuf>,
        /// wechat, unionpay, alipay or csv (default: the channel's configured format).
        #[arg(long, default_value = "")]
        format: String,
        /// gbk or utf-8; detected when absent.
        #[arg(long, default_value = "")]
        encoding: String,
    },
    /// Read a bank's file offline (no service needed) and print what a run would read: format,
    /// layout, encoding, every row, the summary check and any error with its line and field.
    /// Exits non-zero if a run would refuse the file.
    Inspect {
        #[arg(long)]
        file: PathBuf,
        /// auto, wechat, unionpay, alipay or csv.
        #[arg(long, default_value = "auto")]
        format: String,
        /// auto, utf-8 or gbk.
        #[arg(long, default_value = "auto")]
        encoding: String,
        /// The file's business date, YYYY-MM-DD (gives ZM times their year; today by default).
        #[arg(long, default_value = "")]
        date: String,
    },
    /// Open (or all) discrepancies (差错).
    Discrepancies {
        /// open, resolving, resolved; all when absent.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Resolve a discrepancy: the bank wins (the platform corrects itself) or the platform wins.
    /// Four eyes: proposes it; a second finance operator approves.
    Resolve {
        #[arg(long)]
        id: String,
        /// bank-wins or platform-wins.
        #[arg(long)]
        resolution: String,
        #[arg(long)]
        reason: String,
        /// The bank's statement reference (required for platform-wins on a refund the bank never
        /// reported: the refund is then completed).
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// The day's summary for a channel.
    Summary {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        date: String,
    },
    /// Export a run's report as CSV or .xlsx.
    Export {
        #[arg(long, default_value = "")]
        run_id: String,
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, default_value = "")]
        date: String,
        /// csv or xlsx.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Refunds waiting in suspense for the bank's file.
    Suspense {
        #[arg(long, default_value = "")]
        channel: String,
    },
    /// The audit trail of discrepancy resolutions and superseded runs.
    Audit {
        #[arg(long, default_value = "")]
        subject: String,
    },
    /// A run with its items.
    Show {
        #[arg(long)]
        run_id: String,
    },
    /// Recent runs; with --all, also the refused files (who, when, the error's line and field).
    List {
        #[arg(long, default_value = "")]
        channel: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldAction {
    /// Refunds held for review.
    List,
    /// Let a held refund go on.
    Release {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Refuse a held refund: it fails and the money goes back to the merchant.
    Reject {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    /// The risk rules.
    Rules,
    /// Add or change a rule: amount-above, merchant-velocity, card-velocity or soon-after-payment.
    SetRule {
        #[arg(long)]
        rule_id: String,
        #[arg(long)]
        kind: String,
        /// Only this channel (all when empty).
        #[arg(long, default_value = "")]
        channel: String,
        /// amount-above: the threshold.
        #[arg(long, default_value = "")]
        threshold: String,
        #[arg(long, default_value = "CNY")]
        currency: String,
        /// velocity: more than this many ...
        #[arg(long, default_value_t = 0)]
        max_count: u32,
        /// ... within this many minutes (also soon-after-payment's window).
        #[arg(long, default_value_t = 0)]
        window_minutes: u32,
        /// Switch the rule off.
        #[arg(long)]
        disabled: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ControlAction {
    /// 挂起: stop automatic processing of a refund not yet submitted (ops).
    Suspend {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    Resume {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    /// 终止: end a refund before submission; the money goes back to the merchant (ops).
    Terminate {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    /// 强制失败: finance decides the refund failed; the money goes back to the merchant (finance).
    /// Four eyes: proposes it; a second finance operator approves (`ctl proposals approve`).
    ForceFail {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
    },
    /// 恢复成功: a FAILED refund the bank paid after all becomes SUCCEEDED; the merchant gives the
    /// money again (finance; the bank's statement reference is required). Four eyes: proposes it;
    /// a second finance operator approves (`ctl proposals approve`).
    Reinstate {
        #[arg(long)]
        refund_id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        evidence: String,
    },
    /// Confirm the outcome of an offline or file-upload refund (finance; ops may confirm success).
    /// Four eyes: proposes it; a second operator approves (`ctl proposals approve`).
    Confirm {
        #[arg(long)]
        refund_id: String,
        /// succeeded or failed.
        #[arg(long)]
        status: String,
        #[arg(long)]
        reason: String,
        /// Where the bank shows it paid (a statement reference; required for succeeded).
        #[arg(long, default_value = "")]
        evidence: String,
    },
    /// The audit trail of manual actions and hold decisions.
    Audit {
        #[arg(long, default_value = "")]
        refund_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyAction {
    /// Where a merchant is told of final results, and the secret signing the messages.
    Set {
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        url: String,
        #[arg(long, env = "TUIKUAN_NOTIFY_SECRET")]
        secret: String,
    },
    /// The notifications of a refund with every delivery attempt.
    List {
        #[arg(long)]
        refund_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchAction {
    /// Generate the day's batches (working days only).
    Generate {
        /// YYYY-MM-DD; today when absent.
        #[arg(long, default_value = "")]
        date: String,
    },
    List {
        #[arg(long, default_value = "")]
        date: String,
    },
    /// A batch with its rows.
    Show {
        #[arg(long)]
        batch_id: String,
    },
    /// Save a batch's .xlsx.
    Download {
        #[arg(long)]
        batch_id: String,
        /// A file or a directory (the batch's own file name is used in a directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Mark a batch uploaded to the bank's site (file-upload) or sent (offline).
    Mark {
        #[arg(long)]
        batch_id: String,
        /// uploaded or sent.
        #[arg(long)]
        status: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Mark rows failed, from the bank's result file or a staff confirmation. Four eyes:
    /// proposes it; a second finance operator approves.
    FailRows {
        #[arg(long)]
        batch_id: String,
        /// ROW_ID=REASON, repeatable.
        #[arg(long = "row", required = true)]
        rows: Vec<String>,
        #[arg(long, default_value = "staff confirmation")]
        source: String,
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
    /// The business layer's merchant notifications.
    Notifications,
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

pub(crate) fn account_type(s: &str) -> anyhow::Result<acc::AccountType> {
    acc::AccountType::from_str_name(&s.to_uppercase())
        .filter(|t| *t != acc::AccountType::Unspecified)
        .ok_or_else(|| anyhow::anyhow!("--type: {s:?} is not an account type"))
}

pub(crate) use crate::ctl_staff::proposed;

/// Turns a gRPC error into a message with its stable code.
pub(crate) fn rpc<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) -> anyhow::Result<T> {
    r.map(|r| r.into_inner())
        .map_err(|s| status_error(&s, what))
}

/// A gRPC error as a message with its stable code.
pub(crate) fn status_error(s: &tonic::Status, what: &str) -> anyhow::Error {
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
}

/// Runs one `ctl` command.
pub async fn run(config: &DeploymentConfig, ctl: Ctl) -> anyhow::Result<()> {
    if let CtlCommand::Recon {
        action:
            ReconAction::Inspect {
                file,
                format,
                encoding,
                date,
            },
    } = &ctl.command
    {
        // Offline: no service is asked anything.
        return crate::inspect::run(file, format, encoding, date, ctl.output);
    }
    let session_file = crate::session::session_path(ctl.token_file.as_deref())?;
    let mut c = Clients::for_deployment(config)?;
    let out = ctl.output;
    let needs_session = !matches!(ctl.command, CtlCommand::Login { .. } | CtlCommand::Logout);
    if needs_session {
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(token) = crate::session::current_token(&session_file, now_ms)? {
            c = c.with_token(&token)?;
        }
    }
    match ctl.command {
        CtlCommand::Login {
            name,
            password_stdin,
            print,
        } => crate::ctl_staff::login(&mut c, name, password_stdin, print, &session_file).await,
        CtlCommand::Logout => crate::ctl_staff::logout(&session_file),
        CtlCommand::Whoami => crate::ctl_staff::whoami(&mut c, out).await,
        CtlCommand::Operator { action } => crate::ctl_staff::operator(&mut c, action, out).await,
        CtlCommand::Proposals { action } => crate::ctl_staff::proposals(&mut c, action, out).await,
        CtlCommand::Trail {
            service,
            subject,
            by,
            action,
            limit,
        } => {
            let request = tuikuan_proto::staff::v1::ListAuditRequest {
                subject,
                operator: by,
                action,
                limit,
                before: String::new(),
            };
            crate::ctl_staff::trail(&mut c, &service, request, out).await
        }
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
                            ..Default::default()
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
                        ..Default::default()
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
                        ..Default::default()
                    })
                    .await,
                "balance",
            )?;
            print(&b, "tuikuan.accounting.v1.Balance", out)
        }
        CtlCommand::TrialBalance => {
            let tb = rpc(
                c.accounting
                    .trial_balance(acc::TrialBalanceRequest::default())
                    .await,
                "trial balance",
            )?;
            print(&tb, "tuikuan.accounting.v1.TrialBalanceResponse", out)
        }
        CtlCommand::Recon { action } => match action {
            ReconAction::Run {
                channel,
                date,
                file,
                format,
                encoding,
            } => {
                let spinner = spinner(out, format!("reconciling {channel} {date}"));
                let r = match file {
                    Some(path) => {
                        let content = read_file(&path)?;
                        spinner.set_message(format!(
                            "reconciling {channel} {date}: {} ({} bytes)",
                            path.display(),
                            content.len()
                        ));
                        let request = tonic::Request::new(rec::RunReconciliationFileRequest {
                            channel,
                            date,
                            format,
                            encoding,
                            content,
                            sha256: String::new(),
                        });
                        rpc(
                            c.reconciliation.run_reconciliation_file(request).await,
                            "reconciliation",
                        )
                    }
                    None => rpc(
                        c.reconciliation
                            .run_reconciliation(rec::RunReconciliationRequest {
                                channel,
                                date,
                                format,
                                encoding,
                            })
                            .await,
                        "reconciliation",
                    ),
                };
                spinner.finish_and_clear();
                print(&r?, "tuikuan.reconciliation.v1.ReconciliationRun", out)
            }
            ReconAction::Discrepancies {
                status,
                channel,
                limit,
            } => {
                let status = match status.as_deref() {
                    None => 0,
                    Some(s) => rec::DiscrepancyStatus::from_str_name(&s.to_uppercase())
                        .map(|v| v as i32)
                        .ok_or_else(|| {
                            anyhow::anyhow!("--status: {s:?} is not open, resolving or resolved")
                        })?,
                };
                let r = rpc(
                    c.reconciliation
                        .list_discrepancies(rec::ListDiscrepanciesRequest {
                            status,
                            channel,
                            severity: 0,
                            limit,
                            after: String::new(),
                        })
                        .await,
                    "list discrepancies",
                )?;
                print(
                    &r,
                    "tuikuan.reconciliation.v1.ListDiscrepanciesResponse",
                    out,
                )
            }
            ReconAction::Resolve {
                id,
                resolution,
                reason,
                evidence,
            } => {
                let resolution = match resolution.as_str() {
                    "bank-wins" | "bank_wins" => rec::Resolution::BankWins,
                    "platform-wins" | "platform_wins" => rec::Resolution::PlatformWins,
                    other => {
                        anyhow::bail!("--resolution: {other:?} is not bank-wins or platform-wins")
                    }
                };
                let r = proposed(
                    c.reconciliation
                        .resolve_discrepancy(rec::ResolveDiscrepancyRequest {
                            discrepancy_id: id,
                            resolution: resolution as i32,
                            operator: String::new(),
                            reason,
                            evidence,
                        })
                        .await,
                    "resolve discrepancy",
                )?;
                print(&r, "tuikuan.reconciliation.v1.Discrepancy", out)
            }
            ReconAction::Summary { channel, date } => {
                let r = rpc(
                    c.reconciliation
                        .daily_summary(rec::DailySummaryRequest { channel, date })
                        .await,
                    "daily summary",
                )?;
                print(&r, "tuikuan.reconciliation.v1.DailySummaryResponse", out)
            }
            ReconAction::Export {
                run_id,
                channel,
                date,
                format,
                out: path,
            } => {
                let r = rpc(
                    c.reconciliation
                        .export_report(rec::ExportReportRequest {
                            run_id,
                            channel,
                            date,
                            format,
                        })
                        .await,
                    "export report",
                )?;
                let path = if path.is_dir() {
                    path.join(&r.file_name)
                } else {
                    path
                };
                std::fs::write(&path, &r.content)
                    .with_context(|| format!("--out: cannot write {}", path.display()))?;
                crate::outln!("wrote {} ({} bytes)", path.display(), r.content.len());
                Ok(())
            }
            ReconAction::Suspense { channel } => {
                let r = rpc(
                    c.reconciliation
                        .list_suspense(rec::ListSuspenseRequest {
                            channel,
                            status: String::new(),
                            limit: 1000,
                        })
                        .await,
                    "list suspense",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ListSuspenseResponse", out)
            }
            ReconAction::Audit { subject } => {
                let r = rpc(
                    c.reconciliation
                        .list_audit(rec::ListAuditRequest {
                            subject_id: subject,
                            limit: 1000,
                        })
                        .await,
                    "audit trail",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ListAuditResponse", out)
            }
            ReconAction::Inspect { .. } => Ok(()),
            ReconAction::Show { run_id } => {
                let r = rpc(
                    c.reconciliation
                        .get_run(rec::GetRunRequest { run_id })
                        .await,
                    "show run",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ReconciliationRun", out)
            }
            ReconAction::List {
                channel,
                limit,
                all,
            } => {
                let r = rpc(
                    c.reconciliation
                        .list_runs(rec::ListRunsRequest {
                            channel,
                            limit,
                            include_rejected: all,
                        })
                        .await,
                    "list runs",
                )?;
                print(&r, "tuikuan.reconciliation.v1.ListRunsResponse", out)
            }
        },
        CtlCommand::Batch { action } => batch(&mut c, action, out).await,
        CtlCommand::Hold { action } => hold(&mut c, action, out).await,
        CtlCommand::Ledger { action } => ledger::run(&mut c, action, out).await,
        CtlCommand::Control { action } => control(&mut c, action, out).await,
        CtlCommand::ErrorRefund {
            merchant,
            order_no,
            kind,
            amount,
            currency,
            reason,
        } => {
            let kind = match kind.as_str() {
                "duplicate" => biz::RefundKind::DuplicatePayment,
                "expired" => biz::RefundKind::ExpiredOrder,
                other => anyhow::bail!("--kind: {other:?} is not duplicate or expired"),
            };
            let request = biz::CreateErrorRefundRequest {
                merchant_id: merchant,
                order_no,
                kind: kind as i32,
                amount,
                currency,
                reason,
                operator: String::new(),
            };
            let r = proposed(
                c.business.create_error_refund(request).await,
                "error refund",
            )?;
            print(&r, "tuikuan.business.v1.Refund", out)
        }
        CtlCommand::Notify { action } => match action {
            NotifyAction::Set {
                merchant,
                url,
                secret,
            } => {
                let r = rpc(
                    c.business
                        .set_notify_config(biz::SetNotifyConfigRequest {
                            merchant_id: merchant,
                            notify_url: url,
                            notify_secret: secret,
                        })
                        .await,
                    "notify config",
                )?;
                print(&r, "tuikuan.business.v1.NotifyConfig", out)
            }
            NotifyAction::List { refund_id } => {
                let r = rpc(
                    c.business
                        .list_notifications(biz::ListNotificationsRequest { refund_id })
                        .await,
                    "notifications",
                )?;
                print(&r, "tuikuan.business.v1.ListNotificationsResponse", out)
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
            JobAction::Notifications => {
                let r = rpc(
                    c.business
                        .run_notifications(biz::RunNotificationsRequest {})
                        .await,
                    "notifications",
                )?;
                print(&r, "tuikuan.business.v1.NotificationReport", out)
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

async fn hold(c: &mut Clients, action: HoldAction, out: Output) -> anyhow::Result<()> {
    let ctl_req = |refund_id: String, reason: String| rfd::ControlRequest { refund_id, reason };
    match action {
        HoldAction::List => {
            let r = rpc(
                c.control
                    .list_held(rfd::ListHeldRequest {
                        limit: 1000,
                        after: String::new(),
                    })
                    .await,
                "list held",
            )?;
            print(&r, "tuikuan.refund.v1.ListRefundsResponse", out)
        }
        HoldAction::Release { refund_id, reason } => {
            let r = rpc(
                c.control.release_hold(ctl_req(refund_id, reason)).await,
                "release hold",
            )?;
            print(&r, "tuikuan.refund.v1.RefundOrder", out)
        }
        HoldAction::Reject { refund_id, reason } => {
            let r = rpc(
                c.control.reject_hold(ctl_req(refund_id, reason)).await,
                "reject hold",
            )?;
            print(&r, "tuikuan.refund.v1.RefundOrder", out)
        }
        HoldAction::Rules => {
            let r = rpc(
                c.control
                    .list_risk_rules(rfd::ListRiskRulesRequest {})
                    .await,
                "risk rules",
            )?;
            print(&r, "tuikuan.refund.v1.ListRiskRulesResponse", out)
        }
        HoldAction::SetRule {
            rule_id,
            kind,
            channel,
            threshold,
            currency,
            max_count,
            window_minutes,
            disabled,
        } => {
            let kind = rfd::RiskRuleKind::from_str_name(&kind.replace('-', "_").to_uppercase())
                .filter(|k| *k != rfd::RiskRuleKind::Unspecified)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--kind: {kind:?} is not amount-above, merchant-velocity, card-velocity or soon-after-payment"
                    )
                })?;
            let rule = rfd::RiskRule {
                rule_id,
                kind: kind as i32,
                channel,
                threshold_amount: threshold,
                currency,
                max_count,
                window_minutes,
                enabled: !disabled,
                ..Default::default()
            };
            let r = rpc(c.control.upsert_risk_rule(rule).await, "set risk rule")?;
            print(&r, "tuikuan.refund.v1.RiskRule", out)
        }
    }
}

async fn control(c: &mut Clients, action: ControlAction, out: Output) -> anyhow::Result<()> {
    let req = |refund_id: String, reason: String| rfd::ControlRequest { refund_id, reason };
    let order = match action {
        ControlAction::Suspend { refund_id, reason } => {
            rpc(c.control.suspend(req(refund_id, reason)).await, "suspend")?
        }
        ControlAction::Resume { refund_id, reason } => {
            rpc(c.control.resume(req(refund_id, reason)).await, "resume")?
        }
        ControlAction::Terminate { refund_id, reason } => rpc(
            c.control.terminate(req(refund_id, reason)).await,
            "terminate",
        )?,
        ControlAction::ForceFail { refund_id, reason } => proposed(
            c.control.force_fail(req(refund_id, reason)).await,
            "force-fail",
        )?,
        ControlAction::Reinstate {
            refund_id,
            reason,
            evidence,
        } => proposed(
            c.control
                .reinstate(rfd::ReinstateRequest {
                    refund_id,
                    reason,
                    evidence,
                    bank_reference_id: String::new(),
                })
                .await,
            "reinstate",
        )?,
        ControlAction::Confirm {
            refund_id,
            status,
            reason,
            evidence,
        } => {
            let status = match status.as_str() {
                "succeeded" => rfd::RefundStatus::Succeeded,
                "failed" => rfd::RefundStatus::Failed,
                other => anyhow::bail!("--status: {other:?} is not succeeded or failed"),
            };
            proposed(
                c.control
                    .confirm_outcome(rfd::ConfirmOutcomeRequest {
                        refund_id,
                        status: status as i32,
                        reason,
                        bank_reference_id: String::new(),
                        evidence,
                    })
                    .await,
                "confirm",
            )?
        }
        ControlAction::Audit { refund_id } => {
            let r = rpc(
                c.control
                    .list_audit(rfd::ListAuditRequest {
                        refund_id,
                        limit: 1000,
                        after: String::new(),
                    })
                    .await,
                "audit trail",
            )?;
            return print(&r, "tuikuan.refund.v1.ListAuditResponse", out);
        }
    };
    print(&order, "tuikuan.refund.v1.RefundOrder", out)
}

async fn batch(c: &mut Clients, action: BatchAction, out: Output) -> anyhow::Result<()> {
    match action {
        BatchAction::Generate { date } => {
            let r = rpc(
                c.batch
                    .generate_batches(rfd::GenerateBatchesRequest { date })
                    .await,
                "generate batches",
            )?;
            print(&r, "tuikuan.refund.v1.ListBatchesResponse", out)
        }
        BatchAction::List { date } => {
            let r = rpc(
                c.batch
                    .list_batches(rfd::ListBatchesRequest {
                        date,
                        status: 0,
                        limit: 1000,
                    })
                    .await,
                "list batches",
            )?;
            print(&r, "tuikuan.refund.v1.ListBatchesResponse", out)
        }
        BatchAction::Show { batch_id } => {
            let r = rpc(
                c.batch.get_batch(rfd::GetBatchRequest { batch_id }).await,
                "show batch",
            )?;
            print(&r, "tuikuan.refund.v1.Batch", out)
        }
        BatchAction::Download {
            batch_id,
            out: path,
        } => {
            let r = rpc(
                c.batch
                    .download_batch(rfd::GetBatchRequest { batch_id })
                    .await,
                "download batch",
            )?;
            let path = if path.is_dir() {
                path.join(&r.file_name)
            } else {
                path
            };
            std::fs::write(&path, &r.content)
                .with_context(|| format!("--out: cannot write {}", path.display()))?;
            crate::outln!(
                "wrote {} ({} bytes, sha256 {})",
                path.display(),
                r.content.len(),
                r.sha256
            );
            Ok(())
        }
        BatchAction::Mark {
            batch_id,
            status,
            note,
        } => {
            let status = match status.as_str() {
                "uploaded" => rfd::BatchStatus::Uploaded,
                "sent" => rfd::BatchStatus::Sent,
                other => anyhow::bail!("--status: {other:?} is not uploaded or sent"),
            };
            let r = rpc(
                c.batch
                    .mark_batch(rfd::MarkBatchRequest {
                        batch_id,
                        status: status as i32,
                        operator: String::new(),
                        note,
                    })
                    .await,
                "mark batch",
            )?;
            print(&r, "tuikuan.refund.v1.Batch", out)
        }
        BatchAction::FailRows {
            batch_id,
            rows,
            source,
        } => {
            let failed = rows
                .iter()
                .map(|r| {
                    let (row_id, reason) = r
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--row: {r:?} is not ROW_ID=REASON"))?;
                    Ok(rfd::RowResult {
                        row_id: row_id.to_string(),
                        reason: reason.to_string(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = proposed(
                c.batch
                    .mark_rows(rfd::MarkRowsRequest {
                        batch_id,
                        failed,
                        operator: String::new(),
                        source,
                    })
                    .await,
                "fail rows",
            )?;
            print(&r, "tuikuan.refund.v1.Batch", out)
        }
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
