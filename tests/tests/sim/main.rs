//! The bandwidth allocation on a simulated network, in virtual time (see `strait_tests::sim`).
//! Each scenario runs on five seeds, on a QUIC subscriber leg (quinn-proto driven sans-IO) and
//! on a WebRTC one (the bridge's RTP, a browser's TWCC feedback every 50 ms).
//!
//! The table below lists every scenario of `strait_tests::sim::scenarios` with the legs on which
//! it holds today; `strait-sim` prints the scorecard of all of them on both legs, these included.
//! Each entry makes one test per leg: `<scenario>::quic`, `<scenario>::webrtc`.

use strait_tests::sim::{LegKind, scenarios};

/// Runs `scenario` on `leg` over the CI seeds; panics with what failed and the timeline.
fn check(leg: LegKind, scenario: fn(LegKind, &[u64]) -> Result<(), String>) {
    if let Err(why) = scenario(leg, &scenarios::SEEDS) {
        panic!("{why}");
    }
}

/// `holds!(scenario: legs…)`: a module named after the scenario with one test per leg.
macro_rules! holds {
    ($($scenario:ident: $($leg:ident),+;)+) => {
        $(
            mod $scenario {
                $(
                    #[test]
                    fn $leg() {
                        super::check(super::$leg(), strait_tests::sim::scenarios::$scenario);
                    }
                )+
            }
        )+
    };
}

/// The legs the table names.
fn quic() -> LegKind {
    LegKind::Quic
}

fn webrtc() -> LegKind {
    LegKind::WebRtc
}

holds! {
    a_falling_capacity_is_followed_within_a_second_and_a_half: quic, webrtc;
    a_rising_capacity_reaches_the_top_layer_within_seconds: quic, webrtc;
    a_square_wave_is_followed_without_flapping: quic, webrtc;
    six_publishers_on_a_ramp_change_the_allocation_rarely: quic, webrtc;
    an_app_limited_leg_with_a_long_rtt_reaches_the_top_layer: quic, webrtc;
    layers_announced_without_a_bitrate_are_not_free: quic, webrtc;
    a_viewer_connected_before_the_media_gets_the_layer_its_link_carries: quic, webrtc;
    a_layer_that_stops_is_given_up_for_the_next_one_down: quic, webrtc;
    light_loss_is_no_reason_to_downgrade_and_heavy_loss_is: quic, webrtc;
    // Fails on QUIC: a freeze at the start (BENCHMARKS §13).
    a_capacity_near_a_layer_boundary_does_not_make_the_picture_oscillate: webrtc;
    // Fails on both (BENCHMARKS §13): cameras_are_paused_before_the_screen_share_and_come_back.
}
