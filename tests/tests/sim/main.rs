//! The bandwidth allocation on a simulated network, in virtual time (see `strait_tests::sim`).
//! Each scenario runs on five seeds, on a QUIC and on a WebRTC subscriber leg.

mod quic;
mod webrtc;

use strait_tests::sim::{LegKind, scenarios};

/// Runs `scenario` on `leg` over the CI seeds; panics with what failed and the timeline.
fn check(leg: LegKind, scenario: fn(LegKind, &[u64]) -> Result<(), String>) {
    if let Err(why) = scenario(leg, &scenarios::SEEDS) {
        panic!("{why}");
    }
}
