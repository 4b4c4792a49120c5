//! Mutual TLS between services: who a service is, and how it proves it.
//!
//! Every process of a deployment holds one certificate for its identity ([`Principal`]), signed by
//! the deployment's certificate authority. The identity is named in the certificate twice:
//! - a URI subject alternative name `spiffe://tuikuan/<name>` (the SPIFFE X.509-SVID form): the
//!   server reads the **calling** service from it ([`principal_of`]) and checks it against the
//!   caller allow-list ([`crate::access`]);
//! - a DNS subject alternative name `<name>.tuikuan.internal`: the client verifies the **called**
//!   service by it ([`Principal::server_name`] is the TLS server name a client expects, whatever
//!   address it dials), so a proxy or a load balancer between the two changes nothing, and a
//!   certificate of another service is refused at the handshake.
//!
//! [`Transport`] is what a service is configured with: its credentials ([`Credentials`]: the
//! trusted CA certificates, its certificate and key, all PEM) or, only when the deployment says
//! `insecure_internal = true`, plaintext. Certificates are made by [`crate::pki`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tuikuan_kernel::Error;

/// The SPIFFE trust domain of tuikuan identities.
pub const TRUST_DOMAIN: &str = "tuikuan";
/// The DNS suffix of the name a client verifies a service's certificate by.
pub const SERVER_NAME_SUFFIX: &str = "tuikuan.internal";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A service identity: the seven services and the two staff clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    Accounting,
    Clearing,
    Business,
    Refund,
    Payout,
    Reconciliation,
    Bank,
    /// `tuikuan ctl` (and `tuikuan audit`): staff on the command line.
    Ctl,
    /// The operations console: staff in a browser, through its backend.
    Console,
}

impl Principal {
    pub const ALL: [Principal; 9] = [
        Principal::Accounting,
        Principal::Clearing,
        Principal::Business,
        Principal::Refund,
        Principal::Payout,
        Principal::Reconciliation,
        Principal::Bank,
        Principal::Ctl,
        Principal::Console,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Principal::Accounting => "accounting",
            Principal::Clearing => "clearing",
            Principal::Business => "business",
            Principal::Refund => "refund",
            Principal::Payout => "payout",
            Principal::Reconciliation => "reconciliation",
            Principal::Bank => "bank",
            Principal::Ctl => "ctl",
            Principal::Console => "console",
        }
    }

    pub fn parse(name: &str) -> Option<Principal> {
        Principal::ALL.into_iter().find(|p| p.name() == name)
    }

    /// `spiffe://tuikuan/<name>`: the URI SAN that names the identity.
    pub fn spiffe_id(self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}", self.name())
    }

    /// `<name>.tuikuan.internal`: the DNS SAN a client verifies the service's certificate by.
    pub fn server_name(self) -> String {
        format!("{}.{SERVER_NAME_SUFFIX}", self.name())
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The verified calling service, put into every request's extensions on an internal listener by
/// the access layer ([`crate::access`]) after its certificate was verified and the caller
/// allow-list passed. Absent on the public listener and on plaintext internal listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Principal);

/// The identity named by a DER certificate's `spiffe://tuikuan/<name>` URI SAN; `None` when it
/// names none, several, or one outside the trust domain.
pub fn principal_of(der: &[u8]) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let prefix = format!("spiffe://{TRUST_DOMAIN}/");
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if uri.starts_with("spiffe://") {
                let p = Principal::parse(uri.strip_prefix(prefix.as_str())?)?;
                if found.replace(p).is_some() {
                    return None;
                }
            }
        }
    }
    found
}

/// One identity's PEM material.
#[derive(Clone)]
pub struct Credentials {
    pub identity: Principal,
    /// The trusted CA certificates (one or more, concatenated: more than one while a CA rotates).
    pub ca_pem: String,
    /// The identity's certificate (leaf first, then any intermediates).
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads `<dir>/ca.pem`, `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (the layout
    /// `tuikuan certs init` writes), checking that the certificate names `identity`.
    pub fn from_dir(dir: &Path, identity: Principal) -> Result<Credentials, Error> {
        let read = |file: String| {
            let path = dir.join(&file);
            std::fs::read_to_string(&path).map_err(|e| {
                Error::field(
                    "tls.dir",
                    format!(
                        "cannot read {}: {e} (make development certificates with `tuikuan certs \
                         init {}`)",
                        path.display(),
                        dir.display()
                    ),
                )
            })
        };
        let credentials = Credentials {
            identity,
            ca_pem: read("ca.pem".into())?,
            cert_pem: read(format!("{}.pem", identity.name()))?,
            key_pem: read(format!("{}-key.pem", identity.name()))?,
        };
        credentials.check()?;
        Ok(credentials)
    }

    /// The certificate parses and names this identity.
    pub fn check(&self) -> Result<(), Error> {
        let der = crate::pki::first_cert_der(&self.cert_pem).ok_or_else(|| {
            Error::field("tls", format!("{}.pem holds no certificate", self.identity))
        })?;
        match principal_of(&der) {
            Some(p) if p == self.identity => Ok(()),
            other => Err(Error::field(
                "tls",
                format!(
                    "{}.pem names {:?}, not {}",
                    self.identity,
                    other.map(|p| p.spiffe_id()),
                    self.identity.spiffe_id()
                ),
            )),
        }
    }
}

/// How a service talks to its peers and serves its internal listener.
#[derive(Clone)]
pub enum Transport {
    /// Mutual TLS as the identity of these credentials.
    Mtls(Arc<Credentials>),
    /// Plaintext, no identities, no caller checks: only with `insecure_internal = true`.
    Insecure,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Mtls(c) => write!(f, "Mtls({})", c.identity),
            Transport::Insecure => f.write_str("Insecure"),
        }
    }
}

impl Transport {
    pub fn mtls(credentials: Credentials) -> Transport {
        Transport::Mtls(Arc::new(credentials))
    }

    /// The identity this transport proves, `None` for plaintext.
    pub fn identity(&self) -> Option<Principal> {
        match self {
            Transport::Mtls(c) => Some(c.identity),
            Transport::Insecure => None,
        }
    }

    pub fn is_insecure(&self) -> bool {
        matches!(self, Transport::Insecure)
    }

    /// A lazily connecting channel to `peer` at `addr` (`host:port`, `http://…` or `https://…`;
    /// the scheme follows the transport). Under mutual TLS the peer's certificate must name
    /// `peer` ([`Principal::server_name`]), whatever the address.
    pub fn channel(&self, peer: Principal, addr: &str) -> Result<Channel, Error> {
        match self {
            Transport::Insecure => crate::client::channel(addr),
            Transport::Mtls(c) => {
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&c.ca_pem))
                    .identity(Identity::from_pem(&c.cert_pem, &c.key_pem))
                    .domain_name(peer.server_name())
                    .timeout(HANDSHAKE_TIMEOUT);
                secure_endpoint(addr, tls).map(|e| e.connect_lazy())
            }
        }
    }

    /// The server side of mutual TLS: this identity's certificate, client certificates required
    /// and verified against the trusted CAs.
    pub(crate) fn server_tls(&self) -> Option<ServerTlsConfig> {
        match self {
            Transport::Insecure => None,
            Transport::Mtls(c) => Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&c.cert_pem, &c.key_pem))
                    .client_ca_root(Certificate::from_pem(&c.ca_pem))
                    .client_auth_optional(false)
                    .timeout(HANDSHAKE_TIMEOUT),
            ),
        }
    }
}

/// A server certificate for the public (merchant) listener; no client certificates.
#[derive(Clone)]
pub struct PublicTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for PublicTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicTls")
    }
}

impl PublicTls {
    pub fn from_files(cert: &Path, key: &Path) -> Result<PublicTls, Error> {
        let read = |path: &Path, field: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::field(field, format!("cannot read {}: {e}", path.display())))
        };
        Ok(PublicTls {
            cert_pem: read(cert, "tls.public_cert")?,
            key_pem: read(key, "tls.public_key")?,
        })
    }

    pub(crate) fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// A channel to the public listener at `addr`: HTTPS verified against `ca_pem` (the host name
/// or IP address of `addr` must be in the server's certificate) when `ca_pem` is given, else
/// plaintext.
pub fn public_channel(addr: &str, ca_pem: Option<&str>) -> Result<Channel, Error> {
    match ca_pem {
        None => crate::client::channel(addr),
        Some(ca) => {
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .timeout(HANDSHAKE_TIMEOUT);
            secure_endpoint(addr, tls).map(|e| e.connect_lazy())
        }
    }
}

fn secure_endpoint(addr: &str, tls: ClientTlsConfig) -> Result<Endpoint, Error> {
    let host = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    crate::client::endpoint(&format!("https://{host}"))?
        .tls_config(tls)
        .map_err(|e| Error::field("tls", format!("{addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_have_stable_names() {
        for p in Principal::ALL {
            assert_eq!(Principal::parse(p.name()), Some(p));
        }
        assert_eq!(Principal::Clearing.spiffe_id(), "spiffe://tuikuan/clearing");
        assert_eq!(Principal::Bank.server_name(), "bank.tuikuan.internal");
        assert_eq!(Principal::parse("auditor"), None);
    }
}
