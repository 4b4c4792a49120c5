//! The shared kernel of tuikuan.
//!
//! Layout:
//! - [`money`]: [`Money`] and [`Currency`], decimal amounts validated on receipt, minor units for storage;
//! - [`id`]: validated identifiers supplied by merchants and generated ids;
//! - [`clock`]: the injectable [`Clock`] (system or manual) so days can pass in seconds;
//! - [`calendar`]: the working-day calendar (工作日);
//! - [`error`]: [`Error`] with its stable [`ErrorCode`], the only error type that crosses a service boundary.
//!
//! The kernel depends on no database and no RPC framework.

pub mod calendar;
pub mod clock;
pub mod error;
pub mod id;
pub mod money;

pub use calendar::WorkingCalendar;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{Error, ErrorCode, Result};
pub use money::{Currency, Money};
