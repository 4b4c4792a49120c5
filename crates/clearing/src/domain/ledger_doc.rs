//! `docs/ledger.md`'s worked examples, checked against what the clearing center and the ledger
//! actually post: each postings table of the page is parsed, its totals must sum, and its lines
//! must be exactly the lines the code builds for the example (an order of 100.00 CNY on `wx`,
//! 80.00 cash and a 20.00 platform coupon, fee 0.6% refunded in proportion, a refund of 50.00).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tuikuan_accounting::domain::suspense::{
    clear_lines, write_off_lines, ItemStatus, SuspenseItem,
};
use tuikuan_accounting::domain::{AccountKey, Entry, Side};
use tuikuan_kernel::{Currency, Money};

use super::funds::sweep_lines;
use super::*;

const PAGE: &str = include_str!("../../../../docs/ledger.md");

/// (account as `TYPE:owner`, side) → amount in minor units, summed.
type Lines = BTreeMap<(String, Side), i64>;

fn cny(s: &str) -> Money {
    Money::parse(s, "CNY", "amount").expect("amount")
}

fn lines_of(entries: &[(AccountKey, Side, Money)]) -> Lines {
    let mut out = Lines::new();
    for (k, side, m) in entries {
        *out.entry((format!("{}:{}", k.account_type, k.owner), *side))
            .or_default() += m.to_minor();
    }
    out
}

fn entry_lines(entries: &[Entry]) -> Lines {
    let tuples: Vec<(AccountKey, Side, Money)> = entries
        .iter()
        .map(|e| (e.account.clone(), e.side, e.amount))
        .collect();
    lines_of(&tuples)
}

/// The cells of the first table after the first line that contains `marker`, header row first.
fn table_after(marker: &str) -> Vec<Vec<String>> {
    let start = PAGE
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("docs/ledger.md has no line with {marker:?}"));
    PAGE.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.starts_with("|---"))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('*').trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn amount(cell: &str) -> Option<i64> {
    if cell.is_empty() {
        None
    } else {
        Some(cny(cell).to_minor())
    }
}

/// The lines of the table's columns `debit` and `credit` (indexes); checks the total row sums.
fn doc_lines(table: &[Vec<String>], account: usize, debit: usize, credit: usize) -> Lines {
    let mut out = Lines::new();
    let (mut debits, mut credits) = (0, 0);
    let mut totals = None;
    for row in &table[1..] {
        let (d, c) = (amount(&row[debit]), amount(&row[credit]));
        if row[account] == "total" {
            totals = Some((d, c));
            continue;
        }
        // Account cells may carry a note: `SUSPENSE_BANK_CLAIM:wx` (item `adj-a`).
        let name = row[account]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches('`')
            .to_string();
        if let Some(d) = d {
            *out.entry((name.clone(), Side::Debit)).or_default() += d;
            debits += d;
        }
        if let Some(c) = c {
            *out.entry((name, Side::Credit)).or_default() += c;
            credits += c;
        }
    }
    assert_eq!(
        debits, credits,
        "a worked example does not balance: {table:?}"
    );
    if let Some((d, c)) = totals {
        assert_eq!(
            (d, c),
            (Some(debits), Some(credits)),
            "its total row: {table:?}"
        );
    }
    out
}

fn example() -> (Settlement, Debit) {
    let policy = MerchantPolicy {
        merchant_id: "M".into(),
        fee_rate: Decimal::new(6, 3),
        fee_refund: FeeRefundPolicy::Proportional,
        advance_limit: Decimal::ZERO,
        advance_currency: None,
    };
    let settlement = Settlement::new(
        &SettleRequest {
            trade_id: "t1".into(),
            merchant_id: "M".into(),
            channel: "wx".into(),
            amount: cny("100.00"),
            splits: vec![],
            subsidy: cny("20.00"),
        },
        |_| Some(policy.clone()),
    )
    .expect("settlement");
    let request = DebitRequest {
        refund_id: "r1".into(),
        trade_id: "t1".into(),
        merchant_id: "M".into(),
        amount: cny("50.00"),
        splits: vec![],
        error_refund: false,
    };
    let plan = settlement.plan_debit(&request).expect("plan");
    let debit = Debit::new(&request, &settlement, &plan, &[0], 0);
    (settlement, debit)
}

#[test]
fn payment_refund_and_delivery_post_what_the_page_says() {
    let (settlement, debit) = example();
    for (heading, posted) in [
        ("(`settle:{trade}`)", settlement.postings()),
        ("(`refund-debit:{refund}`)", debit.debit_postings()),
        ("(`refund-complete:{refund}`)", debit.complete_postings()),
    ] {
        let table = table_after(heading);
        assert_eq!(doc_lines(&table, 0, 1, 2), lines_of(&posted), "{heading}");
    }
}

#[test]
fn reversal_and_return_post_what_the_page_says() {
    let (_, debit) = example();
    let table = table_after("(`refund-return:{refund}`)");
    assert_eq!(
        doc_lines(&table, 0, 1, 2),
        lines_of(&debit.reverse_postings())
    );
    assert_eq!(
        doc_lines(&table, 0, 3, 4),
        lines_of(&debit.return_postings())
    );
}

#[test]
fn the_sweep_posts_what_the_page_says() {
    let table = table_after("(`sweep:{channel}:{currency}:{date}`)");
    assert_eq!(
        doc_lines(&table, 0, 1, 2),
        lines_of(&sweep_lines("wx", cny("10.60")))
    );
}

/// The suspense example: two adjustments open a claim and an amount owed; one is cleared, the
/// other written off.
#[test]
fn suspense_items_post_what_the_page_says() {
    let table = table_after("Worked example. A 121.13 claim");
    // Group the rows by posting (a blank posting cell continues the one above).
    let mut by_posting: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    for row in &table[1..] {
        if row[1].is_empty() && row[0] == "total" {
            continue;
        }
        if !row[0].is_empty() {
            by_posting.push((row[0].clone(), vec![table[0].clone()]));
        }
        if let Some(last) = by_posting.last_mut() {
            last.1.push(row.clone());
        }
    }
    let adjustment = |id: &str, kind: AdjustmentKind, amount: &str| {
        Adjustment::new(id, kind, "wx", cny(amount), "bank wins", 0).expect("adjustment")
    };
    let item = |id: &str, t: AccountType, amount: &str| SuspenseItem {
        item_id: id.into(),
        account: AccountKey {
            account_type: t,
            owner: "wx".into(),
            currency: Currency::Cny,
        },
        amount: cny(amount),
        remaining: cny(amount),
        status: ItemStatus::Open,
        source: format!("adjust:{id}"),
        description: String::new(),
        value_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"),
        bank_reference: String::new(),
        opened_at_ms: 0,
        closed_by: String::new(),
        closed_at_ms: None,
    };
    let expected: Vec<(&str, Lines)> = vec![
        (
            "adjust:adj-a",
            entry_lines(&adjustment("adj-a", AdjustmentKind::BankToSuspense, "121.13").postings()),
        ),
        (
            "adjust:adj-b",
            entry_lines(&adjustment("adj-b", AdjustmentKind::SuspenseToBank, "112.50").postings()),
        ),
        (
            "suspense-clear:adj-b",
            entry_lines(
                &clear_lines(
                    &item("adj-b", AccountType::SuspenseOwedCustomer, "112.50"),
                    "",
                )
                .expect("clear"),
            ),
        ),
        (
            "suspense-write-off:adj-a",
            entry_lines(
                &write_off_lines(&item("adj-a", AccountType::SuspenseBankClaim, "121.13"))
                    .expect("write off"),
            ),
        ),
    ];
    assert_eq!(
        by_posting
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        expected.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    for ((posting, rows), (_, lines)) in by_posting.iter().zip(&expected) {
        assert_eq!(&doc_lines(rows, 1, 2, 3), lines, "{posting}");
    }
}

/// The payment of [`example`] without its coupon, debited in full as an error refund; with it,
/// the next such payment, which repays the advance.
fn error_refund_example() -> (Debit, Settlement) {
    let policy = MerchantPolicy {
        merchant_id: "M".into(),
        fee_rate: Decimal::new(6, 3),
        fee_refund: FeeRefundPolicy::None,
        advance_limit: Decimal::ZERO,
        advance_currency: None,
    };
    let settlement = Settlement::new(
        &SettleRequest {
            trade_id: "t2".into(),
            merchant_id: "M".into(),
            channel: "wx".into(),
            amount: cny("100.00"),
            splits: vec![],
            subsidy: Money::zero(Currency::Cny),
        },
        |_| Some(policy.clone()),
    )
    .expect("settlement");
    let request = DebitRequest {
        refund_id: "r2".into(),
        trade_id: "t2".into(),
        merchant_id: "M".into(),
        amount: cny("100.00"),
        splits: vec![],
        error_refund: true,
    };
    let plan = settlement.plan_debit(&request).expect("plan");
    // The merchant has 30.00 left; no line: an error refund is advanced beyond it.
    let cover = super::shortfall::cover_shortfall(
        &policy,
        &AdvanceLine::default(),
        Currency::Cny,
        plan.parts[0].merchant_minor(),
        3000,
        true,
    )
    .expect("cover");
    let debit = Debit::new(&request, &settlement, &plan, &[cover.advance_minor], 0);
    let mut next = settlement.clone();
    next.trade_id = "t4".into();
    next.receivers[0].advance_repaid_minor = cover.advance_minor;
    (debit, next)
}

#[test]
fn an_error_refund_when_short_posts_what_the_page_says() {
    let (debit, next) = error_refund_example();
    let table = table_after("Advances and error refunds (垫付, 差错退款)");
    assert_eq!(
        doc_lines(&table, 0, 1, 2),
        lines_of(&debit.debit_postings())
    );
    let table = table_after("repays the 69.40 advanced:");
    assert_eq!(doc_lines(&table, 0, 1, 2), lines_of(&next.postings()));
}

#[test]
fn a_reinstatement_posts_what_the_page_says() {
    let (_, debit) = example();
    let balances = BTreeMap::from([("M".to_string(), 3000)]);
    let parts = super::reinstate::plan_reinstatement(&debit, &balances);
    let posted = super::reinstate::reinstate_postings(&debit, &parts).expect("reinstate");
    let table = table_after("(`refund-reinstate:{refund}`)");
    assert_eq!(doc_lines(&table, 0, 1, 2), lines_of(&posted));
}

#[test]
fn a_split_payment_and_its_refund_post_what_the_page_says() {
    let policy = |id: &str, rate: i64, fee_refund| MerchantPolicy {
        merchant_id: id.into(),
        fee_rate: Decimal::new(rate, 3),
        fee_refund,
        advance_limit: Decimal::ZERO,
        advance_currency: None,
    };
    let settlement = Settlement::new(
        &SettleRequest {
            trade_id: "t3".into(),
            merchant_id: "M1".into(),
            channel: "wx".into(),
            amount: cny("100.00"),
            splits: vec![
                Split {
                    receiver_id: "M1".into(),
                    amount: cny("60.00"),
                },
                Split {
                    receiver_id: "M2".into(),
                    amount: cny("40.00"),
                },
            ],
            subsidy: Money::zero(Currency::Cny),
        },
        |id| match id {
            "M1" => Some(policy("M1", 6, FeeRefundPolicy::Proportional)),
            "M2" => Some(policy("M2", 10, FeeRefundPolicy::None)),
            _ => None,
        },
    )
    .expect("settlement");
    let request = DebitRequest {
        refund_id: "r3".into(),
        trade_id: "t3".into(),
        merchant_id: "M1".into(),
        amount: cny("50.00"),
        splits: vec![],
        error_refund: false,
    };
    let plan = settlement.plan_debit(&request).expect("plan");
    let debit = Debit::new(&request, &settlement, &plan, &[0, 0], 0);
    let page = |marker: &str| doc_lines(&table_after(marker), 0, 1, 2);
    assert_eq!(
        page("Payment settled (`settle:{trade}` of a split)"),
        lines_of(&settlement.postings())
    );
    assert_eq!(
        page("(`refund-debit:{refund}` of a split)"),
        lines_of(&debit.debit_postings())
    );
}
