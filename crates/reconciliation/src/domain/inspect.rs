//! Reading a bank file for people, without matching it: what `tuikuan ctl recon inspect` prints
//! (the format, layout and encoding read, every row, the summary checks, and the error with its
//! line and field that would make a run refuse the file). Pure: bytes in, a report out.

use chrono::NaiveDate;
use tuikuan_kernel::Error;

use super::{
    line_error_parts, parse_all, parser_for, BankRecord, ContentDigest, FileFormat, FileStats,
    ParseOptions, TextEncoding,
};

/// The most rows an inspection lists (the counts cover every row).
pub const MAX_INSPECT_ROWS: usize = 1_000_000;

/// Why a file would be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectError {
    /// 1-based line (0 when the problem is not on a line, such as an undetectable format).
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// What an inspection found.
#[derive(Debug, Clone)]
pub struct InspectReport {
    /// The format read (`None` when it could not be told).
    pub format: Option<FileFormat>,
    /// Whether the format was detected rather than given.
    pub detected: bool,
    pub stats: FileStats,
    /// The rows read (up to [`MAX_INSPECT_ROWS`]); before an error, the rows read so far.
    pub rows: Vec<BankRecord>,
    pub bytes: usize,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// The content digest runs are keyed by (see [`ContentDigest`]).
    pub content_sha256: String,
    pub error: Option<InspectError>,
}

impl InspectReport {
    /// Whether a run would refuse the file.
    pub fn refused(&self) -> bool {
        self.error.is_some()
    }
}

fn error_of(e: &Error) -> InspectError {
    match line_error_parts(e) {
        Some((line, field, message)) => InspectError {
            line,
            field,
            message,
        },
        None => InspectError {
            line: 0,
            field: e
                .message
                .split_once(": ")
                .map(|(f, _)| f.to_string())
                .unwrap_or_default(),
            message: e.message.clone(),
        },
    }
}

/// Reads `bytes` as `format` (detected when `None`).
pub fn inspect(
    bytes: &[u8],
    format: Option<FileFormat>,
    encoding: TextEncoding,
    business_date: NaiveDate,
) -> InspectReport {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let content_sha256 = ContentDigest::of(bytes);
    let (format, detected) = match format {
        Some(f) => (Some(f), false),
        None => (FileFormat::detect(bytes), true),
    };
    let mut report = InspectReport {
        format,
        detected,
        stats: FileStats::default(),
        rows: Vec::new(),
        bytes: bytes.len(),
        sha256,
        content_sha256,
        error: None,
    };
    let Some(format) = format else {
        report.error = Some(InspectError {
            line: 1,
            field: "format".into(),
            message: "cannot tell the format from the first line: give --format".into(),
        });
        return report;
    };
    let parser = parser_for(
        format,
        ParseOptions {
            encoding,
            business_date,
        },
    );
    let mut rows = Vec::new();
    let mut input = bytes;
    let result = parser.parse(&mut input, &mut |r| {
        if rows.len() < MAX_INSPECT_ROWS {
            rows.push(r);
        }
        Ok(())
    });
    report.rows = rows;
    match result {
        Ok(stats) => report.stats = stats,
        Err(e) => report.error = Some(error_of(&e)),
    }
    report
}

/// Parses a whole file as `format` (tests and tools).
pub fn parse_bytes(
    bytes: &[u8],
    format: FileFormat,
    options: ParseOptions,
) -> tuikuan_kernel::Result<(Vec<BankRecord>, FileStats)> {
    parse_all(parser_for(format, options).as_ref(), bytes)
}
