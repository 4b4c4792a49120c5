//! `tuikuan ctl recon inspect --file F`: reads a bank's clearing file offline — no service needs
//! to run — and prints what reconciliation would read: the format, layout and encoding, every
//! row (bank reference, amount, status, refund or payment), the summary checks, and the error with
//! its line and field that would make a run refuse the file. Exits non-zero when it would.
//! Finance uses it to look at a bank's file before uploading it.

use std::path::Path;

use serde_json::{json, Value};
use tuikuan_reconciliation::domain::inspect::{inspect, InspectReport};
use tuikuan_reconciliation::domain::{parse_business_date, FileFormat, RecordKind, TextEncoding};

use crate::output::{table, Output};

/// What `--format` asks for: `auto` detects it.
fn format_arg(s: &str) -> anyhow::Result<Option<FileFormat>> {
    if s.is_empty() || s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    FileFormat::parse(s)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--format: {}", e.message.trim_start_matches("format: ")))
}

/// The report as JSON (the shape `--output json` prints).
pub fn report_json(path: &Path, report: &InspectReport) -> Value {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "line": r.line,
                "kind": if r.kind == RecordKind::Payment { "payment" } else { "refund" },
                "bank_reference": r.id,
                "bank_ref": r.bank_ref,
                "original_ref": r.original_ref,
                "amount": r.amount.amount_string(),
                "currency": r.amount.currency().code(),
                "status": r.status.as_str(),
            })
        })
        .collect();
    let mut value = json!({
        "file": path.display().to_string(),
        "bytes": report.bytes,
        "sha256": report.sha256,
        "content_sha256": report.content_sha256,
        "format": report.format.map(|f| f.as_str()).unwrap_or(""),
        "format_detected": report.detected,
        "layout": report.stats.layout,
        "encoding": report.stats.encoding,
        "rows": report.stats.rows,
        "refund_rows": report.stats.records,
        "payment_rows": report.stats.skipped,
        "summary_check": report.stats.summary.join("; "),
        "verdict": if report.refused() { "REFUSED" } else { "ACCEPTED" },
        "items": rows,
    });
    if let Some(e) = &report.error {
        value["error"] = json!({
            "line": e.line,
            "field": e.field,
            "message": e.message,
        });
    }
    value
}

/// Runs the inspection; an error (non-zero exit) when a run would refuse the file.
pub fn run(
    file: &Path,
    format: &str,
    encoding: &str,
    date: &str,
    output: Output,
) -> anyhow::Result<()> {
    let format = format_arg(format)?;
    let encoding = TextEncoding::parse(encoding).map_err(|e| {
        anyhow::anyhow!("--encoding: {}", e.message.trim_start_matches("encoding: "))
    })?;
    let date = if date.is_empty() {
        tuikuan_kernel::clock::business_date(chrono::Utc::now())
    } else {
        parse_business_date(date, "--date").map_err(|e| anyhow::anyhow!("{}", e.message))?
    };
    let bytes = crate::ctl::read_file(&file.to_path_buf())?;
    let report = inspect(&bytes, format, encoding, date);
    let value = report_json(file, &report);
    match output {
        Output::Json => crate::outln!("{}", serde_json::to_string_pretty(&value)?),
        Output::Table => crate::out!("{}", table(&value)),
    }
    if let Some(e) = &report.error {
        anyhow::bail!(
            "a run would refuse {}: line {}: {}: {}",
            file.display(),
            e.line,
            e.field,
            e.message
        );
    }
    Ok(())
}
