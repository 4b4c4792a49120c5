//! The Alipay open platform gateway (支付宝开放平台, `gateway.do`), key mode (公钥模式), RSA2.
//!
//! Follows the published protocol (see `docs/channels.md` for the documents and versions):
//! - requests are form posts of the common parameters (`app_id`, `method`, `format=JSON`,
//!   `charset=utf-8`, `sign_type=RSA2`, `timestamp` in China time, `version=1.0`) and
//!   `biz_content`; `sign` is SHA256withRSA with the application private key over every other
//!   non-empty parameter, sorted by name, joined as `k=v&k=v`;
//! - every answer is verified before use: the raw text of the `<method>_response` node (or
//!   `error_response`) against `sign` with Alipay's public key;
//! - asynchronous notifications (form posts) are verified over their sorted parameters without
//!   `sign` and `sign_type`; a refund shows as `out_biz_no` (our `out_request_no`) with
//!   `refund_fee` / `gmt_refund`.
//!
//! Refunds (`alipay.trade.refund`) are mostly synchronous: `fund_change=Y` is success;
//! `fund_change=N` (also the answer to a repeat of a refund already made) is confirmed with
//! `alipay.trade.fastpay.refund.query`, where `refund_status=REFUND_SUCCESS` is success.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::{json, Value};
use tuikuan_kernel::clock::{business_tz, from_ms};
use tuikuan_kernel::{Error, ErrorCode, Money, Result, SharedClock};

use super::http::{self, MAX_ANSWER_BYTES, MAX_BILL_BYTES};
use super::keys::{ChannelKey, MerchantKey};
use super::{
    bounded, unverified, ChannelBill, ChannelRefund, ChannelStatus, Connector, InboundNotification,
    NotificationReply, RefundRequest, VerifiedNotification,
};

/// The production gateway.
pub const ALIPAY_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
/// `out_request_no`: at most 64 characters.
pub const MAX_REFERENCE_LEN: usize = 64;

/// What the connector needs, resolved (keys loaded).
#[derive(Debug, Clone)]
pub struct AlipayConfig {
    pub channel: String,
    pub app_id: String,
    /// The application private key (应用私钥).
    pub app_key: MerchantKey,
    /// Alipay's public key (支付宝公钥).
    pub alipay_key: ChannelKey,
    pub gateway_url: String,
    pub timeout: Duration,
    /// The refund reason (at most 256 characters).
    pub reason: String,
}

/// The Alipay connector.
#[derive(Debug)]
pub struct Alipay {
    cfg: AlipayConfig,
    client: reqwest::Client,
    clock: SharedClock,
}

/// A verified answer node.
#[derive(Debug, Clone)]
struct Node {
    code: String,
    sub_code: String,
    sub_msg: String,
    value: Value,
}

impl Alipay {
    pub fn new(cfg: AlipayConfig, clock: SharedClock) -> Result<Alipay> {
        let client = http::client(cfg.timeout)?;
        Ok(Alipay { cfg, client, clock })
    }

    /// The signed parameters of a call.
    fn signed_params(&self, method: &str, biz: &Value) -> Result<BTreeMap<String, String>> {
        let now = from_ms(self.clock.now_ms()).with_timezone(&business_tz());
        let mut p = BTreeMap::new();
        p.insert("app_id".to_string(), self.cfg.app_id.clone());
        p.insert("method".to_string(), method.to_string());
        p.insert("format".to_string(), "JSON".to_string());
        p.insert("charset".to_string(), "utf-8".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        p.insert(
            "timestamp".to_string(),
            now.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        p.insert("version".to_string(), "1.0".to_string());
        p.insert("biz_content".to_string(), biz.to_string());
        let sign = self.cfg.app_key.sign_sha256(sign_content(&p).as_bytes())?;
        p.insert("sign".to_string(), sign);
        Ok(p)
    }

    /// Calls `method` and verifies the answer's node.
    async fn call(&self, method: &str, biz: Value) -> Result<Node> {
        let channel = &self.cfg.channel;
        let params = self.signed_params(method, &biz)?;
        let request = self
            .client
            .post(&self.cfg.gateway_url)
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(encode_form(&params));
        let answer = http::send(channel, request, MAX_ANSWER_BYTES).await?;
        if !answer.is_success() {
            return Err(Error::unavailable(format!(
                "{channel}: gateway answered HTTP {}",
                answer.status
            )));
        }
        let text = String::from_utf8(answer.body)
            .map_err(|_| unverified(format!("{channel}: answer is not UTF-8")))?;
        let node_name = format!("{}_response", method.replace('.', "_"));
        let (raw, sign) = response_node(&text, &node_name)
            .or_else(|| response_node(&text, "error_response"))
            .ok_or_else(|| unverified(format!("{channel}: answer has no {node_name} node")))?;
        let sign = sign.ok_or_else(|| unverified(format!("{channel}: answer is not signed")))?;
        // The gateway may escape `/` as `\/` in the text it sends while signing the text with `/`;
        // like the SDKs, verify the raw text, then that text with `\/` unescaped (docs/channels.md).
        let verified = self.cfg.alipay_key.verify_sha256(raw.as_bytes(), &sign)
            || (raw.contains("\\/")
                && self
                    .cfg
                    .alipay_key
                    .verify_sha256(raw.replace("\\/", "/").as_bytes(), &sign));
        if !verified {
            return Err(unverified(format!(
                "{channel}: answer signature does not verify with Alipay's public key"
            )));
        }
        let value: Value = serde_json::from_str(raw)
            .map_err(|_| unverified(format!("{channel}: answer node is not JSON")))?;
        let s = |k: &str| {
            bounded(
                value.get(k).and_then(Value::as_str).unwrap_or_default(),
                200,
            )
        };
        Ok(Node {
            code: s("code"),
            sub_code: s("sub_code"),
            sub_msg: s("sub_msg"),
            value,
        })
    }

    /// A verified business failure: a refusal (`Ok(reason)`) or something to retry.
    fn refusal_or_retry(&self, node: &Node) -> Result<String> {
        let channel = &self.cfg.channel;
        let why = format!("{} {}", node.sub_code, node.sub_msg);
        match (node.code.as_str(), node.sub_code.as_str()) {
            ("40004", "ACQ.SYSTEM_ERROR") | ("20000", _) => Err(Error::unavailable(format!(
                "{channel}: Alipay asks to retry ({why})"
            ))),
            ("40004", "ACQ.DISCORDANT_REPEAT_REQUEST") => Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!("{channel}: Alipay has this out_request_no with other content ({why})"),
            )),
            ("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH") => {
                Ok(format!("INSUFFICIENT_BALANCE: Alipay {why}"))
            }
            ("40004", "ACQ.TRADE_NOT_EXIST") => Ok(format!("TRADE_NOT_FOUND: Alipay {why}")),
            ("40004", _) => Ok(format!("CHANNEL_REJECTED: Alipay {why}")),
            _ => Err(Error::unavailable(format!(
                "{channel}: Alipay refused the call ({} {why}); check the channel's configuration",
                node.code
            ))),
        }
    }

    fn refund_of(
        &self,
        reference: &str,
        node: &Node,
        status: ChannelStatus,
        word: &str,
    ) -> ChannelRefund {
        ChannelRefund {
            reference: reference.to_string(),
            status,
            channel_status: word.to_string(),
            channel_ref: bounded(
                node.value
                    .get("trade_no")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                64,
            ),
            reason: String::new(),
            amount: None,
        }
    }
}

/// `k=v&k=v` over the sorted non-empty parameters other than `sign` (and `sign_type` when
/// `skip_sign_type`, as for notifications).
fn sign_content_of(params: &BTreeMap<String, String>, skip_sign_type: bool) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign" && !(skip_sign_type && *k == "sign_type"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request signing string (`sign_type` included, as the SDKs sign it).
pub fn sign_content(params: &BTreeMap<String, String>) -> String {
    sign_content_of(params, false)
}

fn encode_form(params: &BTreeMap<String, String>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The raw text of the JSON object under `"node":` in `text` and the top-level `sign`, as the
/// SDKs extract them for verification (the bytes as sent, not re-serialised).
pub fn response_node<'a>(text: &'a str, node: &str) -> Option<(&'a str, Option<String>)> {
    let key = format!("\"{node}\"");
    let at = text.find(&key)? + key.len();
    let rest = &text[at..];
    let open = at + rest.find('{')?;
    if !text[at..open]
        .trim()
        .trim_start_matches(':')
        .trim()
        .is_empty()
    {
        return None;
    }
    let end = object_end(text, open)?;
    let sign = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("sign").and_then(Value::as_str).map(str::to_string));
    Some((&text[open..end], sign))
}

/// The index after the `}` closing the object that opens at `open`.
fn object_end(text: &str, open: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in text.bytes().enumerate().skip(open) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `reference` is a valid `out_request_no`.
pub fn check_out_request_no(reference: &str) -> std::result::Result<(), String> {
    if reference.is_empty() || reference.chars().count() > MAX_REFERENCE_LEN {
        return Err(format!(
            "out_request_no must be 1 to {MAX_REFERENCE_LEN} characters"
        ));
    }
    if let Some(c) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Err(format!("out_request_no may not contain {c:?}"));
    }
    Ok(())
}

fn yuan(amount: &Money) -> String {
    amount.amount_string()
}

#[async_trait]
impl Connector for Alipay {
    fn kind(&self) -> &'static str {
        "alipay"
    }

    fn check_reference(&self, reference: &str) -> std::result::Result<(), String> {
        check_out_request_no(reference)
    }

    async fn submit_refund(&self, r: &RefundRequest, _notify_url: &str) -> Result<ChannelRefund> {
        if let Some(refusal) = ChannelRefund::unless_cny(r, "Alipay") {
            return Ok(refusal);
        }
        let reason: String = if r.reason.is_empty() {
            &self.cfg.reason
        } else {
            &r.reason
        }
        .chars()
        .take(256)
        .collect();
        let mut biz = json!({
            "out_trade_no": r.original_trade_id,
            "out_request_no": r.reference,
            "refund_amount": yuan(&r.amount),
        });
        if !reason.is_empty() {
            biz["refund_reason"] = json!(reason);
        }
        let node = self.call("alipay.trade.refund", biz).await?;
        if node.code != "10000" {
            return self
                .refusal_or_retry(&node)
                .map(|reason| ChannelRefund::rejected(&r.reference, reason));
        }
        let fund_change = node
            .value
            .get("fund_change")
            .and_then(Value::as_str)
            .unwrap_or("N");
        let status = if fund_change == "Y" {
            ChannelStatus::Succeeded
        } else {
            ChannelStatus::Processing
        };
        Ok(self.refund_of(
            &r.reference,
            &node,
            status,
            &format!("fund_change={fund_change}"),
        ))
    }

    async fn query_refund(&self, r: &RefundRequest) -> Result<ChannelRefund> {
        let biz = json!({
            "out_trade_no": r.original_trade_id,
            "out_request_no": r.reference,
        });
        let node = self.call("alipay.trade.fastpay.refund.query", biz).await?;
        let not_found = || {
            Error::new(
                ErrorCode::RefundNotFound,
                format!("{}: Alipay has no refund {}", self.cfg.channel, r.reference),
            )
        };
        if node.code != "10000" {
            if node.sub_code == "ACQ.TRADE_NOT_EXIST" {
                return Err(not_found());
            }
            return Err(self.refusal_or_retry(&node).map_or_else(
                |e| e,
                |why| {
                    Error::unavailable(format!("{}: refund query refused: {why}", self.cfg.channel))
                },
            ));
        }
        let field = |k: &str| {
            node.value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        if !field("out_request_no").is_empty() && field("out_request_no") != r.reference {
            return Err(unverified(format!(
                "{}: answer is about out_request_no {}, not {}",
                self.cfg.channel,
                bounded(field("out_request_no"), 64),
                r.reference
            )));
        }
        match field("refund_status") {
            "REFUND_SUCCESS" => {
                let mut refund = self.refund_of(
                    &r.reference,
                    &node,
                    ChannelStatus::Succeeded,
                    "REFUND_SUCCESS",
                );
                refund.amount = Money::parse(field("refund_amount"), "CNY", "refund_amount").ok();
                Ok(refund)
            }
            // "Not returned: the refund was not received or did not succeed" (yet).
            "" if field("out_request_no").is_empty() => Err(not_found()),
            other => Ok(self.refund_of(
                &r.reference,
                &node,
                ChannelStatus::Processing,
                if other.is_empty() {
                    "NO_REFUND_STATUS"
                } else {
                    other
                },
            )),
        }
    }

    fn verify_notification(&self, n: &InboundNotification) -> Result<VerifiedNotification> {
        let channel = &self.cfg.channel;
        let mut params = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(&n.body) {
            if params.insert(k.to_string(), v.to_string()).is_some() {
                return Err(unverified(format!(
                    "{channel}: parameter {} appears twice",
                    bounded(&k, 32)
                )));
            }
        }
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
        let sign = get("sign");
        if sign.is_empty() {
            return Err(unverified(format!("{channel}: notification is not signed")));
        }
        if !get("sign_type").is_empty() && get("sign_type") != "RSA2" {
            return Err(unverified(format!("{channel}: sign_type is not RSA2")));
        }
        if !get("charset").is_empty() && !get("charset").eq_ignore_ascii_case("utf-8") {
            return Err(unverified(format!("{channel}: charset is not utf-8")));
        }
        let content = sign_content_of(&params, true);
        if !self.cfg.alipay_key.verify_sha256(content.as_bytes(), sign) {
            return Err(unverified(format!(
                "{channel}: notification signature does not verify with Alipay's public key"
            )));
        }
        if get("app_id") != self.cfg.app_id {
            return Err(unverified(format!(
                "{channel}: notification for app {:?}, not ours",
                bounded(get("app_id"), 32)
            )));
        }
        let id = get("notify_id");
        if id.is_empty() {
            return Err(unverified(format!(
                "{channel}: notification without notify_id"
            )));
        }
        // A refund shows as out_biz_no (the out_request_no) with refund_fee and gmt_refund; a
        // payment's notification has neither and carries nothing for the bank subsystem.
        let refunds = if !get("out_biz_no").is_empty() && !get("refund_fee").is_empty() {
            vec![ChannelRefund {
                reference: bounded(get("out_biz_no"), MAX_REFERENCE_LEN),
                status: ChannelStatus::Succeeded,
                channel_status: format!(
                    "{} refund_fee={}",
                    bounded(get("trade_status"), 32),
                    bounded(get("refund_fee"), 16)
                ),
                channel_ref: bounded(get("trade_no"), 64),
                reason: String::new(),
                amount: None,
            }]
        } else {
            Vec::new()
        };
        Ok(VerifiedNotification {
            id: bounded(id, 128),
            original_trade_id: bounded(get("out_trade_no"), 64),
            refunds,
        })
    }

    fn notification_reply(&self, accepted: bool) -> NotificationReply {
        NotificationReply {
            status: 200,
            content_type: "text/plain",
            body: if accepted {
                b"success".to_vec()
            } else {
                b"failure".to_vec()
            },
        }
    }

    async fn download_bill(&self, date: NaiveDate) -> Result<ChannelBill> {
        let channel = &self.cfg.channel;
        let biz = json!({"bill_type": "trade", "bill_date": date.format("%Y-%m-%d").to_string()});
        let node = self
            .call("alipay.data.dataservice.bill.downloadurl.query", biz)
            .await?;
        if node.code != "10000" {
            if node.sub_code == "isp.bill_not_exist" {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!("{channel}: Alipay has no bill for {date}"),
                ));
            }
            return Err(self.refusal_or_retry(&node).map_or_else(
                |e| e,
                |why| Error::unavailable(format!("{channel}: bill request refused: {why}")),
            ));
        }
        let url = node
            .value
            .get("bill_download_url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = bill_url(channel, &self.cfg.gateway_url, url)?;
        let answer = http::send(channel, self.client.get(url), MAX_BILL_BYTES).await?;
        if !answer.is_success() {
            return Err(Error::unavailable(format!(
                "{channel}: bill download answered HTTP {}",
                answer.status
            )));
        }
        let content = business_detail_csv(&answer.body)
            .map_err(|why| unverified(format!("{channel}: bill: {why}")))?;
        Ok(ChannelBill {
            format: "alipay".to_string(),
            content,
        })
    }
}

/// The bill's URL from a verified answer. Alipay publishes it as `http://dwbillcenter.alipay.com/
/// downloadBillFile.resource?…` (查询对账单下载地址, response example), and the bill carries no
/// digest: behind an https gateway the download is upgraded to https, so that nobody on the path
/// can change the bill. Other schemes, and URLs without a host, are refused.
pub fn bill_url(channel: &str, gateway_url: &str, url: &str) -> Result<reqwest::Url> {
    let gateway = reqwest::Url::parse(gateway_url)
        .map_err(|_| Error::field("gateway_url", "is not a URL"))?;
    let mut url = reqwest::Url::parse(url)
        .map_err(|_| unverified(format!("{channel}: bill_download_url is not a URL")))?;
    if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
        return Err(unverified(format!(
            "{channel}: bill_download_url is not an http(s) URL with a host"
        )));
    }
    if gateway.scheme() == "https" && url.scheme() == "http" {
        url.set_scheme("https")
            .map_err(|()| unverified(format!("{channel}: bill_download_url cannot use https")))?;
    }
    Ok(url)
}

/// The 业务明细 CSV (not its 汇总 summary) of a bill zip, as its raw bytes (GBK as published).
/// Entry names are GBK unless the zip marks them UTF-8.
pub fn business_detail_csv(zip_bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))
        .map_err(|e| format!("not a zip: {e}"))?;
    let mut found = None;
    for i in 0..archive.len() {
        let file = archive
            .by_index(i)
            .map_err(|e| format!("unreadable entry: {e}"))?;
        let raw = file.name_raw();
        let name = match std::str::from_utf8(raw) {
            Ok(s) => s.to_string(),
            Err(_) => encoding_rs::GBK.decode(raw).0.into_owned(),
        };
        if name.ends_with("业务明细.csv") && !name.contains("汇总") {
            if found.is_some() {
                return Err("two 业务明细 files".to_string());
            }
            found = Some(i);
        }
    }
    let index = found.ok_or("no 业务明细.csv in the zip")?;
    let file = archive
        .by_index(index)
        .map_err(|e| format!("unreadable entry: {e}"))?;
    let mut out = Vec::new();
    file.take(MAX_BILL_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("unreadable 业务明细: {e}"))?;
    if out.len() > MAX_BILL_BYTES {
        return Err(format!("业务明细 larger than {MAX_BILL_BYTES} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_string_is_sorted_and_skips_empty_values() {
        let mut p = BTreeMap::new();
        for (k, v) in [
            ("method", "alipay.trade.refund"),
            ("app_id", "2021"),
            ("sign", "x"),
            ("empty", ""),
            ("sign_type", "RSA2"),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        assert_eq!(
            sign_content(&p),
            "app_id=2021&method=alipay.trade.refund&sign_type=RSA2"
        );
        assert_eq!(
            sign_content_of(&p, true),
            "app_id=2021&method=alipay.trade.refund"
        );
    }

    #[test]
    fn response_node_is_the_raw_text() {
        let text = r#"{"alipay_trade_refund_response":{"code":"10000","msg":"Success","x":"a}\"{b"},"sign":"SIG"}"#;
        let (raw, sign) = response_node(text, "alipay_trade_refund_response").unwrap();
        assert_eq!(raw, r#"{"code":"10000","msg":"Success","x":"a}\"{b"}"#);
        assert_eq!(sign.as_deref(), Some("SIG"));
        let err = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments"}}"#;
        assert!(response_node(err, "alipay_trade_refund_response").is_none());
        assert_eq!(response_node(err, "error_response").unwrap().1, None);
    }

    #[test]
    fn bill_url_is_fetched_over_https_behind_an_https_gateway() {
        let published = "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&userId=20881234&fileType=csv.zip&bizDates=20161221&downloadFileName=20881234_20161221.csv.zip&fileId=%2Ftrade%2F20881234%2F20161221.csv.zip&timestamp=1482329765&token=abc";
        let got = bill_url("ALIPAY", ALIPAY_GATEWAY, published).unwrap();
        assert_eq!(got.scheme(), "https");
        assert_eq!(got.host_str(), Some("dwbillcenter.alipay.com"));
        assert_eq!(got.port(), None);
        assert_eq!(got.query(), published.split_once('?').map(|(_, q)| q));
        let https = "https://dwbillcenter.alipay.com/downloadBillFile.resource?token=abc";
        assert_eq!(
            bill_url("ALIPAY", ALIPAY_GATEWAY, https).unwrap().as_str(),
            https
        );
        // A loopback gateway (the tests' fake) keeps plain http.
        let local = "http://127.0.0.1:4000/bill/t1";
        assert_eq!(
            bill_url("ALIPAY", "http://127.0.0.1:4000/gateway.do", local)
                .unwrap()
                .as_str(),
            local
        );
        for bad in [
            "ftp://dwbillcenter.alipay.com/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            let e = bill_url("ALIPAY", ALIPAY_GATEWAY, bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ChannelUnverified, "{bad}");
        }
    }

    #[test]
    fn out_request_no_rules() {
        assert!(check_out_request_no("rf_01.x-1").is_ok());
        assert!(check_out_request_no("rf 1").is_err());
        assert!(check_out_request_no(&"a".repeat(65)).is_err());
    }
}
