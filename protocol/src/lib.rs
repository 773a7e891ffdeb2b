//! # strait-protocol
//!
//! The wire protocol of Strait: the messages a client and the gateway exchange, how they are framed
//! on the control stream, and how media and control datagrams are laid out. The same bytes flow
//! over a WebTransport session, a raw QUIC connection (ALPN `strait/1`) and, for legacy peers, a
//! WebSocket carrying binary frames.
//!
//! What this crate is not: it does no I/O, owns no runtime, reads no clock and knows nothing of
//! QUIC; `cargo tree -p strait-protocol` shows no tokio, quinn, wtransport or rtc, and CI checks it.
//!
//! ## Layers
//!
//! - [`varint`]: QUIC variable-length integers (frame lengths, media ids).
//! - [`ControlMessage`] and its structs: every message, with [`ErrorCode`] and [`PauseReason`]
//!   open sets of codes.
//! - [`decode_message`] / [`encode_message`]: the bincode 2 body codec (one module, swappable).
//! - [`FrameReader`] / [`encode_frame`]: `varint length + body` framing, incremental and bounded;
//!   [`decode_single_frame`] for a message that holds exactly one frame (the WebSocket path).
//! - [`datagram`]: kind byte, media (`varint media id + RTP`), control and padding datagrams.
//!
//! ## Decoding network input
//!
//! Every length read from the wire is bounded before anything is allocated: frame bodies by the
//! reader's maximum frame size, strings and lists by the limits in [`limits`]. Errors are typed
//! ([`DecodeError`], [`DatagramError`]); "need more bytes" is `Ok(None)`, never an error. Unknown
//! message kinds are reported as [`Decoded::UnknownKind`] so that an older peer skips what a newer
//! one sends; a known kind that is malformed is an error. Bytes after the fields a receiver knows
//! are ignored, and the few optional fields appended to version 1 after it was first published
//! (`Subscribe.priority`, `SetLayerPreference.priority`) read as absent when the body ends before
//! them, so older and newer peers understand each other both ways.
//!
//! ```
//! use bytes::Bytes;
//! use strait_protocol::*;
//!
//! let hello = ControlMessage::ClientHello(ClientHello {
//!     version: PROTOCOL_VERSION,
//!     token: "eyJ…".into(),
//!     resume: None,
//!     agent: "example/1".into(),
//! });
//! let mut wire = Vec::new();
//! encode_frame(&hello, limits::DEFAULT_MAX_FRAME_SIZE, &mut wire)?;
//!
//! let mut reader = FrameReader::new(limits::DEFAULT_MAX_FRAME_SIZE);
//! let mut input = Bytes::from(wire);
//! let Some(Decoded::Message(received)) = reader.next_message(&mut input)? else {
//!     panic!("one whole frame was given");
//! };
//! assert_eq!(received, hello);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bounded;
mod codec;
pub mod datagram;
mod error_code;
mod frame;
mod ids;
pub mod limits;
mod message;
mod pause_reason;
pub mod varint;

pub use codec::{DecodeError, Decoded, EncodeError, decode_message, encode_message};
pub use datagram::{Datagram, DatagramControl, DatagramError};
pub use error_code::ErrorCode;
pub use frame::{FrameReader, SingleFrameError, decode_single_frame, encode_frame};
pub use ids::{MediaId, ParticipantId, RequestId, ResumeToken, RoomId, TrackId};
pub use message::*;
pub use pause_reason::PauseReason;
