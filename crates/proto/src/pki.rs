//! Certificates for a deployment, made with `rcgen`: a certificate authority, one certificate and
//! key per identity ([`Principal`]), and a server certificate for the public merchant listener.
//!
//! `tuikuan certs init DIR` writes them ([`Pki::write`]); the demo and the tests make theirs in
//! memory or in a temporary directory ([`Pki::generate`], [`testing`]). Keys are ECDSA P-256.
//!
//! Files (all PEM):
//! - `ca.pem`: the trusted CA certificates (this CA's; append another CA's while rotating);
//! - `ca-key.pem`: the CA's key (keep it offline in production; needed only to issue);
//! - `<identity>.pem`, `<identity>-key.pem`: one per [`Principal`];
//! - `merchant-api.pem`, `merchant-api-key.pem`: the public listener's server certificate.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use tuikuan_kernel::Error;

use crate::tls::{Credentials, Principal, PublicTls, Transport};

/// The file stem of the public listener's certificate.
pub const PUBLIC_CERT_NAME: &str = "merchant-api";
/// How long a CA made by [`Pki::generate`] is valid.
pub const CA_VALID_DAYS: i64 = 3650;
/// How long a leaf certificate is valid (rotate before; see docs/security.md).
pub const LEAF_VALID_DAYS: i64 = 397;

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertKey")
    }
}

/// A CA with a certificate for every identity and one for the public listener.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: CertKey,
    pub leaves: BTreeMap<Principal, CertKey>,
    pub public: CertKey,
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("certificates: {what}: {e}"))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back so that a peer whose clock is slightly behind accepts a fresh certificate.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// `O=tuikuan, CN=<common_name>`.
fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tuikuan");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn new_ca(common_name: &str) -> Result<(CertificateParams, KeyPair, String), Error> {
    let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALID_DAYS);
    let cert = params.self_signed(&key).map_err(|e| err("CA", e))?;
    Ok((params, key, cert.pem()))
}

fn sign_leaf(
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    sans: Vec<SanType>,
    client_auth: bool,
) -> Result<CertKey, Error> {
    let key = KeyPair::generate().map_err(|e| err("key", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALID_DAYS);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| err(common_name, e))?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, Error> {
    s.try_into()
        .map_err(|e| Error::field("host", format!("{s:?}: {e}")))
}

/// The SANs of an identity's certificate: its SPIFFE id and its server name.
fn identity_sans(p: Principal) -> Result<Vec<SanType>, Error> {
    Ok(vec![
        SanType::URI(ia5(&p.spiffe_id())?),
        SanType::DnsName(ia5(&p.server_name())?),
    ])
}

/// `localhost`, `127.0.0.1`, `::1` and `hosts` (names or IP addresses).
fn public_sans(hosts: &[String]) -> Result<Vec<SanType>, Error> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(hosts.iter().cloned());
    names.dedup();
    names
        .iter()
        .map(|h| match h.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(ia5(h)?)),
        })
        .collect()
}

impl Pki {
    /// A new CA and every certificate; `public_hosts` are added to the public listener's
    /// certificate (besides localhost and the loopback addresses).
    pub fn generate(public_hosts: &[String]) -> Result<Pki, Error> {
        let (ca_params, ca_key, ca_pem) = new_ca("tuikuan development CA")?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let mut leaves = BTreeMap::new();
        for p in Principal::ALL {
            leaves.insert(p, sign_leaf(&issuer, p.name(), identity_sans(p)?, true)?);
        }
        let public = sign_leaf(&issuer, PUBLIC_CERT_NAME, public_sans(public_hosts)?, false)?;
        Ok(Pki {
            ca: CertKey {
                cert_pem: ca_pem,
                key_pem: ca_key.serialize_pem(),
            },
            leaves,
            public,
        })
    }

    /// The credentials of `identity`.
    pub fn credentials(&self, identity: Principal) -> Credentials {
        let leaf = &self.leaves[&identity];
        Credentials {
            identity,
            ca_pem: self.ca.cert_pem.clone(),
            cert_pem: leaf.cert_pem.clone(),
            key_pem: leaf.key_pem.clone(),
        }
    }

    /// Mutual TLS as `identity`.
    pub fn transport(&self, identity: Principal) -> Transport {
        Transport::mtls(self.credentials(identity))
    }

    /// The public listener's server certificate.
    pub fn public_tls(&self) -> PublicTls {
        PublicTls {
            cert_pem: self.public.cert_pem.clone(),
            key_pem: self.public.key_pem.clone(),
        }
    }

    /// Writes the files (see the module documentation) into `dir`, creating it. Refuses to
    /// overwrite an existing `ca.pem` unless `force`. Key files are readable by the owner only.
    pub fn write(&self, dir: &Path, force: bool) -> Result<Vec<String>, Error> {
        std::fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))?;
        if !force && dir.join("ca.pem").exists() {
            return Err(Error::field(
                "DIR",
                format!(
                    "{} already holds a CA (ca.pem); use --force to replace every certificate, or \
                     `tuikuan certs issue` to renew leaves",
                    dir.display()
                ),
            ));
        }
        let mut written = Vec::new();
        write_pair(dir, "ca", &self.ca, &mut written)?;
        for (p, leaf) in &self.leaves {
            write_pair(dir, p.name(), leaf, &mut written)?;
        }
        write_pair(dir, PUBLIC_CERT_NAME, &self.public, &mut written)?;
        Ok(written)
    }
}

fn write_pair(
    dir: &Path,
    stem: &str,
    pair: &CertKey,
    written: &mut Vec<String>,
) -> Result<(), Error> {
    let cert = dir.join(format!("{stem}.pem"));
    std::fs::write(&cert, &pair.cert_pem).map_err(|e| err(&cert.display().to_string(), e))?;
    let key = dir.join(format!("{stem}-key.pem"));
    write_private(&key, &pair.key_pem)?;
    written.push(format!("{stem}.pem"));
    written.push(format!("{stem}-key.pem"));
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| err(&path.display().to_string(), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| err(&path.display().to_string(), e))
}

/// Issues new certificates for `names` (identities, or `merchant-api`) with the CA in `dir`
/// (`ca-key.pem` and the certificate of `ca.pem` that matches it), replacing their files: the
/// leaf rotation of docs/security.md. Returns the files written.
pub fn issue(dir: &Path, names: &[String], public_hosts: &[String]) -> Result<Vec<String>, Error> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .map_err(|e| Error::field("DIR", format!("cannot read {}: {e}", dir.join(f).display())))
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| err("ca-key.pem", e))?;
    let ca_bundle = read("ca.pem")?;
    let spki = ca_key.subject_public_key_info();
    let ca_der = x509_parser::pem::Pem::iter_from_buffer(ca_bundle.as_bytes())
        .filter_map(Result::ok)
        .map(|pem| pem.contents)
        .find(|der| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, c)| c.public_key().raw == spki.as_slice())
                .unwrap_or(false)
        })
        .ok_or_else(|| Error::field("DIR", "no certificate in ca.pem matches ca-key.pem"))?;
    let issuer = Issuer::from_ca_cert_der(&ca_der.into(), &ca_key).map_err(|e| err("ca.pem", e))?;
    let mut written = Vec::new();
    for name in names {
        let pair = if name == PUBLIC_CERT_NAME {
            sign_leaf(&issuer, PUBLIC_CERT_NAME, public_sans(public_hosts)?, false)?
        } else {
            let p = Principal::parse(name).ok_or_else(|| {
                Error::field(
                    "NAME",
                    format!(
                        "{name:?} is not an identity; expected {} or {PUBLIC_CERT_NAME}",
                        Principal::ALL.map(|p| p.name()).join(", ")
                    ),
                )
            })?;
            sign_leaf(&issuer, p.name(), identity_sans(p)?, true)?
        };
        write_pair(dir, name, &pair, &mut written)?;
    }
    Ok(written)
}

/// The DER of the first certificate in a PEM text.
pub fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

/// A TLS acceptor serving `cert` (no client certificates): an HTTPS endpoint of a test or the
/// demo, such as a merchant's notification receiver.
pub fn https_acceptor(cert: &CertKey) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| err("key", e))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("TLS", e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| err("TLS", e))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// One PKI per test process (made once: key generation is cheap, but a test suite starts many
/// clusters), and a second, unrelated one for "a certificate from another CA".
pub fn testing() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(&[]).expect("test certificates"))
}

/// Mutual TLS as `identity` with the test PKI ([`testing`]).
pub fn test_transport(identity: Principal) -> Transport {
    testing().transport(identity)
}

/// A channel to `peer` at `addr`, as `identity`, with the test PKI ([`testing`]).
pub fn test_channel(identity: Principal, peer: Principal, addr: &str) -> tonic::transport::Channel {
    testing()
        .transport(identity)
        .channel(peer, addr)
        .expect("test channel")
}

/// A PKI with another CA: its certificates name real identities but are signed by a CA nobody
/// trusts.
pub fn testing_foreign() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::generate(&[]).expect("test certificates"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::principal_of;

    #[test]
    fn every_identity_certificate_names_its_identity() {
        let pki = testing();
        for p in Principal::ALL {
            let creds = pki.credentials(p);
            creds.check().unwrap();
            assert_eq!(
                principal_of(&first_cert_der(&creds.cert_pem).unwrap()),
                Some(p)
            );
        }
        assert_eq!(
            principal_of(&first_cert_der(&pki.public.cert_pem).unwrap()),
            None
        );
        let mut wrong = pki.credentials(Principal::Bank);
        wrong.identity = Principal::Refund;
        assert!(wrong.check().is_err());
    }

    #[test]
    fn init_writes_files_and_issue_renews_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(&["refunds.example.com".into()]).unwrap();
        let files = pki.write(dir.path(), false).unwrap();
        assert!(files.contains(&"ca.pem".to_string()));
        assert!(files.contains(&"refund-key.pem".to_string()));
        assert!(pki.write(dir.path(), false).is_err(), "no silent overwrite");
        let before = std::fs::read_to_string(dir.path().join("refund.pem")).unwrap();
        issue(dir.path(), &["refund".into()], &[]).unwrap();
        let creds = Credentials::from_dir(dir.path(), Principal::Refund).unwrap();
        assert_ne!(creds.cert_pem, before, "a new certificate");
        assert!(issue(dir.path(), &["auditor".into()], &[]).is_err());
    }
}
