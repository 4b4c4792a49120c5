//! Crash recovery: the business layer stopped between the debit and the hand-over to the refund
//! center resumes the chain after a restart and debits exactly once.

use tuikuan::config::Service;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::clearing::v1 as clr;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};

async fn business_crash_between_debit_and_submit(store: Store) {
    let Some(mut sb) = Sandbox::start(store, 0).await else {
        return;
    };
    sb.pay("MA", "O-1", "100.00").await;
    // The refund center is down: the chain stops after the debit.
    sb.cluster.stop_service(Service::Refund).await.unwrap();
    let r = sb.refund(KEY_A, "R-1", "O-1", "25.00").await;
    let refund_id = match r {
        Ok(r) => {
            assert_eq!(r.status, biz::RefundStatus::Received as i32, "{r:?}");
            r.refund_id
        }
        Err(status) => {
            assert!(
                matches!(
                    crate::sandbox::code_of(&status).as_str(),
                    "UNAVAILABLE" | "IN_PROGRESS"
                ),
                "{status:?}"
            );
            sb.get_refund(KEY_A, "R-1").await.unwrap().refund_id
        }
    };
    let debit =
        sb.c.clearing
            .get_debit(clr::GetDebitRequest {
                refund_id: refund_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(debit.status, clr::DebitStatus::Debited as i32);

    // The business layer crashes; both come back.
    sb.cluster
        .crash_and_restart(Service::Business)
        .await
        .unwrap();
    sb.cluster.restart_service(Service::Refund).await.unwrap();
    // Connections to the crashed process are gone; clients reconnect (a real caller retries).
    sb.c = sb.cluster.clients().unwrap();
    let report =
        sb.c.business
            .run_recovery(biz::RunRecoveryRequest {})
            .await
            .unwrap()
            .into_inner();
    assert!(report.resumed >= 1, "{report:?}");
    let r = sb.get_refund(KEY_A, "R-1").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Processing as i32, "{r:?}");
    assert_eq!(r.refund_id, refund_id);
    assert_eq!(sb.postings_with_prefix("refund-debit:").await.len(), 1);

    // And the chain goes on to the end.
    sb.run_day().await;
    let r = sb.get_refund(KEY_A, "R-1").await.unwrap();
    assert_eq!(r.status, biz::RefundStatus::Succeeded as i32, "{r:?}");
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(business_crash_between_debit_and_submit);
