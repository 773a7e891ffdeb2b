//! Arbitrary bytes as a datagram on the WebRTC bridge's UDP port from an unknown address: the RFC 7983
//! demux and the ICE ufrag lookup, and an endpoint's handling of it. See `checks::webrtc_demux`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::webrtc_demux(data));
