//! Control-stream framing: `varint length` (QUIC varint) followed by `length` bytes of body.
//!
//! [`FrameReader`] is incremental: it is fed whatever the transport delivered, tells "need more
//! bytes" (`Ok(None)`) from "malformed" (`Err`), and never holds more than one frame plus its length
//! prefix. A frame that arrives whole in one chunk is returned as a zero-copy slice of that chunk.

use bytes::{Buf, Bytes};

use crate::codec::{self, DecodeError, Decoded, EncodeError};
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
