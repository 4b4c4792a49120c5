//! Matching that cannot be fooled, and files that leave a trace: a row for another channel's
//! refund, a duplicate a corrected file moves to another line, the same bill with another
//! byte-order mark and line endings, an unknown channel, refused uploads listed and audited.

use super::*;

/// An upload that names its operator, as `ctl --operator` does.
async fn upload_as(
    h: &Harness,
    operator: &str,
    channel: &str,
    format: &str,
    content: Vec<u8>,
) -> Result<pb::ReconciliationRun, Status> {
    let mut request = tonic::Request::new(pb::RunReconciliationFileRequest {
        channel: channel.into(),
        date: "2026-11-25".into(),
        format: format.into(),
        content,
        ..Default::default()
    });
    let bearer = tuikuan_auth::testing::bearer_for(operator, "finance");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    h.c()
        .run_reconciliation_file(request)
        .await
        .map(|r| r.into_inner())
}

pub(super) async fn matching_cannot_be_fooled(backend: Backend) {
    let Some(h) = Harness::start(backend, "fooled").await else {
        return;
    };
    let r = &h.refund;
    r.add(CHANNEL, "rf_own", "1.00", "2026-11-25");
    r.add(CHANNEL, "rf_d", "5.00", "2026-11-25");
    // Refunds of another channel: one final already, one still processing there.
    r.add_full(
        "quickpay",
        "rf_q1",
        "",
        "3.00",
        "2026-11-25",
        refund_pb::RefundStatus::Succeeded,
    );
    r.add("quickpay", "rf_q2", "4.00", "2026-11-25");
    let rows: Vec<Row> = vec![
        ("REFUND", "rf_own", "1.00", "SUCCESS", ""),
        ("REFUND", "rf_q1", "3.00", "SUCCESS", ""),
        ("REFUND", "rf_d", "5.00", "SUCCESS", ""),
        ("REFUND", "rf_d", "5.00", "SUCCESS", ""),
        ("REFUND", "rf_q2", "4.00", "SUCCESS", ""),
    ];
    let first = upload_as(&h, "alice", CHANNEL, "csv", csv(CHANNEL, &rows))
        .await
        .unwrap();
    // Rows of another channel's refunds are never matched here, whatever their status there.
    for id in ["rf_q1", "rf_q2"] {
        let i = item(&first, id, pb::Outcome::OtherChannel);
        assert!(!i.written_back && !i.discrepancy_id.is_empty(), "{i:?}");
        assert!(
            i.detail.contains("belongs to channel quickpay"),
            "{}",
            i.detail
        );
    }
    assert_eq!(count(&first, pb::Outcome::Matched), (2, "6.00".into()));
    assert_eq!(r.status("rf_q2"), refund_pb::RefundStatus::Processing);
    let list = h.discrepancies(CHANNEL).await;
    let other = find(&list, "rf_q1", pb::DiscrepancyKind::OtherChannelRow);
    assert_eq!(other.severity, pb::Severity::High as i32);
    assert!(other.detail.starts_with("通道不符"), "{}", other.detail);
    let dup = find(&list, "rf_d", pb::DiscrepancyKind::DuplicateRow).clone();
    assert_eq!(list.len(), 3);

    // A corrected file moves the duplicate to other lines: the same fact, no second discrepancy.
    let mut moved = rows.clone();
    moved.swap(0, 3);
    moved.push(("REFUND", "rf_new", "2.00", "SUCCESS", ""));
    let corrected = upload_as(&h, "alice", CHANNEL, "csv", csv(CHANNEL, &moved))
        .await
        .unwrap();
    assert_eq!(corrected.supersedes, first.run_id);
    let again = h.discrepancies(CHANNEL).await;
    let dups: Vec<_> = again
        .iter()
        .filter(|d| d.kind == pb::DiscrepancyKind::DuplicateRow as i32)
        .collect();
    assert_eq!(dups.len(), 1, "{again:#?}");
    assert_eq!(dups[0].discrepancy_id, dup.discrepancy_id);
    // Resolving it posts the amount once, and it cannot be resolved again.
    h.resolve(
        &dup.discrepancy_id,
        pb::Resolution::BankWins,
        "bob",
        "paid twice",
    )
    .await
    .unwrap();
    let e = h
        .resolve(
            &dup.discrepancy_id,
            pb::Resolution::BankWins,
            "bob",
            "again",
        )
        .await
        .unwrap_err();
    assert_eq!(tk_code(&e), ErrorCode::InvalidStateTransition);
    let (debits, _) = h
        .balance(acc_pb::AccountType::SuspenseBankClaim, CHANNEL)
        .await;
    assert_eq!(money(&debits), money("5.00"));

    // The same content with a byte-order mark and CRLF line endings is the same file.
    let plain = csv(CHANNEL, &moved);
    let mut bom_crlf = b"\xEF\xBB\xBF".to_vec();
    bom_crlf.extend(
        String::from_utf8(plain)
            .unwrap()
            .replace('\n', "\r\n")
            .bytes(),
    );
    let same = upload_as(&h, "alice", CHANNEL, "csv", bom_crlf)
        .await
        .unwrap();
    assert!(same.replayed);
    assert_eq!(same.run_id, corrected.run_id);
    assert_eq!(same.content_sha256, corrected.content_sha256);
    assert_ne!(same.file_sha256, "");

    // A channel the platform does not know.
    let e = upload_as(&h, "carol", "nosuch", "csv", csv("nosuch", &rows))
        .await
        .unwrap_err();
    assert_eq!(tk_code(&e), ErrorCode::ChannelNotFound);
    let e = h.run("nosuch", "2026-11-25").await.unwrap_err();
    assert_eq!(tk_code(&e), ErrorCode::ChannelNotFound);
    // A malformed bill.
    let e = upload_as(
        &h,
        "dave",
        "wechat",
        "wechat",
        fixture("wechat_bad_summary.csv"),
    )
    .await
    .unwrap_err();
    assert_eq!(tk_code(&e), ErrorCode::InvalidArgument);
    // A request refused before any parsing: a bad date.
    let mut bad_date = tonic::Request::new(pb::RunReconciliationFileRequest {
        channel: CHANNEL.into(),
        date: "2026-13-01".into(),
        content: b"x".to_vec(),
        ..Default::default()
    });
    bad_date.metadata_mut().insert(
        "authorization",
        tuikuan_auth::testing::bearer_for("erin", "finance")
            .parse()
            .unwrap(),
    );
    assert!(h.c().run_reconciliation_file(bad_date).await.is_err());

    // Every refused upload left a trace: listed with --all, and in the audit trail.
    let listed = h
        .c()
        .list_runs(pb::ListRunsRequest {
            channel: String::new(),
            limit: 50,
            include_rejected: true,
        })
        .await
        .unwrap()
        .into_inner();
    let rejected = &listed.rejected;
    assert_eq!(rejected.len(), 3, "{rejected:#?}");
    let bill = rejected.iter().find(|x| x.operator == "dave").unwrap();
    assert_eq!(
        (
            bill.channel.as_str(),
            bill.date.as_str(),
            bill.source.as_str()
        ),
        ("wechat", "2026-11-25", "upload")
    );
    assert_eq!(
        (bill.error_line, bill.error_field.as_str()),
        (9, "退款总金额")
    );
    assert_eq!(bill.error_code, "INVALID_ARGUMENT");
    assert_eq!(bill.format, "wechat-bill");
    assert_eq!(
        bill.file_sha256,
        hex::encode(Sha256::digest(fixture("wechat_bad_summary.csv")))
    );
    let unknown = rejected.iter().find(|x| x.operator == "carol").unwrap();
    assert_eq!(
        (unknown.error_code.as_str(), unknown.error_field.as_str()),
        ("CHANNEL_NOT_FOUND", "channel")
    );
    let date = rejected.iter().find(|x| x.operator == "erin").unwrap();
    assert_eq!(
        (date.date.as_str(), date.error_field.as_str()),
        ("2026-13-01", "date")
    );
    let without = h
        .c()
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(without.rejected.is_empty());
    let audit = h.audit(&bill.rejection_id).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].subject_kind.as_str(),
            audit[0].action.as_str(),
            audit[0].operator.as_str()
        ),
        ("FILE", "REJECTED", "dave")
    );
    assert!(
        audit[0].after.contains("line 9, 退款总金额"),
        "{}",
        audit[0].after
    );
    h.stop().await;
}
