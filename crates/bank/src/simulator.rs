//! The deterministic bank simulator: the [`BankConnector`] that tuikuan ships for development,
//! demos and tests.
//!
//! Everything it decides about a transaction comes from `sha256(seed, kind, id)`
//! ([`Decision::decide`]); everything it does happens at clock instants derived from the submission
//! time and that decision (a transaction completes *at its due time*, whenever the tick that
//! notices it runs). So the same seed, the same submissions and the same clock steps give the same
//! outcomes and the same clearing files, byte for byte.
//!
//! [`Simulator::tick`] is the bank's work loop: complete what is due, return paid payouts whose
//! return is due, then deliver undelivered callbacks in creation order to the refund center
//! (`RefundService.BankCallback`) or the payout center (`PayoutService.BankCallback`).
//!
//! File batches (file-upload and offline refunds): every row becomes a transaction of kind FILE
//! (id = the row id), decided like a refund (seeded outcome, failure reasons such as
//! `CARD_CANCELLED: card cancelled` or `ACCOUNT_CLOSED: account closed`) and completed after the
//! configured delay (`delay_min_secs..=delay_max_secs`). A real bank answers a file by the next
//! working day; set the delay range to about a day to simulate that. FILE rows get no callbacks:
//! the bank's answer is its clearing file.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use tonic::transport::Channel;
use tuikuan_db::Db;
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::{Error, ErrorCode, Result, SharedClock};
use tuikuan_proto::payout::v1 as payout_pb;
use tuikuan_proto::payout::v1::payout_service_client::PayoutServiceClient;
use tuikuan_proto::refund::v1 as refund_pb;
use tuikuan_proto::refund::v1::refund_service_client::RefundServiceClient;
use tuikuan_proto::status::peer_err;

use tuikuan_kernel::card::mask_card;

use crate::domain::{
    completion_callbacks, sha256_hex, validate_channel, BankConnector, BankTx, Callback,
    CallbackStatus, ClearingFile, ClearingRow, Decision, FileBatchOutcome, FileBatchSubmission,
    PayoutSubmission, RefundSubmission, SimParams, SubmitOutcome, TxKind, TxStatus,
    REASON_RETURNED, SEQ_PROCESSING, SEQ_RETURNED,
};
use crate::layouts::{render, Layout};
use crate::store::{self, BatchInserted, Inserted};

mod statement;
pub use statement::statement_rows;

/// Transactions completed per batch in a tick.
const BATCH: i64 = 500;
/// Upper bound on batches per tick (so one tick ends even under a flood).
const MAX_BATCHES: usize = 200;
/// A callback is given up after this many failed deliveries (it stays undelivered in the table).
pub const MAX_CALLBACK_ATTEMPTS: i32 = 100;
/// Callbacks delivered per tick at most.
const MAX_CALLBACKS_PER_TICK: i64 = 5_000;

/// Per-transaction callback enqueue numbers: processing at submit, completion ones, the return.
const IDX_PROCESSING: i32 = 1;
const IDX_COMPLETION: i32 = 10;
const IDX_RETURN: i32 = 20;

/// A submission on its way into the books (the card number is not among it).
struct Submission {
    kind: TxKind,
    id: String,
    channel: String,
    original_trade_id: String,
    refund_id: String,
    amount: tuikuan_kernel::Money,
    fingerprint: String,
    /// The bank's synchronous check: `Some(reason)` refuses.
    check: Option<String>,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Transactions completed (SUCCEEDED or FAILED).
    pub completed: u32,
    /// Paid payouts returned.
    pub returned: u32,
    pub callbacks_sent: u32,
    pub callbacks_failed: u32,
}

/// The simulator. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Simulator {
    db: Db,
    clock: SharedClock,
    params: SimParams,
    clearing_dir: Option<PathBuf>,
    /// channel → the layout of its clearing files (csv when absent).
    layouts: HashMap<String, Layout>,
    refund_client: Option<RefundServiceClient<Channel>>,
    payout_client: Option<PayoutServiceClient<Channel>>,
    /// Ticks (and clearing-file builds, which complete due work first) run one at a time, so a
    /// callback is never delivered twice by two racing ticks of this process.
    tick_lock: tokio::sync::Mutex<()>,
}

impl Simulator {
    /// The simulator's database (the bank subsystem's staff desk shares it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A simulator over a migrated database. Callback addresses are optional: without one, that
    /// kind's callbacks wait undelivered.
    pub fn new(
        db: Db,
        clock: SharedClock,
        params: SimParams,
        refund_callback_addr: Option<&str>,
        payout_callback_addr: Option<&str>,
        clearing_dir: Option<PathBuf>,
        transport: &tuikuan_proto::tls::Transport,
    ) -> Result<Simulator> {
        use tuikuan_proto::tls::Principal;
        params.validate()?;
        let refund_client = refund_callback_addr
            .map(|a| {
                transport
                    .channel(Principal::Refund, a)
                    .map(RefundServiceClient::new)
            })
            .transpose()?;
        let payout_client = payout_callback_addr
            .map(|a| {
                transport
                    .channel(Principal::Payout, a)
                    .map(PayoutServiceClient::new)
            })
            .transpose()?;
        Ok(Simulator {
            db,
            clock,
            params,
            clearing_dir,
            layouts: HashMap::new(),
            refund_client,
            payout_client,
            tick_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn params(&self) -> &SimParams {
        &self.params
    }

    /// Writes the clearing files of these channels in their banks' layouts.
    pub fn with_layouts(mut self, layouts: HashMap<String, Layout>) -> Simulator {
        self.layouts = layouts;
        self
    }

    /// Stores a new submission or answers a repeat; `check` is the bank's own synchronous check.
    async fn submit(&self, s: Submission) -> Result<SubmitOutcome> {
        let Submission {
            kind,
            id,
            channel,
            original_trade_id,
            refund_id,
            amount,
            fingerprint,
            check,
        } = s;
        if let Some(existing) = self.get(&id).await? {
            return same_request(existing, kind, &fingerprint);
        }
        let decision = Decision::decide(&self.params, kind, &id, &amount);
        let now = self.clock.now_ms();
        let reject = check.or(decision.sync_reject.clone());
        let (status, reason, due_at_ms) = match reject {
            Some(r) => (TxStatus::Rejected, r, now),
            None => (
                TxStatus::Accepted,
                String::new(),
                now.saturating_add(secs_to_ms(decision.delay_secs)),
            ),
        };
        let tx = BankTx {
            id: id.clone(),
            kind,
            channel,
            bank_ref: decision.bank_ref.clone(),
            original_trade_id,
            refund_id,
            amount,
            status,
            reason,
            fingerprint: fingerprint.clone(),
            submitted_at_ms: now,
            due_at_ms,
            completed_at_ms: None,
            return_due_at_ms: None,
            returned_at_ms: None,
            batch_id: String::new(),
        };
        let first = if kind == TxKind::Refund && status == TxStatus::Accepted {
            vec![store::new_callback(
                &tx,
                IDX_PROCESSING,
                SEQ_PROCESSING,
                CallbackStatus::Processing,
                "",
                now,
            )]
        } else {
            Vec::new()
        };
        let stored = tx.clone();
        match self
            .db
            .run(move |c| store::insert_tx(c, &stored, &first))
            .await?
        {
            Inserted::New => {
                tracing::info!(
                    id = %tx.id,
                    kind = tx.kind.as_str(),
                    status = tx.status.as_str(),
                    bank_ref = %tx.bank_ref,
                    due_at_ms = tx.due_at_ms,
                    "bank took a submission"
                );
                Ok(tx.outcome())
            }
            Inserted::Exists => {
                let existing = self.get(&id).await?.ok_or_else(|| {
                    Error::internal("transaction vanished after a duplicate insert")
                })?;
                same_request(existing, kind, &fingerprint)
            }
        }
    }

    async fn get(&self, id: &str) -> Result<Option<BankTx>> {
        let id = id.to_string();
        self.db.run(move |c| store::get_tx(c, &id)).await
    }

    /// The bank's books in id order (for auditors): up to `limit` transactions after `after`.
    pub async fn list(
        &self,
        kind: Option<TxKind>,
        after: Option<String>,
        limit: i64,
    ) -> Result<Vec<BankTx>> {
        self.db
            .run(move |c| store::list_txs(c, kind, after.as_deref(), limit))
            .await
    }

    /// Every callback of one transaction, in creation order.
    pub async fn callbacks_of(&self, tx_id: &str) -> Result<Vec<Callback>> {
        let id = tx_id.to_string();
        self.db.run(move |c| store::callbacks_of(c, &id)).await
    }

    /// The bank's work loop, once: completes due transactions, returns due payouts, delivers
    /// callbacks. Also the `Tick` admin RPC.
    pub async fn tick(&self) -> Result<TickReport> {
        let _guard = self.tick_lock.lock().await;
        let now = self.clock.now_ms();
        let completed = self.complete_due(now).await?;
        let returned = self.return_due(now).await?;
        let (callbacks_sent, callbacks_failed) = self.deliver().await?;
        Ok(TickReport {
            completed,
            returned,
            callbacks_sent,
            callbacks_failed,
        })
    }

    /// Completes every ACCEPTED transaction due at or before `now_ms`, at its due time.
    async fn complete_due(&self, now_ms: i64) -> Result<u32> {
        let mut completed = 0u32;
        for _ in 0..MAX_BATCHES {
            let due = self
                .db
                .run(move |c| store::due_accepted(c, now_ms, BATCH))
                .await?;
            if due.is_empty() {
                break;
            }
            for tx in due {
                if self.complete_one(tx).await? {
                    completed += 1;
                }
            }
        }
        Ok(completed)
    }

    async fn complete_one(&self, mut tx: BankTx) -> Result<bool> {
        let decision = Decision::decide(&self.params, tx.kind, &tx.id, &tx.amount);
        // A FILE row that failed the bank's own check at submission carries its reason already.
        let (to, reason) = match (&decision.fail_reason, tx.reason.is_empty()) {
            (_, false) => (TxStatus::Failed, tx.reason.clone()),
            (Some(r), true) => (TxStatus::Failed, r.clone()),
            (None, true) => (TxStatus::Succeeded, String::new()),
        };
        tx.status = tx.status.transition(to, tx.kind)?;
        tx.reason = reason.clone();
        // Completed at its due time, not at the tick's: files do not depend on when ticks run.
        tx.completed_at_ms = Some(tx.due_at_ms);
        tx.return_due_at_ms = match (to, decision.return_after_secs) {
            (TxStatus::Succeeded, Some(s)) => Some(tx.due_at_ms.saturating_add(secs_to_ms(s))),
            _ => None,
        };
        // No callbacks for FILE rows: the bank's answer is its clearing file.
        let cbs: Vec<Callback> = if tx.kind == TxKind::File {
            Vec::new()
        } else {
            completion_callbacks(to == TxStatus::Succeeded, &reason, &decision)
                .into_iter()
                .enumerate()
                .map(|(i, (seq, status, reason))| {
                    store::new_callback(
                        &tx,
                        IDX_COMPLETION + i as i32,
                        seq,
                        status,
                        &reason,
                        tx.due_at_ms,
                    )
                })
                .collect()
        };
        let stored = tx.clone();
        let won = self
            .db
            .run(move |c| store::complete_tx(c, &stored, &cbs))
            .await?;
        if won {
            tracing::info!(
                id = %tx.id,
                kind = tx.kind.as_str(),
                status = tx.status.as_str(),
                reason = %tx.reason,
                "bank completed a transaction"
            );
        }
        Ok(won)
    }

    /// Returns paid payouts whose return is due (退票), with a sequence-3 callback.
    async fn return_due(&self, now_ms: i64) -> Result<u32> {
        let mut returned = 0u32;
        for _ in 0..MAX_BATCHES {
            let due = self
                .db
                .run(move |c| store::due_returns(c, now_ms, BATCH))
                .await?;
            if due.is_empty() {
                break;
            }
            for mut tx in due {
                let Some(at) = tx.return_due_at_ms else {
                    continue;
                };
                tx.status = tx.status.transition(TxStatus::Returned, tx.kind)?;
                tx.reason = REASON_RETURNED.to_string();
                tx.returned_at_ms = Some(at);
                let cb = store::new_callback(
                    &tx,
                    IDX_RETURN,
                    SEQ_RETURNED,
                    CallbackStatus::Returned,
                    REASON_RETURNED,
                    at,
                );
                let stored = tx.clone();
                if self
                    .db
                    .run(move |c| store::return_tx(c, &stored, &cb))
                    .await?
                {
                    tracing::info!(id = %tx.id, "bank returned a paid payout");
                    returned += 1;
                }
            }
        }
        Ok(returned)
    }

    /// Delivers undelivered callbacks in creation order. A failed delivery stays undelivered and is
    /// retried next tick; after one failure, the rest for that receiver wait for the next tick too
    /// (so their order is kept and a dead receiver costs one timeout per tick).
    async fn deliver(&self) -> Result<(u32, u32)> {
        let pending = self
            .db
            .run(|c| store::pending_callbacks(c, MAX_CALLBACK_ATTEMPTS, MAX_CALLBACKS_PER_TICK))
            .await?;
        let (mut sent, mut failed) = (0u32, 0u32);
        let (mut refund_down, mut payout_down) = (false, false);
        for cb in pending {
            let result = match cb.kind {
                TxKind::Refund => {
                    let Some(client) = self.refund_client.clone().filter(|_| !refund_down) else {
                        continue;
                    };
                    deliver_refund(client, &cb).await
                }
                TxKind::Payout => {
                    let Some(client) = self.payout_client.clone().filter(|_| !payout_down) else {
                        continue;
                    };
                    deliver_payout(client, &cb).await
                }
                // FILE rows have no callbacks.
                TxKind::File => continue,
            };
            let id = cb.id.clone();
            match result {
                Ok(()) => {
                    self.db.run(move |c| store::mark_delivered(c, &id)).await?;
                    sent += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        callback = %cb.id,
                        code = %e.code,
                        error = %e.message,
                        "callback delivery failed; retried next tick"
                    );
                    self.db
                        .run(move |c| store::mark_attempt_failed(c, &id))
                        .await?;
                    failed += 1;
                    match cb.kind {
                        TxKind::Refund => refund_down = true,
                        TxKind::Payout => payout_down = true,
                        TxKind::File => {}
                    }
                }
            }
        }
        Ok((sent, failed))
    }

    /// Checks `channel`, completes the work due now (so a file of `date` does not depend on
    /// whether a tick ran) and answers the day's bounds `[start_ms, end_ms)` (UTC+8).
    async fn settled_day(&self, channel: &str, date: NaiveDate) -> Result<(i64, i64)> {
        validate_channel(channel)?;
        {
            let _guard = self.tick_lock.lock().await;
            self.complete_due(self.clock.now_ms()).await?;
        }
        let start = start_of_business_date(date).timestamp_millis();
        let end = date
            .succ_opt()
            .map(|d| start_of_business_date(d).timestamp_millis())
            .ok_or_else(|| Error::field("date", "out of range"))?;
        Ok((start, end))
    }

    /// Builds the clearing file of `channel` for `date` (completing due work first, so the file
    /// does not depend on whether a tick ran) and, if configured, writes it to
    /// `<clearing_dir>/<channel>/<date>.csv`.
    pub async fn build_clearing_file(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<ClearingFile> {
        let (start, end) = self.settled_day(channel, date).await?;
        let ch = channel.to_string();
        let txs = self
            .db
            .run(move |c| store::completed_between(c, &ch, start, end))
            .await?;
        let rows: Vec<ClearingRow> = txs.iter().filter_map(ClearingRow::from_tx).collect();
        let layout = self.layouts.get(channel).copied().unwrap_or_default();
        let content = render(layout, &rows, date)?;
        let file = ClearingFile {
            channel: channel.to_string(),
            date,
            format: layout.format_name().to_string(),
            sha256: sha256_hex(&content),
            content,
        };
        if let Some(dir) = &self.clearing_dir {
            write_file_atomically(
                &dir.join(channel),
                &format!("{}.{}", date.format("%Y-%m-%d"), layout.extension()),
                &file.content,
            )
            .await?;
        }
        Ok(file)
    }
}

pub(crate) async fn write_file_atomically(
    dir: &std::path::Path,
    name: &str,
    content: &[u8],
) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::internal(format!("clearing file {what}: {e}"));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io("directory", e))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, content)
        .await
        .map_err(|e| io("write", e))?;
    tokio::fs::rename(&tmp, dir.join(name))
        .await
        .map_err(|e| io("rename", e))
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn same_request(existing: BankTx, kind: TxKind, fingerprint: &str) -> Result<SubmitOutcome> {
    if existing.kind != kind || existing.fingerprint != fingerprint {
        let field = match kind {
            TxKind::Refund => "refund_id",
            TxKind::Payout => "payout_id",
            TxKind::File => "row_id",
        };
        return Err(Error::new(
            ErrorCode::IdempotencyConflict,
            format!(
                "{field}: {} was submitted before with other content",
                existing.id
            ),
        ));
    }
    Ok(existing.outcome())
}

async fn deliver_refund(mut client: RefundServiceClient<Channel>, cb: &Callback) -> Result<()> {
    let status = match cb.status {
        CallbackStatus::Processing => refund_pb::BankStatus::BankProcessing,
        CallbackStatus::Succeeded => refund_pb::BankStatus::BankSucceeded,
        // Refunds are never returned; report it as a failure should it ever happen.
        CallbackStatus::Failed | CallbackStatus::Returned => refund_pb::BankStatus::BankFailed,
    };
    client
        .bank_callback(refund_pb::BankCallbackRequest {
            refund_id: cb.tx_id.clone(),
            bank_ref: cb.bank_ref.clone(),
            status: status as i32,
            reason: cb.reason.clone(),
            sequence: u64::try_from(cb.sequence).unwrap_or(0),
        })
        .await
        .map_err(peer_err)?;
    Ok(())
}

async fn deliver_payout(mut client: PayoutServiceClient<Channel>, cb: &Callback) -> Result<()> {
    let status = match cb.status {
        CallbackStatus::Processing => payout_pb::PayoutStatus::Sent,
        CallbackStatus::Succeeded => payout_pb::PayoutStatus::Paid,
        CallbackStatus::Failed => payout_pb::PayoutStatus::Failed,
        CallbackStatus::Returned => payout_pb::PayoutStatus::Returned,
    };
    client
        .bank_callback(payout_pb::PayoutCallbackRequest {
            payout_id: cb.tx_id.clone(),
            bank_ref: cb.bank_ref.clone(),
            status: status as i32,
            reason: cb.reason.clone(),
            sequence: u64::try_from(cb.sequence).unwrap_or(0),
        })
        .await
        .map_err(peer_err)?;
    Ok(())
}

impl BankConnector for Simulator {
    async fn submit_refund(&self, s: RefundSubmission) -> Result<SubmitOutcome> {
        let fp = s.fingerprint();
        self.submit(Submission {
            kind: TxKind::Refund,
            refund_id: s.refund_id.clone(),
            id: s.refund_id,
            channel: s.channel,
            original_trade_id: s.original_trade_id,
            amount: s.amount,
            fingerprint: fp,
            check: None,
        })
        .await
    }

    async fn submit_payout(&self, s: PayoutSubmission) -> Result<SubmitOutcome> {
        let fp = s.fingerprint();
        let check = s.bank_check();
        if let Some(reason) = &check {
            tracing::info!(payout_id = %s.payout_id, card = %mask_card(&s.card_no), %reason, "bank refuses the payout");
        }
        self.submit(Submission {
            kind: TxKind::Payout,
            id: s.payout_id,
            channel: s.channel,
            original_trade_id: String::new(),
            refund_id: s.refund_id,
            amount: s.amount,
            fingerprint: fp,
            check,
        })
        .await
    }

    async fn query(&self, kind: TxKind, id: &str) -> Result<BankTx> {
        let not_found = || match kind {
            TxKind::Refund => Error::new(
                ErrorCode::RefundNotFound,
                format!("refund {id} is unknown to the bank"),
            ),
            TxKind::Payout => Error::new(
                ErrorCode::PayoutNotFound,
                format!("payout {id} is unknown to the bank"),
            ),
            TxKind::File => Error::new(
                ErrorCode::NotFound,
                format!("file row {id} is unknown to the bank"),
            ),
        };
        match self.get(id).await? {
            Some(tx) if tx.kind == kind => Ok(tx),
            _ => Err(not_found()),
        }
    }

    async fn submit_file_batch(&self, batch: FileBatchSubmission) -> Result<FileBatchOutcome> {
        let fingerprint = batch.fingerprint();
        let conflict = || {
            Error::new(
                ErrorCode::IdempotencyConflict,
                format!(
                    "batch_id: {} was submitted before with other rows",
                    batch.batch_id
                ),
            )
        };
        // A lost race (another submission took the id, or one of the row ids) re-reads.
        for _ in 0..3 {
            let id = batch.batch_id.clone();
            if let Some(stored) = self.db.run(move |c| store::get_batch(c, &id)).await? {
                if stored.fingerprint != fingerprint {
                    return Err(conflict());
                }
                return Ok(stored.outcome);
            }
            let now = self.clock.now_ms();
            let txs: Vec<BankTx> = batch
                .rows
                .iter()
                .map(|row| {
                    let decision =
                        Decision::decide(&self.params, TxKind::File, &row.row_id, &row.amount);
                    BankTx {
                        id: row.row_id.clone(),
                        kind: TxKind::File,
                        channel: batch.channel.clone(),
                        bank_ref: decision.bank_ref,
                        original_trade_id: row.refund_id.clone(),
                        refund_id: row.refund_id.clone(),
                        batch_id: batch.batch_id.clone(),
                        amount: row.amount,
                        status: TxStatus::Accepted,
                        // Decided now, reported when the row completes.
                        reason: row.bank_check().unwrap_or_default(),
                        fingerprint: row.fingerprint(&batch.channel),
                        submitted_at_ms: now,
                        due_at_ms: now.saturating_add(secs_to_ms(decision.delay_secs)),
                        completed_at_ms: None,
                        return_due_at_ms: None,
                        returned_at_ms: None,
                    }
                })
                .collect();
            let outcome = FileBatchOutcome {
                accepted: u32::try_from(txs.len()).unwrap_or(u32::MAX),
                rejected: 0,
            };
            let (b, fp) = (batch.clone(), fingerprint.clone());
            let inserted = self
                .db
                .run(move |c| {
                    store::insert_batch(
                        c,
                        &b.batch_id,
                        &b.channel,
                        b.method.as_str(),
                        &fp,
                        outcome,
                        &txs,
                        now,
                    )
                })
                .await?;
            match inserted {
                BatchInserted::New => {
                    tracing::info!(
                        batch_id = %batch.batch_id,
                        channel = %batch.channel,
                        method = batch.method.as_str(),
                        rows = batch.rows.len(),
                        "bank took a file batch"
                    );
                    return Ok(outcome);
                }
                BatchInserted::RowConflict(row_id) => {
                    return Err(Error::new(
                        ErrorCode::IdempotencyConflict,
                        format!("row_id: {row_id} was submitted before with other content"),
                    ))
                }
                BatchInserted::Exists => continue,
            }
        }
        Err(Error::unavailable(format!(
            "batch {} is being submitted concurrently; retry",
            batch.batch_id
        )))
    }

    async fn clearing_file(&self, channel: &str, date: NaiveDate) -> Result<ClearingFile> {
        self.build_clearing_file(channel, date).await
    }
}
