//! Four eyes (双人复核) on error refunds (差错退款): `CreateErrorRefund` does not refund when asked.
//! It checks the request against the trade as it stands (the trade exists, the error-refund rules
//! hold; a repeat of an error refund already made answers that refund), keeps the request as a proposal on the business
//! layer's staff desk and answers an empty `Refund` with the proposal in the response metadata
//! ([`tuikuan_auth::answer`]). When a second operator (ops or finance) approves, [`ErrorRefunds`]
//! creates the refund through the same code path as before, as the approver; the refund number
//! (`ERR-<trade_id>`) makes a repeated approval return the same refund, never a second one.

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};
use tuikuan_auth::domain::{Proposal, ProposalStatus};
use tuikuan_auth::{Action, Draft, Executed, Executor, Staff};
use tuikuan_kernel::{Error, Result};
use tuikuan_proto::business::v1 as pb;
use tuikuan_proto::prost::Message;
use tuikuan_proto::status::grpc_err;

use super::{kind_from_wire, refund_to_wire, trade_not_found, Business};
use crate::domain::operator::{Operator, ERROR_REFUND_ROLES};
use crate::domain::{check_error_refundable, ErrorRefundRequest, MerchantRefund};
use crate::store;

/// The business layer's operator for a staff caller allowed to raise error refunds.
fn operator_of(staff: &Staff) -> Result<Operator> {
    let op = Operator::verified(
        &staff.operator.name,
        staff.operator.roles.iter().map(|r| r.as_str()),
    )?;
    op.require(ERROR_REFUND_ROLES, "raise an error refund")?;
    Ok(op)
}

fn request_of(r: &pb::CreateErrorRefundRequest) -> Result<ErrorRefundRequest> {
    ErrorRefundRequest::validate(
        &r.merchant_id,
        &r.order_no,
        kind_from_wire(r.kind),
        &r.amount,
        &r.currency,
        &r.reason,
    )
}

/// One line for people about an error refund.
fn describe(r: &MerchantRefund) -> String {
    format!(
        "refund {} ({}) {} {}",
        r.merchant_refund_no, r.refund_id, r.amount, r.chain_state
    )
}

/// Runs the business layer's approved proposals (error refunds).
#[derive(Clone)]
pub struct ErrorRefunds {
    svc: Business,
}

impl std::fmt::Debug for ErrorRefunds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorRefunds")
    }
}

impl Executor for ErrorRefunds {
    fn execute(&self, p: Proposal, approver: Staff) -> BoxFuture<'static, Result<Executed>> {
        let svc = self.svc.clone();
        Box::pin(async move {
            let unreadable = |e: String| {
                Error::internal(format!(
                    "proposal {}: unreadable payload: {e}",
                    p.proposal_id
                ))
            };
            let bytes = hex::decode(&p.payload).map_err(|e| unreadable(e.to_string()))?;
            let r = pb::CreateErrorRefundRequest::decode(bytes.as_slice())
                .map_err(|e| unreadable(e.to_string()))?;
            let req = request_of(&r)?;
            let before = format!("no error refund of {} {}", req.merchant_id, req.order_no);
            let refund = svc
                .create_error_refund(req, operator_of(&approver)?)
                .await?;
            Ok(Executed::new(before, describe(&refund)))
        })
    }
}

impl Business {
    /// The executor of the business layer's proposals.
    pub fn executor(&self) -> ErrorRefunds {
        ErrorRefunds { svc: self.clone() }
    }

    /// `CreateErrorRefund`: a proposal; answered with the refund only when one operator sufficed.
    pub(crate) async fn propose_error_refund(
        &self,
        request: Request<pb::CreateErrorRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        // The request may name the operator only as the token's (a service's own tests name one).
        let name = tuikuan_auth::acting_name(&request, &request.get_ref().operator, "operator")?;
        let mut staff = tuikuan_auth::staff(&request)?;
        staff.operator.name = name;
        let mut r = request.into_inner();
        r.operator = String::new();
        let (p, refund) = async {
            operator_of(&staff)?;
            let req = request_of(&r)?;
            let (m, o, cipher) = (
                req.merchant_id.clone(),
                req.order_no.clone(),
                self.cipher.clone(),
            );
            let trade = self
                .db
                .run(move |c| store::trade_by_order(c, &cipher, &m, &o))
                .await?
                .ok_or_else(|| trade_not_found(&req.order_no))?;
            if self.error_refund_of(&trade.trade_id).await?.is_some() {
                // A repeat of an error refund already made answers that refund (or
                // IDEMPOTENCY_CONFLICT for other content), as before four eyes: it moves nothing.
                let refund = self.create_error_refund(req, operator_of(&staff)?).await?;
                return Ok::<_, Error>((None, Some(refund)));
            }
            // What the approval would refuse is refused now.
            check_error_refundable(&trade, &req)?;
            let draft = Draft {
                action: Action::ErrorRefund,
                subject: trade.trade_id.clone(),
                amount: Some(req.amount),
                summary: format!(
                    "error refund ({}) of {} order {} (trade {}): {}",
                    req.kind.as_str(),
                    req.merchant_id,
                    req.order_no,
                    trade.trade_id,
                    req.amount
                ),
                payload: hex::encode(r.encode_to_vec()),
                reason: req.reason.clone(),
            };
            let p = self.desk.propose(&staff, draft, &self.executor()).await?;
            let refund = match p.status {
                ProposalStatus::Executed => self.error_refund_of(&trade.trade_id).await?,
                _ => None,
            };
            Ok((Some(p), refund))
        }
        .await
        .map_err(grpc_err)?;
        let body = refund.as_ref().map(refund_to_wire).unwrap_or_default();
        Ok(match p {
            Some(p) => tuikuan_auth::answer::answer(body, &p),
            None => Response::new(body),
        })
    }

    async fn error_refund_of(&self, trade_id: &str) -> Result<Option<MerchantRefund>> {
        let id = trade_id.to_string();
        self.db.run(move |c| store::error_refund_of(c, &id)).await
    }
}
