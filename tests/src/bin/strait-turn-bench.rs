//! `strait-turn-bench`: relayed packets per second per core of the embedded TURN server's UDP
//! path, sockets included.
//!
//! The gateway runs in this process on its own OS thread with a current-thread runtime, so every
//! one of its tasks — the TURN task with the UDP listener, the relay sockets' readers — runs on
//! that thread, and that thread's CPU time (utime + stime from `/proc/self/task/<tid>/stat`) is
//! the gateway's cost. A client allocates with `rtc-turn` and binds a channel to a loopback
//! "media" socket (the node's media address). Then, for `--seconds` each:
//!
//! - client → peer: the client sends ChannelData as fast as one thread can and another thread
//!   counts what arrives at the media socket;
//! - peer → client: the media socket sends datagrams to the relay address as fast as one thread
//!   can and another thread counts the ChannelData arriving at the client.
//!
//! Run: `cargo run --release -p strait-tests --bin strait-turn-bench -- --seconds 5 --size 1200`
//! (`--direction to-peer|to-client|both`, both by default).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use strait_gateway::metrics::{StaticLabel, TurnDirectionLabel};
use strait_tests::fixture::TestGateway;
use strait_tests::turn_client::{Link, TurnClient};

struct Args {
    seconds: u64,
    size: usize,
    direction: Direction,
}

/// Which way packets are relayed.
#[derive(Clone, Copy)]
enum Direction {
    ToPeer,
    ToClient,
    Both,
}

impl Direction {
    fn to_peer(self) -> bool {
        matches!(self, Direction::ToPeer | Direction::Both)
    }

    fn to_client(self) -> bool {
        matches!(self, Direction::ToClient | Direction::Both)
    }
}

fn args() -> Result<Args> {
    let mut out = Args {
        seconds: 5,
        size: 1200,
        direction: Direction::Both,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => out.seconds = value.parse()?,
            "--size" => out.size = value.parse()?,
            "--direction" => {
                out.direction = match value.as_str() {
                    "to-peer" => Direction::ToPeer,
                    "to-client" => Direction::ToClient,
                    "both" => Direction::Both,
                    _ => return Err(anyhow!("--direction is to-peer, to-client or both")),
                }
            }
            _ => {
                return Err(anyhow!(
                    "unknown flag {flag}; use --seconds N --size BYTES --direction to-peer|to-client|both"
                ));
            }
        }
    }
    if out.size == 0 || out.size > 60_000 {
        return Err(anyhow!("--size must be 1 to 60000"));
    }
    Ok(out)
}

struct Started {
    tid_stat: String,
    metrics: Arc<strait_gateway::metrics::Metrics>,
    server: SocketAddr,
    username: String,
    password: String,
}

/// utime + stime of one thread, in clock ticks.
fn thread_ticks(stat_path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(stat_path)?;
    let rest = stat.rsplit_once(')').context("odd stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() -> Result<()> {
    let args = args()?;
    let media = UdpSocket::bind("127.0.0.1:0")?;
    let media_addr = media.local_addr()?;
    let _ = socket2::SockRef::from(&media).set_recv_buffer_size(8 << 20);

    // The gateway thread.
    let (started_tx, started_rx) = mpsc::channel::<Started>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let t = TestGateway::start_with(|c| {
                c.log.filter = "warn".into();
                c.turn.enabled = true;
                c.turn.transports = vec![strait_gateway::config::TurnListener::Udp];
                c.turn.udp_listen = "127.0.0.1:0".parse().unwrap();
                c.turn.media_addresses = vec![media_addr];
                c.turn.bandwidth_per_allocation = 0;
            })
            .await;
            let creds = t.gateway.turn_credentials("bench", SystemTime::now())?;
            let tid = std::fs::read_link("/proc/thread-self")?;
            started_tx.send(Started {
                tid_stat: format!("/proc/{}/stat", tid.display()),
                metrics: t.gateway.metrics().clone(),
                server: t.gateway.turn_addrs().udp.context("udp listener")?,
                username: creds.username,
                password: creds.password,
            })?;
            let _ = stop_rx.await;
            t.stop().await;
            Ok::<_, anyhow::Error>(())
        })
    });
    let started = started_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the gateway did not start")?;

    // Allocate, permit the media address and bind a channel to it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (client, relay, channel) = runtime.block_on(async {
        let mut client =
            TurnClient::udp(started.server, &started.username, &started.password).await;
        let relay = client.allocate().await;
        client
            .permit(relay, media_addr)
            .await
            .map_err(|e| anyhow!(e))?;
        client.send_to(relay, media_addr, b"bind").await;
        // Echo from the media side until the answer comes over the channel: then it is bound.
        let mut channel = None;
        for _ in 0..100 {
            media.send_to(b"echo", relay)?;
            let (number, _, _) = client.receive().await;
            if number.is_some() {
                channel = number;
                break;
            }
        }
        let channel = channel.context("no channel was bound")?;
        let Link::Udp(socket) = client.link else {
            return Err(anyhow!("a UDP client"));
        };
        Ok::<_, anyhow::Error>((socket.into_std()?, relay, channel))
    })?;
    drop(runtime);
    client.set_nonblocking(false)?;
    let _ = socket2::SockRef::from(&client).set_recv_buffer_size(8 << 20);

    let mut to_peer = channel.to_be_bytes().to_vec();
    to_peer.extend_from_slice(&(args.size as u16).to_be_bytes());
    to_peer.resize(4 + args.size, 0xab);
    to_peer.resize(to_peer.len().next_multiple_of(4), 0);
    let to_client = vec![0xcd; args.size];

    println!("payload bytes        {}", args.size);
    if args.direction.to_peer() {
        let f = phase(
            &started,
            "to_peer",
            args.seconds,
            (&client, started.server, &to_peer),
            &media,
        )?;
        f.print("client -> peer (ChannelData in, datagram out)");
    }
    if args.direction.to_client() {
        let f = phase(
            &started,
            "to_client",
            args.seconds,
            (&media, relay, &to_client),
            &client,
        )?;
        f.print("peer -> client (datagram in, ChannelData out)");
    }
    let _ = stop_tx.send(());
    let _ = gateway.join();
    Ok(())
}

/// What one direction measured.
struct Figures {
    sent: u64,
    /// Sent on by the gateway (its `strait_turn_relayed_packets_total`).
    forwarded: u64,
    /// Arrived at the receiving socket.
    relayed: u64,
    cpu_s: f64,
    elapsed: Duration,
}

impl Figures {
    fn print(&self, direction: &str) {
        let Figures {
            sent,
            forwarded,
            relayed,
            cpu_s,
            elapsed,
        } = *self;
        println!();
        println!("direction            {direction}");
        println!("seconds (with drain) {:.2}", elapsed.as_secs_f64());
        println!("sent                 {sent}");
        println!(
            "relayed              {relayed} ({:.1} % of sent)",
            100.0 * relayed as f64 / sent.max(1) as f64
        );
        println!(
            "forwarded            {forwarded} (sent on by the gateway; the rest of sent was dropped before it or by it)"
        );
        println!("gateway cpu seconds  {cpu_s:.2}");
        println!(
            "relayed per second   {:.0}",
            relayed as f64 / elapsed.as_secs_f64()
        );
        println!(
            "per core             {:.0} packets/s ({:.2} us of gateway CPU per relayed packet)",
            relayed as f64 / cpu_s.max(1e-9),
            cpu_s * 1e6 / relayed.max(1) as f64
        );
        println!(
            "per forwarded        {:.2} us of gateway CPU per packet the gateway sent on",
            cpu_s * 1e6 / forwarded.max(1) as f64
        );
    }
}

/// Sends `packet` from `sender` to `dest` as fast as one thread can for `seconds` while another
/// thread counts the datagrams `receiver` gets; then waits until nothing more arrives.
fn phase(
    started: &Started,
    direction: &'static str,
    seconds: u64,
    (sender, dest, packet): (&UdpSocket, SocketAddr, &[u8]),
    receiver: &UdpSocket,
) -> Result<Figures> {
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    receiver.set_read_timeout(Some(Duration::from_millis(200)))?;
    let counter = {
        let (received, done) = (received.clone(), done.clone());
        let receiver = receiver.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !done.load(Ordering::Relaxed) {
                if receiver.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let forwarded = || {
        started
            .metrics
            .turn
            .relayed_packets
            .get_or_create(&TurnDirectionLabel {
                direction: StaticLabel(direction),
            })
            .get()
    };
    let forwarded_before = forwarded();
    let before = thread_ticks(&started.tid_stat)?;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            if sender.send_to(packet, dest).is_ok() {
                sent += 1;
            }
        }
    }
    // Let the last packets through, then read the clock.
    let mut last = received.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let elapsed = start.elapsed();
    let after = thread_ticks(&started.tid_stat)?;
    done.store(true, Ordering::Relaxed);
    let _ = counter.join();
    Ok(Figures {
        sent,
        forwarded: forwarded() - forwarded_before,
        relayed: last,
        cpu_s: (after - before) as f64 / clock_ticks_per_second(),
        elapsed,
    })
}
