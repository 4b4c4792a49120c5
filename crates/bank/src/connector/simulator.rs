//! The bank simulator as a [`Connector`]: the same interface the real channels have, over the
//! simulator's own books. The simulator delivers its callbacks itself (its tick calls the refund
//! center), so it takes no HTTP notifications; its bill is its clearing file (`tuikuan-csv-v1`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{
    ChannelBill, ChannelRefund, ChannelStatus, Connector, InboundNotification, NotificationReply,
    RefundRequest, VerifiedNotification,
};
use crate::domain::{BankConnector, RefundSubmission, TxKind, TxStatus};
use crate::simulator::Simulator;

/// The simulator, for one channel.
#[derive(Debug, Clone)]
pub struct SimulatorConnector {
    sim: Arc<Simulator>,
    channel: String,
}

impl SimulatorConnector {
    pub fn new(sim: Arc<Simulator>, channel: &str) -> SimulatorConnector {
        SimulatorConnector {
            sim,
            channel: channel.to_string(),
        }
    }
}

#[async_trait]
impl Connector for SimulatorConnector {
    fn kind(&self) -> &'static str {
        "simulator"
    }

    fn check_reference(&self, reference: &str) -> std::result::Result<(), String> {
        validate_external_id(reference, "reference").map_err(|e| e.message)
    }

    async fn submit_refund(&self, r: &RefundRequest, _notify_url: &str) -> Result<ChannelRefund> {
        let s = RefundSubmission::new(&self.channel, &r.reference, &r.original_trade_id, r.amount)?;
        let out = self.sim.submit_refund(s).await?;
        Ok(ChannelRefund {
            reference: r.reference.clone(),
            status: if out.accepted {
                ChannelStatus::Processing
            } else {
                ChannelStatus::Rejected
            },
            channel_status: if out.accepted { "ACCEPTED" } else { "REJECTED" }.to_string(),
            channel_ref: out.bank_ref,
            reason: out.reason,
            amount: None,
        })
    }

    async fn query_refund(&self, r: &RefundRequest) -> Result<ChannelRefund> {
        let tx = self.sim.query(TxKind::Refund, &r.reference).await?;
        let status = match tx.status {
            TxStatus::Accepted => ChannelStatus::Processing,
            TxStatus::Succeeded => ChannelStatus::Succeeded,
            TxStatus::Failed | TxStatus::Returned => ChannelStatus::Failed,
            TxStatus::Rejected => ChannelStatus::Rejected,
        };
        Ok(ChannelRefund {
            reference: tx.id,
            status,
            channel_status: tx.status.as_str().to_string(),
            channel_ref: tx.bank_ref,
            reason: tx.reason,
            amount: Some(tx.amount),
        })
    }

    fn verify_notification(&self, _n: &InboundNotification) -> Result<VerifiedNotification> {
        Err(Error::new(
            ErrorCode::InvalidArgument,
            format!(
                "{}: the simulator sends no HTTP notifications; its tick delivers callbacks",
                self.channel
            ),
        ))
    }

    fn notification_reply(&self, _accepted: bool) -> NotificationReply {
        NotificationReply {
            status: 404,
            content_type: "text/plain",
            body: b"the simulator takes no notifications".to_vec(),
        }
    }

    async fn download_bill(&self, date: NaiveDate) -> Result<ChannelBill> {
        let file = self.sim.build_clearing_file(&self.channel, date).await?;
        Ok(ChannelBill {
            format: file.format,
            content: file.content,
        })
    }
}
