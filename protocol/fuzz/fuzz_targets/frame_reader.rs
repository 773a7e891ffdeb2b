//! Arbitrary bytes, split at points the input chooses, through `FrameReader::next_message` with a
//! small maximum frame size. See `checks::frame_reader`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::frame_reader(data));
