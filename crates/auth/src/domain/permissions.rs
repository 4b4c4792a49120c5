//! Staff roles, staff actions and the one permission table between them.
//!
//! [`PERMISSIONS`] is the only place that says who may do what. Every service checks its staff
//! RPCs against it (through the RPC table in [`super::rpcs`]), `docs/security.md` prints it (a
//! test compares the two), and the console hides what a role may not use.
//!
//! Separation of duties: money moved by hand belongs to finance (force-fail, confirm a failure,
//! fail spreadsheet rows, resolve discrepancies, reinstate); risk decides holds and rules;
//! operations suspend, resume and terminate before submission and run the day's spreadsheets; admin
//! manages operators and configuration but moves no money. Money moved by hand also needs a second
//! operator ([`super::proposal`]).

use tuikuan_kernel::{Error, ErrorCode, Result};

pub(crate) use tuikuan_kernel::string_enum;

string_enum!(
    /// A staff role.
    Role {
        /// Operations (运营): suspends, resumes, terminates, runs the day's spreadsheets and jobs.
        Ops => "ops",
        /// Finance (财务): money moved by hand, reconciliation, fee policies.
        Finance => "finance",
        /// Risk control (风控): holds and risk rules.
        Risk => "risk",
        /// System administration: operators and configuration; moves no money.
        Admin => "admin",
    }
);

string_enum!(
    /// Every staff action: what an operator does through a staff RPC.
    Action {
        // Reads.
        /// Refunds, trades, orders, holds, batches (masked), payouts, notifications, bank records.
        ViewOperations => "VIEW_OPERATIONS",
        /// Balances, postings, the trial balance, debits, fee policies.
        ViewLedger => "VIEW_LEDGER",
        /// Reconciliation runs, items, discrepancies, suspense, summaries and reports.
        ViewReconciliation => "VIEW_RECONCILIATION",
        /// Channels, templates, risk rules, merchants' notification settings.
        ViewConfiguration => "VIEW_CONFIGURATION",
        /// Audit trails and four-eyes proposals.
        ViewAudit => "VIEW_AUDIT",
        // Manual controls on a refund (refund center).
        Suspend => "SUSPEND",
        Resume => "RESUME",
        Terminate => "TERMINATE",
        ForceFail => "FORCE_FAIL",
        ConfirmSucceeded => "CONFIRM_SUCCEEDED",
        ConfirmFailed => "CONFIRM_FAILED",
        /// A refund FAILED although the bank paid it becomes SUCCEEDED; the money comes back from
        /// the merchant through the ledger.
        Reinstate => "REINSTATE",
        // Risk.
        ReleaseHold => "RELEASE_HOLD",
        RejectHold => "REJECT_HOLD",
        ChangeRiskRule => "CHANGE_RISK_RULE",
        // Daily spreadsheets.
        BatchGenerate => "BATCH_GENERATE",
        BatchMark => "BATCH_MARK",
        BatchFailRows => "BATCH_FAIL_ROWS",
        /// Downloads a spreadsheet with full card numbers.
        BatchDownload => "BATCH_DOWNLOAD",
        ChangeTemplate => "CHANGE_TEMPLATE",
        // Reconciliation.
        ReconRun => "RECON_RUN",
        /// A corrected bank file replaces the day's earlier run.
        ReconSupersede => "RECON_SUPERSEDE",
        ReconResolve => "RECON_RESOLVE",
        // The books.
        /// Clear a suspense item against the bank row that settled it.
        ClearSuspense => "CLEAR_SUSPENSE",
        /// Write off what remains of a suspense item (a loss, or unclaimed money kept).
        WriteOffSuspense => "WRITE_OFF_SUSPENSE",
        // The business layer.
        ErrorRefund => "ERROR_REFUND",
        ChangeNotifySettings => "CHANGE_NOTIFY_SETTINGS",
        CreateMerchant => "CREATE_MERCHANT",
        RotateApiKey => "ROTATE_API_KEY",
        ChangeChannel => "CHANGE_CHANNEL",
        ChangeFeePolicy => "CHANGE_FEE_POLICY",
        /// Runs a scheduled job now (interface cycle, outbox, recovery, payouts, notifications,
        /// the bank simulator's tick).
        RunJob => "RUN_JOB",
        // Staff.
        ManageOperators => "MANAGE_OPERATORS",
        ChangeOwnPassword => "CHANGE_OWN_PASSWORD",
        /// Approve or reject a four-eyes proposal; the approver must also hold a role the
        /// proposal's own action allows, and may not be its proposer.
        DecideProposal => "DECIDE_PROPOSAL",
        /// Withdraw one's own pending proposal.
        CancelProposal => "CANCEL_PROPOSAL",
    }
);

use Role::{Admin, Finance, Ops, Risk};

const EVERYONE: &[Role] = &[Ops, Finance, Risk, Admin];

/// The permission table: each staff action and the roles that may take it.
pub const PERMISSIONS: &[(Action, &[Role])] = &[
    (Action::ViewOperations, EVERYONE),
    (Action::ViewLedger, EVERYONE),
    (Action::ViewReconciliation, EVERYONE),
    (Action::ViewConfiguration, EVERYONE),
    (Action::ViewAudit, EVERYONE),
    (Action::Suspend, &[Ops]),
    (Action::Resume, &[Ops]),
    (Action::Terminate, &[Ops]),
    (Action::ForceFail, &[Finance]),
    // Confirming an offline success is routine operations work; confirming a failure gives the
    // money back to the merchant, so it needs finance.
    (Action::ConfirmSucceeded, &[Finance, Ops]),
    (Action::ConfirmFailed, &[Finance]),
    (Action::Reinstate, &[Finance]),
    (Action::ReleaseHold, &[Risk]),
    (Action::RejectHold, &[Risk]),
    (Action::ChangeRiskRule, &[Risk]),
    (Action::BatchGenerate, &[Ops, Finance]),
    (Action::BatchMark, &[Ops, Finance]),
    // Failing a row can give the money back to the merchant: the same as a force-fail.
    (Action::BatchFailRows, &[Finance]),
    (Action::BatchDownload, &[Ops, Finance]),
    (Action::ChangeTemplate, &[Admin]),
    (Action::ReconRun, &[Ops, Finance]),
    (Action::ReconSupersede, &[Finance]),
    (Action::ReconResolve, &[Finance]),
    (Action::ClearSuspense, &[Finance]),
    (Action::WriteOffSuspense, &[Finance]),
    (Action::ErrorRefund, &[Ops, Finance]),
    (Action::ChangeNotifySettings, &[Ops, Admin]),
    (Action::CreateMerchant, &[Admin]),
    (Action::RotateApiKey, &[Admin]),
    (Action::ChangeChannel, &[Admin]),
    (Action::ChangeFeePolicy, &[Finance, Admin]),
    (Action::RunJob, &[Ops, Admin]),
    (Action::ManageOperators, &[Admin]),
    (Action::ChangeOwnPassword, EVERYONE),
    (Action::DecideProposal, EVERYONE),
    (Action::CancelProposal, EVERYONE),
];

impl Action {
    /// The roles that may take this action (from [`PERMISSIONS`]).
    pub fn roles(self) -> &'static [Role] {
        PERMISSIONS
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, roles)| *roles)
            .unwrap_or(&[])
    }

    /// Whether the action changes anything (reads are not audited, except downloads of card
    /// numbers, which are).
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Action::ViewOperations
                | Action::ViewLedger
                | Action::ViewReconciliation
                | Action::ViewConfiguration
                | Action::ViewAudit
        )
    }

    /// Whether every use of the action is written to the audit trail: every change, and the
    /// download of files with full card numbers.
    pub fn is_audited(self) -> bool {
        !self.is_read()
    }

    /// Whether the action moves money by hand and so goes through a four-eyes proposal.
    pub fn needs_four_eyes(self) -> bool {
        matches!(
            self,
            Action::ForceFail
                | Action::ConfirmSucceeded
                | Action::ConfirmFailed
                | Action::Reinstate
                | Action::BatchFailRows
                | Action::ReconResolve
                | Action::WriteOffSuspense
                | Action::ErrorRefund
        )
    }

    /// The name of the `[four_eyes]` configuration key for this action (`force_fail`).
    pub fn config_key(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

/// Whether any of `roles` may take `action`.
pub fn allows(roles: &[Role], action: Action) -> bool {
    action.roles().iter().any(|r| roles.contains(r))
}

/// `PERMISSION_DENIED` unless one of `roles` may take `action`; the message names the operator,
/// the action and the roles that may.
pub fn authorize(name: &str, roles: &[Role], action: Action) -> Result<()> {
    if allows(roles, action) {
        return Ok(());
    }
    let needed: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
    let held: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(Error::new(
        ErrorCode::PermissionDenied,
        format!(
            "operator {name} ({}) may not {action}: it needs role {}",
            if held.is_empty() {
                "no role".to_string()
            } else {
                held.join(", ")
            },
            if needed.is_empty() {
                "(none)".to_string()
            } else {
                needed.join(" or ")
            }
        ),
    ))
}

/// Parses a role list (`"finance"`, `"ops,finance"`), naming the field on error. Duplicates are
/// dropped; the list may not be empty.
pub fn parse_roles<S: AsRef<str>>(roles: &[S], field: &str) -> Result<Vec<Role>> {
    let mut out: Vec<Role> = Vec::new();
    for raw in roles {
        for part in raw.as_ref().split(',') {
            let part = part.trim().to_ascii_lowercase();
            if part.is_empty() {
                continue;
            }
            let role = Role::parse(&part).ok_or_else(|| {
                Error::field(
                    field,
                    format!(
                        "unknown role {:?}: expected ops, finance, risk or admin",
                        part.chars().take(32).collect::<String>()
                    ),
                )
            })?;
            if !out.contains(&role) {
                out.push(role);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::field(field, "at least one role is required"));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_in_the_table_exactly_once() {
        for action in Action::ALL {
            let n = PERMISSIONS.iter().filter(|(a, _)| a == action).count();
            assert_eq!(n, 1, "{action} appears {n} times in PERMISSIONS");
            assert!(!action.roles().is_empty(), "{action} has no role");
        }
        assert_eq!(PERMISSIONS.len(), Action::ALL.len());
    }

    #[test]
    fn separation_of_duties() {
        // Admin moves no money; ops cannot give money back; risk decides holds only.
        for money in [
            Action::ForceFail,
            Action::ConfirmFailed,
            Action::Reinstate,
            Action::BatchFailRows,
            Action::ReconResolve,
            Action::WriteOffSuspense,
        ] {
            assert_eq!(money.roles(), &[Role::Finance], "{money}");
            assert!(money.needs_four_eyes(), "{money}");
        }
        assert!(!allows(&[Role::Admin], Action::ErrorRefund));
        assert!(allows(&[Role::Ops], Action::ConfirmSucceeded));
        assert!(allows(&[Role::Ops, Role::Risk], Action::ReleaseHold));
    }

    #[test]
    fn denial_names_who_and_what() {
        let e = authorize("olivia", &[Role::Ops], Action::ForceFail).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert_eq!(
            e.message,
            "operator olivia (ops) may not FORCE_FAIL: it needs role finance"
        );
        assert!(authorize("fiona", &[Role::Finance], Action::ForceFail).is_ok());
    }

    /// docs/security.md prints the permission table; it must say what the code does.
    #[test]
    fn the_security_page_prints_this_table() {
        let page = include_str!("../../../../docs/security.md");
        for (action, roles) in PERMISSIONS {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            let row = format!("| `{action}` | {} |", names.join(", "));
            assert!(page.contains(&row), "docs/security.md lacks {row}");
        }
        let rows = page
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`'))
            .filter(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
            .count();
        assert_eq!(
            rows,
            PERMISSIONS.len(),
            "the page lists actions the code does not know"
        );
    }

    #[test]
    fn roles_parse() {
        assert_eq!(
            parse_roles(&["Finance, ops", "ops"], "roles").unwrap(),
            vec![Role::Ops, Role::Finance]
        );
        assert!(parse_roles::<&str>(&[], "roles")
            .unwrap_err()
            .message
            .starts_with("roles: at least one"));
        assert!(parse_roles(&["root"], "roles")
            .unwrap_err()
            .message
            .contains("unknown role \"root\""));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(*r));
        }
    }
}
