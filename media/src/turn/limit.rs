//! Token buckets, and the per-source limit on 401 and 438 replies.
//!
//! A 401 or 438 goes to whatever source address its request carried, and over UDP anyone can
//! forge that: without a limit the server would reflect a challenge at a spoofed victim for
//! every forged request. [`SourceLimit`] gives each source a [`TokenBucket`]
//! (`unauthorized_per_second`, `unauthorized_burst`).
//!
//! ## Keys
//!
//! An IPv4 source is counted by its address, an IPv6 source by its /64: a /64 is one IPv6
//! subnet (RFC 7421), and a host on it may pick any of its 2^64 addresses (privacy addresses
//! rotate through them), so a key per address would hand one host a fresh burst per address. Like one NATed IPv4 address, a
//! /64 may hold a few hosts of one network, which then share the budget; the defaults (20 at
//! once, 10 a second) are far more than their clients' first challenges need. An IPv4-mapped
//! IPv6 address (a client of a dual-stack socket) is counted by its IPv4 address: as a /64
//! it would be `::/64`, one budget for every IPv4 client.
//!
//! ## Why a full table forgets a source rather than refusing the new one
//!
//! The buckets live in a table of at most `max_tracked_sources` entries: its memory is bounded.
//! Until 2026-12 a new source that found it full got no reply at all, so 10 000 spoofed
//! sources, kept busy, stopped every new client at its first challenge: it never allocated.
//! Now the source seen least recently is forgotten to make room:
//!
//! - Its bucket has refilled the longest, so forgetting it (it would start again with a full
//!   burst) gives the fewest replies away; a bucket that is full is no different from none.
//! - A victim that spoofed requests keep hitting is never the one seen least recently, so no
//!   amount of churn hands it a fresh burst. A source is forgotten only once every other
//!   tracked source has been seen after it: an attacker buys one more burst at one address
//!   with `max_tracked_sources` requests from others. Every reply still answers one request.
//! - The alternative, one shared bucket for sources the table cannot hold, fails either way:
//!   the same spoofed flood drains it and locks new clients out again, or it is generous enough
//!   not to be drained and is then a reflector of that size for any address outside the table.
//!
//! Least-recent order in O(1) amortized, without a linked list: every time a source is seen,
//! `(key, stamp)` is pushed to the back of `order` and the stamp is written into its entry, so
//! the entry's earlier items in `order` are stale. Eviction pops from the front, skipping stale
//! items. Before `order` would exceed twice the cap it is compacted to the live items (at most
//! the cap): each compaction follows at least `cap` pushes and costs `O(cap)`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

/// Tokens that refill at `rate` per second up to `burst`; the caller passes both on every call.
pub(super) struct TokenBucket {
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(super) fn new(burst: u64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: u64, burst: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let add = (u128::from(rate) * elapsed.as_nanos() / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(burst);
            self.last = now;
        }
    }

    /// Takes `n` tokens when the bucket holds them.
    pub(super) fn take(&mut self, n: u64, rate: u64, burst: u64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The key a source's replies are counted under: an IPv4 address, or an IPv6 /64 (its
/// interface identifier zeroed).
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

struct Source {
    bucket: TokenBucket,
    /// The stamp of this source's live item in `SourceLimit::order`.
    stamp: u64,
}

/// A token bucket per source in a table of bounded size that forgets the source seen least
/// recently when a new one arrives (see the module docs). About 150 bytes per tracked source.
pub(super) struct SourceLimit {
    sources: HashMap<IpAddr, Source>,
    /// Keys from seen least to most recently, with stale items; every tracked source has
    /// exactly one live item (its current stamp). At most twice `cap` items.
    order: VecDeque<(IpAddr, u64)>,
    next_stamp: u64,
    cap: usize,
    rate: u64,
    burst: u64,
    evictions: u64,
}

impl SourceLimit {
    /// `rate` replies a second and `burst` at once per source, `max_sources` sources (at
    /// least one) tracked.
    pub(super) fn new(rate: u32, burst: u32, max_sources: usize) -> SourceLimit {
        SourceLimit {
            sources: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            cap: max_sources.max(1),
            rate: u64::from(rate),
            burst: u64::from(burst.max(1)),
            evictions: 0,
        }
    }

    /// Takes one reply to `ip` from its source's budget; `false` when the budget is spent. A
    /// source not tracked yet starts with a full burst, in place of the one seen least recently
    /// when the table is full.
    pub(super) fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.cap {
            self.evict_least_recent();
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if self.order.len() >= 2 * self.cap {
            self.compact();
        }
        self.order.push_back((key, stamp));
        let (rate, burst) = (self.rate, self.burst);
        let source = self.sources.entry(key).or_insert_with(|| Source {
            bucket: TokenBucket::new(burst, now),
            stamp,
        });
        source.stamp = stamp;
        source.bucket.take(1, rate, burst, now)
    }

    /// Forgets the sources whose buckets have refilled: they would start full anyway.
    pub(super) fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.sources.retain(|_, s| {
            s.bucket.refill(rate, burst, now);
            s.bucket.tokens < burst
        });
        self.compact();
    }

    /// Sources tracked now.
    pub(super) fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub(super) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Sources forgotten so far to make room for new ones.
    pub(super) fn evictions(&self) -> u64 {
        self.evictions
    }

    fn evict_least_recent(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.sources.get(&key).is_some_and(|s| s.stamp == stamp) {
                self.sources.remove(&key);
                self.evictions += 1;
                return;
            }
        }
    }

    /// Drops the stale items of `order`.
    fn compact(&mut self) {
        let sources = &self.sources;
        self.order
            .retain(|(key, stamp)| sources.get(key).is_some_and(|s| s.stamp == *stamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_keys_are_the_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("2001:db8:1:2::")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(source_key(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }

    #[test]
    fn the_least_recently_seen_source_is_forgotten_first() {
        let now = Instant::now();
        let mut limit = SourceLimit::new(1, 1, 2);
        assert!(limit.take(ip("192.0.2.1"), now));
        assert!(limit.take(ip("192.0.2.2"), now));
        // .1 seen again (refused): .2 is now the least recent.
        assert!(!limit.take(ip("192.0.2.1"), now));
        assert!(limit.take(ip("192.0.2.3"), now));
        assert_eq!((limit.len(), limit.evictions()), (2, 1));
        assert!(
            !limit.take(ip("192.0.2.1"), now),
            "still tracked, still spent"
        );
        assert!(
            limit.take(ip("192.0.2.2"), now),
            "forgotten, so a full bucket"
        );
    }

    #[test]
    fn the_order_queue_stays_within_twice_the_cap() {
        let now = Instant::now();
        let mut limit = SourceLimit::new(10, 20, 8);
        for i in 0..10_000u32 {
            // A few hot sources seen over and over, and a stream of new ones.
            let hot = IpAddr::from([192, 0, 2, (i % 3) as u8]);
            limit.take(hot, now);
            limit.take(IpAddr::from(Ipv4Addr::from(0xC612_0000 + i)), now);
            assert!(limit.len() <= 8);
            assert!(limit.order.len() <= 16, "{}", limit.order.len());
        }
        limit.sweep(now + Duration::from_secs(60));
        assert!(limit.is_empty());
        assert!(limit.order.is_empty());
    }
}
