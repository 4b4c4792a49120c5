//! The auditor's checks of the books themselves, computed from the journal (every posting), not
//! from the ledger's running totals:
//!
//! - **Known reasons**: every posting's idempotency key starts with a reason the auditor knows
//!   ([`KNOWN_REASONS`]), whatever accounts it touches.
//! - **Journal agrees with the balances**: each account's balance summed from the journal equals
//!   the balance the ledger reports in its trial balance.
//! - **Reserve identity** (备付金恒等式, `docs/ledger.md`), per currency: Σ CHANNEL_RESERVE = Σ
//!   customer liabilities − Σ claims on the bank. A balanced posting between a reserve and fee
//!   income passes the trial balance but breaks this.
//! - **Reserves never negative**: per channel and currency, the customers' part
//!   (CHANNEL_RESERVE) and the platform's part (PLATFORM_IN_RESERVE) of the reserve bank account.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tuikuan_accounting::domain::{AccountType, ReserveRole};
use tuikuan_proto::accounting::v1 as acc;

use super::{dec, AuditReport};

/// Posting key prefixes of every reason the system posts for.
pub const KNOWN_REASONS: &[&str] = &[
    "settle:",
    "refund-debit:",
    "refund-complete:",
    "refund-reverse:",
    "refund-return:",
    "refund-reinstate:",
    "refund-reopen:",
    "adjust:",
    "sweep:",
    tuikuan_accounting::domain::suspense::CLEAR_PREFIX,
    tuikuan_accounting::domain::suspense::WRITE_OFF_PREFIX,
];

/// (account type, owner, currency) → balance on the normal side.
type Balances = BTreeMap<(AccountType, String, String), Decimal>;

/// The ledger's own account type of a wire one.
fn chart_type(v: i32) -> Option<AccountType> {
    AccountType::parse(super::account_type_name(v))
}

/// Balances summed from the journal. Entries on an account type this build does not know are
/// violations.
fn journal_balances<'a>(
    postings: impl Iterator<Item = &'a acc::Posting>,
    report: &mut AuditReport,
) -> anyhow::Result<Balances> {
    let mut out = Balances::new();
    for p in postings {
        for e in &p.entries {
            let Some(a) = &e.account else { continue };
            let Some(t) = chart_type(a.r#type) else {
                report.violation(format!(
                    "posting {}: an entry on an unknown account type {}",
                    p.request_id, a.r#type
                ));
                continue;
            };
            let v = dec(&e.amount, "entry amount")?;
            let on_normal = (e.side == acc::Side::Debit as i32)
                == (t.normal_side() == tuikuan_accounting::domain::Side::Debit);
            *out.entry((t, a.owner.clone(), a.currency.clone()))
                .or_default() += if on_normal { v } else { -v };
        }
    }
    Ok(out)
}

/// Runs every check of this module.
pub fn check<'a>(
    postings: impl Iterator<Item = &'a acc::Posting> + Clone,
    trial: &acc::TrialBalanceResponse,
    report: &mut AuditReport,
) -> anyhow::Result<()> {
    for p in postings.clone() {
        if !KNOWN_REASONS.iter().any(|r| p.request_id.starts_with(r)) {
            report.violation(format!(
                "posting {} ({}) has a reason the auditor does not know",
                tuikuan_kernel::echo(&p.request_id),
                p.posting_id
            ));
        }
    }
    let balances = journal_balances(postings, report)?;
    journal_agrees(&balances, trial, report)?;
    reserve_identity(&balances, report);
    Ok(())
}

fn journal_agrees(
    balances: &Balances,
    trial: &acc::TrialBalanceResponse,
    report: &mut AuditReport,
) -> anyhow::Result<()> {
    let mut reported: Balances = BTreeMap::new();
    for b in &trial.accounts {
        let Some(a) = &b.account else { continue };
        let Some(t) = chart_type(a.r#type) else {
            continue;
        };
        reported.insert(
            (t, a.owner.clone(), a.currency.clone()),
            dec(&b.balance, "trial balance")?,
        );
    }
    for (key, from_journal) in balances {
        let said = reported.get(key).copied().unwrap_or_default();
        if said != *from_journal {
            report.violation(format!(
                "{}:{}:{}: the journal sums to {} but the ledger reports {}",
                key.0, key.1, key.2, from_journal, said
            ));
        }
    }
    for (key, said) in &reported {
        if !balances.contains_key(key) && !said.is_zero() {
            report.violation(format!(
                "{}:{}:{}: the ledger reports {} with no posting in the journal",
                key.0, key.1, key.2, said
            ));
        }
    }
    Ok(())
}

fn reserve_identity(balances: &Balances, report: &mut AuditReport) {
    // currency → (reserve, customer liabilities, claims on the bank)
    let mut sums: BTreeMap<&str, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    for ((t, owner, currency), v) in balances {
        let slot = sums.entry(currency.as_str()).or_default();
        match t.reserve_role() {
            ReserveRole::Reserve => slot.0 += v,
            ReserveRole::CustomerLiability => slot.1 += v,
            ReserveRole::ClaimOnBank => slot.2 += v,
            ReserveRole::None => {}
        }
        let reserve_part = matches!(
            t,
            AccountType::ChannelReserve | AccountType::PlatformInReserve
        );
        if reserve_part && v.is_sign_negative() && !v.is_zero() {
            report.violation(format!("{t}:{owner}:{currency} is negative: {v}"));
        }
    }
    for (currency, (reserve, liabilities, claims)) in sums {
        if reserve != liabilities - claims {
            report.violation(format!(
                "reserve identity {currency}: the reserves hold {reserve} but customer liabilities {liabilities} less claims on the bank {claims} are {}",
                liabilities - claims
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::entry;

    fn posting(request_id: &str, entries: Vec<acc::Entry>) -> acc::Posting {
        acc::Posting {
            request_id: request_id.into(),
            entries,
            ..Default::default()
        }
    }

    fn settle() -> acc::Posting {
        use acc::AccountType::*;
        use acc::Side::*;
        posting(
            "settle:t1",
            vec![
                entry(ChannelReserve, "wx", Debit, "99.40"),
                entry(PlatformInReserve, "wx", Debit, "0.60"),
                entry(MerchantSettlement, "M1", Credit, "99.40"),
                entry(FeeIncome, "platform", Credit, "0.60"),
            ],
        )
    }

    /// The trial balance the ledger would report for these postings.
    fn trial(postings: &[acc::Posting]) -> acc::TrialBalanceResponse {
        let mut r = AuditReport::default();
        let balances = journal_balances(postings.iter(), &mut r).unwrap();
        acc::TrialBalanceResponse {
            accounts: balances
                .iter()
                .map(|((t, owner, c), v)| acc::Balance {
                    account: Some(acc::Account {
                        r#type: acc::AccountType::from_str_name(t.as_str()).unwrap() as i32,
                        owner: owner.clone(),
                        currency: c.clone(),
                    }),
                    balance: v.to_string(),
                    ..Default::default()
                })
                .collect(),
            balanced: true,
            ..Default::default()
        }
    }

    fn audit(postings: &[acc::Posting], trial: &acc::TrialBalanceResponse) -> AuditReport {
        let mut r = AuditReport::default();
        check(postings.iter(), trial, &mut r).unwrap();
        r
    }

    #[test]
    fn a_settlement_keeps_the_identity() {
        let ps = vec![settle()];
        let r = audit(&ps, &trial(&ps));
        assert!(r.ok(), "{r}");
    }

    /// After a settlement and `extra`, the audit finds exactly one violation, containing `needle`.
    fn one_violation(extra: acc::Posting, needle: &str) {
        let ps = vec![settle(), extra];
        let r = audit(&ps, &trial(&ps));
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.violations[0].contains(needle), "{r}");
    }

    #[test]
    fn a_balanced_posting_between_reserve_and_fee_income_is_caught() {
        use acc::AccountType::*;
        use acc::Side::*;
        let extra = posting(
            "settle:t2",
            vec![
                entry(FeeIncome, "platform", Debit, "5.00"),
                entry(ChannelReserve, "wx", Credit, "5.00"),
            ],
        );
        one_violation(extra, "reserve identity CNY: the reserves hold 94.40");
    }

    #[test]
    fn unknown_reasons_negative_reserves_and_disagreeing_balances_are_caught() {
        use acc::AccountType::*;
        use acc::Side::*;
        let extra = posting(
            "manual:oops",
            vec![
                entry(PlatformInReserve, "wx", Credit, "0.50"),
                entry(OwnFunds, "platform", Debit, "0.50"),
            ],
        );
        one_violation(extra, "manual:oops");

        let ps = vec![posting(
            "refund-complete:r1",
            vec![
                entry(RefundInTransit, "platform", Debit, "3.00"),
                entry(ChannelReserve, "wx", Credit, "3.00"),
            ],
        )];
        let r = audit(&ps, &trial(&ps));
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("CHANNEL_RESERVE:wx:CNY is negative: -3.00")),
            "{r}"
        );

        let ps = vec![settle()];
        let mut t = trial(&ps);
        t.accounts[0].balance = "1.00".into();
        let r = audit(&ps, &t);
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("the journal sums to 99.40 but the ledger reports 1.00")),
            "{r}"
        );
    }
}
