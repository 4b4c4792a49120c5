//! Values sealed at rest: the one implementation of tuikuan's field encryption (payer card numbers,
//! merchants' notification secrets, the refund center's bank spreadsheets) and of the keyed hash
//! that matches card numbers without storing them.
//!
//! # Stored form (format version 1)
//!
//! `enc:v1:<hex(nonce || ciphertext || tag)>`: AES-256-GCM with a random 96-bit nonce per value
//! and a 128-bit tag. The associated data (`aad`) binds a ciphertext to what it is: the business
//! layer binds to the field's purpose (`tuikuan.business.payer_card_no`), the refund center to
//! the row (the refund or batch id), so a sealed value copied elsewhere does not open.
//!
//! Values without the `enc:v1:` prefix are legacy plaintext from before encryption:
//! [`Sealer::open`] returns them as they are, and each service seals them in a startup pass.
//!
//! # Keys
//!
//! One 256-bit [`CardKey`] per deployment, given as 64 hex digits (`card_key`). Without one, a
//! service uses [`CardKey::development`], which is public: fine for development and tests, never
//! for production (the services log a loud warning). The keyed hash ([`Sealer::keyed_hash`]) uses
//! a key derived from the same secret, so one secret serves both and a hash of a card number
//! cannot be computed (or brute-forced) without it. Neither type's `Debug` shows the key.
//!
//! ```
//! use tuikuan_kernel::seal::{CardKey, Sealer};
//!
//! let sealer = Sealer::new(&CardKey::from_hex(&"11".repeat(32)).unwrap());
//! let stored = sealer.seal("rf_1", "6222020200112233").unwrap();
//! assert!(stored.starts_with("enc:v1:") && !stored.contains("6222020200112233"));
//! assert_eq!(sealer.open("rf_1", &stored).unwrap(), "6222020200112233");
//! assert!(sealer.open("rf_2", &stored).is_err(), "bound to its associated data");
//! ```

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The prefix of every sealed value (format version 1).
pub const SEALED_PREFIX: &str = "enc:v1:";
/// The development key (public!), 64 hex digits: used only when no key is configured.
pub const DEV_CARD_KEY: &str = "7475696b75616e2d6465762d6b65792d6e6f742d666f722d70726f642d757365";
/// The configuration field that carries the key (errors name it).
pub const CARD_KEY_FIELD: &str = "card_key";

const NONCE_LEN: usize = 12;
/// The label of the hash key's derivation (changing it changes every stored hash).
const HASH_KEY_LABEL: &[u8] = b"tuikuan card hash key v1";

type HmacSha256 = Hmac<Sha256>;

/// A 256-bit key sealing values at rest. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CardKey([u8; 32]);

impl CardKey {
    pub fn from_bytes(bytes: [u8; 32]) -> CardKey {
        CardKey(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored); errors name `card_key`.
    pub fn from_hex(text: &str) -> Result<CardKey> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| Error::field(CARD_KEY_FIELD, "must be 64 hex digits (32 bytes)"))?;
        let len = bytes.len();
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::field(
                CARD_KEY_FIELD,
                format!("must be 32 bytes (64 hex digits), got {len}"),
            )
        })?;
        Ok(CardKey(bytes))
    }

    /// The public development key ([`DEV_CARD_KEY`]).
    pub fn development() -> CardKey {
        let mut bytes = [0u8; 32];
        // The constant is 64 valid hex digits (a unit test checks it); were it not, the key would
        // stay all zeroes, which is as public as the development key and never panics.
        let _ = hex::decode_to_slice(DEV_CARD_KEY, &mut bytes);
        CardKey(bytes)
    }

    /// Whether this is the public development key.
    pub fn is_development(&self) -> bool {
        *self == CardKey::development()
    }
}

impl fmt::Debug for CardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardKey(<redacted>)")
    }
}

/// Seals, opens and hashes values with one [`CardKey`]. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    hash_key: [u8; 32],
    dev: bool,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(<redacted>, dev: {})", self.dev)
    }
}

impl Sealer {
    pub fn new(key: &CardKey) -> Sealer {
        let mut h = Sha256::new();
        h.update(HASH_KEY_LABEL);
        h.update(key.0);
        Sealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0)),
            hash_key: h.finalize().into(),
            dev: key.is_development(),
        }
    }

    /// The sealer of the public development key.
    pub fn development() -> Sealer {
        Sealer::new(&CardKey::development())
    }

    /// Whether the key is the public development key.
    pub fn is_development(&self) -> bool {
        self.dev
    }

    /// Whether a stored value is sealed (else legacy plaintext).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// Seals text bound to `aad`. An empty text stays empty: there is nothing to hide, and an
    /// empty column keeps meaning "none".
    pub fn seal(&self, aad: &str, plaintext: &str) -> Result<String> {
        if plaintext.is_empty() {
            return Ok(String::new());
        }
        self.seal_bytes(aad, plaintext.as_bytes())
    }

    /// Seals bytes bound to `aad`: `enc:v1:<hex(nonce || ciphertext || tag)>`.
    pub fn seal_bytes(&self, aad: &str, plaintext: &[u8]) -> Result<String> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::internal(format!("sealing a value of {aad} failed")))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", hex::encode(out)))
    }

    /// The text of a stored value bound to `aad`; legacy plaintext (no prefix) is returned as it
    /// is. A value sealed under another key or `aad`, or tampered with, is an internal error (its
    /// content is never shown).
    pub fn open(&self, aad: &str, stored: &str) -> Result<String> {
        if !Sealer::is_sealed(stored) {
            return Ok(stored.to_string());
        }
        let plain = self.open_bytes(aad, stored)?;
        String::from_utf8(plain)
            .map_err(|_| Error::internal(format!("a sealed value of {aad} is not text")))
    }

    /// The bytes of a sealed value bound to `aad` (the value must be sealed).
    pub fn open_bytes(&self, aad: &str, stored: &str) -> Result<Vec<u8>> {
        let unreadable = || {
            Error::internal(format!(
                "a sealed value of {aad} does not open (wrong card_key or corrupt value)"
            ))
        };
        let body = stored.strip_prefix(SEALED_PREFIX).ok_or_else(unreadable)?;
        let bytes = hex::decode(body).map_err(|_| unreadable())?;
        if bytes.len() <= NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| unreadable())
    }

    /// A keyed hash (hex HMAC-SHA256 under a key derived from the card key) of a value, for
    /// matching values (the refunds to one card) without storing them. Stable for one key; empty
    /// for an empty value.
    pub fn keyed_hash(&self, value: &str) -> String {
        if value.is_empty() {
            return String::new();
        }
        let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(&self.hash_key) else {
            // HMAC takes keys of any length; this branch cannot happen.
            return String::new();
        };
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "6222020200112233";

    #[test]
    fn seal_and_open() {
        let s = Sealer::new(&CardKey::from_hex(&"11".repeat(32)).unwrap());
        assert!(!s.is_development());
        let a = s.seal("purpose", CARD).unwrap();
        let b = s.seal("purpose", CARD).unwrap();
        assert!(a.starts_with(SEALED_PREFIX) && Sealer::is_sealed(&a));
        assert!(!a.contains(CARD));
        // A fresh nonce each time.
        assert_ne!(a, b);
        assert_eq!(s.open("purpose", &a).unwrap(), CARD);
        assert_eq!(s.open_bytes("purpose", &a).unwrap(), CARD.as_bytes());
        // Legacy plaintext passes through; empty stays empty.
        assert_eq!(s.open("purpose", "6222").unwrap(), "6222");
        assert_eq!(s.seal("purpose", "").unwrap(), "");
        assert_eq!(s.open("purpose", "").unwrap(), "");
        // Another aad, another key, or a flipped bit: refused.
        assert!(s.open("other", &a).is_err());
        let other = Sealer::new(&CardKey::from_bytes([0x22; 32]));
        assert!(other.open("purpose", &a).is_err());
        let mut tampered = a.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(s.open("purpose", &tampered).is_err());
        for bad in ["enc:v1:zz", "enc:v1:00", "enc:v1:", "enc:v1:0"] {
            assert!(s.open("purpose", bad).is_err(), "{bad}");
        }
        // Bytes must be sealed to open.
        assert!(s.open_bytes("purpose", "6222").is_err());
        let e = s.open("purpose", &tampered).unwrap_err();
        assert!(!e.message.contains(CARD), "{}", e.message);
    }

    #[test]
    fn the_stored_layout_is_nonce_then_ciphertext_and_tag() {
        let s = Sealer::new(&CardKey::from_bytes([1; 32]));
        let stored = s.seal_bytes("rf-1", b"abc").unwrap();
        let bytes = hex::decode(stored.strip_prefix(SEALED_PREFIX).unwrap()).unwrap();
        assert_eq!(bytes.len(), NONCE_LEN + 3 + 16);
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let plain = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&[1; 32]))
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: rest,
                    aad: b"rf-1",
                },
            )
            .unwrap();
        assert_eq!(plain, b"abc");
        // Empty bytes are sealed (only empty text stays empty).
        assert!(Sealer::is_sealed(&s.seal_bytes("rf-1", b"").unwrap()));
    }

    #[test]
    fn keys() {
        assert_eq!(hex::decode(DEV_CARD_KEY).unwrap().len(), 32);
        assert!(CardKey::development().is_development());
        assert_eq!(
            CardKey::from_hex(DEV_CARD_KEY).unwrap(),
            CardKey::development()
        );
        assert!(Sealer::development().is_development());
        assert!(
            Sealer::new(&CardKey::from_hex(&format!(" {DEV_CARD_KEY}\n")).unwrap())
                .is_development()
        );
        for bad in [
            "",
            "abc",
            "00",
            "zz",
            &"1".repeat(63),
            &"11".repeat(31),
            &"gg".repeat(32),
        ] {
            let e = CardKey::from_hex(bad).unwrap_err();
            assert!(e.message.starts_with("card_key"), "{}", e.message);
        }
        let k = CardKey::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(k, CardKey::from_bytes([0xab; 32]));
        assert_eq!(format!("{k:?}"), "CardKey(<redacted>)");
        let s = Sealer::new(&k);
        assert!(!format!("{s:?}").contains("ab"));
        // The same key opens what another instance sealed.
        let sealed = Sealer::development().seal("x", "y").unwrap();
        assert_eq!(
            Sealer::new(&CardKey::development())
                .open("x", &sealed)
                .unwrap(),
            "y"
        );
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let a = Sealer::new(&CardKey::from_bytes([1; 32]));
        let b = Sealer::new(&CardKey::from_bytes([2; 32]));
        assert_eq!(a.keyed_hash(CARD), a.keyed_hash(CARD));
        assert_ne!(a.keyed_hash(CARD), b.keyed_hash(CARD));
        assert_ne!(a.keyed_hash(CARD), a.keyed_hash("6222020200112241"));
        assert_eq!(a.keyed_hash(""), "");
        assert_eq!(a.keyed_hash(CARD).len(), 64);
        // The derivation is part of the stored format: HMAC-SHA256 keyed by
        // SHA-256("tuikuan card hash key v1" || key).
        let mut h = Sha256::new();
        h.update(HASH_KEY_LABEL);
        h.update([1u8; 32]);
        let hash_key: [u8; 32] = h.finalize().into();
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&hash_key).unwrap();
        mac.update(CARD.as_bytes());
        assert_eq!(a.keyed_hash(CARD), hex::encode(mac.finalize().into_bytes()));
    }
}
