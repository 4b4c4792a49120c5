//! Suspense items over gRPC: listing them, clearing one against the bank row that settled it, and
//! writing one off through a four-eyes proposal that the accounting service runs once a second
//! operator approves it ([`tuikuan_auth::Executor`]).

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};
use tuikuan_auth::domain::{AuditEntry, Proposal};
use tuikuan_auth::{Action, Draft, Executor, Operator};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode};
use tuikuan_proto::accounting::v1 as pb;
use tuikuan_proto::status::grpc_err;

use super::Accounting;
use crate::domain::journal::date_text;
use crate::domain::suspense::{
    clear_lines, write_off_lines, ItemStatus, SuspenseItem, CLEAR_PREFIX, WRITE_OFF_PREFIX,
};
use crate::domain::{self, PostingMeta, PostingRequest};
use crate::store;

/// The RPC path a proposal's execution is recorded under.
const WRITE_OFF_RPC: &str = "/tuikuan.accounting.v1.AccountingService/WriteOffSuspenseItem";

impl Accounting {
    /// One item (`NOT_FOUND` when there is none).
    pub async fn suspense_item(&self, item_id: &str) -> Result<SuspenseItem, Error> {
        validate_external_id(item_id, "item_id")?;
        let id = item_id.to_string();
        self.db
            .run(move |conn| store::suspense::get_item(conn, &id))
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no suspense item {item_id}")))
    }

    /// Clears what remains of an open item against the bank row `meta` names. A repeat after it
    /// was cleared so answers the item.
    pub async fn clear_suspense_item(
        &self,
        item_id: &str,
        meta: PostingMeta,
        merchant_id: &str,
    ) -> Result<SuspenseItem, Error> {
        let item = self.suspense_item(item_id).await?;
        let request_id = format!("{CLEAR_PREFIX}{item_id}");
        if item.closed_by == request_id {
            return Ok(item);
        }
        let lines = clear_lines(&item, merchant_id)?;
        let description = format!(
            "suspense item {item_id} ({}) cleared against bank row {}",
            item.direction(),
            if meta.bank_reference.is_empty() {
                "without reference"
            } else {
                &meta.bank_reference
            }
        );
        self.post(PostingRequest::new(&request_id, &description, lines)?.with_meta(meta))
            .await?;
        self.suspense_item(item_id).await
    }

    /// Runs an approved write-off: posts `suspense-write-off:{item}` for the amount the proposal
    /// named (refused when the item changed since) and records it in the audit trail.
    async fn write_off(&self, p: &Proposal, approver: &Operator) -> Result<String, Error> {
        let item = self.suspense_item(&p.subject).await?;
        let request_id = format!("{WRITE_OFF_PREFIX}{}", item.item_id);
        if item.closed_by == request_id {
            return Ok(format!("suspense item {} written off before", item.item_id));
        }
        if p.amount != Some(item.remaining) || item.status != ItemStatus::Open {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "suspense item {} is {} with {} left since the proposal; propose again",
                    item.item_id, item.status, item.remaining
                ),
            ));
        }
        let lines = write_off_lines(&item)?;
        let description = format!(
            "suspense item {} ({}) written off: proposal {} by {}, approved by {}",
            item.item_id,
            item.direction(),
            p.proposal_id,
            p.proposer,
            approver.name
        );
        let outcome = self
            .post(PostingRequest::new(&request_id, &description, lines)?)
            .await?;
        let after = format!(
            "{} WRITTEN_OFF by posting {}",
            item.remaining, outcome.posting.posting_id
        );
        self.desk
            .audit(
                AuditEntry::of(
                    approver,
                    Action::WriteOffSuspense,
                    WRITE_OFF_RPC,
                    &item.item_id,
                    self.clock.now_ms(),
                )
                .reason(&p.reason)
                .change(&format!("OPEN {}", item.remaining), &after)
                .proposal(&p.proposal_id),
            )
            .await?;
        Ok(format!(
            "suspense item {} written off: {after}",
            item.item_id
        ))
    }
}

impl Executor for Accounting {
    fn execute(
        &self,
        p: Proposal,
        approver: Operator,
    ) -> BoxFuture<'static, Result<String, Error>> {
        let this = self.clone();
        Box::pin(async move {
            match p.action {
                Action::WriteOffSuspense => this.write_off(&p, &approver).await,
                other => Err(Error::internal(format!(
                    "accounting runs no {other} proposals ({})",
                    p.proposal_id
                ))),
            }
        })
    }
}

pub(super) fn item_to_wire(i: &SuspenseItem, today: chrono::NaiveDate) -> pb::SuspenseItem {
    pb::SuspenseItem {
        item_id: i.item_id.clone(),
        direction: i.direction().to_string(),
        channel: i.channel().to_string(),
        currency: i.account.currency.code().to_string(),
        amount: i.amount.amount_string(),
        remaining: i.remaining.amount_string(),
        status: i.status.as_str().to_string(),
        source: i.source.clone(),
        description: i.description.clone(),
        value_date: date_text(i.value_date),
        bank_reference: i.bank_reference.clone(),
        opened_at_ms: i.opened_at_ms,
        age_days: i.age_days(today),
        closed_by: i.closed_by.clone(),
        closed_at_ms: i.closed_at_ms.unwrap_or_default(),
    }
}

pub(super) async fn list(
    svc: &Accounting,
    request: Request<pb::ListSuspenseItemsRequest>,
) -> Result<Response<pb::ListSuspenseItemsResponse>, Status> {
    let r = request.into_inner();
    let channel = if r.channel.is_empty() {
        None
    } else {
        validate_external_id(&r.channel, "channel").map_err(grpc_err)?;
        Some(r.channel)
    };
    let status = if r.status.is_empty() {
        None
    } else {
        Some(ItemStatus::parse(&r.status).ok_or_else(|| {
            grpc_err(Error::field(
                "status",
                "must be OPEN, CLEARED or WRITTEN_OFF",
            ))
        })?)
    };
    let after = if r.after.is_empty() {
        None
    } else {
        validate_external_id(&r.after, "after").map_err(grpc_err)?;
        Some(r.after)
    };
    let limit = domain::page_size(r.limit);
    let items = svc
        .db
        .run(move |conn| {
            store::suspense::list_items(conn, channel.as_deref(), status, after.as_deref(), limit)
        })
        .await
        .map_err(grpc_err)?;
    let today = svc.clock.today();
    Ok(Response::new(pb::ListSuspenseItemsResponse {
        items: items.iter().map(|i| item_to_wire(i, today)).collect(),
    }))
}

pub(super) async fn clear(
    svc: &Accounting,
    request: Request<pb::ClearSuspenseItemRequest>,
) -> Result<Response<pb::SuspenseItem>, Status> {
    let staff = tuikuan_auth::staff(&request)?;
    staff.authorize(Action::ClearSuspense).map_err(grpc_err)?;
    let r = request.into_inner();
    tuikuan_auth::staff::validate_reason(&r.reason, "reason").map_err(grpc_err)?;
    let meta = PostingMeta::parse(&r.value_date, &r.bank_reference).map_err(grpc_err)?;
    let item = svc
        .clear_suspense_item(&r.item_id, meta, &r.merchant_id)
        .await
        .map_err(grpc_err)?;
    Ok(Response::new(item_to_wire(&item, svc.clock.today())))
}

pub(super) async fn write_off(
    svc: &Accounting,
    request: Request<pb::WriteOffSuspenseItemRequest>,
) -> Result<Response<tuikuan_proto::staff::v1::Proposal>, Status> {
    let staff = tuikuan_auth::staff(&request)?;
    let r = request.into_inner();
    let item = svc.suspense_item(&r.item_id).await.map_err(grpc_err)?;
    if item.status != ItemStatus::Open {
        return Err(grpc_err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!("suspense item {} is {}", item.item_id, item.status),
        )));
    }
    let draft = Draft {
        action: Action::WriteOffSuspense,
        subject: item.item_id.clone(),
        amount: Some(item.remaining),
        summary: format!(
            "write off {} {} of suspense item {} on {} (opened by {})",
            item.direction(),
            item.remaining,
            item.item_id,
            item.channel(),
            item.source
        ),
        payload: item.item_id.clone(),
        reason: r.reason,
    };
    let proposal = svc
        .desk
        .propose(&staff, draft, svc)
        .await
        .map_err(grpc_err)?;
    Ok(Response::new(tuikuan_auth::staff::proposal_to_wire(
        &proposal,
    )))
}
