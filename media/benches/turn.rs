//! Relay cost of the TURN core: one 1200-byte ChannelData from a client to its peer, and one
//! datagram from the peer back to the client as ChannelData, through `Server::handle_client` /
//! `handle_peer` and `poll_transmit`. No I/O: the figures bound what the core allows per core.
//!
//! Run: `cargo bench -p strait-media --bench turn`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtc_stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME,
    ATTR_XOR_PEER_ADDRESS,
};
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, Message, MessageType, Method, Setter,
    TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use strait_media::turn::{
    FiveTuple, PeerPolicy, Server, ServerConfig, Transmit, Transport, TurnSecret, TurnSecrets,
};

const PACKET_LEN: usize = 1200;

fn request(
    method: Method,
    extra: impl FnOnce(&mut Message),
    creds: &(String, String),
    nonce: &str,
) -> Vec<u8> {
    let crypto = rtc_crypto::default_provider().unwrap();
    let mut m = Message::new();
    m.set_type(MessageType::new(method, CLASS_REQUEST));
    m.transaction_id = TransactionId::new();
    m.write_header();
    extra(&mut m);
    m.add(ATTR_USERNAME, creds.0.as_bytes());
    m.add(ATTR_REALM, b"strait");
    m.add(ATTR_NONCE, nonce.as_bytes());
    MessageIntegrity::new_long_term_integrity_with_provider(
        creds.0.clone(),
        "strait".into(),
        creds.1.clone(),
        crypto.crypto(),
    )
    .unwrap()
    .add_to(&mut m)
    .unwrap();
    m.raw
}

/// A server with one UDP allocation whose channel 0x4000 is bound to the media address.
fn setup() -> (Server, FiveTuple, SocketAddr, SocketAddr, Instant) {
    let now = Instant::now();
    let unix = 1_800_000_000;
    let media: SocketAddr = "127.0.0.1:4478".parse().unwrap();
    let secrets = TurnSecrets::new(vec![TurnSecret::new(b"bench secret".to_vec())]);
    let minted = secrets.mint("1", unix, Duration::from_secs(300)).unwrap();
    let creds = (minted.username, minted.password);
    let config = ServerConfig {
        secrets,
        policy: PeerPolicy::new(vec![media], Vec::new()),
        bandwidth: 0,
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, [3; 32]).unwrap();
    let client = FiveTuple {
        transport: Transport::Udp,
        client: "203.0.113.1:50000".parse().unwrap(),
        server: "127.0.0.1:3478".parse().unwrap(),
    };
    let relay: SocketAddr = "127.0.0.1:60000".parse().unwrap();
    let mut bind = |_: &FiveTuple| Some(relay);
    // The 401 round gives the nonce.
    let mut probe = Message::new();
    probe.set_type(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    probe.transaction_id = TransactionId::new();
    probe.write_header();
    server
        .handle_client(client, &probe.raw, now, unix, &mut bind)
        .unwrap();
    let Some(Transmit::Client { data, .. }) = server.poll_transmit() else {
        panic!("a challenge");
    };
    let mut challenge = Message::new();
    challenge.raw.clear();
    challenge.raw.extend_from_slice(&data);
    challenge.decode().unwrap();
    let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE)
        .unwrap()
        .text;

    let alloc = request(
        METHOD_ALLOCATE,
        |m| m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
        &creds,
        &nonce,
    );
    server
        .handle_client(client, &alloc, now, unix, &mut bind)
        .unwrap();
    let bind_req = request(
        METHOD_CHANNEL_BIND,
        |m| {
            m.add(ATTR_CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
            XorMappedAddress {
                ip: media.ip(),
                port: media.port(),
            }
            .add_to_as(m, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
        },
        &creds,
        &nonce,
    );
    server
        .handle_client(client, &bind_req, now, unix, &mut bind)
        .unwrap();
    while server.poll_transmit().is_some() {}
    assert_eq!(server.allocation_count(), 1);
    (server, client, relay, media, now)
}

fn relay(c: &mut Criterion) {
    let (mut server, client, relay, media, now) = setup();
    let mut channel_data = vec![0x40, 0x00];
    channel_data.extend_from_slice(&(PACKET_LEN as u16).to_be_bytes());
    channel_data.resize(4 + PACKET_LEN, 0xab);
    let payload = vec![0xcd; PACKET_LEN];
    let unix = 1_800_000_000;

    let mut group = c.benchmark_group("turn");
    group.throughput(Throughput::Elements(1));
    group.bench_function("client_to_peer_channel_data", |b| {
        b.iter(|| {
            let r =
                server.handle_client(client, black_box(&channel_data), now, unix, &mut |_| None);
            debug_assert!(r.is_ok());
            while let Some(t) = server.poll_transmit() {
                black_box(t);
            }
        });
    });
    group.bench_function("peer_to_client_channel_data", |b| {
        b.iter(|| {
            let r = server.handle_peer(relay, media, black_box(&payload), now);
            debug_assert!(r.is_ok());
            while let Some(t) = server.poll_transmit() {
                black_box(t);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
