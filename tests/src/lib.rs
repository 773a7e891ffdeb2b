//! # strait-tests
//!
//! End-to-end tests across processes: a gateway started on loopback with ports from the OS, native
//! and WebTransport clients from `strait-client`, headless Chromium as the browser, the `webrtc` crate
//! as a legacy peer, the `turn` crate's client against the embedded TURN server, and a user-space UDP
//! relay that adds delay, jitter, loss and reordering and can move a client to a new address.
//!
//! This crate holds the shared fixtures; the tests themselves live in `tests/`.
//!
//! - [`fixture`]: a gateway started in-process on loopback ports from the OS, clients for it, and
//!   synthetic RTP.
//! - [`turn_client`]: `rtc-turn`'s client over real UDP, TCP and TLS sockets, for the TURN tests.
//! - [`relay`]: a user-space UDP relay for impairment (delay, jitter, loss, reordering, duplication,
//!   rate limits) and migration tests (it moves a client to a new port or IP mid-session).
//! - [`ws`]: a client of the WebSocket signaling path (`/ws/rtc`).
//! - [`webrtc_peer`]: a `webrtc`-crate peer connection, the legacy WebRTC peer of the bridge's
//!   tests and benchmarks.
//! - [`bridge`]: the bridge tests' fixture: WHIP and WHEP peers, `/ws/rtc` subscribers, native
//!   video publishers, and the waits on a native session that go with them.
//! - [`browser`]: what the headless-Chromium tests share (tool checks, process-group cleanup).
//! - [`redis`]: a real `redis-server` on a Unix socket, for the cluster tests.
//! - [`sim`]: a deterministic network simulation in virtual time (narrow links, a sans-IO QUIC
//!   pair, a simulcast publisher, freeze metrics) for the bandwidth allocator's tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod browser;
pub mod fixture;
pub mod http;
pub mod redis;
pub mod relay;
pub mod sdp;
pub mod sim;
pub mod turn_client;
pub mod turn_peer;
pub mod webrtc_peer;
pub mod ws;
