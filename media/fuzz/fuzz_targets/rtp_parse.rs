//! Arbitrary bytes as an RTP packet through `RtpHeader::parse`, the SFU's header parse; the payload
//! bounds it gives go to the keyframe detectors. See `checks::rtp_parse`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::rtp_parse(data));
