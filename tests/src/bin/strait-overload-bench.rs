//! `strait-overload-bench`: load shedding under a load that grows past one media worker.
//!
//! Starts the `strait` binary on loopback (`--strait`, default `target/release/strait`) with one
//! media worker and load shedding on, opens `--rooms` rooms in which `--publishers` native
//! sessions each send audio (`--audio-rate` packets/s, 60-byte Opus-like payloads: voice) and
//! video (`--video-rate` packets/s of 400 bytes, a keyframe every second), and then adds
//! `--step` subscribers per room every `--step-seconds`, each subscribing to every track of its
//! room. A subscriber whose join is refused (the worker sheds joins) is counted and closed.
//! After each step it prints: subscribers in, joins refused, the worker's highest shedding level
//! and its queue delay and busy ratio (from `/metrics`, sampled four times a second), and the
//! share of audio and of video packets delivered to the subscribers during the step. It stops
//! after `--steps` steps or once a step ran entirely at level 3.
//!
//! ```text
//! cargo build --release -p strait-gateway -p strait-tests --bin strait --bin strait-overload-bench
//! target/release/strait-overload-bench --rooms 10 --step 10 --steps 12
//! ```
//!
//! Bounded: every wait has a timeout, every loop a count, traffic stays on loopback, the gateway
//! is killed at the end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Parser;
use strait_client::protocol::{MediaId, TrackKind};
use strait_client::{Client, ClientConfig, ClientError, Session, Trust};
use strait_load::gateway::{GatewayChild, mint_token};
use strait_tests::bridge::vp8_spec;
use strait_tests::fixture::{opus_spec, rtp};

/// Load shedding under a load that grows past one media worker.
#[derive(Debug, Parser)]
#[command(name = "strait-overload-bench")]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/strait")]
    strait: PathBuf,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Publishers per room, each with audio and video.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Audio packets per second per publisher.
    #[arg(long, default_value_t = 50)]
    audio_rate: u32,
    /// Video packets per second per publisher.
    #[arg(long, default_value_t = 100)]
    video_rate: u32,
    /// Subscribers added per room at each step.
    #[arg(long, default_value_t = 10)]
    step: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 5.0)]
    step_seconds: f64,
    /// Most steps.
    #[arg(long, default_value_t = 12)]
    steps: usize,
    /// `key=value` settings for the gateway (`strait serve --set`).
    #[arg(long = "set")]
    settings: Vec<String>,
}

/// Packets sent and delivered, by kind.
#[derive(Default)]
struct Counts {
    audio_sent: AtomicU64,
    video_sent: AtomicU64,
    audio_received: AtomicU64,
    video_received: AtomicU64,
}

/// One room's tracks (audio media ids and video media ids are told apart by the subscriber).
struct Room {
    name: String,
    tracks: Vec<(strait_client::protocol::TrackId, TrackKind)>,
    counts: Arc<Counts>,
    subscribers: AtomicU64,
}

async fn connect(gateway: &GatewayChild, room: &str, identity: &str) -> Result<Session> {
    let token = mint_token(gateway.http, room, identity)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut config = ClientConfig::new(gateway.quic, Trust::Hashes(vec![gateway.cert]), token);
    config.auto_resume = false;
    Ok(
        tokio::time::timeout(Duration::from_secs(20), Client::connect(config))
            .await
            .map_err(|_| anyhow!("connect timed out"))??,
    )
}

/// Sends `packet(index)` on `media` at `rate` until `stop`, counting in `sent`.
fn stream(
    session: Arc<Session>,
    media: MediaId,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: impl Fn() + Send + 'static,
    packet: impl Fn(u32) -> Vec<u8> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded: at most ten minutes.
        for index in 0..rate.saturating_mul(600) {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if session.send_rtp(media, &packet(index)).is_ok() {
                sent();
            }
        }
    });
}

/// A metric (summed over its samples; NaN when `/metrics` does not answer).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (name, label) = name
        .split_once('{')
        .map_or((name, ""), |(n, l)| (n, l.trim_end_matches('}')));
    strait_load::gateway::metric(addr, name, label)
        .await
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let most = args.rooms * (args.publishers + args.step * args.steps) + 64;
    let mut settings = vec![
        "media.workers=1".to_owned(),
        "shedding.enabled=true".to_owned(),
        format!("limits.max_sessions_per_ip={most}"),
        format!("limits.max_sessions={most}"),
        format!(
            "limits.max_participants_per_room={}",
            args.publishers + args.step * args.steps + 8
        ),
    ];
    settings.extend(args.settings.iter().cloned());
    let gateway = GatewayChild::start(&args.strait, &settings)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut keep = Vec::new();

    // The publishers.
    let mut rooms = Vec::new();
    for r in 0..args.rooms {
        let name = format!("overload-{r}");
        let counts = Arc::new(Counts::default());
        let mut tracks = Vec::new();
        for p in 0..args.publishers {
            let session = Arc::new(connect(&gateway, &name, &format!("pub-{r}-{p}")).await?);
            session.join(&name).await?;
            let audio = session.publish(opus_spec()).await?;
            let video = session.publish(vp8_spec()).await?;
            tracks.push((audio.track, TrackKind::Audio));
            tracks.push((video.track, TrackKind::Video));
            let c = Arc::clone(&counts);
            stream(
                Arc::clone(&session),
                audio.media[0],
                args.audio_rate,
                Arc::clone(&stop),
                move || {
                    c.audio_sent.fetch_add(1, Ordering::Relaxed);
                },
                move |i| rtp::opus(i as u16, i.wrapping_mul(960), 0xa000 + p as u32, i),
            );
            let c = Arc::clone(&counts);
            let fps = args.video_rate;
            stream(
                Arc::clone(&session),
                video.media[0],
                args.video_rate,
                Arc::clone(&stop),
                move || {
                    c.video_sent.fetch_add(1, Ordering::Relaxed);
                },
                move |i| {
                    rtp::vp8(
                        i as u16,
                        i.wrapping_mul(3000),
                        0xb000 + p as u32,
                        i % fps == 0,
                        i,
                    )
                },
            );
            keep.push(session);
        }
        rooms.push(Arc::new(Room {
            name,
            tracks,
            counts,
            subscribers: AtomicU64::new(0),
        }));
    }

    println!(
        "| step | subscribers | joins refused | level (highest) | queue delay (highest) | busy (highest) | audio delivered | video delivered |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let refused = Arc::new(AtomicU64::new(0));
    let mut subscriber_index = 0usize;
    for step in 1..=args.steps {
        // Add the step's subscribers (a refused join is counted; the session is closed).
        for room in &rooms {
            for _ in 0..args.step {
                subscriber_index += 1;
                let session =
                    match connect(&gateway, &room.name, &format!("sub-{subscriber_index}")).await {
                        Ok(s) => s,
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                match session.join(&room.name).await {
                    Ok(_) => {}
                    Err(ClientError::Rejected { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        session.close().await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                let session = Arc::new(session);
                let mut kinds = Vec::new();
                for &(track, kind) in &room.tracks {
                    if let Ok(sub) = session.subscribe(track, None).await {
                        kinds.push((sub.media, kind));
                    }
                }
                room.subscribers.fetch_add(1, Ordering::Relaxed);
                let (receiving, counts, stop) = (
                    Arc::clone(&session),
                    Arc::clone(&room.counts),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(packet) = receiving.recv_media().await else {
                            break;
                        };
                        match kinds.iter().find(|(m, _)| *m == packet.media) {
                            Some((_, TrackKind::Audio)) => {
                                counts.audio_received.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(_) => {
                                counts.video_received.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {}
                        }
                    }
                });
                keep.push(session);
            }
        }
        // The step: expected deliveries are each room's packets sent times its subscribers.
        let snapshot = |rooms: &[Arc<Room>]| -> (f64, f64, f64, f64) {
            let mut v = (0.0, 0.0, 0.0, 0.0);
            for room in rooms {
                let n = room.subscribers.load(Ordering::Relaxed) as f64;
                let c = &room.counts;
                v.0 += c.audio_sent.load(Ordering::Relaxed) as f64 * n;
                v.1 += c.video_sent.load(Ordering::Relaxed) as f64 * n;
                v.2 += c.audio_received.load(Ordering::Relaxed) as f64;
                v.3 += c.video_received.load(Ordering::Relaxed) as f64;
            }
            v
        };
        let before = snapshot(&rooms);
        let (mut level, mut delay, mut busy, mut all_top) = (0.0f64, 0.0f64, 0.0f64, true);
        let samples = (args.step_seconds * 4.0).ceil() as usize;
        for _ in 0..samples {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let l = metric(gateway.http, "strait_worker_shed_level").await;
            all_top &= l >= 3.0;
            level = level.max(l);
            delay = delay.max(metric(gateway.http, "strait_worker_queue_delay_seconds").await);
            busy = busy.max(metric(gateway.http, "strait_worker_busy_ratio").await);
        }
        // What was sent in the last half second may still be on its way: a little slack.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = snapshot(&rooms);
        let share = |sent: f64, got: f64| {
            if sent > 0.0 {
                100.0 * got / sent
            } else {
                f64::NAN
            }
        };
        let subscribers: u64 = rooms
            .iter()
            .map(|r| r.subscribers.load(Ordering::Relaxed))
            .sum();
        println!(
            "| {step} | {subscribers} | {} | {level:.0} | {:.0} ms | {busy:.2} | {:.1} % | {:.1} % |",
            refused.load(Ordering::Relaxed),
            delay * 1000.0,
            share(after.0 - before.0, after.2 - before.2),
            share(after.1 - before.1, after.3 - before.3),
        );
        if all_top {
            break;
        }
    }
    println!(
        "refusals for overload: {:.0}; video shed (per subscriber): {:.0}",
        metric(gateway.http, "strait_refusals_total{reason=\"overloaded\"}").await,
        metric(gateway.http, "strait_drops_total{reason=\"shed_video\"}").await
    );

    stop.store(true, Ordering::Relaxed);
    for session in keep {
        session.close().await;
    }
    gateway.stop().await;
    Ok(())
}
