//! The audit trail of every audited staff RPC, written by the guard ([`crate::guard::Guarded`])
//! around the handler, so that no staff RPC of any service can change anything unrecorded.
//!
//! For a call the guard authenticated whose action is audited (every change, and downloads of
//! files with card numbers; [`crate::domain::Action::is_audited`]), the recorder reads the unary
//! request, lets the handler run, and when the answer is OK writes one entry to the service's
//! trail: who (operator and roles), what (the action and the RPC), when, on what (the request's
//! id field), why (its `reason` field), before (what was asked: the request) → after (what the
//! service answered). Both sides are decoded with the protos' descriptors into JSON; secrets
//! (`password`, `secret`, keys, card numbers) are replaced by `<redacted>` and binary content by
//! its SHA-256 and length, so a downloaded spreadsheet's card numbers never reach the trail.
//! Handlers that know the state before the change (the refund center's controls) keep writing
//! their own, finer entries too.
//!
//! The entry is written after the handler committed; if writing it fails the call still answers
//! OK (the change happened) and the failure is logged at error level.

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, ReflectMessage};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::body::Body;

use crate::domain::{Action, AuditEntry};
use crate::guard::Staff;
use crate::staff::Desk;

/// Request fields that name what a staff action is about, in order of preference.
const SUBJECT_FIELDS: &[&str] = &[
    "refund_id",
    "proposal_id",
    "discrepancy_id",
    "batch_id",
    "run_id",
    "rule_id",
    "trade_id",
    "payout_id",
    "item_id",
    "merchant_id",
    "channel",
    "template_id",
    "name",
];

/// Field names whose values never go into the trail.
fn is_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "password",
        "secret",
        "api_key",
        "card_no",
        "card_number",
        "token",
        "private",
    ]
    .iter()
    .any(|s| f.contains(s))
}

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(tuikuan_proto::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The descriptor of the method at `/package.Service/Method`.
fn method(path: &str) -> Option<MethodDescriptor> {
    let (service, name) = path.trim_start_matches('/').split_once('/')?;
    pool()?
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

/// The message of a unary gRPC body (one length-prefixed, uncompressed frame).
fn frame(body: &[u8]) -> Option<&[u8]> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.get(5..5 + len)
}

/// The message as redacted JSON (`Value::Null` when it cannot be decoded).
fn to_json(desc: prost_reflect::MessageDescriptor, body: &[u8]) -> Value {
    let Some(bytes) = frame(body) else {
        return Value::Null;
    };
    let Ok(message) = DynamicMessage::decode(desc, bytes) else {
        return Value::Null;
    };
    let mut value = serde_json::to_value(&message).unwrap_or(Value::Null);
    redact(&mut value, &message);
    value
}

/// Replaces secrets by `<redacted>` and binary fields by their digest, recursively.
fn redact(value: &mut Value, message: &DynamicMessage) {
    let Value::Object(map) = value else { return };
    for field in message.descriptor().fields() {
        let key = field.json_name().to_string();
        let Some(v) = map.get_mut(&key) else { continue };
        if is_secret(field.name()) {
            *v = Value::String("<redacted>".into());
            continue;
        }
        match &*message.get_field(&field) {
            prost_reflect::Value::Bytes(b) => *v = Value::String(digest(b)),
            prost_reflect::Value::Message(inner) => redact(v, inner),
            prost_reflect::Value::List(items) => {
                if let Value::Array(values) = v {
                    for (jv, item) in values.iter_mut().zip(items) {
                        match item {
                            prost_reflect::Value::Message(inner) => redact(jv, inner),
                            prost_reflect::Value::Bytes(b) => *jv = Value::String(digest(b)),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{} ({} bytes)",
        hex::encode(Sha256::digest(bytes)),
        bytes.len()
    )
}

fn text_field(value: &Value, names: &[&str]) -> String {
    let Value::Object(map) = value else {
        return String::new();
    };
    for name in names {
        let camel = camel(name);
        let v = map.get(*name).or_else(|| map.get(&camel));
        if let Some(Value::String(s)) = v {
            if !s.is_empty() {
                return s.clone();
            }
        }
    }
    String::new()
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The action an entry records: the first audited action of the RPC the operator may take.
pub fn audited_action(staff: &Staff, actions: &[Action]) -> Option<Action> {
    actions
        .iter()
        .copied()
        .filter(|a| a.is_audited())
        .find(|a| staff.operator.authorize(*a).is_ok())
}

/// Runs `call` on `request`, and writes the audit entry for `action` when it answers OK.
pub async fn record<F, Fut, E>(
    desk: Desk,
    staff: Staff,
    action: Action,
    request: http::Request<Body>,
    call: F,
) -> Result<http::Response<Body>, E>
where
    F: FnOnce(http::Request<Body>) -> Fut,
    Fut: std::future::Future<Output = Result<http::Response<Body>, E>>,
{
    let (parts, body) = request.into_parts();
    let request_bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let status = tonic::Status::invalid_argument(format!("request body: {e}"));
            return Ok(status.into_http());
        }
    };
    let request = http::Request::from_parts(
        parts,
        Body::new(http_body_util::Full::new(request_bytes.clone())),
    );
    let response = call(request).await?;
    if failed(response.headers()) {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(e) => {
            let status = tonic::Status::internal(format!("response body: {e}"));
            return Ok(status.into_http());
        }
    };
    let trailers = collected.trailers().cloned();
    let response_bytes: Bytes = collected.to_bytes();
    let ok = trailers.as_ref().is_none_or(|t| !failed(t));
    if ok {
        write(&desk, &staff, action, &request_bytes, &response_bytes).await;
    }
    let body = http_body_util::Full::new(response_bytes)
        .with_trailers(async move { trailers.map(Ok::<_, std::convert::Infallible>) });
    Ok(http::Response::from_parts(parts, Body::new(body)))
}

/// Whether these headers (or trailers) carry a gRPC status other than OK.
fn failed(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() != b"0")
}

async fn write(desk: &Desk, staff: &Staff, action: Action, request: &[u8], response: &[u8]) {
    let (before, after) = match method(&staff.rpc) {
        Some(m) => (to_json(m.input(), request), to_json(m.output(), response)),
        None => (Value::Null, Value::Null),
    };
    let subject = text_field(&before, SUBJECT_FIELDS);
    let reason = text_field(&before, &["reason"]);
    let entry = AuditEntry::of(&staff.operator, action, &staff.rpc, &subject, desk.now_ms())
        .reason(&reason)
        .change(&before.to_string(), &after.to_string());
    if let Err(e) = desk.audit(entry).await {
        tracing::error!(rpc = %staff.rpc, operator = %staff.operator.name, code = %e.code,
            error = %e.message, "AUDIT ENTRY NOT WRITTEN for a completed staff action");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_card_files_never_reach_the_trail() {
        let m = method("/tuikuan.refund.v1.BatchService/DownloadBatch").expect("method");
        assert!(m.output().fields().count() > 0);
        assert!(is_secret("payer_card_no"));
        assert!(is_secret("password"));
        assert!(!is_secret("refund_id"));
        assert_eq!(camel("refund_id"), "refundId");
        let d = digest(b"6222020000000000000");
        assert!(d.starts_with("sha256:") && d.ends_with("(19 bytes)"), "{d}");
        assert_eq!(frame(&[0, 0, 0, 0, 2, 8, 1]), Some(&[8u8, 1][..]));
        assert_eq!(frame(&[1, 0, 0, 0, 0]), None);
    }
}
