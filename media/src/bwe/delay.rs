//! A leg's estimate from per-packet feedback: when each packet left, and when it arrived (on
//! any clock: only differences count) or that it did not.
//!
//! Both kinds of leg have such feedback: a WebRTC receiver reports arrivals in TWCC
//! ([`WebRtcEstimator`](crate::webrtc::WebRtcEstimator)); a QUIC sender learns when each of
//! its packets was acknowledged (the acknowledgement's arrival stands for the packet's: the
//! way back and the receiver's acknowledgement delay add a delay that is constant, or noise).
//!
//! Two delay signals: GCC's, from `rtc`'s implementation used as a library (its slope
//! estimator — the trend of the one-way delay across packet groups — and its overuse detector,
//! an adaptive threshold on that trend), and the queueing delay itself (the one-way delay over
//! the smallest seen in the last 10–20 s; the clocks' offset cancels out). `rtc`'s detector alone
//! compares the raw per-group trend with a 12.5 ms threshold and misses a queue that grows by a
//! few milliseconds per group (sending at twice the link's rate, say); the queueing delay does
//! not: above 30 ms it is a warning, above 60 ms and growing (or above 150 ms) congestion. The
//! rate follows the rule of every leg (see [`super`]): the acknowledged rate is what arrived,
//! smoothed over a second; overuse (or loss above 10 %) is congestion and the estimate falls to
//! 0.85 × acknowledged; loss above 2 % (or the detector seeing the queue drain) is a warning and
//! the estimate holds; otherwise it is clear and at most 1.5 × acknowledged + 10 kbit/s, so that
//! an app-limited leg climbs as it proves what it carries rather than drifting upward. GCC's own
//! AIMD rate control is not used: it grows by 8 % a second, far too slowly to reach a top layer
//! within seconds, and probing does that job here.

use std::time::{Duration, Instant};

use rtc::interceptor::{OveruseDetector, PacketReport, SlopeEstimator, Usage};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

use super::{
    ACK_BONUS_BPS, ACK_GROWTH, Estimate, IDLE_BPS, LinkState, Proven, START_BPS, clear_limit,
};

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

/// Loss above this is congestion.
pub(crate) const CONGESTED_LOSS: f64 = 0.10;

/// Loss above this is a warning.
const WARNING_LOSS: f64 = 0.02;

/// Under congestion, this share of the acknowledged rate.
const BACKOFF: f64 = 0.85;

/// What the feedback says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFate {
    /// When it left.
    pub departure: Instant,
    /// When it arrived, on the clock of whoever reports it (from any fixed origin); `None`:
    /// it did not.
    pub arrival: Option<Duration>,
    /// Its size, bytes.
    pub size: u32,
}

/// A leg's estimate from per-packet feedback (see the module docs).
pub struct DelayEstimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    next_id: u64,
    /// Bytes reported as arrived since `window_start`, and packets reported and, of those,
    /// lost.
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
    /// Departures are measured from here (the first one reported).
    epoch: Option<Instant>,
    /// The smallest one-way delay (arrival − departure, in ms) of the current window, of the
    /// previous one, and when the current began.
    base: Option<(f64, f64, Instant)>,
    /// The queueing delay of the latest feedback.
    queue: Duration,
    /// What the leg has shown it carries.
    proven: Proven,
    /// When the previous feedback came.
    last_feedback: Option<Instant>,
    reports: Vec<PacketReport>,
}

impl std::fmt::Debug for DelayEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayEstimator")
            .field("estimate", &self.estimate)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Default for DelayEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayEstimator {
    /// An estimator with nothing seen yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            next_id: 0,
            window_bytes: 0,
            window_reported: 0,
            window_lost: 0,
            windows: 0,
            window_loss: 0.0,
            window_start: None,
            acked_bps: 0.0,
            loss: 0.0,
            estimate: None,
            epoch: None,
            base: None,
            queue: Duration::ZERO,
            proven: Proven::default(),
            last_feedback: None,
            reports: Vec::new(),
        }
    }

    /// The latest estimate.
    #[must_use]
    pub fn estimate(&self) -> Option<Estimate> {
        self.estimate
    }

    /// The smoothed loss ratio.
    #[cfg(test)]
    pub(crate) fn loss(&self) -> f64 {
        self.loss
    }

    /// Feedback about `packets` (in the order they left) came at `now`; returns the estimate
    /// after it.
    pub fn on_feedback(&mut self, packets: &[PacketFate], now: Instant) -> Option<Estimate> {
        self.on_feedback_and_losses(packets, 0, now)
    }

    /// As [`on_feedback`](Self::on_feedback), with `unlisted_lost` more packets known lost that
    /// `packets` does not list (a QUIC sender counts its losses, it does not list them).
    pub fn on_feedback_and_losses(
        &mut self,
        packets: &[PacketFate],
        unlisted_lost: u64,
        now: Instant,
    ) -> Option<Estimate> {
        if packets.is_empty() {
            return self.estimate;
        }
        self.reports.clear();
        for p in packets {
            self.reports.push(PacketReport {
                ssrc: 0,
                id: self.next_id,
                rtp_sequence_number: 0,
                is_twcc: true,
                twcc_sequence_number: 0,
                size: p.size as usize,
                arrived: p.arrival.is_some(),
                departure: p.departure,
                arrival: p.arrival,
                ecn: Ecn::NotEct,
            });
            self.next_id += 1;
        }
        let epoch = *self.epoch.get_or_insert(packets[0].departure);
        let mut usage = self.detector.usage();
        let mut arrived = 0u64;
        let mut lost = unlisted_lost;
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
        let reported = self.reports.len() as u64 + unlisted_lost;

        // The queueing delay: this feedback's last one-way delay over the smallest seen lately
        // (the clocks' offset cancels out).
        let previous_queue = self.queue;
        let owd = |r: &PacketReport| {
            let arrival = r.arrival?.as_secs_f64() * 1000.0;
            let departure = r.departure.saturating_duration_since(epoch).as_secs_f64() * 1000.0;
            Some(arrival - departure)
        };
        if let Some(last) = self.reports.iter().rev().find_map(owd) {
            let least = self.reports.iter().filter_map(owd).fold(last, f64::min);
            let (current, previous, since) = self.base.get_or_insert((least, least, now));
            if now.saturating_duration_since(*since) >= BASE_WINDOW {
                *previous = *current;
                *current = least;
                *since = now;
            } else {
                *current = current.min(least);
            }
            let base = current.min(*previous);
            self.queue = Duration::from_secs_f64((last - base).max(0.0) / 1000.0);
        }
        let queue = self.queue;

        // What the leg has shown it carries counts every feedback's arrivals (a probe's
        // padding included), over the time since the previous feedback (the first covers what
        // arrived since the first departure).
        let since = self.last_feedback.replace(now).unwrap_or(epoch);
        let clear_so_far = usage != Usage::Over
            && queue <= WARNING_QUEUE
            && self.estimate.is_none_or(|e| e.state == LinkState::Clear);
        self.proven.record(arrived, since, now, clear_so_far);

        // The acknowledged rate and the loss ratio, over windows of at least RATE_WINDOW (every
        // feedback of the window counts).
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += arrived;
        self.window_reported += reported;
        self.window_lost += lost;
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
        } else if let Some(estimate) = self.estimate.as_mut()
            && usage != Usage::Over
            && self.queue <= WARNING_QUEUE
        {
            // Between rate windows the rate holds; the queue is this feedback's (a probe
            // watches the queue it may be building).
            estimate.queue_delay = queue;
            return Some(*estimate);
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
            // nothing: it starts at `START_BPS`.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends 1 000-byte packets at `send_bps` for `seconds` through a link of `link_bps` (a
    /// FIFO with 20 ms of delay), every `lose_every`-th packet lost but not listed; feedback on
    /// everything that arrived comes every 50 ms. Returns the last estimate.
    fn run(
        est: &mut DelayEstimator,
        send_bps: u64,
        link_bps: u64,
        seconds: u64,
        lose_every: Option<u64>,
    ) -> Option<Estimate> {
        let t0 = Instant::now();
        let interval = Duration::from_secs_f64(8_000.0 / send_bps as f64);
        let service = Duration::from_secs_f64(8_000.0 / link_bps as f64);
        let end = t0 + Duration::from_secs(seconds);
        let mut next_send = t0;
        let mut next_feedback = t0 + Duration::from_millis(50);
        let mut link_free = t0;
        let mut pending: Vec<PacketFate> = Vec::new();
        let mut lost = 0;
        let mut n = 0u64;
        let mut last = None;
        while next_feedback <= end {
            while next_send <= next_feedback {
                n += 1;
                if lose_every.is_some_and(|k| n.is_multiple_of(k)) {
                    lost += 1;
                } else {
                    let out = link_free.max(next_send) + service;
                    link_free = out;
                    let arrival = out + Duration::from_millis(20);
                    pending.push(PacketFate {
                        departure: next_send,
                        arrival: Some(arrival - t0),
                        size: 1000,
                    });
                }
                next_send += interval;
            }
            let arrived: Vec<PacketFate> = pending
                .iter()
                .copied()
                .filter(|p| t0 + p.arrival.unwrap() <= next_feedback)
                .collect();
            pending.retain(|p| t0 + p.arrival.unwrap() > next_feedback);
            last = est.on_feedback_and_losses(&arrived, lost, next_feedback);
            lost = 0;
            next_feedback += Duration::from_millis(50);
        }
        last
    }

    #[test]
    fn a_leg_within_its_link_is_clear_and_may_climb_from_what_it_delivers() {
        let mut est = DelayEstimator::new();
        let e = run(&mut est, 1_000_000, 4_000_000, 3, None).expect("an estimate");
        assert_eq!(e.state, LinkState::Clear);
        assert!((900_000..1_100_000).contains(&e.acked_bps), "{e:?}");
        assert!(e.available_bps > e.acked_bps, "{e:?}");
    }

    #[test]
    fn sending_above_the_link_is_congestion_within_a_second() {
        let mut est = DelayEstimator::new();
        run(&mut est, 1_000_000, 4_000_000, 2, None);
        let e = run(&mut est, 2_000_000, 1_000_000, 1, None).expect("an estimate");
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
        assert!(e.available_bps < 1_000_000, "{e:?}");
    }

    #[test]
    fn losses_the_feedback_does_not_list_count() {
        // 1 in 20: 5 %, a warning; 1 in 5: 20 %, congestion.
        let mut est = DelayEstimator::new();
        let e = run(&mut est, 1_000_000, 4_000_000, 3, Some(20)).expect("an estimate");
        assert_eq!(e.state, LinkState::Warning, "{e:?}");
        let mut est = DelayEstimator::new();
        let e = run(&mut est, 1_000_000, 4_000_000, 3, Some(5)).expect("an estimate");
        assert_eq!(e.state, LinkState::Congested, "{e:?}");
    }

    #[test]
    fn the_queueing_delay_is_every_feedbacks_between_rate_windows() {
        // Five packets per 50 ms feedback, 20 ms one way; then, between two rate windows, one
        // feedback whose packets waited 15 ms more: a probe must see that queue now, not when
        // the next window closes.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut est = DelayEstimator::new();
        let feedback = |k: u64, extra: Duration| -> Vec<PacketFate> {
            (0..5)
                .map(|i| {
                    let departure = t0 + ms(50 * k + 10 * i);
                    PacketFate {
                        departure,
                        arrival: Some(departure - t0 + ms(20) + extra),
                        size: 1000,
                    }
                })
                .collect()
        };
        let mut last = None;
        for k in 0..6 {
            last = est.on_feedback(&feedback(k, Duration::ZERO), t0 + ms(50 * k + 70));
        }
        let before = last.expect("an estimate");
        assert_eq!(before.queue_delay, Duration::ZERO, "{before:?}");
        let e = est
            .on_feedback(&feedback(6, ms(15)), t0 + ms(50 * 6 + 70))
            .expect("an estimate");
        assert_eq!(e.queue_delay.as_millis(), 15, "{e:?}");
        assert_eq!(
            e.acked_bps, before.acked_bps,
            "the rate holds between windows"
        );
    }
}
