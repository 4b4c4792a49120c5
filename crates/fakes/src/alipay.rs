//! A fake Alipay open platform gateway (`gateway.do`, key mode, RSA2): alipay.trade.refund,
//! alipay.trade.fastpay.refund.query, alipay.data.dataservice.bill.downloadurl.query and the bill
//! zip, and the trade notifications a refund triggers (`out_biz_no`, `refund_fee`, `gmt_refund`),
//! sent to the payment's `notify_url` as Alipay does.
//!
//! Requests are verified with the application public key over the sorted parameters without
//! `sign`; answers are `{"<method>_response": {...}, "sign": "..."}` signed over the node's text;
//! notifications are signed over their sorted parameters without `sign` and `sign_type`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tuikuan_kernel::SharedClock;

use crate::{china, keys, serve_loopback, AnswerFault, NotifyFault, Settle};

pub const APP_ID: &str = "2021000000000001";
pub const SELLER_ID: &str = "2088000000000001";

/// A refund as the fake's ledger has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRefund {
    pub out_request_no: String,
    pub out_trade_no: String,
    pub trade_no: String,
    pub refund_fen: i64,
    /// REFUND_SUCCESS or PROCESSING.
    pub status: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// How many times money left for this refund (must never exceed 1).
    pub paid: u32,
}

#[derive(Debug)]
struct Trade {
    total_fen: i64,
    trade_no: String,
    notify_url: String,
}

struct Inner {
    clock: SharedClock,
    base_url: String,
    trades: HashMap<String, Trade>,
    refunds: BTreeMap<String, FakeRefund>,
    answer_fault: AnswerFault,
    hang_after_acting: u32,
    settle: Settle,
    notify_fault: NotifyFault,
    outbox: Vec<(String, String)>,
    bills: HashMap<String, Vec<u8>>,
    refused_requests: u32,
    seq: u64,
}

/// The fake gateway. Dropping it stops the server.
pub struct FakeAlipay {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAlipay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeAlipay {
    pub async fn start(clock: SharedClock) -> FakeAlipay {
        let _ = keys();
        let inner = Arc::new(Mutex::new(Inner {
            clock,
            base_url: String::new(),
            trades: HashMap::new(),
            refunds: BTreeMap::new(),
            answer_fault: AnswerFault::None,
            hang_after_acting: 0,
            settle: Settle::AtOnce,
            notify_fault: NotifyFault::None,
            outbox: Vec::new(),
            bills: HashMap::new(),
            refused_requests: 0,
            seq: 0,
        }));
        let router = Router::new()
            .route("/gateway.do", post(gateway))
            .route("/bill/{token}", get(bill_file))
            .with_state(inner.clone());
        let (url, server) = serve_loopback(router).await;
        inner.lock().expect("fake state").base_url = url.clone();
        FakeAlipay { url, inner, server }
    }

    /// The gateway URL to configure.
    pub fn gateway_url(&self) -> String {
        format!("{}/gateway.do", self.url)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("fake state"))
    }

    /// A succeeded payment of `total_fen` under `out_trade_no`, whose notifications go to
    /// `notify_url` (refund notifications included, as Alipay sends them).
    pub fn pay(&self, out_trade_no: &str, total_fen: i64, notify_url: &str) {
        self.with(|s| {
            s.seq += 1;
            let trade_no = format!("2026{:024}", s.seq);
            s.trades.insert(
                out_trade_no.to_string(),
                Trade {
                    total_fen,
                    trade_no,
                    notify_url: notify_url.to_string(),
                },
            );
        })
    }

    pub fn set_answer_fault(&self, fault: AnswerFault) {
        self.with(|s| s.answer_fault = fault)
    }

    pub fn hang_after_acting(&self, n: u32) {
        self.with(|s| s.hang_after_acting = n)
    }

    pub fn set_settle(&self, settle: Settle) {
        self.with(|s| s.settle = settle)
    }

    pub fn set_notify_fault(&self, fault: NotifyFault) {
        self.with(|s| s.notify_fault = fault)
    }

    /// Pays every PROCESSING refund and queues its notification.
    pub fn settle(&self) -> usize {
        self.with(|s| {
            let now = s.clock.now_ms();
            let due: Vec<String> = s
                .refunds
                .values()
                .filter(|r| r.status == "PROCESSING")
                .map(|r| r.out_request_no.clone())
                .collect();
            for no in &due {
                let r = s.refunds.get_mut(no).expect("refund");
                r.status = "REFUND_SUCCESS".to_string();
                r.finished_ms = Some(now);
                r.paid += 1;
                let r = r.clone();
                queue_notification(s, &r);
            }
            due.len()
        })
    }

    /// Sends the queued notifications; the bank's HTTP statuses and bodies, in order.
    pub async fn deliver_notifications(&self) -> Vec<(u16, String)> {
        let outgoing = self.with(|s| std::mem::take(&mut s.outbox));
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        for (url, body) in outgoing {
            let answer = client
                .post(&url)
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .body(body)
                .send()
                .await;
            out.push(match answer {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            });
        }
        out
    }

    pub fn refund(&self, out_request_no: &str) -> Option<FakeRefund> {
        self.with(|s| s.refunds.get(out_request_no).cloned())
    }

    pub fn refunds(&self) -> Vec<FakeRefund> {
        self.with(|s| s.refunds.values().cloned().collect())
    }

    pub fn refused_requests(&self) -> u32 {
        self.with(|s| s.refused_requests)
    }
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

fn fen_of(yuan: &str) -> Option<i64> {
    let (whole, frac) = yuan.split_once('.').unwrap_or((yuan, ""));
    if frac.len() > 2
        || whole.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

/// `k=v&…` over the sorted non-empty parameters except those in `skip`.
fn signing_string(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signed answer text for `node`.
fn answer(s: &Inner, node: &str, content: Value) -> Response {
    answer_text(s, node, content, false)
}

/// The signed answer text for `node`; with `escape_slashes`, sent with every `/` escaped as `\/`
/// but signed over the text with `/`, as the gateway may send it (the SDKs' verification retries
/// with `\/` unescaped).
fn answer_text(s: &Inner, node: &str, content: Value, escape_slashes: bool) -> Response {
    let text = content.to_string();
    let sign = match s.answer_fault {
        AnswerFault::BadSignature => keys().alipay_platform.sign(format!("{text} ").as_bytes()),
        _ => keys().alipay_platform.sign(text.as_bytes()),
    };
    let text = if escape_slashes {
        text.replace('/', "\\/")
    } else {
        text
    };
    let body = format!("{{\"{node}\":{text},\"sign\":\"{sign}\"}}");
    (
        StatusCode::OK,
        [("content-type", "text/html;charset=utf-8")],
        body,
    )
        .into_response()
}

fn failure(
    s: &Inner,
    node: &str,
    code: &str,
    msg: &str,
    sub_code: &str,
    sub_msg: &str,
) -> Response {
    answer(
        s,
        node,
        json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}),
    )
}

async fn gateway(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let hang = {
        let mut s = inner.lock().expect("fake state");
        let mut params = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(&body) {
            params.insert(k.to_string(), v.to_string());
        }
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        let method = get("method");
        let node = format!("{}_response", method.replace('.', "_"));
        let signed = keys()
            .alipay_app
            .verify(signing_string(&params, &["sign"]).as_bytes(), &get("sign"));
        let fresh = chrono::NaiveDateTime::parse_from_str(&get("timestamp"), "%Y-%m-%d %H:%M:%S")
            .map(|t| {
                (t - china(s.clock.now_ms()).naive_local())
                    .num_seconds()
                    .abs()
                    <= 600
            })
            .unwrap_or(false);
        if !signed || get("app_id") != APP_ID || get("sign_type") != "RSA2" || !fresh {
            s.refused_requests += 1;
            return failure(
                &s,
                &node,
                "40002",
                "Invalid Arguments",
                "isv.invalid-signature",
                "验签出错",
            );
        }
        let biz: Value = serde_json::from_str(&get("biz_content")).unwrap_or(Value::Null);
        let field = |k: &str| {
            biz.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match method.as_str() {
            "alipay.trade.refund" => {
                let (response, acted) = refund(
                    &mut s,
                    &node,
                    &field("out_trade_no"),
                    &field("out_request_no"),
                    &field("refund_amount"),
                );
                if acted && s.hang_after_acting > 0 {
                    s.hang_after_acting -= 1;
                    true
                } else {
                    return response;
                }
            }
            "alipay.trade.fastpay.refund.query" => {
                return refund_query(&s, &node, &field("out_trade_no"), &field("out_request_no"));
            }
            "alipay.data.dataservice.bill.downloadurl.query" => {
                return bill_url(&mut s, &node, &field("bill_type"), &field("bill_date"));
            }
            _ => {
                return failure(
                    &s,
                    "error_response",
                    "40004",
                    "Business Failed",
                    "isv.invalid-method",
                    "不存在的方法名",
                )
            }
        }
    };
    debug_assert!(hang);
    std::future::pending::<Response>().await
}

fn refund(
    s: &mut Inner,
    node: &str,
    out_trade_no: &str,
    out_request_no: &str,
    amount: &str,
) -> (Response, bool) {
    let Some(refund_fen) = fen_of(amount).filter(|f| *f > 0) else {
        return (
            failure(
                s,
                node,
                "40004",
                "Business Failed",
                "ACQ.INVALID_PARAMETER",
                "参数无效",
            ),
            false,
        );
    };
    let Some(trade) = s.trades.get(out_trade_no) else {
        return (
            failure(
                s,
                node,
                "40004",
                "Business Failed",
                "ACQ.TRADE_NOT_EXIST",
                "交易不存在",
            ),
            false,
        );
    };
    let (total_fen, trade_no) = (trade.total_fen, trade.trade_no.clone());
    let refunded: i64 = s
        .refunds
        .values()
        .filter(|r| r.out_trade_no == out_trade_no)
        .map(|r| r.refund_fen)
        .sum();
    let pay_time = china(s.clock.now_ms())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let trade_no_answer = trade_no.clone();
    let base = move |fund_change: &str, refund_fee: i64| {
        json!({
            "code": "10000", "msg": "Success", "trade_no": trade_no_answer, "out_trade_no": out_trade_no,
            "buyer_logon_id": "159****5620", "fund_change": fund_change, "refund_fee": yuan(refund_fee),
            "gmt_refund_pay": pay_time,
            "buyer_user_id": "2088101117955611", "send_back_fee": yuan(refund_fee)
        })
    };
    if let Some(existing) = s.refunds.get(out_request_no) {
        if existing.out_trade_no == out_trade_no && existing.refund_fen == refund_fen {
            // The same out_request_no again: no second refund, fund_change=N.
            let v = base("N", refunded);
            return (answer(s, node, v), false);
        }
        return (
            failure(
                s,
                node,
                "40004",
                "Business Failed",
                "ACQ.DISCORDANT_REPEAT_REQUEST",
                "不一致的请求",
            ),
            false,
        );
    }
    if refunded + refund_fen > total_fen {
        return (
            failure(
                s,
                node,
                "40004",
                "Business Failed",
                "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                "退款金额超限",
            ),
            false,
        );
    }
    let now = s.clock.now_ms();
    let at_once = s.settle == Settle::AtOnce;
    let r = FakeRefund {
        out_request_no: out_request_no.to_string(),
        out_trade_no: out_trade_no.to_string(),
        trade_no,
        refund_fen,
        status: if at_once {
            "REFUND_SUCCESS"
        } else {
            "PROCESSING"
        }
        .to_string(),
        created_ms: now,
        finished_ms: at_once.then_some(now),
        paid: u32::from(at_once),
    };
    s.refunds.insert(out_request_no.to_string(), r.clone());
    if at_once {
        queue_notification(s, &r);
    }
    let v = base(if at_once { "Y" } else { "N" }, refunded + refund_fen);
    (answer(s, node, v), true)
}

fn refund_query(s: &Inner, node: &str, out_trade_no: &str, out_request_no: &str) -> Response {
    let Some(trade) = s.trades.get(out_trade_no) else {
        return failure(
            s,
            node,
            "40004",
            "Business Failed",
            "ACQ.TRADE_NOT_EXIST",
            "交易不存在",
        );
    };
    let mut v = json!({"code": "10000", "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": out_trade_no});
    if let Some(r) = s
        .refunds
        .get(out_request_no)
        .filter(|r| r.out_trade_no == out_trade_no)
    {
        v["out_request_no"] = json!(r.out_request_no);
        v["total_amount"] = json!(yuan(trade.total_fen));
        v["refund_amount"] = json!(yuan(r.refund_fen));
        if r.status == "REFUND_SUCCESS" {
            v["refund_status"] = json!("REFUND_SUCCESS");
        }
    }
    answer(s, node, v)
}

/// Queues the trade notification a refund triggers.
fn queue_notification(s: &mut Inner, r: &FakeRefund) {
    let Some(trade) = s.trades.get(&r.out_trade_no) else {
        return;
    };
    if trade.notify_url.is_empty() {
        return;
    }
    let refunded: i64 = s
        .refunds
        .values()
        .filter(|x| x.out_trade_no == r.out_trade_no && x.status == "REFUND_SUCCESS")
        .map(|x| x.refund_fen)
        .sum();
    let now = china(s.clock.now_ms())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut p = BTreeMap::new();
    for (k, v) in [
        ("notify_time", now.clone()),
        ("notify_type", "trade_status_sync".to_string()),
        ("notify_id", uuid::Uuid::new_v4().simple().to_string()),
        ("charset", "utf-8".to_string()),
        ("version", "1.0".to_string()),
        ("app_id", APP_ID.to_string()),
        ("seller_id", SELLER_ID.to_string()),
        ("trade_no", trade.trade_no.clone()),
        ("out_trade_no", r.out_trade_no.clone()),
        ("out_biz_no", r.out_request_no.clone()),
        (
            "trade_status",
            if refunded >= trade.total_fen {
                "TRADE_CLOSED"
            } else {
                "TRADE_SUCCESS"
            }
            .to_string(),
        ),
        ("total_amount", yuan(trade.total_fen)),
        ("refund_fee", yuan(refunded)),
        ("gmt_refund", format!("{now}.000")),
        ("sign_type", "RSA2".to_string()),
    ] {
        p.insert(k.to_string(), v);
    }
    let sign = keys()
        .alipay_platform
        .sign(signing_string(&p, &["sign", "sign_type"]).as_bytes());
    p.insert("sign".to_string(), sign);
    if s.notify_fault == NotifyFault::Tampered {
        p.insert("refund_fee".to_string(), yuan(refunded + 100));
    }
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p {
        form.append_pair(k, v);
    }
    let body = form.finish();
    let copies = if s.notify_fault == NotifyFault::Duplicate {
        2
    } else {
        1
    };
    for _ in 0..copies {
        s.outbox.push((trade.notify_url.clone(), body.clone()));
    }
}

fn bill_url(s: &mut Inner, node: &str, bill_type: &str, date: &str) -> Response {
    if bill_type != "trade" {
        return failure(
            s,
            node,
            "40004",
            "Business Failed",
            "isp.bill_type_invalid",
            "账单类型错误",
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
        return failure(
            s,
            node,
            "40004",
            "Business Failed",
            "isp.bill_not_exist",
            "账单不存在",
        );
    }
    let zip = bill_zip(date, &rows);
    let token = uuid::Uuid::new_v4().simple().to_string();
    s.bills.insert(token.clone(), zip);
    let url = format!("{}/bill/{token}", s.base_url);
    answer_text(
        s,
        node,
        json!({"code": "10000", "msg": "Success", "bill_download_url": url}),
        true,
    )
}

async fn bill_file(State(inner): State<Arc<Mutex<Inner>>>, Path(token): Path<String>) -> Response {
    let s = inner.lock().expect("fake state");
    match s.bills.get(&token) {
        Some(zip) => (
            StatusCode::OK,
            [("content-type", "application/zip")],
            zip.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such bill").into_response(),
    }
}

/// The 业务明细 CSV of a day's refunds, GBK with CRLF, as Alipay publishes it: refund rows with
/// negative 订单金额 and 商家实收, ids with a trailing tab, the footer totals.
pub fn business_detail(date: &str, rows: &[FakeRefund]) -> Vec<u8> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("bill date");
    let next = day.succ_opt().expect("next day");
    let mut lines = vec![
        "#支付宝业务明细查询".to_string(),
        format!("#账号：[{SELLER_ID}0156]"),
        format!(
            "#起始日期：[{}]   终止日期：[{}]",
            day.format("%Y年%m月%d日 00:00:00"),
            next.format("%Y年%m月%d日 00:00:00")
        ),
        "#-----------------------------------------业务明细列表----------------------------------------".to_string(),
        "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注".to_string(),
    ];
    let mut refunded = 0i64;
    for r in rows {
        let at = |ms: i64| china(ms).format("%Y-%m-%d %H:%M:%S").to_string();
        let minus = format!("-{}", yuan(r.refund_fen));
        refunded += r.refund_fen;
        let values = [
            format!("{}\t", r.trade_no),
            format!("{}\t", r.out_trade_no),
            "退款\t".into(),
            "商品".into(),
            at(r.created_ms),
            at(r.finished_ms.unwrap_or(r.created_ms)),
            "\t".into(),
            "\t".into(),
            "\t".into(),
            "\t".into(),
            "159****5620\t".into(),
            minus.clone(),
            minus,
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            "0.00".into(),
            String::new(),
            "0.00\t".into(),
            "0.00".into(),
            format!("{}\t", r.out_request_no),
            "0.00".into(),
            "0.00".into(),
            String::new(),
        ];
        lines.push(values.join(","));
    }
    lines.push("#-----------------------------------------业务明细列表结束------------------------------------".to_string());
    lines.push("#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元".to_string());
    lines.push(format!(
        "#退款合计：{}笔，商家实收退款共-{}元，商家优惠退款共0.00元",
        rows.len(),
        yuan(refunded)
    ));
    lines.push(format!(
        "#导出时间：[{} 09:00:00]",
        next.format("%Y年%m月%d日")
    ));
    let text = lines.join("\r\n") + "\r\n";
    encoding_rs::GBK.encode(&text).0.into_owned()
}

/// The bill zip: the 业务明细 and its 汇总, entry names in GBK without the zip's UTF-8 flag, as
/// Alipay publishes them.
pub fn bill_zip(date: &str, rows: &[FakeRefund]) -> Vec<u8> {
    let compact = date.replace('-', "");
    let detail = business_detail(date, rows);
    let summary = encoding_rs::GBK
        .encode(&format!(
            "#支付宝业务汇总查询\n门店编号,门店名称,交易订单总笔数,退款订单总笔数\n,,0,{}\n",
            rows.len()
        ))
        .0
        .into_owned();
    let names = [
        format!("{SELLER_ID}0156_{compact}_业务明细.csv"),
        format!("{SELLER_ID}0156_{compact}_业务明细(汇总).csv"),
    ];
    // The zip writer takes UTF-8 names (and flags them so); entries are written under ASCII
    // placeholders of the GBK names' length, whose bytes are then replaced by the GBK names.
    let gbk: Vec<Vec<u8>> = names
        .iter()
        .map(|n| encoding_rs::GBK.encode(n).0.into_owned())
        .collect();
    let placeholders: Vec<String> = gbk
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{i}{}", "~".repeat(g.len() - 1)))
        .collect();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in placeholders.iter().zip([detail, summary]) {
        w.start_file(name.as_str(), options).expect("zip entry");
        w.write_all(&content).expect("zip write");
    }
    let mut bytes = w.finish().expect("zip").into_inner();
    for (placeholder, name) in placeholders.iter().zip(&gbk) {
        let p = placeholder.as_bytes();
        let mut at = 0;
        let mut replaced = 0;
        while let Some(i) = bytes[at..].windows(p.len()).position(|w| w == p) {
            bytes[at + i..at + i + p.len()].copy_from_slice(name);
            at += i + p.len();
            replaced += 1;
        }
        assert_eq!(replaced, 2, "local header and central directory");
    }
    bytes
}
