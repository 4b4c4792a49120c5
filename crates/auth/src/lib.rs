//! Staff security for every tuikuan service: who an operator is, what each role may do, and proof
//! of both.
//!
//! Layout:
//! - [`domain`] (pure): roles, staff actions and the one permission table
//!   ([`domain::PERMISSIONS`]); the table of every RPC and who may call it ([`domain::RPCS`]);
//!   token claims; the registry's rules; four-eyes proposals and their thresholds; audit entries;
//! - [`token`]: PASETO v4.public operator tokens (Ed25519) with PASERK keys;
//! - [`password`]: argon2id password hashes;
//! - [`guard`]: the tonic side, [`guard::Guarded`] around each gRPC server: verifies the token
//!   with the service's public keys and checks the permission table before a handler runs;
//! - [`store`]: the audit trail, proposals and registry in a service's own database (diesel);
//! - [`staff`]: a service's [`staff::Desk`] (audit trail, proposals, `StaffService`);
//! - [`registry`]: the operator registry and `OperatorService` (the business layer hosts it);
//! - [`client`]: attach a token to a client's calls; [`testing`]: keys and tokens for tests.
//!
//! Invariants: identity comes only from a verified token (the `x-operator-*` headers are dropped);
//! an RPC missing from the table is refused; only the business layer holds the signing key.

pub mod client;
pub mod domain;
pub mod guard;
pub mod password;
pub mod registry;
pub mod staff;
pub mod store;
pub mod testing;
pub mod token;

pub use domain::{Action, Operator, Role};
pub use guard::{staff, staff_if_any, Guarded, Staff, StaffAuth};
pub use staff::{Desk, Draft, Executor, NoProposals, StaffServer};
pub use token::{TokenSigner, TokenVerifier};

/// What every service needs for staff security: the token verifier and the four-eyes thresholds.
#[derive(Clone, Debug, Default)]
pub struct StaffConfig {
    /// Verifies operator tokens (the public keys from the configuration).
    pub auth: StaffAuth,
    /// Single-operator thresholds of money moved by hand (default: always two operators).
    pub four_eyes: domain::FourEyes,
}

impl StaffConfig {
    /// Trusting these public keys, always two operators.
    pub fn trusting<S: AsRef<str>>(public_keys: &[S]) -> tuikuan_kernel::Result<StaffConfig> {
        Ok(StaffConfig {
            auth: StaffAuth::from_public_keys(public_keys)?,
            four_eyes: domain::FourEyes::always_two(),
        })
    }
}
