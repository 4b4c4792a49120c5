//! `ReserveReport`: the ledger's movements of a channel's reserve bank account on one value date
//! beside the bank's statement ([`crate::domain::reserve_report`]).

use tonic::{Request, Response, Status};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{statement, Currency, Error, Money};
use tuikuan_proto::accounting::v1 as pb;
use tuikuan_proto::status::grpc_err;

use super::Accounting;
use crate::domain::journal::date_text;
use crate::domain::reserve_report::{movements, reconcile, ReserveReport};
use crate::domain::{AccountKey, AccountType, DateRange, Posting, MAX_PAGE};

impl Accounting {
    /// Every posting with value date in `dates` that touches `key`, in posting order.
    async fn postings_between(
        &self,
        key: &AccountKey,
        dates: DateRange,
    ) -> Result<Vec<Posting>, Error> {
        let mut out: Vec<Posting> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_postings(Some(key.clone()), dates, after.clone(), MAX_PAGE)
                .await?;
            let full = page.len() == MAX_PAGE;
            after = page.last().map(|p| p.posting_id.clone());
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// The reserve report of `channel` in `currency` on `date` against `rows`.
    pub async fn reserve_report(
        &self,
        channel: &str,
        currency: Currency,
        date: chrono::NaiveDate,
        rows: &[statement::StatementRow],
    ) -> Result<ReserveReport, Error> {
        let dates = DateRange::day(date);
        let mut postings = Vec::new();
        for t in [AccountType::ChannelReserve, AccountType::PlatformInReserve] {
            let key = AccountKey {
                account_type: t,
                owner: channel.to_string(),
                currency,
            };
            postings.extend(self.postings_between(&key, dates).await?);
        }
        postings.sort_by(|a, b| a.posting_id.cmp(&b.posting_id));
        postings.dedup_by(|a, b| a.posting_id == b.posting_id);
        Ok(reconcile(
            channel,
            currency,
            date,
            &movements(&postings, channel, currency),
            rows,
        ))
    }
}

fn signed(minor: Option<i64>, currency: Currency) -> String {
    minor
        .map(|m| Money::from_minor(m, currency).amount_string())
        .unwrap_or_default()
}

pub(super) async fn reserve_report(
    svc: &Accounting,
    request: Request<pb::ReserveReportRequest>,
) -> Result<Response<pb::ReserveReportResponse>, Status> {
    let r = request.into_inner();
    validate_external_id(&r.channel, "channel").map_err(grpc_err)?;
    let currency = if r.currency.is_empty() {
        Currency::Cny
    } else {
        Currency::parse(&r.currency, "currency").map_err(grpc_err)?
    };
    let date = crate::domain::journal::parse_optional_date(&r.date, "date")
        .map_err(grpc_err)?
        .ok_or_else(|| grpc_err(Error::field("date", "is required")))?;
    let text = std::str::from_utf8(&r.statement)
        .map_err(|_| grpc_err(Error::field("statement", "must be UTF-8")))?;
    let rows = statement::parse(text).map_err(grpc_err)?;
    let report = svc
        .reserve_report(&r.channel, currency, date, &rows)
        .await
        .map_err(grpc_err)?;
    Ok(Response::new(pb::ReserveReportResponse {
        channel: report.channel.clone(),
        currency: currency.code().to_string(),
        date: date_text(date),
        lines: report
            .lines
            .iter()
            .map(|l| pb::ReserveReportLine {
                status: l.status.as_str().to_string(),
                reference: l.reference.clone(),
                ledger_amount: signed(l.ledger_minor, currency),
                bank_amount: signed(l.bank_minor, currency),
                postings: l.postings.clone(),
                explanation: l.explanation.clone(),
            })
            .collect(),
        ledger_net: signed(Some(report.ledger_net_minor), currency),
        bank_net: signed(Some(report.bank_net_minor), currency),
        differences: report.differences() as u32,
    }))
}
