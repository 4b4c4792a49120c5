//! `tuikuan ctl` for staff identity: login and the session, operator management, the four-eyes
//! proposals of every service, and every service's audit trail.

use std::path::Path;

use clap::Subcommand;
use tuikuan_proto::staff::v1 as pb;

use crate::clients::Clients;
use crate::config::Service;
use crate::ctl::rpc;
use crate::output::{print, Output};
use crate::session::{self, Session};

/// Operator management (role admin), and one's own password.
#[derive(Debug, Subcommand)]
pub enum OperatorAction {
    /// Add an operator; the password is asked for (or read from standard input).
    Add {
        #[arg(long)]
        name: String,
        /// ops, finance, risk or admin; comma-separated (`--roles finance,ops`).
        #[arg(long, required = true, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    /// Replace an operator's roles.
    Roles {
        #[arg(long)]
        name: String,
        #[arg(long, required = true, value_delimiter = ',')]
        roles: Vec<String>,
    },
    Enable {
        #[arg(long)]
        name: String,
    },
    /// Disable an operator (leavers): no more logins; tokens already issued expire within their
    /// lifetime.
    Disable {
        #[arg(long)]
        name: String,
    },
    /// Set a new password for an operator (and unlock them).
    ResetPassword {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change your own password (asks for the current one; with --password-stdin: two lines,
    /// current then new).
    Passwd {
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Four-eyes proposals (双人复核) of every service.
#[derive(Debug, Subcommand)]
pub enum ProposalAction {
    /// Proposals of every service (or one), newest first.
    List {
        /// pending, approved, executed, rejected, failed, cancelled, expired.
        #[arg(long)]
        status: Option<String>,
        /// Only this service's (refund, reconciliation, business, ...).
        #[arg(long)]
        service: Option<String>,
        /// e.g. FORCE_FAIL.
        #[arg(long, default_value = "")]
        action: String,
        #[arg(long, default_value = "")]
        subject: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    Show {
        #[arg(long)]
        id: String,
    },
    /// Approve as the second operator: the action runs.
    Approve {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    Reject {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw your own pending proposal.
    Cancel {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// `ctl login`: exchanges a name and password for a token and keeps it (or prints it).
pub async fn login(
    c: &mut Clients,
    name: String,
    password_stdin: bool,
    print_token: bool,
    session_file: &Path,
) -> anyhow::Result<()> {
    let password = session::read_password(&format!("password for {name}: "), password_stdin)?;
    let r = rpc(
        c.operators.login(pb::LoginRequest { name, password }).await,
        "login",
    )?;
    let operator = r.operator.unwrap_or_default();
    if print_token {
        crate::outln!("{}", r.token);
        return Ok(());
    }
    session::save(
        session_file,
        &Session {
            name: operator.name.clone(),
            roles: operator.roles.clone(),
            expires_at_ms: r.expires_at_ms,
            token: r.token,
        },
    )?;
    let expires = chrono::DateTime::from_timestamp_millis(r.expires_at_ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    crate::outln!(
        "logged in as {} ({}) until {expires}; session in {}",
        operator.name,
        operator.roles.join(","),
        session_file.display()
    );
    Ok(())
}

/// `ctl logout`.
pub fn logout(session_file: &Path) -> anyhow::Result<()> {
    if session::remove(session_file)? {
        crate::outln!("logged out ({} removed)", session_file.display());
    } else {
        crate::outln!("no session at {}", session_file.display());
    }
    Ok(())
}

pub async fn whoami(c: &mut Clients, out: Output) -> anyhow::Result<()> {
    let me = rpc(c.operators.who_am_i(pb::WhoAmIRequest {}).await, "whoami")?;
    print(&me, "tuikuan.staff.v1.Operator", out)
}

pub async fn operator(c: &mut Clients, action: OperatorAction, out: Output) -> anyhow::Result<()> {
    let o = &mut c.operators;
    let one = match action {
        OperatorAction::Add {
            name,
            roles,
            password_stdin,
        } => {
            let password =
                session::read_password(&format!("password for {name}: "), password_stdin)?;
            rpc(
                o.create_operator(pb::CreateOperatorRequest {
                    name,
                    roles,
                    password,
                })
                .await,
                "add operator",
            )?
        }
        OperatorAction::List => {
            let all = rpc(
                o.list_operators(pb::ListOperatorsRequest {}).await,
                "operators",
            )?;
            return print(&all, "tuikuan.staff.v1.ListOperatorsResponse", out);
        }
        OperatorAction::Roles { name, roles } => rpc(
            o.set_operator_roles(pb::SetOperatorRolesRequest { name, roles })
                .await,
            "set roles",
        )?,
        OperatorAction::Enable { name } => rpc(
            o.set_operator_enabled(pb::SetOperatorEnabledRequest {
                name,
                enabled: true,
            })
            .await,
            "enable",
        )?,
        OperatorAction::Disable { name } => rpc(
            o.set_operator_enabled(pb::SetOperatorEnabledRequest {
                name,
                enabled: false,
            })
            .await,
            "disable",
        )?,
        OperatorAction::ResetPassword {
            name,
            password_stdin,
        } => {
            let password =
                session::read_password(&format!("new password for {name}: "), password_stdin)?;
            rpc(
                o.reset_password(pb::ResetPasswordRequest { name, password })
                    .await,
                "reset password",
            )?
        }
        OperatorAction::Passwd { password_stdin } => {
            let current = session::read_password("current password: ", password_stdin)?;
            let new = session::read_password("new password: ", password_stdin)?;
            if !password_stdin && session::read_password("new password again: ", false)? != new {
                anyhow::bail!("the new passwords differ");
            }
            rpc(
                o.change_password(pb::ChangePasswordRequest {
                    current_password: current,
                    new_password: new,
                })
                .await,
                "change password",
            )?
        }
    };
    print(&one, "tuikuan.staff.v1.Operator", out)
}

/// [`rpc`] for a four-eyes action: the answer's body, after telling the operator (on standard
/// error, so that `--output json` stays one document) which proposal the action created and
/// what comes next.
pub(crate) fn proposed<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) -> anyhow::Result<T> {
    let r = r.map_err(|s| crate::ctl::status_error(&s, what))?;
    if let Some((id, status)) = tuikuan_auth::answer::proposal_of(r.metadata()) {
        eprintln!("{}", next_steps(what, &id, &status));
    }
    Ok(r.into_inner())
}

/// What the operator reads after proposing `what`.
fn next_steps(what: &str, id: &str, status: &str) -> String {
    if status == "EXECUTED" {
        return format!(
            "{what}: proposal {id} EXECUTED at once (below the single-operator threshold); \
             details: tuikuan ctl proposals show --id {id}"
        );
    }
    format!(
        "{what}: proposal {id} is {status}; nothing happens until a second operator in an \
         allowed role approves it:\n  \
         tuikuan ctl proposals show --id {id}\n  \
         tuikuan ctl proposals approve --id {id} --reason \"...\"   (another operator)\n  \
         tuikuan ctl proposals reject --id {id} --reason \"...\"    (another operator)\n  \
         tuikuan ctl proposals cancel --id {id} --reason \"...\"    (you, to withdraw it)"
    )
}

/// The service that holds a proposal: the prefix of its id (`refund-…`).
pub fn service_of_proposal(id: &str) -> anyhow::Result<Service> {
    let prefix = id.split('-').next().unwrap_or_default();
    Service::parse(prefix).map_err(|_| {
        anyhow::anyhow!(
            "--id: {id:?} is not a proposal id (they start with the service's name, e.g. refund-…)"
        )
    })
}

fn status_filter(s: Option<&str>) -> anyhow::Result<i32> {
    let Some(s) = s else { return Ok(0) };
    pb::ProposalStatus::from_str_name(&s.to_uppercase())
        .filter(|v| *v != pb::ProposalStatus::Unspecified)
        .map(|v| v as i32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--status: {s:?} is not pending, approved, executed, rejected, failed, cancelled or expired"
            )
        })
}

pub async fn proposals(c: &mut Clients, action: ProposalAction, out: Output) -> anyhow::Result<()> {
    let decision = |id: String, reason: String| pb::DecideProposalRequest {
        proposal_id: id,
        reason,
    };
    let p = match action {
        ProposalAction::List {
            status,
            service,
            action,
            subject,
            limit,
        } => {
            let services = match service.as_deref() {
                Some(s) => vec![Service::parse(s)?],
                None => Service::ALL.to_vec(),
            };
            let request = pb::ListProposalsRequest {
                status: status_filter(status.as_deref())?,
                action,
                subject,
                limit,
            };
            let mut all = Vec::new();
            for s in services {
                let answer = c.staff_desk(s).list_proposals(request.clone()).await;
                // A service of an older version that keeps no desk yet has no proposals.
                if matches!(&answer, Err(st) if st.code() == tonic::Code::Unimplemented) {
                    continue;
                }
                let r = rpc(answer, &format!("{} proposals", s.name()))?;
                all.extend(r.proposals);
            }
            all.sort_by_key(|p| std::cmp::Reverse(p.created_at_ms));
            all.truncate(usize::try_from(limit.max(1)).unwrap_or(usize::MAX));
            let merged = pb::ListProposalsResponse { proposals: all };
            return print(&merged, "tuikuan.staff.v1.ListProposalsResponse", out);
        }
        ProposalAction::Show { id } => {
            let s = service_of_proposal(&id)?;
            rpc(
                c.staff_desk(s)
                    .get_proposal(pb::GetProposalRequest { proposal_id: id })
                    .await,
                "proposal",
            )?
        }
        ProposalAction::Approve { id, reason } => {
            let s = service_of_proposal(&id)?;
            rpc(
                c.staff_desk(s).approve_proposal(decision(id, reason)).await,
                "approve",
            )?
        }
        ProposalAction::Reject { id, reason } => {
            let s = service_of_proposal(&id)?;
            rpc(
                c.staff_desk(s).reject_proposal(decision(id, reason)).await,
                "reject",
            )?
        }
        ProposalAction::Cancel { id, reason } => {
            let s = service_of_proposal(&id)?;
            rpc(
                c.staff_desk(s).cancel_proposal(decision(id, reason)).await,
                "cancel",
            )?
        }
    };
    print(&p, "tuikuan.staff.v1.Proposal", out)
}

/// `ctl trail`: a service's audit trail of staff actions, newest first.
pub async fn trail(
    c: &mut Clients,
    service: &str,
    request: pb::ListAuditRequest,
    out: Output,
) -> anyhow::Result<()> {
    let s = Service::parse(service)?;
    let r = rpc(c.staff_desk(s).list_audit(request).await, "audit trail")?;
    print(&r, "tuikuan.staff.v1.ListAuditResponse", out)
}
