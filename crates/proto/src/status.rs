//! Errors on the wire.
//!
//! A [`tuikuan_kernel::Error`] travels as a `tonic::Status` whose code comes from
//! [`ErrorCode::grpc_code`] (the one table), whose message is the error's message, and whose
//! `tk-error-code` metadata carries the stable code. [`from_status`] turns it back into the same
//! kernel error on the client side; transport failures become `UNAVAILABLE`.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tuikuan_kernel::{Error, ErrorCode};

/// The metadata key carrying the stable error code.
pub const ERROR_CODE_KEY: &str = "tk-error-code";

/// Kernel error → gRPC status.
pub fn to_status(e: &Error) -> Status {
    let mut status = Status::new(Code::from_i32(e.code.grpc_code()), e.message.clone());
    if let Ok(v) = MetadataValue::try_from(e.code.as_str()) {
        status.metadata_mut().insert(ERROR_CODE_KEY, v);
    }
    status
}

/// gRPC status → kernel error (from a peer's answer).
pub fn from_status(s: &Status) -> Error {
    let code = s
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse)
        .unwrap_or(match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists => ErrorCode::IdempotencyConflict,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::FailedPrecondition => ErrorCode::InvalidStateTransition,
            // Cancelled, deadline exceeded, unavailable, unknown transport trouble: the far side
            // may or may not have acted, so the caller retries with the same key.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        });
    Error::new(code, s.message().to_string())
}

/// Extension for handler results: `domain_call().map_err(grpc_err)?`.
pub fn grpc_err(e: Error) -> Status {
    if matches!(e.code, ErrorCode::Internal | ErrorCode::Storage) {
        tracing::error!(code = %e.code, error = %e.message, "request failed");
    }
    to_status(&e)
}

/// Extension for client calls: `client.call(req).await.map_err(peer_err)?`.
pub fn peer_err(s: Status) -> Error {
    from_status(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_a_status() {
        for code in ErrorCode::ALL {
            let e = Error::new(*code, "something happened");
            let s = to_status(&e);
            assert_eq!(s.code() as i32, code.grpc_code());
            assert_eq!(from_status(&s), e);
        }
    }

    #[test]
    fn transport_failures_are_retryable() {
        let e = from_status(&Status::deadline_exceeded("timeout"));
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.is_retryable());
    }
}
