//! `parse_datagram` and `parse_media` on arbitrary bytes; what parses must rebuild to itself. See
//! `checks::datagram_parse`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::datagram_parse(data));
