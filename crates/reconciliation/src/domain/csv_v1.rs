//! The platform's own clearing-file format, `tuikuan-csv-v1` (docs/clearing-file.md), for the
//! bank simulator and for banks that send spreadsheets, including the results of file-upload and
//! offline refunds.
//!
//! A header line `record_type,id,bank_ref,channel,amount,currency,status,completed_at,reason`, then
//! one row per completed transaction. `record_type` is `REFUND`, `PAYOUT` or `FILE` (a row of a
//! file-upload or offline batch); `id` is the bank reference id the platform gave the bank (refund
//! id, payout id or batch row id); `amount` is a plain positive decimal with at most the
//! currency's decimals (`12.50`); `status` is `SUCCESS` or `FAILED`; `completed_at` is RFC 3339.
//! Fields may be quoted as in RFC 4180 (no line breaks inside fields). A UTF-8 byte-order mark and
//! blank lines are tolerated. Read line by line.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Money, Result};

use super::text::read_line;
use super::{
    check_bank_ref, line_error, strip_field, BankRecord, BankRecordStatus, ClearingFileParser,
    FileStats, RecordKind, RecordSink, MAX_REASON_CHARS,
};

/// The name of the documented CSV clearing-file format.
pub const CSV_V1_FORMAT: &str = "tuikuan-csv-v1";

/// The exact header line of a `tuikuan-csv-v1` file.
pub const CSV_V1_HEADER: [&str; 9] = [
    "record_type",
    "id",
    "bank_ref",
    "channel",
    "amount",
    "currency",
    "status",
    "completed_at",
    "reason",
];

/// The strict `tuikuan-csv-v1` parser.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvV1Parser;

impl ClearingFileParser for CsvV1Parser {
    fn format(&self) -> &'static str {
        CSV_V1_FORMAT
    }

    fn parse(&self, input: &mut dyn BufRead, sink: &mut RecordSink<'_>) -> Result<FileStats> {
        let mut buf = Vec::with_capacity(256);
        let mut fields: Vec<String> = Vec::with_capacity(CSV_V1_HEADER.len());
        let mut line = 0usize;
        let mut header_seen = false;
        let mut stats = FileStats::default();
        while read_line(input, &mut buf, line + 1)? {
            line += 1;
            let raw = if line == 1 {
                buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
            } else {
                &buf[..]
            };
            if raw.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(raw).map_err(|_| {
                // Name the field holding the first invalid byte.
                let valid = std::str::from_utf8(raw)
                    .err()
                    .map(|e| e.valid_up_to())
                    .unwrap_or(0);
                let index = raw[..valid].iter().filter(|b| **b == b',').count();
                let field = CSV_V1_HEADER.get(index).copied().unwrap_or("row");
                line_error(line, field, "is not valid UTF-8")
            })?;
            split_csv_line(text, &mut fields)
                .map_err(|problem| line_error(line, "row", problem))?;
            if !header_seen {
                check_header(&fields, line)?;
                header_seen = true;
                stats.layout = CSV_V1_FORMAT.to_string();
                stats.encoding = "utf-8";
                continue;
            }
            stats.add_row(line)?;
            stats.records += 1;
            sink(parse_row(&fields, line)?)?;
        }
        if !header_seen {
            return Err(line_error(1, "header", "missing (the file is empty)"));
        }
        Ok(stats)
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting, no line breaks inside fields).
pub(crate) fn split_csv_line(line: &str, out: &mut Vec<String>) -> std::result::Result<(), String> {
    out.clear();
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            let mut value = String::new();
            i += 1;
            let mut start = i;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated quoted field".into()),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        value.push_str(&line[start..=i]);
                        i += 2;
                        start = i;
                    }
                    Some(b'"') => {
                        value.push_str(&line[start..i]);
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(value);
            match bytes.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => return Err("text after a closing quote".into()),
            }
        } else {
            let end = line[i..].find(',').map(|p| i + p);
            match end {
                Some(end) => {
                    out.push(line[i..end].to_string());
                    i = end + 1;
                }
                None => {
                    out.push(line[i..].to_string());
                    return Ok(());
                }
            }
        }
    }
}

fn check_header(fields: &[String], line: usize) -> Result<()> {
    let matches = fields.len() == CSV_V1_HEADER.len()
        && fields.iter().zip(CSV_V1_HEADER.iter()).all(|(g, w)| g == w);
    if matches {
        Ok(())
    } else {
        Err(line_error(
            line,
            "header",
            format!("expected {:?}", CSV_V1_HEADER.join(",")),
        ))
    }
}

fn parse_row(fields: &[String], line: usize) -> Result<BankRecord> {
    if fields.len() != CSV_V1_HEADER.len() {
        return Err(line_error(
            line,
            "row",
            format!(
                "expected {} fields, found {}",
                CSV_V1_HEADER.len(),
                fields.len()
            ),
        ));
    }
    let field = |i: usize| fields[i].as_str();
    let kind = match field(0) {
        "REFUND" => RecordKind::Refund,
        "PAYOUT" => RecordKind::Payout,
        "FILE" => RecordKind::File,
        other => {
            return Err(line_error(
                line,
                "record_type",
                format!("expected REFUND, PAYOUT or FILE, found {other:?}"),
            ))
        }
    };
    let id = field(1);
    validate_external_id(id, "id").map_err(|e| line_error(line, "id", strip_field(&e, "id")))?;
    let bank_ref = field(2);
    check_bank_ref(bank_ref).map_err(|problem| line_error(line, "bank_ref", problem))?;
    let channel = field(3);
    validate_external_id(channel, "channel")
        .map_err(|e| line_error(line, "channel", strip_field(&e, "channel")))?;
    let currency = Currency::parse(field(5), "currency")
        .map_err(|e| line_error(line, "currency", strip_field(&e, "currency")))?;
    let amount =
        parse_plain_amount(field(4), currency).map_err(|p| line_error(line, "amount", p))?;
    let status = match field(6) {
        "SUCCESS" => BankRecordStatus::Success,
        "FAILED" => BankRecordStatus::Failed,
        other => {
            return Err(line_error(
                line,
                "status",
                format!("expected SUCCESS or FAILED, found {other:?}"),
            ))
        }
    };
    let completed_raw = field(7);
    let completed_at = DateTime::parse_from_rfc3339(completed_raw)
        .map_err(|e| {
            line_error(
                line,
                "completed_at",
                format!("{completed_raw:?} is not an RFC 3339 instant ({e})"),
            )
        })?
        .with_timezone(&Utc);
    let reason = field(8);
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(line_error(
            line,
            "reason",
            format!("longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(line_error(line, "reason", "contains control characters"));
    }
    Ok(BankRecord {
        kind,
        id: id.to_string(),
        bank_ref: bank_ref.to_string(),
        channel: channel.to_string(),
        amount,
        status,
        completed_at,
        reason: reason.to_string(),
        original_ref: String::new(),
        line,
    })
}

/// A file amount: plain digits with an optional fraction (no sign, exponent or spaces), positive,
/// at most the currency's decimals.
pub(crate) fn parse_plain_amount(
    raw: &str,
    currency: Currency,
) -> std::result::Result<Money, String> {
    let (whole, fraction) = match raw.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (raw, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(format!("{raw:?} is not a plain decimal amount"));
    }
    Money::parse(raw, currency.code(), "amount").map_err(|e| strip_field(&e, "amount"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields() {
        let mut out = Vec::new();
        split_csv_line(r#"a,"b, c","say ""hi""",,"#, &mut out).unwrap();
        assert_eq!(out, vec!["a", "b, c", "say \"hi\"", "", ""]);
        assert!(split_csv_line(r#"a,"b"#, &mut out).is_err());
        assert!(split_csv_line(r#""a"x,b"#, &mut out).is_err());
    }
}
