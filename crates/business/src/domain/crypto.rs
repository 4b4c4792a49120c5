//! Encryption at rest of payer card numbers and merchants' notification secrets, with the kernel's
//! one implementation ([`tuikuan_kernel::seal`]: AES-256-GCM, a random 96-bit nonce per value,
//! stored as `enc:v1:<hex nonce><hex ciphertext and tag>`). Each value is bound to its purpose
//! (the AEAD's associated data: [`PURPOSE_CARD`], [`PURPOSE_NOTIFY_SECRET`]).
//!
//! Values without the `enc:v1:` prefix are legacy plaintext: [`Sealer::open`] returns them as
//! they are, and the service seals them at start (see `store::seal_plaintext_cards`).
//!
//! The key is 32 bytes given as 64 hex digits (`Config::card_key`). Without one the service uses
//! the kernel's development key ([`DEV_CARD_KEY`]), which is public: fine for development and
//! tests, never for production (the service logs a loud warning).

pub use tuikuan_kernel::seal::{CardKey, Sealer, DEV_CARD_KEY, SEALED_PREFIX};

/// Associated data of payer card numbers.
pub const PURPOSE_CARD: &str = "tuikuan.business.payer_card_no";
/// Associated data of notification secrets.
pub const PURPOSE_NOTIFY_SECRET: &str = "tuikuan.business.notify_secret";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_to_their_purpose() {
        let sealer = Sealer::new(&CardKey::from_bytes([0x11; 32]));
        let card = sealer.seal(PURPOSE_CARD, "6222020200112233").unwrap();
        assert!(card.starts_with(SEALED_PREFIX));
        assert_eq!(
            sealer.open(PURPOSE_CARD, &card).unwrap(),
            "6222020200112233"
        );
        // A card copied into the secret column does not open there.
        assert!(sealer.open(PURPOSE_NOTIFY_SECRET, &card).is_err());
    }
}
