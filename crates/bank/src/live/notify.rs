//! The bank's notification listener: an HTTP server (its own port) where channels post their
//! asynchronous notifications, at `POST /notify/<CHANNEL>`.
//!
//! A notification is verified by its channel's connector (signature, timestamp, decryption),
//! checked against the books (the refund exists, same amount and trade), applied, and only then
//! acknowledged. Refused ones get the channel's failure answer (the channel sends again later);
//! replays (a notification id already accepted) are acknowledged and change nothing. Every
//! notification is logged and recorded with its outcome (ACCEPTED, DUPLICATE, REFUSED), except
//! unverifiable ones beyond a per-minute budget (`super::budget`), which are only logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::store::{self, NotificationRecord};
use super::LiveChannels;
use crate::connector::{bounded, InboundNotification, NotificationReply};

/// The largest notification body accepted, in bytes.
pub const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

/// The listener's routes.
pub fn router(live: Arc<LiveChannels>) -> Router {
    Router::new()
        .route("/notify/{channel}", post(receive))
        .layer(DefaultBodyLimit::max(MAX_NOTIFICATION_BYTES))
        .with_state(live)
}

/// Serves the listener until `shutdown` resolves.
pub async fn serve(
    live: Arc<LiveChannels>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(live))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn receive(
    State(live): State<Arc<LiveChannels>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let notification = InboundNotification {
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.to_vec(),
    };
    match live.receive_notification(&channel, notification).await {
        Some(reply) => reply_of(reply),
        None => (StatusCode::NOT_FOUND, "unknown channel").into_response(),
    }
}

fn reply_of(reply: NotificationReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", reply.content_type)], reply.body).into_response()
}

impl LiveChannels {
    /// Handles one notification for `channel`; `None` when it is not a real channel.
    pub async fn receive_notification(
        &self,
        channel: &str,
        n: InboundNotification,
    ) -> Option<NotificationReply> {
        let ch = self.channel(channel)?.clone();
        let connector = ch.connector;
        let record = |outcome: &str, id: &str, detail: String| NotificationRecord {
            channel: channel.to_string(),
            notification_id: id.to_string(),
            outcome: outcome.to_string(),
            detail: bounded(&detail, 300),
            received_at_ms: self.now_ms(),
        };
        let verified = match connector.verify_notification(&n) {
            Ok(v) => v,
            Err(e) => {
                if self.refusals.take(channel, self.now_ms()) {
                    tracing::warn!(%channel, code = %e.code, error = %e.message, "notification refused");
                    self.record(record("REFUSED", "", e.message)).await;
                } else {
                    tracing::warn!(%channel, code = %e.code, error = %e.message, "notification refused (not stored: over {} a minute)", super::budget::REFUSALS_STORED_PER_MINUTE);
                }
                return Some(connector.notification_reply(false));
            }
        };
        let (c, id) = (channel.to_string(), verified.id.clone());
        match self
            .db()
            .run(move |conn| store::notification_accepted(conn, &c, &id))
            .await
        {
            Ok(true) => {
                tracing::warn!(%channel, notification_id = %verified.id, "replayed notification refused: already accepted, nothing changes");
                self.record(record(
                    "DUPLICATE",
                    &verified.id,
                    "already accepted".to_string(),
                ))
                .await;
                return Some(connector.notification_reply(true));
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(%channel, code = %e.code, error = %e.message, "notification not processed");
                return Some(connector.notification_reply(false));
            }
        }
        let mut applied = Vec::new();
        for word in &verified.refunds {
            match self
                .apply(
                    &word.reference,
                    word,
                    &verified.original_trade_id,
                    "notification",
                )
                .await
            {
                Ok(after) => applied.push(format!("{} {}", word.reference, after.status.as_str())),
                // A refund tuikuan did not send (made on the channel's merchant site): verified,
                // acknowledged, and left to reconciliation, which reports it bank-only.
                Err(e) if e.code == tuikuan_kernel::ErrorCode::RefundNotFound => {
                    tracing::warn!(%channel, reference = %word.reference, "notification about a refund not in the books");
                    applied.push(format!("{} unknown", word.reference));
                }
                Err(e) => {
                    tracing::warn!(%channel, reference = %word.reference, code = %e.code, error = %e.message, "notification refused");
                    self.record(record("REFUSED", &verified.id, e.message))
                        .await;
                    return Some(connector.notification_reply(false));
                }
            }
        }
        let accepted = record("ACCEPTED", &verified.id, applied.join(", "));
        let db_record = accepted.clone();
        match self
            .db()
            .run(move |conn| store::record_notification(conn, &db_record))
            .await
        {
            Ok(true) => {
                tracing::info!(%channel, notification_id = %verified.id, refunds = %accepted.detail, "notification accepted");
            }
            Ok(false) => {
                tracing::warn!(%channel, notification_id = %verified.id, "replayed notification refused: accepted concurrently");
            }
            Err(e) => {
                tracing::error!(%channel, code = %e.code, error = %e.message, "notification not recorded");
                return Some(connector.notification_reply(false));
            }
        }
        Some(connector.notification_reply(true))
    }

    async fn record(&self, r: NotificationRecord) {
        if let Err(e) = self
            .db()
            .run(move |c| store::record_notification(c, &r))
            .await
        {
            tracing::error!(code = %e.code, error = %e.message, "notification outcome not recorded");
        }
    }
}
