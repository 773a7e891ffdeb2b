//! # strait-media
//!
//! The SFU core of Strait: rooms, participants, published tracks (audio, or video with up to
//! three simulcast layers), subscriptions, and the forwarding of RTP from each publisher to its
//! subscribers, rewritten per subscriber (SSRC, sequence numbers and timestamps continuous across
//! layer switches). It chooses each video subscription's layer from the subscriber's bandwidth
//! estimate with hysteresis, switches only at keyframes (detected for VP8, VP9, H.264 and AV1),
//! and routes keyframe requests to publishers, throttled per track and layer. A participant whose
//! connection is lost keeps its place for a grace period and resumes with the same media ids and
//! SSRCs.
//!
//! What it is not: it does no I/O, owns no runtime, reads no clock and uses no global RNG; it does
//! not depend on `strait-protocol` (the SFU works behind any signaling: the gateway translates
//! protocol messages into calls on [`sfu::Sfu`]). It does not authenticate anyone — participant
//! ids and identities come from the caller — and the core does not packetize, decode or encrypt
//! media.
//! The NACK packet cache is still to come.
//!
//! [`bwe`] estimates what a subscriber's link can carry from its transport's counters, and what
//! each published layer really costs (the inputs of the layer allocation; not wired in yet).
//!
//! [`turn`] is the embedded TURN server: a sans-IO state machine and the TURN REST credentials
//! and peer policy it relies on; the gateway owns its sockets.
//!
//! [`webrtc`] is the bridge for legacy WebRTC peers: a sans-IO endpoint that runs many ICE-lite
//! peer connections (webrtc-rs `rtc`) behind one UDP socket, hands out their RTP and keyframe
//! requests as events and takes RTP for subscribers; the gateway connects it to [`sfu::Sfu`].
//!
//! ## How to drive it
//!
//! The gateway owns one [`sfu::Sfu`] per media worker and calls it from that task only:
//!
//! 1. apply a session's decisions with the mutators ([`join`](sfu::Sfu::join),
//!    [`publish`](sfu::Sfu::publish), [`subscribe`](sfu::Sfu::subscribe), …), passing `now`;
//! 2. feed every incoming RTP packet to [`handle_rtp`](sfu::Sfu::handle_rtp), whose callback
//!    receives one [`Forward`](sfu::Forward) per subscriber to write into a send buffer;
//! 3. after every call, drain [`poll_event`](sfu::Sfu::poll_event) until `None` (notifications
//!    for participants, keyframe requests for publishers, participants removed on timeout);
//! 4. sleep until [`poll_timeout`](sfu::Sfu::poll_timeout), then call
//!    [`handle_timeout`](sfu::Sfu::handle_timeout).
//!
//! ```
//! use std::time::Instant;
//! use strait_media::sfu::{
//!     CodecSpec, Event, LayerSpec, MediaId, ParticipantId, ParticipantMeta, Sfu, SfuConfig,
//!     TrackKind, TrackSpec,
//! };
//!
//! let now = Instant::now(); // the gateway's clock; tests use a fixed base plus offsets
//! let mut sfu = Sfu::new(SfuConfig::default(), 7);
//! let (alice, bob) = (ParticipantId(1), ParticipantId(2));
//! sfu.join(alice, "lobby", ParticipantMeta::default(), now)?;
//! sfu.join(bob, "lobby", ParticipantMeta::default(), now)?;
//! let opus = CodecSpec {
//!     name: "opus".into(), payload_type: 111, clock_rate: 48_000, channels: 2, fmtp: String::new(),
//! };
//! let layer = LayerSpec { media: MediaId(1), max_bitrate: 32_000, width: 0, height: 0 };
//! let spec = TrackSpec {
//!     kind: TrackKind::Audio, codec: opus, source: "microphone".into(), layers: vec![layer],
//!     muted: false,
//! };
//! let track = sfu.publish(alice, spec, now)?;
//! let sub = sfu.subscribe(bob, track, None, now)?;
//! while let Some(event) = sfu.poll_event() {
//!     if let Event::Notify { to, notification } = event { /* send it on `to`'s session */ }
//! }
//!
//! // A 12-byte RTP header (V=2, PT 111, seq 1, ts 960, SSRC 0xA11CE) and a payload.
//! let packet = [0x80, 111, 0, 1, 0, 0, 3, 0xc0, 0, 0x0a, 0x11, 0xce, 0xfc, 0xff, 0xfe];
//! let mut buf = [0u8; 1500];
//! sfu.handle_rtp(alice, MediaId(1), &packet, now, &mut |fwd| {
//!     let len = fwd.write_into(&mut buf);
//!     assert_eq!((fwd.to, fwd.media), (bob, sub.media));
//!     assert_eq!(&buf[8..12], &sub.ssrc.to_be_bytes());
//!     let _datagram = &buf[..len]; // prefix the media id and send
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bwe;
pub mod sfu;
pub mod turn;
pub mod webrtc;
