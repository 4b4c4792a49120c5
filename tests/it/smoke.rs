//! The real binary: `tuikuan up` serves all seven services (health + reflection), and
//! `tuikuan demo` runs the whole chain and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tuikuan::config::Service;

use crate::discovery::{assert_serving, grpc_name};

/// Kills the child process when dropped, also when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_up_serves_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tuikuan.toml");
    let ports: String = Service::ALL
        .iter()
        .map(|s| format!("{} = 0\n", s.name()))
        .collect();
    let admin_hash = tuikuan_auth::password::hash_password("admin-password-1").unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\njob_interval_ms = 0\nbootstrap_admin = \"admin\"\n\
             bootstrap_admin_password_hash = {admin_hash:?}\n[ports]\n{ports}",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .arg("--config")
        .arg(&config)
        .arg("up")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tuikuan up starts");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().unwrap();
    // Blocking reads of the child's announcement, off the async runtime.
    let addrs = tokio::task::spawn_blocking(move || {
        let mut addrs = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout line");
            if line.starts_with("all services up") {
                break;
            }
            let mut parts = line.split_whitespace();
            if let (Some(name), Some(url)) = (parts.next(), parts.next()) {
                addrs.push((name.to_string(), url.to_string()));
            }
        }
        addrs
    })
    .await
    .unwrap();
    assert_eq!(addrs.len(), 7, "{addrs:?}");
    for (name, url) in &addrs {
        let service = Service::parse(name).unwrap();
        assert_serving(url, grpc_name(service)).await;
    }

    // The operations command line against the running deployment, addresses from the environment.
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tuikuan"));
        cmd.arg("ctl").args(args);
        for (name, url) in &addrs {
            cmd.env(format!("TUIKUAN_{}_ADDR", name.to_uppercase()), url);
        }
        cmd.output().expect("tuikuan ctl runs")
    };
    let out = ctl(&["--output", "json", "trial-balance"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(json["balanced"], true, "{json}");
    let out = ctl(&["run", "interface-cycle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent"));
    // A wrong key: a clear message with the stable code, and a failing exit status.
    let out = ctl(&[
        "refund",
        "get",
        "--api-key",
        "no-such-key-0000000000",
        "--refund-no",
        "R-1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    // A bad flag value names the flag.
    let out = ctl(&["balance", "--type", "piggy_bank", "--owner", "M1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type"));

    // Staff log in as the runbook says; the session is kept for later commands.
    let session = dir.path().join("session");
    let session_arg = session.display().to_string();
    let ctl_in = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tuikuan"));
        cmd.arg("ctl")
            .arg("--token-file")
            .arg(&session_arg)
            .args(args)
            .env_remove("TUIKUAN_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, url) in &addrs {
            cmd.env(format!("TUIKUAN_{}_ADDR", name.to_uppercase()), url);
        }
        let mut child = cmd.spawn().expect("tuikuan ctl runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().expect("ctl output")
    };
    let out = ctl_in(
        &["login", "--name", "admin", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_CREDENTIALS"));
    let out = ctl_in(
        &["login", "--name", "admin", "--password-stdin"],
        "admin-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged in as admin"));
    let out = ctl_in(
        &[
            "operator",
            "add",
            "--name",
            "fiona",
            "--roles",
            "finance",
            "--password-stdin",
        ],
        "fiona-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl_in(&["--output", "json", "whoami"], "");
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(me["name"], "admin", "{me}");
    let out = ctl_in(&["proposals", "list"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl_in(&["--output", "json", "trail", "--service", "business"], "");
    let trail = String::from_utf8_lossy(&out.stdout);
    assert!(
        trail.contains("LOGIN_FAILED") && trail.contains("MANAGE_OPERATORS"),
        "{trail}"
    );
    let out = ctl_in(&["logout"], "");
    assert!(out.status.success());
    let out = ctl_in(&["whoami"], "");
    assert!(!out.status.success(), "no session, no identity");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));
}

#[test]
fn binary_demo_exits_zero_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("tuikuan demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("refunds by final status"), "{stdout}");
    assert!(stdout.contains("all invariants hold"), "{stdout}");
    assert!(stdout.contains("balanced"), "{stdout}");
}

#[test]
fn binary_rejects_bad_arguments_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .args(["serve", "refunds"])
        .output()
        .expect("tuikuan runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service: unknown service \"refunds\""),
        "{stderr}"
    );
}
