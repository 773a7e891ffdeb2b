//! `strait-load` end to end: the CI smoke scenario (`client/load/scenarios/smoke.toml`, about 2 s,
//! eight sessions over raw QUIC and WebTransport, audio and video, receivers resuming once a
//! second) against the `strait` binary.
//!
//! The gateway is a separate package that this crate must not depend on, so its binary is
//! looked up next to `strait-load` in the same target directory (`scripts/test` builds it first
//! with `cargo build -p strait-gateway --bin strait`), or at `$STRAIT_BIN`. Nothing here asserts
//! on speed: only that every session joined and media went through the gateway.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn gateway_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRAIT_BIN") {
        return PathBuf::from(path);
    }
    let load = PathBuf::from(env!("CARGO_BIN_EXE_strait-load"));
    let dir = load.parent().expect("strait-load has a directory");
    dir.join(format!("strait{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn smoke_scenario_joins_everyone_and_delivers_media() {
    let strait = gateway_binary();
    assert!(
        strait.exists(),
        "the gateway binary {} is missing: build it first with \
         `cargo build -p strait-gateway --bin strait` (scripts/test does), or set STRAIT_BIN",
        strait.display()
    );
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_strait-load"))
        .arg(&scenario)
        .arg("--strait")
        .arg(&strait)
        .args(["--json", "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("strait-load starts");
    // Bounded: the scenario takes a few seconds; a hung run is killed. A thread waits for the
    // process and hands over its output; this one waits for that, with a deadline.
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.expect("strait-load's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("strait-load did not finish within 120 s; killed");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "strait-load failed: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert_eq!(report["sessions"], 8, "{report}");
    assert_eq!(report["sessions_ready"], 8, "{report}");
    assert_eq!(report["sessions_failed"], 0, "{report}");
    assert!(report["expected_deliveries"].as_u64() > Some(0), "{report}");
    assert!(report["delivered"].as_u64() > Some(0), "{report}");
    assert!(report["latency"]["samples"].as_u64() > Some(0), "{report}");
    assert!(report["churn"]["resumes"].as_u64() > Some(0), "{report}");
    assert_eq!(report["churn"]["failures"], 0, "{report}");
    assert!(
        report["churn"]["resume_to_first_media"]["samples"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["gateway"]["packets_out"].as_u64() > Some(0),
        "{report}"
    );
}
