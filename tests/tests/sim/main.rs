//! The bandwidth allocation on a simulated network, in virtual time (see `strait_tests::sim`).
//! Each scenario runs on five seeds, on a QUIC and on a WebRTC subscriber leg.

mod quic;
mod webrtc;
