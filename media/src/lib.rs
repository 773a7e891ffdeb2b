//! # strait-media
//!
//! The SFU core of Strait. It will own rooms, participants, published tracks (with up to three
//! simulcast layers) and subscriptions; the per-leg RTP rewrite (SSRC, sequence numbers, timestamps
//! continuous across layer switches); layer choice from bandwidth estimates; keyframe-request
//! throttling and a per-track packet cache for NACK; WebRTC peers on webrtc-rs's sans-IO `rtc` core,
//! all on one UDP socket; and the embedded TURN server with its credentials.
//!
//! What it is not: it does not depend on `strait-protocol` (the SFU works behind any signaling), it
//! owns no runtime and reads no clock. It is driven sans-IO: `handle_*(…, now)` in, `poll_*()` out,
//! `poll_timeout()` to say when to wake; the gateway does the I/O.
//!
//! This crate is empty until the SFU core lands.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
