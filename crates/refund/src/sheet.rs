//! Writes a batch's [`SheetModel`] as an .xlsx workbook (rust_xlsxwriter), and hashes it.
//!
//! Text cells are written as strings with the text number format (`@`), so long card and order
//! numbers stay text in any reader; amounts are number cells (`0.00` for yuan, whole numbers for
//! fen). After the rows comes an empty row, then the summary (row count, total amount) in the
//! first two columns. The workbook's creation time is the batch date, so the same batch renders
//! to the same bytes.

use chrono::{Datelike, NaiveDate};
use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook, Worksheet, XlsxError};
use sha2::{Digest, Sha256};
use tuikuan_kernel::{Error, Result};

use crate::domain::batch::{Cell, SheetModel};

fn xlsx_err(e: XlsxError) -> Error {
    Error::internal(format!("cannot write the spreadsheet: {e}"))
}

fn decimal_format(decimals: u32) -> Format {
    let pattern = if decimals == 0 {
        "0".to_string()
    } else {
        format!("0.{}", "0".repeat(usize::try_from(decimals).unwrap_or(2)))
    };
    Format::new().set_num_format(pattern)
}

fn write_cell(
    ws: &mut Worksheet,
    row: u32,
    col: u16,
    cell: &Cell,
    text: &Format,
    integer: &Format,
) -> Result<()> {
    match cell {
        Cell::Text(s) => ws.write_string_with_format(row, col, s, text),
        Cell::Integer(n) => {
            // Minor units of a bounded amount and row counts are far below 2^53: exact in f64.
            let value: f64 = n
                .to_string()
                .parse()
                .map_err(|_| Error::internal(format!("cannot write {n} as a number")))?;
            ws.write_number_with_format(row, col, value, integer)
        }
        Cell::Decimal { value, decimals } => {
            let number: f64 = value
                .parse()
                .map_err(|_| Error::internal(format!("cannot write {value} as a number")))?;
            ws.write_number_with_format(row, col, number, &decimal_format(*decimals))
        }
    }
    .map_err(xlsx_err)?;
    Ok(())
}

/// The workbook's bytes.
pub fn write_xlsx(model: &SheetModel, date: NaiveDate) -> Result<Vec<u8>> {
    let mut wb = Workbook::new();
    let created = ExcelDateTime::from_ymd(
        u16::try_from(date.year()).unwrap_or(2000),
        u8::try_from(date.month()).unwrap_or(1),
        u8::try_from(date.day()).unwrap_or(1),
    )
    .map_err(xlsx_err)?;
    wb.set_properties(&DocProperties::new().set_creation_datetime(&created));
    let text = Format::new().set_num_format("@");
    let integer = Format::new().set_num_format("0");
    let bold = Format::new().set_bold().set_num_format("@");
    let ws = wb.add_worksheet();
    ws.set_name(model.sheet_name.as_str()).map_err(xlsx_err)?;
    for (c, header) in model.header.iter().enumerate() {
        let c = u16::try_from(c).map_err(|_| Error::internal("too many columns"))?;
        ws.write_string_with_format(0, c, header, &bold)
            .map_err(xlsx_err)?;
        ws.set_column_width(c, 22).map_err(xlsx_err)?;
    }
    let mut r: u32 = 1;
    for row in &model.rows {
        for (c, cell) in row.iter().enumerate() {
            let c = u16::try_from(c).map_err(|_| Error::internal("too many columns"))?;
            write_cell(ws, r, c, cell, &text, &integer)?;
        }
        r += 1;
    }
    // One empty row, then the summary.
    r += 1;
    for (label, cell) in &model.summary {
        ws.write_string_with_format(r, 0, label, &bold)
            .map_err(xlsx_err)?;
        write_cell(ws, r, 1, cell, &text, &integer)?;
        r += 1;
    }
    wb.save_to_buffer().map_err(xlsx_err)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{open_workbook_from_rs, Data, Reader, Xlsx};

    use super::*;

    #[test]
    fn an_independent_reader_sees_text_numbers_and_the_summary() {
        let model = SheetModel {
            sheet_name: "退款明细".into(),
            header: vec!["卡号".into(), "金额(元)".into(), "分".into()],
            rows: vec![vec![
                Cell::Text("6222020200112233445".into()),
                Cell::Decimal {
                    value: "12.50".into(),
                    decimals: 2,
                },
                Cell::Integer(1250),
            ]],
            summary: vec![
                ("COUNT".into(), Cell::Integer(1)),
                (
                    "TOTAL".into(),
                    Cell::Decimal {
                        value: "12.50".into(),
                        decimals: 2,
                    },
                ),
            ],
        };
        let date = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let bytes = write_xlsx(&model, date).unwrap();
        assert_eq!(bytes, write_xlsx(&model, date).unwrap(), "deterministic");
        assert_eq!(sha256_hex(&bytes).len(), 64);
        let mut wb: Xlsx<_> = open_workbook_from_rs(Cursor::new(bytes)).unwrap();
        let range = wb.worksheet_range("退款明细").unwrap();
        assert_eq!(
            range.get_value((1, 0)),
            Some(&Data::String("6222020200112233445".into()))
        );
        assert_eq!(range.get_value((1, 1)), Some(&Data::Float(12.5)));
        assert_eq!(range.get_value((1, 2)), Some(&Data::Float(1250.0)));
        assert_eq!(range.get_value((3, 0)), Some(&Data::String("COUNT".into())));
        assert_eq!(range.get_value((4, 1)), Some(&Data::Float(12.5)));
    }
}
