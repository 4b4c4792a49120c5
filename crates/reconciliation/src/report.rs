//! Reconciliation reports: one run as CSV or as an .xlsx workbook (sheet `summary`: counts and
//! amounts per outcome; sheet `items`: one row per item).

use rust_decimal::prelude::ToPrimitive;
use rust_xlsxwriter::{Format, Workbook};
use tuikuan_kernel::{Error, Money, Result};

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

/// One cell of a report: text stays text (ids, references, card numbers are never turned into
/// numbers), money is a number in its currency's decimals.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Money(Money),
    Count(u64),
    Empty,
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        let s = s.into();
        if s.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(s)
        }
    }

    /// The CSV form: money with exactly the currency's decimals (`12.50`, `100` for JPY).
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Money(m) => m.amount_string(),
            Cell::Count(n) => n.to_string(),
            Cell::Empty => String::new(),
        }
    }
}

fn item_rows(run: &Run) -> impl Iterator<Item = [Cell; 13]> + '_ {
    run.items.iter().map(|i| {
        let m = &i.item;
        let amount = |a: Option<Money>| a.map(Cell::Money).unwrap_or(Cell::Empty);
        [
            Cell::Count(u64::from(i.seq)),
            Cell::text(m.refund_id.clone()),
            Cell::text(m.bank_reference_id.clone()),
            Cell::text(m.bank_ref.clone()),
            Cell::text(m.outcome.as_str()),
            amount(m.platform_amount),
            amount(m.bank_amount),
            Cell::text(
                m.platform_amount
                    .or(m.bank_amount)
                    .map(|a| a.currency().code().to_string())
                    .unwrap_or_default(),
            ),
            Cell::text(m.bank_status.map(|s| s.as_str()).unwrap_or_default()),
            m.line.map(|l| Cell::Count(l as u64)).unwrap_or(Cell::Empty),
            Cell::text(if i.state == WriteBackState::Done {
                "1"
            } else {
                "0"
            }),
            Cell::text(i.discrepancy_id.clone().unwrap_or_default()),
            Cell::text(m.detail.clone()),
        ]
    })
}

/// The run as CSV: a header line with [`ITEM_COLUMNS`], one line per item.
pub fn to_csv(run: &Run) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::internal(format!("csv report: {e}"));
    w.write_record(ITEM_COLUMNS).map_err(io)?;
    for row in item_rows(run) {
        w.write_record(row.iter().map(Cell::csv)).map_err(io)?;
    }
    w.into_inner()
        .map_err(|e| Error::internal(format!("csv report: {e}")))
}

/// Number formats of money cells, by the currency's decimals.
struct Formats {
    two: Format,
    none: Format,
}

impl Formats {
    fn new() -> Formats {
        Formats {
            two: Format::new().set_num_format("#,##0.00"),
            none: Format::new().set_num_format("#,##0"),
        }
    }

    fn money(&self, m: &Money) -> &Format {
        if m.currency().decimals() == 0 {
            &self.none
        } else {
            &self.two
        }
    }
}

fn write_cell(
    sheet: &mut rust_xlsxwriter::Worksheet,
    formats: &Formats,
    r: u32,
    c: u16,
    cell: &Cell,
) -> std::result::Result<(), rust_xlsxwriter::XlsxError> {
    match cell {
        Cell::Text(s) => sheet.write_string(r, c, s).map(|_| ()),
        // A number for spreadsheets to sum; the decimal is exact to the cent (at most 15
        // significant digits), formatted with the currency's decimals.
        Cell::Money(m) => sheet
            .write_number_with_format(r, c, m.amount().to_f64().unwrap_or(0.0), formats.money(m))
            .map(|_| ()),
        Cell::Count(n) => sheet.write_number(r, c, *n as f64).map(|_| ()),
        Cell::Empty => Ok(()),
    }
}

/// The run as an .xlsx workbook: `summary` (run facts, then counts per outcome) and `items`.
/// Amounts are numbers with a money format, so finance can sum them; ids and references are text.
pub fn to_xlsx(run: &Run) -> Result<Vec<u8>> {
    let xe = |e: rust_xlsxwriter::XlsxError| Error::internal(format!("xlsx report: {e}"));
    let formats = Formats::new();
    let mut book = Workbook::new();
    {
        let sheet = book.add_worksheet();
        sheet.set_name("summary").map_err(xe)?;
        let facts = [
            ("run_id", Cell::text(run.run_id.clone())),
            ("channel", Cell::text(run.channel.clone())),
            ("date", Cell::text(format_date(run.date))),
            ("format", Cell::text(run.file_format.clone())),
            ("file_sha256", Cell::text(run.file_sha256.clone())),
            ("file_rows", Cell::Count(u64::from(run.file_rows))),
            (
                "supersedes",
                Cell::text(run.supersedes.clone().unwrap_or_default()),
            ),
            (
                "superseded_by",
                Cell::text(run.superseded_by.clone().unwrap_or_default()),
            ),
            (
                "pending_write_backs",
                Cell::Count(u64::from(run.pending_write_backs())),
            ),
            ("discrepancies", Cell::Count(u64::from(run.discrepancies))),
        ];
        let mut r: u32 = 0;
        for (k, v) in facts {
            sheet.write_string(r, 0, k).map_err(xe)?;
            write_cell(sheet, &formats, r, 1, &v).map_err(xe)?;
            r += 1;
        }
        r += 1;
        for (c, name) in SUMMARY_COLUMNS.iter().enumerate() {
            sheet.write_string(r, col(c), *name).map_err(xe)?;
        }
        for t in run.totals()? {
            r += 1;
            let row = [
                Cell::text(t.outcome.as_str()),
                Cell::Count(u64::from(t.count)),
                Cell::Money(t.amount),
                Cell::text(t.amount.currency().code()),
            ];
            for (c, cell) in row.iter().enumerate() {
                write_cell(sheet, &formats, r, col(c), cell).map_err(xe)?;
            }
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
            for (c, cell) in row.iter().enumerate() {
                write_cell(sheet, &formats, r, col(c), cell).map_err(xe)?;
            }
        }
    }
    book.save_to_buffer().map_err(xe)
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}
