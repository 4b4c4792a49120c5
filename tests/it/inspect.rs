//! `tuikuan ctl recon inspect`: the real binary reads bank files offline (no service runs) and
//! prints what a run would read; it exits non-zero when a run would refuse the file.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../reconciliation/tests/fixtures")
        .join(name)
}

fn inspect(args: &[&str], file: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .args(["ctl", "recon", "inspect", "--file"])
        .arg(fixture(file))
        .args(args)
        // Nothing listens there: the command must not need a service.
        .env("TUIKUAN_RECONCILIATION_ADDR", "http://127.0.0.1:9")
        .output()
        .expect("tuikuan runs")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn inspect_reads_each_layout_offline() {
    let out = inspect(&["--date", "2026-11-25"], "unionpay_zm_gbk.txt");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "unionpay-zm",
        "UnionPay ZM (42 fields, 607 bytes a line)",
        "gbk",
        "ACCEPTED",
        "TKU10000000000000000000000000001",
        "ORD20261124001001",
        "payment",
    ] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }

    let out = inspect(&["--output", "json"], "alipay_detail_gbk.csv");
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["format"], "alipay-detail");
    assert_eq!(v["format_detected"], true);
    assert_eq!(v["encoding"], "gbk");
    assert_eq!(
        (v["rows"].as_u64(), v["refund_rows"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(v["verdict"], "ACCEPTED");
    let a1 = &v["items"][1];
    assert_eq!(
        (
            &a1["kind"],
            &a1["bank_reference"],
            &a1["amount"],
            &a1["status"]
        ),
        (
            &"refund".into(),
            &"rf_a1".into(),
            &"12.50".into(),
            &"SUCCESS".into()
        )
    );
    assert!(v["summary_check"]
        .as_str()
        .unwrap()
        .contains("退款合计 3笔 = 3 rows"));

    let out = inspect(
        &["--output", "json", "--format", "wechat"],
        "wechat_legacy_all.csv",
    );
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(
        v["layout"],
        "WeChat Pay ALL bill, legacy layout (24 columns)"
    );
    assert_eq!(v["format_detected"], false);
}

#[test]
fn inspect_exits_non_zero_naming_line_and_field() {
    let out = inspect(&["--output", "json"], "wechat_bad_summary.csv");
    assert!(!out.status.success());
    let v = json(&out);
    assert_eq!(v["verdict"], "REFUSED");
    assert_eq!(
        (v["error"]["line"].as_u64(), &v["error"]["field"]),
        (Some(9), &"退款总金额".into())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 9: 退款总金额: says 29.51"),
        "{stderr}"
    );

    // The wrong format, declared.
    let out = inspect(&["--format", "wechat"], "unionpay_zm_gbk.txt");
    assert!(!out.status.success());
    // A GBK bill declared UTF-8 is refused at its first line.
    let out = inspect(&["--encoding", "utf-8"], "wechat_current_refund_gbk.csv");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: row: is not valid utf-8"));
    // Bad arguments name the flag.
    let out = inspect(&["--format", "excel"], "alipay_detail_gbk.csv");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
}
