//! Stopping and piping the real binary: SIGTERM turns health NOT_SERVING, drains and exits 0; a
//! reader that closes the pipe early (`tuikuan ctl … | head -1`) ends a command quietly.

use std::process::{Child, Command, Stdio};

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Runs `cmd` (a command that prints something after a call) with its standard output closed
/// before it writes, and asserts that it ends quietly: status 0 and no panic.
pub fn closed_pipe_ends_quietly(mut cmd: Command) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command runs");
    // The reader goes away before the command has made its call, let alone printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("command ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// Sends SIGTERM to `up` (as `kill`, systemd and Kubernetes do) and asserts that the listener
/// behind `channel` reports NOT_SERVING before it goes, and that the process exits 0 well within
/// its drain time. Call it from a multi-thread test.
pub async fn sigterm_drains_and_exits_zero(child: &mut Child, channel: Channel) {
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("first status")
        .expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let next = watch
        .message()
        .await
        .expect("status while stopping")
        .expect("a status before the listener closes");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // The watch is a request in flight: ending it lets the drain finish without waiting.
    drop(watch);
    drop(health);
    // The runtime's other workers send the stream's reset meanwhile (a multi-thread test).
    let status = tokio::task::block_in_place(|| child.wait()).expect("up exits");
    assert_eq!(status.code(), Some(0), "{status:?}");
}
