//! ReinstateDebit: a refund the platform had failed but the bank paid is taken from the merchant
//! again ([`crate::domain::reinstate`]). REVERSED → REINSTATING (counters taken again, the split
//! between balance and receivable stored) → `refund-reinstate:{refund}` posted → COMPLETED. Driven
//! by the same step loop as every other debit goal, so a retry or the recovery job finishes an
//! interrupted reinstatement with the same key.

use std::collections::BTreeMap;

use tuikuan_accounting::domain::{AccountKey, PostingMeta};
use tuikuan_kernel::{Error, ErrorCode};

use super::Clearing;
use crate::domain::reinstate::{plan_reinstatement, reinstate_postings, reinstate_request_id};
use crate::domain::{Debit, DebitStatus, Goal};
use crate::store;

impl Clearing {
    /// Reinstates a refund's debit (idempotent by refund id; see the module documentation).
    pub async fn reinstate_debit(&self, refund_id: &str, reason: &str) -> Result<Debit, Error> {
        let debit = self.debit(refund_id).await?;
        self.drive(debit, Goal::Reinstate, reason, &PostingMeta::default())
            .await
    }

    /// The receivers' available balances now (minor units).
    async fn receiver_balances(&self, debit: &Debit) -> Result<BTreeMap<String, i64>, Error> {
        let c = debit.currency();
        let mut balances = BTreeMap::new();
        for p in &debit.parts {
            let balance = self
                .accounting
                .balance(&AccountKey::merchant_settlement(&p.receiver_id, c))
                .await?;
            balances.insert(p.receiver_id.clone(), balance.to_minor());
        }
        Ok(balances)
    }

    /// REVERSED → REINSTATING: decides the split from the balances now and takes the counters.
    pub(super) async fn begin_reinstate(&self, debit: &Debit, reason: &str) -> Result<(), Error> {
        let parts = plan_reinstatement(debit, &self.receiver_balances(debit).await?);
        let now_ms = self.clock.now_ms();
        let (d, why) = (debit.clone(), reason.to_string());
        let moved = self
            .db
            .run(move |conn| store::reinstate::begin_reinstate(conn, &d, &parts, &why, now_ms))
            .await?;
        if moved {
            tracing::info!(refund_id = %debit.refund_id, "reinstatement started");
        }
        Ok(())
    }

    /// Posts `refund-reinstate:` and moves REINSTATING → COMPLETED. When the ledger refuses it
    /// because a receiver's balance fell since the split was decided, nothing was posted: the
    /// split is decided again and the step loop posts the new one.
    pub(super) async fn post_reinstate(
        &self,
        debit: &Debit,
        meta: &PostingMeta,
    ) -> Result<(), Error> {
        let d = debit.clone();
        let parts = self
            .db
            .run(move |conn| store::reinstate::reinstate_parts(conn, &d))
            .await?;
        let entries = reinstate_postings(debit, &parts)?;
        let posted = self
            .post_entries(
                &reinstate_request_id(&debit.refund_id),
                &format!(
                    "refund {} reinstated: the bank paid it, the merchant gives it again",
                    debit.refund_id
                ),
                entries,
                meta,
            )
            .await;
        match posted {
            Ok(posting_id) => {
                self.move_debit(
                    debit,
                    DebitStatus::Reinstating,
                    DebitStatus::Completed,
                    posting_id,
                    None,
                )
                .await
            }
            Err(e) if e.code == ErrorCode::InsufficientBalance => {
                let parts = plan_reinstatement(debit, &self.receiver_balances(debit).await?);
                tracing::info!(refund_id = %debit.refund_id, error = %e.message, "reinstatement refused by the ledger; split decided again");
                let id = debit.refund_id.clone();
                self.db
                    .run(move |conn| store::reinstate::replan_reinstate(conn, &id, &parts))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
