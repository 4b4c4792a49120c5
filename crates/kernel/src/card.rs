//! Payment-card numbers: the one implementation of their validation and masking.
//!
//! A [`CardNumber`] is 12 to 19 ASCII digits (spaces removed) passing the Luhn check. Its `Debug`
//! and `Display` show only the masked form (`**** 1234`); the full number is reached only through
//! [`CardNumber::expose`], for the bank. [`mask_card`] masks raw, unvalidated input the same way
//! (for logs of what someone else sent).

use std::fmt;

use crate::{Error, Result};

/// The fewest digits a card number has.
pub const MIN_CARD_DIGITS: usize = 12;
/// The most digits a card number has.
pub const MAX_CARD_DIGITS: usize = 19;
/// The longest raw input looked at (digits and spaces), in bytes.
pub const MAX_CARD_INPUT_LEN: usize = 64;

/// A validated card number. Never printed in full.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardNumber(String);

impl CardNumber {
    /// Parses a card number from the field `card_no`.
    pub fn parse(raw: &str) -> Result<CardNumber> {
        CardNumber::parse_field(raw, "card_no")
    }

    /// Parses a card number; errors name `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<CardNumber> {
        if raw.len() > MAX_CARD_INPUT_LEN {
            return Err(Error::field(
                field,
                format!("longer than {MAX_CARD_INPUT_LEN} characters"),
            ));
        }
        let digits: String = raw.chars().filter(|c| *c != ' ').collect();
        if digits.is_empty() {
            return Err(Error::field(field, "is required"));
        }
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::field(field, "must contain only digits and spaces"));
        }
        if !(MIN_CARD_DIGITS..=MAX_CARD_DIGITS).contains(&digits.len()) {
            return Err(Error::field(
                field,
                format!("must have {MIN_CARD_DIGITS} to {MAX_CARD_DIGITS} digits"),
            ));
        }
        if !luhn_ok(&digits) {
            return Err(Error::field(field, "fails the check digit (Luhn)"));
        }
        Ok(CardNumber(digits))
    }

    /// Whether `raw` would parse.
    pub fn is_valid(raw: &str) -> bool {
        CardNumber::parse(raw).is_ok()
    }

    /// `**** 1234`.
    pub fn masked(&self) -> String {
        mask_card(&self.0)
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }

    /// The full number (digits only), for the bank and for storage. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks any input as `**** 1234` (its last four digits at most; other characters ignored), so
/// even a malformed number someone sent can be logged.
pub fn mask_card(raw: &str) -> String {
    let digits: Vec<char> = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    let last: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("**** {last}")
}

/// The Luhn check over ASCII digits (false on anything else or on empty input).
pub fn luhn_ok(digits: &str) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    const VISA: &str = "4111 1111 1111 1111";

    #[test]
    fn valid_numbers_parse_and_mask() {
        let c = CardNumber::parse(VISA).unwrap();
        assert_eq!(c.expose(), "4111111111111111");
        assert_eq!(c.masked(), "**** 1111");
        assert_eq!(c.last4(), "1111");
        assert_eq!(
            CardNumber::parse("5500 0055 5555 5559").unwrap().masked(),
            "**** 5559"
        );
        // The bounds: 19 digits (UnionPay) and 12 digits.
        assert!(CardNumber::is_valid("6222 0000 1111 2222 006"));
        assert!(CardNumber::is_valid("123456789015"));
        assert!(!CardNumber::is_valid("6222 0000 1111 2222 007"));
    }

    #[test]
    fn bad_numbers_name_the_field_and_the_problem() {
        for (bad, why) in [
            ("", "required"),
            ("   ", "required"),
            ("4111-1111-1111-1111", "only digits"),
            ("41111111111", "12 to 19"),
            ("41111111111111111111", "12 to 19"),
            ("4111111111111112", "Luhn"),
            (&"1".repeat(65), "longer than 64"),
        ] {
            let e = CardNumber::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(
                e.message.starts_with("card_no: ") && e.message.contains(why),
                "{bad:?}: {}",
                e.message
            );
        }
        let e = CardNumber::parse_field("123", "payer_card_no").unwrap_err();
        assert!(e.message.starts_with("payer_card_no: "), "{}", e.message);
    }

    #[test]
    fn debug_and_display_never_show_the_full_number() {
        let c = CardNumber::parse(VISA).unwrap();
        for shown in [format!("{c:?}"), format!("{c}"), format!("{:?}", Some(&c))] {
            assert!(!shown.contains("4111111111111111"), "{shown}");
            assert!(shown.contains("**** 1111"), "{shown}");
        }
        assert_eq!(format!("{c:?}"), "CardNumber(**** 1111)");
    }

    #[test]
    fn luhn_and_raw_masking() {
        assert!(luhn_ok("79927398713"));
        assert!(!luhn_ok("79927398710"));
        assert!(!luhn_ok(""));
        assert!(!luhn_ok("7992739871a"));
        assert_eq!(mask_card("6222-0000-1111-2345"), "**** 2345");
        assert_eq!(mask_card("12"), "**** 12");
        assert_eq!(mask_card("abc"), "**** ");
    }
}
