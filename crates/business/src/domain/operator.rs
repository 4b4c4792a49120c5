//! Operator identity for staff actions (today: error refunds).
//!
//! The caller's identity comes from the verified operator token (the staff guard of
//! `tuikuan-auth` puts it into the request; headers that merely claim an identity are dropped);
//! [`Operator::verified`] turns it into the business layer's operator. [`Operator::authenticate`]
//! parses an identity given as two values (kept for its tests).

use std::fmt;

use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Result};

/// The header carrying the operator's id.
pub const OPERATOR_ID_HEADER: &str = "x-operator-id";
/// The header carrying the operator's role.
pub const OPERATOR_ROLE_HEADER: &str = "x-operator-role";

/// Staff roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorRole {
    /// Operations (运营).
    Ops,
    /// Finance (财务).
    Finance,
    /// Risk control (风控).
    Risk,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Ops => "ops",
            OperatorRole::Finance => "finance",
            OperatorRole::Risk => "risk",
        }
    }

    pub fn parse(s: &str) -> Option<OperatorRole> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ops" => Some(OperatorRole::Ops),
            "finance" => Some(OperatorRole::Finance),
            "risk" => Some(OperatorRole::Risk),
            _ => None,
        }
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Roles that may raise an error refund.
pub const ERROR_REFUND_ROLES: &[OperatorRole] = &[OperatorRole::Ops, OperatorRole::Finance];

/// An authenticated staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: String,
    pub role: OperatorRole,
}

impl Operator {
    /// The operator named by the two headers' values (`None` = header absent).
    pub fn authenticate(id: Option<&str>, role: Option<&str>) -> Result<Operator> {
        let unauthenticated = |why: String| Error::new(ErrorCode::Unauthenticated, why);
        let id = id.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
            unauthenticated(format!("{OPERATOR_ID_HEADER}: missing operator identity"))
        })?;
        validate_external_id(id, OPERATOR_ID_HEADER).map_err(|e| unauthenticated(e.message))?;
        let role_raw = role
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                unauthenticated(format!("{OPERATOR_ROLE_HEADER}: missing operator role"))
            })?;
        let role = OperatorRole::parse(role_raw).ok_or_else(|| {
            Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{OPERATOR_ROLE_HEADER}: unknown role {:?} (ops, finance or risk)",
                    role_raw.chars().take(32).collect::<String>()
                ),
            )
        })?;
        Ok(Operator {
            id: id.to_string(),
            role,
        })
    }

    /// The operator of a verified token: its name and the first of its roles the business layer
    /// knows (`PERMISSION_DENIED` when none).
    pub fn verified<'a>(name: &str, roles: impl IntoIterator<Item = &'a str>) -> Result<Operator> {
        let roles: Vec<OperatorRole> = roles.into_iter().filter_map(OperatorRole::parse).collect();
        let role = ERROR_REFUND_ROLES
            .iter()
            .find(|r| roles.contains(r))
            .or(roles.first())
            .copied()
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::PermissionDenied,
                    format!("operator {name} holds no ops, finance or risk role"),
                )
            })?;
        Ok(Operator {
            id: name.to_string(),
            role,
        })
    }

    /// `PERMISSION_DENIED` unless the operator's role is one of `allowed`.
    pub fn require(&self, allowed: &[OperatorRole], action: &str) -> Result<()> {
        if allowed.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(Error::new(
            ErrorCode::PermissionDenied,
            format!(
                "operator {} with role {} may not {action} (needs {})",
                self.id,
                self.role,
                names.join(" or ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_roles() {
        let op = Operator::authenticate(Some("alice"), Some("Finance")).unwrap();
        assert_eq!(op.role, OperatorRole::Finance);
        assert!(op
            .require(ERROR_REFUND_ROLES, "raise an error refund")
            .is_ok());
        let risk = Operator::authenticate(Some("bob"), Some("risk")).unwrap();
        let e = risk
            .require(ERROR_REFUND_ROLES, "raise an error refund")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(e.message.contains("ops or finance"), "{}", e.message);
        let code = |id: Option<&str>, role: Option<&str>| {
            Operator::authenticate(id, role).unwrap_err().code
        };
        assert_eq!(code(None, Some("ops")), ErrorCode::Unauthenticated);
        assert_eq!(code(Some(" "), Some("ops")), ErrorCode::Unauthenticated);
        assert_eq!(code(Some("a b"), Some("ops")), ErrorCode::Unauthenticated);
        assert_eq!(code(Some("alice"), None), ErrorCode::Unauthenticated);
        assert_eq!(
            code(Some("alice"), Some("root")),
            ErrorCode::PermissionDenied
        );
        for r in [OperatorRole::Ops, OperatorRole::Finance, OperatorRole::Risk] {
            assert_eq!(OperatorRole::parse(r.as_str()), Some(r));
        }
    }
}
