//! Operator tokens: PASETO v4.public (Ed25519), with keys in PASERK form.
//!
//! - The business layer holds the one signing key ([`TokenSigner`], a `k4.secret.…` PASERK) and
//!   issues tokens at login.
//! - Every service holds the public keys ([`TokenVerifier`], `k4.public.…`), and verifies each
//!   token's signature, then its claims ([`crate::domain::Claims::validate`]).
//! - The footer carries the signing key's PASERK id (`{"kid":"k4.pid.…"}`), so that a verifier
//!   holding the old and the new public key during a rotation picks the right one.
//! - The implicit assertion binds tokens to this purpose: a v4.public token signed with the same
//!   key for anything else does not verify here.
//!
//! Specifications: PASETO v4 (`https://github.com/paseto-standard/paseto-spec`, `docs/Protocol
//! Versions/Version4.md`), PASERK (`https://github.com/paseto-standard/paserk`, types `public`,
//! `secret`, `pid`), and the registered claims of PASETO's `docs/02-Implementation-Guide/04-Claims.md`.

use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::Public;
use serde::{Deserialize, Serialize};
use tuikuan_kernel::{Error, ErrorCode, Result};

use crate::domain::claims::{Claims, Operator, DEFAULT_TTL_SECS, MAX_TTL_SECS};

/// Bound into every operator token's signature.
const IMPLICIT_ASSERTION: &[u8] = b"tuikuan-operator-token-v1";
/// The longest token accepted (a token is a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Footer {
    kid: String,
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unauthenticated, message)
}

/// A public key a service trusts, with its PASERK id.
#[derive(Clone)]
struct TrustedKey {
    kid: String,
    key: AsymmetricPublicKey<V4>,
}

fn paserk<K: FormatAsPaserk>(key: &K) -> String {
    let mut out = String::new();
    // Formatting into a String cannot fail.
    let _ = key.fmt(&mut out);
    out
}

fn kid_of(key: &AsymmetricPublicKey<V4>) -> String {
    paserk(&Id::from(key))
}

/// A new Ed25519 key pair as (`k4.secret.…`, `k4.public.…`).
pub fn generate_keypair() -> Result<(String, String)> {
    let kp = AsymmetricKeyPair::<V4>::generate()
        .map_err(|e| Error::internal(format!("cannot generate a signing key: {e}")))?;
    Ok((paserk(&kp.secret), paserk(&kp.public)))
}

/// The public key (`k4.public.…`) of a secret key (`k4.secret.…`).
pub fn public_key_of(secret_paserk: &str) -> Result<String> {
    let secret = parse_secret(secret_paserk)?;
    let public = AsymmetricPublicKey::<V4>::try_from(&secret)
        .map_err(|_| Error::field("operator_signing_key", "not a valid k4.secret key"))?;
    Ok(paserk(&public))
}

fn parse_secret(text: &str) -> Result<AsymmetricSecretKey<V4>> {
    AsymmetricSecretKey::<V4>::try_from(text.trim()).map_err(|_| {
        Error::field(
            "operator_signing_key",
            "not a PASERK k4.secret key (make one with `tuikuan keys operator`)",
        )
    })
}

/// Issues operator tokens (the business layer only).
#[derive(Clone)]
pub struct TokenSigner {
    secret: AsymmetricSecretKey<V4>,
    kid: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for a `k4.secret.…` key; tokens live `ttl_secs` (0: one hour; at most 12 hours).
    pub fn new(secret_paserk: &str, ttl_secs: i64) -> Result<TokenSigner> {
        let secret = parse_secret(secret_paserk)?;
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|_| Error::field("operator_signing_key", "not a valid k4.secret key"))?;
        let ttl_secs = if ttl_secs <= 0 {
            DEFAULT_TTL_SECS
        } else {
            ttl_secs
        };
        if ttl_secs > MAX_TTL_SECS {
            return Err(Error::field(
                "operator_token_ttl_secs",
                format!("at most {MAX_TTL_SECS} seconds"),
            ));
        }
        Ok(TokenSigner {
            kid: kid_of(&public),
            secret,
            ttl_secs,
        })
    }

    /// The matching public key (`k4.public.…`), for the verifiers' configuration.
    pub fn public_key(&self) -> Result<String> {
        let public = AsymmetricPublicKey::<V4>::try_from(&self.secret)
            .map_err(|_| Error::internal("signing key has no public half"))?;
        Ok(paserk(&public))
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A token for `operator`, issued at `now_secs`, with a fresh token id.
    pub fn issue(&self, operator: &Operator, now_secs: i64) -> Result<(String, Claims)> {
        let claims = Claims::issue(
            operator,
            now_secs,
            self.ttl_secs,
            tuikuan_kernel::id::new_id("tok"),
        );
        Ok((self.sign(&claims)?, claims))
    }

    /// Signs arbitrary claims (tests use it for expired or odd tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let payload = serde_json::to_vec(claims)
            .map_err(|e| Error::internal(format!("token claims: {e}")))?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(|e| Error::internal(format!("token footer: {e}")))?;
        PublicToken::sign(
            &self.secret,
            &payload,
            Some(&footer),
            Some(IMPLICIT_ASSERTION),
        )
        .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))
    }
}

/// Verifies operator tokens with the public keys a service trusts.
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: Vec<TrustedKey>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier trusting these `k4.public.…` keys (two during a rotation). With none, every
    /// token is refused.
    pub fn new<S: AsRef<str>>(public_paserks: &[S]) -> Result<TokenVerifier> {
        let mut keys = Vec::new();
        for (i, text) in public_paserks.iter().enumerate() {
            let key = AsymmetricPublicKey::<V4>::try_from(text.as_ref().trim()).map_err(|_| {
                Error::field(
                    &format!("operator_public_keys[{i}]"),
                    "not a PASERK k4.public key",
                )
            })?;
            keys.push(TrustedKey {
                kid: kid_of(&key),
                key,
            });
        }
        Ok(TokenVerifier { keys })
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The PASERK ids of the trusted keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Verifies `token` at `now_secs`: its signature with the key its footer names, then its claims.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Operator> {
        self.verify_claims(token).and_then(|c| c.validate(now_secs))
    }

    /// Verifies the signature and returns the claims, not yet validated.
    pub fn verify_claims(&self, token: &str) -> Result<Claims> {
        if self.keys.is_empty() {
            return Err(unauthenticated(
                "this service has no operator public key configured (operator_public_keys)",
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(unauthenticated("operator token is too long"));
        }
        let untrusted = UntrustedToken::<Public, V4>::try_from(token)
            .map_err(|_| unauthenticated("not a v4.public operator token"))?;
        let footer: Footer = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| unauthenticated("operator token has no key id"))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == footer.kid)
            .ok_or_else(|| {
                unauthenticated("operator token was signed by a key this service does not trust")
            })?;
        let trusted = PublicToken::verify(&key.key, &untrusted, None, Some(IMPLICIT_ASSERTION))
            .map_err(|_| unauthenticated("operator token signature does not verify"))?;
        serde_json::from_str(trusted.payload())
            .map_err(|_| unauthenticated("operator token claims are malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    const NOW: i64 = 1_800_000_000;

    fn fiona() -> Operator {
        Operator {
            name: "fiona".into(),
            roles: vec![Role::Finance],
        }
    }

    #[test]
    fn issued_tokens_verify_with_the_public_key_only() {
        let (secret, public) = generate_keypair().unwrap();
        assert!(secret.starts_with("k4.secret.") && public.starts_with("k4.public."));
        assert_eq!(public_key_of(&secret).unwrap(), public);
        let signer = TokenSigner::new(&secret, 0).unwrap();
        assert_eq!(signer.ttl_secs(), DEFAULT_TTL_SECS);
        let (token, claims) = signer.issue(&fiona(), NOW).unwrap();
        assert!(token.starts_with("v4.public."));
        let verifier = TokenVerifier::new(&[public.as_str()]).unwrap();
        assert_eq!(verifier.verify(&token, NOW + 1).unwrap(), fiona());
        assert_eq!(
            verifier
                .verify(&token, NOW + DEFAULT_TTL_SECS + 120)
                .unwrap_err()
                .code,
            ErrorCode::TokenExpired
        );
        assert_eq!(claims.expires_at_secs().unwrap(), NOW + DEFAULT_TTL_SECS);
    }

    #[test]
    fn forged_tampered_and_foreign_tokens_are_refused() {
        let (secret, public) = generate_keypair().unwrap();
        let (other_secret, other_public) = generate_keypair().unwrap();
        let verifier = TokenVerifier::new(&[public.as_str()]).unwrap();
        let (token, _) = TokenSigner::new(&other_secret, 0)
            .unwrap()
            .issue(&fiona(), NOW)
            .unwrap();
        let e = verifier.verify(&token, NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.message.contains("does not trust"), "{}", e.message);
        // During a rotation both keys are trusted.
        let both = TokenVerifier::new(&[public.as_str(), other_public.as_str()]).unwrap();
        assert!(both.verify(&token, NOW).is_ok());
        // A changed payload breaks the signature.
        let (good, _) = TokenSigner::new(&secret, 0)
            .unwrap()
            .issue(&fiona(), NOW)
            .unwrap();
        let mut bytes = good.into_bytes();
        let i = "v4.public.".len() + 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            verifier.verify(&tampered, NOW).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        for junk in [
            "",
            "Bearer x",
            "v4.local.abc",
            &"v".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                verifier.verify(junk, NOW).unwrap_err().code,
                ErrorCode::Unauthenticated
            );
        }
        assert_eq!(
            TokenVerifier::default().verify("x", NOW).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn keys_are_checked_on_load() {
        assert!(TokenSigner::new("k4.secret.nope", 0).is_err());
        assert!(TokenVerifier::new(&["k4.public.nope"]).is_err());
        let (secret, _) = generate_keypair().unwrap();
        assert!(TokenSigner::new(&secret, MAX_TTL_SECS + 1).is_err());
    }
}
