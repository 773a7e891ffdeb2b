//! Load shedding: when a media worker falls behind, it sheds load in a stated order, one level
//! at a time, and takes it back one level at a time once it has kept up for a while.
//!
//! | level | what is shed |
//! |---|---|
//! | 1 | new joins (and WHIP/WHEP offers) on this worker are refused; the node is unready |
//! | 2 | and every subscription forwards the lowest simulcast layer |
//! | 3 | and video is forwarded only from the `shedding.speakers` latest speakers |
//!
//! Audio and control messages are never shed. Two measures drive it: the **queue delay** (how
//! long the oldest media datagram of a batch waited between its session and the worker) and the
//! **busy ratio**, each second the larger of the worker thread's CPU time over wall time and the
//! whole process's CPU time over wall time and cores (the QUIC sending runs on the runtime's
//! threads, which can saturate the machine before any worker does). A level is entered as soon as either measure reaches its threshold, and left
//! (one level down) after `shedding.recover_after` with both measures below the thresholds of
//! the level. The controller is sans-IO: it is told the measures and the time.

use std::time::{Duration, Instant};

/// The most a level can be.
pub(crate) const TOP_LEVEL: u8 = 3;

/// The thresholds, from `[shedding]`.
#[derive(Debug, Clone)]
pub(crate) struct ShedConfig {
    /// Queue delay that enters level 1, 2, 3.
    pub(crate) queue_delay: [Duration; 3],
    /// Busy ratio that enters level 1, 2, 3.
    pub(crate) busy: [f64; 3],
    /// Time below a level's thresholds before stepping down from it.
    pub(crate) recover_after: Duration,
}

/// The controller (see the module docs).
#[derive(Debug)]
pub(crate) struct Shedder {
    config: ShedConfig,
    level: u8,
    /// The largest queue delay seen since the last decision.
    delay: Duration,
    /// The latest busy ratio.
    busy: f64,
    /// Since when the measures are below the current level's thresholds.
    calm_since: Option<Instant>,
}

impl Shedder {
    pub(crate) fn new(config: ShedConfig) -> Shedder {
        Shedder {
            config,
            level: 0,
            delay: Duration::ZERO,
            busy: 0.0,
            calm_since: None,
        }
    }

    /// The level now.
    pub(crate) fn level(&self) -> u8 {
        self.level
    }

    /// A media batch whose oldest datagram waited `delay`.
    pub(crate) fn observe_delay(&mut self, delay: Duration) {
        self.delay = self.delay.max(delay);
    }

    /// The worker's busy ratio over the last second.
    pub(crate) fn observe_busy(&mut self, ratio: f64) {
        self.busy = ratio;
    }

    /// Decides at `now`; returns the new level when it changed.
    pub(crate) fn decide(&mut self, now: Instant) -> Option<u8> {
        let delay = std::mem::take(&mut self.delay);
        // The highest level either measure calls for.
        let wanted = (1..=TOP_LEVEL)
            .rev()
            .find(|&level| {
                let i = usize::from(level - 1);
                delay >= self.config.queue_delay[i] || self.busy >= self.config.busy[i]
            })
            .unwrap_or(0);
        if wanted > self.level {
            self.level = wanted;
            self.calm_since = None;
            return Some(self.level);
        }
        if wanted == self.level {
            self.calm_since = None;
            return None;
        }
        // Below the current level's thresholds: step down after a calm spell.
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.config.recover_after {
            self.level -= 1;
            self.calm_since = (self.level > 0).then_some(now);
            return Some(self.level);
        }
        None
    }
}

/// The calling thread's CPU time (user and system), from `/proc/thread-self/stat`; `None` where
/// there is no such file.
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    cpu_time("/proc/thread-self/stat")
}

/// The whole process's CPU time (user and system, every thread), from `/proc/self/stat`.
pub(crate) fn process_cpu_time() -> Option<Duration> {
    cpu_time("/proc/self/stat")
}

fn cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ..., utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // The kernel reports clock ticks of USER_HZ, 100 per second on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ShedConfig {
        ShedConfig {
            queue_delay: [
                Duration::from_millis(20),
                Duration::from_millis(50),
                Duration::from_millis(100),
            ],
            busy: [0.85, 0.95, 0.99],
            recover_after: Duration::from_secs(2),
        }
    }

    #[test]
    fn levels_rise_in_order_with_the_load_and_fall_one_at_a_time_after_calm() {
        let mut s = Shedder::new(config());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        s.observe_delay(Duration::from_millis(5));
        assert_eq!(s.decide(at(0)), None);
        // The delay grows: joins first, then layers, then video.
        s.observe_delay(Duration::from_millis(25));
        assert_eq!(s.decide(at(250)), Some(1));
        s.observe_delay(Duration::from_millis(60));
        assert_eq!(s.decide(at(500)), Some(2));
        s.observe_busy(0.995);
        assert_eq!(s.decide(at(750)), Some(3));
        // Calm: one level down per `recover_after`.
        s.observe_busy(0.2);
        assert_eq!(s.decide(at(1000)), None);
        assert_eq!(s.decide(at(2999)), None);
        assert_eq!(s.decide(at(3000)), Some(2));
        assert_eq!(s.decide(at(4000)), None);
        assert_eq!(s.decide(at(5000)), Some(1));
        // A spike in between starts the calm spell over.
        s.observe_delay(Duration::from_millis(30));
        assert_eq!(s.decide(at(5500)), None);
        assert_eq!(s.decide(at(7000)), None);
        assert_eq!(s.decide(at(8999)), None);
        assert_eq!(s.decide(at(9000)), Some(0));
        assert_eq!(s.level(), 0);
    }

    #[test]
    fn this_threads_cpu_time_is_read() {
        let before = thread_cpu_time().expect("/proc/thread-self/stat");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_time().expect("again") >= before);
        assert!(process_cpu_time().expect("/proc/self/stat") >= before);
    }
}
