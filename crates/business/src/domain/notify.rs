//! Merchant notifications (退款结果通知): when a refund becomes final, the business layer POSTs a
//! signed JSON message to the merchant's `notify_url` and retries until the merchant answers 2xx.
//!
//! # What is notified
//!
//! One notification per refund and final status, enqueued in the same database transaction as the
//! status change (so none is lost and none is duplicated):
//! - `SUCCEEDED`: reconciliation (or finance) confirmed the money arrived;
//! - `FAILED`: every method was exhausted or the failure was confirmed; the money is back with the
//!   merchant. A returned payout (退票) after `SUCCEEDED` is a second notification, `FAILED` with
//!   `error_code` `PAYOUT_RETURNED`;
//! - `REJECTED` only when the merchant did not get it as the answer to its own `CreateRefund`: a
//!   refund left `RECEIVED` by a peer outage that the recovery loop then rejects.
//!
//! A merchant without a `notify_url` when the refund becomes final gets no notification (it can
//! always query `GetRefund`). The URL and secret in force at each attempt are used.
//!
//! # The request
//!
//! `POST <notify_url>` with `Content-Type: application/json` and the body (the same bytes on every
//! attempt; keys in alphabetical order):
//!
//! ```json
//! {"amount":"30.00","currency":"CNY","error_code":"","error_message":"",
//!  "finished_at":"2026-03-03T02:00:00.000Z","finished_at_ms":1772503200000,
//!  "kind":"NORMAL","merchant_id":"m1","merchant_refund_no":"rn-1",
//!  "notification_id":"ntf_…","order_no":"order-1","refund_id":"rf_…","status":"SUCCEEDED"}
//! ```
//!
//! and two headers:
//! - `X-Tuikuan-Timestamp`: the attempt's time, unix seconds (from the service's clock);
//! - `X-Tuikuan-Signature`: `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
//!
//! The merchant answers any 2xx once it has stored the result (deduplicate on
//! `notification_id`: a delivery whose answer was lost is sent again).
//!
//! # Retries
//!
//! After a failed attempt (no answer within [`NOTIFY_TIMEOUT_SECS`], a connection error, or a
//! non-2xx status) the next one comes after 15 s, 1 min, 5 min, 15 min, 1 h, then every hour
//! ([`backoff_ms`]), by the service's clock, for [`NOTIFY_RETRY_WINDOW_MS`] (48 hours) after the
//! refund became final; then the notification is ABANDONED. Every attempt is recorded (time, HTTP
//! status, error) and listed by `ListNotifications`.
//!
//! # Verifying a notification (merchant side)
//!
//! Recompute the HMAC over the timestamp header, a dot and the raw body bytes, compare in constant
//! time, and reject stale timestamps (replays). [`verify_signature`] does the first part:
//!
//! ```
//! use tuikuan_business::domain::notify::{sign, verify_signature};
//!
//! // What the merchant received.
//! let secret = "merchant-secret-0123456789";
//! let timestamp = "1772503200"; // X-Tuikuan-Timestamp
//! let body = br#"{"refund_id":"rf_1","status":"SUCCEEDED"}"#;
//! let header = sign(secret, timestamp, body); // X-Tuikuan-Signature, as tuikuan sent it
//!
//! // The merchant's check: the signature ...
//! assert!(verify_signature(secret, timestamp, body, &header));
//! // ... and freshness (here: within 5 minutes of the merchant's own clock).
//! let now_secs: i64 = 1772503230;
//! let ts: i64 = timestamp.parse().unwrap();
//! assert!((now_secs - ts).abs() <= 300);
//!
//! // Any change to the body, the timestamp or the secret fails.
//! assert!(!verify_signature(secret, timestamp, br#"{"refund_id":"rf_2","status":"SUCCEEDED"}"#, &header));
//! assert!(!verify_signature(secret, "1772503201", body, &header));
//! assert!(!verify_signature("another-secret-0123456789", timestamp, body, &header));
//! ```
//!
//! The same in other languages: `hex(hmac_sha256(key = secret, msg = timestamp + "." + body))`
//! equals the hex after `v1=` (the header may carry several comma-separated `v1=` values during a
//! secret rotation: accept if any matches).

use chrono::SecondsFormat;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{MerchantRefund, RefundStatus};

type HmacSha256 = Hmac<Sha256>;

/// The header with the attempt's unix-seconds timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Tuikuan-Timestamp";
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "X-Tuikuan-Signature";
/// Delays after the 1st, 2nd, ... failed attempt; then [`NOTIFY_RETRY_EVERY_MS`].
pub const NOTIFY_BACKOFF_MS: [i64; 5] = [15_000, 60_000, 300_000, 900_000, 3_600_000];
/// The delay between attempts once [`NOTIFY_BACKOFF_MS`] is used up.
pub const NOTIFY_RETRY_EVERY_MS: i64 = 3_600_000;
/// How long after a refund became final its notification is retried (48 hours).
pub const NOTIFY_RETRY_WINDOW_MS: i64 = 48 * 3_600_000;
/// How long one attempt may take (real seconds; connect, send and answer).
pub const NOTIFY_TIMEOUT_SECS: u64 = 10;
/// Shortest and longest notification secret, in characters.
pub const MIN_NOTIFY_SECRET_CHARS: usize = 16;
pub const MAX_NOTIFY_SECRET_CHARS: usize = 256;
/// Longest notification URL.
pub const MAX_NOTIFY_URL_LEN: usize = 2048;
/// The longest recorded attempt error, in characters.
pub const MAX_ATTEMPT_ERROR_CHARS: usize = 512;

/// The delay before the next attempt after `failed_attempts` failures (1 = after the first).
pub fn backoff_ms(failed_attempts: u32) -> i64 {
    let i = failed_attempts.saturating_sub(1) as usize;
    NOTIFY_BACKOFF_MS
        .get(i)
        .copied()
        .unwrap_or(NOTIFY_RETRY_EVERY_MS)
}

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`: the `X-Tuikuan-Signature` value.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    match mac(secret, timestamp, body) {
        Some(m) => format!("v1={}", hex::encode(m.finalize().into_bytes())),
        None => String::new(),
    }
}

/// Whether `header` (an `X-Tuikuan-Signature` value: one or more comma-separated `v1=<hex>`)
/// signs `timestamp` and `body` with `secret`. Constant-time comparison. Pure: the caller also
/// checks that the timestamp is recent.
pub fn verify_signature(secret: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    header.split(',').any(|part| {
        let Some(sig) = part.trim().strip_prefix("v1=") else {
            return false;
        };
        let Ok(bytes) = hex::decode(sig.trim()) else {
            return false;
        };
        match mac(secret, timestamp, body) {
            Some(m) => m.verify_slice(&bytes).is_ok(),
            None => false,
        }
    })
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length: this never fails.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// A merchant's notification settings, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl NotifyTarget {
    /// `Ok(None)` turns notifications off (empty URL).
    pub fn validate(url: &str, secret: &str) -> Result<Option<NotifyTarget>> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        validate_notify_url(url)?;
        let n = secret.chars().count();
        if !(MIN_NOTIFY_SECRET_CHARS..=MAX_NOTIFY_SECRET_CHARS).contains(&n) {
            return Err(Error::field(
                "notify_secret",
                format!(
                    "must be {MIN_NOTIFY_SECRET_CHARS} to {MAX_NOTIFY_SECRET_CHARS} characters"
                ),
            ));
        }
        if secret.chars().any(char::is_control) {
            return Err(Error::field(
                "notify_secret",
                "must not contain control characters",
            ));
        }
        Ok(Some(NotifyTarget {
            url: url.to_string(),
            secret: secret.to_string(),
        }))
    }
}

/// `https://host[:port][/path]` (or `http://…`): the syntax. Whether the deployment allows the
/// scheme and the addresses the host names is [`crate::domain::egress`]'s business.
pub fn validate_notify_url(url: &str) -> Result<()> {
    if url.len() > MAX_NOTIFY_URL_LEN {
        return Err(Error::field(
            "notify_url",
            format!("longer than {MAX_NOTIFY_URL_LEN} characters"),
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::field(
            "notify_url",
            "must not contain spaces or control characters",
        ));
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Err(Error::field("notify_url", "must start with https://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(Error::field(
            "notify_url",
            "must name a host (and no user info)",
        ));
    }
    Ok(())
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationStatus {
    /// Not delivered yet; the sender tries at `next_attempt_at_ms`.
    Pending,
    /// The merchant answered 2xx.
    Delivered,
    /// No 2xx within the retry window.
    Abandoned,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "PENDING",
            NotificationStatus::Delivered => "DELIVERED",
            NotificationStatus::Abandoned => "ABANDONED",
        }
    }

    pub fn parse(s: &str) -> Result<NotificationStatus> {
        match s {
            "PENDING" => Ok(NotificationStatus::Pending),
            "DELIVERED" => Ok(NotificationStatus::Delivered),
            "ABANDONED" => Ok(NotificationStatus::Abandoned),
            other => Err(Error::internal(format!(
                "unknown notification status {other:?}"
            ))),
        }
    }

    /// Only PENDING moves: to DELIVERED or ABANDONED (or stays PENDING after a failed attempt).
    pub fn transition(self, to: NotificationStatus) -> Result<NotificationStatus> {
        if self == NotificationStatus::Pending {
            Ok(to)
        } else {
            Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "notification cannot move from {} to {}",
                    self.as_str(),
                    to.as_str()
                ),
            ))
        }
    }
}

/// One notification of one refund's final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub notification_id: String,
    pub refund_id: String,
    pub merchant_id: String,
    /// The final status notified (SUCCEEDED, FAILED or REJECTED).
    pub event: RefundStatus,
    pub status: NotificationStatus,
    /// The JSON body, fixed at enqueue time.
    pub body: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAttempt {
    pub notification_id: String,
    /// From 1.
    pub attempt_no: u32,
    pub attempted_at_ms: i64,
    /// The merchant's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// Why it failed; `None` for a 2xx.
    pub error: Option<String>,
}

/// What an attempt's result makes of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub attempt: NotificationAttempt,
    pub status: NotificationStatus,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

impl Notification {
    /// The notification of `refund` reaching its final status `event` at `now_ms`; due at once.
    pub fn for_refund(
        notification_id: String,
        refund: &MerchantRefund,
        now_ms: i64,
    ) -> Result<Notification> {
        let event = refund.status();
        // PROCESSING only for a refund reopened after it was reported SUCCEEDED.
        if !matches!(
            event,
            RefundStatus::Succeeded
                | RefundStatus::Failed
                | RefundStatus::Rejected
                | RefundStatus::Processing
        ) {
            return Err(Error::internal(format!(
                "refund {} is not final",
                refund.refund_id
            )));
        }
        let body = notification_body(&notification_id, refund, now_ms);
        Ok(Notification {
            notification_id,
            refund_id: refund.refund_id.clone(),
            merchant_id: refund.merchant_id.clone(),
            event,
            status: NotificationStatus::Pending,
            body,
            attempts: 0,
            next_attempt_at_ms: now_ms,
            created_at_ms: now_ms,
            delivered_at_ms: None,
            last_error: None,
        })
    }

    /// Applies the result of an attempt made at `at_ms`: `Ok(status)` a 2xx from the merchant,
    /// `Err(why)` anything else (with the HTTP status when there was one). A failure schedules the
    /// next attempt by [`backoff_ms`], or abandons the notification when that would fall after
    /// the retry window.
    pub fn after_attempt(
        &self,
        at_ms: i64,
        result: std::result::Result<u16, (Option<u16>, String)>,
    ) -> Result<AttemptOutcome> {
        let attempts = self.attempts.saturating_add(1);
        let (http_status, error) = match &result {
            Ok(code) => (Some(*code), None),
            Err((code, why)) => (
                *code,
                Some(
                    why.chars()
                        .take(MAX_ATTEMPT_ERROR_CHARS)
                        .collect::<String>(),
                ),
            ),
        };
        let attempt = NotificationAttempt {
            notification_id: self.notification_id.clone(),
            attempt_no: attempts,
            attempted_at_ms: at_ms,
            http_status,
            error,
        };
        if result.is_ok() {
            return Ok(AttemptOutcome {
                attempt,
                status: self.status.transition(NotificationStatus::Delivered)?,
                attempts,
                next_attempt_at_ms: self.next_attempt_at_ms,
                delivered_at_ms: Some(at_ms),
            });
        }
        let next = at_ms.saturating_add(backoff_ms(attempts));
        let status = if next > self.created_at_ms.saturating_add(NOTIFY_RETRY_WINDOW_MS) {
            NotificationStatus::Abandoned
        } else {
            NotificationStatus::Pending
        };
        Ok(AttemptOutcome {
            attempt,
            status: self.status.transition(status)?,
            attempts,
            next_attempt_at_ms: next,
            delivered_at_ms: None,
        })
    }
}

/// The JSON body of a notification (keys in alphabetical order, compact).
pub fn notification_body(notification_id: &str, refund: &MerchantRefund, now_ms: i64) -> String {
    let finished_at =
        tuikuan_kernel::clock::from_ms(now_ms).to_rfc3339_opts(SecondsFormat::Millis, true);
    let (error_code, error_message) = match refund.status() {
        RefundStatus::Failed | RefundStatus::Rejected => (
            refund.error_code.clone().unwrap_or_default(),
            refund.error_message.clone().unwrap_or_default(),
        ),
        _ => (String::new(), String::new()),
    };
    let mut map = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        map.insert(k.to_string(), v);
    };
    put("amount", refund.amount.amount_string().into());
    put("currency", refund.amount.currency().code().into());
    put("error_code", error_code.into());
    put("error_message", error_message.into());
    put("finished_at", finished_at.into());
    put("finished_at_ms", now_ms.into());
    put("kind", refund.kind.as_str().into());
    put("merchant_id", refund.merchant_id.clone().into());
    put(
        "merchant_refund_no",
        refund.merchant_refund_no.clone().into(),
    );
    put("notification_id", notification_id.into());
    put("order_no", refund.order_no.clone().into());
    put("refund_id", refund.refund_id.clone().into());
    put("status", refund.status().as_str().into());
    // Sort explicitly: the map may preserve insertion order under some feature sets.
    let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let sorted: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
    serde_json::Value::Object(sorted).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChainState, MerchantRefund, RefundKind};
    use tuikuan_kernel::Money;

    fn refund(state: ChainState) -> MerchantRefund {
        MerchantRefund {
            refund_id: "rf_1".into(),
            merchant_id: "m1".into(),
            merchant_refund_no: "rn-1".into(),
            trade_id: "tr_1".into(),
            order_no: "o1".into(),
            amount: Money::parse("30", "CNY", "amount").unwrap(),
            reason: "r".into(),
            fingerprint: "f".into(),
            chain_state: state,
            error_code: Some("PAYOUT_RETURNED".into()),
            error_message: Some("account closed".into()),
            expected_completion_ms: 0,
            created_at_ms: 1,
            updated_at_ms: 1,
            kind: RefundKind::Normal,
            operator: None,
            split_amounts: vec![],
        }
    }

    #[test]
    fn signatures() {
        let h = sign("secret-0123456789abcdef", "1700000000", b"{}");
        assert!(h.starts_with("v1=") && h.len() == 3 + 64);
        assert!(verify_signature(
            "secret-0123456789abcdef",
            "1700000000",
            b"{}",
            &h
        ));
        // Rotation: several values, one matches.
        let both = format!("v1=00ff, {h}");
        assert!(verify_signature(
            "secret-0123456789abcdef",
            "1700000000",
            b"{}",
            &both
        ));
        for bad in ["", "v1=", "v1=zz", "v2=00", &h[3..]] {
            assert!(!verify_signature(
                "secret-0123456789abcdef",
                "1700000000",
                b"{}",
                bad
            ));
        }
        assert!(!verify_signature(
            "secret-0123456789abcdef",
            "1700000001",
            b"{}",
            &h
        ));
        // A known vector: HMAC-SHA256("key", "1.body").
        assert_eq!(
            sign("key", "1", b"body"),
            format!(
                "v1={}",
                hex::encode(
                    <HmacSha256 as Mac>::new_from_slice(b"key")
                        .unwrap()
                        .chain_update(b"1.body")
                        .finalize()
                        .into_bytes()
                )
            )
        );
    }

    #[test]
    fn backoff_schedule_covers_a_day() {
        let delays: Vec<i64> = (1..=7).map(backoff_ms).collect();
        assert_eq!(
            delays,
            [15_000, 60_000, 300_000, 900_000, 3_600_000, 3_600_000, 3_600_000]
        );
        assert_eq!(backoff_ms(0), 15_000);
        // Fail every attempt: the attempts go on for at least 24 hours, then stop.
        let mut n =
            Notification::for_refund("ntf_1".into(), &refund(ChainState::Succeeded), 0).unwrap();
        let mut last_attempt = 0;
        while n.status == NotificationStatus::Pending {
            let at = n.next_attempt_at_ms;
            let out = n
                .after_attempt(at, Err((Some(500), "HTTP 500".into())))
                .unwrap();
            assert_eq!(out.attempt.attempt_no, n.attempts + 1);
            assert_eq!(out.attempt.http_status, Some(500));
            last_attempt = at;
            n.status = out.status;
            n.attempts = out.attempts;
            n.next_attempt_at_ms = out.next_attempt_at_ms;
            assert!(n.attempts < 100);
        }
        assert_eq!(n.status, NotificationStatus::Abandoned);
        assert!(last_attempt >= 24 * 3_600_000);
        assert!(last_attempt <= NOTIFY_RETRY_WINDOW_MS);
        // A final notification does not move again.
        assert!(n.after_attempt(1, Ok(200)).is_err());
    }

    #[test]
    fn delivery() {
        let n = Notification::for_refund("ntf_1".into(), &refund(ChainState::Failed), 5).unwrap();
        assert_eq!(n.event, RefundStatus::Failed);
        assert_eq!(n.next_attempt_at_ms, 5);
        let out = n.after_attempt(9, Ok(204)).unwrap();
        assert_eq!(out.status, NotificationStatus::Delivered);
        assert_eq!(out.delivered_at_ms, Some(9));
        assert_eq!(out.attempt.error, None);
        // Not yet promised: nothing to tell. PROCESSING is told only after a reopen.
        assert!(Notification::for_refund("x".into(), &refund(ChainState::Reserved), 5).is_err());
        let reopened = Notification::for_refund("x".into(), &refund(ChainState::Accepted), 5);
        assert_eq!(reopened.unwrap().event, RefundStatus::Processing);
    }

    #[test]
    fn body_is_stable_json() {
        let r = refund(ChainState::Failed);
        let body = notification_body("ntf_1", &r, 1_772_503_200_000);
        assert_eq!(body, notification_body("ntf_1", &r, 1_772_503_200_000));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "FAILED");
        assert_eq!(v["error_code"], "PAYOUT_RETURNED");
        assert_eq!(v["amount"], "30.00");
        assert_eq!(v["finished_at"], "2026-03-03T02:00:00.000Z");
        assert_eq!(v["kind"], "NORMAL");
        assert!(body.starts_with(r#"{"amount":"30.00","currency":"CNY","#));
        let ok = notification_body("ntf_1", &refund(ChainState::Succeeded), 0);
        let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
        assert_eq!(v["error_code"], "");
    }

    #[test]
    fn targets() {
        let ok = NotifyTarget::validate("http://127.0.0.1:8080/notify", "0123456789abcdef")
            .unwrap()
            .unwrap();
        assert!(!format!("{ok:?}").contains("0123456789abcdef"));
        assert_eq!(NotifyTarget::validate("", "").unwrap(), None);
        let bad = |u: &str, s: &str| NotifyTarget::validate(u, s).unwrap_err().message;
        assert!(NotifyTarget::validate("https://shop.example/n", "0123456789abcdef").is_ok());
        assert!(bad("ftp://x/n", "0123456789abcdef").contains("https://"));
        assert!(bad("https:///n", "0123456789abcdef").starts_with("notify_url"));
        assert!(bad("http:///n", "0123456789abcdef").starts_with("notify_url"));
        assert!(bad("http://u:p@x/n", "0123456789abcdef").starts_with("notify_url"));
        assert!(bad("http://x/ n", "0123456789abcdef").starts_with("notify_url"));
        assert!(bad("http://x/n", "short").starts_with("notify_secret"));
    }
}
