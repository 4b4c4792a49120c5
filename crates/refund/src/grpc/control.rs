//! Risk holds, manual controls, the audit trail and the error-refund interface: the
//! `RefundControlService` and `ErrorRefundService` handlers and the [`RefundCenter`] methods
//! behind them.
//!
//! # Operator identity
//!
//! Staff RPCs act as the operator of the verified operator token that the staff guard
//! (`tuikuan_auth::Guarded`, in front of every server of the refund center) put into the
//! request; the guard has already checked the permission table, and [`Operator::authorize`]
//! narrows it down where the request decides the action (confirm succeeded or failed). Headers
//! that merely claim an identity (`x-operator-*`) are dropped by the guard.

use tonic::{Request, Response, Status};
use tuikuan_kernel::id::{new_id, validate_external_id};
use tuikuan_kernel::{Error, ErrorCode, Money, Result};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::payout::v1 as payout;
use tuikuan_proto::refund::v1 as pb;
use tuikuan_proto::status::{grpc_err, peer_err};

use pb::error_refund_service_server::ErrorRefundService;
use pb::refund_control_service_server::RefundControlService;

use super::{
    list_limit, new_refund_from_wire, optional_id, order_to_wire, transition_in, Moved,
    RefundCenter,
};
use crate::domain::control::{
    evaluate_rules, validate_reason, AuditEntry, ControlAction, Operator, RiskFacts, RiskRule,
    RiskRuleKind,
};
use crate::domain::{
    validate_text, CycleCounts, FinalStatus, HoldStatus, RefundMethod, RefundOrder, RefundStatus,
};
use crate::store::{self, RefundFilter};

/// The operator of a request: the verified token's (`UNAUTHENTICATED` without one).
pub fn operator_of<T>(request: &Request<T>) -> Result<Operator> {
    let staff = request
        .extensions()
        .get::<tuikuan_auth::Staff>()
        .ok_or_else(|| {
            Error::new(
                ErrorCode::Unauthenticated,
                "an operator token is required: authorization: Bearer <token> (tuikuan ctl login)",
            )
        })?;
    Ok(Operator::with_roles(
        &staff.operator.name,
        staff.operator.roles.iter().map(|r| r.as_str()),
    ))
}

impl RefundCenter {
    /// The first risk rule that holds a new order, with every matching rule's reason.
    pub(crate) async fn evaluate_risk(
        &self,
        order: &RefundOrder,
        now_ms: i64,
    ) -> Result<Option<(String, String)>> {
        let card_hash = self.vault.keyed_hash(&order.payer_card_no);
        let merchant = order.merchant_id.clone();
        let channel = order.channel.clone();
        let (rules, merchant_recent, card_recent) = self
            .db
            .run(move |c| {
                let rules: Vec<RiskRule> = store::list_risk_rules(c)?
                    .into_iter()
                    .filter(|r| r.enabled && r.channel.as_ref().is_none_or(|ch| *ch == channel))
                    .collect();
                let (mut merchant_recent, mut card_recent) = (Vec::new(), Vec::new());
                for r in &rules {
                    let since = r.window_start_ms(now_ms);
                    match r.kind {
                        RiskRuleKind::MerchantVelocity => merchant_recent.push((
                            r.rule_id.clone(),
                            store::count_merchant_since(c, &merchant, since)?,
                        )),
                        RiskRuleKind::CardVelocity if !card_hash.is_empty() => card_recent.push((
                            r.rule_id.clone(),
                            store::count_card_since(c, &card_hash, since)?,
                        )),
                        _ => {}
                    }
                }
                Ok((rules, merchant_recent, card_recent))
            })
            .await?;
        let facts = RiskFacts {
            channel: order.channel.clone(),
            amount: order.amount,
            trade_paid_at_ms: order.trade_paid_at_ms,
            now_ms,
            merchant_recent,
            card_recent,
        };
        Ok(evaluate_rules(&rules, &facts))
    }

    /// Inserts or replaces a risk rule (role risk), audited under the rule's id.
    pub async fn upsert_risk_rule(&self, operator: &Operator, rule: RiskRule) -> Result<RiskRule> {
        operator.authorize(ControlAction::UpsertRiskRule)?;
        rule.validate()?;
        let now_ms = self.clock.now_ms();
        let saved = self
            .db
            .run(move |c| store::upsert_risk_rule(c, &rule, now_ms))
            .await?;
        tracing::info!(rule_id = %saved.rule_id, kind = %saved.kind, enabled = saved.enabled, operator = %operator, "risk rule saved");
        Ok(saved)
    }

    pub async fn list_risk_rules(&self) -> Result<Vec<RiskRule>> {
        self.db.run(store::list_risk_rules).await
    }

    /// Orders waiting for a risk decision, by refund id.
    pub async fn list_held(&self, after: Option<String>, limit: u32) -> Result<Vec<RefundOrder>> {
        self.list_refunds(RefundFilter {
            channel: None,
            refund_status: Some(RefundStatus::Processing),
            hold_status: Some(HoldStatus::Held),
            after,
            limit: i64::from(limit),
        })
        .await
    }

    pub async fn list_audit(
        &self,
        refund_id: Option<String>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        self.db
            .run(move |c| {
                store::list_audit(c, refund_id.as_deref(), after.as_deref(), i64::from(limit))
            })
            .await
    }

    /// Runs one manual action: checks the role and the reason, applies `change` guarded by the
    /// order's state, records the audit entry in the same transaction, then delivers what
    /// follows (finalisation steps of an order that became final; the payout of an order that
    /// may move again).
    pub(super) async fn control<F>(
        &self,
        refund_id: &str,
        operator: &Operator,
        action: ControlAction,
        reason: &str,
        change: F,
    ) -> Result<RefundOrder>
    where
        F: Fn(&mut RefundOrder, i64, &str) -> Result<()> + Send + 'static,
    {
        self.control_marked(refund_id, operator, action, reason, change, None)
            .await
            .map(|(_, order)| order)
    }

    /// [`RefundCenter::control`], for an approved four-eyes proposal when `mark` is given: the
    /// proposal is marked executed (with its audit entry) in the transaction of the change, and
    /// the change is refused when it is no longer APPROVED, so it runs at most once. Answers the
    /// order's control snapshot before, and the order after.
    pub(crate) async fn control_marked<F>(
        &self,
        refund_id: &str,
        operator: &Operator,
        action: ControlAction,
        reason: &str,
        change: F,
        mark: Option<super::proposals::Mark>,
    ) -> Result<(String, RefundOrder)>
    where
        F: Fn(&mut RefundOrder, i64, &str) -> Result<()> + Send + 'static,
    {
        operator.authorize(action)?;
        validate_reason(reason)?;
        validate_external_id(refund_id, "refund_id")?;
        let now_ms = self.clock.now_ms();
        let vault = self.vault.clone();
        let id = refund_id.to_string();
        let source = format!("{action} by {operator}");
        let (who, role, why) = (
            operator.id.clone(),
            operator.roles_text(),
            reason.to_string(),
        );
        let moved: Moved = self
            .db
            .transaction(move |conn| {
                let apply = |o: &mut RefundOrder, _: &crate::domain::Channel| {
                    change(o, now_ms, &source).map(|()| true)
                };
                let moved = transition_in(conn, &vault, &id, now_ms, &apply)?;
                let failed_row = moved.after.refund_status == RefundStatus::Failed
                    && matches!(
                        moved.after.method,
                        RefundMethod::FileUpload | RefundMethod::Offline
                    )
                    && !moved.after.bank_reference_id.is_empty();
                if failed_row {
                    // The batch row of a submitted file/offline attempt failed with it (a row
                    // not submitted yet stays as it is).
                    store::fail_row(conn, &moved.after.bank_reference_id, &why)?;
                }
                store::insert_audit(
                    conn,
                    &AuditEntry {
                        audit_id: new_id("aud"),
                        refund_id: id.clone(),
                        action,
                        operator: who.clone(),
                        role: role.clone(),
                        reason: why.clone(),
                        at_ms: now_ms,
                        state_before: moved.before.control_snapshot(),
                        state_after: moved.after.control_snapshot(),
                    },
                )?;
                if let Some(mark) = &mark {
                    mark.executed(conn, &moved, now_ms)?;
                }
                Ok(moved)
            })
            .await?;
        tracing::info!(
            refund_id,
            action = %action,
            operator = %operator,
            refund_status = %moved.after.refund_status,
            "manual action"
        );
        self.deliver_if_final(&moved).await;
        if moved.after.is_due_for_payout() {
            let mut counts = CycleCounts::default();
            if let Err(e) = self.dispatch_payout(&moved.after, &mut counts).await {
                tracing::warn!(refund_id, code = %e.code, error = %e.message, "payout dispatch failed; retried later");
            }
        }
        Ok((
            moved.before.control_snapshot(),
            self.reread(refund_id).await?,
        ))
    }

    /// HELD → released (role risk); dispatch continues as normal.
    pub async fn release_hold(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        self.control(
            refund_id,
            operator,
            ControlAction::ReleaseHold,
            reason,
            |o, _, _| o.release_hold(),
        )
        .await
    }

    /// HELD → final FAILED (role risk): the debit is reversed and the business layer told.
    pub async fn reject_hold(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        let why = reason.to_string();
        self.control(
            refund_id,
            operator,
            ControlAction::RejectHold,
            reason,
            move |o, now_ms, source| o.reject_hold(&why, source, now_ms),
        )
        .await
    }

    /// Stops automatic processing (role ops).
    pub async fn suspend(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        self.control(
            refund_id,
            operator,
            ControlAction::Suspend,
            reason,
            |o, _, _| o.suspend(),
        )
        .await
    }

    /// Undoes a suspension (role ops).
    pub async fn resume(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        self.control(
            refund_id,
            operator,
            ControlAction::Resume,
            reason,
            |o, _, _| o.resume(),
        )
        .await
    }

    /// Terminates an order before submission (role ops): final FAILED, the money goes back. For
    /// an interface or payout attempt, the bank (or payout center) is asked first whether it has
    /// the attempt (an earlier submission whose answer was lost); if it does, or cannot say, the
    /// order is not terminated.
    pub async fn terminate(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        operator.authorize(ControlAction::Terminate)?;
        validate_reason(reason)?;
        let order = self.reread(refund_id).await?;
        if order.not_handed_over() && !order.refund_status.is_final() {
            self.ensure_not_at_peer(&order).await?;
        }
        let why = reason.to_string();
        let reference = order.bank_reference_id.clone();
        self.control(
            refund_id,
            operator,
            ControlAction::Terminate,
            reason,
            move |o, now_ms, source| {
                if o.bank_reference_id != reference {
                    return Err(Error::new(
                        ErrorCode::InvalidStateTransition,
                        format!(
                            "refund {} moved to attempt {} while terminating; check it and retry",
                            o.refund_id, o.attempt
                        ),
                    ));
                }
                o.terminate(&why, source, now_ms)
            },
        )
        .await
    }

    /// The bank or the payout center must not have the current (pending) attempt.
    async fn ensure_not_at_peer(&self, order: &RefundOrder) -> Result<()> {
        let reference = order.bank_reference_id.clone();
        if reference.is_empty() {
            return Ok(());
        }
        let has_it = |what: &str| {
            Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "refund {} cannot TERMINATE: {what} already has attempt {} ({reference}); \
                     the submission is in flight, so finance must force-fail it if it fails",
                    order.refund_id, order.attempt
                ),
            )
        };
        let cannot_tell = |e: Error| {
            Error::unavailable(format!(
                "cannot confirm that attempt {reference} of refund {} was never submitted ({}: \
                 {}); retry",
                order.refund_id, e.code, e.message
            ))
        };
        match order.method {
            RefundMethod::Interface => {
                let answer = self
                    .bank
                    .clone()
                    .query_refund(bank::QueryRequest {
                        id: reference.clone(),
                    })
                    .await
                    .map_err(peer_err);
                match answer {
                    Ok(tx) if tx.get_ref().status == bank::TxStatus::TxRejected as i32 => Ok(()),
                    Ok(_) => Err(has_it("the bank")),
                    Err(e) if matches!(e.code, ErrorCode::RefundNotFound | ErrorCode::NotFound) => {
                        Ok(())
                    }
                    Err(e) => Err(cannot_tell(e)),
                }
            }
            RefundMethod::Payout => {
                let Some(client) = &self.payout else {
                    return Ok(());
                };
                let answer = client
                    .clone()
                    .get_payout(payout::GetPayoutRequest {
                        payout_id: reference.clone(),
                    })
                    .await
                    .map_err(peer_err);
                match answer {
                    Ok(_) => Err(has_it("the payout center")),
                    Err(e) if matches!(e.code, ErrorCode::PayoutNotFound | ErrorCode::NotFound) => {
                        Ok(())
                    }
                    Err(e) => Err(cannot_tell(e)),
                }
            }
            RefundMethod::FileUpload | RefundMethod::Offline => Ok(()),
        }
    }

    /// Finance decides the refund failed (role finance): final FAILED, the money goes back.
    pub async fn force_fail(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
    ) -> Result<RefundOrder> {
        self.force_fail_marked(refund_id, operator, reason, None)
            .await
            .map(|(_, order)| order)
    }

    /// [`RefundCenter::force_fail`], marking an approved proposal executed with it.
    pub(crate) async fn force_fail_marked(
        &self,
        refund_id: &str,
        operator: &Operator,
        reason: &str,
        mark: Option<super::proposals::Mark>,
    ) -> Result<(String, RefundOrder)> {
        let why = reason.to_string();
        self.control_marked(
            refund_id,
            operator,
            ControlAction::ForceFail,
            reason,
            move |o, now_ms, source| o.force_fail(&why, source, now_ms),
            mark,
        )
        .await
    }

    /// The outcome of a SUBMITTED offline or file-upload attempt, confirmed by hand (finance;
    /// ops may confirm SUCCEEDED): final, with the same steps as reconciliation.
    pub async fn confirm_outcome(
        &self,
        refund_id: &str,
        operator: &Operator,
        status: FinalStatus,
        reason: &str,
        bank_reference_id: &str,
    ) -> Result<RefundOrder> {
        self.confirm_outcome_marked(refund_id, operator, status, reason, bank_reference_id, None)
            .await
            .map(|(_, order)| order)
    }

    /// [`RefundCenter::confirm_outcome`], marking an approved proposal executed with it.
    pub(crate) async fn confirm_outcome_marked(
        &self,
        refund_id: &str,
        operator: &Operator,
        status: FinalStatus,
        reason: &str,
        bank_reference_id: &str,
        mark: Option<super::proposals::Mark>,
    ) -> Result<(String, RefundOrder)> {
        let action = match status {
            FinalStatus::Succeeded => ControlAction::ConfirmSucceeded,
            FinalStatus::Failed => ControlAction::ConfirmFailed,
        };
        let why = reason.to_string();
        let reference = bank_reference_id.to_string();
        self.control_marked(
            refund_id,
            operator,
            action,
            reason,
            move |o, now_ms, source| {
                check_attempt(o, &reference, action)?;
                o.confirm_outcome(status, &why, source, now_ms).map(|_| ())
            },
            mark,
        )
        .await
    }
}

/// `INVALID_STATE_TRANSITION` unless `reference` (empty: any) is the order's current attempt.
pub(crate) fn check_attempt(o: &RefundOrder, reference: &str, action: ControlAction) -> Result<()> {
    if !reference.is_empty() && reference != o.bank_reference_id {
        return Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "refund {} cannot {action}: {reference} is not its current attempt ({} {})",
                o.refund_id, o.method, o.bank_reference_id
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Wire conversions

fn rule_kind_from_wire(v: i32) -> Result<RiskRuleKind> {
    match pb::RiskRuleKind::try_from(v) {
        Ok(pb::RiskRuleKind::AmountAbove) => Ok(RiskRuleKind::AmountAbove),
        Ok(pb::RiskRuleKind::MerchantVelocity) => Ok(RiskRuleKind::MerchantVelocity),
        Ok(pb::RiskRuleKind::CardVelocity) => Ok(RiskRuleKind::CardVelocity),
        Ok(pb::RiskRuleKind::SoonAfterPayment) => Ok(RiskRuleKind::SoonAfterPayment),
        Ok(pb::RiskRuleKind::Unspecified) => Err(Error::field("kind", "is required")),
        Err(_) => Err(Error::field("kind", format!("unknown value {v}"))),
    }
}

fn rule_kind_to_wire(k: RiskRuleKind) -> pb::RiskRuleKind {
    match k {
        RiskRuleKind::AmountAbove => pb::RiskRuleKind::AmountAbove,
        RiskRuleKind::MerchantVelocity => pb::RiskRuleKind::MerchantVelocity,
        RiskRuleKind::CardVelocity => pb::RiskRuleKind::CardVelocity,
        RiskRuleKind::SoonAfterPayment => pb::RiskRuleKind::SoonAfterPayment,
    }
}

fn rule_from_wire(r: pb::RiskRule) -> Result<RiskRule> {
    let kind = rule_kind_from_wire(r.kind)?;
    let threshold = if r.threshold_amount.is_empty() {
        None
    } else {
        Some(Money::parse(
            &r.threshold_amount,
            &r.currency,
            "threshold_amount",
        )?)
    };
    let rule = RiskRule {
        rule_id: if r.rule_id.is_empty() {
            new_id("risk")
        } else {
            r.rule_id
        },
        kind,
        channel: optional_id(r.channel, "channel")?,
        threshold,
        max_count: r.max_count,
        window_minutes: r.window_minutes,
        enabled: r.enabled,
        description: r.description,
        updated_at_ms: 0,
    };
    rule.validate()?;
    Ok(rule)
}

fn rule_to_wire(r: &RiskRule) -> pb::RiskRule {
    pb::RiskRule {
        rule_id: r.rule_id.clone(),
        kind: rule_kind_to_wire(r.kind) as i32,
        channel: r.channel.clone().unwrap_or_default(),
        threshold_amount: r
            .threshold
            .as_ref()
            .map_or(String::new(), Money::amount_string),
        currency: r
            .threshold
            .as_ref()
            .map_or(String::new(), |t| t.currency().code().to_string()),
        max_count: r.max_count,
        window_minutes: r.window_minutes,
        enabled: r.enabled,
        description: r.description.clone(),
        updated_at_ms: r.updated_at_ms,
    }
}

fn audit_to_wire(a: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        audit_id: a.audit_id.clone(),
        refund_id: a.refund_id.clone(),
        action: a.action.as_str().to_string(),
        operator: a.operator.clone(),
        role: a.role.clone(),
        reason: a.reason.clone(),
        at_ms: a.at_ms,
        state_before: a.state_before.clone(),
        state_after: a.state_after.clone(),
    }
}

/// The operator of a request, or the status to answer with.
/// The RPC side of the simple manual controls: the operator from the request's metadata, the
/// action, the order back on the wire.
impl RefundCenter {
    async fn control_rpc(
        &self,
        request: Request<pb::ControlRequest>,
        action: ControlAction,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let operator = who(&request)?;
        let r = request.into_inner();
        let (id, reason) = (r.refund_id.as_str(), r.reason.as_str());
        let order = match action {
            ControlAction::ReleaseHold => self.release_hold(id, &operator, reason).await,
            ControlAction::RejectHold => self.reject_hold(id, &operator, reason).await,
            ControlAction::Suspend => self.suspend(id, &operator, reason).await,
            ControlAction::Resume => self.resume(id, &operator, reason).await,
            ControlAction::Terminate => self.terminate(id, &operator, reason).await,
            other => Err(Error::internal(format!("{other} is not a simple control"))),
        }
        .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }
}

fn who<T>(request: &Request<T>) -> Result<Operator, Status> {
    operator_of(request).map_err(grpc_err)
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[tonic::async_trait]
impl ErrorRefundService for RefundCenter {
    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn create_error_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        let r = request.into_inner();
        let operator = r.operator.clone();
        let req = (|| {
            validate_text(&operator, "operator")?;
            let req = new_refund_from_wire(r)?;
            if !req.kind.is_error() {
                return Err(Error::field(
                    "kind",
                    "must be ERROR_DUPLICATE or ERROR_EXPIRED for an error refund",
                ));
            }
            Ok(req)
        })()
        .map_err(grpc_err)?;
        let order = RefundCenter::create_refund_by(self, req, &operator)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(order_to_wire(&order)))
    }
}

#[tonic::async_trait]
impl RefundControlService for RefundCenter {
    async fn upsert_risk_rule(
        &self,
        request: Request<pb::RiskRule>,
    ) -> Result<Response<pb::RiskRule>, Status> {
        let operator = who(&request)?;
        operator
            .authorize(ControlAction::UpsertRiskRule)
            .map_err(grpc_err)?;
        let rule = rule_from_wire(request.into_inner()).map_err(grpc_err)?;
        let saved = RefundCenter::upsert_risk_rule(self, &operator, rule)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(rule_to_wire(&saved)))
    }

    async fn list_risk_rules(
        &self,
        request: Request<pb::ListRiskRulesRequest>,
    ) -> Result<Response<pb::ListRiskRulesResponse>, Status> {
        who(&request)?;
        let rules = RefundCenter::list_risk_rules(self)
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListRiskRulesResponse {
            rules: rules.iter().map(rule_to_wire).collect(),
        }))
    }

    async fn list_held(
        &self,
        request: Request<pb::ListHeldRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        who(&request)?;
        let r = request.into_inner();
        let after = optional_id(r.after, "after").map_err(grpc_err)?;
        let orders = RefundCenter::list_held(self, after, list_limit(r.limit))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: orders.iter().map(order_to_wire).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn release_hold(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.control_rpc(request, ControlAction::ReleaseHold).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reject_hold(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.control_rpc(request, ControlAction::RejectHold).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn suspend(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.control_rpc(request, ControlAction::Suspend).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn resume(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.control_rpc(request, ControlAction::Resume).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn terminate(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.control_rpc(request, ControlAction::Terminate).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn force_fail(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.propose_force_fail(request).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn reinstate(
        &self,
        request: Request<pb::ReinstateRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.propose_reinstate(request).await
    }

    #[tracing::instrument(skip_all, fields(refund_id = %request.get_ref().refund_id))]
    async fn confirm_outcome(
        &self,
        request: Request<pb::ConfirmOutcomeRequest>,
    ) -> Result<Response<pb::RefundOrder>, Status> {
        self.propose_confirm(request).await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        who(&request)?;
        let r = request.into_inner();
        let (refund_id, after) = (|| {
            Ok::<_, Error>((
                optional_id(r.refund_id, "refund_id")?,
                optional_id(r.after, "after")?,
            ))
        })()
        .map_err(grpc_err)?;
        let entries = RefundCenter::list_audit(self, refund_id, after, list_limit(r.limit))
            .await
            .map_err(grpc_err)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.iter().map(audit_to_wire).collect(),
        }))
    }
}
