//! Dates in the journal: every posting carries a value date (the bank's date of the movement) and
//! the bank's reference where one exists; postings are read by account and value-date range, and
//! balances and the trial balance are summed from the journal's entries as of a value date.
//!
//! A value date is not part of a posting's content (its fingerprint): a repeat of a request id
//! answers with the first posting, whatever date the repeat names. When the caller names no value
//! date, the ledger uses the business date (UTC+8) on which it posted.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use tuikuan_kernel::{Error, ErrorCode};

use super::{AccountKey, Balance, Side};

/// The longest bank reference kept with a posting.
pub const MAX_BANK_REFERENCE_LEN: usize = 128;

/// A posting's value date and bank reference, as the caller gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostingMeta {
    /// `None`: the business date of posting.
    pub value_date: Option<NaiveDate>,
    /// Empty when the movement has no bank reference (a fee, a sweep, a settlement).
    pub bank_reference: String,
}

impl PostingMeta {
    /// A checked meta: a bank reference is at most 128 characters, none of them a control
    /// character (banks' references are copied as the bank wrote them).
    pub fn new(value_date: Option<NaiveDate>, bank_reference: &str) -> Result<PostingMeta, Error> {
        if bank_reference.chars().count() > MAX_BANK_REFERENCE_LEN {
            return Err(Error::field(
                "bank_reference",
                format!("longer than {MAX_BANK_REFERENCE_LEN} characters"),
            ));
        }
        if bank_reference.chars().any(char::is_control) {
            return Err(Error::new(
                ErrorCode::MalformedId,
                "bank_reference: no control characters",
            ));
        }
        Ok(PostingMeta {
            value_date,
            bank_reference: bank_reference.to_string(),
        })
    }

    /// A meta from the wire: `value_date` is `YYYY-MM-DD` or empty.
    pub fn parse(value_date: &str, bank_reference: &str) -> Result<PostingMeta, Error> {
        PostingMeta::new(
            parse_optional_date(value_date, "value_date")?,
            bank_reference,
        )
    }

    /// The value date to store: the caller's, else `posting_date`.
    pub fn value_date_or(&self, posting_date: NaiveDate) -> NaiveDate {
        self.value_date.unwrap_or(posting_date)
    }
}

/// Parses `YYYY-MM-DD`; empty is `None`.
pub fn parse_optional_date(value: &str, field: &str) -> Result<Option<NaiveDate>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| Error::field(field, "must be a date YYYY-MM-DD"))
}

/// The storage and wire form of a date: `YYYY-MM-DD` (its text order is date order).
pub fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// An inclusive range of value dates; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DateRange {
    /// Everything up to and including `date` (a balance as of a date).
    pub fn as_of(date: Option<NaiveDate>) -> DateRange {
        DateRange {
            from: None,
            to: date,
        }
    }

    /// One value date.
    pub fn day(date: NaiveDate) -> DateRange {
        DateRange {
            from: Some(date),
            to: Some(date),
        }
    }

    /// A range from the wire (`from_date`, `to_date`, each `YYYY-MM-DD` or empty); `from` after
    /// `to` is INVALID_ARGUMENT.
    pub fn parse(from: &str, to: &str) -> Result<DateRange, Error> {
        let range = DateRange {
            from: parse_optional_date(from, "from_date")?,
            to: parse_optional_date(to, "to_date")?,
        };
        if let (Some(f), Some(t)) = (range.from, range.to) {
            if f > t {
                return Err(Error::field("from_date", "is after to_date"));
            }
        }
        Ok(range)
    }

    pub fn contains(&self, date: NaiveDate) -> bool {
        self.from.is_none_or(|f| date >= f) && self.to.is_none_or(|t| date <= t)
    }

    pub fn is_open(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

/// Sums journal lines (account, side, amount in minor units) into one balance per account, in
/// account id order: the balances and trial balance "from the journal", independent of the
/// running totals kept with the accounts.
pub fn sum_lines(lines: impl IntoIterator<Item = (AccountKey, Side, i64)>) -> Vec<Balance> {
    let mut by_account: BTreeMap<String, Balance> = BTreeMap::new();
    for (account, side, minor) in lines {
        let slot = by_account
            .entry(account.account_id())
            .or_insert_with(|| Balance::zero(account));
        match side {
            Side::Debit => slot.debits_minor += minor,
            Side::Credit => slot.credits_minor += minor,
        }
    }
    by_account.into_values().collect()
}

/// The accounts whose running totals differ from the journal's sums (both sorted or not): a
/// difference means storage was changed outside the ledger. Accounts with zero totals on one side
/// and missing on the other agree.
pub fn running_total_differences(journal: &[Balance], running: &[Balance]) -> Vec<String> {
    let key = |b: &Balance| (b.account.account_id(), (b.debits_minor, b.credits_minor));
    let j: BTreeMap<String, (i64, i64)> = journal.iter().map(key).collect();
    let r: BTreeMap<String, (i64, i64)> = running.iter().map(key).collect();
    let mut ids: Vec<&String> = j.keys().chain(r.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter(|id| {
            j.get(*id).copied().unwrap_or_default() != r.get(*id).copied().unwrap_or_default()
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountType, PLATFORM};
    use tuikuan_kernel::Currency;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn meta_and_dates() {
        let m = PostingMeta::parse("2026-12-01", "4200001234").unwrap();
        assert_eq!(m.value_date, Some(d("2026-12-01")));
        assert_eq!(m.value_date_or(d("2026-12-02")), d("2026-12-01"));
        assert_eq!(
            PostingMeta::parse("", "")
                .unwrap()
                .value_date_or(d("2026-12-02")),
            d("2026-12-02")
        );
        assert_eq!(
            PostingMeta::parse("1/12/2026", "").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            PostingMeta::parse("", "a\nb").unwrap_err().code,
            ErrorCode::MalformedId
        );
        assert!(PostingMeta::parse("", &"x".repeat(129)).is_err());
        assert_eq!(date_text(d("2026-01-05")), "2026-01-05");
    }

    #[test]
    fn ranges() {
        let r = DateRange::parse("2026-12-01", "2026-12-02").unwrap();
        assert!(r.contains(d("2026-12-01")) && r.contains(d("2026-12-02")));
        assert!(!r.contains(d("2026-11-30")) && !r.contains(d("2026-12-03")));
        assert!(DateRange::parse("2026-12-03", "2026-12-02").is_err());
        assert!(DateRange::parse("", "").unwrap().is_open());
        assert!(DateRange::as_of(Some(d("2026-12-01"))).contains(d("2020-01-01")));
        assert!(!DateRange::as_of(Some(d("2026-12-01"))).contains(d("2026-12-02")));
        assert_eq!(DateRange::day(d("2026-12-01")), r.with_to(d("2026-12-01")));
    }

    impl DateRange {
        fn with_to(mut self, to: NaiveDate) -> DateRange {
            self.to = Some(to);
            self
        }
    }

    #[test]
    fn sums_and_differences() {
        let fee = AccountKey::platform(AccountType::FeeIncome, Currency::Cny);
        let reserve = AccountKey::channel_reserve("wx", Currency::Cny);
        let sums = sum_lines(vec![
            (reserve.clone(), Side::Debit, 100),
            (fee.clone(), Side::Credit, 100),
            (fee.clone(), Side::Debit, 30),
            (reserve.clone(), Side::Credit, 30),
        ]);
        assert_eq!(sums.len(), 2);
        // In account id order: CHANNEL_RESERVE before FEE_INCOME.
        assert_eq!(sums[1].account.owner, PLATFORM);
        assert_eq!(sums[0].balance().to_minor(), 70);
        assert_eq!(sums[1].balance().to_minor(), 70);
        assert!(running_total_differences(&sums, &sums).is_empty());
        let mut changed = sums.clone();
        changed[0].debits_minor += 1;
        assert_eq!(
            running_total_differences(&sums, &changed),
            vec![reserve.account_id()]
        );
        let mut extra = sums.clone();
        extra.push(Balance::zero(AccountKey::platform(
            AccountType::Subsidy,
            Currency::Cny,
        )));
        assert!(running_total_differences(&sums, &extra).is_empty());
    }
}
