//! A QUIC leg's estimate from the connection's own counters.

use std::time::{Duration, Instant};

use super::{DelayEstimator, Estimate, LinkState, PacketFate, Proven, clear_limit};

/// A leg delivering less than this (bits per second) is idle: nothing to judge it by yet.
pub const IDLE_BPS: u32 = 100_000;

/// An idle, clear leg's estimate (bits per second): where a new viewer starts.
pub const START_BPS: u32 = 2_500_000;

/// How often, between two readings of its counters, a QUIC leg's estimate is refreshed from its
/// acknowledgements ([`QuicEstimator::update_with_acks`] with the last reading's counters):
/// about once per [`RefreshPace::PACKETS`] datagrams sent, every [`RefreshPace::MIN`] at the most
/// and every [`RefreshPace::MAX`] at the least while datagrams go out (each refresh is a wake-up
/// of the session, most of its cost, and one that finds two or three acknowledgements tells
/// little); while none go out, twice as long each time, up to [`RefreshPace::IDLE_MAX`] (media
/// that starts again is seen within that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPace {
    pause: Duration,
    sent: u64,
}

impl RefreshPace {
    /// The shortest pause between refreshes.
    pub const MIN: Duration = Duration::from_millis(50);
    /// The longest while datagrams go out.
    pub const MAX: Duration = Duration::from_millis(250);
    /// The longest while none do.
    pub const IDLE_MAX: Duration = Duration::from_secs(4);
    /// About this many datagrams between refreshes.
    pub const PACKETS: u64 = 10;

    /// A pace for a leg that has sent `sent` datagrams so far; the first pause is
    /// [`Self::MIN`].
    #[must_use]
    pub fn new(sent: u64) -> Self {
        Self {
            pause: Self::MIN,
            sent,
        }
    }

    /// The first pause.
    #[must_use]
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// At a refresh, with `sent` datagrams sent (or queued) so far: whether to refresh now
    /// (datagrams went out since the last), and the pause until the next.
    pub fn ticked(&mut self, sent: u64) -> (bool, Duration) {
        let new = sent.saturating_sub(self.sent);
        self.sent = sent;
        if new == 0 {
            self.pause = (self.pause * 2).min(Self::IDLE_MAX);
            return (false, self.pause);
        }
        // The time PACKETS datagrams take at the rate of the last pause.
        let per = self.pause.as_secs_f64() / new as f64;
        self.pause =
            Duration::from_secs_f64(per * Self::PACKETS as f64).clamp(Self::MIN, Self::MAX);
        (true, self.pause)
    }
}

/// One reading of a QUIC connection's counters (cumulative ones as the transport keeps them),
/// taken by the gateway at a steady tick (about every 100 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicSample {
    /// When it was read.
    pub at: Instant,
    /// UDP bytes sent so far.
    pub sent_bytes: u64,
    /// Of those, bytes declared lost so far.
    pub lost_bytes: u64,
    /// Packets sent so far.
    pub sent_packets: u64,
    /// Of those, packets declared lost so far.
    pub lost_packets: u64,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Minimum round-trip time seen.
    pub min_rtt: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Congestion events so far.
    pub congestion_events: u64,
    /// Datagram bytes queued for sending and not sent yet.
    pub buffered_bytes: u64,
}

/// The thresholds of [`QuicEstimator`]; the defaults are where the reasoning of the module docs
/// puts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuicEstimatorConfig {
    /// How far back the acknowledged rate and the loss ratio look (their smoothing).
    pub smoothing: Duration,
    /// A queueing delay above this is a warning: hold.
    pub warning_queue: Duration,
    /// A congestion event with a queueing delay above this is congestion (the warning's
    /// threshold by default: a loss while a queue builds is the queue overflowing; without a
    /// queue, random loss is no reason to back off).
    pub congested_queue: Duration,
    /// Datagrams waiting longer than this in the send buffer is congestion.
    pub congested_buffer: Duration,
    /// Datagrams waiting longer than this in the send buffer means the congestion window is
    /// what holds the leg back: only then is the window a ceiling.
    pub window_limited_buffer: Duration,
    /// A loss ratio above this is congestion.
    pub congested_loss: f64,
    /// Under congestion the estimate is this share of the acknowledged rate.
    pub backoff: f64,
    /// The ceiling: this multiple of `cwnd × 8 / srtt`.
    pub cwnd_headroom: f64,
    /// When clear, at most `ack_growth × acked + ack_bonus_bps`: an app-limited leg proves what
    /// it can carry step by step.
    pub ack_growth: f64,
    /// See `ack_growth`.
    pub ack_bonus_bps: u64,
}

impl Default for QuicEstimatorConfig {
    fn default() -> Self {
        Self {
            smoothing: Duration::from_secs(1),
            warning_queue: Duration::from_millis(30),
            congested_queue: Duration::from_millis(30),
            congested_buffer: Duration::from_millis(150),
            window_limited_buffer: Duration::from_millis(20),
            congested_loss: 0.10,
            backoff: 0.85,
            cwnd_headroom: 1.25,
            ack_growth: super::ACK_GROWTH,
            ack_bonus_bps: super::ACK_BONUS_BPS as u64,
        }
    }
}

/// A QUIC leg's estimate (see the module docs of [`super`]).
#[derive(Debug)]
pub struct QuicEstimator {
    config: QuicEstimatorConfig,
    last: Option<QuicSample>,
    acked_bps: f64,
    loss: f64,
    proven: Proven,
    estimate: Option<Estimate>,
    /// The estimate from per-packet acknowledgements, once any came
    /// ([`update_with_acks`](Self::update_with_acks)).
    delay: Option<DelayEstimator>,
}

impl QuicEstimator {
    /// An estimator with nothing seen yet.
    pub fn new(config: QuicEstimatorConfig) -> Self {
        Self {
            config,
            last: None,
            acked_bps: 0.0,
            loss: 0.0,
            proven: Proven::default(),
            estimate: None,
            delay: None,
        }
    }

    /// The latest estimate, once two samples have been seen.
    pub fn estimate(&self) -> Option<Estimate> {
        self.estimate
    }

    /// Takes a new reading with the acknowledgements that came since the last one (each
    /// packet's departure and its acknowledgement's arrival); returns the estimate after it.
    ///
    /// The acknowledgements are per-packet feedback, as a WebRTC receiver's TWCC is: the
    /// estimate is [`DelayEstimator`]'s (the trend of the delay across packet groups, the
    /// queueing delay, the acknowledged rate, losses from the counters), read far more finely
    /// than the counters' smoothed RTT. The counters add what only the sender sees: datagrams
    /// waiting long in the send buffer are a warning (congestion when the path shows a queue
    /// too), and the congestion window is a ceiling while it is what holds the leg back.
    pub fn update_with_acks(
        &mut self,
        sample: QuicSample,
        acks: &[PacketFate],
    ) -> Option<Estimate> {
        let Some(last) = self.last.replace(sample) else {
            self.delay.get_or_insert_with(DelayEstimator::new);
            return None;
        };
        if sample.at <= last.at {
            self.last = Some(last);
            return self.estimate;
        }
        let c = self.config;
        let lost = sample.lost_packets.saturating_sub(last.lost_packets);
        let delay = self.delay.get_or_insert_with(DelayEstimator::new);
        let mut estimate = delay.on_feedback_and_losses(acks, lost, sample.at)?;
        let (window_bps, buffer_delay) =
            window_and_buffer_delay(&sample, estimate.acked_bps as f64);
        // Datagrams waiting for a window that is still opening (slow start: no congestion
        // event yet) say nothing of the link yet.
        let opening = sample.congestion_events == 0 || sample.cwnd > last.cwnd;
        if buffer_delay > c.congested_buffer && !opening {
            if estimate.queue_delay > c.warning_queue {
                estimate.state = LinkState::Congested;
                estimate.available_bps = estimate
                    .available_bps
                    .min((c.backoff * estimate.acked_bps as f64) as u64);
            } else if estimate.state == LinkState::Clear {
                estimate.state = LinkState::Warning;
                if let Some(e) = self.estimate {
                    estimate.available_bps = estimate.available_bps.min(e.available_bps);
                }
            }
        }
        if buffer_delay > c.window_limited_buffer && window_bps > 0.0 && !opening {
            let ceiling = (c.cwnd_headroom * window_bps) as u64;
            estimate.available_bps = estimate.available_bps.min(ceiling);
        }
        self.estimate = Some(estimate);
        Some(estimate)
    }

    /// Takes a new reading; returns the estimate after it (`None` for the first reading, or one
    /// not later than the previous).
    pub fn update(&mut self, sample: QuicSample) -> Option<Estimate> {
        let last = self.last.replace(sample)?;
        let dt = sample.at.saturating_duration_since(last.at);
        if dt.is_zero() {
            self.last = Some(last);
            return self.estimate;
        }
        let c = self.config;
        let weight = (dt.as_secs_f64() / c.smoothing.as_secs_f64()).min(1.0);

        // What the leg delivered: sent minus declared lost, over the interval.
        let sent = sample.sent_bytes.saturating_sub(last.sent_bytes);
        let lost = sample.lost_bytes.saturating_sub(last.lost_bytes);
        let delivered_bps = sent.saturating_sub(lost) as f64 * 8.0 / dt.as_secs_f64();
        if self.estimate.is_none() || self.acked_bps < f64::from(IDLE_BPS) {
            // The first interval is the whole history: no average to start from zero. So is
            // the first after an idle spell (a viewer connects before its media starts): an
            // average still climbing from an idle leg's rate would make the first congestion
            // back off far below what the link carries.
            self.acked_bps = delivered_bps;
        } else {
            self.acked_bps += weight * (delivered_bps - self.acked_bps);
        }
        let packets = sample.sent_packets.saturating_sub(last.sent_packets);
        if packets > 0 {
            let lost = sample.lost_packets.saturating_sub(last.lost_packets);
            let ratio = (lost as f64 / packets as f64).min(1.0);
            self.loss += weight * (ratio - self.loss);
        }

        let queue_delay = sample.srtt.saturating_sub(sample.min_rtt);
        let (_, buffer_delay) = window_and_buffer_delay(&sample, self.acked_bps);
        let congestion_event = sample.congestion_events > last.congestion_events;
        // Datagrams waiting long for the window are congestion when the path shows a queue
        // too; without one (a window still opening, as in slow start) they only say to hold.
        let state = if self.loss > c.congested_loss
            || (congestion_event && queue_delay > c.congested_queue)
            || (buffer_delay > c.congested_buffer && queue_delay > c.warning_queue)
        {
            LinkState::Congested
        } else if queue_delay > c.warning_queue || buffer_delay > c.congested_buffer {
            LinkState::Warning
        } else {
            LinkState::Clear
        };
        if self.estimate.is_none() && state == LinkState::Warning {
            // Nothing to hold yet: no estimate until the leg shows which way it goes.
            self.last = Some(sample);
            return None;
        }

        let acked = self.acked_bps;
        if state == LinkState::Congested {
            self.proven.reset();
        }
        self.proven.record(
            sent.saturating_sub(lost),
            last.at,
            sample.at,
            state == LinkState::Clear,
        );
        // The window is a ceiling only while it is what holds the leg back (datagrams wait for
        // it): an app-limited leg's window does not grow (Cubic), and under random loss it
        // shrinks far below what the link carries, neither of which says anything about the
        // link while everything given is sent at once.
        let ceiling = if sample.srtt.is_zero() || buffer_delay <= c.window_limited_buffer {
            f64::MAX
        } else {
            c.cwnd_headroom * sample.cwnd as f64 * 8.0 / sample.srtt.as_secs_f64()
        };
        let proven = clear_limit(
            acked,
            self.proven.rate(),
            c.ack_growth,
            c.ack_bonus_bps as f64,
        );
        let available = match state {
            // Below what the leg delivered lately, or in this interval if that was more: the
            // smoothed rate lags a leg that just started (or just climbed), and backing off
            // from it lands far below what the link carries.
            LinkState::Congested => c.backoff * acked.max(delivered_bps),
            // Hold what was given, within the ceiling; never above what a clear leg would get.
            LinkState::Warning => self
                .estimate
                .map_or(acked, |e| e.available_bps as f64)
                .min(ceiling)
                .min(proven),
            // A leg that carries next to nothing yet (a viewer that just joined) has shown
            // nothing: it starts at `START_BPS`, within the ceiling.
            LinkState::Clear if acked < f64::from(IDLE_BPS) => {
                ceiling.min(proven.max(f64::from(START_BPS)))
            }
            LinkState::Clear => ceiling.min(proven),
        };
        let estimate = Estimate {
            available_bps: available.max(0.0) as u64,
            acked_bps: acked as u64,
            proven_bps: acked.max(self.proven.rate()) as u64,
            state,
            queue_delay,
        };
        self.estimate = Some(estimate);
        Some(estimate)
    }
}

/// The congestion window over the RTT (bits per second), and how long the datagrams waiting in
/// the send buffer will take to leave: the buffer drains at the window's rate, or at what the
/// leg delivered (`acked_bps`) if that is more (an app-limited leg delivers less than its
/// window, and a keyframe waiting a moment behind a leg that carried little is no congestion).
fn window_and_buffer_delay(sample: &QuicSample, acked_bps: f64) -> (f64, Duration) {
    let window_bps = if sample.srtt.is_zero() {
        0.0
    } else {
        sample.cwnd as f64 * 8.0 / sample.srtt.as_secs_f64()
    };
    let drain_bps = acked_bps.max(window_bps);
    let buffer_delay = if drain_bps >= 1.0 {
        Duration::from_secs_f64(sample.buffered_bytes as f64 * 8.0 / drain_bps)
    } else if sample.buffered_bytes > 0 {
        Duration::MAX
    } else {
        Duration::ZERO
    };
    (window_bps, buffer_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leg driven tick by tick: what it sends per tick and how the transport looks.
    struct Leg {
        estimator: QuicEstimator,
        sample: QuicSample,
        /// Arrivals are counted from here.
        epoch: Instant,
    }

    const TICK: Duration = Duration::from_millis(100);

    impl Leg {
        fn new() -> Leg {
            let epoch = Instant::now();
            Leg {
                estimator: QuicEstimator::new(QuicEstimatorConfig::default()),
                epoch,
                sample: QuicSample {
                    at: epoch,
                    sent_bytes: 0,
                    lost_bytes: 0,
                    sent_packets: 0,
                    lost_packets: 0,
                    srtt: Duration::from_millis(40),
                    min_rtt: Duration::from_millis(40),
                    cwnd: 12_000,
                    congestion_events: 0,
                    buffered_bytes: 0,
                },
            }
        }

        /// One tick at `bps`, with `loss` of the packets lost; returns the estimate.
        fn tick(&mut self, bps: u64, loss: f64) -> Option<Estimate> {
            let bytes = bps * TICK.as_millis() as u64 / 8 / 1000;
            let packets = bytes.div_ceil(1_200);
            let lost_packets = (packets as f64 * loss).round() as u64;
            self.sample.at += TICK;
            self.sample.sent_bytes += bytes;
            self.sample.sent_packets += packets;
            self.sample.lost_packets += lost_packets;
            self.sample.lost_bytes += lost_packets * 1_200;
            self.estimator.update(self.sample)
        }
    }

    /// One tick at `bps` with its packets acknowledged `delay` after they left, evenly over
    /// the tick; returns the estimate.
    fn tick_acked(leg: &mut Leg, bps: u64, delay: Duration) -> Option<Estimate> {
        let bytes = bps * TICK.as_millis() as u64 / 8 / 1000;
        let packets = bytes.div_ceil(1_000);
        let start = leg.sample.at;
        let acks: Vec<PacketFate> = (0..packets)
            .map(|k| {
                let departure = start + TICK * k as u32 / packets as u32;
                PacketFate {
                    departure,
                    arrival: Some(departure + delay - leg.epoch),
                    size: 1_000,
                }
            })
            .collect();
        leg.sample.at += TICK;
        leg.sample.sent_bytes += bytes;
        leg.sample.sent_packets += packets;
        leg.estimator.update_with_acks(leg.sample, &acks)
    }

    #[test]
    fn datagrams_waiting_for_a_window_that_opens_are_no_ceiling_and_later_they_are() {
        let mut leg = Leg::new();
        leg.estimator.update_with_acks(leg.sample, &[]);
        // Slow start: no congestion event yet, a small window, datagrams waiting for it.
        leg.sample.cwnd = 6_000;
        leg.sample.buffered_bytes = 60_000;
        let mut e = None;
        for _ in 0..10 {
            e = tick_acked(&mut leg, 1_000_000, Duration::from_millis(40));
        }
        let ceiling = 6_000 * 8 * 25 * 5 / 4; // 1.25 × cwnd × 8 / 40 ms
        let e = e.expect("an estimate");
        assert_eq!(e.state, LinkState::Clear, "{e:?}");
        assert!(
            e.available_bps > ceiling,
            "{e:?} held by a window still opening"
        );
        // After a congestion event, a window that stays put while datagrams wait for it is
        // what holds the leg back: a ceiling, and a warning.
        leg.sample.congestion_events = 1;
        let e = tick_acked(&mut leg, 1_000_000, Duration::from_millis(40)).expect("an estimate");
        assert!(e.available_bps <= ceiling, "{e:?}");
        assert_eq!(e.state, LinkState::Warning, "{e:?}");
    }

    #[test]
    fn acknowledgements_that_come_later_and_later_are_congestion() {
        let mut leg = Leg::new();
        leg.estimator.update_with_acks(leg.sample, &[]);
        for _ in 0..10 {
            tick_acked(&mut leg, 1_000_000, Duration::from_millis(40));
        }
        // The queue grows by 20 ms a tick: acknowledgements 60, 80, 100… ms after sending.
        let mut e = None;
        for k in 1..=5u32 {
            e = tick_acked(
                &mut leg,
                1_000_000,
                Duration::from_millis(40) + k * Duration::from_millis(20),
            );
        }
        let e = e.expect("an estimate");
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
        assert!(e.available_bps < 1_000_000, "{e:?}");
    }

    #[test]
    fn a_leg_sending_media_is_refreshed_about_every_ten_datagrams() {
        let mut pace = RefreshPace::new(0);
        // 25 datagrams in 50 ms (500/s): every 50 ms, the most often.
        assert_eq!(pace.ticked(25), (true, RefreshPace::MIN));
        // 5 in 50 ms (100/s): ten take 100 ms.
        assert_eq!(pace.ticked(30), (true, RefreshPace::MIN * 2));
        // 1 in 100 ms (10/s): ten would take a second; every 250 ms, the least often.
        assert_eq!(pace.ticked(31), (true, RefreshPace::MAX));
        // Nothing more: less and less often…
        let pauses: Vec<_> = (0..8).map(|_| pace.ticked(31)).collect();
        assert!(pauses.iter().all(|&(refresh, _)| !refresh));
        assert_eq!(pauses[0].1, RefreshPace::MAX * 2);
        assert_eq!(pauses[7].1, RefreshPace::IDLE_MAX);
        // …until media goes out again.
        assert!(pace.ticked(40).0);
    }

    #[test]
    fn the_first_reading_gives_no_estimate_and_a_stale_one_changes_nothing() {
        let mut leg = Leg::new();
        assert_eq!(leg.estimator.update(leg.sample), None);
        let e = leg.tick(500_000, 0.0).expect("an estimate");
        assert_eq!(leg.estimator.update(leg.sample), Some(e));
    }

    #[test]
    fn an_app_limited_leg_is_held_near_what_it_delivers_whatever_the_window() {
        let mut leg = Leg::new();
        leg.sample.cwnd = 10_000_000; // a huge window: a ceiling of gigabits
        leg.estimator.update(leg.sample);
        let mut e = None;
        for _ in 0..30 {
            e = leg.tick(500_000, 0.0);
        }
        let e = e.expect("an estimate");
        assert_eq!(e.state, LinkState::Clear);
        // 1.5 × 500 kbit/s + 10 kbit/s, within the smoothing's error.
        assert!((700_000..=800_000).contains(&e.available_bps), "{e:?}");
    }

    #[test]
    fn cwnd_over_srtt_is_a_ceiling_only_while_datagrams_wait_for_it() {
        let mut leg = Leg::new();
        // 12 000 bytes at 100 ms: 0.96 Mbit/s, × 1.25 = 1.2 Mbit/s.
        leg.sample.srtt = Duration::from_millis(100);
        leg.sample.min_rtt = Duration::from_millis(95);
        leg.estimator.update(leg.sample);
        // Everything given is sent at once: the window holds nothing back, whatever its size.
        let mut e = None;
        for _ in 0..30 {
            e = leg.tick(2_000_000, 0.0);
        }
        let e = e.expect("an estimate");
        assert_eq!(e.available_bps, 3_010_000, "{e:?}");
        // Datagrams wait for the window (8 kB: 32 ms at 2 Mbit/s): it is the ceiling.
        leg.sample.buffered_bytes = 8_000;
        let e = leg.tick(2_000_000, 0.0).expect("an estimate");
        assert_eq!(e.available_bps, 1_200_000, "{e:?}");
    }

    #[test]
    fn a_growing_queue_holds_and_a_congestion_event_with_a_queue_backs_off() {
        let mut leg = Leg::new();
        leg.sample.cwnd = 1_000_000;
        leg.estimator.update(leg.sample);
        for _ in 0..20 {
            leg.tick(1_000_000, 0.0);
        }
        let clear = leg.estimator.estimate().expect("an estimate");
        assert_eq!(clear.state, LinkState::Clear);
        // 45 ms of queue: hold (no more than before).
        leg.sample.srtt = Duration::from_millis(85);
        let warning = leg.tick(1_000_000, 0.0).expect("an estimate");
        assert_eq!(warning.state, LinkState::Warning);
        assert!(warning.available_bps <= clear.available_bps);
        assert_eq!(warning.queue_delay, Duration::from_millis(45));
        // 70 ms of queue and a congestion event: below what was delivered.
        leg.sample.srtt = Duration::from_millis(110);
        leg.sample.congestion_events += 1;
        let congested = leg.tick(1_000_000, 0.0).expect("an estimate");
        assert_eq!(congested.state, LinkState::Congested);
        assert!(
            congested.available_bps < congested.acked_bps,
            "{congested:?}"
        );
    }

    #[test]
    fn heavy_loss_is_congestion_and_light_loss_is_not() {
        let mut light = Leg::new();
        light.sample.cwnd = 1_000_000;
        light.estimator.update(light.sample);
        let mut e = None;
        for _ in 0..30 {
            e = light.tick(1_000_000, 0.03);
        }
        assert_eq!(e.expect("an estimate").state, LinkState::Clear);

        let mut heavy = Leg::new();
        heavy.sample.cwnd = 1_000_000;
        heavy.estimator.update(heavy.sample);
        let mut e = None;
        for _ in 0..30 {
            e = heavy.tick(1_000_000, 0.20);
        }
        assert_eq!(e.expect("an estimate").state, LinkState::Congested);
    }

    #[test]
    fn datagrams_waiting_in_the_send_buffer_are_congestion_with_a_queue_and_a_hold_without() {
        let mut leg = Leg::new();
        leg.sample.cwnd = 1_000_000;
        leg.estimator.update(leg.sample);
        for _ in 0..20 {
            leg.tick(800_000, 0.0);
        }
        // 32 KB waiting behind a window of 4 kB per 40 ms (800 kbit/s): about 320 ms. No queue
        // on the path (a window still opening): hold.
        leg.sample.buffered_bytes = 32_000;
        leg.sample.cwnd = 4_000;
        let e = leg.tick(800_000, 0.0).expect("an estimate");
        assert_eq!(e.state, LinkState::Warning, "{e:?}");
        // With a queue on the path too: congestion.
        leg.sample.srtt = Duration::from_millis(80);
        let e = leg.tick(800_000, 0.0).expect("an estimate");
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
    }

    #[test]
    fn a_first_reading_that_says_hold_gives_no_estimate_yet() {
        let mut leg = Leg::new();
        leg.estimator.update(leg.sample);
        // 64 kB behind a window of 12 kB per 40 ms (2.4 Mbit/s): over 200 ms.
        leg.sample.buffered_bytes = 64_000;
        assert_eq!(leg.tick(800_000, 0.0), None);
        leg.sample.buffered_bytes = 0;
        assert!(leg.tick(800_000, 0.0).is_some());
    }

    #[test]
    fn a_leg_that_starts_after_an_idle_spell_backs_off_from_what_it_delivers() {
        let mut leg = Leg::new();
        leg.sample.cwnd = 1_000_000;
        leg.estimator.update(leg.sample);
        // Connected, nothing sent for a second (a viewer whose media has not started).
        for _ in 0..10 {
            leg.tick(0, 0.0);
        }
        // Then 1 Mbit/s, and at once a congestion event with a queue: the back-off is from the
        // rate delivered, not from an average still climbing out of the idle spell.
        leg.tick(1_000_000, 0.0);
        leg.sample.srtt = Duration::from_millis(80);
        leg.sample.congestion_events += 1;
        let e = leg.tick(1_000_000, 0.0).expect("an estimate");
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
        assert!(e.available_bps >= 800_000, "{e:?}");
    }
}
