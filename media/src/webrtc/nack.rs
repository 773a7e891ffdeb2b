//! The NACK guard: what a subscriber may ask the bridge to send again.
//!
//! The endpoint answers a NACK from the packet cache of the stream it names
//! ([`super::send`]), but not every sequence number of every NACK: one RTCP packet (up to ~360
//! pairs of 17 packets each) can ask for the whole cache, and the same request sent again asks
//! for it again, so a subscriber could make the bridge send hundreds of packets per packet it
//! sends, and take the worker's time from every other leg. Each send stream of a leg has a
//! [`NackBudget`]:
//!
//! - **duplicates**: a packet granted less than [`DUPLICATE_WINDOW`] ago is not granted again
//!   (a retransmission is on its way; a real loss of it is asked for again later);
//! - **budget**: each original packet of the stream sent to the leg earns two retransmission
//!   credits, up to [`BURST`]: retransmissions stay at most twice the stream's rate, with room
//!   for one burst of losses (a lost keyframe).
//!
//! A packet no longer in the cache is not sent and costs no credit. What was granted, refused
//! as a duplicate, refused for the budget or not found is counted in [`NackCounters`], shared by
//! every leg of an endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A packet granted again within this long is not granted a second time.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// Most retransmission credits a stream saves up (two per original packet sent).
pub const BURST: u32 = 128;

/// Sequence numbers remembered per stream for the duplicate check (a power of two).
const REMEMBERED: usize = 1024;

/// Counts of what the guards of an endpoint did with the packets asked for again.
#[derive(Debug, Default)]
pub struct NackCounters {
    granted: AtomicU64,
    duplicate: AtomicU64,
    over_budget: AtomicU64,
    not_cached: AtomicU64,
}

/// A reading of [`NackCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Packets sent again.
    pub granted: u64,
    /// Packets asked for again within [`DUPLICATE_WINDOW`] of being granted: refused.
    pub duplicate: u64,
    /// Packets beyond the stream's retransmission budget: refused.
    pub over_budget: u64,
    /// Packets no longer (or never) in the stream's packet cache: not sent.
    pub not_cached: u64,
}

impl NackCounters {
    /// The counts so far.
    pub fn read(&self) -> NackStats {
        NackStats {
            granted: self.granted.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            over_budget: self.over_budget.load(Ordering::Relaxed),
            not_cached: self.not_cached.load(Ordering::Relaxed),
        }
    }

    /// A packet asked for is not in the cache.
    pub(crate) fn not_cached(&self) {
        self.not_cached.fetch_add(1, Ordering::Relaxed);
    }
}

/// What NACKs may still get from one send stream of a leg (see the module docs).
#[derive(Debug)]
pub(crate) struct NackBudget {
    /// The highest sequence number sent (originals only); `None` before the first.
    highest: Option<u16>,
    /// Retransmission credits.
    credits: u32,
    /// When each recently granted sequence number was granted, by `seq % REMEMBERED`: the
    /// number and the milliseconds since `epoch`, plus one (0: never). Allocated at the first
    /// NACK: most legs of a clean network never send one.
    granted: Option<Granted>,
}

/// When the recently granted sequence numbers were granted: an epoch, and by `seq % REMEMBERED`
/// the number and the milliseconds since the epoch plus one (0: never).
type Granted = (Instant, Box<[(u16, u32)]>);

impl Default for NackBudget {
    fn default() -> Self {
        NackBudget {
            highest: None,
            credits: 2,
            granted: None,
        }
    }
}

impl NackBudget {
    /// An original packet of the stream went out: it earns two credits.
    pub(crate) fn sent(&mut self, seq: u16) {
        let ahead = self.highest.map_or(1, |h| seq.wrapping_sub(h));
        if ahead != 0 && ahead < u16::MAX / 2 {
            if self.highest.is_some() {
                self.credits = (self.credits + 2).min(BURST);
            }
            self.highest = Some(seq);
        }
    }

    /// Whether `seq` may be sent again now; counts the answer.
    pub(crate) fn ask(&mut self, seq: u16, now: Instant, counters: &NackCounters) -> bool {
        let (epoch, granted) = self
            .granted
            .get_or_insert_with(|| (now, vec![(0, 0); REMEMBERED].into_boxed_slice()));
        let slot = &mut granted[usize::from(seq) % REMEMBERED];
        let elapsed = now.saturating_duration_since(*epoch).as_millis();
        let stamp = u32::try_from(elapsed).unwrap_or(u32::MAX - 1) + 1;
        if slot.0 == seq && slot.1 != 0 && u128::from(stamp - slot.1) < DUPLICATE_WINDOW.as_millis()
        {
            counters.duplicate.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.credits == 0 {
            counters.over_budget.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.credits -= 1;
        *slot = (seq, stamp);
        counters.granted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Bytes held beyond the struct itself.
    pub(crate) fn held_bytes(&self) -> usize {
        self.granted
            .as_ref()
            .map_or(0, |(_, g)| g.len() * std::mem::size_of::<(u16, u32)>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_stay_within_twice_the_streams_rate_and_once_per_window() {
        let counters = NackCounters::default();
        let now = Instant::now();
        let mut budget = NackBudget::default();
        for seq in 0..=40u16 {
            budget.sent(seq);
        }
        // 40 originals after the first earned 80 credits (2 at the start too): 82 of 100.
        let first: Vec<u16> = (1..=100)
            .filter(|&s| budget.ask(s, now, &counters))
            .collect();
        assert_eq!(first, (1..=82).collect::<Vec<_>>());
        // Asked again at once: duplicates, and no credit left for the rest.
        assert!((1..=100).all(|s| !budget.ask(s, now, &counters)));
        let stats = counters.read();
        assert_eq!(stats.granted, 82);
        assert_eq!(stats.duplicate, 82);
        assert_eq!(stats.over_budget, 18 + 18);

        // Later, with new credits from new originals, a packet may be granted again.
        budget.sent(41);
        budget.sent(40); // a retransmission earns nothing
        let later = now + DUPLICATE_WINDOW;
        let again: Vec<u16> = [5, 6, 7]
            .into_iter()
            .filter(|&s| budget.ask(s, later, &counters))
            .collect();
        assert_eq!(again, vec![5, 6]);
        // The budget never exceeds the burst.
        let mut big = NackBudget::default();
        for seq in 0..=1000u16 {
            big.sent(seq);
        }
        assert_eq!(big.credits, BURST);
    }
}
