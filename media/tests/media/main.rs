//! Integration tests of `strait-media`: the SFU core driven with virtual time and synthetic RTP
//! (`sfu`), the WebRTC endpoint against the `webrtc` crate as a legacy peer
//! (`webrtc_endpoint`), and the checks of the fuzz targets over their seed corpus
//! (`fuzz_corpus`). One binary, a module per area.

mod fuzz_corpus;
mod sfu;
mod webrtc_endpoint;
