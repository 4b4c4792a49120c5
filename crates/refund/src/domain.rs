//! The refund center's domain: channels and their refund methods, refund orders with their two
//! status dimensions, the explicit state transitions, method selection at acceptance and the
//! finalisation steps. Pure: no storage, no RPC.
//!
//! A refund order carries two independent dimensions (DESIGN §5):
//! - [`SubmitStatus`]: whether the order was handed to its method (PENDING → SUBMITTED or
//!   SUBMIT_FAILED);
//! - [`RefundStatus`]: the money outcome (PROCESSING → SUCCEEDED or FAILED), made final only by
//!   reconciliation ([`RefundOrder::finalize`]).
//!
//! Besides them, [`BankStatus`] keeps what the bank last said. It only moves forward
//! ([`RefundOrder::apply_bank_event`]): a late, duplicated or out-of-order bank callback changes
//! nothing, and the bank never makes an order final.

use std::fmt;

use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money, Result};

/// How long after payment the original route (interface) takes refunds, unless the channel says
/// otherwise.
pub const DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS: u32 = 180;
/// The longest original-route window a channel may configure (ten years).
pub const MAX_ORIGINAL_ROUTE_WINDOW_DAYS: u32 = 3650;
/// The longest free-text field (reasons, payer names) accepted from outside, in characters.
pub const MAX_TEXT_LEN: usize = 512;
/// The longest card number accepted.
pub const MAX_CARD_NO_LEN: usize = 32;

const MS_PER_DAY: i64 = 86_400_000;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string form (storage and logs).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            /// Parses the stable string form.
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The route a payment came in by (通道类型).
    ChannelKind {
        /// 网银
        NetBanking => "NET_BANKING",
        /// 聚合 (WeChat / Alipay)
        Aggregated => "AGGREGATED",
        /// 快捷
        QuickPay => "QUICK_PAY",
        /// 代扣
        Withholding => "WITHHOLDING",
        /// 银联
        UnionPay => "UNIONPAY",
    }
);

string_enum!(
    /// How a refund reaches the customer.
    RefundMethod {
        /// 接口退款: the bank's refund API, sent by the interface cycle.
        Interface => "INTERFACE",
        /// 打款退款: pay the cardholder through the payout center.
        Payout => "PAYOUT",
        /// 上传文件退款: a daily spreadsheet uploaded to the bank's site.
        FileUpload => "FILE_UPLOAD",
        /// 线下退款: a daily spreadsheet sent by fax, e-mail or paper.
        Offline => "OFFLINE",
    }
);

string_enum!(
    /// Whether the order was handed to its method.
    SubmitStatus {
        Pending => "PENDING",
        Submitted => "SUBMITTED",
        SubmitFailed => "SUBMIT_FAILED",
    }
);

string_enum!(
    /// The money outcome. Only reconciliation (or, later, an audited manual action) makes it final.
    RefundStatus {
        Processing => "PROCESSING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
    }
);

string_enum!(
    /// What the bank last said about an order. Never final by itself.
    BankStatus {
        Accepted => "BANK_ACCEPTED",
        Processing => "BANK_PROCESSING",
        Succeeded => "BANK_SUCCEEDED",
        Failed => "BANK_FAILED",
    }
);

string_enum!(
    /// A finalisation step delivered through the outbox after an order became final.
    OutboxStep {
        /// clearing.CompleteDebit: refund in transit → channel reserve.
        ClearingComplete => "CLEARING_COMPLETE",
        /// clearing.ReverseDebit: refund in transit → back where it was debited from.
        ClearingReverse => "CLEARING_REVERSE",
        /// business.ReportRefundOutcome: the merchant-facing refund learns the outcome.
        NotifyBusiness => "NOTIFY_BUSINESS",
    }
);

impl ChannelKind {
    /// The kind's default refund methods, in order of preference (DESIGN §2.3).
    pub fn default_methods(self) -> Vec<RefundMethod> {
        match self {
            ChannelKind::NetBanking | ChannelKind::Aggregated => vec![RefundMethod::Interface],
            ChannelKind::QuickPay | ChannelKind::Withholding => vec![RefundMethod::Payout],
            ChannelKind::UnionPay => vec![RefundMethod::FileUpload],
        }
    }
}

impl RefundStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RefundStatus::Processing)
    }
}

impl BankStatus {
    /// Progress order of bank answers: ACCEPTED < PROCESSING < SUCCEEDED = FAILED.
    pub fn rank(self) -> u8 {
        match self {
            BankStatus::Accepted => 1,
            BankStatus::Processing => 2,
            BankStatus::Succeeded | BankStatus::Failed => 3,
        }
    }
}

/// A final refund outcome, as reconciliation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Succeeded,
    Failed,
}

impl FinalStatus {
    pub fn refund_status(self) -> RefundStatus {
        match self {
            FinalStatus::Succeeded => RefundStatus::Succeeded,
            FinalStatus::Failed => RefundStatus::Failed,
        }
    }

    pub fn from_refund_status(status: RefundStatus) -> Option<FinalStatus> {
        match status {
            RefundStatus::Processing => None,
            RefundStatus::Succeeded => Some(FinalStatus::Succeeded),
            RefundStatus::Failed => Some(FinalStatus::Failed),
        }
    }

    /// The outbox steps that deliver this outcome, in order: first the clearing posting, then the
    /// business notification (so the merchant hears of it only once the money is where it says).
    pub fn outbox_steps(self) -> [OutboxStep; 2] {
        match self {
            FinalStatus::Succeeded => [OutboxStep::ClearingComplete, OutboxStep::NotifyBusiness],
            FinalStatus::Failed => [OutboxStep::ClearingReverse, OutboxStep::NotifyBusiness],
        }
    }
}

/// One finalisation step of one order, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub refund_id: String,
    pub step: OutboxStep,
    /// Position among the order's steps; steps run in this order.
    pub ordinal: i32,
    pub done: bool,
    pub attempts: i32,
    pub last_error: String,
}

impl OutboxEntry {
    /// The steps an order that became `status` must deliver. The id is derived from the refund and
    /// the step, so the same step can never be written twice.
    pub fn for_final(refund_id: &str, status: FinalStatus) -> Vec<OutboxEntry> {
        status
            .outbox_steps()
            .iter()
            .zip(1..)
            .map(|(step, ordinal)| OutboxEntry {
                id: format!("{refund_id}:{step}"),
                refund_id: refund_id.to_string(),
                step: *step,
                ordinal,
                done: false,
                attempts: 0,
                last_error: String::new(),
            })
            .collect()
    }
}

/// What one run of the interface cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleCounts {
    /// Submissions sent to the bank.
    pub sent: u32,
    /// The bank accepted them (now SUBMITTED).
    pub accepted: u32,
    /// The bank refused them synchronously (now SUBMIT_FAILED, waiting for people).
    pub rejected: u32,
    /// No answer (transport error or a bank error): still PENDING, retried next cycle.
    pub errors: u32,
    /// Unfinished orders that wait for people (no automatic method can move them).
    pub waiting: u32,
}

/// What one outbox run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub delivered: u32,
    pub failed: u32,
    /// Steps still undelivered after the run.
    pub remaining: u32,
}

/// A configured channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub code: String,
    pub kind: ChannelKind,
    /// Methods in order of preference; empty means [`ChannelKind::default_methods`].
    pub methods: Vec<RefundMethod>,
    pub original_route_window_days: u32,
    pub bank_code: String,
}

impl Channel {
    /// Checks the configuration (ids, no repeated method, window bounds).
    pub fn validate(&self) -> Result<()> {
        validate_external_id(&self.code, "code")?;
        if !self.bank_code.is_empty() {
            validate_external_id(&self.bank_code, "bank_code")?;
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(Error::field("methods", format!("{m} is listed twice")));
            }
        }
        if self.original_route_window_days == 0
            || self.original_route_window_days > MAX_ORIGINAL_ROUTE_WINDOW_DAYS
        {
            return Err(Error::field(
                "original_route_window_days",
                format!("must be between 1 and {MAX_ORIGINAL_ROUTE_WINDOW_DAYS}"),
            ));
        }
        Ok(())
    }

    /// The methods that apply: the configured ones, or the kind's defaults.
    pub fn effective_methods(&self) -> Vec<RefundMethod> {
        if self.methods.is_empty() {
            self.kind.default_methods()
        } else {
            self.methods.clone()
        }
    }

    /// Whether the original route still takes a refund of a payment made at `paid_at_ms`.
    pub fn within_original_route_window(&self, paid_at_ms: i64, now_ms: i64) -> bool {
        let window_ms = i64::from(self.original_route_window_days) * MS_PER_DAY;
        now_ms.saturating_sub(paid_at_ms) <= window_ms
    }
}

/// A refund request as accepted from the business layer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub refund_id: String,
    pub merchant_id: String,
    pub trade_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    pub trade_paid_at_ms: i64,
    pub payer_card_no: String,
    pub payer_name: String,
}

impl NewRefund {
    /// Checks every field that [`Money::parse`] did not already check.
    pub fn validate(&self) -> Result<()> {
        validate_external_id(&self.refund_id, "refund_id")?;
        validate_external_id(&self.merchant_id, "merchant_id")?;
        validate_external_id(&self.trade_id, "trade_id")?;
        validate_external_id(&self.order_no, "order_no")?;
        validate_external_id(&self.channel, "channel")?;
        if !self.amount.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidAmount,
                "amount: must be greater than zero",
            ));
        }
        if self.trade_paid_at_ms <= 0 {
            return Err(Error::field("trade_paid_at_ms", "is required"));
        }
        if self.payer_card_no.len() > MAX_CARD_NO_LEN
            || !self.payer_card_no.chars().all(|c| c.is_ascii_digit())
        {
            return Err(Error::field(
                "payer_card_no",
                format!("must be at most {MAX_CARD_NO_LEN} digits"),
            ));
        }
        validate_text(&self.payer_name, "payer_name")?;
        Ok(())
    }

    /// A canonical form of the request's content: two requests with the same refund id are the
    /// same request exactly when their fingerprints are equal. Length-prefixed, so no field can
    /// bleed into the next.
    pub fn fingerprint(&self) -> String {
        let amount_minor = self.amount.to_minor().to_string();
        let paid = self.trade_paid_at_ms.to_string();
        let fields: [&str; 9] = [
            &self.merchant_id,
            &self.trade_id,
            &self.order_no,
            &self.channel,
            &amount_minor,
            self.amount.currency().code(),
            &paid,
            &self.payer_card_no,
            &self.payer_name,
        ];
        let mut out = String::from("v1");
        for f in fields {
            out.push('|');
            out.push_str(&f.len().to_string());
            out.push(':');
            out.push_str(f);
        }
        out
    }
}

/// Checks a free-text field: bounded, no control characters.
pub fn validate_text(value: &str, field: &str) -> Result<()> {
    if value.chars().count() > MAX_TEXT_LEN {
        return Err(Error::field(
            field,
            format!("longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::field(field, "must not contain control characters"));
    }
    Ok(())
}

/// The method chosen for a new order, and why it waits when the refund center cannot run it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPlan {
    pub method: RefundMethod,
    /// `Some(reason)`: no automatic method can take the order now; it waits for people.
    pub waiting_reason: Option<String>,
}

/// The method that takes over when the original route is closed (DESIGN §6).
pub const FALLBACK_METHOD: RefundMethod = RefundMethod::Payout;

/// The methods the refund center can run itself today.
pub fn method_is_automated(method: RefundMethod) -> bool {
    matches!(method, RefundMethod::Interface)
}

fn not_available_yet(method: RefundMethod) -> String {
    format!("refund method {method} is not available yet; waiting for manual handling")
}

/// Picks the method of a new order: the channel's first method. An interface refund of a payment
/// older than the channel's original-route window is not possible; the order then falls back to
/// [`FALLBACK_METHOD`]. Methods the refund center cannot run yet leave the order waiting for people
/// with a reason that says so.
pub fn plan_method(channel: &Channel, trade_paid_at_ms: i64, now_ms: i64) -> Result<MethodPlan> {
    let methods = channel.effective_methods();
    let first = *methods.first().ok_or_else(|| {
        Error::new(
            ErrorCode::NoRefundMethod,
            format!("channel {} has no refund method", channel.code),
        )
    })?;
    if first == RefundMethod::Interface
        && !channel.within_original_route_window(trade_paid_at_ms, now_ms)
    {
        let age_days = now_ms.saturating_sub(trade_paid_at_ms) / MS_PER_DAY;
        return Ok(MethodPlan {
            method: FALLBACK_METHOD,
            waiting_reason: Some(format!(
                "the trade was paid {age_days} days ago, outside channel {}'s original-route window \
                 of {} days, so an interface refund is not possible; {}",
                channel.code,
                channel.original_route_window_days,
                not_available_yet(FALLBACK_METHOD)
            )),
        });
    }
    if method_is_automated(first) {
        Ok(MethodPlan {
            method: first,
            waiting_reason: None,
        })
    } else {
        Ok(MethodPlan {
            method: first,
            waiting_reason: Some(not_available_yet(first)),
        })
    }
}

/// A refund order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub refund_id: String,
    pub merchant_id: String,
    pub trade_id: String,
    pub order_no: String,
    pub channel: String,
    pub amount: Money,
    pub trade_paid_at_ms: i64,
    pub payer_card_no: String,
    pub payer_name: String,
    pub method: RefundMethod,
    pub submit_status: SubmitStatus,
    pub refund_status: RefundStatus,
    /// What the bank last said; `None` before it said anything.
    pub bank_status: Option<BankStatus>,
    /// The sequence number of the last applied bank event; `None` before any.
    pub bank_seq: Option<u64>,
    pub bank_ref: String,
    /// Why the order waits or failed (human-readable).
    pub reason: String,
    /// No automatic method will move this order: it waits for people.
    pub waiting_manual: bool,
    pub fingerprint: String,
    pub created_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finalized_at_ms: Option<i64>,
    pub final_source: String,
    /// Finalisation steps not delivered yet (filled by the store).
    pub pending_steps: u32,
}

/// A bank answer or callback about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankEvent {
    pub status: BankStatus,
    pub sequence: u64,
    pub bank_ref: String,
    pub reason: String,
}

/// The result of a transition that may be a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order changed.
    Changed,
    /// The order already was in the requested state; nothing changed.
    Unchanged,
}

fn illegal(order: &RefundOrder, what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidStateTransition,
        format!(
            "refund {} cannot {what} from submit status {} and refund status {}",
            order.refund_id, order.submit_status, order.refund_status
        ),
    )
}

impl RefundOrder {
    /// A new order accepted from `request`, routed by `plan`.
    pub fn accept(request: NewRefund, plan: MethodPlan, now_ms: i64) -> RefundOrder {
        let fingerprint = request.fingerprint();
        let (reason, waiting_manual) = match plan.waiting_reason {
            Some(reason) => (reason, true),
            None => (String::new(), false),
        };
        RefundOrder {
            refund_id: request.refund_id,
            merchant_id: request.merchant_id,
            trade_id: request.trade_id,
            order_no: request.order_no,
            channel: request.channel,
            amount: request.amount,
            trade_paid_at_ms: request.trade_paid_at_ms,
            payer_card_no: request.payer_card_no,
            payer_name: request.payer_name,
            method: plan.method,
            submit_status: SubmitStatus::Pending,
            refund_status: RefundStatus::Processing,
            bank_status: None,
            bank_seq: None,
            bank_ref: String::new(),
            reason,
            waiting_manual,
            fingerprint,
            created_at_ms: now_ms,
            submitted_at_ms: None,
            finalized_at_ms: None,
            final_source: String::new(),
            pending_steps: 0,
        }
    }

    /// Whether the interface cycle may send this order to the bank.
    pub fn is_due_for_interface(&self) -> bool {
        self.method == RefundMethod::Interface
            && self.submit_status == SubmitStatus::Pending
            && self.refund_status == RefundStatus::Processing
            && !self.waiting_manual
    }

    /// The bank accepted the submission: PENDING → SUBMITTED. A bank status the bank already
    /// reported by callback (a callback can overtake the answer) is kept.
    pub fn submit_accepted(&mut self, bank_ref: &str, at_ms: i64) -> Result<()> {
        if self.submit_status != SubmitStatus::Pending
            || self.refund_status != RefundStatus::Processing
        {
            return Err(illegal(self, "be accepted by the bank"));
        }
        self.submit_status = SubmitStatus::Submitted;
        self.bank_status = Some(match self.bank_status {
            Some(current) if current.rank() > BankStatus::Accepted.rank() => current,
            _ => BankStatus::Accepted,
        });
        if !bank_ref.is_empty() {
            self.bank_ref = bank_ref.to_string();
        }
        self.submitted_at_ms = Some(at_ms);
        self.reason.clear();
        self.waiting_manual = false;
        Ok(())
    }

    /// The bank refused the submission synchronously: PENDING → SUBMIT_FAILED. Nothing happens at
    /// the bank; the order waits for people (a later method fallback picks it up from here).
    pub fn submit_refused(&mut self, bank_reason: &str) -> Result<()> {
        if self.submit_status != SubmitStatus::Pending
            || self.refund_status != RefundStatus::Processing
        {
            return Err(illegal(self, "be refused by the bank"));
        }
        let why = if bank_reason.is_empty() {
            "no reason given"
        } else {
            bank_reason
        };
        self.submit_status = SubmitStatus::SubmitFailed;
        self.reason = format!(
            "the bank refused the {} refund: {why}; no fallback method is available yet, \
             waiting for manual handling",
            self.method
        );
        self.waiting_manual = true;
        Ok(())
    }

    /// Applies a bank answer or callback. Monotone: ignored (returns `false`, nothing changes) when
    /// the order is final, the bank refused the submission, the sequence is not newer than the last
    /// applied one, or the status would go back. Never makes the order final.
    pub fn apply_bank_event(&mut self, event: &BankEvent) -> bool {
        if self.refund_status.is_final() || self.submit_status == SubmitStatus::SubmitFailed {
            return false;
        }
        if self.bank_seq.is_some_and(|seq| event.sequence <= seq) {
            return false;
        }
        if self
            .bank_status
            .is_some_and(|current| event.status.rank() < current.rank())
        {
            return false;
        }
        self.bank_status = Some(event.status);
        self.bank_seq = Some(event.sequence);
        if !event.bank_ref.is_empty() {
            self.bank_ref = event.bank_ref.clone();
        }
        if !event.reason.is_empty() {
            self.reason = event.reason.clone();
        }
        true
    }

    /// Makes the order final (reconciliation). Only from SUBMITTED + PROCESSING. Repeating the same
    /// final status is [`Outcome::Unchanged`]; a different one is `INVALID_STATE_TRANSITION`.
    pub fn finalize(
        &mut self,
        status: FinalStatus,
        reason: &str,
        source: &str,
        at_ms: i64,
    ) -> Result<Outcome> {
        if self.refund_status.is_final() {
            if self.refund_status == status.refund_status() {
                return Ok(Outcome::Unchanged);
            }
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "refund {} is already final as {}; it cannot become {}",
                    self.refund_id,
                    self.refund_status,
                    status.refund_status()
                ),
            ));
        }
        if self.submit_status != SubmitStatus::Submitted {
            return Err(illegal(self, &format!("become {}", status.refund_status())));
        }
        self.refund_status = status.refund_status();
        if !reason.is_empty() {
            self.reason = reason.to_string();
        }
        self.final_source = source.to_string();
        self.finalized_at_ms = Some(at_ms);
        self.waiting_manual = false;
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_kernel::Currency;

    const NOW: i64 = 1_800_000_000_000;

    fn channel(kind: ChannelKind, methods: Vec<RefundMethod>) -> Channel {
        Channel {
            code: "CH1".into(),
            kind,
            methods,
            original_route_window_days: DEFAULT_ORIGINAL_ROUTE_WINDOW_DAYS,
            bank_code: "ICBC".into(),
        }
    }

    fn request() -> NewRefund {
        NewRefund {
            refund_id: "rf-1".into(),
            merchant_id: "m1".into(),
            trade_id: "t1".into(),
            order_no: "o1".into(),
            channel: "CH1".into(),
            amount: Money::from_minor(1250, Currency::Cny),
            trade_paid_at_ms: NOW - MS_PER_DAY,
            payer_card_no: "6222000011112222".into(),
            payer_name: "张三".into(),
        }
    }

    fn order(submit: SubmitStatus, refund: RefundStatus) -> RefundOrder {
        let plan = plan_method(
            &channel(ChannelKind::NetBanking, vec![]),
            NOW - MS_PER_DAY,
            NOW,
        )
        .unwrap();
        let mut o = RefundOrder::accept(request(), plan, NOW);
        o.submit_status = submit;
        o.refund_status = refund;
        if submit == SubmitStatus::Submitted {
            o.bank_status = Some(BankStatus::Accepted);
            o.submitted_at_ms = Some(NOW);
        }
        o
    }

    #[test]
    fn default_methods_by_kind() {
        use ChannelKind::*;
        use RefundMethod::*;
        let table: Vec<(ChannelKind, Vec<RefundMethod>)> = ChannelKind::ALL
            .iter()
            .map(|k| (*k, k.default_methods()))
            .collect();
        assert_eq!(
            table,
            vec![
                (NetBanking, vec![Interface]),
                (Aggregated, vec![Interface]),
                (QuickPay, vec![Payout]),
                (Withholding, vec![Payout]),
                (UnionPay, vec![FileUpload]),
            ]
        );
        let configured = channel(QuickPay, vec![Interface, Payout]);
        assert_eq!(configured.effective_methods(), vec![Interface, Payout]);
    }

    #[test]
    fn string_forms_round_trip() {
        for k in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(k.as_str()), Some(*k));
        }
        for m in RefundMethod::ALL {
            assert_eq!(RefundMethod::parse(m.as_str()), Some(*m));
        }
        for s in BankStatus::ALL {
            assert_eq!(BankStatus::parse(s.as_str()), Some(*s));
        }
        for s in OutboxStep::ALL {
            assert_eq!(OutboxStep::parse(s.as_str()), Some(*s));
        }
        assert_eq!(SubmitStatus::parse("nope"), None);
    }

    #[test]
    fn channel_validation() {
        assert!(channel(ChannelKind::NetBanking, vec![]).validate().is_ok());
        let mut c = channel(
            ChannelKind::NetBanking,
            vec![RefundMethod::Interface, RefundMethod::Interface],
        );
        assert_eq!(c.validate().unwrap_err().code, ErrorCode::InvalidArgument);
        c.methods.clear();
        c.original_route_window_days = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .message
            .starts_with("original_route_window_days"));
        c.original_route_window_days = 30;
        c.code = "bad code".into();
        assert_eq!(c.validate().unwrap_err().code, ErrorCode::MalformedId);
    }

    #[test]
    fn request_validation_names_the_field() {
        assert!(request().validate().is_ok());
        let mut r = request();
        r.trade_paid_at_ms = 0;
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .starts_with("trade_paid_at_ms"));
        let mut r = request();
        r.payer_card_no = "6222-0000".into();
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .starts_with("payer_card_no"));
        let mut r = request();
        r.payer_name = "a\nb".into();
        assert!(r.validate().unwrap_err().message.starts_with("payer_name"));
        let mut r = request();
        r.order_no = String::new();
        assert!(r.validate().unwrap_err().message.starts_with("order_no"));
    }

    #[test]
    fn fingerprint_separates_fields() {
        let a = request();
        let mut b = request();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.amount = Money::from_minor(1251, Currency::Cny);
        assert_ne!(a.fingerprint(), b.fingerprint());
        // Moving characters between adjacent fields changes the fingerprint.
        let mut c = request();
        c.trade_id = "t".into();
        c.order_no = "1o1".into();
        let mut d = request();
        d.trade_id = "t1".into();
        d.order_no = "o1".into();
        assert_ne!(c.fingerprint(), d.fingerprint());
    }

    #[test]
    fn method_selection() {
        let recent = NOW - 10 * MS_PER_DAY;
        let plan = plan_method(&channel(ChannelKind::NetBanking, vec![]), recent, NOW).unwrap();
        assert_eq!(plan.method, RefundMethod::Interface);
        assert_eq!(plan.waiting_reason, None);

        let plan = plan_method(&channel(ChannelKind::QuickPay, vec![]), recent, NOW).unwrap();
        assert_eq!(plan.method, RefundMethod::Payout);
        assert_eq!(
            plan.waiting_reason.as_deref(),
            Some("refund method PAYOUT is not available yet; waiting for manual handling")
        );

        let plan = plan_method(&channel(ChannelKind::UnionPay, vec![]), recent, NOW).unwrap();
        assert_eq!(plan.method, RefundMethod::FileUpload);
        assert!(plan.waiting_reason.is_some());

        // Exactly at the window's edge the original route still works; one day past, it does not.
        let ch = channel(ChannelKind::Aggregated, vec![]);
        let edge = NOW - 180 * MS_PER_DAY;
        assert_eq!(plan_method(&ch, edge, NOW).unwrap().waiting_reason, None);
        let plan = plan_method(&ch, edge - MS_PER_DAY, NOW).unwrap();
        assert_eq!(plan.method, RefundMethod::Payout);
        let reason = plan.waiting_reason.unwrap();
        assert!(reason.contains("181 days ago"), "{reason}");
        assert!(reason.contains("window of 180 days"), "{reason}");
        assert!(reason.contains("waiting for manual handling"), "{reason}");

        // Only the first method decides.
        let ch = channel(
            ChannelKind::NetBanking,
            vec![RefundMethod::Offline, RefundMethod::Interface],
        );
        assert_eq!(
            plan_method(&ch, recent, NOW).unwrap().method,
            RefundMethod::Offline
        );
    }

    #[test]
    fn accepted_orders() {
        let o = order(SubmitStatus::Pending, RefundStatus::Processing);
        assert!(o.is_due_for_interface());
        assert_eq!(o.fingerprint, request().fingerprint());
        let plan = plan_method(&channel(ChannelKind::QuickPay, vec![]), NOW, NOW).unwrap();
        let waiting = RefundOrder::accept(request(), plan, NOW);
        assert!(waiting.waiting_manual && !waiting.is_due_for_interface());
    }

    fn ev(status: BankStatus, sequence: u64) -> BankEvent {
        BankEvent {
            status,
            sequence,
            bank_ref: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn bank_events_are_monotone() {
        let mut o = order(SubmitStatus::Submitted, RefundStatus::Processing);
        assert!(o.apply_bank_event(&ev(BankStatus::Processing, 2)));
        // Duplicate.
        assert!(!o.apply_bank_event(&ev(BankStatus::Processing, 2)));
        // Older sequence, even with a higher rank.
        assert!(!o.apply_bank_event(&ev(BankStatus::Succeeded, 1)));
        assert!(o.apply_bank_event(&ev(BankStatus::Succeeded, 4)));
        // Newer sequence but lower rank.
        assert!(!o.apply_bank_event(&ev(BankStatus::Processing, 5)));
        assert_eq!(o.bank_status, Some(BankStatus::Succeeded));
        assert_eq!(o.bank_seq, Some(4));
        // The bank never makes an order final.
        assert_eq!(o.refund_status, RefundStatus::Processing);
        // A callback that overtook the bank's answer is kept by submit_accepted.
        let mut p = order(SubmitStatus::Pending, RefundStatus::Processing);
        assert!(p.apply_bank_event(&ev(BankStatus::Processing, 1)));
        p.submit_accepted("B1", NOW).unwrap();
        assert_eq!(p.bank_status, Some(BankStatus::Processing));
        assert_eq!(p.submit_status, SubmitStatus::Submitted);
    }

    #[test]
    fn finalize_is_idempotent_for_the_same_status() {
        let mut o = order(SubmitStatus::Submitted, RefundStatus::Processing);
        assert_eq!(
            o.finalize(FinalStatus::Succeeded, "matched", "run-1", NOW),
            Ok(Outcome::Changed)
        );
        let after = o.clone();
        assert_eq!(
            o.finalize(FinalStatus::Succeeded, "again", "run-2", NOW + 1),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(o, after);
        assert_eq!(
            o.finalize(FinalStatus::Failed, "no", "run-3", NOW)
                .unwrap_err()
                .code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(o.final_source, "run-1");
        assert_eq!(o.finalized_at_ms, Some(NOW));
    }

    #[test]
    fn outbox_steps_by_outcome() {
        assert_eq!(
            FinalStatus::Succeeded.outbox_steps(),
            [OutboxStep::ClearingComplete, OutboxStep::NotifyBusiness]
        );
        assert_eq!(
            FinalStatus::Failed.outbox_steps(),
            [OutboxStep::ClearingReverse, OutboxStep::NotifyBusiness]
        );
    }

    /// Renders an order's state dimensions for the transition table.
    fn state(o: &RefundOrder) -> String {
        format!(
            "{}/{}/{}",
            o.submit_status,
            o.refund_status,
            o.bank_status.map_or("-", BankStatus::as_str)
        )
    }

    /// Every state × every event, against the expected table: the state machine at one glance.
    #[test]
    fn transition_table() {
        use RefundStatus as R;
        use SubmitStatus as S;
        let states = [
            (S::Pending, R::Processing),
            (S::Submitted, R::Processing),
            (S::SubmitFailed, R::Processing),
            (S::Submitted, R::Succeeded),
            (S::Submitted, R::Failed),
        ];
        type Event = (&'static str, fn(&mut RefundOrder) -> String);
        let events: [Event; 7] = [
            ("submit_accepted", |o| {
                o.submit_accepted("B1", NOW)
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.code.to_string())
            }),
            ("submit_refused", |o| {
                o.submit_refused("card closed")
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.code.to_string())
            }),
            ("bank PROCESSING #5", |o| {
                if o.apply_bank_event(&ev(BankStatus::Processing, 5)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("bank SUCCEEDED #1", |o| {
                if o.apply_bank_event(&ev(BankStatus::Succeeded, 1)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("bank ACCEPTED #0", |o| {
                if o.apply_bank_event(&ev(BankStatus::Accepted, 0)) {
                    String::new()
                } else {
                    "ignored".into()
                }
            }),
            ("finalize SUCCEEDED", |o| {
                match o.finalize(FinalStatus::Succeeded, "", "run", NOW) {
                    Ok(Outcome::Changed) => String::new(),
                    Ok(Outcome::Unchanged) => "unchanged".into(),
                    Err(e) => e.code.to_string(),
                }
            }),
            ("finalize FAILED", |o| {
                match o.finalize(FinalStatus::Failed, "", "run", NOW) {
                    Ok(Outcome::Changed) => String::new(),
                    Ok(Outcome::Unchanged) => "unchanged".into(),
                    Err(e) => e.code.to_string(),
                }
            }),
        ];
        let mut table = Vec::new();
        for (submit, refund) in states {
            for (name, event) in &events {
                let mut o = order(submit, refund);
                // Submitted orders start with bank sequence 3, so #1 is late and #5 is news.
                if submit == S::Submitted {
                    o.bank_seq = Some(3);
                }
                let before = state(&o);
                let note = event(&mut o);
                let after = state(&o);
                let result = if note.is_empty() {
                    after
                } else {
                    assert_eq!(before, after, "a refused event must change nothing");
                    note
                };
                table.push(format!("{before:<42} {name:<20} -> {result}"));
            }
        }
        let expected = "\
PENDING/PROCESSING/-                       submit_accepted      -> SUBMITTED/PROCESSING/BANK_ACCEPTED
PENDING/PROCESSING/-                       submit_refused       -> SUBMIT_FAILED/PROCESSING/-
PENDING/PROCESSING/-                       bank PROCESSING #5   -> PENDING/PROCESSING/BANK_PROCESSING
PENDING/PROCESSING/-                       bank SUCCEEDED #1    -> PENDING/PROCESSING/BANK_SUCCEEDED
PENDING/PROCESSING/-                       bank ACCEPTED #0     -> PENDING/PROCESSING/BANK_ACCEPTED
PENDING/PROCESSING/-                       finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
PENDING/PROCESSING/-                       finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank PROCESSING #5   -> SUBMITTED/PROCESSING/BANK_PROCESSING
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank SUCCEEDED #1    -> ignored
SUBMITTED/PROCESSING/BANK_ACCEPTED         bank ACCEPTED #0     -> ignored
SUBMITTED/PROCESSING/BANK_ACCEPTED         finalize SUCCEEDED   -> SUBMITTED/SUCCEEDED/BANK_ACCEPTED
SUBMITTED/PROCESSING/BANK_ACCEPTED         finalize FAILED      -> SUBMITTED/FAILED/BANK_ACCEPTED
SUBMIT_FAILED/PROCESSING/-                 submit_accepted      -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 submit_refused       -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 bank PROCESSING #5   -> ignored
SUBMIT_FAILED/PROCESSING/-                 bank SUCCEEDED #1    -> ignored
SUBMIT_FAILED/PROCESSING/-                 bank ACCEPTED #0     -> ignored
SUBMIT_FAILED/PROCESSING/-                 finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
SUBMIT_FAILED/PROCESSING/-                 finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank PROCESSING #5   -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank SUCCEEDED #1    -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          bank ACCEPTED #0     -> ignored
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          finalize SUCCEEDED   -> unchanged
SUBMITTED/SUCCEEDED/BANK_ACCEPTED          finalize FAILED      -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             submit_accepted      -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             submit_refused       -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             bank PROCESSING #5   -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             bank SUCCEEDED #1    -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             bank ACCEPTED #0     -> ignored
SUBMITTED/FAILED/BANK_ACCEPTED             finalize SUCCEEDED   -> INVALID_STATE_TRANSITION
SUBMITTED/FAILED/BANK_ACCEPTED             finalize FAILED      -> unchanged";
        let actual = table.join("\n");
        assert_eq!(
            actual, expected,
            "transition table changed:\n{actual}\n--- expected ---\n{expected}"
        );
    }
}
