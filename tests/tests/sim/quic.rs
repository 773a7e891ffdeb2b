//! A QUIC subscriber behind a narrow link: the scenarios of `strait_tests::sim::scenarios` that
//! hold today (`strait-sim` prints the scorecard of all of them, these included).

use strait_tests::sim::{LegKind, scenarios};

fn check(scenario: fn(LegKind, &[u64]) -> Result<(), String>) {
    super::check(LegKind::Quic, scenario);
}

#[test]
fn a_falling_capacity_is_followed_within_a_second_and_a_half() {
    check(scenarios::a_falling_capacity_is_followed_within_a_second_and_a_half);
}

#[test]
fn a_rising_capacity_reaches_the_top_layer_within_seconds() {
    check(scenarios::a_rising_capacity_reaches_the_top_layer_within_seconds);
}

#[test]
fn a_square_wave_is_followed_without_flapping() {
    check(scenarios::a_square_wave_is_followed_without_flapping);
}

#[test]
fn six_publishers_on_a_ramp_change_the_allocation_rarely() {
    check(scenarios::six_publishers_on_a_ramp_change_the_allocation_rarely);
}

#[test]
fn an_app_limited_leg_with_a_long_rtt_reaches_the_top_layer() {
    check(scenarios::an_app_limited_leg_with_a_long_rtt_reaches_the_top_layer);
}

#[test]
fn layers_announced_without_a_bitrate_are_not_free() {
    check(scenarios::layers_announced_without_a_bitrate_are_not_free);
}

#[test]
fn a_viewer_connected_before_the_media_gets_the_layer_its_link_carries() {
    check(scenarios::a_viewer_connected_before_the_media_gets_the_layer_its_link_carries);
}

#[test]
fn a_layer_that_stops_is_given_up_for_the_next_one_down() {
    check(scenarios::a_layer_that_stops_is_given_up_for_the_next_one_down);
}

#[test]
fn light_loss_is_no_reason_to_downgrade_and_heavy_loss_is() {
    check(scenarios::light_loss_is_no_reason_to_downgrade_and_heavy_loss_is);
}
