//! Arbitrary text, under a limit the input picks, through `check_offer` (a WHIP/WHEP offer) and
//! `IceFragment::parse` (a WHIP `PATCH`). See `checks::offer_check`.
#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared checks")]
#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::offer_check(data));
