//! How a four-eyes action answers its original RPC: the body is the subject as it stands (unchanged
//! while the proposal waits; changed when one operator sufficed and the action ran), and two
//! response metadata entries name the proposal:
//!
//! - `tk-proposal-id`: the proposal (`refund-…`), to show, approve, reject or cancel;
//! - `tk-proposal-status`: `PENDING` (a second operator must approve), or `EXECUTED` when the
//!   amount was below the action's single-operator threshold.
//!
//! Keeping the answer's message type unchanged keeps the wire change to these two entries.

use crate::domain::Proposal;

/// The response metadata key of the proposal id.
pub const PROPOSAL_ID_KEY: &str = "tk-proposal-id";
/// The response metadata key of the proposal's status.
pub const PROPOSAL_STATUS_KEY: &str = "tk-proposal-status";

/// `body` as the answer to the RPC that proposed `p`.
pub fn answer<T>(body: T, p: &Proposal) -> tonic::Response<T> {
    let mut response = tonic::Response::new(body);
    // Proposal ids and statuses are ASCII (`{service}-{uuid}`, `PENDING`).
    if let Ok(v) = p.proposal_id.parse() {
        response.metadata_mut().insert(PROPOSAL_ID_KEY, v);
    }
    if let Ok(v) = p.status.as_str().parse() {
        response.metadata_mut().insert(PROPOSAL_STATUS_KEY, v);
    }
    response
}

/// The proposal an answer names, if any: its id and status.
pub fn proposal_of(metadata: &tonic::metadata::MetadataMap) -> Option<(String, String)> {
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Some((
        text(PROPOSAL_ID_KEY)?,
        text(PROPOSAL_STATUS_KEY).unwrap_or_default(),
    ))
}
