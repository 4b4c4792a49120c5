//! Support of the business layer's notification tests: a merchant's HTTPS endpoint (a real TLS
//! server with a certificate from a test CA) and a fake DNS the sender can be given.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tuikuan_business::domain::egress::EgressRules;
use tuikuan_business::egress::Lookup;
use tuikuan_business::NotifySettings;
use tuikuan_proto::pki::CertKey;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A merchant's notification endpoint on 127.0.0.1:0, over HTTPS: answers 500 to the first
/// `fail_first` requests, then 200; records every request and counts every TCP connection.
pub struct MerchantEndpoint {
    pub url: String,
    pub port: u16,
    received: Arc<Mutex<Vec<Delivery>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MerchantEndpoint {
    /// With the test PKI's server certificate (`localhost`, `127.0.0.1`, `::1`), reached at
    /// `https://127.0.0.1:<port>/refund-notify`.
    pub async fn start(fail_first: usize) -> MerchantEndpoint {
        MerchantEndpoint::start_as(
            fail_first,
            &tuikuan_proto::pki::testing().public,
            "127.0.0.1",
        )
        .await
    }

    /// With `cert`, its URL naming `host` (which must resolve to 127.0.0.1 for the sender).
    pub async fn start_as(fail_first: usize, cert: &CertKey, host: &str) -> MerchantEndpoint {
        use http_body_util::BodyExt;
        use hyper::body::Bytes;
        let acceptor = tuikuan_proto::pki::https_acceptor(cert).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://{host}:{port}/refund-notify");
        let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let (log, count) = (received.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (log, acceptor) = (log.clone(), acceptor.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let header = |name: &str| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string()
                                };
                                let delivery = Delivery {
                                    timestamp: header("x-tuikuan-timestamp"),
                                    signature: header("x-tuikuan-signature"),
                                    content_type: header("content-type"),
                                    body: Vec::new(),
                                };
                                let body = req.into_body().collect().await?.to_bytes();
                                let n = {
                                    let mut l = log.lock().unwrap();
                                    l.push(Delivery {
                                        body: body.to_vec(),
                                        ..delivery
                                    });
                                    l.len()
                                };
                                let code = if n <= fail_first { 500 } else { 200 };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(code)
                                        .body(http_body_util::Full::new(Bytes::from_static(
                                            b"noted",
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MerchantEndpoint {
            url,
            port,
            received,
            connections,
            task,
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }

    /// TCP connections accepted so far (refused targets never connect).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for MerchantEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS of the test's own: host → addresses, changeable while the service runs (rebinding);
/// other names go to the system's resolver.
#[derive(Debug, Clone, Default)]
pub struct FakeDns(Arc<Mutex<HashMap<String, Vec<IpAddr>>>>);

impl FakeDns {
    pub fn set(&self, host: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.0.lock().unwrap().insert(host.to_string(), ips);
    }
}

impl Lookup for FakeDns {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        match self.0.lock().unwrap().get(host).cloned() {
            Some(found) => Box::pin(async move { Ok(found) }),
            None => tuikuan_business::egress::SystemLookup.lookup(host),
        }
    }
}

/// The sender's settings in these tests: HTTPS only, loopback allowed when `loopback`, the test
/// PKI's CA trusted (plus `extra_ca`), host names from `dns` (else the system's resolver).
pub fn notify_settings(loopback: bool, extra_ca: &[&str], dns: Option<FakeDns>) -> NotifySettings {
    let mut ca = tuikuan_proto::pki::testing().ca.cert_pem.clone();
    for pem in extra_ca {
        ca.push_str(pem);
    }
    let allow: &[&str] = if loopback { &["127.0.0.0/8"] } else { &[] };
    NotifySettings {
        rules: EgressRules::new(allow, false).unwrap(),
        extra_ca_pem: Some(ca),
        lookup: dns.map(|d| Arc::new(d) as Arc<dyn Lookup>),
    }
}
