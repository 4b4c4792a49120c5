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
//! - [`recorder`]: the audit entry of every audited staff call, written around the handler;
//! - [`store`]: the audit trail, proposals and registry in a service's own database (diesel);
//! - [`staff`]: a service's [`staff::Desk`] (audit trail, proposals, `StaffService`);
//! - [`registry`]: the operator registry and `OperatorService` (the business layer hosts it);
//! - [`answer`]: how a four-eyes action's RPC answers (the proposal in the response metadata);
//! - [`client`]: attach a token to a client's calls; [`testing`]: keys and tokens for tests.
//!
//! Invariants: identity comes only from a verified token (the `x-operator-*` headers are dropped);
//! an RPC missing from the table is refused; only the business layer holds the signing key.

pub mod answer;
pub mod client;
pub mod domain;
pub mod guard;
pub mod password;
pub mod recorder;
pub mod registry;
pub mod staff;
pub mod store;
pub mod testing;
pub mod token;

pub use domain::{Action, Operator, Role};
/// The future an [`Executor`] answers with.
pub use futures::future::BoxFuture;
pub use guard::{acting_name, staff, staff_if_any, Guarded, Staff, StaffAuth};
pub use staff::{mark_executed, Desk, Draft, Executed, Executor, NoProposals, StaffServer};
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
    /// Opens the staff desk of `service` (audit trail, proposals) on its database.
    pub fn desk(
        &self,
        service: &'static str,
        db: &tuikuan_db::Db,
        clock: tuikuan_kernel::SharedClock,
    ) -> tuikuan_kernel::Result<Desk> {
        db.migrate(store::MIGRATIONS)?;
        Ok(Desk::new(
            service,
            db.clone(),
            clock,
            self.four_eyes.clone(),
        ))
    }

    /// For a service's own tests: tokens of [`testing::shared`] are verified, every staff call
    /// without a token acts as the operator [`guard::TESTER`] with every role, and one operator
    /// suffices for every four-eyes action (the action runs when proposed; the whole-chain tests
    /// cover the second operator).
    #[cfg(any(test, feature = "testing"))]
    pub fn tester() -> StaffConfig {
        let mut config =
            StaffConfig::for_tests(&[testing::shared().public_key()]).expect("a fresh key parses");
        config.four_eyes = domain::FourEyes::one_operator_for_tests();
        config
    }

    /// For a service's own tests: see [`StaffAuth::for_tests`]; always two operators.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests<S: AsRef<str>>(public_keys: &[S]) -> tuikuan_kernel::Result<StaffConfig> {
        Ok(StaffConfig {
            auth: StaffAuth::for_tests(public_keys)?,
            four_eyes: domain::FourEyes::always_two(),
        })
    }

    /// Trusting these public keys, always two operators.
    pub fn trusting<S: AsRef<str>>(public_keys: &[S]) -> tuikuan_kernel::Result<StaffConfig> {
        Ok(StaffConfig {
            auth: StaffAuth::from_public_keys(public_keys)?,
            four_eyes: domain::FourEyes::always_two(),
        })
    }
}

/// The gRPC name of `StaffService` (for a listener's health and reflection).
pub const STAFF_SERVICE: &str = "tuikuan.staff.v1.StaffService";
