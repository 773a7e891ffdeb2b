//! The command line that `strait-fanout-bench` and `quinn-fanout-baseline` share, so that the
//! gateway and the bare-quinn baseline are always driven the same way.

use super::Result;

/// One publisher, N subscribers, datagrams of one size at one rate.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Fan-out sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub subscribers: Vec<usize>,
    /// Length of the send phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Publisher packets per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Cap the publisher's rate at F/N, so that N × rate ≤ F.
    #[arg(long, value_name = "F")]
    pub max_forward_rate: Option<u64>,
    /// Packet size in bytes (RTP header included for the gateway).
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    /// Runs per N; with more than one a table of medians follows.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Idle window measured before the send phase, seconds (0 skips it).
    #[arg(long, default_value_t = 2.0)]
    pub idle_seconds: f64,
    /// Sessions connecting at once.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,
    /// One JSON object per run instead of the tables.
    #[arg(long)]
    pub json: bool,
}

impl FanoutArgs {
    /// Checks the ranges; `max_size` is the largest packet the program can send.
    pub fn validate(&self, max_size: usize) -> Result<()> {
        if self.subscribers.is_empty() || self.subscribers.contains(&0) {
            return Err("--subscribers: every N must be at least 1".into());
        }
        if !(self.seconds > 0.0 && self.seconds <= 3600.0) {
            return Err("--seconds must be in (0, 3600]".into());
        }
        if self.rate == 0 || self.runs == 0 || self.connect_concurrency == 0 {
            return Err("--rate, --runs and --connect-concurrency must be at least 1".into());
        }
        if !(0.0..=60.0).contains(&self.idle_seconds) {
            return Err("--idle-seconds must be in [0, 60]".into());
        }
        if !(16..=max_size).contains(&self.size) {
            return Err(format!("--size must be between 16 and {max_size} bytes").into());
        }
        Ok(())
    }

    /// The publisher's rate for fan-out `n`.
    pub fn rate_for(&self, n: usize) -> u32 {
        match self.max_forward_rate {
            Some(cap) => u32::try_from(cap / n as u64)
                .unwrap_or(u32::MAX)
                .clamp(1, self.rate),
            None => self.rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        fanout: FanoutArgs,
    }

    #[test]
    fn flags_parse_and_the_rate_is_capped() {
        let cli = Cli::try_parse_from([
            "x",
            "--subscribers",
            "1,10,1000",
            "--max-forward-rate=50000",
            "--rate",
            "500",
        ])
        .unwrap();
        assert_eq!(cli.fanout.subscribers, vec![1, 10, 1000]);
        assert_eq!(cli.fanout.rate_for(10), 500);
        assert_eq!(cli.fanout.rate_for(1000), 50);
        cli.fanout.validate(1100).unwrap();
        let bad = Cli::try_parse_from(["x", "--subscribers", "0", "--size", "2000"]).unwrap();
        assert!(bad.fanout.validate(1100).is_err());
        assert!(Cli::try_parse_from(["x", "--unknown"]).is_err());
    }
}
