//! Money: a decimal amount with a currency. Never a float.
//!
//! Amounts arrive on the wire as decimal strings and are validated on receipt ([`Money::parse`]):
//! positive, at most the currency's number of decimals, at most [`MAX_AMOUNT_UNITS`] whole units.
//! Storage keeps integer minor units ([`Money::to_minor`]), so that databases add and compare exactly.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// The largest amount accepted for one payment or refund, in whole currency units.
pub const MAX_AMOUNT_UNITS: i64 = 1_000_000_000_000;

/// Supported currencies (ISO 4217).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "CNY")]
    Cny,
    #[serde(rename = "HKD")]
    Hkd,
    #[serde(rename = "USD")]
    Usd,
    #[serde(rename = "JPY")]
    Jpy,
}

impl Currency {
    pub const ALL: &'static [Currency] =
        &[Currency::Cny, Currency::Hkd, Currency::Usd, Currency::Jpy];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Hkd => "HKD",
            Currency::Usd => "USD",
            Currency::Jpy => "JPY",
        }
    }

    /// Number of decimals of the minor unit (fen for CNY).
    pub fn decimals(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }

    /// Parses an ISO code; `field` names the request field in the error.
    pub fn parse(code: &str, field: &str) -> Result<Currency> {
        Currency::ALL
            .iter()
            .copied()
            .find(|c| c.code() == code)
            .ok_or_else(|| {
                if code.is_empty() {
                    Error::field(field, "is required")
                } else {
                    Error::new(
                        ErrorCode::UnsupportedCurrency,
                        format!("{field}: unsupported currency {}", crate::echo(code)),
                    )
                }
            })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Currency::parse(s, "currency")
    }
}

/// An amount of money in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Builds money from a decimal, checking the currency's precision (zero and negative allowed:
    /// balances and signed sums use this too).
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money> {
        let amount = amount.normalize();
        if amount.scale() > currency.decimals() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                format!(
                    "amount {amount} has more than {} decimals for {currency}",
                    currency.decimals()
                ),
            ));
        }
        Ok(Money { amount, currency })
    }

    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// Parses and validates an amount received from outside: a plain decimal string, strictly
    /// positive, at most the currency's decimals, at most [`MAX_AMOUNT_UNITS`].
    pub fn parse(amount: &str, currency: &str, field: &str) -> Result<Money> {
        let currency = Currency::parse(currency, &format!("{field}.currency"))?;
        let invalid = |why: &str| Error::new(ErrorCode::InvalidAmount, format!("{field}: {why}"));
        if amount.is_empty() {
            return Err(invalid("is required"));
        }
        if amount.len() > 40
            || !amount
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
        {
            return Err(invalid(&format!(
                "{} is not a decimal number",
                crate::echo(amount)
            )));
        }
        let value = Decimal::from_str_exact(amount)
            .map_err(|_| invalid(&format!("{} is not a decimal number", crate::echo(amount))))?;
        if value <= Decimal::ZERO {
            return Err(invalid("must be greater than zero"));
        }
        if value > Decimal::from(MAX_AMOUNT_UNITS) {
            return Err(invalid(&format!(
                "must not exceed {MAX_AMOUNT_UNITS} {currency}"
            )));
        }
        let value = value.normalize();
        if value.scale() > currency.decimals() {
            return Err(invalid(&format!(
                "has more than {} decimals for {currency}",
                currency.decimals()
            )));
        }
        Ok(Money {
            amount: value,
            currency,
        })
    }

    /// From integer minor units (fen for CNY), as stored.
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money {
            amount: Decimal::new(minor, currency.decimals()).normalize(),
            currency,
        }
    }

    /// Integer minor units, as stored. Exact: a `Money` never has more decimals than its currency.
    pub fn to_minor(&self) -> i64 {
        let scaled = self.amount * Decimal::from(10i64.pow(self.currency.decimals()));
        // Exact by construction (scale <= decimals); amounts are bounded far below i64::MAX.
        scaled.to_i64().unwrap_or(if scaled.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    /// The amount as a plain string with exactly the currency's decimals, e.g. `"12.50"`.
    pub fn amount_string(&self) -> String {
        let mut a = self.amount;
        a.rescale(self.currency.decimals());
        a.to_string()
    }

    fn same_currency(&self, other: &Money) -> Result<()> {
        if self.currency != other.currency {
            return Err(Error::new(
                ErrorCode::CurrencyMismatch,
                format!("cannot combine {} with {}", self.currency, other.currency),
            ));
        }
        Ok(())
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money> {
        self.same_currency(other)?;
        Money::new(self.amount + other.amount, self.currency)
    }

    pub fn checked_sub(&self, other: &Money) -> Result<Money> {
        self.same_currency(other)?;
        Money::new(self.amount - other.amount, self.currency)
    }

    /// `self × numerator ÷ denominator`, rounded half-even to the currency's minor unit.
    /// Used for fee shares; callers keep cumulative sums so that no cent is lost or created.
    pub fn prorate(&self, numerator: &Money, denominator: &Money) -> Result<Money> {
        self.same_currency(numerator)?;
        self.same_currency(denominator)?;
        if denominator.is_zero() {
            return Err(Error::internal("prorate by zero"));
        }
        let raw = self.amount * numerator.amount / denominator.amount;
        let rounded = raw.round_dp_with_strategy(
            self.currency.decimals(),
            RoundingStrategy::MidpointNearestEven,
        );
        Money::new(rounded, self.currency)
    }

    /// `self × rate`, rounded half-even to the minor unit (fee rates).
    pub fn times_rate(&self, rate: Decimal) -> Money {
        let rounded = (self.amount * rate).round_dp_with_strategy(
            self.currency.decimals(),
            RoundingStrategy::MidpointNearestEven,
        );
        Money {
            amount: rounded.normalize(),
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(amount: &str, currency: &str) -> ErrorCode {
        Money::parse(amount, currency, "amount").unwrap_err().code
    }

    #[test]
    fn parse_accepts_valid_amounts() {
        let m = Money::parse("12.5", "CNY", "amount").unwrap();
        assert_eq!(m.to_minor(), 1250);
        assert_eq!(m.amount_string(), "12.50");
        assert_eq!(Money::parse("0.01", "CNY", "a").unwrap().to_minor(), 1);
        assert_eq!(Money::parse("100", "JPY", "a").unwrap().to_minor(), 100);
        assert_eq!(Money::parse("1.000", "CNY", "a").unwrap().to_minor(), 100);
    }

    #[test]
    fn parse_rejects_bad_amounts_with_stable_codes() {
        assert_eq!(err("0", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("-1", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("1.001", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("1.5", "JPY"), ErrorCode::InvalidAmount);
        assert_eq!(err("1e5", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("abc", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("NaN", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(err("1000000000000.01", "CNY"), ErrorCode::InvalidAmount);
        assert_eq!(
            err("99999999999999999999999999999999999", "CNY"),
            ErrorCode::InvalidAmount
        );
        assert_eq!(err("1", "XYZ"), ErrorCode::UnsupportedCurrency);
        assert_eq!(err("1", ""), ErrorCode::InvalidArgument);
    }

    #[test]
    fn minor_units_round_trip() {
        for minor in [0i64, 1, 99, 100, 123_456_789, -250] {
            assert_eq!(Money::from_minor(minor, Currency::Cny).to_minor(), minor);
        }
        assert_eq!(Money::from_minor(7, Currency::Jpy).to_minor(), 7);
    }

    #[test]
    fn prorate_rounds_half_even() {
        let fee = Money::parse("0.06", "CNY", "f").unwrap();
        let part = Money::parse("5", "CNY", "p").unwrap();
        let whole = Money::parse("10", "CNY", "w").unwrap();
        assert_eq!(fee.prorate(&part, &whole).unwrap().to_minor(), 3);
        let fee = Money::parse("0.05", "CNY", "f").unwrap();
        // 0.025 rounds to even: 0.02
        assert_eq!(fee.prorate(&part, &whole).unwrap().to_minor(), 2);
    }
}
