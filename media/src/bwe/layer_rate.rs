//! The measured rate and liveness of a published track's layers.

use std::time::{Duration, Instant};

use crate::sfu::MAX_LAYERS;

/// A layer with no packet for this long is not being sent (unavailable to subscribers).
pub const SILENT_AFTER: Duration = Duration::from_secs(1);

/// A layer's cost when neither its publisher declared one nor it has been measured yet, by
/// layer (bits per second): the usual low, middle and high simulcast layers.
pub const DEFAULT_LAYER_COSTS: [u64; MAX_LAYERS] = [150_000, 500_000, 1_500_000];

/// Bytes are counted over windows of this length; each closed window moves the average.
const WINDOW: Duration = Duration::from_millis(500);

/// The weight of a closed window in the moving average (with 0.5 s windows, about 2 s of memory).
const WEIGHT: f64 = 0.25;

/// The rate meter of one layer.
#[derive(Debug, Clone, Copy, Default)]
struct Meter {
    window_start: Option<Instant>,
    window_bytes: u64,
    rate_bps: Option<f64>,
    last_packet: Option<Instant>,
}

impl Meter {
    fn record(&mut self, bytes: usize, now: Instant) {
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            // The window closes: its rate moves the average. A gap of several windows (the
            // layer paused) counts as one long window, which pulls the average down as it should.
            let sample = self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64();
            self.rate_bps = Some(match self.rate_bps {
                None => sample,
                Some(rate) => rate + WEIGHT * (sample - rate),
            });
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }
}

/// The layers of one published track: what each really costs and which are being sent. Fed
/// with every packet the publisher sends (a few arithmetic operations each).
#[derive(Debug, Clone, Default)]
pub struct LayerRates {
    layers: [Meter; MAX_LAYERS],
}

impl LayerRates {
    /// A packet of `bytes` (its payload, or the whole packet: the same convention for every
    /// layer) arrived on `layer` at `now`. Layers past the last are ignored.
    pub fn record(&mut self, layer: u8, bytes: usize, now: Instant) {
        if let Some(meter) = self.layers.get_mut(usize::from(layer)) {
            meter.record(bytes, now);
        }
    }

    /// The measured rate of `layer` in bits per second, once a window has closed.
    pub fn rate(&self, layer: u8) -> Option<u64> {
        let meter = self.layers.get(usize::from(layer))?;
        meter.rate_bps.map(|r| r as u64)
    }

    /// Whether any layer ever had a packet.
    pub fn heard(&self) -> bool {
        self.layers.iter().any(|m| m.last_packet.is_some())
    }

    /// Whether `layer` had a packet within [`SILENT_AFTER`] of `now`.
    pub fn alive(&self, layer: u8, now: Instant) -> bool {
        self.layers
            .get(usize::from(layer))
            .and_then(|m| m.last_packet)
            .is_some_and(|at| now.saturating_duration_since(at) < SILENT_AFTER)
    }

    /// What `layer` costs a subscriber: what it was measured to carry; until it is measured,
    /// what its publisher declared (`declared`, 0 when nothing was), or [`DEFAULT_LAYER_COSTS`]
    /// when that is 0 too. A declared rate is the encoder's maximum, often well above what it
    /// sends.
    pub fn cost(&self, layer: u8, declared: u32) -> u64 {
        let declared = u64::from(declared);
        match self.rate(layer) {
            Some(measured) => measured,
            None if declared > 0 => declared,
            None => DEFAULT_LAYER_COSTS
                .get(usize::from(layer))
                .copied()
                .unwrap_or(DEFAULT_LAYER_COSTS[MAX_LAYERS - 1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `rate_bps` on `layer` in packets of 1 000 bytes from `start` for `seconds`.
    fn send(
        rates: &mut LayerRates,
        layer: u8,
        rate_bps: u64,
        start: Instant,
        seconds: f64,
    ) -> Instant {
        let interval = Duration::from_secs_f64(8_000.0 / rate_bps as f64);
        let count = (seconds / interval.as_secs_f64()) as u32;
        let mut at = start;
        for _ in 0..count {
            rates.record(layer, 1_000, at);
            at += interval;
        }
        at
    }

    #[test]
    fn a_steady_layer_is_measured_at_its_rate() {
        let mut rates = LayerRates::default();
        let t0 = Instant::now();
        let end = send(&mut rates, 1, 480_000, t0, 4.0);
        let rate = rates.rate(1).expect("measured") as f64;
        assert!((rate - 480_000.0).abs() / 480_000.0 < 0.05, "{rate}");
        assert!(rates.alive(1, end));
        assert_eq!(rates.rate(0), None);
        assert!(!rates.alive(0, end));
    }

    #[test]
    fn the_average_follows_a_change_within_a_few_seconds() {
        let mut rates = LayerRates::default();
        let t0 = Instant::now();
        let t1 = send(&mut rates, 2, 1_500_000, t0, 4.0);
        // The average's time constant is 2 s: three of them later it is within 10 %.
        let t2 = send(&mut rates, 2, 600_000, t1, 6.0);
        let rate = rates.rate(2).expect("measured") as f64;
        assert!((rate - 600_000.0).abs() / 600_000.0 < 0.10, "{rate}");
        assert!(rates.alive(2, t2));
    }

    #[test]
    fn a_silent_layer_is_not_alive() {
        let mut rates = LayerRates::default();
        let t0 = Instant::now();
        let end = send(&mut rates, 2, 1_000_000, t0, 2.0);
        assert!(rates.alive(2, end));
        assert!(rates.alive(2, end + Duration::from_millis(900)));
        assert!(!rates.alive(2, end + SILENT_AFTER));
    }

    #[test]
    fn a_cost_is_never_zero_and_measured_once_known() {
        let mut rates = LayerRates::default();
        // Nothing known: the defaults, not zero (a layer declared at 0 is never free).
        assert_eq!(rates.cost(0, 0), 150_000);
        assert_eq!(rates.cost(2, 0), 1_500_000);
        // Declared only.
        assert_eq!(rates.cost(1, 700_000), 700_000);
        // Measured: what the layer really carries, whatever was declared (an encoder often
        // sends less than its announced maximum, and sometimes more).
        let t0 = Instant::now();
        send(&mut rates, 1, 400_000, t0, 3.0);
        let measured = rates.rate(1).expect("measured");
        assert_eq!(rates.cost(1, 0), measured);
        assert_eq!(rates.cost(1, 700_000), measured);
        assert_eq!(rates.cost(1, 100_000), measured);
        // Past the last layer: ignored.
        rates.record(7, 1_000, t0);
    }
}
