//! The working-day calendar (工作日): weekdays, minus public holidays, plus make-up working days (调休).
//!
//! Calendars are loaded from a TOML file (see `config/calendar-2026.toml` at the repository root):
//!
//! ```toml
//! name = "mainland China 2026"   # optional, ignored
//! year = 2026                    # optional, ignored
//! holidays = ["2026-01-01", "2026-01-02"]
//! makeup_workdays = ["2026-01-04"]
//! ```
//!
//! Dates are `YYYY-MM-DD` strings (TOML dates are accepted too). A make-up working day must fall on
//! a weekend, and no date may be in both lists; either mistake is an error naming the date.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorCode, Result};

/// Which dates are working days.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingCalendar {
    /// Public holidays that fall on weekdays and are not worked.
    #[serde(default)]
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days that are worked (调休).
    #[serde(default)]
    pub makeup_workdays: BTreeSet<NaiveDate>,
}

/// The calendar file as written; validated into a [`WorkingCalendar`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    year: Option<i64>,
    #[serde(default)]
    holidays: Vec<toml::Value>,
    #[serde(default)]
    makeup_workdays: Vec<toml::Value>,
}

fn calendar_err(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidArgument, message)
}

fn parse_dates(values: &[toml::Value], list: &str) -> Result<BTreeSet<NaiveDate>> {
    let mut dates = BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        let text = match value {
            toml::Value::String(s) => s.trim().to_string(),
            toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt.to_string(),
            other => {
                return Err(calendar_err(format!(
                    "calendar: {list}[{i}]: expected a date like \"2026-01-01\", got {other}"
                )))
            }
        };
        let date = NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| {
            calendar_err(format!(
                "calendar: {list}[{i}]: {text:?} is not a date (YYYY-MM-DD)"
            ))
        })?;
        dates.insert(date);
    }
    Ok(dates)
}

impl WorkingCalendar {
    /// A calendar from its lists; a date in both lists, or a make-up working day that is not a
    /// weekend day, is an error naming the date.
    pub fn new(
        holidays: BTreeSet<NaiveDate>,
        makeup_workdays: BTreeSet<NaiveDate>,
    ) -> Result<WorkingCalendar> {
        if let Some(both) = holidays.intersection(&makeup_workdays).next() {
            return Err(calendar_err(format!(
                "calendar: {both} is both a holiday and a make-up working day"
            )));
        }
        if let Some(weekday) = makeup_workdays
            .iter()
            .find(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        {
            return Err(calendar_err(format!(
                "calendar: make-up working day {weekday} is a {:?}, not a weekend day",
                weekday.weekday()
            )));
        }
        Ok(WorkingCalendar {
            holidays,
            makeup_workdays,
        })
    }

    /// Parses a calendar file's text (format in the module docs).
    pub fn from_toml_str(text: &str) -> Result<WorkingCalendar> {
        let file: CalendarFile =
            toml::from_str(text).map_err(|e| calendar_err(format!("calendar: {}", e.message())))?;
        WorkingCalendar::new(
            parse_dates(&file.holidays, "holidays")?,
            parse_dates(&file.makeup_workdays, "makeup_workdays")?,
        )
    }

    /// Reads and parses a calendar file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<WorkingCalendar> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| calendar_err(format!("calendar file {}: {e}", path.display())))?;
        WorkingCalendar::from_toml_str(&text)
            .map_err(|e| calendar_err(format!("{} (in {})", e.message, path.display())))
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.makeup_workdays.contains(&date) {
            return true;
        }
        if self.holidays.contains(&date) {
            return false;
        }
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The first working day on or after `date`.
    pub fn this_or_next_working_day(&self, date: NaiveDate) -> NaiveDate {
        let mut d = date;
        // A calendar year never has more than a few weeks of consecutive holidays; bound the walk.
        for _ in 0..366 {
            if self.is_working_day(d) {
                return d;
            }
            d = d.succ_opt().unwrap_or(d);
        }
        d
    }

    /// The date `n` working days after `date` (n = 0 gives the first working day on or after it).
    pub fn add_working_days(&self, date: NaiveDate, n: u32) -> NaiveDate {
        let mut d = self.this_or_next_working_day(date);
        for _ in 0..n {
            d = self.this_or_next_working_day(d.succ_opt().unwrap_or(d));
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn weekends_holidays_and_makeup_days() {
        let cal = WorkingCalendar {
            holidays: [d(2026, 10, 1), d(2026, 10, 2)].into_iter().collect(),
            makeup_workdays: [d(2026, 10, 10)].into_iter().collect(),
        };
        assert!(cal.is_working_day(d(2026, 9, 30))); // Wednesday
        assert!(!cal.is_working_day(d(2026, 10, 1))); // holiday
        assert!(!cal.is_working_day(d(2026, 10, 3))); // Saturday
        assert!(cal.is_working_day(d(2026, 10, 10))); // make-up Saturday
        assert_eq!(cal.this_or_next_working_day(d(2026, 10, 1)), d(2026, 10, 5));
        assert_eq!(cal.add_working_days(d(2026, 9, 30), 1), d(2026, 10, 5));
    }

    #[test]
    fn toml_lists_and_metadata() {
        let cal = WorkingCalendar::from_toml_str(
            r#"
            # a comment
            name = "test"
            year = 2026
            holidays = ["2026-10-01", 2026-10-02]
            makeup_workdays = ["2026-10-10"]
            "#,
        )
        .unwrap();
        assert_eq!(cal.holidays.len(), 2);
        assert!(!cal.is_working_day(d(2026, 10, 2)));
        assert!(cal.is_working_day(d(2026, 10, 10)));
        // Both lists are optional.
        assert_eq!(
            WorkingCalendar::from_toml_str("").unwrap(),
            WorkingCalendar::default()
        );
    }

    #[test]
    fn bad_calendars_name_the_problem() {
        for (text, want) in [
            (
                r#"holidays = ["2026-10-10"]
                makeup_workdays = ["2026-10-10"]"#,
                "2026-10-10 is both a holiday and a make-up working day",
            ),
            (
                r#"holidays = ["2026-02-30"]"#,
                "holidays[0]: \"2026-02-30\" is not a date",
            ),
            (r#"makeup_workdays = ["2026-10-09"]"#, "2026-10-09 is a Fri"),
            (r#"holidays = [20261001]"#, "holidays[0]: expected a date"),
            (r#"holiday = ["2026-10-01"]"#, "unknown field"),
            (r#"holidays = ["#, "calendar: "),
        ] {
            let e = WorkingCalendar::from_toml_str(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
        let e = WorkingCalendar::from_file("/nonexistent/calendar.toml").unwrap_err();
        assert!(
            e.message.contains("/nonexistent/calendar.toml"),
            "{}",
            e.message
        );
    }

    /// The shipped example: mainland China's 2026 holidays and make-up working days.
    #[test]
    fn the_shipped_2026_calendar() {
        let cal =
            WorkingCalendar::from_toml_str(include_str!("../../../config/calendar-2026.toml"))
                .unwrap();
        // Holidays on weekdays.
        assert!(!cal.is_working_day(d(2026, 1, 1))); // New Year, Thursday
        assert!(!cal.is_working_day(d(2026, 2, 17))); // Spring Festival, Tuesday
        assert!(!cal.is_working_day(d(2026, 10, 1))); // National Day, Thursday
        assert!(!cal.is_working_day(d(2026, 10, 7))); // National Day, Wednesday
                                                      // Make-up working days on weekends.
        assert!(cal.is_working_day(d(2026, 1, 4))); // Sunday
        assert!(cal.is_working_day(d(2026, 2, 14))); // Saturday
        assert!(cal.is_working_day(d(2026, 9, 20))); // Sunday
        assert!(cal.is_working_day(d(2026, 10, 10))); // Saturday
                                                      // An ordinary weekend and an ordinary weekday.
        assert!(!cal.is_working_day(d(2026, 3, 7))); // Saturday
        assert!(!cal.is_working_day(d(2026, 3, 8))); // Sunday
        assert!(cal.is_working_day(d(2026, 3, 9))); // Monday
                                                    // A refund accepted on the last day before National Day goes into the batch of 8 October.
        assert_eq!(cal.add_working_days(d(2026, 9, 30), 1), d(2026, 10, 8));
        assert_eq!(cal.this_or_next_working_day(d(2026, 2, 15)), d(2026, 2, 24));
    }
}
