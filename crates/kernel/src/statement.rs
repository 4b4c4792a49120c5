//! The bank statement of a channel's reserve account (备付金账户对账单), CSV format
//! `tuikuan-statement-v1` (`docs/ledger.md`, "Reserve reconciliation"): one row per money movement
//! the bank booked on the account on one value date.
//!
//! ```text
//! date,reference,direction,amount,currency
//! 2026-12-01,BK1F0A33C2D4E5F601,OUT,12.50,CNY
//! 2026-12-01,BK77A0C3D1E2F30411,IN,99.00,CNY
//! ```
//!
//! UTF-8, comma-separated, `\n` line ends (the last line too), the header exactly as above. No
//! field is quoted: references never contain commas, quotes or control characters.

use chrono::NaiveDate;

use crate::{Currency, Error, ErrorCode, Money, Result};

/// The format's name.
pub const FORMAT: &str = "tuikuan-statement-v1";
/// The first line of every statement.
pub const HEADER: &str = "date,reference,direction,amount,currency";

/// Which way money moved on the reserve account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Credited to the account (money in: a returned payment, money paid back).
    In,
    /// Debited from the account (money out: a refund or payout paid).
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "IN",
            Direction::Out => "OUT",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "IN" => Some(Direction::In),
            "OUT" => Some(Direction::Out),
            _ => None,
        }
    }

    /// The direction of a signed amount (positive is in).
    pub fn of_signed(minor: i64) -> Direction {
        if minor >= 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }
}

/// One movement on the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRow {
    /// The value date.
    pub date: NaiveDate,
    /// The bank's reference of the movement.
    pub reference: String,
    pub direction: Direction,
    /// Strictly positive.
    pub amount: Money,
}

impl StatementRow {
    /// The amount signed by direction, in minor units (in is positive).
    pub fn signed_minor(&self) -> i64 {
        match self.direction {
            Direction::In => self.amount.to_minor(),
            Direction::Out => -self.amount.to_minor(),
        }
    }
}

fn check_reference(reference: &str) -> std::result::Result<(), &'static str> {
    if reference.is_empty() {
        return Err("is empty");
    }
    if reference.chars().count() > 128 {
        return Err("is longer than 128 characters");
    }
    if reference
        .chars()
        .any(|c| c == ',' || c == '"' || c.is_control())
    {
        return Err("contains a comma, a quote or a control character");
    }
    Ok(())
}

/// The statement's text. Rows whose reference could not be written are refused.
pub fn render(rows: &[StatementRow]) -> Result<String> {
    let mut out = String::from(HEADER);
    out.push('\n');
    for (i, r) in rows.iter().enumerate() {
        check_reference(&r.reference)
            .map_err(|why| Error::field(&format!("rows[{i}].reference"), why))?;
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            r.date.format("%Y-%m-%d"),
            r.reference,
            r.direction.as_str(),
            r.amount.amount_string(),
            r.amount.currency().code()
        ));
    }
    Ok(out)
}

/// Parses a statement; the first malformed line refuses the whole file, naming line and field
/// (`MALFORMED_REQUEST`).
pub fn parse(text: &str) -> Result<Vec<StatementRow>> {
    let bad = |line: usize, field: &str, why: &str| {
        Error::new(
            ErrorCode::MalformedRequest,
            format!("statement line {line}: {field} {why}"),
        )
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    match lines.next().map(|l| l.trim_end_matches('\r')) {
        Some(HEADER) => {}
        _ => return Err(bad(1, "header", &format!("must be exactly {HEADER:?}"))),
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 5 {
            return Err(bad(n, "line", "must have 5 fields"));
        }
        let date = NaiveDate::parse_from_str(fields[0], "%Y-%m-%d")
            .map_err(|_| bad(n, "date", "must be YYYY-MM-DD"))?;
        check_reference(fields[1]).map_err(|why| bad(n, "reference", why))?;
        let direction =
            Direction::parse(fields[2]).ok_or_else(|| bad(n, "direction", "must be IN or OUT"))?;
        let currency =
            Currency::parse(fields[4], "currency").map_err(|e| bad(n, "currency", &e.message))?;
        let amount = Money::parse(fields[3], currency.code(), "amount")
            .map_err(|e| bad(n, "amount", &e.message))?;
        if !amount.is_positive() {
            return Err(bad(n, "amount", "must be greater than zero"));
        }
        rows.push(StatementRow {
            date,
            reference: fields[1].to_string(),
            direction,
            amount,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reference: &str, direction: Direction, amount: &str) -> StatementRow {
        StatementRow {
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            reference: reference.into(),
            direction,
            amount: Money::parse(amount, "CNY", "a").unwrap(),
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let rows = vec![
            row("BK1", Direction::Out, "12.50"),
            row("BK2", Direction::In, "99"),
        ];
        let text = render(&rows).unwrap();
        assert_eq!(
            text,
            "date,reference,direction,amount,currency\n\
             2026-12-01,BK1,OUT,12.50,CNY\n2026-12-01,BK2,IN,99.00,CNY\n"
        );
        assert_eq!(parse(&text).unwrap(), rows);
        assert_eq!(rows[0].signed_minor(), -1250);
        assert_eq!(Direction::of_signed(-1), Direction::Out);
        assert!(render(&[row("a,b", Direction::In, "1")]).is_err());
    }

    #[test]
    fn refuses_malformed_lines_by_line_and_field() {
        for (text, needle) in [
            ("date,ref\n", "line 1: header"),
            (
                "date,reference,direction,amount,currency\n2026-12-01,BK1,OUT,12.50\n",
                "line 2: line",
            ),
            (
                "date,reference,direction,amount,currency\n2026-13-01,BK1,OUT,1,CNY\n",
                "line 2: date",
            ),
            (
                "date,reference,direction,amount,currency\n2026-12-01,,OUT,1,CNY\n",
                "line 2: reference",
            ),
            (
                "date,reference,direction,amount,currency\n2026-12-01,B,SIDEWAYS,1,CNY\n",
                "line 2: direction",
            ),
            (
                "date,reference,direction,amount,currency\n2026-12-01,B,IN,0,CNY\n",
                "line 2: amount",
            ),
            (
                "date,reference,direction,amount,currency\n2026-12-01,B,IN,1,XYZ\n",
                "line 2: currency",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::MalformedRequest);
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
    }
}
