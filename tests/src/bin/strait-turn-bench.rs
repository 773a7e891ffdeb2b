//! `strait-turn-bench`: relayed packets per second per core of the embedded TURN server's UDP
//! path, sockets included.
//!
//! The gateway runs in this process on its own OS thread with a current-thread runtime, so every
//! one of its tasks — the TURN task with the UDP listener, the relay sockets' readers — runs on
//! that thread, and that thread's CPU time (utime + stime from `/proc/self/task/<tid>/stat`) is
//! the gateway's cost. A client allocates with `rtc-turn`, binds a channel to a loopback "media"
//! socket (the node's media address), then sends ChannelData as fast as it can for `--seconds`;
//! a third thread counts what arrives at the media socket.
//!
//! Run: `cargo run --release -p strait-tests --bin strait-turn-bench -- --seconds 5 --size 1200`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};
use strait_tests::fixture::TestGateway;
use strait_tests::turn_client::{Link, TurnClient};

struct Args {
    seconds: u64,
    size: usize,
}

fn args() -> Result<Args> {
    let mut out = Args {
        seconds: 5,
        size: 1200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => out.seconds = value.parse()?,
            "--size" => out.size = value.parse()?,
            _ => return Err(anyhow!("unknown flag {flag}; use --seconds N --size BYTES")),
        }
    }
    if out.size == 0 || out.size > 60_000 {
        return Err(anyhow!("--size must be 1 to 60000"));
    }
    Ok(out)
}

struct Started {
    tid_stat: String,
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
                c.turn.transports = vec![strait_gateway::turn::Listener::Udp];
                c.turn.udp_listen = "127.0.0.1:0".parse().unwrap();
                c.turn.media_addresses = vec![media_addr];
                c.turn.bandwidth_per_allocation = 0;
            })
            .await;
            let creds = t.gateway.shared.turn.mint("bench", SystemTime::now())?;
            let tid = std::fs::read_link("/proc/thread-self")?;
            started_tx.send(Started {
                tid_stat: format!("/proc/{}/stat", tid.display()),
                server: t.gateway.shared.turn.addrs.udp.context("udp listener")?,
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

    // The counting thread.
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    media.set_read_timeout(Some(Duration::from_millis(200)))?;
    let counter = {
        let (received, done) = (received.clone(), done.clone());
        let media = media.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !done.load(Ordering::Relaxed) {
                if media.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sent, relayed, cpu_s, elapsed) = runtime.block_on(async {
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
        let Link::Udp(socket) = &client.link else {
            return Err(anyhow!("a UDP client"));
        };
        let mut packet = channel.to_be_bytes().to_vec();
        packet.extend_from_slice(&(args.size as u16).to_be_bytes());
        packet.resize(4 + args.size, 0xab);
        packet.resize(packet.len().next_multiple_of(4), 0);

        let before_count = received.load(Ordering::Relaxed);
        let before = thread_ticks(&started.tid_stat)?;
        let start = Instant::now();
        let end = start + Duration::from_secs(args.seconds);
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                if socket.send_to(&packet, started.server).await.is_ok() {
                    sent += 1;
                }
            }
        }
        // Let the last packets through, then read the clock.
        let mut last = received.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = received.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        let elapsed = start.elapsed();
        let after = thread_ticks(&started.tid_stat)?;
        let cpu_s = (after - before) as f64 / clock_ticks_per_second();
        Ok::<_, anyhow::Error>((sent, last - before_count, cpu_s, elapsed))
    })?;
    done.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let _ = stop_tx.send(());
    let _ = gateway.join();

    println!("payload bytes        {}", args.size);
    println!("seconds (with drain) {:.2}", elapsed.as_secs_f64());
    println!("sent                 {sent}");
    println!(
        "relayed              {relayed} ({:.1} % of sent)",
        100.0 * relayed as f64 / sent.max(1) as f64
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
    Ok(())
}
