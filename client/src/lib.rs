//! # strait-client
//!
//! The native Strait SDK. It will connect to a gateway over raw QUIC (ALPN `strait/1`, on quinn, so
//! that `rebind()` can move it to a new local address the way a phone changes network) and over
//! WebTransport (wtransport), join rooms, publish and receive RTP, request keyframes and resume a lost
//! session with its resume token. It is used by applications, by the end-to-end tests and by the load
//! generator `strait-load`.
//!
//! It depends on `strait-protocol` only among the workspace crates.
//!
//! This crate is empty until the front door lands.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
