//! # strait-load
//!
//! The load and benchmark programs of Strait, and the pieces they share. The programs:
//!
//! - `strait-load` runs a scenario (a TOML file in `client/load/scenarios/`) against a gateway:
//!   rooms of publishers and receivers over raw QUIC and WebTransport, with migration and resume
//!   churn, a join storm, a soak (sessions, rooms, resumes and TURN allocations churning for
//!   half an hour), or an overload (a load grown step by step past one media worker, to see load
//!   shedding's order and the audio delivered through it); it reports join latency, forwarding
//!   latency, loss, and the gateway's CPU and memory (over time, in a soak);
//! - `strait-fanout-bench` measures the gateway's CPU per forwarded packet at one publisher to N
//!   subscribers;
//! - `quinn-fanout-baseline` does the same fan-out with a bare quinn server, the floor under the
//!   gateway's figures.
//!
//! The library holds what they share: starting the `strait` binary as a child and reading its
//! banner, minting tokens and scraping `/metrics` over a tiny HTTP/1.1 client ([`gateway`]), the
//! fan-out programs' command line ([`fanout`]), a process's CPU and memory from `/proc`
//! ([`procfs`]), synthetic RTP sources ([`rtp`]), scenarios as data ([`scenario`]), the
//! statistics the reports print ([`stats`]) and a TURN allocation held over UDP ([`turn`]). The
//! end-to-end tests in `strait-tests` reuse [`gateway`] and [`procfs`].
//!
//! What it is not: part of the SDK. An application depends on `strait-client` alone; this crate
//! sits on top of it and uses only the SDK's public API. It asserts nothing on speed: the
//! programs print figures (docs/BENCHMARKS.md records them), and `tests/smoke.rs` only checks
//! that the smoke scenario joins everyone and delivers media, that the soak churns, and that an
//! overloaded gateway sheds in order and keeps audio.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-load --bin strait --bin strait-load
//! target/release/strait-load client/load/scenarios/smoke.toml --json
//! ```
//!
//! Linux only (`/proc`). Every run is bounded in time and talks only to the gateway address it
//! is given (loopback when it starts the gateway itself).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fanout;
pub mod gateway;
pub mod procfs;
pub mod rtp;
pub mod scenario;
pub mod stats;
pub mod turn;

/// The error type of the load tools: they report and exit, nothing matches on it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
