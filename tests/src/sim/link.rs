//! One direction of a simulated path: a bottleneck with a drop-tail queue, a propagation delay and
//! random loss, in virtual time.
//!
//! # Model
//!
//! ```text
//!  send(now) ─▶ [drop-tail queue] ─▶ serializer at rate(t) ─▶ loss ─▶ propagation delay ─▶ poll_delivery
//! ```
//!
//! - **Rate.** A [`RateTrace`]: piecewise-constant bits per second over the time since the link's
//!   epoch.
//! - **Queue.** Drop-tail, limited by [`QueueLimit`]. With the default, `Delay(100 ms)`, a packet is
//!   dropped at enqueue when the bytes already queued (those whose serialization has not ended)
//!   would take longer than 100 ms to drain *at the rate of that instant*. At a constant rate no
//!   admitted packet waits longer than the limit before its serialization starts. While the rate
//!   is zero (an outage) the limit is zero bytes: one packet may be admitted into an empty queue
//!   and waits for the outage to end; everything else is dropped.
//! - **Serialization.** A packet starts when it arrives or when the previous one has left,
//!   whichever is later, and leaves `size × 8 / rate` later, using the rate *at the instant it
//!   starts*: a rate change in the middle of a packet does not stretch or shorten it. The error
//!   is at most that one packet's serialization time (12 ms for 1500 bytes at 1 Mbit/s), once
//!   per step of the trace. A packet that would start during an outage starts when the rate is
//!   positive again;
//!   if the trace never becomes positive again the packet is dropped.
//! - **Loss.** I.i.d. with the configured probability, drawn at enqueue from the link's seeded
//!   RNG, applied *after* the bottleneck: a lost packet still uses its share of the capacity, as
//!   on a lossy last hop behind the queue.
//! - **Delay.** A fixed one-way propagation delay after serialization. Delivery order is send
//!   order: the link never reorders.
//!
//! Every packet is recorded ([`PacketRecord`]): when it was offered, its size, its fate and its
//! queueing delay, so a test can ask for the p95 queueing delay ([`Link::queue_delay_percentile`])
//! or compare what was offered to the capacity per time bin ([`Link::rate_bins`],
//! [`Link::share_above_capacity`]).
//!
//! This is a queueing bottleneck, unlike the token-bucket policer of
//! [`relay::ImpairedLink`](crate::relay::ImpairedLink), which drops what exceeds the rate and
//! never delays: congestion controllers see the queue build up here, as behind a real narrow
//! link.
//!
//! # Drive contract
//!
//! Sans-IO: [`Link::send`] takes a packet with the current virtual time, [`Link::poll_timeout`]
//! says when the next packet reaches the far end, and [`Link::poll_delivery`] hands out every
//! packet whose arrival time is at or before `now`: drain it until it returns `None`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bits per second over time: piecewise-constant steps, each `(from, bps)` holding from its
/// time (since the link's epoch) until the next step. Before the first step the first step's
/// rate applies; after the last one its rate holds forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTrace {
    steps: Vec<(Duration, u64)>,
}

impl RateTrace {
    /// A trace from its steps, in any order; of two steps at the same time the later in the
    /// list wins. An empty list is a link that never carries anything.
    pub fn new(mut steps: Vec<(Duration, u64)>) -> Self {
        steps.sort_by_key(|&(at, _)| at);
        let mut merged: Vec<(Duration, u64)> = Vec::with_capacity(steps.len());
        for (at, bps) in steps {
            match merged.last_mut() {
                Some(last) if last.0 == at => last.1 = bps,
                _ => merged.push((at, bps)),
            }
        }
        if merged.is_empty() {
            merged.push((Duration::ZERO, 0));
        }
        Self { steps: merged }
    }

    /// `bps` forever.
    pub fn constant(bps: u64) -> Self {
        Self::new(vec![(Duration::ZERO, bps)])
    }

    /// `before_bps` until `at`, then `after_bps`.
    pub fn step(before_bps: u64, at: Duration, after_bps: u64) -> Self {
        Self::new(vec![(Duration::ZERO, before_bps), (at, after_bps)])
    }

    /// `high_bps` for `half_period`, then `low_bps` for `half_period`, and so on until `until`,
    /// after which the rate stays at `high_bps`.
    pub fn square_wave(
        high_bps: u64,
        low_bps: u64,
        half_period: Duration,
        until: Duration,
    ) -> Self {
        let mut steps = Vec::new();
        let mut at = Duration::ZERO;
        let mut high = true;
        while at < until && !half_period.is_zero() {
            steps.push((at, if high { high_bps } else { low_bps }));
            at += half_period;
            high = !high;
        }
        steps.push((until, high_bps));
        Self::new(steps)
    }

    /// From `from_bps` at 0 to `to_bps` at `duration`, in steps of `interval` (each step holds
    /// the straight line's value at its start), then `to_bps` forever.
    pub fn ramp(from_bps: u64, to_bps: u64, duration: Duration, interval: Duration) -> Self {
        let mut steps = Vec::new();
        let mut at = Duration::ZERO;
        while at < duration && !interval.is_zero() {
            let x = at.as_secs_f64() / duration.as_secs_f64();
            let bps = from_bps as f64 + (to_bps as f64 - from_bps as f64) * x;
            steps.push((at, bps.round() as u64));
            at += interval;
        }
        steps.push((duration, to_bps));
        Self::new(steps)
    }

    /// This trace with random noise: from 0 to `until`, each `interval` gets its own factor drawn
    /// uniformly from `1 ± fraction` (0.1 is ±10 %), seeded by `seed`; the trace's own steps are
    /// kept. After `until` the trace is unchanged.
    pub fn with_noise(
        &self,
        fraction: f64,
        interval: Duration,
        until: Duration,
        seed: u64,
    ) -> Self {
        if interval.is_zero() || fraction <= 0.0 {
            return self.clone();
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut factors = Vec::new();
        let mut at = Duration::ZERO;
        while at < until {
            factors.push(1.0 + rng.random_range(-fraction..=fraction));
            at += interval;
        }
        let mut times: Vec<Duration> = self.steps.iter().map(|&(at, _)| at).collect();
        times.extend((0..factors.len()).map(|k| interval * k as u32));
        times.push(until);
        times.sort();
        times.dedup();
        let steps = times
            .into_iter()
            .map(|at| {
                let base = self.rate_at(at) as f64;
                let factor = if at < until {
                    factors[(at.as_nanos() / interval.as_nanos()) as usize]
                } else {
                    1.0
                };
                (at, (base * factor).max(0.0).round() as u64)
            })
            .collect();
        Self::new(steps)
    }

    /// The steps, sorted, one per time.
    pub fn steps(&self) -> &[(Duration, u64)] {
        &self.steps
    }

    /// The rate at `t` since the epoch.
    pub fn rate_at(&self, t: Duration) -> u64 {
        let i = self.steps.partition_point(|&(at, _)| at <= t);
        self.steps[i.saturating_sub(1)].1
    }

    /// The first instant at or after `t` when the rate is positive, if there is one.
    pub fn next_positive(&self, t: Duration) -> Option<Duration> {
        if self.rate_at(t) > 0 {
            return Some(t);
        }
        let i = self.steps.partition_point(|&(at, _)| at <= t);
        self.steps[i..]
            .iter()
            .find(|&&(_, bps)| bps > 0)
            .map(|&(at, _)| at)
    }

    /// Bits the trace carries between `from` and `to` (zero if `to ≤ from`).
    pub fn bits_between(&self, from: Duration, to: Duration) -> f64 {
        if to <= from {
            return 0.0;
        }
        let mut bits = 0.0;
        let mut at = from;
        let mut i = self.steps.partition_point(|&(step, _)| step <= from);
        while at < to {
            let end = self.steps.get(i).map_or(to, |&(next, _)| next.min(to));
            bits += self.rate_at(at) as f64 * (end - at).as_secs_f64();
            at = end;
            i += 1;
        }
        bits
    }
}

/// How much a [`Link`]'s queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// A packet is dropped when the bytes already queued would take longer than this to drain
    /// at the current rate (a buffer sized in time, what "100 ms of buffer" means).
    Delay(Duration),
    /// A packet is dropped when admitting it would make the queue (the packet on the wire
    /// included) hold more than this many bytes.
    Bytes(u64),
}

/// One direction's configuration. Defaults: 100 Mbit/s, 100 ms of queue, 20 ms one way, no loss.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// The bottleneck's rate over time.
    pub rate: RateTrace,
    /// The drop-tail queue's size.
    pub queue: QueueLimit,
    /// One-way propagation delay after serialization.
    pub delay: Duration,
    /// Probability that a packet is lost after the bottleneck, i.i.d., in `0.0..=1.0`.
    pub loss: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self::constant(100_000_000)
    }
}

impl LinkConfig {
    /// A constant `bps` with the other defaults.
    pub fn constant(bps: u64) -> Self {
        Self::with_rate(RateTrace::constant(bps))
    }

    /// The given trace with the other defaults.
    pub fn with_rate(rate: RateTrace) -> Self {
        Self {
            rate,
            queue: QueueLimit::Delay(Duration::from_millis(100)),
            delay: Duration::from_millis(20),
            loss: 0.0,
        }
    }

    /// This configuration with a one-way propagation delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// This configuration with a queue limit.
    pub fn queue(mut self, queue: QueueLimit) -> Self {
        self.queue = queue;
        self
    }

    /// This configuration with i.i.d. random loss.
    pub fn loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
}

/// What became of an offered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Through the queue and on its way to the far end.
    Forwarded,
    /// Dropped at the tail of a full queue (or the rate never becomes positive again).
    Dropped,
    /// Through the queue, then lost at random.
    Lost,
}

/// One offered packet, as the link saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRecord {
    /// When it was offered, since the link's epoch.
    pub offered_at: Duration,
    /// Its size in bytes.
    pub size: u32,
    /// What became of it.
    pub fate: Fate,
    /// How long it waited before its serialization started (zero when dropped).
    pub queue_delay: Duration,
    /// When it reaches the far end, since the epoch (forwarded packets only).
    pub arrival: Option<Duration>,
}

/// A link's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub offered_packets: u64,
    /// Bytes offered to the link.
    pub offered_bytes: u64,
    /// Packets handed to the far end by [`Link::poll_delivery`].
    pub delivered_packets: u64,
    /// Bytes handed to the far end.
    pub delivered_bytes: u64,
    /// Packets dropped by the full queue.
    pub dropped_packets: u64,
    /// Bytes dropped by the full queue.
    pub dropped_bytes: u64,
    /// Packets lost at random after the queue.
    pub lost_packets: u64,
    /// Bytes lost at random after the queue.
    pub lost_bytes: u64,
    /// The longest wait in the queue so far.
    pub max_queue_delay: Duration,
}

/// Offered bits against capacity over one time bin ([`Link::rate_bins`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBin {
    /// The bin's start, since the link's epoch.
    pub start: Duration,
    /// Bits offered to the link during the bin (dropped ones included).
    pub offered_bits: u64,
    /// Of those, bits admitted into the queue.
    pub admitted_bits: u64,
    /// What the rate trace carries over the bin.
    pub capacity_bits: f64,
}

impl RateBin {
    /// Whether more was offered than the link could carry in this bin.
    pub fn above_capacity(&self) -> bool {
        self.offered_bits as f64 > self.capacity_bits
    }
}

/// One direction of a simulated path (see the module docs); `T` is the packet it carries.
#[derive(Debug)]
pub struct Link<T> {
    config: LinkConfig,
    epoch: Instant,
    rng: StdRng,
    /// Admitted packets whose serialization had not ended at the last `send`: (end, size).
    backlog: VecDeque<(Instant, u64)>,
    backlog_bytes: u64,
    /// When the serializer is free again.
    free_at: Instant,
    /// Packets on their way, in arrival order (departure is monotonic and the delay fixed).
    in_flight: VecDeque<(Instant, u64, T)>,
    stats: LinkStats,
    records: Vec<PacketRecord>,
}

impl<T> Link<T> {
    /// A link whose trace starts at `epoch`; `seed` drives its random loss.
    pub fn new(config: LinkConfig, epoch: Instant, seed: u64) -> Self {
        Self {
            config,
            epoch,
            rng: StdRng::seed_from_u64(seed),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            free_at: epoch,
            in_flight: VecDeque::new(),
            stats: LinkStats::default(),
            records: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The instant the rate trace counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Every packet offered so far, in offer order.
    pub fn records(&self) -> &[PacketRecord] {
        &self.records
    }

    /// Replaces the rate trace (it keeps counting from the epoch); packets already admitted
    /// keep their departure times.
    pub fn set_rate(&mut self, rate: RateTrace) {
        self.config.rate = rate;
    }

    /// Replaces the random loss probability, from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Offers a packet of `size` bytes at `now` (not earlier than any previous `now`).
    pub fn send(&mut self, now: Instant, size: usize, packet: T) -> Fate {
        let size = size as u64;
        let t = now.saturating_duration_since(self.epoch);
        while self.backlog.front().is_some_and(|&(end, _)| end <= now) {
            if let Some((_, bytes)) = self.backlog.pop_front() {
                self.backlog_bytes -= bytes;
            }
        }
        self.stats.offered_packets += 1;
        self.stats.offered_bytes += size;

        let rate_now = self.config.rate.rate_at(t);
        let full = match self.config.queue {
            QueueLimit::Delay(limit) => {
                // Drain time > limit ⇔ queued bits > limit × rate.
                (self.backlog_bytes as f64 * 8.0) > limit.as_secs_f64() * rate_now as f64
            }
            QueueLimit::Bytes(limit) => self.backlog_bytes + size > limit,
        };
        let start = now.max(self.free_at);
        let start_t = start.saturating_duration_since(self.epoch);
        let start = match self.config.rate.next_positive(start_t) {
            Some(at) if !full => self.epoch + at,
            _ => return self.record(t, size, Fate::Dropped, Duration::ZERO, None),
        };
        let rate = self
            .config
            .rate
            .rate_at(start.saturating_duration_since(self.epoch));
        let nanos = (u128::from(size) * 8 * 1_000_000_000).div_ceil(u128::from(rate));
        let end = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.free_at = end;
        self.backlog.push_back((end, size));
        self.backlog_bytes += size;
        let queue_delay = start.saturating_duration_since(now);
        self.stats.max_queue_delay = self.stats.max_queue_delay.max(queue_delay);

        if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss.min(1.0)) {
            return self.record(t, size, Fate::Lost, queue_delay, None);
        }
        let arrival = end + self.config.delay;
        self.in_flight.push_back((arrival, size, packet));
        let since_epoch = arrival.saturating_duration_since(self.epoch);
        self.record(t, size, Fate::Forwarded, queue_delay, Some(since_epoch))
    }

    fn record(
        &mut self,
        t: Duration,
        size: u64,
        fate: Fate,
        queue_delay: Duration,
        arrival: Option<Duration>,
    ) -> Fate {
        match fate {
            Fate::Dropped => {
                self.stats.dropped_packets += 1;
                self.stats.dropped_bytes += size;
            }
            Fate::Lost => {
                self.stats.lost_packets += 1;
                self.stats.lost_bytes += size;
            }
            Fate::Forwarded => {}
        }
        self.records.push(PacketRecord {
            offered_at: t,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            fate,
            queue_delay,
            arrival,
        });
        fate
    }

    /// When the next packet reaches the far end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.front().map(|&(at, _, _)| at)
    }

    /// The next packet that has reached the far end by `now`, with its arrival time.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.in_flight.front()?.0 > now {
            return None;
        }
        let (at, size, packet) = self.in_flight.pop_front()?;
        self.stats.delivered_packets += 1;
        self.stats.delivered_bytes += size;
        Some((at, packet))
    }

    /// Bytes admitted and not yet serialized at `now` (the packet on the wire counted whole).
    pub fn queued_bytes(&self, now: Instant) -> u64 {
        self.backlog
            .iter()
            .filter(|&&(end, _)| end > now)
            .map(|&(_, bytes)| bytes)
            .sum()
    }

    /// The `q`-quantile (0.95 for p95; nearest rank) of the queueing delay of the packets that
    /// went through the queue (forwarded or lost) and were offered in `from..to` since the epoch;
    /// `None` if there were none.
    pub fn queue_delay_percentile(&self, q: f64, from: Duration, to: Duration) -> Option<Duration> {
        let mut delays: Vec<Duration> = self
            .records
            .iter()
            .filter(|r| r.fate != Fate::Dropped && r.offered_at >= from && r.offered_at < to)
            .map(|r| r.queue_delay)
            .collect();
        percentile(&mut delays, q)
    }

    /// Offered and admitted bits against capacity, per `bin` from `from` to `to` since the epoch
    /// (the last bin may be shorter).
    pub fn rate_bins(&self, from: Duration, to: Duration, bin: Duration) -> Vec<RateBin> {
        if bin.is_zero() || to <= from {
            return Vec::new();
        }
        let count = (to - from).as_nanos().div_ceil(bin.as_nanos()) as usize;
        let mut bins: Vec<RateBin> = (0..count)
            .map(|k| {
                let start = from + bin * k as u32;
                RateBin {
                    start,
                    offered_bits: 0,
                    admitted_bits: 0,
                    capacity_bits: self.config.rate.bits_between(start, (start + bin).min(to)),
                }
            })
            .collect();
        for r in self
            .records
            .iter()
            .filter(|r| r.offered_at >= from && r.offered_at < to)
        {
            let k = ((r.offered_at - from).as_nanos() / bin.as_nanos()) as usize;
            let bits = u64::from(r.size) * 8;
            bins[k].offered_bits += bits;
            if r.fate != Fate::Dropped {
                bins[k].admitted_bits += bits;
            }
        }
        bins
    }

    /// The share of `bin`-long bins in `from..to` where more was offered than the capacity (the
    /// "sends above capacity at most 5 % of the time" check).
    pub fn share_above_capacity(&self, from: Duration, to: Duration, bin: Duration) -> f64 {
        let bins = self.rate_bins(from, to, bin);
        if bins.is_empty() {
            return 0.0;
        }
        bins.iter().filter(|b| b.above_capacity()).count() as f64 / bins.len() as f64
    }
}

/// The `q`-quantile of `values` by nearest rank (sorts them); `None` when empty.
pub fn percentile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Offers `bps` of `size`-byte packets for `seconds`, draining deliveries as it goes; returns
    /// the link and the delivered bytes per packet arrival.
    fn offer(config: LinkConfig, seed: u64, bps: u64, size: usize, seconds: u64) -> Link<()> {
        let epoch = Instant::now();
        let mut link = Link::new(config, epoch, seed);
        let gap = Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / bps);
        let end = epoch + Duration::from_secs(seconds);
        let mut now = epoch;
        while now < end {
            link.send(now, size, ());
            now += gap;
            while link.poll_delivery(now).is_some() {}
        }
        link
    }

    #[test]
    fn a_narrow_link_delivers_its_rate_and_queues_no_more_than_its_limit() {
        let link = offer(LinkConfig::constant(1_000_000), 1, 2_000_000, 1000, 5);
        let stats = link.stats();
        // Delivered until the 5 s mark: the queue was full from ~0.1 s on.
        let rate = stats.delivered_bytes as f64 * 8.0 / 5.0;
        println!("{stats:?}, delivered {rate:.0} bit/s");
        assert!((rate / 1_000_000.0 - 1.0).abs() < 0.05, "{rate}");
        assert!(stats.dropped_packets > 0);
        assert!(
            stats.max_queue_delay <= 100 * MS,
            "{:?}",
            stats.max_queue_delay
        );
        assert!(
            stats.max_queue_delay >= 90 * MS,
            "{:?}",
            stats.max_queue_delay
        );
        let p95 = link.queue_delay_percentile(0.95, Duration::ZERO, Duration::from_secs(5));
        assert!(p95.is_some_and(|d| d <= 100 * MS), "{p95:?}");
        // Offered twice the capacity in every bin.
        let share = link.share_above_capacity(Duration::ZERO, Duration::from_secs(5), 100 * MS);
        assert_eq!(share, 1.0);
    }

    #[test]
    fn an_underloaded_link_adds_no_queue_and_stays_below_capacity() {
        let link = offer(LinkConfig::constant(1_000_000), 1, 500_000, 1000, 5);
        let stats = link.stats();
        assert_eq!(stats.dropped_packets, 0);
        // Each packet leaves (8 ms) before the next arrives (16 ms).
        assert_eq!(stats.max_queue_delay, Duration::ZERO);
        let share = link.share_above_capacity(Duration::ZERO, Duration::from_secs(5), 100 * MS);
        assert_eq!(share, 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_counters() {
        let config = || LinkConfig::constant(1_000_000).loss(0.03);
        let a = offer(config(), 42, 2_000_000, 1000, 5);
        let b = offer(config(), 42, 2_000_000, 1000, 5);
        assert_eq!(a.stats(), b.stats());
        assert_eq!(a.records(), b.records());
        let c = offer(config(), 43, 2_000_000, 1000, 5);
        assert_ne!(a.stats().lost_packets, 0);
        assert_ne!(a.records(), c.records(), "another seed loses other packets");
    }

    #[test]
    fn random_loss_of_3_percent_loses_about_3_percent() {
        let link = offer(
            LinkConfig::constant(10_000_000).loss(0.03),
            7,
            1_000_000,
            500,
            20,
        );
        let stats = link.stats();
        let through = stats.offered_packets - stats.dropped_packets;
        let ratio = stats.lost_packets as f64 / through as f64;
        println!("lost {} of {through}: {ratio:.4}", stats.lost_packets);
        assert!((ratio - 0.03).abs() < 0.006, "{ratio}");
    }

    #[test]
    fn packets_arrive_after_serialization_and_propagation() {
        let epoch = Instant::now();
        let config = LinkConfig::constant(1_000_000).delay(20 * MS);
        let mut link = Link::new(config, epoch, 0);
        // 1000 bytes at 1 Mbit/s: 8 ms on the wire; the second waits for the first.
        assert_eq!(link.send(epoch, 1000, 1), Fate::Forwarded);
        assert_eq!(link.send(epoch, 1000, 2), Fate::Forwarded);
        assert_eq!(link.records()[0].arrival, Some(28 * MS));
        assert_eq!(link.records()[1].arrival, Some(36 * MS));
        assert_eq!(link.records()[1].queue_delay, 8 * MS);
        assert_eq!(link.poll_timeout(), Some(epoch + 28 * MS));
        assert_eq!(link.poll_delivery(epoch + 27 * MS), None);
        assert_eq!(
            link.poll_delivery(epoch + 40 * MS),
            Some((epoch + 28 * MS, 1))
        );
        assert_eq!(
            link.poll_delivery(epoch + 40 * MS),
            Some((epoch + 36 * MS, 2))
        );
        assert_eq!(link.poll_delivery(epoch + 40 * MS), None);
        assert_eq!(link.stats().delivered_bytes, 2000);
    }

    #[test]
    fn a_packet_uses_the_rate_when_it_starts_and_waits_out_an_outage() {
        let epoch = Instant::now();
        // 1 Mbit/s, nothing from 10 ms to 50 ms, then 2 Mbit/s.
        let trace = RateTrace::new(vec![
            (Duration::ZERO, 1_000_000),
            (10 * MS, 0),
            (50 * MS, 2_000_000),
        ]);
        let mut link = Link::new(LinkConfig::with_rate(trace).delay(Duration::ZERO), epoch, 0);
        // Starts at 0 at 1 Mbit/s: 8 ms, done before the outage.
        link.send(epoch, 1000, ());
        // Starts at 8 ms, still 1 Mbit/s for the whole packet (the rate at its start).
        link.send(epoch, 1000, ());
        // Offered in the outage into an empty queue: waits until 50 ms, then 4 ms at 2 Mbit/s.
        link.send(epoch + 20 * MS, 1000, ());
        // The queue is not empty and the rate is zero: no room.
        assert_eq!(link.send(epoch + 21 * MS, 1000, ()), Fate::Dropped);
        let arrivals: Vec<_> = link.records().iter().map(|r| r.arrival).collect();
        assert_eq!(arrivals, [Some(8 * MS), Some(16 * MS), Some(54 * MS), None]);
        assert_eq!(link.records()[2].queue_delay, 30 * MS);
        assert_eq!(link.stats().dropped_packets, 1);
    }

    #[test]
    fn the_byte_limit_drops_at_the_tail() {
        let epoch = Instant::now();
        let config = LinkConfig::constant(1_000_000).queue(QueueLimit::Bytes(2000));
        let mut link = Link::new(config, epoch, 0);
        for _ in 0..2 {
            assert_eq!(link.send(epoch, 1000, ()), Fate::Forwarded);
        }
        assert_eq!(link.send(epoch, 1000, ()), Fate::Dropped);
        // Once the first has left (8 ms) there is room for one more.
        assert_eq!(link.send(epoch + 8 * MS, 1000, ()), Fate::Forwarded);
    }

    #[test]
    fn traces_step_square_ramp_and_noise() {
        let s = RateTrace::step(1_000, Duration::from_secs(1), 2_000);
        assert_eq!(s.rate_at(Duration::from_millis(999)), 1_000);
        assert_eq!(s.rate_at(Duration::from_secs(1)), 2_000);
        assert!((s.bits_between(Duration::ZERO, Duration::from_secs(2)) - 3_000.0).abs() < 1e-6);

        let sq = RateTrace::square_wave(2_000, 500, Duration::from_secs(1), Duration::from_secs(4));
        let rates: Vec<u64> = (0..6).map(|s| sq.rate_at(Duration::from_secs(s))).collect();
        assert_eq!(rates, [2_000, 500, 2_000, 500, 2_000, 2_000]);

        let ramp = RateTrace::ramp(1_000, 2_000, Duration::from_secs(1), 100 * MS);
        assert_eq!(ramp.rate_at(Duration::ZERO), 1_000);
        assert_eq!(ramp.rate_at(550 * MS), 1_500);
        assert_eq!(ramp.rate_at(Duration::from_secs(3)), 2_000);

        let base = RateTrace::constant(1_000_000);
        let noisy = base.with_noise(0.1, 100 * MS, Duration::from_secs(10), 3);
        assert_eq!(
            noisy,
            base.with_noise(0.1, 100 * MS, Duration::from_secs(10), 3)
        );
        assert_eq!(noisy.steps().len(), 101);
        for &(_, bps) in noisy.steps() {
            assert!((900_000..=1_100_000).contains(&bps), "{bps}");
        }
        let mean = noisy.bits_between(Duration::ZERO, Duration::from_secs(10)) / 10.0;
        assert!((mean / 1_000_000.0 - 1.0).abs() < 0.03, "{mean}");
        assert_eq!(noisy.rate_at(Duration::from_secs(11)), 1_000_000);
    }
}
