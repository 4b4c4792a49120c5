//! The shared kernel of tuikuan.
//!
//! Layout:
//! - [`money`]: [`Money`] and [`Currency`], decimal amounts validated on receipt, minor units for storage;
//! - [`id`]: validated identifiers supplied by merchants and generated ids;
//! - [`bank_ref`]: bank reference ids within each channel's rules ([`bank_ref::IdScheme`]);
//! - [`clock`]: the injectable [`Clock`] (system or manual) so days can pass in seconds;
//! - [`calendar`]: the working-day calendar (工作日), loaded from a TOML file;
//! - [`card`]: payment-card numbers ([`CardNumber`]: digits, 12–19 long, Luhn; shown only masked);
//! - [`seal`]: values sealed at rest (AES-256-GCM, `enc:v1:`) under the deployment's [`seal::CardKey`],
//!   and the keyed hash matching card numbers without storing them;
//! - [`string_enum!`]: fieldless enums with stable string forms;
//! - [`echo`]: [`echo()`], the one way a request value goes into an error message or a log line
//!   (quoted, capped, the cut marked);
//! - [`error`]: [`Error`] with its stable [`ErrorCode`], the only error type that crosses a service boundary.
//!
//! The kernel depends on no database and no RPC framework.

pub mod bank_ref;
pub mod calendar;
pub mod card;
pub mod clock;
pub mod echo;
pub mod error;
pub mod id;
pub mod money;
pub mod seal;
pub mod statement;
mod string_enum;

pub use calendar::WorkingCalendar;
pub use card::CardNumber;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use echo::echo;
pub use error::{Error, ErrorCode, Result};
pub use money::{Currency, Money};
