//! Channels to peers: lazily connected (a service starts before its peers), with connect and
//! request timeouts so that a hung peer becomes a retryable `UNAVAILABLE`, never a hung chain.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tuikuan_kernel::Error;

/// Default per-request timeout for calls between services.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily connecting channel to `addr` (`http://host:port`, or `host:port`).
pub fn channel(addr: &str) -> Result<Channel, Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(endpoint(&uri)?.connect_lazy())
}

/// An endpoint for `uri` with the connect and request timeouts and keep-alives of every channel.
pub(crate) fn endpoint(uri: &str) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(uri.to_string())
        .map_err(|e| {
            Error::field(
                "peer address",
                format!("{}: {e}", tuikuan_kernel::echo(uri)),
            )
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(DEFAULT_REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30)))
}
