//! `strait-webrtc-bench`: gateway CPU per packet forwarded on the WebRTC leg, 1 → N.
//!
//! Starts the `strait` binary on loopback (`--strait`, default `target/release/strait`; its CPU
//! from `/proc/<pid>/stat`), publishes a VP8-like track from a native `strait-client` session at
//! `--rate` packets per second, and subscribes N WHEP peers (the `webrtc` crate, in this process)
//! to it; after every peer has received a packet, it measures the gateway's CPU over `--seconds`
//! against the change of `strait_packets_out_total{transport="webrtc"}` (each packet SRTP-
//! protected and sent on the bridge's one UDP socket), and the growth of the gateway's RSS from
//! before the first peer to the end, per peer. The peers share the two cores with the gateway, as
//! in every benchmark here.
//!
//! Setting up: `--concurrency K` posts K WHEP offers at a time (default one); `peers/s` is the
//! peers connected per second of setup (offer, answer, ICE, DTLS, first packet), `gw ms/peer`
//! the gateway's CPU per peer over the setup. `KiB/peer@setup` is the gateway's RSS growth per
//! peer once all are connected, `KiB/peer@end` at the end of the run (packet caches full).
//!
//! With `--rooms R`, R publishers in R rooms, each with N subscribers; `--set` passes settings
//! to the gateway (`media.workers=2`). It also reports the CPU of the gateway's media-worker
//! threads alone (`strait-media-*`).
//!
//! With `--ingest`, the receive path instead: per room one publisher at `--rate` and nobody
//! subscribed, first over WHIP (a `webrtc`-crate peer: SRTP, `rtc`'s receive pipeline with its
//! NACK generator, receiver reports and TWCC receiver, then the SFU core), then over raw QUIC;
//! the gateway's CPU per packet received (`strait_packets_in_total`).
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-tests --bin strait --bin strait-webrtc-bench
//! target/release/strait-webrtc-bench --subscribers 1,10,50,100 --rate 200 --seconds 10
//! target/release/strait-webrtc-bench --rooms 2 --subscribers 50 --rate 800 --set media.workers=2
//! target/release/strait-webrtc-bench --subscribers 100 --concurrency 10   # peers set up 10 at once
//! ```
//!
//! Bounded: every wait has a timeout, traffic stays on loopback, the gateway is killed at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use strait_client::protocol::{Codec, TrackKind};
use strait_client::{Client, ClientConfig, LayerSpec, PublishSpec, SessionEvent, Trust};
use strait_load::gateway::{GatewayChild, mint_token};
use strait_load::procfs::{CpuMark, clock_ticks_per_second, status_kib, threads_ticks};
use strait_tests::fixture::{WAIT, rtp};
use strait_tests::http::post_sdp;
use strait_tests::webrtc_peer::Peer;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::PeerConnection;

/// CPU per packet forwarded on the gateway's WebRTC leg at 1 → N.
#[derive(Debug, Parser)]
#[command(name = "strait-webrtc-bench")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// Numbers of WHEP subscribers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    subscribers: Vec<usize>,
    /// Publisher packets per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Rooms, each with its own publisher and N subscribers (N from `--subscribers`).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// `key=value` settings for the gateway (`strait serve --set`), e.g. `media.workers=2`.
    #[arg(long = "set")]
    settings: Vec<String>,
    /// WHEP subscribers set up at once (offers in flight together).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measure the receive path instead: the gateway's CPU per packet received from one
    /// publisher per room, over WHIP (the `webrtc` crate) and over raw QUIC, nobody subscribed.
    #[arg(long)]
    ingest: bool,
}

/// One WHEP subscriber; counts the RTP packets it receives and raises `first` at the first.
async fn whep_subscriber(
    gateway: &GatewayChild,
    path: &str,
    token: &str,
    received: Arc<AtomicU64>,
    first: Arc<tokio::sync::Notify>,
) -> Result<Box<dyn PeerConnection>> {
    let mut peer = Peer::new().await;
    peer.receive_only(RtpCodecKind::Video).await;
    let offer = peer.offer().await;
    let answer = post_sdp(gateway.http, path, token, &offer).await?;
    peer.finish(&answer).await;
    let track = tokio::time::timeout(WAIT, peer.tracks.recv())
        .await
        .context("no track")?
        .context("no track")?;
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(_) = event
                && received.fetch_add(1, Ordering::Relaxed) == 0
            {
                first.notify_one();
            }
        }
    });
    Ok(peer.pc)
}

/// `strait_packets_out_total{transport="webrtc"}`.
async fn webrtc_packets_out(addr: SocketAddr) -> Result<u64> {
    let out =
        strait_load::gateway::metric(addr, "strait_packets_out_total", "transport=\"webrtc\"")
            .await
            .map_err(|e| anyhow!("{e}"))?;
    Ok(out as u64)
}

/// A publisher of one VP8-like track in `room`, sending at `rate` until `stop`.
struct Publisher {
    session: Arc<strait_client::Session>,
    track: strait_client::protocol::TrackId,
    sender: tokio::task::JoinHandle<()>,
}

/// Calls `send(index)` `rate` times a second until `stop`, at most ten minutes' worth.
fn paced<F, Fut>(rate: u32, stop: &Arc<AtomicBool>, mut send: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        for index in 0u32..rate.saturating_mul(600) {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            send(index).await;
        }
    })
}

impl Publisher {
    /// Waits for its sender (stopped by the caller) and closes its session.
    async fn finish(self) {
        let _ = self.sender.await;
        self.session.close().await;
    }
}

async fn publisher(
    gateway: &GatewayChild,
    room: &str,
    rate: u32,
    stop: &Arc<AtomicBool>,
) -> Result<Publisher> {
    let token = mint_token(gateway.http, room, "publisher")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let config = ClientConfig::new(gateway.quic, Trust::Hashes(vec![gateway.cert]), token);
    let publisher = Arc::new(Client::connect(config).await?);
    publisher.join(room).await?;
    let track = publisher
        .publish(PublishSpec {
            kind: TrackKind::Video,
            codec: Codec {
                name: "VP8".into(),
                payload_type: 96,
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
            },
            source: "camera".into(),
            layers: vec![LayerSpec::default()],
            muted: false,
        })
        .await?;
    let media = track.media[0];
    let session = Arc::clone(&publisher);
    let sender = paced(rate, stop, move |index| {
        let mut key = index == 0;
        while let Some(event) = session.try_next_event() {
            key |= matches!(event, SessionEvent::KeyframeRequested { .. });
        }
        let packet = rtp::vp8(index as u16, index * 3000, 0x00be_0c00, key, index);
        let _ = session.send_rtp(media, &packet);
        std::future::ready(())
    });
    Ok(Publisher {
        session: publisher,
        track: track.track,
        sender,
    })
}

async fn run(args: &Args, n: usize) -> Result<()> {
    let mut settings = vec![
        format!("limits.max_participants_per_room={}", n + 16),
        format!("limits.max_sessions_per_ip={}", args.rooms * (n + 1) + 16),
    ];
    settings.extend(args.settings.iter().cloned());
    let gateway = GatewayChild::start(&args.strait, &settings)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::with_capacity(args.rooms);
    for r in 0..args.rooms {
        publishers.push(publisher(&gateway, &format!("bench-{r}"), args.rate, &stop).await?);
    }

    let pid = gateway.pid.to_string();
    let rss_before = status_kib(&pid, "VmRSS:");
    let peers_total = n * args.rooms;
    let mut peers = Vec::with_capacity(peers_total);
    let mut counters = Vec::with_capacity(peers_total);
    let first = Arc::new(tokio::sync::Notify::new());
    let setup = Instant::now();
    let setup_cpu = CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?;
    let mut pending = Vec::with_capacity(args.concurrency);
    for i in 0..n {
        for (r, publisher) in publishers.iter().enumerate() {
            let room = format!("bench-{r}");
            let path = format!("/whep/{room}/{}", publisher.track.0);
            let token = mint_token(gateway.http, &room, &format!("viewer-{i}"))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let received = Arc::new(AtomicU64::new(0));
            counters.push(Arc::clone(&received));
            let (gateway, first) = (&gateway, Arc::clone(&first));
            pending.push(
                async move { whep_subscriber(gateway, &path, &token, received, first).await },
            );
            if pending.len() >= args.concurrency.max(1) {
                for pc in futures::future::join_all(pending.drain(..)).await {
                    peers.push(pc?);
                }
            }
        }
    }
    for pc in futures::future::join_all(pending.drain(..)).await {
        peers.push(pc?);
    }
    drop(pending);
    let connected_s = setup.elapsed().as_secs_f64();
    let setup_cpu = setup_cpu.until(
        &CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?,
        clock_ticks_per_second(),
    );
    // Warm-up: every subscriber has media (each raises `first` once; `notify_one` keeps a
    // raise between the count and the wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    while counters.iter().any(|c| c.load(Ordering::Relaxed) == 0) {
        if tokio::time::timeout_at(deadline, first.notified())
            .await
            .is_err()
        {
            bail!("not every WHEP subscriber received media within {WAIT:?}");
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();
    // What the peers cost once connected, before their send state and caches fill.
    let rss_setup_per_peer =
        status_kib(&pid, "VmRSS:").saturating_sub(rss_before) as f64 / peers_total as f64;

    let cpu_before = CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?;
    let workers_before = threads_ticks(&pid, "strait-media").map_err(|e| anyhow!("{e}"))?;
    let out_before = webrtc_packets_out(gateway.http).await?;
    let received_before: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let cpu = cpu_before.until(
        &CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?,
        clock_ticks_per_second(),
    );
    let workers_s = (threads_ticks(&pid, "strait-media").map_err(|e| anyhow!("{e}"))?
        - workers_before) as f64
        / clock_ticks_per_second();
    let out = webrtc_packets_out(gateway.http).await? - out_before;
    // The gateway's memory for the peers, their legs and their NACK buffers (full by now).
    let rss_per_peer =
        status_kib(&pid, "VmRSS:").saturating_sub(rss_before) as f64 / peers_total as f64;
    let received = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<u64>()
        - received_before;
    println!(
        "{:>5} {n:>6} {:>8} {:>8.1} {:>7.1} {:>10.1} {:>10} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>6.0} {:>9.2} {:>14.0} {:>12.0}",
        args.rooms,
        args.rate,
        setup_s,
        peers_total as f64 / connected_s,
        setup_cpu.cpu_s * 1e3 / peers_total as f64,
        out,
        received,
        out as f64 / cpu.wall_s,
        cpu.cpu_s,
        workers_s,
        cpu.system_pct,
        if out > 0 {
            cpu.cpu_s * 1e6 / out as f64
        } else {
            f64::NAN
        },
        rss_setup_per_peer,
        rss_per_peer,
    );
    stop.store(true, Ordering::Relaxed);
    for pc in peers {
        let _ = pc.close().await;
    }
    for publisher in publishers {
        publisher.finish().await;
    }
    gateway.stop().await;
    Ok(())
}

/// What the receive-path measurement leaves out at its start.
const INGEST_WARM_UP: Duration = Duration::from_secs(2);

/// `strait_packets_in_total{transport=…}`.
async fn packets_in(addr: SocketAddr, transport: &str) -> Result<u64> {
    let label = format!("transport=\"{transport}\"");
    let n = strait_load::gateway::metric(addr, "strait_packets_in_total", &label)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(n as u64)
}

/// A WHIP publisher of one VP8-like track in `room` (the `webrtc` crate), sending at `rate`
/// until `stop`.
async fn whip_publisher(
    gateway: &GatewayChild,
    room: &str,
    rate: u32,
    stop: &Arc<AtomicBool>,
) -> Result<(Box<dyn PeerConnection>, tokio::task::JoinHandle<()>)> {
    use rtc::shared::marshal::Unmarshal;
    use webrtc::media_stream::track_local::TrackLocal;
    let token = mint_token(gateway.http, room, "whip-publisher")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut peer = Peer::new().await;
    let ssrc = 0x00c0_ffee;
    let track = strait_tests::bridge::local_vp8_track(ssrc);
    peer.pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let offer = peer.offer().await;
    let answer = post_sdp(gateway.http, &format!("/whip/{room}"), &token, &offer).await?;
    peer.finish(&answer).await;
    let sender = paced(rate, stop, move |index| {
        let track = Arc::clone(&track);
        async move {
            let bytes = rtp::vp8(index as u16, index * 3000, ssrc, index == 0, index);
            if let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut &bytes[..]) {
                let _ = track.write_rtp(packet).await;
            }
        }
    });
    Ok((peer.pc, sender))
}

/// The receive path: one publisher per room over `transport` ("webrtc": WHIP, "quic": raw
/// QUIC), nobody subscribed; the gateway's CPU per packet it received.
async fn run_ingest(args: &Args, transport: &str) -> Result<()> {
    let gateway = GatewayChild::start(&args.strait, &args.settings)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut whip = Vec::new();
    let mut quic = Vec::new();
    for r in 0..args.rooms {
        let room = format!("ingest-{r}");
        if transport == "webrtc" {
            whip.push(whip_publisher(&gateway, &room, args.rate, &stop).await?);
        } else {
            quic.push(publisher(&gateway, &room, args.rate, &stop).await?);
        }
    }
    // The publishers are connected (WHIP: ICE and DTLS up; QUIC: the track published). The
    // first two seconds of media are left out of the measurement: a warm-up, not a wait for
    // anything.
    tokio::time::sleep(INGEST_WARM_UP).await;
    let pid = gateway.pid.to_string();
    let cpu_before = CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?;
    let in_before = packets_in(gateway.http, transport).await?;
    if in_before == 0 {
        bail!("no media from the {transport} publishers after {INGEST_WARM_UP:?}");
    }
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let cpu = cpu_before.until(
        &CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?,
        clock_ticks_per_second(),
    );
    let received = packets_in(gateway.http, transport).await? - in_before;
    println!(
        "{transport:>9} {:>5} {:>8} {:>10} {:>9.0} {:>9.2} {:>6.0} {:>9.2}",
        args.rooms,
        args.rate,
        received,
        received as f64 / cpu.wall_s,
        cpu.cpu_s,
        cpu.system_pct,
        if received > 0 {
            cpu.cpu_s * 1e6 / received as f64
        } else {
            f64::NAN
        },
    );
    stop.store(true, Ordering::Relaxed);
    for (pc, sender) in whip {
        let _ = sender.await;
        let _ = pc.close().await;
    }
    for publisher in quic {
        publisher.finish().await;
    }
    gateway.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.subscribers.contains(&0)
        || args.rate == 0
        || args.seconds.is_nan()
        || args.seconds <= 0.0
    {
        bail!("--subscribers, --rate and --seconds must be positive");
    }
    println!(
        "strait-webrtc-bench: {} s per run, VP8-like packets, gateway {}",
        args.seconds,
        args.strait.display()
    );
    if args.ingest {
        println!("publisher rooms   rate/s   received   in pkt/s  gw CPU s  sys %  µs/pkt");
        for transport in ["webrtc", "quic"] {
            run_ingest(&args, transport).await?;
        }
        return Ok(());
    }
    println!(
        "rooms      N   rate/s  setup s  peers/s  gw ms/peer  webrtc out   received  out pkt/s  gw CPU s  worker s  sys %  µs/pkt  KiB/peer@setup  KiB/peer@end"
    );
    for &n in &args.subscribers {
        run(&args, n).await?;
    }
    Ok(())
}
