//! The channel connector interface of the bank subsystem: what the refund and reconciliation
//! centers need from a payment channel, behind one trait ([`Connector`]), with one implementation
//! per protocol:
//!
//! - [`simulator::SimulatorConnector`]: the deterministic bank simulator (its callbacks are
//!   delivered by its own tick, so it receives no HTTP notifications);
//! - [`wechat::WechatPayV3`]: WeChat Pay API v3 (直连商户 refunds, refund notifications, the
//!   REFUND trade bill);
//! - [`alipay::Alipay`]: the Alipay open platform gateway (alipay.trade.refund, refund query,
//!   trade notifications, the daily 业务明细 bill).
//!
//! A connector speaks the channel's protocol and verifies everything the channel says; it keeps no
//! state. The bank subsystem's [`crate::live`] engine keeps the books of what it asked each channel
//! (idempotent by the refund's bank reference id), polls what is still processing, applies verified
//! notifications and forwards every change to the refund center as a `BankCallback`.
//!
//! # Invariants
//! - Nothing a channel says is used before it is verified (signature against the channel's key
//!   matched by serial, timestamp inside the allowed skew, digest of a bill). A failed check is
//!   [`ErrorCode::ChannelUnverified`]: the outcome stays unknown and the caller retries with the
//!   same reference, which the channel treats as the same refund.
//! - A refusal ([`ChannelStatus::Rejected`]) is only reported when the channel said so in a
//!   verified answer: it tells the refund center that no money moved, which lets it try another
//!   method. Transport failures, timeouts, server errors and unverifiable answers are
//!   [`ErrorCode::Unavailable`] or [`ErrorCode::ChannelUnverified`], never a refusal.
//! - Private keys and the APIv3 key are loaded from files or the environment
//!   ([`keys::SecretSource`]), never logged, and print as `<redacted>` in Debug output.

pub mod alipay;
pub mod http;
pub mod keys;
pub mod settings;
pub mod simulator;
pub mod wechat;

use std::fmt;

use async_trait::async_trait;
use chrono::NaiveDate;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};

/// A refund as the bank subsystem asks a channel for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The refund's bank reference id: WeChat Pay's `out_refund_no`, Alipay's `out_request_no`.
    /// The channel refunds one reference once, however often it is sent.
    pub reference: String,
    /// The original payment at the channel (the platform's trade id, sent as `out_trade_no`).
    pub original_trade_id: String,
    pub amount: Money,
    /// Shown to the payer by some channels; bounded by the connector.
    pub reason: String,
}

/// What a channel says about one refund, mapped onto tuikuan's bank statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelStatus {
    /// Accepted and not final at the channel (WeChat Pay PROCESSING; Alipay without
    /// `fund_change=Y` or `REFUND_SUCCESS`).
    Processing,
    /// The money went back (WeChat Pay SUCCESS; Alipay `fund_change=Y` / `REFUND_SUCCESS`).
    Succeeded,
    /// Accepted, then failed (WeChat Pay CLOSED or ABNORMAL).
    Failed,
    /// Refused in a verified answer: the channel did not take the refund; no money moved.
    Rejected,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Processing => "PROCESSING",
            ChannelStatus::Succeeded => "SUCCEEDED",
            ChannelStatus::Failed => "FAILED",
            ChannelStatus::Rejected => "REJECTED",
        }
    }
}

/// A channel's verified word about one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRefund {
    /// The bank reference id the channel reports (`out_refund_no` / `out_request_no`).
    pub reference: String,
    pub status: ChannelStatus,
    /// The channel's own status word, kept for operators (`PROCESSING`, `ABNORMAL`, `Y`, ...).
    pub channel_status: String,
    /// The channel's id for the refund (WeChat Pay `refund_id`, Alipay `trade_no`); may be empty.
    pub channel_ref: String,
    /// Why it failed or was refused, `CODE: text` in tuikuan's failure vocabulary.
    pub reason: String,
    /// The amount the channel reports for this refund, when it reports one for it alone.
    pub amount: Option<Money>,
}

impl ChannelRefund {
    /// A verified refusal: the channel did not take the refund (`reason` is `CODE: text`).
    pub fn rejected(reference: &str, reason: String) -> ChannelRefund {
        ChannelRefund {
            reference: reference.to_string(),
            status: ChannelStatus::Rejected,
            channel_status: reason.split(':').next().unwrap_or_default().to_string(),
            channel_ref: String::new(),
            reason,
            amount: None,
        }
    }

    /// The refusal of a refund in a currency the channel does not refund in (CNY only here).
    pub fn unless_cny(request: &RefundRequest, channel: &str) -> Option<ChannelRefund> {
        let currency = request.amount.currency();
        (currency != tuikuan_kernel::Currency::Cny).then(|| {
            ChannelRefund::rejected(
                &request.reference,
                format!(
                    "UNSUPPORTED_CURRENCY: {channel} refunds are in CNY, not {}",
                    currency.code()
                ),
            )
        })
    }
}

/// An HTTP request a channel sent to the bank's notification listener.
#[derive(Clone)]
pub struct InboundNotification {
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl fmt::Debug for InboundNotification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundNotification")
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl InboundNotification {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A notification that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotification {
    /// The channel's id of the notification (WeChat Pay `id`, Alipay `notify_id`): a second one
    /// with the same id is a replay and changes nothing.
    pub id: String,
    /// The original payment the notification is about (`out_trade_no`), when it says.
    pub original_trade_id: String,
    pub refunds: Vec<ChannelRefund>,
}

/// The HTTP answer a channel expects from the notification listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A clearing bill as the channel publishes it, verified and unpacked (gzip, zip), in the
/// channel's own format for the reconciliation center's parsers.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBill {
    /// The reconciliation center's name of the format (`csv`, `wechat`, `alipay`).
    pub format: String,
    pub content: Vec<u8>,
}

impl fmt::Debug for ChannelBill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBill")
            .field("format", &self.format)
            .field("bytes", &self.content.len())
            .finish()
    }
}

/// A payment channel's refund interface.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// The connector's configuration name (`simulator`, `wechatpay_v3`, `alipay`).
    fn kind(&self) -> &'static str;

    /// Whether `reference` is a bank reference id the channel accepts (alphabet, length). A
    /// reference it cannot take is refused before anything is sent.
    fn check_reference(&self, reference: &str) -> std::result::Result<(), String>;

    /// Submits a refund. Idempotent by `request.reference` at the channel: a repeat after a
    /// timeout refunds nothing twice. `notify_url` is where the channel should notify.
    async fn submit_refund(
        &self,
        request: &RefundRequest,
        notify_url: &str,
    ) -> Result<ChannelRefund>;

    /// The channel's current word on a refund. [`ErrorCode::RefundNotFound`] when the channel has
    /// no refund under `request.reference`.
    async fn query_refund(&self, request: &RefundRequest) -> Result<ChannelRefund>;

    /// Verifies (and decrypts) a notification, timestamps against the bank's clock. An error
    /// means the notification was refused: nothing in it may be used.
    fn verify_notification(
        &self,
        notification: &InboundNotification,
    ) -> Result<VerifiedNotification>;

    /// The answer the channel expects: `accepted` when the notification was taken (or was a
    /// duplicate), else a refusal that makes the channel send it again later.
    fn notification_reply(&self, accepted: bool) -> NotificationReply;

    /// Downloads the channel's clearing bill for a business date, verified and unpacked.
    async fn download_bill(&self, date: NaiveDate) -> Result<ChannelBill>;
}

/// An answer that failed verification.
pub fn unverified(what: impl fmt::Display) -> Error {
    Error::new(ErrorCode::ChannelUnverified, what.to_string())
}

/// Text from a channel shortened for logs and reasons (never echoed unbounded).
pub fn bounded(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}
