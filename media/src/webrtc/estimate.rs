//! A WebRTC subscriber's estimate, from the transport-wide congestion control feedback (TWCC)
//! it sends about what the bridge forwarded to it, or from its REMB when it sends no TWCC.
//!
//! The estimate itself is [`DelayEstimator`]'s, from the packets' departures recorded here
//! ([`on_sent`](WebRtcEstimator::on_sent)) joined with the arrivals each feedback reports.
//!
//! Without TWCC, REMB is taken as the estimate (a clear link of that rate).

use std::time::Instant;

use rtc::interceptor::convert_twcc;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use crate::bwe::{DelayEstimator, Estimate, PacketFate};

/// Departures remembered, by transport-wide sequence number modulo this (about 2 s at 1 000
/// packets a second; feedback comes every 50–100 ms).
const SLOTS: usize = 2048;

/// Padding packets reported missing, none arrived, before a receiver is taken not to report
/// padding ([`WebRtcEstimator::padding_unreported`]).
pub const PADDING_JUDGED: u64 = 50;

#[derive(Debug, Clone, Copy)]
struct Sent {
    twcc: u16,
    size: u32,
    departure: Instant,
    /// A probe's padding: its loss is not the link's (a receiver may not report padding at
    /// all), only its arrival counts.
    padding: bool,
}

/// One WebRTC subscriber leg's estimate (see the module docs).
pub struct WebRtcEstimator {
    sent: Vec<Option<Sent>>,
    /// The estimate from TWCC feedback.
    delay: DelayEstimator,
    /// The estimate from REMB, while no TWCC feedback has come.
    remb: Option<Estimate>,
    /// Whether any TWCC feedback came (then REMB is ignored).
    twcc: bool,
    /// This feedback's packets, in the order they left.
    packets: Vec<PacketFate>,
    /// Padding packets reported as arrived, and as not arrived, so far.
    padding_arrived: u64,
    padding_missing: u64,
}

impl std::fmt::Debug for WebRtcEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcEstimator")
            .field("delay", &self.delay)
            .field("remb", &self.remb)
            .field("twcc", &self.twcc)
            .finish_non_exhaustive()
    }
}

impl Default for WebRtcEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl WebRtcEstimator {
    /// An estimator with nothing seen yet (its departure table is allocated at the first send).
    #[must_use]
    pub fn new() -> Self {
        Self {
            sent: Vec::new(),
            delay: DelayEstimator::new(),
            remb: None,
            twcc: false,
            packets: Vec::new(),
            padding_arrived: 0,
            padding_missing: 0,
        }
    }

    /// The latest estimate.
    #[must_use]
    pub fn estimate(&self) -> Option<Estimate> {
        if self.twcc {
            self.delay.estimate()
        } else {
            self.remb
        }
    }

    /// Whether the estimate comes from TWCC feedback (once any came, REMB is ignored).
    pub fn uses_twcc(&self) -> bool {
        self.twcc
    }

    /// Whether the receiver's feedback leaves a probe's padding out: [`PADDING_JUDGED`] padding
    /// packets were reported as not arrived and none as arrived (webrtc-rs, for one, records
    /// only the streams it bound, not an RTX stream's padding). Such a leg cannot be probed.
    pub fn padding_unreported(&self) -> bool {
        self.padding_arrived == 0 && self.padding_missing >= PADDING_JUDGED
    }

    /// A packet of `size` bytes left for the subscriber at `now` with transport-wide sequence
    /// number `twcc` (and RTP `ssrc`/`rtp_seq`).
    pub fn on_sent(&mut self, twcc: u16, ssrc: u32, rtp_seq: u16, size: usize, now: Instant) {
        self.record(twcc, (ssrc, rtp_seq), size, now, false);
    }

    /// A probe's padding packet left as [`on_sent`](Self::on_sent) says: it counts when the
    /// feedback reports it arrived, and its loss is not the link's.
    pub fn on_padding_sent(
        &mut self,
        twcc: u16,
        ssrc: u32,
        rtp_seq: u16,
        size: usize,
        now: Instant,
    ) {
        self.record(twcc, (ssrc, rtp_seq), size, now, true);
    }

    fn record(&mut self, twcc: u16, _stream: (u32, u16), size: usize, now: Instant, padding: bool) {
        if self.sent.is_empty() {
            self.sent = vec![None; SLOTS];
        }
        self.sent[usize::from(twcc) % SLOTS] = Some(Sent {
            twcc,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            departure: now,
            padding,
        });
    }

    /// TWCC feedback arrived at `now`; returns the estimate after it.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) -> Option<Estimate> {
        self.twcc = true;
        self.packets.clear();
        // A status chunk carries a fixed number of symbols: those past the feedback's packet
        // count are filler, not packets reported missing.
        let count = usize::from(feedback.packet_status_count);
        for ack in convert_twcc(feedback).into_iter().take(count) {
            let Some(Some(sent)) = self.sent.get(usize::from(ack.sequence_number) % SLOTS) else {
                continue;
            };
            if sent.twcc != ack.sequence_number {
                // Overwritten: too old to know.
                continue;
            }
            if sent.padding {
                if ack.arrived {
                    self.padding_arrived += 1;
                } else {
                    // Not the link's loss: the receiver may not report padding.
                    self.padding_missing += 1;
                    continue;
                }
            }
            self.packets.push(PacketFate {
                departure: sent.departure,
                arrival: if ack.arrived { ack.arrival } else { None },
                size: sent.size,
            });
        }
        // In the order they left (a stable sort: packets that left at the same instant keep
        // the feedback's order, their transport-wide sequence).
        self.packets.sort_by_key(|f| f.departure);
        self.delay.on_feedback(&self.packets, now)
    }

    /// REMB of `bps` arrived: the estimate while no TWCC feedback has come (a clear link of that
    /// rate); ignored once TWCC is used.
    pub fn on_remb(&mut self, bps: u64) -> Option<Estimate> {
        if self.twcc {
            return self.estimate();
        }
        let estimate = Estimate::clear(bps);
        self.remb = Some(estimate);
        Some(estimate)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bwe::LinkState;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, StatusChunkTypeTcc, SymbolTypeTcc,
    };

    /// TWCC feedback for packets `first..first + n`, each arrived (`Some(delta)` from the one
    /// before, in 250 µs units) or lost.
    fn feedback(
        first: u16,
        arrivals: &[Option<i64>],
        reference_time: u32,
        count: u8,
    ) -> TransportLayerCc {
        let mut chunks = Vec::new();
        let mut deltas = Vec::new();
        for &a in arrivals {
            let symbol = match a {
                Some(d) if (0..=255).contains(&d) => {
                    deltas.push(RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                        delta: d * 250,
                    });
                    SymbolTypeTcc::PacketReceivedSmallDelta
                }
                Some(d) => {
                    deltas.push(RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
                        delta: d * 250,
                    });
                    SymbolTypeTcc::PacketReceivedLargeDelta
                }
                None => SymbolTypeTcc::PacketNotReceived,
            };
            chunks.push(PacketStatusChunk::RunLengthChunk(
                rtc::rtcp::transport_feedbacks::transport_layer_cc::RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: symbol,
                    run_length: 1,
                },
            ));
        }
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: first,
            packet_status_count: arrivals.len() as u16,
            reference_time,
            fb_pkt_count: count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        }
    }

    /// Runs `seconds` of a leg sending 1 000-byte packets at `send_bps` through a bottleneck of
    /// `link_bps` (a queue that grows when sending exceeds it), with feedback every 100 ms.
    fn run(est: &mut WebRtcEstimator, send_bps: u64, link_bps: u64, seconds: u64) -> Estimate {
        let t0 = Instant::now();
        let interval = Duration::from_secs_f64(8_000.0 / send_bps as f64);
        let service = Duration::from_secs_f64(8_000.0 / link_bps as f64);
        let mut seq: u16 = 0;
        let mut at = t0;
        let mut link_free = t0;
        let mut pending: Vec<(u16, Instant)> = Vec::new();
        let mut next_feedback = t0 + Duration::from_millis(100);
        let mut count = 0u8;
        let end = t0 + Duration::from_secs(seconds);
        while at < end {
            est.on_sent(seq, 7, seq, 1_000, at);
            let arrival = link_free.max(at) + service;
            link_free = arrival;
            pending.push((seq, arrival + Duration::from_millis(20)));
            seq = seq.wrapping_add(1);
            at += interval;
            if at >= next_feedback {
                let ready: Vec<(u16, Instant)> =
                    pending.iter().copied().filter(|&(_, a)| a <= at).collect();
                pending.retain(|&(_, a)| a > at);
                if let Some(&(first, first_at)) = ready.first() {
                    // Arrivals are deltas from the reference time (in 64 ms units), then from
                    // each other.
                    let reference =
                        (first_at.saturating_duration_since(t0).as_millis() / 64) as u32;
                    let mut prev = t0 + Duration::from_millis(u64::from(reference) * 64);
                    let arrivals: Vec<Option<i64>> = ready
                        .iter()
                        .map(|&(_, a)| {
                            let d = a.saturating_duration_since(prev).as_micros() as i64 / 250;
                            prev = a;
                            Some(d)
                        })
                        .collect();
                    est.on_feedback(&feedback(first, &arrivals, reference, count), at);
                    count = count.wrapping_add(1);
                }
                next_feedback += Duration::from_millis(100);
            }
        }
        est.estimate().expect("an estimate")
    }

    #[test]
    fn an_app_limited_leg_is_held_near_what_it_delivers() {
        let mut est = WebRtcEstimator::new();
        let e = run(&mut est, 500_000, 20_000_000, 5);
        assert_eq!(e.state, LinkState::Clear);
        let acked = e.acked_bps as f64;
        assert!((acked - 500_000.0).abs() < 60_000.0, "{e:?}");
        assert!(
            e.available_bps as f64 <= 1.5 * acked + 10_000.0 + 1.0,
            "{e:?}"
        );
        assert!(e.available_bps > 600_000, "{e:?}");
    }

    #[test]
    fn sending_above_the_link_is_congestion_below_what_it_delivers() {
        let mut est = WebRtcEstimator::new();
        let e = run(&mut est, 2_000_000, 1_000_000, 4);
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
        assert!(e.available_bps < 1_000_000, "{e:?}");
    }

    #[test]
    fn remb_is_the_estimate_only_without_twcc() {
        let mut est = WebRtcEstimator::new();
        assert_eq!(est.on_remb(800_000).map(|e| e.available_bps), Some(800_000));
        run(&mut est, 300_000, 20_000_000, 2);
        let after = est.on_remb(5_000_000).expect("estimate");
        assert!(after.available_bps < 1_000_000, "{after:?}");
    }

    #[test]
    fn symbols_past_the_packet_count_are_filler_not_losses() {
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            StatusVectorChunk, SymbolSizeTypeTcc,
        };
        // Two packets from `base`, both received, in a two-bit status vector of seven symbols:
        // the five after them are filler (those packets are still on their way).
        let feedback = |base: u16, count: u8| {
            let mut symbols = vec![SymbolTypeTcc::PacketReceivedSmallDelta; 2];
            symbols.extend([SymbolTypeTcc::PacketNotReceived; 5]);
            let delta = RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 1_000,
            };
            TransportLayerCc {
                sender_ssrc: 1,
                media_ssrc: 2,
                base_sequence_number: base,
                packet_status_count: 2,
                reference_time: 0,
                fb_pkt_count: count,
                packet_chunks: vec![PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: symbols,
                })],
                recv_deltas: vec![delta.clone(), delta],
            }
        };
        let mut est = WebRtcEstimator::new();
        let t0 = Instant::now();
        for seq in 0..12u16 {
            est.on_sent(seq, 7, seq, 1_000, t0);
        }
        // Two feedbacks 300 ms apart: a rate window closes.
        est.on_feedback(&feedback(0, 0), t0 + Duration::from_millis(100));
        est.on_feedback(&feedback(2, 1), t0 + Duration::from_millis(400));
        assert_eq!(est.delay.loss(), 0.0, "filler read as losses");
        assert_eq!(est.estimate().map(|e| e.state), Some(LinkState::Clear));
    }

    #[test]
    fn an_overflow_that_drained_is_not_congestion_a_window_later() {
        let mut est = WebRtcEstimator::new();
        let t0 = Instant::now();
        for seq in 0..400u16 {
            est.on_sent(
                seq,
                7,
                seq,
                1_000,
                t0 + Duration::from_millis(u64::from(seq)),
            );
        }
        // 250 ms with half the packets lost (an overflow), then 250 ms with none: the second
        // window is not congested, though the loss averaged over a second still is high.
        let lossy: Vec<Option<i64>> = (0..200).map(|i| (i % 2 == 0).then_some(4)).collect();
        est.on_feedback(&feedback(0, &lossy, 0, 0), t0 + Duration::from_millis(250));
        let e = est.on_feedback(&feedback(0, &lossy, 0, 1), t0 + Duration::from_millis(500));
        assert_eq!(e.map(|e| e.state), Some(LinkState::Congested), "{e:?}");
        let clean: Vec<Option<i64>> = (0..200).map(|_| Some(4)).collect();
        let e = est.on_feedback(
            &feedback(200, &clean, 0, 2),
            t0 + Duration::from_millis(750),
        );
        assert!(
            est.delay.loss() > crate::bwe::CONGESTED_LOSS,
            "the average remembers the overflow"
        );
        assert_ne!(e.map(|e| e.state), Some(LinkState::Congested), "{e:?}");
    }

    #[test]
    fn no_estimate_comes_before_a_rate_to_hold_or_back_off_from() {
        let mut est = WebRtcEstimator::new();
        let t0 = Instant::now();
        for seq in 0..20u16 {
            est.on_sent(
                seq,
                7,
                seq,
                1_000,
                t0 + Duration::from_millis(u64::from(seq)),
            );
        }
        // A first feedback, 120 ms in: sent a millisecond apart, arrived five apart (a queue
        // of 76 ms by the last). Congestion, but no rate measured yet to back off from.
        let mut arrivals = vec![Some(80)];
        arrivals.extend(std::iter::repeat_n(Some(20), 19));
        assert_eq!(
            est.on_feedback(
                &feedback(0, &arrivals, 0, 0),
                t0 + Duration::from_millis(120)
            ),
            None
        );
    }
}
