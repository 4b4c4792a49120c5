//! Reconciliation reports: one run as CSV or as an .xlsx workbook (sheet `summary`: counts and
//! amounts per outcome; sheet `items`: one row per item).

use rust_xlsxwriter::Workbook;
use tuikuan_kernel::{Error, Result};

use crate::domain::{format_date, Run, WriteBackState};

/// The columns of the items table, in both formats.
pub const ITEM_COLUMNS: [&str; 13] = [
    "seq",
    "refund_id",
    "bank_reference_id",
    "bank_ref",
    "outcome",
    "platform_amount",
    "bank_amount",
    "currency",
    "bank_status",
    "line",
    "written_back",
    "discrepancy_id",
    "detail",
];

/// The columns of the summary table.
pub const SUMMARY_COLUMNS: [&str; 4] = ["outcome", "count", "amount", "currency"];

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    Xlsx,
}

impl ReportFormat {
    pub fn parse(s: &str) -> Result<ReportFormat> {
        match s.to_ascii_lowercase().as_str() {
            "" | "csv" => Ok(ReportFormat::Csv),
            "xlsx" => Ok(ReportFormat::Xlsx),
            other => Err(Error::field(
                "format",
                format!(
                    "expected csv or xlsx, found {}",
                    tuikuan_kernel::echo(other)
                ),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Xlsx => "xlsx",
        }
    }
}

/// The file name of a run's report.
pub fn file_name(run: &Run, format: ReportFormat) -> String {
    format!(
        "recon-{}-{}-{}.{}",
        run.channel,
        format_date(run.date),
        run.run_id,
        format.extension()
    )
}

fn item_rows(run: &Run) -> impl Iterator<Item = [String; 13]> + '_ {
    run.items.iter().map(|i| {
        let m = &i.item;
        let amount =
            |a: Option<tuikuan_kernel::Money>| a.map(|a| a.amount_string()).unwrap_or_default();
        [
            i.seq.to_string(),
            m.refund_id.clone(),
            m.bank_reference_id.clone(),
            m.bank_ref.clone(),
            m.outcome.as_str().to_string(),
            amount(m.platform_amount),
            amount(m.bank_amount),
            m.platform_amount
                .or(m.bank_amount)
                .map(|a| a.currency().code().to_string())
                .unwrap_or_default(),
            m.bank_status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            m.line.map(|l| l.to_string()).unwrap_or_default(),
            if i.state == WriteBackState::Done {
                "1"
            } else {
                "0"
            }
            .to_string(),
            i.discrepancy_id.clone().unwrap_or_default(),
            m.detail.clone(),
        ]
    })
}

/// The run as CSV: a header line with [`ITEM_COLUMNS`], one line per item.
pub fn to_csv(run: &Run) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::internal(format!("csv report: {e}"));
    w.write_record(ITEM_COLUMNS).map_err(io)?;
    for row in item_rows(run) {
        w.write_record(&row).map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| Error::internal(format!("csv report: {e}")))
}

/// The run as an .xlsx workbook: `summary` (run facts, then counts per outcome) and `items`.
pub fn to_xlsx(run: &Run) -> Result<Vec<u8>> {
    let xe = |e: rust_xlsxwriter::XlsxError| Error::internal(format!("xlsx report: {e}"));
    let mut book = Workbook::new();
    {
        let sheet = book.add_worksheet();
        sheet.set_name("summary").map_err(xe)?;
        let facts = [
            ("run_id", run.run_id.clone()),
            ("channel", run.channel.clone()),
            ("date", format_date(run.date)),
            ("format", run.file_format.clone()),
            ("file_sha256", run.file_sha256.clone()),
            ("file_rows", run.file_rows.to_string()),
            ("supersedes", run.supersedes.clone().unwrap_or_default()),
            (
                "superseded_by",
                run.superseded_by.clone().unwrap_or_default(),
            ),
            ("pending_write_backs", run.pending_write_backs().to_string()),
            ("discrepancies", run.discrepancies.to_string()),
        ];
        let mut r: u32 = 0;
        for (k, v) in facts {
            sheet.write_string(r, 0, k).map_err(xe)?;
            sheet.write_string(r, 1, v).map_err(xe)?;
            r += 1;
        }
        r += 1;
        for (c, name) in SUMMARY_COLUMNS.iter().enumerate() {
            sheet.write_string(r, col(c), *name).map_err(xe)?;
        }
        for t in run.totals()? {
            r += 1;
            sheet.write_string(r, 0, t.outcome.as_str()).map_err(xe)?;
            sheet.write_number(r, 1, f64::from(t.count)).map_err(xe)?;
            // Amounts as exact decimal text (never floats for money).
            sheet
                .write_string(r, 2, t.amount.amount_string())
                .map_err(xe)?;
            sheet
                .write_string(r, 3, t.amount.currency().code())
                .map_err(xe)?;
        }
    }
    {
        let sheet = book.add_worksheet();
        sheet.set_name("items").map_err(xe)?;
        for (c, name) in ITEM_COLUMNS.iter().enumerate() {
            sheet.write_string(0, col(c), *name).map_err(xe)?;
        }
        for (r, row) in item_rows(run).enumerate() {
            let r = u32::try_from(r + 1)
                .map_err(|_| Error::field("run", "too many items for one worksheet"))?;
            if r > 1_048_575 {
                return Err(Error::field(
                    "run",
                    "more items than an .xlsx worksheet holds: export csv",
                ));
            }
            for (c, value) in row.iter().enumerate() {
                if !value.is_empty() {
                    sheet.write_string(r, col(c), value).map_err(xe)?;
                }
            }
        }
    }
    book.save_to_buffer().map_err(xe)
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}
