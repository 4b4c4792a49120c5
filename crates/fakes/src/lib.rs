//! Local fakes of the payment channels tuikuan connects to, for tests: a WeChat Pay API v3 server
//! ([`wechat::FakeWechatPay`]) and an Alipay open platform gateway ([`alipay::FakeAlipay`]).
//!
//! Each listens on loopback (`127.0.0.1:0`), follows the published protocol (and is written
//! independently of the connectors, so a misreading shared by both would not hide), verifies the
//! connector's signatures with keys the tests generated ([`TestKeys`]), answers signed, keeps its
//! own ledger of the money it moved (so a test can prove nothing was paid twice), and can be told
//! to misbehave: bad signatures, expired timestamps, unknown serials, timeouts after acting,
//! refunds that stay PROCESSING and then succeed or fail, duplicate and tampered notifications,
//! bills whose digest does not match.
//!
//! Nothing here reaches beyond loopback: notifications go to the URLs the tests' own bank gave.

pub mod alipay;
pub mod wechat;

use std::sync::OnceLock;

use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};

/// An RSA key pair with its PEM forms.
#[derive(Clone)]
pub struct KeyPair {
    pub private: PrivateKey,
    pub public: PublicKey,
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub private_pem: String,
    /// SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
    /// Bare base64 of the SubjectPublicKeyInfo DER, as Alipay shows public keys.
    pub public_b64: String,
    /// Bare base64 of the PKCS#8 DER, as Alipay's key tool prints private keys.
    pub private_b64: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair")
    }
}

impl KeyPair {
    fn generate() -> KeyPair {
        let private = PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation");
        let public = private.to_public_key();
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .expect("public key PEM");
        let b64 = |bytes: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let public_b64 = b64(public.to_public_key_der().expect("SPKI DER").as_bytes());
        let private_b64 = b64(private.to_pkcs8_der().expect("PKCS#8 DER").as_bytes());
        KeyPair {
            private,
            public,
            private_pem,
            public_pem,
            public_b64,
            private_b64,
        }
    }

    /// SHA256withRSA over `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        use base64::Engine;
        let sig = self
            .private
            .pkcs1v15_sign::<Sha256>(message)
            .expect("RSA signing");
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// Verifies a base64 SHA256withRSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        use base64::Engine;
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature_b64) else {
            return false;
        };
        self.public.pkcs1v15_verify::<Sha256>(message, &sig).is_ok()
    }
}

/// The keys of a test binary, generated once (RSA key generation is slow): the WeChat Pay
/// merchant and platform keys, and the Alipay application and Alipay keys.
#[derive(Debug)]
pub struct TestKeys {
    pub wechat_merchant: KeyPair,
    pub wechat_platform: KeyPair,
    pub alipay_app: KeyPair,
    pub alipay_platform: KeyPair,
}

/// The test binary's keys.
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(KeyPair::generate))
            .collect();
        let mut pairs = handles
            .into_iter()
            .map(|h| h.join().expect("key generation thread"));
        let mut next = || pairs.next().expect("four keys");
        TestKeys {
            wechat_merchant: next(),
            wechat_platform: next(),
            alipay_app: next(),
            alipay_platform: next(),
        }
    })
}

/// What the fake does to its answers (until told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerFault {
    #[default]
    None,
    /// A signature that does not verify.
    BadSignature,
    /// A timestamp ten minutes old (WeChat Pay).
    ExpiredTimestamp,
    /// A serial the connector does not know (WeChat Pay).
    UnknownSerial,
    /// WeChat Pay's signature probe: a wrong signature prefixed `WECHATPAY/SIGNTEST/`, sent now
    /// and then to check that merchants verify.
    SignatureProbe,
}

/// How the fake settles the refunds it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Settle {
    /// Paid at once (WeChat Pay SUCCESS in the answer; Alipay fund_change=Y).
    #[default]
    AtOnce,
    /// PROCESSING until [`wechat::FakeWechatPay::settle`] / [`alipay::FakeAlipay::settle`],
    /// then paid.
    LaterSuccess,
    /// PROCESSING, then ABNORMAL (WeChat Pay: the payer's card is gone).
    LaterAbnormal,
}

/// What the fake does to the notifications it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyFault {
    #[default]
    None,
    /// Sent twice, identical.
    Duplicate,
    /// The body changed after signing.
    Tampered,
    /// Signed with a timestamp ten minutes old (WeChat Pay).
    Expired,
    /// Signed under a serial the bank does not know (WeChat Pay).
    UnknownSerial,
}

/// Binds a loopback listener and serves `router` on it until the returned handle is dropped.
pub(crate) async fn serve_loopback(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let join = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), join)
}

/// China time (UTC+8) of a millisecond instant.
pub(crate) fn china(ms: i64) -> chrono::DateTime<chrono::FixedOffset> {
    tuikuan_kernel::clock::from_ms(ms).with_timezone(&tuikuan_kernel::clock::business_tz())
}
