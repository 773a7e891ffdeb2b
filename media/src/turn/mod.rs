//! The embedded TURN server (RFC 8656) and its credentials, sans-IO.
//!
//! - [`credentials`]: TURN REST credentials (`<expiry>:<identity>`, `base64(HMAC-SHA1)`), minted
//!   and checked with time passed in; secrets rotate with an overlap.
//! - [`policy`]: where the relay may send — this node's media addresses, then a deny-list no
//!   configuration lifts, then an allow-list (empty by default).
//! - [`framing`]: STUN and ChannelData frames out of a TCP or TLS byte stream.
//! - `limit` (internal): token buckets, and the budget of 401 replies per source (an IPv4
//!   address, an IPv6 /64) in a bounded table that forgets the source seen least recently.
//! - [`server`]: the state machine — Binding, Allocate, Refresh, CreatePermission,
//!   ChannelBind, Send and Data indications, ChannelData — driven with `handle_*` / `poll_*`.
//!
//! ## Why a sans-IO core on `rtc-stun` rather than the `turn` crate
//!
//! `turn` 0.17.2, the only Rust TURN server crate, owns its sockets and runtime: it serves UDP
//! only, has no hook to refuse a peer address (its relay would reach loopback and metadata
//! addresses), accepts only a bare-timestamp REST username, and pulls in the older async
//! `webrtc-util` stack beside the sans-IO `rtc` crates this workspace already uses. TCP and TLS
//! listeners, a peer policy checked on every packet, quotas and metrics would all have to be
//! wrapped around it from outside. Here the protocol logic is a plain state machine on the
//! message types of `rtc-stun` and `rtc-turn` (already in the tree under `rtc`): the gateway
//! owns the sockets of every transport and feeds frames in; time and randomness are arguments,
//! so expiry, stale nonces and quotas are tested with injected time and no sockets.
//!
//! ## What it is not
//!
//! It relays UDP only (`REQUESTED-TRANSPORT` 17; RFC 6062 TCP relaying is not offered), over
//! IPv4 relay addresses only, and does not reserve port pairs (`EVEN-PORT`,
//! `RESERVATION-TOKEN` get 508).

pub mod credentials;
pub mod framing;
mod limit;
pub mod policy;
pub mod server;

pub use credentials::{CredentialError, Credentials, TurnSecret, TurnSecrets};
pub use policy::{Cidr, Denial, PeerPolicy};
pub use server::{
    AuthFailure, CloseReason, DropReason, Event, FiveTuple, Server, ServerConfig, Stats, Transmit,
    Transport,
};

#[cfg(test)]
mod tests;
