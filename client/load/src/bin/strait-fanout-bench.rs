//! # strait-fanout-bench
//!
//! Measures what one forwarded packet costs the gateway on the raw QUIC path at 1 → N fan-out.
//!
//! For every N it starts the `strait` binary as a child process on loopback port 0, mints tokens
//! with `POST /v1/dev/token`, connects one publisher and N subscribers with this crate's client
//! (raw QUIC, the certificate pinned by the SHA-256 the gateway prints), publishes an Opus-like
//! audio track (audio is forwarded at once, no keyframe wait), subscribes everyone, then sends
//! RTP packets of `--size` bytes at `--rate` packets per second for `--seconds`. The gateway's CPU
//! time (utime + stime from `/proc/<pid>/stat`) is read before and after the send phase; the
//! packets forwarded come from the gateway's `strait_packets_out` counter, the packets received
//! from the subscribers' own counters.
//!
//! It reports, per run: packets sent, forwarded and received, loss, gateway CPU seconds, CPU µs
//! per forwarded packet (gross, and net of the gateway's idle CPU measured just before), the
//! gateway's resident memory, and the benchmark process's own CPU (it shares the machine).
//!
//! Bounded: every wait has a timeout, the send phase stops after `--seconds`, traffic goes only
//! to loopback, and the gateway child is killed when its guard is dropped, whatever happened.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-load --bin strait --bin strait-fanout-bench
//! target/release/strait-fanout-bench --subscribers 1,10,100 --seconds 10 --rate 500
//! ```
//!
//! Linux only: it reads `/proc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_client::protocol::{Codec, MediaId, TrackId, TrackKind};
use strait_client::{Client, ClientConfig, LayerSpec, PublishSpec, Session, Trust};
use strait_load::fanout::{FanoutArgs, Report, settle};
use strait_load::gateway::{GatewayChild, mint_token, scrape};
use strait_load::procfs::{clock_ticks_per_second, cpu_split, cpu_ticks, status_kib};
use strait_load::stats::{median, pct};
use strait_load::{Error, Result};

/// CPU per forwarded packet of the gateway's QUIC path at 1 → N fan-out.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "strait-fanout-bench")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// `key=value` settings for the gateway (`strait serve --set`), e.g.
    /// `media.room_spread_at=500`.
    #[arg(long = "set")]
    settings: Vec<String>,
    #[command(flatten)]
    fanout: FanoutArgs,
}

impl std::ops::Deref for Args {
    type Target = FanoutArgs;

    fn deref(&self) -> &FanoutArgs {
        &self.fanout
    }
}

/// RTP packets up to 1400 bytes fit the gateway's datagrams on loopback.
const MAX_SIZE: usize = 1400;

/// Starts the gateway sized for `n` subscribers: every session comes from 127.0.0.1 and joins one
/// room.
async fn start_gateway(
    strait: &std::path::Path,
    n: usize,
    extra: &[String],
) -> Result<GatewayChild> {
    let room_size = n + 16;
    let mut settings = vec![
        format!("limits.max_sessions_per_ip={room_size}"),
        format!("limits.max_participants_per_room={room_size}"),
    ];
    settings.extend(extra.iter().cloned());
    GatewayChild::start(strait, &settings).await
}

// ---------------------------------------------------------------------------------------------
// One run.

/// What one run measured.
#[derive(Debug, Clone, Default)]
struct RunResult {
    subscribers: usize,
    rate: u32,
    setup_s: f64,
    sent: u64,
    send_errors: u64,
    packets_in: u64,
    forwarded: u64,
    received: u64,
    expected: u64,
    window_s: f64,
    gateway_cpu_s: f64,
    idle_cpu_pct: f64,
    /// Share of the gateway's CPU time spent in the kernel (stime).
    system_pct: f64,
    us_per_packet: f64,
    net_us_per_packet: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    bench_cpu_s: f64,
    drops: Vec<(String, u64)>,
}

impl RunResult {
    fn loss_pct(&self) -> f64 {
        pct(self.expected.saturating_sub(self.received), self.expected)
    }

    fn forward_loss_pct(&self) -> f64 {
        pct(self.expected.saturating_sub(self.forwarded), self.expected)
    }

    fn drops_total(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

fn client_config(gateway: &GatewayChild, token: String) -> ClientConfig {
    let mut config = ClientConfig::new(gateway.quic, Trust::Hashes(vec![gateway.cert]), token);
    // Subscribers only count packets (the session's counter); the queue that would hand them to
    // an application is kept tiny, and so is the event queue (a join storm is O(N²) events).
    config.media_queue = 4;
    config.event_queue = 64;
    config.auto_resume = false;
    config.hello_timeout = Duration::from_secs(60);
    config.request_timeout = Duration::from_secs(60);
    config
}

async fn connect(gateway: &GatewayChild, identity: &str) -> Result<Session> {
    let token = mint_token(gateway.http, "bench", identity).await?;
    let (session, _) = Client::connect_and_join(client_config(gateway, token), "bench")
        .await
        .map_err(|e| format!("{identity}: connect and join: {e}"))?;
    Ok(session)
}

async fn connect_subscribers(
    gateway: &Arc<GatewayChild>,
    n: usize,
    track: TrackId,
    concurrency: usize,
) -> Result<Vec<Session>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let gateway = gateway.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let session = connect(&gateway, &format!("sub-{i}")).await?;
            session
                .subscribe(track, None)
                .await
                .map_err(|e| format!("sub-{i}: subscribe: {e}"))?;
            Ok::<_, Error>(session)
        });
    }
    let mut sessions = Vec::with_capacity(n);
    let mut first_error = None;
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(session)) => sessions.push(session),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match first_error {
        None => Ok(sessions),
        Some(e) => Err(format!("{failed} of {n} subscribers failed; first: {e}").into()),
    }
}

fn received(subscribers: &[Session]) -> u64 {
    subscribers.iter().map(|s| s.stats().media_received).sum()
}

/// Synthetic RTP: Opus-like audio, payload type 111, 48 kHz clock.
#[derive(Debug)]
struct RtpSource {
    packet: Vec<u8>,
    seq: u16,
    timestamp: u32,
    step: u32,
}

impl RtpSource {
    fn new(size: usize, rate: u32) -> Self {
        let mut packet = vec![0x5a; size];
        packet[0] = 0x80;
        packet[1] = 111;
        packet[8..12].copy_from_slice(&0x5374_7261u32.to_be_bytes());
        Self {
            packet,
            seq: 1,
            timestamp: 0,
            step: (48_000 / rate).max(1),
        }
    }

    fn next(&mut self) -> &[u8] {
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.packet[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.step);
        &self.packet
    }
}

/// Sends `total` packets at `rate` per second; returns (sent, refused).
async fn send_paced(
    publisher: &Session,
    media: MediaId,
    source: &mut RtpSource,
    rate: u32,
    total: u64,
) -> (u64, u64) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sent, mut refused) = (0u64, 0u64);
    let mut attempted = 0u64;
    while attempted < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
        while attempted < due {
            attempted += 1;
            match publisher.send_rtp(media, source.next()) {
                Ok(()) => sent += 1,
                Err(_) => refused += 1,
            }
        }
    }
    (sent, refused)
}

async fn run_once(args: &Args, n: usize) -> Result<RunResult> {
    let rate = args.rate_for(n);
    let gateway = Arc::new(start_gateway(&args.strait, n, &args.settings).await?);
    let result = measure(args, &gateway, n, rate).await;
    match Arc::try_unwrap(gateway) {
        Ok(gateway) => gateway.stop().await,
        Err(gateway) => drop(gateway),
    }
    result
}

async fn measure(
    args: &Args,
    gateway: &Arc<GatewayChild>,
    n: usize,
    rate: u32,
) -> Result<RunResult> {
    let pid = gateway.pid.to_string();
    let ticks = clock_ticks_per_second();
    let setup_started = Instant::now();

    // 1. The publisher and its track.
    let publisher = connect(gateway, "pub").await?;
    let track = publisher
        .publish(PublishSpec {
            kind: TrackKind::Audio,
            codec: Codec {
                name: "opus".into(),
                payload_type: 111,
                clock_rate: 48_000,
                channels: 2,
                fmtp: String::new(),
            },
            source: "microphone".into(),
            layers: vec![LayerSpec::default()],
            muted: false,
        })
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let media = track.media[0];
    if let Some(max) = publisher.max_rtp_size(media)
        && args.size > max
    {
        return Err(format!(
            "--size {} does not fit a datagram now (max {max})",
            args.size
        )
        .into());
    }

    // 2. N subscribers.
    let subscribers =
        connect_subscribers(gateway, n, track.track, args.connect_concurrency).await?;
    let setup_s = setup_started.elapsed().as_secs_f64();

    // 3. Warm-up: until every subscriber has received something.
    let mut source = RtpSource::new(args.size, rate);
    let warm_until = Instant::now() + Duration::from_secs(20);
    loop {
        send_paced(
            &publisher,
            media,
            &mut source,
            rate,
            u64::from(rate / 10).max(1),
        )
        .await;
        if subscribers.iter().all(|s| s.stats().media_received > 0) {
            break;
        }
        if Instant::now() > warm_until {
            let silent = subscribers
                .iter()
                .filter(|s| s.stats().media_received == 0)
                .count();
            return Err(format!("{silent} of {n} subscribers received nothing in warm-up").into());
        }
    }
    // The warm-up's last datagrams arrive before the idle window starts.
    settle(|| received(&subscribers)).await;

    // 4. The gateway's idle CPU (keep-alives, per-session timers), to subtract.
    let idle_cpu_per_s = if args.idle_seconds > 0.0 {
        let before = cpu_ticks(&pid)?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
        let cpu = (cpu_ticks(&pid)? - before) as f64 / ticks;
        cpu / started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    // 5. The send phase.
    let metrics_before = scrape(gateway.http).await?;
    let received_before = received(&subscribers);
    let bench_before = cpu_ticks("self")?;
    let (user_before, system_before) = cpu_split(&pid)?;
    let window_started = Instant::now();
    let total = (args.seconds * f64::from(rate)).round().max(1.0) as u64;
    let (sent, send_errors) = send_paced(&publisher, media, &mut source, rate, total).await;
    // Let the last packets arrive: until the count stops moving (at most 3 s).
    settle(|| received(&subscribers)).await;
    let (user_after, system_after) = cpu_split(&pid)?;
    let window_s = window_started.elapsed().as_secs_f64();
    let bench_after = cpu_ticks("self")?;
    let received_after = received(&subscribers);
    let metrics_after = scrape(gateway.http).await?;

    let forwarded = metrics_after.packets_out - metrics_before.packets_out;
    let system_ticks = system_after - system_before;
    let cpu_ticks_used = user_after - user_before + system_ticks;
    let gateway_cpu_s = cpu_ticks_used as f64 / ticks;
    let idle_share = idle_cpu_per_s * window_s;
    let per_packet = |cpu: f64| {
        if forwarded == 0 {
            0.0
        } else {
            cpu * 1e6 / forwarded as f64
        }
    };
    let drops = metrics_after.drops_since(&metrics_before);
    let result = RunResult {
        subscribers: n,
        rate,
        setup_s,
        sent,
        send_errors,
        packets_in: metrics_after.packets_in - metrics_before.packets_in,
        forwarded,
        received: received_after - received_before,
        expected: sent * n as u64,
        window_s,
        gateway_cpu_s,
        idle_cpu_pct: idle_cpu_per_s * 100.0,
        system_pct: pct(system_ticks, cpu_ticks_used),
        us_per_packet: per_packet(gateway_cpu_s),
        net_us_per_packet: per_packet((gateway_cpu_s - idle_share).max(0.0)),
        rss_mib: status_kib(&pid, "VmRSS:") as f64 / 1024.0,
        peak_rss_mib: status_kib(&pid, "VmHWM:") as f64 / 1024.0,
        bench_cpu_s: (bench_after - bench_before) as f64 / ticks,
        drops,
    };
    drop(publisher);
    drop(subscribers);
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Output.

const HEADER: &str = "      N   rate/s  setup s      sent  forwarded   received  loss %  window s  gw CPU s  sys %  µs/pkt  net µs/pkt  idle %  RSS MiB  bench CPU s  gw drops";

fn row(r: &RunResult) -> String {
    let drops = if r.drops.is_empty() {
        "0".to_owned()
    } else {
        r.drops
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{:>7}  {:>7}  {:>7.1}  {:>8}  {:>9}  {:>9}  {:>6.2}  {:>8.2}  {:>8.2}  {:>5.0}  {:>6.2}  {:>10.2}  {:>6.1}  {:>7.1}  {:>11.2}  {}",
        r.subscribers,
        r.rate,
        r.setup_s,
        r.sent,
        r.forwarded,
        r.received,
        r.loss_pct(),
        r.window_s,
        r.gateway_cpu_s,
        r.system_pct,
        r.us_per_packet,
        r.net_us_per_packet,
        r.idle_cpu_pct,
        r.rss_mib,
        r.bench_cpu_s,
        drops,
    )
}

fn json(r: &RunResult) -> String {
    let drops = r
        .drops
        .iter()
        .map(|(reason, n)| format!("\"{reason}\":{n}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        concat!(
            "{{\"subscribers\":{},\"rate\":{},\"setup_s\":{:.3},\"sent\":{},\"send_errors\":{},",
            "\"packets_in\":{},\"forwarded\":{},\"received\":{},\"expected\":{},",
            "\"loss_pct\":{:.4},\"forward_loss_pct\":{:.4},\"window_s\":{:.3},",
            "\"gateway_cpu_s\":{:.3},\"idle_cpu_pct\":{:.2},\"system_pct\":{:.1},\"us_per_packet\":{:.4},",
            "\"net_us_per_packet\":{:.4},\"rss_mib\":{:.1},\"peak_rss_mib\":{:.1},",
            "\"bench_cpu_s\":{:.3},\"drops\":{{{}}}}}"
        ),
        r.subscribers,
        r.rate,
        r.setup_s,
        r.sent,
        r.send_errors,
        r.packets_in,
        r.forwarded,
        r.received,
        r.expected,
        r.loss_pct(),
        r.forward_loss_pct(),
        r.window_s,
        r.gateway_cpu_s,
        r.idle_cpu_pct,
        r.system_pct,
        r.us_per_packet,
        r.net_us_per_packet,
        r.rss_mib,
        r.peak_rss_mib,
        r.bench_cpu_s,
        drops,
    )
}

/// Column-wise medians of several runs of one N (drops: the median of the totals).
fn medians(runs: &[RunResult]) -> RunResult {
    let m = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    let mu = |f: &dyn Fn(&RunResult) -> u64| m(&|r| f(r) as f64).round() as u64;
    RunResult {
        subscribers: runs[0].subscribers,
        rate: runs[0].rate,
        setup_s: m(&|r| r.setup_s),
        sent: mu(&|r| r.sent),
        send_errors: mu(&|r| r.send_errors),
        packets_in: mu(&|r| r.packets_in),
        forwarded: mu(&|r| r.forwarded),
        // Loss is computed from these two; take them from the median-loss run.
        received: median_by(runs, RunResult::loss_pct).received,
        expected: median_by(runs, RunResult::loss_pct).expected,
        window_s: m(&|r| r.window_s),
        gateway_cpu_s: m(&|r| r.gateway_cpu_s),
        idle_cpu_pct: m(&|r| r.idle_cpu_pct),
        system_pct: m(&|r| r.system_pct),
        us_per_packet: m(&|r| r.us_per_packet),
        net_us_per_packet: m(&|r| r.net_us_per_packet),
        rss_mib: m(&|r| r.rss_mib),
        peak_rss_mib: m(&|r| r.peak_rss_mib),
        bench_cpu_s: m(&|r| r.bench_cpu_s),
        drops: vec![("total".into(), mu(&|r| r.drops_total()))],
    }
}

fn median_by(runs: &[RunResult], key: fn(&RunResult) -> f64) -> &RunResult {
    let mut sorted: Vec<&RunResult> = runs.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[(sorted.len() - 1) / 2]
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Err(e) = args.validate(MAX_SIZE) {
        eprintln!("strait-fanout-bench: {e}");
        std::process::exit(2);
    }
    if !args.json {
        println!(
            "strait-fanout-bench: {} s per run, {}-byte packets, gateway {}",
            args.seconds,
            args.size,
            args.strait.display()
        );
        println!("{HEADER}");
    }
    let report = Report {
        program: "strait-fanout-bench",
        header: HEADER,
        row,
        json,
        medians,
    };
    let failures = report.run_all(&args.fanout, |n| run_once(&args, n)).await;
    if failures > 0 {
        std::process::exit(1);
    }
}
