//! `decode_message` on arbitrary bytes; what decodes must re-encode and decode to itself. See
//! `checks::control_decode`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::control_decode(data));
