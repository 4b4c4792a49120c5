//! Reinstatement (恢复成功): a refund the platform made FAILED — its debit REVERSED, the money back
//! with the merchant — although the bank did pay it (a status conflict resolved bank-wins, a bank's
//! late correction, staff's approved reinstate). The customer has the money, so the merchant gives
//! it again: the debit is taken again and completed in one posting, `refund-reinstate:{refund}`.
//!
//! What a receiver's available balance cannot cover becomes a receivable from it
//! (MERCHANT_RECEIVABLE, 应收商户), paid into the reserve from the platform's own funds like an
//! advance — never a second refund, and never a negative balance. The split between balance and
//! receivable is decided when the reinstatement starts and stored with it, so a retry posts the
//! same content; when the ledger refuses it because a balance fell meanwhile, it is decided again
//! from the new balances before anything was posted.
//!
//! The lines, per receiver Dr MERCHANT_SETTLEMENT what its balance covers and Dr
//! MERCHANT_RECEIVABLE the rest; Dr FEE_INCOME the fee share; Cr SUBSIDY the subsidy share; Cr
//! CHANNEL_RESERVE the cash (it left with the bank's payment), with the funding lines of
//! [`super::funds`] (fee share and receivable from OWN_FUNDS, subsidy share to
//! PLATFORM_IN_RESERVE). They are the debit posting and the completion posting of the refund
//! added together, with the receivable in place of an advance.

use std::collections::BTreeMap;

use tuikuan_accounting::domain::{AccountKey, AccountType, Side};
use tuikuan_kernel::{Currency, Error, ErrorCode, Money};

use super::funds::reserve_lines;
use super::{Debit, DebitStatus, Step};

/// One receiver's part of a reinstatement: what its balance covers, what it owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReinstatePart {
    pub receiver_id: String,
    /// Taken from its available balance (Dr MERCHANT_SETTLEMENT).
    pub covered: Money,
    /// Beyond its balance: owed to the platform (Dr MERCHANT_RECEIVABLE).
    pub receivable: Money,
}

/// The ledger key of a reinstatement: `refund-reinstate:{refund_id}`.
pub fn reinstate_request_id(refund_id: &str) -> String {
    format!("refund-reinstate:{refund_id}")
}

/// A merchant's MERCHANT_RECEIVABLE account (what it owes the platform beyond its advance line).
pub fn receivable_account(merchant_id: &str, currency: Currency) -> AccountKey {
    AccountKey {
        account_type: AccountType::MerchantReceivable,
        owner: merchant_id.to_string(),
        currency,
    }
}

/// Splits each receiver's merchant part between its available balance (minor units, from the
/// ledger just before; a receiver missing from `balances` is taken as having none) and a
/// receivable.
pub fn plan_reinstatement(debit: &Debit, balances: &BTreeMap<String, i64>) -> Vec<ReinstatePart> {
    let c = debit.currency();
    debit
        .parts
        .iter()
        .map(|p| {
            let part = p.merchant().to_minor();
            let balance = balances.get(&p.receiver_id).copied().unwrap_or(0).max(0);
            let covered = part.min(balance);
            ReinstatePart {
                receiver_id: p.receiver_id.clone(),
                covered: Money::from_minor(covered, c),
                receivable: Money::from_minor(part - covered, c),
            }
        })
        .collect()
}

/// The reinstatement posting (see the module documentation). `parts` must be the debit's
/// receivers with `covered + receivable` = each one's merchant part (checked: an internal error
/// otherwise, nothing is posted).
pub fn reinstate_postings(
    debit: &Debit,
    parts: &[ReinstatePart],
) -> Result<Vec<(AccountKey, Side, Money)>, Error> {
    let c = debit.currency();
    let mut receivable = 0;
    let mut entries = Vec::new();
    for p in &debit.parts {
        let r = parts
            .iter()
            .find(|r| r.receiver_id == p.receiver_id)
            .filter(|r| {
                r.covered.to_minor() + r.receivable.to_minor() == p.merchant().to_minor()
                    && r.covered.to_minor() >= 0
                    && r.receivable.to_minor() >= 0
            })
            .ok_or_else(|| {
                Error::internal(format!(
                    "reinstatement of refund {} does not cover receiver {}",
                    debit.refund_id, p.receiver_id
                ))
            })?;
        receivable += r.receivable.to_minor();
        entries.push((
            AccountKey::merchant_settlement(&p.receiver_id, c),
            Side::Debit,
            r.covered,
        ));
        entries.push((
            receivable_account(&p.receiver_id, c),
            Side::Debit,
            r.receivable,
        ));
    }
    entries.extend([
        (
            AccountKey::platform(AccountType::FeeIncome, c),
            Side::Debit,
            debit.fee_amount,
        ),
        (
            AccountKey::platform(AccountType::Subsidy, c),
            Side::Credit,
            debit.subsidy_amount,
        ),
    ]);
    entries.extend(reserve_lines(
        &debit.channel,
        c,
        -debit.cash_amount().to_minor(),
        debit.fee_amount.to_minor() + receivable,
        debit.subsidy_amount.to_minor(),
    ));
    Ok(entries.into_iter().filter(|e| !e.2.is_zero()).collect())
}

/// The next step towards a reinstated (COMPLETED) debit. A debit whose reversal is unfinished
/// finishes it first; one that still holds (DEBITED) is simply completed; a completed one is done.
pub fn next_step(debit: &Debit) -> Step {
    use DebitStatus::*;
    match debit.status {
        Pending => Step::PostDebit,
        Debited => Step::BeginComplete,
        Completing => Step::PostComplete,
        Completed => Step::Done,
        Reversing => Step::PostReverse,
        Reversed => Step::BeginReinstate,
        Reinstating => Step::PostReinstate,
        Rejected | Returning | Returned | Reopening => Step::Fail(Error::new(
            ErrorCode::DebitNotActive,
            format!(
                "debit of refund {} is {}: it cannot be reinstated",
                debit.refund_id, debit.status
            ),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::DebitPart;

    fn cny(minor: i64) -> Money {
        Money::from_minor(minor, Currency::Cny)
    }

    /// A 50.00 refund: fee share 0.30, coupon share 10.00, so cash 40.00 and merchant part 49.70.
    pub(crate) fn debit() -> Debit {
        Debit {
            refund_id: "rf1".into(),
            trade_id: "t1".into(),
            merchant_id: "m1".into(),
            channel: "wx".into(),
            amount: cny(5000),
            merchant_amount: cny(4970),
            fee_amount: cny(30),
            subsidy_amount: cny(1000),
            error_refund: false,
            explicit_splits: false,
            parts: vec![DebitPart {
                receiver_id: "m1".into(),
                amount: cny(5000),
                fee: cny(30),
                advance: cny(0),
                back_to_advance: cny(0),
            }],
            status: DebitStatus::Reversed,
            debit_posting_id: Some("p1".into()),
            final_posting_id: Some("p2".into()),
            reason: String::new(),
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    fn signed(lines: &[(AccountKey, Side, Money)], t: AccountType) -> i64 {
        lines
            .iter()
            .filter(|l| l.0.account_type == t)
            .map(|l| match l.1 {
                Side::Debit => l.2.to_minor(),
                Side::Credit => -l.2.to_minor(),
            })
            .sum()
    }

    fn balanced(lines: &[(AccountKey, Side, Money)]) {
        let total: i64 = AccountType::ALL.iter().map(|t| signed(lines, *t)).sum();
        assert_eq!(total, 0, "{lines:?}");
    }

    #[test]
    fn a_covered_reinstatement_is_debit_plus_completion() {
        let d = debit();
        let parts = plan_reinstatement(&d, &BTreeMap::from([("m1".to_string(), 10_000)]));
        assert_eq!(parts[0].covered, cny(4970));
        assert_eq!(parts[0].receivable, cny(0));
        let lines = reinstate_postings(&d, &parts).unwrap();
        balanced(&lines);
        assert_eq!(signed(&lines, AccountType::MerchantSettlement), 4970);
        assert_eq!(signed(&lines, AccountType::FeeIncome), 30);
        assert_eq!(signed(&lines, AccountType::Subsidy), -1000);
        // The same as the debit and completion postings together.
        let mut both = d.debit_postings();
        both.extend(d.complete_postings());
        for t in AccountType::ALL {
            assert_eq!(signed(&lines, *t), signed(&both, *t), "{t}");
        }
        assert!(!lines
            .iter()
            .any(|l| l.0.account_type == AccountType::MerchantReceivable));
    }

    #[test]
    fn a_short_balance_leaves_a_receivable_funded_from_own_funds() {
        let d = debit();
        // docs/ledger.md's worked example: the merchant has 30.00 left of the 49.70 it owes.
        let parts = plan_reinstatement(&d, &BTreeMap::from([("m1".to_string(), 3_000)]));
        assert_eq!(parts[0].covered, cny(3000));
        assert_eq!(parts[0].receivable, cny(1970));
        let lines = reinstate_postings(&d, &parts).unwrap();
        balanced(&lines);
        assert_eq!(signed(&lines, AccountType::MerchantSettlement), 3000);
        assert_eq!(signed(&lines, AccountType::MerchantReceivable), 1970);
        assert_eq!(signed(&lines, AccountType::FeeIncome), 30);
        assert_eq!(signed(&lines, AccountType::Subsidy), -1000);
        assert_eq!(signed(&lines, AccountType::OwnFunds), -2000);
        assert_eq!(signed(&lines, AccountType::PlatformInReserve), 1000);
        assert_eq!(signed(&lines, AccountType::ChannelReserve), -3000);
        // Customer funds: the reserve lost the cash and got the receivable and fee share back
        // from own funds, less the coupon share that is the platform's again: exactly what the
        // merchant liability went down by.
        assert_eq!(
            signed(&lines, AccountType::ChannelReserve),
            -signed(&lines, AccountType::MerchantSettlement)
        );
        // No balance at all (or a negative one): all of it is owed.
        let none = plan_reinstatement(&d, &BTreeMap::new());
        assert_eq!(none[0].receivable, cny(4970));
        let negative = plan_reinstatement(&d, &BTreeMap::from([("m1".to_string(), -5)]));
        assert_eq!(negative, none);
        balanced(&reinstate_postings(&d, &none).unwrap());
    }

    #[test]
    fn parts_that_do_not_cover_the_receivers_are_refused() {
        let d = debit();
        let mut parts = plan_reinstatement(&d, &BTreeMap::new());
        parts[0].receivable = cny(1);
        assert_eq!(
            reinstate_postings(&d, &parts).unwrap_err().code,
            ErrorCode::Internal
        );
        assert!(reinstate_postings(&d, &[]).is_err());
        assert_eq!(reinstate_request_id("rf1"), "refund-reinstate:rf1");
    }

    #[test]
    fn steps_towards_a_reinstated_debit() {
        let mut d = debit();
        let step = |d: &Debit| match next_step(d) {
            Step::Fail(e) => format!("fail {}", e.code),
            other => format!("{other:?}"),
        };
        let table: Vec<(DebitStatus, &str)> = vec![
            (DebitStatus::Pending, "PostDebit"),
            (DebitStatus::Debited, "BeginComplete"),
            (DebitStatus::Completing, "PostComplete"),
            (DebitStatus::Completed, "Done"),
            (DebitStatus::Reversing, "PostReverse"),
            (DebitStatus::Reversed, "BeginReinstate"),
            (DebitStatus::Reinstating, "PostReinstate"),
            (DebitStatus::Rejected, "fail DEBIT_NOT_ACTIVE"),
            (DebitStatus::Returning, "fail DEBIT_NOT_ACTIVE"),
            (DebitStatus::Returned, "fail DEBIT_NOT_ACTIVE"),
            (DebitStatus::Reopening, "fail DEBIT_NOT_ACTIVE"),
        ];
        assert_eq!(table.len(), DebitStatus::ALL.len());
        for (status, want) in table {
            d.status = status;
            assert_eq!(step(&d), want, "{status}");
        }
    }
}
