//! The business layer's staff side: it hosts the operator registry (`OperatorService`: login,
//! operator management; the only holder of the token signing key) and its own staff desk (audit
//! trail and proposals, `StaffService`).

use tuikuan_auth::registry::Registry;
use tuikuan_auth::{Desk, TokenSigner};
use tuikuan_db::Db;
use tuikuan_kernel::{Error, Result};

use crate::grpc::Config;

/// Opens the registry (creating the first administrator from the configuration when it is
/// empty) and the desk, on the business layer's database.
pub async fn open(config: &Config, db: &Db) -> Result<(Registry, Desk)> {
    db.migrate(tuikuan_auth::store::MIGRATIONS)?;
    db.migrate(tuikuan_auth::store::REGISTRY_MIGRATIONS)?;
    let signer = config
        .operators
        .signing_key
        .as_deref()
        .map(|k| TokenSigner::new(k, config.operators.token_ttl_secs))
        .transpose()?;
    if let Some(signer) = &signer {
        let public = signer.public_key()?;
        if !config.staff.auth.verifier().has_keys() {
            return Err(Error::field(
                "operator_public_keys",
                format!("the business layer signs tokens but trusts no public key; add {public}"),
            ));
        }
    }
    let registry = Registry::new(db.clone(), config.clock.clone(), signer);
    if let Some((name, hash)) = &config.operators.bootstrap_admin {
        registry.bootstrap(name, hash).await?;
    }
    let desk = Desk::new(
        "business",
        db.clone(),
        config.clock.clone(),
        config.staff.four_eyes.clone(),
    );
    Ok((registry, desk))
}
