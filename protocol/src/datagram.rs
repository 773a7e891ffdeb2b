//! Datagram layout. Byte 0 is the kind:
//!
//! ```text
//! media:   0x00 | varint media id | RTP packet (as is, to the end of the datagram)
//! control: 0x01 | bincode DatagramControl
//! padding: 0x02 | any bytes (the server probing a subscriber's link; dropped on receipt)
//! ```
//!
//! Parsing borrows: the RTP packet of a media datagram is a slice (or a zero-copy `Bytes`) of the
//! datagram. Building writes into a caller's buffer, so the forwarding path allocates nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{self, DecodeError, EncodeError};
use crate::ids::MediaId;
use crate::varint::{self, VarIntError};

/// Kind byte of a media datagram.
pub const KIND_MEDIA: u8 = 0x00;
/// Kind byte of a control datagram.
pub const KIND_CONTROL: u8 = 0x01;
/// Kind byte of a padding datagram: bytes that carry nothing, sent by the server to probe how
/// much a subscriber's link can take. The receiver drops it without counting it as unusable.
pub const KIND_PADDING: u8 = 0x02;
/// The smallest valid RTP packet (fixed header, RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;

/// Why a datagram was refused. The receiver drops it and counts the reason; datagrams never close
/// a session.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram has no bytes.
    #[error("empty datagram")]
    Empty,
    /// The kind byte is not one this version knows.
    #[error("unknown datagram kind {0:#04x}")]
    UnknownKind(u8),
    /// [`parse_media`] was given a datagram of another kind.
    #[error("not a media datagram (kind {0:#04x})")]
    NotMedia(u8),
    /// The media id varint is cut short or larger than 32 bits.
    #[error("invalid media id")]
    InvalidMediaId,
    /// The payload is not an RTP packet (too short, wrong version, header longer than the packet).
    #[error("invalid RTP packet: {0}")]
    InvalidRtp(&'static str),
    /// The control payload did not decode.
    #[error("invalid control datagram: {0}")]
    InvalidControl(DecodeError),
    /// The caller's buffer cannot hold the datagram (building only); the payload is untouched.
    #[error("buffer too small: need {needed} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the datagram needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
}

/// A control datagram: small, loss-tolerant messages that want datagram latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DatagramControl {
    /// 0: an RTT probe; answered with `Pong` carrying the same values.
    Ping {
        /// Sequence number chosen by the sender.
        seq: u32,
        /// The sender's clock in microseconds (any epoch); echoed back.
        timestamp_us: u64,
    },
    /// 1: the answer to `Ping`.
    Pong {
        /// The ping's sequence number.
        seq: u32,
        /// The ping's timestamp, unchanged.
        timestamp_us: u64,
    },
    /// 2: reception statistics for one media id the sender receives (RFC 3550 §6.4.1 fields).
    ReceiverReport {
        /// The media id as the reporter receives it.
        media: MediaId,
        /// Extended highest sequence number received.
        highest_seq: u32,
        /// Cumulative number of packets lost.
        lost: u32,
        /// Interarrival jitter in RTP timestamp units.
        jitter: u32,
    },
    /// 3: ask for a keyframe on one media id (subscriber → server for a subscription, server →
    /// publisher for a published layer).
    KeyframeRequest {
        /// The media id.
        media: MediaId,
    },
}

impl DatagramControl {
    /// Number of control datagram kinds this version knows; others are skipped on receipt.
    pub const KINDS: u32 = 4;
}

/// A parsed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// RTP for one media id.
    Media {
        /// Which stream.
        media: MediaId,
        /// The RTP packet, a zero-copy slice of the datagram.
        rtp: Bytes,
    },
    /// A control datagram.
    Control(DatagramControl),
    /// A control datagram of a kind from a newer version; skip it.
    UnknownControl(u32),
    /// A padding datagram (the server probing the link): drop it. It is not an error and not an
    /// unknown kind, so it is not counted as one.
    Padding {
        /// The whole datagram's length, kind byte included.
        len: usize,
    },
}

/// Checks that `rtp` looks like an RTP packet: version 2 and a header that fits.
pub fn check_rtp(rtp: &[u8]) -> Result<(), DatagramError> {
    if rtp.len() < RTP_HEADER_LEN {
        return Err(DatagramError::InvalidRtp("shorter than 12 bytes"));
    }
    if rtp[0] >> 6 != 2 {
        return Err(DatagramError::InvalidRtp("version is not 2"));
    }
    let csrc = usize::from(rtp[0] & 0x0f);
    let mut header = RTP_HEADER_LEN + 4 * csrc;
    if rtp[0] & 0x10 != 0 {
        // Header extension: 16-bit profile, 16-bit length in 32-bit words.
        let ext = rtp
            .get(header..header + 4)
            .ok_or(DatagramError::InvalidRtp("extension header cut short"))?;
        header += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if header > rtp.len() {
        return Err(DatagramError::InvalidRtp("header longer than packet"));
    }
    Ok(())
}

/// Parses the media header of a datagram without copying: the media id and the RTP slice.
///
/// This is the forwarding hot path; it checks the RTP header as [`check_rtp`] does.
pub fn parse_media(datagram: &[u8]) -> Result<(MediaId, &[u8]), DatagramError> {
    match datagram.first() {
        None => Err(DatagramError::Empty),
        Some(&KIND_MEDIA) => {
            let (id, used) =
                varint::decode(&datagram[1..]).map_err(|_| DatagramError::InvalidMediaId)?;
            let id = u32::try_from(id).map_err(|_| DatagramError::InvalidMediaId)?;
            let rtp = &datagram[1 + used..];
            check_rtp(rtp)?;
            Ok((MediaId(id), rtp))
        }
        Some(&other) => Err(DatagramError::NotMedia(other)),
    }
}

/// Parses any datagram. Media payloads are zero-copy slices of `datagram`.
pub fn parse_datagram(datagram: &Bytes) -> Result<Datagram, DatagramError> {
    match datagram.first() {
        None => Err(DatagramError::Empty),
        Some(&KIND_MEDIA) => {
            let (media, rtp) = parse_media(datagram)?;
            let start = datagram.len() - rtp.len();
            Ok(Datagram::Media {
                media,
                rtp: datagram.slice(start..),
            })
        }
        Some(&KIND_CONTROL) => {
            let body = &datagram[1..];
            // The enum index is a bincode varint; an index beyond what we know is skipped.
            let kind = codec::peek_kind(body).map_err(DatagramError::InvalidControl)?;
            if kind >= u64::from(DatagramControl::KINDS) {
                return Ok(Datagram::UnknownControl(
                    u32::try_from(kind).unwrap_or(u32::MAX),
                ));
            }
            codec::decode_value::<DatagramControl>(body)
                .map(Datagram::Control)
                .map_err(DatagramError::InvalidControl)
        }
        Some(&KIND_PADDING) => Ok(Datagram::Padding {
            len: datagram.len(),
        }),
        Some(&other) => Err(DatagramError::UnknownKind(other)),
    }
}

/// Appends a padding datagram of `len` bytes in all (the kind byte, then zeros) to `out`, as the
/// server writes one to probe a subscriber's link; `len` is what the probe costs on the link,
/// before QUIC's own overhead. A `len` of 0 is taken as 1: a datagram has at least its kind byte.
///
/// Like the other builders it writes after whatever `out` already holds (a WebTransport
/// session's prefix, for one), so that a probe costs one buffer.
pub fn write_padding(out: &mut Vec<u8>, len: usize) {
    out.reserve(len.max(1));
    out.push(KIND_PADDING);
    out.resize(out.len() + len.saturating_sub(1), 0);
}

/// Bytes of the media datagram header for `media` (kind byte + varint).
#[must_use]
pub fn media_header_len(media: MediaId) -> usize {
    1 + varint::encoded_len(u64::from(media.0))
}

/// The largest RTP packet that fits one datagram of `max_datagram_size` bytes on `media`.
#[must_use]
pub fn max_rtp_len(max_datagram_size: usize, media: MediaId) -> usize {
    max_datagram_size.saturating_sub(media_header_len(media))
}

/// Writes the media datagram header for `media` at the start of `out`; returns its length. The
/// caller then writes the RTP packet after it (for example by rewriting it in place).
pub fn write_media_header(media: MediaId, out: &mut [u8]) -> Result<usize, DatagramError> {
    let needed = media_header_len(media);
    if out.len() < needed {
        return Err(DatagramError::BufferTooSmall {
            needed,
            have: out.len(),
        });
    }
    out[0] = KIND_MEDIA;
    match varint::encode(u64::from(media.0), &mut out[1..]) {
        Ok(n) => Ok(1 + n),
        Err(VarIntError::Incomplete { .. } | VarIntError::TooLarge(_)) => {
            Err(DatagramError::InvalidMediaId)
        }
    }
}

/// Builds a complete media datagram into `out` and returns its length.
pub fn write_media_datagram(
    media: MediaId,
    rtp: &[u8],
    out: &mut [u8],
) -> Result<usize, DatagramError> {
    let needed = media_header_len(media) + rtp.len();
    if out.len() < needed {
        return Err(DatagramError::BufferTooSmall {
            needed,
            have: out.len(),
        });
    }
    let header = write_media_header(media, out)?;
    out[header..needed].copy_from_slice(rtp);
    Ok(needed)
}

/// Appends a control datagram to `out`.
pub fn encode_control_datagram(
    control: &DatagramControl,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.push(KIND_CONTROL);
    codec::encode_value(control, out)
}

/// The Strait datagram inside an HTTP/3 datagram (RFC 9297) of the WebTransport session whose
/// CONNECT stream is `session_stream`: the datagram with its quarter stream id (a QUIC varint,
/// `session_stream / 4`) removed, as a zero-copy slice. `None` when the prefix is malformed or
/// names another session.
///
/// For reading datagrams straight from the QUIC connection under a WebTransport session.
pub fn strip_webtransport_prefix(h3_datagram: &Bytes, session_stream: u64) -> Option<Bytes> {
    let (quarter, len) = varint::decode(h3_datagram).ok()?;
    (quarter == session_stream / 4).then(|| h3_datagram.slice(len..))
}

/// What goes in front of every datagram of one connection before the media datagram itself:
/// nothing on raw QUIC, the quarter stream id of the session's CONNECT stream on WebTransport
/// (HTTP Datagrams, RFC 9297). Written by the sender into the same buffer as the datagram, so
/// that a WebTransport datagram costs no extra allocation or copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramPrefix {
    bytes: [u8; 8],
    len: u8,
}

impl DatagramPrefix {
    /// No prefix (raw QUIC).
    pub const NONE: DatagramPrefix = DatagramPrefix {
        bytes: [0; 8],
        len: 0,
    };

    /// The prefix of a WebTransport session whose CONNECT stream is `session_stream`.
    pub fn webtransport(session_stream: u64) -> DatagramPrefix {
        let mut bytes = [0; 8];
        // A quarter of a u64 is at most 2^62 - 1, the largest varint, and 8 bytes hold any.
        let len = varint::encode(session_stream / 4, &mut bytes).unwrap_or(0);
        DatagramPrefix {
            bytes,
            len: len as u8,
        }
    }

    /// The prefix's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod webtransport_prefix {
    use super::*;

    #[test]
    fn the_session_prefix_is_written_as_strip_reads_it() {
        assert_eq!(DatagramPrefix::NONE.as_slice(), &[] as &[u8]);
        assert_eq!(DatagramPrefix::webtransport(0).as_slice(), &[0x00]);
        assert_eq!(DatagramPrefix::webtransport(400).as_slice(), &[0x40, 0x64]);
        for stream in [0u64, 4, 252, 256, 65_536, 1 << 40, u64::MAX] {
            let prefix = DatagramPrefix::webtransport(stream);
            let mut d = prefix.as_slice().to_vec();
            d.extend_from_slice(&[1, 2, 3]);
            assert_eq!(
                strip_webtransport_prefix(&Bytes::from(d), stream).unwrap(),
                &[1, 2, 3][..]
            );
        }
    }

    #[test]
    fn the_session_prefix_is_removed_and_checked() {
        // Session on stream 0: quarter stream id 0, one byte.
        let d = Bytes::from_static(&[0x00, 0x01, 0xaa]);
        assert_eq!(strip_webtransport_prefix(&d, 0).unwrap(), &[0x01, 0xaa][..]);
        // Stream 400: quarter id 100, a two-byte varint (0x40 0x64).
        let d = Bytes::from_static(&[0x40, 0x64, 0x00, 0x07]);
        assert_eq!(
            strip_webtransport_prefix(&d, 400).unwrap(),
            &[0x00, 0x07][..]
        );
        // Another session's datagram, a truncated prefix, nothing at all.
        assert!(strip_webtransport_prefix(&d, 0).is_none());
        assert!(strip_webtransport_prefix(&Bytes::from_static(&[0x40]), 400).is_none());
        assert!(strip_webtransport_prefix(&Bytes::new(), 0).is_none());
    }
}
