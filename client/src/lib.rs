//! # strait-client
//!
//! The native Strait SDK: a session with the gateway over raw QUIC (ALPN `strait/1`, on quinn, so
//! that [`Session::rebind`] can move it to a new local address the way a phone changes network)
//! or over WebTransport (wtransport, the same protocol a browser speaks). It joins a room,
//! publishes and receives RTP in datagrams, requests keyframes, and takes its session back with
//! the resume token when the connection is lost. Applications, the end-to-end tests and the load
//! tools (the `strait-load` crate, in `client/load/`) use it. The wire format is
//! `docs/PROTOCOL.md`, through `strait-protocol` (the only workspace crate this one depends on).
//!
//! What it is not: a media stack. It carries RTP packets as they are; packetizing, jitter
//! buffering and codecs are the application's.
//!
//! ## Model
//!
//! [`Client::connect`] binds a UDP socket, connects, opens the control stream, sends
//! `ClientHello` and waits for `ServerHello`. The returned [`Session`] is a handle on three
//! things:
//!
//! - a **driver task** that reads the control stream and the datagrams, answers pings, keeps the
//!   session's view of the room (participants, tracks, subscriptions) and, when the connection is
//!   lost or the server goes away, reconnects with backoff and the resume token (through
//!   [`ClientConfig::fallback_servers`] too); where the resume is refused (the session's node
//!   died) or the room moved to another node, it joins the room again and publishes its tracks
//!   again on the same media ids ([`ClientConfig::rejoin`], [`SessionEvent::Rejoined`]);
//! - a **writer task**, the only writer of the control stream, fed by a bounded queue
//!   (`config.control_queue`; requests wait when it is full);
//! - two **drop-oldest queues** the application reads: received media
//!   ([`Session::recv_media`]) and events ([`Session::next_event`]). Neither ever blocks the
//!   driver; drops are counted in [`Session::stats`].
//!
//! Requests (`join`, `publish`, `subscribe`…) are correlated by request id; an `Error` answer is
//! [`ClientError::Rejected`] with the server's code. When the session's link cannot carry every
//! video it receives, the server pauses the subscriptions of the lowest priority
//! ([`Session::subscribe_with`] names one) and says so with [`SessionEvent::TrackPaused`] and
//! [`SessionEvent::TrackResumed`]; the padding datagrams it sends to probe the link are dropped. Media is sent with [`Session::send_rtp`],
//! which never blocks and refuses (never silently drops) a packet that does not fit a datagram.
//!
//! Time comes from tokio's clock (`tokio::time::Instant`), so tests can pause it; the backoff
//! jitter's RNG is seedable ([`ClientConfig::rng_seed`]).
//!
//! ## Example
//!
//! ```no_run
//! use strait_client::{Client, ClientConfig, LayerSpec, PublishSpec, Trust};
//! use strait_protocol::{Codec, TrackKind};
//!
//! # async fn run(cert_hash: [u8; 32], token: String) -> Result<(), strait_client::ClientError> {
//! let config = ClientConfig::new("127.0.0.1:4433".parse().unwrap(), Trust::Hashes(vec![cert_hash]), token);
//! let session = Client::connect(config).await?;
//! session.join("lobby").await?;
//! let track = session
//!     .publish(PublishSpec {
//!         kind: TrackKind::Audio,
//!         codec: Codec {
//!             name: "opus".into(),
//!             payload_type: 111,
//!             clock_rate: 48_000,
//!             channels: 2,
//!             fmtp: String::new(),
//!         },
//!         source: "microphone".into(),
//!         layers: vec![LayerSpec::default()],
//!         muted: false,
//!     })
//!     .await?;
//! let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xde, 0xad];
//! session.send_rtp(track.media[0], &rtp)?;
//! while let Some(packet) = session.recv_media().await {
//!     println!("{} bytes on media {}", packet.rtp.len(), packet.media);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
mod error;
mod queue;
mod session;
mod shared;
mod stats;
mod tls;
mod transport;
mod types;

pub use config::{Backoff, ClientConfig, Transport, Trust};
pub use error::{ClientError, SendError};
pub use session::{Client, MAX_REDIRECTS, Session};
pub use stats::SessionStats;
pub use tls::{ALPN_H3, ALPN_STRAIT, certificate_hash, client_config as tls_client_config};
pub use types::{
    JoinedRoom, LayerSpec, MediaPacket, PublishSpec, PublishedTrack, SessionEvent,
    SubscribeOptions, Subscription,
};

/// The protocol crate, re-exported so that applications name the same types.
pub use strait_protocol as protocol;
