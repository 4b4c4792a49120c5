//! Keys and secrets of channel connectors: loaded from a file or an environment variable, never
//! logged, redacted in Debug output.
//!
//! Accepted encodings: PEM (`BEGIN PRIVATE KEY` PKCS#8, `BEGIN RSA PRIVATE KEY` PKCS#1,
//! `BEGIN PUBLIC KEY`, `BEGIN CERTIFICATE`) and the bare base64 DER that Alipay's key tool prints
//! (PKCS#8 private keys, SubjectPublicKeyInfo public keys).

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};
use tuikuan_kernel::{Error, Result};
use x509_cert::der::{DecodePem, Encode};

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (trailing whitespace is ignored for text secrets).
    File(PathBuf),
    /// An environment variable holding the secret itself.
    Env(String),
    /// The secret given inline (tests and generated configurations only).
    Inline(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl SecretSource {
    /// Reads the secret. The error names the source, never the content.
    pub fn read(&self, field: &str) -> Result<String> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::field(field, format!("cannot read {}: {e}", path.display()))),
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                Error::field(field, format!("environment variable {name} is not set"))
            }),
            SecretSource::Inline(text) => Ok(text.clone()),
        }
    }
}

/// A merchant's RSA private key, used for SHA256withRSA signatures only.
#[derive(Clone)]
pub struct MerchantKey(PrivateKey);

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey(<redacted>)")
    }
}

impl MerchantKey {
    pub fn load(source: &SecretSource, field: &str) -> Result<MerchantKey> {
        MerchantKey::parse(&source.read(field)?, field)
    }

    /// Parses PEM (PKCS#8 or PKCS#1) or bare base64 PKCS#8 / PKCS#1 DER.
    pub fn parse(text: &str, field: &str) -> Result<MerchantKey> {
        let text = text.trim();
        let bad = || Error::field(field, "is not an RSA private key (PEM or base64 DER)");
        let key = if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
            PrivateKey::from_pkcs1_pem(text).map_err(|_| bad())?
        } else if text.contains("-----BEGIN") {
            PrivateKey::from_pkcs8_pem(text).map_err(|_| bad())?
        } else {
            let der = decode_b64(text).ok_or_else(bad)?;
            PrivateKey::from_pkcs8_der(&der)
                .or_else(|_| PrivateKey::from_pkcs1_der(&der))
                .map_err(|_| bad())?
        };
        Ok(MerchantKey(key))
    }

    /// SHA256withRSA (PKCS#1 v1.5) over `message`, base64.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<String> {
        let signature = self
            .0
            .pkcs1v15_sign::<Sha256>(message)
            .map_err(|e| Error::internal(format!("RSA signing failed: {e}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }
}

/// A channel's public key (or a certificate's), for SHA256withRSA verification.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelKey(PublicKey);

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelKey")
    }
}

impl ChannelKey {
    pub fn load(source: &SecretSource, field: &str) -> Result<ChannelKey> {
        ChannelKey::parse(&source.read(field)?, field)
    }

    /// Parses a PEM `PUBLIC KEY` or bare base64 SubjectPublicKeyInfo DER.
    pub fn parse(text: &str, field: &str) -> Result<ChannelKey> {
        let text = text.trim();
        let bad = || Error::field(field, "is not an RSA public key (PEM or base64 DER)");
        let key = if text.contains("-----BEGIN") {
            PublicKey::from_public_key_pem(text).map_err(|_| bad())?
        } else {
            PublicKey::from_public_key_der(&decode_b64(text).ok_or_else(bad)?).map_err(|_| bad())?
        };
        Ok(ChannelKey(key))
    }

    /// Reads a PEM X.509 certificate: its serial number (upper-case hex, as WeChat Pay sends it
    /// in `Wechatpay-Serial`) and its public key.
    pub fn from_certificate_pem(text: &str, field: &str) -> Result<(String, ChannelKey)> {
        let bad = |why: &str| Error::field(field, format!("is not a usable certificate: {why}"));
        let cert = x509_cert::Certificate::from_pem(text.trim().as_bytes())
            .map_err(|_| bad("not PEM X.509"))?;
        let serial = hex::encode_upper(cert.tbs_certificate().serial_number().as_bytes());
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|_| bad("unreadable public key"))?;
        let key = PublicKey::from_public_key_der(&spki).map_err(|_| bad("not an RSA key"))?;
        Ok((serial, ChannelKey(key)))
    }

    /// Verifies a base64 SHA256withRSA (PKCS#1 v1.5) signature over `message`.
    pub fn verify_sha256(&self, message: &[u8], signature_b64: &str) -> bool {
        let Some(signature) = decode_b64(signature_b64.trim()) else {
            return false;
        };
        self.0
            .pkcs1v15_verify::<Sha256>(message, &signature)
            .is_ok()
    }
}

/// WeChat Pay's APIv3 key: 32 bytes, the AES-256-GCM key of notifications.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    pub fn load(source: &SecretSource, field: &str) -> Result<ApiV3Key> {
        ApiV3Key::parse(&source.read(field)?, field)
    }

    /// The key as the merchant platform shows it: 32 ASCII characters.
    pub fn parse(text: &str, field: &str) -> Result<ApiV3Key> {
        let bytes: [u8; 32] = text
            .trim()
            .as_bytes()
            .try_into()
            .map_err(|_| Error::field(field, "must be 32 characters"))?;
        Ok(ApiV3Key(bytes))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Standard base64 with whitespace and line breaks ignored.
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}
