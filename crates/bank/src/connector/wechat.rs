//! WeChat Pay API v3 (微信支付 APIv3), direct merchant (直连商户) refunds.
//!
//! Follows the published protocol (see `docs/channels.md` for the documents and versions):
//! - every request carries `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=…,nonce_str=…,
//!   timestamp=…,serial_no=…,signature=…`, the signature SHA256withRSA with the merchant key over
//!   `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`;
//! - every answer (success or error) is verified before use: `Wechatpay-Timestamp` within the
//!   allowed skew of the bank's clock, `Wechatpay-Serial` one of the configured platform
//!   certificates or platform public key ids, `Wechatpay-Signature` SHA256withRSA over
//!   `TIMESTAMP\nNONCE\nBODY\n`. The bill file download is the one answer WeChat Pay does not sign:
//!   its SHA1 digest from the signed bill answer is checked instead;
//! - refund notifications are verified the same way, then `resource` is decrypted with
//!   AEAD_AES_256_GCM under the APIv3 key (nonce and `associated_data` from the notification).
//!
//! Refund submission reads the original order's total first (查询订单, `amount.total` is required
//! by 申请退款 and tuikuan's bank interface carries the refund amount only).

use std::collections::HashMap;
use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result, SharedClock};

use super::http::{self, Answer, MAX_ANSWER_BYTES, MAX_BILL_BYTES};
use super::keys::{ApiV3Key, ChannelKey, MerchantKey};
use super::{
    bounded, unverified, ChannelBill, ChannelRefund, ChannelStatus, Connector, InboundNotification,
    NotificationReply, RefundRequest, VerifiedNotification,
};

/// The production API host.
pub const WECHATPAY_API: &str = "https://api.mch.weixin.qq.com";
/// The SDKs' allowed skew between WeChat Pay's timestamps and ours.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;
/// `out_refund_no`: digits, letters and `_-|*@`, at most 64 bytes.
pub const MAX_REFERENCE_LEN: usize = 64;

/// What the connector needs, resolved (keys loaded).
#[derive(Debug, Clone)]
pub struct WechatConfig {
    pub channel: String,
    pub mchid: String,
    /// The serial number of the merchant's API certificate (商户API证书序列号).
    pub merchant_serial_no: String,
    pub merchant_key: MerchantKey,
    pub apiv3_key: ApiV3Key,
    /// Platform certificate serials (平台证书序列号) or platform public key ids (微信支付公钥ID,
    /// `PUB_KEY_ID_…`) → key.
    pub platform_keys: HashMap<String, ChannelKey>,
    /// `https://api.mch.weixin.qq.com`, or a local fake's address in tests.
    pub base_url: String,
    pub timeout: Duration,
    pub max_skew_secs: i64,
    /// The refund reason shown to the payer (at most 80 bytes).
    pub reason: String,
}

/// The WeChat Pay API v3 connector.
#[derive(Debug)]
pub struct WechatPayV3 {
    cfg: WechatConfig,
    client: reqwest::Client,
    clock: SharedClock,
}

/// A verified error answer of WeChat Pay (`{"code": …, "message": …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: u16,
    code: String,
    message: String,
}

impl WechatPayV3 {
    pub fn new(cfg: WechatConfig, clock: SharedClock) -> Result<WechatPayV3> {
        if cfg.platform_keys.is_empty() {
            return Err(Error::field(
                "platform keys",
                "at least one platform certificate or platform public key is required",
            ));
        }
        let client = http::client(cfg.timeout)?;
        Ok(WechatPayV3 { cfg, client, clock })
    }

    fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{}",
            self.cfg.base_url.trim_end_matches('/'),
            path_and_query
        )
    }

    /// The `Authorization` header for a request.
    fn authorization(&self, method: &str, path_and_query: &str, body: &str) -> Result<String> {
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let nonce = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let message = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n");
        let signature = self.cfg.merchant_key.sign_sha256(message.as_bytes())?;
        Ok(format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.cfg.mchid, self.cfg.merchant_serial_no
        ))
    }

    /// Checks WeChat Pay's signature headers over `body`.
    fn verify_signed(&self, header: impl Fn(&str) -> Option<String>, body: &[u8]) -> Result<()> {
        let get = |name: &str| {
            header(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| unverified(format!("{}: no {name} header", self.cfg.channel)))
        };
        let (timestamp, nonce) = (get("Wechatpay-Timestamp")?, get("Wechatpay-Nonce")?);
        let (signature, serial) = (get("Wechatpay-Signature")?, get("Wechatpay-Serial")?);
        if signature.starts_with("WECHATPAY/SIGNTEST/") {
            return Err(unverified(format!(
                "{}: WeChat Pay signature probe (WECHATPAY/SIGNTEST/) refused, as the probe expects",
                self.cfg.channel
            )));
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| unverified(format!("{}: timestamp is not a number", self.cfg.channel)))?;
        let now = self.clock.now_ms().div_euclid(1000);
        if (now - ts).abs() >= self.cfg.max_skew_secs {
            return Err(unverified(format!(
                "{}: timestamp {ts} is {}s away from ours (allowed {}s)",
                self.cfg.channel,
                now - ts,
                self.cfg.max_skew_secs
            )));
        }
        let key = self.cfg.platform_keys.get(&serial).ok_or_else(|| {
            unverified(format!(
                "{}: unknown platform certificate serial {}",
                self.cfg.channel,
                bounded(&serial, 64)
            ))
        })?;
        let mut message = Vec::with_capacity(body.len() + 64);
        message.extend_from_slice(format!("{timestamp}\n{nonce}\n").as_bytes());
        message.extend_from_slice(body);
        message.push(b'\n');
        if !key.verify_sha256(&message, &signature) {
            return Err(unverified(format!(
                "{}: signature does not verify (serial {})",
                self.cfg.channel,
                bounded(&serial, 64)
            )));
        }
        Ok(())
    }

    /// Sends a signed request and verifies the answer. `Ok(Err(_))`: a verified business error.
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<std::result::Result<Value, ApiError>> {
        let body_text = body.map(Value::to_string).unwrap_or_default();
        let auth = self.authorization(method, path_and_query, &body_text)?;
        let url = self.url(path_and_query);
        let request = match method {
            "POST" => self
                .client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body_text),
            _ => self.client.get(&url),
        }
        .header("Authorization", auth)
        .header("Accept", "application/json")
        .header("User-Agent", concat!("tuikuan/", env!("CARGO_PKG_VERSION")));
        let answer = http::send(&self.cfg.channel, request, MAX_ANSWER_BYTES).await?;
        self.read_answer(answer)
    }

    fn read_answer(&self, a: Answer) -> Result<std::result::Result<Value, ApiError>> {
        let channel = &self.cfg.channel;
        if a.status >= 500 || a.status == 429 {
            // SYSTEM_ERROR, FREQUENCY_LIMITED: the outcome is unknown; retry the same request.
            return Err(Error::unavailable(format!(
                "{channel}: WeChat Pay answered HTTP {} ({}); retry with the same reference",
                a.status,
                error_code_of(&a.body)
            )));
        }
        self.verify_signed(|n| a.header(n).map(str::to_string), &a.body)?;
        let value: Value = if a.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&a.body)
                .map_err(|_| Error::unavailable(format!("{channel}: answer is not JSON")))?
        };
        if a.is_success() {
            return Ok(Ok(value));
        }
        Ok(Err(ApiError {
            status: a.status,
            code: bounded(str_of(&value, "code"), 64),
            message: bounded(str_of(&value, "message"), 200),
        }))
    }

    /// The original order's total (fen), refusing orders that cannot be refunded.
    async fn order_total(&self, r: &RefundRequest) -> Result<std::result::Result<i64, String>> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            r.original_trade_id, self.cfg.mchid
        );
        let order = match self.call("GET", &path, None).await? {
            Ok(v) => v,
            Err(e) if e.code == "ORDER_NOT_EXIST" || e.status == 404 => {
                return Ok(Err(format!(
                    "TRADE_NOT_FOUND: WeChat Pay has no order {}",
                    r.original_trade_id
                )))
            }
            Err(e) => return self.refusal_or_retry(e).map(Err),
        };
        let state = str_of(&order, "trade_state");
        if state != "SUCCESS" && state != "REFUND" {
            return Ok(Err(format!(
                "TRADE_NOT_REFUNDABLE: WeChat Pay order {} is {}",
                r.original_trade_id,
                bounded(state, 32)
            )));
        }
        let total = order
            .pointer("/amount/total")
            .and_then(Value::as_i64)
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                unverified(format!("{}: order has no amount.total", self.cfg.channel))
            })?;
        Ok(Ok(total))
    }

    /// A verified 4xx: a refusal (`Ok(reason)`) or, for errors of our own configuration, a retry.
    fn refusal_or_retry(&self, e: ApiError) -> Result<String> {
        let channel = &self.cfg.channel;
        match e.code.as_str() {
            "SIGN_ERROR" | "NO_AUTH" | "MCH_NOT_EXISTS" | "APPID_MCHID_NOT_MATCH" => {
                Err(Error::unavailable(format!(
                    "{channel}: WeChat Pay refused our credentials ({}: {}); fix the channel's \
                     configuration, the refund waits",
                    e.code, e.message
                )))
            }
            "SYSTEM_ERROR" | "FREQUENCY_LIMITED" | "BIZERR_NEED_RETRY" => Err(Error::unavailable(
                format!("{channel}: WeChat Pay asks to retry ({})", e.code),
            )),
            "NOT_ENOUGH" => Ok(format!("INSUFFICIENT_BALANCE: WeChat Pay: {}", e.message)),
            "USER_ACCOUNT_ABNORMAL" => Ok(format!("ACCOUNT_CLOSED: WeChat Pay: {}", e.message)),
            _ => Ok(format!(
                "CHANNEL_REJECTED: WeChat Pay {}: {}",
                e.code, e.message
            )),
        }
    }

    /// A refund object that must be about `reference`.
    fn refund_for(&self, v: &Value, reference: &str) -> Result<ChannelRefund> {
        let refund = refund_of(v, "status")?;
        if refund.reference != reference {
            return Err(unverified(format!(
                "{}: answer is about out_refund_no {}, not {reference}",
                self.cfg.channel, refund.reference
            )));
        }
        Ok(refund)
    }
}

/// 退款入账账户 values that mean the money went back to the merchant (退还商户), not to the payer.
const RETURNED_TO_MERCHANT: [&str; 2] = ["商户基本账户", "商户结算银行账户"];

/// A refund object of WeChat Pay (answer of 申请退款 / 查询单笔退款, or a decrypted notification)
/// mapped onto tuikuan's statuses.
fn refund_of(v: &Value, status_field: &str) -> Result<ChannelRefund> {
    let reference = str_of(v, "out_refund_no");
    if reference.is_empty() {
        return Err(unverified("WeChat Pay refund without out_refund_no"));
    }
    let word = str_of(v, status_field);
    let (status, reason) = match word {
        // An ABNORMAL refund handled with 发起异常退款 to the merchant's bank account
        // (MERCHANT_BANK_CARD) ends SUCCESS with the money at the merchant (退款入账账户 退还商户:
        // 商户基本账户 / 商户结算银行账户), not at the payer: still for people.
        "SUCCESS" if RETURNED_TO_MERCHANT.contains(&str_of(v, "user_received_account")) => (
            ChannelStatus::Failed,
            format!(
                "BANK_ABNORMAL: WeChat Pay SUCCESS into the merchant's own account ({}), not the \
                 payer's: the abnormal refund was returned to the merchant; pay the customer \
                 another way",
                str_of(v, "user_received_account")
            ),
        ),
        "SUCCESS" => (ChannelStatus::Succeeded, String::new()),
        "PROCESSING" => (ChannelStatus::Processing, String::new()),
        "CLOSED" => (
            ChannelStatus::Failed,
            "REFUND_CLOSED: WeChat Pay closed the refund (CLOSED)".to_string(),
        ),
        // 退款异常: the refund to the payer's card failed (card closed or frozen) and WeChat Pay
        // holds the money until the merchant handles it (商户平台 交易中心, or 发起异常退款 to
        // another card of the payer or to the merchant's bank account). Not a failure another
        // method can fix (that would pay twice once the exception is handled): it goes to people.
        "ABNORMAL" => (
            ChannelStatus::Failed,
            "BANK_ABNORMAL: WeChat Pay ABNORMAL (退款异常): the payer's card refused the refund \
             (closed or frozen) and WeChat Pay holds the money; handle it on the merchant \
             platform (交易中心) or with 发起异常退款"
                .to_string(),
        ),
        other => {
            return Err(unverified(format!(
                "WeChat Pay refund status {:?} is not SUCCESS, CLOSED, PROCESSING or ABNORMAL",
                bounded(other, 32)
            )))
        }
    };
    let currency = match v.pointer("/amount/currency").and_then(Value::as_str) {
        None | Some("CNY") => Currency::Cny,
        Some(other) => {
            return Err(unverified(format!(
                "WeChat Pay refund currency {:?} is not CNY",
                bounded(other, 8)
            )))
        }
    };
    let amount = v
        .pointer("/amount/refund")
        .and_then(Value::as_i64)
        .map(|fen| Money::from_minor(fen, currency));
    Ok(ChannelRefund {
        reference: bounded(reference, MAX_REFERENCE_LEN),
        status,
        channel_status: word.to_string(),
        channel_ref: bounded(str_of(v, "refund_id"), 64),
        reason,
        amount,
    })
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn error_code_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .map(|v| bounded(str_of(&v, "code"), 64))
        .unwrap_or_default()
}

/// Whether `reference` is a valid `out_refund_no`.
pub fn check_out_refund_no(reference: &str) -> std::result::Result<(), String> {
    if reference.is_empty() || reference.len() > MAX_REFERENCE_LEN {
        return Err(format!(
            "out_refund_no must be 1 to {MAX_REFERENCE_LEN} bytes"
        ));
    }
    if let Some(c) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-|*@".contains(*c)))
    {
        return Err(format!(
            "out_refund_no may not contain {c:?} (allowed: digits, letters, _-|*@)"
        ));
    }
    Ok(())
}

#[async_trait]
impl Connector for WechatPayV3 {
    fn kind(&self) -> &'static str {
        "wechatpay_v3"
    }

    fn check_reference(&self, reference: &str) -> std::result::Result<(), String> {
        check_out_refund_no(reference)
    }

    async fn submit_refund(&self, r: &RefundRequest, notify_url: &str) -> Result<ChannelRefund> {
        if let Some(refusal) = ChannelRefund::unless_cny(r, "WeChat Pay") {
            return Ok(refusal);
        }
        let total = match self.order_total(r).await? {
            Ok(total) => total,
            Err(reason) => return Ok(ChannelRefund::rejected(&r.reference, reason)),
        };
        let mut body = json!({
            "out_trade_no": r.original_trade_id,
            "out_refund_no": r.reference,
            "amount": {"refund": r.amount.to_minor(), "total": total, "currency": "CNY"},
        });
        let reason = truncate_bytes(
            if r.reason.is_empty() {
                &self.cfg.reason
            } else {
                &r.reason
            },
            80,
        );
        if !reason.is_empty() {
            body["reason"] = json!(reason);
        }
        if !notify_url.is_empty() {
            body["notify_url"] = json!(notify_url);
        }
        match self
            .call("POST", "/v3/refund/domestic/refunds", Some(&body))
            .await?
        {
            Ok(v) => self.refund_for(&v, &r.reference),
            Err(e) => self
                .refusal_or_retry(e)
                .map(|reason| ChannelRefund::rejected(&r.reference, reason)),
        }
    }

    async fn query_refund(&self, r: &RefundRequest) -> Result<ChannelRefund> {
        let path = format!("/v3/refund/domestic/refunds/{}", r.reference);
        match self.call("GET", &path, None).await? {
            Ok(v) => self.refund_for(&v, &r.reference),
            Err(e) if e.code == "RESOURCE_NOT_EXISTS" || e.status == 404 => Err(Error::new(
                ErrorCode::RefundNotFound,
                format!(
                    "{}: WeChat Pay has no refund {}",
                    self.cfg.channel, r.reference
                ),
            )),
            Err(e) => Err(self.refusal_or_retry(e).map_or_else(
                |e| e,
                |why| {
                    Error::unavailable(format!("{}: refund query refused: {why}", self.cfg.channel))
                },
            )),
        }
    }

    fn verify_notification(&self, n: &InboundNotification) -> Result<VerifiedNotification> {
        self.verify_signed(|name| n.header(name).map(str::to_string), &n.body)?;
        let channel = &self.cfg.channel;
        let v: Value = serde_json::from_slice(&n.body)
            .map_err(|_| unverified(format!("{channel}: notification is not JSON")))?;
        let id = str_of(&v, "id");
        if id.is_empty() {
            return Err(unverified(format!("{channel}: notification without id")));
        }
        let resource = v
            .get("resource")
            .ok_or_else(|| unverified(format!("{channel}: notification without resource")))?;
        if str_of(resource, "algorithm") != "AEAD_AES_256_GCM" {
            return Err(unverified(format!(
                "{channel}: resource algorithm {:?} is not AEAD_AES_256_GCM",
                bounded(str_of(resource, "algorithm"), 32)
            )));
        }
        let plaintext = decrypt_resource(
            &self.cfg.apiv3_key,
            str_of(resource, "nonce"),
            str_of(resource, "associated_data"),
            str_of(resource, "ciphertext"),
        )
        .map_err(|why| unverified(format!("{channel}: {why}")))?;
        let content: Value = serde_json::from_slice(&plaintext)
            .map_err(|_| unverified(format!("{channel}: decrypted resource is not JSON")))?;
        if str_of(&content, "mchid") != self.cfg.mchid {
            return Err(unverified(format!(
                "{channel}: notification for merchant {:?}, not ours",
                bounded(str_of(&content, "mchid"), 32)
            )));
        }
        let refund = refund_of(&content, "refund_status")?;
        Ok(VerifiedNotification {
            id: bounded(id, 64),
            original_trade_id: bounded(str_of(&content, "out_trade_no"), 64),
            refunds: vec![refund],
        })
    }

    fn notification_reply(&self, accepted: bool) -> NotificationReply {
        if accepted {
            NotificationReply {
                status: 204,
                content_type: "application/json",
                body: Vec::new(),
            }
        } else {
            NotificationReply {
                status: 500,
                content_type: "application/json",
                body: r#"{"code":"FAIL","message":"失败"}"#.as_bytes().to_vec(),
            }
        }
    }

    async fn download_bill(&self, date: NaiveDate) -> Result<ChannelBill> {
        let channel = &self.cfg.channel;
        let path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=REFUND&tar_type=GZIP",
            date.format("%Y-%m-%d")
        );
        let bill = match self.call("GET", &path, None).await? {
            Ok(v) => v,
            Err(e) if e.code == "NO_STATEMENT_EXIST" => {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!(
                        "{channel}: WeChat Pay has no refund bill for {date} (no refunds that day)"
                    ),
                ))
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "{channel}: bill request refused ({}: {})",
                    e.code, e.message
                )))
            }
        };
        if str_of(&bill, "hash_type") != "SHA1" {
            return Err(unverified(format!(
                "{channel}: bill hash_type {:?} is not SHA1",
                bounded(str_of(&bill, "hash_type"), 16)
            )));
        }
        let expected = str_of(&bill, "hash_value").to_ascii_lowercase();
        let download = self.same_origin(str_of(&bill, "download_url"))?;
        let auth = self.authorization("GET", &download, "")?;
        let request = self
            .client
            .get(self.url(&download))
            .header("Authorization", auth)
            .header("Accept", "*/*");
        let answer = http::send(channel, request, MAX_BILL_BYTES).await?;
        if !answer.is_success() {
            return Err(Error::unavailable(format!(
                "{channel}: bill download answered HTTP {} ({})",
                answer.status,
                error_code_of(&answer.body)
            )));
        }
        let content = gunzip(&answer.body, MAX_BILL_BYTES)
            .map_err(|why| unverified(format!("{channel}: bill: {why}")))?;
        let actual = hex::encode(Sha1::digest(&content));
        if actual != expected {
            return Err(unverified(format!(
                "{channel}: bill SHA1 {actual} does not match the signed {}",
                bounded(&expected, 40)
            )));
        }
        Ok(ChannelBill {
            format: "wechat".to_string(),
            content,
        })
    }
}

impl WechatPayV3 {
    /// The path and query of `download_url`, which must be on the configured API host.
    fn same_origin(&self, download_url: &str) -> Result<String> {
        let channel = &self.cfg.channel;
        let base = reqwest::Url::parse(&self.cfg.base_url)
            .map_err(|_| Error::field("base_url", "is not a URL"))?;
        let url = reqwest::Url::parse(download_url)
            .map_err(|_| unverified(format!("{channel}: download_url is not a URL")))?;
        if url.origin() != base.origin() {
            return Err(unverified(format!(
                "{channel}: download_url is not on {}",
                base.origin().ascii_serialization()
            )));
        }
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }
}

/// AEAD_AES_256_GCM decryption of a notification resource (base64 ciphertext with the tag).
pub fn decrypt_resource(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> std::result::Result<Vec<u8>, String> {
    if nonce.len() != 12 {
        return Err("resource nonce is not 12 bytes".to_string());
    }
    let ciphertext =
        super::keys::decode_b64(ciphertext_b64).ok_or("resource ciphertext is not base64")?;
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).map_err(|_| "bad APIv3 key")?;
    cipher
        .decrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: &ciphertext,
                aad: associated_data.as_bytes(),
            },
        )
        .map_err(|_| {
            "resource does not decrypt under the APIv3 key (tampered or wrong key)".to_string()
        })
}

fn gunzip(bytes: &[u8], max: usize) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    if out.len() > max {
        return Err(format!("larger than {max} bytes unpacked"));
    }
    Ok(out)
}

fn truncate_bytes(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_refund_no_alphabet() {
        assert!(check_out_refund_no("rf_0192abc-1|*@").is_ok());
        assert!(check_out_refund_no("rf.1").unwrap_err().contains("'.'"));
        assert!(check_out_refund_no(&"a".repeat(65)).is_err());
        assert!(check_out_refund_no("").is_err());
    }

    #[test]
    fn refund_statuses_map_onto_tuikuan() {
        let v = |s: &str| json!({"out_refund_no": "r1", "refund_id": "5030", "status": s, "amount": {"refund": 1250, "currency": "CNY"}});
        let got = |s: &str| refund_of(&v(s), "status").unwrap();
        assert_eq!(got("SUCCESS").status, ChannelStatus::Succeeded);
        assert_eq!(got("PROCESSING").status, ChannelStatus::Processing);
        assert_eq!(got("CLOSED").status, ChannelStatus::Failed);
        let abnormal = got("ABNORMAL");
        assert_eq!(abnormal.status, ChannelStatus::Failed);
        assert!(abnormal.reason.starts_with("BANK_ABNORMAL: "));
        assert_eq!(
            got("SUCCESS").amount,
            Some(Money::from_minor(1250, Currency::Cny))
        );
        let e = refund_of(&v("LOST"), "status").unwrap_err();
        assert_eq!(e.code, ErrorCode::ChannelUnverified);
    }

    /// The answer of 查询单笔退款（通过商户退款单号） for a refund in 退款异常, as WeChat Pay's API v3
    /// documents it (pay.weixin.qq.com/doc/v3/merchant/4013071041; statuses in 开发指引
    /// 4013071031: "ABNORMAL—退款异常：退款到银行发现用户的卡作废或者冻结了，导致原路退款银行卡
    /// 失败，可前往商户平台-交易中心，手动处理此笔退款。或调用发起异常退款API接口处理异常退款"):
    /// the money is held for people, never a reason to fall back to another method.
    #[test]
    fn abnormal_refund_from_the_documented_answer_goes_to_people() {
        let answer = json!({
            "refund_id": "50000000382019052709732678859",
            "out_refund_no": "1217752501201407033233368018",
            "transaction_id": "1217752501201407033233368018",
            "out_trade_no": "1217752501201407033233368018",
            "channel": "ORIGINAL",
            "user_received_account": "招商银行信用卡0403",
            "create_time": "2020-12-01T16:18:12+08:00",
            "status": "ABNORMAL",
            "funds_account": "UNSETTLED",
            "amount": {
                "total": 100, "refund": 100,
                "from": [],
                "payer_total": 90, "payer_refund": 90,
                "settlement_refund": 100, "settlement_total": 100,
                "discount_refund": 10, "currency": "CNY"
            },
            "promotion_detail": []
        });
        let r = refund_of(&answer, "status").unwrap();
        assert_eq!(r.status, ChannelStatus::Failed);
        assert_eq!(r.channel_status, "ABNORMAL");
        assert_eq!(r.reference, "1217752501201407033233368018");
        assert_eq!(r.channel_ref, "50000000382019052709732678859");
        assert_eq!(r.amount, Some(Money::from_minor(100, Currency::Cny)));
        assert!(r.reason.starts_with("BANK_ABNORMAL: "), "{}", r.reason);
        // Not a code the refund center falls back on (CARD_CANCELLED, ACCOUNT_CLOSED, BEYOND_WINDOW).
        for fallback in ["CARD_CANCELLED", "ACCOUNT_CLOSED", "BEYOND_WINDOW"] {
            assert!(!r.reason.starts_with(fallback));
        }
        // Handled with 发起异常退款 to the payer's other card: SUCCESS, OTHER_BANKCARD (paid).
        let mut other_card = answer.clone();
        other_card["status"] = json!("SUCCESS");
        other_card["channel"] = json!("OTHER_BANKCARD");
        other_card["user_received_account"] = json!("工商银行借记卡1234");
        assert_eq!(
            refund_of(&other_card, "status").unwrap().status,
            ChannelStatus::Succeeded
        );
        // Handled to the merchant's bank account: SUCCESS at WeChat Pay, but the payer has nothing.
        let mut to_merchant = other_card.clone();
        to_merchant["user_received_account"] = json!("商户结算银行账户");
        let r = refund_of(&to_merchant, "status").unwrap();
        assert_eq!(r.status, ChannelStatus::Failed);
        assert!(r.reason.starts_with("BANK_ABNORMAL: "), "{}", r.reason);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_bytes("退款原因", 7), "退款");
        assert_eq!(truncate_bytes("abc", 80), "abc");
    }
}
