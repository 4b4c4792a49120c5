//! What covers a receiver's shortfall on a refund debit — the part of its merchant part its
//! available balance cannot cover:
//!
//! - an ordinary refund: the advance line (垫付额度) of the refund's currency, when it has room for
//!   all of it ([`advance_needed`]); otherwise nothing is advanced and the ledger refuses the debit
//!   (INSUFFICIENT_BALANCE). A merchant whose line is in another currency gets
//!   ADVANCE_CURRENCY_MISMATCH instead, so the merchant can tell "no money" from "wrong line";
//! - an error refund (差错退款: a duplicate payment, or one after the order expired): always
//!   advanced, within the line or beyond it. The money returned is the customer's own payment,
//!   which the platform received and settled to the merchant in error, so advancing it never pays
//!   out more than the platform received — the guarantee the line exists for. Like any advance it
//!   is repaid first from the merchant's next credits (settlements, reversals, returns).

use tuikuan_kernel::{Currency, Error, ErrorCode};

use super::{advance_needed, AdvanceLine, MerchantPolicy};

/// The limit an error refund's advance is reserved under: no line, in effect (far above any sum
/// the counters can reach), while the counters still record every minor unit.
pub const ERROR_REFUND_ADVANCE_LIMIT_MINOR: i64 = i64::MAX / 4;

/// What the platform advances for one receiver of a debit, and under which limit it is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cover {
    /// Minor units to advance (Dr ADVANCE); 0 = nothing.
    pub advance_minor: i64,
    /// The limit the reservation is checked against.
    pub limit_minor: i64,
}

/// Decides the advance for a receiver's `merchant_minor` part given its available balance, its
/// policy and its advance counters in `currency` (see the module documentation).
pub fn cover_shortfall(
    policy: &MerchantPolicy,
    line: &AdvanceLine,
    currency: Currency,
    merchant_minor: i64,
    balance_minor: i64,
    error_refund: bool,
) -> Result<Cover, Error> {
    let shortfall = merchant_minor - balance_minor.max(0);
    if shortfall <= 0 {
        return Ok(Cover {
            advance_minor: 0,
            limit_minor: 0,
        });
    }
    if error_refund {
        return Ok(Cover {
            advance_minor: shortfall,
            limit_minor: ERROR_REFUND_ADVANCE_LIMIT_MINOR,
        });
    }
    let limit = policy.advance_limit_minor(currency);
    if let Some(other) = policy.advance_currency {
        if other != currency && !policy.advance_limit.is_zero() {
            return Err(Error::new(
                ErrorCode::AdvanceCurrencyMismatch,
                format!(
                    "merchant {} is {} short of the refund debit and its advance line is in {}, not {}",
                    policy.merchant_id,
                    tuikuan_kernel::Money::from_minor(shortfall, currency),
                    other.code(),
                    currency.code()
                ),
            ));
        }
    }
    Ok(Cover {
        advance_minor: advance_needed(merchant_minor, balance_minor, line.room(limit)),
        limit_minor: limit,
    })
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::domain::FeeRefundPolicy;

    fn policy(line: i64, currency: Option<Currency>) -> MerchantPolicy {
        MerchantPolicy {
            merchant_id: "m1".into(),
            fee_rate: Decimal::ZERO,
            fee_refund: FeeRefundPolicy::None,
            advance_limit: Decimal::from(line),
            advance_currency: currency,
        }
    }

    #[test]
    fn ordinary_refunds_use_the_line_of_their_currency_only() {
        let line = AdvanceLine::default();
        let cny = policy(10, Some(Currency::Cny));
        let c = cover_shortfall(&cny, &line, Currency::Cny, 800, 0, false).unwrap();
        assert_eq!((c.advance_minor, c.limit_minor), (800, 1000));
        let c = cover_shortfall(&cny, &line, Currency::Cny, 1200, 0, false).unwrap();
        assert_eq!(c.advance_minor, 0, "the line has no room for all of it");
        let c = cover_shortfall(&cny, &line, Currency::Jpy, 5, 10, false).unwrap();
        assert_eq!(
            c.advance_minor, 0,
            "the balance covers it: the line does not matter"
        );
        let err = cover_shortfall(&cny, &line, Currency::Jpy, 5, 0, false).unwrap_err();
        assert_eq!(err.code, ErrorCode::AdvanceCurrencyMismatch);
        let none = policy(0, None);
        let c = cover_shortfall(&none, &line, Currency::Usd, 5, 0, false).unwrap();
        assert_eq!(c.advance_minor, 0, "no line: the ledger refuses the debit");
    }

    #[test]
    fn error_refunds_are_advanced_beyond_any_line() {
        let line = AdvanceLine {
            posted_minor: 1000,
            ..AdvanceLine::default()
        };
        for p in [policy(0, None), policy(10, Some(Currency::Usd))] {
            let c = cover_shortfall(&p, &line, Currency::Cny, 9940, 2000, true).unwrap();
            assert_eq!(c.advance_minor, 7940);
            assert_eq!(c.limit_minor, ERROR_REFUND_ADVANCE_LIMIT_MINOR);
        }
        let c = cover_shortfall(&policy(0, None), &line, Currency::Cny, 9940, 9940, true).unwrap();
        assert_eq!(c.advance_minor, 0, "covered by the balance");
    }
}
