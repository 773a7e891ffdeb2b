//! Control-stream framing: `varint length` (QUIC varint) followed by `length` bytes of body.
//!
//! [`FrameReader`] is incremental: it is fed whatever the transport delivered, tells "need more
//! bytes" (`Ok(None)`) from "malformed" (`Err`), and never holds more than one frame plus its length
//! prefix. A frame that arrives whole in one chunk is returned as a zero-copy slice of that chunk.
//!
//! [`decode_single_frame`] is the message-oriented form: on the WebSocket path each binary message
//! carries exactly one frame (`docs/PROTOCOL.md` section 1), so a message is decoded whole, with no
//! state kept between messages.

use bytes::{Buf, Bytes};
use thiserror::Error;

use crate::codec::{self, DecodeError, Decoded, EncodeError};
use crate::error_code::ErrorCode;
use crate::limits::{DEFAULT_MAX_FRAME_SIZE, HARD_MAX_FRAME_SIZE};
use crate::message::ControlMessage;
use crate::varint::{self, VarIntError};

/// Splits a byte stream into frame bodies.
///
/// Drive it with a loop per received chunk:
///
/// ```
/// # use strait_protocol::{FrameReader, encode_frame, ControlMessage, Ping};
/// # use bytes::Bytes;
/// let mut wire = Vec::new();
/// encode_frame(&ControlMessage::Ping(Ping { nonce: 7 }), usize::MAX, &mut wire).unwrap();
/// let mut reader = FrameReader::new(64 * 1024);
/// let mut chunk = Bytes::from(wire);
/// while let Some(body) = reader.next_frame(&mut chunk).unwrap() {
///     println!("frame of {} bytes", body.len());
/// }
/// assert!(chunk.is_empty());
/// ```
#[derive(Debug)]
pub struct FrameReader {
    max_frame_size: usize,
    /// Bytes of the current, incomplete frame (prefix included). Empty between frames.
    partial: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameReader {
    /// A reader that refuses frames larger than `max_frame_size` (clamped to
    /// [`HARD_MAX_FRAME_SIZE`]). Memory held is at most `max_frame_size + 8` bytes.
    #[must_use]
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size: max_frame_size.min(HARD_MAX_FRAME_SIZE),
            partial: Vec::new(),
        }
    }

    /// The largest frame body this reader accepts.
    #[must_use]
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes of an incomplete frame held between calls.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Takes the next complete frame body, consuming from `input` only what it needs.
    ///
    /// Returns `Ok(None)` when `input` is exhausted without completing a frame (the partial frame
    /// is kept), `Ok(Some(body))` for each complete frame, and `Err(FrameTooLarge)` as soon as a
    /// length prefix announces more than the limit. Call it until it returns `Ok(None)`.
    pub fn next_frame(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, DecodeError> {
        if self.partial.is_empty() {
            // Fast path: a whole frame at the front of `input` is returned without copying.
            match parse_prefix(self.max_frame_size, input)? {
                Some((prefix, len)) if input.len() >= prefix + len => {
                    input.advance(prefix);
                    return Ok(Some(input.split_to(len)));
                }
                _ => {}
            }
        }
        // Slow path: accumulate until the prefix, then the body, are complete.
        loop {
            match parse_prefix(self.max_frame_size, &self.partial)? {
                None => {
                    // Prefix incomplete: move one byte at a time (at most 8 bytes in total).
                    let Some(&byte) = input.first() else {
                        return Ok(None);
                    };
                    self.partial.extend_from_slice(&[byte]);
                    input.advance(1);
                }
                Some((prefix, len)) => {
                    let have = self.partial.len() - prefix;
                    let take = (len - have).min(input.len());
                    // Exactly one frame's worth, reserved once: never more than `max + 8`.
                    self.partial
                        .reserve_exact(prefix + len - self.partial.len());
                    self.partial.extend_from_slice(&input[..take]);
                    input.advance(take);
                    if self.partial.len() == prefix + len {
                        let mut frame = Bytes::from(std::mem::take(&mut self.partial));
                        frame.advance(prefix);
                        return Ok(Some(frame));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Takes the next complete frame and decodes its message. Unknown kinds are returned as
    /// [`Decoded::UnknownKind`]; the frame is consumed either way.
    pub fn next_message(&mut self, input: &mut Bytes) -> Result<Option<Decoded>, DecodeError> {
        match self.next_frame(input)? {
            Some(body) => codec::decode_message(&body).map(Some),
            None => Ok(None),
        }
    }
}

/// Why one message of a message-oriented transport (a binary WebSocket message) is not exactly
/// one decodable frame. Every variant is the peer's fault and closes its session with
/// [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SingleFrameError {
    /// The message ends before its frame does: it is empty, or it ends inside the length prefix
    /// or inside the body.
    #[error("the message holds an incomplete frame")]
    Incomplete,
    /// A whole frame is followed by more bytes: a second frame, or anything else.
    #[error("the message holds more than one frame ({extra} bytes follow the first)")]
    TrailingBytes {
        /// Bytes after the first frame.
        extra: usize,
    },
    /// The length prefix announces more than the limit ([`DecodeError::FrameTooLarge`], told
    /// from the prefix alone), or the body does not decode.
    #[error("malformed control frame: {0}")]
    Frame(#[from] DecodeError),
}

impl SingleFrameError {
    /// The code the session is closed with: [`ErrorCode::FRAME_TOO_LARGE`] for a frame over the
    /// limit, [`ErrorCode::PROTOCOL_VIOLATION`] for everything else.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Frame(DecodeError::FrameTooLarge { .. }) => ErrorCode::FRAME_TOO_LARGE,
            _ => ErrorCode::PROTOCOL_VIOLATION,
        }
    }
}

/// Decodes a message that must hold exactly one frame (length prefix and body), as each binary
/// message of the WebSocket path does. `max_frame_size` bounds the body as in
/// [`FrameReader::new`] (and is clamped the same way); nothing is allocated before the prefix
/// has been checked against it.
///
/// The answer is the one a [`FrameReader`] fed the message as one chunk gives, made strict: the
/// prefix is checked first (an oversized frame is refused even when the message is cut short),
/// then the body is decoded, then the message must end with the frame.
///
/// ```
/// # use strait_protocol::{ControlMessage, Decoded, ErrorCode, Ping, decode_single_frame, encode_frame};
/// let ping = ControlMessage::Ping(Ping { nonce: 7 });
/// let mut message = Vec::new();
/// encode_frame(&ping, usize::MAX, &mut message)?;
/// assert_eq!(decode_single_frame(&message, 1024), Ok(Decoded::Message(ping)));
///
/// let doubled = [message.as_slice(), message.as_slice()].concat();
/// let refused = decode_single_frame(&doubled, 1024).unwrap_err();
/// assert_eq!(refused.code(), ErrorCode::PROTOCOL_VIOLATION);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_single_frame(
    message: &[u8],
    max_frame_size: usize,
) -> Result<Decoded, SingleFrameError> {
    let max = max_frame_size.min(HARD_MAX_FRAME_SIZE);
    let Some((prefix, len)) = parse_prefix(max, message)? else {
        return Err(SingleFrameError::Incomplete);
    };
    // `len <= max`, so the sum cannot overflow.
    let end = prefix + len;
    let Some(body) = message.get(prefix..end) else {
        return Err(SingleFrameError::Incomplete);
    };
    let decoded = codec::decode_message(body)?;
    match message.len() - end {
        0 => Ok(decoded),
        extra => Err(SingleFrameError::TrailingBytes { extra }),
    }
}

/// Parses a length prefix: `Ok(None)` if incomplete, the prefix size and body length if not.
fn parse_prefix(max: usize, bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    match varint::decode(bytes) {
        Ok((len, prefix)) => match usize::try_from(len) {
            Ok(len) if len <= max => Ok(Some((prefix, len))),
            _ => Err(DecodeError::FrameTooLarge { len, max }),
        },
        Err(VarIntError::Incomplete { .. }) => Ok(None),
        Err(e) => Err(DecodeError::Malformed(e.to_string())),
    }
}

/// Appends one frame (length prefix + body) carrying `message` to `out`, refusing bodies larger
/// than `max_frame_size` (the peer's announced limit) so that nothing is sent the peer would refuse.
pub fn encode_frame(
    message: &ControlMessage,
    max_frame_size: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut body = Vec::with_capacity(64);
    codec::encode_message(message, &mut body)?;
    let max = max_frame_size.min(HARD_MAX_FRAME_SIZE);
    if body.len() > max {
        return Err(EncodeError::TooLarge {
            len: body.len(),
            max,
        });
    }
    varint::put(body.len() as u64, out).map_err(|e| EncodeError::Other(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Ping;

    fn ping_frame(nonce: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&ControlMessage::Ping(Ping { nonce }), usize::MAX, &mut out)
            .expect("a ping encodes");
        out
    }

    #[test]
    fn one_whole_frame_decodes() {
        assert_eq!(
            decode_single_frame(&ping_frame(3), 1024),
            Ok(Decoded::Message(ControlMessage::Ping(Ping { nonce: 3 })))
        );
        // An unknown kind is a frame like any other: the session skips it.
        let unknown = ControlMessage::KINDS as u8;
        assert_eq!(
            decode_single_frame(&[4, unknown, 1, 2, 3], 1024),
            Ok(Decoded::UnknownKind(ControlMessage::KINDS))
        );
    }

    #[test]
    fn less_than_a_frame_is_incomplete() {
        let frame = ping_frame(3);
        for cut in [0, 1, frame.len() - 1] {
            assert_eq!(
                decode_single_frame(&frame[..cut], 1024),
                Err(SingleFrameError::Incomplete),
                "cut at {cut}"
            );
        }
        // A two-byte prefix cut after its first byte.
        assert_eq!(
            decode_single_frame(&[0x40], 1024),
            Err(SingleFrameError::Incomplete)
        );
    }

    #[test]
    fn more_than_a_frame_is_refused() {
        let mut two = ping_frame(1);
        two.extend_from_slice(&ping_frame(2));
        let refused = decode_single_frame(&two, 1024);
        assert_eq!(
            refused,
            Err(SingleFrameError::TrailingBytes {
                extra: ping_frame(2).len()
            })
        );
        assert_eq!(refused.unwrap_err().code(), ErrorCode::PROTOCOL_VIOLATION);
        let mut padded = ping_frame(1);
        padded.push(0);
        assert_eq!(
            decode_single_frame(&padded, 1024),
            Err(SingleFrameError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_prefix() {
        // Varint 1024 with a limit of 16, and nothing of the body.
        let refused = decode_single_frame(&[0x44, 0x00], 16).unwrap_err();
        assert_eq!(
            refused,
            SingleFrameError::Frame(DecodeError::FrameTooLarge { len: 1024, max: 16 })
        );
        assert_eq!(refused.code(), ErrorCode::FRAME_TOO_LARGE);
        // The limit is clamped to the hard maximum, as a `FrameReader`'s is.
        let mut huge = Vec::new();
        varint::put(HARD_MAX_FRAME_SIZE as u64 + 1, &mut huge).expect("small");
        assert!(matches!(
            decode_single_frame(&huge, usize::MAX),
            Err(SingleFrameError::Frame(DecodeError::FrameTooLarge { .. }))
        ));
    }

    #[test]
    fn a_broken_body_is_a_protocol_violation() {
        // A `Join` (kind 2) whose request id is no valid integer.
        let refused = decode_single_frame(&[3, 2, 0xff, 0xff], 1024).unwrap_err();
        assert!(matches!(refused, SingleFrameError::Frame(_)), "{refused:?}");
        assert_eq!(refused.code(), ErrorCode::PROTOCOL_VIOLATION);
        // An empty body: no kind at all.
        assert_eq!(
            decode_single_frame(&[0], 1024),
            Err(SingleFrameError::Frame(DecodeError::Truncated))
        );
    }
}
