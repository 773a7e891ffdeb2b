//! Integration tests of `strait-media`: the SFU core driven with virtual time and synthetic RTP
//! (`sfu`), and the WebRTC endpoint against the `webrtc` crate as a legacy peer
//! (`webrtc_endpoint`). One binary, a module per area.

mod sfu;
mod webrtc_endpoint;
