//! Bank reference ids within the channel's rules: which scheme a channel's ids follow
//! ([`tuikuan_kernel::bank_ref::IdScheme`]) and the id each attempt is given.

use tuikuan_kernel::bank_ref::IdScheme;

use super::{bank_reference_for, Channel, ChannelKind, RefundMethod};

impl Channel {
    /// The rules of the bank reference ids of this channel: the configured scheme, else UnionPay's
    /// for UnionPay channels and the platform's own for the others.
    pub fn id_scheme(&self) -> IdScheme {
        self.id_scheme.unwrap_or(match self.kind {
            ChannelKind::UnionPay => IdScheme::UnionPay,
            _ => IdScheme::Platform,
        })
    }

    /// The bank reference id of attempt `attempt` (by `method`) of a refund on this channel: the
    /// natural id ([`bank_reference_for`]), fitted to the channel's rules for interface refunds
    /// (the id travels in the channel's refund request and comes back in its bill). Payouts keep
    /// the payout center's ids and spreadsheet rows their batch row ids: neither goes through the
    /// channel's refund API.
    pub fn reference_for(&self, method: RefundMethod, refund_id: &str, attempt: u32) -> String {
        let natural = bank_reference_for(method, refund_id, attempt);
        match method {
            RefundMethod::Interface => self.id_scheme().fit(&natural),
            _ => natural,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: ChannelKind, id_scheme: Option<IdScheme>) -> Channel {
        Channel {
            code: "CH1".into(),
            kind,
            methods: vec![RefundMethod::Interface],
            original_route_window_days: 180,
            bank_code: "ICBC".into(),
            id_scheme,
        }
    }

    const RF: &str = "rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60";

    #[test]
    fn unionpay_channels_give_interface_refunds_order_ids() {
        let cup = channel(ChannelKind::UnionPay, None);
        assert_eq!(cup.id_scheme(), IdScheme::UnionPay);
        let first = cup.reference_for(RefundMethod::Interface, RF, 1);
        let second = cup.reference_for(RefundMethod::Interface, RF, 2);
        for id in [&first, &second] {
            assert!(IdScheme::UnionPay.check(id).is_ok(), "{id}");
            assert_eq!(id.len(), 32);
        }
        assert_ne!(first, second);
        assert_eq!(cup.reference_for(RefundMethod::Interface, RF, 1), first);
        // Payouts and spreadsheet rows do not go through UnionPay's refund API.
        assert_eq!(
            cup.reference_for(RefundMethod::Payout, RF, 2),
            format!("po_{RF}_2")
        );
        assert_eq!(cup.reference_for(RefundMethod::FileUpload, RF, 1), "");
    }

    #[test]
    fn other_channels_keep_the_refund_id_unless_configured() {
        let agg = channel(ChannelKind::Aggregated, None);
        assert_eq!(agg.id_scheme(), IdScheme::Platform);
        assert_eq!(agg.reference_for(RefundMethod::Interface, RF, 1), RF);
        assert_eq!(
            agg.reference_for(RefundMethod::Interface, RF, 3),
            format!("{RF}-3")
        );
        let wx = channel(ChannelKind::Aggregated, Some(IdScheme::WechatPay));
        assert_eq!(wx.reference_for(RefundMethod::Interface, RF, 1), RF);
        // A configured UnionPay scheme on any kind of channel.
        let up = channel(ChannelKind::Aggregated, Some(IdScheme::UnionPay));
        assert!(up
            .reference_for(RefundMethod::Interface, RF, 1)
            .starts_with("TK"));
    }
}
