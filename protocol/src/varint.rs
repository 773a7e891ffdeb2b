//! QUIC variable-length integers (RFC 9000 §16), used for frame lengths and media ids.
//!
//! "The QUIC variable-length integer encoding reserves the two most significant bits of the first
//! byte to encode the base-2 logarithm of the integer encoding length in bytes." Values up to
//! 2^62 - 1 are representable; the encoder always picks the shortest form, the decoder accepts any
//! form (non-minimal encodings are legal in QUIC and here).

use thiserror::Error;

/// The largest value a QUIC varint can carry.
pub const MAX: u64 = (1 << 62) - 1;

/// The outcome of reading a varint from a byte slice that may be incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VarIntError {
    /// More bytes are needed before the value can be read.
    #[error("incomplete varint: need {needed} bytes, have {have}")]
    Incomplete {
        /// Total length of the encoding, known from its first byte.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The value does not fit in 62 bits (only on encode).
    #[error("value {0} exceeds the varint maximum 2^62-1")]
    TooLarge(u64),
}

/// Length in bytes of the shortest encoding of `value` (1, 2, 4 or 8).
///
/// # Panics
/// Never; values above [`MAX`] report 8 and are refused by [`encode`].
#[must_use]
pub const fn encoded_len(value: u64) -> usize {
    if value < (1 << 6) {
        1
    } else if value < (1 << 14) {
        2
    } else if value < (1 << 30) {
        4
    } else {
        8
    }
}

/// Encodes `value` at the start of `out` and returns the number of bytes written.
///
/// `out` must have room for [`encoded_len`]`(value)` bytes; otherwise `Incomplete` says how many.
pub fn encode(value: u64, out: &mut [u8]) -> Result<usize, VarIntError> {
    if value > MAX {
        return Err(VarIntError::TooLarge(value));
    }
    let len = encoded_len(value);
    if out.len() < len {
        return Err(VarIntError::Incomplete {
            needed: len,
            have: out.len(),
        });
    }
    let tag: u64 = match len {
        1 => 0b00,
        2 => 0b01,
        4 => 0b10,
        _ => 0b11,
    };
    let tagged = value | (tag << (len * 8 - 2));
    out[..len].copy_from_slice(&tagged.to_be_bytes()[8 - len..]);
    Ok(len)
}

/// Appends the shortest encoding of `value` to `out`.
pub fn put(value: u64, out: &mut impl bytes::BufMut) -> Result<(), VarIntError> {
    let mut tmp = [0u8; 8];
    let len = encode(value, &mut tmp)?;
    out.put_slice(&tmp[..len]);
    Ok(())
}

/// Decodes a varint from the start of `input`, returning the value and the bytes it used.
pub fn decode(input: &[u8]) -> Result<(u64, usize), VarIntError> {
    let Some(&first) = input.first() else {
        return Err(VarIntError::Incomplete { needed: 1, have: 0 });
    };
    let len = 1usize << (first >> 6);
    if input.len() < len {
        return Err(VarIntError::Incomplete {
            needed: len,
            have: input.len(),
        });
    }
    let mut value = u64::from(first & 0x3f);
    for &b in &input[1..len] {
        value = (value << 8) | u64::from(b);
    }
    Ok((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_examples() {
        // RFC 9000 Appendix A.1 sample encodings.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes), Ok((value, bytes.len())));
            let mut out = [0u8; 8];
            let n = encode(value, &mut out).unwrap();
            assert_eq!(&out[..n], bytes);
        }
        // A non-minimal two-byte encoding of 37 is accepted.
        assert_eq!(decode(&[0x40, 0x25]), Ok((37, 2)));
    }

    #[test]
    fn boundaries_round_trip() {
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut out = [0u8; 8];
            let n = encode(v, &mut out).unwrap();
            assert_eq!(n, encoded_len(v));
            assert_eq!(decode(&out[..n]), Ok((v, n)));
        }
        assert_eq!(
            encode(MAX + 1, &mut [0; 8]),
            Err(VarIntError::TooLarge(MAX + 1))
        );
    }

    #[test]
    fn incomplete_is_not_malformed() {
        assert_eq!(
            decode(&[]),
            Err(VarIntError::Incomplete { needed: 1, have: 0 })
        );
        assert_eq!(
            decode(&[0x9d, 0x7f]),
            Err(VarIntError::Incomplete { needed: 4, have: 2 })
        );
        assert!(matches!(
            encode(1 << 20, &mut [0; 2]),
            Err(VarIntError::Incomplete { .. })
        ));
    }
}
