//! The working-day calendar (工作日): weekdays, minus public holidays, plus make-up working days (调休).

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

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

impl WorkingCalendar {
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
}
