//! Suspense as items over gRPC, on SQLite and PostgreSQL: items opened by postings, never netted,
//! listed with direction, amount, source and age; cleared against a bank row (finance); written
//! off only through a four-eyes proposal approved by a second finance operator.

use tonic::Code;
use tuikuan_auth::client::with_token;
use tuikuan_auth::testing::shared;
use tuikuan_auth::Role;
use tuikuan_db::testing::TestDb;
use tuikuan_proto::accounting::v1 as pb;
use tuikuan_proto::staff::v1 as staff_pb;
use tuikuan_proto::staff::v1::staff_service_client::StaffServiceClient;

mod common;
use common::*;

use pb::AccountType::{
    ChannelReserve, FeeIncome, MerchantSettlement, OwnFunds, SuspenseBankClaim,
    SuspenseOwedCustomer, WriteOff,
};
use pb::Side::{Credit, Debit};

fn item_entry(t: pb::AccountType, side: pb::Side, amount: &str, item: &str) -> pb::Entry {
    pb::Entry {
        item_id: item.to_string(),
        ..entry(t, "wx", side, amount)
    }
}

fn post(request_id: &str, entries: Vec<pb::Entry>, date: &str, reference: &str) -> pb::PostRequest {
    pb::PostRequest {
        request_id: request_id.to_string(),
        description: format!("test {request_id}"),
        entries,
        value_date: date.to_string(),
        bank_reference: reference.to_string(),
    }
}

async fn balance_of(client: &mut Client, t: pb::AccountType, owner: &str) -> String {
    balance(client, t, owner).await.balance
}

async fn items(client: &mut Client, status: &str) -> Vec<pb::SuspenseItem> {
    client
        .list_suspense_items(pb::ListSuspenseItemsRequest {
            channel: "wx".into(),
            status: status.into(),
            ..Default::default()
        })
        .await
        .expect("items")
        .into_inner()
        .items
}

fn as_op<T>(message: T, name: &str, role: Role) -> tonic::Request<T> {
    with_token(message, &shared().token(name, &[role])).expect("token")
}

async fn suspense_items(url: &str) {
    let (handle, mut poster) = start(url).await;
    let mut staff = staff(&handle);
    let mut desk = StaffServiceClient::new(tuikuan_proto::pki::test_channel(
        tuikuan_proto::tls::Principal::Ctl,
        tuikuan_proto::tls::Principal::Accounting,
        &handle.url(),
    ));

    poster
        .post(post(
            "settle:t1",
            vec![
                entry(ChannelReserve, "wx", Debit, "500.00"),
                entry(MerchantSettlement, "m1", Credit, "497.00"),
                entry(FeeIncome, "platform", Credit, "3.00"),
            ],
            "2026-11-30",
            "",
        ))
        .await
        .expect("settle");
    // The bank paid 121.13 no refund accounts for (a claim on it), and paid a customer 112.50 less
    // than the books took (owed to the customer): two items that must not net.
    poster
        .post(post(
            "adjust:adj-a",
            vec![
                item_entry(SuspenseBankClaim, Debit, "121.13", "adj-a"),
                entry(ChannelReserve, "wx", Credit, "121.13"),
            ],
            "2026-12-01",
            "BK-A",
        ))
        .await
        .expect("claim");
    poster
        .post(post(
            "adjust:adj-b",
            vec![
                entry(ChannelReserve, "wx", Debit, "112.50"),
                item_entry(SuspenseOwedCustomer, Credit, "112.50", "adj-b"),
            ],
            "2026-12-01",
            "BK-B",
        ))
        .await
        .expect("owed");
    assert_eq!(
        balance_of(&mut staff, SuspenseBankClaim, "wx").await,
        "121.13"
    );
    assert_eq!(
        balance_of(&mut staff, SuspenseOwedCustomer, "wx").await,
        "112.50"
    );

    let open = items(&mut staff, "OPEN").await;
    let shown: Vec<(&str, &str, &str, &str, &str)> = open
        .iter()
        .map(|i| {
            (
                i.item_id.as_str(),
                i.direction.as_str(),
                i.remaining.as_str(),
                i.source.as_str(),
                i.bank_reference.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("adj-a", "CLAIM_ON_BANK", "121.13", "adjust:adj-a", "BK-A"),
            (
                "adj-b",
                "OWED_TO_CUSTOMER",
                "112.50",
                "adjust:adj-b",
                "BK-B"
            ),
        ]
    );
    assert!(open
        .iter()
        .all(|i| i.value_date == "2026-12-01" && i.age_days == 0));

    // Lines on item accounts name their item; an item opens once and never goes below zero.
    for (req, code) in [
        (
            post(
                "adjust:x1",
                vec![
                    entry(SuspenseBankClaim, "wx", Debit, "1.00"),
                    entry(ChannelReserve, "wx", Credit, "1.00"),
                ],
                "",
                "",
            ),
            "INVALID_ARGUMENT",
        ),
        (
            post(
                "adjust:x2",
                vec![
                    item_entry(SuspenseBankClaim, Debit, "1.00", "adj-b"),
                    entry(ChannelReserve, "wx", Credit, "1.00"),
                ],
                "",
                "",
            ),
            "IDEMPOTENCY_CONFLICT",
        ),
        (
            post(
                "adjust:x3",
                vec![
                    entry(ChannelReserve, "wx", Debit, "121.14"),
                    item_entry(SuspenseBankClaim, Credit, "121.14", "adj-a"),
                ],
                "",
                "",
            ),
            "INSUFFICIENT_FUNDS",
        ),
        (
            post(
                "adjust:x4",
                vec![
                    entry(ChannelReserve, "wx", Debit, "1.00"),
                    item_entry(SuspenseBankClaim, Credit, "1.00", "nope"),
                ],
                "",
                "",
            ),
            "NOT_FOUND",
        ),
    ] {
        let err = poster.post(req).await.expect_err(code);
        assert_eq!(code_of(&err), code);
    }
    assert_eq!(
        balance_of(&mut staff, SuspenseBankClaim, "wx").await,
        "121.13"
    );

    // Clearing the amount owed against the bank row that paid the customer.
    let cleared = staff
        .clear_suspense_item(as_op(
            pb::ClearSuspenseItemRequest {
                item_id: "adj-b".into(),
                bank_reference: "BK-PAID-7".into(),
                value_date: "2026-12-03".into(),
                merchant_id: String::new(),
                reason: "bank statement 2026-12-03 line 7".into(),
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(
        (
            cleared.status.as_str(),
            cleared.remaining.as_str(),
            cleared.closed_by.as_str()
        ),
        ("CLEARED", "0.00", "suspense-clear:adj-b")
    );
    let posting = staff
        .get_posting(pb::GetPostingRequest {
            request_id: "suspense-clear:adj-b".into(),
        })
        .await
        .expect("clear posting")
        .into_inner();
    assert_eq!(
        (posting.value_date.as_str(), posting.bank_reference.as_str()),
        ("2026-12-03", "BK-PAID-7")
    );
    assert_eq!(
        balance_of(&mut staff, SuspenseOwedCustomer, "wx").await,
        "0.00"
    );
    assert_eq!(balance_of(&mut staff, ChannelReserve, "wx").await, "378.87");
    let again = staff
        .clear_suspense_item(as_op(
            pb::ClearSuspenseItemRequest {
                item_id: "adj-b".into(),
                bank_reference: "BK-PAID-7".into(),
                reason: "again".into(),
                ..Default::default()
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect("repeat clear")
        .into_inner();
    assert_eq!(again.closed_by, "suspense-clear:adj-b");
    // Ops may not clear; an item owed to nobody in particular takes no merchant.
    let err = staff
        .clear_suspense_item(as_op(
            pb::ClearSuspenseItemRequest {
                item_id: "adj-a".into(),
                reason: "r".into(),
                ..Default::default()
            },
            "olga",
            Role::Ops,
        ))
        .await
        .expect_err("ops");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = staff
        .clear_suspense_item(as_op(
            pb::ClearSuspenseItemRequest {
                item_id: "adj-a".into(),
                merchant_id: "m1".into(),
                reason: "r".into(),
                ..Default::default()
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect_err("merchant on a claim");
    assert_eq!(code_of(&err), "INVALID_ARGUMENT");

    // Writing the claim off needs a proposal and a second finance operator.
    let proposal = staff
        .write_off_suspense_item(as_op(
            pb::WriteOffSuspenseItemRequest {
                item_id: "adj-a".into(),
                reason: "bank refuses, case 2026-118 closed".into(),
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect("propose")
        .into_inner();
    assert_eq!(proposal.status, staff_pb::ProposalStatus::Pending as i32);
    assert_eq!(proposal.action, "WRITE_OFF_SUSPENSE");
    assert_eq!(
        (proposal.amount.as_str(), proposal.subject.as_str()),
        ("121.13", "adj-a")
    );
    assert!(proposal.proposal_id.starts_with("accounting-"));
    assert_eq!(
        items(&mut staff, "OPEN").await.len(),
        1,
        "nothing moved yet"
    );
    let decide = |name: &str, role: Role| {
        as_op(
            staff_pb::DecideProposalRequest {
                proposal_id: proposal.proposal_id.clone(),
                reason: "checked the bank's answer".into(),
            },
            name,
            role,
        )
    };
    let err = desk
        .approve_proposal(decide("fiona", Role::Finance))
        .await
        .expect_err("self approval");
    assert_eq!(code_of(&err), "SELF_APPROVAL");
    let err = desk
        .approve_proposal(decide("olga", Role::Ops))
        .await
        .expect_err("ops approval");
    assert_eq!(err.code(), Code::PermissionDenied);
    let done = desk
        .approve_proposal(decide("frank", Role::Finance))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(
        done.status,
        staff_pb::ProposalStatus::Executed as i32,
        "{done:?}"
    );
    let written = items(&mut staff, "WRITTEN_OFF").await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].closed_by, "suspense-write-off:adj-a");
    assert!(items(&mut staff, "OPEN").await.is_empty());
    // The loss is the platform's: own funds make the customers' reserve whole.
    assert_eq!(balance_of(&mut staff, WriteOff, "platform").await, "121.13");
    assert_eq!(
        balance_of(&mut staff, OwnFunds, "platform").await,
        "-121.13"
    );
    assert_eq!(
        balance_of(&mut staff, SuspenseBankClaim, "wx").await,
        "0.00"
    );
    assert_eq!(balance_of(&mut staff, ChannelReserve, "wx").await, "500.00");
    // The trail names the approver and the proposal.
    let trail = desk
        .list_audit(as_op(
            staff_pb::ListAuditRequest {
                subject: "adj-a".into(),
                action: "WRITE_OFF_SUSPENSE".into(),
                ..Default::default()
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect("trail")
        .into_inner()
        .entries;
    assert!(
        trail
            .iter()
            .any(|e| e.operator == "frank" && e.proposal_id == proposal.proposal_id),
        "{trail:?}"
    );
    // A written-off item cannot be proposed again.
    let err = staff
        .write_off_suspense_item(as_op(
            pb::WriteOffSuspenseItemRequest {
                item_id: "adj-a".into(),
                reason: "again".into(),
            },
            "fiona",
            Role::Finance,
        ))
        .await
        .expect_err("closed");
    assert_eq!(code_of(&err), "INVALID_STATE_TRANSITION");

    let tb = staff
        .trial_balance(pb::TrialBalanceRequest::default())
        .await
        .expect("tb")
        .into_inner();
    assert!(tb.balanced && tb.running_total_differences.is_empty());
    handle.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspense_items_sqlite() {
    let db = TestDb::sqlite("suspense");
    suspense_items(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspense_items_postgres() {
    let Some(db) = TestDb::postgres("suspense") else {
        return;
    };
    suspense_items(db.url()).await;
}
