//! The deployment's operator-token keys.
//!
//! Production: `operator_signing_key_file` (a PASERK `k4.secret.…` file, mode 0600) on the business
//! layer only, and `operator_public_keys` (`k4.public.…`, two during a rotation) on every service.
//! `tuikuan keys init DIR` makes a pair.
//!
//! Development (neither is configured): one key pair in `<data_dir>/operator-signing.key`, made on
//! first start by whichever process comes first and read by the others, with a loud warning. `up`,
//! `demo`, `chaos` and the tests run that way.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tuikuan_auth::token::{generate_keypair, public_key_of};
use tuikuan_auth::TokenSigner;

use crate::config::DeploymentConfig;

/// The development key's file name under the data directory.
pub const DEV_KEY_FILE: &str = "operator-signing.key";
/// The file names `tuikuan keys init` writes.
pub const SIGNING_KEY_FILE: &str = "operator-signing.key";
pub const PUBLIC_KEY_FILE: &str = "operator-public.key";

/// The keys a deployment uses.
#[derive(Clone)]
pub struct OperatorKeys {
    /// `k4.secret.…`: only the business layer gets it.
    pub signing: Option<String>,
    /// `k4.public.…`: every service trusts these.
    pub public: Vec<String>,
    /// Whether these are the development keys from the data directory.
    pub development: bool,
}

impl std::fmt::Debug for OperatorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKeys")
            .field("signing", &self.signing.as_ref().map(|_| "<secret>"))
            .field("public", &self.public)
            .field("development", &self.development)
            .finish()
    }
}

impl OperatorKeys {
    /// A signer for tokens of `ttl_secs` (tests, the demo and chaos mint their own operators'
    /// tokens with it; the business layer issues logins with it).
    pub fn signer(&self, ttl_secs: i64) -> anyhow::Result<Option<TokenSigner>> {
        self.signing
            .as_deref()
            .map(|s| TokenSigner::new(s, ttl_secs).map_err(|e| anyhow::anyhow!("{}", e.message)))
            .transpose()
    }
}

/// Resolves the keys of `config` (see the module documentation).
pub fn resolve(config: &DeploymentConfig) -> anyhow::Result<OperatorKeys> {
    let signing = config
        .operator_signing_key_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    let mut public: Vec<String> = config
        .operator_public_keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if signing.is_none() && public.is_empty() {
        let secret = dev_key(&config.data_dir)?;
        tracing::warn!(
            file = %config.data_dir.join(DEV_KEY_FILE).display(),
            "OPERATOR TOKEN KEYS ARE NOT CONFIGURED: using a development key pair from the data \
             directory. Set operator_signing_key_file (business) and operator_public_keys (every \
             service) in production; `tuikuan keys init DIR` makes them."
        );
        let p = public_key_of(&secret).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        return Ok(OperatorKeys {
            signing: Some(secret),
            public: vec![p],
            development: true,
        });
    }
    if let Some(secret) = &signing {
        let p = public_key_of(secret).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if !public.contains(&p) {
            public.push(p);
        }
    }
    Ok(OperatorKeys {
        signing,
        public,
        development: false,
    })
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("operator_signing_key_file: cannot read {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the operator signing key is readable by group or others; chmod 600 it");
            }
        }
    }
    let secret = text.trim().to_string();
    public_key_of(&secret).map_err(|e| {
        anyhow::anyhow!(
            "operator_signing_key_file {}: {}",
            path.display(),
            e.message
        )
    })?;
    Ok(secret)
}

/// Writes `text` to `path` only if it does not exist, readable by the owner only. `false` when
/// the file existed.
fn write_new_private(path: &Path, text: &str) -> anyhow::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The development key of `data_dir`, made once: written to a temporary file and linked into
/// place, so that processes starting together agree on one key.
fn dev_key(data_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data_dir: cannot create {}", data_dir.display()))?;
    let path = data_dir.join(DEV_KEY_FILE);
    if !path.exists() {
        let (secret, _) = generate_keypair().map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let tmp = data_dir.join(format!("{DEV_KEY_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        write_new_private(&tmp, &format!("{secret}\n"))?;
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
        let _ = std::fs::remove_file(&tmp);
    }
    read_secret(&path)
}

/// `tuikuan keys init DIR`: a new signing key (0600) and its public key; refuses to overwrite.
pub fn init(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (secret, public) = generate_keypair().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let secret_path = dir.join(SIGNING_KEY_FILE);
    if !write_new_private(&secret_path, &format!("{secret}\n"))? {
        anyhow::bail!(
            "{} exists already; move it away first (a new key invalidates every token it signed)",
            secret_path.display()
        );
    }
    std::fs::write(dir.join(PUBLIC_KEY_FILE), format!("{public}\n"))
        .with_context(|| format!("cannot write {}", dir.join(PUBLIC_KEY_FILE).display()))?;
    Ok((secret_path, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_keys_are_made_once_and_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let config = DeploymentConfig {
            data_dir: tmp.path().join("data"),
            ..DeploymentConfig::default()
        };
        let a = resolve(&config).unwrap();
        let b = resolve(&config).unwrap();
        assert!(a.development);
        assert_eq!(a.public, b.public);
        assert_eq!(a.signing, b.signing);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(config.data_dir.join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_keys_win_and_init_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let (secret_path, public) = init(tmp.path()).unwrap();
        assert!(init(tmp.path()).is_err());
        let config = DeploymentConfig {
            data_dir: tmp.path().join("data"),
            operator_signing_key_file: Some(secret_path),
            ..DeploymentConfig::default()
        };
        let keys = resolve(&config).unwrap();
        assert!(!keys.development);
        assert_eq!(keys.public, vec![public.clone()]);
        assert!(!config.data_dir.join(DEV_KEY_FILE).exists());
        // A verifier-only service: public keys, no signing key.
        let verify_only = DeploymentConfig {
            operator_public_keys: vec![public.clone()],
            ..DeploymentConfig::default()
        };
        let keys = resolve(&verify_only).unwrap();
        assert_eq!((keys.signing.is_none(), keys.public), (true, vec![public]));
        let bad = DeploymentConfig {
            operator_signing_key_file: Some(tmp.path().join(PUBLIC_KEY_FILE)),
            ..DeploymentConfig::default()
        };
        assert!(resolve(&bad).is_err());
    }
}
