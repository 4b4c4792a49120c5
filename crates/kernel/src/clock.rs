//! The injectable clock. All time in tuikuan comes from a [`Clock`], so tests and the demo can run
//! days in seconds with a [`ManualClock`].

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Milliseconds since the Unix epoch (the storage form of instants).
    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// Today's business date (China Standard Time, UTC+8), which dates reconciliation and daily files.
    fn today(&self) -> NaiveDate {
        business_date(self.now())
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The business time zone: UTC+8 (China Standard Time).
pub fn business_tz() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// The business date of an instant.
pub fn business_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&business_tz()).date_naive()
}

/// Start of a business date, as an instant.
pub fn start_of_business_date(date: NaiveDate) -> DateTime<Utc> {
    let naive = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    business_tz()
        .from_local_datetime(&naive)
        .single()
        .expect("fixed offsets have no gaps")
        .with_timezone(&Utc)
}

/// Converts stored milliseconds back to an instant.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A manual clock at 10:00 business time on the given date.
    pub fn at_business(date: NaiveDate, hour: u32) -> Self {
        ManualClock::new(start_of_business_date(date) + Duration::hours(i64::from(hour)))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let c = ManualClock::at_business(d, 23);
        assert_eq!(c.today(), d);
        let shared: SharedClock = Arc::new(c.clone());
        c.advance(Duration::hours(2));
        assert_eq!(shared.today(), d.succ_opt().unwrap());
        assert_eq!(from_ms(shared.now_ms()), shared.now());
    }
}
