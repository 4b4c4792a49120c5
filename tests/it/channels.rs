//! The whole chain with a WeChat Pay channel and an Alipay channel, configured as a deployment
//! configures them, against local fakes of both channels (loopback only): refunds made through
//! the merchant API are submitted by the refund center through the bank subsystem's connectors,
//! confirmed by notification or by query, and reconciled from the bills the connectors
//! downloaded. Tampered, expired and replayed notifications, unverifiable answers and lost
//! answers move nothing and pay nothing twice.

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use tuikuan::config::DeploymentConfig;
use tuikuan_fakes::alipay::{self as fa, FakeAlipay};
use tuikuan_fakes::wechat::{self as fw, FakeWechatPay};
use tuikuan_fakes::{keys, AnswerFault, NotifyFault, Settle};
use tuikuan_kernel::{Clock, ManualClock};
use tuikuan_proto::bank::v1 as bank;
use tuikuan_proto::business::v1 as biz;
use tuikuan_proto::reconciliation::v1 as rec;
use tuikuan_proto::refund::v1 as rfd;

use crate::both_stores;
use crate::sandbox::{Sandbox, Store, KEY_A};

const WECHAT: &str = "WECHAT_AGG";
const ALIPAY: &str = "ALIPAY_AGG";

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("key file");
    p
}

/// The two channels as a deployment configures them: `[bank.channels.*]` in a TOML file read by
/// `DeploymentConfig::load`, keys in files.
fn configure(config: &mut DeploymentConfig, dir: &Path, wechat_url: &str, alipay_gateway: &str) {
    let k = keys();
    let wx_key = write(dir, "wx_key.pem", &k.wechat_merchant.private_pem);
    let wx_pub = write(dir, "wx_pub.pem", &k.wechat_platform.public_pem);
    let ali_key = write(dir, "ali_key.txt", &k.alipay_app.private_b64);
    let ali_pub = write(dir, "ali_pub.txt", &k.alipay_platform.public_b64);
    let wx_apiv3 = write(dir, "wx_apiv3", fw::APIV3_KEY);
    let toml = format!(
        r#"
[bank.channels.{WECHAT}]
connector = "wechatpay_v3"
mchid = "{mchid}"
merchant_serial_no = "{serial}"
private_key_file = {wx_key:?}
apiv3_key_file = {wx_apiv3:?}
platform_public_keys = [{{ id = "{key_id}", file = {wx_pub:?} }}]
base_url = "{wechat_url}"
timeout_ms = 1000
max_clock_skew_secs = 300
refund_reason = "退款"

[bank.channels.{ALIPAY}]
connector = "alipay"
app_id = "{app_id}"
private_key_file = {ali_key:?}
alipay_public_key_file = {ali_pub:?}
gateway_url = "{alipay_gateway}"
timeout_ms = 1000
refund_reason = "退款"
"#,
        mchid = fw::MCHID,
        serial = fw::MERCHANT_SERIAL,
        key_id = fw::PLATFORM_KEY_ID,
        app_id = fa::APP_ID,
    );
    let file = write(dir, "channels.toml", &toml);
    let loaded = DeploymentConfig::load(Some(&file)).expect("channels.toml");
    assert_eq!(loaded.bank.channels.len(), 2);
    config.bank.channels = loaded.bank.channels;
}

async fn channel(sb: &mut Sandbox, code: &str) {
    sb.c.refund
        .upsert_channel(rfd::Channel {
            code: code.into(),
            kind: rfd::ChannelKind::Aggregated as i32,
            methods: vec![rfd::RefundMethod::Interface as i32],
            original_route_window_days: 365,
            bank_code: code.into(),
            ..Default::default()
        })
        .await
        .expect("refund channel");
    sb.c.business
        .upsert_channel(biz::Channel {
            code: code.into(),
            refund_window_days: 365,
            enabled: true,
        })
        .await
        .expect("business channel");
}

async fn pay(sb: &mut Sandbox, channel: &str, order_no: &str, amount: &str) -> biz::Trade {
    sb.c.business
        .record_payment(biz::RecordPaymentRequest {
            merchant_id: "MA".into(),
            order_no: order_no.into(),
            channel: channel.into(),
            amount: amount.into(),
            currency: "CNY".into(),
            paid_at_ms: sb.clock.now_ms() - 60_000,
            ..Default::default()
        })
        .await
        .expect("payment recorded")
        .into_inner()
}

async fn interface_cycle(sb: &mut Sandbox) -> rfd::CycleReport {
    sb.c.refund
        .run_interface_cycle(rfd::RunInterfaceCycleRequest { limit: 0 })
        .await
        .expect("interface cycle")
        .into_inner()
}

async fn tick(sb: &mut Sandbox) {
    sb.c.bank.tick(bank::TickRequest {}).await.expect("tick");
}

async fn bank_status(sb: &mut Sandbox, refund_id: &str) -> i32 {
    sb.c.refund
        .get_refund(rfd::GetRefundRequest {
            refund_id: refund_id.into(),
            ..Default::default()
        })
        .await
        .expect("refund order")
        .into_inner()
        .bank_status
}

async fn reconcile(sb: &mut Sandbox, channel: &str, date: &str) -> rec::ReconciliationRun {
    sb.c.reconciliation
        .run_reconciliation(rec::RunReconciliationRequest {
            channel: channel.into(),
            date: date.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("reconciliation of {channel}: {e:?}"))
        .into_inner()
}

fn matched(run: &rec::ReconciliationRun) -> u32 {
    run.counts
        .iter()
        .filter(|c| c.outcome == rec::Outcome::Matched as i32)
        .map(|c| c.count)
        .sum()
}

async fn wechat_and_alipay_channels_end_to_end(store: Store) {
    let clock = ManualClock::at_business(tuikuan::demo::demo_start_date(), 10);
    let shared: tuikuan_kernel::SharedClock = Arc::new(clock.clone());
    let wf = FakeWechatPay::start(shared.clone()).await;
    let af = FakeAlipay::start(shared).await;
    let (wurl, agw) = (wf.url.clone(), af.gateway_url());
    let Some(mut sb) =
        Sandbox::start_with(store, 0, clock, |c, dir| configure(c, dir, &wurl, &agw)).await
    else {
        return;
    };
    channel(&mut sb, WECHAT).await;
    channel(&mut sb, ALIPAY).await;
    let notify = sb
        .cluster
        .bank_notify_url()
        .expect("the bank listens for notifications");

    // Payments made at the channels (the platform's trade id is the channel's out_trade_no).
    let mut refund_ids = Vec::new();
    for (i, amount) in ["100.00", "50.00", "30.00"].iter().enumerate() {
        let t = pay(&mut sb, WECHAT, &format!("OW-{i}"), amount).await;
        wf.pay(&t.trade_id, amount.replace('.', "").parse().expect("fen"));
        let r = sb
            .refund(KEY_A, &format!("RW-{i}"), &format!("OW-{i}"), "10.00")
            .await
            .expect("accepted");
        assert_eq!(r.status, biz::RefundStatus::Processing as i32);
        refund_ids.push(r.refund_id);
    }
    let mut alipay_ids = Vec::new();
    for (i, amount) in ["80.00", "20.00"].iter().enumerate() {
        let t = pay(&mut sb, ALIPAY, &format!("OA-{i}"), amount).await;
        af.pay(
            &t.trade_id,
            amount.replace('.', "").parse().expect("fen"),
            &format!("{notify}/notify/{ALIPAY}"),
        );
        let r = sb
            .refund(KEY_A, &format!("RA-{i}"), &format!("OA-{i}"), "5.00")
            .await
            .expect("accepted");
        alipay_ids.push(r.refund_id);
    }

    // WeChat Pay answers PROCESSING; the third submission is carried out and never answered.
    // Alipay's first answer is signed wrongly (the channel acted; the answer is refused), and
    // the notifications of the refunds it made are tampered with.
    wf.set_settle(Settle::LaterSuccess);
    wf.hang_after_acting(1);
    af.set_answer_fault(AnswerFault::BadSignature);
    af.set_notify_fault(NotifyFault::Tampered);
    let first = interface_cycle(&mut sb).await;
    assert!(
        first.errors >= 2,
        "a lost answer and an unverifiable one: {first:?}"
    );
    let refused = af.deliver_notifications().await;
    assert!(
        refused.len() == 2 && refused.iter().all(|(s, b)| *s == 200 && b == "failure"),
        "tampered Alipay notifications refused: {refused:?}"
    );
    tick(&mut sb).await;
    for id in &alipay_ids {
        assert_ne!(
            bank_status(&mut sb, id).await,
            rfd::BankStatus::BankSucceeded as i32,
            "a refused notification moves nothing"
        );
    }
    af.set_answer_fault(AnswerFault::None);
    af.set_notify_fault(NotifyFault::None);
    let second = interface_cycle(&mut sb).await;
    assert_eq!(second.errors, 0, "{second:?}");
    // The channels paid each refund once, retries included.
    assert!(wf.refunds().iter().all(|r| r.paid <= 1));
    assert_eq!(af.refunds().iter().map(|r| r.paid).sum::<u32>(), 2);

    // WeChat Pay pays. The first notification is tampered, the second comes twice, the third is
    // stale: the tampered and stale ones are refused and move nothing, the replay changes nothing.
    let rw0 = refund_ids[0].clone();
    tick(&mut sb).await;
    let before = bank_status(&mut sb, &rw0).await;
    assert_eq!(before, rfd::BankStatus::BankProcessing as i32);
    wf.set_notify_fault(NotifyFault::Tampered);
    wf.settle();
    let statuses = wf.deliver_notifications().await;
    assert!(
        statuses.iter().all(|s| *s == 500),
        "tampered notifications refused: {statuses:?}"
    );
    tick(&mut sb).await;
    assert_eq!(
        bank_status(&mut sb, &rw0).await,
        before,
        "a refused notification moves nothing"
    );

    // The bank learns the outcomes by querying (its poll) instead.
    sb.clock.advance(Duration::minutes(5));
    tick(&mut sb).await;
    tick(&mut sb).await;
    for id in &refund_ids {
        assert_eq!(
            bank_status(&mut sb, id).await,
            rfd::BankStatus::BankSucceeded as i32,
            "{id} confirmed by query"
        );
    }

    // A later refund confirmed by its notification, which also arrives twice (a replay) and
    // stale (expired): only the first copy counts.
    let t = pay(&mut sb, WECHAT, "OW-9", "9.00").await;
    wf.pay(&t.trade_id, 900);
    let r9 = sb
        .refund(KEY_A, "RW-9", "OW-9", "9.00")
        .await
        .expect("accepted")
        .refund_id;
    interface_cycle(&mut sb).await;
    wf.set_notify_fault(NotifyFault::Duplicate);
    wf.settle();
    assert_eq!(wf.deliver_notifications().await, vec![204, 204]);
    tick(&mut sb).await;
    assert_eq!(
        bank_status(&mut sb, &r9).await,
        rfd::BankStatus::BankSucceeded as i32
    );
    let t = pay(&mut sb, WECHAT, "OW-8", "8.00").await;
    wf.pay(&t.trade_id, 800);
    let r8 = sb
        .refund(KEY_A, "RW-8", "OW-8", "8.00")
        .await
        .expect("accepted")
        .refund_id;
    interface_cycle(&mut sb).await;
    wf.set_notify_fault(NotifyFault::Expired);
    wf.settle();
    assert_eq!(wf.deliver_notifications().await, vec![500]);
    tick(&mut sb).await;
    assert_ne!(
        bank_status(&mut sb, &r8).await,
        rfd::BankStatus::BankSucceeded as i32,
        "a stale notification moves nothing"
    );

    // Alipay's notifications (sent to the payments' notify_url) are verified and accepted; a
    // replay (the same notify_id again) is acknowledged and changes nothing.
    let t = pay(&mut sb, ALIPAY, "OA-2", "7.00").await;
    af.pay(&t.trade_id, 700, &format!("{notify}/notify/{ALIPAY}"));
    let ra2 = sb
        .refund(KEY_A, "RA-2", "OA-2", "7.00")
        .await
        .expect("accepted")
        .refund_id;
    af.set_notify_fault(NotifyFault::Duplicate);
    interface_cycle(&mut sb).await;
    let statuses = af.deliver_notifications().await;
    assert_eq!(
        statuses,
        vec![(200, "success".to_string()), (200, "success".to_string())]
    );
    tick(&mut sb).await;
    assert_eq!(
        bank_status(&mut sb, &ra2).await,
        rfd::BankStatus::BankSucceeded as i32
    );

    // Next morning: reconciliation from the bills the connectors downloaded.
    let date = sb.clock.today().to_string();
    sb.clock.advance(Duration::hours(22));
    tick(&mut sb).await;
    let wrun = reconcile(&mut sb, WECHAT, &date).await;
    assert_eq!(matched(&wrun), 5, "{wrun:?}");
    let arun = reconcile(&mut sb, ALIPAY, &date).await;
    assert_eq!(matched(&arun), 3, "{arun:?}");
    sb.c.refund
        .run_outbox(rfd::RunOutboxRequest {})
        .await
        .expect("outbox");
    for no in [
        "RW-0", "RW-1", "RW-2", "RW-9", "RW-8", "RA-0", "RA-1", "RA-2",
    ] {
        let r = sb.get_refund(KEY_A, no).await.expect("refund");
        assert_eq!(r.status, biz::RefundStatus::Succeeded as i32, "{no}: {r:?}");
    }
    // Never paid twice, by the channels' own ledgers.
    assert!(
        wf.refunds().iter().all(|r| r.paid == 1),
        "{:?}",
        wf.refunds()
    );
    assert!(
        af.refunds().iter().all(|r| r.paid == 1),
        "{:?}",
        af.refunds()
    );
    // The bank's books list the channel refunds for auditors.
    let books = tuikuan::audit::list_bank_transactions(&sb.c)
        .await
        .expect("bank books");
    assert_eq!(
        books
            .iter()
            .filter(|t| t.channel == WECHAT || t.channel == ALIPAY)
            .count(),
        8
    );
    sb.assert_books_balanced().await;
    sb.shutdown().await;
}
both_stores!(wechat_and_alipay_channels_end_to_end);
