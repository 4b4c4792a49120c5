//! ReopenDebit ([`crate::domain::reopen`]): a completed refund whose attempt the bank failed is
//! reopened. COMPLETED → REOPENING (the attempt recorded) → `refund-reopen:{refund}:{attempt}`
//! posted with the value date and bank reference of the completion it undoes (so the reserve
//! report of that date nets the two out: the bank never moved the money) → DEBITED. The refund
//! center's outbox repeats the request until it is answered; each step is idempotent.

use tuikuan_kernel::Error;

use super::Clearing;
use crate::domain::reopen::{
    check_completion, complete_request_id, next_step, reopen_postings, reopen_request_id,
    ReopenState, ReopenStep,
};
use crate::domain::Debit;
use crate::store;

/// Steps one reopen takes at most (begin, post, answer).
const MAX_STEPS: usize = 6;

impl Clearing {
    /// Reopens `attempt` of the refund's completed debit (see the module documentation).
    pub async fn reopen_debit(
        &self,
        refund_id: &str,
        attempt: u32,
        reason: &str,
    ) -> Result<Debit, Error> {
        for _ in 0..MAX_STEPS {
            let debit = self.debit(refund_id).await?;
            let reopens = self.reopens(refund_id).await?;
            let this = reopens.iter().find(|(a, _)| *a == attempt).map(|(_, s)| *s);
            match next_step(&debit, attempt, this) {
                ReopenStep::Done => return Ok(debit),
                ReopenStep::Fail(e) => return Err(e),
                ReopenStep::Begin => {
                    let (id, why, now_ms) = (
                        refund_id.to_string(),
                        reason.to_string(),
                        self.clock.now_ms(),
                    );
                    self.db
                        .run(move |c| store::reopen::begin_reopen(c, &id, attempt, &why, now_ms))
                        .await?;
                }
                ReopenStep::Post => {
                    let done = reopens
                        .iter()
                        .filter(|(_, s)| *s == ReopenState::Reopened)
                        .count();
                    let undone = complete_request_id(&debit, u32::try_from(done).unwrap_or(0));
                    let meta = self
                        .accounting
                        .posting_meta(&undone)
                        .await?
                        .unwrap_or_default();
                    let posting_id = self
                        .post_entries(
                            &reopen_request_id(refund_id, attempt),
                            &format!(
                                "refund {refund_id} reopened: the bank failed attempt {attempt}, \
                                 the customer is still owed"
                            ),
                            reopen_postings(&debit),
                            &meta,
                        )
                        .await?;
                    let (id, now_ms) = (refund_id.to_string(), self.clock.now_ms());
                    self.db
                        .run(move |c| {
                            store::reopen::finish_reopen(
                                c,
                                &id,
                                attempt,
                                posting_id.as_deref(),
                                now_ms,
                            )
                        })
                        .await?;
                    tracing::info!(refund_id, attempt, "debit reopened");
                }
            }
        }
        Err(Error::unavailable(format!(
            "reopen of refund {refund_id} did not settle; retry"
        )))
    }

    /// The refund's reopens: (attempt, state).
    async fn reopens(&self, refund_id: &str) -> Result<Vec<(u32, ReopenState)>, Error> {
        let id = refund_id.to_string();
        self.db
            .run(move |c| store::reopen::reopens_of(c, &id))
            .await
    }

    /// Refuses a completion naming a reopened attempt.
    pub(super) async fn check_completion(&self, debit: &Debit, attempt: u32) -> Result<(), Error> {
        let reopened: Vec<u32> = self
            .reopens(&debit.refund_id)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        check_completion(debit, attempt, &reopened)
    }

    /// The ledger key of the debit's completion: by the number of reopens before it.
    pub(super) async fn complete_key(&self, debit: &Debit) -> Result<String, Error> {
        let done = self
            .reopens(&debit.refund_id)
            .await?
            .iter()
            .filter(|(_, s)| *s == ReopenState::Reopened)
            .count();
        Ok(complete_request_id(
            debit,
            u32::try_from(done).unwrap_or(u32::MAX),
        ))
    }
}
