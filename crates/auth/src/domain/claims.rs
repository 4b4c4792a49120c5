//! The operator a token names, and the rules its claims must meet.
//!
//! A token's payload is JSON with PASETO's registered claims (`iss`, `sub`, `aud`, `exp`, `nbf`,
//! `iat` as RFC 3339 times, `jti`) and one of ours, `roles`. [`Claims::validate`] checks them
//! against an explicit "now" so that the rules are tested without waiting.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::permissions::{authorize, parse_roles, Action, Role};
use super::registry::validate_name;

/// Who issues operator tokens.
pub const ISSUER: &str = "tuikuan-business";
/// Who operator tokens are for.
pub const AUDIENCE: &str = "tuikuan-staff";
/// How long a token lives unless configured otherwise (one hour).
pub const DEFAULT_TTL_SECS: i64 = 3600;
/// The longest lifetime a token may have (a working day); longer ones are refused even when
/// correctly signed.
pub const MAX_TTL_SECS: i64 = 12 * 3600;
/// Clock skew tolerated between the issuer and a verifier.
pub const LEEWAY_SECS: i64 = 60;

/// An authenticated operator: the token's subject and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub roles: Vec<Role>,
}

impl Operator {
    /// `PERMISSION_DENIED` unless one of the operator's roles may take `action`.
    pub fn authorize(&self, action: Action) -> Result<()> {
        authorize(&self.name, &self.roles, action)
    }

    /// `PERMISSION_DENIED` unless the operator may take at least one of `actions`.
    pub fn authorize_any(&self, actions: &[Action]) -> Result<()> {
        let mut first = None;
        for a in actions {
            match self.authorize(*a) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| {
            Error::new(
                ErrorCode::PermissionDenied,
                "no staff action is allowed here",
            )
        }))
    }

    /// The roles as strings (`["finance", "ops"]`).
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_string()).collect()
    }

    /// `ops,finance`.
    pub fn roles_text(&self) -> String {
        self.role_names().join(",")
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.roles_text())
    }
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    /// RFC 3339.
    pub exp: String,
    pub nbf: String,
    pub iat: String,
    /// A unique token id (for the audit trail and revocation lists).
    pub jti: String,
    pub roles: Vec<String>,
}

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(value: &str, claim: &str) -> Result<i64> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp())
        .map_err(|_| unauthenticated(format!("token claim {claim} is not an RFC 3339 time")))
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unauthenticated, message)
}

impl Claims {
    /// The claims of a token for `operator`, issued at `now_secs`, living `ttl_secs`.
    pub fn issue(operator: &Operator, now_secs: i64, ttl_secs: i64, jti: String) -> Claims {
        Claims {
            iss: ISSUER.to_string(),
            sub: operator.name.clone(),
            aud: AUDIENCE.to_string(),
            exp: rfc3339(now_secs.saturating_add(ttl_secs)),
            nbf: rfc3339(now_secs),
            iat: rfc3339(now_secs),
            jti,
            roles: operator.role_names(),
        }
    }

    /// When the token expires, in seconds since the epoch.
    pub fn expires_at_secs(&self) -> Result<i64> {
        parse_time(&self.exp, "exp")
    }

    /// Checks the claims at `now_secs` and returns the operator they name. Expired tokens are
    /// `TOKEN_EXPIRED`; anything else wrong is `UNAUTHENTICATED`.
    pub fn validate(&self, now_secs: i64) -> Result<Operator> {
        if self.iss != ISSUER {
            return Err(unauthenticated(
                "token issuer is not the tuikuan operator registry",
            ));
        }
        if self.aud != AUDIENCE {
            return Err(unauthenticated("token audience is not tuikuan staff"));
        }
        let exp = parse_time(&self.exp, "exp")?;
        let nbf = parse_time(&self.nbf, "nbf")?;
        let iat = parse_time(&self.iat, "iat")?;
        if exp.saturating_sub(iat) > MAX_TTL_SECS || exp < iat {
            return Err(unauthenticated(format!(
                "token lifetime is longer than {MAX_TTL_SECS} seconds"
            )));
        }
        if now_secs.saturating_add(LEEWAY_SECS) < nbf {
            return Err(unauthenticated("token is not valid yet"));
        }
        if now_secs.saturating_sub(LEEWAY_SECS) >= exp {
            return Err(Error::new(
                ErrorCode::TokenExpired,
                "the operator token has expired; log in again (tuikuan ctl login)",
            ));
        }
        validate_name(&self.sub)
            .map_err(|e| unauthenticated(format!("token subject: {}", e.message)))?;
        let roles =
            parse_roles(&self.roles, "token roles").map_err(|e| unauthenticated(e.message))?;
        Ok(Operator {
            name: self.sub.clone(),
            roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn fiona() -> Operator {
        Operator {
            name: "fiona".into(),
            roles: vec![Role::Finance],
        }
    }

    #[test]
    fn a_fresh_token_names_its_operator() {
        let c = Claims::issue(&fiona(), NOW, 3600, "t1".into());
        assert_eq!(c.validate(NOW + 10).unwrap(), fiona());
        assert_eq!(c.expires_at_secs().unwrap(), NOW + 3600);
        assert_eq!(c.exp, "2027-01-15T09:00:00Z");
    }

    #[test]
    fn expiry_lifetime_and_audience() {
        let c = Claims::issue(&fiona(), NOW, 3600, "t1".into());
        let e = c.validate(NOW + 3600 + LEEWAY_SECS).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenExpired);
        assert!(
            c.validate(NOW + 3600 + LEEWAY_SECS - 1).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            c.validate(NOW - LEEWAY_SECS - 1).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let long = Claims::issue(&fiona(), NOW, MAX_TTL_SECS + 1, "t2".into());
        assert!(long.validate(NOW).unwrap_err().message.contains("lifetime"));
        let mut other = c.clone();
        other.aud = "someone-else".into();
        assert_eq!(
            other.validate(NOW).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let mut no_roles = c.clone();
        no_roles.roles.clear();
        assert_eq!(
            no_roles.validate(NOW).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let mut bad_role = c;
        bad_role.roles = vec!["root".into()];
        assert_eq!(
            bad_role.validate(NOW).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn any_of_several_actions() {
        let ops = Operator {
            name: "olivia".into(),
            roles: vec![Role::Ops],
        };
        assert!(ops
            .authorize_any(&[Action::ConfirmSucceeded, Action::ConfirmFailed])
            .is_ok());
        let e = ops.authorize_any(&[Action::ForceFail]).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert_eq!(ops.to_string(), "olivia (ops)");
    }
}
