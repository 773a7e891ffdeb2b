//! `strait-realnet`: the bandwidth allocation on a real link, next to the simulation's figures.
//!
//! As root, it builds three network namespaces joined by veth pairs (addresses from
//! 198.18.0.0/15, the benchmarking range), runs the release `strait` gateway in the middle one,
//! a simulcast publisher on an unconstrained link and one raw-QUIC subscriber behind a `tbf`
//! bottleneck on the gateway's egress, and changes the bottleneck's rate with `tc qdisc change`
//! as the trace says:
//!
//! ```text
//!  strait-rn-pub                 strait-rn-gw                         strait-rn-sub
//!  publisher ─ rn-pub ═══ rn-gw-pub  strait  rn-gw-sub ═══ rn-sub ─ relay ─ subscriber
//!              198.18.1.2  198.18.1.1         198.18.2.1  198.18.2.2  (RTT/2 each way,
//!                                              tbf: rate, 100 ms queue)  127.0.0.1)
//! ```
//!
//! The kernel here has no `netem`, so the round-trip time comes from the project's user-space
//! relay (`strait_tests::relay`) in the subscriber's namespace: half of `--rtt-ms` towards the
//! subscriber (after the bottleneck, as the simulation's propagation delay) and half back.
//! `--rtt-ms 0` runs without it, at the veth's sub-millisecond RTT.
//!
//! The media are the simulation's own: the publisher is `sim::SimulcastPublisher` (150 / 500 /
//! 1500 kbit/s ± 20 %, 30 fps, Opus-like audio) on the wall clock, sending through the
//! `strait-client` SDK and producing a keyframe on every `KeyframeRequested`; the subscriber
//! renders with `sim::MediaReceiver` (the W3C freeze rule), asks for a keyframe at a sequence gap
//! and every 500 ms while frozen, as the simulated subscriber does, and records every
//! `LayerSwitched`, `TrackPaused` and `TrackResumed`, the received bytes per 500 ms, and the
//! forwarded layer every 100 ms.
//!
//! The link is measured on the gateway's side: the `tbf` counters (bytes and packets sent,
//! backlog, drops) every 250 ms, each time at a slightly different point of a frame interval.
//! What entered the queue is the bytes sent plus the backlog's growth; what was offered adds the
//! drops, each counted at the mean size of the packets sent in the same 250 ms. `tbf` counts
//! Ethernet frames (UDP payload plus 42 bytes of headers) where the simulated link counts UDP
//! payload: at the same nominal rate a real link carries about 5 % less media (12 % on the
//! lowest layer, whose packets are small), and what it admits reads as much more. The queue is limited to 100 ms at the current rate (the
//! limit in bytes is set again with each rate; a change keeps what is queued). The gateway's
//! estimates, as they reach the allocation, are read from its estimate histogram
//! (`strait_subscriber_estimate_bits_per_second`: count and sum) every 250 ms over the
//! publisher's link.
//!
//! For each trace it prints the figures the simulator's scenarios check (`sim::scenarios`),
//! computed the same way for every real run and for the simulation of the same trace (five seeds
//! by default, through the `sim` API), side by side with a verdict against ±30 % of the
//! simulation's median. A real subscriber's leg is up (connected, joined, waiting for the tracks
//! and for path-MTU discovery) some 130 ms before its subscriptions, while the scenarios start
//! the media with the leg: after the real runs the simulation runs a second time with the leg up
//! that long first (the real runs' median, `--sim-idle-ms` sets it by hand).
//!
//! ```text
//! cargo build --release -p strait-gateway --bin strait -p strait-tests --bin strait-realnet
//! sudo target/release/strait-realnet                 # every trace once, 40 ms RTT
//! sudo target/release/strait-realnet --runs 3 --trace fall
//! ```
//!
//! Bounded and self-cleaning: every wait has a timeout, the whole run has a deadline, and the
//! namespaces (with every process in them) are removed at the end, on an error and on Ctrl-C or
//! SIGTERM; namespaces left by a run that was killed are removed at the next start. Traffic
//! stays inside its namespaces. Without root, or without `ip netns`, the real runs are skipped
//! with a message and only the simulation's figures are printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use strait_client::protocol::{Codec, TrackId, TrackKind};
use strait_client::{Client, ClientConfig, LayerSpec, PublishSpec, Session, SessionEvent, Trust};
use strait_load::gateway::{http, mint_token, parse_fingerprint};
use strait_load::procfs::load_average;
use strait_load::rtp::{AUDIO_PT, Stamp, VIDEO_PT};
use strait_tests::relay::{Impairment, RelayConfig, UdpRelay};
use strait_tests::sim::room::measure;
use strait_tests::sim::{
    LinkConfig, MediaKind, MediaReceiver, PublisherConfig, QuicPairConfig, RateBin, RateTrace,
    RoomConfig, SimRoom, SimulcastPublisher, Slot, VideoReport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const NS_GW: &str = "strait-rn-gw";
const NS_PUB: &str = "strait-rn-pub";
const NS_SUB: &str = "strait-rn-sub";
const GW_PUB_IF: &str = "rn-gw-pub";
const PUB_IF: &str = "rn-pub";
const GW_SUB_IF: &str = "rn-gw-sub";
const SUB_IF: &str = "rn-sub";
const GW_PUB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const PUB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const GW_SUB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const SUB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);

/// The bottleneck's queue, as the simulation's drop-tail queue: what drains in this long at the
/// current rate (the `tbf` limit in bytes, set again at every rate change; a change keeps what
/// is queued).
const QUEUE: Duration = Duration::from_millis(100);
/// The token bucket: a little more than one full-size frame, so that the link is a serializer
/// at its rate rather than a policer with a large burst.
const BURST_BYTES: u32 = 2000;
/// How often the bottleneck's counters are read; the simulation's bins are this long too.
const BIN: Duration = Duration::from_millis(250);
/// The subscriber's timeline resolution, as the simulated room's.
const SLOT: Duration = Duration::from_millis(100);
/// The received-bytes record.
const BYTES_BIN: Duration = Duration::from_millis(500);
const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_millis(250);
const FROZEN_ASK_INTERVAL: Duration = Duration::from_millis(500);
/// The bound on every start-up step (a connection, a banner, a subscription).
const WAIT: Duration = Duration::from_secs(30);
const S: Duration = Duration::from_secs(1);

/// The allocation on a real link (namespaces, veth, tbf) against the simulation.
#[derive(Debug, Parser)]
#[command(name = "strait-realnet")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The gateway binary (default: `strait` next to this program).
    #[arg(long)]
    strait: Option<PathBuf>,
    /// A trace to run (repeatable): fall (4 → 0.8 Mbit/s), rise (0.8 → 4 Mbit/s), square
    /// (1.2 ↔ 3 Mbit/s, 20 s period). Default: all three.
    #[arg(long = "trace", value_parser = ["fall", "rise", "square"])]
    traces: Vec<String>,
    /// Real runs of each trace.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Round-trip time added by the relay in front of the subscriber, ms (0: no relay). The
    /// simulation runs with the same RTT.
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// Simulated seeds per trace (1, 2, …).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// In the simulation, the subscriber's leg is up this long before the media start, ms (0:
    /// as the scenarios, which start both at once; a real subscriber connects, joins and
    /// subscribes before any media reaches it).
    #[arg(long, default_value_t = 0)]
    sim_idle_ms: u64,
    /// Only the real runs.
    #[arg(long)]
    no_sim: bool,
    /// Only the simulation.
    #[arg(long)]
    no_real: bool,
    /// The gateway's `log.filter`.
    #[arg(long, default_value = "warn,rtc=error")]
    gateway_log_filter: String,
    /// A directory for each run's gateway log and raw records.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) The publisher, run inside its namespace.
    #[command(hide = true)]
    Publisher(RoleArgs),
    /// (internal) The subscriber, run inside its namespace.
    #[command(hide = true)]
    Subscriber(RoleArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RoleArgs {
    /// The gateway's QUIC address.
    #[arg(long)]
    quic: SocketAddr,
    /// The gateway's HTTP address (tokens, metrics).
    #[arg(long)]
    http: SocketAddr,
    /// The gateway's certificate fingerprint (`AA:BB:…`).
    #[arg(long)]
    cert: String,
    #[arg(long)]
    room: String,
    /// The publisher's seed (frame sizes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The relay's one-way delay in each direction, ms (subscriber; 0: no relay).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// The role stops by itself after this long.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Some(Role::Publisher(args)) => publisher(args).await,
        Some(Role::Subscriber(args)) => subscriber(args).await,
        None => orchestrate(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait-realnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Traces and figures
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fall,
    Rise,
    Square,
}

#[derive(Debug, Clone)]
struct Trace {
    kind: Kind,
    name: &'static str,
    title: &'static str,
    /// `(from, bits per second)`.
    steps: Vec<(Duration, u64)>,
    duration: Duration,
    /// The step the figures are measured from.
    step: Duration,
    /// Where the link checks (above capacity, queue) start, as in the scenario.
    link_from: Duration,
}

fn all_traces() -> Vec<Trace> {
    let square = RateTrace::square_wave(3_000_000, 1_200_000, 10 * S, 90 * S);
    vec![
        Trace {
            kind: Kind::Fall,
            name: "fall",
            title: "capacity 4 → 0.8 Mbit/s (step at 10 s, 30 s)",
            steps: vec![(Duration::ZERO, 4_000_000), (10 * S, 800_000)],
            duration: 30 * S,
            step: 10 * S,
            link_from: 2 * S,
        },
        Trace {
            kind: Kind::Rise,
            name: "rise",
            title: "capacity 0.8 → 4 Mbit/s (step at 10 s, 40 s)",
            steps: vec![(Duration::ZERO, 800_000), (10 * S, 4_000_000)],
            duration: 40 * S,
            step: 10 * S,
            link_from: 2 * S,
        },
        Trace {
            kind: Kind::Square,
            name: "square",
            title: "square wave 3 ↔ 1.2 Mbit/s, 20 s period (measured 10–90 s: four periods)",
            steps: square.steps().to_vec(),
            duration: 90 * S,
            step: 10 * S,
            link_from: 10 * S,
        },
    ]
}

/// One run, real or simulated, in the terms the figures are computed from.
#[derive(Debug, Default)]
struct RunData {
    label: String,
    /// The forwarded layer every 100 ms.
    timeline: Vec<Slot>,
    /// Offered and admitted bits against capacity per 250 ms.
    bins: Vec<RateBin>,
    video: VideoReport,
    audio: f64,
    queue_p95: Option<Duration>,
    /// The scenarios' own measure, per packet (simulation only).
    packet_queue_p95: Option<Duration>,
    failed_probes: Option<u64>,
    /// The estimates that reached the allocation (`available_bps`), with their time.
    estimates: Vec<(Duration, u64)>,
    /// How long the subscriber's leg was up before the media started.
    idle: Duration,
    notes: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    /// After the step (fall), when the leg first offers no more than the link carries in a
    /// 250 ms bin; infinity when it never does within 5 s.
    fit: Option<f64>,
    /// The first slot on the top layer after the step (rise); infinity when never.
    top: Option<f64>,
    failed_probes: Option<f64>,
    /// Layer switches per 20 s period over 10–90 s (square).
    switches: Option<f64>,
    /// Admitted over what the room could use of the capacity, 10–90 s (square).
    utilisation: Option<f64>,
    freeze: f64,
    freezes: f64,
    audio: f64,
    /// Share of 500 ms windows (from the scenario's start of the link checks) in which the leg
    /// offered more than the link carried.
    above: f64,
    queue_p95: Option<f64>,
    packet_queue_p95: Option<f64>,
}

/// `bins` (250 ms, from 0) merged into `width`-long bins over `[from, to)`.
fn merge(bins: &[RateBin], from: Duration, to: Duration, width: Duration) -> Vec<RateBin> {
    let per = (width.as_millis() / BIN.as_millis()).max(1) as usize;
    let first = (from.as_millis() / BIN.as_millis()) as usize;
    let last = (to.as_millis() / BIN.as_millis()) as usize;
    let mut out: Vec<RateBin> = Vec::new();
    for bin in bins {
        let index = (bin.start.as_secs_f64() / BIN.as_secs_f64()).round() as usize;
        if index < first || index >= last {
            continue;
        }
        let k = (index - first) / per;
        while out.len() <= k {
            out.push(RateBin {
                start: from + width * out.len() as u32,
                offered_bits: 0,
                admitted_bits: 0,
                capacity_bits: 0.0,
            });
        }
        out[k].offered_bits += bin.offered_bits;
        out[k].admitted_bits += bin.admitted_bits;
        out[k].capacity_bits += bin.capacity_bits;
    }
    out
}

fn figures(trace: &Trace, run: &RunData) -> Figures {
    let end = trace.duration;
    let step = trace.step;
    let mut f = Figures {
        freeze: run.video.total_freeze.as_secs_f64(),
        freezes: run.video.freeze_count as f64,
        audio: run.audio,
        queue_p95: run.queue_p95.map(|d| d.as_secs_f64()),
        packet_queue_p95: run.packet_queue_p95.map(|d| d.as_secs_f64()),
        ..Figures::default()
    };
    let windows = merge(&run.bins, trace.link_from, end, 2 * BIN);
    if !windows.is_empty() {
        f.above =
            windows.iter().filter(|b| b.above_capacity()).count() as f64 / windows.len() as f64;
    }
    match trace.kind {
        Kind::Fall => {
            let bins = merge(&run.bins, step, step + 5 * S, BIN);
            f.fit = Some(
                bins.iter()
                    .find(|b| !b.above_capacity())
                    .map_or(f64::INFINITY, |b| (b.start + BIN - step).as_secs_f64()),
            );
        }
        Kind::Rise => {
            f.top = Some(
                measure::first_at_least(&run.timeline, step, 2)
                    .map_or(f64::INFINITY, |d| d.as_secs_f64()),
            );
            f.failed_probes = run.failed_probes.map(|n| n as f64);
        }
        Kind::Square => {
            let periods = (end - step).as_secs_f64() / 20.0;
            f.switches = Some(measure::switches(&run.timeline, step, end) as f64 / periods);
            let best = (1_500_000.0 + 40_000.0) * 10.0;
            let bins = merge(&run.bins, step, end, 10 * S);
            let used: f64 = bins.iter().map(|b| b.admitted_bits as f64).sum();
            let capacity: f64 = bins.iter().map(|b| b.capacity_bits.min(best)).sum();
            f.utilisation = (capacity > 0.0).then(|| used / capacity);
        }
    }
    f
}

/// The timeline at 500 ms resolution: `0`–`2` the layer, `P` paused, `-` nothing yet, a space
/// every 10 s.
fn line(slots: &[Slot]) -> String {
    let mut out = String::new();
    for (n, s) in slots.iter().step_by(5).enumerate() {
        if n > 0 && n % 20 == 0 {
            out.push(' ');
        }
        out.push(match (s.paused, s.current) {
            (true, _) => 'P',
            (_, None) => '-',
            (_, Some(l)) => char::from(b'0' + l.min(9)),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The simulation of the same traces
// ---------------------------------------------------------------------------------------------

/// The simulation of `trace`. With `idle`, the subscriber's leg is up (and its estimator
/// running) that long before the publisher starts, as a real subscriber's session is between
/// its connection and its subscription; the trace and every record are shifted by it, so that 0
/// is when the media start.
fn sim_run(trace: &Trace, seed: u64, rtt: Duration, idle: Duration) -> Result<RunData> {
    let rtt = rtt.max(Duration::from_millis(1));
    let mut link = QuicPairConfig::new(1_000_000, rtt);
    let steps: Vec<(Duration, u64)> = trace
        .steps
        .iter()
        .map(|&(at, bps)| (if at.is_zero() { at } else { at + idle }, bps))
        .collect();
    link.forward = LinkConfig::with_rate(RateTrace::new(steps)).delay(rtt / 2);
    let mut config = RoomConfig::new(link);
    config.publishers[0].starts_after = idle;
    let mut r = SimRoom::new(seed, &config).map_err(|e| anyhow!("{e}"))?;
    let start = r.start() + idle;
    r.run_until(start + trace.step);
    let failed_before = r.sfu().stats().probes_failed;
    r.run_until(start + trace.duration);
    let failed = r.sfu().stats().probes_failed - failed_before;
    let forward = r
        .quic()
        .ok_or_else(|| anyhow!("the simulation has a QUIC leg"))?
        .forward();
    let mut bins = forward.rate_bins(idle, idle + trace.duration, BIN);
    for bin in &mut bins {
        bin.start -= idle;
    }
    let queue_p95 = sampled_queue_p95(
        forward.records(),
        &forward.config().rate,
        idle + trace.link_from,
        idle + trace.duration,
    );
    let packet_p95 =
        forward.queue_delay_percentile(0.95, idle + trace.link_from, idle + trace.duration);
    // What the room passed on to the allocation: an estimate that moved, as the gateway does.
    let mut estimates = Vec::new();
    let mut last: Option<strait_media::bwe::Estimate> = None;
    for &(at, estimate) in r.estimates() {
        if last.is_none_or(|l| estimate.moved_from(&l)) {
            last = Some(estimate);
            if at >= idle {
                estimates.push((at - idle, estimate.available_bps));
            }
        }
    }
    let timeline = r
        .timeline(0)
        .iter()
        .filter(|s| s.at >= idle)
        .map(|s| Slot {
            at: s.at - idle,
            ..*s
        })
        .collect();
    Ok(RunData {
        label: format!("sim seed {seed}"),
        timeline,
        bins,
        video: r.video_report(0).unwrap_or_default(),
        audio: r.audio_ratio(0),
        queue_p95,
        failed_probes: Some(failed),
        estimates,
        idle,
        packet_queue_p95: packet_p95,
        notes: Vec::new(),
    })
}

/// The queue every millisecond over `[from, to)` (a time average: the real runs read the
/// queue's bytes every 250 ms at varying points of a frame interval), as the time its bytes take
/// to drain: when the last admitted packet leaves (it waited, then took its serialization time),
/// less the time since it came.
fn sampled_queue_p95(
    records: &[strait_tests::sim::link::PacketRecord],
    rate: &RateTrace,
    from: Duration,
    to: Duration,
) -> Option<Duration> {
    let admitted: Vec<_> = records
        .iter()
        .filter(|r| r.fate != strait_tests::sim::Fate::Dropped)
        .collect();
    let mut samples = Vec::new();
    let mut t = from;
    while t < to {
        let n = admitted.partition_point(|r| r.offered_at <= t);
        if let Some(r) = n.checked_sub(1).map(|i| admitted[i]) {
            let start = r.offered_at + r.queue_delay;
            let bps = rate.rate_at(start).max(1);
            let leaves = start + Duration::from_secs_f64(f64::from(r.size) * 8.0 / bps as f64);
            samples.push(leaves.saturating_sub(t));
        }
        t += Duration::from_millis(1);
    }
    percentile95(samples)
}

fn percentile95(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    let n = values.len();
    (n > 0).then(|| values[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1])
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Unit {
    Seconds,
    Count,
    Percent,
    Millis,
}

fn show(value: f64, unit: Unit) -> String {
    if value.is_infinite() {
        return "never".into();
    }
    match unit {
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Count => {
            if value.fract() == 0.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            }
        }
        Unit::Percent => format!("{:.1} %", value * 100.0),
        Unit::Millis => format!("{:.0} ms", value * 1000.0),
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    // The upper middle when one of the middle two is infinite ("never").
    Some(
        if n % 2 == 1 || values[n / 2 - 1].is_infinite() || values[n / 2].is_infinite() {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        },
    )
}

/// Real against simulated: within ±30 % of the simulation's median or not.
fn compare(real: f64, sim: f64) -> String {
    match (real.is_infinite(), sim.is_infinite()) {
        (true, true) => "both never".into(),
        (true, false) | (false, true) => "**outside**".into(),
        _ if sim == 0.0 && real == 0.0 => "equal (0)".into(),
        _ if sim == 0.0 => "**outside** (sim 0)".into(),
        _ => {
            let ratio = real / sim;
            if (0.7..=1.3).contains(&ratio) {
                format!("within ({:+.0} %)", (ratio - 1.0) * 100.0)
            } else {
                format!("**outside** ({:+.0} %)", (ratio - 1.0) * 100.0)
            }
        }
    }
}

type Row = (&'static str, Unit, fn(&Figures) -> Option<f64>);

fn rows(kind: Kind) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    match kind {
        Kind::Fall => rows.push((
            "fits the link after the step",
            Unit::Seconds,
            |f: &Figures| f.fit,
        )),
        Kind::Rise => {
            rows.push(("top layer after the step", Unit::Seconds, |f: &Figures| {
                f.top
            }));
            rows.push((
                "failed probes after the step",
                Unit::Count,
                |f: &Figures| f.failed_probes,
            ));
        }
        Kind::Square => {
            rows.push(("layer switches per period", Unit::Count, |f: &Figures| {
                f.switches
            }));
            rows.push(("utilisation", Unit::Percent, |f: &Figures| f.utilisation));
        }
    }
    rows.push(("freeze, total", Unit::Seconds, |f: &Figures| Some(f.freeze)));
    rows.push(("freezes", Unit::Count, |f: &Figures| Some(f.freezes)));
    rows.push(("audio delivered", Unit::Percent, |f: &Figures| {
        Some(f.audio)
    }));
    rows.push((
        "500 ms windows above capacity",
        Unit::Percent,
        |f: &Figures| Some(f.above),
    ));
    rows.push((
        "p95 queueing delay over time",
        Unit::Millis,
        |f: &Figures| f.queue_p95,
    ));
    rows.push((
        "p95 queueing delay per packet (sim only)",
        Unit::Millis,
        |f: &Figures| f.packet_queue_p95,
    ));
    rows
}

/// One set of simulated runs of a trace, with what sets it apart.
#[derive(Debug)]
struct SimSet {
    caption: String,
    runs: Vec<RunData>,
}

fn spread(values: &[f64], unit: Unit) -> String {
    let Some(m) = median(values.to_vec()) else {
        return "–".into();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min == max {
        show(m, unit)
    } else {
        format!(
            "{} [{} – {}]",
            show(m, unit),
            show(min, unit),
            show(max, unit)
        )
    }
}

fn report(trace: &Trace, real: &[RunData], sims: &[SimSet]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n### {}\n", trace.title);
    let real_f: Vec<Figures> = real.iter().map(|r| figures(trace, r)).collect();
    let sim_f: Vec<Vec<Figures>> = sims
        .iter()
        .map(|set| set.runs.iter().map(|r| figures(trace, r)).collect())
        .collect();
    let mut head = String::from("| figure |");
    let mut rule = String::from("|---|");
    for r in real {
        let _ = write!(head, " {} |", r.label);
        rule.push_str("---:|");
    }
    if real.len() > 1 {
        head.push_str(" real median |");
        rule.push_str("---:|");
    }
    for set in sims {
        let _ = write!(
            head,
            " {}: median [min – max], {} seeds |",
            set.caption,
            set.runs.len()
        );
        rule.push_str("---:|");
        if !real.is_empty() {
            head.push_str(" real vs it (±30 %) |");
            rule.push_str("---|");
        }
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for (name, unit, get) in rows(trace.kind) {
        let mut row = format!("| {name} |");
        let real_values: Vec<f64> = real_f.iter().filter_map(get).collect();
        for f in &real_f {
            let _ = write!(row, " {} |", get(f).map_or("–".into(), |v| show(v, unit)));
        }
        let real_median = median(real_values);
        if real.len() > 1 {
            let _ = write!(
                row,
                " {} |",
                real_median.map_or("–".into(), |v| show(v, unit))
            );
        }
        for figures in &sim_f {
            let values: Vec<f64> = figures.iter().filter_map(get).collect();
            let _ = write!(row, " {} |", spread(&values, unit));
            if !real.is_empty() {
                let verdict = match (real_median, median(values)) {
                    (Some(r), Some(s)) => compare(r, s),
                    _ => "–".into(),
                };
                let _ = write!(row, " {verdict} |");
            }
        }
        let _ = writeln!(out, "{row}");
    }
    let sim: Vec<&RunData> = sims.iter().flat_map(|set| set.runs.iter()).collect();
    let _ = writeln!(
        out,
        "\nTimelines, 500 ms a character (`0`–`2` the forwarded layer, `P` paused, `-` nothing \
         yet), a space every 10 s:\n\n```text"
    );
    for r in real.iter().chain(sim.iter().copied()) {
        let _ = writeln!(out, "{:<18} {}", r.label, line(&r.timeline));
    }
    let _ = writeln!(out, "```");
    let _ = writeln!(
        out,
        "\nEstimates as they reached the allocation (s: kbit/s; for the real runs read from \
         the gateway's estimate histogram every 250 ms, a mean when several came at once):\n\n```text"
    );
    let firsts = sims.iter().filter_map(|set| set.runs.first());
    for r in real.iter().chain(firsts) {
        let list: Vec<String> = r
            .estimates
            .iter()
            .map(|(t, bps)| format!("{:.2}:{}", t.as_secs_f64(), bps / 1000))
            .collect();
        let _ = writeln!(out, "{:<18} {}", r.label, list.join(" "));
    }
    let _ = writeln!(out, "```");
    for r in real {
        if r.notes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:\n", r.label);
        for note in &r.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The orchestrator
// ---------------------------------------------------------------------------------------------

async fn orchestrate(args: RunArgs) -> Result<()> {
    // Signals first, so that Ctrl-C from now on cleans up instead of killing this process.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

    let names: Vec<String> = if args.traces.is_empty() {
        vec!["fall".into(), "rise".into(), "square".into()]
    } else {
        args.traces.clone()
    };
    let traces: Vec<Trace> = all_traces()
        .into_iter()
        .filter(|t| names.iter().any(|n| n == t.name))
        .collect();
    let rtt = Duration::from_millis(args.rtt_ms);
    println!(
        "# strait-realnet: the bandwidth allocation on a real link\n\nRTT {} ms ({}), \
         bottleneck tbf with a {} ms queue and a {BURST_BYTES}-byte bucket; {} real run(s) \
         per trace, {} simulated seed(s); load average {:.2} at the start.",
        args.rtt_ms,
        if args.rtt_ms > 0 {
            "the user-space relay in the subscriber's namespace, half each way"
        } else {
            "no relay: the veth's own, well below a millisecond"
        },
        QUEUE.as_millis(),
        if args.no_real { 0 } else { args.runs },
        if args.no_sim { 0 } else { args.seeds },
        load_average(),
    );

    let mut reals: BTreeMap<&'static str, Vec<RunData>> = BTreeMap::new();
    if !args.no_real {
        match preflight() {
            Err(why) => println!("\nskipped the real runs: {why}"),
            Ok(()) => {
                let budget = traces
                    .iter()
                    .map(|t| (t.duration + 90 * S) * args.runs as u32)
                    .sum::<Duration>()
                    + 60 * S;
                let work = tokio::time::timeout(budget, real_runs(&args, &traces, &mut reals));
                let outcome = tokio::select! {
                    r = work => r.map_err(|_| anyhow!("the real runs did not end within {budget:?}"))
                        .and_then(|r| r),
                    _ = interrupt.recv() => Err(anyhow!("interrupted")),
                    _ = terminate.recv() => Err(anyhow!("terminated")),
                    _ = hangup.recv() => Err(anyhow!("hung up")),
                };
                // Whatever happened, the namespaces are gone once `real_runs` is dropped (its
                // guard's drop); make sure of it before reporting.
                teardown();
                outcome?;
            }
        }
    }

    for trace in &traces {
        let real = reals.remove(trace.name).unwrap_or_default();
        let mut sims = Vec::new();
        if !args.no_sim {
            // The scenarios' simulation; and, when real runs were made, the same with the
            // subscriber's leg up before the media as long as the real ones were (median).
            let mut idles = vec![Duration::from_millis(args.sim_idle_ms)];
            let real_idle = median(real.iter().map(|r| r.idle.as_secs_f64()).collect());
            if let Some(idle) = real_idle
                && idle > 0.0
                && args.sim_idle_ms == 0
            {
                idles.push(Duration::from_millis((idle * 100.0).round() as u64 * 10));
            }
            for idle in idles {
                let mut runs = Vec::new();
                for seed in 1..=args.seeds {
                    let t = trace.clone();
                    let mut run =
                        tokio::task::spawn_blocking(move || sim_run(&t, seed, rtt, idle)).await??;
                    if !idle.is_zero() {
                        run.label = format!("sim idle seed {seed}");
                    }
                    runs.push(run);
                }
                let caption = if idle.is_zero() {
                    "sim".to_owned()
                } else {
                    format!("sim, leg up {} ms first", idle.as_millis())
                };
                sims.push(SimSet { caption, runs });
            }
        }
        print!("{}", report(trace, &real, &sims));
    }
    println!("\nload average {:.2} at the end.", load_average());
    Ok(())
}

/// Why the real runs cannot run here, if they cannot.
fn preflight() -> std::result::Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!(
            "they need root (network namespaces, veth, tc); running as uid {euid}"
        ));
    }
    match std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`ip netns` is not available: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("`ip` cannot be run: {e}")),
    }
    match std::process::Command::new("tc").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("`tc` (iproute2) cannot be run".into()),
    }
}

async fn real_runs(
    args: &RunArgs,
    traces: &[Trace],
    out: &mut BTreeMap<&'static str, Vec<RunData>>,
) -> Result<()> {
    let exe = std::env::current_exe().context("this program's path")?;
    let strait = match &args.strait {
        Some(path) => path.clone(),
        None => exe
            .parent()
            .map(|dir| dir.join("strait"))
            .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?,
    };
    if !strait.exists() {
        bail!(
            "{} is missing: `cargo build --release -p strait-gateway --bin strait`, or --strait",
            strait.display()
        );
    }
    if let Some(dir) = &args.log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let first = traces.first().map_or(4_000_000, |t| t.steps[0].1);
    let net = Net::setup(first)?;
    for trace in traces {
        for run in 1..=args.runs {
            eprintln!(
                "strait-realnet: {} run {run} of {} ({} s)…",
                trace.name,
                args.runs,
                trace.duration.as_secs()
            );
            let data = real_run(&net, args, &exe, &strait, trace, run).await?;
            out.entry(trace.name).or_default().push(data);
        }
    }
    drop(net);
    Ok(())
}

/// The namespaces; dropping it removes them with everything running inside.
#[derive(Debug)]
struct Net;

fn ip(args: &[&str]) -> Result<()> {
    run_sync("ip", args)
}

fn run_sync(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn netns_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

/// Removes the namespaces, killing (by pid) what still runs in them: this program's gateway
/// and roles, or those of an earlier run that was killed before it could clean up.
fn teardown() {
    for ns in [NS_SUB, NS_PUB, NS_GW] {
        if !netns_exists(ns) {
            continue;
        }
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if pid.chars().all(|c| c.is_ascii_digit()) {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Net {
    fn setup(initial_bps: u64) -> Result<Net> {
        teardown();
        let net = Net;
        for ns in [NS_GW, NS_PUB, NS_SUB] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        for (gw_if, ns, peer, gw_addr, addr) in [
            (GW_PUB_IF, NS_PUB, PUB_IF, GW_PUB_ADDR, PUB_ADDR),
            (GW_SUB_IF, NS_SUB, SUB_IF, GW_SUB_ADDR, SUB_ADDR),
        ] {
            ip(&[
                "link", "add", gw_if, "netns", NS_GW, "type", "veth", "peer", "name", peer,
                "netns", ns,
            ])?;
            ip(&[
                "-n",
                NS_GW,
                "addr",
                "add",
                &format!("{gw_addr}/30"),
                "dev",
                gw_if,
            ])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", peer])?;
            ip(&["-n", NS_GW, "link", "set", gw_if, "up"])?;
            ip(&["-n", ns, "link", "set", peer, "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &gw_addr.to_string(),
            ])?;
        }
        let tc_args = tbf_args("add", initial_bps);
        let tc_args: Vec<&str> = tc_args.iter().map(String::as_str).collect();
        run_sync("tc", &tc_args).context(
            "the tbf qdisc is not available here (it is what shapes the subscriber's link)",
        )?;
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        teardown();
    }
}

fn tbf_args(verb: &str, bps: u64) -> Vec<String> {
    let burst = BURST_BYTES.to_string();
    let rate = format!("{bps}bit");
    let limit = ((bps as f64 * QUEUE.as_secs_f64() / 8.0) as u32).max(2 * BURST_BYTES);
    let limit = limit.to_string();
    [
        "-n", NS_GW, "qdisc", verb, "dev", GW_SUB_IF, "root", "tbf", "rate", &rate, "burst",
        &burst, "limit", &limit,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn set_rate(verb: &str, bps: u64) -> Result<()> {
    let out = Command::new("tc")
        .args(tbf_args(verb, bps))
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run tc")?;
    if !out.status.success() {
        bail!(
            "tc qdisc {verb} (rate {bps} bit/s) failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The bottleneck's counters.
#[derive(Debug, Clone, Copy, Default)]
struct TcStats {
    bytes: u64,
    packets: u64,
    drops: u64,
    backlog: u64,
}

fn json_u64(text: &str, key: &str) -> Option<u64> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn read_tc() -> Result<TcStats> {
    let out = Command::new("tc")
        .args(["-n", NS_GW, "-s", "-j", "qdisc", "show", "dev", GW_SUB_IF])
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run tc")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tbf = text
        .find("\"kind\":\"tbf\"")
        .map(|at| &text[at..])
        .ok_or_else(|| anyhow!("no tbf qdisc in `{}`", text.trim()))?;
    let field = |key| json_u64(tbf, key).ok_or_else(|| anyhow!("no {key} in `{}`", text.trim()));
    Ok(TcStats {
        bytes: field("bytes")?,
        packets: field("packets")?,
        drops: field("drops")?,
        backlog: field("backlog")?,
    })
}

/// Reads the bottleneck's counters every 250 ms from `t0` until `t0 + duration`, each time a
/// few milliseconds later in a frame interval (`PHASES`), so that the queue is not always seen
/// at the same point of the 30 fps cadence.
async fn sample_tc(t0: Instant, duration: Duration) -> Result<Vec<(Duration, TcStats)>> {
    const PHASES: u32 = 11;
    let mut samples = Vec::new();
    for k in 0u32.. {
        let phase = Duration::from_millis(u64::from(k * 7 % PHASES) * 3);
        let at = BIN * k + if k == 0 { Duration::ZERO } else { phase };
        if at > duration {
            break;
        }
        tokio::time::sleep_until((t0 + at).into()).await;
        let before = t0.elapsed();
        let stats = read_tc().await?;
        let after = t0.elapsed();
        samples.push(((before + after) / 2, stats));
    }
    Ok(samples)
}

/// The counters as the simulation's bins: admitted is what entered the queue (sent plus the
/// backlog's growth), offered adds the drops at the mean size of what was sent alongside.
fn tc_bins(samples: &[(Duration, TcStats)], capacity: &RateTrace) -> Vec<RateBin> {
    samples
        .windows(2)
        .map(|w| {
            let ((t1, a), (t2, b)) = (w[0], w[1]);
            let sent = b.bytes.saturating_sub(a.bytes);
            let packets = b.packets.saturating_sub(a.packets);
            let drops = b.drops.saturating_sub(a.drops);
            let admitted = (sent as i64 + b.backlog as i64 - a.backlog as i64).max(0) as u64;
            let mean = sent.checked_div(packets).unwrap_or(1250);
            RateBin {
                start: t1,
                offered_bits: (admitted + drops * mean) * 8,
                admitted_bits: admitted * 8,
                capacity_bits: capacity.bits_between(t1, t2),
            }
        })
        .collect()
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The `Instant` of a wall-clock time (µs since the epoch) read by another process.
fn instant_at(us: u64) -> Instant {
    let (now, now_us) = (Instant::now(), unix_us());
    now.checked_sub(Duration::from_micros(now_us.saturating_sub(us)))
        .unwrap_or(now)
}

fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").context("/dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The gateway, running in its namespace.
#[derive(Debug)]
struct Gateway {
    child: Child,
    quic_port: u16,
    http_port: u16,
    cert: String,
}

impl Gateway {
    async fn start(strait: &Path, filter: &str, log: Option<PathBuf>) -> Result<Gateway> {
        let secret = random_secret()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", NS_GW])
            .arg(strait)
            .args([
                "serve",
                "--quic-listen",
                "0.0.0.0:0",
                "--http-listen",
                "0.0.0.0:0",
                "--webrtc-listen",
                "127.0.0.1:0",
                "--set",
                "shedding.enabled=false",
                "--set",
                &format!("auth.keys=[{{id=\"realnet\",secret=\"{secret}\"}}]"),
                "--set",
                "http.dev_token_endpoint=true",
                "--set",
                &format!("log.filter={filter}"),
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", strait.display()))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let (mut quic, mut http, mut cert) = (None, None, None);
        let mut seen = String::new();
        let banner = async {
            while quic.is_none() || http.is_none() || cert.is_none() {
                let Some(line) = lines.next_line().await? else {
                    bail!("the gateway exited before it was serving:\n{seen}");
                };
                let _ = writeln!(seen, "{line}");
                if line.contains("QUIC / WebTransport") {
                    quic = line
                        .split_whitespace()
                        .find_map(|w| w.parse::<SocketAddr>().ok())
                        .map(|a| a.port());
                } else if line.trim_start().starts_with("HTTP")
                    && let Some(rest) = line.split("http://").nth(1)
                {
                    http = rest
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(|a| a.port());
                } else if line.contains("certificate sha-256") {
                    cert = line.split_whitespace().last().map(str::to_owned);
                }
            }
            Ok(())
        };
        tokio::time::timeout(WAIT, banner)
            .await
            .map_err(|_| anyhow!("the gateway did not print its addresses within {WAIT:?}"))??;
        tokio::spawn(drain_gateway_log(lines, log));
        Ok(Gateway {
            child,
            quic_port: quic.ok_or_else(|| anyhow!("no QUIC port"))?,
            http_port: http.ok_or_else(|| anyhow!("no HTTP port"))?,
            cert: cert.ok_or_else(|| anyhow!("no certificate fingerprint"))?,
        })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(5 * S, self.child.wait()).await;
    }
}

async fn drain_gateway_log(
    mut lines: Lines<BufReader<tokio::process::ChildStderr>>,
    log: Option<PathBuf>,
) {
    let mut file = match log {
        Some(path) => tokio::fs::File::create(&path).await.ok(),
        None => None,
    };
    while let Ok(Some(line)) = lines.next_line().await {
        match file.as_mut() {
            Some(f) => {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
            None if !line.starts_with("  ") => eprintln!("gateway: {line}"),
            None => {}
        }
    }
}

/// A publisher or subscriber process in its namespace, driven over its stdin and stdout.
#[derive(Debug)]
struct RoleProc {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl RoleProc {
    fn spawn(name: &'static str, ns: &str, exe: &Path, args: &[String]) -> Result<RoleProc> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(RoleProc {
            name,
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        })
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .with_context(|| format!("writing to the {}", self.name))
    }

    /// Reads lines until one starts with `word`; returns the rest of it.
    async fn expect(&mut self, word: &str, within: Duration) -> Result<String> {
        let name = self.name;
        let read = async {
            loop {
                let Some(line) = self.lines.next_line().await? else {
                    bail!("the {name} exited before `{word}`");
                };
                self.seen.push(line.clone());
                if let Some(rest) = line.strip_prefix(word) {
                    return Ok(rest.trim().to_owned());
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| anyhow!("no `{word}` from the {name} within {within:?}"))?
    }

    /// Reads everything up to `done`, then waits for the process.
    async fn finish(mut self, within: Duration) -> Result<Vec<String>> {
        self.expect("done", within).await?;
        let _ = tokio::time::timeout(5 * S, self.child.wait()).await;
        Ok(self.seen)
    }
}

async fn real_run(
    _net: &Net,
    args: &RunArgs,
    exe: &Path,
    strait: &Path,
    trace: &Trace,
    run: usize,
) -> Result<RunData> {
    let load_before = load_average();
    set_rate("replace", trace.steps[0].1).await?;
    let log = args
        .log_dir
        .as_ref()
        .map(|d| d.join(format!("gateway-{}-{run}.log", trace.name)));
    let gateway = Gateway::start(strait, &args.gateway_log_filter, log).await?;
    let room = format!("realnet-{}-{run}", trace.name);
    let role_args = |role: &str, gw: Ipv4Addr| -> Vec<String> {
        vec![
            role.into(),
            "--quic".into(),
            SocketAddrV4::new(gw, gateway.quic_port).to_string(),
            "--http".into(),
            SocketAddrV4::new(gw, gateway.http_port).to_string(),
            "--cert".into(),
            gateway.cert.clone(),
            "--room".into(),
            room.clone(),
        ]
    };
    let mut pub_args = role_args("publisher", GW_PUB_ADDR);
    pub_args.extend(["--seed".into(), run.to_string()]);
    let mut publisher = RoleProc::spawn("publisher", NS_PUB, exe, &pub_args)?;
    let max_rtp = publisher.expect("published", WAIT).await?;
    let mut sub_args = role_args("subscriber", GW_SUB_ADDR);
    sub_args.extend([
        "--delay-ms".into(),
        (args.rtt_ms / 2).to_string(),
        "--max-seconds".into(),
        (trace.duration.as_secs() + 60).to_string(),
    ]);
    let mut subscriber = RoleProc::spawn("subscriber", NS_SUB, exe, &sub_args)?;
    let ready_line = subscriber.expect("ready", WAIT).await?;
    let mut ready_words = ready_line.split_whitespace();
    let ready: u64 = ready_words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("the subscriber's start time: `{ready_line}`"))?;
    let idle_ms: u64 = ready_words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let t0 = instant_at(ready);
    publisher.send("go").await?;
    let sampler = tokio::spawn(sample_tc(t0, trace.duration));
    let mut changes = vec![(Duration::ZERO, trace.steps[0].1)];
    for &(at, bps) in &trace.steps[1..] {
        if at >= trace.duration {
            break;
        }
        tokio::time::sleep_until((t0 + at).into()).await;
        let before = t0.elapsed();
        set_rate("change", bps).await?;
        let after = t0.elapsed();
        changes.push(((before + after) / 2, bps));
        if at == trace.step {
            publisher.send("metrics step").await?;
        }
    }
    tokio::time::sleep_until((t0 + trace.duration).into()).await;
    subscriber.send("stop").await?;
    publisher.send("metrics end").await?;
    publisher.send("stop").await?;
    let sub_lines = subscriber.finish(WAIT).await?;
    let pub_lines = publisher.finish(WAIT).await?;
    let samples = sampler.await??;
    gateway.stop().await;
    if let Some(dir) = &args.log_dir {
        let raw = format!(
            "# subscriber\n{}\n# publisher\n{}\n# tbf (ms, bytes, packets, drops, backlog)\n{}\n",
            sub_lines.join("\n"),
            pub_lines.join("\n"),
            samples
                .iter()
                .map(|(t, s)| format!(
                    "{} {} {} {} {}",
                    t.as_millis(),
                    s.bytes,
                    s.packets,
                    s.drops,
                    s.backlog
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let _ = std::fs::write(dir.join(format!("run-{}-{run}.txt", trace.name)), raw);
    }
    let capacity = RateTrace::new(changes.clone());
    let mut data = parse_subscriber(&sub_lines)?;
    data.label = format!("real run {run}");
    data.idle = Duration::from_millis(idle_ms);
    data.notes.push(format!(
        "the subscriber's leg was up {idle_ms} ms before its subscriptions (connect, join, the \
         tracks, path-MTU discovery)"
    ));
    data.bins = tc_bins(&samples, &capacity);
    let delays: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t >= trace.link_from)
        .map(|(t, s)| {
            let bps = capacity.rate_at(*t).max(1);
            Duration::from_secs_f64(s.backlog as f64 * 8.0 / bps as f64)
        })
        .collect();
    data.queue_p95 = percentile95(delays);
    data.estimates = parse_estimates(&pub_lines);
    let metrics = parse_metrics(&pub_lines);
    let counter = |tag: &str, name: &str| -> Option<f64> {
        metrics.get(&(tag.to_owned(), name.to_owned())).copied()
    };
    data.failed_probes = match (
        counter("step", "strait_allocation_probes_failed_total"),
        counter("end", "strait_allocation_probes_failed_total"),
    ) {
        (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
        _ => None,
    };
    let last = samples.last().map(|(_, s)| *s).unwrap_or_default();
    let first = samples.first().map(|(_, s)| *s).unwrap_or_default();
    let publisher_line = pub_lines
        .iter()
        .find_map(|l| l.strip_prefix("publisher "))
        .unwrap_or("?");
    let started: Option<u64> = pub_lines
        .iter()
        .find_map(|l| l.strip_prefix("started "))
        .and_then(|v| v.trim().parse().ok());
    data.notes.insert(
        0,
        format!(
            "rate changes at {} (tc returned; the trace's times are 0 and every step after)",
            changes
                .iter()
                .map(|(t, bps)| format!("{:.3} s → {} kbit/s", t.as_secs_f64(), bps / 1000))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    data.notes.push(format!(
        "tbf over the run: {} packets sent, {} dropped (queue full)",
        last.packets - first.packets,
        last.drops - first.drops
    ));
    let wanted = [
        "strait_allocation_probes_total",
        "strait_allocation_probes_failed_total",
        "strait_allocation_pauses_total",
        "strait_allocation_resumes_total",
        "strait_allocation_failed_climbs_total",
        "strait_padding_bytes_total",
    ];
    let shown: Vec<String> = wanted
        .iter()
        .filter_map(|name| {
            counter("end", name).map(|v| format!("{} {v}", name.trim_start_matches("strait_")))
        })
        .collect();
    if !shown.is_empty() {
        data.notes
            .push(format!("gateway at the end: {}", shown.join(", ")));
    }
    data.notes.push(format!(
        "publisher: packets sent, refused, keyframe requests: {publisher_line}; largest RTP \
         packet {max_rtp} bytes"
    ));
    if let (Some(started), Some(base)) = (started, data.owd_base) {
        data.notes.push(format!(
            "media one-way delay: at least {:.1} ms (relay and path); above that p50 {:.1} ms, \
             p95 {:.1} ms",
            (base - started as i64) as f64 / 1000.0,
            data.owd_extra.0 as f64 / 1000.0,
            data.owd_extra.1 as f64 / 1000.0,
        ));
    }
    data.notes.push(format!(
        "load average {load_before:.2} before, {:.2} after",
        load_average()
    ));
    Ok(data.into_run())
}

/// What the subscriber printed, on top of the figures' inputs.
#[derive(Debug, Default)]
struct SubscriberRecord {
    label: String,
    timeline: Vec<Slot>,
    bins: Vec<RateBin>,
    video: VideoReport,
    audio: f64,
    queue_p95: Option<Duration>,
    failed_probes: Option<u64>,
    notes: Vec<String>,
    owd_base: Option<i64>,
    owd_extra: (i64, i64),
    estimates: Vec<(Duration, u64)>,
    idle: Duration,
}

impl SubscriberRecord {
    fn into_run(self) -> RunData {
        RunData {
            label: self.label,
            timeline: self.timeline,
            bins: self.bins,
            video: self.video,
            audio: self.audio,
            queue_p95: self.queue_p95,
            packet_queue_p95: None,
            failed_probes: self.failed_probes,
            estimates: self.estimates,
            idle: self.idle,
            notes: self.notes,
        }
    }
}

/// The estimate reports from the histogram's count and sum (see `watch_estimates`).
fn parse_estimates(lines: &[String]) -> Vec<(Duration, u64)> {
    let samples: Vec<(u64, u64, f64)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("estimates "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((
                words.next()?.parse().ok()?,
                words.next()?.parse().ok()?,
                words.next()?.parse().ok()?,
            ))
        })
        .collect();
    samples
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| {
            let n = (w[1].1 - w[0].1) as f64;
            (
                Duration::from_millis(w[1].0),
                ((w[1].2 - w[0].2) / n).max(0.0) as u64,
            )
        })
        .collect()
}

fn parse_metrics(lines: &[String]) -> BTreeMap<(String, String), f64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("metric "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let tag = words.next()?.to_owned();
            let name = words.next()?.to_owned();
            let value = words.next()?.parse().ok()?;
            Some(((tag, name), value))
        })
        .collect()
}

fn parse_subscriber(lines: &[String]) -> Result<SubscriberRecord> {
    let mut record = SubscriberRecord::default();
    let mut events = Vec::new();
    let mut freezes = Vec::new();
    let mut kbits = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| anyhow!("bad subscriber line `{line}`"))
        };
        match words.first().copied() {
            Some("slot") => {
                let at = Duration::from_millis(num(1)?);
                let state = words.get(2).copied().unwrap_or("-");
                let (current, paused) = match state {
                    "P" => (None, true),
                    "-" => (None, false),
                    l => (l.parse().ok(), false),
                };
                record.timeline.push(Slot {
                    at,
                    current,
                    target: current.unwrap_or(0),
                    paused,
                });
            }
            Some("event") => {
                let at = num(1)? as f64 / 1e6;
                let what = match words.get(2).copied() {
                    Some("switched") => format!("→{}", words.get(3).unwrap_or(&"?")),
                    Some("paused") => "paused".into(),
                    Some("resumed") => "resumed".into(),
                    _ => "?".into(),
                };
                events.push(format!("{at:.2} s {what}"));
            }
            Some("bin") => kbits.push(num(2)? * 8 / 500),
            Some("video") => {
                record.video = VideoReport {
                    packets: num(1)?,
                    frames_rendered: num(2)?,
                    frames_dropped: num(3)?,
                    freeze_count: num(4)?,
                    total_freeze: Duration::from_micros(num(5)?),
                    longest_freeze: Duration::from_micros(num(6)?),
                    keyframes_rendered: num(7)?,
                    first_render: None,
                    last_render: None,
                };
                record.notes.push(format!(
                    "video: {} packets, {} frames rendered ({} keyframes), {} dropped, longest \
                     freeze {:.2} s",
                    num(1)?,
                    num(2)?,
                    num(7)?,
                    num(3)?,
                    num(6)? as f64 / 1e6
                ));
            }
            Some("audio") => {
                let (received, expected) = (num(1)?, num(2)?);
                record.audio = if expected == 0 {
                    1.0
                } else {
                    received as f64 / expected as f64
                };
            }
            Some("owd") => {
                let parse = |i: usize| -> Option<i64> { words.get(i).and_then(|w| w.parse().ok()) };
                record.owd_base = parse(1);
                record.owd_extra = (parse(2).unwrap_or(0), parse(3).unwrap_or(0));
            }
            Some("stats") => record.notes.push(format!(
                "subscriber: {} RTP packets received, {} dropped by its queue, {} padding \
                 datagrams, {} keyframe requests sent",
                num(1)?,
                num(2)?,
                num(3)?,
                num(4)?
            )),
            Some("relay") => record.notes.push(line.clone()),
            Some("freeze") => {
                let (end, length) = (num(1)? as f64 / 1e6, num(2)? as f64 / 1e6);
                freezes.push(format!("{:.2}–{end:.2} s", end - length));
            }
            _ => {}
        }
    }
    record.notes.insert(
        0,
        format!(
            "events as the subscriber received them: {}",
            if events.is_empty() {
                "none".into()
            } else {
                events.join(", ")
            }
        ),
    );
    record.notes.push(format!(
        "freezes: {}",
        if freezes.is_empty() {
            "none".into()
        } else {
            freezes.join(", ")
        }
    ));
    record.notes.push(format!(
        "received RTP, kbit/s per 500 ms: {}",
        kbits
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(record)
}

// ---------------------------------------------------------------------------------------------
// The roles
// ---------------------------------------------------------------------------------------------

/// Connects and joins; also returns when the session was up (`ServerHello`).
async fn connect(
    server: SocketAddr,
    cert: &str,
    token: String,
    room: &str,
) -> Result<(Session, Instant)> {
    let hash = parse_fingerprint(cert).ok_or_else(|| anyhow!("bad fingerprint {cert}"))?;
    let config = ClientConfig::new(server, Trust::Hashes(vec![hash]), token);
    let session = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .map_err(|_| anyhow!("no connection to {server} within {WAIT:?}"))??;
    let up = Instant::now();
    tokio::time::timeout(WAIT, session.join(room))
        .await
        .map_err(|_| anyhow!("no join within {WAIT:?}"))??;
    Ok((session, up))
}

async fn token(args: &RoleArgs, identity: &str) -> Result<String> {
    tokio::time::timeout(WAIT, mint_token(args.http, &args.room, identity))
        .await
        .map_err(|_| anyhow!("no token within {WAIT:?}"))?
        .map_err(|e| anyhow!("minting a token: {e}"))
}

async fn print_metrics(http_addr: SocketAddr, tag: &str) {
    let Ok(body) = http(http_addr, "GET", "/metrics", None).await else {
        println!("metric {tag} unreachable 0");
        return;
    };
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        if (line.starts_with("strait_allocation_") || line.starts_with("strait_padding_"))
            && !line.contains('{')
            && let Some((name, value)) = line.rsplit_once(' ')
        {
            println!("metric {tag} {name} {value}");
        }
    }
}

/// The gateway's estimates as they reach the allocation, from the histogram it keeps of them
/// (`strait_subscriber_estimate_bits_per_second`, QUIC legs): its count and sum every 250 ms,
/// read over the publisher's unconstrained link. A change of the count is a new estimate, and
/// the change of the sum its value (their mean when several came in one interval).
async fn watch_estimates(
    http_addr: SocketAddr,
    start: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(u128, u64, f64)> {
    const NAME: &str = "strait_subscriber_estimate_bits_per_second";
    let mut samples = Vec::new();
    for k in 0u32.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until((start + BIN * k).into()).await;
        let Ok(body) = http(http_addr, "GET", "/metrics", None).await else {
            continue;
        };
        let value = |suffix: &str| -> Option<f64> {
            body.lines()
                .filter(|l| l.starts_with(&format!("{NAME}_{suffix}")) && l.contains("\"quic\""))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .next()
        };
        if let (Some(count), Some(sum)) = (value("count"), value("sum")) {
            samples.push((start.elapsed().as_millis(), count as u64, sum));
        }
    }
    samples
}

fn codec(kind: TrackKind) -> Codec {
    match kind {
        TrackKind::Audio => Codec {
            name: "opus".into(),
            payload_type: AUDIO_PT,
            clock_rate: 48_000,
            channels: 2,
            fmtp: String::new(),
        },
        _ => Codec {
            name: "VP8".into(),
            payload_type: VIDEO_PT,
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
        },
    }
}

async fn publisher(args: RoleArgs) -> Result<()> {
    let (session, _) = connect(
        args.quic,
        &args.cert,
        token(&args, "publisher").await?,
        &args.room,
    )
    .await?;
    let audio = session
        .publish(PublishSpec {
            kind: TrackKind::Audio,
            codec: codec(TrackKind::Audio),
            source: "microphone".into(),
            layers: vec![LayerSpec::default()],
            muted: false,
        })
        .await?;
    let mut config = PublisherConfig::default();
    let sizes = [(320, 180), (640, 360), (1280, 720)];
    let video = session
        .publish(PublishSpec {
            kind: TrackKind::Video,
            codec: codec(TrackKind::Video),
            source: "camera".into(),
            layers: config
                .layers
                .iter()
                .zip(sizes)
                .map(|(l, (width, height))| LayerSpec {
                    max_bitrate: u32::try_from(l.bitrate_bps).unwrap_or(u32::MAX),
                    width,
                    height,
                })
                .collect(),
            muted: false,
        })
        .await?;
    // Path-MTU discovery lifts the datagram size above QUIC's 1200 within a few round trips;
    // the simulated publisher's 1200-byte RTP packets need it (quinn gives no event for it: its
    // datagram size is looked at, for at most 5 s).
    let top = *video.media.last().ok_or_else(|| anyhow!("no layers"))?;
    let deadline = Instant::now() + 5 * S;
    while session.max_rtp_size(top).unwrap_or(0) < config.max_packet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let max_rtp = session.max_rtp_size(top).unwrap_or(0);
    config.max_packet = config.max_packet.min(max_rtp);
    if config.max_packet < 100 {
        bail!("the publisher's datagrams carry only {max_rtp} bytes of RTP");
    }
    println!("published {}", config.max_packet);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match stdin.next_line().await? {
            Some(l) if l == "go" => break,
            Some(l) if l.starts_with("metrics ") => print_metrics(args.http, &l[8..]).await,
            Some(_) => {}
            None => return Ok(()),
        }
    }
    let start = Instant::now();
    println!("started {}", unix_us());
    let stop_watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(watch_estimates(args.http, start, stop_watch.clone()));
    let mut source = SimulcastPublisher::new(config, start, args.seed);
    let layers = video.media.len();
    let (mut sent, mut refused, mut asked) = (0u64, 0u64, 0u64);
    let end = tokio::time::Instant::from_std(start + Duration::from_secs(args.max_seconds));
    loop {
        let due = tokio::time::Instant::from_std(source.poll_timeout());
        tokio::select! {
            () = tokio::time::sleep_until(due) => {
                for packet in source.poll_packets(Instant::now()) {
                    let media = match packet.kind {
                        MediaKind::Video { layer, .. } => video.media[layer.min(layers - 1)],
                        MediaKind::Audio => audio.media[0],
                    };
                    match session.send_rtp(media, &packet.rtp) {
                        Ok(()) => sent += 1,
                        Err(_) => refused += 1,
                    }
                }
            }
            event = session.next_event() => match event {
                Some(SessionEvent::KeyframeRequested { track, layer }) if track == video.track => {
                    asked += 1;
                    match layer {
                        Some(l) if usize::from(l) < layers => source.request_keyframe(usize::from(l)),
                        _ => (0..layers).for_each(|l| source.request_keyframe(l)),
                    }
                }
                Some(SessionEvent::Closed(e)) => bail!("the publisher's session closed: {e}"),
                None => bail!("the publisher's session ended"),
                _ => {}
            },
            line = stdin.next_line() => match line? {
                Some(l) if l.starts_with("metrics ") => print_metrics(args.http, &l[8..]).await,
                Some(l) if l == "stop" => break,
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(end) => break,
        }
    }
    println!("publisher {sent} {refused} {asked}");
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Ok(samples) = watcher.await {
        for (ms, count, sum) in samples {
            println!("estimates {ms} {count} {sum}");
        }
    }
    session.close().await;
    println!("done");
    Ok(())
}

/// The subscriber's view of its video subscription.
#[derive(Debug)]
struct View {
    layer: u8,
    paused: bool,
    got_video: bool,
    /// The layer of the last video packet (from its stamp: stream = 1 + layer).
    media_layer: Option<u8>,
}

async fn subscriber(args: RoleArgs) -> Result<()> {
    // The relay: half the RTT each way, after the bottleneck towards the subscriber.
    let relay = if args.delay_ms > 0 {
        let delay = Duration::from_millis(args.delay_ms);
        let mut config = RelayConfig::new(args.quic);
        config.upstream_bind = SocketAddr::from(([0, 0, 0, 0], 0));
        config.to_upstream = Impairment {
            delay,
            ..Impairment::none()
        };
        config.to_client = Impairment {
            delay,
            ..Impairment::none()
        };
        Some(UdpRelay::start(config).await?)
    } else {
        None
    };
    let server = relay.as_ref().map_or(args.quic, UdpRelay::local_addr);
    let (session, up) = connect(
        server,
        &args.cert,
        token(&args, "subscriber").await?,
        &args.room,
    )
    .await?;
    // The publisher's tracks: in the room's snapshot, or announced after it.
    let tracks = async {
        loop {
            let tracks = session.tracks();
            let find = |kind: TrackKind| tracks.iter().find(|t| t.kind == kind).map(|t| t.track);
            if let (Some(v), Some(a)) = (find(TrackKind::Video), find(TrackKind::Audio)) {
                return Ok((v, a));
            }
            if session.next_event().await.is_none() {
                bail!("the subscriber's session ended before the publisher's tracks came");
            }
        }
    };
    let (video, audio) = tokio::time::timeout(WAIT, tracks)
        .await
        .map_err(|_| anyhow!("the publisher's tracks did not show up within {WAIT:?}"))??;
    // Path-MTU discovery, so that forwarded 1200-byte RTP packets fit from the start (quinn
    // gives no event for it: its datagram size is looked at, for at most 5 s).
    let deadline = Instant::now() + 5 * S;
    while session.max_datagram_size().unwrap_or(0) < 1300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let vsub = tokio::time::timeout(WAIT, session.subscribe(video, None)).await??;
    let asub = tokio::time::timeout(WAIT, session.subscribe(audio, None)).await??;
    let t0 = Instant::now();
    let t0_us = unix_us();
    // How long the leg was up with nothing to carry but the control stream before the media.
    println!("ready {t0_us} {}", t0.duration_since(up).as_millis());
    run_subscriber(&session, video, &vsub, &asub, t0, t0_us, &args).await?;
    if let Some(relay) = relay {
        let stats = relay.stats();
        println!(
            "relay to the subscriber: {} forwarded, {} dropped; to the gateway: {} forwarded, {} \
             dropped",
            stats.to_client.forwarded,
            stats.to_client.dropped() + stats.to_client.send_errors,
            stats.to_upstream.forwarded,
            stats.to_upstream.dropped() + stats.to_upstream.send_errors,
        );
        relay.shutdown().await;
    }
    session.close().await;
    println!("done");
    Ok(())
}

fn slot_char(view: &View) -> String {
    if view.paused {
        "P".into()
    } else if !view.got_video {
        "-".into()
    } else {
        view.layer.to_string()
    }
}

async fn run_subscriber(
    session: &Session,
    video: TrackId,
    vsub: &strait_client::Subscription,
    asub: &strait_client::Subscription,
    t0: Instant,
    t0_us: u64,
    args: &RoleArgs,
) -> Result<()> {
    let mut view = View {
        layer: vsub.layer,
        paused: vsub.paused.is_some(),
        got_video: false,
        media_layer: None,
    };
    let mut receiver = MediaReceiver::default();
    let mut slots: Vec<String> = Vec::new();
    let mut events: Vec<String> = Vec::new();
    let mut bytes: Vec<u64> = Vec::new();
    let mut owd: Vec<i64> = Vec::new();
    let (mut last_seq, mut last_ask): (Option<u16>, Option<Instant>) = (None, None);
    let mut audio_seq: Option<u64> = None;
    let (mut audio_first, mut audio_last, mut audio_count) = (u64::MAX, 0u64, 0u64);
    let mut asks = 0u64;
    let mut seen = VideoReport::default();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval_at((t0 + SLOT).into(), SLOT);
    let end = tokio::time::Instant::from_std(t0 + Duration::from_secs(args.max_seconds));
    let since = |at: Instant| at.saturating_duration_since(t0);
    loop {
        tokio::select! {
            packet = session.recv_media() => {
                let Some(packet) = packet else { bail!("the subscriber's session ended") };
                let at = packet.received_at.into_std();
                let rtp = &packet.rtp;
                let bin = (since(at).as_millis() / BYTES_BIN.as_millis()) as usize;
                if bytes.len() <= bin {
                    bytes.resize(bin + 1, 0);
                }
                bytes[bin] += rtp.len() as u64;
                receiver.on_rtp(at, rtp);
                // A freeze is known when the frame after it renders: note when it ended and
                // how long it was.
                if packet.media == vsub.media
                    && let Some(report) = receiver.video(vsub.ssrc).map(|v| v.report())
                {
                    if report.freeze_count > seen.freeze_count {
                        events.push(format!(
                            "freeze {} {}",
                            since(at).as_micros(),
                            (report.total_freeze - seen.total_freeze).as_micros()
                        ));
                    }
                    seen = report;
                }
                if let Some(stamp) = Stamp::parse_rtp(rtp) {
                    let arrival = t0_us as i64 + since(at).as_micros() as i64;
                    owd.push(arrival - stamp.sent_us as i64);
                    if packet.media == vsub.media && stamp.stream >= 1 {
                        view.media_layer = u8::try_from(stamp.stream - 1).ok();
                    }
                }
                if rtp.len() < 12 {
                    continue;
                }
                let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
                if packet.media == vsub.media {
                    view.got_video = true;
                    // A gap: ask for a keyframe, at most every 250 ms, as the simulated one.
                    let previous = last_seq.unwrap_or(seq.wrapping_sub(1));
                    let delta = seq.wrapping_sub(previous);
                    if delta < 0x8000 {
                        last_seq = Some(seq);
                    }
                    let now = Instant::now();
                    if delta > 1 && delta < 0x8000
                        && last_ask.is_none_or(|t| now >= t + KEYFRAME_ASK_INTERVAL)
                    {
                        last_ask = Some(now);
                        asks += 1;
                        let _ = session.request_keyframe(video, None).await;
                    }
                } else if packet.media == asub.media {
                    let ext = match audio_seq {
                        None => u64::from(seq) + (1 << 16),
                        Some(h) => h.saturating_add_signed(i64::from(seq.wrapping_sub(h as u16) as i16)),
                    };
                    audio_seq = Some(audio_seq.map_or(ext, |h| h.max(ext)));
                    audio_first = audio_first.min(ext);
                    audio_last = audio_last.max(ext);
                    audio_count += 1;
                }
            }
            event = session.next_event() => {
                let at = since(Instant::now()).as_micros();
                match event {
                    Some(SessionEvent::LayerSwitched { track, layer }) if track == video => {
                        view.layer = layer;
                        events.push(format!("event {at} switched {layer}"));
                    }
                    Some(SessionEvent::TrackPaused { track, .. }) if track == video => {
                        view.paused = true;
                        events.push(format!("event {at} paused"));
                    }
                    Some(SessionEvent::TrackResumed { track, .. }) if track == video => {
                        view.paused = false;
                        events.push(format!("event {at} resumed"));
                    }
                    Some(SessionEvent::Closed(e)) => bail!("the subscriber's session closed: {e}"),
                    None => bail!("the subscriber's session ended"),
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                slots.push(format!(
                    "slot {} {} {}",
                    since(now).as_millis(),
                    slot_char(&view),
                    view.media_layer.map_or("-".into(), |l| l.to_string()),
                ));
                // A decoder that cannot render asks again while it waits, as the simulated one.
                let frozen = receiver
                    .video(vsub.ssrc)
                    .is_some_and(|v| v.ongoing_freeze(now).is_some());
                if !view.paused && frozen && last_ask.is_none_or(|t| now >= t + FROZEN_ASK_INTERVAL) {
                    last_ask = Some(now);
                    asks += 1;
                    let _ = session.request_keyframe(video, None).await;
                }
            }
            line = stdin.next_line() => match line? {
                Some(l) if l == "stop" => break,
                Some(_) => {}
                None => break,
            },
            () = tokio::time::sleep_until(end) => break,
        }
    }
    for line in slots.iter().chain(events.iter()) {
        println!("{line}");
    }
    for (n, b) in bytes.iter().enumerate() {
        println!("bin {} {b}", n as u128 * BYTES_BIN.as_millis());
    }
    let report = receiver
        .video(vsub.ssrc)
        .map(|v| v.report())
        .unwrap_or_default();
    println!(
        "video {} {} {} {} {} {} {}",
        report.packets,
        report.frames_rendered,
        report.frames_dropped,
        report.freeze_count,
        report.total_freeze.as_micros(),
        report.longest_freeze.as_micros(),
        report.keyframes_rendered
    );
    let expected = if audio_count == 0 {
        0
    } else {
        audio_last - audio_first + 1
    };
    println!("audio {audio_count} {expected}");
    if let Some(&base) = owd.iter().min() {
        let mut extra: Vec<i64> = owd.iter().map(|v| v - base).collect();
        extra.sort_unstable();
        let at =
            |q: f64| extra[((extra.len() as f64 * q).ceil() as usize).clamp(1, extra.len()) - 1];
        println!("owd {base} {} {}", at(0.5), at(0.95));
    }
    let stats = session.stats();
    println!(
        "stats {} {} {} {asks}",
        stats.media_received, stats.media_dropped, stats.padding_received
    );
    Ok(())
}
