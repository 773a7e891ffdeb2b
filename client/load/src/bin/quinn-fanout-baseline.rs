//! # quinn-fanout-baseline
//!
//! What 1 → N datagram fan-out costs quinn and the kernel alone, with no SFU, no protocol and no
//! sessions: the floor under `strait-fanout-bench`'s figures.
//!
//! The program runs itself twice. The **server** (`quinn-fanout-baseline serve`, a child
//! process, so that its CPU time is read from `/proc/<pid>/stat` exactly like the gateway's) is
//! a quinn endpoint on loopback with the gateway's transport settings (keep-alive 5 s, idle
//! timeout 15 s, 64 KiB datagram buffers, 4 MiB socket buffers, migration on, a tokio
//! multi-thread runtime). Every connection it accepts joins one list; each datagram received on
//! a connection is sent with `send_datagram` to every other connection, from the task that read
//! it. It prints its address and certificate hash on stdout, then answers `stats` on stdin with
//! its counters.
//!
//! The **driver** (the default) connects one publisher and N subscribers (one quinn endpoint and
//! UDP socket each, like `strait-client` sessions; the certificate pinned by its SHA-256), warms
//! up until every subscriber has received a datagram, measures the server's idle CPU for
//! `--idle-seconds`, then sends datagrams of `--size` bytes at `--rate` per second for
//! `--seconds` with the same pacing as `strait-fanout-bench`. It reports the server's CPU µs per
//! datagram it sent (gross, and net of its idle CPU), its kernel share, its RSS, loss at the
//! subscribers, and the driver's own CPU.
//!
//! ```text
//! cargo build --release -p strait-load --bin quinn-fanout-baseline
//! target/release/quinn-fanout-baseline --subscribers 10,100,1000 --rate 500 \
//!     --max-forward-rate 50000 --seconds 10 --runs 3
//! # with the gateway's acknowledgement-frequency request (quic.ack_eliciting_threshold):
//! target/release/quinn-fanout-baseline --subscribers 100 --rate 500 --ack-threshold 10
//! ```
//!
//! Bounded: every wait has a timeout, traffic goes only to loopback, the server child is killed
//! when the driver's guard drops. Linux only.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_client::{Trust, certificate_hash, tls_client_config};
use strait_load::fanout::{FanoutArgs, Report, settle};
use strait_load::procfs::{self, CpuMark};
use strait_load::stats::{median, pct};
use strait_load::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const ALPN: &[u8] = b"quinn-fanout-baseline";
/// The gateway's defaults (`quic.socket_buffer`, `quic.datagram_send_buffer`).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// Server CPU per datagram of bare quinn at 1 → N fan-out. `quinn-fanout-baseline serve` is the
/// server child, started by the driver.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "quinn-fanout-baseline")]
struct Args {
    #[command(flatten)]
    fanout: FanoutArgs,
    /// Ask the subscribers to acknowledge once per this many ack-eliciting packets (the QUIC
    /// acknowledgement-frequency extension, as the gateway's `quic.ack_eliciting_threshold`);
    /// 0 leaves quinn's defaults (an acknowledgement every second packet).
    #[arg(long, default_value_t = 0)]
    ack_threshold: u32,
    /// With `--ack-threshold`: the longest a subscriber may hold an acknowledgement, in ms.
    #[arg(long, default_value_t = 25)]
    ack_max_delay_ms: u64,
}

impl std::ops::Deref for Args {
    type Target = FanoutArgs;

    fn deref(&self) -> &FanoutArgs {
        &self.fanout
    }
}

/// quinn starts at an MTU of 1200 bytes.
const MAX_SIZE: usize = 1100;

fn udp_socket(bind: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(15)).ok());
    t.datagram_send_buffer_size(DATAGRAM_BUFFER);
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    t
}

/// The server's transport: [`transport`], asking peers for `threshold` / `max_delay`
/// acknowledgements when `threshold` is not 0.
fn server_transport(threshold: u32, max_delay: Duration) -> quinn::TransportConfig {
    let mut t = transport();
    if threshold > 0 {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(threshold.into())
            .max_ack_delay(Some(max_delay));
        t.ack_frequency_config(Some(ack));
    }
    t
}

// ---------------------------------------------------------------------------------------------
// The server child.

#[derive(Debug, Default)]
struct ServerCounters {
    received: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

type Connections = Arc<RwLock<Vec<(usize, quinn::Connection)>>>;

async fn serve(threshold: u32, max_delay: Duration) -> Result<()> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let der = certified.cert.der().to_vec();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(server_transport(threshold, max_delay)));
    server.migration(true);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let hash = certificate_hash(&der);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("addr {}\ncert {hex}\n", endpoint.local_addr()?).as_bytes())
        .await?;
    stdout.flush().await?;

    let counters = Arc::new(ServerCounters::default());
    let connections: Connections = Arc::default();
    let accept = {
        let counters = counters.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut next_id = 0usize;
            while let Some(incoming) = endpoint.accept().await {
                next_id += 1;
                let id = next_id;
                let counters = counters.clone();
                let connections = connections.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    connections
                        .write()
                        .expect("poisoned")
                        .push((id, conn.clone()));
                    forward(id, &conn, &connections, &counters).await;
                    connections
                        .write()
                        .expect("poisoned")
                        .retain(|(other, _)| *other != id);
                });
            }
        })
    };

    // Commands on stdin: `stats` prints the counters; end of input stops the server.
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "stats" {
            let answer = format!(
                "received {} sent {} failed {} connections {}\n",
                counters.received.load(Ordering::Relaxed),
                counters.sent.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed),
                connections.read().expect("poisoned").len(),
            );
            stdout.write_all(answer.as_bytes()).await?;
            stdout.flush().await?;
        }
    }
    accept.abort();
    Ok(())
}

/// Sends each datagram received on `conn` to every other connection.
async fn forward(
    id: usize,
    conn: &quinn::Connection,
    connections: &Connections,
    counters: &ServerCounters,
) {
    while let Ok(datagram) = conn.read_datagram().await {
        counters.received.fetch_add(1, Ordering::Relaxed);
        let (mut sent, mut failed) = (0, 0);
        for (other, target) in connections.read().expect("poisoned").iter() {
            if *other == id {
                continue;
            }
            match target.send_datagram(datagram.clone()) {
                Ok(()) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        counters.sent.fetch_add(sent, Ordering::Relaxed);
        counters.failed.fetch_add(failed, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

/// The server child; killed when dropped.
#[derive(Debug)]
struct ServerChild {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    cert: [u8; 32],
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ServerStats {
    sent: u64,
    failed: u64,
}

impl ServerChild {
    async fn start(args: &Args) -> Result<ServerChild> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg(args.ack_threshold.to_string())
            .arg(args.ack_max_delay_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?).lines();
        let mut addr = None;
        let mut cert = None;
        let banner = async {
            while addr.is_none() || cert.is_none() {
                let line = stdout
                    .next_line()
                    .await?
                    .ok_or("the server exited before it was serving")?;
                match line.split_once(' ') {
                    Some(("addr", a)) => addr = Some(a.parse::<SocketAddr>()?),
                    Some(("cert", hex)) => {
                        let mut out = [0u8; 32];
                        for (i, byte) in out.iter_mut().enumerate() {
                            *byte = u8::from_str_radix(
                                hex.get(2 * i..2 * i + 2).ok_or("bad cert")?,
                                16,
                            )?;
                        }
                        cert = Some(out);
                    }
                    _ => {}
                }
            }
            Ok::<_, Error>(())
        };
        tokio::time::timeout(Duration::from_secs(10), banner)
            .await
            .map_err(|_| "the server did not start within 10 s")??;
        Ok(ServerChild {
            child,
            pid,
            addr: addr.ok_or("no address")?,
            cert: cert.ok_or("no certificate")?,
            stdin,
            stdout,
        })
    }

    async fn stats(&mut self) -> Result<ServerStats> {
        self.stdin.write_all(b"stats\n").await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(5), self.stdout.next_line())
            .await
            .map_err(|_| "the server did not answer `stats`")??
            .ok_or("the server exited")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> Result<u64> {
            let at = words
                .iter()
                .position(|w| *w == name)
                .ok_or("odd stats line")?;
            Ok(words.get(at + 1).ok_or("odd stats line")?.parse()?)
        };
        Ok(ServerStats {
            sent: field("sent")?,
            failed: field("failed")?,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct RunResult {
    subscribers: usize,
    rate: u32,
    sent: u64,
    server_sent: u64,
    server_failed: u64,
    received: u64,
    window_s: f64,
    server_cpu_s: f64,
    system_pct: f64,
    idle_cpu_pct: f64,
    us_per_datagram: f64,
    net_us_per_datagram: f64,
    rss_mib: f64,
    driver_cpu_s: f64,
}

impl RunResult {
    fn loss_pct(&self) -> f64 {
        let expected = self.sent * self.subscribers as u64;
        pct(expected.saturating_sub(self.received), expected)
    }
}

async fn send_paced(conn: &quinn::Connection, payload: &mut [u8], rate: u32, total: u64) -> u64 {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut attempted = 0u64;
    let mut sent = 0;
    while attempted < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
        while attempted < due {
            attempted += 1;
            payload[..8].copy_from_slice(&attempted.to_be_bytes());
            if conn.send_datagram(Bytes::copy_from_slice(payload)).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

async fn run_once(args: &Args, n: usize) -> Result<RunResult> {
    let rate = args.rate_for(n);
    let mut server = ServerChild::start(args).await?;
    let pid = server.pid.to_string();
    let ticks = procfs::clock_ticks_per_second();

    let publisher = connect_to((server.addr, server.cert)).await?;
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permits = permits.clone();
        let received = received.clone();
        let tls_server = (server.addr, server.cert);
        tasks.spawn(async move {
            let conn = {
                let _permit = permits.acquire_owned().await?;
                connect_to(tls_server).await?
            };
            let reader = conn.clone();
            tokio::spawn(async move {
                while reader.read_datagram().await.is_ok() {
                    received[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            Ok::<_, Error>(conn)
        });
    }
    let mut subscribers = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        subscribers.push(joined??);
    }
    let total_received = || -> u64 { received.iter().map(|c| c.load(Ordering::Relaxed)).sum() };

    // Warm-up: until every subscriber has received something.
    let mut payload = vec![0x5a; args.size];
    let warm_until = Instant::now() + Duration::from_secs(20);
    loop {
        send_paced(&publisher, &mut payload, rate, u64::from(rate / 10).max(1)).await;
        if received.iter().all(|c| c.load(Ordering::Relaxed) > 0) {
            break;
        }
        if Instant::now() > warm_until {
            return Err("some subscribers received nothing in warm-up".into());
        }
    }
    // The warm-up's last datagrams arrive before the idle window starts.
    settle(total_received).await;

    let idle_cpu_per_s = if args.idle_seconds > 0.0 {
        let before = CpuMark::read(&pid)?;
        tokio::time::sleep(Duration::from_secs_f64(args.idle_seconds)).await;
        let used = before.until(&CpuMark::read(&pid)?, ticks);
        used.cpu_s / used.wall_s
    } else {
        0.0
    };

    let stats_before = server.stats().await?;
    let received_before = total_received();
    let driver_before = CpuMark::read("self")?;
    let before = CpuMark::read(&pid)?;
    let total = (args.seconds * f64::from(rate)).round().max(1.0) as u64;
    let sent = send_paced(&publisher, &mut payload, rate, total).await;
    // Let the last packets arrive: until the count stops moving (at most 3 s).
    settle(total_received).await;
    let after = CpuMark::read(&pid)?;
    let driver = driver_before.until(&CpuMark::read("self")?, ticks);
    let stats_after = server.stats().await?;
    let used = before.until(&after, ticks);
    let server_sent = stats_after.sent - stats_before.sent;
    let per = |cpu: f64| {
        if server_sent == 0 {
            0.0
        } else {
            cpu * 1e6 / server_sent as f64
        }
    };
    let result = RunResult {
        subscribers: n,
        rate,
        sent,
        server_sent,
        server_failed: stats_after.failed - stats_before.failed,
        received: total_received() - received_before,
        window_s: used.wall_s,
        server_cpu_s: used.cpu_s,
        system_pct: used.system_pct,
        idle_cpu_pct: idle_cpu_per_s * 100.0,
        us_per_datagram: per(used.cpu_s),
        net_us_per_datagram: per((used.cpu_s - idle_cpu_per_s * used.wall_s).max(0.0)),
        rss_mib: procfs::status_kib(&pid, "VmRSS:") as f64 / 1024.0,
        driver_cpu_s: driver.cpu_s,
    };
    for conn in subscribers.iter().chain([&publisher]) {
        conn.close(0u32.into(), b"done");
    }
    drop(server);
    Ok(result)
}

async fn connect_to((addr, cert): (SocketAddr, [u8; 32])) -> Result<quinn::Connection> {
    let tls = tls_client_config(&Trust::Hashes(vec![cert]), ALPN)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        endpoint.connect_with(config, addr, "localhost")?,
    )
    .await
    .map_err(|_| "connect: no answer within 30 s")??;
    Ok(conn)
}

const HEADER: &str = "      N   rate/s      sent  server sent  failed   received  loss %  window s  srv CPU s  sys %  µs/dgram  net µs/dgram  idle %  RSS MiB  driver CPU s";

fn row(r: &RunResult) -> String {
    format!(
        "{:>7}  {:>7}  {:>8}  {:>11}  {:>6}  {:>9}  {:>6.2}  {:>8.2}  {:>9.2}  {:>5.0}  {:>8.2}  {:>12.2}  {:>6.1}  {:>7.1}  {:>12.2}",
        r.subscribers,
        r.rate,
        r.sent,
        r.server_sent,
        r.server_failed,
        r.received,
        r.loss_pct(),
        r.window_s,
        r.server_cpu_s,
        r.system_pct,
        r.us_per_datagram,
        r.net_us_per_datagram,
        r.idle_cpu_pct,
        r.rss_mib,
        r.driver_cpu_s,
    )
}

fn json(r: &RunResult) -> String {
    serde_json::json!({
        "subscribers": r.subscribers,
        "rate": r.rate,
        "sent": r.sent,
        "server_sent": r.server_sent,
        "server_failed": r.server_failed,
        "received": r.received,
        "loss_pct": r.loss_pct(),
        "window_s": r.window_s,
        "server_cpu_s": r.server_cpu_s,
        "system_pct": r.system_pct,
        "idle_cpu_pct": r.idle_cpu_pct,
        "us_per_datagram": r.us_per_datagram,
        "net_us_per_datagram": r.net_us_per_datagram,
        "rss_mib": r.rss_mib,
        "driver_cpu_s": r.driver_cpu_s,
    })
    .to_string()
}

fn medians(runs: &[RunResult]) -> RunResult {
    let m = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    let mu = |f: &dyn Fn(&RunResult) -> u64| m(&|r| f(r) as f64).round() as u64;
    RunResult {
        subscribers: runs[0].subscribers,
        rate: runs[0].rate,
        sent: mu(&|r| r.sent),
        server_sent: mu(&|r| r.server_sent),
        server_failed: mu(&|r| r.server_failed),
        received: mu(&|r| r.received),
        window_s: m(&|r| r.window_s),
        server_cpu_s: m(&|r| r.server_cpu_s),
        system_pct: m(&|r| r.system_pct),
        idle_cpu_pct: m(&|r| r.idle_cpu_pct),
        us_per_datagram: m(&|r| r.us_per_datagram),
        net_us_per_datagram: m(&|r| r.net_us_per_datagram),
        rss_mib: m(&|r| r.rss_mib),
        driver_cpu_s: m(&|r| r.driver_cpu_s),
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("serve") {
        let number = |i: usize| argv.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let threshold = u32::try_from(number(1)).unwrap_or(0);
        if let Err(e) = serve(threshold, Duration::from_millis(number(2))).await {
            eprintln!("quinn-fanout-baseline serve: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = <Args as clap::Parser>::parse();
    if let Err(e) = args.validate(MAX_SIZE) {
        eprintln!("quinn-fanout-baseline: {e}");
        std::process::exit(2);
    }
    if !args.json {
        println!(
            "quinn-fanout-baseline: {} s per run, {}-byte datagrams",
            args.seconds, args.size
        );
        println!("{HEADER}");
    }
    let report = Report {
        program: "quinn-fanout-baseline",
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
