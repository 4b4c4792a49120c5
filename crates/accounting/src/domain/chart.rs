//! The chart of accounts: every account type, its class, its normal side, who owns it, whether
//! the ledger keeps it from going below zero, and its part in the reserve identity.
//!
//! `docs/ledger.md` lists the same table for people; a test there checks the two agree.
//!
//! Customer funds (客户备付金) and the platform's own money are kept apart:
//! - CHANNEL_RESERVE is the customers' part of a channel's reserve bank account. The reserve
//!   identity ([`ReserveRole`]) says it equals what the platform owes customers and merchants less
//!   what the bank owes back, per currency.
//! - PLATFORM_IN_RESERVE is the platform's own money that sits in the same bank account (fees
//!   collected, coupon shares and advance repayments that came back) until the sweep moves it to
//!   OWN_FUNDS. The two together are the bank's balance of that account.
//! - OWN_FUNDS is the platform's own bank account (自有资金): coupons, advances and fee shares are
//!   funded from it into the reserve, never from customer money.

use std::fmt;

/// What kind of account, for financial statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountClass {
    Asset,
    Liability,
    Equity,
    Income,
    Expense,
}

impl AccountClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountClass::Asset => "asset",
            AccountClass::Liability => "liability",
            AccountClass::Equity => "equity",
            AccountClass::Income => "income",
            AccountClass::Expense => "expense",
        }
    }

    /// Assets and expenses grow on the debit side; liabilities, equity and income on the credit
    /// side.
    pub fn normal_side(self) -> Side {
        match self {
            AccountClass::Asset | AccountClass::Expense => Side::Debit,
            AccountClass::Liability | AccountClass::Equity | AccountClass::Income => Side::Credit,
        }
    }
}

/// Who an account belongs to: the `owner` part of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// A merchant id.
    Merchant,
    /// A channel code (one reserve bank account per channel).
    Channel,
    /// The literal owner "platform".
    Platform,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Merchant => "merchant",
            OwnerKind::Channel => "channel",
            OwnerKind::Platform => "platform",
        }
    }
}

/// An account's part in the reserve identity (备付金恒等式), per currency:
///
/// ```text
/// Σ CHANNEL_RESERVE = Σ customer liabilities − Σ claims on the bank
/// ```
///
/// where customer liabilities are the merchants' balances (pending and available), refunds and
/// withdrawals in transit, and suspense items owed to customers or merchants; claims on the bank
/// are suspense items the bank owes back. Everything else is the platform's own business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReserveRole {
    /// The left-hand side: customer funds held at the banks.
    Reserve,
    /// Added on the right: money owed to customers or merchants out of the reserve.
    CustomerLiability,
    /// Subtracted on the right: money the bank owes back to the reserve.
    ClaimOnBank,
    /// Not part of customer funds.
    None,
}

/// Debit or credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debit => "DEBIT",
            Side::Credit => "CREDIT",
        }
    }

    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "DEBIT" => Some(Side::Debit),
            "CREDIT" => Some(Side::Credit),
            _ => None,
        }
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! chart {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $class:ident, $owner:ident, $guard:literal, $role:ident; )+) => {
        /// The kinds of account in the ledger (see the module documentation and `docs/ledger.md`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AccountType {
            $( $(#[$doc])* $variant, )+
        }

        impl AccountType {
            /// Every account type, in chart order.
            pub const ALL: &'static [AccountType] = &[ $( AccountType::$variant, )+ ];

            /// The stable string form (the proto enum name), also the prefix of account ids.
            pub fn as_str(self) -> &'static str {
                match self { $( AccountType::$variant => $name, )+ }
            }

            /// Asset, liability, equity, income or expense.
            pub fn class(self) -> AccountClass {
                match self { $( AccountType::$variant => AccountClass::$class, )+ }
            }

            /// Whose account it is: a merchant, a channel, or the platform.
            pub fn owner_kind(self) -> OwnerKind {
                match self { $( AccountType::$variant => OwnerKind::$owner, )+ }
            }

            /// Whether the ledger refuses a posting that would take the balance (on the normal
            /// side) below zero.
            pub fn must_not_go_negative(self) -> bool {
                match self { $( AccountType::$variant => $guard, )+ }
            }

            /// The account's part in the reserve identity.
            pub fn reserve_role(self) -> ReserveRole {
                match self { $( AccountType::$variant => ReserveRole::$role, )+ }
            }
        }
    };
}

chart! {
    /// Customer funds (客户备付金) in the channel's reserve bank account (asset).
    ChannelReserve = "CHANNEL_RESERVE", Asset, Channel, true, Reserve;
    /// The platform's own money in the channel's reserve bank account, until the sweep (asset).
    PlatformInReserve = "PLATFORM_IN_RESERVE", Asset, Channel, true, None;
    /// The platform's own bank account (自有资金, asset).
    OwnFunds = "OWN_FUNDS", Asset, Platform, false, None;
    /// Money the platform's owners paid into its own funds (equity).
    Capital = "CAPITAL", Equity, Platform, false, None;
    /// A merchant's settled money not yet available (T+N, 待结算; liability).
    MerchantPending = "MERCHANT_PENDING", Liability, Merchant, true, CustomerLiability;
    /// A merchant's available balance (可用余额; liability).
    MerchantSettlement = "MERCHANT_SETTLEMENT", Liability, Merchant, true, CustomerLiability;
    /// What a merchant owes the platform beyond its advance line (应收商户; asset).
    MerchantReceivable = "MERCHANT_RECEIVABLE", Asset, Merchant, true, None;
    /// What the platform advanced for a merchant within its credit line (垫付; asset).
    Advance = "ADVANCE", Asset, Merchant, true, None;
    /// Refunds debited from merchants and not yet delivered (liability).
    RefundInTransit = "REFUND_IN_TRANSIT", Liability, Platform, true, CustomerLiability;
    /// Merchant withdrawals (提现) debited and not yet paid by the bank (liability).
    WithdrawalInTransit = "WITHDRAWAL_IN_TRANSIT", Liability, Platform, true, CustomerLiability;
    /// Suspense items: money the bank paid out or kept that it owes back (asset).
    SuspenseBankClaim = "SUSPENSE_BANK_CLAIM", Asset, Channel, true, ClaimOnBank;
    /// Suspense items: money held for a customer the platform still has to pay (liability).
    SuspenseOwedCustomer = "SUSPENSE_OWED_CUSTOMER", Liability, Channel, true, CustomerLiability;
    /// Suspense items: money held for a merchant not yet credited (liability).
    SuspenseOwedMerchant = "SUSPENSE_OWED_MERCHANT", Liability, Channel, true, CustomerLiability;
    /// The old netting suspense account; the system posts nothing new to it: suspense items
    /// live on the three accounts above (liability).
    Suspense = "SUSPENSE", Liability, Channel, false, CustomerLiability;
    /// Fees the platform earned (income).
    FeeIncome = "FEE_INCOME", Income, Platform, false, None;
    /// Platform-funded coupons and subsidies (营销补贴; expense).
    Subsidy = "SUBSIDY", Expense, Platform, false, None;
    /// What the channel charges the platform (通道成本; expense).
    ChannelCost = "CHANNEL_COST", Expense, Channel, false, None;
    /// Channel costs accrued and not yet paid to the channel (liability).
    ChannelCostPayable = "CHANNEL_COST_PAYABLE", Liability, Channel, false, None;
    /// Suspense items written off with approval: losses, less unclaimed money kept (expense).
    WriteOff = "WRITE_OFF", Expense, Platform, false, None;
}

impl AccountType {
    pub fn parse(s: &str) -> Option<AccountType> {
        AccountType::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// The side on which the account's balance grows.
    pub fn normal_side(self) -> Side {
        self.class().normal_side()
    }

    /// Whether a posting that moves this account by `debit` and `credit` (minor units) takes it
    /// towards zero, i.e. against its normal side.
    pub fn reduces(self, debit: i64, credit: i64) -> bool {
        match self.normal_side() {
            Side::Credit => debit > credit,
            Side::Debit => credit > debit,
        }
    }

    /// Whether this is a merchant's money account whose shortfall means the merchant cannot cover
    /// a debit (INSUFFICIENT_BALANCE) rather than a platform account that would go negative
    /// (INSUFFICIENT_FUNDS).
    pub fn is_merchant_balance(self) -> bool {
        matches!(
            self,
            AccountType::MerchantSettlement
                | AccountType::MerchantPending
                | AccountType::Advance
                | AccountType::MerchantReceivable
        )
    }
}

impl fmt::Display for AccountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_and_has_a_consistent_normal_side() {
        for t in AccountType::ALL {
            assert_eq!(AccountType::parse(t.as_str()), Some(*t));
            let expected = match t.class() {
                AccountClass::Asset | AccountClass::Expense => Side::Debit,
                _ => Side::Credit,
            };
            assert_eq!(t.normal_side(), expected, "{t}");
        }
        // Claims are assets, so a claim and an amount owed can never net in one account.
        assert_eq!(AccountType::SuspenseBankClaim.normal_side(), Side::Debit);
        assert_eq!(
            AccountType::SuspenseOwedCustomer.normal_side(),
            Side::Credit
        );
        assert_eq!(AccountType::ChannelReserve.normal_side(), Side::Debit);
        assert!(AccountType::ChannelReserve.must_not_go_negative());
        assert!(!AccountType::OwnFunds.must_not_go_negative());
        assert!(!AccountType::FeeIncome.must_not_go_negative());
        assert!(AccountType::MerchantSettlement.reduces(5, 3));
        assert!(AccountType::Advance.reduces(3, 5));
        assert_eq!(Side::Debit.opposite(), Side::Credit);
    }

    #[test]
    fn reserve_roles() {
        use AccountType::*;
        let liabilities: Vec<AccountType> = AccountType::ALL
            .iter()
            .copied()
            .filter(|t| t.reserve_role() == ReserveRole::CustomerLiability)
            .collect();
        assert_eq!(
            liabilities,
            vec![
                MerchantPending,
                MerchantSettlement,
                RefundInTransit,
                WithdrawalInTransit,
                SuspenseOwedCustomer,
                SuspenseOwedMerchant,
                Suspense
            ]
        );
        assert_eq!(SuspenseBankClaim.reserve_role(), ReserveRole::ClaimOnBank);
        assert_eq!(PlatformInReserve.reserve_role(), ReserveRole::None);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/ledger.md lists every account type with its class, normal side, owner, guard and role.
    #[test]
    fn the_ledger_page_lists_every_account() {
        let page = include_str!("../../../../docs/ledger.md");
        for t in AccountType::ALL {
            let role = match t.reserve_role() {
                ReserveRole::Reserve => "reserve",
                ReserveRole::CustomerLiability => "customer liability",
                ReserveRole::ClaimOnBank => "claim on the bank",
                ReserveRole::None => "—",
            };
            let row = format!(
                "| `{}` | {} | {} | {} | {} | {} |",
                t.as_str(),
                t.class().as_str(),
                t.normal_side().as_str().to_lowercase(),
                t.owner_kind().as_str(),
                if t.must_not_go_negative() {
                    "yes"
                } else {
                    "no"
                },
                role
            );
            assert!(page.contains(&row), "docs/ledger.md lacks {row}");
        }
    }
}
