//! Shared pieces of the load tools (`strait-load`, `strait-fanout-bench`,
//! `quinn-fanout-baseline`): starting the `strait` binary as a child and reading its banner,
//! minting tokens and scraping `/metrics` over a tiny HTTP/1.1 client, the fan-out programs'
//! shared command line, reading a process's CPU and memory from `/proc`, and the statistics the
//! reports print.
//!
//! Not part of the SDK's API: it is public only so that the binaries of this crate can share it.
//! Linux only (`/proc`).
#![allow(
    missing_docs,
    reason = "internal to the load tools; hidden from the SDK's documentation"
)]

pub mod fanout;
pub mod gateway;
pub mod procfs;
pub mod rtp;
pub mod scenario;
pub mod stats;

/// The error type of the load tools: they report and exit, nothing matches on it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
