//! The accounting gRPC service, its wire conversions (validated on receipt), and
//! [`AccountingClient`], the typed client other services use to post.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tuikuan_db::Db;
use tuikuan_kernel::id::new_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, SharedClock};
use tuikuan_proto::accounting::v1 as pb;
use tuikuan_proto::accounting::v1::accounting_service_client::AccountingServiceClient;
use tuikuan_proto::accounting::v1::accounting_service_server::{
    AccountingService, AccountingServiceServer,
};
use tuikuan_proto::status::{grpc_err, peer_err};
use tuikuan_proto::tls::{Principal, Transport};

use crate::domain::journal::{date_text, parse_optional_date, running_total_differences};
use crate::domain::{
    self, AccountKey, AccountType, Balance, DateRange, Entry, PostOutcome, Posting, PostingMeta,
    PostingRequest, Side, TrialBalance,
};
use crate::store;

mod report;
mod suspense;

const MIGRATIONS: tuikuan_db::Migrations = tuikuan_db::embed_migrations!("migrations");

/// How the accounting service runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub clock: SharedClock,
    /// Unused: accounting has no scheduled work. Kept so every service is configured alike.
    pub job_interval: Option<Duration>,
    /// Mutual TLS as `accounting` (or plaintext, only when the deployment says so).
    pub transport: Transport,
    /// Staff security: the operator-token verifier (every staff RPC needs a token in a role the
    /// permission table allows). Default: no key, no staff call.
    pub staff: tuikuan_auth::StaffConfig,
}

/// Opens the database, runs migrations and serves `AccountingService` on `listener` until
/// `shutdown` resolves.
/// The most requests one PostBatch call takes.
pub const MAX_BATCH: usize = 1000;

pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let db = Db::connect(&config.database_url, 8)?;
    db.migrate(MIGRATIONS)?;
    let dated = db.run(store::backfill_value_dates).await?;
    if dated > 0 {
        tracing::info!(
            dated,
            "postings from before value dates dated by their posting day"
        );
    }
    let desk = config.staff.desk("accounting", &db, config.clock.clone())?;
    let auth = &config.staff.auth;
    let svc = Accounting::new(db, config.clock, desk.clone());
    let svc_for_proposals = svc.clone();
    tuikuan_proto::server::serve(
        listener,
        config.transport.clone(),
        tonic::service::Routes::new(auth.guard_audited(AccountingServiceServer::new(svc), &desk))
            .add_service(tuikuan_auth::StaffServer::new(desk, svc_for_proposals).guarded(auth)),
        &[
            <AccountingServiceServer<Accounting> as tonic::server::NamedService>::NAME,
            tuikuan_auth::STAFF_SERVICE,
        ],
        shutdown,
    )
    .await
}

/// The ledger service over a database, with its staff desk (audit trail and the four-eyes
/// proposals it runs: suspense write-offs).
#[derive(Clone, Debug)]
pub struct Accounting {
    db: Db,
    clock: SharedClock,
    desk: tuikuan_auth::Desk,
}

impl Accounting {
    pub fn new(db: Db, clock: SharedClock, desk: tuikuan_auth::Desk) -> Accounting {
        Accounting { db, clock, desk }
    }

    /// Posts a validated request (idempotent by request id).
    pub async fn post(&self, request: PostingRequest) -> Result<PostOutcome, Error> {
        let posting_id = new_id("pst");
        let now_ms = self.clock.now_ms();
        self.db
            .run(move |conn| store::post(conn, &request, &posting_id, now_ms))
            .await
    }

    /// Posts many validated requests in one transaction; one result per request, in order.
    pub async fn post_batch(
        &self,
        requests: Vec<PostingRequest>,
    ) -> Result<Vec<Result<PostOutcome, Error>>, Error> {
        if requests.len() > MAX_BATCH {
            return Err(Error::field(
                "requests",
                format!("at most {MAX_BATCH} per batch, got {}", requests.len()),
            ));
        }
        let now_ms = self.clock.now_ms();
        let requests: Vec<(PostingRequest, String)> =
            requests.into_iter().map(|r| (r, new_id("pst"))).collect();
        self.db
            .run(move |conn| store::post_batch(conn, &requests, now_ms))
            .await
    }

    pub async fn get_posting(&self, request_id: String) -> Result<Posting, Error> {
        domain::validate_request_id(&request_id, "request_id")?;
        let rid = request_id.clone();
        self.db
            .run(move |conn| store::find_posting(conn, &rid))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NotFound,
                    format!("no posting with request_id {request_id:?}"),
                )
            })
    }

    /// The balance of `key` now (running totals), or as of a value date (from the journal).
    pub async fn balance(
        &self,
        key: AccountKey,
        as_of: Option<chrono::NaiveDate>,
    ) -> Result<Balance, Error> {
        self.db
            .run(move |conn| match as_of {
                None => store::balance(conn, &key),
                Some(date) => {
                    Ok(
                        store::journal_balances(conn, Some(&key), DateRange::as_of(Some(date)))?
                            .pop()
                            .unwrap_or_else(|| Balance::zero(key.clone())),
                    )
                }
            })
            .await
    }

    pub async fn list_postings(
        &self,
        account: Option<AccountKey>,
        dates: DateRange,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Posting>, Error> {
        self.db
            .run(move |conn| {
                store::list_postings(conn, account.as_ref(), dates, after.as_deref(), limit)
            })
            .await
    }

    /// The trial balance summed from the journal (as of a value date when given) and, without a
    /// date, the accounts whose running totals disagree with it.
    pub async fn trial_balance(
        &self,
        as_of: Option<chrono::NaiveDate>,
    ) -> Result<(TrialBalance, Vec<String>), Error> {
        let (journal, running) = self
            .db
            .run(move |conn| {
                let journal = store::journal_balances(conn, None, DateRange::as_of(as_of))?;
                let running = match as_of {
                    None => Some(store::all_balances(conn)?),
                    Some(_) => None,
                };
                Ok((journal, running))
            })
            .await?;
        let differences = running
            .map(|r| running_total_differences(&journal, &r))
            .unwrap_or_default();
        let tb = TrialBalance::from_accounts(journal);
        if !tb.balanced {
            tracing::error!(totals = ?tb.totals, "trial balance does not balance");
        }
        if !differences.is_empty() {
            tracing::error!(?differences, "running totals differ from the journal");
        }
        Ok((tb, differences))
    }
}

// ---------- wire -> domain ----------

fn account_type_from_wire(value: i32, field: &str) -> Result<AccountType, Error> {
    match pb::AccountType::try_from(value) {
        Ok(pb::AccountType::Unspecified) => Err(Error::field(field, "is required")),
        // The wire names are the ledger's names (`MERCHANT_SETTLEMENT`, ...).
        Ok(t) => AccountType::parse(t.as_str_name())
            .ok_or_else(|| Error::field(field, format!("unknown account type {value}"))),
        Err(_) => Err(Error::field(field, format!("unknown account type {value}"))),
    }
}

fn account_type_to_wire(t: AccountType) -> pb::AccountType {
    pb::AccountType::from_str_name(t.as_str()).unwrap_or(pb::AccountType::Unspecified)
}

fn side_from_wire(value: i32, field: &str) -> Result<Side, Error> {
    match pb::Side::try_from(value) {
        Ok(pb::Side::Debit) => Ok(Side::Debit),
        Ok(pb::Side::Credit) => Ok(Side::Credit),
        Ok(pb::Side::Unspecified) => Err(Error::field(field, "is required")),
        Err(_) => Err(Error::field(field, format!("unknown side {value}"))),
    }
}

fn side_to_wire(s: Side) -> pb::Side {
    match s {
        Side::Debit => pb::Side::Debit,
        Side::Credit => pb::Side::Credit,
    }
}

fn account_from_wire(account: Option<&pb::Account>, field: &str) -> Result<AccountKey, Error> {
    let a = account.ok_or_else(|| Error::field(field, "is required"))?;
    let account_type = account_type_from_wire(a.r#type, &format!("{field}.type"))?;
    let currency = Currency::parse(&a.currency, &format!("{field}.currency"))?;
    AccountKey::new(account_type, &a.owner, currency, field)
}

fn entry_from_wire(e: &pb::Entry, field: &str) -> Result<Entry, Error> {
    let account = account_from_wire(e.account.as_ref(), &format!("{field}.account"))?;
    let side = side_from_wire(e.side, &format!("{field}.side"))?;
    let amount = Money::parse(
        &e.amount,
        account.currency.code(),
        &format!("{field}.amount"),
    )?;
    Ok(Entry {
        account,
        side,
        amount,
        item: e.item_id.clone(),
    })
}

fn post_request_from_wire(r: &pb::PostRequest) -> Result<PostingRequest, Error> {
    domain::validate_request_id(&r.request_id, "request_id")?;
    if r.entries.len() > domain::MAX_ENTRIES {
        return Err(Error::field(
            "entries",
            format!("at most {} entries per posting", domain::MAX_ENTRIES),
        ));
    }
    let entries = r
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| entry_from_wire(e, &format!("entries[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let meta = PostingMeta::parse(&r.value_date, &r.bank_reference)?;
    Ok(PostingRequest::new(&r.request_id, &r.description, entries)?.with_meta(meta))
}

fn post_request_to_wire(request: &PostingRequest) -> pb::PostRequest {
    pb::PostRequest {
        request_id: request.request_id().to_string(),
        description: request.description().to_string(),
        entries: request.entries().iter().map(entry_to_wire).collect(),
        value_date: request.meta().value_date.map(date_text).unwrap_or_default(),
        bank_reference: request.meta().bank_reference.clone(),
    }
}

// ---------- domain -> wire ----------

fn account_to_wire(k: &AccountKey) -> pb::Account {
    pb::Account {
        r#type: account_type_to_wire(k.account_type) as i32,
        owner: k.owner.clone(),
        currency: k.currency.code().to_string(),
    }
}

fn entry_to_wire(e: &Entry) -> pb::Entry {
    pb::Entry {
        account: Some(account_to_wire(&e.account)),
        side: side_to_wire(e.side) as i32,
        amount: e.amount.amount_string(),
        item_id: e.item.clone(),
    }
}

fn posting_to_wire(p: &Posting) -> pb::Posting {
    pb::Posting {
        posting_id: p.posting_id.clone(),
        request_id: p.request_id.clone(),
        description: p.description.clone(),
        entries: p.entries.iter().map(entry_to_wire).collect(),
        posted_at_ms: p.posted_at_ms,
        value_date: date_text(p.value_date),
        bank_reference: p.bank_reference.clone(),
    }
}

fn balance_to_wire(b: &Balance) -> pb::Balance {
    pb::Balance {
        account: Some(account_to_wire(&b.account)),
        debits: b.debits().amount_string(),
        credits: b.credits().amount_string(),
        balance: b.balance().amount_string(),
    }
}

#[tonic::async_trait]
impl AccountingService for Accounting {
    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn post(
        &self,
        request: Request<pb::PostRequest>,
    ) -> Result<Response<pb::PostResponse>, Status> {
        let req = post_request_from_wire(request.get_ref()).map_err(grpc_err)?;
        let outcome = Accounting::post(self, req).await.map_err(grpc_err)?;
        if !outcome.replayed {
            tracing::info!(posting_id = %outcome.posting.posting_id, "posted");
        }
        Ok(Response::new(pb::PostResponse {
            posting: Some(posting_to_wire(&outcome.posting)),
            replayed: outcome.replayed,
        }))
    }

    async fn post_batch(
        &self,
        request: Request<pb::PostBatchRequest>,
    ) -> Result<Response<pb::PostBatchResponse>, Status> {
        // Validation failures are per request too: they take their slot, the rest still post.
        let parsed: Vec<Result<PostingRequest, Error>> = request
            .get_ref()
            .requests
            .iter()
            .map(post_request_from_wire)
            .collect();
        let valid: Vec<PostingRequest> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
        let mut posted = Accounting::post_batch(self, valid)
            .await
            .map_err(grpc_err)?
            .into_iter();
        let results = parsed
            .into_iter()
            .map(|p| {
                match p.and_then(|_| {
                    posted
                        .next()
                        .unwrap_or_else(|| Err(Error::internal("batch result missing")))
                }) {
                    Ok(outcome) => pb::PostBatchResult {
                        response: Some(pb::PostResponse {
                            posting: Some(posting_to_wire(&outcome.posting)),
                            replayed: outcome.replayed,
                        }),
                        ..Default::default()
                    },
                    Err(e) => pb::PostBatchResult {
                        response: None,
                        error_code: e.code.as_str().to_string(),
                        error_message: e.message,
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::PostBatchResponse { results }))
    }

    async fn get_posting(
        &self,
        request: Request<pb::GetPostingRequest>,
    ) -> Result<Response<pb::Posting>, Status> {
        let posting = Accounting::get_posting(self, request.into_inner().request_id)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(posting_to_wire(&posting)))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let r = request.get_ref();
        let key = account_from_wire(r.account.as_ref(), "account").map_err(grpc_err)?;
        let as_of = parse_optional_date(&r.as_of, "as_of").map_err(grpc_err)?;
        let balance = self.balance(key, as_of).await.map_err(grpc_err)?;
        Ok(Response::new(balance_to_wire(&balance)))
    }

    async fn list_postings(
        &self,
        request: Request<pb::ListPostingsRequest>,
    ) -> Result<Response<pb::ListPostingsResponse>, Status> {
        let r = request.into_inner();
        let account = match r.account.as_ref() {
            None => None,
            Some(a) => Some(account_from_wire(Some(a), "account").map_err(grpc_err)?),
        };
        let after = if r.after.is_empty() {
            None
        } else {
            tuikuan_kernel::id::validate_external_id(&r.after, "after").map_err(grpc_err)?;
            Some(r.after.clone())
        };
        let dates = DateRange::parse(&r.from_date, &r.to_date).map_err(grpc_err)?;
        let postings =
            Accounting::list_postings(self, account, dates, after, domain::page_size(r.limit))
                .await
                .map_err(grpc_err)?;
        Ok(Response::new(pb::ListPostingsResponse {
            postings: postings.iter().map(posting_to_wire).collect(),
        }))
    }

    async fn list_suspense_items(
        &self,
        request: Request<pb::ListSuspenseItemsRequest>,
    ) -> Result<Response<pb::ListSuspenseItemsResponse>, Status> {
        suspense::list(self, request).await
    }

    #[tracing::instrument(skip_all, fields(item_id = %request.get_ref().item_id))]
    async fn clear_suspense_item(
        &self,
        request: Request<pb::ClearSuspenseItemRequest>,
    ) -> Result<Response<pb::SuspenseItem>, Status> {
        suspense::clear(self, request).await
    }

    #[tracing::instrument(skip_all, fields(item_id = %request.get_ref().item_id))]
    async fn write_off_suspense_item(
        &self,
        request: Request<pb::WriteOffSuspenseItemRequest>,
    ) -> Result<Response<tuikuan_proto::staff::v1::Proposal>, Status> {
        suspense::write_off(self, request).await
    }

    async fn reserve_report(
        &self,
        request: Request<pb::ReserveReportRequest>,
    ) -> Result<Response<pb::ReserveReportResponse>, Status> {
        report::reserve_report(self, request).await
    }

    async fn trial_balance(
        &self,
        request: Request<pb::TrialBalanceRequest>,
    ) -> Result<Response<pb::TrialBalanceResponse>, Status> {
        let as_of = parse_optional_date(&request.get_ref().as_of, "as_of").map_err(grpc_err)?;
        let (tb, differences) = Accounting::trial_balance(self, as_of)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::TrialBalanceResponse {
            totals: tb
                .totals
                .iter()
                .map(|t| pb::CurrencyTotals {
                    currency: t.currency.code().to_string(),
                    total_debits: Money::from_minor(t.debits_minor, t.currency).amount_string(),
                    total_credits: Money::from_minor(t.credits_minor, t.currency).amount_string(),
                })
                .collect(),
            accounts: tb.accounts.iter().map(balance_to_wire).collect(),
            balanced: tb.balanced,
            running_total_differences: differences,
        }))
    }
}

// ---------- typed client ----------

/// What a post returned: the posting id, and whether the request id was posted before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingOutcome {
    pub posting_id: String,
    pub replayed: bool,
}

/// The typed client other services use to talk to accounting (lazily connected).
#[derive(Debug, Clone)]
pub struct AccountingClient {
    inner: AccountingServiceClient<Channel>,
}

impl AccountingClient {
    /// A client for the accounting service at `addr` (`http://host:port`); connects on first use.
    pub fn connect(transport: &Transport, addr: &str) -> Result<AccountingClient, Error> {
        Ok(AccountingClient {
            inner: AccountingServiceClient::new(transport.channel(Principal::Accounting, addr)?),
        })
    }

    /// Posts `entries` under the idempotency key `request_id`. The request is validated (balanced,
    /// one currency, positive amounts) before it is sent. Errors are the accounting service's
    /// (e.g. `INSUFFICIENT_BALANCE`, `IDEMPOTENCY_CONFLICT`) or `UNAVAILABLE` when the outcome is
    /// unknown: retry with the same `request_id`.
    pub async fn post(
        &self,
        request_id: &str,
        description: &str,
        entries: Vec<(AccountKey, Side, Money)>,
    ) -> Result<PostingOutcome, Error> {
        self.post_dated(request_id, description, entries, PostingMeta::default())
            .await
    }

    /// [`AccountingClient::post`] with the bank's value date and reference of the movement.
    pub async fn post_dated(
        &self,
        request_id: &str,
        description: &str,
        entries: Vec<(AccountKey, Side, Money)>,
        meta: PostingMeta,
    ) -> Result<PostingOutcome, Error> {
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(account, side, amount)| Entry::new(account, side, amount))
            .collect();
        self.post_entries(request_id, description, entries, meta)
            .await
    }

    /// [`AccountingClient::post_dated`] with whole entries (lines that name suspense items).
    pub async fn post_entries(
        &self,
        request_id: &str,
        description: &str,
        entries: Vec<Entry>,
        meta: PostingMeta,
    ) -> Result<PostingOutcome, Error> {
        let request = PostingRequest::new(request_id, description, entries)?.with_meta(meta);
        let wire = post_request_to_wire(&request);
        let response = self
            .inner
            .clone()
            .post(wire)
            .await
            .map_err(peer_err)?
            .into_inner();
        let posting = response
            .posting
            .ok_or_else(|| Error::internal("accounting answered a post without a posting"))?;
        Ok(PostingOutcome {
            posting_id: posting.posting_id,
            replayed: response.replayed,
        })
    }

    /// The balance of `key` on its normal side (zero for an account never posted to).
    pub async fn balance(&self, key: &AccountKey) -> Result<Money, Error> {
        let response = self
            .inner
            .clone()
            .get_balance(pb::GetBalanceRequest {
                account: Some(account_to_wire(key)),
                as_of: String::new(),
            })
            .await
            .map_err(peer_err)?
            .into_inner();
        parse_signed(&response.balance, key.currency)
    }

    /// The posting id of `request_id`, or `None` when nothing was posted under it.
    pub async fn posting_id(&self, request_id: &str) -> Result<Option<String>, Error> {
        Ok(self.posting(request_id).await?.map(|p| p.posting_id))
    }

    /// The value date and bank reference of the posting under `request_id`, or `None` when
    /// nothing was posted under it (a correction of a posting carries the posting's own).
    pub async fn posting_meta(&self, request_id: &str) -> Result<Option<PostingMeta>, Error> {
        self.posting(request_id)
            .await?
            .map(|p| PostingMeta::parse(&p.value_date, &p.bank_reference))
            .transpose()
    }

    async fn posting(&self, request_id: &str) -> Result<Option<pb::Posting>, Error> {
        match self
            .inner
            .clone()
            .get_posting(pb::GetPostingRequest {
                request_id: request_id.to_string(),
            })
            .await
        {
            Ok(p) => Ok(Some(p.into_inner())),
            Err(s) => {
                let e = peer_err(s);
                if e.code == ErrorCode::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Parses a balance from the wire: a decimal that may be zero or negative.
fn parse_signed(value: &str, currency: Currency) -> Result<Money, Error> {
    let amount = rust_decimal::Decimal::from_str_exact(value)
        .map_err(|_| Error::internal(format!("accounting sent a balance {value:?}")))?;
    Money::new(amount, currency)
}
