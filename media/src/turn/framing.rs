//! Splitting a TCP or TLS byte stream into STUN messages and ChannelData messages.
//!
//! RFC 8656 §12.5: "Over TCP and TLS-over-TCP, the ChannelData message MUST be padded to a
//! multiple of four bytes in order to ensure the alignment of subsequent messages." STUN
//! messages are always a multiple of four bytes long, so every frame starts on a four-byte
//! boundary. The first two bits tell the kinds apart: `00` is STUN, `01` is ChannelData; any
//! other value means the peer is not speaking TURN and the connection is closed.

use thiserror::Error;

/// STUN header: type, length, magic cookie, transaction id.
pub const STUN_HEADER_LEN: usize = 20;
/// ChannelData header: channel number, length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;
/// The largest frame: a STUN message with the largest attribute section a multiple of four can
/// have (65532 bytes). A padded ChannelData is at most 4 + 65536 bytes.
pub const MAX_FRAME_LEN: usize = STUN_HEADER_LEN + 65_532;

/// One complete frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A STUN message of this many bytes.
    Stun(usize),
    /// A ChannelData message: the bytes to hand on (header and data, without padding) and the
    /// bytes it occupies in the stream (with padding).
    ChannelData {
        /// Header plus data.
        len: usize,
        /// Header plus data plus padding.
        consumed: usize,
    },
}

impl Frame {
    /// Bytes this frame occupies in the stream.
    pub fn consumed(self) -> usize {
        match self {
            Frame::Stun(n) => n,
            Frame::ChannelData { consumed, .. } => consumed,
        }
    }

    /// Bytes to hand to the server.
    pub fn message_len(self) -> usize {
        match self {
            Frame::Stun(n) => n,
            Frame::ChannelData { len, .. } => len,
        }
    }
}

/// The stream does not carry TURN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The first two bits are neither `00` (STUN) nor `01` (ChannelData).
    #[error("the stream is neither STUN nor ChannelData")]
    UnknownKind,
    /// A STUN header without the magic cookie, or with a length that is not a multiple of four.
    #[error("a malformed STUN header in the stream")]
    BadStunHeader,
    /// A ChannelData number outside 0x4000-0x4FFF.
    #[error("a ChannelData number out of range in the stream")]
    BadChannel,
}

/// The frame at the start of `buf`, `Ok(None)` when more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if cookie != 0x2112_A442 || len % 4 != 0 {
                return Err(FramingError::BadStunHeader);
            }
            let total = STUN_HEADER_LEN + len;
            Ok((buf.len() >= total).then_some(Frame::Stun(total)))
        }
        1 => {
            // RFC 8656 §12: channel numbers are 0x4000 through 0x4FFF.
            if first > 0x4F {
                return Err(FramingError::BadChannel);
            }
            if buf.len() < CHANNEL_DATA_HEADER_LEN {
                return Ok(None);
            }
            let len = CHANNEL_DATA_HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let consumed = len.next_multiple_of(4);
            Ok((buf.len() >= consumed).then_some(Frame::ChannelData { len, consumed }))
        }
        _ => Err(FramingError::UnknownKind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_frames_need_the_whole_message() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        msg.extend_from_slice(&[0; 12 + 8]);
        for cut in 0..msg.len() {
            assert_eq!(next_frame(&msg[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(next_frame(&msg), Ok(Some(Frame::Stun(28))));
    }

    #[test]
    fn channel_data_is_padded_in_streams() {
        let mut msg = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0xff];
        assert_eq!(next_frame(&msg[..8]), Ok(None));
        let frame = next_frame(&msg).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::ChannelData {
                len: 9,
                consumed: 12
            }
        );
        msg.truncate(11);
        assert_eq!(next_frame(&msg), Ok(None));
    }

    #[test]
    fn no_frame_is_longer_than_max_frame_len() {
        let mut stun = vec![0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xA4, 0x42];
        stun.resize(MAX_FRAME_LEN, 0);
        assert_eq!(next_frame(&stun), Ok(Some(Frame::Stun(MAX_FRAME_LEN))));
        let mut channel = vec![0x4f, 0xff, 0xff, 0xff];
        channel.resize(MAX_FRAME_LEN, 0);
        let frame = next_frame(&channel).unwrap().unwrap();
        assert!(frame.consumed() <= MAX_FRAME_LEN);
    }

    #[test]
    fn garbage_is_refused() {
        // "PO" is 0x504F: ChannelData-shaped, but outside 0x4000-0x4FFF.
        assert_eq!(
            next_frame(b"POST / HTTP/1.1\r\n"),
            Err(FramingError::BadChannel)
        );
        // "GE" is 0x4745, a valid channel, and "T " a length of 21536: it waits for more
        // bytes (the caller's read timeout ends such connections).
        assert_eq!(next_frame(b"GET / HTTP/1.1\r\n"), Ok(None));
        // A TLS ClientHello starts with 0x16: STUN-shaped, without the cookie.
        assert_eq!(
            next_frame(&[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc]),
            Err(FramingError::BadStunHeader)
        );
        assert_eq!(next_frame(&[0x80, 0, 0, 0]), Err(FramingError::UnknownKind));
        assert_eq!(next_frame(&[0xC0]), Err(FramingError::UnknownKind));
        assert_eq!(
            next_frame(&[0, 1, 0, 0, 1, 2, 3, 4]),
            Err(FramingError::BadStunHeader)
        );
        assert_eq!(
            next_frame(&[0, 1, 0, 3, 0x21, 0x12, 0xA4, 0x42]),
            Err(FramingError::BadStunHeader)
        );
    }
}
