//! Keys and tokens for tests (of this crate and of the services): a fresh key pair, tokens for any
//! operator and roles, expired ones.

use crate::domain::{Claims, Operator, Role};
use crate::guard::StaffAuth;
use crate::token::{generate_keypair, TokenSigner};

/// A throw-away signing key with its public key.
#[derive(Clone, Debug)]
pub struct TestKeys {
    signer: TokenSigner,
    secret: String,
    public: String,
}

impl Default for TestKeys {
    fn default() -> Self {
        TestKeys::new()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl TestKeys {
    pub fn new() -> TestKeys {
        let (secret, public) = generate_keypair().expect("key pair");
        TestKeys {
            signer: TokenSigner::new(&secret, 0).expect("signer"),
            secret,
            public,
        }
    }

    /// `k4.secret.…`.
    pub fn secret_key(&self) -> String {
        self.secret.clone()
    }

    /// `k4.public.…`.
    pub fn public_key(&self) -> String {
        self.public.clone()
    }

    pub fn signer(&self) -> TokenSigner {
        self.signer.clone()
    }

    /// A guard trusting this key.
    pub fn auth(&self) -> StaffAuth {
        StaffAuth::from_public_keys(&[self.public.as_str()]).expect("public key")
    }

    /// A valid token for `name` with `roles`.
    pub fn token(&self, name: &str, roles: &[Role]) -> String {
        let operator = Operator {
            name: name.to_string(),
            roles: roles.to_vec(),
        };
        self.signer.issue(&operator, now_secs()).expect("token").0
    }

    /// A token that expired an hour ago.
    pub fn expired_token(&self, name: &str, roles: &[Role]) -> String {
        let operator = Operator {
            name: name.to_string(),
            roles: roles.to_vec(),
        };
        let claims = Claims::issue(&operator, now_secs() - 7200, 3600, "tok_expired".into());
        self.signer.sign(&claims).expect("token")
    }

    /// A token with every role (tests that are not about permissions).
    pub fn all_roles(&self, name: &str) -> String {
        self.token(name, Role::ALL)
    }
}
