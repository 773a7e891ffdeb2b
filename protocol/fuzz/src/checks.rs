//! The properties the fuzz targets check, in one place.
//!
//! This file is compiled twice: by each cargo-fuzz target (`fuzz_targets/*.rs`) and by the plain
//! test module `protocol/tests/protocol/fuzz_corpus.rs`, which runs the same checks over the
//! committed seed corpus and a seeded mutation sweep so that they also run where cargo-fuzz
//! cannot. Both include it with `#[path]`, so it depends on nothing but `strait-protocol` and
//! `bytes`.
//!
//! Every check panics when a property is broken; "the decoder refused the input" is never a
//! failure, only a panic, an over-limit buffer or an inconsistent answer is.

use bytes::Bytes;
use strait_protocol::datagram::{
    self, Datagram, DatagramControl, DatagramError, KIND_CONTROL, KIND_MEDIA, KIND_PADDING,
};
use strait_protocol::limits::HARD_MAX_FRAME_SIZE;
use strait_protocol::{
    ControlMessage, DecodeError, Decoded, ErrorCode, FrameReader, SingleFrameError, decode_message,
    decode_single_frame, encode_frame, encode_message, varint,
};

/// Maximum frame sizes the `frame_reader` and `single_frame` input headers pick from (small, so that the too-large
/// path is reached often).
pub(crate) const FRAME_SIZES: [usize; 8] = [256, 0, 1, 16, 64, 255, 1024, 4096];

/// How a `frame_reader` input is laid out: a header byte (`max index << 4 | split count`), then
/// `split count` chunk lengths of one byte each, then the stream. The stream is fed in chunks of
/// those lengths (a zero length feeds an empty chunk) and the rest in one last chunk.
#[derive(Debug)]
pub(crate) struct FrameInput<'a> {
    pub(crate) max_frame_size: usize,
    pub(crate) chunk_lens: &'a [u8],
    pub(crate) stream: &'a [u8],
}

impl<'a> FrameInput<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> FrameInput<'a> {
        let Some((&header, rest)) = data.split_first() else {
            return FrameInput {
                max_frame_size: FRAME_SIZES[0],
                chunk_lens: &[],
                stream: &[],
            };
        };
        let splits = usize::from(header & 0x0f).min(rest.len());
        let (chunk_lens, stream) = rest.split_at(splits);
        FrameInput {
            max_frame_size: FRAME_SIZES[usize::from(header >> 4) % FRAME_SIZES.len()],
            chunk_lens,
            stream,
        }
    }

    /// The inverse of [`FrameInput::parse`], for building seeds. `max_index` indexes
    /// [`FRAME_SIZES`]; at most 15 chunk lengths.
    #[allow(dead_code, reason = "used by the seed generator in tests only")]
    pub(crate) fn build(max_index: u8, chunk_lens: &[u8], stream: &[u8]) -> Vec<u8> {
        assert!(usize::from(max_index) < FRAME_SIZES.len() && chunk_lens.len() < 16);
        let mut out = vec![(max_index << 4) | chunk_lens.len() as u8];
        out.extend_from_slice(chunk_lens);
        out.extend_from_slice(stream);
        out
    }

    fn chunks(&self) -> Vec<&'a [u8]> {
        let mut rest = self.stream;
        let mut out = Vec::with_capacity(self.chunk_lens.len() + 1);
        for &len in self.chunk_lens {
            let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
            out.push(chunk);
            rest = tail;
        }
        out.push(rest);
        out
    }
}

/// What feeding a stream to a `FrameReader` produced: every message or error in order (nothing
/// follows an error), and the bytes still buffered at the end. After an error the reader is
/// dropped (the session is closed), so what it still holds then is not compared.
#[derive(Debug)]
struct FrameRun {
    outcomes: Vec<Result<Decoded, DecodeError>>,
    buffered: usize,
}

impl PartialEq for FrameRun {
    fn eq(&self, other: &Self) -> bool {
        let failed = matches!(self.outcomes.last(), Some(Err(_)));
        self.outcomes == other.outcomes && (failed || self.buffered == other.buffered)
    }
}

fn run_reader(max_frame_size: usize, chunks: &[&[u8]]) -> FrameRun {
    let mut reader = FrameReader::new(max_frame_size);
    let mut outcomes = Vec::new();
    for &chunk in chunks {
        let mut input = Bytes::copy_from_slice(chunk);
        loop {
            let before = input.len();
            let result = reader.next_message(&mut input);
            assert!(
                reader.buffered() <= max_frame_size + 8,
                "reader holds {} bytes with a limit of {max_frame_size}",
                reader.buffered()
            );
            assert!(input.len() <= before, "the reader grew its input");
            match result {
                Ok(None) => {
                    assert!(
                        input.is_empty(),
                        "Ok(None) with {} bytes unread",
                        input.len()
                    );
                    break;
                }
                Ok(Some(decoded)) => {
                    check_decoded(&decoded);
                    outcomes.push(Ok(decoded));
                }
                Err(e) => {
                    let _ = e.to_string();
                    outcomes.push(Err(e));
                    return FrameRun {
                        outcomes,
                        buffered: reader.buffered(),
                    };
                }
            }
        }
    }
    FrameRun {
        outcomes,
        buffered: reader.buffered(),
    }
}

/// `frame_reader`: the stream, fed in the chunks the input chooses, never makes the reader hold
/// more than `max + 8` bytes, and yields the same messages and errors as the stream fed whole.
pub(crate) fn frame_reader(data: &[u8]) {
    let input = FrameInput::parse(data);
    let chunked = run_reader(input.max_frame_size, &input.chunks());
    let whole = run_reader(input.max_frame_size, &[input.stream]);
    assert!(
        chunked == whole,
        "chunked feed differs from whole feed:\nchunked: {chunked:?}\nwhole:   {whole:?}"
    );
}

/// Properties of anything `decode_message` accepted.
fn check_decoded(decoded: &Decoded) {
    match decoded {
        Decoded::UnknownKind(kind) => assert!(*kind >= ControlMessage::KINDS),
        Decoded::Message(message) => {
            assert!(message.kind() < ControlMessage::KINDS);
            assert_eq!(message.validate(), Ok(()), "decoded message breaks a rule");
        }
    }
}

/// `control_decode`: whatever `decode_message` accepts re-encodes to at most as many bytes and
/// decodes back to the same message, also through a frame; decoding is deterministic.
pub(crate) fn control_decode(data: &[u8]) {
    let first = decode_message(data);
    assert_eq!(
        decode_message(data),
        first,
        "decoding twice gave two answers"
    );
    let message = match first {
        Err(e) => {
            let _ = e.to_string();
            return;
        }
        Ok(decoded @ Decoded::UnknownKind(_)) => return check_decoded(&decoded),
        Ok(Decoded::Message(message)) => message,
    };
    check_decoded(&Decoded::Message(message.clone()));

    let mut encoded = Vec::new();
    encode_message(&message, &mut encoded).expect("a decoded message encodes");
    // The encoder writes the shortest forms, so it never needs more than the input held.
    assert!(
        encoded.len() <= data.len(),
        "{} bytes re-encode to {}",
        data.len(),
        encoded.len()
    );
    assert_eq!(
        decode_message(&encoded),
        Ok(Decoded::Message(message.clone())),
        "re-encoded message decodes differently"
    );
    let mut again = Vec::new();
    encode_message(&message, &mut again).expect("a decoded message encodes");
    assert_eq!(again, encoded, "encoding is not deterministic");

    let mut frame = Vec::new();
    encode_frame(&message, HARD_MAX_FRAME_SIZE, &mut frame).expect("fits the hard limit");
    let mut input = Bytes::from(frame);
    let mut reader = FrameReader::new(HARD_MAX_FRAME_SIZE);
    assert_eq!(
        reader.next_message(&mut input),
        Ok(Some(Decoded::Message(message))),
        "framed message decodes differently"
    );
    assert!(input.is_empty() && reader.buffered() == 0);
}

/// `datagram_parse`: `parse_datagram` and `parse_media` agree; a parsed media datagram rebuilds
/// with `write_media_datagram` into the same id and RTP (and the same bytes when the id was in its
/// shortest form); a parsed control datagram re-encodes and parses back to itself; a padding
/// datagram is the whole input and `write_padding` rebuilds one of the same length.
pub(crate) fn datagram_parse(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let parsed = datagram::parse_datagram(&bytes);
    let media = datagram::parse_media(data);
    if let Err(e) = &parsed {
        let _ = e.to_string();
    }

    match (data.first(), &media) {
        (None, _) => {
            assert_eq!(media, Err(DatagramError::Empty));
            assert_eq!(parsed, Err(DatagramError::Empty));
        }
        (Some(&KIND_MEDIA), Ok((id, rtp))) => {
            assert_eq!(
                parsed,
                Ok(Datagram::Media {
                    media: *id,
                    rtp: Bytes::copy_from_slice(rtp),
                }),
                "parse_datagram and parse_media disagree"
            );
            check_media_rebuild(data, *id, rtp);
        }
        (Some(&KIND_MEDIA), Err(e)) => {
            assert_eq!(
                parsed.as_ref().err(),
                Some(e),
                "parse_datagram and parse_media disagree"
            );
        }
        (Some(&kind), _) => {
            assert_eq!(media, Err(DatagramError::NotMedia(kind)));
        }
    }

    match parsed {
        Ok(Datagram::Media { rtp, .. }) => {
            // Zero-copy: the RTP is the tail of the datagram.
            assert!(data.ends_with(&rtp));
            datagram::check_rtp(&rtp).expect("parsed RTP passes check_rtp");
        }
        Ok(Datagram::Control(control)) => {
            assert_eq!(data[0], KIND_CONTROL);
            check_control_rebuild(data, control);
        }
        Ok(Datagram::UnknownControl(kind)) => {
            assert_eq!(data[0], KIND_CONTROL);
            assert!(kind >= DatagramControl::KINDS);
        }
        Ok(Datagram::Padding { len }) => {
            assert_eq!(data[0], KIND_PADDING);
            assert_eq!(len, data.len(), "padding is the whole datagram");
            let mut rebuilt = Vec::new();
            datagram::write_padding(&mut rebuilt, len);
            assert_eq!(
                datagram::parse_datagram(&Bytes::from(rebuilt)),
                Ok(Datagram::Padding { len }),
                "rebuilt padding parses differently"
            );
        }
        Err(_) => {}
    }
}

fn check_media_rebuild(data: &[u8], id: strait_protocol::MediaId, rtp: &[u8]) {
    let header = datagram::media_header_len(id);
    let needed = header + rtp.len();
    let mut out = vec![0xa5; needed];
    assert_eq!(
        datagram::write_media_datagram(id, rtp, &mut out),
        Ok(needed)
    );
    assert_eq!(
        datagram::parse_media(&out),
        Ok((id, rtp)),
        "rebuilt datagram parses differently"
    );
    if data.len() - rtp.len() == header {
        assert_eq!(
            out, data,
            "rebuilt datagram differs from a shortest-form original"
        );
    }
    assert_eq!(datagram::max_rtp_len(needed, id), rtp.len());

    let mut short = vec![0u8; needed - 1];
    assert_eq!(
        datagram::write_media_datagram(id, rtp, &mut short),
        Err(DatagramError::BufferTooSmall {
            needed,
            have: needed - 1,
        })
    );
    assert!(
        short.iter().all(|&b| b == 0),
        "a refused write touched the buffer"
    );
}

fn check_control_rebuild(data: &[u8], control: DatagramControl) {
    let mut encoded = Vec::new();
    datagram::encode_control_datagram(&control, &mut encoded).expect("a parsed control encodes");
    assert!(
        encoded.len() <= data.len(),
        "{} bytes re-encode to {}",
        data.len(),
        encoded.len()
    );
    assert_eq!(
        datagram::parse_datagram(&Bytes::from(encoded)),
        Ok(Datagram::Control(control)),
        "re-encoded control datagram parses differently"
    );
}

/// How a `single_frame` input is laid out: a header byte whose low three bits index
/// [`FRAME_SIZES`] (the maximum frame size), then one whole WebSocket message.
#[derive(Debug)]
pub(crate) struct SingleFrameInput<'a> {
    pub(crate) max_frame_size: usize,
    pub(crate) message: &'a [u8],
}

impl<'a> SingleFrameInput<'a> {
    pub(crate) fn parse(data: &'a [u8]) -> SingleFrameInput<'a> {
        match data.split_first() {
            Some((&header, message)) => SingleFrameInput {
                max_frame_size: FRAME_SIZES[usize::from(header) % FRAME_SIZES.len()],
                message,
            },
            None => SingleFrameInput {
                max_frame_size: FRAME_SIZES[0],
                message: &[],
            },
        }
    }

    /// The inverse of [`SingleFrameInput::parse`], for building seeds.
    #[allow(dead_code, reason = "used by the seed generator in tests only")]
    pub(crate) fn build(max_index: u8, message: &[u8]) -> Vec<u8> {
        assert!(usize::from(max_index) < FRAME_SIZES.len());
        let mut out = vec![max_index];
        out.extend_from_slice(message);
        out
    }
}

/// `single_frame`: `decode_single_frame` (each binary message of `/ws/rtc`) gives the answer a
/// `FrameReader` fed the message whole gives, made strict: accepted only when the message is
/// exactly one frame within the limit whose body decodes; an oversized frame is refused from its
/// prefix alone with `FRAME_TOO_LARGE`, everything else with `PROTOCOL_VIOLATION`. What it
/// accepts re-frames to no more bytes and decodes back to itself.
pub(crate) fn single_frame(data: &[u8]) {
    let SingleFrameInput {
        max_frame_size,
        message,
    } = SingleFrameInput::parse(data);
    let answer = decode_single_frame(message, max_frame_size);
    assert_eq!(
        decode_single_frame(message, max_frame_size),
        answer,
        "decoding twice gave two answers"
    );
    assert_eq!(
        decode_single_frame(message, usize::MAX),
        decode_single_frame(message, HARD_MAX_FRAME_SIZE),
        "the limit is not clamped to the hard maximum"
    );

    let mut input = Bytes::copy_from_slice(message);
    let mut reader = FrameReader::new(max_frame_size);
    let reference = match reader.next_message(&mut input) {
        Ok(Some(decoded)) if input.is_empty() => Ok(decoded),
        Ok(Some(_)) => Err(SingleFrameError::TrailingBytes { extra: input.len() }),
        Ok(None) => Err(SingleFrameError::Incomplete),
        Err(e) => Err(SingleFrameError::Frame(e)),
    };
    assert_eq!(
        answer, reference,
        "differs from a FrameReader fed the message whole"
    );

    let max = max_frame_size.min(HARD_MAX_FRAME_SIZE);
    let prefix = varint::decode(message).ok();
    let frame = prefix.and_then(|(len, prefix_len)| {
        let end = usize::try_from(len).ok()?.checked_add(prefix_len)?;
        Some((prefix_len, end))
    });
    let error = match answer {
        Ok(decoded) => {
            let Some((prefix_len, end)) = frame else {
                panic!("accepted without a length prefix");
            };
            assert_eq!(end, message.len(), "accepted with bytes left over");
            assert!(end - prefix_len <= max, "accepted a frame over the limit");
            check_decoded(&decoded);
            if let Decoded::Message(message_in) = decoded {
                let mut again = Vec::new();
                encode_frame(&message_in, max, &mut again).expect("an accepted body fits again");
                assert!(again.len() <= message.len(), "re-framed into more bytes");
                assert_eq!(
                    decode_single_frame(&again, max),
                    Ok(Decoded::Message(message_in)),
                    "re-framed message decodes differently"
                );
            }
            return;
        }
        Err(error) => error,
    };
    assert!(!error.to_string().is_empty());
    let too_large = matches!(
        error,
        SingleFrameError::Frame(DecodeError::FrameTooLarge { .. })
    );
    assert_eq!(
        error.code(),
        if too_large {
            ErrorCode::FRAME_TOO_LARGE
        } else {
            ErrorCode::PROTOCOL_VIOLATION
        }
    );
    match error {
        SingleFrameError::Frame(DecodeError::FrameTooLarge { len, max: limit }) => {
            assert_eq!(limit, max);
            assert!(
                len > max as u64,
                "refused {len} bytes with a limit of {max}"
            );
            let (_, prefix_len) = prefix.expect("refused from a whole prefix");
            assert_eq!(
                decode_single_frame(&message[..prefix_len], max_frame_size),
                Err(SingleFrameError::Frame(DecodeError::FrameTooLarge {
                    len,
                    max
                })),
                "an oversized frame is not refused from its prefix alone"
            );
        }
        SingleFrameError::Incomplete => {
            if let Some((_, end)) = frame {
                assert!(end > message.len(), "a whole frame called incomplete");
            }
        }
        SingleFrameError::TrailingBytes { extra } => {
            let (_, end) = frame.expect("a whole frame came first");
            assert!(extra > 0 && end + extra == message.len());
            assert!(
                decode_single_frame(&message[..end], max_frame_size).is_ok(),
                "the first frame alone is refused"
            );
        }
        SingleFrameError::Frame(e) => {
            let (prefix_len, end) = frame.expect("a whole frame came first");
            assert_eq!(
                decode_message(&message[prefix_len..end]),
                Err(e),
                "refused for another reason than its body"
            );
        }
        other => panic!("an error this check does not know: {other:?}"),
    }
}
