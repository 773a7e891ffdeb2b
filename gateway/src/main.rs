//! # strait
//!
//! The Strait gateway binary: one QUIC port for WebTransport (ALPN `h3`) and native clients (ALPN
//! `strait/1`), one UDP port for WebRTC peers, an embedded TURN server, and an HTTP port for the web
//! demo, WHIP/WHEP, WebSocket signaling, health, readiness and metrics. It is the only crate that owns
//! a runtime, reads the clock, binds sockets or handles signals.

use clap::{Parser, Subcommand};

/// Strait: a QUIC/WebTransport-first real-time media gateway.
#[derive(Debug, Parser)]
#[command(name = "strait", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. With no arguments: a self-signed development certificate, a single node
    /// held in memory, and a development API key printed at start.
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            eprintln!(
                "strait {}: not yet serving — the QUIC front door is not built yet",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
    }
}
