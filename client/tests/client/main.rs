//! Integration tests of the client against a scripted server over real QUIC on loopback.
//!
//! One binary, a module per area. Every wait is bounded (`support::within`) and waits for an
//! event, never for time to pass.

mod support;

mod allocation;
mod hello;
mod media;
mod migration;
mod requests;
mod resume;
mod webtransport;
