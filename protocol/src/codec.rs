//! The bincode 2 body codec: the one module that knows the control-message body is bincode.
//!
//! Configuration: `bincode::config::standard()` (little endian, variable-length integers), decoding
//! from a slice with serde's borrowed decoder (so strings are length-checked before they are copied,
//! see [`crate::bounded`]) and with a decode limit of [`HARD_MAX_FRAME_SIZE`]. Swapping bincode for
//! another format means rewriting this module, the golden vectors and `docs/PROTOCOL.md` §4 only.

use std::fmt;
use std::marker::PhantomData;

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bincode::error::DecodeError as BincodeDecodeError;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::bounded::{self, Violation};
use crate::limits::HARD_MAX_FRAME_SIZE;
use crate::message::ControlMessage;

type Config = Configuration<LittleEndian, Varint, config::Limit<HARD_MAX_FRAME_SIZE>>;

const CONFIG: Config = config::standard().with_limit::<HARD_MAX_FRAME_SIZE>();

/// Why a frame or message body could not be decoded. Every variant is the peer's fault; the
/// session that sent it is closed with [`crate::ErrorCode::PROTOCOL_VIOLATION`] (or
/// `FRAME_TOO_LARGE`), and nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame's announced length is larger than this endpoint accepts. Detected from the length
    /// prefix alone, before any of the body is buffered.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The body ended before the message did.
    #[error("message truncated")]
    Truncated,
    /// A length inside the message announces more bytes than a frame can hold.
    #[error("a length field points beyond the end of the message")]
    LengthOutOfBounds,
    /// A string field is longer than the protocol allows.
    #[error("field `{field}` is {len} bytes, limit {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list field has more items than the protocol allows.
    #[error("field `{field}` has {count} items, limit {max}")]
    TooManyItems {
        /// The field.
        field: &'static str,
        /// Its announced count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field has a value the protocol forbids (an empty room id, no layers…).
    #[error("field `{field}`: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("invalid UTF-8 in a string field")]
    InvalidUtf8,
    /// An enum inside a known message has an index this version does not define (enums inside
    /// messages are closed; only message kinds are open).
    #[error("unknown variant {found} of `{ty}`")]
    UnknownVariant {
        /// The Rust type name.
        ty: &'static str,
        /// The index found.
        found: u32,
    },
    /// A boolean byte other than 0 or 1, an integer out of range, or another malformed value.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body is larger than the frame limit the peer announced.
    #[error("encoded message is {len} bytes, limit {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// bincode refused the value (cannot happen for the types of this crate).
    #[error("encode failed: {0}")]
    Other(String),
}

/// The result of decoding a control-message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A message this version knows.
    Message(ControlMessage),
    /// A message kind from a newer version; skip it.
    UnknownKind(u32),
}

fn map_decode_error(e: BincodeDecodeError) -> DecodeError {
    if let Some(v) = bounded::take() {
        return match v {
            Violation::TooLong { field, len, max } => DecodeError::FieldTooLong { field, len, max },
            Violation::TooMany { field, count, max } => {
                DecodeError::TooManyItems { field, count, max }
            }
            Violation::Invalid { field, reason } => DecodeError::InvalidField { field, reason },
            Violation::UnknownVariant { ty, found } => DecodeError::UnknownVariant {
                ty,
                found: u32::try_from(found).unwrap_or(u32::MAX),
            },
        };
    }
    match e {
        BincodeDecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
        BincodeDecodeError::Utf8 { .. } => DecodeError::InvalidUtf8,
        BincodeDecodeError::UnexpectedVariant {
            type_name, found, ..
        } => DecodeError::UnknownVariant {
            ty: type_name,
            found,
        },
        BincodeDecodeError::LimitExceeded | BincodeDecodeError::OutsideUsizeRange(_) => {
            DecodeError::LengthOutOfBounds
        }
        other => DecodeError::Malformed(other.to_string()),
    }
}

/// Decodes an `option<T>` appended to a version-1 message after the version was published, for
/// `#[serde(deserialize_with = "appended_option")]` on the message's last field (with
/// `#[serde(default, skip_serializing_if = "Option::is_none")]`, so that `None` is written as
/// nothing and the message is byte for byte what an older sender writes).
///
/// - The body ends before the field: `None` (an older sender; `docs/PROTOCOL.md` §5).
/// - Tag `00`: `None`. Tag `01`: the value follows, and a body that ends inside it is truncated.
/// - Any other tag: [`DecodeError::UnknownVariant`], as for any option.
///
/// How, with bincode: its serde decoder reads nothing for a tuple itself, only its elements one
/// by one, so the field is asked for as a tuple of two elements, the tag as a `u8` and then the
/// value. Every byte is a valid `u8`, so reading the tag fails only where the input has ended;
/// that failure, and only that one, is "absent". (The only other error a `u8` read can give is
/// the 1 MiB decode limit, which the few-byte messages that carry such a field never reach.)
/// Human-readable formats (the golden vectors' JSON) read a plain `Option`, with a missing key as
/// `None` by `default`.
pub(crate) fn appended_option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    if d.is_human_readable() {
        return Option::<T>::deserialize(d);
    }
    d.deserialize_tuple(2, AppendedOption(PhantomData))
}

struct AppendedOption<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for AppendedOption<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an option appended to a message, or the end of the message")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let tag = match seq.next_element::<u8>() {
            Ok(Some(tag)) => tag,
            // The end of the body: the sender predates the field.
            Ok(None) | Err(_) => return Ok(None),
        };
        match tag {
            0 => Ok(None),
            1 => seq
                .next_element()?
                .map(Some)
                .ok_or_else(|| de::Error::invalid_length(1, &self)),
            other => Err(bounded::unknown_variant("Option<T>", u64::from(other))),
        }
    }
}

/// Decodes any bincode value of this protocol from `bytes`, bounded. Bytes after the value are
/// ignored (fields appended by a newer version). Exposed for the datagram module.
pub(crate) fn decode_value<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    bounded::reset();
    match bincode::serde::borrow_decode_from_slice::<T, Config>(bytes, CONFIG) {
        Ok((value, _used)) => Ok(value),
        Err(e) => Err(map_decode_error(e)),
    }
}

/// Encodes any bincode value of this protocol by appending to `out`.
pub(crate) fn encode_value<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    bincode::serde::encode_into_std_write(value, out, CONFIG)
        .map(|_| ())
        .map_err(|e| EncodeError::Other(e.to_string()))
}

/// Reads the leading bincode varint (the enum index) of a body without decoding the rest.
pub(crate) fn peek_kind(body: &[u8]) -> Result<u64, DecodeError> {
    let (&first, rest) = body.split_first().ok_or(DecodeError::Truncated)?;
    let take = |n: usize| -> Result<u64, DecodeError> {
        let bytes = rest.get(..n).ok_or(DecodeError::Truncated)?;
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    };
    match first {
        0..=250 => Ok(u64::from(first)),
        251 => take(2),
        252 => take(4),
        253 => take(8),
        // 254 introduces a u128: no enum index is that large.
        _ => Err(DecodeError::Malformed(format!(
            "invalid varint marker {first}"
        ))),
    }
}

/// Decodes one control-message body (a frame without its length prefix).
///
/// Unknown message kinds are reported as [`Decoded::UnknownKind`] so the caller can skip them;
/// known kinds that are malformed or break a field rule are errors.
pub fn decode_message(body: &[u8]) -> Result<Decoded, DecodeError> {
    let kind = peek_kind(body)?;
    if kind >= u64::from(ControlMessage::KINDS) {
        return Ok(Decoded::UnknownKind(
            u32::try_from(kind).unwrap_or(u32::MAX),
        ));
    }
    let message: ControlMessage = decode_value(body)?;
    message.validate()?;
    Ok(Decoded::Message(message))
}

/// Encodes one control-message body (without the frame length prefix) by appending to `out`.
pub fn encode_message(message: &ControlMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_value(message, out)
}

impl ControlMessage {
    /// Checks the rules that are not about lengths (those are checked while decoding).
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let ControlMessage::Publish(p) = self {
            if p.layers.is_empty() {
                return Err(DecodeError::InvalidField {
                    field: "layers",
                    reason: "a track needs at least one layer",
                });
            }
            for (i, a) in p.layers.iter().enumerate() {
                if p.layers[..i].iter().any(|b| b.media == a.media) {
                    return Err(DecodeError::InvalidField {
                        field: "layers",
                        reason: "two layers share a media id",
                    });
                }
            }
        }
        Ok(())
    }
}
