//! Legacy WebRTC peers end to end, against an in-process gateway, in the same rooms as native QUIC
//! clients. One binary, a module per area:
//!
//! - `bridge`: WHIP publishers and WHEP subscribers (the async `webrtc` crate, and `rtc` peers
//!   behind TURN) through the WebRTC bridge;
//! - `ws`: WebSocket signaling on `/ws/rtc`, its sessions and its bad input.

mod bridge;
mod http_surface;
mod ws;
