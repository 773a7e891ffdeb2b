//! End-to-end tests over real QUIC on loopback: an in-process gateway and real clients (raw QUIC
//! and WebTransport).
//!
//! One test binary, a module per area.

mod admission;
mod bad_input;
mod certs;
mod drain;
mod forwarding;
mod migration;
mod peers;
mod resume;
mod supervision;
mod unauthenticated;
mod workers;
