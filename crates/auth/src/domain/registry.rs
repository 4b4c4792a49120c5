//! The operator registry's rules: names, passwords, lockout after failed logins.

use tuikuan_kernel::{Error, ErrorCode, Result};

use super::permissions::Role;

/// The longest operator name.
pub const MAX_NAME_LEN: usize = 64;
/// Passwords: at least this many characters ...
pub const MIN_PASSWORD_CHARS: usize = 12;
/// ... and at most this many (argon2 takes any length; the bound keeps requests small).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Failed logins in a row that lock an operator ...
pub const MAX_FAILED_LOGINS: i32 = 5;
/// ... for this long.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// An operator as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    pub name: String,
    pub roles: Vec<Role>,
    /// The argon2id PHC string.
    pub password_hash: String,
    pub enabled: bool,
    pub failed_logins: i32,
    pub locked_until_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub password_changed_at_ms: i64,
}

/// Checks an operator name: 1 to 64 characters of `a-z 0-9 _ - .`, starting with a letter.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            "name",
            format!(
                "1 to {MAX_NAME_LEN} characters of a-z, 0-9, '_', '-' and '.', starting with a letter"
            ),
        ))
    }
}

/// Checks a new password's length (the only rule NIST SP 800-63B asks a verifier to impose).
pub fn validate_password(password: &str, field: &str) -> Result<()> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(Error::field(
            field,
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The single answer to every failed login (unknown name, wrong password, disabled, locked), so
/// that a login does not tell which names exist.
pub fn invalid_credentials() -> Error {
    Error::new(
        ErrorCode::InvalidCredentials,
        format!(
            "invalid name or password (after {MAX_FAILED_LOGINS} failures in a row an operator \
             is locked for {} minutes)",
            LOCKOUT_MS / 60_000
        ),
    )
}

impl OperatorRecord {
    /// Whether a login may be tried now (enabled, not locked).
    pub fn may_try_login(&self, now_ms: i64) -> bool {
        self.enabled && self.locked_until_ms <= now_ms
    }

    /// The record after a failed login at `now_ms`: one more failure; the fifth in a row locks it.
    pub fn after_failed_login(&self, now_ms: i64) -> OperatorRecord {
        let mut r = self.clone();
        r.failed_logins = r.failed_logins.saturating_add(1);
        if r.failed_logins >= MAX_FAILED_LOGINS {
            r.locked_until_ms = now_ms.saturating_add(LOCKOUT_MS);
            r.failed_logins = 0;
        }
        r.updated_at_ms = now_ms;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OperatorRecord {
        OperatorRecord {
            name: "fiona".into(),
            roles: vec![Role::Finance],
            password_hash: String::new(),
            enabled: true,
            failed_logins: 0,
            locked_until_ms: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            password_changed_at_ms: 0,
        }
    }

    #[test]
    fn names_and_passwords() {
        assert!(validate_name("fiona.w-2").is_ok());
        for bad in ["", "Fiona", "2fiona", "fi ona", &"a".repeat(65)] {
            assert_eq!(
                validate_name(bad).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
        assert!(validate_password("correct horse", "password").is_ok());
        assert!(validate_password("short", "password")
            .unwrap_err()
            .message
            .starts_with("password: must be 12"));
    }

    #[test]
    fn five_failures_lock_for_fifteen_minutes() {
        let mut r = record();
        for _ in 0..4 {
            r = r.after_failed_login(1000);
            assert!(r.may_try_login(1000));
        }
        r = r.after_failed_login(1000);
        assert!(!r.may_try_login(1000));
        assert!(!r.may_try_login(1000 + LOCKOUT_MS - 1));
        assert!(r.may_try_login(1000 + LOCKOUT_MS));
        let disabled = OperatorRecord {
            enabled: false,
            ..record()
        };
        assert!(!disabled.may_try_login(0));
        assert_eq!(invalid_credentials().code, ErrorCode::InvalidCredentials);
    }
}
