//! Sessions: a client's life from its hello to its end.
//!
//! - [`core`]: the session core, sans-IO: hello, auth, resume, the attach to the hub, rate
//!   limits, violations, timeouts, go-away — the same for every transport;
//! - [`quic`]: its driver for raw QUIC and WebTransport (the WebSocket driver is
//!   `http::ws`);
//! - `admission`: session slots per node and per source address.

mod admission;
pub(crate) mod core;
pub(crate) mod quic;

#[cfg(test)]
mod tests;

pub(crate) use self::admission::Admission;
