//! The HTTP client of channel connectors: reqwest over rustls (no OpenSSL), bounded timeouts and
//! bounded answer sizes. A transport failure is [`ErrorCode::Unavailable`]: the outcome of what
//! was sent is unknown, and the caller retries with the same reference.

use std::time::Duration;

use tuikuan_kernel::{Error, Result};

/// The largest API answer read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The largest bill read (compressed or not), in bytes.
pub const MAX_BILL_BYTES: usize = 256 * 1024 * 1024;

/// An HTTP answer as received (headers lower-cased).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client with the connector's timeouts. It ignores proxy settings from the environment
/// (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`): calls to a bank carry signed money movements and go
/// to the configured endpoint directly, never through a proxy nobody configured for them.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))
}

/// Sends `request` and reads the answer, at most `max_bytes` of body.
pub async fn send(
    channel: &str,
    request: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<Answer> {
    let unavailable =
        |what: &str, e: reqwest::Error| Error::unavailable(format!("{channel}: {what}: {e}"));
    let mut response = request
        .send()
        .await
        .map_err(|e| unavailable("no answer", e.without_url()))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable("answer cut short", e.without_url()))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(Error::unavailable(format!(
                "{channel}: answer larger than {max_bytes} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}
