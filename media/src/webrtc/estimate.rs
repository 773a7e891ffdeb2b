//! A WebRTC subscriber's estimate, from the transport-wide congestion control feedback (TWCC)
//! it sends about what the bridge forwarded to it, or from its REMB when it sends no TWCC.
//!
//! Two delay signals read the packets of each feedback joined with their departures here
//! ([`on_sent`](WebRtcEstimator::on_sent)): GCC's, from `rtc`'s implementation used as a library
//! (its slope estimator — the trend of the one-way delay across packet groups — and its overuse
//! detector, an adaptive threshold on that trend), and the queueing delay itself (the one-way
//! delay over the smallest seen in the last 10–20 s; the clocks' offset cancels out). `rtc`'s
//! detector alone compares the raw per-group trend with a 12.5 ms threshold and misses a queue
//! that grows by a few milliseconds per group (sending at twice the link's rate, say); the
//! queueing delay does not: above 30 ms it is a warning, above 60 ms and growing (or above
//! 150 ms) congestion, as for QUIC. The rate follows the same rule as a QUIC leg
//! ([`crate::bwe::QuicEstimator`]), so the allocator sees both kinds of leg alike and probing
//! works the same way: the acknowledged rate is what the receiver reports as arrived, smoothed
//! over a second; overuse (or loss above 10 %) is congestion and the estimate falls to 0.85 ×
//! acknowledged; loss above 2 % (or the detector seeing the queue drain) is a warning and the
//! estimate holds; otherwise it is clear and at most 1.5 × acknowledged + 10 kbit/s, so that an
//! app-limited leg climbs as it proves what it carries rather than drifting upward. GCC's own
//! AIMD rate control is not used: it grows by 8 % a second, far too slowly to reach a top layer
//! within seconds, and probing does that job here.
//!
//! Without TWCC, REMB is taken as the estimate (a clear link of that rate).

use std::time::{Duration, Instant};

use rtc::interceptor::{OveruseDetector, PacketReport, SlopeEstimator, Usage, convert_twcc};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use crate::bwe::{
    ACK_BONUS_BPS, ACK_GROWTH, Estimate, IDLE_BPS, LinkState, Proven, START_BPS, clear_limit,
};

/// Departures remembered, by transport-wide sequence number modulo this (about 2 s at 1 000
/// packets a second; feedback comes every 50–100 ms).
const SLOTS: usize = 2048;

/// How far back the acknowledged rate and the loss ratio look.
const SMOOTHING: Duration = Duration::from_secs(1);

/// The acknowledged rate is sampled over at least this long.
const RATE_WINDOW: Duration = Duration::from_millis(200);

/// A queueing delay above this is a warning: hold.
const WARNING_QUEUE: Duration = Duration::from_millis(30);

/// A growing queueing delay above this is congestion.
const CONGESTED_QUEUE: Duration = Duration::from_millis(60);

/// A queueing delay above this is congestion, growing or not.
const FULL_QUEUE: Duration = Duration::from_millis(150);

/// The smallest one-way delay is looked for over windows of this length (the current and the
/// previous one), so that a drift of the two clocks cannot move it far.
const BASE_WINDOW: Duration = Duration::from_secs(10);

/// Padding packets reported missing, none arrived, before a receiver is taken not to report
/// padding ([`WebRtcEstimator::padding_unreported`]).
pub const PADDING_JUDGED: u64 = 50;

/// Loss above this is congestion.
const CONGESTED_LOSS: f64 = 0.10;

/// Loss above this is a warning.
const WARNING_LOSS: f64 = 0.02;

/// Under congestion, this share of the acknowledged rate.
const BACKOFF: f64 = 0.85;

#[derive(Debug, Clone, Copy)]
struct Sent {
    twcc: u16,
    ssrc: u32,
    rtp_seq: u16,
    size: u32,
    departure: Instant,
    id: u64,
    /// A probe's padding: its loss is not the link's (a receiver may not report padding at
    /// all), only its arrival counts.
    padding: bool,
}

/// One WebRTC subscriber leg's estimate (see the module docs).
pub struct WebRtcEstimator {
    sent: Vec<Option<Sent>>,
    next_id: u64,
    slope: SlopeEstimator,
    detector: OveruseDetector,
    /// Bytes reported as arrived since `window_start`, and packets reported (padding that did
    /// not arrive aside) and of those, lost.
    window_bytes: u64,
    window_reported: u64,
    window_lost: u64,
    /// Rate windows closed so far, and the loss ratio of the last.
    windows: u64,
    window_loss: f64,
    window_start: Option<Instant>,
    acked_bps: f64,
    loss: f64,
    estimate: Option<Estimate>,
    /// Whether any TWCC feedback came (then REMB is ignored).
    twcc: bool,
    /// Departures are measured from here (the first send).
    epoch: Option<Instant>,
    /// The smallest one-way delay (arrival on the receiver's clock − departure on ours, in ms)
    /// of the current window, of the previous one, and when the current began.
    base: Option<(f64, f64, Instant)>,
    /// The queueing delay of the latest feedback.
    queue: Duration,
    /// What the leg has shown it carries.
    proven: Proven,
    /// When the previous feedback came.
    last_feedback: Option<Instant>,
    reports: Vec<PacketReport>,
    /// Padding packets reported as arrived, and as not arrived, so far.
    padding_arrived: u64,
    padding_missing: u64,
}

impl std::fmt::Debug for WebRtcEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcEstimator")
            .field("acked_bps", &self.acked_bps)
            .field("loss", &self.loss)
            .field("estimate", &self.estimate)
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
            next_id: 0,
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            window_bytes: 0,
            window_reported: 0,
            window_lost: 0,
            windows: 0,
            window_loss: 0.0,
            window_start: None,
            acked_bps: 0.0,
            loss: 0.0,
            estimate: None,
            twcc: false,
            epoch: None,
            base: None,
            queue: Duration::ZERO,
            proven: Proven::default(),
            last_feedback: None,
            reports: Vec::new(),
            padding_arrived: 0,
            padding_missing: 0,
        }
    }

    /// The latest estimate.
    #[must_use]
    pub fn estimate(&self) -> Option<Estimate> {
        self.estimate
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

    fn record(
        &mut self,
        twcc: u16,
        (ssrc, rtp_seq): (u32, u16),
        size: usize,
        now: Instant,
        padding: bool,
    ) {
        if self.sent.is_empty() {
            self.sent = vec![None; SLOTS];
        }
        self.epoch.get_or_insert(now);
        self.sent[usize::from(twcc) % SLOTS] = Some(Sent {
            twcc,
            ssrc,
            rtp_seq,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            departure: now,
            id: self.next_id,
            padding,
        });
        self.next_id += 1;
    }

    /// TWCC feedback arrived at `now`; returns the estimate after it.
    pub fn on_feedback(&mut self, feedback: &TransportLayerCc, now: Instant) -> Option<Estimate> {
        self.twcc = true;
        self.reports.clear();
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
            self.reports.push(PacketReport {
                ssrc: sent.ssrc,
                id: sent.id,
                rtp_sequence_number: sent.rtp_seq,
                is_twcc: true,
                twcc_sequence_number: sent.twcc,
                size: sent.size as usize,
                arrived: ack.arrived,
                departure: sent.departure,
                arrival: ack.arrival,
                ecn: Ecn::NotEct,
            });
        }
        if self.reports.is_empty() {
            return self.estimate;
        }
        self.reports.sort_by_key(|r| r.id);
        let mut usage = self.detector.usage();
        let mut arrived = 0u64;
        let mut lost = 0u32;
        for report in &self.reports {
            if report.arrived {
                arrived += report.size as u64;
            } else {
                lost += 1;
            }
            if report.arrived
                && let Some(trend) = self.slope.accumulate(report)
            {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        let reported = self.reports.len() as u64;

        // The queueing delay: this feedback's last one-way delay over the smallest seen lately
        // (the clocks' offset cancels out).
        let epoch = self.epoch.unwrap_or(now);
        let previous_queue = self.queue;
        if let Some(owd) = self.reports.iter().rev().find_map(|r| {
            let arrival = r.arrival?.as_secs_f64() * 1000.0;
            let departure = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
            Some(arrival - departure)
        }) {
            let least = self.reports.iter().filter_map(|r| {
                let arrival = r.arrival?.as_secs_f64() * 1000.0;
                let departure = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
                Some(arrival - departure)
            });
            let least = least.fold(owd, f64::min);
            let (current, previous, since) = self.base.get_or_insert((least, least, now));
            if now.saturating_duration_since(*since) >= BASE_WINDOW {
                *previous = *current;
                *current = least;
                *since = now;
            } else {
                *current = current.min(least);
            }
            let base = current.min(*previous);
            self.queue = Duration::from_secs_f64((owd - base).max(0.0) / 1000.0);
        }
        let queue = self.queue;

        // What the leg has shown it carries counts every feedback's arrivals (a probe's
        // padding included), over the time since the previous feedback.
        // (The first feedback covers what arrived since the first send.)
        let since = self
            .last_feedback
            .replace(now)
            .or(self.epoch)
            .unwrap_or(now);
        let clear_so_far = usage != Usage::Over
            && queue <= WARNING_QUEUE
            && self.estimate.is_none_or(|e| e.state == LinkState::Clear);
        self.proven.record(arrived, since, now, clear_so_far);

        // The acknowledged rate and the loss ratio, over windows of at least RATE_WINDOW (every
        // feedback of the window counts).
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += arrived;
        self.window_reported += reported;
        self.window_lost += u64::from(lost);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let weight = (elapsed.as_secs_f64() / SMOOTHING.as_secs_f64()).min(1.0);
            let rate = self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64();
            let ratio = self.window_lost as f64 / self.window_reported.max(1) as f64;
            if self.windows == 0 {
                // The first window is the whole history: no average to start from zero.
                self.acked_bps = rate;
                self.loss = ratio;
            } else {
                self.acked_bps += weight * (rate - self.acked_bps);
                self.loss += weight * (ratio - self.loss);
            }
            self.windows += 1;
            self.window_loss = ratio;
            self.window_bytes = 0;
            self.window_reported = 0;
            self.window_lost = 0;
            self.window_start = Some(now);
        } else if self.estimate.is_some() && usage != Usage::Over && self.queue <= WARNING_QUEUE {
            return self.estimate;
        }

        // Heavy loss lately is congestion while it lasts (the last window's too: the average
        // alone kept a leg congested, backing off window after window, for a second after one
        // overflow had drained); lighter loss lately, a warning.
        let state = if usage == Usage::Over
            || (self.loss > CONGESTED_LOSS && self.window_loss > CONGESTED_LOSS)
            || queue > FULL_QUEUE
            || (queue > CONGESTED_QUEUE && queue > previous_queue)
        {
            LinkState::Congested
        } else if queue > WARNING_QUEUE || self.loss > WARNING_LOSS {
            LinkState::Warning
        } else {
            LinkState::Clear
        };
        if self.windows == 0 && state != LinkState::Clear {
            // No rate measured yet to hold or back off from: no estimate until there is one.
            return self.estimate;
        }
        let acked = self.acked_bps;
        if state == LinkState::Congested {
            self.proven.reset();
        }
        let proven = clear_limit(acked, self.proven.rate(), ACK_GROWTH, ACK_BONUS_BPS);
        let available = match state {
            LinkState::Congested => BACKOFF * acked,
            LinkState::Warning => self
                .estimate
                .map_or(acked, |e| e.available_bps as f64)
                .min(proven),
            // A leg that carries next to nothing yet (a viewer that just joined) has shown
            // nothing: it starts where a QUIC leg does.
            LinkState::Clear if acked < f64::from(IDLE_BPS) => proven.max(f64::from(START_BPS)),
            LinkState::Clear => proven,
        };
        let estimate = Estimate {
            available_bps: available.max(0.0) as u64,
            acked_bps: acked as u64,
            proven_bps: acked.max(self.proven.rate()) as u64,
            state,
            queue_delay: queue,
        };
        self.estimate = Some(estimate);
        Some(estimate)
    }

    /// REMB of `bps` arrived: the estimate while no TWCC feedback has come (a clear link of that
    /// rate); ignored once TWCC is used.
    pub fn on_remb(&mut self, bps: u64) -> Option<Estimate> {
        if self.twcc {
            return self.estimate;
        }
        let estimate = Estimate::clear(bps);
        self.estimate = Some(estimate);
        Some(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(est.loss, 0.0, "filler read as losses");
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
            est.loss > CONGESTED_LOSS,
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
