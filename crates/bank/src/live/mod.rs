//! The bank subsystem's side of real payment channels: the books of what it asked each channel
//! (one row per bank reference id), the polling of what is still open, verified notifications,
//! and bills. Every change of a refund's status is enqueued, in the same transaction, as a
//! callback that the bank's tick delivers to the refund center (`RefundService.BankCallback`), as
//! the simulator's callbacks are: other services see no difference.
//!
//! # Invariants
//! - One row per reference; a repeat with the same content returns the stored answer without
//!   asking the channel again, unless the outcome is still unknown (PENDING), in which case the
//!   same reference is sent again (channels refund a reference once). Other content under the
//!   same reference is `IDEMPOTENCY_CONFLICT`.
//! - A refusal is reported only from a verified answer; a refusal answering a repeat is first
//!   confirmed by a query (a refund the channel made in an earlier, unanswered attempt must not be
//!   reported as refused, or the refund center would pay it again another way).
//! - Status changes follow [`state::step`]: monotone, and a channel's word that contradicts a
//!   final state, or names another amount or trade, moves nothing and is logged as an error.

pub mod budget;
pub mod notify;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use tuikuan_db::Db;
use tuikuan_kernel::id::new_id;
use tuikuan_kernel::{Error, ErrorCode, Result, SharedClock};

use crate::connector::{unverified, ChannelRefund, ChannelStatus, Connector, RefundRequest};
use crate::domain::{sha256_hex, Callback, ClearingFile, RefundSubmission, SubmitOutcome, TxKind};
use state::{mismatch, next_query_at, step, LiveRefund, LiveStatus, Step};

/// A configured real channel.
#[derive(Debug, Clone)]
pub struct LiveChannel {
    pub connector: Arc<dyn Connector>,
    /// Where the channel sends notifications about this channel's refunds.
    pub notify_url: String,
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    pub asked: u32,
    pub moved: u32,
    pub errors: u32,
}

/// Refunds polled per tick at most.
const POLL_BATCH: i64 = 500;

/// The real channels of a bank subsystem.
#[derive(Debug)]
pub struct LiveChannels {
    db: Db,
    clock: SharedClock,
    channels: BTreeMap<String, LiveChannel>,
    query_interval_ms: i64,
    clearing_dir: Option<PathBuf>,
    /// How many unverifiable notifications are still stored this minute.
    refusals: budget::RefusalBudget,
}

impl LiveChannels {
    pub fn new(
        db: Db,
        clock: SharedClock,
        channels: BTreeMap<String, LiveChannel>,
        query_interval_ms: i64,
        clearing_dir: Option<PathBuf>,
    ) -> LiveChannels {
        LiveChannels {
            db,
            clock,
            channels,
            query_interval_ms: query_interval_ms.max(1),
            clearing_dir,
            refusals: budget::RefusalBudget::default(),
        }
    }

    /// Whether `channel` is a real channel (else the simulator serves it).
    pub fn has(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    pub fn channel(&self, channel: &str) -> Option<&LiveChannel> {
        self.channels.get(channel)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    async fn get(&self, reference: &str) -> Result<Option<LiveRefund>> {
        let r = reference.to_string();
        self.db.run(move |c| store::get(c, &r)).await
    }

    /// Submits a refund to its channel (see the module's invariants).
    pub async fn submit_refund(&self, s: RefundSubmission) -> Result<SubmitOutcome> {
        let ch = self
            .channels
            .get(&s.channel)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::ChannelNotFound,
                    format!("channel {} is not a real channel", s.channel),
                )
            })?
            .clone();
        if let Err(why) = ch.connector.check_reference(&s.refund_id) {
            tracing::warn!(channel = %s.channel, reference = %s.refund_id, %why, "reference not acceptable to the channel");
            return Ok(SubmitOutcome {
                accepted: false,
                bank_ref: String::new(),
                reason: format!("INVALID_REFERENCE: {why}"),
            });
        }
        let now = self.clock.now_ms();
        let fresh = LiveRefund {
            reference: s.refund_id.clone(),
            channel: s.channel.clone(),
            original_trade_id: s.original_trade_id.clone(),
            amount: s.amount,
            fingerprint: s.fingerprint(),
            status: LiveStatus::Pending,
            channel_status: String::new(),
            channel_ref: String::new(),
            reason: String::new(),
            attempts: 0,
            sequence: 0,
            submitted_at_ms: now,
            updated_at_ms: now,
            next_query_at_ms: Some(next_query_at(now, now, self.query_interval_ms)),
            completed_at_ms: None,
        };
        let row = fresh.clone();
        self.db.run(move |c| store::insert(c, &row)).await?;
        let current = self
            .get(&fresh.reference)
            .await?
            .ok_or_else(|| Error::internal("channel refund vanished after insert"))?;
        if current.fingerprint != fresh.fingerprint {
            return Err(Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "refund_id: {} was submitted before with other content",
                    current.reference
                ),
            ));
        }
        if current.status != LiveStatus::Pending {
            return Ok(outcome_of(&current));
        }
        let current = self.count_attempt(current).await?;
        let request = request_of(&current);
        let word = match ch.connector.submit_refund(&request, &ch.notify_url).await {
            Ok(word) => word,
            Err(e) => {
                tracing::warn!(channel = %current.channel, reference = %current.reference, code = %e.code, error = %e.message, "channel submission without a usable answer; the outcome is unknown");
                return Err(e);
            }
        };
        let word = if word.status == ChannelStatus::Rejected && current.attempts > 1 {
            self.confirm_refusal(&ch, &request, word).await?
        } else {
            word
        };
        let after = self
            .apply(&current.reference, &word, "", "submission")
            .await?;
        Ok(outcome_of(&after))
    }

    /// Records one more submission of a PENDING refund.
    async fn count_attempt(&self, mut current: LiveRefund) -> Result<LiveRefund> {
        for _ in 0..5 {
            let mut next = current.clone();
            next.attempts += 1;
            next.updated_at_ms = self.clock.now_ms();
            let (status, sequence, row) = (current.status, current.sequence, next.clone());
            if self
                .db
                .run(move |c| store::update_guarded(c, &row, status, sequence, &[]))
                .await?
            {
                return Ok(next);
            }
            current = self
                .get(&current.reference)
                .await?
                .ok_or_else(|| Error::internal("channel refund vanished"))?;
        }
        Err(Error::unavailable(format!(
            "refund {} is being updated concurrently; retry",
            current.reference
        )))
    }

    /// A refusal answering a repeat: the channel must also have no refund under the reference.
    async fn confirm_refusal(
        &self,
        ch: &LiveChannel,
        request: &RefundRequest,
        refusal: ChannelRefund,
    ) -> Result<ChannelRefund> {
        match ch.connector.query_refund(request).await {
            Err(e) if e.code == ErrorCode::RefundNotFound => Ok(refusal),
            Ok(word) if word.status == ChannelStatus::Rejected => Ok(refusal),
            Ok(word) => {
                tracing::warn!(reference = %request.reference, status = word.status.as_str(), "the channel refused a repeat but has the refund: keeping its refund");
                Ok(word)
            }
            Err(e) => Err(Error::unavailable(format!(
                "cannot confirm that the channel has no refund {} ({}: {}); retry",
                request.reference, e.code, e.message
            ))),
        }
    }

    /// Applies a verified word (see [`state::step`]); returns the refund as it now stands.
    pub(crate) async fn apply(
        &self,
        reference: &str,
        word: &ChannelRefund,
        original_trade_id: &str,
        source: &str,
    ) -> Result<LiveRefund> {
        for _ in 0..5 {
            let current = self.get(reference).await?.ok_or_else(|| {
                Error::new(
                    ErrorCode::RefundNotFound,
                    format!("no channel refund {reference}"),
                )
            })?;
            if let Some(why) = mismatch(&current, word, original_trade_id) {
                tracing::error!(channel = %current.channel, %reference, %source, %why, "channel word refused");
                return Err(unverified(why));
            }
            let (to, callback) = match step(current.status, word.status) {
                Step::Unchanged => return Ok(current),
                Step::Contradiction(why) => {
                    tracing::error!(channel = %current.channel, %reference, %source, %why, "channel contradicts a final state; nothing changes");
                    return Err(unverified(why));
                }
                Step::Move { to, callback } => (to, callback),
            };
            let now = self.clock.now_ms();
            let mut next = current.clone();
            next.status = to;
            next.channel_status = word.channel_status.clone();
            if !word.channel_ref.is_empty() {
                next.channel_ref = word.channel_ref.clone();
            }
            if !word.reason.is_empty() {
                next.reason = word.reason.clone();
            }
            next.updated_at_ms = now;
            next.next_query_at_ms = to
                .is_open()
                .then(|| next_query_at(now, current.submitted_at_ms, self.query_interval_ms));
            if !to.is_open() {
                next.completed_at_ms = Some(now);
            }
            let callbacks: Vec<Callback> = callback
                .map(|status| {
                    next.sequence += 1;
                    Callback {
                        id: new_id("cb"),
                        tx_id: next.reference.clone(),
                        kind: TxKind::Refund,
                        idx: next.sequence,
                        sequence: next.sequence,
                        status,
                        reason: next.reason.clone(),
                        bank_ref: next.channel_ref.clone(),
                        delivered: false,
                        attempts: 0,
                        created_at_ms: now,
                    }
                })
                .into_iter()
                .collect();
            let (status, sequence, row) = (current.status, current.sequence, next.clone());
            if self
                .db
                .run(move |c| store::update_guarded(c, &row, status, sequence, &callbacks))
                .await?
            {
                tracing::info!(channel = %next.channel, %reference, %source, from = current.status.as_str(), to = to.as_str(), channel_status = %next.channel_status, "channel refund moved");
                return Ok(next);
            }
        }
        Err(Error::unavailable(format!(
            "refund {reference} is being updated concurrently; retry"
        )))
    }

    /// The bank's view of a refund sent to a channel, refreshed from the channel while open.
    /// `None` when no real channel has it.
    pub async fn query(&self, reference: &str) -> Result<Option<LiveRefund>> {
        let Some(current) = self.get(reference).await? else {
            return Ok(None);
        };
        if !current.status.is_open() {
            return Ok(Some(current));
        }
        let Some(ch) = self.channels.get(&current.channel) else {
            return Ok(Some(current));
        };
        match ch.connector.query_refund(&request_of(&current)).await {
            Ok(word) => match self.apply(reference, &word, "", "query").await {
                Ok(after) => Ok(Some(after)),
                Err(_) => Ok(Some(current)),
            },
            Err(e) => {
                tracing::info!(%reference, code = %e.code, error = %e.message, "channel query failed; answering from the books");
                Ok(Some(current))
            }
        }
    }

    /// Asks the channels about open refunds whose query is due.
    pub async fn poll(&self) -> Result<PollReport> {
        let now = self.clock.now_ms();
        let due = self.db.run(move |c| store::due(c, now, POLL_BATCH)).await?;
        let mut report = PollReport::default();
        for r in due {
            let Some(ch) = self.channels.get(&r.channel) else {
                continue;
            };
            report.asked += 1;
            match ch.connector.query_refund(&request_of(&r)).await {
                Ok(word) => match self.apply(&r.reference, &word, "", "poll").await {
                    Ok(after) if after.status != r.status => report.moved += 1,
                    Ok(_) => {}
                    Err(_) => report.errors += 1,
                },
                Err(e)
                    if e.code == ErrorCode::RefundNotFound && r.status == LiveStatus::Pending =>
                {
                    tracing::info!(reference = %r.reference, "the channel has no such refund yet; the refund center sends it again");
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(reference = %r.reference, code = %e.code, error = %e.message, "channel query failed");
                }
            }
            self.reschedule(&r.reference).await?;
        }
        Ok(report)
    }

    /// Sets the next query of an open refund after a poll.
    async fn reschedule(&self, reference: &str) -> Result<()> {
        let Some(current) = self.get(reference).await? else {
            return Ok(());
        };
        if !current.status.is_open() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut next = current.clone();
        next.next_query_at_ms = Some(next_query_at(
            now,
            current.submitted_at_ms,
            self.query_interval_ms,
        ));
        let (status, sequence) = (current.status, current.sequence);
        self.db
            .run(move |c| store::update_guarded(c, &next, status, sequence, &[]))
            .await
            .map(|_| ())
    }

    /// The channel's bill for `date`, downloaded and verified, archived in the clearing
    /// directory as `<channel>/<date>.<format>`.
    pub async fn clearing_file(&self, channel: &str, date: NaiveDate) -> Result<ClearingFile> {
        let ch = self.channels.get(channel).ok_or_else(|| {
            Error::new(
                ErrorCode::ChannelNotFound,
                format!("channel {channel} is not a real channel"),
            )
        })?;
        let bill = ch.connector.download_bill(date).await.inspect_err(|e| {
            tracing::warn!(%channel, %date, code = %e.code, error = %e.message, "bill download failed");
        })?;
        if let Some(dir) = &self.clearing_dir {
            crate::simulator::write_file_atomically(
                &dir.join(channel),
                &format!("{}.{}", date.format("%Y-%m-%d"), bill.format),
                &bill.content,
            )
            .await?;
        }
        tracing::info!(%channel, %date, format = %bill.format, bytes = bill.content.len(), "bill downloaded and verified");
        Ok(ClearingFile {
            channel: channel.to_string(),
            date,
            format: bill.format,
            sha256: sha256_hex(&bill.content),
            content: bill.content,
        })
    }

    /// The books in reference order after `after`.
    pub async fn list(&self, after: Option<String>, limit: i64) -> Result<Vec<LiveRefund>> {
        self.db
            .run(move |c| store::list(c, after.as_deref(), limit))
            .await
    }

    /// A channel's notifications in arrival order.
    pub async fn notifications(&self, channel: &str) -> Result<Vec<store::NotificationRecord>> {
        let ch = channel.to_string();
        self.db.run(move |c| store::notifications(c, &ch)).await
    }
}

fn request_of(r: &LiveRefund) -> RefundRequest {
    RefundRequest {
        reference: r.reference.clone(),
        original_trade_id: r.original_trade_id.clone(),
        amount: r.amount,
        reason: String::new(),
    }
}

fn outcome_of(r: &LiveRefund) -> SubmitOutcome {
    let rejected = r.status == LiveStatus::Rejected;
    SubmitOutcome {
        accepted: !rejected,
        bank_ref: r.channel_ref.clone(),
        reason: if rejected {
            r.reason.clone()
        } else {
            String::new()
        },
    }
}
