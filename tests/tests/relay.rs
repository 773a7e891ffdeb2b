//! The UDP relay between real UDP sockets on loopback: a client, the relay, and an echo server
//! that records where each datagram came from.
//!
//! Every wait is for an event (an echo, a counter) under a generous timeout; nothing sleeps to let
//! things settle, and timing is only ever asserted as a lower bound.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};
use strait_tests::relay::{Direction, Impairment, Rebind, RelayConfig, RelayStats, UdpRelay};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Long enough for a loaded 2-core machine; only reached when a test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A loopback UDP socket with buffers large enough for the bursts these tests send.
fn bind_udp(ip: IpAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(4 << 20)?;
    socket.set_send_buffer_size(4 << 20)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    UdpSocket::from_std(socket.into())
}

/// Echoes every datagram to its sender, after recording the sender's address.
struct EchoServer {
    socket: Arc<UdpSocket>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    fn start() -> Self {
        let socket = Arc::new(bind_udp(LOCALHOST).expect("bind echo server"));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (socket, sources) = (socket.clone(), sources.clone());
            async move {
                let mut buf = vec![0; 65_535];
                while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                    // Recorded before the echo leaves, so a client holding the echo can rely on it.
                    sources.lock().unwrap().push(from);
                    if socket.send_to(&buf[..len], from).await.is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            socket,
            sources,
            task,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Source address of every datagram received so far.
    fn sources(&self) -> Vec<SocketAddr> {
        self.sources.lock().unwrap().clone()
    }

    fn last_source(&self) -> SocketAddr {
        *self.sources().last().expect("the echo server saw nothing")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP client connected to the relay: it only hears the relay.
struct Client {
    socket: UdpSocket,
}

impl Client {
    async fn connect(relay: &UdpRelay) -> Self {
        let socket = bind_udp(LOCALHOST).expect("bind client");
        socket.connect(relay.local_addr()).await.unwrap();
        Self { socket }
    }

    async fn send(&self, index: u64) {
        self.socket.send(&payload(index)).await.unwrap();
    }

    /// The index of the next datagram, checking that it arrived intact.
    async fn recv(&self) -> u64 {
        let mut buf = vec![0; 65_535];
        let len = timeout(TIMEOUT, self.socket.recv(&mut buf))
            .await
            .expect("timed out waiting for an echo")
            .unwrap();
        index_of(&buf[..len])
    }

    async fn ping(&self, index: u64) {
        self.send(index).await;
        assert_eq!(self.recv().await, index);
    }
}

/// Datagram `index`: the index, then a pattern derived from it, of a length that varies.
fn payload(index: u64) -> Vec<u8> {
    let mut bytes = index.to_be_bytes().to_vec();
    let len = 16 + (index % 300) as usize;
    bytes.extend((0..len).map(|k| (index as u8).wrapping_mul(31).wrapping_add(k as u8)));
    bytes
}

fn index_of(bytes: &[u8]) -> u64 {
    let index = u64::from_be_bytes(bytes[..8].try_into().expect("datagram too short"));
    assert_eq!(bytes, payload(index), "datagram {index} was altered");
    index
}

async fn start_relay(server: &EchoServer, configure: impl FnOnce(&mut RelayConfig)) -> UdpRelay {
    let mut config = RelayConfig::new(server.addr());
    configure(&mut config);
    UdpRelay::start(config).await.expect("start relay")
}

async fn wait_for(relay: &UdpRelay, condition: impl FnMut(&RelayStats) -> bool) -> RelayStats {
    timeout(TIMEOUT, relay.wait_until(condition))
        .await
        .expect("timed out waiting for the relay's counters")
}

/// The relay's documented decision draws for the first `n` datagrams of a direction:
/// `[loss, duplicate, reorder, jitter]`, computed here independently of the relay.
fn draws(seed: u64, n: usize) -> Vec<[f64; 4]> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| std::array::from_fn(|_| rng.random::<f64>()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Forwarding and impairment
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn echoes_datagrams_intact_and_in_order_without_impairment() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;

    let (total, window) = (300, 30);
    let mut received = Vec::new();
    for start in (0..total).step_by(window) {
        for i in start..start + window as u64 {
            client.send(i).await;
        }
        for _ in 0..window {
            received.push(client.recv().await);
        }
    }
    assert_eq!(received, (0..total).collect::<Vec<_>>());

    let stats = wait_for(&relay, |s| s.to_client.forwarded == total).await;
    assert_eq!(stats.to_upstream.received, total);
    assert_eq!(stats.to_upstream.forwarded, total);
    assert_eq!(stats.to_upstream.dropped(), 0);
    assert_eq!(stats.to_client.received, total);
}

#[tokio::test]
async fn loss_drops_exactly_the_datagrams_the_seed_predicts() {
    const N: u64 = 200;
    const LOSS: f64 = 0.3;
    const SEED: u64 = 0x5eed;
    let lost: BTreeSet<u64> = draws(SEED, N as usize)
        .iter()
        .zip(0..)
        .filter(|(draw, _)| draw[0] < LOSS)
        .map(|(_, i)| i)
        .collect();
    assert!(!lost.is_empty() && lost.len() < N as usize);
    let survivors: BTreeSet<u64> = (0..N).filter(|i| !lost.contains(i)).collect();

    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        config.to_upstream = Impairment {
            loss: LOSS,
            seed: SEED,
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;
    for i in 0..N {
        client.send(i).await;
    }
    let mut echoed = BTreeSet::new();
    for _ in 0..survivors.len() {
        echoed.insert(client.recv().await);
    }
    assert_eq!(echoed, survivors);

    let stats = wait_for(&relay, |s| s.to_upstream.received == N).await;
    assert_eq!(stats.to_upstream.dropped_loss, lost.len() as u64);
    assert_eq!(stats.to_upstream.forwarded, survivors.len() as u64);
    assert_eq!(server.sources().len(), survivors.len());
}

#[tokio::test]
async fn reorder_sends_a_held_datagram_after_its_successor() {
    const N: u64 = 20;
    const REORDER: f64 = 0.5;
    const SEED: u64 = 11;
    // Datagram i is held if nothing is held and its reorder draw is below REORDER; the datagram
    // after a held one releases it and is never held itself.
    let mut held = false;
    let mut holds = Vec::new();
    for (i, draw) in (0..N).zip(draws(SEED, N as usize)) {
        if held {
            held = false;
        } else if draw[2] < REORDER {
            held = true;
            holds.push(i);
        }
    }
    assert!(
        holds.iter().any(|&i| i + 1 < N),
        "seed {SEED} must hold back a datagram that has a successor"
    );

    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        config.to_upstream = Impairment {
            reorder: REORDER,
            reorder_gap: Duration::from_millis(500),
            seed: SEED,
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;
    for i in 0..N {
        client.send(i).await;
    }
    let mut arrivals = Vec::new();
    for _ in 0..N {
        arrivals.push(client.recv().await);
    }

    let mut sorted = arrivals.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..N).collect::<Vec<_>>(),
        "every datagram arrives once"
    );
    assert!(
        arrivals.windows(2).any(|pair| pair[0] > pair[1]),
        "no datagram arrived out of order: {arrivals:?}"
    );
    assert!(relay.stats().to_upstream.reordered >= 1);
}

#[tokio::test]
async fn delay_and_jitter_never_deliver_early() {
    let (delay_up, delay_down) = (Duration::from_millis(40), Duration::from_millis(30));
    let jitter = Duration::from_millis(10);
    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        config.to_upstream = Impairment {
            delay: delay_up,
            jitter,
            seed: 1,
            ..Impairment::none()
        };
        config.to_client = Impairment {
            delay: delay_down,
            jitter,
            seed: 2,
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;

    let floor = delay_up + delay_down - 2 * jitter;
    for i in 0..5 {
        let sent = Instant::now();
        client.ping(i).await;
        let elapsed = sent.elapsed();
        assert!(
            elapsed >= floor,
            "round trip {i} took {elapsed:?} < {floor:?}"
        );
    }
}

#[tokio::test]
async fn duplicate_sends_every_datagram_twice() {
    const N: u64 = 10;
    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        config.to_upstream = Impairment {
            duplicate: 1.0,
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;
    for i in 0..N {
        client.send(i).await;
        assert_eq!(client.recv().await, i);
        assert_eq!(client.recv().await, i);
    }
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.duplicated, N);
    assert_eq!(stats.to_upstream.forwarded, 2 * N);
    assert_eq!(server.sources().len(), 2 * N as usize);
}

#[tokio::test]
async fn rate_limit_drops_what_exceeds_the_bucket() {
    const N: u64 = 10;
    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        // 100 bytes per second after a 1000-byte burst: two 400-byte datagrams pass at once, and
        // the ten together would need half a minute.
        config.to_upstream = Impairment {
            rate_limit: Some(800),
            rate_burst: 1_000,
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;
    for _ in 0..N {
        client.socket.send(&[7; 400]).await.unwrap();
    }
    let stats = wait_for(&relay, |s| {
        s.to_upstream.received == N && s.to_upstream.forwarded + s.to_upstream.dropped_rate == N
    })
    .await;
    assert!(stats.to_upstream.forwarded >= 2, "{stats:?}");
    assert!(stats.to_upstream.dropped_rate >= 1, "{stats:?}");
}

#[tokio::test]
async fn the_in_flight_bound_drops_the_excess() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |config| {
        config.max_in_flight = 4;
        config.to_upstream = Impairment {
            delay: Duration::from_secs(3600),
            ..Impairment::none()
        };
    })
    .await;
    let client = Client::connect(&relay).await;
    for i in 0..10 {
        client.send(i).await;
    }
    let stats = wait_for(&relay, |s| s.to_upstream.received == 10).await;
    assert_eq!(stats.to_upstream.dropped_overflow, 6);
    assert_eq!(stats.to_upstream.in_flight, 4);
    relay.shutdown().await;
}

#[tokio::test]
async fn impairment_changes_at_runtime() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;

    relay.set_impairment(
        Direction::ToUpstream,
        Impairment {
            loss: 1.0,
            ..Impairment::none()
        },
    );
    for i in 1..=5 {
        client.send(i).await;
    }
    wait_for(&relay, |s| s.to_upstream.dropped_loss == 5).await;
    assert_eq!(server.sources().len(), 1);

    relay.set_impairment(Direction::ToUpstream, Impairment::none());
    client.ping(6).await;
}

// ---------------------------------------------------------------------------------------------
// Sessions, migration and dead paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_client_gets_its_own_upstream_address() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let (a, b) = (Client::connect(&relay).await, Client::connect(&relay).await);
    a.ping(1).await;
    let from_a = server.last_source();
    b.ping(2).await;
    let from_b = server.last_source();
    assert_ne!(from_a, from_b);
    a.ping(3).await;
    assert_eq!(server.last_source(), from_a);

    let stats = relay.stats();
    assert_eq!(stats.clients.len(), 2);
    assert_eq!(
        stats.upstream_addrs.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&from_a, &from_b])
    );
}

#[tokio::test]
async fn rebind_to_a_new_port_moves_the_client_and_echoes_still_arrive() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;
    let before = server.last_source();
    assert_eq!(relay.stats().upstream_addrs, [before]);

    let after = relay.rebind(Rebind::NewPort).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].ip(), before.ip());
    assert_ne!(after[0].port(), before.port());

    for i in 1..=3 {
        client.ping(i).await;
        assert_eq!(server.last_source(), after[0]);
    }
    let stats = relay.stats();
    assert_eq!(stats.rebinds, 1);
    assert_eq!(stats.upstream_addrs, after);
}

#[tokio::test]
async fn rebind_to_another_loopback_ip_changes_the_source_ip() {
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    if let Err(error) = std::net::UdpSocket::bind((other, 0)) {
        eprintln!("skipped: cannot bind {other} here ({error})");
        return;
    }
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;
    assert_eq!(server.last_source().ip(), LOCALHOST);

    let after = relay.rebind(Rebind::To(other)).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].ip(), other);
    client.ping(1).await;
    assert_eq!(server.last_source(), after[0]);

    // A client that arrives after the move is mapped onto the new IP too.
    let late = Client::connect(&relay).await;
    late.ping(2).await;
    assert_eq!(server.last_source().ip(), other);
}

#[tokio::test]
async fn blackhole_drops_both_ways_until_lifted() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;
    let relay_upstream = server.last_source();

    relay.set_blackhole(true);
    for i in 1..=3 {
        client.send(i).await;
    }
    wait_for(&relay, |s| s.to_upstream.dropped_blackhole == 3).await;
    assert_eq!(
        server.sources().len(),
        1,
        "the server heard through the blackhole"
    );

    // The server talks on its own; the blackhole swallows it before the client.
    for _ in 0..2 {
        server
            .socket
            .send_to(&payload(99), relay_upstream)
            .await
            .unwrap();
    }
    wait_for(&relay, |s| s.to_client.dropped_blackhole == 2).await;

    relay.set_blackhole(false);
    // Had anything leaked through, it would arrive before this echo.
    client.ping(4).await;
}

#[tokio::test]
async fn dropping_the_relay_frees_its_ports() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;
    let addrs = [relay.local_addr(), server.last_source()];
    drop(relay);

    // The tasks end when the runtime next runs them; wait for the ports to come free.
    for addr in addrs {
        timeout(TIMEOUT, async {
            while std::net::UdpSocket::bind(addr).is_err() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{addr} still bound after the relay was dropped"));
    }
}

#[tokio::test]
async fn shutdown_frees_its_ports_at_once() {
    let server = EchoServer::start();
    let relay = start_relay(&server, |_| {}).await;
    let client = Client::connect(&relay).await;
    client.ping(0).await;
    let addrs = [relay.local_addr(), server.last_source()];
    relay.shutdown().await;
    for addr in addrs {
        std::net::UdpSocket::bind(addr).expect("port still bound after shutdown");
    }
}
