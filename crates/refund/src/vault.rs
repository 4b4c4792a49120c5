//! Card numbers at rest (issue 5, item 8): every stored card number (refund orders, batch rows)
//! and every stored batch spreadsheet (which carries full numbers for the bank) is sealed with the
//! kernel's one implementation ([`tuikuan_kernel::seal`]: AES-256-GCM, stored as `enc:v1:`
//! followed by the hex of a random 96-bit nonce and the ciphertext with its tag), and orders keep
//! a keyed hash of the number ([`Sealer::keyed_hash`]) for the card-velocity risk rule.
//!
//! The associated data binds a ciphertext to its row (the refund id for card numbers, the batch id
//! for files), so a value copied into another row does not open. Values without the prefix are
//! plaintext from before encryption; [`Sealer::open`] passes them through and the startup pass
//! ([`crate::store::encrypt_legacy`]) seals them.
//!
//! The full number leaves the refund center only towards the bank: the payout request and the
//! spreadsheet (and its rows) sent to the bank. Logs and responses show `**** 1234`.

pub use tuikuan_kernel::seal::{CardKey, Sealer, SEALED_PREFIX};
use tuikuan_kernel::{Error, Result};

/// The environment variable read when the configuration carries no key: 64 hex digits.
pub const CARD_KEY_ENV: &str = "TUIKUAN_CARD_KEY";

/// The key to use: the configured one, else `TUIKUAN_CARD_KEY` from the environment (an invalid
/// value is a startup error), else the public development key with a loud warning.
pub fn resolve_key(configured: Option<&CardKey>) -> Result<CardKey> {
    let key = match (configured, std::env::var(CARD_KEY_ENV)) {
        (Some(key), _) => key.clone(),
        (None, Ok(text)) if !text.trim().is_empty() => CardKey::from_hex(&text)
            .map_err(|e| Error::field(CARD_KEY_ENV, e.message.trim_start_matches("card_key: ")))?,
        (None, _) => {
            tracing::warn!(
                "NO CARD KEY CONFIGURED: card numbers are encrypted with the public development \
                 key; set {CARD_KEY_ENV} (64 hex digits) or Config::card_key in any real \
                 deployment"
            );
            return Ok(CardKey::development());
        }
    };
    if key.is_development() {
        tracing::warn!(
            "the refund center's card key is the PUBLIC DEVELOPMENT KEY; never in production"
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_key_wins() {
        let k = CardKey::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(resolve_key(Some(&k)).unwrap(), k);
    }

    #[test]
    fn card_numbers_are_bound_to_their_row() {
        let vault = Sealer::new(&CardKey::from_bytes([1; 32]));
        let stored = vault.seal("rf-1", "6222000011112223").unwrap();
        assert!(stored.starts_with(SEALED_PREFIX));
        assert_eq!(vault.open("rf-1", &stored).unwrap(), "6222000011112223");
        assert!(vault.open("rf-2", &stored).is_err());
        // Empty (no card: a non-card method) stays empty.
        assert_eq!(vault.seal("rf-1", "").unwrap(), "");
    }
}
