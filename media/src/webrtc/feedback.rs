//! The interceptor that lets a subscriber's feedback reach the endpoint, and the interceptors
//! `rtc` still runs.
//!
//! `rtc` ends the inbound RTCP path with a terminus that consumes every packet not marked
//! [`Attribute::DeliverToApplication`] (DESIGN §11): RTCP is control traffic its own interceptors
//! act on. The endpoint sends forwarded RTP itself, so the feedback about it is the endpoint's
//! to act on: the interceptor marks PLI and FIR (relayed to the publisher), NACK (answered from
//! the stream's packet cache), transport-wide congestion control feedback and REMB (for the
//! bandwidth estimate). Receiver reports stay with `rtc`.
//!
//! Transport-wide feedback and REMB are also copied here, before `rtc` routes the compound
//! packet: `rtc` hands RTCP to the application by the SSRC its first packet names, and a
//! receiver names the stream of the last packet it got — after a probe, the RTX stream of its
//! padding, which `rtc` does not know as a send stream, so that it drops the feedback. The
//! endpoint takes those from the [`TransportFeedbackSink`] instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, Packet, ReceiverReportBuilder, Registry, Slot,
    StreamInfo, TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use rtc::sansio::Protocol;

use super::RtcError;

/// Marks inbound compound RTCP that carries a PLI or FIR for delivery to the application (or,
/// made with [`DeliverKeyframeRequests::all_rtcp`], every inbound RTCP packet).
///
/// The endpoint installs it on every peer. It is public so that a `webrtc` (async) peer — a test
/// client or a tool — can install it too and see the keyframe requests (or the reports) the
/// bridge sends it.
#[derive(Default)]
pub struct DeliverKeyframeRequests {
    all: bool,
    /// Also NACK, transport-wide feedback and REMB: the endpoint's own peers.
    feedback: bool,
    /// Where transport-wide feedback and REMB go, whatever SSRC they name.
    sink: Option<TransportFeedbackSink>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// Transport-wide feedback about what a peer received, as it arrived.
#[derive(Debug, Clone)]
pub(crate) enum TransportFeedback {
    /// Transport-wide congestion control feedback.
    Twcc(TransportLayerCc),
    /// A receiver-estimated maximum bitrate, bits per second.
    Remb(u64),
}

/// Transport feedback copied by a peer's [`DeliverKeyframeRequests`] for the endpoint, which
/// drains it after each input to the peer (bounded: [`MAX_SINK`], the oldest dropped).
pub(crate) type TransportFeedbackSink = Arc<Mutex<VecDeque<TransportFeedback>>>;

/// The most transport feedback packets waiting in a sink (the endpoint drains it after every
/// datagram, so more means a burst of hundreds in one datagram, which no receiver sends).
pub(crate) const MAX_SINK: usize = 64;

impl DeliverKeyframeRequests {
    /// One that delivers every inbound RTCP packet (reports included), not only keyframe
    /// requests: for a peer that wants to see what the other side reports.
    pub fn all_rtcp() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// One that delivers a subscriber's feedback about forwarded RTP too, its transport
    /// feedback into `sink` (see the module docs).
    pub(crate) fn feedback(sink: TransportFeedbackSink) -> Self {
        Self {
            feedback: true,
            sink: Some(sink),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for DeliverKeyframeRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverKeyframeRequests")
            .field("all", &self.all)
            .field("feedback", &self.feedback)
            .field("reads", &self.reads.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// The interceptors `rtc` runs for received streams — NACK generator, receiver reports, TWCC
/// receiver — and the simulcast header extensions, after those already in `registry`. Sent
/// streams have none: the endpoint sends forwarded RTP itself ([`super::send`]). `nack` and
/// `nack pli` are offered for video: the endpoint answers NACKs.
pub(crate) fn register_interceptors(
    registry: Registry,
    media_engine: &mut MediaEngine,
) -> Result<Registry, RtcError> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = registry.with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(registry.with(Slot::ReceiverReport, ReceiverReportBuilder::new().build()))
}

/// Whether an RTCP packet asks for a keyframe.
pub(crate) fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Whether an RTCP packet is feedback about sent media the endpoint acts on.
pub(crate) fn is_feedback(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    is_keyframe_request(packet)
        || any.is::<TransportLayerNack>()
        || any.is::<TransportLayerCc>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverKeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let (Some(sink), Packet::Rtcp(packets)) = (&self.sink, &msg.message.packet) {
            let mut sink = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for packet in packets {
                let any = packet.as_any();
                let copied = if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                    TransportFeedback::Twcc(cc.clone())
                } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    TransportFeedback::Remb(remb.bitrate.max(0.0) as u64)
                } else {
                    continue;
                };
                if sink.len() >= MAX_SINK {
                    sink.pop_front();
                }
                sink.push_back(copied);
            }
        }
        if let Packet::Rtcp(packets) = &msg.message.packet
            && (self.all
                || packets.iter().any(|p| {
                    is_keyframe_request(p.as_ref()) || (self.feedback && is_feedback(p.as_ref()))
                }))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for DeliverKeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;
    use rtc::shared::TransportMessage;

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn transport_feedback_reaches_the_sink_whatever_ssrc_it_names_and_the_sink_is_bounded() {
        let sink = TransportFeedbackSink::default();
        let mut interceptor = DeliverKeyframeRequests::feedback(Arc::clone(&sink));
        // Feedback naming an SSRC no send stream has (a receiver names the stream it last got:
        // after a probe, the padding's RTX stream), and a REMB.
        let twcc = TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 0xdead_beef,
            ..TransportLayerCc::default()
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 300_000.0,
            ssrcs: vec![0xdead_beef],
        };
        interceptor
            .handle_read(rtcp(vec![Box::new(twcc), Box::new(remb)]))
            .expect("read");
        {
            let got = sink.lock().expect("not poisoned");
            assert_eq!(got.len(), 2);
            assert!(matches!(&got[0], TransportFeedback::Twcc(cc) if cc.media_ssrc == 0xdead_beef));
            assert!(matches!(got[1], TransportFeedback::Remb(300_000)));
        }
        // The packet still goes on, marked for the application.
        let read = interceptor.poll_read().expect("passed on");
        assert!(read.message.has(&Attribute::DeliverToApplication));

        // A sink nobody drains keeps the newest MAX_SINK.
        for n in 0..(MAX_SINK as u32 + 10) {
            let remb = ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate: n as f32,
                ssrcs: vec![],
            };
            interceptor
                .handle_read(rtcp(vec![Box::new(remb)]))
                .expect("read");
        }
        let got = sink.lock().expect("not poisoned");
        assert_eq!(got.len(), MAX_SINK);
        assert!(
            matches!(got.back(), Some(TransportFeedback::Remb(n)) if *n == MAX_SINK as u64 + 9)
        );
    }
}
