//! The reserve report (备付金对账): a channel's reserve bank account as the ledger moved it on one
//! value date, beside the bank's statement of that account for the date, with every difference.
//!
//! The bank account is the two ledger accounts `CHANNEL_RESERVE` and `PLATFORM_IN_RESERVE` of the
//! channel together. Each posting that touches them moves the account by its net amount, which has
//! two parts:
//! - **transfers with the platform's own account** — the posting's `OWN_FUNDS` lines (coupons,
//!   advances and fee shares paid in, sweeps out, write-offs made good);
//! - **the rest, money exchanged with the outside through the bank**: a refund paid, a payout
//!   returned, a bank row booked by a resolution, a suspense item cleared, a payment collected.
//!
//! Outside movements that carry a bank reference are summed per reference and compared with the
//! statement's rows of the same reference (also summed): equal is matched, anything else is a
//! difference, as is a reference on one side only. Movements without a reference are listed with
//! the reason the statement does not show them by reference (collections come in through the
//! payment channel's settlement; transfers are the platform's own), or as unexplained when their
//! posting reason is none of those.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use tuikuan_kernel::statement::{Direction, StatementRow};
use tuikuan_kernel::{Currency, Money};

use super::{AccountType, Posting, Side};

/// How a line of the report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineStatus {
    /// The ledger and the statement agree for this reference.
    Matched,
    /// Both have the reference, with different amounts or directions.
    AmountDiffers,
    /// The ledger moved money under a reference the statement does not have.
    LedgerOnly,
    /// The statement has a row the ledger has nothing for.
    BankOnly,
    /// A ledger movement without a bank reference of a kind the statement does not list by
    /// reference (the line's `explanation` says which).
    Explained,
    /// A ledger movement without a bank reference of no known kind.
    Unexplained,
}

impl LineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Matched => "MATCHED",
            LineStatus::AmountDiffers => "AMOUNT_DIFFERS",
            LineStatus::LedgerOnly => "LEDGER_ONLY",
            LineStatus::BankOnly => "BANK_ONLY",
            LineStatus::Explained => "EXPLAINED",
            LineStatus::Unexplained => "UNEXPLAINED",
        }
    }

    /// Whether the line is a difference finance has to look at.
    pub fn is_difference(self) -> bool {
        !matches!(self, LineStatus::Matched | LineStatus::Explained)
    }
}

/// One movement of the reserve bank account in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub request_id: String,
    pub reference: String,
    /// Signed, minor units: positive is into the account.
    pub minor: i64,
    /// Whether this is the transfer part (with the platform's own account).
    pub transfer: bool,
}

/// The ledger's movements of `channel`'s reserve bank account in `currency` in `postings` (which
/// the caller chose by value date), each posting split into its outside part and its transfer
/// part; zero parts are left out.
pub fn movements(postings: &[Posting], channel: &str, currency: Currency) -> Vec<Movement> {
    let mut out = Vec::new();
    for p in postings {
        let (mut account, mut own) = (0i64, 0i64);
        for e in &p.entries {
            if e.account.currency != currency {
                continue;
            }
            let signed = match e.side {
                Side::Debit => e.amount.to_minor(),
                Side::Credit => -e.amount.to_minor(),
            };
            match e.account.account_type {
                AccountType::ChannelReserve | AccountType::PlatformInReserve
                    if e.account.owner == channel =>
                {
                    account += signed
                }
                AccountType::OwnFunds => own += signed,
                _ => {}
            }
        }
        if account == 0 && own == 0 {
            continue;
        }
        // Own funds fell by what went into the reserve account (a credit there is a transfer in).
        let transfer = -own;
        let outside = account - transfer;
        if outside != 0 {
            out.push(Movement {
                request_id: p.request_id.clone(),
                reference: p.bank_reference.clone(),
                minor: outside,
                transfer: false,
            });
        }
        if transfer != 0 {
            out.push(Movement {
                request_id: p.request_id.clone(),
                reference: String::new(),
                minor: transfer,
                transfer: true,
            });
        }
    }
    out
}

/// Why a ledger movement without a bank reference has no statement row to match, or `None`.
fn explanation(m: &Movement) -> Option<&'static str> {
    if m.transfer {
        return Some("transfer with the platform's own account");
    }
    let reason = m.request_id.split(':').next().unwrap_or_default();
    match reason {
        "settle" => Some("payment collected through the payment channel's settlement"),
        "sweep" => Some("sweep to the platform's own account"),
        _ => None,
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub status: LineStatus,
    /// The bank reference (empty for movements without one).
    pub reference: String,
    /// The ledger's signed amount for the reference or movement (minor units), if any.
    pub ledger_minor: Option<i64>,
    /// The statement's signed amount for the reference, if any.
    pub bank_minor: Option<i64>,
    /// The ledger postings behind the line.
    pub postings: Vec<String>,
    pub explanation: String,
}

/// The report of one channel, currency and value date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveReport {
    pub channel: String,
    pub currency: Currency,
    pub date: NaiveDate,
    pub lines: Vec<ReportLine>,
    /// Net movement of the account per the ledger (all of it) and per the statement.
    pub ledger_net_minor: i64,
    pub bank_net_minor: i64,
}

impl ReserveReport {
    pub fn differences(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.status.is_difference())
            .count()
    }

    pub fn money(&self, minor: i64) -> Money {
        Money::from_minor(minor, self.currency)
    }
}

/// Sets `movements` beside the statement `rows` (only rows of `date` and `currency` count).
pub fn reconcile(
    channel: &str,
    currency: Currency,
    date: NaiveDate,
    movements: &[Movement],
    rows: &[StatementRow],
) -> ReserveReport {
    let mut ledger: BTreeMap<&str, (i64, Vec<String>)> = BTreeMap::new();
    let mut lines = Vec::new();
    for m in movements {
        if m.reference.is_empty() {
            let explained = explanation(m);
            lines.push(ReportLine {
                status: if explained.is_some() {
                    LineStatus::Explained
                } else {
                    LineStatus::Unexplained
                },
                reference: String::new(),
                ledger_minor: Some(m.minor),
                bank_minor: None,
                postings: vec![m.request_id.clone()],
                explanation: explained
                    .unwrap_or("a movement without a bank reference")
                    .to_string(),
            });
        } else {
            let slot = ledger.entry(m.reference.as_str()).or_default();
            slot.0 += m.minor;
            slot.1.push(m.request_id.clone());
        }
    }
    let mut bank: BTreeMap<&str, i64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.date == date && r.amount.currency() == currency)
    {
        *bank.entry(r.reference.as_str()).or_default() += r.signed_minor();
    }
    let mut references: Vec<&str> = ledger.keys().chain(bank.keys()).copied().collect();
    references.sort();
    references.dedup();
    for reference in references {
        let l = ledger.get(reference);
        let b = bank.get(reference).copied();
        let status = match (l, b) {
            (Some((lm, _)), Some(bm)) if *lm == bm => LineStatus::Matched,
            (Some(_), Some(_)) => LineStatus::AmountDiffers,
            (Some(_), None) => LineStatus::LedgerOnly,
            _ => LineStatus::BankOnly,
        };
        lines.push(ReportLine {
            status,
            reference: reference.to_string(),
            ledger_minor: l.map(|(m, _)| *m),
            bank_minor: b,
            postings: l.map(|(_, p)| p.clone()).unwrap_or_default(),
            explanation: String::new(),
        });
    }
    ReserveReport {
        channel: channel.to_string(),
        currency,
        date,
        ledger_net_minor: movements.iter().map(|m| m.minor).sum(),
        bank_net_minor: bank.values().sum(),
        lines,
    }
}

/// The signed minor amount as a statement direction and positive amount.
pub fn direction_of(minor: i64, currency: Currency) -> (Direction, Money) {
    (
        Direction::of_signed(minor),
        Money::from_minor(minor.abs(), currency),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountKey, Entry, PLATFORM};

    fn cny(minor: i64) -> Money {
        Money::from_minor(minor, Currency::Cny)
    }

    fn key(t: AccountType, owner: &str) -> AccountKey {
        AccountKey {
            account_type: t,
            owner: owner.into(),
            currency: Currency::Cny,
        }
    }

    fn posting(
        request_id: &str,
        reference: &str,
        lines: Vec<(AccountType, &str, Side, i64)>,
    ) -> Posting {
        Posting {
            posting_id: format!("pst_{request_id}"),
            request_id: request_id.into(),
            description: String::new(),
            entries: lines
                .into_iter()
                .map(|(t, o, s, m)| Entry::new(key(t, o), s, cny(m)))
                .collect(),
            posted_at_ms: 0,
            value_date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            bank_reference: reference.into(),
        }
    }

    fn row(reference: &str, direction: Direction, minor: i64) -> StatementRow {
        StatementRow {
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            reference: reference.into(),
            direction,
            amount: cny(minor),
        }
    }

    #[test]
    fn splits_transfers_and_matches_by_reference() {
        use AccountType::*;
        use Side::*;
        let postings = vec![
            // 80.00 cash + 20.00 coupon from own funds, fee 0.60.
            posting(
                "settle:t1",
                "",
                vec![
                    (ChannelReserve, "wx", Debit, 9940),
                    (PlatformInReserve, "wx", Debit, 60),
                    (Subsidy, PLATFORM, Debit, 2000),
                    (OwnFunds, PLATFORM, Credit, 2000),
                    (MerchantSettlement, "M", Credit, 9940),
                    (FeeIncome, PLATFORM, Credit, 60),
                ],
            ),
            posting(
                "refund-complete:r1",
                "BK1",
                vec![
                    (RefundInTransit, PLATFORM, Debit, 4000),
                    (ChannelReserve, "wx", Credit, 4000),
                ],
            ),
            // The bank paid 0.50 less than booked: the adjustment under the same reference.
            posting(
                "adjust:adj-2",
                "BK2",
                vec![
                    (ChannelReserve, "wx", Debit, 50),
                    (SuspenseOwedCustomer, "wx", Credit, 50),
                ],
            ),
            posting(
                "refund-complete:r2",
                "BK2",
                vec![
                    (RefundInTransit, PLATFORM, Debit, 1000),
                    (ChannelReserve, "wx", Credit, 1000),
                ],
            ),
            posting(
                "sweep:wx:CNY:2026-12-01",
                "",
                vec![
                    (OwnFunds, PLATFORM, Debit, 60),
                    (PlatformInReserve, "wx", Credit, 60),
                ],
            ),
            // Another channel is not this report's business.
            posting(
                "refund-complete:r9",
                "BK9",
                vec![
                    (RefundInTransit, PLATFORM, Debit, 1),
                    (ChannelReserve, "ali", Credit, 1),
                ],
            ),
            posting(
                "odd:x",
                "",
                vec![
                    (ChannelReserve, "wx", Debit, 5),
                    (FeeIncome, PLATFORM, Credit, 5),
                ],
            ),
        ];
        let moves = movements(&postings, "wx", Currency::Cny);
        assert_eq!(
            moves
                .iter()
                .map(|m| (m.request_id.as_str(), m.minor, m.transfer))
                .collect::<Vec<_>>(),
            vec![
                ("settle:t1", 8000, false),
                ("settle:t1", 2000, true),
                ("refund-complete:r1", -4000, false),
                ("adjust:adj-2", 50, false),
                ("refund-complete:r2", -1000, false),
                ("sweep:wx:CNY:2026-12-01", -60, true),
                ("odd:x", 5, false),
            ]
        );
        let rows = vec![
            row("BK1", Direction::Out, 4000),
            row("BK2", Direction::Out, 950),
            row("BK3", Direction::Out, 700),
        ];
        let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let report = reconcile("wx", Currency::Cny, date, &moves, &rows);
        let shown: Vec<(LineStatus, &str)> = report
            .lines
            .iter()
            .map(|l| (l.status, l.reference.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (LineStatus::Explained, ""),
                (LineStatus::Explained, ""),
                (LineStatus::Explained, ""),
                (LineStatus::Unexplained, ""),
                (LineStatus::Matched, "BK1"),
                (LineStatus::Matched, "BK2"),
                (LineStatus::BankOnly, "BK3"),
            ]
        );
        assert_eq!(report.differences(), 2);
        assert_eq!(report.bank_net_minor, -5650);
        assert_eq!(
            report.ledger_net_minor,
            8000 + 2000 - 4000 + 50 - 1000 - 60 + 5
        );
        let mut wrong = rows.clone();
        wrong[0].amount = cny(4001);
        let r = reconcile("wx", Currency::Cny, date, &moves, &wrong);
        assert!(r
            .lines
            .iter()
            .any(|l| l.status == LineStatus::AmountDiffers));
        let r = reconcile("wx", Currency::Cny, date, &moves, &[]);
        assert!(r.lines.iter().any(|l| l.status == LineStatus::LedgerOnly));
        assert_eq!(direction_of(-5, Currency::Cny), (Direction::Out, cny(5)));
    }
}
