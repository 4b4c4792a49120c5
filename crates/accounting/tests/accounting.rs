//! The accounting service end to end over gRPC, on SQLite and on PostgreSQL.

use tuikuan_proto::tls::Principal;

use tonic::Code;
use tuikuan_accounting::domain::{AccountKey, AccountType, Side};
use tuikuan_accounting::AccountingClient;
use tuikuan_db::testing::TestDb;
use tuikuan_kernel::{Currency, Money};
use tuikuan_proto::accounting::v1 as pb;

mod common;
use common::*;

fn settle(request_id: &str, merchant: &str, amount: &str, net: &str, fee: &str) -> pb::PostRequest {
    pb::PostRequest {
        request_id: request_id.to_string(),
        description: "payment settled".to_string(),
        entries: vec![
            entry(
                pb::AccountType::ChannelReserve,
                "netbank",
                pb::Side::Debit,
                amount,
            ),
            entry(
                pb::AccountType::MerchantSettlement,
                merchant,
                pb::Side::Credit,
                net,
            ),
            entry(
                pb::AccountType::FeeIncome,
                "platform",
                pb::Side::Credit,
                fee,
            ),
        ],
        ..Default::default()
    }
}

fn debit(request_id: &str, merchant: &str, amount: &str) -> pb::PostRequest {
    pb::PostRequest {
        request_id: request_id.to_string(),
        description: "refund debit".to_string(),
        entries: vec![
            entry(
                pb::AccountType::MerchantSettlement,
                merchant,
                pb::Side::Debit,
                amount,
            ),
            entry(
                pb::AccountType::RefundInTransit,
                "platform",
                pb::Side::Credit,
                amount,
            ),
        ],
        ..Default::default()
    }
}

async fn assert_trial_balanced(client: &mut Client) -> pb::TrialBalanceResponse {
    let tb = client
        .trial_balance(pb::TrialBalanceRequest::default())
        .await
        .expect("trial balance")
        .into_inner();
    assert!(tb.balanced, "{tb:?}");
    for t in &tb.totals {
        assert_eq!(t.total_debits, t.total_credits, "{t:?}");
    }
    tb
}

async fn posting_basics(url: &str) {
    let (handle, mut client) = start(url).await;

    // A balanced posting is accepted.
    let first = client
        .post(settle("settle:t1", "m1", "100.00", "99.40", "0.60"))
        .await
        .expect("post")
        .into_inner();
    assert!(!first.replayed);
    let posting = first.posting.clone().expect("posting");
    assert!(posting.posting_id.starts_with("pst_"));
    assert_eq!(posting.entries.len(), 3);
    assert_eq!(posting.posted_at_ms, 1_795_000_000_000);

    // The same request again replays the first posting.
    let again = client
        .post(settle("settle:t1", "m1", "100", "99.4", "0.6"))
        .await
        .expect("replay")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(
        again.posting.expect("posting").posting_id,
        posting.posting_id
    );

    // The same request id with other content is a conflict.
    let err = client
        .post(settle("settle:t1", "m1", "200.00", "199.40", "0.60"))
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(code_of(&err), "IDEMPOTENCY_CONFLICT");

    // Balances on their normal sides.
    let ms = balance(&mut client, pb::AccountType::MerchantSettlement, "m1").await;
    assert_eq!(
        (ms.credits.as_str(), ms.debits.as_str(), ms.balance.as_str()),
        ("99.40", "0.00", "99.40")
    );
    let reserve = balance(&mut client, pb::AccountType::ChannelReserve, "netbank").await;
    assert_eq!(reserve.balance, "100.00");
    let unknown = balance(&mut client, pb::AccountType::MerchantSettlement, "nobody").await;
    assert_eq!(unknown.balance, "0.00");

    // Unbalanced postings are rejected and leave nothing behind.
    let err = client
        .post(settle("settle:t2", "m1", "100.00", "99.40", "0.61"))
        .await
        .expect_err("unbalanced");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(code_of(&err), "UNBALANCED_POSTING");
    let err = client
        .get_posting(pb::GetPostingRequest {
            request_id: "settle:t2".to_string(),
        })
        .await
        .expect_err("not posted");
    assert_eq!(err.code(), Code::NotFound);

    // GetPosting by request id.
    let got = client
        .get_posting(pb::GetPostingRequest {
            request_id: "settle:t1".to_string(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, posting);

    // Bad inputs name their problem with a stable code.
    let bad = |amount: &str| settle("settle:bad", "m1", amount, "1.00", "0.00");
    for (req, code) in [
        (bad("0"), "INVALID_AMOUNT"),
        (bad("-1.00"), "INVALID_AMOUNT"),
        (bad("1.001"), "INVALID_AMOUNT"),
        (bad("abc"), "INVALID_AMOUNT"),
        (
            pb::PostRequest {
                entries: vec![
                    pb::Entry {
                        account: Some(pb::Account {
                            currency: "XYZ".to_string(),
                            ..account(pb::AccountType::ChannelReserve, "netbank")
                        }),
                        side: pb::Side::Debit as i32,
                        amount: "1.00".to_string(),
                        ..Default::default()
                    },
                    entry(
                        pb::AccountType::MerchantSettlement,
                        "m1",
                        pb::Side::Credit,
                        "1.00",
                    ),
                ],
                ..bad("1.00")
            },
            "UNSUPPORTED_CURRENCY",
        ),
        (
            pb::PostRequest {
                entries: vec![
                    entry(
                        pb::AccountType::Unspecified,
                        "netbank",
                        pb::Side::Debit,
                        "1.00",
                    ),
                    entry(
                        pb::AccountType::MerchantSettlement,
                        "m1",
                        pb::Side::Credit,
                        "1.00",
                    ),
                ],
                ..bad("1.00")
            },
            "INVALID_ARGUMENT",
        ),
        (
            pb::PostRequest {
                entries: vec![
                    entry(
                        pb::AccountType::ChannelReserve,
                        "netbank",
                        pb::Side::Unspecified,
                        "1.00",
                    ),
                    entry(
                        pb::AccountType::MerchantSettlement,
                        "m1",
                        pb::Side::Credit,
                        "1.00",
                    ),
                ],
                ..bad("1.00")
            },
            "INVALID_ARGUMENT",
        ),
        (
            pb::PostRequest {
                entries: vec![entry(
                    pb::AccountType::ChannelReserve,
                    "netbank",
                    pb::Side::Debit,
                    "1.00",
                )],
                ..bad("1.00")
            },
            "INVALID_ARGUMENT",
        ),
        (
            pb::PostRequest {
                entries: vec![
                    entry(pb::AccountType::ChannelReserve, "", pb::Side::Debit, "1.00"),
                    entry(
                        pb::AccountType::MerchantSettlement,
                        "m1",
                        pb::Side::Credit,
                        "1.00",
                    ),
                ],
                ..bad("1.00")
            },
            "INVALID_ARGUMENT",
        ),
        (
            pb::PostRequest {
                request_id: "has space".to_string(),
                ..bad("1.00")
            },
            "MALFORMED_ID",
        ),
        (
            pb::PostRequest {
                request_id: String::new(),
                ..bad("1.00")
            },
            "INVALID_ARGUMENT",
        ),
    ] {
        let err = client.post(req.clone()).await.expect_err("bad input");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
        assert_eq!(code_of(&err), code, "{req:?}: {err:?}");
    }

    // Listing: all postings, by account, paged with a cursor.
    client
        .post(settle("settle:t3", "m2", "10.00", "9.94", "0.06"))
        .await
        .expect("post t3");
    let all = staff(&handle)
        .list_postings(pb::ListPostingsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .postings;
    assert_eq!(
        all.iter()
            .map(|p| p.request_id.as_str())
            .collect::<Vec<_>>(),
        vec!["settle:t1", "settle:t3"]
    );
    let m2 = staff(&handle)
        .list_postings(pb::ListPostingsRequest {
            account: Some(account(pb::AccountType::MerchantSettlement, "m2")),
            ..Default::default()
        })
        .await
        .expect("list m2")
        .into_inner()
        .postings;
    assert_eq!(m2.len(), 1);
    assert_eq!(m2[0].request_id, "settle:t3");
    let page = staff(&handle)
        .list_postings(pb::ListPostingsRequest {
            limit: 1,
            after: all[0].posting_id.clone(),
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner()
        .postings;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].request_id, "settle:t3");

    let tb = assert_trial_balanced(&mut staff(&handle)).await;
    assert_eq!(tb.totals.len(), 1);
    assert_eq!(tb.totals[0].total_debits, "110.00");

    // The typed client posts and reads balances.
    let typed = AccountingClient::connect(
        &tuikuan_proto::pki::test_transport(Principal::Clearing),
        &handle.url(),
    )
    .expect("client");
    let m1 = AccountKey::merchant_settlement("m1", Currency::Cny);
    let rit = AccountKey::platform(AccountType::RefundInTransit, Currency::Cny);
    let amount = Money::parse("9.40", "CNY", "amount").expect("amount");
    let out = typed
        .post(
            "refund-debit:rf_1",
            "refund debit",
            vec![
                (m1.clone(), Side::Debit, amount),
                (rit.clone(), Side::Credit, amount),
            ],
        )
        .await
        .expect("typed post");
    assert!(!out.replayed);
    let again = typed
        .post(
            "refund-debit:rf_1",
            "refund debit",
            vec![
                (m1.clone(), Side::Debit, amount),
                (rit, Side::Credit, amount),
            ],
        )
        .await
        .expect("typed replay");
    assert!(again.replayed);
    assert_eq!(again.posting_id, out.posting_id);
    assert_eq!(typed.balance(&m1).await.expect("balance").to_minor(), 9000);
    assert_eq!(
        typed.posting_id("refund-debit:rf_1").await.expect("lookup"),
        Some(out.posting_id)
    );
    assert_eq!(
        typed.posting_id("refund-debit:rf_2").await.expect("lookup"),
        None
    );

    handle.stop().await.expect("stop");
}

async fn merchant_cannot_go_negative(url: &str) {
    let (handle, mut client) = start(url).await;
    client
        .post(settle("settle:t1", "m1", "100.00", "100.00", "0.00").without_zero_fee())
        .await
        .expect("fund");

    // More than the balance: rejected, nothing posted.
    let err = client
        .post(debit("refund-debit:big", "m1", "100.01"))
        .await
        .expect_err("insufficient");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");
    assert!(err.message().contains("m1"), "{}", err.message());
    let err = client
        .get_posting(pb::GetPostingRequest {
            request_id: "refund-debit:big".to_string(),
        })
        .await
        .expect_err("nothing posted");
    assert_eq!(err.code(), Code::NotFound);

    // 50 concurrent debits of 3.00 against 100.00: exactly 33 fit.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.post(debit(&format!("refund-debit:rf_{i}"), "m1", "3.00"))
                .await
        }));
    }
    let mut ok = 0;
    for t in futures::future::join_all(tasks).await {
        match t.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(code_of(&e), "INSUFFICIENT_BALANCE", "{e:?}"),
        }
    }
    assert_eq!(ok, 33);
    let ms = balance(&mut client, pb::AccountType::MerchantSettlement, "m1").await;
    assert_eq!(ms.balance, "1.00");
    assert_eq!(ms.debits, "99.00");
    let rit = balance(&mut client, pb::AccountType::RefundInTransit, "platform").await;
    assert_eq!(rit.balance, "99.00");
    let listed = staff(&handle)
        .list_postings(pb::ListPostingsRequest {
            account: Some(account(pb::AccountType::MerchantSettlement, "m1")),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .postings;
    assert_eq!(listed.len(), 34);
    assert_trial_balanced(&mut staff(&handle)).await;
    handle.stop().await.expect("stop");
}

/// An advance (what a merchant owes the platform, debit-normal) can be repaid but never below zero.
async fn advance_cannot_go_negative(url: &str) {
    let (handle, mut client) = start(url).await;
    let lend = pb::PostRequest {
        request_id: "refund-debit:rf_a".to_string(),
        description: "refund advanced".to_string(),
        entries: vec![
            entry(pb::AccountType::Advance, "m1", pb::Side::Debit, "30.00"),
            entry(
                pb::AccountType::RefundInTransit,
                "platform",
                pb::Side::Credit,
                "30.00",
            ),
        ],
        ..Default::default()
    };
    client.post(lend).await.expect("advance");
    let repay = |id: &str, amount: &str| pb::PostRequest {
        request_id: id.to_string(),
        description: "settlement repays the advance".to_string(),
        entries: vec![
            entry(
                pb::AccountType::ChannelReserve,
                "netbank",
                pb::Side::Debit,
                amount,
            ),
            entry(pb::AccountType::Advance, "m1", pb::Side::Credit, amount),
        ],
        ..Default::default()
    };
    let err = client
        .post(repay("settle:t_big", "30.01"))
        .await
        .expect_err("over-repaid");
    assert_eq!(code_of(&err), "INSUFFICIENT_BALANCE");
    assert!(err.message().contains("owes"), "{}", err.message());
    client
        .post(repay("settle:t_ok", "30.00"))
        .await
        .expect("repaid");
    let adv = balance(&mut client, pb::AccountType::Advance, "m1").await;
    assert_eq!(
        (adv.balance.as_str(), adv.debits.as_str()),
        ("0.00", "30.00")
    );
    assert_trial_balanced(&mut staff(&handle)).await;
    handle.stop().await.expect("stop");
}

trait WithoutZeroFee {
    fn without_zero_fee(self) -> Self;
}

impl WithoutZeroFee for pb::PostRequest {
    /// Zero-amount entries are omitted (and would be rejected).
    fn without_zero_fee(mut self) -> Self {
        self.entries.retain(|e| e.amount != "0.00");
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posting_basics_sqlite() {
    let db = TestDb::sqlite("accounting");
    posting_basics(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posting_basics_postgres() {
    let Some(db) = TestDb::postgres("accounting") else {
        return;
    };
    posting_basics(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advance_cannot_go_negative_sqlite() {
    let db = TestDb::sqlite("accounting");
    advance_cannot_go_negative(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advance_cannot_go_negative_postgres() {
    let Some(db) = TestDb::postgres("accounting") else {
        return;
    };
    advance_cannot_go_negative(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merchant_cannot_go_negative_sqlite() {
    let db = TestDb::sqlite("accounting");
    merchant_cannot_go_negative(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merchant_cannot_go_negative_postgres() {
    let Some(db) = TestDb::postgres("accounting") else {
        return;
    };
    merchant_cannot_go_negative(db.url()).await;
}

/// PostBatch posts many requests in one transaction; a refused one takes its slot alone.
async fn batch_posts_each_request_on_its_own(url: &str) {
    let (handle, mut client) = start(url).await;
    // Debits 1.00, credits 0.90.
    let mut bad = settle("b-bad", "m1", "1.00", "0.90", "0.01");
    bad.entries.pop();
    let batch = pb::PostBatchRequest {
        requests: vec![
            settle("b-settle", "m1", "100.00", "99.40", "0.60"),
            debit("b-debit-1", "m1", "60.00"),
            debit("b-debit-2", "m1", "60.00"), // only 39.40 left
            bad,
            debit("b-debit-3", "m1", "39.40"),
        ],
    };
    let results = client
        .post_batch(batch.clone())
        .await
        .expect("batch answers")
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);
    let codes: Vec<&str> = results.iter().map(|r| r.error_code.as_str()).collect();
    assert_eq!(
        codes,
        ["", "", "INSUFFICIENT_BALANCE", "UNBALANCED_POSTING", ""]
    );
    assert!(results[0].response.as_ref().is_some_and(|r| !r.replayed));
    let bal = balance(&mut client, pb::AccountType::MerchantSettlement, "m1").await;
    assert_eq!(bal.balance, "0.00");
    // The same batch again: the posted ones replay, nothing moves.
    let again = client.post_batch(batch).await.unwrap().into_inner().results;
    assert!(again[0].response.as_ref().is_some_and(|r| r.replayed));
    assert!(again[4].response.as_ref().is_some_and(|r| r.replayed));
    assert_eq!(again[2].error_code, "INSUFFICIENT_BALANCE");
    let bal = balance(&mut client, pb::AccountType::MerchantSettlement, "m1").await;
    assert_eq!(bal.balance, "0.00");
    assert_trial_balanced(&mut staff(&handle)).await;
    // Too many requests in one call is a clear error.
    let too_many = pb::PostBatchRequest {
        requests: (0..1001)
            .map(|i| debit(&format!("x-{i}"), "m1", "0.01"))
            .collect(),
    };
    let status = client.post_batch(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_posts_each_request_on_its_own_sqlite() {
    let db = TestDb::sqlite("accounting");
    batch_posts_each_request_on_its_own(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_posts_each_request_on_its_own_postgres() {
    let Some(db) = TestDb::postgres("accounting") else {
        return;
    };
    batch_posts_each_request_on_its_own(db.url()).await;
}

/// The domain module is pure: no storage, no RPC framework (CI greps for the same).
#[test]
fn domain_is_pure() {
    let src = include_str!("../src/domain.rs");
    for word in ["diesel", "tonic", "prost", "tuikuan_db", "tuikuan_proto"] {
        assert!(!src.contains(word), "domain.rs mentions {word}");
    }
}
