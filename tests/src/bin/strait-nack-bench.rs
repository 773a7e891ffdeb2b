//! `strait-nack-bench`: what one WHEP subscriber flooding NACKs does to the others.
//!
//! Starts the `strait` binary on loopback (`--strait`, default `target/release/strait`), publishes
//! a VP8-like track from a native `strait-client` session at `--rate` packets per second, each
//! carrying its index (the send time of each index is kept in this process), and subscribes
//! `--bystanders` WHEP peers to it. It then measures the bystanders' latency (publisher send →
//! WHEP receive, through the gateway and both WebRTC stacks) over `--seconds` twice: without and
//! with one more WHEP peer that sends `--nacks-per-second` NACKs, each asking for the last
//! `--span` packets again. It prints both, the gateway's CPU in each window, the bridge's
//! datagrams out and its `strait_webrtc_nacks_total`.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-tests --bin strait --bin strait-nack-bench
//! target/release/strait-nack-bench --bystanders 10 --rate 200 --seconds 10
//! ```
//!
//! Bounded: every wait has a timeout, traffic stays on loopback, the gateway is killed at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use strait_client::{Client, ClientConfig, SessionEvent, Trust};
use strait_load::gateway::{GatewayChild, mint_token};
use strait_load::procfs::{CpuMark, clock_ticks_per_second};
use strait_load::stats::Histogram;
use strait_tests::bridge::vp8_spec;
use strait_tests::fixture::{WAIT, rtp};
use strait_tests::http::post_sdp;
use strait_tests::webrtc_peer::Peer;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

/// Bystanders' latency with and without a NACK-flooding subscriber.
#[derive(Debug, Parser)]
#[command(name = "strait-nack-bench")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// WHEP subscribers whose latency is measured.
    #[arg(long, default_value_t = 10)]
    bystanders: usize,
    /// Publisher packets per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// NACK packets per second from the flooding subscriber.
    #[arg(long, default_value_t = 100)]
    nacks_per_second: u32,
    /// Packets each NACK asks for again (the latest ones).
    #[arg(long, default_value_t = 300)]
    span: u16,
    /// `key=value` settings for the gateway (`strait serve --set`).
    #[arg(long = "set")]
    settings: Vec<String>,
}

/// Send times of the publisher's packets, by index (µs since `start`).
struct Clock {
    start: Instant,
    sent: Vec<AtomicU64>,
}

impl Clock {
    const SLOTS: usize = 1 << 16;

    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Latency samples (µs) of every bystander while `recording`.
#[derive(Default)]
struct Samples {
    recording: AtomicBool,
    values: Mutex<Histogram>,
}

/// A metric of the gateway (summed over the samples whose labels contain `label`).
async fn metric(gateway: &GatewayChild, name: &str, label: &str) -> Result<f64> {
    strait_load::gateway::metric(gateway.http, name, label)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// A WHEP subscriber of `path`: its peer connection and its track.
async fn whep(
    gateway: &GatewayChild,
    path: &str,
    token: &str,
) -> Result<(Box<dyn PeerConnection>, Arc<dyn TrackRemote>)> {
    let mut peer = Peer::without_srtp_replay_protection().await;
    peer.receive_only(RtpCodecKind::Video).await;
    let offer = peer.offer().await;
    let answer = post_sdp(gateway.http, path, token, &offer).await?;
    peer.finish(&answer).await;
    let track = tokio::time::timeout(WAIT, peer.tracks.recv())
        .await
        .context("no track")?
        .context("no track")?;
    Ok((peer.pc, track))
}

/// One measured window: latency p50/p99 (ms), samples, gateway CPU (% of a core).
async fn window(
    gateway: &GatewayChild,
    samples: &Samples,
    seconds: f64,
) -> Result<(f64, f64, usize, f64)> {
    let ticks = clock_ticks_per_second();
    let pid = gateway.pid.to_string();
    if let Ok(mut values) = samples.values.lock() {
        *values = Histogram::default();
    }
    let mark = CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?;
    samples.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    samples.recording.store(false, Ordering::Relaxed);
    let used = mark.until(&CpuMark::read(&pid).map_err(|e| anyhow!("{e}"))?, ticks);
    let cpu = 100.0 * used.cpu_s / used.wall_s;
    let values = samples
        .values
        .lock()
        .map_err(|_| anyhow!("samples poisoned"))?;
    let ms = |q: f64| {
        values
            .quantile_us(q)
            .map_or(f64::NAN, |us| us as f64 / 1000.0)
    };
    Ok((ms(0.5), ms(0.99), values.count() as usize, cpu))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut settings = vec![format!(
        "limits.max_participants_per_room={}",
        args.bystanders + 16
    )];
    settings.extend(args.settings.iter().cloned());
    let gateway = GatewayChild::start(&args.strait, &settings)
        .await
        .map_err(|e| anyhow!("{e}"))?;

    // The publisher, stamping each index's send time.
    let clock = Arc::new(Clock {
        start: Instant::now(),
        sent: (0..Clock::SLOTS).map(|_| AtomicU64::new(0)).collect(),
    });
    let room = "storm";
    let token = mint_token(gateway.http, room, "publisher")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let config = ClientConfig::new(gateway.quic, Trust::Hashes(vec![gateway.cert]), token);
    let publisher = Arc::new(Client::connect(config).await?);
    publisher.join(room).await?;
    let track = publisher.publish(vp8_spec()).await?;
    let media = track.media[0];
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (session, stop, clock, rate) = (
            Arc::clone(&publisher),
            Arc::clone(&stop),
            Arc::clone(&clock),
            args.rate,
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            // Bounded: at most ten minutes of packets.
            for index in 0u32..rate.saturating_mul(600) {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut key = index == 0;
                while let Some(event) = session.try_next_event() {
                    key |= matches!(event, SessionEvent::KeyframeRequested { .. });
                }
                let packet = rtp::vp8(index as u16, index * 3000, 0x00be_0c00, key, index);
                clock.sent[index as usize % Clock::SLOTS].store(clock.micros(), Ordering::Relaxed);
                let _ = session.send_rtp(media, &packet);
            }
        })
    };

    // The bystanders, measuring latency.
    let path = format!("/whep/{room}/{}", track.track.0);
    let samples = Arc::new(Samples::default());
    // A permit per bystander at its first packet: the windows start once every one receives.
    let receiving = Arc::new(tokio::sync::Semaphore::new(0));
    let mut peers = Vec::new();
    for i in 0..args.bystanders {
        let token = mint_token(gateway.http, room, &format!("bystander-{i}"))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let (pc, remote) = whep(&gateway, &path, &token).await?;
        let (samples, clock, receiving) = (
            Arc::clone(&samples),
            Arc::clone(&clock),
            Arc::clone(&receiving),
        );
        tokio::spawn(async move {
            let mut first = true;
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = &event
                    && std::mem::take(&mut first)
                {
                    receiving.add_permits(1);
                }
                if let TrackRemoteEvent::OnRtpPacket(packet) = event
                    && samples.recording.load(Ordering::Relaxed)
                    && let Some(bytes) = packet.payload.get(4..8)
                {
                    let index = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let sent = clock.sent[index as usize % Clock::SLOTS].load(Ordering::Relaxed);
                    let now = clock.micros();
                    if sent > 0
                        && now >= sent
                        && let Ok(mut values) = samples.values.lock()
                    {
                        values.record_us(now - sent);
                    }
                }
            }
        });
        peers.push(pc);
    }
    let all = u32::try_from(args.bystanders).context("too many bystanders")?;
    let _ = tokio::time::timeout(WAIT, receiving.acquire_many(all))
        .await
        .context("every bystander receives")?
        .context("every bystander receives")?;
    let (p50, p99, n, cpu) = window(&gateway, &samples, args.seconds).await?;
    println!(
        "without a flood: bystander latency p50 {p50:.2} ms, p99 {p99:.2} ms ({n} samples), \
         gateway CPU {cpu:.1} % of a core"
    );

    // The flooding subscriber.
    let token = mint_token(gateway.http, room, "flood")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let (flood_pc, flood_remote) = whep(&gateway, &path, &token).await?;
    // The latest packet it received: `1 << 63 | ssrc << 16 | sequence number` (0: none yet).
    let latest = Arc::new(AtomicU64::new(0));
    {
        let (remote, latest) = (Arc::clone(&flood_remote), Arc::clone(&latest));
        tokio::spawn(async move {
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let header = &packet.header;
                    latest.store(
                        1 << 63 | u64::from(header.ssrc) << 16 | u64::from(header.sequence_number),
                        Ordering::Relaxed,
                    );
                }
            }
        });
    }
    let nacks_before = metric(&gateway, "strait_webrtc_nacks_total", "").await?;
    let out_before = metric(&gateway, "strait_webrtc_datagrams_out_total", "").await?;
    let flooding = Arc::new(AtomicBool::new(true));
    let flooder = {
        let (remote, latest, flooding) = (
            Arc::clone(&flood_remote),
            Arc::clone(&latest),
            Arc::clone(&flooding),
        );
        let (per_second, span) = (args.nacks_per_second.max(1), args.span);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
            // Bounded: at most ten minutes.
            for _ in 0..per_second.saturating_mul(600) {
                tick.tick().await;
                if !flooding.load(Ordering::Relaxed) {
                    break;
                }
                let last = latest.load(Ordering::Relaxed);
                if last == 0 {
                    continue;
                }
                let (ssrc, last) = ((last >> 16) as u32, last as u16);
                let seqs: Vec<u16> = (0..span).map(|i| last.wrapping_sub(span - i)).collect();
                let _ = remote
                    .write_rtcp(vec![Box::new(TransportLayerNack {
                        sender_ssrc: 0,
                        media_ssrc: ssrc,
                        nacks: nack_pairs_from_sequence_numbers(&seqs),
                    })])
                    .await;
            }
        })
    };
    let (f50, f99, fn_, fcpu) = window(&gateway, &samples, args.seconds).await?;
    let nacks = metric(&gateway, "strait_webrtc_nacks_total", "").await? - nacks_before;
    let granted = metric(&gateway, "strait_webrtc_nacks_total", "result=\"granted\"").await?;
    let out = metric(&gateway, "strait_webrtc_datagrams_out_total", "").await? - out_before;
    println!(
        "with one subscriber flooding {} NACKs/s of {} packets: bystander latency p50 {f50:.2} \
         ms, p99 {f99:.2} ms ({fn_} samples), gateway CPU {fcpu:.1} % of a core; packets asked \
         for again {nacks:.0} ({granted:.0} granted in all); bridge datagrams out {out:.0} \
         ({:.0}/s)",
        args.nacks_per_second,
        args.span,
        out / args.seconds
    );
    println!(
        "p99 change with the flood: {:+.1} %",
        (f99 / p99 - 1.0) * 100.0
    );

    flooding.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(WAIT, flooder).await;
    let _ = tokio::time::timeout(WAIT, sender).await;
    let _ = flood_pc.close().await;
    for pc in peers {
        let _ = pc.close().await;
    }
    publisher.close().await;
    gateway.stop().await;
    Ok(())
}
