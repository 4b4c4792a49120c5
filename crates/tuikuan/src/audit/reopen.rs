//! Reopened refunds (`refund-reopen:{refund}:{attempt}`): the bank failed an attempt the platform
//! had completed, so the completion was undone and a later attempt completes the refund again under
//! `refund-complete:{refund}:{n}`. For the auditor, a refund's completion is the one left standing:
//! completions minus reopens must be 0 or 1, and a reopen must undo exactly the cash a completion
//! paid (checked by the posting's refund-in-transit effect elsewhere).

use std::collections::HashMap;

use tuikuan_proto::accounting::v1 as acc;

use super::{AuditReport, COMPLETE};

/// The ledger key prefix of a reopen.
pub(super) const REOPEN: &str = "refund-reopen:";

/// The refund of a key's rest after its prefix: `{refund}` or `{refund}:{n}`.
pub(super) fn refund_part(rest: &str) -> &str {
    match rest.rsplit_once(':') {
        Some((refund, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => refund,
        _ => rest,
    }
}

/// The completion of `refund_id` that stands (`first`: its `refund-complete:{refund}` posting),
/// after its reopens; a violation when the reopens and completions do not pair up.
pub(super) fn standing_completion<'a>(
    postings: &'a HashMap<String, acc::Posting>,
    refund_id: &str,
    first: Option<&'a acc::Posting>,
    report: &mut AuditReport,
) -> Option<&'a acc::Posting> {
    let numbered = |prefix: &str| {
        let lead = format!("{prefix}{refund_id}:");
        let mut found: Vec<(u32, &'a acc::Posting)> = postings
            .iter()
            .filter_map(|(k, p)| {
                k.strip_prefix(&lead)
                    .and_then(|n| n.parse::<u32>().ok())
                    .map(|n| (n, p))
            })
            .collect();
        found.sort_by_key(|(n, _)| *n);
        found
    };
    let reopens = numbered(REOPEN);
    if reopens.is_empty() {
        return first;
    }
    let later = numbered(COMPLETE);
    let completions = usize::from(first.is_some()) + later.len();
    match completions.checked_sub(reopens.len()) {
        Some(0) => None,
        Some(1) => later.last().map(|(_, p)| *p).or(first),
        _ => {
            report.violation(format!(
                "refund {refund_id}: {completions} completion(s) and {} reopen(s) in the ledger: \
                 every reopen undoes one completion and at most one stands",
                reopens.len()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_refund() {
        assert_eq!(refund_part("rf_1"), "rf_1");
        assert_eq!(refund_part("rf_1:2"), "rf_1");
        assert_eq!(refund_part("rf_1:x"), "rf_1:x");
    }

    #[test]
    fn one_completion_stands_after_reopens() {
        let p = |id: &str| acc::Posting {
            request_id: id.into(),
            ..Default::default()
        };
        let mut postings = HashMap::new();
        for id in ["refund-complete:r1", "refund-reopen:r1:1"] {
            postings.insert(id.to_string(), p(id));
        }
        let mut report = AuditReport::default();
        let first = postings.get("refund-complete:r1");
        assert!(standing_completion(&postings, "r1", first, &mut report).is_none());
        postings.insert("refund-complete:r1:1".into(), p("refund-complete:r1:1"));
        let first = postings.get("refund-complete:r1");
        let c = standing_completion(&postings, "r1", first, &mut report).unwrap();
        assert_eq!(c.request_id, "refund-complete:r1:1");
        assert!(report.ok());
        postings.insert("refund-complete:r1:2".into(), p("refund-complete:r1:2"));
        let first = postings.get("refund-complete:r1");
        standing_completion(&postings, "r1", first, &mut report);
        assert!(!report.ok());
    }
}
