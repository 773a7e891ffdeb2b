//! The embedded TURN server of a real gateway, on OS-assigned loopback ports, driven by the
//! `rtc-turn` client (the sans-IO successor of the `turn` crate) over real UDP, TCP and TLS
//! sockets.
//!
//! A loopback UDP listener stands in for this node's media address (the WebRTC port): the one
//! peer the relay may reach. Another loopback listener stands for everything the relay must not
//! reach; the tests show it receives nothing. Every wait is for an event under a generous
//! timeout.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};

use rtc_turn::client::Event;
use strait_gateway::metrics::{StaticLabel, TurnDirectionLabel, TurnReasonLabel};
use strait_tests::fixture::{TestGateway, WAIT};
use strait_tests::turn_client::{Link, TurnClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SECRET: &str = "a TURN secret for the tests";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A gateway with TURN on every transport and `media` as its media address.
async fn gateway(media: SocketAddr) -> TestGateway {
    TestGateway::start_with(|c| {
        let any = SocketAddr::new(LOCALHOST, 0);
        c.turn.enabled = true;
        c.turn.udp_listen = any;
        c.turn.tcp_listen = any;
        c.turn.tls_listen = any;
        c.turn.secrets = vec![SECRET.into()];
        c.turn.media_addresses = vec![media];
    })
    .await
}

async fn listener() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

async fn recv_from(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("a datagram in time")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

fn creds(t: &TestGateway, identity: &str) -> (String, String) {
    let c = t
        .gateway
        .turn_credentials(identity, SystemTime::now())
        .expect("credentials");
    (c.username, c.password)
}

/// Allocates, relays to the media address (first as a Send indication while the channel is
/// bound, then over the channel) and back. Returns the relay address and the bound channel.
async fn relay_round_trip(client: &mut TurnClient, media: &UdpSocket) -> (SocketAddr, u16) {
    let media_addr = media.local_addr().unwrap();
    let relay = client.allocate().await;
    assert_eq!(relay.ip(), LOCALHOST);
    client.permit(relay, media_addr).await.expect("permitted");

    client.send_to(relay, media_addr, b"first").await;
    let (data, from) = recv_from(media).await;
    assert_eq!((data.as_slice(), from), (&b"first"[..], relay));

    // The first send also bound a channel; the media side answers and, once the binding is in
    // place, the answer arrives as ChannelData.
    let mut over_channel = None;
    for i in 0..50u32 {
        media
            .send_to(format!("echo {i}").as_bytes(), relay)
            .await
            .unwrap();
        let (channel, from, data) = client.receive().await;
        assert_eq!(from, media_addr);
        assert_eq!(data, format!("echo {i}").as_bytes());
        if channel.is_some() {
            over_channel = channel;
            break;
        }
    }
    let channel = over_channel.expect("a channel was bound");
    client.send_to(relay, media_addr, b"over the channel").await;
    let (data, _) = recv_from(media).await;
    assert_eq!(data, b"over the channel");
    (relay, channel)
}

fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = channel.to_be_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Payloads of mixed sizes, each filled with its own index: runs of equal sizes (which the
/// relay sends with GSO), shorter ones ending a run, longer ones starting the next, an empty
/// one, and sizes past the largest GSO segment.
fn mixed_payloads(round: u8) -> Vec<Vec<u8>> {
    let sizes = [
        1200, 1200, 1200, 700, 1200, 1200, 1, 0, 1400, 1400, 1401, 1401, 900, 900, 900, 4000, 30,
        30, 1200, 1199, 1200,
    ];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![round.wrapping_mul(31).wrapping_add(i as u8); n])
        .collect()
}

/// The next `n` datagrams on `socket`, each split at `stride` when GRO coalesced several.
async fn datagrams(socket: &UdpSocket, state: Option<&UdpSocketState>, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while out.len() < n {
        let got = tokio::time::timeout(WAIT, async {
            match state {
                None => socket.recv_from(&mut buf).await.map(|(len, _)| (len, len)),
                Some(state) => loop {
                    socket.readable().await?;
                    let mut meta = [RecvMeta::default()];
                    let r = socket.try_io(tokio::io::Interest::READABLE, || {
                        state.recv(socket.into(), &mut [IoSliceMut::new(&mut buf)], &mut meta)
                    });
                    match r {
                        Ok(_) => break Ok((meta[0].len, meta[0].stride)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => break Err(e),
                    }
                },
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} of {n} datagrams in time", out.len()))
        .unwrap();
        let (len, stride) = got;
        if len == 0 {
            out.push(Vec::new());
        }
        out.extend(buf[..len].chunks(stride.max(1)).map(<[u8]>::to_vec));
    }
    out
}

#[tokio::test]
async fn bursts_of_mixed_sizes_are_relayed_whole_and_in_order_both_ways() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "dave");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, &pass).await;
    let (relay, channel) = relay_round_trip(&mut client, &media).await;
    let Link::Udp(socket) = &client.link else {
        unreachable!("a UDP client")
    };
    let turn = &t.gateway.metrics().turn;
    let relayed = |direction| {
        turn.relayed_packets
            .get_or_create(&TurnDirectionLabel {
                direction: StaticLabel(direction),
            })
            .get()
    };
    let (to_peer, to_client) = (relayed("to_peer"), relayed("to_client"));
    let rounds = 5u8;
    for round in 0..rounds {
        // Sent back to back, without waiting: the gateway reads them in batches.
        let payloads = mixed_payloads(round);
        for p in &payloads {
            socket
                .send_to(&channel_data(channel, p), server)
                .await
                .unwrap();
        }
        assert_eq!(datagrams(&media, None, payloads.len()).await, payloads);
        for p in &payloads {
            media.send_to(p, relay).await.unwrap();
        }
        let expected: Vec<Vec<u8>> = payloads.iter().map(|p| channel_data(channel, p)).collect();
        assert_eq!(datagrams(socket, None, payloads.len()).await, expected);
    }
    let n = (mixed_payloads(0).len() * usize::from(rounds)) as u64;
    assert_eq!(relayed("to_peer") - to_peer, n);
    assert_eq!(relayed("to_client") - to_client, n);
    t.stop().await;
}

/// Sends datagrams that are equal in size but for a shorter last one with one GSO `sendmsg`,
/// or one by one where the kernel has no GSO.
fn send_run(state: &UdpSocketState, socket: &UdpSocket, to: SocketAddr, run: &[Vec<u8>]) {
    let contents = run.concat();
    let transmit = |contents, segment_size| Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size,
        src_ip: None,
    };
    if state.max_gso_segments() >= run.len() {
        state
            .try_send(socket.into(), &transmit(&contents, Some(run[0].len())))
            .expect("a GSO send");
    } else {
        for datagram in run {
            state
                .try_send(socket.into(), &transmit(datagram, None))
                .expect("a send");
        }
    }
}

#[tokio::test]
async fn datagrams_coalesced_by_gso_and_gro_are_relayed_one_by_one() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "erin");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, &pass).await;
    let (relay, channel) = relay_round_trip(&mut client, &media).await;
    let Link::Udp(socket) = &client.link else {
        unreachable!("a UDP client")
    };
    // Both ends send runs of equal-sized datagrams with one GSO `sendmsg` (where the kernel
    // has GSO; otherwise one by one). A socket with GRO on may get such a run as one buffer;
    // the gateway's listener and relay sockets have GRO on and must split it.
    let client_state = UdpSocketState::new(socket.into()).unwrap();
    let media_state = UdpSocketState::new((&media).into()).unwrap();
    let sizes = [(1000, 7, 1000), (300, 12, 120), (1200, 3, 1)];
    for (segment, count, last) in sizes {
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|i| vec![i as u8; if i + 1 == count { last } else { segment }])
            .collect();
        // ChannelData of equal payloads are equal in size: one GSO run to the listener.
        let frames: Vec<Vec<u8>> = payloads.iter().map(|p| channel_data(channel, p)).collect();
        send_run(&client_state, socket, server, &frames);
        assert_eq!(
            datagrams(&media, Some(&media_state), payloads.len()).await,
            payloads
        );
        send_run(&media_state, &media, relay, &payloads);
        assert_eq!(
            datagrams(socket, Some(&client_state), payloads.len()).await,
            frames
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn udp_allocation_relays_through_a_channel_to_the_media_address() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "alice");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, &pass).await;
    relay_round_trip(&mut client, &media).await;

    let turn = &t.gateway.metrics().turn;
    assert_eq!(turn.allocations.get(), 1);
    assert!(turn.allocations_created.get() >= 1);
    t.stop().await;
}

#[tokio::test]
async fn tcp_allocation_relays_to_the_media_address() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "bob");
    let server = t.gateway.turn_addrs().tcp.unwrap();
    let mut client = TurnClient::tcp(server, &user, &pass).await;
    relay_round_trip(&mut client, &media).await;
    t.stop().await;
}

#[tokio::test]
async fn tls_allocation_relays_to_the_media_address() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "carol");
    let server = t.gateway.turn_addrs().tls.unwrap();
    let mut client = TurnClient::tls(&t, server, &user, &pass).await;
    relay_round_trip(&mut client, &media).await;
    t.stop().await;
}

#[tokio::test]
async fn every_denied_peer_gets_403_and_nothing_reaches_loopback() {
    let (media, media_addr) = listener().await;
    // Stands for every internal service: loopback, on a port that is not the media port.
    let (internal, internal_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, pass) = creds(&t, "mallory");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, &pass).await;
    let relay = client.allocate().await;

    let port = internal_addr.port();
    let denied: Vec<SocketAddr> = [
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("[::1]:{port}"),
        "169.254.169.254:80".into(),
        "100.64.0.1:3478".into(),
        "10.0.0.1:3478".into(),
        "[fe80::1]:3478".into(),
        "[::ffff:10.0.0.1]:3478".into(),
        format!("127.0.0.2:{port}"),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for peer in &denied {
        let err = client.permit(relay, *peer).await.unwrap_err();
        assert!(err.contains("403"), "{peer}: {err}");
    }

    // A permission for the media address's IP (loopback) does not open its other ports: the
    // channel bind and the Send indication to the internal listener are refused.
    client
        .permit(relay, internal_addr)
        .await
        .expect("IP-level permission");
    client
        .send_to(relay, internal_addr, b"must not arrive")
        .await;
    // The media address still works, and was served after everything above.
    client.permit(relay, media_addr).await.expect("permitted");
    client.send_to(relay, media_addr, b"marker").await;
    let (data, _) = recv_from(&media).await;
    assert_eq!(data, b"marker");
    let mut buf = [0u8; 64];
    assert!(
        internal.try_recv_from(&mut buf).is_err(),
        "nothing reached the internal listener"
    );

    let turn = &t.gateway.metrics().turn;
    let denials = |reason| {
        turn.denials
            .get_or_create(&TurnReasonLabel {
                reason: StaticLabel(reason),
            })
            .get()
    };
    assert!(denials("loopback") >= 4, "loopback denials counted");
    assert!(denials("private") >= 2);
    assert!(denials("unspecified") >= 2);
    assert!(denials("link_local") >= 2);
    assert_eq!(turn.allocations.get(), 1);
    t.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_and_counted() {
    let (_media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let (user, _) = creds(&t, "eve");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, "not the password").await;
    client.client.allocate(Instant::now()).unwrap();
    let err = client
        .until(|e| match e {
            Event::AllocateError(_, err) => Some(err.to_string()),
            Event::AllocateResponse(..) => Some("allocated".into()),
            _ => None,
        })
        .await;
    assert_ne!(err, "allocated");
    let turn = &t.gateway.metrics().turn;
    let failures = turn
        .auth_failures
        .get_or_create(&TurnReasonLabel {
            reason: StaticLabel("wrong_password"),
        })
        .get();
    assert_eq!(failures, 1);
    assert_eq!(turn.allocations.get(), 0);
    t.stop().await;
}

/// Bytes that are neither STUN nor ChannelData close a TCP connection, counted; the server keeps
/// serving.
#[tokio::test]
async fn a_tcp_connection_sending_garbage_is_closed_and_counted() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let server = t.gateway.turn_addrs().tcp.unwrap();
    let mut garbage = TcpStream::connect(server).await.unwrap();
    garbage
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, garbage.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a reply");
    let closes = t
        .gateway
        .metrics()
        .turn
        .stream_closes
        .get_or_create(&TurnReasonLabel {
            reason: StaticLabel("garbage"),
        })
        .get();
    assert_eq!(closes, 1);

    let (user, pass) = creds(&t, "dave");
    let mut client = TurnClient::tcp(server, &user, &pass).await;
    relay_round_trip(&mut client, &media).await;
    t.stop().await;
}

#[tokio::test]
async fn credentials_are_served_to_token_holders() {
    let (_media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let token = t.token("room", "alice");
    let http = t.http_addr();
    let post = |auth: Option<String>| async move {
        let mut s = TcpStream::connect(http).await.unwrap();
        let auth = auth
            .map(|a| format!("Authorization: Bearer {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /v1/turn/credentials HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    };
    let refused = post(None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let ok = post(Some(token)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let username = json["username"].as_str().unwrap();
    assert!(username.ends_with(":alice"), "{username}");
    assert_eq!(json["ttl"], 300);
    let uris: Vec<&str> = json["uris"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(uris.len(), 3, "{uris:?}");
    assert!(uris[0].starts_with("turn:127.0.0.1:") && uris[0].ends_with("?transport=udp"));
    assert!(uris[2].starts_with("turns:"));

    // The password works against the embedded server.
    let password = json["password"].as_str().unwrap();
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, username, password).await;
    client.allocate().await;
    t.stop().await;
}

/// Allocate and return the error text, or `"allocated"`.
async fn allocate_error(client: &mut TurnClient) -> String {
    client.client.allocate(Instant::now()).unwrap();
    client
        .until(|e| match e {
            Event::AllocateError(_, err) => Some(err.to_string()),
            Event::AllocateResponse(..) => Some("allocated".into()),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn an_expired_credential_is_refused() {
    let (_media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    // Minted ten minutes ago with a five-minute lifetime.
    let minted = SystemTime::now() - std::time::Duration::from_secs(600);
    let c = t.gateway.turn_credentials("frank", minted).unwrap();
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &c.username, &c.password).await;
    let err = allocate_error(&mut client).await;
    assert_ne!(err, "allocated");
    let expired = t
        .gateway
        .metrics()
        .turn
        .auth_failures
        .get_or_create(&TurnReasonLabel {
            reason: StaticLabel("expired"),
        })
        .get();
    assert_eq!(expired, 1);
    t.stop().await;
}

#[tokio::test]
async fn the_allocation_quota_per_identity_gets_486() {
    let (_media, media_addr) = listener().await;
    let t = TestGateway::start_with(|c| {
        let any = SocketAddr::new(LOCALHOST, 0);
        c.turn.enabled = true;
        c.turn.transports = vec![strait_gateway::config::TurnListener::Udp];
        c.turn.udp_listen = any;
        c.turn.media_addresses = vec![media_addr];
        c.turn.max_allocations_per_identity = 1;
    })
    .await;
    let (user, pass) = creds(&t, "grace");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut first = TurnClient::udp(server, &user, &pass).await;
    first.allocate().await;
    let mut second = TurnClient::udp(server, &user, &pass).await;
    let err = allocate_error(&mut second).await;
    assert!(err.contains("486"), "{err}");
    // A credential minted later for the same identity (another expiry, another username)
    // shares the quota.
    let later = t
        .gateway
        .turn_credentials(
            "grace",
            SystemTime::now() + std::time::Duration::from_secs(60),
        )
        .expect("credentials");
    assert_ne!(later.username, user);
    let mut third = TurnClient::udp(server, &later.username, &later.password).await;
    let err = allocate_error(&mut third).await;
    assert!(err.contains("486"), "{err}");
    assert_eq!(t.gateway.metrics().turn.quota_refusals.get(), 2);
    t.stop().await;
}

#[tokio::test]
async fn server_hello_carries_turn_credentials_for_the_participant() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let session = t.native("room", "heidi").await;
    let servers = session.ice_servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let server = &servers[0];
    assert_eq!(server.urls.len(), 3);
    assert!(server.urls[0].starts_with("turn:127.0.0.1:"));
    let username = server.username.clone().unwrap();
    assert!(
        username.ends_with(&format!(":{}", session.participant().0)),
        "{username}"
    );
    // The credentials work against the embedded server.
    let udp = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(udp, &username, server.credential.as_deref().unwrap()).await;
    relay_round_trip(&mut client, &media).await;
    drop(session);
    t.stop().await;
}

#[tokio::test]
async fn without_turn_server_hello_has_no_ice_servers() {
    let t = TestGateway::start().await;
    let session = t.native("room", "ivan").await;
    assert!(session.ice_servers().is_empty());
    drop(session);
    t.stop().await;
}

#[tokio::test]
async fn the_bridge_port_is_a_media_address_without_configuration() {
    // TURN on, the WebRTC bridge on (its socket from the OS), no `media_addresses` configured.
    let t = TestGateway::start_with(|c| {
        let any = SocketAddr::new(LOCALHOST, 0);
        c.turn.enabled = true;
        c.turn.udp_listen = any;
        c.turn.tcp_listen = any;
        c.turn.tls_listen = any;
        c.turn.secrets = vec![SECRET.into()];
        c.turn.media_addresses = Vec::new();
    })
    .await;
    let bridge = t.webrtc_addr();
    let (user, pass) = creds(&t, "dave");
    let server = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(server, &user, &pass).await;
    let relay = client.allocate().await;
    client
        .permit(relay, bridge)
        .await
        .expect("the bridge's port is this node's media address");
    // A datagram relayed to it reaches the bridge's socket, which drops it (the relay's address
    // never did ICE) and counts it.
    client.send_to(relay, bridge, b"not ICE").await;
    t.wait_metric_where(
        "strait_drops_total",
        "reason=\"webrtc_unknown_source\"",
        |v| v >= 1.0,
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn websocket_signaling_carries_turn_credentials_for_the_participant() {
    let (media, media_addr) = listener().await;
    let t = gateway(media_addr).await;
    let mut ws = strait_tests::ws::WsClient::connect(&t, Some(&t.token("room", "ivan"))).await;
    let hello = match ws.next().await {
        Some(strait_protocol::ControlMessage::ServerHello(h)) => h,
        other => panic!("expected ServerHello, got {other:?}"),
    };
    assert_eq!(hello.ice_servers.len(), 1, "{:?}", hello.ice_servers);
    let server = &hello.ice_servers[0];
    assert_eq!(server.urls.len(), 3, "{:?}", server.urls);
    let username = server.username.clone().expect("a username");
    assert!(
        username.ends_with(&format!(":{}", hello.participant.0)),
        "{username}"
    );
    let udp = t.gateway.turn_addrs().udp.unwrap();
    let mut client = TurnClient::udp(udp, &username, server.credential.as_deref().unwrap()).await;
    relay_round_trip(&mut client, &media).await;
    ws.leave().await;
    t.stop().await;
}
