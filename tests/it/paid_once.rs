//! No sequence of staff actions pays a customer twice or never (issue 9 item 6), on the whole
//! chain (business, clearing, refund center, bank simulator, reconciliation): the dangerous
//! sequences are refused with stable codes, the safe one runs through four eyes, and at the end
//! the bank's own books show each refund paid at most once and `tuikuan audit` finds nothing.
//! (The crate-level guards are in crates/refund/tests/controls.rs `manual_controls`; confirm
//! without evidence in tests/it/staff.rs; a repeated reinstatement in tests/it/reinstate.rs.)

use chrono::Duration;
use tonic::{Code, Response, Status};
use tuikuan::clients::Clients;
use tuikuan::config::Service;
use tuikuan_auth::Role;
use tuikuan_kernel::Clock;
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::refund::v1 as rfd;

use crate::both_stores;
use crate::reinstate::{audit_now, fail_row, next_morning};
use crate::sandbox::{code_of, Sandbox, Store, CHANNEL, KEY_A};
use crate::staff::{decide, operator, order, proposed, submitted_sheet, SHEET_CHANNEL};

async fn force_fail(c: &Clients, refund_id: &str) -> Result<Response<rfd::RefundOrder>, Status> {
    c.control
        .clone()
        .force_fail(rfd::ControlRequest {
            refund_id: refund_id.into(),
            reason: "the merchant says the customer got nothing".into(),
        })
        .await
}

/// `answer` is refused with `grpc` and the stable `code`.
fn refused<T: std::fmt::Debug>(answer: Result<T, Status>, grpc: Code, code: &str, what: &str) {
    let e = answer.expect_err(what);
    assert_eq!(
        (e.code(), code_of(&e).as_str()),
        (grpc, code),
        "{what}: {e:?}"
    );
}

async fn staff_cannot_pay_twice_or_never(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    let fiona = operator(&sb, "fiona", &[Role::Finance]);
    let frank = operator(&sb, "frank", &[Role::Finance]);
    let date = sb.clock.today().to_string();
    let (sheet, batch) = submitted_sheet(&mut sb).await;

    // Interface refunds: one the bank will pay, one it will fail (cents .13, scripted).
    sb.pay("MA", "O-P1-PAID", "100.00").await;
    sb.pay("MA", "O-P1-FAIL", "100.00").await;
    let paid = sb
        .refund(KEY_A, "R-P1-PAID", "O-P1-PAID", "30.00")
        .await
        .expect("refund")
        .refund_id;
    let failing = sb
        .refund(KEY_A, "R-P1-FAIL", "O-P1-FAIL", "20.13")
        .await
        .expect("refund")
        .refund_id;
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle");

    // Submitted, no answer from the bank yet: it may still pay.
    refused(
        force_fail(&fiona, &paid).await,
        Code::FailedPrecondition,
        "BANK_MAY_HAVE_PAID",
        "force-fail while submitted",
    );

    // Confirmed succeeded (four eyes), then force-failed: refused.
    let (p, _) = proposed(
        fiona
            .control
            .clone()
            .confirm_outcome(rfd::ConfirmOutcomeRequest {
                refund_id: sheet[1].clone(),
                status: rfd::RefundStatus::Succeeded as i32,
                reason: "the bank's branch confirmed by phone".into(),
                bank_reference_id: String::new(),
                evidence: "CCB statement line 4".into(),
            })
            .await,
        "PENDING",
        "confirm succeeded",
    );
    decide(&frank, Service::Refund, &p, true)
        .await
        .expect("approved");
    refused(
        force_fail(&fiona, &sheet[1]).await,
        Code::FailedPrecondition,
        "INVALID_STATE_TRANSITION",
        "force-fail after confirm",
    );

    // The bank answers: paid, and failed.
    sb.clock.advance(Duration::hours(2));
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
    refused(
        force_fail(&fiona, &paid).await,
        Code::FailedPrecondition,
        "BANK_MAY_HAVE_PAID",
        "force-fail after the bank paid",
    );
    // After the bank said failed, force-fail may give the money back: on four eyes.
    let (p, body) = proposed(force_fail(&fiona, &failing).await, "PENDING", "force-fail");
    assert_eq!(body.refund_status, rfd::RefundStatus::Processing as i32);
    decide(&frank, Service::Refund, &p, true)
        .await
        .expect("approved");
    assert_eq!(
        order(&sb, &failing).await.refund_status,
        rfd::RefundStatus::Failed as i32
    );

    // The next morning's files; outcomes delivered.
    next_morning(&mut sb, &date, &[CHANNEL, SHEET_CHANNEL]).await;

    // A row the bank paid cannot be failed by hand.
    refused(
        fail_row(&fiona, &batch, &sheet[0]).await,
        Code::FailedPrecondition,
        "INVALID_STATE_TRANSITION",
        "fail a paid row",
    );

    let rows =
        sb.c.batch
            .get_batch(rfd::GetBatchRequest {
                batch_id: batch.batch_id.clone(),
            })
            .await
            .expect("batch")
            .into_inner()
            .rows;
    assert!(
        rows.iter()
            .all(|r| r.status != rfd::RowStatus::RowFailed as i32),
        "{rows:#?}"
    );
    for id in [&paid, &sheet[0], &sheet[1], &sheet[2]] {
        assert_eq!(
            order(&sb, id).await.refund_status,
            rfd::RefundStatus::Succeeded as i32,
            "{id}"
        );
    }
    let report = audit_now(&sb).await;
    assert!(report.ok(), "{report}");
    assert_eq!(report.checked.paid_twice, 0, "{report}");
    assert_eq!(report.checked.bank_payments, 4, "{report}");
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(staff_cannot_pay_twice_or_never);
