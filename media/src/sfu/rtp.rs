//! RTP fixed-header parsing (RFC 3550 §5.1), bounded and allocation-free.
//!
//! The SFU reads only what it needs to rewrite a packet for a subscriber (sequence number,
//! timestamp, SSRC) and where the payload starts (for keyframe detection). Everything else —
//! marker, payload type, CSRCs, header extensions, padding — passes through untouched.

use thiserror::Error;

/// Length of the RTP fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why an RTP header does not parse (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The packet is shorter than the 12-byte fixed header.
    #[error("rtp packet of {len} bytes is shorter than the 12-byte fixed header")]
    TooShort {
        /// The packet's length.
        len: usize,
    },
    /// The version field is not 2.
    #[error("rtp version {version}, expected 2")]
    BadVersion {
        /// The version the packet carries.
        version: u8,
    },
    /// The CSRC list or the header extension claims more bytes than the packet has.
    #[error("rtp header of {header_len} bytes is longer than the {len}-byte packet")]
    HeaderTooLong {
        /// The header length the packet claims (at least the part that could be read).
        header_len: usize,
        /// The packet's length.
        len: usize,
    },
    /// The P bit is set but the padding count is zero or runs into the header.
    #[error("rtp padding of {padding} bytes does not fit the {payload_len}-byte payload")]
    BadPadding {
        /// The padding count (last byte of the packet).
        padding: u8,
        /// Bytes between the header and the end of the packet.
        payload_len: usize,
    },
}

/// The fields of an RTP header the SFU uses, read from a packet without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit (end of frame for video).
    pub marker: bool,
    /// The payload type.
    pub payload_type: u8,
    /// The sequence number.
    pub sequence_number: u16,
    /// The media timestamp, in the codec's clock.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: u32,
    /// Where the payload starts: after the fixed header, CSRCs and header extension.
    pub payload_start: usize,
    /// Where the payload ends: the packet's length minus its padding.
    pub payload_end: usize,
}

impl RtpHeader {
    /// Parses the header of `packet`. Every length is checked against the packet before use.
    pub fn parse(packet: &[u8]) -> Result<Self, RtpError> {
        let len = packet.len();
        if len < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort { len });
        }
        let b0 = packet[0];
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion { version });
        }
        let csrc_count = usize::from(b0 & 0x0f);
        let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
        if b0 & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile-defined id, 16-bit length in 32-bit words, then data.
            if header_len + 4 > len {
                return Err(RtpError::HeaderTooLong {
                    header_len: header_len + 4,
                    len,
                });
            }
            let words = u16::from_be_bytes([packet[header_len + 2], packet[header_len + 3]]);
            header_len += 4 + 4 * usize::from(words);
        }
        if header_len > len {
            return Err(RtpError::HeaderTooLong { header_len, len });
        }
        let mut payload_end = len;
        if b0 & 0x20 != 0 {
            // RFC 3550 §5.1: "The last octet of the padding contains a count of how many padding
            // octets should be ignored, including itself."
            let padding = packet[len - 1];
            let payload_len = len - header_len;
            if padding == 0 || usize::from(padding) > payload_len {
                return Err(RtpError::BadPadding {
                    padding,
                    payload_len,
                });
            }
            payload_end = len - usize::from(padding);
        }
        Ok(Self {
            marker: packet[1] & 0x80 != 0,
            payload_type: packet[1] & 0x7f,
            sequence_number: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            payload_start: header_len,
            payload_end,
        })
    }
}
