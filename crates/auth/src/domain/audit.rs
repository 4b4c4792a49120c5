//! One entry of a service's staff audit trail: who, what, when, before → after, why.

use tuikuan_kernel::id::new_id;

use super::claims::Operator;
use super::permissions::Action;

/// Verbs of the four-eyes lifecycle and the registry, besides the permission-table actions.
pub mod verb {
    pub const PROPOSE: &str = "PROPOSE";
    pub const APPROVE: &str = "APPROVE";
    pub const REJECT: &str = "REJECT";
    pub const CANCEL: &str = "CANCEL";
    pub const EXPIRE: &str = "EXPIRE";
    pub const LOGIN: &str = "LOGIN";
    pub const LOGIN_FAILED: &str = "LOGIN_FAILED";
}

/// The longest text kept in one field of an entry; longer text is cut and marked.
pub const MAX_FIELD_CHARS: usize = 2000;

/// An audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub audit_id: String,
    pub at_ms: i64,
    pub operator: String,
    /// `ops,finance`.
    pub roles: String,
    /// A permission-table action (`FORCE_FAIL`) or a [`verb`].
    pub action: String,
    pub rpc: String,
    pub subject: String,
    pub reason: String,
    pub before: String,
    pub after: String,
    pub proposal_id: String,
}

/// `text`, at most [`MAX_FIELD_CHARS`] characters, with a marker when cut.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_FIELD_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_FIELD_CHARS).collect();
    out.push_str("…[cut]");
    out
}

impl AuditEntry {
    /// An entry for `operator` taking `action` through `rpc` on `subject` at `at_ms`.
    pub fn new(
        operator: &Operator,
        action: impl Into<String>,
        rpc: &str,
        subject: &str,
        at_ms: i64,
    ) -> AuditEntry {
        AuditEntry {
            audit_id: new_id("aud"),
            at_ms,
            operator: operator.name.clone(),
            roles: operator.roles_text(),
            action: action.into(),
            rpc: rpc.to_string(),
            subject: bounded(subject),
            reason: String::new(),
            before: String::new(),
            after: String::new(),
            proposal_id: String::new(),
        }
    }

    /// The same entry for a permission-table action.
    pub fn of(
        operator: &Operator,
        action: Action,
        rpc: &str,
        subject: &str,
        at_ms: i64,
    ) -> AuditEntry {
        AuditEntry::new(operator, action.as_str(), rpc, subject, at_ms)
    }

    pub fn reason(mut self, reason: &str) -> AuditEntry {
        self.reason = bounded(reason);
        self
    }

    pub fn change(mut self, before: &str, after: &str) -> AuditEntry {
        self.before = bounded(before);
        self.after = bounded(after);
        self
    }

    pub fn proposal(mut self, proposal_id: &str) -> AuditEntry {
        self.proposal_id = proposal_id.to_string();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn entries_are_bounded() {
        let op = Operator {
            name: "fiona".into(),
            roles: vec![Role::Finance, Role::Ops],
        };
        let e = AuditEntry::of(&op, Action::ForceFail, "/x/Y", "rf_1", 5)
            .reason(&"r".repeat(MAX_FIELD_CHARS + 10))
            .change("PROCESSING", "FAILED");
        assert_eq!(e.roles, "finance,ops");
        assert_eq!(e.action, "FORCE_FAIL");
        assert!(e.reason.ends_with("…[cut]"));
        assert_eq!(
            e.reason.chars().count(),
            MAX_FIELD_CHARS + "…[cut]".chars().count()
        );
        assert!(e.audit_id.starts_with("aud_"));
    }
}
