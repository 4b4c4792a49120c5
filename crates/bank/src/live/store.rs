//! Storage of refunds sent to real channels and of their notifications. Updates are guarded by
//! the status and sequence read (`WHERE reference = ? AND status = ? AND sequence = ?`), so two
//! racing writers (a poll and a notification) never both move a refund.

use diesel::prelude::*;
use tuikuan_db::{db_err, is_unique_violation, AnyConnection};
use tuikuan_kernel::{Currency, Error, Money, Result};

use super::state::{LiveRefund, LiveStatus};
use crate::domain::Callback;

diesel::table! {
    channel_refunds (reference) {
        reference -> Text,
        channel -> Text,
        original_trade_id -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        fingerprint -> Text,
        status -> Text,
        channel_status -> Text,
        channel_ref -> Text,
        reason -> Text,
        attempts -> Integer,
        sequence -> Integer,
        submitted_at_ms -> BigInt,
        updated_at_ms -> BigInt,
        next_query_at_ms -> Nullable<BigInt>,
        completed_at_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    channel_notifications (id) {
        id -> Text,
        channel -> Text,
        notification_id -> Text,
        outcome -> Text,
        detail -> Text,
        received_at_ms -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Insertable)]
#[diesel(table_name = channel_refunds)]
struct Row {
    reference: String,
    channel: String,
    original_trade_id: String,
    amount_minor: i64,
    currency: String,
    fingerprint: String,
    status: String,
    channel_status: String,
    channel_ref: String,
    reason: String,
    attempts: i32,
    sequence: i32,
    submitted_at_ms: i64,
    updated_at_ms: i64,
    next_query_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
}

impl From<&LiveRefund> for Row {
    fn from(r: &LiveRefund) -> Row {
        Row {
            reference: r.reference.clone(),
            channel: r.channel.clone(),
            original_trade_id: r.original_trade_id.clone(),
            amount_minor: r.amount.to_minor(),
            currency: r.amount.currency().code().to_string(),
            fingerprint: r.fingerprint.clone(),
            status: r.status.as_str().to_string(),
            channel_status: r.channel_status.clone(),
            channel_ref: r.channel_ref.clone(),
            reason: r.reason.clone(),
            attempts: r.attempts,
            sequence: r.sequence,
            submitted_at_ms: r.submitted_at_ms,
            updated_at_ms: r.updated_at_ms,
            next_query_at_ms: r.next_query_at_ms,
            completed_at_ms: r.completed_at_ms,
        }
    }
}

impl TryFrom<Row> for LiveRefund {
    type Error = Error;
    fn try_from(r: Row) -> Result<LiveRefund> {
        let currency = Currency::parse(&r.currency, "currency")
            .map_err(|e| Error::internal(format!("stored channel refund: {}", e.message)))?;
        let status = LiveStatus::parse(&r.status).ok_or_else(|| {
            Error::internal(format!("stored channel refund status {:?}", r.status))
        })?;
        Ok(LiveRefund {
            reference: r.reference,
            channel: r.channel,
            original_trade_id: r.original_trade_id,
            amount: Money::from_minor(r.amount_minor, currency),
            fingerprint: r.fingerprint,
            status,
            channel_status: r.channel_status,
            channel_ref: r.channel_ref,
            reason: r.reason,
            attempts: r.attempts,
            sequence: r.sequence,
            submitted_at_ms: r.submitted_at_ms,
            updated_at_ms: r.updated_at_ms,
            next_query_at_ms: r.next_query_at_ms,
            completed_at_ms: r.completed_at_ms,
        })
    }
}

pub fn get(conn: &mut AnyConnection, reference: &str) -> Result<Option<LiveRefund>> {
    channel_refunds::table
        .find(reference)
        .first::<Row>(conn)
        .optional()
        .map_err(db_err)?
        .map(LiveRefund::try_from)
        .transpose()
}

/// Inserts a new refund; `false` when the reference exists already.
pub fn insert(conn: &mut AnyConnection, r: &LiveRefund) -> Result<bool> {
    match diesel::insert_into(channel_refunds::table)
        .values(Row::from(r))
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// Writes `r` if the stored row still has `status` and `sequence`, with the callbacks, in one
/// transaction. Returns whether this call won.
pub fn update_guarded(
    conn: &mut AnyConnection,
    r: &LiveRefund,
    status: LiveStatus,
    sequence: i32,
    callbacks: &[Callback],
) -> Result<bool> {
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        let n = diesel::update(
            channel_refunds::table
                .filter(channel_refunds::reference.eq(&r.reference))
                .filter(channel_refunds::status.eq(status.as_str()))
                .filter(channel_refunds::sequence.eq(sequence)),
        )
        .set((
            channel_refunds::status.eq(r.status.as_str()),
            channel_refunds::channel_status.eq(&r.channel_status),
            channel_refunds::channel_ref.eq(&r.channel_ref),
            channel_refunds::reason.eq(&r.reason),
            channel_refunds::attempts.eq(r.attempts),
            channel_refunds::sequence.eq(r.sequence),
            channel_refunds::updated_at_ms.eq(r.updated_at_ms),
            channel_refunds::next_query_at_ms.eq(r.next_query_at_ms),
            channel_refunds::completed_at_ms.eq(r.completed_at_ms),
        ))
        .execute(c)?;
        if n == 0 {
            return Ok(false);
        }
        for cb in callbacks {
            crate::store::insert_callback(c, cb)?;
        }
        Ok(true)
    })
    .map_err(db_err)
}

/// Open refunds whose next query is due.
pub fn due(conn: &mut AnyConnection, now_ms: i64, limit: i64) -> Result<Vec<LiveRefund>> {
    channel_refunds::table
        .filter(channel_refunds::next_query_at_ms.le(now_ms))
        .order((
            channel_refunds::next_query_at_ms.asc(),
            channel_refunds::reference.asc(),
        ))
        .limit(limit)
        .load::<Row>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(LiveRefund::try_from)
        .collect()
}

/// Refunds in reference order after `after` (the bank's books, for auditors).
pub fn list(conn: &mut AnyConnection, after: Option<&str>, limit: i64) -> Result<Vec<LiveRefund>> {
    let mut q = channel_refunds::table
        .order(channel_refunds::reference.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        q = q.filter(channel_refunds::reference.gt(a.to_string()));
    }
    q.load::<Row>(conn)
        .map_err(db_err)?
        .into_iter()
        .map(LiveRefund::try_from)
        .collect()
}

/// A notification's outcome, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub channel: String,
    pub notification_id: String,
    /// ACCEPTED, DUPLICATE or REFUSED.
    pub outcome: String,
    pub detail: String,
    pub received_at_ms: i64,
}

/// Records a notification. For ACCEPTED ones, `false` when the channel's id was accepted before
/// (a replay).
pub fn record_notification(conn: &mut AnyConnection, n: &NotificationRecord) -> Result<bool> {
    let key = if n.outcome == "ACCEPTED" {
        n.notification_id.clone()
    } else {
        format!("{}:{}", n.outcome, tuikuan_kernel::id::new_id("ntf"))
    };
    let row = (
        channel_notifications::id.eq(tuikuan_kernel::id::new_id("cn")),
        channel_notifications::channel.eq(&n.channel),
        channel_notifications::notification_id.eq(&key),
        channel_notifications::outcome.eq(&n.outcome),
        channel_notifications::detail.eq(&n.detail),
        channel_notifications::received_at_ms.eq(n.received_at_ms),
    );
    match diesel::insert_into(channel_notifications::table)
        .values(row)
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// Whether the channel's notification id was accepted before.
pub fn notification_accepted(conn: &mut AnyConnection, channel: &str, id: &str) -> Result<bool> {
    let n: i64 = channel_notifications::table
        .filter(channel_notifications::channel.eq(channel))
        .filter(channel_notifications::notification_id.eq(id))
        .count()
        .get_result(conn)
        .map_err(db_err)?;
    Ok(n > 0)
}

/// A channel's notifications in arrival order (for operators and tests).
pub fn notifications(conn: &mut AnyConnection, channel: &str) -> Result<Vec<NotificationRecord>> {
    let rows: Vec<(String, String, String, String, i64)> = channel_notifications::table
        .filter(channel_notifications::channel.eq(channel))
        .order((
            channel_notifications::received_at_ms.asc(),
            channel_notifications::id.asc(),
        ))
        .select((
            channel_notifications::channel,
            channel_notifications::notification_id,
            channel_notifications::outcome,
            channel_notifications::detail,
            channel_notifications::received_at_ms,
        ))
        .load(conn)
        .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(
            |(channel, notification_id, outcome, detail, received_at_ms)| NotificationRecord {
                channel,
                notification_id,
                outcome,
                detail,
                received_at_ms,
            },
        )
        .collect())
}
