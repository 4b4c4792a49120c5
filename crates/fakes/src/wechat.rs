//! A fake WeChat Pay API v3 server (direct merchant): 查询订单, 申请退款, 查询单笔退款, 申请交易账单
//! and the bill download, refund notifications. Every request's `Authorization` is verified with
//! the merchant's public key (mchid, serial, timestamp within five minutes, SHA256withRSA over
//! `METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n`); every answer but the bill file is signed with the
//! platform key (`Wechatpay-Timestamp/Nonce/Serial/Signature` over `TIMESTAMP\nNONCE\nBODY\n`);
//! notifications carry the refund encrypted with AEAD_AES_256_GCM under the APIv3 key.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tuikuan_kernel::SharedClock;

use crate::{china, keys, serve_loopback, AnswerFault, NotifyFault, Settle};

pub const MCHID: &str = "1900000109";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// The platform public key id (微信支付公钥ID) the fake signs under.
pub const PLATFORM_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// A serial the bank is not configured with.
pub const UNKNOWN_SERIAL: &str = "PUB_KEY_ID_0999999999999999999999999999";
/// The APIv3 key (32 characters).
pub const APIV3_KEY: &str = "tuikuanFakeApiV3Key0123456789abc";

/// A refund as the fake's ledger has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub refund_fen: i64,
    pub total_fen: i64,
    /// SUCCESS, PROCESSING, ABNORMAL or CLOSED.
    pub status: String,
    pub notify_url: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// How many times money left for this refund (must never exceed 1).
    pub paid: u32,
}

#[derive(Debug)]
struct Order {
    total_fen: i64,
    transaction_id: String,
}

#[derive(Debug)]
struct Outgoing {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Inner {
    clock: SharedClock,
    base_url: String,
    orders: HashMap<String, Order>,
    refunds: BTreeMap<String, FakeRefund>,
    answer_fault: AnswerFault,
    hang_after_acting: u32,
    settle: Settle,
    notify_fault: NotifyFault,
    bill_digest_wrong: bool,
    outbox: Vec<Outgoing>,
    bills: HashMap<String, Vec<u8>>,
    refused_requests: u32,
    seq: u64,
}

/// The fake server. Dropping it stops the server.
pub struct FakeWechatPay {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWechatPay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeWechatPay {
    /// Starts the fake on loopback with `clock` (the bank's clock in tests).
    pub async fn start(clock: SharedClock) -> FakeWechatPay {
        let _ = keys();
        let inner = Arc::new(Mutex::new(Inner {
            clock,
            base_url: String::new(),
            orders: HashMap::new(),
            refunds: BTreeMap::new(),
            answer_fault: AnswerFault::None,
            hang_after_acting: 0,
            settle: Settle::AtOnce,
            notify_fault: NotifyFault::None,
            bill_digest_wrong: false,
            outbox: Vec::new(),
            bills: HashMap::new(),
            refused_requests: 0,
            seq: 0,
        }));
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let (url, server) = serve_loopback(router).await;
        inner.lock().expect("fake state").base_url = url.clone();
        FakeWechatPay { url, inner, server }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("fake state"))
    }

    /// A succeeded payment of `total_fen` under `out_trade_no`.
    pub fn pay(&self, out_trade_no: &str, total_fen: i64) {
        self.with(|s| {
            s.seq += 1;
            let transaction_id = format!("4200{:024}", s.seq);
            s.orders.insert(
                out_trade_no.to_string(),
                Order {
                    total_fen,
                    transaction_id,
                },
            );
        })
    }

    pub fn set_answer_fault(&self, fault: AnswerFault) {
        self.with(|s| s.answer_fault = fault)
    }

    /// The next `n` refund submissions are carried out, then never answered.
    pub fn hang_after_acting(&self, n: u32) {
        self.with(|s| s.hang_after_acting = n)
    }

    pub fn set_settle(&self, settle: Settle) {
        self.with(|s| s.settle = settle)
    }

    pub fn set_notify_fault(&self, fault: NotifyFault) {
        self.with(|s| s.notify_fault = fault)
    }

    /// Bills are announced with a SHA1 that does not match their content.
    pub fn set_bill_digest_wrong(&self, wrong: bool) {
        self.with(|s| s.bill_digest_wrong = wrong)
    }

    /// Finishes every PROCESSING refund (per the settle mode) and queues its notification.
    pub fn settle(&self) -> usize {
        self.with(|s| {
            let now = s.clock.now_ms();
            let status = match s.settle {
                Settle::LaterAbnormal => "ABNORMAL",
                _ => "SUCCESS",
            };
            let due: Vec<String> = s
                .refunds
                .values()
                .filter(|r| r.status == "PROCESSING")
                .map(|r| r.out_refund_no.clone())
                .collect();
            for no in &due {
                let r = s.refunds.get_mut(no).expect("refund");
                r.status = status.to_string();
                r.finished_ms = Some(now);
                if status == "SUCCESS" {
                    r.paid += 1;
                }
                let r = r.clone();
                queue_notification(s, &r);
            }
            due.len()
        })
    }

    /// Sends the queued notifications; the HTTP statuses the bank answered, in order.
    pub async fn deliver_notifications(&self) -> Vec<u16> {
        let outgoing = self.with(|s| std::mem::take(&mut s.outbox));
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for o in outgoing {
            let mut req = client.post(&o.url).body(o.body);
            for (k, v) in &o.headers {
                req = req.header(k, v);
            }
            statuses.push(req.send().await.map(|r| r.status().as_u16()).unwrap_or(0));
        }
        statuses
    }

    pub fn refund(&self, out_refund_no: &str) -> Option<FakeRefund> {
        self.with(|s| s.refunds.get(out_refund_no).cloned())
    }

    pub fn refunds(&self) -> Vec<FakeRefund> {
        self.with(|s| s.refunds.values().cloned().collect())
    }

    /// Requests refused because their `Authorization` did not verify.
    pub fn refused_requests(&self) -> u32 {
        self.with(|s| s.refused_requests)
    }
}

fn fen(v: i64) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

fn refund_json(r: &FakeRefund) -> Value {
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": china(r.created_ms).to_rfc3339(),
        "status": r.status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": r.total_fen, "refund": r.refund_fen, "payer_total": r.total_fen,
            "payer_refund": r.refund_fen, "settlement_refund": r.refund_fen,
            "settlement_total": r.total_fen, "discount_refund": 0, "currency": "CNY", "refund_fee": 0
        }
    });
    if let (Some(ms), "SUCCESS") = (r.finished_ms, r.status.as_str()) {
        v["success_time"] = json!(china(ms).to_rfc3339());
    }
    v
}

/// Signature headers over `body` as the fault says.
fn signed_headers(s: &mut Inner, body: &[u8], fault: AnswerFault) -> Vec<(String, String)> {
    let now = s.clock.now_ms().div_euclid(1000);
    let ts = if fault == AnswerFault::ExpiredTimestamp {
        now - 600
    } else {
        now
    };
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let serial = if fault == AnswerFault::UnknownSerial {
        UNKNOWN_SERIAL
    } else {
        PLATFORM_KEY_ID
    };
    let mut message = format!("{ts}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    if fault == AnswerFault::BadSignature {
        message.extend_from_slice(b"tampered");
    }
    let mut signature = keys().wechat_platform.sign(&message);
    if fault == AnswerFault::SignatureProbe {
        signature = format!("WECHATPAY/SIGNTEST/{}", &signature[19..]);
    }
    s.seq += 1;
    vec![
        ("Wechatpay-Timestamp".to_string(), ts.to_string()),
        ("Wechatpay-Nonce".to_string(), nonce),
        ("Wechatpay-Serial".to_string(), serial.to_string()),
        ("Wechatpay-Signature".to_string(), signature),
        ("Request-ID".to_string(), format!("08FAKE{:010}", s.seq)),
    ]
}

fn answer(s: &mut Inner, status: StatusCode, body: Value) -> Response {
    let text = body.to_string().into_bytes();
    let fault = s.answer_fault;
    let headers = signed_headers(s, &text, fault);
    let mut response = (status, [("content-type", "application/json")], text).into_response();
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn error(s: &mut Inner, status: StatusCode, code: &str, message: &str) -> Response {
    answer(s, status, json!({"code": code, "message": message}))
}

/// Checks the merchant's `Authorization` header.
fn authorized(s: &Inner, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(params) = auth.strip_prefix("WECHATPAY2-SHA256-RSA2048 ") else {
        return false;
    };
    let mut fields = HashMap::new();
    for part in params.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    }
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let Ok(ts) = get("timestamp").parse::<i64>() else {
        return false;
    };
    if get("mchid") != MCHID
        || get("serial_no") != MERCHANT_SERIAL
        || (s.clock.now_ms().div_euclid(1000) - ts).abs() > 300
    {
        return false;
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut message = format!("{method}\n{path}\n{ts}\n{}\n", get("nonce_str")).into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    keys().wechat_merchant.verify(&message, get("signature"))
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hang = {
        let mut s = inner.lock().expect("fake state");
        if !authorized(&s, &method, &uri, &headers, &body) {
            s.refused_requests += 1;
            return error(&mut s, StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误");
        }
        let path = uri.path().to_string();
        let query: HashMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p.starts_with("/v3/pay/transactions/out-trade-no/") => {
                let no = &p["/v3/pay/transactions/out-trade-no/".len()..];
                return match s.orders.get(no) {
                    Some(o) if query.get("mchid").map(String::as_str) == Some(MCHID) => {
                        let v = json!({
                            "appid": "wxd678efh567hg6787", "mchid": MCHID, "out_trade_no": no,
                            "transaction_id": o.transaction_id, "trade_type": "JSAPI",
                            "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
                            "amount": {"total": o.total_fen, "payer_total": o.total_fen, "currency": "CNY", "payer_currency": "CNY"}
                        });
                        answer(&mut s, StatusCode::OK, v)
                    }
                    Some(_) => error(
                        &mut s,
                        StatusCode::BAD_REQUEST,
                        "PARAM_ERROR",
                        "mchid不正确",
                    ),
                    None => error(
                        &mut s,
                        StatusCode::NOT_FOUND,
                        "ORDER_NOT_EXIST",
                        "订单不存在",
                    ),
                };
            }
            ("POST", "/v3/refund/domestic/refunds") => {
                let response = create_refund(&mut s, &body);
                if s.hang_after_acting > 0 && response.status().is_success() {
                    s.hang_after_acting -= 1;
                    true
                } else {
                    return response;
                }
            }
            ("GET", p) if p.starts_with("/v3/refund/domestic/refunds/") => {
                let no = &p["/v3/refund/domestic/refunds/".len()..];
                return match s.refunds.get(no).cloned() {
                    Some(r) => answer(&mut s, StatusCode::OK, refund_json(&r)),
                    None => error(
                        &mut s,
                        StatusCode::NOT_FOUND,
                        "RESOURCE_NOT_EXISTS",
                        "退款单不存在",
                    ),
                };
            }
            ("GET", "/v3/bill/tradebill") => return trade_bill(&mut s, &query),
            ("GET", "/v3/billdownload/file") => {
                let token = query.get("token").cloned().unwrap_or_default();
                return match s.bills.get(&token) {
                    Some(gz) => (
                        StatusCode::OK,
                        [("content-type", "application/octet-stream")],
                        gz.clone(),
                    )
                        .into_response(),
                    None => error(
                        &mut s,
                        StatusCode::BAD_REQUEST,
                        "INVALID_REQUEST",
                        "账单地址已失效",
                    ),
                };
            }
            _ => return error(&mut s, StatusCode::NOT_FOUND, "NOT_FOUND", "未知接口"),
        }
    };
    debug_assert!(hang);
    // Carried out, never answered: the caller times out not knowing the outcome.
    std::future::pending::<Response>().await
}

fn create_refund(s: &mut Inner, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return error(s, StatusCode::BAD_REQUEST, "PARAM_ERROR", "请求体不是JSON");
    };
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (out_trade_no, out_refund_no) = (text("out_trade_no"), text("out_refund_no"));
    let refund_fen = v
        .pointer("/amount/refund")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let total_fen = v
        .pointer("/amount/total")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if out_refund_no.is_empty()
        || refund_fen <= 0
        || v.pointer("/amount/currency").and_then(Value::as_str) != Some("CNY")
        || text("reason").len() > 80
    {
        return error(s, StatusCode::BAD_REQUEST, "PARAM_ERROR", "参数错误");
    }
    let Some(order) = s.orders.get(&out_trade_no) else {
        return error(
            s,
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "订单不存在",
        );
    };
    if order.total_fen != total_fen {
        return error(
            s,
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "订单金额与原订单不一致",
        );
    }
    let transaction_id = order.transaction_id.clone();
    if let Some(existing) = s.refunds.get(&out_refund_no).cloned() {
        // 同一退款单号多次请求只退一笔.
        if existing.out_trade_no == out_trade_no && existing.refund_fen == refund_fen {
            return answer(s, StatusCode::OK, refund_json(&existing));
        }
        return error(
            s,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "退款单号已存在且内容不一致",
        );
    }
    let refunded: i64 = s
        .refunds
        .values()
        .filter(|r| r.out_trade_no == out_trade_no && r.status != "CLOSED")
        .map(|r| r.refund_fen)
        .sum();
    if refunded + refund_fen > total_fen {
        return error(
            s,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "申请退款金额超过订单可退金额",
        );
    }
    let now = s.clock.now_ms();
    s.seq += 1;
    let at_once = s.settle == Settle::AtOnce;
    let r = FakeRefund {
        out_refund_no: out_refund_no.clone(),
        refund_id: format!("5030{:025}", s.seq),
        out_trade_no,
        transaction_id,
        refund_fen,
        total_fen,
        status: if at_once { "SUCCESS" } else { "PROCESSING" }.to_string(),
        notify_url: text("notify_url"),
        created_ms: now,
        finished_ms: at_once.then_some(now),
        paid: u32::from(at_once),
    };
    s.refunds.insert(out_refund_no, r.clone());
    if at_once {
        queue_notification(s, &r);
    }
    answer(s, StatusCode::OK, refund_json(&r))
}

/// Queues the refund notification (faults applied).
fn queue_notification(s: &mut Inner, r: &FakeRefund) {
    if r.notify_url.is_empty() {
        return;
    }
    let mut content = json!({
        "mchid": MCHID, "out_trade_no": r.out_trade_no, "transaction_id": r.transaction_id,
        "out_refund_no": r.out_refund_no, "refund_id": r.refund_id, "refund_status": r.status,
        "user_received_account": "支付用户零钱",
        "amount": {"total": r.total_fen, "refund": r.refund_fen, "payer_total": r.total_fen, "payer_refund": r.refund_fen}
    });
    if let Some(ms) = r.finished_ms {
        content["success_time"] = json!(china(ms).to_rfc3339());
    }
    let nonce: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let cipher = Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes()).expect("APIv3 key");
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: content.to_string().as_bytes(),
                aad: b"refund",
            },
        )
        .expect("AES-256-GCM");
    let event = if r.status == "SUCCESS" {
        "REFUND.SUCCESS"
    } else {
        "REFUND.ABNORMAL"
    };
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "create_time": china(s.clock.now_ms()).to_rfc3339(),
        "resource_type": "encrypt-resource",
        "event_type": event,
        "summary": "退款成功",
        "resource": {
            "original_type": "refund", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64::engine::general_purpose::STANDARD.encode(ciphertext),
            "associated_data": "refund", "nonce": nonce
        }
    })
    .to_string()
    .into_bytes();
    let fault = match s.notify_fault {
        NotifyFault::Expired => AnswerFault::ExpiredTimestamp,
        NotifyFault::UnknownSerial => AnswerFault::UnknownSerial,
        _ => AnswerFault::None,
    };
    let mut headers = signed_headers(s, &body, fault);
    headers.push(("Content-Type".to_string(), "application/json".to_string()));
    let body = if s.notify_fault == NotifyFault::Tampered {
        String::from_utf8(body)
            .expect("json")
            .replace("REFUND.", "REFUND.X")
            .into_bytes()
    } else {
        body
    };
    let copies = if s.notify_fault == NotifyFault::Duplicate {
        2
    } else {
        1
    };
    for _ in 0..copies {
        s.outbox.push(Outgoing {
            url: r.notify_url.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
    }
}

/// 申请交易账单 (REFUND): the day's refund rows, the bill kept for the download.
fn trade_bill(s: &mut Inner, query: &HashMap<String, String>) -> Response {
    let date = query.get("bill_date").cloned().unwrap_or_default();
    if query.get("bill_type").map(String::as_str) != Some("REFUND") {
        return error(
            s,
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "本fake只出退款账单",
        );
    }
    let rows: Vec<FakeRefund> = s
        .refunds
        .values()
        .filter(|r| {
            r.finished_ms
                .is_some_and(|ms| china(ms).format("%Y-%m-%d").to_string() == date)
        })
        .cloned()
        .collect();
    if rows.is_empty() {
        return error(
            s,
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "账单文件不存在",
        );
    }
    let content = refund_bill(&rows);
    let mut hash = hex::encode(Sha1::digest(content.as_bytes()));
    if s.bill_digest_wrong {
        hash = hex::encode(Sha1::digest(b"another bill"));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(content.as_bytes()).expect("gzip");
    let token = uuid::Uuid::new_v4().simple().to_string();
    s.bills.insert(token.clone(), gz.finish().expect("gzip"));
    let url = format!("{}/v3/billdownload/file?token={token}", s.base_url);
    answer(
        s,
        StatusCode::OK,
        json!({"hash_type": "SHA1", "hash_value": hash, "download_url": url}),
    )
}

/// The REFUND trade bill in the current layout (29 columns, 退款申请时间 and 退款成功时间 included;
/// 应结订单金额 and 订单金额 are 0.00 on refund rows).
pub fn refund_bill(rows: &[FakeRefund]) -> String {
    let mut out = String::from("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n");
    let mut refund = 0i64;
    for r in rows {
        let status = match r.status.as_str() {
            "ABNORMAL" => "CHANGE",
            "CLOSED" => "REFUNDCLOSE",
            other => other,
        };
        let at = |ms: i64| china(ms).format("%Y-%m-%d %H:%M:%S").to_string();
        let finished = r.finished_ms.map(at).unwrap_or_default();
        let values = [
            at(r.created_ms),
            "wxd678efh567hg6787".into(),
            MCHID.into(),
            "0".into(),
            String::new(),
            r.transaction_id.clone(),
            r.out_trade_no.clone(),
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            "JSAPI".into(),
            "REFUND".into(),
            "OTHERS".into(),
            "CNY".into(),
            "0.00".into(),
            "0.00".into(),
            at(r.created_ms),
            finished,
            r.refund_id.clone(),
            r.out_refund_no.clone(),
            fen(r.refund_fen),
            "0.00".into(),
            "ORIGINAL".into(),
            status.into(),
            "商品".into(),
            String::new(),
            "0.00000".into(),
            "0.60%".into(),
            "0.00".into(),
            fen(r.refund_fen),
            String::new(),
        ];
        out.push_str(
            &values
                .iter()
                .map(|v| format!("`{v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
        refund += r.refund_fen;
    }
    out.push_str("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n");
    let summary = [
        rows.len().to_string(),
        "0.00".into(),
        fen(refund),
        "0.00".into(),
        "0.00000".into(),
        "0.00".into(),
        fen(refund),
    ];
    out.push_str(
        &summary
            .iter()
            .map(|v| format!("`{v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push('\n');
    out
}
