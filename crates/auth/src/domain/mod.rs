//! The pure part of staff security: roles, actions and the permission table, the RPC table,
//! token claims, the registry's rules, and four-eyes proposals. No storage, no RPC.

pub mod audit;
pub mod claims;
pub mod permissions;
pub mod proposal;
pub mod registry;
pub mod rpcs;

pub use audit::AuditEntry;
pub use claims::{Claims, Operator};
pub use permissions::{allows, authorize, parse_roles, Action, Role, PERMISSIONS};
pub use proposal::{check_decision, Decision, DecisionStep, FourEyes, Proposal, ProposalStatus};
pub use registry::OperatorRecord;
pub use rpcs::{guard_of, Guard, RPCS};
