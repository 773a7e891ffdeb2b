//! The scorecard of the bandwidth allocation on the simulated network: every scenario of
//! `strait_tests::sim::scenarios` on the CI seeds, with what failed and the subscriber's
//! timeline for those that do not hold, and how many seeds hold on their own (a scenario such
//! as the rising capacity also judges the median over its seeds). Virtual time: a run takes
//! seconds.
//!
//! ```text
//! cargo run --release -p strait-tests --bin strait-sim
//! cargo run --release -p strait-tests --bin strait-sim -- --counters-only
//! cargo run --release -p strait-tests --bin strait-sim -- --learned
//! ```
//!
//! `--each` prints why each seed that fails alone fails.
//! `--learned` runs every scenario with the learned budget policy (`BudgetPolicy::LEARNED`).
//!
//! `--counters-only` runs the QUIC leg alone, its estimate from the connection's counters
//! without each packet's acknowledgement (the gateway's `quic.ack_feedback = false`).

use strait_tests::sim::{LegKind, scenarios};

type Scenario = (&'static str, fn(LegKind, &[u64]) -> Result<(), String>);

const SCENARIOS: &[Scenario] = &[
    (
        "capacity 4 -> 0.8 Mbit/s",
        scenarios::a_falling_capacity_is_followed_within_a_second_and_a_half,
    ),
    (
        "capacity 0.8 -> 4 Mbit/s",
        scenarios::a_rising_capacity_reaches_the_top_layer_within_seconds,
    ),
    (
        "hovering at a layer boundary +-10 %",
        scenarios::a_capacity_near_a_layer_boundary_does_not_make_the_picture_oscillate,
    ),
    (
        "square wave 1.2 <-> 3 Mbit/s",
        scenarios::a_square_wave_is_followed_without_flapping,
    ),
    (
        "six publishers, ramp 0 -> 6 Mbit/s",
        scenarios::six_publishers_on_a_ramp_change_the_allocation_rarely,
    ),
    (
        "app-limited, 150 ms RTT, 20 Mbit/s",
        scenarios::an_app_limited_leg_with_a_long_rtt_reaches_the_top_layer,
    ),
    (
        "layers announced without max-br, 0.6 Mbit/s",
        scenarios::layers_announced_without_a_bitrate_are_not_free,
    ),
    (
        "screen share + 3 cameras, 1.2 -> 0.4 -> 3 Mbit/s",
        scenarios::cameras_are_paused_before_the_screen_share_and_come_back,
    ),
    (
        "a viewer connected before the media, 0.8 Mbit/s",
        scenarios::a_viewer_connected_before_the_media_gets_the_layer_its_link_carries,
    ),
    (
        "the top layer stops",
        scenarios::a_layer_that_stops_is_given_up_for_the_next_one_down,
    ),
    (
        "3 % / 20 % random loss",
        scenarios::light_loss_is_no_reason_to_downgrade_and_heavy_loss_is,
    ),
];

fn main() {
    let seeds = scenarios::SEEDS;
    // `--counters-only`: QUIC legs as with the gateway's `quic.ack_feedback = false`.
    let counters_only = std::env::args().any(|a| a == "--counters-only");
    scenarios::COUNTERS_ONLY.store(counters_only, std::sync::atomic::Ordering::Relaxed);
    // `--learned`: the SFU with the learned budget policy (`BudgetPolicy::LEARNED`).
    let learned = std::env::args().any(|a| a == "--learned");
    scenarios::LEARNED_POLICY.store(learned, std::sync::atomic::Ordering::Relaxed);
    // `--each`: every seed that fails alone, with why.
    let each = std::env::args().any(|a| a == "--each");
    let legs: &[LegKind] = if counters_only {
        &[LegKind::Quic]
    } else {
        &[LegKind::Quic, LegKind::WebRtc]
    };
    for &leg in legs {
        let name_of = match (leg, counters_only) {
            (LegKind::Quic, false) => "QUIC",
            (LegKind::Quic, true) => "QUIC, counters only",
            (LegKind::WebRtc, _) => "WebRTC",
        };
        println!("{name_of} subscriber");
        let mut passed = 0;
        for (name, run) in SCENARIOS {
            let mut alone = 0;
            for &seed in &seeds {
                match run(leg, &[seed]) {
                    Ok(()) => alone += 1,
                    Err(why) if each => {
                        let first = why.lines().next().unwrap_or_default();
                        println!("      {name}: {first}");
                    }
                    Err(_) => {}
                }
            }
            match run(leg, &seeds) {
                Ok(()) => {
                    passed += 1;
                    println!("pass  {name}");
                }
                Err(why) => {
                    let first = why.lines().next().unwrap_or_default();
                    println!(
                        "FAIL  {name} ({alone} of {} seeds hold alone): {first}",
                        seeds.len()
                    );
                    for line in why.lines().skip(1) {
                        println!("        {line}");
                    }
                }
            }
        }
        println!(
            "{passed} of {} scenarios hold ({name_of} subscriber)\n",
            SCENARIOS.len()
        );
    }
}
