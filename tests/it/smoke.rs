//! The real binary: `tuikuan up` serves all seven services (health + reflection), and
//! `tuikuan demo` runs the whole chain and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tuikuan::config::Service;

use crate::discovery::{assert_serves_exactly, internal_services, PUBLIC_SERVICES};

/// Kills the child process when dropped, also when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tuikuan certs init DIR`, checked.
fn certs_init(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .args(["certs", "init"])
        .arg(dir)
        .output()
        .expect("tuikuan certs init runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in tuikuan_proto::tls::Principal::ALL {
        assert!(dir.join(format!("{}.pem", p.name())).exists(), "{p}");
        assert!(dir.join(format!("{}-key.pem", p.name())).exists(), "{p}");
    }
    // A second init does not silently replace the CA.
    let again = Command::new(env!("CARGO_BIN_EXE_tuikuan"))
        .args(["certs", "init"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_up_serves_every_listener_under_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs);
    let config = dir.path().join("tuikuan.toml");
    let ports: String = Service::ALL
        .iter()
        .map(|s| format!("{} = 0\n", s.name()))
        .collect();
    let admin_hash = tuikuan_auth::password::hash_password("admin-password-1").unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\njob_interval_ms = 0\npublic_port = 0\nbootstrap_admin = \"admin\"\n\
             bootstrap_admin_password_hash = {admin_hash:?}\n[tls]\ndir = {:?}\n\
             public_cert = {:?}\npublic_key = {:?}\n[ports]\n{ports}",
            dir.path().join("data").display().to_string(),
            certs.display().to_string(),
            certs.join("merchant-api.pem").display().to_string(),
            certs.join("merchant-api-key.pem").display().to_string(),
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
    // Blocking reads of the child's announcement, off the async runtime: lines of
    // `public|internal <service> <address> <what>`.
    let listeners = tokio::task::spawn_blocking(move || {
        let mut listeners = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout line");
            if line.starts_with("all services up") {
                break;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 3 && (parts[0] == "public" || parts[0] == "internal") {
                listeners.push((
                    parts[0].to_string(),
                    parts[1].to_string(),
                    parts[2].to_string(),
                ));
            }
        }
        listeners
    })
    .await
    .unwrap();
    assert_eq!(listeners.len(), 8, "{listeners:?}");
    assert_eq!(listeners[0].0, "public", "{listeners:?}");
    assert!(listeners[0].2.starts_with("https://"), "{listeners:?}");
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let public_url = listeners[0].2.clone();
    let public = tuikuan_proto::tls::public_channel(&public_url, Some(&ca)).unwrap();
    assert_serves_exactly(public, "public", PUBLIC_SERVICES).await;
    let ctl_tls = tuikuan_proto::tls::Transport::mtls(
        tuikuan_proto::tls::Credentials::from_dir(&certs, tuikuan_proto::tls::Principal::Ctl)
            .unwrap(),
    );
    let mut addrs = Vec::new();
    for (kind, name, addr) in &listeners[1..] {
        assert_eq!(kind, "internal");
        let service = Service::parse(name).unwrap();
        let channel = ctl_tls.channel(service.principal(), addr).unwrap();
        assert_serves_exactly(channel, name, internal_services(service)).await;
        addrs.push((name.clone(), addr.clone()));
    }
    // Nobody without a certificate of this deployment gets anything done on any address printed.
    crate::trust::walk_every_listener(&public_url, &addrs, &ca).await;

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
            .env("TUIKUAN_TLS_DIR", &certs)
            .env("TUIKUAN_PUBLIC_ADDR", &public_url)
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
    // The operations command line against the running deployment, addresses from the environment.
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tuikuan"));
        cmd.arg("ctl")
            .arg("--token-file")
            .arg(&session_arg)
            .args(args)
            .env_remove("TUIKUAN_TOKEN");
        for (name, url) in &addrs {
            cmd.env(format!("TUIKUAN_{}_ADDR", name.to_uppercase()), url);
        }
        cmd.env("TUIKUAN_TLS_DIR", &certs)
            .env("TUIKUAN_PUBLIC_ADDR", &public_url);
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
    // `ctl … | head -1`: a closed pipe ends the command quietly.
    let mut piped = Command::new(env!("CARGO_BIN_EXE_tuikuan"));
    piped
        .args(["ctl", "--token-file", &session_arg])
        .args(["--output", "json", "trial-balance"])
        .env_remove("TUIKUAN_TOKEN");
    for (name, url) in &addrs {
        piped.env(format!("TUIKUAN_{}_ADDR", name.to_uppercase()), url);
    }
    piped.env("TUIKUAN_TLS_DIR", &certs);
    crate::stop::closed_pipe_ends_quietly(piped);

    let out = ctl_in(&["logout"], "");
    assert!(out.status.success());
    let out = ctl_in(&["whoami"], "");
    assert!(!out.status.success(), "no session, no identity");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));

    // SIGTERM: NOT_SERVING first, then a drained stop with status 0.
    let (_, business) = addrs.iter().find(|(n, _)| n == "business").unwrap();
    let channel = ctl_tls
        .channel(Service::Business.principal(), business)
        .unwrap();
    crate::stop::sigterm_drains_and_exits_zero(&mut child.0, channel).await;
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
