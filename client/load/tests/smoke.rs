//! `strait-load` end to end: the CI smoke scenario (`client/load/scenarios/smoke.toml`, about 2 s,
//! eight sessions over raw QUIC and WebTransport, audio and video, receivers resuming once a
//! second), the soak scenario shrunk to 3 s, and the overload scenario shrunk to one room with a
//! shedding threshold its first subscribers cross, against the `strait` binary.
//!
//! The gateway is a separate package that this crate must not depend on, so its binary is
//! looked up next to `strait-load` in the same target directory (`scripts/test` builds it first
//! with `cargo build -p strait-gateway --bin strait`), or at `$STRAIT_BIN`. Nothing here asserts
//! on speed: only that every session joined and media went through the gateway, and that an
//! overloaded gateway shed in order and kept audio.

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

/// Runs `strait-load` on `scenario` (a file of `client/load/scenarios/`) with `sets`, against the
/// gateway binary; returns its JSON report. Bounded: a hung run is killed after 120 s.
fn run_scenario(scenario: &str, sets: &[&str]) -> serde_json::Value {
    let strait = gateway_binary();
    assert!(
        strait.exists(),
        "the gateway binary {} is missing: build it first with \
         `cargo build -p strait-gateway --bin strait` (scripts/test does), or set STRAIT_BIN",
        strait.display()
    );
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(scenario);
    let mut command = Command::new(env!("CARGO_BIN_EXE_strait-load"));
    command
        .arg(&scenario)
        .arg("--strait")
        .arg(&strait)
        .args(["--json", "--no-progress"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let child = command
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
    serde_json::from_str(stdout.trim()).expect("one JSON report")
}

#[test]
fn smoke_scenario_joins_everyone_and_delivers_media() {
    let report = run_scenario("smoke.toml", &[]);
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

/// The soak scenario shrunk to about 3 s: 8 sessions in 2 rooms that close every 2 s, sessions
/// leaving after a second or so, resuming every 0.7 s, every other one holding a TURN allocation
/// refreshed every 0.5 s.
#[test]
fn soak_scenario_churns_sessions_and_rooms_resumes_and_refreshes_turn() {
    let report = run_scenario(
        "soak.toml",
        &[
            "duration_seconds=3",
            "soak.sessions=8",
            "soak.room_size=4",
            "soak.room_lifetime_seconds=2",
            "soak.session_lifetime_seconds=1.5",
            "soak.resume_every_seconds=0.7",
            "soak.vanish_share=0.25",
            "soak.turn.every_nth_session=2",
            "soak.turn.refresh_every_seconds=0.5",
            "soak.sample_every_seconds=1",
        ],
    );
    assert!(
        report["joins"].as_u64() > Some(8),
        "sessions came and went: {report}"
    );
    assert!(report["leaves"].as_u64() > Some(0), "{report}");
    assert!(report["resumes_ok"].as_u64() > Some(0), "{report}");
    assert!(report["media_received"].as_u64() > Some(0), "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let turn = &report["turn"];
    assert!(turn["allocations"].as_u64() > Some(0), "{report}");
    assert!(turn["refreshes"].as_u64() > Some(0), "{report}");
    assert_eq!(turn["allocate_failures"], 0, "{report}");
    assert_eq!(turn["refresh_failures"], 0, "{report}");
    let samples = report["samples"].as_array().expect("samples");
    assert!(samples.len() >= 3, "a sample a second: {report}");
    assert!(
        samples.iter().all(|s| s["rss_mib"].as_f64() > Some(0.0)),
        "the gateway's RSS in every sample: {report}"
    );
}

/// The overload scenario on a small load that sheds for certain: one room of two publishers,
/// eight more subscribers every 1.5 s, and one busy-ratio threshold (6 % of the machine) for all
/// three levels, so the worker goes from 0 straight to level 3 once the subscribers' load
/// crosses it, and stays there (`recover_after` 60 s); the queue delay, which a loaded machine
/// moves by itself, never decides. Video is kept for one speaker of the two. Bounded: at most
/// eight steps, and it stops after a step spent entirely at level 3.
#[test]
fn overload_scenario_refuses_joins_before_shedding_video_and_keeps_audio() {
    let report = run_scenario(
        "overload.toml",
        &[
            "duration_seconds=30",
            "warmup_seconds=1",
            "overload.rooms=1",
            "overload.subscribers_per_step=8",
            "overload.step_seconds=1.5",
            "overload.steps=8",
            "overload.audio_floor_pct=80",
            r#"gateway_settings=["shedding.join_busy=0.06", "shedding.layers_busy=0.06", "shedding.video_busy=0.06", "shedding.join_queue_delay=10s", "shedding.layers_queue_delay=10s", "shedding.video_queue_delay=10s", "shedding.recover_after=60s", "shedding.speakers=1"]"#,
        ],
    );
    let summary = &report["summary"];
    let step = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: never seen: {report}"))
    };
    let (refused, layers, video) = (
        step("first_refused_step"),
        step("first_level2_step"),
        step("first_level3_step"),
    );
    assert!(
        refused <= layers && layers <= video,
        "joins refused, then the layer ceiling, then video: {report}"
    );
    assert!(
        step("first_video_shed_step") >= refused,
        "video shed once joins were refused: {report}"
    );
    assert!(
        report["before_steps"]["level_max"] == 0,
        "the publishers alone did not shed: {report}"
    );
    let steps = report["steps"].as_array().expect("steps");
    assert!(
        steps.iter().any(|s| s["subscribers"].as_u64() > Some(0)),
        "subscribers got in: {report}"
    );
    let audio = summary["min_audio_delivered_pct"]
        .as_f64()
        .expect("audio was measured");
    assert!(audio >= 80.0, "audio kept flowing: {report}");
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
}
