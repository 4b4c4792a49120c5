//! The merchant notification sender's HTTP client: HTTPS with certificate verification (reqwest
//! over rustls, the public web roots plus the CAs the deployment adds), and the guard against
//! server-side request forgery whose rules are [`crate::domain::egress`].
//!
//! # Where the guard acts
//! - **When a URL is set** ([`Sender::check`], `SetNotifyConfig`): the scheme, then the address —
//!   an IP literal (in any form the URL parser accepts: `http://2130706433/` is 127.0.0.1), or
//!   every address its host name resolves to — must be allowed, else `NOTIFY_URL_FORBIDDEN`.
//! - **At every delivery** ([`Sender::post`]): the same checks again. A host name is resolved by
//!   the client's own resolver ([`GuardedResolver`]), which refuses the name when any of its
//!   addresses is not allowed and otherwise hands exactly the checked addresses to the
//!   connection: the address connected to is the address checked, so a name that resolves to a
//!   public address when set and to 127.0.0.1 at delivery (DNS rebinding) is refused, and no
//!   second lookup can differ from the checked one.
//!
//! # What the client never does
//! - follow redirects (a 3xx is a failed attempt; a redirect could point anywhere);
//! - use a proxy from the environment (`HTTP_PROXY`, …: the proxy would resolve the name, past
//!   the guard);
//! - read more than [`MAX_ANSWER_BYTES`] of an answer, or wait longer than
//!   [`NOTIFY_TIMEOUT_SECS`] for one;
//! - send to `http://` unless the deployment allows plain HTTP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tuikuan_kernel::{echo, Error, Result};

use crate::domain::egress::EgressRules;
use crate::domain::notify::{
    sign, NotifyTarget, NOTIFY_TIMEOUT_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

/// The largest answer body read from a merchant (the rest is not read).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a host name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How host names are resolved: the system's resolver ([`SystemLookup`]), or a test's.
pub trait Lookup: Send + Sync + std::fmt::Debug {
    /// Every address of `host` (a name, never an IP literal).
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The sender's settings (the deployment's `[notify]` section).
#[derive(Clone, Default)]
pub struct NotifySettings {
    /// Which addresses and schemes notifications may go to.
    pub rules: EgressRules,
    /// CA certificates (PEM) trusted besides the public web roots: a merchant endpoint with a
    /// certificate from a private CA, or a test's.
    pub extra_ca_pem: Option<String>,
    /// How host names are resolved; `None`: [`SystemLookup`].
    pub lookup: Option<Arc<dyn Lookup>>,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("rules", &self.rules)
            .field("extra_ca_pem", &self.extra_ca_pem.is_some())
            .field("lookup", &self.lookup)
            .finish()
    }
}

/// Resolves host names for the client and refuses any name with an address the rules do not
/// allow; the addresses it returns are the ones the connection uses.
#[derive(Debug)]
pub struct GuardedResolver {
    rules: Arc<EgressRules>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// Every address of `host`, each allowed by the rules.
    async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>> {
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.lookup(host))
            .await
            .map_err(|_| {
                Error::field(
                    "notify_url",
                    format!("{} did not resolve within {LOOKUP_TIMEOUT:?}", echo(host)),
                )
            })?
            .map_err(|e| {
                Error::field(
                    "notify_url",
                    format!("{} does not resolve: {e}", echo(host)),
                )
            })?;
        if found.is_empty() {
            return Err(Error::field(
                "notify_url",
                format!("{} has no address", echo(host)),
            ));
        }
        for ip in &found {
            self.rules.check_ip(host, *ip)?;
        }
        Ok(found)
    }
}

/// A refusal by the guard inside the client's resolver, found again in the client's error chain.
#[derive(Debug)]
struct Refused(Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl std::error::Error for Refused {}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = GuardedResolver {
            rules: self.rules.clone(),
            lookup: self.lookup.clone(),
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolver
                .resolve_checked(&host)
                .await
                .map_err(|e| Box::new(Refused(e)) as Box<dyn std::error::Error + Send + Sync>)?;
            // Port 0: the connector puts the URL's port in.
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The notification sender's client and its guard.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    resolver: Arc<GuardedResolver>,
}

impl Sender {
    pub fn new(settings: &NotifySettings) -> Result<Sender> {
        let resolver = Arc::new(GuardedResolver {
            rules: Arc::new(settings.rules.clone()),
            lookup: settings
                .lookup
                .clone()
                .unwrap_or_else(|| Arc::new(SystemLookup)),
        });
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(!settings.rules.allow_http)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(resolver.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(NOTIFY_TIMEOUT_SECS))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent("tuikuan-notify/1");
        if let Some(pem) = &settings.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::field("notify.ca_file", e))?;
            if certs.is_empty() {
                return Err(Error::field("notify.ca_file", "holds no certificate"));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Error::internal(format!("cannot build the notification client: {e}")))?;
        Ok(Sender { client, resolver })
    }

    /// Whether notifications may go to `url` (already validated for syntax): its scheme, and the
    /// addresses its host is or resolves to now. `NOTIFY_URL_FORBIDDEN` when not.
    pub async fn check(&self, url: &str) -> Result<()> {
        match self.target(url)? {
            (host, Some(ip)) => self.resolver.rules.check_ip(&host, ip),
            (host, None) => self.resolver.resolve_checked(&host).await.map(|_| ()),
        }
    }

    /// The URL's host, and its address when the host is an IP literal; the scheme checked.
    fn target(&self, url: &str) -> Result<(String, Option<IpAddr>)> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::field("notify_url", format!("{}: {e}", echo(url))))?;
        self.resolver.rules.check_scheme(parsed.scheme())?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::field("notify_url", "must name a host"))?
            .to_string();
        // The parser writes IPv4 hosts in dotted form whatever the URL said, IPv6 in brackets.
        let ip = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        Ok((host, ip))
    }

    /// POSTs a signed notification body: `Ok(status)` for a 2xx, else the HTTP status (if any)
    /// and why.
    pub async fn post(
        &self,
        target: &NotifyTarget,
        body: &str,
        timestamp_secs: i64,
    ) -> std::result::Result<u16, (Option<u16>, String)> {
        let refused = |e: Error| (None, format!("{}: {}", e.code, e.message));
        // IP literals never reach the resolver: check them here. Names are checked by it.
        if let (host, Some(ip)) = self.target(&target.url).map_err(refused)? {
            self.resolver.rules.check_ip(&host, ip).map_err(refused)?;
        }
        let timestamp = timestamp_secs.to_string();
        let signature = sign(&target.secret, &timestamp, body.as_bytes());
        let sent = self
            .client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.as_str())
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await;
        let mut answer = match sent {
            Ok(a) => a,
            Err(e) => return Err((None, failure(e))),
        };
        let status = answer.status().as_u16();
        // Read a bounded part of the answer (the rest is dropped with the connection).
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match answer.chunk().await {
                Ok(Some(chunk)) => read = read.saturating_add(chunk.len()),
                Ok(None) | Err(_) => break,
            }
        }
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err((Some(status), format!("the merchant answered HTTP {status}")))
        }
    }
}

/// Why a request failed, for the attempt log: the guard's refusal when it was one, else the
/// error and its sources (without the URL, which may carry a merchant's token).
fn failure(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(Refused(inner)) = s.downcast_ref::<Refused>() {
            return format!("{}: {}", inner.code, inner.message);
        }
        source = s.source();
    }
    if e.is_timeout() {
        return format!("no answer within {NOTIFY_TIMEOUT_SECS} s");
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
