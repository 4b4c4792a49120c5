//! Dates and guards of the journal over gRPC, on SQLite and PostgreSQL: every posting carries a
//! value date and bank reference; postings are read by account and value-date range; balances and
//! the trial balance are summed from the journal as of a date; a channel reserve never goes
//! negative; the trial balance notices running totals changed outside the ledger.

use diesel::prelude::*;
use tonic::Code;
use tuikuan_db::testing::TestDb;
use tuikuan_db::Db;
use tuikuan_kernel::clock::business_date;
use tuikuan_proto::accounting::v1 as pb;

mod common;
use common::*;

// The one column the test changes behind the ledger's back.
diesel::table! {
    accounts (account_id) {
        account_id -> Text,
        debits_minor -> BigInt,
    }
}

use pb::AccountType::{ChannelReserve, FeeIncome, MerchantSettlement, RefundInTransit};
use pb::Side::{Credit, Debit};

fn dated(
    request_id: &str,
    entries: Vec<pb::Entry>,
    value_date: &str,
    bank_reference: &str,
) -> pb::PostRequest {
    pb::PostRequest {
        request_id: request_id.to_string(),
        description: request_id.to_string(),
        entries,
        value_date: value_date.to_string(),
        bank_reference: bank_reference.to_string(),
    }
}

fn payment(request_id: &str, amount: &str, net: &str, fee: &str, date: &str) -> pb::PostRequest {
    dated(
        request_id,
        vec![
            entry(ChannelReserve, "wx", Debit, amount),
            entry(MerchantSettlement, "m1", Credit, net),
            entry(FeeIncome, "platform", Credit, fee),
        ],
        date,
        "",
    )
}

fn paid_out(request_id: &str, amount: &str, date: &str, reference: &str) -> pb::PostRequest {
    dated(
        request_id,
        vec![
            entry(RefundInTransit, "platform", Debit, amount),
            entry(ChannelReserve, "wx", Credit, amount),
        ],
        date,
        reference,
    )
}

fn debited(request_id: &str, amount: &str) -> pb::PostRequest {
    dated(
        request_id,
        vec![
            entry(MerchantSettlement, "m1", Debit, amount),
            entry(RefundInTransit, "platform", Credit, amount),
        ],
        "2026-12-02",
        "",
    )
}

async fn reserve_as_of(client: &mut Client, as_of: &str) -> String {
    client
        .get_balance(pb::GetBalanceRequest {
            account: Some(account(ChannelReserve, "wx")),
            as_of: as_of.to_string(),
        })
        .await
        .expect("balance")
        .into_inner()
        .balance
}

async fn listed(
    client: &mut Client,
    account_: Option<pb::Account>,
    from: &str,
    to: &str,
) -> Vec<String> {
    client
        .list_postings(pb::ListPostingsRequest {
            account: account_,
            from_date: from.to_string(),
            to_date: to.to_string(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .postings
        .into_iter()
        .map(|p| format!("{}@{}", p.request_id, p.value_date))
        .collect()
}

async fn journal_dates(url: &str) {
    let (handle, mut poster) = start(url).await;
    let mut staff = staff(&handle);

    poster
        .post(payment(
            "settle:t1",
            "100.00",
            "99.40",
            "0.60",
            "2026-12-01",
        ))
        .await
        .expect("settle t1");
    poster
        .post(payment("settle:t2", "50.00", "49.70", "0.30", "2026-12-02"))
        .await
        .expect("settle t2");
    poster
        .post(debited("refund-debit:r1", "30.00"))
        .await
        .expect("debit");
    let complete = poster
        .post(paid_out(
            "refund-complete:r1",
            "30.00",
            "2026-12-03",
            "BK0001",
        ))
        .await
        .expect("complete")
        .into_inner()
        .posting
        .expect("posting");
    assert_eq!(complete.value_date, "2026-12-03");
    assert_eq!(complete.bank_reference, "BK0001");

    // A repeat under the same key answers with the first posting, its dates included.
    let replay = poster
        .post(paid_out(
            "refund-complete:r1",
            "30.00",
            "2026-12-09",
            "OTHER",
        ))
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed);
    let first = replay.posting.expect("posting");
    assert_eq!(
        (first.value_date.as_str(), first.bank_reference.as_str()),
        ("2026-12-03", "BK0001")
    );

    // Without a value date the posting is dated by the business date it was posted on.
    let today = business_date(chrono_start()).format("%Y-%m-%d").to_string();
    let undated = poster
        .post(dated(
            "fee:x",
            vec![
                entry(MerchantSettlement, "m1", Debit, "1.00"),
                entry(FeeIncome, "platform", Credit, "1.00"),
            ],
            "",
            "",
        ))
        .await
        .expect("undated")
        .into_inner()
        .posting
        .expect("posting");
    assert_eq!(undated.value_date, today);
    assert_eq!(undated.bank_reference, "");
    let got = staff
        .get_posting(pb::GetPostingRequest {
            request_id: "refund-complete:r1".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.value_date, "2026-12-03");

    // Postings by account and value-date range (inclusive).
    let reserve = Some(account(ChannelReserve, "wx"));
    assert_eq!(
        listed(&mut staff, reserve.clone(), "2026-12-02", "2026-12-03").await,
        vec!["settle:t2@2026-12-02", "refund-complete:r1@2026-12-03"]
    );
    assert_eq!(
        listed(&mut staff, reserve.clone(), "", "2026-12-01").await,
        vec!["settle:t1@2026-12-01"]
    );
    assert_eq!(
        listed(&mut staff, None, "2026-12-02", "2026-12-02").await,
        vec!["settle:t2@2026-12-02", "refund-debit:r1@2026-12-02"]
    );

    // Balances as of a date, from the journal; without a date, now.
    assert_eq!(reserve_as_of(&mut staff, "2026-11-30").await, "0.00");
    assert_eq!(reserve_as_of(&mut staff, "2026-12-01").await, "100.00");
    assert_eq!(reserve_as_of(&mut staff, "2026-12-02").await, "150.00");
    assert_eq!(reserve_as_of(&mut staff, "2026-12-03").await, "120.00");
    assert_eq!(reserve_as_of(&mut staff, "").await, "120.00");

    // The trial balance from the journal, each account on its normal side, as of a date.
    let tb = staff
        .trial_balance(pb::TrialBalanceRequest {
            as_of: "2026-12-02".into(),
        })
        .await
        .expect("tb")
        .into_inner();
    assert!(tb.balanced);
    assert_eq!(tb.totals[0].total_debits, "181.00");
    let shown: Vec<(String, String)> = tb
        .accounts
        .iter()
        .map(|b| {
            let a = b.account.clone().expect("account");
            (
                format!("{}:{}", a.r#type().as_str_name(), a.owner),
                b.balance.clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("CHANNEL_RESERVE:wx".to_string(), "150.00".to_string()),
            ("FEE_INCOME:platform".to_string(), "1.90".to_string()),
            ("MERCHANT_SETTLEMENT:m1".to_string(), "118.10".to_string()),
            (
                "REFUND_IN_TRANSIT:platform".to_string(),
                "30.00".to_string()
            ),
        ]
    );
    let now = staff
        .trial_balance(pb::TrialBalanceRequest::default())
        .await
        .expect("tb now")
        .into_inner();
    assert!(now.balanced);
    assert!(now.running_total_differences.is_empty(), "{now:?}");

    // A channel reserve never goes negative: the whole posting is refused.
    let err = poster
        .post(paid_out(
            "refund-complete:big",
            "120.01",
            "2026-12-04",
            "BK9",
        ))
        .await
        .expect_err("reserve would go negative");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(code_of(&err), "INSUFFICIENT_FUNDS");
    assert_eq!(reserve_as_of(&mut staff, "").await, "120.00");
    assert!(listed(&mut staff, reserve, "2026-12-04", "")
        .await
        .is_empty());

    // Bad dates are refused with a stable code.
    for (req, what) in [
        (
            payment("settle:bad", "1.00", "1.00", "0.00", "2026-13-01"),
            "value date",
        ),
        (
            pb::PostRequest {
                bank_reference: "a\nb".into(),
                ..payment("settle:bad", "1.00", "1.00", "0.00", "")
            },
            "reference",
        ),
    ] {
        let err = poster.post(req).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
    }
    let err = staff
        .list_postings(pb::ListPostingsRequest {
            from_date: "2026-12-03".into(),
            to_date: "2026-12-02".into(),
            ..Default::default()
        })
        .await
        .expect_err("reversed range");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");
    let err = staff
        .trial_balance(pb::TrialBalanceRequest {
            as_of: "yesterday".into(),
        })
        .await
        .expect_err("bad as_of");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");

    // Running totals changed behind the ledger's back: the journal's trial balance names them.
    let db = Db::connect(url, 1).expect("db");
    db.run(|conn| {
        diesel::update(accounts::table.filter(accounts::account_id.eq("CHANNEL_RESERVE:wx:CNY")))
            .set(accounts::debits_minor.eq(accounts::debits_minor + 1))
            .execute(conn)
            .map_err(tuikuan_db::db_err)
    })
    .await
    .expect("tamper");
    let tampered = staff
        .trial_balance(pb::TrialBalanceRequest::default())
        .await
        .expect("tb tampered")
        .into_inner();
    assert!(tampered.balanced, "the journal itself still balances");
    assert_eq!(
        tampered.running_total_differences,
        vec!["CHANNEL_RESERVE:wx:CNY".to_string()]
    );

    handle.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_dates_sqlite() {
    let db = TestDb::sqlite("journal");
    journal_dates(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_dates_postgres() {
    let Some(db) = TestDb::postgres("journal") else {
        return;
    };
    journal_dates(db.url()).await;
}
