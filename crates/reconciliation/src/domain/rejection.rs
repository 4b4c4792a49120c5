//! Files a run refused. Every refused file leaves a record — who sent it, when, for which channel
//! and date, its digests, and the error with its line and field — so that finance can see what
//! was refused and why, and the audit trail shows it.

use tuikuan_kernel::{Error, ErrorCode};

use super::line_error_parts;

/// The longest text kept from a request in a record (channel, date, operator, format).
const MAX_ECHO_CHARS: usize = 64;
/// The longest error message kept.
const MAX_MESSAGE_CHARS: usize = 1024;

/// One refused file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedFile {
    pub rejection_id: String,
    /// As requested (bounded; it may be the reason for the refusal).
    pub channel: String,
    /// As requested, `YYYY-MM-DD` when valid (bounded otherwise).
    pub date: String,
    /// `bank` or `upload`.
    pub source: String,
    /// Who uploaded it (empty when unknown: a file fetched from the bank, or no operator given).
    pub operator: String,
    /// The format asked for or chosen (empty when none could be).
    pub file_format: String,
    /// Lowercase hex SHA-256 of the bytes.
    pub file_sha256: String,
    pub content_sha256: String,
    pub size_bytes: u64,
    /// The stable error code (`INVALID_ARGUMENT`, `CHANNEL_NOT_FOUND`, …).
    pub error_code: String,
    /// 1-based line of the error (0 when it is not on a line).
    pub error_line: usize,
    /// The field of the error (`header`, `退款总金额`, `channel`, …).
    pub error_field: String,
    pub error_message: String,
    pub at_ms: i64,
}

/// Text from a request as kept in a record: without control characters, bounded.
pub fn bounded(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Whether an error of a run means the file (or the request for it) was refused, rather than a
/// peer or the database failing for a while (those are retried, not recorded).
pub fn refuses_file(e: &Error) -> bool {
    !matches!(
        e.code,
        ErrorCode::Unavailable
            | ErrorCode::InProgress
            | ErrorCode::Storage
            | ErrorCode::Internal
            | ErrorCode::IdempotencyConflict
    )
}

/// What is known of a file when it is refused.
#[derive(Debug, Clone, Default)]
pub struct FileFacts {
    pub channel: String,
    pub date: String,
    pub source: String,
    pub operator: String,
    pub file_format: String,
    pub file_sha256: String,
    pub content_sha256: String,
    pub size_bytes: u64,
}

impl RejectedFile {
    /// The record of `facts` refused with `error`.
    pub fn new(rejection_id: String, facts: &FileFacts, error: &Error, at_ms: i64) -> RejectedFile {
        let (line, field) = match line_error_parts(error) {
            Some((line, field, _)) => (line, field),
            None => (
                0,
                error
                    .message
                    .split_once(": ")
                    .map(|(f, _)| bounded(f, MAX_ECHO_CHARS))
                    .unwrap_or_default(),
            ),
        };
        RejectedFile {
            rejection_id,
            channel: bounded(&facts.channel, MAX_ECHO_CHARS),
            date: bounded(&facts.date, MAX_ECHO_CHARS),
            source: facts.source.clone(),
            operator: bounded(&facts.operator, MAX_ECHO_CHARS * 2),
            file_format: bounded(&facts.file_format, MAX_ECHO_CHARS),
            file_sha256: facts.file_sha256.clone(),
            content_sha256: facts.content_sha256.clone(),
            size_bytes: facts.size_bytes,
            error_code: error.code.as_str().to_string(),
            error_line: line,
            error_field: field,
            error_message: bounded(&error.message, MAX_MESSAGE_CHARS),
            at_ms,
        }
    }

    /// `line 9, 退款总金额` / `channel` — where the error is, for people.
    pub fn location(&self) -> String {
        match (self.error_line, self.error_field.is_empty()) {
            (0, true) => String::new(),
            (0, false) => self.error_field.clone(),
            (n, true) => format!("line {n}"),
            (n, false) => format!("line {n}, {}", self.error_field),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_line_and_field_and_bound_what_came_in() {
        let facts = FileFacts {
            channel: "wechat\u{7}".into(),
            date: "2026-11-25".into(),
            source: "upload".into(),
            operator: "alice".into(),
            file_format: "wechat-bill".into(),
            file_sha256: "ab".into(),
            content_sha256: "cd".into(),
            size_bytes: 12,
        };
        let e = Error::new(
            ErrorCode::InvalidArgument,
            "clearing file line 9: 退款总金额: says 29.51 but the detail rows add up to 29.50",
        );
        let r = RejectedFile::new("rej_1".into(), &facts, &e, 5);
        assert_eq!((r.error_line, r.error_field.as_str()), (9, "退款总金额"));
        assert_eq!(r.channel, "wechat");
        assert_eq!(r.error_code, "INVALID_ARGUMENT");
        assert_eq!(r.location(), "line 9, 退款总金额");
        let unknown = Error::new(
            ErrorCode::ChannelNotFound,
            "channel: \"x\" is not a channel",
        );
        let r = RejectedFile::new("rej_2".into(), &facts, &unknown, 5);
        assert_eq!((r.error_line, r.location().as_str()), (0, "channel"));
        assert!(refuses_file(&unknown));
        assert!(!refuses_file(&Error::new(ErrorCode::Unavailable, "down")));
        let long = "x".repeat(5000);
        assert_eq!(bounded(&long, 64).len(), 64);
    }
}
