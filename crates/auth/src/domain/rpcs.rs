//! Every RPC of every tuikuan service, and who may call it.
//!
//! [`RPCS`] classifies each method (by its gRPC path) as a merchant call, a service-to-service
//! call, a staff call (with the permission-table actions it stands for), or the login. Each
//! service's staff guard ([`crate::guard`]) looks the path up here on every request; a path that
//! is not in the table is refused (fail closed). A test walks the protos' descriptor set and
//! checks that the table names every RPC exactly once, so a new RPC cannot be forgotten.
//!
//! Service-to-service RPCs need no operator token: the caller allow-list of the mutual-TLS layer
//! decides who may call them. RPCs that both services and staff tools call (a few reads) accept
//! a call without a token from a service, and check the token of a staff tool that sends one.

use super::permissions::Action;

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A merchant with its API key (the merchant API); no operator token.
    Merchant,
    /// Another tuikuan service (or the forward payment system); no operator token.
    Service,
    /// The operator login: anyone who can reach the internal listener; the credentials are in the
    /// request.
    Login,
    /// Any operator with a valid token (whatever the roles).
    SignedIn,
    /// Staff only: a valid operator token with a role that may take one of these actions (the
    /// handler narrows it down when the request decides which, e.g. confirm succeeded or failed).
    Staff(&'static [Action]),
    /// Services without a token, or staff tools with a valid token for one of these actions.
    ServiceOrStaff(&'static [Action]),
}

impl Guard {
    /// The actions a staff caller may be checked against.
    pub fn actions(self) -> &'static [Action] {
        match self {
            Guard::Staff(a) | Guard::ServiceOrStaff(a) => a,
            _ => &[],
        }
    }
}

use Action as A;
use Guard::{Login, Merchant, Service, ServiceOrStaff, SignedIn, Staff};

/// The RPC table: `/package.Service/Method` and its guard.
pub const RPCS: &[(&str, Guard)] = &[
    // accounting
    ("/tuikuan.accounting.v1.AccountingService/Post", Service),
    (
        "/tuikuan.accounting.v1.AccountingService/PostBatch",
        Service,
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/GetPosting",
        ServiceOrStaff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/GetBalance",
        ServiceOrStaff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ListPostings",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/TrialBalance",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ListSuspenseItems",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ReserveReport",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/ClearSuspenseItem",
        Staff(&[A::ClearSuspense]),
    ),
    (
        "/tuikuan.accounting.v1.AccountingService/WriteOffSuspenseItem",
        Staff(&[A::WriteOffSuspense]),
    ),
    // bank subsystem
    ("/tuikuan.bank.v1.BankService/SubmitRefund", Service),
    ("/tuikuan.bank.v1.BankService/QueryRefund", Service),
    ("/tuikuan.bank.v1.BankService/SubmitPayout", Service),
    ("/tuikuan.bank.v1.BankService/QueryPayout", Service),
    ("/tuikuan.bank.v1.BankService/SubmitFileBatch", Service),
    ("/tuikuan.bank.v1.BankService/Tick", Staff(&[A::RunJob])),
    ("/tuikuan.bank.v1.BankService/GetClearingFile", Service),
    (
        "/tuikuan.bank.v1.BankService/GetStatement",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.bank.v1.BankService/ListTransactions",
        Staff(&[A::ViewOperations]),
    ),
    // business layer: merchants
    (
        "/tuikuan.business.v1.MerchantService/CreateRefund",
        Merchant,
    ),
    ("/tuikuan.business.v1.MerchantService/GetRefund", Merchant),
    // business layer: internal
    (
        "/tuikuan.business.v1.BusinessAdminService/CreateMerchant",
        Staff(&[A::CreateMerchant]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/UpsertChannel",
        Staff(&[A::ChangeChannel]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RecordPayment",
        Service,
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/GetTrade",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ReportRefundOutcome",
        Service,
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RunRecovery",
        Staff(&[A::RunJob]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListRefunds",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/CreateErrorRefund",
        Staff(&[A::ErrorRefund]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/SetNotifyConfig",
        Staff(&[A::ChangeNotifySettings]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/RunNotifications",
        Staff(&[A::RunJob]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListNotifications",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.business.v1.BusinessAdminService/ListTrades",
        Staff(&[A::ViewOperations]),
    ),
    // clearing center
    (
        "/tuikuan.clearing.v1.ClearingService/UpsertMerchantPolicy",
        Staff(&[A::ChangeFeePolicy]),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/GetMerchantPolicy",
        Staff(&[A::ViewLedger]),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/SettlePayment",
        Service,
    ),
    ("/tuikuan.clearing.v1.ClearingService/RefundDebit", Service),
    ("/tuikuan.clearing.v1.ClearingService/ReverseDebit", Service),
    (
        "/tuikuan.clearing.v1.ClearingService/CompleteDebit",
        Service,
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/GetDebit",
        ServiceOrStaff(&[A::ViewLedger]),
    ),
    ("/tuikuan.clearing.v1.ClearingService/ReturnDebit", Service),
    (
        "/tuikuan.clearing.v1.ClearingService/ReinstateDebit",
        Service,
    ),
    ("/tuikuan.clearing.v1.ClearingService/ReopenDebit", Service),
    (
        "/tuikuan.clearing.v1.ClearingService/PostAdjustment",
        Service,
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/RunRecovery",
        Staff(&[A::RunJob]),
    ),
    (
        "/tuikuan.clearing.v1.ClearingService/SweepReserves",
        Staff(&[A::RunJob]),
    ),
    // payout center
    ("/tuikuan.payout.v1.PayoutService/CreatePayout", Service),
    ("/tuikuan.payout.v1.PayoutService/GetPayout", Service),
    (
        "/tuikuan.payout.v1.PayoutService/RunPayoutCycle",
        Staff(&[A::RunJob]),
    ),
    ("/tuikuan.payout.v1.PayoutService/BankCallback", Service),
    (
        "/tuikuan.payout.v1.PayoutService/ListPayouts",
        Staff(&[A::ViewOperations]),
    ),
    // reconciliation center
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/RunReconciliation",
        Staff(&[A::ReconRun]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/RunReconciliationFile",
        Staff(&[A::ReconRun]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/GetRun",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListRuns",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListDiscrepancies",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/GetDiscrepancy",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ResolveDiscrepancy",
        Staff(&[A::ReconResolve]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListAudit",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ListSuspense",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/DailySummary",
        Staff(&[A::ViewReconciliation]),
    ),
    (
        "/tuikuan.reconciliation.v1.ReconciliationService/ExportReport",
        Staff(&[A::ViewReconciliation]),
    ),
    // refund center
    ("/tuikuan.refund.v1.RefundService/CreateRefund", Service),
    (
        "/tuikuan.refund.v1.RefundService/GetRefund",
        ServiceOrStaff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.refund.v1.RefundService/ListRefunds",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.refund.v1.RefundService/UpsertChannel",
        Staff(&[A::ChangeChannel]),
    ),
    // Reconciliation reads the channels (it refuses files of unknown channels).
    (
        "/tuikuan.refund.v1.RefundService/ListChannels",
        ServiceOrStaff(&[A::ViewConfiguration]),
    ),
    (
        "/tuikuan.refund.v1.RefundService/RunInterfaceCycle",
        Staff(&[A::RunJob]),
    ),
    ("/tuikuan.refund.v1.RefundService/BankCallback", Service),
    ("/tuikuan.refund.v1.RefundService/ListSubmitted", Service),
    (
        "/tuikuan.refund.v1.RefundService/ApplyReconciliation",
        Service,
    ),
    (
        "/tuikuan.refund.v1.RefundService/ReinstateSucceeded",
        Service,
    ),
    ("/tuikuan.refund.v1.RefundService/ReopenRefund", Service),
    (
        "/tuikuan.refund.v1.RefundService/RunOutbox",
        Staff(&[A::RunJob]),
    ),
    (
        "/tuikuan.refund.v1.RefundService/RunPayoutDispatch",
        Staff(&[A::RunJob]),
    ),
    ("/tuikuan.refund.v1.RefundService/PayoutUpdate", Service),
    (
        "/tuikuan.refund.v1.ErrorRefundService/CreateErrorRefund",
        Service,
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/UpsertRiskRule",
        Staff(&[A::ChangeRiskRule]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListRiskRules",
        Staff(&[A::ViewConfiguration]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListHeld",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ReleaseHold",
        Staff(&[A::ReleaseHold]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/RejectHold",
        Staff(&[A::RejectHold]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Suspend",
        Staff(&[A::Suspend]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Resume",
        Staff(&[A::Resume]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Terminate",
        Staff(&[A::Terminate]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ForceFail",
        Staff(&[A::ForceFail]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ConfirmOutcome",
        Staff(&[A::ConfirmSucceeded, A::ConfirmFailed]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/Reinstate",
        Staff(&[A::Reinstate]),
    ),
    (
        "/tuikuan.refund.v1.RefundControlService/ListAudit",
        Staff(&[A::ViewAudit]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/GenerateBatches",
        Staff(&[A::BatchGenerate]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/ListBatches",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/GetBatch",
        Staff(&[A::ViewOperations]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/DownloadBatch",
        Staff(&[A::BatchDownload]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/MarkBatch",
        Staff(&[A::BatchMark]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/MarkRows",
        Staff(&[A::BatchFailRows]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/UpsertTemplate",
        Staff(&[A::ChangeTemplate]),
    ),
    (
        "/tuikuan.refund.v1.BatchService/ListTemplates",
        Staff(&[A::ViewConfiguration]),
    ),
    // staff: the operator registry (business layer) and every service's audit trail and proposals
    ("/tuikuan.staff.v1.OperatorService/Login", Login),
    ("/tuikuan.staff.v1.OperatorService/WhoAmI", SignedIn),
    (
        "/tuikuan.staff.v1.OperatorService/CreateOperator",
        Staff(&[A::ManageOperators]),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ListOperators",
        Staff(&[A::ManageOperators]),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/SetOperatorRoles",
        Staff(&[A::ManageOperators]),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/SetOperatorEnabled",
        Staff(&[A::ManageOperators]),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ResetPassword",
        Staff(&[A::ManageOperators]),
    ),
    (
        "/tuikuan.staff.v1.OperatorService/ChangePassword",
        Staff(&[A::ChangeOwnPassword]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ListAudit",
        Staff(&[A::ViewAudit]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ListProposals",
        Staff(&[A::ViewAudit]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/GetProposal",
        Staff(&[A::ViewAudit]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/ApproveProposal",
        Staff(&[A::DecideProposal]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/RejectProposal",
        Staff(&[A::DecideProposal]),
    ),
    (
        "/tuikuan.staff.v1.StaffService/CancelProposal",
        Staff(&[A::CancelProposal]),
    ),
];

/// The guard of the RPC at `path` (`/package.Service/Method`); `None` for a path no tuikuan
/// service serves (refused).
pub fn guard_of(path: &str) -> Option<Guard> {
    RPCS.iter().find(|(p, _)| *p == path).map(|(_, g)| *g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (path, guard) in RPCS {
            assert!(seen.insert(*path), "{path} twice");
            let parts: Vec<&str> = path.split('/').collect();
            assert_eq!(parts.len(), 3, "{path}");
            assert!(
                parts[0].is_empty() && parts[1].starts_with("tuikuan."),
                "{path}"
            );
            if let Guard::Staff(actions) | Guard::ServiceOrStaff(actions) = guard {
                assert!(!actions.is_empty(), "{path}");
            }
        }
        assert_eq!(
            guard_of("/tuikuan.refund.v1.RefundControlService/ForceFail"),
            Some(Guard::Staff(&[Action::ForceFail]))
        );
        assert_eq!(guard_of("/tuikuan.refund.v1.RefundService/Nope"), None);
    }

    #[test]
    fn money_and_card_data_are_staff_only() {
        for (path, guard) in RPCS {
            for action in guard.actions() {
                if action.needs_four_eyes() || *action == Action::BatchDownload {
                    assert!(matches!(guard, Guard::Staff(_)), "{path}");
                }
            }
        }
    }
}
