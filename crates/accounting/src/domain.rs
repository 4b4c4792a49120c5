//! The ledger's pure rules: account types and their normal sides, account keys, entries, the
//! validation of a posting request (balanced, one currency, positive amounts), and the content
//! fingerprint that makes posting idempotent.
//!
//! Architecture invariant: this module knows nothing of storage or the wire.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

/// The longest idempotency key accepted for a posting.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The most entries one posting may have.
pub const MAX_ENTRIES: usize = 64;
/// The longest description kept with a posting.
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// The largest page of [`Posting`]s returned at once.
pub const MAX_PAGE: usize = 1000;
/// The page size when the caller gives none.
pub const DEFAULT_PAGE: usize = 100;
/// The owner of the platform's own accounts.
pub const PLATFORM: &str = "platform";

mod chart;
pub mod journal;
pub mod reserve_report;
pub mod suspense;
pub use chart::{AccountClass, AccountType, OwnerKind, ReserveRole, Side};
pub use journal::{DateRange, PostingMeta};

/// Names one account: its type, its owner (merchant id, channel code or "platform") and currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    pub account_type: AccountType,
    pub owner: String,
    pub currency: Currency,
}

impl AccountKey {
    /// A validated key; `field` names the request field in errors. Owners follow the external-id
    /// rules (no ':' so that account ids stay unambiguous).
    pub fn new(
        account_type: AccountType,
        owner: &str,
        currency: Currency,
        field: &str,
    ) -> Result<AccountKey, Error> {
        validate_external_id(owner, &format!("{field}.owner"))?;
        Ok(AccountKey {
            account_type,
            owner: owner.to_string(),
            currency,
        })
    }

    /// A merchant's settlement account.
    pub fn merchant_settlement(merchant_id: &str, currency: Currency) -> AccountKey {
        AccountKey {
            account_type: AccountType::MerchantSettlement,
            owner: merchant_id.to_string(),
            currency,
        }
    }

    /// A platform-owned account ("platform" owner).
    pub fn platform(account_type: AccountType, currency: Currency) -> AccountKey {
        AccountKey {
            account_type,
            owner: PLATFORM.to_string(),
            currency,
        }
    }

    /// A channel's reserve account.
    pub fn channel_reserve(channel: &str, currency: Currency) -> AccountKey {
        AccountKey {
            account_type: AccountType::ChannelReserve,
            owner: channel.to_string(),
            currency,
        }
    }

    /// The storage id, e.g. `MERCHANT_SETTLEMENT:m1:CNY`.
    pub fn account_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.account_type.as_str(),
            self.owner,
            self.currency.code()
        )
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.account_id())
    }
}

/// One line of a posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub account: AccountKey,
    pub side: Side,
    /// Strictly positive, in the account's currency.
    pub amount: Money,
    /// The suspense item the line opens or clears: required on the suspense item accounts
    /// (`SUSPENSE_BANK_CLAIM`, `SUSPENSE_OWED_*`), empty on every other account.
    pub item: String,
}

impl Entry {
    /// A line on an account that holds no items.
    pub fn new(account: AccountKey, side: Side, amount: Money) -> Entry {
        Entry {
            account,
            side,
            amount,
            item: String::new(),
        }
    }
}

/// Checks a posting's idempotency key: 1..=128 characters of `A-Z a-z 0-9 _ - . :`
/// (keys look like `refund-debit:rf_0190…`).
pub fn validate_request_id(value: &str, field: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::field(field, "is required"));
    }
    if value.len() > MAX_REQUEST_ID_LEN {
        return Err(Error::new(
            ErrorCode::MalformedId,
            format!("{field}: longer than {MAX_REQUEST_ID_LEN} characters"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(Error::new(
            ErrorCode::MalformedId,
            format!("{field}: only letters, digits, '_', '-', '.' and ':' are allowed"),
        ));
    }
    Ok(())
}

/// A validated request to post: balanced, one currency, positive amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingRequest {
    request_id: String,
    description: String,
    entries: Vec<Entry>,
    meta: PostingMeta,
}

impl PostingRequest {
    pub fn new(
        request_id: &str,
        description: &str,
        entries: Vec<Entry>,
    ) -> Result<PostingRequest, Error> {
        validate_request_id(request_id, "request_id")?;
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(Error::field(
                "description",
                format!("longer than {MAX_DESCRIPTION_LEN} characters"),
            ));
        }
        if entries.len() < 2 {
            return Err(Error::field(
                "entries",
                "a posting needs at least two entries",
            ));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(Error::field(
                "entries",
                format!("at most {MAX_ENTRIES} entries per posting"),
            ));
        }
        let currency = entries[0].account.currency;
        for (i, e) in entries.iter().enumerate() {
            if !e.amount.is_positive() {
                return Err(Error::new(
                    ErrorCode::InvalidAmount,
                    format!("entries[{i}].amount: must be greater than zero"),
                ));
            }
            if e.amount.currency() != e.account.currency {
                return Err(Error::new(
                    ErrorCode::CurrencyMismatch,
                    format!(
                        "entries[{i}]: amount in {} on a {} account",
                        e.amount.currency(),
                        e.account.currency
                    ),
                ));
            }
            suspense::check_item_line(e, &format!("entries[{i}]"))?;
            if e.account.currency != currency {
                return Err(Error::new(
                    ErrorCode::CurrencyMismatch,
                    format!(
                        "entries[{i}]: one currency per posting ({} and {})",
                        currency, e.account.currency
                    ),
                ));
            }
        }
        suspense::check_items_once(&entries)?;
        let request = PostingRequest {
            request_id: request_id.to_string(),
            description: description.to_string(),
            entries,
            meta: PostingMeta::default(),
        };
        request.check_balanced()?;
        Ok(request)
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The same request with its value date and bank reference (validated by
    /// [`PostingMeta::new`]). They are not part of the content: a repeat answers with the first
    /// posting's.
    pub fn with_meta(mut self, meta: PostingMeta) -> PostingRequest {
        self.meta = meta;
        self
    }

    pub fn meta(&self) -> &PostingMeta {
        &self.meta
    }

    pub fn currency(&self) -> Currency {
        // At least two entries, all in one currency (checked in `new`).
        self.entries[0].account.currency
    }

    /// Debits equal credits, in minor units (exact integers).
    pub fn check_balanced(&self) -> Result<(), Error> {
        check_balanced(&self.entries)
    }

    /// The content fingerprint: sha256 over a canonical form of description and entries (entries
    /// sorted, amounts in minor units), so a repeat of the same content matches regardless of
    /// entry order.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.description, &self.entries)
    }

    /// Per account: (total debits, total credits) in minor units, in account id order.
    pub fn totals_by_account(&self) -> BTreeMap<String, (AccountKey, i64, i64)> {
        let mut out: BTreeMap<String, (AccountKey, i64, i64)> = BTreeMap::new();
        for e in &self.entries {
            let slot = out
                .entry(e.account.account_id())
                .or_insert_with(|| (e.account.clone(), 0, 0));
            match e.side {
                Side::Debit => slot.1 += e.amount.to_minor(),
                Side::Credit => slot.2 += e.amount.to_minor(),
            }
        }
        out
    }
}

/// Debits equal credits per currency, in minor units.
pub fn check_balanced(entries: &[Entry]) -> Result<(), Error> {
    let mut sums: BTreeMap<Currency, (i128, i128)> = BTreeMap::new();
    for e in entries {
        let slot = sums.entry(e.account.currency).or_default();
        match e.side {
            Side::Debit => slot.0 += i128::from(e.amount.to_minor()),
            Side::Credit => slot.1 += i128::from(e.amount.to_minor()),
        }
    }
    for (currency, (debits, credits)) in sums {
        if debits != credits {
            return Err(Error::new(
                ErrorCode::UnbalancedPosting,
                format!(
                    "debits {} and credits {} differ",
                    Money::from_minor(debits as i64, currency),
                    Money::from_minor(credits as i64, currency)
                ),
            ));
        }
    }
    Ok(())
}

/// See [`PostingRequest::fingerprint`].
pub fn fingerprint(description: &str, entries: &[Entry]) -> String {
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| {
            let line = format!(
                "{}|{}|{}",
                e.account.account_id(),
                e.side.as_str(),
                e.amount.to_minor()
            );
            // Lines without an item keep the form they had before items existed.
            if e.item.is_empty() {
                line
            } else {
                format!("{line}|{}", e.item)
            }
        })
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    hasher.update(b"tuikuan-posting-v1\n");
    hasher.update((description.len() as u64).to_be_bytes());
    hasher.update(description.as_bytes());
    for line in lines {
        hasher.update(b"\n");
        hasher.update(line.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A posting as stored: immutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub posting_id: String,
    pub request_id: String,
    pub description: String,
    pub entries: Vec<Entry>,
    pub posted_at_ms: i64,
    /// The bank's date of the money movement (the business date of posting when no bank date was
    /// given).
    pub value_date: chrono::NaiveDate,
    /// The bank's reference of the movement; empty where there is none.
    pub bank_reference: String,
}

impl Posting {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.description, &self.entries)
    }
}

/// The result of posting: the posting, and whether it was posted before under the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    pub posting: Posting,
    pub replayed: bool,
}

/// An account's running totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub account: AccountKey,
    pub debits_minor: i64,
    pub credits_minor: i64,
}

impl Balance {
    pub fn zero(account: AccountKey) -> Balance {
        Balance {
            account,
            debits_minor: 0,
            credits_minor: 0,
        }
    }

    pub fn debits(&self) -> Money {
        Money::from_minor(self.debits_minor, self.account.currency)
    }

    pub fn credits(&self) -> Money {
        Money::from_minor(self.credits_minor, self.account.currency)
    }

    /// The balance on the account's normal side (credits - debits for credit-normal accounts).
    pub fn balance(&self) -> Money {
        let minor = match self.account.account_type.normal_side() {
            Side::Credit => self.credits_minor - self.debits_minor,
            Side::Debit => self.debits_minor - self.credits_minor,
        };
        Money::from_minor(minor, self.account.currency)
    }
}

/// Total debits and credits of one currency over every account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub currency: Currency,
    pub debits_minor: i64,
    pub credits_minor: i64,
}

/// The trial balance: per-currency totals, every account, and whether debits equal credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialBalance {
    pub totals: Vec<CurrencyTotals>,
    pub accounts: Vec<Balance>,
    pub balanced: bool,
}

impl TrialBalance {
    /// Sums the accounts. Every posting is balanced when written, so the sums must be equal; a
    /// difference means storage was changed outside the ledger.
    pub fn from_accounts(mut accounts: Vec<Balance>) -> TrialBalance {
        accounts.sort_by_key(|b| b.account.account_id());
        let mut sums: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
        for b in &accounts {
            let slot = sums.entry(b.account.currency).or_default();
            slot.0 += b.debits_minor;
            slot.1 += b.credits_minor;
        }
        let totals: Vec<CurrencyTotals> = sums
            .into_iter()
            .map(|(currency, (d, c))| CurrencyTotals {
                currency,
                debits_minor: d,
                credits_minor: c,
            })
            .collect();
        let balanced = totals.iter().all(|t| t.debits_minor == t.credits_minor);
        TrialBalance {
            totals,
            accounts,
            balanced,
        }
    }
}

/// Clamps a requested page size: 0 means the default, never more than [`MAX_PAGE`].
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(s: &str) -> Money {
        Money::parse(s, "CNY", "amount").unwrap()
    }

    fn entry(t: AccountType, owner: &str, side: Side, amount: &str) -> Entry {
        Entry::new(
            AccountKey::new(t, owner, Currency::Cny, "account").unwrap(),
            side,
            cny(amount),
        )
    }

    fn settle() -> Vec<Entry> {
        vec![
            entry(AccountType::ChannelReserve, "netbank", Side::Debit, "100"),
            entry(AccountType::MerchantSettlement, "m1", Side::Credit, "99.40"),
            entry(AccountType::FeeIncome, PLATFORM, Side::Credit, "0.60"),
        ]
    }

    #[test]
    fn balanced_posting_is_accepted() {
        let r = PostingRequest::new("settle:t1", "settled", settle()).unwrap();
        assert_eq!(r.currency(), Currency::Cny);
        let totals = r.totals_by_account();
        assert_eq!(totals["MERCHANT_SETTLEMENT:m1:CNY"].2, 9940);
    }

    #[test]
    fn unbalanced_posting_is_rejected() {
        let mut e = settle();
        e[2].amount = cny("0.61");
        let err = PostingRequest::new("settle:t1", "", e).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnbalancedPosting);
    }

    #[test]
    fn request_shape_is_checked() {
        let err = PostingRequest::new("settle:t1", "", settle()[..1].to_vec()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = PostingRequest::new("", "", settle()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = PostingRequest::new("a b", "", settle()).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedId);
        let err = PostingRequest::new(&"x".repeat(129), "", settle()).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedId);
        assert!(validate_request_id("refund-debit:rf_0190abc", "r").is_ok());
        let mut mixed = settle();
        mixed[0].account.currency = Currency::Usd;
        mixed[0].amount = Money::parse("100", "USD", "a").unwrap();
        let err = PostingRequest::new("x", "", mixed).unwrap_err();
        assert_eq!(err.code, ErrorCode::CurrencyMismatch);
        assert_eq!(
            AccountKey::new(AccountType::Advance, "", Currency::Cny, "a")
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            AccountKey::new(AccountType::Advance, "a:b", Currency::Cny, "a")
                .unwrap_err()
                .code,
            ErrorCode::MalformedId
        );
    }

    #[test]
    fn fingerprint_ignores_entry_order_but_not_content() {
        let a = PostingRequest::new("k", "d", settle()).unwrap();
        let mut reordered = settle();
        reordered.reverse();
        let b = PostingRequest::new("k", "d", reordered).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = PostingRequest::new("k", "other", settle()).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut e = settle();
        e[0].amount = cny("100.01");
        e[1].amount = cny("99.41");
        let d = PostingRequest::new("k", "d", e).unwrap();
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn balances_on_the_normal_side_and_trial_balance() {
        let r = PostingRequest::new("k", "d", settle()).unwrap();
        let accounts: Vec<Balance> = r
            .totals_by_account()
            .into_values()
            .map(|(account, d, c)| Balance {
                account,
                debits_minor: d,
                credits_minor: c,
            })
            .collect();
        for b in &accounts {
            assert!(b.balance().is_positive(), "{b:?}");
        }
        let tb = TrialBalance::from_accounts(accounts.clone());
        assert!(tb.balanced);
        assert_eq!(tb.totals[0].debits_minor, 10000);
        let mut broken = accounts;
        broken[0].debits_minor += 1;
        assert!(!TrialBalance::from_accounts(broken).balanced);
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(5000), MAX_PAGE);
    }
}
