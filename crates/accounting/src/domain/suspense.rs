//! Suspense as items (挂账明细). Money the platform cannot yet place is booked on one of three
//! suspense accounts per channel, each holding one direction only, so opposite items never net:
//!
//! - `SUSPENSE_BANK_CLAIM` (asset, debit-normal): the bank paid out or kept money it owes back;
//! - `SUSPENSE_OWED_CUSTOMER` (liability, credit-normal): money held for a customer the platform
//!   still has to pay;
//! - `SUSPENSE_OWED_MERCHANT` (liability, credit-normal): money held for a merchant not yet
//!   credited.
//!
//! Every line on those accounts names its item. A line on the account's normal side opens the item
//! (its id, direction, amount, source posting, value date and bank reference are kept); a line on
//! the other side reduces it, never below zero. An item is cleared against the later bank row that
//! settles it ([`clear_lines`]) or written off with approval ([`write_off_lines`]).

use chrono::NaiveDate;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Error, ErrorCode, Money};

use super::{AccountKey, AccountType, Entry, Side};

/// The ledger key prefix of an item cleared against a bank row: `suspense-clear:{item}`.
pub const CLEAR_PREFIX: &str = "suspense-clear:";
/// The ledger key prefix of an item written off: `suspense-write-off:{item}`.
pub const WRITE_OFF_PREFIX: &str = "suspense-write-off:";

/// Whether lines on accounts of this type name a suspense item.
pub fn holds_items(t: AccountType) -> bool {
    matches!(
        t,
        AccountType::SuspenseBankClaim
            | AccountType::SuspenseOwedCustomer
            | AccountType::SuspenseOwedMerchant
    )
}

/// An item's direction: the wire name of its account type's meaning.
pub fn direction(t: AccountType) -> &'static str {
    match t {
        AccountType::SuspenseBankClaim => "CLAIM_ON_BANK",
        AccountType::SuspenseOwedCustomer => "OWED_TO_CUSTOMER",
        AccountType::SuspenseOwedMerchant => "OWED_TO_MERCHANT",
        _ => "",
    }
}

/// The item account type of a direction name.
pub fn parse_direction(value: &str) -> Option<AccountType> {
    [
        AccountType::SuspenseBankClaim,
        AccountType::SuspenseOwedCustomer,
        AccountType::SuspenseOwedMerchant,
    ]
    .into_iter()
    .find(|t| direction(*t) == value)
}

/// An item id is required on the item accounts and refused elsewhere.
pub(super) fn check_item_line(e: &Entry, field: &str) -> Result<(), Error> {
    let field = format!("{field}.item");
    if holds_items(e.account.account_type) {
        if e.item.is_empty() {
            return Err(Error::field(
                &field,
                format!("is required on {}", e.account.account_type),
            ));
        }
        validate_external_id(&e.item, &field)
    } else if e.item.is_empty() {
        Ok(())
    } else {
        Err(Error::field(
            &field,
            format!(
                "only suspense item accounts carry items, not {}",
                e.account.account_type
            ),
        ))
    }
}

/// One posting moves an item at most once.
pub(super) fn check_items_once(entries: &[Entry]) -> Result<(), Error> {
    let mut seen: Vec<&str> = Vec::new();
    for e in entries.iter().filter(|e| !e.item.is_empty()) {
        if seen.contains(&e.item.as_str()) {
            return Err(Error::field(
                "entries",
                format!("item {} appears twice in one posting", e.item),
            ));
        }
        seen.push(&e.item);
    }
    Ok(())
}

/// Whether a line opens its item (it is on the account's normal side) rather than reducing it.
pub fn opens(e: &Entry) -> bool {
    e.side == e.account.account_type.normal_side()
}

tuikuan_kernel::string_enum!(
    /// Where a suspense item stands.
    ItemStatus {
        /// Some of it is still unplaced.
        Open => "OPEN",
        /// Settled against a bank row (or otherwise posted away) to zero.
        Cleared => "CLEARED",
        /// Written off with approval.
        WrittenOff => "WRITTEN_OFF",
    }
);

/// The status of an item that a posting under `request_id` takes to zero.
pub fn closing_status(request_id: &str) -> ItemStatus {
    if request_id.starts_with(WRITE_OFF_PREFIX) {
        ItemStatus::WrittenOff
    } else {
        ItemStatus::Cleared
    }
}

/// A suspense item as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspenseItem {
    pub item_id: String,
    /// The item account (its type is the direction, its owner the channel).
    pub account: AccountKey,
    /// What was opened.
    pub amount: Money,
    /// What is still unplaced.
    pub remaining: Money,
    pub status: ItemStatus,
    /// The request id of the posting that opened it (e.g. `adjust:adj-…`) and its description.
    pub source: String,
    pub description: String,
    /// The opening posting's value date and bank reference.
    pub value_date: NaiveDate,
    pub bank_reference: String,
    pub opened_at_ms: i64,
    /// The request id of the posting that took it to zero (empty while open).
    pub closed_by: String,
    pub closed_at_ms: Option<i64>,
}

impl SuspenseItem {
    pub fn channel(&self) -> &str {
        &self.account.owner
    }

    pub fn direction(&self) -> &'static str {
        direction(self.account.account_type)
    }

    /// Whole days from the item's value date to `today` (0 on the day itself).
    pub fn age_days(&self, today: NaiveDate) -> i64 {
        (today - self.value_date).num_days().max(0)
    }

    fn require_open(&self) -> Result<(), Error> {
        if self.status != ItemStatus::Open || !self.remaining.is_positive() {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("suspense item {} is {}", self.item_id, self.status),
            ));
        }
        Ok(())
    }

    fn line(&self, side: Side) -> Entry {
        Entry {
            account: self.account.clone(),
            side,
            amount: self.remaining,
            item: self.item_id.clone(),
        }
    }
}

fn platform(t: AccountType, item: &SuspenseItem) -> AccountKey {
    AccountKey::platform(t, item.account.currency)
}

fn reserve(t: AccountType, item: &SuspenseItem) -> AccountKey {
    AccountKey {
        account_type: t,
        owner: item.channel().to_string(),
        currency: item.account.currency,
    }
}

/// The lines that clear what remains of an open item against the bank row that settles it:
/// - a claim on the bank: the bank paid it back, `Dr CHANNEL_RESERVE`, `Cr SUSPENSE_BANK_CLAIM`;
/// - owed to a customer: the bank paid the customer, `Dr SUSPENSE_OWED_CUSTOMER`,
///   `Cr CHANNEL_RESERVE`;
/// - owed to a merchant: credited to `merchant`'s balance (required for this direction only),
///   `Dr SUSPENSE_OWED_MERCHANT`, `Cr MERCHANT_SETTLEMENT`.
pub fn clear_lines(item: &SuspenseItem, merchant: &str) -> Result<Vec<Entry>, Error> {
    item.require_open()?;
    let amount = item.remaining;
    let lines = match item.account.account_type {
        AccountType::SuspenseBankClaim => vec![
            Entry::new(
                reserve(AccountType::ChannelReserve, item),
                Side::Debit,
                amount,
            ),
            item.line(Side::Credit),
        ],
        AccountType::SuspenseOwedCustomer => vec![
            item.line(Side::Debit),
            Entry::new(
                reserve(AccountType::ChannelReserve, item),
                Side::Credit,
                amount,
            ),
        ],
        AccountType::SuspenseOwedMerchant => {
            if merchant.is_empty() {
                return Err(Error::field(
                    "merchant_id",
                    "is required to clear an item owed to a merchant",
                ));
            }
            let key = AccountKey::new(
                AccountType::MerchantSettlement,
                merchant,
                item.account.currency,
                "merchant_id",
            )?;
            vec![
                item.line(Side::Debit),
                Entry::new(key, Side::Credit, amount),
            ]
        }
        other => {
            return Err(Error::internal(format!(
                "suspense item {} is on {other}",
                item.item_id
            )))
        }
    };
    if item.account.account_type != AccountType::SuspenseOwedMerchant && !merchant.is_empty() {
        return Err(Error::field(
            "merchant_id",
            "only items owed to a merchant name one",
        ));
    }
    Ok(lines)
}

/// The lines that write off what remains of an open item:
/// - a claim on the bank is a loss the platform bears: `Dr WRITE_OFF`, `Cr SUSPENSE_BANK_CLAIM`,
///   and the platform makes the customers' reserve whole from its own funds, `Dr CHANNEL_RESERVE`,
///   `Cr OWN_FUNDS`;
/// - money owed to a customer or merchant that nobody can be found for is kept (reduces
///   `WRITE_OFF`): `Dr SUSPENSE_OWED_*`, `Cr WRITE_OFF`, and it becomes the platform's part of the
///   reserve account, `Dr PLATFORM_IN_RESERVE`, `Cr CHANNEL_RESERVE`.
pub fn write_off_lines(item: &SuspenseItem) -> Result<Vec<Entry>, Error> {
    item.require_open()?;
    let amount = item.remaining;
    let write_off = platform(AccountType::WriteOff, item);
    let customers = reserve(AccountType::ChannelReserve, item);
    Ok(match item.account.account_type {
        AccountType::SuspenseBankClaim => vec![
            Entry::new(write_off, Side::Debit, amount),
            item.line(Side::Credit),
            Entry::new(customers, Side::Debit, amount),
            Entry::new(platform(AccountType::OwnFunds, item), Side::Credit, amount),
        ],
        _ => vec![
            item.line(Side::Debit),
            Entry::new(write_off, Side::Credit, amount),
            Entry::new(
                reserve(AccountType::PlatformInReserve, item),
                Side::Debit,
                amount,
            ),
            Entry::new(customers, Side::Credit, amount),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PostingRequest;
    use tuikuan_kernel::Currency;

    fn item(t: AccountType, minor: i64) -> SuspenseItem {
        let amount = Money::from_minor(minor, Currency::Cny);
        SuspenseItem {
            item_id: "adj-d1".into(),
            account: AccountKey {
                account_type: t,
                owner: "wx".into(),
                currency: Currency::Cny,
            },
            amount,
            remaining: amount,
            status: ItemStatus::Open,
            source: "adjust:adj-d1".into(),
            description: String::new(),
            value_date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            bank_reference: "BK1".into(),
            opened_at_ms: 0,
            closed_by: String::new(),
            closed_at_ms: None,
        }
    }

    /// Signed effect of `lines` on the reserve identity: reserve − (liabilities − claims).
    fn identity_gap(lines: &[Entry]) -> i64 {
        use crate::domain::ReserveRole;
        lines
            .iter()
            .map(|e| {
                let signed = if e.side == e.account.account_type.normal_side() {
                    e.amount.to_minor()
                } else {
                    -e.amount.to_minor()
                };
                match e.account.account_type.reserve_role() {
                    ReserveRole::Reserve => signed,
                    ReserveRole::CustomerLiability => -signed,
                    ReserveRole::ClaimOnBank => signed,
                    ReserveRole::None => 0,
                }
            })
            .sum()
    }

    #[test]
    fn clearing_and_writing_off_balance_and_keep_the_identity() {
        for t in [
            AccountType::SuspenseBankClaim,
            AccountType::SuspenseOwedCustomer,
            AccountType::SuspenseOwedMerchant,
        ] {
            let i = item(t, 12113);
            let merchant = if t == AccountType::SuspenseOwedMerchant {
                "M1"
            } else {
                ""
            };
            let clear = clear_lines(&i, merchant).unwrap();
            let off = write_off_lines(&i).unwrap();
            for (lines, key) in [
                (clear, "suspense-clear:adj-d1"),
                (off, "suspense-write-off:adj-d1"),
            ] {
                let r = PostingRequest::new(key, "d", lines.clone()).unwrap();
                assert_eq!(identity_gap(r.entries()), 0, "{t} {key}");
                let item_line = lines.iter().find(|e| !e.item.is_empty()).unwrap();
                assert!(!opens(item_line), "{t} {key} reduces the item");
            }
        }
        assert_eq!(
            closing_status("suspense-write-off:x"),
            ItemStatus::WrittenOff
        );
        assert_eq!(closing_status("suspense-clear:x"), ItemStatus::Cleared);
    }

    #[test]
    fn refusals() {
        let mut closed = item(AccountType::SuspenseBankClaim, 100);
        closed.status = ItemStatus::Cleared;
        assert_eq!(
            clear_lines(&closed, "").unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(
            write_off_lines(&closed).unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        let owed = item(AccountType::SuspenseOwedMerchant, 100);
        assert_eq!(
            clear_lines(&owed, "").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let claim = item(AccountType::SuspenseBankClaim, 100);
        assert!(clear_lines(&claim, "M1").is_err());
        assert_eq!(
            claim.age_days(NaiveDate::from_ymd_opt(2026, 12, 8).unwrap()),
            7
        );
        assert_eq!(
            parse_direction("CLAIM_ON_BANK"),
            Some(AccountType::SuspenseBankClaim)
        );
        assert_eq!(parse_direction("NETTED"), None);
    }

    #[test]
    fn item_ids_only_where_they_belong() {
        let money = Money::from_minor(100, Currency::Cny);
        let claim = AccountKey {
            account_type: AccountType::SuspenseBankClaim,
            owner: "wx".into(),
            currency: Currency::Cny,
        };
        let reserve = AccountKey::channel_reserve("wx", Currency::Cny);
        let without = vec![
            Entry::new(claim.clone(), Side::Debit, money),
            Entry::new(reserve.clone(), Side::Credit, money),
        ];
        assert!(PostingRequest::new("adjust:a", "d", without).is_err());
        let mut with = vec![
            Entry::new(claim.clone(), Side::Debit, money),
            Entry::new(reserve.clone(), Side::Credit, money),
        ];
        with[0].item = "adj-a".into();
        assert!(PostingRequest::new("adjust:a", "d", with.clone()).is_ok());
        let mut stray = with.clone();
        stray[1].item = "adj-b".into();
        assert!(PostingRequest::new("adjust:a", "d", stray).is_err());
        let mut twice = with.clone();
        twice.push(Entry {
            item: "adj-a".into(),
            ..Entry::new(claim, Side::Debit, money)
        });
        twice.push(Entry::new(reserve, Side::Credit, money));
        assert!(PostingRequest::new("adjust:a", "d", twice).is_err());
        // An item is part of the content.
        let a = PostingRequest::new("adjust:a", "d", with.clone()).unwrap();
        let mut other = with;
        other[0].item = "adj-z".into();
        let b = PostingRequest::new("adjust:a", "d", other).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
