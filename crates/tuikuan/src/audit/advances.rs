//! A refund's net effect on its receivers' advances (垫付), for the check that a reversed or
//! returned refund leaves each merchant's settlement account as it was.
//!
//! A debit the platform advanced for takes less from the balance than the merchant part
//! (Dr ADVANCE for the rest); the reversal or return repays what is still outstanding of the
//! advance (Cr ADVANCE) and gives the remainder back to the balance. When the merchant's next
//! settlement repaid the advance before the refund failed, the reversal finds nothing outstanding
//! and gives the whole part back to the balance: the balance ends up higher by exactly what the
//! advance account did not get back. So per merchant and currency, the settlement account's net
//! change (credit-normal) must equal the advance account's (debit-normal) — zero when nothing was
//! advanced.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tuikuan_proto::accounting::v1 as acc;

use super::dec;

/// (owner, currency) → net change of its ADVANCE account over `postings`, on the debit side.
pub fn net_advanced<'a>(
    postings: impl Iterator<Item = &'a acc::Posting>,
) -> anyhow::Result<BTreeMap<(String, String), Decimal>> {
    let mut out: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for p in postings {
        for e in &p.entries {
            let Some(a) = &e.account else { continue };
            if a.r#type != acc::AccountType::Advance as i32 {
                continue;
            }
            let v = dec(&e.amount, "entry amount")?;
            *out.entry((a.owner.clone(), a.currency.clone()))
                .or_default() += if e.side == acc::Side::Debit as i32 {
                v
            } else {
                -v
            };
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::*;

    #[test]
    fn an_advance_repaid_elsewhere_stays_on_the_balance() {
        let debit = acc::Posting {
            request_id: "refund-debit:r1".into(),
            entries: vec![
                entry(
                    acc::AccountType::MerchantSettlement,
                    "m1",
                    acc::Side::Debit,
                    "9.40",
                ),
                entry(acc::AccountType::Advance, "m1", acc::Side::Debit, "30.36"),
            ],
            ..Default::default()
        };
        // The settlement in between repaid the advance: the reversal gives all 39.76 back.
        let reverse = acc::Posting {
            request_id: "refund-reverse:r1".into(),
            entries: vec![entry(
                acc::AccountType::MerchantSettlement,
                "m1",
                acc::Side::Credit,
                "39.76",
            )],
            ..Default::default()
        };
        let net = net_advanced([&debit, &reverse].into_iter()).unwrap();
        assert_eq!(
            net[&("m1".to_string(), "CNY".to_string())],
            Decimal::new(3036, 2),
            "the balance may end 30.36 higher"
        );
    }
}
