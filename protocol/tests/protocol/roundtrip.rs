//! Property round trips: every message, framed and unframed, decodes to what was encoded; and a
//! stream of frames split at arbitrary points decodes to the same messages in order.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use strait_protocol::datagram::{self, parse_datagram, write_media_datagram, write_padding};
use strait_protocol::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    // Any non-control characters, including multi-byte UTF-8, within the byte limit.
    proptest::string::string_regex("\\PC{0,24}")
        .unwrap()
        .prop_map(move |s| truncate_bytes(s, max))
}

fn truncate_bytes(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

fn room() -> impl Strategy<Value = RoomId> {
    proptest::string::string_regex("[a-zA-Z0-9_.~é-]{1,40}")
        .unwrap()
        .prop_map(RoomId)
}

fn request() -> impl Strategy<Value = RequestId> {
    any::<u32>().prop_map(RequestId)
}

fn participant() -> impl Strategy<Value = ParticipantId> {
    any::<u64>().prop_map(ParticipantId)
}

fn track() -> impl Strategy<Value = TrackId> {
    any::<u64>().prop_map(TrackId)
}

fn media() -> impl Strategy<Value = MediaId> {
    any::<u32>().prop_map(MediaId)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u32>().prop_map(ErrorCode)
}

fn kind() -> impl Strategy<Value = TrackKind> {
    prop_oneof![Just(TrackKind::Audio), Just(TrackKind::Video)]
}

fn codec() -> impl Strategy<Value = Codec> {
    (text(32), any::<u8>(), any::<u32>(), any::<u8>(), text(512)).prop_map(
        |(name, payload_type, clock_rate, channels, fmtp)| Codec {
            name,
            payload_type,
            clock_rate,
            channels,
            fmtp,
        },
    )
}

fn layers() -> impl Strategy<Value = Vec<Layer>> {
    vec((any::<u32>(), any::<u16>(), any::<u16>()), 1..=3).prop_map(|ls| {
        ls.into_iter()
            .enumerate()
            .map(|(i, (max_bitrate, width, height))| Layer {
                media: MediaId(i as u32 * 1000 + 7),
                max_bitrate,
                width,
                height,
            })
            .collect()
    })
}

fn participant_info() -> impl Strategy<Value = ParticipantInfo> {
    (participant(), text(128), text(256)).prop_map(|(participant, identity, name)| {
        ParticipantInfo {
            participant,
            identity,
            name,
        }
    })
}

fn ice_server() -> impl Strategy<Value = IceServer> {
    (
        vec(text(64), 0..=8),
        proptest::option::of(text(64)),
        proptest::option::of(text(64)),
    )
        .prop_map(|(urls, username, credential)| IceServer {
            urls,
            username,
            credential,
        })
}

fn message() -> impl Strategy<Value = ControlMessage> {
    use ControlMessage as M;
    prop_oneof![
        (
            any::<u16>(),
            text(200),
            proptest::option::of(text(64).prop_map(ResumeToken)),
            text(64)
        )
            .prop_map(
                |(version, token, resume, agent)| M::ClientHello(ClientHello {
                    version,
                    token,
                    resume,
                    agent
                })
            ),
        (
            any::<u16>(),
            participant(),
            text(64),
            any::<bool>(),
            vec(ice_server(), 0..=8),
            any::<[u32; 4]>(),
            any::<u32>()
        )
            .prop_map(
                |(version, participant, token, resumed, ice_servers, l, mds)| {
                    M::ServerHello(ServerHello {
                        version,
                        participant,
                        resume_token: ResumeToken(token),
                        resumed,
                        ice_servers,
                        limits: SessionLimits {
                            max_frame_size: l[0],
                            max_tracks: l[1],
                            max_subscriptions: l[2],
                            max_messages_per_second: l[3],
                        },
                        max_datagram_size: mds,
                    })
                }
            ),
        (request(), room(), text(256)).prop_map(|(request, room, name)| M::Join(Join {
            request,
            room,
            name
        })),
        (request(), room(), participant_info()).prop_map(|(request, room, me)| M::Joined(Joined {
            request,
            room,
            me
        })),
        request().prop_map(|request| M::Leave(Leave { request })),
        participant_info().prop_map(M::ParticipantJoined),
        (participant(), code()).prop_map(|(participant, reason)| M::ParticipantLeft(
            ParticipantLeft {
                participant,
                reason
            }
        )),
        (
            request(),
            kind(),
            codec(),
            text(256),
            layers(),
            any::<bool>()
        )
            .prop_map(|(request, kind, codec, source, layers, muted)| M::Publish(
                Publish {
                    request,
                    kind,
                    codec,
                    source,
                    layers,
                    muted
                }
            )),
        (request(), track())
            .prop_map(|(request, track)| M::Published(Published { request, track })),
        (request(), track())
            .prop_map(|(request, track)| M::Unpublish(Unpublish { request, track })),
        (
            track(),
            participant(),
            kind(),
            codec(),
            text(256),
            vec((any::<u32>(), any::<u16>(), any::<u16>()), 0..=3),
            any::<bool>()
        )
            .prop_map(|(track, participant, kind, codec, source, ls, muted)| {
                M::TrackPublished(TrackInfo {
                    track,
                    participant,
                    kind,
                    codec,
                    source,
                    layers: ls
                        .into_iter()
                        .map(|(max_bitrate, width, height)| LayerInfo {
                            max_bitrate,
                            width,
                            height,
                        })
                        .collect(),
                    muted,
                })
            }),
        (track(), participant()).prop_map(|(track, participant)| M::TrackUnpublished(
            TrackUnpublished { track, participant }
        )),
        (request(), track(), any::<Option<u8>>(), any::<Option<u8>>()).prop_map(
            |(request, track, max_layer, priority)| M::Subscribe(Subscribe {
                request,
                track,
                max_layer,
                priority,
            })
        ),
        (request(), track(), media(), any::<u32>(), any::<u8>()).prop_map(
            |(request, track, media, ssrc, layer)| M::Subscribed(Subscribed {
                request,
                track,
                media,
                ssrc,
                layer
            })
        ),
        (request(), track())
            .prop_map(|(request, track)| M::Unsubscribe(Unsubscribe { request, track })),
        (request(), track(), any::<Option<u8>>(), any::<Option<u8>>()).prop_map(
            |(request, track, max_layer, priority)| M::SetLayerPreference(SetLayerPreference {
                request,
                track,
                max_layer,
                priority,
            })
        ),
        (request(), track(), any::<bool>()).prop_map(|(request, track, muted)| M::SetMute(
            SetMute {
                request,
                track,
                muted
            }
        )),
        (track(), any::<bool>())
            .prop_map(|(track, muted)| M::TrackMuted(TrackMuted { track, muted })),
        (track(), any::<Option<u8>>())
            .prop_map(|(track, layer)| M::KeyframeRequest(KeyframeRequest { track, layer })),
        (track(), any::<u8>())
            .prop_map(|(track, layer)| M::LayerSwitched(LayerSwitched { track, layer })),
        any::<u64>().prop_map(|nonce| M::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| M::Pong(Pong { nonce })),
        (
            code(),
            proptest::option::of(text(200)),
            proptest::collection::vec("[0-9a-f]{64}", 0..=4),
            proptest::option::of(text(300)),
        )
            .prop_map(|(code, redirect, cert_hashes, token)| M::GoAway(GoAway {
                code,
                redirect,
                cert_hashes,
                token
            })),
        (proptest::option::of(request()), code(), text(1024)).prop_map(
            |(request, code, reason)| M::Error(ErrorMessage {
                request,
                code,
                reason
            })
        ),
        request().prop_map(|request| M::Ack(Ack { request })),
        (
            prop_oneof![Just(SdpType::Offer), Just(SdpType::Answer)],
            text(4096)
        )
            .prop_map(|(kind, sdp)| M::Sdp(SessionDescription { kind, sdp })),
        (
            text(512),
            proptest::option::of(text(16)),
            any::<Option<u16>>()
        )
            .prop_map(|(candidate, sdp_mid, sdp_mline_index)| M::IceCandidate(
                IceCandidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index
                }
            )),
        text(64).prop_map(|token| M::NewResumeToken(NewResumeToken {
            resume_token: ResumeToken(token)
        })),
        (track(), any::<u8>()).prop_map(|(track, reason)| M::TrackPaused(TrackPaused {
            track,
            reason: PauseReason(reason)
        })),
        (track(), any::<u8>()).prop_map(|(track, reason)| M::TrackResumed(TrackResumed {
            track,
            reason: PauseReason(reason)
        })),
    ]
}

fn datagram_control() -> impl Strategy<Value = DatagramControl> {
    prop_oneof![
        (any::<u32>(), any::<u64>())
            .prop_map(|(seq, timestamp_us)| DatagramControl::Ping { seq, timestamp_us }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(seq, timestamp_us)| DatagramControl::Pong { seq, timestamp_us }),
        (media(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(media, highest_seq, lost, jitter)| DatagramControl::ReceiverReport {
                media,
                highest_seq,
                lost,
                jitter
            }
        ),
        media().prop_map(|media| DatagramControl::KeyframeRequest { media }),
    ]
}

/// An RTP packet with a valid header: version 2, CSRCs and an extension that fit.
fn rtp() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=15,
        any::<bool>(),
        0u16..=4,
        vec(any::<u8>(), 0..1200),
        any::<[u8; 11]>(),
    )
        .prop_map(|(cc, ext, ext_words, payload, fixed)| {
            let mut p = vec![0x80 | cc | if ext { 0x10 } else { 0 }];
            p.extend_from_slice(&fixed);
            p.extend(std::iter::repeat_n(0xcc, 4 * usize::from(cc)));
            if ext {
                p.extend_from_slice(&[0xbe, 0xde]);
                p.extend_from_slice(&ext_words.to_be_bytes());
                p.extend(std::iter::repeat_n(0xee, 4 * usize::from(ext_words)));
            }
            p.extend_from_slice(&payload);
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let mut body = Vec::new();
        encode_message(&msg, &mut body).unwrap();
        prop_assert_eq!(decode_message(&body).unwrap(), Decoded::Message(msg.clone()));
        prop_assert_eq!(u64::from(body[0]), u64::from(msg.kind()));

        let mut framed = Vec::new();
        encode_frame(&msg, limits::HARD_MAX_FRAME_SIZE, &mut framed).unwrap();
        let mut reader = FrameReader::new(limits::HARD_MAX_FRAME_SIZE);
        let mut input = Bytes::from(framed);
        prop_assert_eq!(reader.next_message(&mut input).unwrap(), Some(Decoded::Message(msg)));
        prop_assert!(input.is_empty());
        prop_assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_in_order(
        msgs in vec(message(), 1..8),
        cuts in vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            encode_frame(m, limits::HARD_MAX_FRAME_SIZE, &mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();

        let wire = Bytes::from(wire);
        let mut reader = FrameReader::new(limits::HARD_MAX_FRAME_SIZE);
        let mut out = Vec::new();
        for pair in points.windows(2) {
            let mut chunk = wire.slice(pair[0]..pair[1]);
            while let Some(decoded) = reader.next_message(&mut chunk).unwrap() {
                out.push(decoded);
            }
            prop_assert!(chunk.is_empty());
        }
        let expected: Vec<Decoded> = msgs.into_iter().map(Decoded::Message).collect();
        prop_assert_eq!(out, expected);
        prop_assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn control_datagrams_round_trip(c in datagram_control()) {
        let mut out = Vec::new();
        datagram::encode_control_datagram(&c, &mut out).unwrap();
        prop_assert_eq!(parse_datagram(&Bytes::from(out)).unwrap(), Datagram::Control(c));
    }

    #[test]
    fn media_datagrams_round_trip(id in media(), packet in rtp()) {
        let mut buf = [0u8; 1400];
        let n = write_media_datagram(id, &packet, &mut buf).unwrap();
        prop_assert_eq!(n, datagram::media_header_len(id) + packet.len());
        let bytes = Bytes::copy_from_slice(&buf[..n]);
        prop_assert_eq!(
            parse_datagram(&bytes).unwrap(),
            Datagram::Media { media: id, rtp: Bytes::from(packet.clone()) }
        );
        let (parsed_id, rtp) = datagram::parse_media(&buf[..n]).unwrap();
        prop_assert_eq!(parsed_id, id);
        prop_assert_eq!(rtp, &packet[..]);
    }

    #[test]
    fn padding_datagrams_round_trip(len in 0usize..1500, prefix in vec(any::<u8>(), 0..4)) {
        // Written after what the buffer holds (a WebTransport prefix), `len` bytes in all.
        let mut out = prefix.clone();
        write_padding(&mut out, len);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        let padding = Bytes::copy_from_slice(&out[prefix.len()..]);
        prop_assert_eq!(padding.len(), len.max(1));
        prop_assert_eq!(parse_datagram(&padding).unwrap(), Datagram::Padding { len: len.max(1) });
    }

    #[test]
    fn any_bytes_after_the_padding_kind_are_padding(tail in vec(any::<u8>(), 0..1500)) {
        let mut d = vec![datagram::KIND_PADDING];
        d.extend_from_slice(&tail);
        prop_assert_eq!(
            parse_datagram(&Bytes::from(d)).unwrap(),
            Datagram::Padding { len: tail.len() + 1 }
        );
    }

    #[test]
    fn varints_round_trip(v in 0..=varint::MAX) {
        let mut out = [0u8; 8];
        let n = varint::encode(v, &mut out).unwrap();
        prop_assert_eq!(varint::decode(&out[..n]).unwrap(), (v, n));
        for short in 0..n {
            let incomplete = matches!(
                varint::decode(&out[..short]),
                Err(varint::VarIntError::Incomplete { .. })
            );
            prop_assert!(incomplete);
        }
    }
}
