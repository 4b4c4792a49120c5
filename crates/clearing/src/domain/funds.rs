//! Customer funds apart from the platform's own (客户备付金 vs 自有资金): the lines every clearing
//! posting adds so that the customers' part of a channel's reserve bank account
//! (CHANNEL_RESERVE) always equals what is owed to customers and merchants.
//!
//! - What the platform pays towards customers (a coupon at payment, a fee share given back or an
//!   advance at refund, a coupon share put back when a refund is undone) is a transfer from the
//!   platform's own bank account into the reserve: Cr OWN_FUNDS, Dr CHANNEL_RESERVE.
//! - What comes back to the platform (fees at payment, a coupon share at refund, an advance
//!   repaid, a fee share kept when a refund is undone) stays in the same bank account as the
//!   platform's part: Dr PLATFORM_IN_RESERVE, Cr CHANNEL_RESERVE, until the sweep moves it to
//!   OWN_FUNDS.
//!
//! `docs/ledger.md` shows the resulting postings with worked examples.

use tuikuan_accounting::domain::{AccountKey, AccountType, Side};
use tuikuan_kernel::{Currency, Money};

/// The funding lines of one posting on `channel`'s reserve: `from_platform` paid in from own
/// funds, `to_platform` moved to the platform's part of the reserve. The CHANNEL_RESERVE line is
/// `reserve_minor` (what the customers' part moves for the posting's own reasons, signed: positive
/// is a debit) plus the funding, netted into one line. Zero lines are left out.
pub fn reserve_lines(
    channel: &str,
    currency: Currency,
    reserve_minor: i64,
    from_platform: i64,
    to_platform: i64,
) -> Vec<(AccountKey, Side, Money)> {
    let money = |minor: i64| Money::from_minor(minor, currency);
    let net = reserve_minor + from_platform - to_platform;
    let side = if net >= 0 { Side::Debit } else { Side::Credit };
    let lines = vec![
        (
            AccountKey::channel_reserve(channel, currency),
            side,
            money(net.abs()),
        ),
        (
            AccountKey::platform(AccountType::OwnFunds, currency),
            Side::Credit,
            money(from_platform),
        ),
        (
            platform_in_reserve(channel, currency),
            Side::Debit,
            money(to_platform),
        ),
    ];
    lines.into_iter().filter(|e| !e.2.is_zero()).collect()
}

/// The platform's part of `channel`'s reserve bank account.
pub fn platform_in_reserve(channel: &str, currency: Currency) -> AccountKey {
    AccountKey {
        account_type: AccountType::PlatformInReserve,
        owner: channel.to_string(),
        currency,
    }
}

/// The sweep (资金归集) of `amount` from `channel`'s reserve bank account to the platform's own
/// account: Dr OWN_FUNDS, Cr PLATFORM_IN_RESERVE.
pub fn sweep_lines(channel: &str, amount: Money) -> Vec<(AccountKey, Side, Money)> {
    let c = amount.currency();
    vec![
        (
            AccountKey::platform(AccountType::OwnFunds, c),
            Side::Debit,
            amount,
        ),
        (platform_in_reserve(channel, c), Side::Credit, amount),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(lines: &[(AccountKey, Side, Money)], t: AccountType) -> i64 {
        lines
            .iter()
            .filter(|l| l.0.account_type == t)
            .map(|l| match l.1 {
                Side::Debit => l.2.to_minor(),
                Side::Credit => -l.2.to_minor(),
            })
            .sum()
    }

    #[test]
    fn funding_nets_into_one_reserve_line_and_balances() {
        let lines = reserve_lines("wx", Currency::Cny, 8000, 2000, 60);
        assert_eq!(minor(&lines, AccountType::ChannelReserve), 9940);
        assert_eq!(minor(&lines, AccountType::OwnFunds), -2000);
        assert_eq!(minor(&lines, AccountType::PlatformInReserve), 60);
        assert_eq!(
            lines
                .iter()
                .map(|l| l.0.account_type)
                .filter(|t| *t == AccountType::ChannelReserve)
                .count(),
            1
        );
        // The funding itself balances: the posting's own lines must balance reserve_minor.
        let total: i64 = [
            AccountType::ChannelReserve,
            AccountType::OwnFunds,
            AccountType::PlatformInReserve,
        ]
        .iter()
        .map(|t| minor(&lines, *t))
        .sum();
        assert_eq!(total, 8000);
    }

    #[test]
    fn a_net_outflow_is_a_credit_and_zero_lines_are_dropped() {
        let lines = reserve_lines("wx", Currency::Cny, 0, 30, 1000);
        assert_eq!(minor(&lines, AccountType::ChannelReserve), -970);
        assert_eq!(lines.len(), 3);
        assert_eq!(reserve_lines("wx", Currency::Cny, 0, 0, 0), vec![]);
        let sweep = sweep_lines("wx", Money::from_minor(1060, Currency::Cny));
        assert_eq!(minor(&sweep, AccountType::OwnFunds), 1060);
        assert_eq!(minor(&sweep, AccountType::PlatformInReserve), -1060);
    }
}
