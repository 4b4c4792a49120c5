//! Generated gRPC code for tuikuan, one module per versioned package, plus the shared gRPC plumbing.
//!
//! Layout:
//! - `accounting::v1`, `clearing::v1`, … : prost messages and tonic clients/servers;
//! - [`status`]: the one table from [`tuikuan_kernel::ErrorCode`] to `tonic::Status` and back;
//! - [`server`]: serve a listener (internal: mutual TLS and the caller allow-list; public: the
//!   merchant API) with the standard health service and reflection of exactly its services
//!   ([`reflection`]);
//! - [`tls`]: service identities ([`tls::Principal`]), the verified [`tls::Caller`] extension,
//!   credentials and transports; [`pki`]: making certificates (`rcgen`);
//! - [`access`]: the one caller allow-list table and the tower layer enforcing it;
//! - [`client`]: lazily connected channels with timeouts for peers;
//! - [`jobs`]: scheduled jobs that stop between steps (graceful stop);
//! - [`driver`]: a test driver's channel that plays every caller over mutual TLS ([`driver::AnyCaller`]).

/// The protobuf runtime of the generated messages (encode a request to keep it, e.g. as a
/// four-eyes proposal's payload).
pub use prost;

pub mod access;
pub mod client;
pub mod driver;
pub mod jobs;
pub mod pki;
pub mod reflection;
pub mod server;
pub mod status;
pub mod tls;

/// The encoded descriptor set of every tuikuan proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tuikuan_descriptor.bin"));

macro_rules! package {
    ($name:ident, $pkg:literal) => {
        pub mod $name {
            pub mod v1 {
                #![allow(clippy::all, clippy::pedantic, missing_docs)]
                include!(concat!(env!("OUT_DIR"), "/", $pkg, ".rs"));
            }
        }
    };
}

package!(accounting, "tuikuan.accounting.v1");
package!(clearing, "tuikuan.clearing.v1");
package!(business, "tuikuan.business.v1");
package!(refund, "tuikuan.refund.v1");
package!(payout, "tuikuan.payout.v1");
package!(reconciliation, "tuikuan.reconciliation.v1");
package!(bank, "tuikuan.bank.v1");
package!(staff, "tuikuan.staff.v1");
