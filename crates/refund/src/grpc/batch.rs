//! File-upload and offline batches: generation on working days, the .xlsx in the bank's template,
//! marking (rows become SUBMITTED, the bank receives the rows), failed rows (fallback), and the
//! `BatchService` handlers.
//!
//! Batches are generated per bank, channel, method and currency (one channel per batch: the bank's
//! clearing file and reconciliation are per channel), numbered `B{yyyymmdd}-{BANK}-{METHOD}-{nn}`
//! per bank, method and date, and never change once generated: refunds accepted later go into a
//! new batch. The file's bytes are stored with the batch (hex) and verified against the stored
//! SHA-256 on download.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};
use tuikuan_kernel::clock::start_of_business_date;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use pb::batch_service_server::BatchService;

use super::{list_limit, method_to_wire, transition_in, Moved, RefundCenter};
use crate::domain::batch::{
    batch_id, render, row_fails_order, row_id, AmountFormat, BankTemplate, Batch, BatchRow,
    BatchStatus, RowStatus, TemplateColumn, TemplateField,
};
use crate::domain::{expected_for_batch, validate_text, Outcome, RefundOrder};
use crate::sheet;
use crate::store;

/// The longest id the bank accepts (row ids included).
const MAX_ID_LEN: usize = 64;

/// A row that failed, as staff or the bank's result file report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRow {
    pub row_id: String,
    pub reason: String,
}

impl RefundCenter {
    /// Generates the batches of `date` (a business date): on a working day, every file-upload
    /// and offline order waiting for a batch whose attempt started before the end of `date` joins
    /// a new numbered batch of its bank, channel, method and currency. Returns every batch of the
    /// date and whether it is a working day (on other days nothing is generated).
    pub async fn generate_batches(&self, date: NaiveDate) -> Result<(Vec<Batch>, bool)> {
        if !self.calendar.is_working_day(date) {
            tracing::info!(%date, "not a working day; no batches");
            return Ok((Vec::new(), false));
        }
        let next = date
            .succ_opt()
            .ok_or_else(|| Error::field("date", "is out of range"))?;
        let before_ms = start_of_business_date(next).timestamp_millis();
        let now_ms = self.clock.now_ms();
        let calendar = self.calendar.clone();
        let vault = self.vault.clone();
        let created = self
            .db
            .transaction(move |conn| {
                let candidates = store::batch_candidates(conn, &vault, before_ms)?;
                let mut groups: BTreeMap<(String, String, String, String), Vec<RefundOrder>> =
                    BTreeMap::new();
                let mut channels = BTreeMap::new();
                for order in candidates {
                    if !channels.contains_key(&order.channel) {
                        let ch = store::get_channel(conn, &order.channel)?;
                        channels.insert(order.channel.clone(), ch);
                    }
                    let Some(Some(channel)) = channels.get(&order.channel) else {
                        tracing::warn!(refund_id = %order.refund_id, channel = %order.channel, "channel is gone; not batched");
                        continue;
                    };
                    if channel.bank_code.is_empty() {
                        tracing::warn!(refund_id = %order.refund_id, channel = %order.channel, "channel has no bank code; not batched");
                        continue;
                    }
                    let key = (
                        channel.bank_code.clone(),
                        order.channel.clone(),
                        order.method.as_str().to_string(),
                        order.amount.currency().code().to_string(),
                    );
                    groups.entry(key).or_default().push(order);
                }
                let expected = expected_for_batch(date, &calendar);
                let mut created = Vec::new();
                for ((bank_code, channel, _, _), orders) in groups {
                    let method = orders[0].method;
                    let currency = orders[0].amount.currency();
                    let sequence = store::next_batch_sequence(conn, &bank_code, method, date)?;
                    let id = batch_id(date, &bank_code, method, sequence);
                    if row_id(&id, 1).len() > MAX_ID_LEN {
                        tracing::warn!(%bank_code, "bank code too long for batch row ids; not batched");
                        continue;
                    }
                    let mut rows = Vec::new();
                    for order in orders {
                        let line = u32::try_from(rows.len() + 1)
                            .map_err(|_| Error::internal("too many rows"))?;
                        let rid = row_id(&id, line);
                        let attempt = order.attempt;
                        let claim = |o: &mut RefundOrder, _: &crate::domain::Channel| {
                            if o.attempt != attempt || !o.bank_reference_id.is_empty() {
                                return Ok(false);
                            }
                            o.assign_batch_row(&rid, expected).map(|()| true)
                        };
                        let moved = transition_in(conn, &vault, &order.refund_id, now_ms, &claim)?;
                        if !moved.changed {
                            continue;
                        }
                        let o = moved.after;
                        rows.push(BatchRow {
                            row_id: rid,
                            batch_id: id.clone(),
                            refund_id: o.refund_id.clone(),
                            attempt: o.attempt,
                            line,
                            order_no: o.order_no.clone(),
                            amount: o.amount,
                            card_no: o.payer_card_no.clone(),
                            holder_name: o.payer_name.clone(),
                            status: RowStatus::Included,
                            reason: String::new(),
                        });
                    }
                    if rows.is_empty() {
                        continue;
                    }
                    let mut batch = Batch {
                        batch_id: id.clone(),
                        bank_code: bank_code.clone(),
                        channel,
                        method,
                        date,
                        sequence,
                        status: BatchStatus::Generated,
                        currency,
                        rows,
                        file_name: format!("{id}.xlsx"),
                        file_sha256: String::new(),
                        generated_at_ms: now_ms,
                        marked_at_ms: None,
                        marked_by: String::new(),
                        note: String::new(),
                        bank_delivered: false,
                        bank_error: String::new(),
                    };
                    let template = store::get_template(conn, &bank_code)?
                        .unwrap_or_else(|| BankTemplate::default_for(&bank_code));
                    let bytes = sheet::write_xlsx(&render(&template, &batch)?, date)?;
                    batch.file_sha256 = sheet::sha256_hex(&bytes);
                    store::insert_batch(conn, &vault, &batch, &bytes)?;
                    created.push((batch.batch_id.clone(), batch.rows.len()));
                }
                Ok(created)
            })
            .await?;
        for (id, rows) in &created {
            tracing::info!(batch_id = %id, rows, "batch generated");
        }
        let vault = self.vault.clone();
        let batches = self
            .db
            .run(move |c| store::list_batches(c, &vault, Some(date), None, i64::from(MAX_BATCHES)))
            .await?;
        Ok((batches, true))
    }

    pub async fn get_batch(&self, batch_id: &str) -> Result<Batch> {
        let id = batch_id.to_string();
        let vault = self.vault.clone();
        self.db
            .run(move |c| store::get_batch(c, &vault, &id))
            .await?
            .ok_or_else(|| batch_not_found(batch_id))
    }

    pub async fn list_batches(
        &self,
        date: Option<NaiveDate>,
        status: Option<BatchStatus>,
        limit: u32,
    ) -> Result<Vec<Batch>> {
        let vault = self.vault.clone();
        self.db
            .run(move |c| store::list_batches(c, &vault, date, status, i64::from(limit)))
            .await
    }

    /// The batch's .xlsx: (file name, bytes, sha256), verified against the stored hash.
    pub async fn download_batch(&self, batch_id: &str) -> Result<(String, Vec<u8>, String)> {
        let id = batch_id.to_string();
        let vault = self.vault.clone();
        let (name, bytes, sha) = self
            .db
            .run(move |c| store::batch_file(c, &vault, &id))
            .await?
            .ok_or_else(|| batch_not_found(batch_id))?;
        let actual = sheet::sha256_hex(&bytes);
        if actual != sha {
            return Err(Error::internal(format!(
                "the file of batch {batch_id} does not match its recorded sha256"
            )));
        }
        Ok((name, bytes, sha))
    }

    /// Staff uploaded (file-upload) or sent (offline) the batch: its rows and their orders become
    /// SUBMITTED, then the bank receives the rows. Idempotent; a repeat retries the bank delivery
    /// if it did not go through.
    pub async fn mark_batch(
        &self,
        batch_id: &str,
        status: BatchStatus,
        operator: &str,
        note: &str,
    ) -> Result<Batch> {
        let batch = self.get_batch(batch_id).await?;
        let mut marked = batch.clone();
        let now_ms = self.clock.now_ms();
        if marked.mark(status, operator, note, now_ms)? == Outcome::Changed {
            let calendar = self.calendar.clone();
            let vault = self.vault.clone();
            let won = self
                .db
                .transaction(move |conn| {
                    if !store::save_batch_mark(conn, &marked)? {
                        return Ok(false);
                    }
                    let expected = expected_for_batch(marked.date, &calendar);
                    for row in &marked.rows {
                        let rid = row.row_id.clone();
                        let submit = |o: &mut RefundOrder, _: &crate::domain::Channel| {
                            if o.bank_reference_id != rid
                                || o.submit_status != crate::domain::SubmitStatus::Pending
                                || o.refund_status.is_final()
                            {
                                return Ok(false);
                            }
                            o.submit_accepted("", now_ms, expected).map(|()| true)
                        };
                        transition_in(conn, &vault, &row.refund_id, now_ms, &submit)?;
                    }
                    Ok(true)
                })
                .await?;
            if won {
                tracing::info!(batch_id, %status, operator, "batch marked");
            } else {
                // Someone else marked it meanwhile: their status must be ours to be a repeat.
                let current = self.get_batch(batch_id).await?;
                let mut again = current.clone();
                again.mark(status, operator, note, now_ms)?;
            }
        }
        self.deliver_batch(batch_id).await;
        self.get_batch(batch_id).await
    }

    /// Sends a marked batch's rows to the bank unless it has them; records the outcome.
    async fn deliver_batch(&self, batch_id: &str) {
        let result: Result<bool> = async {
            let batch = self.get_batch(batch_id).await?;
            if batch.status == BatchStatus::Generated || batch.bank_delivered {
                return Ok(false);
            }
            let request = bank::SubmitFileBatchRequest {
                channel: batch.channel.clone(),
                batch_id: batch.batch_id.clone(),
                method: batch.method.as_str().to_string(),
                rows: batch
                    .rows
                    .iter()
                    .map(|r| bank::FileRow {
                        row_id: r.row_id.clone(),
                        refund_id: r.refund_id.clone(),
                        amount: r.amount.amount_string(),
                        currency: r.amount.currency().code().to_string(),
                        card_no: r.card_no.clone(),
                        holder_name: r.holder_name.clone(),
                    })
                    .collect(),
            };
            let answer = self
                .bank
                .clone()
                .submit_file_batch(request)
                .await
                .map_err(peer_err);
            let id = batch_id.to_string();
            match answer {
                Ok(a) => {
                    let a = a.into_inner();
                    tracing::info!(batch_id, accepted = a.accepted, rejected = a.rejected, "bank received the batch");
                    self.db
                        .run(move |c| store::set_bank_delivery(c, &id, None))
                        .await?;
                    Ok(true)
                }
                Err(e) => {
                    tracing::warn!(batch_id, code = %e.code, error = %e.message, "bank did not take the batch; retried later");
                    let note = format!("{}: {}", e.code, e.message);
                    self.db
                        .run(move |c| store::set_bank_delivery(c, &id, Some(&note)))
                        .await?;
                    Ok(false)
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(batch_id, code = %e.code, error = %e.message, "batch delivery failed");
        }
    }

    /// Retries the bank delivery of marked batches the bank does not have yet (the job loop).
    pub async fn retry_batch_deliveries(&self) -> Result<u32> {
        let limit = i64::from(self.batch_size);
        let ids = self
            .db
            .run(move |c| store::undelivered_batches(c, limit))
            .await?;
        let mut delivered = 0;
        for id in ids {
            self.deliver_batch(&id).await;
            if self.get_batch(&id).await?.bank_delivered {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Rows of a marked batch failed (the bank's result file or a staff confirmation): each row's
    /// attempt fails and its order moves to its next method, or, with none left, fails for good.
    /// Rows already failed are left alone (idempotent).
    pub async fn mark_rows(
        &self,
        batch_id: &str,
        failed: Vec<FailedRow>,
        operator: &str,
        source: &str,
    ) -> Result<Batch> {
        let batch = self.get_batch(batch_id).await?;
        if batch.status == BatchStatus::Generated {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "batch {batch_id} is not marked {} yet: its rows are not with the bank",
                    crate::domain::batch::marked_status(batch.method)
                        .map_or("UPLOADED or SENT", BatchStatus::as_str)
                ),
            ));
        }
        for f in &failed {
            if !batch.rows.iter().any(|r| r.row_id == f.row_id) {
                return Err(Error::new(
                    ErrorCode::NotFound,
                    format!("batch {batch_id} has no row {}", f.row_id),
                ));
            }
        }
        let now_ms = self.clock.now_ms();
        for f in failed {
            let Some(row) = batch.rows.iter().find(|r| r.row_id == f.row_id).cloned() else {
                continue;
            };
            let why = format!(
                "{} (batch {batch_id} row {}, {source}, by {operator})",
                f.reason, f.row_id
            );
            let calendar = self.calendar.clone();
            let vault = self.vault.clone();
            let final_source = format!("{source}: batch {batch_id}");
            let moved: Option<Moved> = self
                .db
                .transaction(move |conn| {
                    if !store::fail_row(conn, &row.row_id, &f.reason)? {
                        return Ok(None);
                    }
                    let fail = |o: &mut RefundOrder, channel: &crate::domain::Channel| {
                        // A row whose refund the bank paid is not failed by hand.
                        if !row_fails_order(o, &row.row_id)? {
                            return Ok(false);
                        }
                        o.fail_attempt(&why, channel, &calendar, &final_source, now_ms)
                            .map(|_| true)
                    };
                    transition_in(conn, &vault, &row.refund_id, now_ms, &fail).map(Some)
                })
                .await?;
            if let Some(moved) = moved {
                tracing::info!(
                    batch_id,
                    refund_id = %moved.after.refund_id,
                    method = %moved.after.method,
                    refund_status = %moved.after.refund_status,
                    "batch row failed"
                );
                self.follow_up(&moved).await;
            }
        }
        self.get_batch(batch_id).await
    }

    pub async fn upsert_template(&self, template: BankTemplate) -> Result<BankTemplate> {
        let now_ms = self.clock.now_ms();
        self.db
            .run(move |c| store::upsert_template(c, &template, now_ms))
            .await
    }

    /// The configured templates, then the built-in ones not overridden.
    pub async fn list_templates(&self) -> Result<Vec<BankTemplate>> {
        let mut templates = self.db.run(store::list_templates).await?;
        for code in ["CCB", "ICBC"] {
            if !templates.iter().any(|t| t.bank_code == code) {
                if let Some(t) = BankTemplate::builtin(code) {
                    templates.push(t);
                }
            }
        }
        templates.sort_by(|a, b| a.bank_code.cmp(&b.bank_code));
        Ok(templates)
    }
}

/// The most batches a date lists.
const MAX_BATCHES: u32 = 1000;

fn batch_not_found(batch_id: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("batch {batch_id} does not exist"),
    )
}

// ---------------------------------------------------------------------------------------------
// Wire conversions

fn date_from_wire(date: &str, today: NaiveDate) -> Result<NaiveDate> {
    if date.is_empty() {
        return Ok(today);
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| Error::field("date", "must be a date written YYYY-MM-DD"))
}

fn batch_status_to_wire(s: BatchStatus) -> pb::BatchStatus {
    match s {
        BatchStatus::Generated => pb::BatchStatus::Generated,
        BatchStatus::Uploaded => pb::BatchStatus::Uploaded,
        BatchStatus::Sent => pb::BatchStatus::Sent,
    }
}

fn batch_status_from_wire(v: i32) -> Result<Option<BatchStatus>> {
    match pb::BatchStatus::try_from(v) {
        Ok(pb::BatchStatus::Unspecified) => Ok(None),
        Ok(pb::BatchStatus::Generated) => Ok(Some(BatchStatus::Generated)),
        Ok(pb::BatchStatus::Uploaded) => Ok(Some(BatchStatus::Uploaded)),
        Ok(pb::BatchStatus::Sent) => Ok(Some(BatchStatus::Sent)),
        Err(_) => Err(Error::field("status", format!("unknown value {v}"))),
    }
}

fn row_status_to_wire(s: RowStatus) -> pb::RowStatus {
    match s {
        RowStatus::Included => pb::RowStatus::Included,
        RowStatus::Submitted => pb::RowStatus::RowSubmitted,
        RowStatus::Failed => pb::RowStatus::RowFailed,
    }
}

pub(crate) fn batch_to_wire(b: &Batch) -> pb::Batch {
    pb::Batch {
        batch_id: b.batch_id.clone(),
        bank_code: b.bank_code.clone(),
        method: method_to_wire(b.method) as i32,
        date: b.date.format("%Y-%m-%d").to_string(),
        sequence: b.sequence,
        status: batch_status_to_wire(b.status) as i32,
        row_count: u32::try_from(b.rows.len()).unwrap_or(u32::MAX),
        total_amount: b
            .total()
            .unwrap_or_else(|_| Money::zero(b.currency))
            .amount_string(),
        currency: b.currency.code().to_string(),
        file_sha256: b.file_sha256.clone(),
        generated_at_ms: b.generated_at_ms,
        marked_at_ms: b.marked_at_ms.unwrap_or(0),
        marked_by: b.marked_by.clone(),
        rows: b
            .rows
            .iter()
            .map(|r| pb::BatchRow {
                row_id: r.row_id.clone(),
                refund_id: r.refund_id.clone(),
                line: r.line,
                order_no: r.order_no.clone(),
                amount: r.amount.amount_string(),
                currency: r.amount.currency().code().to_string(),
                card_masked: r.card_masked(),
                holder_name: r.holder_name.clone(),
                status: row_status_to_wire(r.status) as i32,
                reason: r.reason.clone(),
            })
            .collect(),
        channel: b.channel.clone(),
        bank_delivered: b.bank_delivered,
    }
}

fn template_to_wire(t: &BankTemplate) -> pb::BankTemplate {
    pb::BankTemplate {
        bank_code: t.bank_code.clone(),
        sheet_name: t.sheet_name.clone(),
        columns: t
            .columns
            .iter()
            .map(|c| pb::TemplateColumn {
                header: c.header.clone(),
                field: c.field.as_str().to_string(),
            })
            .collect(),
        date_format: t.date_format.clone(),
        amount_format: t.amount_format.as_str().to_string(),
    }
}

fn template_from_wire(t: pb::BankTemplate) -> Result<BankTemplate> {
    let template = BankTemplate {
        columns: t
            .columns
            .into_iter()
            .map(|c| {
                Ok(TemplateColumn {
                    field: TemplateField::parse(&c.field).ok_or_else(|| {
                        Error::field("columns", format!("unknown field {:?}", c.field))
                    })?,
                    header: c.header,
                })
            })
            .collect::<Result<_>>()?,
        amount_format: AmountFormat::parse(&t.amount_format)
            .ok_or_else(|| Error::field("amount_format", "must be YUAN or FEN"))?,
        bank_code: t.bank_code,
        sheet_name: t.sheet_name,
        date_format: t.date_format,
    };
    template.validate()?;
    Ok(template)
}

pub(crate) fn required(value: &str, field: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::field(field, "is required"));
    }
    validate_text(value, field)
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[tonic::async_trait]
impl BatchService for RefundCenter {
    #[tracing::instrument(skip_all, fields(date = %request.get_ref().date))]
    async fn generate_batches(
        &self,
        request: Request<pb::GenerateBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let date =
            date_from_wire(&request.into_inner().date, self.clock.today()).map_err(grpc_err)?;
        let (batches, working_day) = RefundCenter::generate_batches(self, date)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches: batches.iter().map(batch_to_wire).collect(),
            working_day,
        }))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let r = request.into_inner();
        let (date, status) = (|| {
            let date = if r.date.is_empty() {
                None
            } else {
                Some(date_from_wire(&r.date, self.clock.today())?)
            };
            Ok::<_, Error>((date, batch_status_from_wire(r.status)?))
        })()
        .map_err(grpc_err)?;
        let batches = RefundCenter::list_batches(self, date, status, list_limit(r.limit))
            .await
            .map_err(grpc_err)?;
        let working_day = date.is_none_or(|d| self.calendar.is_working_day(d));
        Ok(Response::new(pb::ListBatchesResponse {
            batches: batches.iter().map(batch_to_wire).collect(),
            working_day,
        }))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let id = request.into_inner().batch_id;
        validate_external_id(&id, "batch_id").map_err(grpc_err)?;
        let b = RefundCenter::get_batch(self, &id).await.map_err(grpc_err)?;
        Ok(Response::new(batch_to_wire(&b)))
    }

    async fn download_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::BatchFile>, Status> {
        let id = request.into_inner().batch_id;
        validate_external_id(&id, "batch_id").map_err(grpc_err)?;
        let (file_name, content, sha256) = RefundCenter::download_batch(self, &id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::BatchFile {
            batch_id: id,
            file_name,
            content,
            sha256,
        }))
    }

    #[tracing::instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn mark_batch(
        &self,
        request: Request<pb::MarkBatchRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        let operator =
            tuikuan_auth::acting_name(&request, &request.get_ref().operator, "operator")?;
        let r = request.into_inner();
        let status = (|| {
            validate_external_id(&r.batch_id, "batch_id")?;
            validate_text(&r.note, "note")?;
            match batch_status_from_wire(r.status)? {
                Some(s @ (BatchStatus::Uploaded | BatchStatus::Sent)) => Ok(s),
                _ => Err(Error::field("status", "must be UPLOADED or SENT")),
            }
        })()
        .map_err(grpc_err)?;
        let b = RefundCenter::mark_batch(self, &r.batch_id, status, &operator, &r.note)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(batch_to_wire(&b)))
    }

    #[tracing::instrument(skip_all, fields(batch_id = %request.get_ref().batch_id))]
    async fn mark_rows(
        &self,
        request: Request<pb::MarkRowsRequest>,
    ) -> Result<Response<pb::Batch>, Status> {
        self.propose_fail_rows(request).await
    }

    #[tracing::instrument(skip_all, fields(bank_code = %request.get_ref().bank_code))]
    async fn upsert_template(
        &self,
        request: Request<pb::BankTemplate>,
    ) -> Result<Response<pb::BankTemplate>, Status> {
        let t = template_from_wire(request.into_inner()).map_err(grpc_err)?;
        let saved = RefundCenter::upsert_template(self, t)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(template_to_wire(&saved)))
    }

    async fn list_templates(
        &self,
        _request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let templates = RefundCenter::list_templates(self).await.map_err(grpc_err)?;
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: templates.iter().map(template_to_wire).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::method_from_wire;
    use super::*;

    #[test]
    fn templates_convert_and_validate_on_receipt() {
        let wire = template_to_wire(&BankTemplate::default_for("CCB"));
        assert_eq!(
            template_from_wire(wire.clone()).unwrap(),
            BankTemplate::default_for("CCB")
        );
        let bad = pb::BankTemplate {
            amount_format: "CENTS".into(),
            ..wire.clone()
        };
        assert!(template_from_wire(bad)
            .unwrap_err()
            .message
            .starts_with("amount_format"));
        let mut bad = wire;
        bad.columns[0].field = "NOPE".into();
        assert!(template_from_wire(bad)
            .unwrap_err()
            .message
            .starts_with("columns"));
        assert_eq!(
            method_from_wire(3).unwrap(),
            crate::domain::RefundMethod::FileUpload
        );
    }
}
