//! Throw-away deployments in a directory of their own (the demo, benchmarks, `tuikuan chaos` and
//! the tests): free ports, no job loops, and certificates of their own made on the spot — mutual
//! TLS on every internal listener and TLS on the public one, as in production.

use std::path::Path;

use anyhow::Context;
use tuikuan_proto::pki::{Pki, PUBLIC_CERT_NAME};

use crate::config::{DeploymentConfig, Service};

/// A deployment under `dir` (databases in `dir`, certificates of `pki` written to `dir/certs`),
/// every listener on a free port, scheduled jobs off.
pub fn throwaway_config(dir: &Path, pki: &Pki) -> anyhow::Result<DeploymentConfig> {
    let certs = dir.join("certs");
    pki.write(&certs, true)
        .map_err(|e| anyhow::anyhow!(e.message))
        .with_context(|| format!("certificates in {}", certs.display()))?;
    let mut config = DeploymentConfig {
        data_dir: dir.to_path_buf(),
        job_interval_ms: 0,
        public_port: 0,
        ..DeploymentConfig::default()
    };
    for s in Service::ALL {
        config.ports.insert(s.name().to_string(), 0);
    }
    config.tls.dir = certs.clone();
    config.tls.public_cert = Some(certs.join(format!("{PUBLIC_CERT_NAME}.pem")));
    config.tls.public_key = Some(certs.join(format!("{PUBLIC_CERT_NAME}-key.pem")));
    Ok(config)
}

/// A fresh PKI (for runs that are not tests: the demo, benchmarks, chaos).
pub fn fresh_pki() -> anyhow::Result<Pki> {
    Pki::generate(&[]).map_err(|e| anyhow::anyhow!(e.message))
}
