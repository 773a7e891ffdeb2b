//! One `/ws/rtc` binary message through `decode_single_frame` with a small maximum frame size:
//! exactly one frame or a typed refusal. See `checks::single_frame`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::single_frame(data));
