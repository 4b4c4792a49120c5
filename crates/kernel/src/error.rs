//! Stable error codes.
//!
//! Every error that leaves a service carries one [`ErrorCode`]. Its string form (`as_str`) is part of the
//! public API: clients match on it, so a code is never renamed or reused. The gRPC status code for each
//! error code is fixed by [`ErrorCode::grpc_code`], the one table of that mapping.

use std::fmt;

/// A stable, machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // invalid_argument
    /// A field is missing or malformed; the message names the field.
    InvalidArgument,
    /// An amount is not a positive decimal within the currency's precision and bounds.
    InvalidAmount,
    /// The currency is not one tuikuan supports.
    UnsupportedCurrency,
    /// An identifier has characters or a length that is not allowed.
    MalformedId,
    /// The request could not be decoded (not the RPC's protobuf message).
    MalformedRequest,
    /// The request is larger than the listener accepts.
    RequestTooLarge,
    /// A merchant notification URL names (or resolves to) an address notifications may not go
    /// to (loopback, private, link-local and other special-purpose ranges), or a scheme the
    /// deployment does not allow (plain http).
    NotifyUrlForbidden,
    // unauthenticated / permission_denied
    /// No credentials were given.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// The operator token has expired; the operator logs in again.
    TokenExpired,
    /// An operator login failed: unknown name, wrong password, disabled or locked (one answer).
    InvalidCredentials,
    /// An operator tried to approve or reject their own four-eyes proposal.
    SelfApproval,
    /// The calling service (named by its verified client certificate) is not on the RPC's caller
    /// allow-list, or presented no identity the allow-list knows.
    CallerNotAllowed,
    // not_found
    /// The trade does not exist (or belongs to another merchant).
    TradeNotFound,
    /// The refund does not exist (or belongs to another merchant).
    RefundNotFound,
    /// The merchant does not exist.
    MerchantNotFound,
    /// The channel is not configured.
    ChannelNotFound,
    /// No refund debit exists for this refund.
    DebitNotFound,
    /// The payment was never settled in the clearing center.
    SettlementNotFound,
    /// The payout does not exist.
    PayoutNotFound,
    /// The reconciliation run or clearing file does not exist.
    NotFound,
    // already_exists
    /// The idempotency key was used before with different content.
    IdempotencyConflict,
    // failed_precondition
    /// The refund would make the trade's refunds exceed what was paid.
    RefundExceedsPaid,
    /// The trade is past its channel's refund window.
    RefundWindowExpired,
    /// The trade is not in a state that can be refunded.
    TradeNotRefundable,
    /// The merchant's balance cannot cover the debit.
    InsufficientBalance,
    /// The currency differs from the original payment's.
    CurrencyMismatch,
    /// The requested state change is not allowed from the current state.
    InvalidStateTransition,
    /// A posting's debits and credits differ.
    UnbalancedPosting,
    /// The refund debit is not in a state that allows this.
    DebitNotActive,
    /// No refund method of the channel can take this refund now.
    NoRefundMethod,
    /// The refund failed: every method was exhausted or finance confirmed the failure.
    RefundFailed,
    /// The bank returned a payout after reporting it paid (退票); the money is back with the merchant.
    PayoutReturned,
    /// A staff action that would give the money back is refused: the bank paid, or may still pay,
    /// an attempt of the refund.
    BankMayHavePaid,
    /// The four-eyes proposal waited longer than its lifetime; propose again.
    ProposalExpired,
    /// A reserve, own-funds, in-transit or suspense account would go below zero; nothing was posted.
    InsufficientFunds,
    /// The platform's coupon share covers the whole refund: there is no cash to pay back.
    CouponOnlyRefund,
    /// The merchant's advance line is in another currency than the refund's.
    AdvanceCurrencyMismatch,
    // unavailable
    /// A downstream service did not answer; the request may be retried with the same key.
    Unavailable,
    /// The request was accepted but its chain is still running; query it later.
    InProgress,
    /// A payment channel's answer, notification or bill failed verification (signature, timestamp,
    /// certificate serial, digest); nothing it said was used. The outcome stays unknown: retry.
    ChannelUnverified,
    // internal
    /// Storage failed.
    Storage,
    /// A bug or an unexpected condition.
    Internal,
}

/// gRPC status codes (numeric values fixed by the gRPC specification).
pub mod grpc {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidAmount,
        ErrorCode::UnsupportedCurrency,
        ErrorCode::MalformedId,
        ErrorCode::MalformedRequest,
        ErrorCode::RequestTooLarge,
        ErrorCode::NotifyUrlForbidden,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidCredentials,
        ErrorCode::SelfApproval,
        ErrorCode::CallerNotAllowed,
        ErrorCode::TradeNotFound,
        ErrorCode::RefundNotFound,
        ErrorCode::MerchantNotFound,
        ErrorCode::ChannelNotFound,
        ErrorCode::DebitNotFound,
        ErrorCode::SettlementNotFound,
        ErrorCode::PayoutNotFound,
        ErrorCode::NotFound,
        ErrorCode::IdempotencyConflict,
        ErrorCode::RefundExceedsPaid,
        ErrorCode::RefundWindowExpired,
        ErrorCode::TradeNotRefundable,
        ErrorCode::InsufficientBalance,
        ErrorCode::CurrencyMismatch,
        ErrorCode::InvalidStateTransition,
        ErrorCode::UnbalancedPosting,
        ErrorCode::DebitNotActive,
        ErrorCode::NoRefundMethod,
        ErrorCode::RefundFailed,
        ErrorCode::PayoutReturned,
        ErrorCode::BankMayHavePaid,
        ErrorCode::ProposalExpired,
        ErrorCode::InsufficientFunds,
        ErrorCode::CouponOnlyRefund,
        ErrorCode::AdvanceCurrencyMismatch,
        ErrorCode::Unavailable,
        ErrorCode::InProgress,
        ErrorCode::ChannelUnverified,
        ErrorCode::Storage,
        ErrorCode::Internal,
    ];

    /// The stable string form, e.g. `REFUND_EXCEEDS_PAID`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidAmount => "INVALID_AMOUNT",
            ErrorCode::UnsupportedCurrency => "UNSUPPORTED_CURRENCY",
            ErrorCode::MalformedId => "MALFORMED_ID",
            ErrorCode::MalformedRequest => "MALFORMED_REQUEST",
            ErrorCode::RequestTooLarge => "REQUEST_TOO_LARGE",
            ErrorCode::NotifyUrlForbidden => "NOTIFY_URL_FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::SelfApproval => "SELF_APPROVAL",
            ErrorCode::CallerNotAllowed => "CALLER_NOT_ALLOWED",
            ErrorCode::TradeNotFound => "TRADE_NOT_FOUND",
            ErrorCode::RefundNotFound => "REFUND_NOT_FOUND",
            ErrorCode::MerchantNotFound => "MERCHANT_NOT_FOUND",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::DebitNotFound => "DEBIT_NOT_FOUND",
            ErrorCode::SettlementNotFound => "SETTLEMENT_NOT_FOUND",
            ErrorCode::PayoutNotFound => "PAYOUT_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ErrorCode::RefundExceedsPaid => "REFUND_EXCEEDS_PAID",
            ErrorCode::RefundWindowExpired => "REFUND_WINDOW_EXPIRED",
            ErrorCode::TradeNotRefundable => "TRADE_NOT_REFUNDABLE",
            ErrorCode::InsufficientBalance => "INSUFFICIENT_BALANCE",
            ErrorCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ErrorCode::InvalidStateTransition => "INVALID_STATE_TRANSITION",
            ErrorCode::UnbalancedPosting => "UNBALANCED_POSTING",
            ErrorCode::DebitNotActive => "DEBIT_NOT_ACTIVE",
            ErrorCode::NoRefundMethod => "NO_REFUND_METHOD",
            ErrorCode::RefundFailed => "REFUND_FAILED",
            ErrorCode::PayoutReturned => "PAYOUT_RETURNED",
            ErrorCode::BankMayHavePaid => "BANK_MAY_HAVE_PAID",
            ErrorCode::ProposalExpired => "PROPOSAL_EXPIRED",
            ErrorCode::InsufficientFunds => "INSUFFICIENT_FUNDS",
            ErrorCode::CouponOnlyRefund => "COUPON_ONLY_REFUND",
            ErrorCode::AdvanceCurrencyMismatch => "ADVANCE_CURRENCY_MISMATCH",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InProgress => "IN_PROGRESS",
            ErrorCode::ChannelUnverified => "CHANNEL_UNVERIFIED",
            ErrorCode::Storage => "STORAGE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The gRPC status code this error code travels as (numeric, see [`grpc`]).
    pub fn grpc_code(self) -> i32 {
        use ErrorCode::*;
        match self {
            InvalidArgument | InvalidAmount | UnsupportedCurrency | MalformedId
            | MalformedRequest | NotifyUrlForbidden => grpc::INVALID_ARGUMENT,
            RequestTooLarge => grpc::RESOURCE_EXHAUSTED,
            Unauthenticated | TokenExpired | InvalidCredentials => grpc::UNAUTHENTICATED,
            PermissionDenied | SelfApproval | CallerNotAllowed => grpc::PERMISSION_DENIED,
            TradeNotFound | RefundNotFound | MerchantNotFound | ChannelNotFound | DebitNotFound
            | SettlementNotFound | PayoutNotFound | NotFound => grpc::NOT_FOUND,
            IdempotencyConflict => grpc::ALREADY_EXISTS,
            RefundExceedsPaid
            | RefundWindowExpired
            | TradeNotRefundable
            | InsufficientBalance
            | CurrencyMismatch
            | InvalidStateTransition
            | UnbalancedPosting
            | DebitNotActive
            | NoRefundMethod
            | RefundFailed
            | PayoutReturned
            | BankMayHavePaid
            | ProposalExpired
            | InsufficientFunds
            | CouponOnlyRefund
            | AdvanceCurrencyMismatch => grpc::FAILED_PRECONDITION,
            Unavailable | InProgress | ChannelUnverified => grpc::UNAVAILABLE,
            Storage | Internal => grpc::INTERNAL,
        }
    }

    /// Whether a caller may retry the same request (with the same idempotency key) and expect progress.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::InProgress
                | ErrorCode::ChannelUnverified
                | ErrorCode::Storage
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error every tuikuan library returns: a stable code plus a lowercase human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    /// A field is missing or malformed; the message names the field.
    pub fn field(field: &str, problem: impl fmt::Display) -> Self {
        Error::new(ErrorCode::InvalidArgument, format!("{field}: {problem}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn storage(message: impl fmt::Display) -> Self {
        Error::new(ErrorCode::Storage, format!("storage: {message}"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("NO_SUCH_CODE"), None);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/error-codes.md lists every code with its gRPC status.
    #[test]
    fn the_error_code_page_lists_every_code() {
        let page = include_str!("../../../docs/error-codes.md");
        for code in ErrorCode::ALL {
            let grpc = match code.grpc_code() {
                grpc::INVALID_ARGUMENT => "INVALID_ARGUMENT",
                grpc::NOT_FOUND => "NOT_FOUND",
                grpc::ALREADY_EXISTS => "ALREADY_EXISTS",
                grpc::PERMISSION_DENIED => "PERMISSION_DENIED",
                grpc::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
                grpc::FAILED_PRECONDITION => "FAILED_PRECONDITION",
                grpc::INTERNAL => "INTERNAL",
                grpc::UNAVAILABLE => "UNAVAILABLE",
                grpc::UNAUTHENTICATED => "UNAUTHENTICATED",
                other => panic!("unexpected grpc code {other}"),
            };
            let row = format!("| `{}` | {} |", code.as_str(), grpc);
            assert!(page.contains(&row), "docs/error-codes.md lacks {row}");
        }
    }
}
