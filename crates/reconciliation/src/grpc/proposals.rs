//! Four eyes (双人复核) on discrepancy resolutions: `ResolveDiscrepancy` does not resolve when
//! asked. It checks the request against the discrepancy as it stands (what would be refused at
//! approval is refused now), keeps the request as a proposal on the reconciliation center's staff
//! desk and answers the discrepancy with the proposal in the response metadata
//! ([`tuikuan_auth::answer`]). When a second finance operator approves, [`ReconExecutor`] runs the
//! request through [`resolve`] — the one code path of a resolution, whatever its effects — as the
//! approver. A resolution interrupted by a peer outage leaves the proposal APPROVED and the
//! discrepancy RESOLVING: the approver approves again and the resolution resumes; one that
//! finished before its proposal was marked is recognised and not run again.

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};
use tuikuan_auth::domain::Proposal;
use tuikuan_auth::{Action, Desk, Draft, Executed, Executor, Staff};
use tuikuan_kernel::{Error, Result};
use tuikuan_proto::prost::Message;
use tuikuan_proto::reconciliation::v1 as pb;
use tuikuan_proto::status::grpc_err;

use super::{discrepancy_to_wire, GrpcPeers};
use crate::domain::{check_resolve, plan_resolution, Discrepancy, DiscrepancyStatus, Resolution};
use crate::engine::{describe, Engine};

/// The resolution a request asks for.
fn resolution_of(req: &pb::ResolveDiscrepancyRequest) -> Result<Resolution> {
    match pb::Resolution::try_from(req.resolution) {
        Ok(pb::Resolution::BankWins) => Ok(Resolution::BankWins),
        Ok(pb::Resolution::PlatformWins) => Ok(Resolution::PlatformWins),
        _ => Err(Error::field(
            "resolution",
            "must be BANK_WINS or PLATFORM_WINS",
        )),
    }
}

/// Resolves a discrepancy as `operator`: the one code path of every resolution.
pub async fn resolve(
    engine: &Engine<GrpcPeers>,
    req: &pb::ResolveDiscrepancyRequest,
    operator: &str,
) -> Result<Discrepancy> {
    let resolution = resolution_of(req)?;
    engine
        .resolve_with_evidence(
            &req.discrepancy_id,
            resolution,
            operator,
            &req.reason,
            &req.evidence,
        )
        .await
}

/// Runs the reconciliation center's approved proposals.
#[derive(Clone)]
pub struct ReconExecutor {
    engine: Engine<GrpcPeers>,
}

impl std::fmt::Debug for ReconExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReconExecutor")
    }
}

impl ReconExecutor {
    pub fn new(engine: Engine<GrpcPeers>) -> ReconExecutor {
        ReconExecutor { engine }
    }
}

impl Executor for ReconExecutor {
    fn execute(&self, p: Proposal, approver: Staff) -> BoxFuture<'static, Result<Executed>> {
        let engine = self.engine.clone();
        Box::pin(async move {
            let bytes = hex::decode(&p.payload).map_err(|e| {
                Error::internal(format!(
                    "proposal {}: unreadable payload: {e}",
                    p.proposal_id
                ))
            })?;
            let req = pb::ResolveDiscrepancyRequest::decode(bytes.as_slice()).map_err(|e| {
                Error::internal(format!(
                    "proposal {}: unreadable payload: {e}",
                    p.proposal_id
                ))
            })?;
            let name = approver.operator.name.as_str();
            let before = engine.get_discrepancy(&req.discrepancy_id).await?;
            // Finished by an earlier run of this approval whose mark was lost: done once.
            let resolved_by_it = before.status == DiscrepancyStatus::Resolved
                && before.resolution == Some(resolution_of(&req)?)
                && before.operator == name;
            if resolved_by_it {
                return Ok(Executed::new(describe(&before), describe(&before)));
            }
            let after = resolve(&engine, &req, name).await?;
            Ok(Executed::new(
                describe(&before),
                format!("{} ({})", describe(&after), after.actions),
            ))
        })
    }
}

/// `ResolveDiscrepancy`: a proposal, answered with the discrepancy as it stands.
pub async fn propose(
    engine: &Engine<GrpcPeers>,
    desk: &Desk,
    request: Request<pb::ResolveDiscrepancyRequest>,
) -> Result<Response<pb::Discrepancy>, Status> {
    // The request may name the operator only as the token's (a service's own tests name one).
    let operator = tuikuan_auth::acting_name(&request, &request.get_ref().operator, "operator")?;
    let mut staff = tuikuan_auth::staff(&request)?;
    staff.operator.name = operator.clone();
    let mut req = request.into_inner();
    req.operator = String::new();
    let (p, d) = async {
        let resolution = resolution_of(&req)?;
        let d = engine.get_discrepancy(&req.discrepancy_id).await?;
        // What the approval would refuse is refused now.
        check_resolve(&d, resolution, &operator, &req.reason)?;
        plan_resolution(&d, resolution, &req.evidence)?;
        let draft = Draft {
            action: Action::ReconResolve,
            subject: req.discrepancy_id.clone(),
            amount: d.bank_amount.or(d.platform_amount),
            summary: format!("{} {}", resolution.as_str(), describe(&d)),
            payload: hex::encode(req.encode_to_vec()),
            reason: req.reason.clone(),
        };
        let executor = ReconExecutor::new(engine.clone());
        let p = desk.propose(&staff, draft, &executor).await?;
        Ok::<_, Error>((p, engine.get_discrepancy(&req.discrepancy_id).await?))
    }
    .await
    .map_err(grpc_err)?;
    Ok(tuikuan_auth::answer::answer(discrepancy_to_wire(&d), &p))
}
