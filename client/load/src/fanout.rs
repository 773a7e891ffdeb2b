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

/// Waits until `received` stops moving: two looks 100 ms apart that see the same count, at most
/// 3 s. Datagrams in flight give no signal of their own; this is how both programs let the last
/// ones arrive before reading the clocks.
pub async fn settle(received: impl Fn() -> u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut last = received();
    let mut still = 0;
    while still < 2 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = received();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// How one program prints its runs: one row (or JSON object) per run as it ends, then a table of
/// medians per N when there were several runs.
#[derive(Debug)]
pub struct Report<R> {
    /// The program's name, for error lines.
    pub program: &'static str,
    /// The table's header line.
    pub header: &'static str,
    /// One run as a table row.
    pub row: fn(&R) -> String,
    /// One run as a JSON object.
    pub json: fn(&R) -> String,
    /// The medians of several runs of one N.
    pub medians: fn(&[R]) -> R,
}

impl<R> Report<R> {
    /// Runs `run_once` `args.runs` times per N, printing as it goes; returns how many runs
    /// failed (each said on standard error).
    pub async fn run_all<F, Fut>(&self, args: &FanoutArgs, mut run_once: F) -> usize
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<R>>,
    {
        let mut all = Vec::new();
        let mut failures = 0;
        for &n in &args.subscribers {
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                match run_once(n).await {
                    Ok(r) => {
                        let line = if args.json {
                            (self.json)(&r)
                        } else {
                            (self.row)(&r)
                        };
                        println!("{line}");
                        runs.push(r);
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("{}: N = {n}: {e}", self.program);
                    }
                }
            }
            if !runs.is_empty() {
                all.push(runs);
            }
        }
        if args.runs > 1 && !args.json && !all.is_empty() {
            println!("\nmedians of {} runs per N:", args.runs);
            println!("{}", self.header);
            for runs in &all {
                println!("{}", (self.row)(&(self.medians)(runs)));
            }
        }
        failures
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
