//! Identifiers.
//!
//! Ids supplied from outside (merchant refund numbers, order numbers, merchant ids) are validated on
//! receipt with [`validate_external_id`]. Ids tuikuan makes are prefixed, time-ordered UUIDv7s
//! ([`new_id`]), e.g. `rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60`.

use crate::error::{Error, ErrorCode, Result};

/// The longest id accepted from outside.
pub const MAX_ID_LEN: usize = 64;

/// Checks an externally supplied identifier: 1..=64 characters of `A-Z a-z 0-9 _ - .`.
pub fn validate_external_id(value: &str, field: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::field(field, "is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::new(
            ErrorCode::MalformedId,
            format!("{field}: longer than {MAX_ID_LEN} characters"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::new(
            ErrorCode::MalformedId,
            format!("{field}: only letters, digits, '_', '-' and '.' are allowed"),
        ));
    }
    Ok(())
}

/// A new time-ordered id with a short prefix naming its kind (`rf`, `pst`, `po`, ...).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids() {
        assert!(validate_external_id("ORDER-2026.11_26", "order_no").is_ok());
        assert_eq!(
            validate_external_id("", "order_no").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            validate_external_id("a b", "order_no").unwrap_err().code,
            ErrorCode::MalformedId
        );
        assert_eq!(
            validate_external_id(&"x".repeat(65), "order_no")
                .unwrap_err()
                .code,
            ErrorCode::MalformedId
        );
        let a = new_id("rf");
        assert!(a.starts_with("rf_") && validate_external_id(&a, "id").is_ok());
    }
}
