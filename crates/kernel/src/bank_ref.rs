//! Bank reference ids: the id the platform gives a bank for one refund attempt and that the bank
//! reports it by in its bill, within the rules of each channel's bank.
//!
//! | scheme | field the id travels in | length | alphabet |
//! |---|---|---|---|
//! | `platform` | the platform's own clearing file (`id`) | 1–64 | `A-Z a-z 0-9 _ - .` |
//! | `wechat` | WeChat Pay `out_refund_no` (商户退款单号) | 1–64 | `0-9 a-z A-Z _ - \| * @` |
//! | `alipay` | Alipay `out_request_no` (退款请求号) | 1–64 | `0-9 a-z A-Z _ -` |
//! | `unionpay` | UnionPay `orderId` (商户订单号; the ZM file's field is 32 bytes) | 8–32 | `0-9 a-z A-Z` |
//!
//! [`IdScheme::fit`] turns the platform's natural id for an interface refund attempt (the refund
//! id, `{refund}-{n}`) into one the channel accepts: unchanged when it already fits
//! (so ids issued before a channel had a scheme keep working), otherwise `TK` followed by a base-36
//! digest of it, long enough (150 bits and more) that distinct natural ids never meet.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A channel's rules for bank reference ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IdScheme {
    /// The platform's own ids (`validate_external_id`).
    #[default]
    Platform,
    WechatPay,
    Alipay,
    UnionPay,
}

/// One scheme's rules, for people and for checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRules {
    pub scheme: IdScheme,
    /// Where the id travels, as the channel's specification names it.
    pub field: &'static str,
    pub min_len: usize,
    pub max_len: usize,
    /// The characters allowed besides ASCII letters and digits.
    pub extra: &'static str,
}

impl IdScheme {
    pub const ALL: [IdScheme; 4] = [
        IdScheme::Platform,
        IdScheme::WechatPay,
        IdScheme::Alipay,
        IdScheme::UnionPay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdScheme::Platform => "platform",
            IdScheme::WechatPay => "wechat",
            IdScheme::Alipay => "alipay",
            IdScheme::UnionPay => "unionpay",
        }
    }

    /// `platform`, `wechat`, `alipay` or `unionpay` (any case); empty is `None`.
    pub fn parse(s: &str, field: &str) -> Result<Option<IdScheme>> {
        if s.is_empty() {
            return Ok(None);
        }
        IdScheme::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .map(Some)
            .ok_or_else(|| {
                Error::field(
                    field,
                    format!(
                        "{:?} is not platform, wechat, alipay or unionpay",
                        s.chars().take(32).collect::<String>()
                    ),
                )
            })
    }

    pub fn rules(self) -> IdRules {
        let (field, min_len, max_len, extra) = match self {
            IdScheme::Platform => ("id", 1, 64, "_-."),
            IdScheme::WechatPay => ("out_refund_no (商户退款单号)", 1, 64, "_-|*@"),
            IdScheme::Alipay => ("out_request_no (退款请求号)", 1, 64, "_-"),
            IdScheme::UnionPay => ("orderId (商户订单号)", 8, 32, ""),
        };
        IdRules {
            scheme: self,
            field,
            min_len,
            max_len,
            extra,
        }
    }

    /// Whether `id` fits the scheme; the problem otherwise.
    pub fn check(self, id: &str) -> std::result::Result<(), String> {
        let rules = self.rules();
        let len = id.chars().count();
        if len < rules.min_len || len > rules.max_len {
            return Err(format!(
                "{} must be {} to {} characters, not {len}",
                rules.field, rules.min_len, rules.max_len
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || rules.extra.contains(*c)))
        {
            return Err(format!(
                "{} allows letters, digits{} only, not {c:?}",
                rules.field,
                if rules.extra.is_empty() {
                    String::new()
                } else {
                    format!(" and {}", rules.extra)
                }
            ));
        }
        Ok(())
    }

    /// The id the channel's bank is given for an attempt whose natural id is `natural`: `natural`
    /// itself when it fits, else `TK` and a digest of it in uppercase base 36 (30 characters
    /// for UnionPay, 40 for the others). Deterministic: a retry gets the same id.
    pub fn fit(self, natural: &str) -> String {
        if self.check(natural).is_ok() {
            return natural.to_string();
        }
        let digits = match self {
            IdScheme::UnionPay => 30,
            _ => 40,
        };
        format!("TK{}", base36_digest(natural, digits))
    }
}

impl fmt::Display for IdScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first `digits` uppercase base-36 digits of SHA-256(`text`) (at most 49).
fn base36_digest(text: &str, digits: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let hash = Sha256::digest(text.as_bytes());
    // The 256-bit hash as eight 32-bit limbs, most significant first; repeated division by 36.
    let mut limbs: Vec<u64> = hash
        .chunks(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let mut out = Vec::with_capacity(digits);
    for _ in 0..digits.min(49) {
        let mut rem = 0u64;
        for limb in limbs.iter_mut() {
            let cur = (rem << 32) | *limb;
            *limb = cur / 36;
            rem = cur % 36;
        }
        out.push(ALPHABET[rem as usize]);
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_checks_its_rules() {
        let rf = "rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60";
        assert!(IdScheme::Platform.check(rf).is_ok());
        assert!(IdScheme::WechatPay.check(rf).is_ok());
        assert!(IdScheme::Alipay.check(rf).is_ok());
        assert!(IdScheme::UnionPay.check(rf).is_err());
        assert!(IdScheme::WechatPay.check("a|b*c@d-e_f").is_ok());
        assert!(IdScheme::WechatPay.check("a.b").is_err());
        assert!(IdScheme::Alipay.check("a|b").is_err());
        assert!(IdScheme::UnionPay.check("ABCD1234").is_ok());
        assert!(IdScheme::UnionPay.check("ABC1234").is_err());
        assert!(IdScheme::UnionPay.check(&"A".repeat(33)).is_err());
        assert!(IdScheme::WechatPay.check(&"a".repeat(65)).is_err());
        assert!(IdScheme::WechatPay.check("").is_err());
        let e = IdScheme::UnionPay.check("rf_1-2345").unwrap_err();
        assert!(e.contains("orderId") && e.contains("'_'"), "{e}");
    }

    #[test]
    fn fitting_keeps_what_fits_and_digests_the_rest() {
        for scheme in IdScheme::ALL {
            for natural in [
                "rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60",
                "rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60-2",
                "po_rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60_3",
                "B20261125-ICBC-FILE_UPLOAD-01-0007",
                "ord.with.dots",
            ] {
                let id = scheme.fit(natural);
                assert!(scheme.check(&id).is_ok(), "{scheme} {natural} -> {id}");
                assert_eq!(scheme.fit(natural), id, "deterministic");
                if scheme.check(natural).is_ok() {
                    assert_eq!(id, natural, "existing ids keep working");
                }
            }
        }
        let a = IdScheme::UnionPay.fit("rf_1");
        let b = IdScheme::UnionPay.fit("rf_2");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.starts_with("TK"));
        // Many distinct natural ids, no collision.
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            assert!(seen.insert(IdScheme::UnionPay.fit(&format!("rf_{i}"))));
        }
    }

    #[test]
    fn names_round_trip() {
        for s in IdScheme::ALL {
            assert_eq!(IdScheme::parse(s.as_str(), "x").unwrap(), Some(s));
        }
        assert_eq!(IdScheme::parse("", "x").unwrap(), None);
        assert!(IdScheme::parse("swift", "id_scheme")
            .unwrap_err()
            .message
            .starts_with("id_scheme: "));
    }
}
